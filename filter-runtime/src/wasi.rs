//! The WASI a filter sees: every interface a standard toolchain's component imports
//! (`wasi:cli/*`, `wasi:io/*`, `wasi:clocks/*`, `wasi:random/*`, `wasi:filesystem/*`,
//! `wasi:sockets/*`) is linked, so interpreters (componentize-py, componentize-js) and Rust std
//! start and run, but every door to the machine is shut:
//!
//! | door | what a guest gets |
//! | --- | --- |
//! | filesystem | no preopened directories: every open fails (`ENOENT`/`EBADF`-like errors, no trap) |
//! | sockets | TCP, UDP and name lookup disabled, every address refused: connect fails |
//! | environment, arguments, cwd | empty, empty, none |
//! | stdin | empty (end of stream at once) |
//! | stdout, stderr | captured into the agent's log, one `tracing` event per line, target `logfleet::plugin`; lines cut at [`MAX_GUEST_LOG_LINE_BYTES`], at most [`GUEST_LOG_BURST`] lines then [`GUEST_LOG_LINES_PER_SECOND`] per instance and [`GUEST_LOG_PROCESS_LINES_PER_SECOND`] for the whole process; the rest is counted and dropped |
//! | random | the host's random (`wasi:random/random` cryptographically secure, `insecure` and `insecure-seed` seeded per instance): random numbers reveal nothing about the machine |
//! | clocks | real wall and monotonic time, rounded down to [`CLOCK_RESOLUTION`] so a plugin cannot time the host's work finely; records carry their own read time anyway (`timestamps`) |
//! | sleeping | a clock pollable (`subscribe-duration`, `subscribe-instant`) fires at the time asked; asking for a time past the current call's deadline fails the filter with that deadline (the epoch deadline cannot interrupt a host call, so such a wait would otherwise hold the session up to forever) |
//! | host resources | at most [`MAX_GUEST_RESOURCES`] streams, pollables, ... held at once |
//!
//! Denials are errors a guest can handle (Python's `open()` raises `OSError`), not traps; a
//! filter that ignores them simply learns nothing. `wasi:cli/exit` traps the instance, which
//! fails the filter like any trap.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::clocks::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::sandbox::StoreState;

/// Longest line of guest output kept; the rest of the line is cut (marked with `…`).
pub const MAX_GUEST_LOG_LINE_BYTES: usize = 1024;
/// Lines one instance may log at once before the rate applies.
pub const GUEST_LOG_BURST: u32 = 20;
/// Lines per second one instance may log after its burst.
pub const GUEST_LOG_LINES_PER_SECOND: u32 = 5;
/// Lines per second all guests of this process may log together, so many sessions of a
/// chatty plugin cannot flood the agent's log.
pub const GUEST_LOG_PROCESS_LINES_PER_SECOND: u32 = 50;
/// Most WASI resources (streams, pollables, ...) one instance may hold at once. Each costs
/// host memory that the instance's memory limit does not count, and lives as long as the
/// session unless the guest drops it (wasmtime's default cap is 1 000 000, hundreds of MB);
/// interpreters hold a few dozen. A guest past the cap gets an error from the call (a trap).
pub const MAX_GUEST_RESOURCES: usize = 10_000;
/// Granularity of the clocks a guest reads.
pub const CLOCK_RESOLUTION: Duration = Duration::from_millis(1);

/// The `tracing` target guest output is logged under.
const LOG_TARGET: &str = "logfleet::plugin";

/// The WASI state of one filter instance.
pub(crate) struct GuestWasi {
    ctx: WasiCtx,
    table: ResourceTable,
    /// Zero of the guest's monotonic clock (the same as [`CoarseMonotonicClock`]'s).
    clock_start: Instant,
    /// When the call running now must end: no clock pollable waits past it.
    call_ends: Instant,
}

impl GuestWasi {
    /// A deny-all context whose stdout/stderr log under `label` (the plugin's name).
    pub(crate) fn new(label: Arc<str>) -> GuestWasi {
        let clock_start = Instant::now();
        let mut builder = WasiCtx::builder();
        builder
            .stdout(GuestLog::new(label.clone(), "stdout"))
            .stderr(GuestLog::new(label, "stderr"))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .wall_clock(CoarseWallClock)
            .monotonic_clock(CoarseMonotonicClock { start: clock_start });
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_GUEST_RESOURCES);
        GuestWasi {
            ctx: builder.build(),
            table,
            clock_start,
            call_ends: clock_start,
        }
    }

    /// Starts a call into the guest that must end within `deadline`: a clock pollable it
    /// waits on fires by then at the latest (see the module table).
    pub(crate) fn start_call(&mut self, deadline: Duration) {
        let now = Instant::now();
        self.call_ends = now.checked_add(deadline).unwrap_or(now);
    }

    /// A pollable that fires after `wait`, or at the end of the current call if sooner, and
    /// whether `wait` goes past the end of the call.
    fn nap(&mut self, wait: Duration) -> wasmtime::Result<(Resource<DynPollable>, bool)> {
        let now = Instant::now();
        let asked = now.checked_add(wait);
        let overruns = asked.is_none_or(|asked| asked > self.call_ends);
        let until = asked
            .map_or(self.call_ends, |asked| asked.min(self.call_ends))
            .max(now);
        let nap = self
            .table
            .push(Nap(tokio::time::Instant::from_std(until)))?;
        Ok((
            wasmtime_wasi::p2::subscribe(&mut self.table, nap)?,
            overruns,
        ))
    }
}

