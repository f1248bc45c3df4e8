//! HTTP and WebSocket handlers, one module per resource. Handlers stay thin: extract, call the
//! state's handles, render.
//!
//! Beside them, what every handler shares: [`routes`] (the route table the router and the
//! OpenAPI test read), [`body`] and [`strict_json`] (request bodies), [`query`] (query
//! strings), [`error_body`] (JSON errors for what no handler sees).

pub mod agent_link;
pub mod agents;
pub mod audit;
pub mod body;
pub mod error_body;
pub mod health;
pub mod plugins;
pub mod query;
pub mod routes;
pub mod stream;
pub mod usage;
pub mod ws;

/// Strict JSON bodies; the decoder is pure, so it lives in the protocol crate (where the
/// `filter_spec` fuzz target reaches it) and is re-exported here for the handlers.
pub use logfleet_protocol::strict_json;
