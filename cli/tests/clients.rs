//! Runs the Python (`clients/python`) and TypeScript (`clients/typescript`) client test suites
//! against a real host and in-process agent tailing a temp file as source `app`.
//!
//! The suites read `LOGFLEET_URL`, `LOGFLEET_TOKEN`, `LOGFLEET_AGENT_ID` and
//! `LOGFLEET_LOG_FILE`, and for the resume tests `LOGFLEET_PROXY_URL` (the same host through
//! testkit's cuttable [`TcpProxy`]) and `LOGFLEET_PROXY_CONTROL` (`host:port` of its
//! [`ProxyControl`] socket: send `cut` / `restore`). The Python suite imports the client from
//! this checkout (`PYTHONPATH`), never an installed copy. Their dependencies are installed by
//! `scripts/setup.sh`; if they are missing this test fails and says so, rather than passing
//! without having run anything.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use std::sync::Arc;

use testkit::{InProcessAgent, LogDir, ProxyControl, TcpProxy, TestHost, agent_config};
use tokio::process::Command;
use uuid::Uuid;

/// How long each suite may take in total.
const SUITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

/// A host and agent, and the environment the client suites read.
struct Env {
    _host: TestHost,
    _agent: InProcessAgent,
    _logs: LogDir,
    /// One cuttable proxy per suite: the suites run at once, and one's cuts must not break the
    /// other's streams.
    proxies: Vec<(Arc<TcpProxy>, ProxyControl)>,
    vars: Vec<(&'static str, String)>,
}

impl Env {
    /// The proxy variables for suite number `suite`.
    fn proxy_vars(&self, suite: usize) -> Vec<(&'static str, String)> {
        let (proxy, control) = &self.proxies[suite];
        vec![
            ("LOGFLEET_PROXY_URL", format!("http://{}", proxy.addr)),
            ("LOGFLEET_PROXY_CONTROL", control.addr.to_string()),
        ]
    }
}

/// The Python interpreter the suite runs on: `LOGFLEET_TEST_PYTHON` (e.g. a virtualenv with
/// the minimum versions of `clients/python/constraints-min.txt`), else `python3` on PATH.
fn python() -> String {
    std::env::var("LOGFLEET_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// The Python client's source, put first on `PYTHONPATH`.
fn python_path() -> String {
    repo_root().join("clients/python/src").display().to_string()
}

async fn start() -> Env {
    let host = TestHost::start().await;
    let logs = LogDir::new();
    let file = logs.create("app.log", &[]);
    let id = Uuid::new_v4();
    let mut config = agent_config(
        &host,
        host.agent_token("acme", id, "client-agent"),
        &[("app", &file)],
    );
    config.name = "client-agent".to_owned();
    let agent = InProcessAgent::start(config);
    let api = host.api("acme", "alice");
    api.wait_agent_status(&id.to_string(), "online").await;
    let mut proxies = Vec::new();
    for _suite in 0..2 {
        let proxy = Arc::new(TcpProxy::start(host.addr).await);
        let control = ProxyControl::start(proxy.clone()).await;
        proxies.push((proxy, control));
    }
    let vars = vec![
        ("PYTHONPATH", python_path()),
        ("LOGFLEET_URL", host.base.clone()),
        ("LOGFLEET_TOKEN", api.token().to_owned()),
        ("LOGFLEET_AGENT_ID", id.to_string()),
        ("LOGFLEET_LOG_FILE", file.display().to_string()),
    ];
    Env {
        _host: host,
        _agent: agent,
        _logs: logs,
        proxies,
        vars,
    }
}

/// Runs a command to completion (asynchronously: the host and agent run in this process) and
/// returns its exit success and combined output; on timeout, kills it and returns what it
/// printed so far.
async fn run(mut cmd: Command, env: &Env, suite: usize) -> (bool, String) {
    use tokio::io::AsyncReadExt;
    cmd.envs(env.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .envs(env.proxy_vars(suite))
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills npm's and node's children too (they hold
        // the output pipes open).
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let (mut stdout, mut stderr) = (
        child.stdout.take().expect("piped stdout"),
        child.stderr.take().expect("piped stderr"),
    );
    let out = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf).await;
        buf
    });
    let err = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf).await;
        buf
    });
    let status = match tokio::time::timeout(SUITE_TIMEOUT, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-KILL", &format!("-{pid}")])
                    .status()
                    .await;
            }
            let _ = child.wait().await;
            None
        }
    };
    let text = format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.await.unwrap_or_default()),
        String::from_utf8_lossy(&err.await.unwrap_or_default()),
        if status.is_none() {
            "\n(timed out and killed)"
        } else {
            ""
        }
    );
    (status.is_some_and(|s| s.success()), text)
}

/// Fails with instructions when the Python client or its test deps are not installed.
async fn require_python() {
    let out = Command::new(python())
        .args(["-c", "import logfleet, httpx, websockets, pytest"])
        .env("PYTHONPATH", python_path())
        .current_dir(repo_root())
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "the Python client or its test dependencies are missing ({}): run `scripts/setup.sh`, \
             which runs `pip install -e 'clients/python[test]'`",
            match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                Err(e) => e.to_string(),
            }
        ),
    }
}

/// Fails with instructions when the TypeScript client's node_modules are not installed.
fn require_node_modules() {
    let ts = repo_root().join("clients/typescript");
    for dep in ["typescript", "ws", "@types/node"] {
        assert!(
            ts.join("node_modules").join(dep).exists(),
            "clients/typescript/node_modules/{dep} is missing: run `scripts/setup.sh`, which \
             runs `npm ci --prefix clients/typescript`"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_typescript_clients_pass_against_a_real_host() {
    require_python().await;
    require_node_modules();
    let env = start().await;

    let mut pytest = Command::new(python());
    pytest
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--durations=5",
            "clients/python/tests",
        ])
        .current_dir(repo_root());
    let mut npm = Command::new("npm");
    npm.args(["test"])
        .current_dir(repo_root().join("clients/typescript"));

    let ((py_ok, py_out), (ts_ok, ts_out)) = tokio::join!(run(pytest, &env, 0), run(npm, &env, 1));

    eprintln!("--- pytest ---\n{py_out}\n--- npm test ---\n{ts_out}");
    assert!(py_ok, "pytest failed:\n{py_out}");
    let passed = py_out
        .lines()
        .find_map(|l| l.split(" passed").next().filter(|_| l.contains(" passed")))
        .and_then(|n| n.trim().rsplit(' ').next()?.parse::<u32>().ok());
    assert!(
        passed.is_some_and(|n| n > 0)
            && !py_out.contains("skipped")
            && !py_out.contains("no tests ran"),
        "pytest ran no tests or skipped some:\n{py_out}"
    );

    assert!(ts_ok, "npm test failed:\n{ts_out}");
    let count = |label: &str| {
        ts_out
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("ℹ {label} ")))
            .and_then(|n| n.trim().parse::<u32>().ok())
    };
    assert!(
        count("pass").is_some_and(|n| n > 0)
            && count("fail") == Some(0)
            && count("skipped") == Some(0),
        "node --test ran no tests, or failed or skipped some:\n{ts_out}"
    );
}
