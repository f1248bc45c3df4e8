//! Wire types shared by the LogFleet host, agent and CLI. No I/O lives here.
//!
//! - [`level`]: the six log levels and the synonyms that map onto them.
//! - [`filters`]: the `filters` and `limits` objects of a start request, and their validation.
//! - [`rest`]: REST request and response bodies, exactly as the public reference shows them.
//! - [`client`]: messages the host sends to session WebSocket clients.
//! - [`agent`]: frames between agent and host on `/api/v1/agent/connect` (binary, postcard).
//! - [`agent_limits`]: the bounds the host enforces on every frame an agent sends.
//! - [`labels`]: agent labels and the selectors of fleet sessions, with their bounds.
//! - [`strict_json`]: JSON decoding of REST bodies in which a struct only takes an object.
//! - [`line_level`]: which level a raw log line carries (the agent's level detection).
//! - [`parse`]: parsed records: a line's message, event time and fields, per source format.
//! - [`trust`] (feature `tls`): the TLS client configuration trusting a private CA (`--ca-cert`).

pub mod agent;
pub mod agent_limits;
pub mod client;
pub mod filters;
pub mod labels;
pub mod level;
pub mod line_level;
pub mod parse;
pub mod rest;
pub mod strict_json;
#[cfg(feature = "tls")]
pub mod trust;

pub use filters::{FilterError, FilterSpec, Filters, Limits, PluginRef};
pub use level::Level;
