//! LogFleet cloud host.
//!
//! - [`config`]: how the host runs (listen address, secret, limits, timers).
//! - [`server`]: the router and the serve loop with graceful shutdown.
//! - [`accept`]: the accept loop: TLS, header read timeout, connection cap, draining.
//! - [`read_timeout`]: the request body read timeout.
//! - [`tls`]: the certificate and key the host serves TLS with.
//! - [`cors`]: cross-origin access for browser pages on listed origins (`--cors-origin`).
//! - [`state`]: the state handlers share.
//! - [`jwt`]: JWT keys (secrets by `kid`, JWKS), claims, verification and minting.
//! - [`auth`]: the extractors: who is calling, in which role.
//! - [`identity`]: an agent's identity, (org, id).
//! - [`enrollment`]: enrolled and revoked agents, persisted under the data dir.
//! - [`audit`]: the append-only audit trail.
//! - [`error`]: the JSON error type every handler returns.
//! - [`registry`]: connected agents, their metadata, metrics and command queues.
//! - [`delivery`]: how far each agent's numbered frames are handled (resends applied once).
//! - [`session`]: active sessions and their expiry.
//! - [`usage`]: bandwidth received from agents, per session, agent and org.
//! - [`fanout`]: one session's messages to many WebSocket clients: its live queue, its replay
//!   buffer, and the host-wide budgets both count against.
//! - [`plugins`]: the plugin registry, content-addressed on disk.
//! - [`filter_check`]: plugin configs judged (instantiate + `configure`) before a session starts.
//! - [`api`]: the handlers, one module per resource.
//! - [`console`]: the web console at `/`, embedded in the binary.

pub mod accept;
pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod console;
pub mod cors;
pub mod delivery;
pub mod enrollment;
pub mod error;
pub mod fanout;
pub mod filter_check;
pub mod identity;
pub mod jwt;
pub mod plugins;
pub mod read_timeout;
pub mod registry;
pub mod server;
pub mod session;
pub mod state;
pub mod time;
pub mod tls;
pub mod usage;

pub use config::Config;
pub use server::{router, serve};
