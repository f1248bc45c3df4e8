//! The `logfleet` command-line tool's library: a small async client for the LogFleet host that
//! the binary (`src/main.rs`) is a thin shell around, and that other Rust programs can use.
//!
//! - [`args`]: parsers for argument conventions: `--timeout 5m`, `--level WARN+`, `--color`.
//! - [`client`]: [`Client`], the REST API (agents, sessions, start/stop, plugins).
//! - [`stream`]: [`LogStream`], one session's WebSocket of log and control messages.
//! - [`follow`]: [`follow::run`], streaming a session to a [`follow::Sink`], resuming it with
//!   `since_seq` when the connection breaks, optionally rolling over to the next session before
//!   each one expires, de-duplicated by `seq`, and stopping every session it started.
//! - [`retry`]: jittered backoff, and which failures are worth retrying.
//! - [`stop`]: stopping sessions on the way out, retried, and what could not be stopped.
//! - [`scaffold`]: `plugins new`: a plugin project from the embedded templates.
//! - [`output`]: how logs, agents, sessions and plugins are printed (text, JSON, tables).
//! - [`error`]: [`Error`], and the process exit code each kind of failure maps to.
//! - [`tls`]: trusting a private CA (`--ca-cert`) for `https://` and `wss://`.

pub mod args;
pub mod client;
pub mod error;
pub mod follow;
pub mod output;
pub mod retry;
pub mod scaffold;
pub mod stop;
pub mod stream;
pub mod tls;

pub use client::Client;
pub use error::Error;
pub use stream::LogStream;

/// Host URL used when neither `--url` nor `LOGFLEET_URL` is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
