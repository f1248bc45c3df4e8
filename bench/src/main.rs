//! `logfleet-bench`: system figures from real processes. Starts the `logfleet-host` and
//! `logfleet-agent` binaries found beside this one (build them first, in release:
//! `cargo build --release --workspace`), writes lines to tailed files, and reads WebSockets;
//! `rsyslog` runs the same latency measurement through an rsyslogd instead.
//! `BENCHMARKS.md` has the figures and the command behind each.

mod agent;
mod arrivals;
mod e2e;
mod fanout;
mod fleet;
mod rig;
mod rsyslog;
mod write;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::rig::Rig;

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
    /// End-to-end latency (file write → WebSocket arrival) and loss at a fixed line rate.
    Latency {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// rsyslog beside `latency`: the same stamped lines at the same rate, followed by an
    /// rsyslogd this bench starts (imfile in inotify mode → omfwd TCP → a sink here). Needs
    /// rsyslog installed (Debian: `apt-get install rsyslog`); uses no system service.
    Rsyslog {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// The rsyslogd binary (default: `rsyslogd` on PATH, in /usr/sbin or /sbin).
        #[arg(long)]
        rsyslogd: Option<PathBuf>,
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
    /// Agent tail + parse + count with no session: CPU at `rate`, then the ceiling with
    /// `lines` appended as fast as possible.
    Ingest {
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 3_000_000)]
        lines: u64,
    },
    /// Session start → filters running on the agent (built-ins; plugins on first use, cached
    /// in memory, cached on disk), then agent memory with `sessions` plugin sessions.
    SessionStart {
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        #[arg(long, default_value_t = 10)]
        sessions: usize,
    },
    /// Many simulated metrics-only agents on one host; host memory, CPU and REST latency.
    Fleet {
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        /// How often each simulated agent reports metrics (the agent default is 60s).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        metrics_interval: Duration,
        /// Metrics reports each agent sends first, dated over the past hour: the history a
        /// host holds once it has run an hour (60 at the default interval).
        #[arg(long, default_value_t = 60)]
        history: usize,
        /// How long to time REST calls with the fleet connected.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// One session fanned out to many WebSocket clients.
    Fanout {
        #[arg(long, default_value_t = 500)]
        clients: usize,
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
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
    let bin_dir = bin_dir.as_path();
    match cli.command {
        Bench::Latency { rate, seconds } => {
            let rig = Rig::start(bin_dir).await?;
            let result = e2e::latency(&rig, rate, seconds).await;
            rig.stop().await;
            result
        }
        Bench::Rsyslog {
            rate,
            seconds,
            rsyslogd,
        } => rsyslog::latency(rsyslogd, rate, seconds).await,
        Bench::SlowClient { lines } => {
            let rig = Rig::start(bin_dir).await?;
            let result = e2e::slow_client(&rig, lines).await;
            rig.stop().await;
            result
        }
        Bench::Agent {
            rate,
            seconds,
            idle_seconds,
        } => agent::cost(bin_dir, rate, seconds, idle_seconds).await,
        Bench::Ingest {
            rate,
            seconds,
            lines,
        } => agent::ingest(bin_dir, rate, seconds, lines).await,
        Bench::SessionStart { rounds, sessions } => {
            agent::session_start(bin_dir, rounds, sessions).await
        }
        Bench::Fleet {
            agents,
            metrics_interval,
            history,
            seconds,
        } => fleet::fleet(bin_dir, agents, metrics_interval, history, seconds).await,
        Bench::Fanout {
            clients,
            rate,
            seconds,
        } => fanout::fanout(bin_dir, clients, rate, seconds).await,
    }
}
