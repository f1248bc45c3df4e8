//! `logfleet-bench`: end-to-end figures from real processes. Starts the `logfleet-host` and
//! `logfleet-agent` binaries found beside this one (build them first, in release:
//! `cargo build --release --workspace`), writes timestamped lines to a file at a fixed rate, and
//! reads the session's WebSocket.
//!
//! - `latency --rate N --seconds S`: file write → WebSocket arrival, p50/p99/max, and loss.
//! - `slow-client --lines N`: host RSS while one client never reads and N lines stream.
//! - `agent --rate N --seconds S`: agent idle RSS and metrics-only wire bytes; CPU, RSS and
//!   uplink bytes as a share of raw log bytes while streaming.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use logfleet_host::auth::{Auth, Role};
use serde_json::json;
use testkit::{Api, LogDir, SECRET, WsClient, WsEnd};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "LogFleet system benchmarks (real processes on loopback)")]
struct Cli {
    /// Directory holding logfleet-host and logfleet-agent (default: beside this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// End-to-end latency and loss at a fixed line rate.
    Latency {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Host memory while one WebSocket client never reads.
    SlowClient {
        #[arg(long, default_value_t = 100_000)]
        lines: u64,
    },
    /// Agent cost: RSS with 4 sources and metrics-only bytes on the wire (200 lines/s counted,
    /// no session), then CPU, RSS and uplink bytes (vs raw log bytes) while streaming
    /// nginx-like lines at `rate`.
    Agent {
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// How long to watch the idle, metrics-only link (metrics every second).
        #[arg(long, default_value_t = 60)]
        idle_seconds: u64,
    },
}

/// A host and an agent process (linked through a byte-counting proxy), log files, and a user.
struct Rig {
    host: Child,
    agent: Child,
    api: Api,
    token: String,
    agent_id: Uuid,
    logs: LogDir,
    link: CountingProxy,
}

/// Counts the bytes an agent link carries each way, on the wire (WebSocket framing included).
struct CountingProxy {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicU64>,
    down: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CountingProxy {
    async fn start(target: u16) -> anyhow::Result<CountingProxy> {
        use std::sync::Arc;
        use std::sync::atomic::AtomicU64;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (u, d) = (up.clone(), down.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, u.clone()));
                tokio::spawn(pump(ro, wi, d.clone()));
            }
        });
        Ok(CountingProxy { port, up, down })
    }

    /// Bytes agent → host and host → agent so far.
    fn bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }
}

