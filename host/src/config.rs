//! Host configuration: everything `logfleet-host serve` can be told, with the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use logfleet_protocol::agent::RateLimits;

use crate::tls::TlsFiles;

impl Tuning {
    /// How long writing a frame of `bytes` to an agent may take before the agent is dropped.
    pub fn agent_write_deadline(&self, bytes: usize) -> Duration {
        let rate = self.agent_min_write_rate.max(1);
        self.agent_write_timeout + Duration::from_secs_f64(bytes as f64 / rate as f64)
    }
}

/// Shortest accepted JWT secret, in bytes (HS256 wants at least the hash size).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Default [`Tuning::header_read_timeout`]: generous for any real client, short enough that
/// thousands of half-sent headers do not pin memory for minutes.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Tuning::body_read_timeout`] (a gap, not a total: a 16 MiB plugin upload over a slow
/// link is fine as long as it keeps moving).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`Tuning::tls_handshake_timeout`].
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Tuning::max_connections`]: room for the 10,000-agent fleet measured in
/// BENCHMARKS.md plus their users, below a typical `ulimit -n` of 65,536.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

/// How the host runs. Built by the binary from flags, or by tests directly.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Base URL clients reach the host at, for `websocket_url`; else taken from the request.
    pub public_url: Option<String>,
    /// The primary HS256 secret.
    pub jwt_secret: Vec<u8>,
    /// Serve HTTPS and WSS with these files; plain HTTP and WS when `None`.
    pub tls: Option<TlsFiles>,
    /// Browser origins allowed to call the REST API cross-origin ([`crate::cors`]), each as
    /// [`crate::cors::parse_origin`] returns it; empty (the default): CORS off.
    pub cors_origins: Vec<String>,

    /// Rotation secrets by `kid`, identity-provider keys, the audience.
    pub jwt: crate::jwt::JwtConfig,
    pub limits: LimitConfig,
    pub tuning: Tuning,
}

/// Per-session rate limits: what a session gets by default, and the most it may ask for.
#[derive(Debug, Clone, Copy)]
pub struct LimitConfig {
    pub default: RateLimits,
    pub max: RateLimits,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            // About 3 Mbit/s of typical lines: enough to troubleshoot, gentle on an edge link.
            default: RateLimits {
                lines_per_second: 2_000,
                bytes_per_second: 2 * 1024 * 1024,
            },
            max: RateLimits {
                lines_per_second: 50_000,
                bytes_per_second: 32 * 1024 * 1024,
            },
        }
    }
}

/// Queue sizes, bounds and timers. Defaults suit production; tests shorten the timers.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Bursts (agent batches of at most 512 lines, or single control messages) a session
    /// WebSocket client may fall behind, beyond its socket buffers, before it loses some.
    /// Shared by a session's clients: the memory bound is per session, not per client.
    pub client_queue: usize,
    /// Bytes of bursts (messages as sent to clients) a session's live queue holds; whichever of
    /// this and `client_queue` is reached first makes lagging clients lose the oldest.
    pub client_queue_bytes: usize,
    /// Bytes of bursts all sessions' live queues hold together (see
    /// [`crate::fanout::ByteBudget`]: the host holds at most twice this, plus one burst per
    /// session).
    pub queue_budget_bytes: usize,
    /// Log messages per session kept for `?since_seq=` resume.
    pub replay_messages: usize,
    /// Bytes of log messages (as sent to clients) per session kept for `?since_seq=` resume;
    /// whichever of this and `replay_messages` is reached first evicts the oldest.
    pub replay_bytes: usize,
    /// Bytes of log messages kept for resume by all sessions together (see
    /// [`crate::fanout::ByteBudget`]: the host holds at most twice this).
    pub replay_budget_bytes: usize,
    /// WebSocket clients one session serves at once; more are refused with 429
    /// `too_many_clients`.
    pub max_clients_per_session: usize,
    /// How long a write to an agent may take, plus the time its size needs at
    /// `agent_min_write_rate`; an agent that does not read its link is dropped after it.
    pub agent_write_timeout: Duration,
    /// Slowest link speed, in bytes per second, a large frame to an agent (a plugin component)
    /// is given time for, on top of `agent_write_timeout`.
    pub agent_min_write_rate: u64,
    /// Lines a client may lose to lagging before it is closed with 4008 `client_too_slow`.
    pub max_client_lost_lines: u64,
    /// How often the host pings agents and clients.
    pub ping_interval: Duration,
    /// A peer silent for this long is considered gone.
    pub idle_timeout: Duration,
    /// How long a new agent connection may take to say hello.
    pub hello_timeout: Duration,
    /// How long a connection may take to send a request's headers, counted from when the host
    /// starts waiting for them (so an idle keep-alive connection is closed after it too).
    pub header_read_timeout: Duration,
    /// Longest gap between two pieces of a request body; a body that stalls (a `Content-Length`
    /// larger than what is sent) is answered `408 request_timeout` and the connection closed.
    /// Requests without a body (WebSocket upgrades) and upgraded connections are not affected.
    pub body_read_timeout: Duration,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// Open connections (HTTP, WebSocket, agent links, handshakes in progress) at once; one
    /// more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Streaming bytes per hour an org's agents may send before its sessions' clients get
    /// `bandwidth_warning` (at most every [`crate::usage::WARN_EVERY`]); 0 = no budget.
    pub org_bandwidth_budget: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            client_queue: 128,
            client_queue_bytes: 16 * 1024 * 1024,
            queue_budget_bytes: 256 * 1024 * 1024,
            replay_messages: 10_000,
            replay_bytes: 16 * 1024 * 1024,
            replay_budget_bytes: 512 * 1024 * 1024,
            max_clients_per_session: 1024,
            agent_write_timeout: Duration::from_secs(30),
            agent_min_write_rate: 32 * 1024,
            max_client_lost_lines: 100_000,
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            hello_timeout: Duration::from_secs(10),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            org_bandwidth_budget: 0,
        }
    }
}

/// Why a configuration was refused at startup.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no JWT secret: set LOGFLEET_JWT_SECRET (or pass --jwt-secret-file) to a random string of at least {MIN_JWT_SECRET_BYTES} bytes, e.g. `export LOGFLEET_JWT_SECRET=$(openssl rand -hex 32)`"
    )]
    MissingSecret,
    #[error(
        "the JWT secret is {0} bytes; at least {MIN_JWT_SECRET_BYTES} are required, e.g. `export LOGFLEET_JWT_SECRET=$(openssl rand -hex 32)`"
    )]
    ShortSecret(usize),
}

/// Checks a JWT secret is present and long enough.
pub fn check_secret(secret: Option<Vec<u8>>) -> Result<Vec<u8>, ConfigError> {
    let secret = secret.ok_or(ConfigError::MissingSecret)?;
    if secret.len() < MIN_JWT_SECRET_BYTES {
        return Err(ConfigError::ShortSecret(secret.len()));
    }
    Ok(secret)
}
