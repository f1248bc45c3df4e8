//! Every route of the API in one table: the router is built from it, and a test checks it
//! against the OpenAPI document (both ways), so neither can drift from the other.

use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::{agent_link, agents, health, plugins, stream, ws};
use crate::state::AppState;

/// The methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verb {
    Get,
    Post,
    Patch,
    Delete,
}

impl Verb {
    /// As the OpenAPI document writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Patch => MethodFilter::PATCH,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// One method on one path, and its handler.
pub struct Route {
    pub verb: Verb,
    pub path: &'static str,
    pub handler: MethodRouter<AppState>,
}

fn route<H, T>(verb: Verb, path: &'static str, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    Route {
        verb,
        path,
        handler: on(verb.filter(), handler),
    }
}

/// Every route of the host.
pub fn routes() -> Vec<Route> {
    use Verb::*;
    vec![
        route(Get, "/healthz", health::healthz),
        route(Get, "/metrics", health::metrics),
        route(Get, "/api/v1/openapi.json", health::openapi),
        route(Post, "/api/v1/stream/start", stream::start),
        route(Post, "/api/v1/stream/stop", stream::stop),
        route(Get, "/api/v1/stream/sessions", stream::list),
        route(Get, "/api/v1/stream/ws/{session_id}", ws::client_ws),
        route(Get, "/api/v1/agents", agents::list),
        route(Get, "/api/v1/agents/{id}", agents::get),
        route(Get, "/api/v1/agents/{id}/metrics", agents::metrics),
        route(Get, "/api/v1/agent/connect", agent_link::agent_connect),
        route(Post, "/api/v1/plugins", plugins::upload),
        route(Get, "/api/v1/plugins", plugins::list),
        route(Delete, "/api/v1/plugins/{name}", plugins::delete),
    ]
}
