//! The reference flow end to end: a real host on a real socket, a real agent tailing real
//! files, real WebSocket clients.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{Api, Stack as Fixture, WsClient, skip_until};
use uuid::Uuid;

/// Reads `n` log messages and returns their texts, sorted (lines of different files have no
/// defined order between them).
async fn messages(client: &mut WsClient, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let msg = client.expect_log().await;
        out.push(msg["message"].as_str().unwrap().to_owned());
    }
    out.sort();
    out
}

fn is_rfc3339_z(s: &Value) -> bool {
    s.as_str()
        .and_then(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|_| s.ends_with('Z'))
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_flow_with_two_clients() {
    let fx = Fixture::new().await;
    let session = fx
        .start(json!({"filters": {"level": ["ERROR", "WARN"], "source": "nginx"}}))
        .await;
    let id = session["id"].as_str().unwrap();
    assert!(id.starts_with("sess_"), "{session}");
    assert_eq!(session["agent_id"], fx.agent_id.to_string());
    assert_eq!(session["status"], "active");
    assert!(is_rfc3339_z(&session["started_at"]) && is_rfc3339_z(&session["expires_at"]));
    let started =
        chrono::DateTime::parse_from_rfc3339(session["started_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(session["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - started).num_seconds(), 300);
    assert_eq!(
        session["websocket_url"],
        format!("ws://{}/api/v1/stream/ws/{id}", fx.host.addr)
    );

    let mut a = fx.client(&session).await;
    let mut b = fx.client(&session).await;
    let last = fx
        .sync("nginx.log", |n| format!("ERROR probe {n}"), &mut a)
        .await;
    skip_until(&mut b, &last).await;

    fx.logs
        .append(
            "nginx.log",
            &[
                "INFO fine",
                "WARN slow upstream",
                "ERROR upstream timed out (110: Connection timed out)",
            ],
        )
        .await;
    fx.logs.append("api.log", &["ERROR not nginx"]).await;
    for client in [&mut a, &mut b] {
        let warn = client.expect_log().await;
        let error = client.expect_log().await;
        assert_eq!(warn["level"], "WARN");
        // The message is the line without the level token the agent parsed off it.
        assert_eq!(warn["message"], "slow upstream");
        assert_eq!(error["level"], "ERROR");
        assert_eq!(error["source"], "nginx");
        assert_eq!(
            error["message"],
            "upstream timed out (110: Connection timed out)"
        );
        assert_eq!(
            error["metadata"]["file"],
            fx.logs.path("nginx.log").display().to_string()
        );
        assert!(
            error["metadata"]["host"]
                .as_str()
                .is_some_and(|h| !h.is_empty())
        );
        // Two lines were in the file before the agent started; line numbers count them.
        let line = error["metadata"]["line"].as_u64().unwrap();
        assert_eq!(warn["metadata"]["line"].as_u64().unwrap() + 1, line);
        assert!(line > 4);
        // Records are numbered as they go out: the ERROR line waits a moment for a stack
        // trace, so api.log's line, read with it, may come (and be numbered) in between.
        assert!(warn["seq"].as_u64().unwrap() < error["seq"].as_u64().unwrap());
        let ts = error["timestamp"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && ts.len() == "2024-01-15T10:00:00.123Z".len(),
            "{ts}"
        );
        client.expect_silence(Duration::from_millis(300)).await;
    }

    let (status, list) = fx.api.get("/api/v1/stream/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 1);
    assert_eq!(list["sessions"][0]["id"], id);
    assert_eq!(list["sessions"][0]["agent_name"], "edge-1");
    assert_eq!(list["sessions"][0]["status"], "active");
    assert_eq!(list["sessions"][0]["clients"], 2);

    let (status, stopped) = fx
        .api
        .post("/api/v1/stream/stop", &json!({"session_id": id}))
        .await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["session"]["status"], "stopped");
    for client in [&mut a, &mut b] {
        let ended = client.expect_event("session_ended").await;
        assert_eq!(ended["reason"], "stopped");
        let close = client.expect_close().await.expect("close frame");
        assert_eq!(u16::from(close.code), 1000);
    }
    let (_, list) = fx.api.get("/api/v1/stream/sessions").await;
    assert_eq!(list["total"], 0);
    let (status, err) = fx
        .api
        .post("/api/v1/stream/stop", &json!({"session_id": id}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("session_not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_alone_and_combined_in_concurrent_sessions() {
    let fx = Fixture::new().await;
    let by_level = fx.start(json!({"filters": {"level": ["error"]}})).await;
    let by_source = fx.start(json!({"filters": {"source": ["nginx"]}})).await;
    let by_pattern = fx
        .start(json!({"filters": {"pattern": "user_id=123\\d"}}))
        .await;
    let combined = fx
        .start(
            json!({"filters": {"level": ["ERROR"], "source": "api-gateway", "pattern": "timeout"}}),
        )
        .await;
    let mut level = fx.client(&by_level).await;
    let mut source = fx.client(&by_source).await;
    let mut pattern = fx.client(&by_pattern).await;
    let mut both = fx.client(&combined).await;

    // Sessions start on the agent in order, so once the last one is active all are.
    let last = fx
        .sync(
            "api.log",
            |n| format!("ERROR timeout user_id=1234 probe {n}"),
            &mut both,
        )
        .await;
    skip_until(&mut level, &last).await;
    skip_until(&mut pattern, &last).await;
    let nginx_probe = fx
        .sync("nginx.log", |n| format!("DEBUG probe {n}"), &mut source)
        .await;
    assert!(nginx_probe.starts_with("DEBUG"));

    fx.logs
        .append(
            "nginx.log",
            &["INFO GET / user_id=1234", "ERROR upstream failed"],
        )
        .await;
    fx.logs
        .append(
            "api.log",
            &[
                "ERROR request timeout",
                "WARN timeout retry",
                "INFO user_id=9999",
            ],
        )
        .await;

    assert_eq!(
        messages(&mut level, 2).await,
        ["request timeout", "upstream failed"]
    );
    assert_eq!(
        messages(&mut source, 2).await,
        ["GET / user_id=1234", "upstream failed"]
    );
    assert_eq!(messages(&mut pattern, 1).await, ["GET / user_id=1234"]);
    assert_eq!(messages(&mut both, 1).await, ["request timeout"]);
    for client in [&mut level, &mut source, &mut pattern, &mut both] {
        client.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_session_warns_at_once_then_expires() {
    let fx = Fixture::new().await;
    let session = fx.start(json!({"timeout_seconds": 2})).await;
    let mut client = fx.client(&session).await;
    let ending = client.expect_event("session_ending").await;
    assert_eq!(ending["reason"], "timeout");
    let remaining = ending["seconds_remaining"].as_u64().unwrap();
    assert!((1..=2).contains(&remaining), "{ending}");
    let ended = client.expect_event("session_ended").await;
    assert_eq!(ended["reason"], "timeout");
    assert_eq!(u16::from(client.expect_close().await.unwrap().code), 1000);
    let (_, list) = fx.api.get("/api/v1/stream/sessions").await;
    assert_eq!(list["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_rules_and_tenant_isolation() {
    let fx = Fixture::new().await;
    let session = fx.start(json!({})).await;
    let id = session["id"].as_str().unwrap();
    let anon = Api::new(&fx.host.base, None);

    let (status, err) = anon.get("/api/v1/stream/sessions").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );

    let forged = logfleet_host::auth::Auth::new(b"another-secret-another-secret-123456")
        .mint(
            "alice",
            "acme",
            logfleet_host::auth::Role::Admin,
            None,
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(
        anon.with_token(Some(forged)).get("/api/v1/agents").await.0,
        401
    );
    let expired = jsonwebtoken_hs256(&json!({"sub":"alice","org":"acme","role":"user","exp":1}));
    assert_eq!(
        anon.with_token(Some(expired)).get("/api/v1/agents").await.0,
        401
    );
    // {"alg":"none"} with admin claims and no signature.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwib3JnIjoiYWNtZSIsInJvbGUiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OX0.";
    assert_eq!(
        anon.with_token(Some(none.to_owned()))
            .get("/api/v1/agents")
            .await
            .0,
        401
    );
    // REST does not take ?token=.
    let query = format!("/api/v1/agents?token={}", fx.api.token());
    assert_eq!(anon.get(&query).await.0, 401);

    let agent_token = fx.host.agent_token("acme", Uuid::new_v4(), "x");
    let (status, err) = anon
        .with_token(Some(agent_token))
        .get("/api/v1/stream/sessions")
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let user_as_agent = format!(
        "ws://{}/api/v1/agent/connect?token={}",
        fx.host.addr,
        fx.api.token()
    );
    assert_eq!(WsClient::refused_status(&user_as_agent).await, 403);

    let other = fx.host.api("globex", "mallory");
    let (status, err) = other.get(&format!("/api/v1/agents/{}", fx.agent_id)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("agent_not_found"))
    );
    let (status, _) = other
        .post("/api/v1/stream/start", &json!({"agent_id": fx.agent_id}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = other
        .post("/api/v1/stream/stop", &json!({"session_id": id}))
        .await;
    assert_eq!(status, 404);
    let (_, list) = other.get("/api/v1/stream/sessions").await;
    assert_eq!(list["total"], 0);
    let (_, agents) = other.get("/api/v1/agents").await;
    assert_eq!(agents["total"], 0);
    let ws = format!(
        "{}?token={}",
        session["websocket_url"].as_str().unwrap(),
        other.token()
    );
    assert_eq!(WsClient::refused_status(&ws).await, 404);
    let ws = session["websocket_url"].as_str().unwrap().to_owned();
    assert_eq!(WsClient::refused_status(&ws).await, 401);
}

/// Signs claims with the test secret directly, as any third-party JWT library would.
fn jsonwebtoken_hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(testkit::SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_json_errors() {
    let fx = Fixture::new().await;
    let start = "/api/v1/stream/start";
    let agent = fx.agent_id.to_string();
    let cases = [
        (
            json!({"agent_id": agent, "bogus": true}),
            400,
            "invalid_request",
        ),
        (
            json!({"agent_id": agent, "timeout_seconds": 0}),
            400,
            "invalid_timeout",
        ),
        (
            json!({"agent_id": agent, "timeout_seconds": 3601}),
            400,
            "invalid_timeout",
        ),
        (
            json!({"agent_id": agent, "filters": {"pattern": "(unclosed"}}),
            400,
            "invalid_filter",
        ),
        (
            json!({"agent_id": agent, "filters": {"level": ["LOUD"]}}),
            400,
            "invalid_filter",
        ),
        (
            json!({"agent_id": agent, "filters": {"levels": ["ERROR"]}}),
            400,
            "invalid_request",
        ),
        (
            json!({"agent_id": agent, "limits": {"lines_per_second": 10_000_000}}),
            400,
            "invalid_limits",
        ),
        (
            json!({"agent_id": agent, "filters": {"plugins": [{"name": "nope"}]}}),
            404,
            "plugin_not_found",
        ),
        (json!({"agent_id": Uuid::new_v4()}), 404, "agent_not_found"),
        (json!({"timeout_seconds": 5}), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (got, err) = fx.api.post(start, &body).await;
        assert_eq!(
            (got, err["error"]["code"].as_str()),
            (status, Some(code)),
            "{body} → {err}"
        );
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, err) = fx.api.post_json_bytes(start, b"{not json".to_vec()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, err) = fx.api.post_json_bytes(start, vec![b' '; 1 << 20]).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (status, err) = fx.api.get("/api/v1/nothing-here").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    // Nothing reached the agent.
    let (_, list) = fx.api.get("/api/v1/stream/sessions").await;
    assert_eq!(list["total"], 0);

    // One agent runs a bounded number of sessions.
    let max = logfleet_host::api::stream::MAX_SESSIONS_PER_AGENT;
    for _ in 0..max {
        fx.start(json!({})).await;
    }
    let (status, err) = fx.api.post(start, &json!({"agent_id": agent})).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (429, Some("too_many_sessions"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_loss_is_announced_and_the_session_resumes() {
    let mut fx = Fixture::new().await;
    let session = fx.start(json!({"filters": {"source": "nginx"}})).await;
    let mut client = fx.client(&session).await;
    fx.sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;

    fx.stop_agent().await;
    client.expect_event("agent_disconnected").await;
    fx.api
        .wait_agent_status(&fx.agent_id.to_string(), "offline")
        .await;
    let (status, err) = fx
        .api
        .post("/api/v1/stream/start", &json!({"agent_id": fx.agent_id}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("agent_offline"))
    );

    fx.start_agent().await;
    client.expect_event("agent_reconnected").await;
    fx.sync("nginx.log", |n| format!("after {n}"), &mut client)
        .await;
    fx.logs.append("nginx.log", &["ERROR back again"]).await;
    assert_eq!(client.expect_log().await["message"], "back again");
}

/// `PATCH` narrows a live session at once and without a gap: lines read around the change go
/// through exactly one of the two filter sets (every line both pass arrives once, in order),
/// clients get `filters_changed` (with the new filters) before the first line under the new
/// ones and no line the new ones reject after it, and `GET` shows them. Someone else's session
/// cannot be changed (403), another org's does not exist (404), bad filters are refused (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_changes_a_live_sessions_filters_without_a_gap() {
    let fx = Fixture::new().await;
    let session = fx.start(json!({"filters": {"source": "nginx"}})).await;
    let id = session["id"].as_str().unwrap();
    let mut client = fx.client(&session).await;
    fx.sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;
    fx.logs
        .append("nginx.log", &["ERROR 1", "INFO 2", "ERROR 3"])
        .await;
    let path = format!("/api/v1/stream/sessions/{id}");
    let (status, body) = fx
        .api
        .patch(
            &path,
            &json!({"filters": {"source": "nginx", "level": ["error"]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["filters"]["level"], json!(["ERROR"]));
    fx.logs
        .append("nginx.log", &["ERROR 4", "INFO 5", "ERROR 6"])
        .await;
    let mut errors = Vec::new();
    let mut changed = None;
    while errors.last().is_none_or(|e| e != "6") {
        let msg = client.expect().await;
        if msg["type"] == "control" {
            assert_eq!(msg["event"], "filters_changed", "{msg}");
            assert!(changed.replace(msg).is_none(), "one filters_changed");
        } else if msg["level"] == "ERROR" {
            errors.push(msg["message"].as_str().unwrap().to_owned());
        } else {
            assert!(changed.is_none(), "an INFO line after the change: {msg}");
        }
    }
    assert_eq!(errors, ["1", "3", "4", "6"]);
    let changed = match changed {
        Some(changed) => changed,
        None => client.expect_event("filters_changed").await,
    };
    assert_eq!(changed["filters"]["level"], json!(["ERROR"]), "{changed}");
    assert_eq!(changed["filters"]["source"], json!(["nginx"]), "{changed}");
    fx.logs.append("nginx.log", &["INFO 7", "ERROR 8"]).await;
    assert_eq!(client.expect_log().await["message"], "8");
    let (status, got) = fx.api.get(&path).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["session"]["id"], id);
    assert_eq!(got["session"]["filters"]["level"], json!(["ERROR"]));

    let bob = fx.host.api("acme", "bob");
    let (status, _) = bob.patch(&path, &json!({"filters": {}})).await;
    assert_eq!(status, 403);
    let evil = fx.host.api("evil", "alice");
    assert_eq!(evil.get(&path).await.0, 404);
    assert_eq!(evil.patch(&path, &json!({"filters": {}})).await.0, 404);
    let (status, bad) = fx
        .api
        .patch(&path, &json!({"filters": {"pattern": "("}}))
        .await;
    assert_eq!(
        (status, &bad["error"]["code"]),
        (400, &json!("invalid_filter"))
    );
}

/// Bandwidth is measurable: a session's `usage` counts the lines and bytes its agent shipped
/// and what the agent dropped, `GET /api/v1/usage` shows the org's metrics and streaming
/// bytes per agent (another org sees none of them), and with an org budget exceeded the
/// session's clients get `bandwidth_warning`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_counted_per_session_and_agent_and_over_budget_warned() {
    let fx = Fixture::new_with(|h| h.tuning.org_bandwidth_budget = 1, |_| {}).await;
    let session = fx
        .start(json!({"filters": {"source": "nginx"}, "limits": {"lines_per_second": 5}}))
        .await;
    let id = session["id"].as_str().unwrap();
    let mut client = fx.client(&session).await;
    // Probe lines until the first batch's bytes put the org over its 1-byte budget.
    let mut warning = None;
    for n in 0..200 {
        fx.logs.append("nginx.log", &[&format!("probe {n}")]).await;
        if let Ok(msg) = client.next(Duration::from_millis(100)).await
            && msg["event"] == "bandwidth_warning"
        {
            warning = Some(msg);
            break;
        }
    }
    let warning = warning.expect("a bandwidth warning");
    assert_eq!(warning["budget"], 1, "{warning}");
    assert!(warning["bytes_per_hour"].as_u64().unwrap() > 1, "{warning}");
    // More than the rate limit lets through: some are dropped on the agent and counted.
    let burst: Vec<String> = (0..50).map(|i| format!("burst {i}")).collect();
    let burst: Vec<&str> = burst.iter().map(String::as_str).collect();
    fx.logs.append("nginx.log", &burst).await;
    client.expect_event("logs_dropped").await;
    let (status, got) = fx.api.get(&format!("/api/v1/stream/sessions/{id}")).await;
    assert_eq!(status, 200, "{got}");
    let usage = &got["session"]["usage"];
    assert!(usage["lines"].as_u64().unwrap() >= 1, "{usage}");
    assert!(usage["bytes"].as_u64().unwrap() > 0, "{usage}");
    assert!(
        usage["dropped"]["rate_limited"].as_u64().unwrap() > 0,
        "{usage}"
    );
    assert!(usage["lines_per_second"].as_f64().is_some(), "{usage}");
    // The list carries the same counters; read later, they can only have grown (the rate
    // limit lets more lines through meanwhile).
    let (_, list) = fx.api.get("/api/v1/stream/sessions").await;
    let listed = list["sessions"][0]["usage"]["lines"].as_u64().unwrap();
    assert!(listed >= usage["lines"].as_u64().unwrap(), "{list}");

    let (status, report) = fx.api.get("/api/v1/usage?window=15m").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["window_seconds"], 900);
    assert!(report["streaming_bytes"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["agents"][0]["agent_id"], fx.agent_id.to_string());
    let (_, other) = fx.host.api("evil", "eve").get("/api/v1/usage").await;
    assert_eq!(other["agents"], json!([]), "{other}");
    assert_eq!(fx.api.get("/api/v1/usage?window=90s").await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_since_seq_has_no_gap_and_no_duplicate() {
    let fx = Fixture::new().await;
    let session = fx.start(json!({"filters": {"source": "nginx"}})).await;
    let url = session["websocket_url"].as_str().unwrap();
    let mut client = fx.client(&session).await;
    fx.sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;
    fx.logs.append("nginx.log", &["one", "two"]).await;
    client.expect_log().await;
    let two = client.expect_log().await;
    client.close().await;

    // A second, live client shows when the host has the lines the first one misses.
    let mut watcher = fx.client(&session).await;
    fx.logs
        .append("nginx.log", &["three", "four", "five"])
        .await;
    for _ in 0..3 {
        watcher.expect_log().await;
    }

    let mut resumed = WsClient::connect(url, fx.api.token(), two["seq"].as_u64()).await;
    let got: Vec<Value> = vec![
        resumed.expect_log().await["message"].clone(),
        resumed.expect_log().await["message"].clone(),
        resumed.expect_log().await["message"].clone(),
    ];
    assert_eq!(got, [json!("three"), json!("four"), json!("five")]);
    fx.logs.append("nginx.log", &["six"]).await;
    assert_eq!(resumed.expect_log().await["message"], "six");
    resumed.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_endpoints_and_metrics() {
    let fx = Fixture::new().await;
    let id = fx.agent_id.to_string();
    let (status, list) = fx.api.get("/api/v1/agents").await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 1);
    let agent = &list["agents"][0];
    assert_eq!(agent["id"], id);
    assert_eq!(agent["name"], "edge-1");
    assert_eq!(agent["status"], "online");
    assert!(agent["version"].as_str().is_some_and(|v| !v.is_empty()));
    let sources: Vec<&str> = agent["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["nginx", "api-gateway"]);
    for (query, listed) in [
        ("limit=1", 1),
        ("limit=0", 0),
        ("offset=1", 0),
        ("limit=5&offset=0", 1),
    ] {
        let (status, page) = fx.api.get(&format!("/api/v1/agents?{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(page["total"], 1, "{query}");
        assert_eq!(page["agents"].as_array().unwrap().len(), listed, "{query}");
    }
    let (status, err) = fx.api.get("/api/v1/agents?limit=-1").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, by_name) = fx.api.get("/api/v1/agents/edge-1").await;
    assert_eq!(
        (status, by_name["agent"]["id"].as_str()),
        (200, Some(id.as_str()))
    );

    fx.logs
        .append("nginx.log", &["ERROR a", "ERROR b", "WARN c", "plain"])
        .await;
    let metrics = testkit::wait_for(|| async {
        let (_, m) = fx.api.get(&format!("/api/v1/agents/{id}/metrics")).await;
        let errors: u64 = m["history"]
            .as_array()?
            .iter()
            .flat_map(|r| r["sources"].as_array().cloned().unwrap_or_default())
            .filter(|s| s["name"] == "nginx")
            .map(|s| s["levels"]["ERROR"].as_u64().unwrap_or(0))
            .sum();
        (errors == 2).then_some(m)
    })
    .await;
    assert!(metrics["latest"]["agent"]["rss_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_prometheus_metrics() {
    let fx = Fixture::new().await;
    let anon = Api::new(&fx.host.base, None);
    let (status, body) = anon.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = anon.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.as_str().unwrap().contains("logfleet_agents_online 1"),
        "{body}"
    );
}
