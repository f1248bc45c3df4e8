//! `fanout`: one session, many WebSocket clients. Every client must receive every line; the
//! host's CPU is measured over the stream. Clients here count and sample latency without
//! parsing JSON, so the benchmark's own cost stays small next to the host's.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use memchr::memmem;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

use crate::rig::{CpuMeter, Rig, percentile, rss_kib};
use crate::write::{now_ns, spawn_timestamped, stamp_of};

/// Every this many lines a client takes a latency sample.
const SAMPLE_EVERY: u64 = 50;

/// What one client saw.
struct Seen {
    logs: u64,
    /// Messages other than log lines (drop notices, control).
    other: Vec<String>,
    latencies_ms: Vec<f64>,
}

pub async fn fanout(bin_dir: &Path, clients: usize, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let rig = Rig::start(bin_dir).await?;
    let host_pid = rig.host_pid()?;
    let agent_pid = rig.agent_pid()?;
    // The probe client only proves the session is live; a client that stopped reading would
    // be measured as one more slow client.
    let (probe, url) = rig.session(rate).await?;
    probe.close().await;
    let total = rate * seconds;
    let ready = Arc::new(Barrier::new(clients + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let url = format!("{url}?token={}", rig.token);
        let ready = ready.clone();
        tasks.spawn(async move {
            let connected = tokio_tungstenite::connect_async(url).await;
            ready.wait().await;
            let (mut ws, _) = connected?;
            let mut seen = Seen {
                logs: 0,
                other: Vec::new(),
                latencies_ms: Vec::new(),
            };
            let log = memmem::Finder::new(br#""type":"log""#);
            while seen.logs < total {
                let msg = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(msg))) => msg,
                    Ok(Some(Err(e))) => bail!("client error after {} lines: {e}", seen.logs),
                    Ok(None) => bail!("closed after {} lines", seen.logs),
                    Err(_) => break,
                };
                let Message::Text(text) = msg else { continue };
                if log.find(text.as_bytes()).is_none() {
                    seen.other.push(text.as_str().to_owned());
                    continue;
                }
                seen.logs += 1;
                if seen.logs.is_multiple_of(SAMPLE_EVERY)
                    && let Some(sent) = stamp_of(text.as_str())
                {
                    let now = now_ns();
                    seen.latencies_ms
                        .push(now.saturating_sub(sent) as f64 / 1e6);
                }
            }
            anyhow::Ok(seen)
        });
    }
    ready.wait().await;
    let (_, sessions) = rig.api.get("/api/v1/stream/sessions").await;
    let attached = sessions["sessions"][0]["clients"]
        .as_u64()
        .context("clients")?;
    if attached < clients as u64 {
        bail!("only {attached} clients attached");
    }
    let rss_before = rss_kib(host_pid);
    let host = CpuMeter::start(host_pid);
    let agent = CpuMeter::start(agent_pid);
    let me = CpuMeter::start(std::process::id());
    let writer = spawn_timestamped(rig.logs.path("app.log"), rate, total, 100);
    let mut peak = rss_before;
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(rss_kib(host_pid));
    }
    writer.await??;
    let (host_pct, agent_pct, me_pct) = (host.percent(), agent.percent(), me.percent());
    let mut complete = 0usize;
    let mut received = 0u64;
    let mut other = Vec::new();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok(seen) => {
                complete += usize::from(seen.logs == total);
                received += seen.logs;
                other.extend(seen.other);
                latencies.extend(seen.latencies_ms);
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "fanout clients={clients} rate={rate}/s lines={total} complete_clients={complete} lines_received={received} of {} other_messages={} failed_clients={} host_cpu={host_pct:.1}%_of_a_core agent_cpu={agent_pct:.1}% bench_clients_cpu={me_pct:.1}% host_rss_before={rss_before}KiB host_rss_peak={peak}KiB latency_p50={:.1}ms p99={:.1}ms max={:.1}ms",
        total * clients as u64,
        other.len(),
        failures.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    for text in other.iter().take(3) {
        println!("  other message: {text}");
    }
    for failure in failures.iter().take(3) {
        println!("  failed client: {failure}");
    }
    rig.stop().await;
    Ok(())
}
