//! Delivery promises of the `logfleet-agent` binary against a real host: lines survive a link
//! that dies silently, and sessions do not depend on the agent's wall clock.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::{AgentProcess, Api, LogDir, TcpProxy, TestHost, WAIT, WsClient, WsEnd};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_logfleet-agent");
/// Debian's libfaketime (package `faketime`), as its `faketime` wrapper preloads it; the
/// dynamic loader expands `$LIB` to the architecture's library directory.
const FAKETIME_LIB: &str = "/usr/$LIB/faketime/libfaketime.so.1";

/// The `logfleet_agent_connections_total` counter on the host's `/metrics`.
async fn connections(host: &TestHost) -> u64 {
    let (_, text) = Api::new(&host.base, None).get("/metrics").await;
    text.as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("logfleet_agent_connections_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// The agent's flags for a host at `base`, tailing `file` as source `app`.
fn agent_args(base: &str, token: String, file: &Path) -> Vec<String> {
    vec![
        format!("--host={base}"),
        format!("--token={token}"),
        format!("--source=app={}", file.display()),
    ]
}

/// Starts a session of `timeout_seconds` on `agent` and connects a client to it.
async fn session_client(api: &Api, agent: Uuid, timeout_seconds: u64) -> (Value, WsClient) {
    api.wait_agent_status(&agent.to_string(), "online").await;
    let session = api
        .start_session(json!({"agent_id": agent, "timeout_seconds": timeout_seconds}))
        .await;
    let client = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        api.token(),
        None,
    )
    .await;
    (session, client)
}

/// Reads the client's stream until the log line `last` (or fails after [`WAIT`] of nothing),
/// returning every log message on the way; a `logs_dropped` or the session's end fails the
/// test, other notices (the agent going away and back) are skipped.
async fn logs_until(client: &mut WsClient, last: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let msg = match client.next(WAIT).await {
            Ok(msg) => msg,
            Err(WsEnd::Timeout) => panic!(
                "{last:?} never arrived; got {} lines: {:?}",
                got.len(),
                messages(&got)
            ),
            Err(WsEnd::Closed(frame)) => panic!("the stream closed: {frame:?}"),
        };
        match msg["type"].as_str() {
            Some("log") => {
                let done = msg["message"] == last;
                got.push(msg);
                if done {
                    return got;
                }
            }
            _ => assert!(
                msg["event"] != "logs_dropped" && msg["event"] != "session_ended",
                "unexpected {msg}"
            ),
        }
    }
}

fn messages(logs: &[Value]) -> Vec<&str> {
    logs.iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect()
}

/// Lines numbered `range`, as the test writes them.
fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("line {n:04}")).collect()
}

async fn append(logs: &LogDir, lines: &[String]) {
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    logs.append("app.log", &lines).await;
}

