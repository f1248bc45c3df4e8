//! `logfleet`: the LogFleet command-line tool. Parses arguments, builds a [`Client`], runs one
//! command and maps the outcome to an exit code; the work lives in the `logfleet_cli` library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use logfleet_agent::filter_test::FilterTest;
use logfleet_cli::args::{self, ColorChoice};
use logfleet_cli::error::exit;
use logfleet_cli::follow::{self, Outcome, Sink};
use logfleet_cli::output::{self, Format};
use logfleet_cli::scaffold::{Lang, scaffold};
use logfleet_cli::{Client, DEFAULT_URL, Error};
use logfleet_protocol::FilterSpec;
use logfleet_protocol::client::{EndReason, LogMessage};
use logfleet_protocol::filters::{OneOrMany, PluginSpec};
use logfleet_protocol::rest::{Backfill, StartRequest};

const EXIT_CODES: &str = "\
Exit codes:
  0    success; also when a stream's session times out or is stopped, or stdout is closed
  1    any other failure
  2    usage error, or a request the host refused as invalid (bad level, regex, timeout)
  3    authentication failed: no token, or the host answered 401/403
  4    unknown agent, session or plugin (404)
  5    agent offline (409)
  6    host unreachable, connection lost, or host shutting down
  130  interrupted (Ctrl-C / SIGTERM) after stopping the session(s) on the host

A broken stream is resumed (with backoff, without repeating or losing buffered lines), and
--follow waits out an offline agent or unreachable host; neither changes the exit code. A
session that could not be stopped on exit is named on stderr, and the exit code is that
failure's (6 when the host is unreachable), never 0 or 130.

