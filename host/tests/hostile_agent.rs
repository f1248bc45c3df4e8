//! Hostile agents speaking the real protocol (testkit's raw agent): what one agent sends is
//! bounded, an agent that breaks a bound is cut off with 4011 and counted, another tenant's
//! session carries on, and what a session keeps for resume is bounded in bytes.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::time::Duration;

use logfleet_protocol::Level;
use logfleet_protocol::agent::{
    self, AgentFrame, CLOSE_LIMIT_EXCEEDED, HostFrame, LogBatch, Record,
};
use logfleet_protocol::agent_limits::{MAX_BATCH_RECORDS, MAX_LINE_BYTES, MAX_SOURCES};
use serde_json::json;
use testkit::raw_agent::{self, FromHost, RawAgent};
use testkit::{Api, TestHost, WsClient, plugin_bytes, wait_for};
use uuid::Uuid;

/// A counter's value on `/metrics`.
async fn metric(host: &TestHost, name: &str) -> u64 {
    let (_, body) = Api::new(&host.base, None).get("/metrics").await;
    body.as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not on /metrics: {body}"))
}

fn record(seq: u64, message: String) -> Record {
    Record {
        seq,
        timestamp_ms: 1_700_000_000_000,
        level: Level::Error,
        source: "nginx".into(),
        file: "/var/log/nginx/error.log".into(),
        line: seq,
        message,
        event_ms: None,
        fields: None,
        raw: None,
    }
}

fn batch(session_id: &str, records: Vec<Record>) -> AgentFrame {
    AgentFrame::Logs(LogBatch {
        session_id: session_id.into(),
        records,
    })
}

/// A well-behaved raw agent of `org`, connected, with a session started by `api` on it and a
/// client on that session.
struct Streaming {
    agent: RawAgent,
    session_id: String,
    client: WsClient,
}

async fn streaming(host: &TestHost, org: &str) -> Streaming {
    let id = Uuid::new_v4();
    let mut agent = RawAgent::connect(&host.agent_url(), &host.agent_token(org, id, "edge-1"))
        .await
        .unwrap();
    agent
        .send(&raw_agent::hello(
            "edge-1",
            "edge-1.local",
            &[("nginx", "/var/log/nginx/error.log")],
        ))
        .await
        .unwrap();
    assert_eq!(agent.expect_frame().await, HostFrame::Sessions(vec![]));
    let api = host.api(org, "alice");
    api.wait_agent_status(&id.to_string(), "online").await;
    let session = api.start_session(json!({"agent_id": id})).await;
    let HostFrame::Start(spec) = agent.expect_frame().await else {
        panic!("expected the session to start on the agent");
    };
    assert_eq!(spec.id, session["id"]);
    let client = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        api.token(),
        None,
    )
    .await;
    Streaming {
        agent,
        session_id: spec.id,
        client,
    }
}

