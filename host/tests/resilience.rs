//! Live tail you can trust: link loss, host restart, slow clients, bursts and keepalive, on a
//! real host, a real agent, real files and real sockets. Nothing is lost without being counted.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{Stack, WsClient, WsEnd, skip_until};

/// Reads until `quiet` passes with nothing; returns log messages and the sum of `logs_dropped`
/// counts (by reason).
async fn drain(client: &mut WsClient, quiet: Duration) -> (Vec<Value>, Vec<(String, u64)>) {
    let mut logs = Vec::new();
    let mut dropped = Vec::new();
    while let Ok(msg) = client.next(quiet).await {
        if msg["type"] == "log" {
            logs.push(msg);
        } else if msg["event"] == "logs_dropped" {
            dropped.push((
                msg["reason"].as_str().unwrap().to_owned(),
                msg["count"].as_u64().unwrap(),
            ));
        }
    }
    (logs, dropped)
}

fn lines(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix} {i}")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_loss_is_announced_and_buffered_lines_arrive_in_order() {
    let stack = Stack::behind_proxy(|_| {}, |_| {}).await;
    let proxy = stack.proxy.as_ref().unwrap();
    let session = stack.start(json!({"filters": {"source": "nginx"}})).await;
    let mut client = stack.client(&session).await;
    stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;

    proxy.cut();
    client.expect_event("agent_disconnected").await;
    let during = lines("during outage", 200);
    stack.logs.append("nginx.log", &refs(&during)).await;
    proxy.restore();
    client.expect_event("agent_reconnected").await;
    for line in &during {
        assert_eq!(client.expect_log().await["message"], *line);
    }
    stack.logs.append("nginx.log", &["after"]).await;
    assert_eq!(client.expect_log().await["message"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_agent_buffer_is_counted_not_silent() {
    let stack = Stack::behind_proxy(|_| {}, |a| a.tuning.buffer_bytes = 16 * 1024).await;
    let proxy = stack.proxy.as_ref().unwrap();
    let session = stack
        .start(json!({"filters": {"source": "nginx"}, "limits": {"lines_per_second": 50000}}))
        .await;
    let mut client = stack.client(&session).await;
    stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;

    proxy.cut();
    client.expect_event("agent_disconnected").await;
    // Varied, incompressible-ish lines so the compressed batches overflow the small buffer.
    let during: Vec<String> = (1..=5000)
        .map(|i| {
            format!(
                "line {i} {:x}",
                (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            )
        })
        .collect();
    stack.logs.append("nginx.log", &refs(&during)).await;
    // Let the agent read them all into its (overflowing) buffer before the link returns.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();
    client.expect_event("agent_reconnected").await;
    let (logs, dropped) = drain(&mut client, Duration::from_secs(2)).await;
    let lost: u64 = dropped
        .iter()
        .map(|(reason, n)| {
            assert_eq!(reason, "agent_buffer_full");
            n
        })
        .sum();
    assert!(lost > 0, "the buffer should have overflowed");
    assert_eq!(
        logs.len() as u64 + lost,
        5000,
        "every line arrives or is counted"
    );
    let seqs: Vec<u64> = logs.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_restart_closes_clients_cleanly_and_agents_come_back() {
    let mut stack = Stack::new().await;
    let session = stack.start(json!({})).await;
    let mut client = stack.client(&session).await;
    stack.restart_host().await;
    let ended = client.expect_event("session_ended").await;
    assert_eq!(ended["reason"], "shutdown");
    assert_eq!(u16::from(client.expect_close().await.unwrap().code), 1000);
    stack
        .api
        .wait_agent_status(&stack.agent_id.to_string(), "online")
        .await;
    let session = stack.start(json!({"filters": {"source": "nginx"}})).await;
    let mut client = stack.client(&session).await;
    stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_told_then_closed_and_never_slows_others() {
    let stack = Stack::new_with(
        |h| {
            // Slack for the healthy reader even on a loaded machine; the stalled one still
            // falls far past it (90k lines of ~330 bytes is far more than queue + sockets).
            h.tuning.client_queue = 64;
            h.tuning.max_client_lost_lines = 1000;
        },
        |_| {},
    )
    .await;
    let session = stack
        .start(json!({"filters": {"source": "nginx"},
                      "limits": {"lines_per_second": 50000, "bytes_per_second": 33554432}}))
        .await;
    let mut fast = stack.client(&session).await;
    let last = stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut fast)
        .await;
    let mut slow = stack.client(&session).await;
    // Stalls while the whole stream runs (a GC pause, a saturated link), then reads normally.
    let (stream_done, stalled) = tokio::sync::oneshot::channel::<()>();
    let slow_reader = tokio::spawn(async move {
        let mut told = false;
        let mut seen = 0u64;
        let _ = stalled.await;
        loop {
            match slow.next(Duration::from_secs(10)).await {
                Ok(msg) if msg["event"] == "logs_dropped" => {
                    assert_eq!(msg["reason"], "client_lagging");
                    told = true;
                }
                Ok(_) => seen += 1,
                Err(WsEnd::Closed(frame)) => {
                    assert!(seen > 0);
                    return (told, frame);
                }
                Err(WsEnd::Timeout) => panic!("the slow client was never closed"),
            }
        }
    });

    // 90k lines of ~300 bytes (≈ 39 MB as JSON: far more than the queue and both sockets
    // hold), written a chunk at a time once the fast client has the previous chunk, so the
    // fast client's own pace, however loaded the machine, never makes it lag.
    let pad = "x".repeat(280);
    let total = 90_000;
    let chunk_lines = 5_000;
    let mut prev = 0;
    for chunk in 0..total / chunk_lines {
        let lines: Vec<String> = (0..chunk_lines)
            .map(|i| format!("bulk {} {pad}", chunk * chunk_lines + i))
            .collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        stack.logs.append("nginx.log", &lines).await;
        // The fast client gets every line, in order, whatever the slow one does.
        for _ in 0..chunk_lines {
            let msg = fast.expect_log().await;
            let seq = msg["seq"].as_u64().unwrap();
            assert!(seq > prev, "in order");
            prev = seq;
        }
    }
    assert!(!last.is_empty());
    let _ = stream_done.send(());

    let (told, close) = slow_reader.await.unwrap();
    assert!(told, "a lagging client is told how much it lost");
    // The host closes it. The close frame (4008) queues behind what the client's socket
    // buffers already hold, so a very slow reader may see the connection end before reaching it.
    if let Some(close) = close {
        assert_eq!(
            u16::from(close.code),
            logfleet_protocol::client::CLOSE_CLIENT_TOO_SLOW
        );
        assert_eq!(close.reason.as_str(), "client_too_slow");
    }
    let (_, list) = stack.api.get("/api/v1/stream/sessions").await;
    assert_eq!(
        list["sessions"][0]["clients"], 1,
        "only the fast client is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_drops_are_reported_and_nothing_below_it_is_lost() {
    let stack = Stack::new().await;
    let limited = stack
        .start(json!({"filters": {"source": "nginx"}, "limits": {"lines_per_second": 100}}))
        .await;
    let roomy = stack
        .start(json!({"filters": {"source": "nginx"}, "limits": {"lines_per_second": 50000}}))
        .await;
    let mut limited = stack.client(&limited).await;
    let mut roomy = stack.client(&roomy).await;
    let last = stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut roomy)
        .await;
    skip_until(&mut limited, &last).await;

    let burst = lines("burst", 3000);
    stack.logs.append("nginx.log", &refs(&burst)).await;
    // Both clients read at once: an unread client would lag, which is another test.
    let ((logs, dropped), (roomy_logs, roomy_dropped)) = tokio::join!(
        drain(&mut limited, Duration::from_millis(1500)),
        drain(&mut roomy, Duration::from_millis(1500))
    );
    let lost: u64 = dropped
        .iter()
        .map(|(reason, n)| {
            assert_eq!(reason, "rate_limited");
            n
        })
        .sum();
    assert!(
        !logs.is_empty() && lost > 0,
        "{} kept, {lost} dropped",
        logs.len()
    );
    assert_eq!(logs.len() as u64 + lost, 3000);

    assert!(roomy_dropped.is_empty(), "{roomy_dropped:?}");
    let got: Vec<&str> = roomy_logs
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        got == refs(&burst),
        "below the limit every line arrives, in order: got {} of {}",
        got.len(),
        burst.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_clients_are_noticed_live_ones_kept() {
    let stack = Stack::new_with(
        |h| {
            h.tuning.ping_interval = Duration::from_millis(100);
            h.tuning.idle_timeout = Duration::from_millis(600);
        },
        |_| {},
    )
    .await;
    let session = stack.start(json!({})).await;
    let _silent = stack.client(&session).await; // never read: never answers pings
    let mut live = stack.client(&session).await;
    let reader = tokio::spawn(async move {
        // Reading makes the client answer pings.
        let _ = live.next(Duration::from_secs(3)).await;
        live
    });
    let clients = |stack: &Stack| {
        let api = stack.api.clone();
        async move {
            let (_, list) = api.get("/api/v1/stream/sessions").await;
            list["sessions"][0]["clients"].as_u64().unwrap()
        }
    };
    assert_eq!(clients(&stack).await, 2);
    testkit::wait_for(|| async { (clients(&stack).await == 1).then_some(()) }).await;
    let _live = reader.await.unwrap();
}