Environment:
  LOGFLEET_URL    host URL (default http://127.0.0.1:8080)
  LOGFLEET_TOKEN  user JWT
  LOGFLEET_CA_CERT  PEM file of the CA to trust for https:// (a private CA)
  NO_COLOR        disable coloured output
  RUST_LOG        diagnostics on stderr (e.g. RUST_LOG=debug)";

/// Stream logs from LogFleet edge agents on demand, and manage sessions and filter plugins.
#[derive(Debug, Parser)]
#[command(name = "logfleet", version, after_help = EXIT_CODES)]
struct Cli {
    /// Host URL.
    #[arg(long, global = true, env = "LOGFLEET_URL", default_value = DEFAULT_URL, hide_env_values = true)]
    url: String,
    /// User JWT.
    #[arg(long, global = true, env = "LOGFLEET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Trust the CA certificates in this PEM file (instead of the public web PKI roots) for a
    /// host served with a private CA. Hostnames are still verified.
    #[arg(long, global = true, env = "LOGFLEET_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// When to colour output: auto is on a terminal unless NO_COLOR is set or TERM=dumb.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List agents (name, id, status, last seen, sources), or enroll or revoke one (admin).
    Agents {
        #[command(subcommand)]
        action: Option<AgentCommand>,
        /// Output format of the list.
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
    },
    /// List active streaming sessions.
    Sessions {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
    },
    /// Change a running session's filters (PATCH); its stream continues under them without
    /// a gap. Prints the session's new filters.
    Filter(FilterArgs),
    /// Stop a streaming session.
    Stop {
        /// Session id (sess_...).
        id: String,
    },
    /// Manage filter plugins (WebAssembly components).
    #[command(subcommand)]
    Plugins(PluginCommand),
    /// Stream an agent's logs to stdout until the session ends (or forever with --follow).
    #[command(after_help = EXIT_CODES)]
    Stream(StreamArgs),
    /// Print a shell completion script, e.g. `logfleet completion bash > /etc/bash_completion.d/logfleet`
    /// or `source <(logfleet completion zsh)`.
    Completion {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// How `agents`, `sessions` and `plugins list` print.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ListFormat {
    /// Aligned columns for people.
    Table,
    /// The host's objects as one JSON array, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Enroll a new agent (admin): prints its id and token, shown once. Start the agent with
    /// `logfleet-agent --token TOKEN ...`.
    Enroll {
        /// The agent's display name.
        name: String,
        /// A label, KEY=VALUE. Repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Print `{"agent_id": "...", "token": "..."}` instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an agent (admin): its link is closed and its tokens are refused from now on.
    Revoke {
        /// Agent id (UUID) or name.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Start a plugin project from a template (no host needed): NAME/ with the filter, a
    /// helper library, unit tests, a build script and a README.
    New {
        /// Plugin name: a-z, 0-9, '-', '_'.
        name: String,
        /// The language to write the plugin in.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to create the project (default: ./NAME).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Rust only: path of the LogFleet filter SDK (filters-wasm/sdk in a checkout).
        #[arg(long, value_name = "PATH", default_value = "../filters-wasm/sdk")]
        sdk: String,
    },
    /// Run a plugin over lines from stdin exactly as an agent would, and print the lines kept
    /// (no host needed). A filter failing while running is named on stderr, nothing more is
    /// printed, and the exit status is 1. What the plugin prints goes to stderr.
    Test {
        /// The component file (.wasm); it supplies the plugin named like its file stem.
        file: PathBuf,
        /// The plugin's JSON config (when --filters is not given).
        #[arg(long, value_name = "JSON", conflicts_with = "filters")]
        config: Option<String>,
        /// The whole session's filters as JSON (like a start request's `filters`), to test the
        /// plugin with built-ins or other plugins; default: just this plugin with --config.
        #[arg(long, value_name = "JSON")]
        filters: Option<String>,
        /// More plugin components the filters name. Repeatable.
        #[arg(long = "plugin", value_name = "FILE.wasm")]
        plugins: Vec<PathBuf>,
        /// The source name given to every line (what filters.source matches).
        #[arg(long, value_name = "NAME", default_value = "stdin")]
        source: String,
    },
    /// Upload (or replace) a plugin component.
    Upload {
        /// Plugin name: a-z, 0-9, '-', '_'.
        name: String,
        /// The component file (.wasm).
        file: PathBuf,
    },
    /// List uploaded plugins.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
    },
    /// Delete a plugin.
    Delete {
        /// Plugin name.
        name: String,
    },
}

#[derive(Debug, Args)]
struct StreamArgs {
    /// Agent ids (UUID) or names; several make a fleet session on all of them.
    #[arg(required_unless_present = "selector")]
    agents: Vec<String>,
    /// Stream from every agent carrying these labels, KEY=VALUE (comma-separated or
    /// repeated), including agents that come online with them during the session.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "KEY=VALUE",
        conflicts_with = "agents"
    )]
    selector: Vec<String>,
    /// Only these levels (comma-separated, e.g. ERROR,WARN); LEVEL+ is that level and above
    /// (WARN+ = WARN,ERROR,FATAL).
    #[arg(short, long, value_delimiter = ',')]
    level: Vec<String>,
    /// Only these sources (repeat or comma-separate).
    #[arg(short, long, value_delimiter = ',')]
    source: Vec<String>,
    /// Only messages matching this regex (Rust regex syntax).
    #[arg(long)]
    pattern: Option<String>,
    /// Apply an uploaded plugin, with an optional JSON config: NAME or NAME=JSON. Repeatable;
    /// applied in order after the built-in filters.
    #[arg(long = "plugin", value_name = "NAME[=JSON]", value_parser = parse_plugin)]
    plugins: Vec<PluginSpec>,
    /// Session length: seconds or a duration like 90s, 5m, 1h (at most 1h).
    #[arg(long, default_value = "300", value_parser = args::parse_timeout)]
    timeout: u64,
    /// First print the N most recent matching lines (1-10000) already in the agent's files,
    /// oldest first, then the live ones.
    #[arg(long, visible_alias = "tail", value_name = "N", value_parser = args::parse_backfill)]
    backfill: Option<u32>,
    /// Keep streaming past the timeout by starting the next session before each one ends.
    #[arg(short, long)]
    follow: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// Write log content unchanged even to a terminal. By default, on a terminal, control
    /// characters in log lines are shown as escapes (`\e`, `\x07`, …) so a log line cannot
    /// clear the screen or retitle the window.
    #[arg(long)]
    raw: bool,
}

/// `logfleet filter SESSION [filter flags]`: the session's new filters, replacing all of the
/// old ones (a flag left out is no filter of that kind).
#[derive(Debug, Args)]
struct FilterArgs {
    /// Session id (sess_...).
    session: String,
    /// Only these levels (comma-separated, e.g. ERROR,WARN); LEVEL+ is that level and above.
    #[arg(short, long, value_delimiter = ',')]
    level: Vec<String>,
    /// Only these sources (repeat or comma-separate).
    #[arg(short, long, value_delimiter = ',')]
    source: Vec<String>,
    /// Only messages matching this regex (Rust regex syntax).
    #[arg(long)]
    pattern: Option<String>,
    /// Apply an uploaded plugin: NAME or NAME=JSON. Repeatable; in order after the built-ins.
    #[arg(long = "plugin", value_name = "NAME[=JSON]", value_parser = parse_plugin)]
    plugins: Vec<PluginSpec>,
    /// Output format: the new filters as text, or the session object as JSON.
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    output: ListFormat,
}

/// The filters that `--level`, `--source`, `--pattern` and `--plugin` say, as the host takes
/// them (`stream` and `filter` share them).
fn filter_spec(
    level: &[String],
    source: &[String],
    pattern: Option<&String>,
    plugins: &[PluginSpec],
) -> Result<FilterSpec, Error> {
    let levels = args::expand_levels(level).map_err(Error::Usage)?;
    Ok(FilterSpec {
        level: (!levels.is_empty()).then_some(levels),
        source: match source {
            [] => None,
            [one] => Some(OneOrMany::One(one.clone())),
            many => Some(OneOrMany::Many(many.to_vec())),
        },
        pattern: pattern.cloned(),
        plugins: (!plugins.is_empty()).then(|| plugins.to_vec()),
    })
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// TIMESTAMP LEVEL source: message (coloured on a terminal).
    Text,
    /// One JSON log object per line.
    Json,
}

fn parse_plugin(arg: &str) -> Result<PluginSpec, String> {
    let (name, config) = match arg.split_once('=') {
        None => (arg, serde_json::Value::Null),
        Some((name, json)) => (
            name,
            serde_json::from_str(json).map_err(|e| format!("plugin config is not JSON: {e}"))?,
        ),
    };
    if name.is_empty() {
        return Err("plugin name is empty".to_owned());
    }
    Ok(PluginSpec {
        name: name.to_owned(),
        config,
    })
}

impl StreamArgs {
    /// Several agents or a selector: a fleet session, printed with an agent column.
    fn is_fleet(&self) -> bool {
        self.agents.len() > 1 || !self.selector.is_empty()
    }

    fn request(&self) -> Result<StartRequest, Error> {
        let filters = filter_spec(
            &self.level,
            &self.source,
            self.pattern.as_ref(),
            &self.plugins,
        )?;
        let selector = (!self.selector.is_empty())
            .then(|| args::parse_selector(&self.selector))
            .transpose()
            .map_err(Error::Usage)?;
        if self.is_fleet() && self.backfill.is_some() {
            return Err(Error::Usage(
                "--backfill works with one agent only (for now); stream several agents without it"
                    .to_owned(),
            ));
        }
        if self.is_fleet() && self.follow {
            return Err(Error::Usage(
                "--follow works with one agent only (for now); stream several agents without it"
                    .to_owned(),
            ));
        }
        let (agent_id, agent_ids) = match self.agents.as_slice() {
            [] => (None, None),
            [one] => (Some(one.clone()), None),
            many => (None, Some(many.to_vec())),
        };
        Ok(StartRequest {
            agent_id,
            agent_ids,
            selector,
            timeout_seconds: Some(self.timeout),
            filters: (filters != FilterSpec::default()).then_some(filters),
            limits: None,
            backfill: self.backfill.map(|lines| Backfill { lines }),
        })
    }
}

/// `KEY=VALUE` for `--label`.
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Escape codes only where a person reads them: logs redirected to a file stay plain.
        .with_ansi(args::use_colour(
            cli.color,
            std::io::stderr().is_terminal(),
            std::env::var("NO_COLOR").ok().as_deref(),
            std::env::var("TERM").ok().as_deref(),
        ))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // A plugin's own output (`plugins test`) is logged at info under this target.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,logfleet::plugin=info")
                }),
        )
        .init();
    // Both reqwest and tungstenite use rustls with ring; make that the process default so
    // neither has to guess. An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logfleet: cannot start the async runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e
                .downcast_ref::<Error>()
                .map_or(exit::OTHER, Error::exit_code);
            eprintln!("logfleet: error: {}", one_line(&e, code));
            ExitCode::from(code)
        }
    }
}