/// An agent that breaks any bound on what it sends (records or bytes per batch, bytes per
/// record, sources in `Hello`, frame size after inflation — a deflate bomb — or before it) is
/// closed with 4011 and a reason naming the bound, and counted on `/metrics`, while another
/// org's session on the same host carries on receiving its lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_agents_are_cut_off_counted_and_contained() {
    let host = TestHost::start().await;
    let mut good = streaming(&host, "acme").await;
    let sid = good.session_id.clone();
    good.agent
        .send(&batch(&sid, vec![record(1, "before".into())]))
        .await
        .unwrap();
    assert_eq!(good.client.expect_log().await["message"], "before");

    let line = |n: usize| "x".repeat(n);
    let too_many_sources: Vec<(String, String)> = (0..=MAX_SOURCES)
        .map(|i| (format!("s{i}"), format!("/var/log/{i}.log")))
        .collect();
    let too_many_sources: Vec<(&str, &str)> = too_many_sources
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_str()))
        .collect();
    let bomb = agent::encode(&batch("s", vec![record(1, line(8 << 20))]));
    assert!(bomb.len() < 100 * 1024, "the bomb is small: {}", bomb.len());
    let mut oversized_plain = vec![0u8];
    oversized_plain.extend(vec![7u8; 2 << 20]);
    // (bound, a hostile hello or none, the hostile frame after a good hello)
    let cases: Vec<(&str, Option<AgentFrame>, Vec<u8>)> = vec![
        (
            "batch_records",
            None,
            agent::encode(&batch(
                "s",
                (0..=MAX_BATCH_RECORDS as u64)
                    .map(|i| record(i, "m".into()))
                    .collect(),
            )),
        ),
        (
            "record_bytes",
            None,
            agent::encode(&batch("s", vec![record(1, line(MAX_LINE_BYTES + 8192))])),
        ),
        (
            "batch_bytes",
            None,
            agent::encode(&batch(
                "s",
                (0..10).map(|i| record(i, line(60 * 1024))).collect(),
            )),
        ),
        (
            "sources",
            Some(raw_agent::hello("evil", "evil", &too_many_sources)),
            Vec::new(),
        ),
        ("frame_bytes", None, bomb),
        ("frame_bytes", None, oversized_plain),
    ];
    let evil_id = Uuid::new_v4();
    let evil_token = host.agent_token("evil", evil_id, "evil");
    for (i, (limit, hello, frame)) in cases.into_iter().enumerate() {
        let mut evil = RawAgent::connect(&host.agent_url(), &evil_token)
            .await
            .unwrap();
        match hello {
            Some(hello) => evil.send(&hello).await.unwrap(),
            None => {
                evil.send(&raw_agent::hello("evil", "evil", &[("a", "/a")]))
                    .await
                    .unwrap();
                evil.expect_frame().await;
                // The host may stop reading an oversized message before it is all written.
                let _ = evil.send_bytes(frame).await;
            }
        }
        match tokio::time::timeout(testkit::WAIT, evil.recv())
            .await
            .unwrap()
        {
            Ok(FromHost::Closed(Some(close))) => {
                assert_eq!(u16::from(close.code), CLOSE_LIMIT_EXCEEDED, "{limit}");
                assert!(
                    close.reason.contains(limit),
                    "{limit}: reason {:?}",
                    close.reason
                );
            }
            // A message too large to read whole is refused mid-stream: the host closes with
            // 4011 but, the rest of the message unread, the connection may end in a reset that
            // discards the close frame. It is cut off and counted all the same.
            Err(_) if i == 5 => {}
            other => panic!("{limit}: expected a 4011 close, got {other:?}"),
        }
        assert_eq!(
            metric(&host, "logfleet_agent_limit_violations_total").await,
            i as u64 + 1
        );
        // The other tenant's stream goes on, line by line.
        good.agent
            .send(&batch(
                &sid,
                vec![record(2 + i as u64, format!("during {i}"))],
            ))
            .await
            .unwrap();
        assert_eq!(
            good.client.expect_log().await["message"],
            format!("during {i}")
        );
    }
    // Within the limits, a full batch of maximal lines still goes through.
    let full: Vec<Record> = (0..4)
        .map(|i| record(100 + i, line(MAX_LINE_BYTES)))
        .collect();
    good.agent.send(&batch(&sid, full)).await.unwrap();
    for _ in 0..4 {
        let log = good.client.expect_log().await;
        assert_eq!(log["message"].as_str().unwrap().len(), MAX_LINE_BYTES);
    }
}

