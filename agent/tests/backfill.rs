//! Backfill, end to end through a real host and agent on real files: a session that asks for
//! `"backfill": {"lines": N}` first gets the N most recent matching records already in its
//! files, oldest first and flagged, then `backfill_done`, then the live records, with no line
//! missing or repeated between the two.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};
use testkit::{LogDir, Stack, WsClient};

/// Reads messages until `backfill_done`; returns the backfilled log messages and the control.
async fn read_backfill(client: &mut WsClient) -> (Vec<Value>, Value) {
    let mut logs = Vec::new();
    loop {
        let msg = client.expect().await;
        if msg["type"] == "log" {
            assert_eq!(
                msg["backfill"], true,
                "a live line before backfill_done: {msg}"
            );
            logs.push(msg);
        } else if msg["event"] == "backfill_done" {
            return (logs, msg);
        } else {
            panic!("unexpected before backfill_done: {msg}");
        }
    }
}

fn line_numbers(logs: &[Value]) -> Vec<u64> {
    logs.iter()
        .map(|l| l["metadata"]["line"].as_u64().unwrap())
        .collect()
}

/// Line `n` of the test file (1-based, counting the stack's two old lines): every third line
/// is an ERROR, and every line says its own number.
fn numbered(n: usize) -> String {
    let level = if n.is_multiple_of(3) { "ERROR" } else { "INFO" };
    format!("{level} line {n}")
}

/// Appends `numbered` lines from `from` to `nginx.log` in small bursts until `stop` is set;
/// returns the next number.
fn spawn_writer(
    logs: Arc<LogDir>,
    from: usize,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut n = from;
        while !stop.load(Ordering::SeqCst) {
            let burst: Vec<String> = (n..n + 7).map(numbered).collect();
            let refs: Vec<&str> = burst.iter().map(String::as_str).collect();
            logs.append("nginx.log", &refs).await;
            n += 7;
            written.store(n, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        n
    })
}

/// A backfill of 100 over a file with more matching lines gives exactly its last 100
/// matching lines, oldest first and flagged, then `backfill_done` with count 100, then the
/// live lines — while a writer appends throughout, every matching line from the first
/// backfilled one on arrives exactly once, in file order (no gap, no overlap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_then_live_without_gap_or_overlap() {
    let mut stack = Stack::new().await;
    let logs = Arc::new(std::mem::replace(&mut stack.logs, LogDir::new()));
    // The stack's nginx.log has 2 old lines; lines 3..=1000 follow.
    let early: Vec<String> = (3..=1000).map(numbered).collect();
    let refs: Vec<&str> = early.iter().map(String::as_str).collect();
    logs.append("nginx.log", &refs).await;

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(1001));
    let writer = spawn_writer(logs.clone(), 1001, stop.clone(), written.clone());
    let session = stack
        .start(json!({
            "filters": {"source": "nginx", "level": ["ERROR"]},
            "backfill": {"lines": 100},
            // Well above the writer's rate: a rate-limit drop would be a gap.
            "limits": {"lines_per_second": 20000},
        }))
        .await;
    let mut client = stack.client(&session).await;
    let (backfill, done) = read_backfill(&mut client).await;
    assert_eq!(done["count"], 100, "{done}");
    assert!(done.get("truncated").is_none(), "{done}");
    assert_eq!(backfill.len(), 100);
    let back = line_numbers(&backfill);
    for (log, n) in backfill.iter().zip(&back) {
        assert_eq!(log["message"], format!("line {n}"));
        assert_eq!(log["level"], "ERROR");
        assert!(n.is_multiple_of(3), "only matching lines");
    }
    assert!(
        back.windows(2).all(|w| w[1] == w[0] + 3),
        "the last 100 matching lines, oldest first, none skipped: {back:?}"
    );
    let seqs: Vec<u64> = backfill
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq ascends: {seqs:?}"
    );

    // Live lines follow the last backfilled one without a gap or a repeat.
    let mut live = Vec::new();
    while live.len() < 50 {
        let msg = client.expect_log().await;
        assert!(msg.get("backfill").is_none(), "{msg}");
        live.push(msg);
    }
    stop.store(true, Ordering::SeqCst);
    let next = writer.await.unwrap();
    logs.append("nginx.log", &[&format!("ERROR line {next} end")])
        .await;
    loop {
        let msg = client.expect_log().await;
        let end = msg["message"].as_str().unwrap().ends_with("end");
        live.push(msg);
        if end {
            break;
        }
    }
    let live_numbers = line_numbers(&live);
    let all: Vec<u64> = back.iter().chain(&live_numbers).copied().collect();
    // Lines of three: multiples of 3 from the first backfilled one, then the end marker.
    let mut want: Vec<u64> = (all[0]..next as u64).step_by(3).collect();
    want.push(next as u64);
    assert_eq!(all, want, "every matching line once, in order");
    let live_seqs: Vec<u64> = live.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(
        live_seqs[0] > *seqs.last().unwrap(),
        "live seqs above backfill's"
    );
}