/// The error as one line, with a hint for the mistakes users make most.
fn one_line(e: &anyhow::Error, code: u8) -> String {
    let text = format!("{e:#}");
    let ours = e.downcast_ref::<Error>();
    let hint = match code {
        exit::AUTH if !ours.is_some_and(|e| matches!(e, Error::MissingToken)) => {
            " (check LOGFLEET_TOKEN / --token)"
        }
        exit::NETWORK
            if e.downcast_ref::<Error>()
                .is_some_and(|e| matches!(e, Error::Network { .. })) =>
        {
            " (check LOGFLEET_URL / --url)"
        }
        _ => "",
    };
    format!("{}{hint}", text.replace('\n', " "))
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Plugins(PluginCommand::New {
            name,
            lang,
            dir,
            sdk,
        }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            scaffold(&name, lang, &dir, &sdk)?;
            println!(
                "created {} ({lang:?} plugin '{name}'); see its README",
                dir.display()
            );
            return Ok(exit::OK);
        }
        Command::Plugins(PluginCommand::Test {
            file,
            config,
            filters,
            plugins,
            source,
        }) => return plugin_test(file, config, filters, plugins, source).await,
        _ => {}
    }
    if let Command::Completion { shell } = cli.command {
        // Into a buffer first: clap_complete panics on a write error, e.g. `| head`.
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "logfleet", &mut script);
        return match std::io::stdout().write_all(&script) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(exit::OK),
        };
    }
    let token = cli.token.clone().unwrap_or_default();
    let tls = cli
        .ca_cert
        .as_deref()
        .map(logfleet_cli::tls::trusting)
        .transpose()?;
    let client = Client::with_tls(&cli.url, token, tls)?;
    let now = chrono::Utc::now;
    let mut stdout = std::io::stdout();
    match cli.command {
        Command::Agents {
            action: None,
            output,
        } => {
            let agents = client.agents().await?;
            match output {
                ListFormat::Table => write!(stdout, "{}", output::agents_table(&agents, now()))?,
                ListFormat::Json => writeln!(stdout, "{}", serde_json::to_string(&agents)?)?,
            }
        }
        Command::Agents {
            action: Some(AgentCommand::Enroll { name, labels, json }),
            ..
        } => {
            let enrolled = client.enroll(&name, labels.into_iter().collect()).await?;
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&enrolled)?)?;
            } else {
                writeln!(stdout, "enrolled {name}: agent id {}", enrolled.agent_id)?;
                writeln!(stdout, "token (shown once; keep it secret):")?;
                writeln!(stdout, "{}", enrolled.token)?;
            }
        }
        Command::Agents {
            action: Some(AgentCommand::Revoke { id }),
            ..
        } => {
            let revoked = client.revoke(&id).await?;
            writeln!(
                stdout,
                "revoked agent {} ({} session(s) ended)",
                revoked.agent_id, revoked.sessions_ended
            )?;
        }
        Command::Sessions { output } => {
            let sessions = client.sessions().await?;
            match output {
                ListFormat::Table => {
                    write!(stdout, "{}", output::sessions_table(&sessions, now()))?;
                }
                ListFormat::Json => writeln!(stdout, "{}", serde_json::to_string(&sessions)?)?,
            }
        }
        Command::Filter(f) => {
            let filters = filter_spec(&f.level, &f.source, f.pattern.as_ref(), &f.plugins)?;
            let session = client.change_filters(&f.session, filters).await?;
            match f.output {
                ListFormat::Table => {
                    let now = session.filters.clone().unwrap_or_default();
                    writeln!(
                        stdout,
                        "session {} now filters {}",
                        session.id,
                        serde_json::to_string(&now)?
                    )?;
                }
                ListFormat::Json => writeln!(stdout, "{}", serde_json::to_string(&session)?)?,
            }
        }
        Command::Stop { id } => {
            let session = client.stop(&id).await?;
            writeln!(stdout, "stopped {}", session.id)?;
        }
        Command::Plugins(PluginCommand::List { output }) => {
            let plugins = client.plugins().await?;
            match output {
                ListFormat::Table => write!(stdout, "{}", output::plugins_table(&plugins))?,
                ListFormat::Json => writeln!(stdout, "{}", serde_json::to_string(&plugins)?)?,
            }
        }
        Command::Plugins(PluginCommand::Upload { name, file }) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let plugin = client.upload_plugin(&name, bytes).await?;
            writeln!(
                stdout,
                "uploaded {} ({}, {} bytes)",
                plugin.name, plugin.digest, plugin.size
            )?;
        }
        Command::Plugins(PluginCommand::Delete { name }) => {
            client.delete_plugin(&name).await?;
            writeln!(stdout, "deleted {name}")?;
        }
        Command::Stream(stream_args) => return stream(&client, &stream_args, cli.color).await,
        // Handled above, before a client is built.
        Command::Completion { .. }
        | Command::Plugins(PluginCommand::New { .. } | PluginCommand::Test { .. }) => {}
    }
    Ok(exit::OK)
}