/// Copies one direction of a connection, counting bytes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Rig {
    async fn start(bin_dir: &Path) -> anyhow::Result<Rig> {
        Self::start_with(bin_dir, 1, None).await
    }

    /// `sources` log files (`app.log`, `app-2.log`, …); metrics every `metrics` if given.
    async fn start_with(
        bin_dir: &Path,
        sources: usize,
        metrics: Option<&str>,
    ) -> anyhow::Result<Rig> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let logs = LogDir::new();
        let file = logs.create("app.log", &[]);
        let link = CountingProxy::start(port).await?;
        let host = Command::new(bin_dir.join("logfleet-host"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(logs.path("data"))
            .env("LOGFLEET_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting logfleet-host (build with `cargo build --release --workspace`)")?;
        let auth = Auth::new(SECRET.as_bytes());
        let agent_id = Uuid::new_v4();
        let agent_token = auth.mint(
            &agent_id.to_string(),
            "bench",
            Role::Agent,
            Some("bench"),
            Duration::from_secs(3600),
        )?;
        let token = auth.mint(
            "bench",
            "bench",
            Role::User,
            None,
            Duration::from_secs(3600),
        )?;
        let mut agent = Command::new(bin_dir.join("logfleet-agent"));
        agent
            .args([
                "--host",
                &format!("http://127.0.0.1:{}", link.port),
                "--token",
                &agent_token,
            ])
            .arg(format!("--source=app={}", file.display()));
        for n in 2..=sources {
            let extra = logs.create(&format!("app-{n}.log"), &[]);
            agent.arg(format!("--source=app{n}={}", extra.display()));
        }
        if let Some(interval) = metrics {
            agent.arg(format!("--metrics-interval={interval}"));
        }
        let agent = agent
            .arg(format!(
                "--cache-dir={}",
                testkit::test_cache_dir().display()
            ))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting logfleet-agent")?;
        let api = Api::new(&base, Some(token.clone()));
        testkit::wait_for(|| async {
            let up = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok();
            up.then_some(())
        })
        .await;
        let rig = Rig {
            host,
            agent,
            api,
            token,
            agent_id,
            logs,
            link,
        };
        rig.api
            .wait_agent_status(&agent_id.to_string(), "online")
            .await;
        Ok(rig)
    }

    /// Starts a session allowing `rate` lines/s and returns a client past a probe line.
    async fn session(&self, rate: u64) -> anyhow::Result<(WsClient, String)> {
        let session = self
            .api
            .start_session(json!({"agent_id": self.agent_id, "timeout_seconds": 3600,
                "limits": {"lines_per_second": (rate * 2).clamp(2000, 50_000), "bytes_per_second": 32 << 20}}))
            .await;
        let url = session["websocket_url"]
            .as_str()
            .context("websocket_url")?
            .to_owned();
        let mut client = WsClient::connect(&url, &self.token, None).await;
        for n in 0..500 {
            self.logs.append("app.log", &[&format!("probe {n}")]).await;
            if client.next(Duration::from_millis(20)).await.is_ok() {
                // Let any probes in flight arrive, then start clean.
                while client.next(Duration::from_millis(200)).await.is_ok() {}
                return Ok((client, url));
            }
        }
        bail!("the session never became active")
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Writes `total` lines at `rate` lines/s, each carrying its write time, in 1 ms slices.
async fn write_at_rate(path: PathBuf, rate: u64, total: u64, pad: usize) -> anyhow::Result<()> {
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await?;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let padding = "x".repeat(pad);
    let mut written = 0u64;
    while written < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        let mut chunk = String::new();
        while written < due {
            written += 1;
            chunk.push_str(&format!("INFO t={} n={written} {padding}\n", now_ns()));
        }
        file.write_all(chunk.as_bytes()).await?;
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn latency(rig: &Rig, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let (mut client, _) = rig.session(rate).await?;
    let total = rate * seconds;
    let writer = tokio::spawn(write_at_rate(rig.logs.path("app.log"), rate, total, 60));
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
        let text = msg["message"].as_str().unwrap_or_default();
        let Some(sent) = text.split_whitespace().find_map(|w| w.strip_prefix("t=")) else {
            continue;
        };
        let sent: u128 = sent.parse()?;
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

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn slow_client(rig: &Rig, lines: u64) -> anyhow::Result<()> {
    let pid = rig.host.id().context("host pid")?;
    let (mut reader, url) = rig.session(20_000).await?;
    let _silent = WsClient::connect(&url, &rig.token, None).await;
    let before = rss_kib(pid);
    let writer = tokio::spawn(write_at_rate(rig.logs.path("app.log"), 20_000, lines, 200));
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
        "slow-client lines={lines} reader_received={received} host_rss_before={}KiB host_rss_peak={}KiB host_rss_after={}KiB",
        before,
        peak,
        rss_kib(pid)
    );
    Ok(())
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)` that may contain spaces; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

async fn agent_cost(
    bin_dir: &Path,
    rate: u64,
    seconds: u64,
    idle_seconds: u64,
) -> anyhow::Result<()> {
    // Idle: 4 sources, metrics every second, no session.
    let mut rig = Rig::start_with(bin_dir, 4, Some("1s")).await?;
    let pid = rig.agent.id().context("agent pid")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (up0, down0) = rig.link.bytes();
    // Metrics-only is not silent logs: 200 lines/s keep being counted, no session ships them.
    write_at_rate(rig.logs.path("app.log"), 200, 200 * idle_seconds, 60).await?;
    let (up1, down1) = rig.link.bytes();
    let up = (up1 - up0) as f64;
    let down = (down1 - down0) as f64;
    println!(
        "agent metrics-only sources=4 lines=200/s rss={}KiB metrics_every=1s window={idle_seconds}s wire_up={up}B wire_down={down}B",
        rss_kib(pid)
    );
    let _ = rig.agent.kill().await;
    let _ = rig.host.kill().await;

    // Streaming nginx-like access lines at `rate`.
    let mut rig = Rig::start(bin_dir).await?;
    let pid = rig.agent.id().context("agent pid")?;
    let (mut client, _) = rig.session(rate).await?;
    let total = rate * seconds;
    let (up0, _) = rig.link.bytes();
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let path = rig.logs.path("app.log");
    let writer = tokio::spawn(async move {
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .await?;
        let mut raw = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut written = 0u64;
        while written < total {
            tick.tick().await;
            let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
            let mut chunk = String::new();
            while written < due {
                written += 1;
                chunk.push_str(&format!(
                    "10.{}.{}.{} - - [24/Nov/2026:05:{:02}:{:02} +0000] \"GET /api/v1/items/{} HTTP/1.1\" {} {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\"\n",
                    written % 7, written % 13, written % 251, (written / 60) % 60, written % 60,
                    written * 7919 % 100_000, if written.is_multiple_of(10) { 500 } else { 200 }, 200 + written % 3000
                ));
            }
            raw += chunk.len() as u64;
            file.write_all(chunk.as_bytes()).await?;
        }
        anyhow::Ok(raw)
    });
    let mut received = 0u64;
    while received < total {
        match client.next(Duration::from_secs(5)).await {
            Ok(msg) if msg["type"] == "log" => received += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let raw = writer.await??;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let (up1, _) = rig.link.bytes();
    println!(
        "agent streaming rate={rate}/s lines={total} received={received} raw_bytes={raw} wire_up_bytes={} wire/raw={:.1}% cpu={:.1}%_of_a_core rss={}KiB",
        up1 - up0,
        (up1 - up0) as f64 * 100.0 / raw as f64,
        cpu * 100.0 / wall,
        rss_kib(pid)
    );
    let _ = rig.agent.kill().await;
    let _ = rig.host.kill().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin_dir = match cli.bin_dir {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_path_buf(),
    };
    if let Bench::Agent {
        rate,
        seconds,
        idle_seconds,
    } = cli.command
    {
        return agent_cost(&bin_dir, rate, seconds, idle_seconds).await;
    }
    let mut rig = Rig::start(&bin_dir).await?;
    let result = match cli.command {
        Bench::Latency { rate, seconds } => latency(&rig, rate, seconds).await,
        Bench::SlowClient { lines } => slow_client(&rig, lines).await,
        Bench::Agent { .. } => Ok(()),
    };
    let _ = rig.agent.kill().await;
    let _ = rig.host.kill().await;
    result
}