/// A current file with fewer matching lines than asked for is backfilled from its most recent
/// rotated predecessor too: that file's last lines first (named like the live file, with their
/// own line numbers), then the current file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_file_is_backfilled_from_its_rotated_predecessor() {
    let stack = Stack::new().await;
    // nginx.log: 2 old lines and 78 more, rotated away as nginx.log.1; a new nginx.log of 30.
    let rotated: Vec<String> = (3..=80).map(|n| format!("old {n}")).collect();
    let refs: Vec<&str> = rotated.iter().map(String::as_str).collect();
    stack.logs.append("nginx.log", &refs).await;
    std::fs::rename(stack.logs.path("nginx.log"), stack.logs.path("nginx.log.1")).unwrap();
    let current: Vec<String> = (1..=30).map(|n| format!("new {n}")).collect();
    let refs: Vec<&str> = current.iter().map(String::as_str).collect();
    stack.logs.create("nginx.log", &refs);
    // A compressed older rotation is never read.
    std::fs::write(stack.logs.path("nginx.log.2.gz"), b"not text\n").unwrap();

    let session = stack
        .start(json!({"filters": {"source": "nginx"}, "backfill": {"lines": 100}}))
        .await;
    let mut client = stack.client(&session).await;
    let (backfill, done) = read_backfill(&mut client).await;
    assert_eq!(done["count"], 100, "{done}");
    let got: Vec<(String, u64)> = backfill
        .iter()
        .map(|l| {
            (
                l["message"].as_str().unwrap().to_owned(),
                l["metadata"]["line"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = (11..=80)
        .map(|n| (format!("old {n}"), n))
        .chain((1..=30).map(|n| (format!("new {n}"), n)))
        .collect();
    assert_eq!(got, want);
    let file = stack.logs.path("nginx.log").display().to_string();
    assert!(
        backfill
            .iter()
            .all(|l| l["metadata"]["file"] == file.as_str())
    );
}

/// When the scan bound per source stops the search before it found as many matching lines as
/// asked for, the client gets what it found and `backfill_done` says `truncated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_bound_cuts_the_backfill_short_and_says_so() {
    let stack = Stack::new_with(|_| {}, |agent| agent.tuning.backfill_scan_bytes = 4096).await;
    // 2,000 lines of 20 bytes; one in 50 is a needle: 4 KiB reach about 4 of them.
    let lines: Vec<String> = (0..2000)
        .map(|i| {
            if i % 50 == 49 {
                format!("needle {i:012}")
            } else {
                format!("hay    {i:012}")
            }
        })
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    stack.logs.append("nginx.log", &refs).await;
    let session = stack
        .start(json!({"filters": {"source": "nginx", "pattern": "needle"}, "backfill": {"lines": 100}}))
        .await;
    let mut client = stack.client(&session).await;
    let (backfill, done) = read_backfill(&mut client).await;
    assert_eq!(done["truncated"], true, "{done}");
    assert_eq!(done["count"], backfill.len());
    assert!(
        (3..=5).contains(&backfill.len()),
        "what 4 KiB hold: {}",
        backfill.len()
    );
    let last = backfill.last().unwrap();
    assert_eq!(last["message"], "needle 000000001999");
}

/// The host refuses a backfill outside 1..=10000 with a clear code, and starts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_out_of_bounds_is_refused() {
    let stack = Stack::new().await;
    for lines in [0, 10_001] {
        let (status, body) = stack
            .api
            .post(
                "/api/v1/stream/start",
                &json!({"agent_id": stack.agent_id, "backfill": {"lines": lines}}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_backfill", "{body}");
    }
    let (_, list) = stack.api.get("/api/v1/stream/sessions").await;
    assert_eq!(list["total"], 0);
}
