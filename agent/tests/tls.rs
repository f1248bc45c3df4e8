//! The `logfleet-agent` binary against a host serving TLS with a private CA: with the CA
//! (`ca_cert` in its TOML file, or `--ca-cert`) it links over wss:// and streams; without it,
//! or when the certificate names another host, it refuses to connect and says why.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::path::Path;
use std::process::Stdio;

use serde_json::json;
use testkit::pki::TestPki;
use testkit::{AgentProcess, Api, LogDir, TestHost, WAIT, WsClient};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_logfleet-agent");

/// An agent configured by a TOML file with `ca_cert` links to a TLS host and its lines reach
/// a session client over wss://.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_trusting_the_ca_streams_over_wss() {
    let pki = TestPki::new();
    let host = TestHost::start_tls(&pki, |_| {}).await;
    let logs = LogDir::new();
    let file = logs.create("app.log", &[]);
    let id = Uuid::new_v4();
    let config = logs.path("agent.toml");
    std::fs::write(
        &config,
        format!(
            "host = \"{}\"\ntoken = \"{}\"\nca_cert = \"{}\"\n\n[[source]]\nname = \"app\"\npath = \"{}\"\n",
            host.base,
            host.agent_token("acme", id, "edge-tls"),
            pki.ca_cert.display(),
            file.display()
        ),
    )
    .unwrap();
    let agent = AgentProcess::spawn(Path::new(BIN), &[format!("--config={}", config.display())]);
    let user = host.user_token("acme", "alice");
    let api = Api::with_tls(&host.base, Some(user.clone()), pki.client_config());
    api.wait_agent_status(&id.to_string(), "online").await;
    let session = api.start_session(json!({"agent_id": id})).await;
    let ws_url = session["websocket_url"].as_str().unwrap();
    assert!(ws_url.starts_with("wss://"), "{ws_url}");
    let mut client = WsClient::connect_tls(ws_url, &user, pki.client_config()).await;
    testkit::sync(&logs, "app.log", |n| format!("probe {n}"), &mut client).await;
    let status = agent.terminate().await;
    assert!(status.success(), "{status:?}");
    client.expect_event("agent_disconnected").await;
    host.stop().await;
}

/// Runs the agent binary with `extra` flags against `host` until its stderr has a line
/// containing `expected`; then checks the host never saw it. Returns that line.
async fn refused(host: &TestHost, pki: &TestPki, extra: &[String], expected: &str) -> String {
    let logs = LogDir::new();
    let file = logs.create("app.log", &[]);
    let id = Uuid::new_v4();
    let mut child = tokio::process::Command::new(BIN)
        .arg(format!("--host={}", host.base))
        .arg(format!("--token={}", host.agent_token("acme", id, "edge")))
        .arg(format!("--source=app={}", file.display()))
        .args(["--reconnect-min=50ms", "--reconnect-max=300ms"])
        .arg(format!(
            "--cache-dir={}",
            testkit::test_cache_dir().display()
        ))
        .args(extra)
        .env("RUST_LOG", "warn")
        .env_remove("LOGFLEET_CA_CERT")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("agent still running");
            if line.contains(expected) {
                return line;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no '{expected}' in the agent's log within {WAIT:?}"));
    // By address: the wrong-name test's certificate is valid for 127.0.0.1 only.
    let api = Api::with_tls(
        &format!("https://{}", host.addr),
        Some(host.user_token("acme", "alice")),
        pki.client_config(),
    );
    let (status, agents) = api.get("/api/v1/agents").await;
    assert_eq!(status, 200);
    assert_eq!(
        agents["agents"],
        json!([]),
        "the agent got through: {agents}"
    );
    child.kill().await.unwrap();
    line
}

/// Without `--ca-cert` the agent trusts only the public web PKI: a private CA's certificate
/// is refused, the refusal is logged, and the agent never links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_the_ca_refuses_to_connect() {
    let pki = TestPki::new();
    let host = TestHost::start_tls(&pki, |_| {}).await;
    let line = refused(&host, &pki, &[], "invalid peer certificate").await;
    assert!(line.contains("UnknownIssuer"), "{line}");
    let other = TestPki::new();
    refused(
        &host,
        &pki,
        &[format!("--ca-cert={}", other.ca_cert.display())],
        "invalid peer certificate",
    )
    .await;
    host.stop().await;
}

/// A certificate of the trusted CA issued for another name is refused: hostnames are verified
/// (the agent dials `localhost`; the certificate is for 127.0.0.1 only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refuses_a_certificate_for_another_name() {
    let pki = TestPki::for_names(&["127.0.0.1"]);
    let host = TestHost::start_tls(&pki, |_| {}).await;
    refused(
        &host,
        &pki,
        &[format!("--ca-cert={}", pki.ca_cert.display())],
        "not valid for name",
    )
    .await;
    host.stop().await;
}

/// A `--ca-cert` file without a certificate stops the agent at start, naming the file.
#[tokio::test]
async fn an_unusable_ca_file_stops_the_agent_at_start() {
    let logs = LogDir::new();
    let file = logs.create("app.log", &[]);
    let empty = logs.create("empty.pem", &[]);
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(BIN)
            .args(["--host=https://localhost:1", "--token=t"])
            .arg(format!("--source=app={}", file.display()))
            .arg(format!("--ca-cert={}", empty.display()))
            .arg(format!(
                "--cache-dir={}",
                testkit::test_cache_dir().display()
            ))
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("empty.pem"), "{stderr}");
}
