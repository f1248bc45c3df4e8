//! `logfleet-agent`: parses arguments, builds a [`Config`], runs the agent until SIGTERM or
//! Ctrl-C. Subcommands slot in beside the default (running the daemon).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use logfleet_agent::{Config, Settings, SourceConfig, Tuning};
use tracing_subscriber::EnvFilter;

/// LogFleet edge agent: tails log files, reports metrics, streams matching lines on demand.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

/// Subcommands; none means running the agent.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default when no subcommand is given).
    Run(RunArgs),
}

/// Flags of the agent daemon. Flags (and their env variables) override the config file.
#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Host base URL (http://, https://, ws:// or wss://).
    #[arg(long, env = "LOGFLEET_HOST")]
    host: Option<String>,
    /// Agent token (a JWT minted by `logfleet-host token agent`).
    #[arg(long, env = "LOGFLEET_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A source to tail: NAME=PATH, where PATH is a file or a glob. Repeatable.
    #[arg(long = "source", value_name = "NAME=PATH")]
    sources: Vec<SourceConfig>,
    /// Agent display name (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    /// TOML config file with the same keys and [[source]] tables.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// How often metrics are reported (e.g. 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    metrics_interval: Option<Duration>,

    // Tuning, for tests and unusual deployments.
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    poll_interval: Option<Duration>,
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    glob_interval: Option<Duration>,
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    reconnect_min: Option<Duration>,
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    reconnect_max: Option<Duration>,
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    batch_interval: Option<Duration>,
    #[arg(long, hide = true)]
    buffer_bytes: Option<usize>,
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        let flags = Settings {
            host: self.host,
            token: self.token,
            name: self.name,
            metrics_interval: self.metrics_interval,
            sources: self.sources,
        };
        let defaults = Tuning::default();
        let tuning = Tuning {
            poll_interval: self.poll_interval.unwrap_or(defaults.poll_interval),
            glob_interval: self.glob_interval.unwrap_or(defaults.glob_interval),
            reconnect_min: self.reconnect_min.unwrap_or(defaults.reconnect_min),
            reconnect_max: self.reconnect_max.unwrap_or(defaults.reconnect_max),
            batch_interval: self.batch_interval.unwrap_or(defaults.batch_interval),
            buffer_bytes: self.buffer_bytes.unwrap_or(defaults.buffer_bytes),
        };
        Ok(file.overridden_by(flags).into_config(tuning)?)
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the cause chain on one line, without a backtrace dump.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let args = match cli.command {
        None => cli.run,
        Some(Command::Run(args)) => args,
    };
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(logfleet_agent::run(config, shutdown_signal()))?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "logfleet-agent",
            "--host",
            "http://h:8080",
            "--token",
            "t",
            "--source",
            "nginx=/var/log/nginx/*.log",
            "--source",
            "app=/var/log/app.log",
            "--metrics-interval",
            "30s",
            "--poll-interval",
            "10ms",
        ])
        .unwrap();
        let config = cli.run.into_config().unwrap();
        assert_eq!(config.sources.len(), 2);
        assert_eq!(config.metrics_interval, Duration::from_secs(30));
        assert_eq!(config.tuning.poll_interval, Duration::from_millis(10));
        assert_eq!(config.tuning.glob_interval, Duration::from_secs(1));
    }
}