/// What a session keeps for `?since_seq=` resume never exceeds `replay_bytes`; a client
/// resuming from the start is told exactly how many lines the bound evicted, then gets the
/// rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_buffer_is_bounded_in_bytes() {
    let bound = 64 * 1024;
    let host = TestHost::start_with(|c| c.tuning.replay_bytes = bound).await;
    let mut s = streaming(&host, "acme").await;
    let total = 200u64;
    for b in 0..20 {
        let records = (1..=10)
            .map(|i| record(b * 10 + i, format!("{:>2000}", b * 10 + i)))
            .collect();
        s.agent.send(&batch(&s.session_id, records)).await.unwrap();
    }
    for _ in 0..total {
        s.client.expect_log().await;
    }
    let api = host.api("acme", "alice");
    let (_, sessions) = api.get("/api/v1/stream/sessions").await;
    let url = format!(
        "ws://{}/api/v1/stream/ws/{}",
        host.addr, sessions["sessions"][0]["id"]
    )
    .replace('"', "");
    let mut resumed = WsClient::connect(&url, api.token(), Some(0)).await;
    let dropped = resumed.expect_event("logs_dropped").await;
    let lost = dropped["count"].as_u64().unwrap();
    assert!(lost > 0 && lost < total, "{dropped}");
    let mut held = 0;
    for seq in lost + 1..=total {
        let log = resumed.expect_log().await;
        assert_eq!(log["seq"], seq);
        held += serde_json::to_string(&log).unwrap().len();
    }
    assert!(held <= bound, "{held} bytes replayed");
    // The next message would not have fitted: the bound evicts only what it must.
    assert!(held + 2100 > bound, "{held} bytes replayed");
}

/// A session serves at most `max_clients_per_session` WebSocket clients: one more is refused
/// with 429, and a client leaving makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_clients_are_capped() {
    let host = TestHost::start_with(|c| c.tuning.max_clients_per_session = 2).await;
    let s = streaming(&host, "acme").await;
    let api = host.api("acme", "alice");
    let (_, sessions) = api.get("/api/v1/stream/sessions").await;
    let url = format!(
        "ws://{}/api/v1/stream/ws/{}",
        host.addr,
        sessions["sessions"][0]["id"].as_str().unwrap(),
    );
    let with_token = format!("{url}?token={}", api.token());
    let second = WsClient::connect(&url, api.token(), None).await;
    assert_eq!(WsClient::refused_status(&with_token).await, 429);
    second.close().await;
    wait_for(|| async {
        let (_, list) = api.get("/api/v1/stream/sessions").await;
        (list["sessions"][0]["clients"] == 1).then_some(())
    })
    .await;
    assert_eq!(WsClient::refused_status(&with_token).await, 101);
    drop(s);
}

/// An agent that stops reading its link is dropped once a write to it passes the write
/// deadline, and counted; it does not hold its link task (or the host's memory) forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_does_not_read_is_dropped() {
    let host = TestHost::start_with(|c| {
        c.tuning.agent_write_timeout = Duration::from_millis(500);
        c.tuning.agent_min_write_rate = u64::MAX;
    })
    .await;
    let api = host.admin("acme", "root");
    let (status, plugin) = api
        .post_raw("/api/v1/plugins?name=redact", plugin_bytes("redact"))
        .await;
    assert_eq!(status, 201, "{plugin}");
    let digest = plugin["plugin"]["digest"].as_str().unwrap().to_owned();
    let id = Uuid::new_v4();
    let mut agent =
        RawAgent::connect_slow_reader(&host.agent_url(), &host.agent_token("acme", id, "edge-1"))
            .await
            .unwrap();
    agent
        .send(&raw_agent::hello("edge-1", "edge-1", &[]))
        .await
        .unwrap();
    api.wait_agent_status(&id.to_string(), "online").await;
    // Ask for the plugin (1.2 MiB) over and over without reading: the answers back up until a
    // write cannot finish in time. The requests are tiny and fit the host's receive buffer.
    let fetch = AgentFrame::FetchPlugin { digest };
    for _ in 0..64 {
        if agent.send(&fetch).await.is_err() {
            break;
        }
    }
    wait_for(|| async {
        (metric(&host, "logfleet_agent_write_timeouts_total").await == 1).then_some(())
    })
    .await;
    api.wait_agent_status(&id.to_string(), "offline").await;
}

/// Hostile links at once in the memory test, and the rounds each sends.
const HOSTILE_LINKS: usize = 32;
const HOSTILE_ROUNDS: usize = 3;
/// How much a real host process may grow (its peak resident memory, `VmHWM`) while
/// [`HOSTILE_LINKS`] agents at once send deflate bombs (30 MiB inflated each) and oversized
/// batches: each costs at most the 1 MiB inflate bound and a 1 MiB message while it is read,
/// so at most about 2 MiB per link (measured: a few MiB in all). Without the bound, each bomb
/// inflated to 30 MiB and then decoded into another 30 MiB.
const HOSTILE_GROWTH_BOUND_KIB: u64 = 64 * 1024;

