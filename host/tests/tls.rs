//! TLS: the `logfleet-host` binary with `--tls-cert/--tls-key` serves HTTPS and WSS on one
//! port, with certificates from a private CA made at test time.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use logfleet_host::auth::{Auth, Role};
use serde_json::json;
use testkit::pki::TestPki;
use testkit::{Api, HostProcess, InProcessAgent, LogDir, SECRET, WsClient, agent_config_for};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_logfleet-host");

/// The reference flow works over TLS with a private CA: the host binary serves HTTPS, an agent
/// trusting the CA links over wss://, a session started over HTTPS answers a `wss://`
/// `websocket_url`, lines arrive over it, and SIGTERM still ends the session cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_flow_runs_over_tls_with_a_private_ca() {
    let pki = TestPki::new();
    let mut host = HostProcess::spawn(
        Path::new(BIN),
        &[
            "--tls-cert".as_ref(),
            pki.cert.as_os_str(),
            "--tls-key".as_ref(),
            pki.key.as_os_str(),
        ],
    )
    .await;
    let port = host.port;
    let base = format!("https://localhost:{port}");
    let auth = Auth::new(SECRET.as_bytes());
    let user = auth
        .mint("alice", "acme", Role::User, None, Duration::from_secs(600))
        .unwrap();
    let api = Api::with_tls(&base, Some(user.clone()), pki.client_config());
    assert_eq!(api.get("/healthz").await.0, 200);

    let id = Uuid::new_v4();
    let agent_token = auth
        .mint(
            &id.to_string(),
            "acme",
            Role::Agent,
            Some("edge"),
            Duration::from_secs(600),
        )
        .unwrap();
    let logs = LogDir::new();
    let file = logs.create("app.log", &[]);
    let mut config = agent_config_for(&base, agent_token, &[("app", &file)]);
    config.ca_cert = Some(pki.ca_cert.clone());
    let agent = InProcessAgent::start(config);
    api.wait_agent_status(&id.to_string(), "online").await;

    let session = api.start_session(json!({"agent_id": id})).await;
    let ws_url = session["websocket_url"].as_str().unwrap();
    assert!(
        ws_url.starts_with(&format!("wss://localhost:{port}/api/v1/stream/ws/")),
        "{ws_url}"
    );
    let mut client = WsClient::connect_tls(ws_url, &user, pki.client_config()).await;
    testkit::sync(&logs, "app.log", |n| format!("probe {n}"), &mut client).await;
    logs.append("app.log", &["ERROR over tls"]).await;
    testkit::skip_until(&mut client, "ERROR over tls").await;

    host.signal_term();
    let ended = client.expect_event("session_ended").await;
    assert_eq!(ended["reason"], "shutdown");
    assert_eq!(u16::from(client.expect_close().await.unwrap().code), 1000);
    let status = host.wait().await;
    assert!(status.success(), "{status:?}");
    agent.stop().await;
}

/// `--tls-cert` and `--tls-key` come together; one alone is a usage error naming the other.
#[test]
fn tls_flags_come_in_pairs() {
    let pki = TestPki::new();
    for (given, missing) in [("--tls-cert", "--tls-key"), ("--tls-key", "--tls-cert")] {
        let file = if given == "--tls-cert" {
            &pki.cert
        } else {
            &pki.key
        };
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", given])
            .arg(file)
            .env("LOGFLEET_JWT_SECRET", SECRET)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(missing), "{stderr}");
    }
}

/// A certificate or key file that is not usable stops the host at start, naming the file.
#[test]
fn unusable_tls_files_stop_the_host_at_start() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    for (cert, key) in [(&garbage, &pki.key), (&pki.cert, &garbage)] {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .env("LOGFLEET_JWT_SECRET", SECRET)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("garbage.pem"), "{stderr}");
    }
}
