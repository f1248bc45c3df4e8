//! `logfleet-host`: serve the API, or mint tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use logfleet_host::auth::{Auth, Role};
use logfleet_host::config::{Config, LimitConfig, Tuning, check_secret};
use logfleet_host::jwt::JwtConfig;
use logfleet_host::tls::TlsFiles;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "logfleet-host", version, about = "LogFleet cloud host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST and WebSocket API.
    Serve(Box<ServeArgs>),
    /// Mint a token signed with this host's secret.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// Where the JWT secret comes from.
#[derive(clap::Args)]
struct SecretArgs {
    /// JWT signing secret (at least 32 bytes).
    #[arg(long, env = "LOGFLEET_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Read the JWT secret from a file instead (trailing newline ignored).
    #[arg(long, conflicts_with = "jwt_secret")]
    jwt_secret_file: Option<PathBuf>,
    /// More HS256 secrets by `kid`, for rotation: JSON
    /// `{"signing_kid": "2026-12", "secrets": {"2026-12": "…", "2026-06": "…"}}`. Tokens with a
    /// `kid` are verified with that secret; new tokens are signed with `signing_kid` if set.
    #[arg(long, env = "LOGFLEET_JWT_SECRETS_FILE")]
    jwt_secrets_file: Option<PathBuf>,
}

impl SecretArgs {
    /// The primary secret and the rotation secrets.
    fn keys(&self) -> anyhow::Result<(Vec<u8>, JwtConfig)> {
        let mut jwt = JwtConfig::default();
        if let Some(path) = &self.jwt_secrets_file {
            jwt.load_secrets_file(path)?;
        }
        Ok((self.load()?, jwt))
    }

    /// The token minter these flags describe.
    fn auth(&self) -> anyhow::Result<Auth> {
        let (primary, jwt) = self.keys()?;
        Ok(Auth::from_config(Some(&primary), &jwt))
    }