/// A real `logfleet-host` process under many hostile agents at once keeps its peak resident
/// memory within a bound set by the frame limits, and every hostile link is closed with 4011.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_memory_stays_bounded_under_hostile_agents() {
    let host = testkit::HostProcess::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_logfleet-host")),
        &[],
    )
    .await;
    let (port, pid) = (host.port, host.child.id().unwrap());
    let auth = logfleet_host::auth::Auth::new(testkit::SECRET.as_bytes());
    let url = format!("ws://127.0.0.1:{port}/api/v1/agent/connect");
    // One ordinary agent first, so the baseline includes a link's ordinary costs.
    let token = |org: &str| {
        auth.mint(
            &Uuid::new_v4().to_string(),
            org,
            logfleet_host::auth::Role::Agent,
            Some("a"),
            Duration::from_secs(600),
        )
        .unwrap()
    };
    let mut ordinary = RawAgent::connect(&url, &token("acme")).await.unwrap();
    ordinary
        .send(&raw_agent::hello("a", "a", &[("a", "/a")]))
        .await
        .unwrap();
    ordinary.expect_frame().await;
    let baseline = testkit::process_memory_kib(pid, "VmHWM").unwrap();

    let bomb = agent::encode(&batch("s", vec![record(1, "x".repeat(30 << 20))]));
    let big_batch = agent::encode(&batch(
        "s",
        (0..10).map(|i| record(i, "y".repeat(60 * 1024))).collect(),
    ));
    for round in 0..HOSTILE_ROUNDS {
        let mut links = tokio::task::JoinSet::new();
        for n in 0..HOSTILE_LINKS {
            let (url, token) = (url.clone(), token("evil"));
            let frame = if n % 2 == 0 {
                bomb.clone()
            } else {
                big_batch.clone()
            };
            links.spawn(async move {
                let mut evil = RawAgent::connect(&url, &token).await.unwrap();
                evil.send(&raw_agent::hello("evil", "evil", &[("a", "/a")]))
                    .await
                    .unwrap();
                evil.expect_frame().await;
                evil.send_bytes(frame).await.unwrap();
                let close = evil.expect_close().await.expect("a close frame");
                assert_eq!(u16::from(close.code), CLOSE_LIMIT_EXCEEDED);
            });
        }
        while let Some(done) = links.join_next().await {
            done.unwrap();
        }
        let peak = testkit::process_memory_kib(pid, "VmHWM").unwrap();
        assert!(
            peak.saturating_sub(baseline) <= HOSTILE_GROWTH_BOUND_KIB,
            "round {round}: peak resident memory grew from {baseline} KiB to {peak} KiB"
        );
    }
    // The ordinary agent was never disturbed.
    ordinary
        .send(&AgentFrame::Dropped {
            session_id: "none".into(),
            count: 1,
            reason: logfleet_protocol::client::DropReason::RateLimited,
        })
        .await
        .unwrap();
    let (_, body) = Api::new(&format!("http://127.0.0.1:{port}"), None)
        .get("/metrics")
        .await;
    let violations = format!(
        "logfleet_agent_limit_violations_total {}",
        HOSTILE_LINKS * HOSTILE_ROUNDS
    );
    assert!(body.as_str().unwrap().contains(&violations), "{body}");
    println!(
        "host peak resident memory: {baseline} KiB before, {} KiB after {} hostile links",
        testkit::process_memory_kib(pid, "VmHWM").unwrap(),
        HOSTILE_LINKS * HOSTILE_ROUNDS
    );
}

