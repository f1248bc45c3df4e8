//! An author's workflow with the real `logfleet` binary, no host needed: `plugins new`
//! scaffolds a project whose own unit tests pass, `plugins test` runs a component over stdin as
//! an agent would. (`plugins upload`: `cli.rs`, `plugins_upload_list_stream_delete`.)

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn logfleet(args: &[&str], cwd: &Path, stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_logfleet"))
        .args(args)
        .current_dir(cwd)
        .env(
            "LOGFLEET_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("author-cache"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn run_in(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// `plugins new NAME --lang python|js` writes a project (from templates inside the binary)
/// whose own unit tests pass as written, with the WIT its build script uses; `--lang rust`
/// writes a crate named NAME; an existing directory is never overwritten.
#[test]
fn new_scaffolds_projects_whose_tests_pass() {
    let root = tempfile::tempdir().unwrap();
    let out = logfleet(
        &["plugins", "new", "py-filter", "--lang", "python"],
        root.path(),
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let py = root.path().join("py-filter");
    assert!(py.join("wit/filter.wit").exists() && py.join("build.sh").exists());
    let tests = run_in(
        &py,
        "python3",
        &["-m", "pytest", "-q", "-p", "no:cacheprovider"],
    );
    assert!(tests.status.success(), "{tests:?}");

    let out = logfleet(
        &["plugins", "new", "js-filter", "--lang", "js"],
        root.path(),
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let js = root.path().join("js-filter");
    let tests = run_in(&js, "node", &["--test"]);
    assert!(tests.status.success(), "{tests:?}");
    let package = std::fs::read_to_string(js.join("package.json")).unwrap();
    assert!(package.contains(r#""name": "js-filter""#), "{package}");

    let out = logfleet(
        &["plugins", "new", "rs-filter", "--lang", "rust"],
        root.path(),
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let manifest = std::fs::read_to_string(root.path().join("rs-filter/Cargo.toml")).unwrap();
    assert!(manifest.contains(r#"name = "rs-filter""#), "{manifest}");

    let again = logfleet(
        &["plugins", "new", "py-filter", "--lang", "js"],
        root.path(),
        "",
    );
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

/// `plugins test FILE.wasm --config JSON < lines` prints exactly the lines the plugin keeps
/// (rewritten as it rewrites them) and exits 0; a plugin failing while running is named on
/// stderr, nothing more is printed, and the exit status is 1.
#[test]
fn test_runs_a_component_over_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("my-filter.wasm");
    std::fs::copy(testkit::plugin_path("template"), &template).unwrap();
    let out = logfleet(
        &[
            "plugins",
            "test",
            "my-filter.wasm",
            "--config",
            r#"{"contains":"slow","tag":"[slow]"}"#,
        ],
        dir.path(),
        "fast request\nslow request\nanother\nslow again\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[slow] slow request\n[slow] slow again\n"
    );

    let trap = dir.path().join("hostile-trap.wasm");
    std::fs::copy(testkit::plugin_path("hostile-trap"), &trap).unwrap();
    let out = logfleet(
        &["plugins", "test", "hostile-trap.wasm"],
        dir.path(),
        "a\nb\n",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hostile-trap"),
        "{out:?}"
    );
}