    fn load(&self) -> anyhow::Result<Vec<u8>> {
        let secret = match (&self.jwt_secret_file, &self.jwt_secret) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .as_bytes()
                    .to_vec(),
            ),
            (None, Some(s)) => Some(s.as_bytes().to_vec()),
            (None, None) => None,
        };
        Ok(check_secret(secret)?)
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for plugins and other state.
    #[arg(long, default_value = "./logfleet-data")]
    data_dir: PathBuf,
    /// URL clients reach this host at (for `websocket_url`), e.g. https://logs.example.com
    #[arg(long)]
    public_url: Option<String>,
    /// Let browser pages of this origin (scheme://host[:port]) call the REST API. Repeatable;
    /// off by default (no CORS headers).
    #[arg(long = "cors-origin", value_name = "URL", value_parser = parse_cors_origin)]
    cors_origins: Vec<String>,
    #[command(flatten)]
    secret: SecretArgs,
    /// Public keys (JWKS, RFC 7517) of an identity provider whose RS256/ES256 user tokens this
    /// host accepts. Each key carries `"org": "ORG"`: the one org whose tokens it verifies.
    #[arg(long, env = "LOGFLEET_JWKS_FILE")]
    jwks_file: Option<PathBuf>,
    /// Require tokens to carry this audience (`aud`); without it, `aud` is not checked.
    #[arg(long, env = "LOGFLEET_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Serve HTTPS and WSS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM); needs --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Open connections at once (HTTP, WebSocket, agent links); more are closed on accept.
    #[arg(long, default_value_t = Tuning::default().max_connections)]
    max_connections: usize,
    /// Streaming bytes per hour an org's agents may send before its sessions' clients get a
    /// `bandwidth_warning`; 0 = no budget.
    #[arg(long, default_value_t = 0)]
    org_bandwidth_budget: u64,
    /// How long a client may take to send a request's headers (also closes idle keep-alives).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    header_read_timeout: Duration,
    /// Longest pause inside a request body before the request is answered 408.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    body_read_timeout: Duration,
    /// How long a TLS handshake may take.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    tls_handshake_timeout: Duration,
    /// Default per-session line rate limit.
    #[arg(long, default_value_t = LimitConfig::default().default.lines_per_second)]
    default_lines_per_second: u32,
    /// Most lines per second a session may ask for.
    #[arg(long, default_value_t = LimitConfig::default().max.lines_per_second)]
    max_lines_per_second: u32,
    /// Default per-session byte rate limit.
    #[arg(long, default_value_t = LimitConfig::default().default.bytes_per_second)]
    default_bytes_per_second: u64,
    /// Most bytes per second a session may ask for.
    #[arg(long, default_value_t = LimitConfig::default().max.bytes_per_second)]
    max_bytes_per_second: u64,
    /// Bursts (agent batches) a WebSocket client may fall behind before it loses some.
    #[arg(long, default_value_t = Tuning::default().client_queue)]
    client_queue: usize,
    /// Bytes of bursts a session's live queue holds for lagging clients.
    #[arg(long, default_value_t = Tuning::default().client_queue_bytes)]
    client_queue_bytes: usize,
    /// Bytes of bursts all sessions' live queues hold together; over it, sessions above their
    /// fair share drop their oldest (the host holds at most twice this).
    #[arg(long, default_value_t = Tuning::default().queue_budget_bytes)]
    queue_budget_bytes: usize,
    /// Log messages per session kept for `?since_seq=` resume.
    #[arg(long, default_value_t = Tuning::default().replay_messages)]
    replay_messages: usize,
    /// Bytes of log messages per session kept for `?since_seq=` resume.
    #[arg(long, default_value_t = Tuning::default().replay_bytes)]
    replay_bytes: usize,
    /// Bytes of log messages all sessions together keep for resume; over it, sessions above
    /// their fair share give up their oldest (the host holds at most twice this).
    #[arg(long, default_value_t = Tuning::default().replay_budget_bytes)]
    replay_budget_bytes: usize,
    /// WebSocket clients one session serves at once (more get 429 `too_many_clients`).
    #[arg(long, default_value_t = Tuning::default().max_clients_per_session)]
    max_clients_per_session: usize,
    /// How long a write to an agent may take (plus time for its size at 32 KiB/s) before the
    /// agent is dropped.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    agent_write_timeout: Duration,
    /// Lines a WebSocket client may lose to lagging before it is closed (code 4008).
    #[arg(long, default_value_t = Tuning::default().max_client_lost_lines)]
    max_client_lost_lines: u64,
    /// How often agents and clients are pinged.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    ping_interval: Duration,
    /// A peer silent this long is dropped.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "45s")]
    idle_timeout: Duration,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// A token for a person (REST, WebSocket, CLI).
    User {
        #[arg(long)]
        sub: String,
        #[arg(long)]
        org: String,
        #[arg(long, value_enum, default_value = "user")]
        role: UserRole,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        ttl: Duration,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// A token for an agent; its id is a new UUID unless given.
    Agent {
        #[arg(long)]
        name: String,
        #[arg(long)]
        org: String,
        #[arg(long)]
        id: Option<Uuid>,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "365d")]
        ttl: Duration,
        /// Print `{"agent_id": "...", "token": "..."}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        secret: SecretArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum UserRole {
    User,
    Admin,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line (with causes), not a debug dump with a backtrace.
            eprintln!("logfleet-host: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Token(TokenCommand::User {
            sub,
            org,
            role,
            ttl,
            secret,
        }) => {
            let role = match role {
                UserRole::User => Role::User,
                UserRole::Admin => Role::Admin,
            };
            let token = secret.auth()?.mint(&sub, &org, role, None, ttl)?;
            println!("{token}");
            Ok(())
        }
        Command::Token(TokenCommand::Agent {
            name,
            org,
            id,
            ttl,
            json,
            secret,
        }) => {
            let id = id.unwrap_or_else(Uuid::new_v4);
            let token =
                secret
                    .auth()?
                    .mint(&id.to_string(), &org, Role::Agent, Some(&name), ttl)?;
            if json {
                println!("{}", serde_json::json!({"agent_id": id, "token": token}));
            } else {
                println!("{token}");
            }
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let (jwt_secret, mut jwt) = args.secret.keys()?;
    if let Some(path) = &args.jwks_file {
        jwt.load_jwks_file(path)?;
    }
    jwt.audience = args.jwt_audience.clone();
    anyhow::ensure!(
        args.max_connections > 0,
        "--max-connections must be at least 1"
    );
    for (flag, value) in [
        ("--header-read-timeout", args.header_read_timeout),
        ("--body-read-timeout", args.body_read_timeout),
        ("--tls-handshake-timeout", args.tls_handshake_timeout),
    ] {
        anyhow::ensure!(!value.is_zero(), "{flag} must be greater than zero");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let mut limits = LimitConfig::default();
    limits.default.lines_per_second = args.default_lines_per_second;
    limits.max.lines_per_second = args.max_lines_per_second;
    limits.default.bytes_per_second = args.default_bytes_per_second;
    limits.max.bytes_per_second = args.max_bytes_per_second;
    let config = Config {
        listen: args.listen,
        data_dir: args.data_dir,
        public_url: args.public_url,
        cors_origins: args.cors_origins,
        jwt_secret,
        jwt,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            // clap's `requires` makes one without the other a usage error.
            _ => None,
        },
        limits,
        tuning: Tuning {
            client_queue: args.client_queue,
            client_queue_bytes: args.client_queue_bytes,
            queue_budget_bytes: args.queue_budget_bytes,
            replay_messages: args.replay_messages,
            replay_bytes: args.replay_bytes,
            replay_budget_bytes: args.replay_budget_bytes,
            max_clients_per_session: args.max_clients_per_session,
            agent_write_timeout: args.agent_write_timeout,
            max_client_lost_lines: args.max_client_lost_lines,
            ping_interval: args.ping_interval,
            idle_timeout: args.idle_timeout,
            header_read_timeout: args.header_read_timeout,
            body_read_timeout: args.body_read_timeout,
            tls_handshake_timeout: args.tls_handshake_timeout,
            max_connections: args.max_connections,
            org_bandwidth_budget: args.org_bandwidth_budget,
            ..Tuning::default()
        },
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        logfleet_host::serve(config, listener, shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// `--cors-origin`, checked and normalised.
fn parse_cors_origin(value: &str) -> Result<String, String> {
    logfleet_host::cors::parse_origin(value).map_err(|e| e.to_string())
}
