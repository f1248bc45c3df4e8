//! The `logfleet-agent` binary killed and restarted under a running session (issue 11, test
//! 7(c)): the restart resumes the session from its state directory and the files from their
//! checkpoints.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::{AgentProcess, LogDir, TestHost, WsClient, wait_for};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_logfleet-agent");

/// Lines written while the session streams, before the kill.
const BEFORE: usize = 20;
/// Lines written while the agent is down.
const WHILE_DOWN: usize = 20;

fn agent_args(host: &TestHost, id: Uuid, file: &Path, state: &Path) -> Vec<String> {
    vec![
        format!("--host={}", host.base),
        format!("--token={}", host.agent_token("acme", id, "edge-restart")),
        format!("--source=app={}", file.display()),
        format!("--state-dir={}", state.display()),
    ]
}

fn numbered(from: usize, to: usize) -> Vec<String> {
    (from..=to)
        .map(|n| format!("INFO numbered {n:04}"))
        .collect()
}

/// Reads log messages until every one of `want` arrived, keyed by their file line number;
/// panics on a line that arrives twice. Control messages (the agent's disconnect and
/// reconnect) are skipped.
async fn collect(client: &mut WsClient, want: &[String], got: &mut BTreeMap<u64, String>) {
    while !want.iter().all(|w| {
        got.values()
            .any(|g| g.ends_with(w.trim_start_matches("INFO ")))
    }) {
        let msg = client.expect().await;
        if msg["type"] != "log" {
            continue;
        }
        let line = msg["metadata"]["line"].as_u64().unwrap();
        let message = msg["message"].as_str().unwrap().to_owned();
        if let Some(before) = got.insert(line, message.clone()) {
            panic!("line {line} arrived twice: {before:?}, then {message:?}");
        }
    }
}

/// The checkpointed read offset of `file`, if the agent wrote one.
fn checkpointed_offset(state: &Path, file: &Path) -> Option<u64> {
    let text = std::fs::read(state.join("tail-checkpoints.json")).ok()?;
    let cp: Value = serde_json::from_slice(&text).ok()?;
    cp["files"]
        .as_array()?
        .iter()
        .find(|f| f["path"].as_str() == Some(&file.display().to_string()))?["offset"]
        .as_u64()
}

/// An agent killed with SIGKILL while its session streams, restarted with the same state
/// directory after more lines were written, delivers every line of the session to the
/// client exactly once: the lines streamed before the kill, then the ones written while it
/// was down, and it keeps streaming live lines after.
///
/// The kill comes once the agent has saved its session and checkpointed what it read (it
/// does so within a second): lines the outbox took after the last checkpoint are read again
/// after a restart, and would arrive twice if they had been delivered (see the README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_delivers_every_line_once() {
    let host = TestHost::start().await;
    let logs = LogDir::new();
    let file = logs.create("app.log", &["INFO before the session"]);
    let state = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let agent = AgentProcess::spawn(Path::new(BIN), &agent_args(&host, id, &file, state.path()));

    let api = host.api("acme", "alice");
    api.wait_agent_status(&id.to_string(), "online").await;
    let session = api
        .start_session(json!({"agent_id": id, "filters": {"source": "app"}}))
        .await;
    let session_id = session["id"].as_str().unwrap().to_owned();
    let mut client = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        api.token(),
        None,
    )
    .await;
    // The session streams from when its filters are ready: probe until it does.
    let mut got = BTreeMap::new();
    for n in 0.. {
        logs.append("app.log", &[&format!("INFO probe {n}")]).await;
        if let Ok(msg) = client.next(Duration::from_millis(200)).await
            && msg["type"] == "log"
        {
            let line = msg["metadata"]["line"].as_u64().unwrap();
            got.insert(line, msg["message"].as_str().unwrap().to_owned());
            break;
        }
        assert!(n < 100, "the session never streamed");
    }

    let before = numbered(1, BEFORE);
    let refs: Vec<&str> = before.iter().map(String::as_str).collect();
    logs.append("app.log", &refs).await;
    collect(&mut client, &before, &mut got).await;
    // Kill once the session and the read positions are on disk.
    let len = std::fs::metadata(&file).unwrap().len();
    wait_for(|| async {
        let saved = std::fs::read_to_string(state.path().join("sessions.json")).ok()?;
        (saved.contains(&session_id) && checkpointed_offset(state.path(), &file) == Some(len))
            .then_some(())
    })
    .await;
    agent.kill().await;

    let down = numbered(BEFORE + 1, BEFORE + WHILE_DOWN);
    let refs: Vec<&str> = down.iter().map(String::as_str).collect();
    logs.append("app.log", &refs).await;
    let agent = AgentProcess::spawn(Path::new(BIN), &agent_args(&host, id, &file, state.path()));
    collect(&mut client, &down, &mut got).await;

    // Live again after the backlog.
    let live = numbered(BEFORE + WHILE_DOWN + 1, BEFORE + WHILE_DOWN + 3);
    let refs: Vec<&str> = live.iter().map(String::as_str).collect();
    logs.append("app.log", &refs).await;
    collect(&mut client, &live, &mut got).await;

    // Every numbered line once, in file order, at its own line number.
    let numbered_got: Vec<&String> = got.values().filter(|m| m.starts_with("numbered")).collect();
    let want: Vec<String> = numbered(1, BEFORE + WHILE_DOWN + 3)
        .into_iter()
        .map(|l| l.trim_start_matches("INFO ").to_owned())
        .collect();
    assert_eq!(numbered_got, want.iter().collect::<Vec<_>>());
    client.close().await;
    assert!(agent.terminate().await.success());
}

