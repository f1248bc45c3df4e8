//! Shared helpers for LogFleet's cross-process tests: a real host on a real socket, a real
//! agent (in-process or as its binary), real log files, and WebSocket clients. Nothing here is
//! a mock; helpers only start, drive and observe the real parts.
//!
//! Timers are shortened through configuration (ping intervals, metrics interval, poll
//! interval), never by sleeping in tests.
//!
//! - [`raw_agent`]: a hand-driven agent link speaking the agent protocol frame by frame.

pub mod raw_agent;

pub mod pki;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use logfleet_host::auth::{Auth, Role};
use logfleet_host::config::{Config, LimitConfig, Tuning};
use logfleet_host::tls::TlsFiles;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// The JWT secret test hosts use.
pub const SECRET: &str = "testkit-secret-0123456789abcdef-0123456789";
/// How long a test waits for anything before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// Sends host and agent logs to the test's captured output; `RUST_LOG` picks the level.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A host serving on 127.0.0.1 with test timers.
pub struct TestHost {
    pub addr: SocketAddr,
    pub base: String,
    /// Set when the host serves TLS (then `base` is `https://localhost:PORT`).
    pub tls: Option<TlsFiles>,
    auth: Auth,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _data: tempfile::TempDir,
}

/// Fast timers for tests.
pub fn test_tuning() -> Tuning {
    Tuning {
        ping_interval: Duration::from_millis(300),
        // Tests leave clients unread for a while; they must not be dropped as dead meanwhile.
        idle_timeout: Duration::from_secs(20),
        ..Tuning::default()
    }
}

impl TestHost {
    pub async fn start() -> TestHost {
        Self::start_with(|_| {}).await
    }

