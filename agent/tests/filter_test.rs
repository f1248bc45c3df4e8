//! `logfleet-agent filter-test` as authors run it: the real binary, lines on stdin, built-ins
//! and plugin components from `plugins/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Compiled components cached across tests and runs, so each compiles once.
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-filter-test-cache")
}

/// Runs `filter-test` with `args`, `input` on stdin.
fn filter_test(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_logfleet-agent"))
        .arg("filter-test")
        .args(args)
        .arg("--cache-dir")
        .arg(cache_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logfleet-agent");
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Bad arguments make the agent exit before it reads stdin: a broken pipe is expected then.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    child.wait_with_output().expect("logfleet-agent output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The component file of plugin crate `name`, as `cargo build` leaves it (`json_field.wasm`
/// for `json-field`): built once per test binary by testkit, as the runtime's tests do.
fn plugin_file(name: &str) -> String {
    testkit::plugin_path(name).display().to_string()
}

#[test]
fn builtins_filter_stdin_lines() {
    let input = "\
2024-01-15T10:00:00Z ERROR upstream timed out
2024-01-15T10:00:01Z INFO request timed out, retrying
2024-01-15T10:00:02Z ERROR disk full
[warn] slow query timeout=5s
";
    let out = filter_test(
        &[
            "--filters",
            r#"{"level":["error","warning"],"pattern":"time"}"#,
        ],
        input,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "2024-01-15T10:00:00Z ERROR upstream timed out\n[warn] slow query timeout=5s\n"
    );

    // Records carry the --source name.
    let out = filter_test(
        &["--filters", r#"{"source":"nginx"}"#, "--source", "nginx"],
        "a\nb",
    );
    assert_eq!(stdout(&out), "a\nb\n");
    let out = filter_test(&["--filters", r#"{"source":"nginx"}"#], "a\nb");
    assert_eq!(stdout(&out), "");
}

#[test]
fn plugin_components_run_after_the_builtins() {
    let redact = plugin_file("redact");
    // Cargo names the artifact json_field.wasm; it serves the plugin `json-field`.
    let json = plugin_file("json-field");
    assert!(json.ends_with("json_field.wasm"), "{json}");

    let out = filter_test(
        &[
            "--filters",
            r#"{"level":["error"],"plugins":[{"name":"redact","config":{}}]}"#,
            "--plugin",
            &redact,
        ],
        "ERROR login failed for bob@example.com from 10.0.0.7\nINFO alice@example.com\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ERROR login failed for <email> from <ipv4>\n");

    let out = filter_test(
        &[
            "--filters",
            r#"{"plugins":[{"name":"json-field","config":{"field":"status","equals":500}},{"name":"redact"}]}"#,
            "--plugin",
            &json,
            "--plugin",
            &redact,
        ],
        "{\"status\":500,\"user\":\"eve@example.com\"}\n{\"status\":200}\nnot json\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"status\":500,\"user\":\"<email>\"}\n");
}

/// Filters fail closed in `filter-test` as in a session: a plugin that traps is named on
/// stderr with its cause, not one line it had not decided is printed (nor any later line), and
/// the exit status is 3.
#[test]
fn failing_plugins_are_named_on_stderr_and_pass_nothing() {
    let trap = plugin_file("hostile-trap");
    let out = filter_test(
        &[
            "--filters",
            r#"{"level":["info"],"plugins":[{"name":"hostile-trap"}]}"#,
            "--plugin",
            &trap,
        ],
        "INFO one\nINFO two\nDEBUG three\n",
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("filter 'hostile-trap' failed: panicked"),
        "{err}"
    );
    assert!(err.contains("deliberate failure"), "{err}");
    assert!(err.contains("2 line(s) it had not decided"), "{err}");
    assert_eq!(
        stdout(&out),
        "",
        "nothing passes a filter that did not decide"
    );

    // A refused config is an error carrying the plugin's own message.
    let refuse = plugin_file("hostile-config");
    let out = filter_test(
        &[
            "--filters",
            r#"{"plugins":[{"name":"hostile-config","config":{"threshold":-1}}]}"#,
            "--plugin",
            &refuse,
        ],
        "x\n",
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("hostile-config: `threshold` must be a positive number"),
        "{err}"
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn bad_input_exits_non_zero_with_a_reason() {
    for (args, expect) in [
        (vec!["--filters", "{"], "--filters"),
        (vec!["--filters", r#"{"levels":["ERROR"]}"#], "levels"),
        (vec!["--filters", r#"{"level":["LOUD"]}"#], "LOUD"),
        (vec!["--filters", r#"{"pattern":"("}"#], "regex"),
        (
            vec!["--filters", r#"{"plugins":[{"name":"redact"}]}"#],
            "redact.wasm",
        ),
        (
            vec!["--filters", "{}", "--plugin", "/nonexistent/x.wasm"],
            "/nonexistent/x.wasm",
        ),
    ] {
        let out = filter_test(&args, "line\n");
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(stdout(&out), "", "{args:?}");
    }
}
