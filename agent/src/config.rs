//! What the agent runs with: [`Config`], its tuning knobs, the TOML config file, and how
//! command-line flags and the file merge.
//!
//! Settings come in layers ([`Settings`]): the `--config` file, then flags (and their env
//! variables) on top. [`Settings::into_config`] checks the result and fills in defaults.
//!
//! The cache directory ([`resolve_cache_dir`]) holds compiled filter components and plugins
//! fetched from the host, so restarts and new sessions neither recompile nor refetch.

use logfleet_protocol::labels::Labels;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use logfleet_protocol::agent_limits;
use logfleet_protocol::parse::{BadTimezone, Format, Timezone};

use crate::multiline::Multiline;
use serde::Deserialize;

/// How often metrics are reported when neither the file nor the flags say.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(60);
/// Longest accepted source name, matching what session filters accept.
pub const MAX_SOURCE_NAME_BYTES: usize = logfleet_protocol::filters::MAX_SOURCE_BYTES;
/// Path of the agent endpoint under the host's base URL.
pub const CONNECT_PATH: &str = "/api/v1/agent/connect";
/// The agent's directory under the user's cache home (`$XDG_CACHE_HOME`, `~/.cache`).
pub const CACHE_DIR_NAME: &str = "logfleet";

/// Everything [`crate::run`] needs.
#[derive(Clone)]
pub struct Config {
    /// Base URL of the host: `http(s)://` or `ws(s)://`.
    pub host: String,
    /// The agent's JWT, sent as `Authorization: Bearer`.
    pub token: String,
    /// Display name reported in `Hello`.
    pub name: String,
    /// Labels reported in `Hello` (`--label`, `[labels]`): what fleet sessions select on.
    pub labels: Labels,
    pub sources: Vec<SourceConfig>,
    pub metrics_interval: Duration,
    pub tuning: Tuning,
    /// PEM file of the CA certificates to trust for `https://`/`wss://` hosts instead of the
    /// public web PKI roots (a host with a private CA). See [`crate::tls`].
    pub ca_cert: Option<PathBuf>,
}

impl Config {
    /// A config with default metrics interval and tuning, for embedding and tests.
    pub fn new(
        host: impl Into<String>,
        token: impl Into<String>,
        name: impl Into<String>,
        sources: Vec<SourceConfig>,
    ) -> Config {
        Config {
            host: host.into(),
            token: token.into(),
            name: name.into(),
            labels: Labels::new(),
            sources,
            metrics_interval: DEFAULT_METRICS_INTERVAL,
            tuning: Tuning::default(),
            ca_cert: None,
        }
    }
}

// The token is a credential: keep it out of logs and panic messages.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("sources", &self.sources)
            .field("metrics_interval", &self.metrics_interval)
            .field("tuning", &self.tuning)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

/// One named source: a file path or a glob of files, tailed together under one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub name: String,
    /// A path or a glob (`/var/log/nginx/*.log`).
    pub path: String,
    /// How its lines are parsed (TOML `format`; `auto` by default).
    pub format: Format,
    /// The zone of times its lines write without one (TOML `timezone`; UTC by default).
    pub timezone: Timezone,
    /// How its lines group into records (TOML `multiline`: `"none"`, `"auto"` or
    /// `{start = "REGEX"}`; `none` for `format = "plain"`, else `auto`).
    pub multiline: Multiline,
}

impl SourceConfig {
    /// A source parsed with `auto` in UTC.
    pub fn new(name: impl Into<String>, path: impl Into<String>) -> SourceConfig {
        SourceConfig {
            name: name.into(),
            path: path.into(),
            format: Format::Auto,
            timezone: Timezone::UTC,
            multiline: Multiline::Auto,
        }
    }
}

