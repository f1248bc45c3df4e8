//! The processes a benchmark runs against: a `logfleet-host` and a `logfleet-agent` binary on
//! loopback, the agent linked through a byte-counting proxy, plus the /proc readings (RSS, CPU
//! time) every benchmark reports.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use logfleet_host::auth::{Auth, Role};
use serde_json::{Value, json};
use testkit::{Api, LogDir, SECRET, WsClient};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How to start a [`Rig`]'s agent.
pub struct AgentOptions {
    /// Log files tailed: `app.log`, then `app-2.log`, … (`app`, `app2`, … as sources).
    pub sources: usize,
    /// `--metrics-interval`, when not the default.
    pub metrics: Option<&'static str>,
    /// Compiled-filter cache; the shared test cache when `None` (components compile once).
    pub cache_dir: Option<PathBuf>,
    /// Keep the agent's `info` log lines, each with the instant it was read (see
    /// [`Rig::agent_log`]): how session-start latency is observed.
    pub capture_log: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            sources: 1,
            metrics: None,
            cache_dir: None,
            capture_log: false,
        }
    }
}

/// A host process, an agent process connected to it, their log files and a user.
pub struct Rig {
    pub host: HostProcess,
    pub agent: Child,
    pub api: Api,
    pub token: String,
    pub agent_id: Uuid,
    pub logs: LogDir,
    pub link: CountingProxy,
    bin_dir: PathBuf,
    agent_token: String,
    options: AgentOptions,
    /// The agent's log lines and when they were read, when captured.
    agent_log: Option<AgentLog>,
}

impl Rig {
    pub async fn start(bin_dir: &Path) -> anyhow::Result<Rig> {
        Self::start_with(bin_dir, AgentOptions::default()).await
    }

    pub async fn start_with(bin_dir: &Path, options: AgentOptions) -> anyhow::Result<Rig> {
        let host = HostProcess::start(bin_dir, &[]).await?;
        let logs = LogDir::new();
        logs.create("app.log", &[]);
        for n in 2..=options.sources {
            logs.create(&format!("app-{n}.log"), &[]);
        }
        let link = CountingProxy::start(host.process.port).await?;
        let agent_id = Uuid::new_v4();
        let agent_token = host.auth.mint(
            &agent_id.to_string(),
            "bench",
            Role::Agent,
            Some("bench"),
            Duration::from_secs(3600),
        )?;
        let (agent, agent_log) = launch_agent(bin_dir, link.port, &agent_token, &options, &logs)?;
        let mut rig = Rig {
            api: host.api.clone(),
            token: host.token.clone(),
            host,
            agent,
            agent_id,
            logs,
            link,
            bin_dir: bin_dir.to_owned(),
            agent_token,
            options,
            agent_log,
        };
        rig.wait_online().await?;
        Ok(rig)
    }

    /// Restarts the agent process (same id, files and cache) and waits until it is online.
    pub async fn restart_agent(&mut self) -> anyhow::Result<()> {
        let _ = self.agent.kill().await;
        let (agent, log) = launch_agent(
            &self.bin_dir,
            self.link.port,
            &self.agent_token,
            &self.options,
            &self.logs,
        )?;
        self.agent = agent;
        self.agent_log = log;
        self.wait_online().await
    }

    /// Waits until the host lists the agent online. Generous: an agent with an empty cache
    /// compiles its built-in filters before it connects.
    async fn wait_online(&mut self) -> anyhow::Result<()> {
        let path = format!("/api/v1/agents/{}", self.agent_id);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, agent) = self.api.get(&path).await;
            if agent["agent"]["status"] == "online" {
                return Ok(());
            }
            let exited = self.agent.try_wait()?;
            if exited.is_some() || Instant::now() > deadline {
                let mut said = Vec::new();
                if let Some(log) = self.agent_log.as_mut() {
                    while let Ok((_, line)) = log.try_recv() {
                        said.push(line);
                    }
                }
                match exited {
                    Some(status) => bail!("the agent exited ({status}): {}", said.join("\n")),
                    None => bail!("the agent was not online within 120 s: {}", said.join("\n")),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the agent's first log line containing every one of `words`; when it was read,
    /// and the lines read before it (with their instants), which show where the time went.
    pub async fn agent_log_line(
        &mut self,
        words: &[&str],
        within: Duration,
    ) -> anyhow::Result<(Instant, Vec<(Instant, String)>)> {
        let log = self
            .agent_log
            .as_mut()
            .context("start the rig with capture_log")?;
        let deadline = tokio::time::Instant::now() + within;
        let mut before = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, log.recv()).await {
                Ok(Some((at, line))) if words.iter().all(|w| line.contains(w)) => {
                    return Ok((at, before));
                }
                Ok(Some(seen)) => before.push(seen),
                Ok(None) => bail!("the agent's log ended"),
                Err(_) => bail!("no agent log line with {words:?} within {within:?}"),
            }
        }
    }

    /// Starts a session with `body` (merged over this agent and a 1 h timeout); its id and URL.
    pub async fn start_session(&self, body: Value) -> anyhow::Result<(String, String)> {
        let mut request = json!({"agent_id": self.agent_id, "timeout_seconds": 3600});
        if let (Some(req), Value::Object(extra)) = (request.as_object_mut(), body) {
            req.extend(extra);
        }
        let (status, created) = self.api.post("/api/v1/stream/start", &request).await;
        if status != 200 {
            bail!("stream/start answered {status}: {created}");
        }
        let session = &created["session"];
        Ok((
            session["id"].as_str().context("session.id")?.to_owned(),
            session["websocket_url"]
                .as_str()
                .context("websocket_url")?
                .to_owned(),
        ))
    }

