//! Streams survive log rotation, with the real `logrotate`, real files, a real host and agent:
//! no line the agent could read is lost or repeated, and line numbers restart with each file.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use testkit::{Stack, WsClient, skip_until};

/// Runs `logrotate` on `file` with one directive (`create` or `copytruncate`).
fn logrotate(file: &Path, directive: &str) {
    logrotate_in(file, directive, file.parent().unwrap());
}

/// Runs `logrotate` with its config and state file in `dir`.
fn logrotate_in(file: &Path, directive: &str, dir: &Path) {
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

/// How the late-reopen test rotates the file under its writer.
#[derive(Debug, Clone, Copy)]
enum Rotation {
    /// `mv`, nothing at the path until the writer reopens (creating it).
    MvLateReopen,
    /// `mv`, then a new empty file created at once (by hand).
    MvRecreate,
    /// The real `logrotate` with `create`.
    LogrotateCreate,
}

const ROTATE_WAIT: Duration = Duration::from_secs(2);

/// A writer process that keeps its descriptor across the rotation: writes 10 lines, waits for
/// the test's go (a line on stdin), writes 5 more over one second to the same descriptor (the
/// rotated-away file), then reopens the path and writes 3 lines to the new file.
fn spawn_writer(file: &Path) -> std::process::Child {
    let script = r#"
exec 3>>"$1"
i=1; while [ $i -le 10 ]; do echo "late $i" >&3; i=$((i+1)); done
read go
for i in 11 12 13 14 15; do sleep 0.2; echo "late $i" >&3; done
exec 3>>"$1"
for i in 1 2 3; do echo "reopened $i" >&3; done
read done
"#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("writer")
        .arg(file)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Receives `n` log messages: message → (file name, line), each message once.
async fn receive(client: &mut WsClient, n: usize) -> BTreeMap<String, (String, u64)> {
    let mut got = BTreeMap::new();
    for _ in 0..n {
        let msg = client.expect_log().await;
        let file = Path::new(msg["metadata"]["file"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = msg["message"].as_str().unwrap().to_owned();
        let line = msg["metadata"]["line"].as_u64().unwrap();
        assert!(
            got.insert(text.clone(), (file, line)).is_none(),
            "twice: {msg}"
        );
    }
    got
}

/// The issue's measurement, as a test: a writer keeps its descriptor across the rename and
/// writes 5 more lines over a second before reopening. All 15 lines of the old file arrive
/// once, numbered 1–15 under the name it was followed as, and the new file's from 1.
async fn late_reopen(rotation: Rotation, glob: bool) {
    let stack = Stack::new_with(
        |_| {},
        move |agent| {
            let dir = Path::new(&agent.sources[0].path)
                .parent()
                .unwrap()
                .to_path_buf();
            let pattern = if glob { "app.log*" } else { "app.log" };
            agent.sources.push(logfleet_agent::SourceConfig::new(
                "app",
                dir.join(pattern).display().to_string(),
            ));
            agent.tuning.rotate_wait = ROTATE_WAIT;
        },
    )
    .await;
    let session = stack.start(json!({})).await;
    let mut client = stack.client(&session).await;
    stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;
    let file: PathBuf = stack.logs.path("app.log");
    let mut writer = spawn_writer(&file);
    let before = receive(&mut client, 10).await;
    for i in 1..=10u64 {
        assert_eq!(
            before[&format!("late {i}")],
            ("app.log".to_owned(), i),
            "{rotation:?}"
        );
    }

    let moved = stack.logs.path("app.log.1");
    match rotation {
        Rotation::MvLateReopen => std::fs::rename(&file, &moved).unwrap(),
        Rotation::MvRecreate => {
            std::fs::rename(&file, &moved).unwrap();
            std::fs::File::create(&file).unwrap();
        }
        Rotation::LogrotateCreate => {
            // Config and state outside the log directory, so an `app.log*` glob sees only logs.
            let conf = tempfile::tempdir().unwrap();
            logrotate_in(&file, "create", conf.path());
            assert!(moved.exists(), "logrotate renamed to app.log.1");
        }
    }
    let mut stdin = writer.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();

    let after = receive(&mut client, 8).await;
    for i in 11..=15u64 {
        assert_eq!(
            after[&format!("late {i}")],
            ("app.log".to_owned(), i),
            "{rotation:?}: the old file's lines keep its name and numbering"
        );
    }
    for i in 1..=3u64 {
        assert_eq!(
            after[&format!("reopened {i}")],
            ("app.log".to_owned(), i),
            "{rotation:?}"
        );
    }
    // Past the rotate wait the old file is closed (with a glob, taken over as app.log.1 from
    // its position): nothing arrives twice.
    client
        .expect_silence(ROTATE_WAIT + Duration::from_secs(1))
        .await;
    writeln!(stdin, "done").unwrap();
    drop(stdin);
    assert!(writer.wait().unwrap().success());
    if glob {
        // The rotated file, now followed under its own name, continues its numbering.
        stack
            .logs
            .append("app.log.1", &["appended to app.log.1"])
            .await;
        let msg = client.expect_log().await;
        assert_eq!(msg["message"], "appended to app.log.1");
        assert_eq!(msg["metadata"]["line"], 16, "{msg}");
        assert!(
            msg["metadata"]["file"]
                .as_str()
                .unwrap()
                .ends_with("app.log.1")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_reopen_after_mv_loses_nothing() {
    late_reopen(Rotation::MvLateReopen, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_reopen_after_mv_and_recreate_loses_nothing() {
    late_reopen(Rotation::MvRecreate, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_reopen_after_logrotate_create_loses_nothing() {
    late_reopen(Rotation::LogrotateCreate, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_reopen_with_a_glob_matching_the_rotated_name_repeats_nothing() {
    late_reopen(Rotation::LogrotateCreate, true).await;
}
