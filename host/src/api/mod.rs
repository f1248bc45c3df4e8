//! HTTP and WebSocket handlers, one module per resource. Handlers stay thin: extract, call the
//! state's handles, render.

pub mod agent_link;
pub mod agents;
pub mod audit;
pub mod body;
pub mod health;
pub mod plugins;
pub mod stream;
pub mod ws;
