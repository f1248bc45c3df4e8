//! HTTP and WebSocket handlers, one module per resource. Handlers stay thin: extract, call the
//! state's handles, render.

pub mod agent_link;
pub mod agents;
pub mod body;
pub mod error_body;
pub mod health;
pub mod plugins;
pub mod query;
pub mod routes;
pub mod stream;
pub mod strict_json;
pub mod ws;