    /// Starts a host on a free port, letting the test adjust its configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestHost {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), adjust).await
    }

    /// Starts a host on a given address (to restart one where agents expect it).
    pub async fn start_on(addr: SocketAddr, adjust: impl FnOnce(&mut Config)) -> TestHost {
        Self::start_in(addr, tempfile::tempdir().expect("temp dir"), adjust).await
    }

    /// Starts a host on a given address with a given data directory (a restart that keeps
    /// what the host persisted: plugins, enrollments, revocations, the audit trail).
    pub async fn start_in(
        addr: SocketAddr,
        data: tempfile::TempDir,
        adjust: impl FnOnce(&mut Config),
    ) -> TestHost {
        init_tracing();
        let listener = bind_retrying(addr).await;
        let addr = listener.local_addr().expect("local addr");
        let mut config = Config {
            listen: addr,
            data_dir: data.path().to_path_buf(),
            public_url: None,
            jwt_secret: SECRET.as_bytes().to_vec(),
            jwt: Default::default(),
            tls: None,
            cors_origins: Vec::new(),
            limits: LimitConfig::default(),
            tuning: test_tuning(),
        };
        adjust(&mut config);
        let tls = config.tls.clone();
        let base = match tls {
            Some(_) => format!("https://localhost:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(logfleet_host::serve(config, listener, async {
            let _ = stopped.await;
        }));
        TestHost {
            addr,
            base,
            tls,
            auth: Auth::new(SECRET.as_bytes()),
            stop: Some(stop),
            task: Some(task),
            _data: data,
        }
    }

    /// Starts a host serving HTTPS and WSS with `pki`'s server certificate.
    pub async fn start_tls(pki: &pki::TestPki, adjust: impl FnOnce(&mut Config)) -> TestHost {
        let files = pki.tls_files();
        Self::start_with(move |config| {
            config.tls = Some(files);
            adjust(config);
        })
        .await
    }

    pub fn user_token(&self, org: &str, sub: &str) -> String {
        self.auth
            .mint(sub, org, Role::User, None, Duration::from_secs(3600))
            .expect("mint")
    }

    pub fn admin_token(&self, org: &str, sub: &str) -> String {
        self.auth
            .mint(sub, org, Role::Admin, None, Duration::from_secs(3600))
            .expect("mint")
    }

    /// A REST client acting as admin `sub` of `org`.
    pub fn admin(&self, org: &str, sub: &str) -> Api {
        Api::new(&self.base, Some(self.admin_token(org, sub)))
    }

    pub fn agent_token(&self, org: &str, id: Uuid, name: &str) -> String {
        self.auth
            .mint(
                &id.to_string(),
                org,
                Role::Agent,
                Some(name),
                Duration::from_secs(3600),
            )
            .expect("mint")
    }

    /// The agent link URL, `ws://…/api/v1/agent/connect`.
    pub fn agent_url(&self) -> String {
        format!("ws://{}/api/v1/agent/connect", self.addr)
    }

    /// A REST client acting as `sub` of `org`.
    pub fn api(&self, org: &str, sub: &str) -> Api {
        Api::new(&self.base, Some(self.user_token(org, sub)))
    }

    /// Shuts the host down gracefully and starts a fresh one (empty state) on the same address.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        let tls = self.tls.clone();
        *self = TestHost::start_on(self.addr, |config| config.tls = tls).await;
    }

    /// Shuts the host down gracefully and starts it again on the same address and data
    /// directory, as an operator's restart would.
    pub async fn restart_keeping_data(&mut self, adjust: impl FnOnce(&mut Config)) {
        self.shutdown().await;
        let data = std::mem::replace(&mut self._data, tempfile::tempdir().expect("temp dir"));
        let tls = self.tls.clone();
        *self = TestHost::start_in(self.addr, data, |config| {
            config.tls = tls;
            adjust(config);
        })
        .await;
    }

    /// Shuts the host down gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(WAIT, task).await;
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binding right after a previous host on the same port closed can briefly fail.
async fn bind_retrying(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("bind {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A small REST client returning `(status, json)`.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// A client of an `https://` host that trusts only the CA of `tls` (see [`pki::TestPki`]).
    pub fn with_tls(base: &str, token: Option<String>, tls: Arc<rustls::ClientConfig>) -> Api {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(rustls::ClientConfig::clone(&tls))
            .build()
            .expect("HTTPS client");
        Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    pub fn with_token(&self, token: Option<String>) -> Api {
        Api {
            token,
            ..self.clone()
        }
    }

    pub fn token(&self) -> &str {
        self.token.as_deref().unwrap_or_default()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn send_delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    /// POSTs `body` as it is with `Content-Type: application/json` (malformed JSON on purpose).
    pub async fn post_json_bytes(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).body(body))
            .await
    }

    /// Starts a session; panics unless the host accepts it. Returns the `session` object.
    pub async fn start_session(&self, body: Value) -> Value {
        let (status, json) = self.post("/api/v1/stream/start", &body).await;
        assert_eq!(status, 200, "start failed: {json}");
        json["session"].clone()
    }

    /// Waits until the agent shows as `online` (or `offline`).
    pub async fn wait_agent_status(&self, agent: &str, status: &str) -> Value {
        wait_for(|| async {
            let (code, json) = self.get(&format!("/api/v1/agents/{agent}")).await;
            (code == 200 && json["agent"]["status"] == status).then(|| json["agent"].clone())
        })
        .await
    }
}

/// Waits until something listens on loopback `port` (a host process that is starting).
pub async fn wait_listening(port: u16) {
    wait_for(|| async {
        let up = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok();
        up.then_some(())
    })
    .await;
}

/// A memory figure of a process from `/proc/PID/status`, in KiB: `VmRSS` (resident now) or
/// `VmHWM` (the most it was ever resident). `None` where there is no such file (not Linux).
pub fn process_memory_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Polls `check` until it returns `Some`, or panics after [`WAIT`].
pub async fn wait_for<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An agent running in this process through the agent library, on real files and sockets.
pub struct InProcessAgent {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Agent configuration with test timers.
pub fn agent_config(
    host: &TestHost,
    token: String,
    sources: &[(&str, &Path)],
) -> logfleet_agent::Config {
    agent_config_for(&host.base, token, sources)
}

/// Agent configuration with test timers, for a host at `base` (e.g. a host binary).
pub fn agent_config_for(
    base: &str,
    token: String,
    sources: &[(&str, &Path)],
) -> logfleet_agent::Config {
    logfleet_agent::Config {
        host: base.to_owned(),
        token,
        name: "test-agent".to_owned(),
        labels: Default::default(),
        sources: sources
            .iter()
            .map(|(name, path)| {
                logfleet_agent::SourceConfig::new(*name, path.display().to_string())
            })
            .collect(),
        metrics_interval: Duration::from_millis(200),
        tuning: fast_agent_tuning(),
        ca_cert: None,
    }
}

/// One compiled-filter cache for every test agent, kept between runs (components compile once),
/// and never the user's own `~/.cache`.
pub fn test_cache_dir() -> PathBuf {
    std::env::temp_dir().join("logfleet-test-cache")
}

/// Agent timers shortened for tests.
pub fn fast_agent_tuning() -> logfleet_agent::Tuning {
    logfleet_agent::Tuning {
        poll_interval: Duration::from_millis(10),
        glob_interval: Duration::from_millis(100),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(300),
        batch_interval: Duration::from_millis(10),
        cache_dir: Some(test_cache_dir()),
        // Its own state (the default would sit in the shared test cache), so no test agent
        // resumes another's sessions. Small; left in the temp dir like the cache.
        state_dir: Some(
            std::env::temp_dir()
                .join("logfleet-test-state")
                .join(Uuid::new_v4().to_string()),
        ),
        ..logfleet_agent::Tuning::default()
    }
}

impl InProcessAgent {
    pub fn start(config: logfleet_agent::Config) -> InProcessAgent {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let result = logfleet_agent::run(config, async {
                let _ = stopped.await;
            })
            .await;
            if let Err(e) = result {
                panic!("agent failed: {e}");
            }
        });
        InProcessAgent {
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(WAIT, task).await;
        }
    }
}