/// `plugins test`: the agent's `filter-test` over stdin, on a blocking thread.
async fn plugin_test(
    file: PathBuf,
    config: Option<String>,
    filters: Option<String>,
    mut plugins: Vec<PathBuf>,
    source: String,
) -> anyhow::Result<u8> {
    let filters_json = match filters {
        Some(filters) => filters,
        None => {
            let name = file
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| anyhow::anyhow!("{}: expected NAME.wasm", file.display()))?;
            let config: serde_json::Value = match config {
                Some(text) => serde_json::from_str(&text).context("--config is not JSON")?,
                None => serde_json::Value::Null,
            };
            serde_json::json!({"plugins": [{"name": name, "config": config}]}).to_string()
        }
    };
    plugins.insert(0, file);
    let test = FilterTest {
        filters_json,
        plugin_files: plugins,
        source,
        cache_dir: None,
    };
    let summary = tokio::task::spawn_blocking(move || {
        test.run(
            std::io::stdin().lock(),
            std::io::stdout().lock(),
            std::io::stderr(),
        )
    })
    .await??;
    // The failure is already on stderr, naming the filter and the cause.
    Ok(match summary.failure {
        Some(_) => exit::OTHER,
        None => exit::OK,
    })
}

async fn stream(client: &Client, args: &StreamArgs, color: ColorChoice) -> anyhow::Result<u8> {
    // Listen for signals before any session exists, so none can slip through unnoticed.
    let shutdown = shutdown_signal()?;
    let format = match args.output {
        OutputFormat::Text => Format::Text,
        OutputFormat::Json => Format::Json,
    };
    let request = args.request()?;
    let on_terminal = std::io::stdout().is_terminal();
    let colour = args::use_colour(
        color,
        on_terminal,
        std::env::var("NO_COLOR").ok().as_deref(),
        std::env::var("TERM").ok().as_deref(),
    );
    let mut sink = Terminal {
        out: std::io::stdout(),
        format,
        colour,
        // Log content is anyone's: on a terminal its control characters are shown, not obeyed.
        escape: on_terminal && !args.raw,
        escape_notices: std::io::stderr().is_terminal(),
        names: None,
    };
    let agents = warn_about_target(client, args, &mut sink).await;
    if args.is_fleet() {
        sink.names = Some(agents.into_iter().map(|a| (a.id, a.name)).collect());
    }
    let options = follow::Options {
        request,
        follow: args.follow,
    };
    let finished = follow::run(client, &options, &mut sink, shutdown).await;
    // Said once per session, plainly, whatever else went wrong: the user must know a session
    // is still streaming (and costing bandwidth) until it expires.
    for left in &finished.not_stopped {
        eprintln!(
            "logfleet: could not stop session {} ({}); it stays active on the host until {} \
             (stop it later with `logfleet stop {}`)",
            left.session_id, left.error, left.expires_at, left.session_id
        );
    }
    let stop_failure = finished
        .not_stopped
        .first()
        .map(|left| left.error.exit_code());
    let code = match finished.outcome {
        Err(e) => return Err(e.into()),
        Ok(Outcome::Interrupted) => match stop_failure {
            None => {
                eprintln!("logfleet: interrupted; session stopped");
                exit::INTERRUPTED
            }
            Some(code) => {
                eprintln!("logfleet: interrupted");
                code
            }
        },
        Ok(Outcome::Ended(EndReason::Timeout | EndReason::Stopped) | Outcome::OutputClosed) => {
            stop_failure.unwrap_or(exit::OK)
        }
        Ok(Outcome::Ended(EndReason::Shutdown)) => exit::NETWORK,
        Ok(Outcome::Ended(EndReason::FilterFailed)) => exit::OTHER,
    };
    Ok(code)
}

