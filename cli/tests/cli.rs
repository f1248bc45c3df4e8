//! The real `logfleet` binary against a real host and in-process agent: tables, streaming with
//! every filter, `--follow` across sessions, clean-up on Ctrl-C / broken pipe, exit codes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{AGENT_NAME, Fixture, Running, sync};
use serde_json::{Value, json};
use uuid::Uuid;

/// Parses a `--output json` line and checks it is a reference log object.
fn log_object(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(v["type"], "log", "{v}");
    assert!(v["seq"].is_u64(), "{v}");
    assert!(
        v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );
    for key in ["level", "source", "message"] {
        assert!(v[key].is_string(), "{v}");
    }
    assert!(v["metadata"]["host"].is_string(), "{v}");
    assert!(v["metadata"]["file"].is_string(), "{v}");
    assert!(v["metadata"]["line"].as_u64().is_some_and(|l| l > 0), "{v}");
    v
}

/// The message of a `--output json` line.
fn message(line: &str) -> String {
    log_object(line)["message"]
        .as_str()
        .expect("message is a string")
        .to_owned()
}

/// Streams with `filter` args, writes `lines` (file, text), and checks exactly `expected`
/// messages are printed, as JSON log objects; then Ctrl-C.
async fn check_filter(
    filter: &[&str],
    probe: (&str, &str),
    lines: &[(&str, &str)],
    expected: &[&str],
) {
    let fx = Fixture::new().await;
    let mut args = vec!["stream", AGENT_NAME, "--output", "json", "--timeout", "60"];
    args.extend_from_slice(filter);
    let mut cli = fx.spawn(&args);
    sync(&fx, &mut cli, probe.0, probe.1).await;
    for (file, line) in lines {
        fx.logs.append(file, &[line]).await;
    }
    let mut got = BTreeSet::new();
    while got.len() < expected.len() {
        got.insert(message(&cli.line().await));
    }
    cli.signal("INT");
    let (status, rest) = cli.wait().await;
    for line in rest {
        got.insert(message(&line));
    }
    let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(got, expected);
    assert_eq!(status.code(), Some(130));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_level_filter() {
    check_filter(
        &["--level", "ERROR,WARN"],
        ("app.log", "ERROR probe"),
        &[
            ("app.log", "INFO fine"),
            ("app.log", "ERROR broken"),
            ("app.log", "DEBUG noise"),
            ("app.log", "WARN careful"),
            ("nginx.log", "[error] nginx broke"),
        ],
        &["broken", "careful", "nginx broke"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_source_filter() {
    check_filter(
        &["--source", "nginx"],
        ("nginx.log", "probe"),
        &[
            ("app.log", "app line"),
            ("nginx.log", "GET /a 200"),
            ("app.log", "ERROR app line"),
            ("nginx.log", "GET /b 500"),
        ],
        &["GET /a 200", "GET /b 500"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_pattern_filter() {
    check_filter(
        &["--pattern", "user_id=1234[5]"],
        ("app.log", "probe user_id=12345"),
        &[
            ("app.log", "login user_id=12345"),
            ("app.log", "login user_id=99"),
            ("nginx.log", "GET /?user_id=12345"),
            ("app.log", "logout user_id=12346"),
        ],
        &["login user_id=12345", "GET /?user_id=12345"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_without_tty_is_plain() {
    let fx = Fixture::new().await;
    let mut cli = fx.spawn(&["stream", AGENT_NAME, "--source", "app", "--level", "error"]);
    sync(&fx, &mut cli, "app.log", "ERROR probe").await;
    fx.logs.append("app.log", &["ERROR disk full"]).await;
    let line = cli.line().await;
    assert!(
        !line.contains('\x1b'),
        "no colour when not a terminal: {line:?}"
    );
    assert!(line.ends_with(" ERROR app: disk full"), "{line}");
    cli.signal("TERM");
    assert_eq!(cli.wait().await.0.code(), Some(130));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_crosses_sessions_without_gap_or_duplicate() {
    let fx = Fixture::new().await;
    let mut cli = fx.spawn(&[
        "stream",
        AGENT_NAME,
        "--source",
        "app",
        "--follow",
        "--timeout",
        "2",
        "--output",
        "json",
    ]);
    // A steady writer: line n says "follow n".
    let path = fx.logs.path("app.log");
    let writer = tokio::spawn(async move {
        for n in 0u64.. {
            append(&path, &format!("follow {n}")).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut printed: Vec<(u64, u64)> = Vec::new(); // (seq, n)
    // Two "continuing" notices: the CLI has switched sessions twice (at ~2 s and ~3 s).
    let rolled = |cli: &Running| {
        cli.stderr()
            .iter()
            .filter(|l| l.contains("continuing in session"))
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut extra = 0;
    while extra < 30 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stderr: {:?}",
            cli.stderr()
        );
        let v = log_object(&cli.line().await);
        let n = v["message"]
            .as_str()
            .unwrap()
            .strip_prefix("follow ")
            .unwrap()
            .parse()
            .unwrap();
        printed.push((v["seq"].as_u64().unwrap(), n));
        if rolled(&cli) >= 2 {
            extra += 1;
        }
    }
    cli.signal("INT");
    let stderr = cli.stderr();
    let (status, rest) = cli.wait().await;
    writer.abort();
    for line in rest {
        let v = log_object(&line);
        let n = v["message"]
            .as_str()
            .unwrap()
            .strip_prefix("follow ")
            .unwrap()
            .parse()
            .unwrap();
        printed.push((v["seq"].as_u64().unwrap(), n));
    }
    assert_eq!(status.code(), Some(130));
    let first = printed[0].1;
    for (i, (seq, n)) in printed.iter().enumerate() {
        assert_eq!(
            *n,
            first + i as u64,
            "gap or duplicate at {i}: {:?}; stderr {:?}",
            &printed[i.saturating_sub(3)..(i + 3).min(printed.len())],
            stderr
        );
        if i > 0 {
            assert_eq!(*seq, printed[i - 1].0 + 1, "seq not contiguous at {i}");
        }
    }
    assert!(printed.len() > 200, "streamed for ~3 s: {}", printed.len());
    assert!(
        fx.active_sessions().await.is_empty(),
        "Ctrl-C stopped every session"
    );
}

/// Appends one line to a file (for a writer task, which cannot borrow the fixture's `LogDir`).
async fn append(path: &std::path::Path, line: &str) {
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await
        .expect("open log");
    f.write_all(format!("{line}\n").as_bytes())
        .await
        .expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_session_on_the_host() {
    let fx = Fixture::new().await;
    let cli = fx.spawn(&["stream", AGENT_NAME, "--timeout", "60"]);
    testkit::wait_for(|| async {
        let sessions = fx.active_sessions().await;
        sessions
            .iter()
            .any(|s| s["clients"].as_u64() == Some(1))
            .then_some(())
    })
    .await;
    cli.signal("INT");
    let stderr = cli.stderr();
    let (status, _) = cli.wait().await;
    assert_eq!(status.code(), Some(130), "stderr: {stderr:?}");
    assert!(
        fx.active_sessions().await.is_empty(),
        "session stopped before exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_pipe_stops_the_session() {
    let fx = Fixture::new().await;
    let mut cli = fx.spawn(&["stream", AGENT_NAME, "--source", "app", "--timeout", "60"]);
    sync(&fx, &mut cli, "app.log", "probe").await;
    cli.close_stdout();
    // The next lines hit the closed pipe.
    for n in 0..50 {
        fx.logs
            .append("app.log", &[&format!("after close {n}")])
            .await;
        if cli.child.try_wait().expect("try_wait").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = cli.wait().await;
    assert_eq!(status.code(), Some(0));
    assert!(
        fx.active_sessions().await.is_empty(),
        "session stopped before exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_sessions_and_stop_commands() {
    let fx = Fixture::new().await;
    let out = fx.run(&["agents"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(header, ["NAME", "ID", "STATUS", "LAST SEEN", "SOURCES"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let id = fx.agent_id.to_string();
    assert_eq!(row[..3], [AGENT_NAME, id.as_str(), "online"]);
    assert!(row[3].ends_with('s') && row[4] == "ago", "{row:?}");
    assert_eq!(row[5], "nginx,app");

    let session = fx
        .api
        .start_session(json!({"agent_id": AGENT_NAME, "timeout_seconds": 60}))
        .await;
    let sid = session["id"].as_str().unwrap();
    let out = fx.run(&["sessions"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("ID "), "{}", out.stdout);
    assert!(
        out.stdout.contains(sid) && out.stdout.contains(AGENT_NAME),
        "{}",
        out.stdout
    );

    let out = fx.run(&["stop", sid]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), format!("stopped {sid}"));
    assert!(fx.active_sessions().await.is_empty());
    let out = fx.run(&["stop", sid]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes() {
    let mut fx = Fixture::new().await;

    let out = fx.run(&["agents", "--token", "not-a-jwt"]).await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr.starts_with("logfleet: error: ") && out.stderr.lines().count() == 1,
        "{}",
        out.stderr
    );
    let out = fx
        .run(&["stream", AGENT_NAME, "--token", "not-a-jwt"])
        .await;
    assert_eq!(out.code, Some(3), "{out:?}");
    let mut no_token = fx.cli(&["agents"]);
    no_token.env_remove("LOGFLEET_TOKEN");
    assert_eq!(common::run(no_token).await.code, Some(3));

    let out = fx.run(&["stream", "no-such-agent"]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("no-such-agent"), "{}", out.stderr);

    let out = fx.run(&["stream", AGENT_NAME, "--pattern", "("]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    let out = fx.run(&["stream"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    let out = fx.run(&["stream", AGENT_NAME, "--timeout", "0"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");

    // A port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let out = fx.run(&["agents", "--url", &url]).await;
    assert_eq!(out.code, Some(6), "{out:?}");
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);

    fx.stop_agent().await;
    let out = fx.run(&["stream", AGENT_NAME]).await;
    assert_eq!(out.code, Some(5), "{out:?}");
    assert!(out.stderr.contains("offline"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_upload_list_stream_delete() {
    let fx = Fixture::new().await;
    let wasm = testkit::plugin_path("redact");
    let wasm = wasm.to_str().expect("utf-8 path");

    let out = fx.run(&["plugins", "upload", "redact", wasm]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.starts_with("uploaded redact (sha256:"),
        "{}",
        out.stdout
    );
    let out = fx.run(&["plugins", "list"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut lines = out.stdout.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("NAME")));
    assert!(
        lines
            .next()
            .is_some_and(|r| r.starts_with("redact  sha256:")),
        "{}",
        out.stdout
    );

    let mut cli = fx.spawn(&[
        "stream",
        AGENT_NAME,
        "--source",
        "app",
        "--plugin",
        r#"redact={"patterns":["card=\\d+"]}"#,
        "--output",
        "json",
    ]);
    sync(&fx, &mut cli, "app.log", "probe").await;
    fx.logs
        .append("app.log", &["pay card=4111 from bob@example.com"])
        .await;
    assert_eq!(message(&cli.line().await), "pay *** from <email>");
    cli.signal("INT");
    assert_eq!(cli.wait().await.0.code(), Some(130));

    let out = fx.run(&["plugins", "delete", "redact"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "deleted redact");
    assert_eq!(fx.run(&["plugins", "list"]).await.stdout.lines().count(), 1);
    let out = fx.run(&["plugins", "delete", "redact"]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    let out = fx.run(&["stream", AGENT_NAME, "--plugin", "redact"]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("plugin_not_found"), "{}", out.stderr);
}

/// An admin enrolls an agent (its id and token printed once) and revokes it; a user gets the
/// auth exit code for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_enroll_and_revoke() {
    let fx = Fixture::new().await;
    let out = fx
        .run(&[
            "agents", "enroll", "edge-x", "--label", "env=prod", "--json",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let enrolled: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    let id = enrolled["agent_id"].as_str().expect("agent_id").to_owned();
    assert!(
        enrolled["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    let out = fx.run(&["agents"]).await;
    assert!(
        out.stdout.contains("edge-x") && out.stdout.contains(&id),
        "{}",
        out.stdout
    );

    let user = fx.host.user_token("acme", "bob");
    let out = fx
        .run(&["--token", &user, "agents", "revoke", "edge-x"])
        .await;
    assert_eq!(out.code, Some(3), "{out:?}");
    let out = fx.run(&["agents", "revoke", "edge-x"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.starts_with(&format!("revoked agent {id}")),
        "{}",
        out.stdout
    );
    assert!(!fx.run(&["agents"]).await.stdout.contains("edge-x"));
    let out = fx.run(&["agents", "enroll", "bad\nname"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
}

/// `stream --selector` streams every agent carrying the labels in one session, and text lines
/// name the agent that read them; several AGENTs do the same for the agents named. Naming
/// agents and a selector together, or following a fleet, is a usage error (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_several_agents_with_an_agent_column() {
    let fx = Fixture::new().await;
    let mut agents = Vec::new();
    for name in ["edge-2", "edge-3"] {
        let id = Uuid::new_v4();
        let path = fx.logs.create(&format!("{name}.log"), &[]);
        let mut config = testkit::agent_config(
            &fx.host,
            fx.host.agent_token("acme", id, name),
            &[("app", &path)],
        );
        config.name = name.to_owned();
        config.labels = [("env".to_owned(), "prod".to_owned())].into();
        agents.push(testkit::InProcessAgent::start(config));
        fx.api.wait_agent_status(&id.to_string(), "online").await;
    }
    for args in [
        vec!["stream", "--selector", "env=prod", "--timeout", "60"],
        vec!["stream", "edge-2", "edge-3", "--timeout", "60"],
    ] {
        let mut cli = fx.spawn(&args);
        let mut seen = BTreeSet::new();
        for n in 0..400 {
            for name in ["edge-2", "edge-3"] {
                if !seen.contains(name) {
                    fx.logs
                        .append(&format!("{name}.log"), &[&format!("INFO probe {n}")])
                        .await;
                }
            }
            while let Some(line) = cli.line_within(Duration::from_millis(25)).await {
                for name in ["edge-2", "edge-3"] {
                    if line.contains(&format!(" INFO  {name} app: probe")) {
                        seen.insert(name);
                    }
                }
            }
            if seen.len() == 2 {
                break;
            }
        }
        assert_eq!(
            seen.len(),
            2,
            "{args:?}: lines of both agents, with their names"
        );
        cli.signal("INT");
        assert_eq!(cli.wait().await.0.code(), Some(130));
    }
    for args in [
        vec!["stream", "edge-2", "--selector", "env=prod"],
        vec!["stream", "--selector", "env=prod", "--follow"],
        vec!["stream", "--selector", "envprod"],
    ] {
        let out = fx.run(&args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
    }
}