/// Serves `subscribe-duration` and `subscribe-instant` (a wait of `wait`). A guest that asks
/// to wait past its call's deadline would run past it: its epoch deadline is moved to now,
/// so it traps with the deadline at its next check (at the latest when the pollable, cut at
/// the deadline, fires), exactly like a guest that loops.
fn subscribe_wait(
    mut store: StoreContextMut<'_, StoreState>,
    wait: Duration,
) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let (pollable, overruns) = store.data_mut().wasi.nap(wait)?;
    if overruns {
        store.set_epoch_deadline(0);
    }
    Ok((pollable,))
}

/// What a guest's clock pollable waits for: a fixed instant.
struct Nap(tokio::time::Instant);

#[wasmtime_wasi::async_trait]
impl Pollable for Nap {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.0).await;
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

/// The instance whose clock pollables [`add_to_linker`] replaces (the release it serves).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Adds WASI p2 (sync) to `linker`, with clock pollables bounded by the call's deadline.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    {
        let mut clock = linker.instance(MONOTONIC_CLOCK)?;
        clock.func_wrap(
            "subscribe-duration",
            |store: StoreContextMut<'_, StoreState>, (nanos,): (u64,)| {
                subscribe_wait(store, Duration::from_nanos(nanos))
            },
        )?;
        clock.func_wrap(
            "subscribe-instant",
            |store: StoreContextMut<'_, StoreState>, (when,): (u64,)| {
                let now = round_down(store.data().wasi.clock_start.elapsed()).as_nanos();
                let wait = u64::try_from(u128::from(when).saturating_sub(now)).unwrap_or(u64::MAX);
                subscribe_wait(store, Duration::from_nanos(wait))
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The WASI p2 release `add_to_linker` defines (wasmtime-wasi 48): an import of the same
/// interface at `0.2.0` up to this patch is served by it (the linker matches semver).
const WASI_P2_PATCH: u32 = 12;

/// The interfaces `add_to_linker` defines.
const INTERFACES: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// Whether the import `name` (e.g. `wasi:cli/environment@0.2.6`) is served by
/// [`add_to_linker`]. Imports that are not must be stubbed by name; those that are must not,
/// or the stub (an exact-name match) would win over the semver match.
pub(crate) fn provides(name: &str) -> bool {
    let Some((interface, version)) = name.split_once('@') else {
        return false;
    };
    let patch = version
        .strip_prefix("0.2.")
        .and_then(|patch| patch.parse::<u32>().ok());
    INTERFACES.contains(&interface) && patch.is_some_and(|patch| patch <= WASI_P2_PATCH)
}

/// Wall clock rounded down to [`CLOCK_RESOLUTION`].
struct CoarseWallClock;

impl HostWallClock for CoarseWallClock {
    fn resolution(&self) -> Duration {
        CLOCK_RESOLUTION
    }

    fn now(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        round_down(now)
    }
}

/// Monotonic clock (nanoseconds since the instance started) rounded down to
/// [`CLOCK_RESOLUTION`].
struct CoarseMonotonicClock {
    start: Instant,
}

impl HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        u64::try_from(CLOCK_RESOLUTION.as_nanos()).unwrap_or(u64::MAX)
    }

    fn now(&self) -> u64 {
        u64::try_from(round_down(self.start.elapsed()).as_nanos()).unwrap_or(u64::MAX)
    }
}

fn round_down(d: Duration) -> Duration {
    let step = CLOCK_RESOLUTION.as_nanos();
    let nanos = d.as_nanos() / step * step;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A token bucket: `burst` tokens, refilled at `per_second`.
struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Option<Instant>,
}

