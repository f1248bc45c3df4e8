//! The real `logfleet` binary's operator commands against a real host and in-process agent:
//! `stream --backfill` (`--tail`), `filter` on a running stream, and the rate in `sessions`.

mod common;

use std::time::{Duration, Instant};

use common::{AGENT_NAME, Fixture, Running, sync};
use serde_json::Value;
use testkit::WAIT;

fn json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Waits (bounded) until the CLI has said `text` on stderr.
async fn wait_stderr(cli: &Running, text: &str) {
    let deadline = Instant::now() + WAIT;
    while !cli.stderr().iter().any(|l| l.contains(text)) {
        assert!(
            Instant::now() < deadline,
            "stderr never said {text:?}: {:?}",
            cli.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `--tail N` (the same as `--backfill N`) prints the N most recent matching lines already in
/// the file first, oldest first and flagged in JSON, says on stderr where the live lines
/// begin, then prints the live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_backfill_prints_recent_lines_then_live() {
    let fx = Fixture::new().await;
    let lines: Vec<String> = (1..=20).map(|n| format!("earlier {n}")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    fx.logs.append("app.log", &refs).await;
    let mut cli = fx.spawn(&[
        "stream", AGENT_NAME, "--source", "app", "--tail", "3", "-o", "json",
    ]);
    let mut got = Vec::new();
    for _ in 0..3 {
        let log = json_line(&cli.line().await);
        assert_eq!(log["backfill"], true, "{log}");
        got.push(log["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, ["earlier 18", "earlier 19", "earlier 20"]);
    wait_stderr(&cli, "backfill done: 3 earlier line(s) above").await;
    fx.logs.append("app.log", &["now live"]).await;
    let live = json_line(&cli.line().await);
    assert_eq!(live["message"], "now live");
    assert!(live.get("backfill").is_none(), "{live}");
    cli.signal("INT");
    assert_eq!(cli.wait().await.0.code(), Some(130));
}

/// `logfleet filter SESSION --level ERROR` narrows a running stream: it prints the session's
/// new filters, the stream says the filters changed, and from then on only matching lines
/// arrive. `sessions` shows the session's rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_narrows_a_running_stream() {
    let fx = Fixture::new().await;
    let mut cli = fx.spawn(&["stream", AGENT_NAME, "--source", "app", "-o", "json"]);
    sync(&fx, &mut cli, "app.log", "probe").await;
    let sessions = fx.active_sessions().await;
    let sid = sessions[0]["id"].as_str().unwrap().to_owned();

    let out = fx.run(&["sessions"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let header = out.stdout.lines().next().unwrap();
    assert!(header.ends_with("CLIENTS  RATE"), "{header}");
    assert!(out.stdout.contains(" lines/s "), "{}", out.stdout);

    let out = fx
        .run(&["filter", &sid, "--level", "ERROR", "--source", "app"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        format!(r#"session {sid} now filters {{"level":["ERROR"],"source":["app"]}}"#)
    );
    wait_stderr(&cli, "filters changed").await;
    fx.logs
        .append("app.log", &["INFO not any more", "ERROR still shown"])
        .await;
    let log = json_line(&cli.line().await);
    assert_eq!(log["message"], "still shown");

    let out = fx.run(&["filter", "sess_nope", "--level", "ERROR"]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    cli.signal("INT");
    assert_eq!(cli.wait().await.0.code(), Some(130));
}
