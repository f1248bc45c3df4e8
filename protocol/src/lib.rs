//! Wire types shared by the LogFleet host, agent and CLI. No I/O lives here.
//!
//! - [`level`]: the six log levels and the synonyms that map onto them.
//! - [`filters`]: the `filters` and `limits` objects of a start request, and their validation.
//! - [`rest`]: REST request and response bodies, exactly as the public reference shows them.
//! - [`client`]: messages the host sends to session WebSocket clients.
//! - [`agent`]: frames between agent and host on `/api/v1/agent/connect` (binary, postcard).
//! - [`agent_limits`]: the bounds the host enforces on every frame an agent sends.

pub mod agent;
pub mod agent_limits;
pub mod client;
pub mod filters;
pub mod level;
pub mod rest;

pub use filters::{FilterError, FilterSpec, Filters, Limits, PluginRef};
pub use level::Level;