/// Sessions in [`stalled_clients_cost_at_most_the_fanout_budgets`], each with a client that
/// never reads, and what the agent sends to each (two budgets' worth per session).
const STALLED_SESSIONS: usize = 8;
const FLOOD_PER_SESSION: usize = 16 << 20;
/// The host's replay and live-queue budgets in that test.
const FANOUT_BUDGET: usize = 8 << 20;
/// The fan-out holds at most twice each budget plus a burst and a message per session
/// (≈ 34 MiB here); the rest of this bound is decoding, writers and allocator slack. Without
/// the host-wide live-queue budget the queues kept everything: 128 MiB.
const STALLED_GROWTH_BOUND_KIB: u64 = 64 * 1024;

/// However many sessions have clients that stop reading, the bursts a real host keeps for them
/// are bounded host-wide (`--queue-budget-bytes`, like `--replay-budget-bytes` for resume), so
/// one agent flooding its sessions cannot grow the host's memory past that bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_cost_at_most_the_fanout_budgets() {
    let budget = FANOUT_BUDGET.to_string();
    let host = testkit::HostProcess::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_logfleet-host")),
        &[
            "--queue-budget-bytes".as_ref(),
            budget.as_ref(),
            "--replay-budget-bytes".as_ref(),
            budget.as_ref(),
        ],
    )
    .await;
    let (port, pid) = (host.port, host.child.id().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let auth = logfleet_host::auth::Auth::new(testkit::SECRET.as_bytes());
    let mint = |sub: &str, role| {
        auth.mint(sub, "acme", role, Some("edge-1"), Duration::from_secs(600))
            .unwrap()
    };
    let id = Uuid::new_v4();
    let mut agent = RawAgent::connect(
        &format!("ws://127.0.0.1:{port}/api/v1/agent/connect"),
        &mint(&id.to_string(), logfleet_host::auth::Role::Agent),
    )
    .await
    .unwrap();
    agent
        .send(&raw_agent::hello("edge-1", "edge-1", &[("nginx", "/n")]))
        .await
        .unwrap();
    agent.expect_frame().await;
    let api = Api::new(&base, Some(mint("alice", logfleet_host::auth::Role::User)));
    api.wait_agent_status(&id.to_string(), "online").await;
    let mut stalled = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..STALLED_SESSIONS {
        let session = api.start_session(json!({"agent_id": id})).await;
        let HostFrame::Start(spec) = agent.expect_frame().await else {
            panic!("expected the session to start on the agent");
        };
        let url = session["websocket_url"].as_str().unwrap();
        stalled.push(WsClient::connect(url, api.token(), None).await);
        sessions.push(spec.id);
    }
    let baseline = testkit::process_memory_kib(pid, "VmHWM").unwrap();

    // Batches as large as the limits allow: 4 lines of 60 KiB.
    let per_batch = 4;
    let line = 60 * 1024;
    let batches = FLOOD_PER_SESSION / (per_batch * line);
    let mut seq = 0;
    for _ in 0..batches {
        for session in &sessions {
            let records = (0..per_batch)
                .map(|_| {
                    seq += 1;
                    record(seq, "y".repeat(line))
                })
                .collect();
            agent.send(&batch(session, records)).await.unwrap();
        }
    }
    wait_for(|| async {
        let (_, body) = Api::new(&base, None).get("/metrics").await;
        let received = format!("logfleet_log_lines_received_total {seq}\n");
        body.as_str().unwrap().contains(&received).then_some(())
    })
    .await;
    let (_, body) = Api::new(&base, None).get("/metrics").await;
    let gauge = |name: &str| -> u64 {
        body.as_str()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap()
    };
    let held = gauge("logfleet_client_queue_bytes ");
    assert!(
        held <= (2 * FANOUT_BUDGET + STALLED_SESSIONS * per_batch * (line + 512)) as u64,
        "the live queues hold {held} bytes"
    );
    let peak = testkit::process_memory_kib(pid, "VmHWM").unwrap();
    println!(
        "host peak resident memory: {baseline} KiB before, {peak} KiB after {} MiB to {STALLED_SESSIONS} stalled sessions; queues hold {held} bytes",
        (seq as usize * line) >> 20
    );
    assert!(
        peak.saturating_sub(baseline) <= STALLED_GROWTH_BOUND_KIB,
        "peak resident memory grew from {baseline} KiB to {peak} KiB"
    );
    drop(stalled);
}
