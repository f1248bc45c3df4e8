//! Every route of the API in one table: the router is built from it, and a test checks it
//! against the OpenAPI document (both ways), so neither can drift from the other.

use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::{agent_link, agents, audit, health, plugins, stream, usage, ws};
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
        route(Get, "/api/v1/stream/sessions/{id}", stream::get),
        route(Patch, "/api/v1/stream/sessions/{id}", stream::patch),
        route(Get, "/api/v1/stream/ws/{session_id}", ws::client_ws),
        route(Get, "/api/v1/agents", agents::list),
        route(Post, "/api/v1/agents", agents::enroll),
        route(Get, "/api/v1/agents/{id}", agents::get),
        route(Delete, "/api/v1/agents/{id}", agents::revoke),
        route(Get, "/api/v1/agents/{id}/metrics", agents::metrics),
        route(Get, "/api/v1/agent/connect", agent_link::agent_connect),
        route(Get, "/api/v1/audit", audit::list),
        route(Get, "/api/v1/usage", usage::get),
        route(Post, "/api/v1/plugins", plugins::upload),
        route(Get, "/api/v1/plugins", plugins::list),
        route(Delete, "/api/v1/plugins/{name}", plugins::delete),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::api::health::OPENAPI;

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    /// The OpenAPI document describes exactly the routes the router serves (same paths, same
    /// methods), and each operation documents the errors it can answer: 401/403 when it needs
    /// a token, 400/413/415 when it takes a JSON body, 400/404 when it has a path parameter,
    /// 400/426 for WebSocket upgrades; every error response is the JSON error body.
    #[test]
    fn openapi_document_matches_the_router() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                METHODS
                    .iter()
                    .filter(|m| ops.get(**m).is_some())
                    .map(|m| (path.clone(), (*m).to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let served: BTreeSet<(String, String)> = routes()
            .iter()
            .map(|r| (r.path.to_owned(), r.verb.as_str().to_owned()))
            .collect();
        assert_eq!(
            served.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "served but not documented"
        );
        assert_eq!(
            documented.difference(&served).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "documented but not served"
        );

        for (path, method) in &documented {
            let op = &doc["paths"][path][method];
            let responses = op["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            let mut needed = Vec::new();
            if op["security"] != serde_json::json!([]) {
                needed.extend(["401", "403"]);
            }
            if op["requestBody"]["content"]
                .get("application/json")
                .is_some()
            {
                needed.extend(["400", "413", "415"]);
            }
            if path.contains('{') {
                needed.extend(["400", "404"]);
            }
            if has("101") {
                needed.extend(["400", "426"]);
            }
            for status in needed {
                assert!(has(status), "{method} {path} does not document {status}");
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["$ref"], "#/components/responses/Error",
                        "{method} {path} {status} is not the error body"
                    );
                }
            }
        }
    }
}
