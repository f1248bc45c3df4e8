//! File → WebSocket figures: latency and loss at a fixed rate, and host memory with a client
//! that never reads.

use std::time::Duration;

use anyhow::bail;
use testkit::{WsClient, WsEnd};

use crate::rig::{Rig, percentile, rss_kib};
use crate::write::{now_ns, spawn_timestamped, stamp_of};

/// `latency`: write → arrival for every line, and loss, at `rate` lines/s.
pub async fn latency(rig: &Rig, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let (mut client, _) = rig.session(rate).await?;
    let total = rate * seconds;
    let writer = spawn_timestamped(rig.logs.path("app.log"), rate, total, 60);
    let mut latencies = Vec::with_capacity(total as usize);
    let mut dropped = 0u64;
    let mut last_seq = None;
    let mut gaps = 0u64;
    while (latencies.len() as u64) + dropped < total {
        let msg = match client.next(Duration::from_secs(5)).await {
            Ok(msg) => msg,
            Err(WsEnd::Timeout) => break,
            Err(e) => bail!("stream ended: {e:?}"),
        };
        if msg["type"] != "log" {
            dropped += msg["count"].as_u64().unwrap_or(0);
            continue;
        }
        let arrived = now_ns();
        let Some(sent) = stamp_of(msg["message"].as_str().unwrap_or_default()) else {
            continue;
        };
        latencies.push((arrived.saturating_sub(sent)) as f64 / 1e6);
        let seq = msg["seq"].as_u64().unwrap_or(0);
        if let Some(prev) = last_seq
            && seq != prev + 1
        {
            gaps += 1;
        }
        last_seq = Some(seq);
    }
    writer.await??;
    latencies.sort_by(f64::total_cmp);
    println!(
        "latency rate={rate}/s lines={total} received={} dropped_reported={dropped} seq_gaps={gaps} p50={:.2}ms p99={:.2}ms max={:.2}ms",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

/// `slow-client`: host RSS while one client never reads and another reads everything.
pub async fn slow_client(rig: &Rig, lines: u64) -> anyhow::Result<()> {
    let pid = rig.host_pid()?;
    let (mut reader, url) = rig.session(20_000).await?;
    let _silent = WsClient::connect(&url, &rig.token, None).await;
    let before = rss_kib(pid);
    let writer = spawn_timestamped(rig.logs.path("app.log"), 20_000, lines, 200);
    let mut peak = before;
    let mut received = 0u64;
    while received < lines {
        match reader.next(Duration::from_secs(5)).await {
            Ok(msg) if msg["type"] == "log" => received += 1,
            Ok(_) => {}
            Err(_) => break,
        }
        if received.is_multiple_of(1000) {
            peak = peak.max(rss_kib(pid));
        }
    }
    writer.await??;
    println!(
        "slow-client lines={lines} reader_received={received} host_rss_before={before}KiB host_rss_peak={peak}KiB host_rss_after={}KiB",
        rss_kib(pid)
    );
    Ok(())
}
