//! Fleet sessions end to end: a real host on a real socket, real agents (in process) tailing
//! real files with labels, real WebSocket clients.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use testkit::{InProcessAgent, LogDir, TestHost, WsClient, agent_config};
use uuid::Uuid;

/// One labelled agent of a test fleet, tailing its own `<name>.log` as source `app`.
struct Member {
    id: Uuid,
    name: String,
    _agent: InProcessAgent,
}

async fn start_agent(
    host: &TestHost,
    logs: &LogDir,
    org: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Member {
    let id = Uuid::new_v4();
    let file = format!("{name}.log");
    let path = logs.create(&file, &[]);
    let mut config = agent_config(host, host.agent_token(org, id, name), &[("app", &path)]);
    config.name = name.to_owned();
    config.labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let agent = InProcessAgent::start(config);
    host.api(org, "watcher")
        .wait_agent_status(&id.to_string(), "online")
        .await;
    Member {
        id,
        name: name.to_owned(),
        _agent: agent,
    }
}

/// Appends a probe line to each member's file until `client` has received one from each, so
/// the session runs on all of them; returns every log message read meanwhile.
async fn sync_all(logs: &LogDir, members: &[&Member], client: &mut WsClient) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    let mut read = Vec::new();
    for n in 0..400 {
        for m in members.iter().filter(|m| !seen.contains(&m.id.to_string())) {
            logs.append(
                &format!("{}.log", m.name),
                &[&format!("probe {} {n}", m.name)],
            )
            .await;
        }
        while let Ok(msg) = client.next(Duration::from_millis(25)).await {
            if msg["type"] == "log" {
                seen.insert(msg["agent_id"].as_str().unwrap().to_owned());
                read.push(msg);
            }
        }
        if members.iter().all(|m| seen.contains(&m.id.to_string())) {
            return read;
        }
    }
    panic!("the session never ran on every member");
}

/// Reads log messages until `n` whose message starts with `prefix` arrived; returns all logs
/// read (also others).
async fn read_until(client: &mut WsClient, prefix: &str, n: usize) -> Vec<Value> {
    let mut read = Vec::new();
    let mut found = 0;
    while found < n {
        let msg = client.expect().await;
        if msg["type"] != "log" {
            continue;
        }
        if msg["message"].as_str().unwrap().starts_with(prefix) {
            found += 1;
        }
        read.push(msg);
    }
    read
}