/// `NAME=PATH`, as `--source` takes it.
impl FromStr for SourceConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((name, path)) if !name.trim().is_empty() && !path.trim().is_empty() => {
                Ok(SourceConfig::new(name.trim(), path.trim()))
            }
            _ => Err(ConfigError::BadSourceArg(s.to_owned())),
        }
    }
}

/// Intervals, bounds and paths that operators rarely touch but tests need to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// How often each tailed file is checked for new data, rotation and truncation when
    /// inotify events are not available (with events the tailer wakes on each write and polls
    /// only as a safety net, at least every [`crate::tail::EVENT_POLL_INTERVAL`]).
    pub poll_interval: Duration,
    /// How often source globs are expanded to find new files.
    pub glob_interval: Duration,
    /// Shortest wait before reconnecting to the host.
    pub reconnect_min: Duration,
    /// Longest wait before reconnecting (also used after the host rejects the token).
    pub reconnect_max: Duration,
    /// Shortest wait after the host closed the link because another copy of this agent (same
    /// token identity) connected (close 4009): long, so two copies do not take the link from
    /// each other in a loop.
    pub superseded_backoff: Duration,
    /// Longest a session's matching lines are held before being sent as one batch; they go at
    /// once when no more lines are waiting, so this only bounds batching under load.
    pub batch_interval: Duration,
    /// Bound on the uplink buffer (encoded frames waiting to be sent or acknowledged by the
    /// host), in bytes.
    pub buffer_bytes: usize,
    /// How long a rotated-away (or deleted) file is still followed after it stopped growing,
    /// for writers that reopen late (TOML `rotate_wait`, flag `--rotate-wait`). See
    /// [`crate::tail`].
    pub rotate_wait: Duration,
    /// The agent pings the host after twice this long without hearing from it (the host pings
    /// every 15 s itself, so normally the agent never does).
    pub ping_interval: Duration,
    /// Silence from the host after which the link is dead and the agent reconnects (its
    /// unacknowledged frames go again on the new link). Keep it above twice `ping_interval`
    /// plus a round trip, and above the host's own ping interval.
    pub read_timeout: Duration,
    /// Where compiled filters and fetched plugins are cached (`--cache-dir`, `cache_dir`,
    /// `LOGFLEET_CACHE_DIR`). `None`: the default location, see [`resolve_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Where what survives a restart is kept: tail checkpoints, reserved `seq`s, running
    /// sessions (`--state-dir`, `state_dir`, `LOGFLEET_STATE_DIR`). `None`: `state` under the
    /// cache directory, or no state at all when there is no usable cache directory (see
    /// [`crate::state`]).
    pub state_dir: Option<PathBuf>,
    /// Where the outbox is also kept on disk, so unacknowledged lines survive a restart
    /// (`--buffer-dir`, `buffer_dir`, `LOGFLEET_BUFFER_DIR`). `None`: memory only (see
    /// [`crate::outbox`]).
    pub buffer_dir: Option<PathBuf>,
    /// Most backlog read per file when a restart resumes from checkpoints; older lines
    /// beyond it are skipped and reported as dropped (see [`crate::pipeline`]).
    pub backlog_cap_bytes: u64,
    /// Most bytes a session's backfill reads backwards per source (see [`crate::backfill`]).
    pub backfill_scan_bytes: u64,
    /// The fast tier: a session whose plugin has no optimised code on this machine starts
    /// at once on code from wasmtime's baseline compiler (Winch), and switches to the
    /// optimised (Cranelift) code, compiled in the background on one low-priority thread,
    /// between two batches. Both are compiled here from the plugin's WebAssembly; nothing
    /// native comes from the host. On by default (TOML `fast_tier = false` turns it off:
    /// sessions then wait for the optimised compile, ≈ 1 s per MB of plugin).
    pub fast_tier: bool,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            poll_interval: Duration::from_millis(25),
            glob_interval: Duration::from_secs(1),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            superseded_backoff: Duration::from_secs(60),
            batch_interval: Duration::from_millis(20),
            buffer_bytes: 16 * 1024 * 1024,
            rotate_wait: crate::tail::DEFAULT_ROTATE_WAIT,
            ping_interval: Duration::from_secs(15),
            read_timeout: Duration::from_secs(45),
            cache_dir: None,
            state_dir: None,
            buffer_dir: None,
            backlog_cap_bytes: crate::tail::checkpoint::DEFAULT_BACKLOG_CAP_BYTES,
            backfill_scan_bytes: crate::backfill::DEFAULT_BACKFILL_SCAN_BYTES,
            fast_tier: true,
        }
    }
}

