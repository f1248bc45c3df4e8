//! The real `logfleet` binary against a host serving TLS with a private CA: with `--ca-cert`
//! (or `LOGFLEET_CA_CERT`) it works over https:// and wss://; without the CA, or when the
//! certificate names another host, it refuses the connection.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::time::Duration;

use common::{AGENT_NAME, Fixture};
use testkit::pki::TestPki;

/// With `--ca-cert`, the CLI lists agents over HTTPS and streams a session's lines over wss://.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_streams_over_tls_trusting_a_private_ca() {
    let pki = TestPki::new();
    let fx = Fixture::new_tls(&pki).await;
    let ca = pki.ca_cert.to_str().unwrap();

    let out = fx.run(&["agents", "--ca-cert", ca]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(AGENT_NAME), "{out:?}");

    let mut cmd = fx.cli(&["stream", AGENT_NAME, "--source", "app", "--timeout", "60"]);
    cmd.env("LOGFLEET_CA_CERT", ca);
    let mut cli = common::Running::spawn(cmd);
    let mut printed = None;
    for n in 0..200 {
        let line = format!("probe {n}.");
        fx.logs.append("app.log", &[&line]).await;
        if let Some(first) = cli.line_within(Duration::from_millis(100)).await {
            printed = Some(first);
            break;
        }
    }
    assert!(printed.is_some(), "no line; stderr: {:?}", cli.stderr());
    fx.logs.append("app.log", &["ERROR over wss"]).await;
    while !cli.line().await.contains("app: over wss") {}
    cli.signal("INT");
    let (status, _) = cli.wait().await;
    assert_eq!(status.code(), Some(130), "{status:?}");
}

/// Without the CA the CLI refuses the host's certificate (exit 6, saying why); it never
/// falls back to an unverified connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_a_host_whose_ca_it_does_not_trust() {
    let pki = TestPki::new();
    let fx = Fixture::new_tls(&pki).await;
    let out = fx.run(&["agents"]).await;
    assert_eq!(out.code, Some(6), "{out:?}");
    assert!(out.stderr.contains("certificate"), "{out:?}");

    let other = TestPki::new();
    let out = fx
        .run(&["agents", "--ca-cert", other.ca_cert.to_str().unwrap()])
        .await;
    assert_eq!(out.code, Some(6), "{out:?}");
    assert!(out.stderr.contains("certificate"), "{out:?}");
}

/// A certificate from the trusted CA but for another name is refused: hostnames are verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_a_certificate_for_another_name() {
    let pki = TestPki::for_names(&["wrong.example"]);
    let host = testkit::TestHost::start_tls(&pki, |_| {}).await;
    let token = host.user_token("acme", "alice");
    let out = common::run({
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_logfleet"));
        cmd.args([
            "agents",
            "--url",
            &host.base,
            "--token",
            &token,
            "--ca-cert",
        ])
        .arg(&pki.ca_cert)
        .kill_on_drop(true);
        cmd
    })
    .await;
    assert_eq!(out.code, Some(6), "{out:?}");
    assert!(out.stderr.contains("not valid for name"), "{out:?}");
    host.stop().await;
}

/// An unreadable or empty `--ca-cert` file is a usage error naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_ca_file_is_a_usage_error() {
    let dir = tempfile_dir();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let out = common::run({
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_logfleet"));
        cmd.args([
            "agents",
            "--url",
            "https://localhost:1",
            "--token",
            "t",
            "--ca-cert",
        ])
        .arg(&empty)
        .kill_on_drop(true);
        cmd
    })
    .await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("empty.pem"), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("logfleet-cli-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