fn ids(session: &Value) -> BTreeSet<String> {
    session["agent_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// A selector session runs on every online agent of the caller's org whose labels match, and
/// merges their lines into one stream, each line naming the agent that read it; an agent that
/// comes online with the labels mid-session joins it (clients get `agent_joined`, then its
/// lines), while another org's agent with the very same labels never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_session_merges_matching_agents_and_admits_new_ones() {
    let host = TestHost::start().await;
    let logs = LogDir::new();
    let prod_edge = [("env", "prod"), ("role", "edge")];
    let a = start_agent(&host, &logs, "acme", "edge-a", &prod_edge).await;
    let b = start_agent(&host, &logs, "acme", "edge-b", &prod_edge).await;
    let c = start_agent(
        &host,
        &logs,
        "acme",
        "edge-c",
        &[("env", "prod"), ("role", "edge"), ("zone", "1")],
    )
    .await;
    let dev = start_agent(
        &host,
        &logs,
        "acme",
        "edge-dev",
        &[("env", "dev"), ("role", "edge")],
    )
    .await;
    let api = host.api("acme", "alice");
    let session = api
        .start_session(json!({
            "selector": {"labels": {"env": "prod", "role": "edge"}},
            "timeout_seconds": 300,
        }))
        .await;
    let expected: BTreeSet<String> = [&a, &b, &c].iter().map(|m| m.id.to_string()).collect();
    assert_eq!(ids(&session), expected, "{session}");
    let mut client = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        api.token(),
        None,
    )
    .await;
    sync_all(&logs, &[&a, &b, &c], &mut client).await;

    for m in [&a, &b, &c, &dev] {
        let lines: Vec<String> = (0..5).map(|i| format!("line {} {i}", m.name)).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        logs.append(&format!("{}.log", m.name), &lines).await;
    }
    let read = read_until(&mut client, "line ", 15).await;
    let by_name: HashMap<&str, String> = [&a, &b, &c, &dev]
        .iter()
        .map(|m| (m.name.as_str(), m.id.to_string()))
        .collect();
    let mut per_agent: BTreeMap<String, usize> = BTreeMap::new();
    for msg in read
        .iter()
        .filter(|m| m["message"].as_str().unwrap().starts_with("line "))
    {
        let name = msg["message"].as_str().unwrap().split(' ').nth(1).unwrap();
        assert_eq!(msg["agent_id"], by_name[name], "{msg}");
        assert!(
            msg["agent_seq"].is_u64(),
            "the agent's own seq is kept: {msg}"
        );
        *per_agent.entry(name.to_owned()).or_default() += 1;
    }
    assert_eq!(
        per_agent,
        BTreeMap::from([
            ("edge-a".to_owned(), 5),
            ("edge-b".to_owned(), 5),
            ("edge-c".to_owned(), 5)
        ]),
        "edge-dev does not match"
    );

    // Another org's agent with the same labels comes online first: it must not join.
    let foreign = start_agent(&host, &logs, "other", "edge-x", &prod_edge).await;
    let d = start_agent(&host, &logs, "acme", "edge-d", &prod_edge).await;
    let joined = client.expect_event("agent_joined").await;
    assert_eq!(joined["agent_id"], d.id.to_string(), "{joined}");
    let (_, got) = api
        .get(&format!(
            "/api/v1/stream/sessions/{}",
            session["id"].as_str().unwrap()
        ))
        .await;
    let mut with_d = expected.clone();
    with_d.insert(d.id.to_string());
    assert_eq!(ids(&got["session"]), with_d, "{got}");
    logs.append("edge-x.log", &["line edge-x 0"]).await;
    let read = sync_all(&logs, &[&d], &mut client).await;
    let foreign_id = foreign.id.to_string();
    assert!(
        read.iter().all(|m| m["agent_id"] != foreign_id.as_str()),
        "another org's agent joined"
    );
    let last_from_d = read
        .iter()
        .rev()
        .find(|m| m["agent_id"] == d.id.to_string().as_str());
    assert!(last_from_d.is_some());
    // Nothing of the other org ever arrives, also after its line was written.
    logs.append("edge-a.log", &["line edge-a last"]).await;
    let tail = read_until(&mut client, "line edge-a last", 1).await;
    assert!(tail.iter().all(|m| m["agent_id"] != foreign_id.as_str()));
}

/// A client that resumes a fleet session with `since_seq` gets exactly the records after it,
/// from every agent, in the same order as a client that never left: `seq` counts the
/// session's records one by one, so nothing is skipped or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_fleet_session_has_no_gap_and_no_duplicate() {
    let host = TestHost::start().await;
    let logs = LogDir::new();
    let a = start_agent(&host, &logs, "acme", "web-1", &[]).await;
    let b = start_agent(&host, &logs, "acme", "web-2", &[]).await;
    let api = host.api("acme", "alice");
    let session = api
        .start_session(json!({"agent_ids": ["web-1", b.id.to_string()], "timeout_seconds": 300}))
        .await;
    assert_eq!(ids(&session).len(), 2, "{session}");
    let url = session["websocket_url"].as_str().unwrap();
    let mut first = WsClient::connect(url, api.token(), None).await;
    sync_all(&logs, &[&a, &b], &mut first).await;
    for round in 0..4 {
        for m in [&a, &b] {
            let lines: Vec<String> = (0..5)
                .map(|i| format!("data {} {round} {i}", m.name))
                .collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            logs.append(&format!("{}.log", m.name), &lines).await;
        }
    }
    let read = read_until(&mut first, "data ", 40).await;
    let seqs: Vec<u64> = read.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "session seqs count records one by one: {seqs:?}"
    );
    let middle = read.len() / 2;
    let since = seqs[middle];
    let mut resumed = WsClient::connect(url, api.token(), Some(since)).await;
    let mut again = Vec::new();
    while again.len() < read.len() - middle - 1 {
        let msg = resumed.expect().await;
        assert_eq!(
            msg["type"], "log",
            "no drop, nothing but the missed records: {msg}"
        );
        again.push(msg);
    }
    let key = |m: &Value| {
        (
            m["seq"].clone(),
            m["agent_id"].clone(),
            m["message"].clone(),
        )
    };
    let expected: Vec<_> = read[middle + 1..].iter().map(key).collect();
    let got: Vec<_> = again.iter().map(key).collect();
    assert_eq!(got, expected);
}

