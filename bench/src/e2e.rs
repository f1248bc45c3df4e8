//! File → WebSocket figures: latency and loss at a fixed rate, and host memory with a client
//! that never reads.

use std::time::Duration;

use anyhow::bail;
use testkit::{WsClient, WsEnd};

use crate::arrivals::{Arrivals, LINE_PAD};
use crate::rig::{Rig, rss_kib};
use crate::write::spawn_timestamped;

/// `latency`: write → arrival for every line, and loss, at `rate` lines/s.
pub async fn latency(rig: &Rig, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let (mut client, _) = rig.session(rate).await?;
    let total = rate * seconds;
    let writer = spawn_timestamped(rig.logs.path("app.log"), rate, total, LINE_PAD);
    let mut arrivals = Arrivals::new(total, true);
    while arrivals.accounted() < total {
        let msg = match client.next(Duration::from_secs(5)).await {
            Ok(msg) => msg,
            Err(WsEnd::Timeout) => break,
            Err(e) => bail!("stream ended: {e:?}"),
        };
        if msg["type"] != "log" {
            arrivals.dropped(msg["count"].as_u64().unwrap_or(0));
            continue;
        }
        arrivals.record_now(
            msg["message"].as_str().unwrap_or_default(),
            Some(msg["seq"].as_u64().unwrap_or(0)),
        );
    }
    writer.await??;
    println!("{}", arrivals.report("latency", rate, total));
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