impl Drop for InProcessAgent {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// An agent running as its own binary.
pub struct AgentProcess {
    pub child: tokio::process::Child,
    /// The state directory given when the caller gave none (the default would sit in the
    /// shared test cache).
    _state: Option<tempfile::TempDir>,
}

impl AgentProcess {
    /// Spawns `binary` with `args` (plus test timers); stderr goes to the test's output.
    /// Without a `--state-dir` in `args`, the agent gets a fresh one of its own.
    pub fn spawn(binary: &Path, args: &[String]) -> AgentProcess {
        Self::spawn_with_env(binary, args, &[])
    }

    /// Like [`AgentProcess::spawn`], with `env` added (e.g. `LD_PRELOAD` of libfaketime: the
    /// agent stays this process's child, so signals and `kill_on_drop` reach it, which a
    /// wrapper that forks would not let them).
    pub fn spawn_with_env(binary: &Path, args: &[String], env: &[(&str, &str)]) -> AgentProcess {
        let state = (!args.iter().any(|a| a.starts_with("--state-dir")))
            .then(|| tempfile::tempdir().expect("temp state dir"));
        let mut command = tokio::process::Command::new(binary);
        if let Some(state) = &state {
            command.arg(format!("--state-dir={}", state.path().display()));
        }
        let child = command
            .args(args)
            .args([
                "--poll-interval=10ms",
                "--glob-interval=100ms",
                "--reconnect-min=50ms",
                "--reconnect-max=300ms",
                "--batch-interval=10ms",
            ])
            .arg(format!("--cache-dir={}", test_cache_dir().display()))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn agent binary");
        AgentProcess {
            child,
            _state: state,
        }
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and waits until it is gone.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL the agent");
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("agent gone after SIGKILL")
            .expect("wait");
    }

    /// Sends SIGTERM and waits for a graceful exit; returns the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("agent exits after SIGTERM")
            .expect("wait")
    }
}

/// A `logfleet-host` binary serving on a free loopback port with a temporary data dir and the
/// test secret, for tests of the real process (signals, TLS flags, its memory).
pub struct HostProcess {
    pub child: tokio::process::Child,
    pub port: u16,
    _data: tempfile::TempDir,
}

impl HostProcess {
    /// Starts `binary serve` with `extra` arguments and waits until it listens.
    pub async fn spawn(binary: &Path, extra: &[&std::ffi::OsStr]) -> HostProcess {
        HostProcess::try_spawn(binary, extra)
            .await
            .expect("spawn logfleet-host")
    }

    /// Like [`HostProcess::spawn`], for callers that report a missing binary themselves.
    pub async fn try_spawn(
        binary: &Path,
        extra: &[&std::ffi::OsStr],
    ) -> std::io::Result<HostProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data = tempfile::tempdir()?;
        let child = tokio::process::Command::new(binary)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data.path())
            .args(extra)
            .env("LOGFLEET_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        wait_listening(port).await;
        Ok(HostProcess {
            child,
            port,
            _data: data,
        })
    }

    /// Sends SIGTERM (a graceful shutdown) without waiting.
    pub fn signal_term(&self) {
        if let Some(pid) = self.child.id() {
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(sent.success(), "kill -TERM {pid}");
        }
    }

    /// Waits (at most [`WAIT`]) for the process to exit.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("host exits")
            .expect("wait")
    }
}

