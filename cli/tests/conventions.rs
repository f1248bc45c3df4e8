//! The command-line conventions users of stern, kubectl and logcli reach for, through the real
//! binary against a real host and agent: completion scripts, short flags, durations, level
//! thresholds, JSON lists, warnings about the stream's target, plain diagnostics off a TTY.

mod common;

use common::{AGENT_NAME, Fixture, sync};
use serde_json::Value;

/// `completion bash|zsh|fish` prints a script for that shell that completes `logfleet`'s
/// subcommands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_scripts_for_each_shell() {
    let fx = Fixture::new().await;
    for (shell, marker) in [
        ("bash", "complete -F _logfleet"),
        ("zsh", "#compdef logfleet"),
        ("fish", "complete -c logfleet"),
    ] {
        let out = fx.run(&["completion", shell]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(
            out.stdout.contains(marker),
            "{shell}: {}",
            &out.stdout[..200]
        );
        assert!(out.stdout.contains("stream"), "{shell}");
    }
}

/// `-o json` on `agents`, `sessions` and `plugins list` prints the host's objects as one JSON
/// array a script can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_as_json() {
    let fx = Fixture::new().await;
    let parse = |text: &str| -> Vec<Value> {
        serde_json::from_str::<Value>(text.trim())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .as_array()
            .cloned()
            .expect("an array")
    };
    let agents = parse(&fx.run(&["agents", "-o", "json"]).await.stdout);
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["name"], AGENT_NAME);
    assert_eq!(agents[0]["id"], fx.agent_id.to_string());
    assert!(parse(&fx.run(&["plugins", "list", "-o", "json"]).await.stdout).is_empty());
    let session = fx
        .api
        .start_session(serde_json::json!({"agent_id": AGENT_NAME, "timeout_seconds": 60}))
        .await;
    let sessions = parse(&fx.run(&["sessions", "--output", "json"]).await.stdout);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["id"], session["id"]);
}

/// `--level WARN+` streams WARN and everything more severe, nothing less; `--timeout 5m` is a
/// five-minute session; short flags work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_thresholds_durations_and_short_flags() {
    let fx = Fixture::new().await;
    let mut cli = fx.spawn(&[
        "stream",
        AGENT_NAME,
        "-s",
        "app",
        "-l",
        "WARN+",
        "--timeout",
        "5m",
        "-o",
        "json",
    ]);
    sync(&fx, &mut cli, "app.log", "ERROR probe").await;
    fx.logs
        .append(
            "app.log",
            &[
                "INFO quiet",
                "WARN careful",
                "DEBUG noise",
                "FATAL dead",
                "ERROR broken",
            ],
        )
        .await;
    let mut levels = Vec::new();
    while levels.len() < 3 {
        let v: Value = serde_json::from_str(&cli.line().await).expect("json");
        levels.push(v["level"].as_str().expect("level").to_owned());
    }
    assert_eq!(levels, ["WARN", "FATAL", "ERROR"]);
    let sessions = fx.active_sessions().await;
    let started = chrono_secs(&sessions[0]["started_at"]);
    let expires = chrono_secs(&sessions[0]["expires_at"]);
    assert_eq!(expires - started, 300, "{sessions:?}");
    cli.signal("INT");
    assert_eq!(cli.wait().await.0.code(), Some(130));

    let out = fx.run(&["stream", AGENT_NAME, "--level", "LOUD+"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("unknown level 'LOUD'"),
        "{}",
        out.stderr
    );
    let out = fx.run(&["stream", AGENT_NAME, "--timeout", "2h"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
}

/// Seconds since the epoch of an RFC 3339 timestamp in a JSON value.
fn chrono_secs(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("timestamp"))
        .expect("RFC 3339")
        .timestamp()
}

/// Streaming a source the agent does not have warns that nothing can match, naming the
/// sources it has; diagnostics written to a pipe carry no terminal escape codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warns_about_a_source_the_agent_lacks_in_plain_text() {
    let fx = Fixture::new().await;
    let mut cmd = fx.cli(&["stream", AGENT_NAME, "--source", "nope", "--timeout", "1"]);
    cmd.env("RUST_LOG", "debug");
    let out = common::run(cmd).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr
            .contains("agent 'test-agent' has no source 'nope' (its sources: nginx, app)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("DEBUG"), "debug diagnostics were on");
    assert!(!out.stderr.contains('\x1b'), "{:?}", out.stderr);
}
