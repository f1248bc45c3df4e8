//! Streams survive log rotation, with the real `logrotate`, real files, a real host and agent:
//! no line the agent could read is lost or repeated, and line numbers restart with each file.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use testkit::{Stack, WsClient, skip_until};

/// Runs `logrotate` on `file` with one directive (`create` or `copytruncate`).
fn logrotate(file: &Path, directive: &str) {
    let dir = file.parent().unwrap();
    let conf = dir.join(format!("{directive}.conf"));
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 5\n  {directive}\n  missingok\n  nocompress\n}}\n",
            file.display()
        ),
    )
    .unwrap();
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .unwrap_or_else(|e| panic!("logrotate is required (`scripts/setup.sh` installs it): {e}"));
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Expects exactly `lines` next, in order, numbered `first_line`, `first_line + 1`, …
async fn expect_lines(client: &mut WsClient, lines: &[String], first_line: u64) {
    for (i, line) in lines.iter().enumerate() {
        let msg = client.expect_log().await;
        assert_eq!(msg["message"], *line);
        assert_eq!(msg["metadata"]["line"], first_line + i as u64, "{msg}");
    }
}

fn batch(tag: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{tag} {i}")).collect()
}

async fn append(stack: &Stack, lines: &[String]) {
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    stack.logs.append("nginx.log", &refs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_in_every_common_way_loses_and_repeats_nothing() {
    let stack = Stack::new().await;
    let file = stack.logs.path("nginx.log");
    let session = stack.start(json!({"filters": {"source": "nginx"}})).await;
    let mut client = stack.client(&session).await;
    stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;
    client
        .expect_silence(std::time::Duration::from_millis(100))
        .await;

    // logrotate `create`: renamed away and recreated at once, right after lines were written —
    // the agent finishes the old file before starting the new one.
    let a = batch("create-before", 30);
    append(&stack, &a).await;
    logrotate(&file, "create");
    let b = batch("create-after", 30);
    append(&stack, &b).await;
    let first = client.expect_log().await;
    assert_eq!(first["message"], a[0]);
    let start = first["metadata"]["line"].as_u64().unwrap();
    expect_lines(&mut client, &a[1..], start + 1).await;
    expect_lines(&mut client, &b, 1).await;

    // logrotate `copytruncate`: copied, then truncated in place; numbering restarts.
    let c = batch("copytruncate-after", 30);
    logrotate(&file, "copytruncate");
    append(&stack, &c).await;
    expect_lines(&mut client, &c, 1).await;

    // mv and recreate by hand, lines on both sides.
    let d = batch("mv-before", 20);
    append(&stack, &d).await;
    std::fs::rename(&file, stack.logs.path("nginx.log.moved")).unwrap();
    let e = batch("mv-after", 20);
    append(&stack, &e).await;
    expect_lines(&mut client, &d, 31).await;
    expect_lines(&mut client, &e, 1).await;

    // Truncation to zero, then new lines.
    std::fs::File::create(&file).unwrap();
    let f = batch("truncated", 10);
    append(&stack, &f).await;
    expect_lines(&mut client, &f, 1).await;

    // Deleted and re-created.
    std::fs::remove_file(&file).unwrap();
    let g = batch("recreated", 10);
    append(&stack, &g).await;
    expect_lines(&mut client, &g, 1).await;

    client
        .expect_silence(std::time::Duration::from_millis(300))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globs_pick_up_new_files_from_their_first_line() {
    let stack = Stack::new_with(
        |_| {},
        |agent| {
            let dir = std::path::Path::new(&agent.sources[0].path)
                .parent()
                .unwrap()
                .to_path_buf();
            agent.sources.push(logfleet_agent::SourceConfig::new(
                "apps",
                dir.join("app-*.log").display().to_string(),
            ));
        },
    )
    .await;
    let session = stack.start(json!({"filters": {"source": "apps"}})).await;
    let mut client = stack.client(&session).await;
    stack
        .sync("app-probe.log", |n| format!("probe {n}"), &mut client)
        .await;
    stack
        .logs
        .append("app-new.log", &["first of a new file", "second"])
        .await;
    let first = client.expect_log().await;
    assert_eq!(first["message"], "first of a new file");
    assert_eq!(first["metadata"]["line"], 1);
    assert!(
        first["metadata"]["file"]
            .as_str()
            .unwrap()
            .ends_with("app-new.log")
    );
    skip_until(&mut client, "second").await;
}