/// A temp directory of log files that tests append to.
pub struct LogDir {
    pub dir: tempfile::TempDir,
}

impl LogDir {
    pub fn new() -> LogDir {
        LogDir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates (or truncates) a file with these lines.
    pub fn create(&self, name: &str, lines: &[&str]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(
            &path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .expect("write log");
        path
    }

    /// Appends lines to a file, creating it if needed.
    pub async fn append(&self, name: &str, lines: &[&str]) {
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))
            .await
            .expect("open log");
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        f.write_all(text.as_bytes()).await.expect("append");
        f.flush().await.expect("flush");
    }
}

impl Default for LogDir {
    fn default() -> Self {
        Self::new()
    }
}

/// The `plugins/` guest workspace (example and hostile plugins).
pub fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

/// Builds `plugins/` (release, wasm32-wasip2) once per test binary; cargo makes later builds
/// no-ops. The nested cargo must not inherit this build's CARGO_* and RUSTFLAGS settings.
fn built_plugins() -> &'static Path {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = plugins_dir();
        let mut command = std::process::Command::new(env!("CARGO"));
        command
            .current_dir(&dir)
            .args(["build", "--release", "--target", "wasm32-wasip2"]);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if (k.starts_with("CARGO_") && k != "CARGO_HOME")
                || k == "RUSTFLAGS"
                || k.starts_with("RUSTC_")
            {
                command.env_remove(&key);
            }
        }
        let status = command.status().expect("run cargo for plugins/");
        assert!(status.success(), "building plugins/ failed");
        dir.join("target/wasm32-wasip2/release")
    })
}

/// The component file of plugin crate `name` (e.g. `redact`, `hostile-loop`).
pub fn plugin_path(name: &str) -> PathBuf {
    built_plugins().join(format!("{}.wasm", name.replace('-', "_")))
}

/// The component bytes of plugin crate `name`.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    let path = plugin_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Languages of the plugin kits beside the Rust ones in `plugins/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginLang {
    /// `plugins/python/<dir>`, built by componentize-py.
    Python,
    /// `plugins/js/<dir>`, built by componentize-js.
    Js,
}

impl PluginLang {
    fn dir(self) -> &'static str {
        match self {
            PluginLang::Python => "python",
            PluginLang::Js => "js",
        }
    }

    /// The files a build of `dir` depends on: its own sources, the kit's helper library, and
    /// the WIT.
    fn inputs(self, dir: &Path) -> Vec<PathBuf> {
        let kit = plugins_dir().join(self.dir());
        let mut inputs = vec![
            dir.join("build.sh"),
            plugins_dir().join("../wit/filter.wit"),
        ];
        match self {
            PluginLang::Python => {
                inputs.push(dir.join("app.py"));
                inputs.push(kit.join("template/logfleet_filter.py"));
            }
            PluginLang::Js => {
                inputs.push(dir.join("filter.js"));
                inputs.push(kit.join("template/logfleet-filter.js"));
            }
        }
        inputs
    }
}

/// The component of the Python or JavaScript plugin in `plugins/<lang>/<dir>`, built with its
/// own `build.sh` (the real toolchain: `scripts/setup.sh` installs it) and kept under
/// `plugins/target/polyglot/`, named by a digest of its inputs: componentize-py takes ~15 s,
/// so a build is made once and reused by every later test run until a source changes.
pub fn polyglot_plugin_path(lang: PluginLang, dir: &str) -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let source = plugins_dir().join(lang.dir()).join(dir);
    let mut key = Vec::new();
    for input in lang.inputs(&source) {
        let bytes =
            std::fs::read(&input).unwrap_or_else(|e| panic!("read {}: {e}", input.display()));
        key.extend_from_slice(logfleet_filter_runtime::digest(&bytes).as_bytes());
    }
    let digest = logfleet_filter_runtime::digest(&key);
    let hex = &digest["sha256:".len().."sha256:".len() + 16];
    let out_dir = plugins_dir().join("target/polyglot");
    let out = out_dir.join(format!("{}-{dir}-{hex}.wasm", lang.dir()));
    if out.exists() {
        return out;
    }
    std::fs::create_dir_all(&out_dir).expect("create plugins/target/polyglot");
    // Built under a name of its own, then renamed: another test binary may build it too.
    let partial = out_dir.join(format!(
        ".{}-{dir}-{hex}.{}.wasm",
        lang.dir(),
        std::process::id()
    ));
    let status = std::process::Command::new(source.join("build.sh"))
        .arg(&partial)
        .status()
        .unwrap_or_else(|e| panic!("run {}/build.sh: {e}", source.display()));
    assert!(
        status.success(),
        "building {} failed (is its toolchain installed? scripts/setup.sh)",
        source.display()
    );
    std::fs::rename(&partial, &out).expect("rename the built plugin");
    out
}