/// Backlog beyond the cap after a restart is not lost silently: the client gets a
/// `logs_dropped` `agent_buffer_full` with the count of the skipped (oldest) lines, and every
/// newer line once; together they are every line written while the agent was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_over_the_cap_after_a_restart_is_reported_as_dropped() {
    const DOWN: usize = 50;
    let host = TestHost::start().await;
    let logs = LogDir::new();
    let file = logs.create("app.log", &[]);
    let state = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let mut args = agent_args(&host, id, &file, state.path());
    // 50 lines of 19 bytes: about 21 fit, the oldest 29 or so do not.
    args.push("--backlog-cap-bytes=400".to_owned());
    let agent = AgentProcess::spawn(Path::new(BIN), &args);

    let api = host.api("acme", "alice");
    api.wait_agent_status(&id.to_string(), "online").await;
    let session = api
        .start_session(json!({"agent_id": id, "filters": {"source": "app"}}))
        .await;
    let session_id = session["id"].as_str().unwrap().to_owned();
    let mut client = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        api.token(),
        None,
    )
    .await;
    for n in 0.. {
        logs.append("app.log", &[&format!("INFO probe {n}")]).await;
        if let Ok(msg) = client.next(Duration::from_millis(200)).await
            && msg["type"] == "log"
        {
            break;
        }
        assert!(n < 100, "the session never streamed");
    }
    let len = std::fs::metadata(&file).unwrap().len();
    wait_for(|| async {
        let saved = std::fs::read_to_string(state.path().join("sessions.json")).ok()?;
        (saved.contains(&session_id) && checkpointed_offset(state.path(), &file) == Some(len))
            .then_some(())
    })
    .await;
    agent.kill().await;

    let down = numbered(1, DOWN);
    let refs: Vec<&str> = down.iter().map(String::as_str).collect();
    logs.append("app.log", &refs).await;
    let agent = AgentProcess::spawn(Path::new(BIN), &args);

    let mut dropped = 0;
    let mut got = Vec::new();
    while dropped + got.len() < DOWN {
        let msg = client.expect().await;
        if msg["type"] == "log" {
            let message = msg["message"].as_str().unwrap();
            if message.starts_with("numbered") {
                got.push(message.to_owned());
            }
        } else if msg["event"] == "logs_dropped" {
            assert_eq!(msg["reason"], "agent_buffer_full", "{msg}");
            dropped += msg["count"].as_u64().unwrap() as usize;
        }
    }
    assert!(dropped > 0, "the cap skipped nothing");
    // The newest lines arrive, each once, in order.
    let want: Vec<String> = numbered(dropped + 1, DOWN)
        .into_iter()
        .map(|l| l.trim_start_matches("INFO ").to_owned())
        .collect();
    assert_eq!(got, want);
    client.close().await;
    assert!(agent.terminate().await.success());
}

