//! Acknowledged delivery on the host, driven by a raw agent: frames are acknowledged once
//! handled, and frames an agent sends again after a reconnect are applied once.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use logfleet_protocol::Level;
use logfleet_protocol::agent::{AgentFrame, HostFrame, LogBatch, Record};
use logfleet_protocol::client::DropReason;
use serde_json::json;
use testkit::raw_agent::{self, RawAgent};
use testkit::{TestHost, WsClient};
use uuid::Uuid;

fn batch(session: &str, seqs: std::ops::Range<u64>) -> AgentFrame {
    AgentFrame::Logs(LogBatch {
        session_id: session.into(),
        records: seqs
            .map(|seq| Record {
                seq,
                timestamp_ms: 1_700_000_000_000,
                level: Level::Error,
                source: "app".into(),
                file: "/var/log/app.log".into(),
                line: seq,
                message: format!("line {seq}"),
                event_ms: None,
                fields: None,
                raw: None,
            })
            .collect(),
    })
}

/// A link of `outbox` whose first frame is numbered `next_frame`, with its session set read.
async fn link(host: &TestHost, token: &str, outbox: u64, next_frame: u64) -> RawAgent {
    let mut agent = RawAgent::connect(&host.agent_url(), token).await.unwrap();
    let AgentFrame::Hello(mut hello) = raw_agent::hello("edge-1", "edge-1", &[("app", "/a")])
    else {
        unreachable!("hello() makes a Hello");
    };
    hello.outbox = outbox;
    hello.next_frame = next_frame;
    agent.send(&AgentFrame::Hello(hello)).await.unwrap();
    assert!(matches!(agent.expect_frame().await, HostFrame::Sessions(_)));
    agent
}

/// Every frame is acknowledged once handled; frames an agent sends again on a new link
/// (their acknowledgement was lost with the old one) reach the session's clients once —
/// batches and drop counts alike — while a restarted agent (a new outbox numbering from the
/// start) is heard in full.
#[tokio::test]
async fn resent_frames_reach_clients_once() {
    let host = TestHost::start().await;
    let id = Uuid::new_v4();
    let token = host.agent_token("acme", id, "edge-1");
    let api = host.api("acme", "alice");
    let mut first = link(&host, &token, 7, 1).await;
    let session = api.start_session(json!({"agent_id": id})).await;
    let session_id = session["id"].as_str().unwrap();
    assert!(matches!(first.expect_frame().await, HostFrame::Start(_)));
    let mut client = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        api.token(),
        None,
    )
    .await;

    first.send(&batch(session_id, 1..4)).await.unwrap();
    assert_eq!(first.expect_ack(1).await, 1);
    // Handled, and the acknowledgement of frame 2 lost with the link.
    first.send(&batch(session_id, 4..6)).await.unwrap();
    first.expect_ack(2).await;

    // The agent resends from frame 2, then goes on.
    let mut second = link(&host, &token, 7, 2).await;
    second.send(&batch(session_id, 4..6)).await.unwrap();
    second
        .send(&AgentFrame::Dropped {
            session_id: session_id.into(),
            count: 2,
            reason: DropReason::RateLimited,
        })
        .await
        .unwrap();
    second.send(&batch(session_id, 8..9)).await.unwrap();
    assert_eq!(second.expect_ack(4).await, 4);
    drop(first);

    // A restarted agent: a new outbox, numbered from the start again.
    let mut third = link(&host, &token, 8, 1).await;
    third.send(&batch(session_id, 9..10)).await.unwrap();
    assert_eq!(third.expect_ack(1).await, 1);

    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("line 9") {
        let msg = client.expect().await;
        match msg["type"].as_str().unwrap() {
            "log" => seen.push(msg["message"].as_str().unwrap().to_owned()),
            _ if msg["event"] == "logs_dropped" => seen.push(format!("dropped {}", msg["count"])),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [
            "line 1",
            "line 2",
            "line 3",
            "line 4",
            "line 5",
            "dropped 2",
            "line 8",
            "line 9"
        ]
    );
    client
        .expect_silence(std::time::Duration::from_millis(200))
        .await;
}

/// The host tells an agent how long a session has left — at its start, and again in the full
/// set on every reconnect — never a wall-clock time the agent would compare with its own.
#[tokio::test]
async fn sessions_are_sent_with_the_time_they_have_left() {
    let host = TestHost::start().await;
    let id = Uuid::new_v4();
    let token = host.agent_token("acme", id, "edge-1");
    let api = host.api("acme", "alice");
    let mut first = link(&host, &token, 7, 1).await;
    let session = api
        .start_session(json!({"agent_id": id, "timeout_seconds": 60}))
        .await;
    let HostFrame::Start(spec) = first.expect_frame().await else {
        panic!("expected the session's start");
    };
    assert_eq!(spec.id, session["id"]);
    assert!(
        (55_000..=60_000).contains(&spec.remaining_ms),
        "{}",
        spec.remaining_ms
    );
    // Time passes (this waits for nothing): the set on the reconnect must say less.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut agent = RawAgent::connect(&host.agent_url(), &token).await.unwrap();
    agent
        .send(&raw_agent::hello("edge-1", "edge-1", &[]))
        .await
        .unwrap();
    let HostFrame::Sessions(specs) = agent.expect_frame().await else {
        panic!("expected the session set");
    };
    assert_eq!(specs.len(), 1);
    assert!(
        specs[0].remaining_ms < spec.remaining_ms && specs[0].remaining_ms > 50_000,
        "{} after {}",
        specs[0].remaining_ms,
        spec.remaining_ms
    );
}