/// Says when `--source` names a source the agent does not have (nothing would match) or when
/// several agents share the name given. Advisory: a failure to look is only logged. Returns
/// the agents listed (none if that failed), for the names of a fleet session's agents.
async fn warn_about_target(
    client: &Client,
    args: &StreamArgs,
    sink: &mut Terminal,
) -> Vec<logfleet_protocol::rest::AgentInfo> {
    let agents = match client.agents().await {
        Ok(agents) => agents,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list agents to check the stream's target");
            return Vec::new();
        }
    };
    if let [agent] = args.agents.as_slice() {
        warn_about_agent(agent, &agents, args, sink);
    }
    agents
}

/// [`warn_about_target`] for a single-agent stream.
fn warn_about_agent(
    target: &str,
    agents: &[logfleet_protocol::rest::AgentInfo],
    args: &StreamArgs,
    sink: &mut Terminal,
) {
    let by_id: Vec<_> = agents.iter().filter(|a| a.id == target).collect();
    let by_name: Vec<_> = agents.iter().filter(|a| a.name == target).collect();
    if by_id.is_empty() && by_name.len() > 1 {
        let ids: Vec<&str> = by_name.iter().map(|a| a.id.as_str()).collect();
        sink.notice(&format!(
            "{} agents are named '{}' ({}); give the id to pick one",
            by_name.len(),
            target,
            ids.join(", ")
        ));
    }
    let Some(agent) = by_id.first().or(by_name.first()) else {
        return;
    };
    let known: Vec<&str> = agent.sources.iter().map(|s| s.name.as_str()).collect();
    for source in &args.source {
        if !known.contains(&source.as_str()) {
            sink.notice(&format!(
                "agent '{}' has no source '{source}' (its sources: {}); no line of it can match",
                agent.name,
                known.join(", ")
            ));
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. Registered immediately, so a signal that arrives
/// before the future is first polled still counts.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Prints logs to stdout (flushed per line, so `| grep` and tests see lines at once) and
/// notices to stderr.
struct Terminal {
    out: std::io::Stdout,
    format: Format,
    colour: bool,
    /// Show control characters in log content as escapes (`\e`, `\x07`) instead of writing them.
    escape: bool,
    /// The same for notices, which may quote what a host or plugin said.
    escape_notices: bool,
    /// Agent names by id, for a fleet session's agent column (`None`: one agent, no column).
    names: Option<std::collections::HashMap<String, String>>,
}

impl Terminal {
    /// The agent column of a fleet session's line: its name, or the start of its id for an
    /// agent that was not listed when the stream began.
    fn agent_name<'a>(&'a self, log: &'a LogMessage) -> Option<&'a str> {
        let names = self.names.as_ref()?;
        Some(names.get(&log.agent_id).map_or_else(
            || log.agent_id.get(..8).unwrap_or(&log.agent_id),
            String::as_str,
        ))
    }
}

impl Sink for Terminal {
    fn log(&mut self, log: &LogMessage) -> std::io::Result<()> {
        let escaped;
        let shown = if self.escape {
            escaped = output::escaped(log);
            &escaped
        } else {
            log
        };
        let line = match self.agent_name(log) {
            Some(agent) if self.escape => output::format_log_from(
                shown,
                &output::escape_controls(agent),
                self.format,
                self.colour,
            ),
            Some(agent) => output::format_log_from(shown, agent, self.format, self.colour),
            None => output::format_log(shown, self.format, self.colour),
        };
        let mut out = self.out.lock();
        writeln!(out, "{line}")?;
        out.flush()
    }

    fn notice(&mut self, text: &str) {
        if self.escape_notices {
            eprintln!("logfleet: {}", output::escape_controls(text));
        } else {
            eprintln!("logfleet: {text}");
        }
    }
}
