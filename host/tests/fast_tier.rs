//! The agent's fast tier in a live session: a plugin never used on the agent streams on
//! baseline code while the optimised code compiles in the background, and the switch to it
//! loses and duplicates no line.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use testkit::{Stack, plugin_bytes};

/// Longest the background optimising compile may take here (debug test build, a machine
/// shared with other builds) before the test fails.
const OPTIMISE_DEADLINE: Duration = Duration::from_secs(300);

/// The agent's compiled artifacts of the component `hex`: (baseline, optimised) present.
fn artifacts(compiled: &Path, hex: &str) -> (bool, bool) {
    let Ok(entries) = std::fs::read_dir(compiled) else {
        return (false, false);
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(hex) && n.ends_with(".cwasm"))
        .collect();
    (
        names.iter().any(|n| n.ends_with(".winch.cwasm")),
        names.iter().any(|n| !n.ends_with(".winch.cwasm")),
    )
}

/// A session whose plugin was never compiled on the agent starts streaming (on baseline
/// code); after the optimised code is compiled and the chain switches to it, every line
/// written before, during and after the switch reaches the client exactly once, in order,
/// rewritten by the plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_used_plugin_streams_at_once_and_switches_code_without_loss_or_duplicates() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir: PathBuf = cache.path().to_owned();
    let stack = Stack::new_with(
        |_| {},
        move |agent| {
            agent.tuning.cache_dir = Some(cache_dir.clone());
            agent.tuning.fast_tier = true;
        },
    )
    .await;
    let compiled = cache.path().join("compiled");
    let bytes = plugin_bytes("redact");
    let hex = logfleet_filter_runtime::digest(&bytes)
        .trim_start_matches("sha256:")
        .to_owned();
    let (status, body) = stack
        .admin
        .post_raw("/api/v1/plugins?name=redact", bytes)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(artifacts(&compiled, &hex), (false, false), "never used");

    let session = stack
        .start(json!({"filters": {"plugins": [{"name": "redact", "config": {}}]}}))
        .await;
    let mut client = stack.client(&session).await;
    stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;
    assert!(
        artifacts(&compiled, &hex).0,
        "the session started on baseline code"
    );

    let line = |i: usize| format!("request {i} from user{i}@example.com");
    let mut written = 0;
    // Lines keep coming while the optimised code compiles and the chain switches.
    let deadline = tokio::time::Instant::now() + OPTIMISE_DEADLINE;
    while !artifacts(&compiled, &hex).1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "optimised code never compiled"
        );
        let lines: Vec<String> = (written..written + 5).map(line).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        stack.logs.append("nginx.log", &refs).await;
        written += 5;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The optimised code is in reach: the next batch switches to it.
    for _ in 0..20 {
        let lines: Vec<String> = (written..written + 5).map(line).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        stack.logs.append("nginx.log", &refs).await;
        written += 5;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut received = Vec::new();
    while received.len() < written {
        let msg = client.expect_log().await;
        received.push(msg["message"].as_str().unwrap().to_owned());
    }
    let expected: Vec<String> = (0..written)
        .map(|i| format!("request {i} from <email>"))
        .collect();
    assert_eq!(received, expected);
    client.expect_silence(Duration::from_millis(300)).await;
}
