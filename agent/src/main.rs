//! `logfleet-agent`: parses arguments, builds a [`Config`], runs the agent until SIGTERM or
//! Ctrl-C. `filter-test` runs a session's filters over stdin instead (see
//! [`logfleet_agent::filter_test`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use logfleet_agent::filter_test::{EXIT_FILTER_FAILED, FilterTest};
use logfleet_agent::{Config, STOP_TIMEOUT, Settings, SourceConfig, Tuning};
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
    Run(Box<RunArgs>),
    /// Run a session's filters over lines from stdin, exactly as the agent would, and print
    /// the lines kept (rewritten if a filter rewrote them). For trying plugins without a host.
    /// Filters fail closed: when one fails while running, its error goes to stderr, nothing
    /// more is printed, and the exit status is 3 (1: bad input or a filter that cannot start).
    FilterTest(FilterTestArgs),
}

/// Flags of `filter-test`.
#[derive(Debug, Clone, Args)]
struct FilterTestArgs {
    /// The session's filters as JSON, like the `filters` object of a start request, e.g.
    /// '{"level":["error"],"plugins":[{"name":"redact","config":{}}]}'.
    #[arg(long, value_name = "JSON")]
    filters: String,
    /// A plugin component; it supplies the plugin named like its file stem (redact.wasm
    /// serves "redact"; json_field.wasm also serves "json-field"). Repeatable.
    #[arg(long = "plugin", value_name = "FILE.wasm")]
    plugins: Vec<PathBuf>,
    /// The source name given to every line (what filters.source matches).
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    source: String,
    /// Where compiled filters are cached (default: $XDG_CACHE_HOME/logfleet or ~/.cache/logfleet).
    #[arg(long, env = "LOGFLEET_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
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
    /// A label, KEY=VALUE, that fleet sessions can select this agent by. Repeatable; replaces
    /// the config file's label of the same key.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// TOML config file with the same keys and [[source]] tables.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// How often metrics are reported (e.g. 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    metrics_interval: Option<Duration>,
    /// Where compiled filters and fetched plugins are cached (default: $XDG_CACHE_HOME/logfleet
    /// or ~/.cache/logfleet; none if neither is writable).
    #[arg(long, env = "LOGFLEET_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Trust the CA certificates in this PEM file (instead of the public web PKI roots) for an
    /// https:// or wss:// host with a private CA. Hostnames are still verified.
    #[arg(long, env = "LOGFLEET_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,

    /// How long a rotated-away or deleted log file is still followed after it stopped
    /// growing, for writers that reopen their log late (e.g. "10s"; default 10s).
    #[arg(long, env = "LOGFLEET_ROTATE_WAIT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    rotate_wait: Option<Duration>,
    /// Where the agent keeps what survives its restarts: read positions of the tailed files,
    /// reserved seqs and the running sessions, so a restart resumes them (default: state/
    /// under the cache directory; none if there is no usable cache directory).
    #[arg(long, env = "LOGFLEET_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Keep lines the host has not acknowledged on disk here as well, bounded by
    /// --buffer-bytes, so they survive an agent restart during a host outage (default: in
    /// memory only).
    #[arg(long, env = "LOGFLEET_BUFFER_DIR", value_name = "DIR")]
    buffer_dir: Option<PathBuf>,

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
    superseded_backoff: Option<Duration>,
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    batch_interval: Option<Duration>,
    #[arg(long, hide = true)]
    buffer_bytes: Option<usize>,
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    ping_interval: Option<Duration>,
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    read_timeout: Option<Duration>,
    #[arg(long, hide = true)]
    backlog_cap_bytes: Option<u64>,
    #[arg(long, hide = true)]
    backfill_scan_bytes: Option<u64>,
}

/// `KEY=VALUE` for `--label`, checked against the label bounds.
fn parse_label(s: &str) -> Result<(String, String), String> {
    logfleet_protocol::labels::parse_label(s).map_err(|e| e.to_string())
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
            labels: self.labels.into_iter().collect(),
            metrics_interval: self.metrics_interval,
            sources: self.sources,
            cache_dir: self.cache_dir,
            ca_cert: self.ca_cert,
            rotate_wait: self.rotate_wait,
            state_dir: self.state_dir,
            buffer_dir: self.buffer_dir,
            // Config file only (`fast_tier = false`).
            fast_tier: None,
        };
        let defaults = Tuning::default();
        let tuning = Tuning {
            poll_interval: self.poll_interval.unwrap_or(defaults.poll_interval),
            glob_interval: self.glob_interval.unwrap_or(defaults.glob_interval),
            reconnect_min: self.reconnect_min.unwrap_or(defaults.reconnect_min),
            reconnect_max: self.reconnect_max.unwrap_or(defaults.reconnect_max),
            superseded_backoff: self
                .superseded_backoff
                .unwrap_or(defaults.superseded_backoff),
            batch_interval: self.batch_interval.unwrap_or(defaults.batch_interval),
            buffer_bytes: self.buffer_bytes.unwrap_or(defaults.buffer_bytes),
            rotate_wait: defaults.rotate_wait,
            ping_interval: self.ping_interval.unwrap_or(defaults.ping_interval),
            read_timeout: self.read_timeout.unwrap_or(defaults.read_timeout),
            cache_dir: None,
            state_dir: None,
            buffer_dir: None,
            backlog_cap_bytes: self.backlog_cap_bytes.unwrap_or(defaults.backlog_cap_bytes),
            backfill_scan_bytes: self
                .backfill_scan_bytes
                .unwrap_or(defaults.backfill_scan_bytes),
            fast_tier: defaults.fast_tier,
        };
        Ok(file.overridden_by(flags).into_config(tuning)?)
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the cause chain on one line, without a backtrace dump.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let args = match cli.command {
        None => cli.run,
        Some(Command::Run(args)) => *args,
        Some(Command::FilterTest(args)) => return filter_test(args),
    };
    init_tracing("info");
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(logfleet_agent::run(config, shutdown_signal()));
    // A filter compile may still be running on a blocking thread; do not wait long for it.
    runtime.shutdown_timeout(STOP_TIMEOUT);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr; `RUST_LOG` overrides `default`.
fn init_tracing(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// `filter-test`: stdout gets the kept lines only; stderr the failures. Exits 1 on bad input
/// or a filter that cannot start, [`EXIT_FILTER_FAILED`] when a filter failed while running.
fn filter_test(args: FilterTestArgs) -> anyhow::Result<ExitCode> {
    // Quiet by default: stderr is for the filters' failures, which are printed anyway.
    init_tracing("error");
    let test = FilterTest {
        filters_json: args.filters,
        plugin_files: args.plugins,
        source: args.source,
        cache_dir: args.cache_dir,
    };
    let summary = test.run(
        std::io::stdin().lock(),
        std::io::stdout().lock(),
        std::io::stderr(),
    )?;
    // The failure is already on stderr, naming the filter and the cause.
    Ok(match summary.failure {
        Some(_) => ExitCode::from(EXIT_FILTER_FAILED),
        None => ExitCode::SUCCESS,
    })
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
    fn filter_test_flags_parse() {
        let cli = Cli::try_parse_from([
            "logfleet-agent",
            "filter-test",
            "--filters",
            "{}",
            "--plugin",
            "a.wasm",
            "--plugin",
            "b.wasm",
        ])
        .unwrap();
        let Some(Command::FilterTest(args)) = cli.command else {
            panic!("expected filter-test");
        };
        assert_eq!(args.plugins.len(), 2);
        assert_eq!(args.source, "stdin");
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
