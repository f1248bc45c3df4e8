//! The real `logfleet` binary when the world misbehaves: the connection to the host drops
//! mid-stream, the host is unreachable when the CLI exits, the agent restarts when `--follow`
//! renews, and log lines carry terminal escape sequences.

mod common;

use std::time::Duration;

use common::{AGENT_NAME, Fixture, Running, sync};
use serde_json::Value;
use testkit::TcpProxy;
use tokio::time::Instant;

/// How long a whole scenario may take.
const SCENARIO: Duration = Duration::from_secs(40);

/// Appends `"{tag} n"` lines to `file` every 10 ms, n counting from 0, until aborted.
fn steady_writer(fx: &Fixture, file: &str, tag: &'static str) -> tokio::task::JoinHandle<()> {
    let path = fx.logs.path(file);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for n in 0u64.. {
            let mut f = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .await
                .expect("open log");
            f.write_all(format!("{tag} {n}\n").as_bytes())
                .await
                .expect("append");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// `(seq, n)` of a `--output json` line whose message is `"{tag} n"`; `None` for other lines
/// (sync probes).
fn numbered(line: &str, tag: &str) -> Option<(u64, u64)> {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    let n = v["message"]
        .as_str()?
        .strip_prefix(tag)?
        .trim()
        .parse()
        .ok()?;
    Some((v["seq"].as_u64().expect("seq"), n))
}

/// Reads `count` more `"cut n"` lines of `cli` into `printed`, skipping others.
async fn read_numbered(
    cli: &mut Running,
    printed: &mut Vec<(u64, u64)>,
    count: usize,
    deadline: Instant,
) {
    let target = printed.len() + count;
    while printed.len() < target {
        assert!(Instant::now() < deadline, "stderr: {:?}", cli.stderr());
        if let Some(p) = numbered(&cli.line().await, "cut") {
            printed.push(p);
        }
    }
}

/// How many stderr lines of `cli` contain `text`.
fn said(cli: &Running, text: &str) -> usize {
    cli.stderr().iter().filter(|l| l.contains(text)).count()
}

/// Asserts `printed` holds consecutive line numbers and `seq`s: every line once, none twice.
fn assert_exactly_once(printed: &[(u64, u64)], stderr: &[String]) {
    let first = printed[0].1;
    for (i, (seq, n)) in printed.iter().enumerate() {
        assert_eq!(
            *n,
            first + i as u64,
            "gap or duplicate at {i}: {:?}; stderr {stderr:?}",
            &printed[i.saturating_sub(3)..(i + 3).min(printed.len())],
        );
        if i > 0 {
            assert_eq!(*seq, printed[i - 1].0 + 1, "seq not contiguous at {i}");
        }
    }
}

/// A stream whose connection to the host is cut three times mid-flow shows every line written
/// meanwhile exactly once, and leaves no session active after Ctrl-C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_three_times_delivers_every_line_once() {
    let fx = Fixture::new().await;
    let proxy = TcpProxy::start(fx.host.addr).await;
    let url = format!("http://{}", proxy.addr);
    let mut cli = Running::spawn(fx.cli_at(
        &url,
        &[
            "stream",
            AGENT_NAME,
            "--source",
            "app",
            "--timeout",
            "60",
            "-o",
            "json",
        ],
    ));
    sync(&fx, &mut cli, "app.log", "probe").await;
    let writer = steady_writer(&fx, "app.log", "cut");
    let deadline = Instant::now() + SCENARIO;
    let mut printed = Vec::new();
    for cut in 1..=3 {
        read_numbered(&mut cli, &mut printed, 20, deadline).await;
        proxy.cut();
        // The CLI notices, and its first reconnect is refused while the proxy is down.
        wait_said(&cli, "cannot connect to session", cut).await;
        proxy.restore();
        wait_said(&cli, "resumed after seq", cut).await;
    }
    read_numbered(&mut cli, &mut printed, 30, deadline).await;
    writer.abort();
    cli.signal("INT");
    let stderr = cli.stderr();
    let (status, rest) = cli.wait().await;
    printed.extend(rest.iter().filter_map(|l| numbered(l, "cut")));
    assert_eq!(status.code(), Some(130), "stderr: {stderr:?}");
    assert_eq!(said_in(&stderr, "lost the stream"), 3, "{stderr:?}");
    assert_exactly_once(&printed, &stderr);
    assert!(
        fx.active_sessions().await.is_empty(),
        "Ctrl-C stopped the session"
    );
}

/// Waits until `cli` has said `text` on stderr `times` times; fails showing its stderr.
async fn wait_said(cli: &Running, text: &str, times: usize) {
    let deadline = Instant::now() + testkit::WAIT;
    while said(cli, text) < times {
        assert!(
            Instant::now() < deadline,
            "never said {text:?} {times} times; stderr: {:?}",
            cli.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn said_in(stderr: &[String], text: &str) -> usize {
    stderr.iter().filter(|l| l.contains(text)).count()
}

/// When the session cannot be stopped because the host is unreachable, the CLI says so once,
/// plainly, names the session, and exits non-zero; it does not claim the session stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstoppable_session_is_reported_once_with_a_failing_exit() {
    let fx = Fixture::new().await;
    let proxy = TcpProxy::start(fx.host.addr).await;
    let url = format!("http://{}", proxy.addr);
    let mut cli = Running::spawn(fx.cli_at(
        &url,
        &["stream", AGENT_NAME, "--source", "app", "--timeout", "60"],
    ));
    sync(&fx, &mut cli, "app.log", "probe").await;
    proxy.cut();
    wait_said(&cli, "lost the stream", 1).await;
    cli.signal("INT");
    let (status, stderr) = cli.wait_with_stderr().await;
    assert_eq!(status.code(), Some(6), "stderr: {stderr:?}");
    let reports: Vec<&String> = stderr
        .iter()
        .filter(|l| l.contains("could not stop session"))
        .collect();
    assert_eq!(reports.len(), 1, "{stderr:?}");
    assert!(
        reports[0].contains("stays active on the host until"),
        "{reports:?}"
    );
    assert!(
        !stderr.iter().any(|l| l.contains("session stopped")),
        "{stderr:?}"
    );
    // It told the truth: the session is still running.
    let active = fx.active_sessions().await;
    assert_eq!(active.len(), 1, "{active:?}");
}

/// `--follow` rides out an agent that is offline when the next session is due: it says so,
/// retries, and streams again once the agent is back, ending with no active session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_carries_on_across_an_agent_restart_at_renewal() {
    let mut fx = Fixture::new().await;
    let mut cli = fx.spawn(&[
        "stream",
        AGENT_NAME,
        "--source",
        "app",
        "--follow",
        "--timeout",
        "2",
        "-o",
        "json",
    ]);
    sync(&fx, &mut cli, "app.log", "before").await;
    fx.stop_agent().await;
    // Renewal and expiry both come while the agent is away.
    testkit::wait_for(|| async { (said(&cli, "cannot start a session") >= 1).then_some(()) }).await;
    fx.start_agent().await;
    sync(&fx, &mut cli, "app.log", "after").await;
    cli.signal("INT");
    let stderr = cli.stderr();
    let (status, _) = cli.wait().await;
    assert_eq!(status.code(), Some(130), "stderr: {stderr:?}");
    assert!(
        stderr.iter().any(|l| l.contains("started session")),
        "{stderr:?}"
    );
    assert!(
        fx.active_sessions().await.is_empty(),
        "Ctrl-C stopped every session"
    );
}

/// `logfleet ARGS` with its stdout on a pseudo-terminal (util-linux `script`), read line by
/// line.
fn on_a_terminal(fx: &Fixture, args: &[&str]) -> Running {
    let mut command = vec![env!("CARGO_BIN_EXE_logfleet")];
    command.extend_from_slice(args);
    let mut cmd = tokio::process::Command::new("script");
    // Notices go to stderr, which would share the terminal with the log lines: keep them out.
    let shell = format!("{} 2>/dev/null", command.join(" "));
    cmd.args(["-q", "-e", "-c", &shell, "/dev/null"]);
    let reference = fx.cli(&[]);
    for (k, v) in reference.as_std().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    Running::spawn(cmd)
}

/// On a terminal, escape sequences in log content are shown escaped, never written raw;
/// `--raw` writes them unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_never_reach_a_terminal_raw() {
    let fx = Fixture::new().await;
    let hostile = "evil \x1b[2J\x1b]0;pwned\x07 end";
    for raw in [false, true] {
        let mut args = vec!["stream", AGENT_NAME, "--source", "app", "--timeout", "4"];
        if raw {
            args.push("--raw");
        }
        let mut cli = on_a_terminal(&fx, &args);
        sync(&fx, &mut cli, "app.log", if raw { "raw" } else { "tty" }).await;
        fx.logs.append("app.log", &[hostile]).await;
        let mut line = cli.line().await;
        while !line.contains("evil") {
            line = cli.line().await;
        }
        if raw {
            assert!(line.contains(hostile), "--raw writes unchanged: {line:?}");
        } else {
            assert!(
                line.contains(r"evil \e[2J\e]0;pwned\x07 end"),
                "shown escaped: {line:?}"
            );
            assert!(
                !line.contains("\x1b[2J") && !line.contains("\x1b]0") && !line.contains('\x07'),
                "nothing raw: {line:?}"
            );
            assert!(
                line.contains("\x1b[0m"),
                "still coloured on a TTY: {line:?}"
            );
        }
        // The session times out by itself; the CLI exits 0.
        let (status, _) = cli.wait().await;
        assert_eq!(status.code(), Some(0));
    }
}

/// `--follow` rides out a host restart: the session ends with `shutdown`, and the CLI streams
/// on in a new session (started, with retries, once the host and agent are back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_carries_on_across_a_host_restart() {
    let mut fx = Fixture::new().await;
    let mut cli = fx.spawn(&[
        "stream",
        AGENT_NAME,
        "--source",
        "app",
        "--follow",
        "--timeout",
        "60",
        "-o",
        "json",
    ]);
    sync(&fx, &mut cli, "app.log", "before").await;
    fx.host.restart().await;
    fx.api
        .wait_agent_status(&fx.agent_id.to_string(), "online")
        .await;
    sync(&fx, &mut cli, "app.log", "after").await;
    cli.signal("INT");
    let (status, stderr) = cli.wait_with_stderr().await;
    assert_eq!(status.code(), Some(130), "stderr: {stderr:?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("ended: the host is shutting down; continuing in session")),
        "{stderr:?}"
    );
    assert!(fx.active_sessions().await.is_empty());
}
