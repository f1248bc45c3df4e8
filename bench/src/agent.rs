//! Agent figures from the real `logfleet-agent` binary: memory, CPU and wire bytes (`agent`),
//! the tail + parse + count ceiling (`ingest`), how long a session takes to be filtering
//! (`session-start`) and memory with many plugin sessions (same subcommand).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};
use testkit::LogDir;

use crate::rig::{AgentOptions, CpuMeter, Rig, percentile, rss_kib};
use crate::write::{mixed, nginx_access, timestamped, write_at_rate};

/// `agent`: idle RSS and metrics-only bytes with 4 sources, then CPU, RSS and uplink bytes (vs
/// raw log bytes) while streaming nginx lines at `rate`.
pub async fn cost(
    bin_dir: &Path,
    rate: u64,
    seconds: u64,
    idle_seconds: u64,
) -> anyhow::Result<()> {
    // Idle: 4 sources, metrics every second, no session.
    let options = AgentOptions {
        sources: 4,
        metrics: Some("1s"),
        ..AgentOptions::default()
    };
    let rig = Rig::start_with(bin_dir, options).await?;
    let pid = rig.agent_pid()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (up0, down0) = rig.link.bytes();
    // Metrics-only is not silent logs: 200 lines/s keep being counted, no session ships them.
    let pad = "x".repeat(60);
    let total = 200 * idle_seconds;
    write_at_rate(rig.logs.path("app.log"), 200, total, |n| {
        timestamped(n, &pad)
    })
    .await?;
    let (up1, down1) = rig.link.bytes();
    println!(
        "agent metrics-only sources=4 lines=200/s rss={}KiB metrics_every=1s window={idle_seconds}s wire_up={}B wire_down={}B",
        rss_kib(pid),
        up1 - up0,
        down1 - down0
    );
    rig.stop().await;

    // Streaming nginx-like access lines at `rate`.
    let rig = Rig::start(bin_dir).await?;
    let pid = rig.agent_pid()?;
    let (mut client, _) = rig.session(rate).await?;
    let total = rate * seconds;
    let (up0, _) = rig.link.bytes();
    let meter = CpuMeter::start(pid);
    let writer = tokio::spawn(write_at_rate(
        rig.logs.path("app.log"),
        rate,
        total,
        nginx_access,
    ));
    let mut received = 0u64;
    while received < total {
        match client.next(Duration::from_secs(5)).await {
            Ok(msg) if msg["type"] == "log" => received += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let raw = writer.await??;
    let (up1, _) = rig.link.bytes();
    println!(
        "agent streaming rate={rate}/s lines={total} received={received} raw_bytes={raw} wire_up_bytes={} wire/raw={:.1}% cpu={:.1}%_of_a_core rss={}KiB",
        up1 - up0,
        (up1 - up0) as f64 * 100.0 / raw as f64,
        meter.percent(),
        rss_kib(pid)
    );
    rig.stop().await;
    Ok(())
}

/// `ingest`: no session. CPU at a fixed `rate` of mixed-format lines, then the ceiling: `lines`
/// appended as fast as the disk takes them, timed until the agent's metrics have counted them.
pub async fn ingest(bin_dir: &Path, rate: u64, seconds: u64, lines: u64) -> anyhow::Result<()> {
    let options = AgentOptions {
        metrics: Some("1s"),
        ..AgentOptions::default()
    };
    let rig = Rig::start_with(bin_dir, options).await?;
    let pid = rig.agent_pid()?;

    let counted = rig.lines_counted().await;
    let total = rate * seconds;
    let meter = CpuMeter::start(pid);
    let bytes = write_at_rate(rig.logs.path("app.log"), rate, total, mixed).await?;
    let cpu = meter.percent();
    wait_counted(&rig, counted + total, Duration::from_secs(30)).await?;
    println!(
        "agent ingest rate={rate}/s lines={total} bytes={bytes} cpu={cpu:.2}%_of_a_core rss={}KiB (no session)",
        rss_kib(pid)
    );

    let counted = rig.lines_counted().await;
    // One block of mixed lines, appended over and over: the agent's work per line is the same
    // whether the text repeats or not (no session, so nothing is compressed).
    let block: String = (0..10_000).map(|n| mixed(n) + "\n").collect();
    let blocks = lines.div_ceil(10_000);
    let path = rig.logs.path("app.log");
    let meter = CpuMeter::start(pid);
    let started = Instant::now();
    let written = tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
        let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
        for _ in 0..blocks {
            file.write_all(block.as_bytes())?;
        }
        Ok(started.elapsed())
    })
    .await??;
    let total = blocks * 10_000;
    let done = wait_counted(&rig, counted + total, Duration::from_secs(120)).await?;
    let wall = done.duration_since(started).as_secs_f64();
    let cpu = meter.cpu();
    println!(
        "agent ingest ceiling lines={total} write_s={:.2} counted_within_s={wall:.2} wall_rate={:.0}/s agent_cpu_s={cpu:.2} per_core={:.0}/s rss={}KiB",
        written.as_secs_f64(),
        total as f64 / wall,
        total as f64 / cpu,
        rss_kib(pid)
    );
    rig.stop().await;
    Ok(())
}

