//! `fleet`: many simulated agents on one host. Each simulated agent is a real WebSocket on
//! `/api/v1/agent/connect` speaking the agent protocol (`Hello`, then `Metrics` every interval,
//! answering pings, taking session commands), so the host does exactly the work a fleet of
//! metrics-only agents gives it. Meanwhile an operator's REST calls are timed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use logfleet_host::auth::Role;
use logfleet_protocol::agent::{AgentFrame, Health, Metrics, SourceCounts};
use serde_json::json;
use testkit::raw_agent::{self, FromHost, RawAgent};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::rig::{CpuMeter, HostProcess, percentile, rss_kib};

/// Connections being opened at once: a fleet coming back after a host restart, throttled the
/// way agents' jittered backoff spreads them.
const CONNECTING_AT_ONCE: usize = 256;

/// What the simulated fleet has done, shared by its tasks.
#[derive(Default)]
struct FleetStats {
    connected: AtomicU64,
    /// Agents that have sent their history.
    primed: AtomicU64,
    metrics_sent: AtomicU64,
    /// Frames from the host: the session set after each hello, then session commands.
    host_frames: AtomicU64,
    /// Links that failed (to connect, or later).
    failed: AtomicU64,
    /// Links the host closed.
    closed: AtomicU64,
}

pub async fn fleet(
    bin_dir: &Path,
    agents: usize,
    metrics_every: Duration,
    history: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let host = HostProcess::start(bin_dir, &[]).await?;
    let pid = host.process.child.id().context("host pid")?;
    let rss_empty = rss_kib(pid);
    let stats = Arc::new(FleetStats::default());
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let url = format!("ws://127.0.0.1:{}/api/v1/agent/connect", host.process.port);
    let mut ids = Vec::with_capacity(agents);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..agents {
        let id = Uuid::new_v4();
        ids.push(id);
        let token = host.auth.mint(
            &id.to_string(),
            "bench",
            Role::Agent,
            Some(&format!("sim-{n}")),
            Duration::from_secs(3600),
        )?;
        let permit = gate.clone().acquire_owned().await?;
        tasks.spawn(simulated_agent(
            url.clone(),
            token,
            n,
            metrics_every,
            history,
            stats.clone(),
            permit,
        ));
    }
    // Every agent has connected, said hello and sent its history once the host lists them all
    // online and the last history frame is written (the host reads it within the moment).
    let listed = loop {
        let (_, list) = host.api.get("/api/v1/agents").await;
        let online = list["agents"]
            .as_array()
            .map(|a| a.iter().filter(|a| a["status"] == "online").count())
            .unwrap_or(0);
        if online == agents && stats.primed.load(Ordering::Relaxed) == agents as u64 {
            break started.elapsed();
        }
        if stats.failed.load(Ordering::Relaxed) > 0 {
            bail!(
                "{} simulated agents failed to connect",
                stats.failed.load(Ordering::Relaxed)
            );
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("only {online} of {agents} agents online after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let rss_connected = rss_kib(pid);
    println!(
        "fleet agents={agents} all_online_after={:.1}s host_rss_empty={rss_empty}KiB host_rss_connected={rss_connected}KiB",
        listed.as_secs_f64()
    );

    // Steady state with nobody calling the API: what the fleet alone costs the host.
    let idle = CpuMeter::start(pid);
    let metrics0 = stats.metrics_sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "fleet idle window=10s metrics_reports={} host_cpu={:.1}%_of_a_core host_rss={}KiB",
        stats.metrics_sent.load(Ordering::Relaxed) - metrics0,
        idle.percent(),
        rss_kib(pid)
    );

    // Then an operator using the REST API, one call after another.
    let meter = CpuMeter::start(pid);
    let metrics0 = stats.metrics_sent.load(Ordering::Relaxed);
    let mut timings: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut peak = rss_connected;
    let mut round = 0usize;
    // The whole list is timed to its last byte, not to a JSON parse in this process.
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", host.process.port);
    let mut list_bytes = 0;
    while Instant::now() < deadline {
        let id = ids[fastrand::usize(..ids.len())];
        let page = fastrand::usize(..agents.div_ceil(100)) * 100;
        let calls: [(&str, String); 4] = [
            (
                "GET /api/v1/agents?limit=100&offset=N",
                format!("/api/v1/agents?limit=100&offset={page}"),
            ),
            ("GET /api/v1/agents/{id}", format!("/api/v1/agents/{id}")),
            (
                "GET /api/v1/agents/{id}/metrics",
                format!("/api/v1/agents/{id}/metrics"),
            ),
            (
                "GET /api/v1/stream/sessions",
                "/api/v1/stream/sessions".into(),
            ),
        ];
        for (name, path) in calls {
            let t = Instant::now();
            let (status, _) = host.api.get(&path).await;
            expect_status(name, status, 200)?;
            timings.entry(name).or_default().push(ms(t));
        }
        let t = Instant::now();
        let (status, created) = host
            .api
            .post(
                "/api/v1/stream/start",
                &json!({"agent_id": id, "timeout_seconds": 60}),
            )
            .await;
        expect_status("stream/start", status, 200)?;
        timings
            .entry("POST /api/v1/stream/start")
            .or_default()
            .push(ms(t));
        let t = Instant::now();
        let (status, _) = host
            .api
            .post(
                "/api/v1/stream/stop",
                &json!({"session_id": created["session"]["id"]}),
            )
            .await;
        expect_status("stream/stop", status, 200)?;
        timings
            .entry("POST /api/v1/stream/stop")
            .or_default()
            .push(ms(t));
        // The whole fleet listed: megabytes of JSON, so fewer of them.
        if round.is_multiple_of(10) {
            let t = Instant::now();
            let response = http
                .get(format!("{base}/api/v1/agents"))
                .bearer_auth(&host.token)
                .send()
                .await?;
            expect_status("agents", response.status().as_u16(), 200)?;
            list_bytes = response.bytes().await?.len();
            timings
                .entry("GET /api/v1/agents (whole fleet)")
                .or_default()
                .push(ms(t));
        }
        round += 1;
        peak = peak.max(rss_kib(pid));
    }
    let metrics = stats.metrics_sent.load(Ordering::Relaxed) - metrics0;
    println!(
        "fleet steady window={seconds}s metrics_reports={metrics} ({:.0}/s) host_frames_received={} host_cpu={:.1}%_of_a_core host_rss_peak={peak}KiB",
        metrics as f64 / seconds as f64,
        stats.host_frames.load(Ordering::Relaxed),
        meter.percent()
    );
    println!("fleet rest GET /api/v1/agents body={list_bytes}B");
    for (name, mut t) in timings {
        t.sort_by(f64::total_cmp);
        println!(
            "fleet rest {name}: n={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
            t.len(),
            percentile(&t, 0.5),
            percentile(&t, 0.99),
            t.last().copied().unwrap_or(f64::NAN)
        );
    }
    let lost = stats.failed.load(Ordering::Relaxed) + stats.closed.load(Ordering::Relaxed);
    if lost > 0 {
        bail!("{lost} simulated agents lost their link during the run");
    }
    tasks.abort_all();
    Ok(())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn expect_status(what: &str, status: u16, want: u16) -> anyhow::Result<()> {
    if status != want {
        bail!("{what} answered {status}, expected {want}");
    }
    Ok(())
}

/// One simulated metrics-only agent: connects, says hello with 4 sources, then reports
/// metrics every `every` (first one at a random offset, as a fleet's reports spread out)
/// until the link ends.
async fn simulated_agent(
    url: String,
    token: String,
    n: usize,
    every: Duration,
    history: usize,
    stats: Arc<FleetStats>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let run = async {
        let mut agent = RawAgent::connect(&url, &token).await?;
        let sources = ["nginx", "api", "worker", "syslog"];
        let paths: Vec<String> = sources
            .iter()
            .map(|s| format!("/var/log/{s}.log"))
            .collect();
        let pairs: Vec<(&str, &str)> = sources
            .iter()
            .zip(&paths)
            .map(|(s, p)| (*s, p.as_str()))
            .collect();
        agent
            .send(&raw_agent::hello(
                &format!("sim-{n}"),
                &format!("edge-{n}"),
                &pairs,
            ))
            .await?;
        drop(permit);
        stats.connected.fetch_add(1, Ordering::Relaxed);
        // An hour of history first, as a host that has run a while holds it.
        let now_ms = i64::try_from(crate::write::now_ns() / 1_000_000)?;
        for i in 0..history {
            let age_ms = (history - i) as i64 * 3_600_000 / (history as i64 + 1);
            agent
                .send(&metrics_frame(&sources, now_ms - age_ms, every)?)
                .await?;
        }
        stats.primed.fetch_add(1, Ordering::Relaxed);
        let start = tokio::time::Instant::now() + every.mul_f64(fastrand::f64());
        let mut tick = tokio::time::interval_at(start, every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now_ms = i64::try_from(crate::write::now_ns() / 1_000_000)?;
                    agent.send(&metrics_frame(&sources, now_ms, every)?).await?;
                    stats.metrics_sent.fetch_add(1, Ordering::Relaxed);
                }
                // Pings are answered by tungstenite as the link is read.
                msg = agent.recv() => match msg? {
                    FromHost::Frame(_) => {
                        stats.host_frames.fetch_add(1, Ordering::Relaxed);
                    }
                    FromHost::Closed(_) => break,
                },
            }
        }
        stats.closed.fetch_add(1, Ordering::Relaxed);
        anyhow::Ok(())
    };
    if let Err(e) = run.await {
        eprintln!("simulated agent {n}: {e}");
        stats.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A metrics report like a real agent's: 4 sources, a few hundred lines each.
fn metrics_frame(
    sources: &[&str],
    timestamp_ms: i64,
    every: Duration,
) -> anyhow::Result<AgentFrame> {
    Ok(AgentFrame::Metrics(Metrics {
        timestamp_ms,
        interval_ms: u32::try_from(every.as_millis())?,
        sources: sources
            .iter()
            .map(|s| SourceCounts {
                name: (*s).to_owned(),
                levels: [0, 0, 540, 40, 20, 0],
                bytes: 600 * 120,
            })
            .collect(),
        health: Health {
            uptime_s: 3600,
            rss_bytes: 13 << 20,
            files_watched: 4,
            ..Health::default()
        },
    }))
}