/// One layer of settings (the config file, or the command line), before defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub host: Option<String>,
    pub token: Option<String>,
    pub name: Option<String>,
    /// Merged by key: a label of the command line replaces the file's of the same key.
    pub labels: Labels,
    pub metrics_interval: Option<Duration>,
    pub sources: Vec<SourceConfig>,
    pub cache_dir: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    /// [`Tuning::rotate_wait`].
    pub rotate_wait: Option<Duration>,
    /// [`Tuning::state_dir`].
    pub state_dir: Option<PathBuf>,
    /// [`Tuning::buffer_dir`].
    pub buffer_dir: Option<PathBuf>,
    /// [`Tuning::fast_tier`].
    pub fast_tier: Option<bool>,
}

/// The TOML file as written; unknown keys are refused so typos are not silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    host: Option<String>,
    token: Option<String>,
    name: Option<String>,
    metrics_interval: Option<String>,
    cache_dir: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    rotate_wait: Option<String>,
    state_dir: Option<PathBuf>,
    buffer_dir: Option<PathBuf>,
    /// The `[labels]` table: `env = "prod"`.
    #[serde(default)]
    labels: Labels,
    fast_tier: Option<bool>,
    #[serde(default)]
    source: Vec<FileSource>,
}

/// A `[[source]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSource {
    name: String,
    path: String,
    #[serde(default)]
    format: Format,
    timezone: Option<String>,
    multiline: Option<FileMultiline>,
}

/// `multiline` as the TOML file writes it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileMultiline {
    Mode(String),
    Start { start: String },
}

