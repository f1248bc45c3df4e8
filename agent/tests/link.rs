//! The agent's link to its host when a second copy of the agent runs with the same token.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::time::{Duration, Instant};

use testkit::{Api, InProcessAgent, LogDir, TestHost, agent_config};
use uuid::Uuid;

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

/// Two copies of one agent (same org, same id) do not take the link from each other in a
/// loop: the superseded one backs off for long (`superseded_backoff`), so the host sees no
/// new connection for many reconnect intervals.
#[tokio::test]
async fn a_superseded_agent_backs_off_instead_of_taking_the_link_back() {
    let host = TestHost::start().await;
    let logs = LogDir::new();
    let path = logs.create("app.log", &[]);
    let id = Uuid::new_v4();
    let token = host.agent_token("acme", id, "edge");
    let api = host.api("acme", "alice");
    let first = InProcessAgent::start(agent_config(&host, token.clone(), &[("app", &path)]));
    api.wait_agent_status(&id.to_string(), "online").await;
    assert_eq!(connections(&host).await, 1);
    let second = InProcessAgent::start(agent_config(&host, token, &[("app", &path)]));
    testkit::wait_for(|| async { (connections(&host).await >= 2).then_some(()) }).await;

    // Without the long back-off the superseded copy would be back within `reconnect_max`
    // (300 ms in tests) and the two would alternate; watch for ten of those intervals.
    let reconnect_max = testkit::fast_agent_tuning().reconnect_max;
    let quiet = Instant::now() + 10 * reconnect_max;
    while Instant::now() < quiet {
        assert_eq!(
            connections(&host).await,
            2,
            "the superseded agent came back at once"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.wait_agent_status(&id.to_string(), "online").await;
    first.stop().await;
    second.stop().await;
}
