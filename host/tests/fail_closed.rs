//! Filters fail closed, end to end on a real host and agent: a plugin that traps, loops past its
//! deadline or cannot be fetched ends its session — clients get `filter_error`, `logs_dropped`
//! (`filter_failed`) and `session_ended` (`filter_failed`), in that order, then a normal close —
//! and not one line the failing plugin did not pass reaches a client, live or replayed. A config
//! the plugin refuses is refused at start.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{Api, Stack, WAIT, WsClient, WsEnd, plugin_bytes, skip_until};

async fn upload(api: &Api, name: &str) {
    let (status, body) = api
        .post_raw(&format!("/api/v1/plugins?name={name}"), plugin_bytes(name))
        .await;
    assert_eq!(status, 201, "{name}: {body}");
}

/// Every message until the server closes the socket (normally), and the close code.
async fn read_to_close(client: &mut WsClient) -> (Vec<Value>, Option<u16>) {
    let mut messages = Vec::new();
    loop {
        match client.next(WAIT).await {
            Ok(msg) => messages.push(msg),
            Err(WsEnd::Closed(frame)) => return (messages, frame.map(|f| u16::from(f.code))),
            Err(WsEnd::Timeout) => panic!("the session did not end; got {messages:?}"),
        }
    }
}

/// Asserts the stream ended with exactly `filter_error` (naming `plugin`, with a message
/// containing `cause`), `logs_dropped` (`filter_failed`), `session_ended` (`filter_failed`),
/// and a normal close; returns the dropped count.
fn assert_failed_closed(messages: &[Value], close: Option<u16>, plugin: &str, cause: &str) -> u64 {
    assert!(messages.len() >= 3, "{messages:?}");
    let [error, dropped, ended] = &messages[messages.len() - 3..] else {
        unreachable!()
    };
    assert_eq!(error["event"], "filter_error", "{messages:?}");
    assert_eq!(error["plugin"], plugin, "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(cause), "{message}");
    assert_eq!(
        (&dropped["event"], &dropped["reason"]),
        (&json!("logs_dropped"), &json!("filter_failed")),
        "{dropped}"
    );
    assert_eq!(
        ended,
        &json!({"type":"control","event":"session_ended","reason":"filter_failed"})
    );
    assert_eq!(close, Some(1000));
    dropped["count"].as_u64().unwrap()
}

/// No log message carries `marker`.
fn assert_none_leaked(messages: &[Value], marker: &str) {
    for msg in messages {
        if msg["type"] == "log" {
            let text = msg["message"].as_str().unwrap();
            assert!(!text.contains(marker), "leaked past a failed filter: {msg}");
        }
    }
}

/// A plugin that traps ends its session: lines it passed before arrive, the lines it held are
/// counted and never sent (neither live nor from the replay buffer through `since_seq=0`), and
/// a plain session on the same agent carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_plugin_ends_its_session_and_leaks_nothing() {
    let stack = Stack::new().await;
    upload(&stack.admin, "hostile-trap").await;
    let plain = stack.start(json!({"filters": {"source": "nginx"}})).await;
    let mut plain_client = stack.client(&plain).await;
    let session = stack
        .start(json!({"filters": {"source": "nginx", "plugins": [
            {"name": "hostile-trap", "config": {"on": "boom"}}
        ]}}))
        .await;
    let mut client = stack.client(&session).await;
    let last_probe = stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;
    skip_until(&mut plain_client, &last_probe).await;
    // A client resuming from the start of the replay buffer sees what it holds, then live.
    let mut resumed = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        stack.api.token(),
        Some(0),
    )
    .await;

    stack
        .logs
        .append("nginx.log", &["boom secret card=4111", "secret after"])
        .await;
    let (messages, close) = read_to_close(&mut client).await;
    let dropped = assert_failed_closed(&messages, close, "hostile-trap", "panicked");
    assert!(dropped >= 1, "the line it failed on is counted: {dropped}");
    assert_none_leaked(&messages, "secret");

    let (replayed, close) = read_to_close(&mut resumed).await;
    assert!(
        replayed.iter().any(|m| m["message"] == last_probe),
        "the replay buffer held what the plugin passed: {replayed:?}"
    );
    assert_eq!(
        assert_failed_closed(&replayed, close, "hostile-trap", "panicked"),
        dropped
    );
    assert_none_leaked(&replayed, "secret");

    // The session is gone with its replay buffer.
    let url = format!(
        "{}?token={}&since_seq=0",
        session["websocket_url"].as_str().unwrap(),
        stack.api.token()
    );
    assert_eq!(WsClient::refused_status(&url).await, 404);
    // The agent and the other session carry on; they saw the lines.
    skip_until(&mut plain_client, "secret after").await;
    stack.logs.append("nginx.log", &["still here"]).await;
    skip_until(&mut plain_client, "still here").await;
}

/// A plugin that loops past its deadline ends its session before passing a single line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_plugin_ends_its_session_at_its_deadline() {
    let stack = Stack::new().await;
    upload(&stack.admin, "hostile-loop").await;
    let session = stack
        .start(json!({"filters": {"plugins": [{"name": "hostile-loop", "config": {}}]}}))
        .await;
    let mut client = stack.client(&session).await;
    // Lines count once the agent runs the session; feed them until the plugin fails on one.
    let mut messages = Vec::new();
    for n in 0.. {
        stack
            .logs
            .append("nginx.log", &[&format!("secret {n}")])
            .await;
        match client.next(Duration::from_millis(200)).await {
            Ok(msg) => {
                messages.push(msg);
                break;
            }
            Err(WsEnd::Timeout) if n < 100 => continue,
            Err(e) => panic!("no filter_error: {e:?}"),
        }
    }
    let (rest, close) = read_to_close(&mut client).await;
    messages.extend(rest);
    assert_failed_closed(&messages, close, "hostile-loop", "deadline");
    assert_none_leaked(&messages, "secret");
    assert!(
        messages.iter().all(|m| m["type"] == "control"),
        "{messages:?}"
    );
}

