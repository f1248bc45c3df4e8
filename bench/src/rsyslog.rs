//! `rsyslog`: the incumbent measured the way `latency` measures LogFleet, so the two figures can
//! sit side by side from one run. The same stamped lines ([`crate::write::timestamped`]) are
//! written to a file at the same rate; an rsyslogd this bench starts follows the file with
//! `imfile` in inotify mode and forwards each line with `omfwd` over TCP to a sink here, which
//! reads the clock as each line arrives ([`Arrivals`] does the arithmetic for both).
//!
//! The rsyslogd is the bench's own: its own config file and work directory in a temporary
//! directory, its own pid file, in the foreground (`-n`), and no system socket (`imuxsock` and
//! `imklog` are not loaded), so it neither needs nor disturbs a system rsyslog. It is killed and
//! reaped when the run ends. rsyslog is not a build or test dependency: when `rsyslogd` is
//! missing the command says how to install it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use testkit::LogDir;
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::arrivals::{Arrivals, LINE_PAD};
use crate::write::{now_ns, number_of, spawn_timestamped};

/// Where `rsyslogd` is looked for after `PATH`: Debian installs it in `/usr/sbin`, which a
/// non-root `PATH` often lacks.
const SBIN_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];

/// Lines read off the socket and not yet counted. When full, the socket reader waits (TCP then
/// pushes back on rsyslogd); nothing is dropped. At 20,000 lines/s this is over a second of
/// lines, far more than the counting loop ever lags.
const SINK_QUEUE: usize = 32_768;

/// How long the run waits for the next line before it stops counting (the lines not seen by
/// then are reported missing): the same bound `latency` uses.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Probe lines written, one every [`PROBE_WAIT`], until the first reaches the sink: rsyslogd
/// has started, is following the file and has connected.
const PROBES: usize = 500;
const PROBE_WAIT: Duration = Duration::from_millis(20);
/// Quiet time after the first probe arrives, so that probes still in flight are not counted.
const PROBE_DRAIN: Duration = Duration::from_millis(200);

/// `rsyslog`: write → arrival at the TCP sink for every line, and loss, at `rate` lines/s.
pub async fn latency(rsyslogd: Option<PathBuf>, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let program = find_rsyslogd(rsyslogd)?;
    let dir = LogDir::new();
    let log = dir.create("app.log", &[]);
    let mut sink = Sink::start().await?;
    let mut daemon = Rsyslogd::start(&program, &dir, &log, sink.port)?;
    println!("{} ({})", daemon.version().await, program.display());
    let result = measure(&mut daemon, &mut sink, &dir, rate, seconds).await;
    daemon.stop().await;
    result
}

/// Waits until rsyslogd forwards, then writes `rate × seconds` stamped lines and counts them in.
async fn measure(
    daemon: &mut Rsyslogd,
    sink: &mut Sink,
    dir: &LogDir,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    sink.wait_forwarding(daemon, dir).await?;
    let total = rate * seconds;
    let writer = spawn_timestamped(dir.path("app.log"), rate, total, LINE_PAD);
    let mut arrivals = Arrivals::new(total, false);
    while arrivals.accounted() < total {
        let Ok(Some((arrived, line))) = tokio::time::timeout(ARRIVAL_TIMEOUT, sink.rx.recv()).await
        else {
            break;
        };
        arrivals.record(arrived, &line, number_of(&line));
    }
    writer.await??;
    println!("{}", arrivals.report("rsyslog", rate, total));
    Ok(())
}

/// The `rsyslogd` to run: the one given, else the first on `PATH` or in [`SBIN_DIRS`].
fn find_rsyslogd(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        if path.is_file() {
            return Ok(path);
        }
        bail!("--rsyslogd {}: no such file", path.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join("rsyslogd"))
        .find(|candidate| candidate.is_file())
        .context(
            "rsyslogd not found (looked on PATH, in /usr/sbin and /sbin). Install Debian's \
             rsyslog package: `sudo apt-get install rsyslog` (8.2302 on bookworm), or pass \
             --rsyslogd PATH. The bench runs its own rsyslogd with its own config; no system \
             service is needed or used.",
        )
}

/// The config of the bench's rsyslogd: `file` followed by `imfile` in inotify mode, each line
/// forwarded as it is (`%msg%`, newline-framed) by `omfwd` over TCP to 127.0.0.1:`port`.
/// Everything else is rsyslog's default (main queue, direct action queue), as `latency` runs
/// LogFleet with its defaults. No `imuxsock` (the system socket; the same as
/// `$OmitLocalLogging on`) and no `imklog`.
fn config(work_dir: &Path, file: &Path, port: u16) -> String {
    format!(
        r#"global(workDirectory="{work}")
module(load="imfile" mode="inotify")
template(name="line" type="string" string="%msg%\n")
input(type="imfile" file="{file}" tag="app" ruleset="forward")
ruleset(name="forward") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" template="line")
}}
"#,
        work = work_dir.display(),
        file = file.display(),
    )
}

