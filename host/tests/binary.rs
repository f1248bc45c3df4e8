//! The `logfleet-host` binary: startup checks and token minting.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_logfleet-host");
const SECRET: &str = "binary-test-secret-0123456789abcdef0123";

fn host() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("LOGFLEET_JWT_SECRET");
    cmd
}

#[test]
fn refuses_to_start_without_a_secret() {
    let out = host()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LOGFLEET_JWT_SECRET"), "stderr: {err}");
}

#[test]
fn refuses_a_short_secret() {
    let out = host()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("LOGFLEET_JWT_SECRET", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 32 are required"), "stderr: {err}");
}

#[test]
fn mints_user_and_agent_tokens_the_host_accepts() {
    let auth = logfleet_host::auth::Auth::new(SECRET.as_bytes());
    let out = host()
        .args([
            "token", "user", "--sub", "alice", "--org", "acme", "--role", "admin",
        ])
        .env("LOGFLEET_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims = auth
        .verify(String::from_utf8(out.stdout).unwrap().trim())
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.org.as_str()),
        ("alice", "acme")
    );
    assert_eq!(claims.role, logfleet_host::auth::Role::Admin);

    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let out = host()
        .args([
            "token",
            "agent",
            "--name",
            "edge-1",
            "--org",
            "acme",
            "--json",
            "--jwt-secret-file",
        ])
        .arg(&secret_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let claims = auth.verify(json["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.sub, json["agent_id"].as_str().unwrap());
    assert_eq!(claims.name.as_deref(), Some("edge-1"));
    assert_eq!(claims.role, logfleet_host::auth::Role::Agent);
}

/// SIGTERM: sessions end with reason `shutdown`, clients get a normal close, agents are let
/// go, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_sessions_cleanly_and_exits_zero() {
    let mut host = testkit::HostProcess::spawn(std::path::Path::new(BIN), &[]).await;
    let base = format!("http://127.0.0.1:{}", host.port);
    let anon = testkit::Api::new(&base, None);
    assert_eq!(anon.get("/healthz").await.0, 200);

    let auth = logfleet_host::auth::Auth::new(testkit::SECRET.as_bytes());
    let user = auth
        .mint(
            "alice",
            "acme",
            logfleet_host::auth::Role::User,
            None,
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    let api = testkit::Api::new(&base, Some(user.clone()));
    let id = uuid::Uuid::new_v4();
    let token = auth
        .mint(
            &id.to_string(),
            "acme",
            logfleet_host::auth::Role::Agent,
            Some("edge"),
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    let logs = testkit::LogDir::new();
    let file = logs.create("app.log", &[]);
    let agent =
        testkit::InProcessAgent::start(testkit::agent_config_for(&base, token, &[("app", &file)]));
    api.wait_agent_status(&id.to_string(), "online").await;
    let session = api.start_session(serde_json::json!({"agent_id": id})).await;
    let mut client =
        testkit::WsClient::connect(session["websocket_url"].as_str().unwrap(), &user, None).await;

    host.signal_term();
    let ended = client.expect_event("session_ended").await;
    assert_eq!(ended["reason"], "shutdown");
    assert_eq!(u16::from(client.expect_close().await.unwrap().code), 1000);
    let status = host.wait().await;
    assert!(status.success(), "{status:?}");
    agent.stop().await;
}
