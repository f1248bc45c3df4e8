//! Helpers shared by the CLI's cross-process tests: a real host and in-process agent (from
//! testkit), and the real `logfleet` binary run as a child process.

#![allow(dead_code)] // each test binary uses a different subset

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::pki::TestPki;
use testkit::{Api, InProcessAgent, LogDir, TestHost, WAIT, agent_config};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use uuid::Uuid;

/// The agent's name in every fixture.
pub const AGENT_NAME: &str = "test-agent";

/// A host, one agent `test-agent` of org `acme` tailing `nginx.log` (source `nginx`) and
/// `app.log` (source `app`), and a user token.
pub struct Fixture {
    pub host: TestHost,
    pub agent: Option<InProcessAgent>,
    pub logs: LogDir,
    pub api: Api,
    pub agent_id: Uuid,
    pub token: String,
    /// The agent's configuration, to start it again after [`Fixture::stop_agent`].
    agent_config: logfleet_agent::Config,
}

impl Fixture {
    pub async fn new() -> Fixture {
        Fixture::on(TestHost::start().await, None).await
    }

    /// The same over HTTPS and WSS with `pki`'s certificate; the agent trusts its CA.
    pub async fn new_tls(pki: &TestPki) -> Fixture {
        Fixture::on(TestHost::start_tls(pki, |_| {}).await, Some(pki)).await
    }

    async fn on(host: TestHost, pki: Option<&TestPki>) -> Fixture {
        let logs = LogDir::new();
        let nginx = logs.create("nginx.log", &[]);
        let app = logs.create("app.log", &[]);
        let agent_id = Uuid::new_v4();
        let agent_token = host.agent_token("acme", agent_id, AGENT_NAME);
        let mut config = agent_config(&host, agent_token, &[("nginx", &nginx), ("app", &app)]);
        config.name = AGENT_NAME.to_owned();
        config.ca_cert = pki.map(|p| p.ca_cert.clone());
        let agent = InProcessAgent::start(config.clone());
        // An admin: the CLI's plugin commands are admin-only.
        let user = host.admin_token("acme", "alice");
        let api = match pki {
            Some(pki) => Api::with_tls(&host.base, Some(user), pki.client_config()),
            None => Api::new(&host.base, Some(user)),
        };
        api.wait_agent_status(&agent_id.to_string(), "online").await;
        let token = api.token().to_owned();
        Fixture {
            host,
            agent: Some(agent),
            logs,
            api,
            agent_id,
            token,
            agent_config: config,
        }
    }

    /// `logfleet ARGS` configured for this host through the environment.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logfleet"));
        cmd.args(args)
            .env("LOGFLEET_URL", &self.host.base)
            .env("LOGFLEET_TOKEN", &self.token)
            .env_remove("NO_COLOR")
            .env(
                "RUST_LOG",
                std::env::var("CLI_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// `logfleet ARGS` talking to the host at `url` (a proxy in front of it, say).
    pub fn cli_at(&self, url: &str, args: &[&str]) -> Command {
        let mut cmd = self.cli(args);
        cmd.env("LOGFLEET_URL", url);
        cmd
    }

    /// Runs `logfleet ARGS` to completion.
    pub async fn run(&self, args: &[&str]) -> Output {
        run(self.cli(args)).await
    }

    /// Starts `logfleet ARGS` in the background.
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(self.cli(args))
    }

    /// Ids of the org's active sessions on the host.
    pub async fn active_sessions(&self) -> Vec<serde_json::Value> {
        let (status, body) = self.api.get("/api/v1/stream/sessions").await;
        assert_eq!(status, 200, "{body}");
        body["sessions"].as_array().cloned().unwrap_or_default()
    }

    /// Starts the agent again after [`Fixture::stop_agent`] and waits until it is online.
    pub async fn start_agent(&mut self) {
        self.agent = Some(InProcessAgent::start(self.agent_config.clone()));
        self.api
            .wait_agent_status(&self.agent_id.to_string(), "online")
            .await;
    }

    pub async fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
        self.api
            .wait_agent_status(&self.agent_id.to_string(), "offline")
            .await;
    }
}

/// How long one probe waits for its line before the next is written.
const PROBE_WAIT: Duration = Duration::from_millis(100);

/// Appends probe lines to `file` until the running CLI prints one, so the session is known to
/// be active on the agent; then reads up to the last probe written.
pub async fn sync(fx: &Fixture, cli: &mut Running, file: &str, probe: &str) {
    for n in 0..200 {
        // The full stop keeps "probe 1." from matching "probe 12.".
        let line = format!("{probe} {n}.");
        fx.logs.append(file, &[&line]).await;
        if let Some(mut printed) = cli.line_within(PROBE_WAIT).await {
            let message = testkit::as_sent(&line);
            while !printed.contains(&message) {
                printed = cli.line().await;
            }
            return;
        }
    }
    panic!("session never became active; stderr: {:?}", cli.stderr());
}

/// What a finished `logfleet` run produced.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub async fn run(mut cmd: Command) -> Output {
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("logfleet finishes in time")
        .expect("run logfleet");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `logfleet` child whose stdout arrives line by line and whose stderr is collected.
pub struct Running {
    pub child: Child,
    out: mpsc::UnboundedReceiver<String>,
    err: Arc<Mutex<Vec<String>>>,
    /// The task collecting stderr: done once the child's stderr is closed.
    err_task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn logfleet");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, out) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = Arc::new(Mutex::new(Vec::new()));
        let sink = err.clone();
        let err_task = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("stderr lock").push(line);
            }
        });
        Running {
            child,
            out,
            err,
            err_task,
        }
    }

    /// The next stdout line within `within`, or `None`.
    pub async fn line_within(&mut self, within: Duration) -> Option<String> {
        tokio::time::timeout(within, self.out.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next stdout line, which must come within [`WAIT`].
    pub async fn line(&mut self) -> String {
        match self.line_within(WAIT).await {
            Some(l) => l,
            None => panic!("no output line; stderr: {:?}", self.stderr()),
        }
    }

    /// Stops reading stdout: the pipe closes, so the child's next write fails with EPIPE.
    pub fn close_stdout(&mut self) {
        self.out.close();
        while self.out.try_recv().is_ok() {}
    }

    pub fn stderr(&self) -> Vec<String> {
        self.err.lock().expect("stderr lock").clone()
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("child running");
        let status = std::process::Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for exit; returns the status and everything it wrote to stderr.
    pub async fn wait_with_stderr(mut self) -> (ExitStatus, Vec<String>) {
        let err = self.err.clone();
        let err_task = std::mem::replace(&mut self.err_task, tokio::spawn(async {}));
        let (status, _) = self.wait().await;
        tokio::time::timeout(WAIT, err_task)
            .await
            .expect("stderr closes after exit")
            .expect("stderr reader");
        let stderr = err.lock().expect("stderr lock").clone();
        (status, stderr)
    }

    /// Waits for exit; returns the status and the stdout lines not read yet.
    pub async fn wait(mut self) -> (ExitStatus, Vec<String>) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("logfleet exits in time")
            .expect("wait");
        let mut rest = Vec::new();
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_millis(500), self.out.recv()).await
        {
            rest.push(line);
        }
        (status, rest)
    }
}
