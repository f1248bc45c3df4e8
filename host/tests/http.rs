//! HTTP conformance on a real host: JSON bodies are objects sent as JSON, query strings are
//! decoded and unambiguous, every error is the JSON error body (also for what axum or the
//! size caps refuse before a handler runs), errors do not echo input unbounded, and every
//! route the router serves is the one the OpenAPI document describes.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use logfleet_host::api::routes::routes;
use serde_json::{Value, json};
use testkit::TestHost;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` as raw bytes on a new connection and reads the answer to its end:
/// `(status, content type, body)`.
async fn raw(host: &TestHost, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(host.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(testkit::WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the host answered and closed");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// The error code of a JSON error body; panics if the body is not one.
fn code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"]["code"].as_str().unwrap().to_owned()
}

fn assert_error(got: (u16, Value), status: u16, want: &str) {
    assert_eq!(
        (got.0, got.1["error"]["code"].as_str()),
        (status, Some(want)),
        "{}",
        got.1
    );
}

/// A JSON object's array form is refused with 400, wherever the object is (the whole body,
/// `filters`, `limits`, a plugin entry); the object form goes on to the agent lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_objects_do_not_accept_arrays() {
    let host = TestHost::start().await;
    let api = host.api("acme", "alice");
    let start = "/api/v1/stream/start";
    for body in [
        json!(["edge-1", 60]),
        json!({"agent_id": "edge-1", "filters": [["ERROR"]]}),
        json!({"agent_id": "edge-1", "limits": [5, 6]}),
        json!({"agent_id": "edge-1", "filters": {"plugins": [["redact", {}]]}}),
    ] {
        assert_error(api.post(start, &body).await, 400, "invalid_request");
    }
    assert_error(
        api.post("/api/v1/stream/stop", &json!(["sess_1"])).await,
        400,
        "invalid_request",
    );
    assert_error(
        api.post(
            start,
            &json!({"agent_id": "edge-1", "limits": {"lines_per_second": 5}}),
        )
        .await,
        404,
        "agent_not_found",
    );
}

/// JSON endpoints take `application/json` (with parameters) and answer 415 to anything else
/// or nothing, with the JSON error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_endpoints_check_the_content_type() {
    let host = TestHost::start().await;
    let token = host.user_token("acme", "alice");
    let body = r#"{"agent_id": "edge-1"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let header = content_type
            .map(|t| format!("Content-Type: {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST /api/v1/stream/start HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{header}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (status, ct, answer) = raw(&host, request.as_bytes()).await;
        assert_eq!(
            (status, code(&answer).as_str()),
            (415, "unsupported_media_type"),
            "{content_type:?}"
        );
        assert!(ct.starts_with("application/json"), "{ct}");
    }
    let request = format!(
        "POST /api/v1/stream/start HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, answer) = raw(&host, request.as_bytes()).await;
    assert_eq!((status, code(&answer).as_str()), (404, "agent_not_found"));
}

/// Query strings are percent-decoded, and a key given twice is refused with 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_strings_are_decoded_and_unambiguous() {
    let host = TestHost::start().await;
    let api = host.api("acme", "alice");
    let (status, page) = api.get("/api/v1/agents?limit=%31&offset=%30").await;
    assert_eq!((status, page["total"].as_u64()), (200, Some(0)), "{page}");
    for query in ["limit=1&limit=abc", "limit=1&limit=1", "limit=abc"] {
        assert_error(
            api.get(&format!("/api/v1/agents?{query}")).await,
            400,
            "invalid_request",
        );
    }
    let session_ws = "/api/v1/stream/ws/sess_x?since_seq=1&since_seq=2";
    let (status, _, answer) = raw(
        &host,
        format!(
            "GET {session_ws}&token={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            api.token()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!((status, code(&answer).as_str()), (400, "invalid_request"));
}

/// Every error is the JSON error body: a path parameter that is not UTF-8, a URI or headers
/// over the caps, an unknown endpoint or method, a malformed chunked body (400, not 413);
/// and no error repeats more than a short prefix of the caller's input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_json_error_body() {
    let host = TestHost::start().await;
    let token = host.user_token("acme", "alice");
    let get = |path: String, extra: String| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{extra}Connection: close\r\n\r\n"
        )
    };
    let cases = [
        (
            get("/api/v1/agents/%FF".into(), String::new()),
            400,
            "invalid_request",
        ),
        (
            get(
                format!("/api/v1/agents/{}", "a".repeat(10_000)),
                String::new(),
            ),
            414,
            "uri_too_long",
        ),
        (
            get(
                "/api/v1/agents".into(),
                format!("X-Big: {}\r\n", "b".repeat(40_000)),
            ),
            431,
            "headers_too_large",
        ),
        (get("/nothing-here".into(), String::new()), 404, "not_found"),
        (
            "DELETE /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
            405,
            "method_not_allowed",
        ),
        (
            format!(
                "POST /api/v1/stream/start HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
            ),
            400,
            "invalid_request",
        ),
    ];
    for (request, status, want) in cases {
        let (got, ct, body) = raw(&host, request.as_bytes()).await;
        let line = request.lines().next().unwrap_or_default();
        let line = &line[..line.len().min(80)];
        assert_eq!((got, code(&body).as_str()), (status, want), "{line}");
        assert!(ct.starts_with("application/json"), "{line}: {ct}");
    }
    // A 900 KiB id comes back as a short prefix, not a 900 KiB answer.
    let api = host.api("acme", "alice");
    let id = "i".repeat(900 * 1024);
    let (status, err) = api
        .post("/api/v1/stream/start", &json!({"agent_id": id}))
        .await;
    assert_eq!(status, 404);
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.len() < 300, "{} bytes", message.len());
    let (status, err) = api
        .post("/api/v1/stream/stop", &json!({"session_id": id}))
        .await;
    assert_eq!(status, 404);
    assert!(err["error"]["message"].as_str().unwrap().len() < 300);
}

/// Every route the router serves answers as the OpenAPI document says it exists: with no
/// token, 401 where the document asks for one and 200 where it does not; never the 404 or 405
/// of a route that is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let host = TestHost::start().await;
    let doc: Value = serde_json::from_str(logfleet_host::api::health::OPENAPI).unwrap();
    let http = reqwest::Client::new();
    for route in routes() {
        let op = &doc["paths"][route.path][route.verb.as_str()];
        assert!(
            op.is_object(),
            "{} {} is not documented",
            route.verb.as_str(),
            route.path
        );
        let public = op["security"] == json!([]);
        let path = route
            .path
            .replace("{session_id}", "sess_x")
            .replace("{id}", "edge-1")
            .replace("{name}", "redact");
        let method =
            reqwest::Method::from_bytes(route.verb.as_str().to_uppercase().as_bytes()).unwrap();
        let resp = http
            .request(method, format!("{}{path}", host.base))
            .send()
            .await
            .unwrap();
        let want = if public { 200 } else { 401 };
        assert_eq!(
            resp.status().as_u16(),
            want,
            "{} {path}",
            route.verb.as_str()
        );
    }
}

/// The served OpenAPI document says what the host accepts at its edges: a value the document
/// allows passes the host's checks and one it forbids is refused with 400. Schemathesis
/// (scripts/api-conformance.sh) found the document allowing more than the host takes: query
/// integers past 64 bits, any string as a level name; and, of the same kind, empty or long
/// source names, bad plugin names, invalid regexes and rate limits over this host's maxima.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_states_what_the_host_accepts() {
    let host = TestHost::start_with(|c| {
        // Above the defaults (2,000 lines/s, 2 MiB/s), which requests without limits get.
        c.limits.max.lines_per_second = 5000;
        c.limits.max.bytes_per_second = 3 << 20;
    })
    .await;
    let api = host.api("acme", "alice");
    let (status, doc) = api.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let schemas = &doc["components"]["schemas"];

    // A start request passes every check on its content when it reaches the agent lookup.
    let passes = |filters: Value, limits: Value| {
        let api = &api;
        async move {
            let body = json!({"agent_id": "edge-1", "filters": filters, "limits": limits});
            match api.post("/api/v1/stream/start", &body).await {
                (404, _) => true,
                (400, _) => false,
                (status, body) => panic!("{status} {body}"),
            }
        }
    };

    let limits = &schemas["Limits"]["properties"];
    assert_eq!(limits["lines_per_second"]["maximum"], 5000);
    assert_eq!(limits["bytes_per_second"]["maximum"], 3 << 20);
    for (limits, ok) in [
        (
            json!({"lines_per_second": 5000, "bytes_per_second": 3 << 20}),
            true,
        ),
        (json!({"lines_per_second": 5001}), false),
        (json!({"bytes_per_second": (3 << 20) + 1}), false),
    ] {
        assert_eq!(passes(json!({}), limits.clone()).await, ok, "{limits}");
    }

    let pattern = |schema: &Value| regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
    let level = pattern(&schemas["Filters"]["properties"]["level"]["items"]);
    for name in [
        "ERROR",
        "warning",
        "eRr",
        "Informational",
        "crit",
        "",
        "loud",
        "errors",
        " info",
    ] {
        let ok = passes(json!({"level": [name]}), json!({})).await;
        assert_eq!(ok, level.is_match(name), "level {name:?}");
    }
    let plugin = pattern(&schemas["PluginName"]);
    let long = "a".repeat(64);
    let too_long = "a".repeat(65);
    for name in [
        "redact", "r-2_x", "9x", "", "Redact", "-x", "../x", &long, &too_long,
    ] {
        let ok = passes(json!({"plugins": [{"name": name}]}), json!({})).await;
        assert_eq!(ok, plugin.is_match(name), "plugin {name:?}");
    }
    let source = &schemas["SourceName"];
    let max = source["maxLength"].as_u64().unwrap() as usize;
    assert_eq!(source["minLength"], 1);
    for (name, ok) in [
        ("x".repeat(max), true),
        ("x".repeat(max + 1), false),
        (String::new(), false),
    ] {
        assert_eq!(passes(json!({"source": name}), json!({})).await, ok);
    }
    assert_eq!(
        schemas["Filters"]["properties"]["pattern"]["format"],
        "regex"
    );
    assert!(!passes(json!({"pattern": "(unclosed"}), json!({})).await);

    // Query integers up to the documented maximum (2^64 - 1) are taken, one more is not.
    let query_max = |path: &str, name: &str| {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let param = params.iter().find(|p| p["name"] == name).unwrap();
        param["schema"]["maximum"].as_u64().unwrap()
    };
    assert_eq!(query_max("/api/v1/agents", "limit"), u64::MAX);
    assert_eq!(query_max("/api/v1/agents", "offset"), u64::MAX);
    assert_eq!(
        query_max("/api/v1/stream/ws/{session_id}", "since_seq"),
        u64::MAX
    );
    let over = "18446744073709551616";
    let (status, page) = api
        .get(&format!(
            "/api/v1/agents?limit={}&offset={}",
            u64::MAX,
            u64::MAX
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    for query in [format!("limit={over}"), format!("offset={over}")] {
        assert_error(
            api.get(&format!("/api/v1/agents?{query}")).await,
            400,
            "invalid_request",
        );
    }
    let ws = "/api/v1/stream/ws/sess_x?since_seq=";
    assert_eq!(api.get(&format!("{ws}{}", u64::MAX)).await.0, 404);
    assert_error(
        api.get(&format!("{ws}{over}")).await,
        400,
        "invalid_request",
    );
}