impl Bucket {
    const fn new(burst: u32, per_second: u32) -> Bucket {
        Bucket {
            tokens: burst as f64,
            burst: burst as f64,
            per_second: per_second as f64,
            last: None,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.duration_since(last).as_secs_f64() * self.per_second;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The process-wide budget shared by every guest's output.
static PROCESS_BUDGET: Mutex<Bucket> = Mutex::new(Bucket::new(
    GUEST_LOG_PROCESS_LINES_PER_SECOND,
    GUEST_LOG_PROCESS_LINES_PER_SECOND,
));

/// One guest stream (stdout or stderr) turned into log lines. Clones share the state, as
/// WASI asks of every handle to the same stream.
#[derive(Clone)]
struct GuestLog {
    shared: Arc<Mutex<LineSplitter>>,
}

/// What a guest stream holds between writes.
struct LineSplitter {
    label: Arc<str>,
    stream: &'static str,
    /// The line being written; never more than [`MAX_GUEST_LOG_LINE_BYTES`].
    partial: Vec<u8>,
    /// The current line was cut.
    cut: bool,
    bucket: Bucket,
    /// Lines dropped by the rate limits since the last one logged.
    suppressed: u64,
}

impl GuestLog {
    fn new(label: Arc<str>, stream: &'static str) -> GuestLog {
        GuestLog {
            shared: Arc::new(Mutex::new(LineSplitter {
                label,
                stream,
                partial: Vec::new(),
                cut: false,
                bucket: Bucket::new(GUEST_LOG_BURST, GUEST_LOG_LINES_PER_SECOND),
                suppressed: 0,
            })),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(bytes);
    }
}

impl LineSplitter {
    fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (chunk, rest, ends_line) = match memchr_newline(bytes) {
                Some(at) => (&bytes[..at], &bytes[at + 1..], true),
                None => (bytes, &[][..], false),
            };
            let room = MAX_GUEST_LOG_LINE_BYTES - self.partial.len();
            if chunk.len() > room {
                self.cut = true;
            }
            self.partial
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            if ends_line {
                self.emit();
            }
            bytes = rest;
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        let cut = std::mem::take(&mut self.cut);
        self.partial.clear();
        let now = Instant::now();
        let allowed = self.bucket.take(now)
            && PROCESS_BUDGET
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(now);
        if !allowed {
            self.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        tracing::info!(
            target: LOG_TARGET,
            plugin = %self.label,
            stream = self.stream,
            cut,
            suppressed_before = suppressed,
            "{line}"
        );
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable: output past the limits is dropped, never back-pressured, so a
        // guest cannot block on its own log.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output is split into lines, each cut at the named limit.
    #[test]
    fn long_lines_are_cut_and_split() {
        let log = GuestLog::new(Arc::from("t"), "stdout");
        let long = vec![b'x'; MAX_GUEST_LOG_LINE_BYTES * 3];
        log.write_bytes(&long);
        log.write_bytes(b"\nnext");
        let state = log.shared.lock().unwrap();
        assert_eq!(state.partial, b"next");
        assert!(!state.cut);
    }

    /// An instance logs its burst, then nothing until the rate refills it.
    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut bucket = Bucket::new(GUEST_LOG_BURST, GUEST_LOG_LINES_PER_SECOND);
        let now = Instant::now();
        let allowed = (0..100).filter(|_| bucket.take(now)).count();
        assert_eq!(allowed, GUEST_LOG_BURST as usize);
        assert!(bucket.take(now + Duration::from_secs(1)));
    }

    /// Versions up to ours are served (semver); newer patches and other majors are not.
    #[test]
    fn provides_matches_interfaces_and_versions() {
        assert!(provides("wasi:cli/environment@0.2.0"));
        assert!(provides("wasi:filesystem/preopens@0.2.6"));
        assert!(provides("wasi:sockets/tcp@0.2.12"));
        assert!(!provides("wasi:sockets/tcp@0.2.13"));
        assert!(!provides("wasi:http/types@0.2.6"));
        assert!(!provides("wasi:cli/environment@0.3.0"));
        assert!(!provides("wasi:cli/environment"));
    }

    /// A guest cannot hold more than [`MAX_GUEST_RESOURCES`] WASI resources: the host memory
    /// they cost, outside the memory limit, stays bounded however many it asks for.
    #[test]
    fn guest_resources_are_capped() {
        let mut wasi = GuestWasi::new(Arc::from("t"));
        wasi.start_call(Duration::from_secs(1));
        let held = (0..MAX_GUEST_RESOURCES + 1)
            .take_while(|_| wasi.nap(Duration::ZERO).is_ok())
            .count();
        assert!(held < MAX_GUEST_RESOURCES, "{held} pollables held");
    }

    #[test]
    fn clocks_are_coarse() {
        let d = round_down(Duration::from_nanos(1_234_567_891));
        assert_eq!(d, Duration::from_millis(1234));
    }
}