/// Polls the agent's metrics until it has counted `target` lines; when it had.
async fn wait_counted(rig: &Rig, target: u64, within: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        let now = rig.lines_counted().await;
        if now >= target {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the agent counted {now} of {target} lines within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `session-start`: `POST /stream/start` → the agent logging "session started" (its filters
/// are running), for built-ins, a plugin on first use (fetch + compile), the plugin cached in
/// memory, and cached on disk after an agent restart. Then `sessions` sessions with plugins
/// running at once, and the agent's RSS while lines flow through them.
pub async fn session_start(bin_dir: &Path, rounds: usize, sessions: usize) -> anyhow::Result<()> {
    let cache = LogDir::new();
    let options = AgentOptions {
        cache_dir: Some(cache.path("filters")),
        capture_log: true,
        ..AgentOptions::default()
    };
    let mut rig = Rig::start_with(bin_dir, options).await?;
    for name in ["redact", "sample"] {
        let (status, body) = rig
            .api
            .post_raw(
                &format!("/api/v1/plugins?name={name}"),
                testkit::plugin_bytes(name),
            )
            .await;
        if status != 201 && status != 200 {
            bail!("uploading {name}: {status} {body}");
        }
    }
    let builtins = json!({"filters": {"level": ["ERROR", "WARN"], "pattern": "timed? ?out"}});
    let plugins = json!({"filters": {"level": ["ERROR", "WARN"], "plugins": [
        {"name": "redact"}, {"name": "sample", "config": {"one_in": 2}}]}});

    let mut times = Vec::new();
    for _ in 0..rounds {
        times.push(time_start(&mut rig, &builtins, true).await?.0);
    }
    report("built-ins (level + pattern)", &times);
    let (first, log) = time_start(&mut rig, &plugins, true).await?;
    for (after, line) in &log {
        // The agent's own account of the first use: fetch, compile, start.
        println!("  +{:>6.1} ms  {line}", after.as_secs_f64() * 1e3);
    }
    report(
        "2 plugins, first use (fetched from the host, compiled)",
        &[first],
    );
    let mut times = Vec::new();
    for _ in 0..rounds {
        times.push(time_start(&mut rig, &plugins, true).await?.0);
    }
    report("2 plugins, compiled in memory", &times);
    rig.restart_agent().await?;
    let (disk, _) = time_start(&mut rig, &plugins, true).await?;
    report(
        "2 plugins, compiled on disk (first session after a restart)",
        &[disk],
    );

    // Many sessions with plugins at once, lines flowing through every one of them.
    let pid = rig.agent_pid()?;
    let idle = rss_kib(pid);
    let lines_per_session = json!({"limits": {"lines_per_second": 5000}});
    for _ in 0..sessions {
        let mut body = plugins.clone();
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), lines_per_session.clone()) {
            b.extend(extra);
        }
        time_start(&mut rig, &body, false).await?;
    }
    let meter = CpuMeter::start(pid);
    let rate = 2000;
    let writer = tokio::spawn(write_at_rate(
        rig.logs.path("app.log"),
        rate,
        rate * 10,
        mixed,
    ));
    let mut peak = rss_kib(pid);
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(rss_kib(pid));
    }
    writer.await??;
    let (_, agent) = rig
        .api
        .get(&format!("/api/v1/agents/{}", rig.agent_id))
        .await;
    println!(
        "agent sessions={} (each: level + redact + sample) lines={rate}/s rss_before={idle}KiB rss_peak={peak}KiB cpu={:.1}%_of_a_core",
        agent["agent"]["active_sessions"],
        meter.percent()
    );
    rig.stop().await;
    Ok(())
}

/// Starts a session and waits for the agent to report its filters running; the time from the
/// request to that log line. Stops the session afterwards when `stop`.
/// Also returns the agent's log lines read meanwhile, each with its time since the request.
async fn time_start(
    rig: &mut Rig,
    body: &Value,
    stop: bool,
) -> anyhow::Result<(Duration, Vec<(Duration, String)>)> {
    let asked = Instant::now();
    let (id, _) = rig.start_session(body.clone()).await?;
    let (started, before) = rig
        .agent_log_line(&["session started", &id], Duration::from_secs(30))
        .await?;
    let log = before
        .into_iter()
        .map(|(at, line)| (at.saturating_duration_since(asked), line))
        .collect();
    if stop {
        let (status, _) = rig
            .api
            .post("/api/v1/stream/stop", &json!({"session_id": id}))
            .await;
        if status != 200 {
            bail!("stream/stop answered {status}");
        }
    }
    Ok((started.duration_since(asked), log))
}

fn report(what: &str, times: &[Duration]) {
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "session-start {what}: n={} p50={:.1}ms max={:.1}ms",
        ms.len(),
        percentile(&ms, 0.5),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}
