//! The `logfleet-agent` binary against a real host: configured by flags and by a TOML file,
//! streaming through a session, and leaving cleanly on SIGTERM.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::path::Path;

use serde_json::json;
use testkit::{AgentProcess, LogDir, TestHost, WsClient};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_logfleet-agent");

async fn stream_one_line(
    host: &TestHost,
    agent: Uuid,
    logs: &LogDir,
    file: &str,
    source: &str,
) -> WsClient {
    let api = host.api("acme", "alice");
    api.wait_agent_status(&agent.to_string(), "online").await;
    let session = api
        .start_session(json!({"agent_id": agent, "filters": {"source": source}}))
        .await;
    let mut client = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        api.token(),
        None,
    )
    .await;
    for n in 0.. {
        logs.append(file, &[&format!("ERROR probe {n}")]).await;
        if let Ok(msg) = client.next(std::time::Duration::from_millis(200)).await {
            assert_eq!(msg["source"], source);
            assert_eq!(msg["level"], "ERROR");
            break;
        }
        assert!(n < 100, "no line arrived");
    }
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_stream_and_sigterm_exits_cleanly() {
    let host = TestHost::start().await;
    let logs = LogDir::new();
    let file = logs.create("app.log", &[]);
    let id = Uuid::new_v4();
    let agent = AgentProcess::spawn(
        Path::new(BIN),
        &[
            format!("--host={}", host.base),
            format!("--token={}", host.agent_token("acme", id, "edge-bin")),
            format!("--source=app={}", file.display()),
            "--metrics-interval=1s".to_owned(),
        ],
    );
    let mut client = stream_one_line(&host, id, &logs, "app.log", "app").await;
    let status = agent.terminate().await;
    assert!(status.success(), "{status:?}");
    client.expect_event("agent_disconnected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_config_with_a_glob_source() {
    let host = TestHost::start().await;
    let logs = LogDir::new();
    logs.create("web-1.log", &[]);
    let id = Uuid::new_v4();
    let config = logs.path("agent.toml");
    std::fs::write(
        &config,
        format!(
            "host = \"{}\"\ntoken = \"{}\"\nname = \"edge-toml\"\n\n[[source]]\nname = \"web\"\npath = \"{}\"\nformat = \"auto\"\n",
            host.base,
            host.agent_token("acme", id, "edge-toml"),
            logs.path("web-*.log").display()
        ),
    )
    .unwrap();
    let agent = AgentProcess::spawn(Path::new(BIN), &[format!("--config={}", config.display())]);
    let client = stream_one_line(&host, id, &logs, "web-1.log", "web").await;
    client.close().await;
    assert!(agent.terminate().await.success());
}