/// When the link between agent and host goes silent without a reset in the middle of a
/// stream (the agent keeps writing into it until it notices), every line still reaches the
/// session's client exactly once and in order after the agent reconnects, and nothing is
/// reported dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_goes_silent_mid_stream_loses_and_repeats_no_line() {
    let host = TestHost::start().await;
    let proxy = TcpProxy::start(host.addr).await;
    let logs = LogDir::new();
    let file = logs.create("app.log", &[]);
    let id = Uuid::new_v4();
    let mut args = agent_args(
        &format!("http://{}", proxy.addr),
        host.agent_token("acme", id, "edge"),
        &file,
    );
    // The agent notices the silence after a second, pinging after 200 ms without news (the
    // test host pings every 300 ms while the link works).
    args.extend(["--ping-interval=100ms".into(), "--read-timeout=1s".into()]);
    let agent = AgentProcess::spawn(Path::new(BIN), &args);
    let api = host.api("acme", "alice");
    let (_session, mut client) = session_client(&api, id, 300).await;
    testkit::sync(&logs, "app.log", |n| format!("probe {n}"), &mut client).await;
    let before = connections(&host).await;

    // Streaming: the first lines arrive.
    append(&logs, &numbered(0..100)).await;
    assert_eq!(
        messages(&logs_until(&mut client, "line 0099").await),
        numbered(0..100)
    );
    // Lines in flight as the link goes silent, and lines read while the agent has not noticed
    // yet, go into the dead link.
    append(&logs, &numbered(100..200)).await;
    proxy.blackhole();
    for chunk in numbered(200..400).chunks(20) {
        append(&logs, chunk).await;
    }
    // The agent notices, reconnects through the proxy (the network is back for new
    // connections), and carries on; then the old sockets go away.
    testkit::wait_for(|| async { (connections(&host).await > before).then_some(()) }).await;
    append(&logs, &numbered(400..500)).await;
    proxy.drop_blackholed();
    append(&logs, &numbered(500..600)).await;

    let got = logs_until(&mut client, "line 0599").await;
    let got = messages(&got);
    let expected = numbered(100..600);
    let missing: Vec<&String> = expected
        .iter()
        .filter(|l| !got.contains(&l.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} lines lost: {missing:?}",
        missing.len()
    );
    assert_eq!(got, expected, "every line once, in order");
    client.expect_silence(Duration::from_millis(300)).await;
    assert!(agent.terminate().await.success());
}

/// An agent whose wall clock is `offset` off (a `faketime` offset such as `+2h`) streams a
/// 60 s session like any other: it starts, the lines written arrive (stamped with the agent's
/// own clock, as documented), and it is not ended early.
async fn a_session_streams_with_the_agent_clock_off_by(offset: &str, hours: i64) {
    let host = TestHost::start().await;
    let logs = LogDir::new();
    let file = logs.create("app.log", &[]);
    let id = Uuid::new_v4();
    let args = agent_args(&host.base, host.agent_token("acme", id, "edge"), &file);
    // libfaketime, preloaded into the agent itself (the `faketime` wrapper forks, and would
    // keep signals from the agent). Only the wall clock is wrong, as on a real machine: NTP
    // and `date` set CLOCK_REALTIME, never CLOCK_MONOTONIC, which the agent times sessions
    // (and tokio its timers) by. libfaketime fakes both unless told not to, and a monotonic
    // clock moved back 2 h on a machine up for less is a state no real machine is in.
    let agent = AgentProcess::spawn_with_env(
        Path::new(BIN),
        &args,
        &[
            ("LD_PRELOAD", FAKETIME_LIB),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let api = host.api("acme", "alice");
    let (session, mut client) = session_client(&api, id, 60).await;
    testkit::sync(&logs, "app.log", |n| format!("probe {n}"), &mut client).await;

    append(&logs, &numbered(0..50)).await;
    let got = logs_until(&mut client, "line 0049").await;
    assert_eq!(messages(&got), numbered(0..50));
    // The clock really is off: the agent stamps lines with its own reading.
    let stamped = chrono::DateTime::parse_from_rfc3339(got[0]["timestamp"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let skew = stamped - chrono::Utc::now();
    assert!(
        (skew - chrono::TimeDelta::hours(hours)).abs() < chrono::TimeDelta::minutes(5),
        "the agent's clock is {skew} off, not {offset}: is libfaketime installed \
         (Debian's faketime package, see scripts/setup.sh)?"
    );
    // Still streaming, still active on the host: not ended early.
    append(&logs, &numbered(50..60)).await;
    assert_eq!(
        messages(&logs_until(&mut client, "line 0059").await),
        numbered(50..60)
    );
    let (status, sessions) = api.get("/api/v1/stream/sessions").await;
    assert_eq!(status, 200);
    assert!(
        sessions["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == session["id"]),
        "{sessions}"
    );
    assert!(agent.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_streams_with_the_agent_clock_two_hours_ahead() {
    a_session_streams_with_the_agent_clock_off_by("+2h", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_streams_with_the_agent_clock_two_hours_behind() {
    a_session_streams_with_the_agent_clock_off_by("-2h", -2).await;
}