/// A session WebSocket client.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a WebSocket ended.
#[derive(Debug)]
pub enum WsEnd {
    Closed(Option<CloseFrame>),
    Timeout,
}

impl WsClient {
    /// Connects to `ws_url` with `?token=` (and `since_seq`).
    pub async fn connect(ws_url: &str, token: &str, since_seq: Option<u64>) -> WsClient {
        let mut url = format!("{ws_url}?token={token}");
        if let Some(s) = since_seq {
            url.push_str(&format!("&since_seq={s}"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        WsClient { ws }
    }

    /// Like [`WsClient::connect`], for a `wss://` URL, trusting what `tls` trusts.
    pub async fn connect_tls(
        ws_url: &str,
        token: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> WsClient {
        let url = format!("{ws_url}?token={token}");
        let connector = tokio_tungstenite::Connector::Rustls(tls);
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
                .await
                .expect("wss connect");
        WsClient { ws }
    }

    /// The HTTP status a refused WebSocket upgrade answers.
    pub async fn refused_status(url: &str) -> u16 {
        match tokio_tungstenite::connect_async(url).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => panic!("unexpected websocket error: {e}"),
        }
    }

    /// The next JSON message, or the way the socket ended.
    pub async fn next(&mut self, within: Duration) -> Result<Value, WsEnd> {
        // One deadline for the whole call: pings must not extend it.
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(WsEnd::Timeout),
                Ok(None) => return Err(WsEnd::Closed(None)),
                Ok(Some(Err(_))) => return Err(WsEnd::Closed(None)),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Ok(serde_json::from_str(&t).expect("client message is JSON"));
                }
                Ok(Some(Ok(Message::Close(frame)))) => return Err(WsEnd::Closed(frame)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next message, which must arrive within [`WAIT`].
    pub async fn expect(&mut self) -> Value {
        match self.next(WAIT).await {
            Ok(v) => v,
            Err(e) => panic!("expected a message, got {e:?}"),
        }
    }

    /// The next `log` message, skipping nothing: panics if a control message comes first.
    pub async fn expect_log(&mut self) -> Value {
        let msg = self.expect().await;
        assert_eq!(msg["type"], "log", "expected a log message, got {msg}");
        msg
    }

    /// The next `control` message with this event, skipping log messages before it.
    pub async fn expect_event(&mut self, event: &str) -> Value {
        loop {
            let msg = self.expect().await;
            if msg["type"] == "control" && msg["event"] == event {
                return msg;
            }
        }
    }

    /// Asserts nothing arrives for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(v) = self.next(quiet).await {
            panic!("expected silence, got {v}");
        }
    }

    /// Waits for the server's close and returns its frame.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            match self.next(WAIT).await {
                Ok(_) => continue,
                Err(WsEnd::Closed(frame)) => return frame,
                Err(WsEnd::Timeout) => panic!("socket did not close"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A whole stack for end-to-end tests: a host, one agent `edge-1` of org `acme` tailing
/// `nginx.log` (source `nginx`, two lines already in it) and `api.log` (source `api-gateway`),
/// and user `alice` of `acme`.
pub struct Stack {
    pub host: TestHost,
    pub agent: Option<InProcessAgent>,
    pub logs: LogDir,
    /// User `alice` of `acme`.
    pub api: Api,
    /// Admin `root` of `acme` (plugin uploads, enrollment).
    pub admin: Api,
    pub agent_id: Uuid,
    /// Set when the agent reaches the host through a [`TcpProxy`] (see [`Stack::behind_proxy`]).
    pub proxy: Option<TcpProxy>,
    adjust_agent: AgentAdjust,
}

/// A change a test makes to the stack's agent configuration.
type AgentAdjust = Box<dyn Fn(&mut logfleet_agent::Config) + Send + Sync>;

impl Stack {
    pub async fn new() -> Stack {
        Self::new_with(|_| {}, |_| {}).await
    }

    /// A stack whose host and agent configurations the test adjusts (the agent's adjustment
    /// applies to every restart too).
    pub async fn new_with(
        adjust_host: impl FnOnce(&mut Config),
        adjust_agent: impl Fn(&mut logfleet_agent::Config) + Send + Sync + 'static,
    ) -> Stack {
        Self::build(adjust_host, adjust_agent, false).await
    }

    /// Like [`Stack::new_with`], with the agent connecting through a [`TcpProxy`] the test can
    /// cut.
    pub async fn behind_proxy(
        adjust_host: impl FnOnce(&mut Config),
        adjust_agent: impl Fn(&mut logfleet_agent::Config) + Send + Sync + 'static,
    ) -> Stack {
        Self::build(adjust_host, adjust_agent, true).await
    }

    async fn build(
        adjust_host: impl FnOnce(&mut Config),
        adjust_agent: impl Fn(&mut logfleet_agent::Config) + Send + Sync + 'static,
        via_proxy: bool,
    ) -> Stack {
        let host = TestHost::start_with(adjust_host).await;
        let proxy = if via_proxy {
            Some(TcpProxy::start(host.addr).await)
        } else {
            None
        };
        let logs = LogDir::new();
        logs.create("nginx.log", &["old line 1", "old line 2"]);
        logs.create("api.log", &[]);
        let agent_id = Uuid::new_v4();
        let api = host.api("acme", "alice");
        let admin = host.admin("acme", "root");
        let mut fx = Stack {
            host,
            agent: None,
            logs,
            api,
            admin,
            agent_id,
            proxy,
            adjust_agent: Box::new(adjust_agent),
        };
        fx.start_agent().await;
        fx
    }

    pub async fn start_agent(&mut self) {
        let token = self.host.agent_token("acme", self.agent_id, "edge-1");
        let nginx = self.logs.path("nginx.log");
        let api = self.logs.path("api.log");
        let mut config = agent_config(
            &self.host,
            token,
            &[("nginx", &nginx), ("api-gateway", &api)],
        );
        if let Some(proxy) = &self.proxy {
            config.host = format!("http://{}", proxy.addr);
        }
        (self.adjust_agent)(&mut config);
        self.agent = Some(InProcessAgent::start(config));
        self.api
            .wait_agent_status(&self.agent_id.to_string(), "online")
            .await;
    }

    /// Shuts the host down gracefully and starts a new one on the same address (sessions are
    /// in memory and end; agents reconnect by themselves).
    pub async fn restart_host(&mut self) {
        self.host.restart().await;
    }

    pub async fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
    }

    /// Starts a 300 s session on the agent with `extra` merged into the request body.
    pub async fn start(&self, extra: Value) -> Value {
        let mut body = json!({"agent_id": self.agent_id, "timeout_seconds": 300});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.api.start_session(body).await
    }

    pub async fn client(&self, session: &Value) -> WsClient {
        WsClient::connect(
            session["websocket_url"].as_str().expect("websocket_url"),
            self.api.token(),
            None,
        )
        .await
    }

    /// Appends probe lines to the stack's `file` until `client` receives one: see [`sync`].
    pub async fn sync(
        &self,
        file: &str,
        probe: impl Fn(usize) -> String,
        client: &mut WsClient,
    ) -> String {
        sync(&self.logs, file, probe, client).await
    }
}

/// Appends probe lines (made by `probe`) to `file` in `logs` until `client` receives one, so
/// the session is known to be active on the agent; then reads up to the last probe written.
/// Returns that probe's text, for other clients to skip to.
pub async fn sync(
    logs: &LogDir,
    file: &str,
    probe: impl Fn(usize) -> String,
    client: &mut WsClient,
) -> String {
    for n in 0..200 {
        let line = probe(n);
        logs.append(file, &[&line]).await;
        if let Ok(msg) = client.next(Duration::from_millis(100)).await {
            assert_eq!(msg["type"], "log", "unexpected {msg}");
            if msg["message"] != as_sent(&line) {
                skip_until(client, &line).await;
            }
            return line;
        }
    }
    panic!("session never became active on the agent");
}

/// Reads log messages until the one of the line `text` (whose `message` is the line without
/// the prefix the agent parses off, see [`as_sent`]).
pub async fn skip_until(client: &mut WsClient, text: &str) {
    let message = as_sent(text);
    loop {
        let msg = client.expect().await;
        if msg["message"] == message {
            return;
        }
    }
}

/// The `message` clients get for a line of an `auto` source: for helpers that wait for a
/// line whatever its form. Tests of parsing itself spell out what they expect.
pub fn as_sent(line: &str) -> String {
    use logfleet_protocol::parse::{Format, Timezone, parse_line};
    parse_line(line, Format::Auto, Timezone::UTC, 0)
        .message
        .into_owned()
}

/// A TCP proxy on 127.0.0.1 that a test can cut and restore, or blackhole, to sever a link
/// between two real processes without touching either.
pub struct TcpProxy {
    pub addr: SocketAddr,
    state: std::sync::Arc<ProxyState>,
    task: JoinHandle<()>,
}

struct ProxyState {
    up: std::sync::atomic::AtomicBool,
    /// Bumped on every cut; connection tasks of an older generation end.
    generation: tokio::sync::watch::Sender<u64>,
    /// Bumped on every blackhole; connections open then stop forwarding.
    blackholes: tokio::sync::watch::Sender<u64>,
    /// Bumped to close the connections a blackhole silenced.
    releases: tokio::sync::watch::Sender<u64>,
}

impl TcpProxy {
    /// Forwards connections to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = std::sync::Arc::new(ProxyState {
            up: std::sync::atomic::AtomicBool::new(true),
            generation: tokio::sync::watch::channel(0).0,
            blackholes: tokio::sync::watch::channel(0).0,
            releases: tokio::sync::watch::channel(0).0,
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !shared.up.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the peer sees the connection close at once
                }
                let mut cut = shared.generation.subscribe();
                let mut silenced = shared.blackholes.subscribe();
                let mut released = shared.releases.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                        _ = cut.changed() => return,
                        _ = silenced.changed() => {}
                    }
                    // Blackholed: nothing more is read or written either way (bytes the copy
                    // held are lost, as in the network), and both sockets stay open — to each
                    // peer the link has gone silent, not closed — until released or cut.
                    tokio::select! {
                        _ = released.changed() => {}
                        _ = cut.changed() => {}
                    }
                    drop((inbound, outbound));
                });
            }
        });
        TcpProxy { addr, state, task }
    }

    /// Closes every proxied connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.state
            .up
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.state.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.state
            .up
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops forwarding on every connection open now, in both directions, and keeps their
    /// sockets open: each peer sees a link that went silent without a reset (a NAT timeout, a
    /// pulled cable, a suspended VM) and writes into it until it notices. New connections are
    /// forwarded as usual, as after the network comes back.
    pub fn blackhole(&self) {
        self.state.blackholes.send_modify(|g| *g += 1);
    }

    /// Closes the connections [`TcpProxy::blackhole`] silenced: their peers see them end.
    pub fn drop_blackholed(&self) {
        self.state.releases.send_modify(|g| *g += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A line-based control socket for a [`TcpProxy`], so test suites in other languages (the
/// Python and TypeScript clients') can cut and restore the connection their client uses while
/// the proxy runs here. Send `cut\n` or `restore\n`; each is answered `ok\n` once done
/// (anything else: `error\n`).
pub struct ProxyControl {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ProxyControl {
    /// Serves control connections for `proxy` on a free 127.0.0.1 port.
    pub async fn start(proxy: Arc<TcpProxy>) -> ProxyControl {
        use tokio::io::AsyncBufReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy control");
        let addr = listener.local_addr().expect("proxy control addr");
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = tokio::io::BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let answer: &[u8] = match line.trim() {
                            "cut" => {
                                proxy.cut();
                                b"ok\n"
                            }
                            "restore" => {
                                proxy.restore();
                                b"ok\n"
                            }
                            _ => b"error\n",
                        };
                        if write.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        ProxyControl { addr, task }
    }
}

impl Drop for ProxyControl {
    fn drop(&mut self) {
        self.task.abort();
    }
}
