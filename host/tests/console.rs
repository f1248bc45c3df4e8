//! The web console served at `/`, in a real browser (headless Debian Chromium driven by
//! playwright-core, `host/console/test/e2e.mjs`) against a real host and agent; and its
//! security headers on the wire. Screenshots of each screen are kept under
//! `target/tmp/console-screenshots/`.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use testkit::Stack;

/// Length of the sessions the browser starts: short, so it extends past the first one's end.
const SESSION_SECONDS: u64 = 12;
/// How long the whole browser run may take before the test fails.
const BROWSER_DEADLINE: Duration = Duration::from_secs(180);
/// How often the writer appends a line: 50 lines/s, one in three at ERROR.
const WRITE_EVERY: Duration = Duration::from_millis(20);

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
}

/// The playwright-core install `scripts/setup.sh` makes; its absence fails the test, naming
/// the fix, rather than skipping it.
fn require_browser_tooling() {
    let module = console_dir().join("node_modules/playwright-core");
    assert!(
        module.is_dir(),
        "{} is missing: run scripts/setup.sh (npm ci in host/console)",
        module.display()
    );
    assert!(
        Path::new("/usr/bin/chromium").exists() || std::env::var_os("CHROMIUM").is_some(),
        "/usr/bin/chromium is missing: run scripts/setup.sh (apt-get install chromium)"
    );
}

/// Every console answer carries a CSP allowing only same-origin script, style and
/// connections (no `unsafe-inline`), and the console routes leave the API as it was: the
/// OpenAPI document is served and unknown paths still answer the JSON 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_assets_are_served_with_a_strict_csp() {
    let host = testkit::TestHost::start().await;
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let resp = http
            .get(format!("{}{path}", host.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("connect-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert!(header("access-control-allow-origin").is_empty(), "{path}");
    }
    let openapi = http
        .get(format!("{}/api/v1/openapi.json", host.base))
        .send()
        .await
        .unwrap();
    assert_eq!(openapi.status(), 200);
    let doc: Value = openapi.json().await.unwrap();
    assert!(
        doc["paths"].get("/").is_none(),
        "the console is not an API path"
    );
    let missing = http
        .get(format!("{}/console/nope.js", host.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    host.stop().await;
}

/// A session WebSocket accepts the token offered as a subprotocol (how the console's browser
/// sends it, keeping it out of the URL) and selects `logfleet` in its answer; a bad token
/// offered that way is refused with 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_websockets_take_the_token_as_a_subprotocol() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let stack = Stack::new().await;
    let session = stack.start(serde_json::json!({})).await;
    let url = session["websocket_url"].as_str().unwrap();
    let offer = |token: &str| {
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("logfleet, logfleet.token.{token}").parse().unwrap(),
        );
        request
    };
    let (_socket, answer) = tokio_tungstenite::connect_async(offer(stack.api.token()))
        .await
        .unwrap();
    assert_eq!(
        answer.headers()["sec-websocket-protocol"],
        "logfleet",
        "the host selects the plain protocol, never echoing the token"
    );
    match tokio_tungstenite::connect_async(offer("not-a-token")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        other => panic!("a bad token was not refused: {:?}", other.map(|(_, r)| r)),
    }
}

/// In a real browser, an operator signs in with a token, sees the agent online, starts a
/// stream filtered to ERROR and gets only ERROR lines, pauses and resumes without losing a
/// line, extends past the first session's end with no gap and no duplicate, and stops; a bad
/// plugin upload shows the host's validation error, an agent token gets the 403 screen and a
/// bad token the 401 screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_flow_in_headless_chromium() {
    require_browser_tooling();
    let stack = Stack::new().await;
    let host = &stack.host;

    // One line every WRITE_EVERY, numbered; every third is ERROR.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        let path = stack.logs.path("nginx.log");
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut file = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .await
                .unwrap();
            let mut tick = tokio::time::interval(WRITE_EVERY);
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) {
                tick.tick().await;
                let level = if n.is_multiple_of(3) { "ERROR" } else { "INFO" };
                let line = format!("2026-01-01T00:00:00.000Z {level} console line n={n}\n");
                file.write_all(line.as_bytes()).await.unwrap();
                n += 1;
            }
        })
    };

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let run = tokio::process::Command::new("node")
        .arg(console_dir().join("test/e2e.mjs"))
        .env("LOGFLEET_URL", &host.base)
        .env("USER_TOKEN", host.user_token("acme", "alice"))
        .env("ADMIN_TOKEN", host.admin_token("acme", "root"))
        .env(
            "AGENT_TOKEN",
            host.agent_token("acme", stack.agent_id, "edge-1"),
        )
        .env("AGENT_NAME", "edge-1")
        .env("SESSION_SECONDS", SESSION_SECONDS.to_string())
        .env("SCREENSHOTS", &screenshots)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(BROWSER_DEADLINE, run)
        .await
        .expect("the browser run finishes")
        .expect("run node (scripts/setup.sh installs it)");
    writing.store(false, Ordering::Relaxed);
    writer.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{stdout}");

    let result: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let sessions = result["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{result}");
    assert_ne!(sessions[0], sessions[1]);
    let lines = result["lines"].as_array().unwrap();
    assert!(lines.len() >= 10, "{} lines", lines.len());
    let numbers: Vec<u64> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["level"], "ERROR", "only matching lines arrive: {l}");
            let message = l["message"].as_str().unwrap();
            message
                .rsplit("n=")
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l}"))
        })
        .collect();
    // Every ERROR line from the first received to the last, once each, in order: nothing lost
    // while paused or at the switch to the second session, nothing twice.
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0] + 3, "gap or duplicate between {pair:?}");
    }
}