/// The bench's own rsyslogd process; killed when dropped, in case the run fails before
/// [`Rsyslogd::stop`].
struct Rsyslogd {
    child: Child,
    program: PathBuf,
    /// Where its stderr goes: what it said, if it exits.
    stderr: PathBuf,
}

impl Rsyslogd {
    /// Writes its config (work directory, pid file and stderr beside the log, in `dir`) and
    /// starts it in the foreground.
    fn start(program: &Path, dir: &LogDir, log: &Path, port: u16) -> anyhow::Result<Rsyslogd> {
        let work = dir.path("rsyslog-work");
        std::fs::create_dir(&work).context("rsyslogd work directory")?;
        let conf = dir.path("rsyslog.conf");
        std::fs::write(&conf, config(&work, log, port)).context("rsyslogd config")?;
        let stderr = dir.path("rsyslogd.stderr");
        let child = Command::new(program)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.path("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).context("rsyslogd stderr file")?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Rsyslogd {
            child,
            program: program.to_owned(),
            stderr,
        })
    }

    /// The first line of `rsyslogd -v`, for the record.
    async fn version(&self) -> String {
        match Command::new(&self.program).arg("-v").output().await {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(|first| first.split(" compiled with").next().unwrap_or(first))
                .unwrap_or("rsyslogd (version unknown)")
                .trim()
                .to_owned(),
            Err(e) => format!("rsyslogd (version unknown: {e})"),
        }
    }

    /// Fails with what rsyslogd said if it has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let said = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            bail!("rsyslogd exited ({status}): {said}");
        }
        Ok(())
    }

    /// Kills it and waits for it to be gone: no process outlives the run.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The TCP listener rsyslogd forwards to, with each line and the instant it was read.
struct Sink {
    port: u16,
    rx: mpsc::Receiver<(u128, String)>,
}

impl Sink {
    async fn start() -> anyhow::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (tx, rx) = mpsc::channel(SINK_QUEUE);
        tokio::spawn(async move {
            // rsyslogd reconnects after an error; every connection feeds the same queue.
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(read_lines(stream, tx.clone()));
            }
        });
        Ok(Sink { port, rx })
    }

    /// Writes probe lines until one arrives, then lets the rest drain: after this, the next line
    /// to arrive is one the run wrote. The same start as `latency`'s session probe.
    async fn wait_forwarding(&mut self, daemon: &mut Rsyslogd, dir: &LogDir) -> anyhow::Result<()> {
        for n in 0..PROBES {
            daemon.check_running()?;
            dir.append("app.log", &[&format!("probe {n}")]).await;
            if tokio::time::timeout(PROBE_WAIT, self.rx.recv())
                .await
                .is_ok_and(|line| line.is_some())
            {
                while tokio::time::timeout(PROBE_DRAIN, self.rx.recv())
                    .await
                    .is_ok_and(|line| line.is_some())
                {}
                return Ok(());
            }
        }
        daemon.check_running()?;
        bail!(
            "rsyslogd forwarded none of {PROBES} probe lines within {:?}",
            PROBE_WAIT * PROBES as u32
        )
    }
}

/// Reads newline-framed lines from one connection, stamping each with the clock as soon as it
/// is read.
async fn read_lines(stream: TcpStream, tx: mpsc::Sender<(u128, String)>) {
    let mut lines = tokio::io::BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send((now_ns(), line)).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's rsyslogd follows only the bench's file, by inotify, forwards over TCP to the
    /// sink's port, and opens no system socket.
    #[test]
    fn config_follows_the_file_by_inotify_into_the_sink_without_system_sockets() {
        let conf = config(Path::new("/tmp/w"), Path::new("/tmp/app.log"), 4242);
        assert!(conf.contains(r#"module(load="imfile" mode="inotify")"#));
        assert!(conf.contains(r#"file="/tmp/app.log""#));
        assert!(conf.contains(r#"workDirectory="/tmp/w""#));
        assert!(conf.contains(r#"target="127.0.0.1" port="4242" protocol="tcp""#));
        assert!(!conf.contains("imuxsock") && !conf.contains("imklog"));
    }

    /// A missing `--rsyslogd` is an error naming the path, not a search elsewhere.
    #[test]
    fn a_given_rsyslogd_that_does_not_exist_is_an_error() {
        let err = find_rsyslogd(Some(PathBuf::from("/nonexistent/rsyslogd")))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("--rsyslogd /nonexistent/rsyslogd: no such file")
        );
    }
}