    /// Starts a session allowing `rate` lines/s and returns a client past a probe line.
    pub async fn session(&self, rate: u64) -> anyhow::Result<(WsClient, String)> {
        let (_, url) = self
            .start_session(json!({"limits": {
                "lines_per_second": (rate * 2).clamp(2000, 50_000),
                "bytes_per_second": 32 << 20}}))
            .await?;
        let mut client = WsClient::connect(&url, &self.token, None).await;
        for n in 0..500 {
            self.logs.append("app.log", &[&format!("probe {n}")]).await;
            if client.next(Duration::from_millis(20)).await.is_ok() {
                // Let any probes in flight arrive, then start clean.
                while client.next(Duration::from_millis(200)).await.is_ok() {}
                return Ok((client, url));
            }
        }
        bail!("the session never became active")
    }

    /// Lines the agent has counted so far, summed over the metrics history the host keeps.
    pub async fn lines_counted(&self) -> u64 {
        let (_, metrics) = self
            .api
            .get(&format!("/api/v1/agents/{}/metrics", self.agent_id))
            .await;
        metrics["history"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|report| report["sources"].as_array().into_iter().flatten())
            .filter_map(|source| source["lines"].as_u64())
            .sum()
    }

    pub fn agent_pid(&self) -> anyhow::Result<u32> {
        self.agent.id().context("agent pid")
    }

    pub fn host_pid(&self) -> anyhow::Result<u32> {
        self.host.process.child.id().context("host pid")
    }

    pub async fn stop(mut self) {
        let _ = self.agent.kill().await;
        let _ = self.host.process.child.kill().await;
    }
}

/// The agent's log lines, each with the instant the benchmark read it.
type AgentLog = mpsc::UnboundedReceiver<(Instant, String)>;

/// Starts the `logfleet-agent` binary tailing `logs`, connected to `port`.
fn launch_agent(
    bin_dir: &Path,
    port: u16,
    token: &str,
    options: &AgentOptions,
    logs: &LogDir,
) -> anyhow::Result<(Child, Option<AgentLog>)> {
    let mut agent = Command::new(bin_dir.join("logfleet-agent"));
    agent
        .args([
            "--host",
            &format!("http://127.0.0.1:{port}"),
            "--token",
            token,
        ])
        .arg(format!("--source=app={}", logs.path("app.log").display()));
    for n in 2..=options.sources {
        let path = logs.path(&format!("app-{n}.log"));
        agent.arg(format!("--source=app{n}={}", path.display()));
    }
    if let Some(interval) = options.metrics {
        agent.arg(format!("--metrics-interval={interval}"));
    }
    let cache = options
        .cache_dir
        .clone()
        .unwrap_or_else(testkit::test_cache_dir);
    let filter = if options.capture_log {
        "warn,logfleet_agent=info,logfleet_filter_runtime=info"
    } else {
        "warn"
    };
    agent
        .arg(format!("--cache-dir={}", cache.display()))
        .env("RUST_LOG", filter)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if options.capture_log {
        agent.stderr(Stdio::piped());
    }
    let mut child = agent.spawn().context("starting logfleet-agent")?;
    let log = child.stderr.take().map(|stderr| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        rx
    });
    Ok((child, log))
}

/// A `logfleet-host` process on a free loopback port, and a user token for it.
pub struct HostProcess {
    pub process: testkit::HostProcess,
    pub api: Api,
    pub token: String,
    pub auth: Auth,
}

impl HostProcess {
    pub async fn start(bin_dir: &Path, extra_args: &[&str]) -> anyhow::Result<HostProcess> {
        let extra: Vec<&std::ffi::OsStr> = extra_args.iter().map(|a| a.as_ref()).collect();
        let process = testkit::HostProcess::try_spawn(&bin_dir.join("logfleet-host"), &extra)
            .await
            .context("starting logfleet-host (build with `cargo build --release --workspace`)")?;
        let auth = Auth::new(SECRET.as_bytes());
        let token = auth.mint(
            "bench",
            "bench",
            // Admin: the benches upload plugins.
            Role::Admin,
            None,
            Duration::from_secs(3600),
        )?;
        Ok(HostProcess {
            api: Api::new(
                &format!("http://127.0.0.1:{}", process.port),
                Some(token.clone()),
            ),
            process,
            token,
            auth,
        })
    }
}

/// Counts the bytes an agent link carries each way, on the wire (WebSocket framing included).
pub struct CountingProxy {
    pub port: u16,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl CountingProxy {
    pub async fn start(target: u16) -> anyhow::Result<CountingProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (u, d) = (up.clone(), down.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, u.clone()));
                tokio::spawn(pump(ro, wi, d.clone()));
            }
        });
        Ok(CountingProxy { port, up, down })
    }

    /// Bytes agent → host and host → agent so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }
}

/// Copies one direction of a connection, counting bytes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Resident memory of a process, in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    testkit::process_memory_kib(pid, "VmRSS").unwrap_or(0)
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// CPU use of a process over a stretch of wall time, as a share of one core.
pub struct CpuMeter {
    pid: u32,
    cpu: f64,
    wall: Instant,
}

impl CpuMeter {
    pub fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            cpu: cpu_seconds(pid),
            wall: Instant::now(),
        }
    }

    /// CPU seconds used since the start.
    pub fn cpu(&self) -> f64 {
        cpu_seconds(self.pid) - self.cpu
    }

    /// Percent of one core since the start.
    pub fn percent(&self) -> f64 {
        self.cpu() * 100.0 / self.wall.elapsed().as_secs_f64()
    }
}

/// The `p` quantile (0..=1) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