/// With a disk buffer (`--buffer-dir`), lines the agent read but the host never acknowledged
/// (the link went silent, so they went nowhere) survive a SIGKILL: the restarted agent
/// delivers every line of the session exactly once, in order. Without the buffer they would
/// be lost with the process: they had left the files' checkpoints behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_lines_survive_sigkill_in_the_disk_buffer() {
    let host = TestHost::start().await;
    let proxy = testkit::TcpProxy::start(host.addr).await;
    let logs = LogDir::new();
    let file = logs.create("app.log", &["INFO before the session"]);
    let state = tempfile::tempdir().unwrap();
    let buffer = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let args = vec![
        format!("--host=http://{}", proxy.addr),
        format!("--token={}", host.agent_token("acme", id, "edge-buffer")),
        format!("--source=app={}", file.display()),
        format!("--state-dir={}", state.path().display()),
        format!("--buffer-dir={}", buffer.path().display()),
    ];
    let agent = AgentProcess::spawn(Path::new(BIN), &args);
    let api = host.api("acme", "alice");
    api.wait_agent_status(&id.to_string(), "online").await;
    let session = api
        .start_session(json!({"agent_id": id, "filters": {"source": "app"}}))
        .await;
    let mut client = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        api.token(),
        None,
    )
    .await;
    testkit::sync(&logs, "app.log", |n| format!("INFO probe {n}"), &mut client).await;
    let mut got = BTreeMap::new();
    let before = numbered(1, BEFORE);
    let refs: Vec<&str> = before.iter().map(String::as_str).collect();
    logs.append("app.log", &refs).await;
    collect(&mut client, &before, &mut got).await;

    // The link goes silent: what the agent reads now goes into it and is never acknowledged.
    proxy.blackhole();
    let unacked = numbered(BEFORE + 1, BEFORE + 200);
    let refs: Vec<&str> = unacked.iter().map(String::as_str).collect();
    logs.append("app.log", &refs).await;
    // Killed once it has read them all (its checkpoint is past them).
    let len = std::fs::metadata(&file).unwrap().len();
    wait_for(|| async { (checkpointed_offset(state.path(), &file) == Some(len)).then_some(()) })
        .await;
    agent.kill().await;
    proxy.drop_blackholed();

    let agent = AgentProcess::spawn(Path::new(BIN), &args);
    let live = numbered(BEFORE + 201, BEFORE + 210);
    let refs: Vec<&str> = live.iter().map(String::as_str).collect();
    logs.append("app.log", &refs).await;
    let mut want = unacked.clone();
    want.extend(live);
    collect(&mut client, &want, &mut got).await;

    let numbered_got: Vec<&String> = got.values().filter(|m| m.starts_with("numbered")).collect();
    let all: Vec<String> = numbered(1, BEFORE + 210)
        .into_iter()
        .map(|l| l.trim_start_matches("INFO ").to_owned())
        .collect();
    assert_eq!(
        numbered_got,
        all.iter().collect::<Vec<_>>(),
        "every line once"
    );
    client.close().await;
    assert!(agent.terminate().await.success());
}

/// A restart's backlog much larger than the agent's buffer (`--buffer-bytes`) reaches a host
/// that keeps up whole: the agent waits for acknowledgements instead of overflowing, so no
/// line is dropped and each arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_bigger_than_the_buffer_arrives_whole_while_the_host_keeps_up() {
    const DOWN: usize = 30_000;
    let host = TestHost::start().await;
    let logs = LogDir::new();
    let file = logs.create("app.log", &[]);
    let state = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let mut args = agent_args(&host, id, &file, state.path());
    // 30,000 lines of about 100 random bytes: ~3 MB of text against a 1 MiB buffer (which
    // holds a whole tail batch: the agent holds back between batches).
    args.push("--buffer-bytes=1048576".to_owned());
    let agent = AgentProcess::spawn(Path::new(BIN), &args);
    let api = host.api("acme", "alice");
    api.wait_agent_status(&id.to_string(), "online").await;
    let session = api
        .start_session(json!({"agent_id": id, "filters": {"source": "app"},
            "limits": {"lines_per_second": 50_000, "bytes_per_second": 32 << 20}}))
        .await;
    let session_id = session["id"].as_str().unwrap().to_owned();
    let mut client = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        api.token(),
        None,
    )
    .await;
    testkit::sync(&logs, "app.log", |n| format!("INFO probe {n}"), &mut client).await;
    let len = std::fs::metadata(&file).unwrap().len();
    wait_for(|| async {
        let saved = std::fs::read_to_string(state.path().join("sessions.json")).ok()?;
        (saved.contains(&session_id) && checkpointed_offset(state.path(), &file) == Some(len))
            .then_some(())
    })
    .await;
    agent.kill().await;

    // Random text, so compression does not make it small.
    let down: Vec<String> = (1..=DOWN)
        .map(|n| format!("INFO numbered {n:05} {} {}", Uuid::new_v4(), Uuid::new_v4()))
        .collect();
    for chunk in down.chunks(5_000) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        logs.append("app.log", &refs).await;
    }
    let agent = AgentProcess::spawn(Path::new(BIN), &args);
    let mut got = Vec::new();
    while got.len() < DOWN {
        let msg = client.expect().await;
        if msg["type"] == "log" {
            let message = msg["message"].as_str().unwrap();
            if message.starts_with("numbered") {
                got.push(message.to_owned());
            }
        } else {
            assert_ne!(msg["event"], "logs_dropped", "{msg}");
        }
    }
    let want: Vec<String> = down
        .iter()
        .map(|l| l.trim_start_matches("INFO ").to_owned())
        .collect();
    assert_eq!(got, want, "every line once, in order");
    client.close().await;
    assert!(agent.terminate().await.success());
}