/// `GET /api/v1/agents?label=K=V` lists exactly the agents carrying every given label (their
/// own, from `--label`, or from enrollment), and `total` counts them; a malformed label is a
/// 400 naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_list_filters_by_labels() {
    let host = TestHost::start().await;
    let logs = LogDir::new();
    let a = start_agent(
        &host,
        &logs,
        "acme",
        "edge-a",
        &[("env", "prod"), ("role", "edge")],
    )
    .await;
    let _b = start_agent(&host, &logs, "acme", "edge-b", &[("env", "prod")]).await;
    let _foreign = start_agent(
        &host,
        &logs,
        "other",
        "edge-x",
        &[("env", "prod"), ("role", "edge")],
    )
    .await;
    let admin = host.admin("acme", "root");
    let (status, enrolled) = admin
        .post(
            "/api/v1/agents",
            &json!({"name": "edge-e", "labels": {"env": "prod", "role": "edge"}}),
        )
        .await;
    assert_eq!(status, 201, "{enrolled}");
    let api = host.api("acme", "alice");
    let (status, list) = api
        .get("/api/v1/agents?label=env=prod&label=role%3Dedge")
        .await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["edge-a", "edge-e"], "{list}");
    assert_eq!(list["total"], 2);
    assert_eq!(list["agents"][0]["labels"]["role"], "edge");
    assert_eq!(list["agents"][0]["id"], a.id.to_string());
    let (_, all) = api
        .get("/api/v1/agents?label=env=prod&limit=1&offset=1")
        .await;
    assert_eq!(
        (
            all["total"].as_u64(),
            all["agents"].as_array().unwrap().len()
        ),
        (Some(3), 1)
    );
    let (status, bad) = api.get("/api/v1/agents?label=envprod").await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_label"))
    );
}

/// A start request names its agents exactly one way; anything else, an empty selector, one
/// nobody in the caller's org matches, or one whose agents are all offline is refused with a
/// clear code, and another org's agents are never picked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_start_requests_are_validated() {
    let host = TestHost::start().await;
    let logs = LogDir::new();
    let a = start_agent(&host, &logs, "acme", "edge-a", &[("env", "prod")]).await;
    let _foreign = start_agent(&host, &logs, "other", "edge-x", &[("env", "staging")]).await;
    let admin = host.admin("acme", "root");
    let (status, _) = admin
        .post(
            "/api/v1/agents",
            &json!({"name": "edge-off", "labels": {"env": "qa"}}),
        )
        .await;
    assert_eq!(status, 201);
    let api = host.api("acme", "alice");
    let start = |body: Value| {
        let api = &api;
        async move {
            let (status, json) = api.post("/api/v1/stream/start", &body).await;
            (
                status,
                json["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        }
    };
    let selector = json!({"labels": {"env": "prod"}});
    for body in [
        json!({"agent_id": a.id, "selector": selector}),
        json!({"agent_id": a.id, "agent_ids": [a.id]}),
        json!({"selector": {}}),
        json!({"agent_ids": []}),
        json!({"selector": {"labels": {"bad key": "x"}}}),
    ] {
        assert_eq!(
            start(body.clone()).await,
            (400, "invalid_target".to_owned()),
            "{body}"
        );
    }
    assert_eq!(
        start(json!({"timeout_seconds": 60})).await,
        (400, "invalid_request".to_owned()),
        "no target at all is a missing field, as always"
    );
    assert_eq!(
        start(json!({"selector": {"labels": {"env": "staging"}}})).await,
        (404, "no_matching_agents".to_owned()),
        "another org's agents are not candidates"
    );
    assert_eq!(
        start(json!({"selector": {"labels": {"env": "qa"}}})).await,
        (409, "agent_offline".to_owned())
    );
    assert_eq!(
        start(json!({"agent_ids": ["edge-a", "nobody"]})).await,
        (404, "agent_not_found".to_owned())
    );
    let by_name = api
        .start_session(json!({"selector": {"name": "edge-*"}}))
        .await;
    assert_eq!(ids(&by_name), BTreeSet::from([a.id.to_string()]));
    assert_eq!(by_name["agent_id"], a.id.to_string());
}