/// A plugin the agent cannot fetch — deleted on the host while the session ran, and not in the
/// agent's cache when it reconnects and resumes the session — ends the session with nothing
/// dropped (it never ran there) and no line that did not pass it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfetchable_plugin_ends_its_session() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_owned();
    let mut stack = Stack::new_with(
        |_| {},
        move |config| config.tuning.cache_dir = Some(cache_dir.clone()),
    )
    .await;
    upload(&stack.admin, "template").await;
    let session = stack
        .start(json!({"filters": {"plugins": [
            {"name": "template", "config": {"contains": "keep"}}
        ]}}))
        .await;
    let mut client = stack.client(&session).await;
    stack
        .sync("nginx.log", |n| format!("keep probe {n}"), &mut client)
        .await;

    stack.stop_agent().await;
    let (status, body) = stack.admin.send_delete("/api/v1/plugins/template").await;
    assert_eq!(status, 200, "{body}");
    std::fs::remove_dir_all(cache.path().join("plugins")).unwrap();
    stack.logs.append("nginx.log", &["secret offline"]).await;
    stack.start_agent().await;
    stack.logs.append("nginx.log", &["secret online"]).await;

    let (messages, close) = read_to_close(&mut client).await;
    let dropped = assert_failed_closed(&messages, close, "template", "not available");
    assert_eq!(dropped, 0);
    assert_none_leaked(&messages, "secret");
}

/// A config the plugin refuses is refused at start, with the plugin's own message and the
/// plugin named, and no session starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_plugin_config_is_refused_at_start() {
    let stack = Stack::new().await;
    upload(&stack.admin, "hostile-config").await;
    upload(&stack.admin, "hostile-loop").await;
    let (status, err) = stack
        .api
        .post(
            "/api/v1/stream/start",
            &json!({"agent_id": stack.agent_id, "filters": {"plugins": [
                {"name": "hostile-config", "config": {"threshold": -1}}
            ]}}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_filter")),
        "{err}"
    );
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("'hostile-config'"), "{message}");
    assert!(
        message.contains("hostile-config: `threshold` must be a positive number"),
        "{message}"
    );

    // Looping in configure is refused the same way.
    let (status, err) = stack
        .api
        .post(
            "/api/v1/stream/start",
            &json!({"agent_id": stack.agent_id, "filters": {"plugins": [
                {"name": "hostile-loop", "config": {"in": "configure"}}
            ]}}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_filter")),
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{err}"
    );
    let (_, sessions) = stack.api.get("/api/v1/stream/sessions").await;
    assert_eq!(sessions["total"], 0, "{sessions}");
}

/// An agent can end only its own sessions: a `FilterError` naming another agent's session (of
/// the same org, even) is ignored, and that session ends only when it is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_fail_another_agents_session() {
    use futures_util::{SinkExt, StreamExt};
    use logfleet_protocol::agent::{self, AgentFrame, Hello, HostFrame, PROTOCOL_VERSION};
    use tokio_tungstenite::tungstenite::Message;

    let stack = Stack::new().await;
    let session = stack.start(json!({})).await;
    let mut client = stack.client(&session).await;
    stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;

    let rogue = stack
        .host
        .agent_token("acme", uuid::Uuid::new_v4(), "edge-rogue");
    let url = format!(
        "{}/api/v1/agent/connect?token={rogue}",
        stack.host.base.replacen("http", "ws", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let send = |frame: AgentFrame| Message::Binary(agent::encode(&frame).into());
    ws.send(send(AgentFrame::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        name: "edge-rogue".into(),
        hostname: "rogue".into(),
        version: "0".into(),
        sources: vec![],
        outbox: 1,
        next_frame: 1,
    })))
    .await
    .unwrap();
    ws.send(send(AgentFrame::FilterError {
        session_id: session["id"].as_str().unwrap().into(),
        plugin: "redact".into(),
        message: "forged".into(),
        dropped: 7,
    }))
    .await
    .unwrap();
    // The host answers frames of one link in order: once this is answered, the forged error
    // has been handled.
    let digest = format!("sha256:{}", "0".repeat(64));
    ws.send(send(AgentFrame::FetchPlugin { digest }))
        .await
        .unwrap();
    loop {
        let bytes = match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => bytes,
            Ok(Some(Ok(_))) => continue,
            other => panic!("agent link ended: {other:?}"),
        };
        if matches!(
            agent::decode::<HostFrame>(&bytes).unwrap(),
            HostFrame::PluginUnavailable { .. }
        ) {
            break;
        }
    }

    let (status, _) = stack
        .api
        .post("/api/v1/stream/stop", &json!({"session_id": session["id"]}))
        .await;
    assert_eq!(status, 200);
    let (messages, _) = read_to_close(&mut client).await;
    assert_eq!(
        messages.last().unwrap(),
        &json!({"type":"control","event":"session_ended","reason":"stopped"}),
        "{messages:?}"
    );
    assert!(
        messages.iter().all(|m| m["event"] != "filter_error"),
        "{messages:?}"
    );
}