impl Settings {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Settings::from_toml(&text).map_err(|e| match e {
            ConfigError::Toml { message, .. } => ConfigError::Toml {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML config text.
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: String::new(),
            message: e.to_string(),
        })?;
        let metrics_interval = file
            .metrics_interval
            .map(|v| parse_duration("metrics_interval", &v))
            .transpose()?;
        let sources = file
            .source
            .into_iter()
            .map(|s| {
                let timezone = match s.timezone {
                    Some(tz) => tz.parse().map_err(|e: BadTimezone| ConfigError::Toml {
                        path: String::new(),
                        message: format!("source '{}': {e}", s.name),
                    })?,
                    None => Timezone::UTC,
                };
                let bad = |reason: String| ConfigError::Toml {
                    path: String::new(),
                    message: format!("source '{}': invalid multiline: {reason}", s.name),
                };
                let multiline = match s.multiline {
                    None if s.format == Format::Plain => Multiline::None,
                    None => Multiline::Auto,
                    Some(FileMultiline::Mode(m)) if m == "none" => Multiline::None,
                    Some(FileMultiline::Mode(m)) if m == "auto" => Multiline::Auto,
                    Some(FileMultiline::Mode(m)) => {
                        return Err(bad(format!(
                            "'{m}'; use \"none\", \"auto\" or {{ start = \"REGEX\" }}"
                        )));
                    }
                    Some(FileMultiline::Start { start }) => Multiline::Start(
                        regex::RegexBuilder::new(&start)
                            .size_limit(logfleet_protocol::filters::MAX_PATTERN_COMPILED_BYTES)
                            .build()
                            .map_err(|e| bad(e.to_string()))?,
                    ),
                };
                Ok(SourceConfig {
                    format: s.format,
                    timezone,
                    multiline,
                    ..SourceConfig::new(s.name, s.path)
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        let rotate_wait = file
            .rotate_wait
            .map(|v| parse_duration("rotate_wait", &v))
            .transpose()?;
        Ok(Settings {
            rotate_wait,
            host: file.host,
            token: file.token,
            name: file.name,
            labels: file.labels,
            metrics_interval,
            cache_dir: file.cache_dir,
            ca_cert: file.ca_cert,
            state_dir: file.state_dir,
            buffer_dir: file.buffer_dir,
            fast_tier: file.fast_tier,
            sources,
        })
    }

    /// `self` with every value that `top` sets replaced by `top`'s. Sources merge by name: a
    /// source in `top` replaces the one of the same name, others are added.
    pub fn overridden_by(mut self, top: Settings) -> Settings {
        for source in top.sources {
            match self.sources.iter_mut().find(|s| s.name == source.name) {
                Some(existing) => *existing = source,
                None => self.sources.push(source),
            }
        }
        Settings {
            host: top.host.or(self.host),
            token: top.token.or(self.token),
            name: top.name.or(self.name),
            labels: {
                let mut labels = self.labels;
                labels.extend(top.labels);
                labels
            },
            metrics_interval: top.metrics_interval.or(self.metrics_interval),
            sources: self.sources,
            cache_dir: top.cache_dir.or(self.cache_dir),
            ca_cert: top.ca_cert.or(self.ca_cert),
            rotate_wait: top.rotate_wait.or(self.rotate_wait),
            state_dir: top.state_dir.or(self.state_dir),
            buffer_dir: top.buffer_dir.or(self.buffer_dir),
            fast_tier: top.fast_tier.or(self.fast_tier),
        }
    }

    /// Checks the merged settings and fills defaults (name: the machine's hostname). A
    /// `cache_dir` setting overrides `tuning.cache_dir`.
    pub fn into_config(self, mut tuning: Tuning) -> Result<Config, ConfigError> {
        if let Some(dir) = self.cache_dir {
            tuning.cache_dir = Some(dir);
        }
        if let Some(wait) = self.rotate_wait {
            tuning.rotate_wait = wait;
        }
        if let Some(dir) = self.state_dir {
            tuning.state_dir = Some(dir);
        }
        if let Some(dir) = self.buffer_dir {
            tuning.buffer_dir = Some(dir);
        }
        if let Some(fast_tier) = self.fast_tier {
            tuning.fast_tier = fast_tier;
        }
        let host = self
            .host
            .filter(|h| !h.trim().is_empty())
            .ok_or(ConfigError::MissingHost)?;
        connect_url(&host)?;
        let token = self
            .token
            .filter(|t| !t.trim().is_empty())
            .ok_or(ConfigError::MissingToken)?;
        if self.sources.is_empty() {
            return Err(ConfigError::NoSources);
        }
        validate_sources(&self.sources)?;
        let metrics_interval = self.metrics_interval.unwrap_or(DEFAULT_METRICS_INTERVAL);
        if metrics_interval.is_zero() {
            return Err(ConfigError::BadDuration {
                key: "metrics_interval",
                value: "0".into(),
                reason: "must be greater than zero".into(),
            });
        }
        let name = self.name.unwrap_or_else(default_name);
        if name.len() > agent_limits::MAX_NAME_BYTES {
            return Err(ConfigError::BadName(name.len()));
        }
        logfleet_protocol::labels::check_labels(&self.labels)
            .map_err(|e| ConfigError::BadLabels(e.0))?;
        Ok(Config {
            host,
            token,
            name,
            labels: self.labels,
            sources: self.sources,
            metrics_interval,
            tuning,
            ca_cert: self.ca_cert,
        })
    }
}

/// The machine's hostname, the default agent name.
pub fn default_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Checks sources against what a host accepts in `Hello` (at most
/// [`agent_limits::MAX_SOURCES`], paths within [`agent_limits::MAX_PATH_BYTES`]), so a config
/// the host would refuse on every connect is refused at start instead; and names (non-empty,
/// unique, short) and paths (valid globs).
pub fn validate_sources(sources: &[SourceConfig]) -> Result<(), ConfigError> {
    if sources.len() > agent_limits::MAX_SOURCES {
        return Err(ConfigError::TooManySources(sources.len()));
    }
    for (i, source) in sources.iter().enumerate() {
        if source.path.len() > agent_limits::MAX_PATH_BYTES {
            return Err(ConfigError::BadSourcePath {
                path: agent_limits::clip(&source.path, 64),
                reason: format!(
                    "longer than {} bytes ({} bytes)",
                    agent_limits::MAX_PATH_BYTES,
                    source.path.len()
                ),
            });
        }
        if source.name.is_empty() || source.name.len() > MAX_SOURCE_NAME_BYTES {
            return Err(ConfigError::BadSourceName(source.name.clone()));
        }
        if sources[..i].iter().any(|s| s.name == source.name) {
            return Err(ConfigError::DuplicateSource(source.name.clone()));
        }
        glob::Pattern::new(&source.path).map_err(|e| ConfigError::BadSourcePath {
            path: source.path.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// Parses a humantime duration (`60s`, `250ms`) for config key `key`.
pub fn parse_duration(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| ConfigError::BadDuration {
        key,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// The default cache directories, in order of preference: `$XDG_CACHE_HOME/logfleet`, then
/// `$HOME/.cache/logfleet` (relative values are ignored, as the XDG spec says).
pub fn default_cache_dirs() -> Vec<PathBuf> {
    cache_dirs_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

fn cache_dirs_from(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Vec<PathBuf> {
    let xdg = xdg_cache_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map(|p| p.join(CACHE_DIR_NAME));
    let home = home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map(|p| p.join(".cache").join(CACHE_DIR_NAME));
    xdg.into_iter().chain(home).collect()
}

/// The cache directory to use, created (private to the user) and checked writable. An
/// explicitly configured directory must work (a clear startup error otherwise). The default
/// locations are tried in turn; if none is writable the agent runs without a disk cache
/// (logged): it then recompiles filters and refetches plugins after every restart.
/// Blocking: call it off the executor.
pub fn resolve_cache_dir(configured: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(dir) = configured {
        prepare_cache_dir(dir).map_err(|error| ConfigError::CacheDir {
            path: dir.display().to_string(),
            error,
        })?;
        return Ok(Some(dir.to_owned()));
    }
    let candidates = default_cache_dirs();
    for dir in &candidates {
        match prepare_cache_dir(dir) {
            Ok(()) => return Ok(Some(dir.clone())),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cache directory not usable");
            }
        }
    }
    tracing::warn!(
        tried = ?candidates,
        "no writable cache directory (set --cache-dir or LOGFLEET_CACHE_DIR); filters will be \
         compiled and plugins fetched again after every restart"
    );
    Ok(None)
}

/// Creates `dir` (owner-only on Unix: compiled artifacts there are loaded as native code)
/// and proves it writable with a probe file.
fn prepare_cache_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    // Unique per call, not just per process: agents embedded in one process (tests, say) must
    // not remove each other's probe.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".write-probe-{}-{n}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// The WebSocket URL of the agent endpoint for a host base URL: `http` maps to `ws`, `https`
/// to `wss`; a path prefix (a reverse proxy's) is kept.
pub fn connect_url(host: &str) -> Result<String, ConfigError> {
    let bad = |reason: &str| ConfigError::BadHost {
        host: host.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = host
        .trim()
        .split_once("://")
        .ok_or_else(|| bad("expected a URL starting with http://, https://, ws:// or wss://"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(bad("the scheme must be http, https, ws or wss")),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("the URL has no host name"));
    }
    if rest.contains(['?', '#']) {
        return Err(bad("a base URL cannot carry a query or fragment"));
    }
    let url = format!("{scheme}://{rest}{CONNECT_PATH}");
    url.parse::<tokio_tungstenite::tungstenite::http::Uri>()
        .map_err(|e| bad(&e.to_string()))?;
    Ok(url)
}

/// Why settings could not become a [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Toml { path: String, message: String },
    #[error("invalid {key} '{value}': {reason}")]
    BadDuration {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "no host: pass --host URL, set LOGFLEET_HOST, or put host = \"...\" in the config file"
    )]
    MissingHost,
    #[error(
        "no token: pass --token, set LOGFLEET_AGENT_TOKEN, or put token = \"...\" in the config file"
    )]
    MissingToken,
    #[error(
        "no sources: pass --source NAME=PATH (repeatable) or add [[source]] tables to the config file"
    )]
    NoSources,
    #[error("invalid --source '{0}': expected NAME=PATH")]
    BadSourceArg(String),
    #[error("invalid source name '{0}': must be 1..={MAX_SOURCE_NAME_BYTES} bytes")]
    BadSourceName(String),
    #[error(
        "{0} sources configured; a host accepts at most {max} per agent: run another agent for the rest",
        max = agent_limits::MAX_SOURCES
    )]
    TooManySources(usize),
    #[error(
        "the agent name is {0} bytes; a host accepts at most {max}",
        max = agent_limits::MAX_NAME_BYTES
    )]
    BadName(usize),
    #[error("invalid labels: {0}")]
    BadLabels(String),
    #[error("source '{0}' is configured twice")]
    DuplicateSource(String),
    #[error("invalid source path '{path}': {reason}")]
    BadSourcePath { path: String, reason: String },
    #[error("invalid host URL '{host}': {reason}")]
    BadHost { host: String, reason: String },
    #[error("cannot use cache directory {path}: {error}")]
    CacheDir { path: String, error: std::io::Error },
    #[error("cannot use state directory {path}: {error}")]
    StateDir { path: String, error: std::io::Error },
    #[error("cannot use buffer directory {path}: {error}")]
    BufferDir { path: String, error: std::io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_parses_with_defaults() {
        let s = Settings::from_toml(
            r#"
            host = "https://api.example.com"
            token = "t"
            metrics_interval = "30s"
            rotate_wait = "2s"

            [[source]]
            name = "nginx"
            path = "/var/log/nginx/*.log"

            [[source]]
            name = "app"
            path = "/var/log/app.log"
            format = "auto"
            "#,
        )
        .unwrap();
        assert_eq!(s.host.as_deref(), Some("https://api.example.com"));
        assert_eq!(s.metrics_interval, Some(Duration::from_secs(30)));
        assert_eq!(s.rotate_wait, Some(Duration::from_secs(2)));
        assert_eq!(s.sources.len(), 2);
        let c = s.into_config(Tuning::default()).unwrap();
        assert!(!c.name.is_empty(), "name defaults to the hostname");
        assert_eq!(
            c.sources[0],
            SourceConfig::new("nginx", "/var/log/nginx/*.log")
        );
    }

    /// Labels come from `[labels]` and the command line, a flag replacing the file's label of
    /// the same key; labels over the bounds stop the agent at start, naming the problem.
    #[test]
    fn labels_merge_by_key_and_are_checked() {
        let base = "host = \"http://h\"\ntoken = \"t\"\n[[source]]\nname = \"a\"\npath = \"/x\"\n";
        let file =
            Settings::from_toml(&format!("{base}[labels]\nenv = \"dev\"\nrole = \"edge\"\n"))
                .unwrap();
        let flags = Settings {
            labels: Labels::from([("env".to_owned(), "prod".to_owned())]),
            ..Settings::default()
        };
        let c = file
            .overridden_by(flags)
            .into_config(Tuning::default())
            .unwrap();
        assert_eq!(
            c.labels,
            Labels::from([
                ("env".to_owned(), "prod".to_owned()),
                ("role".to_owned(), "edge".to_owned())
            ])
        );
        let bad = Settings::from_toml(&format!("{base}[labels]\n\"bad key\" = \"v\"\n")).unwrap();
        let err = bad.into_config(Tuning::default()).unwrap_err();
        assert!(err.to_string().contains("label"), "{err}");
    }

    #[test]
    fn file_errors_are_clear() {
        let err = Settings::from_toml("hots = 1").unwrap_err();
        assert!(err.to_string().contains("hots"), "{err}");
        let err = Settings::from_toml("metrics_interval = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("metrics_interval"), "{err}");
        let err = Settings::from_toml("[[source]]\nname = \"a\"\npath = \"/x\"\nformat = \"csv\"")
            .unwrap_err();
        assert!(err.to_string().contains("csv"), "{err}");
        let err = Settings::from_file(Path::new("/nonexistent/agent.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/agent.toml"), "{err}");
    }

    #[test]
    fn flags_override_file() {
        let file = Settings {
            host: Some("http://file".into()),
            token: Some("file-token".into()),
            name: Some("file-name".into()),
            labels: Labels::new(),
            metrics_interval: Some(Duration::from_secs(10)),
            sources: vec![SourceConfig::new("a", "/a"), SourceConfig::new("b", "/b")],
            cache_dir: Some("/file/cache".into()),
            ca_cert: Some("/file/ca.pem".into()),
            rotate_wait: Some(Duration::from_secs(3)),
            state_dir: Some("/file/state".into()),
            buffer_dir: Some("/file/buffer".into()),
            fast_tier: Some(false),
        };
        let flags = Settings {
            host: Some("http://flag".into()),
            token: None,
            name: None,
            labels: Labels::new(),
            metrics_interval: None,
            sources: vec![SourceConfig::new("b", "/b2"), SourceConfig::new("c", "/c")],
            cache_dir: Some("/flag/cache".into()),
            ca_cert: None,
            rotate_wait: None,
            state_dir: None,
            buffer_dir: Some("/flag/buffer".into()),
            fast_tier: None,
        };
        let c = file
            .overridden_by(flags)
            .into_config(Tuning::default())
            .unwrap();
        assert_eq!(c.host, "http://flag");
        assert_eq!(c.token, "file-token");
        assert_eq!(c.name, "file-name");
        assert_eq!(c.metrics_interval, Duration::from_secs(10));
        assert_eq!(c.tuning.cache_dir, Some(PathBuf::from("/flag/cache")));
        assert_eq!(c.ca_cert, Some(PathBuf::from("/file/ca.pem")));
        assert_eq!(c.tuning.rotate_wait, Duration::from_secs(3));
        assert_eq!(c.tuning.state_dir, Some(PathBuf::from("/file/state")));
        assert_eq!(c.tuning.buffer_dir, Some(PathBuf::from("/flag/buffer")));
        assert!(!c.tuning.fast_tier);
        assert_eq!(
            c.sources,
            vec![
                SourceConfig::new("a", "/a"),
                SourceConfig::new("b", "/b2"),
                SourceConfig::new("c", "/c")
            ]
        );
    }

    #[test]
    fn missing_values_are_refused() {
        let ok = Settings {
            host: Some("http://h".into()),
            token: Some("t".into()),
            sources: vec![SourceConfig::new("a", "/a")],
            ..Settings::default()
        };
        let without = |f: fn(&mut Settings)| {
            let mut s = ok.clone();
            f(&mut s);
            s.into_config(Tuning::default()).unwrap_err()
        };
        assert!(matches!(
            without(|s| s.host = None),
            ConfigError::MissingHost
        ));
        assert!(matches!(
            without(|s| s.token = Some(" ".into())),
            ConfigError::MissingToken
        ));
        assert!(matches!(
            without(|s| s.sources.clear()),
            ConfigError::NoSources
        ));
        assert!(matches!(
            without(|s| s.sources.push(SourceConfig::new("a", "/b"))),
            ConfigError::DuplicateSource(_)
        ));
        assert!(matches!(
            without(|s| s.host = Some("ftp://h".into())),
            ConfigError::BadHost { .. }
        ));
        assert!(matches!(
            without(|s| s.sources[0].path = "/a/[".into()),
            ConfigError::BadSourcePath { .. }
        ));
        // What a host would refuse in every hello is refused at start.
        assert!(matches!(
            without(|s| s.name = Some("n".repeat(257))),
            ConfigError::BadName(257)
        ));
        assert!(matches!(
            without(|s| s.sources[0].path = format!("/{}", "a".repeat(4096))),
            ConfigError::BadSourcePath { .. }
        ));
        assert!(matches!(
            without(|s| s.sources = (0..=128)
                .map(|i| SourceConfig::new(format!("s{i}"), "/a"))
                .collect()),
            ConfigError::TooManySources(129)
        ));
        assert!(ok.into_config(Tuning::default()).is_ok());
    }

    #[test]
    fn source_args() {
        assert_eq!(
            "nginx=/var/log/nginx/*.log"
                .parse::<SourceConfig>()
                .unwrap(),
            SourceConfig::new("nginx", "/var/log/nginx/*.log")
        );
        assert_eq!(
            "a=/x=y".parse::<SourceConfig>().unwrap(),
            SourceConfig::new("a", "/x=y")
        );
        assert!("nginx".parse::<SourceConfig>().is_err());
        assert!("=/x".parse::<SourceConfig>().is_err());
        assert!("a=".parse::<SourceConfig>().is_err());
    }

    #[test]
    fn connect_urls() {
        let cases = [
            (
                "http://127.0.0.1:8080",
                "ws://127.0.0.1:8080/api/v1/agent/connect",
            ),
            (
                "https://api.logfleet.io/",
                "wss://api.logfleet.io/api/v1/agent/connect",
            ),
            ("ws://h:1", "ws://h:1/api/v1/agent/connect"),
            ("WSS://h/prefix", "wss://h/prefix/api/v1/agent/connect"),
        ];
        for (host, want) in cases {
            assert_eq!(connect_url(host).unwrap(), want);
        }
        for bad in [
            "localhost:8080",
            "ftp://h",
            "http://",
            "http:///x",
            "http://h?x=1",
        ] {
            assert!(connect_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cache_dir_defaults_and_resolution() {
        let dirs = cache_dirs_from(Some("/xdg".into()), Some("/home/u".into()));
        assert_eq!(
            dirs,
            [
                PathBuf::from("/xdg/logfleet"),
                PathBuf::from("/home/u/.cache/logfleet")
            ]
        );
        let dirs = cache_dirs_from(Some("relative".into()), Some("/home/u".into()));
        assert_eq!(dirs, [PathBuf::from("/home/u/.cache/logfleet")]);
        assert!(cache_dirs_from(None, None).is_empty());

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        assert_eq!(resolve_cache_dir(Some(&dir)).unwrap(), Some(dir.clone()));
        assert!(dir.is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "private to the user: {mode:o}");
        }
        // A configured directory that cannot be used is a startup error.
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = resolve_cache_dir(Some(&file.join("x"))).unwrap_err();
        assert!(matches!(err, ConfigError::CacheDir { .. }), "{err}");

        let s = Settings::from_toml("cache_dir = \"/var/cache/logfleet\"").unwrap();
        assert_eq!(s.cache_dir, Some(PathBuf::from("/var/cache/logfleet")));
    }

    #[test]
    fn debug_hides_token() {
        let c = Config::new("http://h", "secret-token", "n", vec![]);
        assert!(!format!("{c:?}").contains("secret-token"));
    }
}
