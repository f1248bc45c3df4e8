//! The pipeline: the one task that owns metrics and all sessions.
//!
//! It takes tail batches (assigns `seq`, detects levels, counts metrics, builds records, runs
//! every session over them) and host commands (start, stop, the full session set), flushes
//! session batches as soon as no more lines are waiting (and at least every `batch_interval`),
//! ends expired sessions on its own, and emits metrics every `metrics_interval`. Everything it produces goes into the [`Outbox`].
//!
//! Starting a session never blocks the pipeline: its chain is prepared by a
//! [`ChainLoader`] task (fetching plugins the agent lacks, compiling on a blocking thread)
//! while the session is *pending*; the chain comes back through a channel and the session
//! becomes active then. Lines read before that are not part of the session, just like lines
//! read before a session starts. Stopping, replacing or the expiry of a pending session
//! cancels it.
//!
//! Filters run off the async workers: a filter call may take up to its deadline, so each tail
//! batch's records go through every session on a blocking thread, which the pipeline awaits
//! before it does anything else. Sessions move there and back with the batch, so records,
//! frames and host commands keep their order exactly as if it all ran inline.
//!
//! Filters fail closed: a session whose filters cannot start, or fail while running, ends on
//! the agent at once with a `FilterError` frame (see [`crate::session`]); the host then ends
//! it for clients.
//!
//! Sessions end by the monotonic clock: a spec's `remaining_ms` becomes an [`Instant`] when
//! the host's frame is handled here, so an agent whose wall clock is hours off starts and ends
//! sessions exactly as the host means them (records still carry the agent's wall-clock time).
//!
//! `seq` grows by one per line read, across all sources, from a [`SeqSource`]: with a state
//! directory it never repeats across restarts (blocks reserved on disk, see [`crate::state`]);
//! without one it starts at the current Unix time in ms × 1000, so a restarted agent
//! continues above where it was unless the clock went back.
//!
//! Restarts ([`Pipeline::with_state`], [`Pipeline::restore`]): the running sessions are saved
//! to the state directory whenever the set changes (started, replaced, stopped, expired,
//! failed; written off the async workers by a [`SessionWriter`]). A restarted agent starts the
//! saved sessions that have not ended yet straight away, through the normal start path. While
//! such a *restored* session is still pending, the pipeline takes no tail batches: the tail
//! channel fills, the tailer waits, and the lines written while the agent was down stay in
//! the files until the session can filter them. That wait is bounded by the loader's own
//! timeouts (a plugin fetch that fails ends the session fail-closed, and the lines then flow
//! to the others) and by the session's expiry. Backlog the tailer skipped beyond its cap is
//! reported to each restored session whose sources it concerns as a `Dropped` frame with
//! reason `agent_buffer_full` (the agent's buffer — here the files' backlog — overflowed),
//! so no loss is silent.
//!
//! Backfill ([`crate::backfill`]): a session whose spec asks for one gets it when it first
//! becomes active (not when its filters change, nor when restored): the scan runs on a
//! blocking thread that the pipeline awaits before it takes another tail batch, so the
//! backfill's records, then `BackfillDone`, go out before any live record of the session, and
//! the session skips live records its backfill already covered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logfleet_protocol::agent::{AgentFrame, HostFrame, Record, SessionSpec};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{debug, error, info};

use crate::AbortOnDrop;
use crate::backfill::{DEFAULT_BACKFILL_SCAN_BYTES, scan};
use crate::checkpointing::Checkpointing;
use crate::config::SourceConfig;
use crate::filter::{Built, FilterFailure};
use crate::loader::{ChainLoader, RUNTIME_FILTER_NAME};
use crate::metrics::{HealthInputs, MetricsCollector};
use crate::multiline::Joiner;
use crate::outbox::{BACKPRESSURE_MAX_WAIT, Outbox};
use crate::parse::Parsers;
use crate::parse::detect_level;
use crate::session::{Session, filter_error};
use crate::state::{SavedSession, SeqSource, SessionWriter, StateDir};
use crate::tail::{LinePos, TailBatch, TailStats};
use crate::time::now_ms;

/// Host commands queued for the pipeline. They are rare (session start/stop); when the queue is
/// full the uplink waits, which only delays reading the next host frame.
pub const HOST_CHANNEL_CAPACITY: usize = 64;
/// Ready chains queued for the pipeline. Loader tasks wait when it is full; the pipeline
/// takes them between other work.
pub const READY_CHANNEL_CAPACITY: usize = 16;

/// Ids of sessions that failed here, remembered so a session list the host sent before it
/// learnt of the failure (after a reconnect) does not start them again. Session ids are never
/// reused, so forgetting the oldest only costs a needless restart that fails again.
pub const MAX_REMEMBERED_FAILED_SESSIONS: usize = 256;

/// Files whose handled end is remembered for backfill boundaries (see `Pipeline::handled_to`);
/// beyond it the map starts over (a backfill then skips from a file's start, as if the file
/// were new: only a copytruncate racing that backfill could then lose lines).
pub const MAX_HANDLED_FILES: usize = 4096;

/// Sessions, metrics and sequence numbers; drive it with [`Pipeline::run`] or call its steps.
pub struct Pipeline {
    sessions: HashMap<String, Session>,
    /// Sessions whose chain is being prepared, by id.
    pending: HashMap<String, Pending>,
    loader: ChainLoader,
    /// Loader tasks send finished chains here; the pipeline keeps a sender so the channel
    /// never closes.
    ready_tx: mpsc::Sender<Ready>,
    ready_rx: mpsc::Receiver<Ready>,
    /// Tells a pending session from a later start of the same id.
    next_generation: u64,
    metrics: MetricsCollector,
    /// Where each line's seq comes from.
    seq: SeqSource,
    /// Saves the session set to the state directory; `None`: no state directory.
    saver: Option<SessionWriter>,
    /// The session set changed since it was last handed to `saver`.
    sessions_changed: bool,
    /// Restored sessions now running that have not yet been told about backlog the tailer
    /// skipped (see the module docs).
    backlog_unreported: Vec<String>,
    outbox: Outbox,
    tail_stats: Arc<TailStats>,
    /// Frames produced by sessions, reused between calls.
    frames: Vec<AgentFrame>,
    /// Sessions whose filters failed here, oldest first (see
    /// [`MAX_REMEMBERED_FAILED_SESSIONS`]).
    failed: std::collections::VecDeque<String>,
    /// How each source's lines become records.
    parsers: Parsers,
    /// Continuation lines joined into their records, per source.
    joiner: Joiner,
    /// Writes the tail checkpoint once its lines are in the outbox; `None`: no state
    /// directory.
    checkpointing: Option<Checkpointing>,
    /// Per file, where the last line the pipeline handled ends (a backfill skips live lines
    /// of a file only from there: see [`Session::offer_at`]). One entry per file ever read;
    /// bounded by [`MAX_HANDLED_FILES`].
    handled_to: HashMap<crate::tail::identity::FileId, u64>,
    /// The sources, for backfills to read.
    sources: Arc<[SourceConfig]>,
    /// Most bytes a backfill reads per source.
    backfill_scan_bytes: u64,
    /// Sessions just activated that asked for a backfill, to run before the next tail batch.
    backfill_due: Vec<String>,
}

/// A session waiting for its chain. Dropping it cancels the loader task.
struct Pending {
    spec: SessionSpec,
    /// When it ends (see [`deadline`]), even if its chain is not ready by then.
    ends: Instant,
    generation: u64,
    /// When the host's command arrived: how long filters took to be ready is logged, since
    /// that is the wait an operator sees between starting a session and its first line.
    since: Instant,
    /// Restored from the state directory at start: lines wait for it (see the module docs).
    restored: bool,
    _task: AbortOnDrop,
}

/// A chain a loader task finished for pending session `id`.
struct Ready {
    id: String,
    generation: u64,
    built: Built,
}

/// When a session whose spec arrived at `now` ends, by the monotonic clock.
pub fn deadline(spec: &SessionSpec, now: Instant) -> Instant {
    now + Duration::from_millis(spec.remaining_ms)
}

/// Whether two specs ask for the same work (id, filters, limits): the time left differs with
/// every frame and changes nothing the session does but when it ends.
fn same_work(a: &SessionSpec, b: &SessionSpec) -> bool {
    a.id == b.id && a.filters == b.filters && a.limits == b.limits
}

/// The first seq of an agent started at `now_ms`.
pub fn initial_seq(now_ms: i64) -> u64 {
    u64::try_from(now_ms).unwrap_or(0).saturating_mul(1000)
}

impl Pipeline {
    pub fn new<'a>(
        sources: impl IntoIterator<Item = &'a str>,
        loader: ChainLoader,
        outbox: Outbox,
        tail_stats: Arc<TailStats>,
    ) -> Pipeline {
        let (ready_tx, ready_rx) = mpsc::channel(READY_CHANNEL_CAPACITY);
        Pipeline {
            sessions: HashMap::new(),
            pending: HashMap::new(),
            loader,
            ready_tx,
            ready_rx,
            next_generation: 0,
            metrics: MetricsCollector::new(sources, Instant::now()),
            seq: SeqSource::in_memory(initial_seq(now_ms())),
            saver: None,
            sessions_changed: false,
            backlog_unreported: Vec::new(),
            outbox,
            tail_stats,
            frames: Vec::new(),
            failed: std::collections::VecDeque::new(),
            parsers: Parsers::default(),
            joiner: Joiner::default(),
            checkpointing: None,
            handled_to: HashMap::new(),
            sources: Arc::from(Vec::new()),
            backfill_scan_bytes: DEFAULT_BACKFILL_SCAN_BYTES,
            backfill_due: Vec::new(),
        }
    }

    /// Parses the lines of `sources` with their configured formats and time zones (every
    /// source is `auto` in UTC otherwise).
    pub fn parse_sources_as(mut self, sources: &[SourceConfig]) -> Pipeline {
        self.parsers = Parsers::new(sources);
        self.joiner = Joiner::new(
            sources
                .iter()
                .map(|s| (s.name.clone(), s.multiline.clone()))
                .collect(),
        );
        self.sources = sources.into();
        self
    }

    /// Reads at most `bytes` per source for a backfill (default
    /// [`DEFAULT_BACKFILL_SCAN_BYTES`]).
    pub fn backfill_scan_bytes(mut self, bytes: u64) -> Pipeline {
        self.backfill_scan_bytes = bytes;
        self
    }

    /// Takes seqs from `state` (never repeating across restarts) and saves the session set
    /// there whenever it changes. Must run inside a tokio runtime (the writer is a task).
    pub fn with_state(mut self, state: &StateDir) -> Pipeline {
        self.seq = state.seq(initial_seq(now_ms()));
        self.saver = Some(SessionWriter::sessions(state.clone()));
        self
    }

    /// Writes the tailer's read positions (`snapshots`) as checkpoints once their lines are
    /// safe (see [`crate::checkpointing`]). Must run inside a tokio runtime.
    pub fn with_checkpoints(
        mut self,
        snapshots: tokio::sync::watch::Receiver<crate::tail::Snapshot>,
        store: crate::tail::CheckpointStore,
    ) -> Pipeline {
        self.checkpointing = Some(Checkpointing::new(snapshots, store, self.outbox.clone()));
        self
    }

    /// Writes the newest checkpoint if every line before it has left the pipeline, after
    /// flushing the sessions' batches into the outbox.
    fn checkpoint(&mut self, now: Instant) {
        let Some(ready) = self
            .checkpointing
            .as_ref()
            .and_then(|c| c.ready(self.joiner.held()))
        else {
            return;
        };
        self.flush(now);
        if let Some(c) = self.checkpointing.as_mut() {
            c.write(ready);
        }
    }

    /// Starts the saved sessions that have not ended by the wall clock yet, as restored
    /// sessions (lines wait for them, see the module docs). Returns how many started.
    pub fn restore(&mut self, saved: Vec<SavedSession>) -> usize {
        let now = now_ms();
        let mut started = 0;
        for s in saved {
            if s.ends_at_ms <= now {
                debug!(session = %s.id, "saved session ended while the agent was down");
                continue;
            }
            let id = s.id.clone();
            self.start(SessionSpec {
                id: s.id,
                filters: s.filters,
                limits: s.limits,
                remaining_ms: u64::try_from(s.ends_at_ms - now).unwrap_or(0),
                // Backfilled when it first ran; a restart resumes from checkpoints instead.
                backfill: None,
            });
            if let Some(pending) = self.pending.get_mut(&id) {
                pending.restored = true;
                started += 1;
            }
        }
        // Sessions that ended meanwhile must not come back after the next restart either.
        self.sessions_changed = true;
        started
    }

    /// Whether tail batches wait: a restored session is still being prepared.
    fn holds_lines(&self) -> bool {
        self.pending.values().any(|p| p.restored)
    }

    /// Hands the current session set to the writer if it changed. Pending specs count (they
    /// are the newest), so a session being prepared at a crash comes back too.
    fn save_sessions(&mut self) {
        if !std::mem::take(&mut self.sessions_changed) {
            return;
        }
        let Some(saver) = &self.saver else {
            return;
        };
        let (now, wall) = (Instant::now(), now_ms());
        let mut saved: Vec<SavedSession> = self
            .pending
            .values()
            .map(|p| (&p.spec, p.ends))
            .chain(
                self.sessions
                    .iter()
                    .filter(|(id, _)| !self.pending.contains_key(*id))
                    .map(|(_, s)| (s.spec(), s.ends())),
            )
            .map(|(spec, ends)| saved_session(spec, ends, now, wall))
            .collect();
        saved.sort_by(|a, b| a.id.cmp(&b.id));
        saver.save(saved);
    }

    /// Reports backlog the tailer skipped at start (over its cap) to restored sessions that
    /// now run, once, as `Dropped` frames with reason `agent_buffer_full`. The tailer records
    /// the skips in its first scan, before it hands over any batch, so the first batch after
    /// a restored session became active sees them all.
    fn report_backlog_dropped(&mut self) {
        let ids = std::mem::take(&mut self.backlog_unreported);
        let dropped = self.tail_stats.backlog_dropped();
        for id in ids {
            let Some(session) = self.sessions.get(&id) else {
                continue;
            };
            let sources = &session.spec().filters.sources;
            let count: u64 = dropped
                .iter()
                .filter(|(source, _)| sources.is_empty() || sources.contains(*source))
                .map(|(_, skipped)| skipped.lines)
                .sum();
            if count > 0 {
                info!(session = %id, count, "backlog over the cap skipped at restart; reported as dropped");
                self.outbox.push(AgentFrame::Dropped {
                    session_id: id,
                    count,
                    reason: logfleet_protocol::client::DropReason::AgentBufferFull,
                });
            }
        }
    }

    /// Number of running sessions.
    pub fn active_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Number of sessions waiting for their chain.
    pub fn pending_sessions(&self) -> usize {
        self.pending.len()
    }

    /// Ids of running sessions, sorted.
    pub fn session_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.sessions.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Processes one batch of tailed lines: continuation lines join their records (see
    /// [`crate::multiline`]), then sessions filter the records on a blocking thread (see the
    /// module docs); this returns once all of them have.
    pub async fn handle_lines(&mut self, batch: TailBatch, now: Instant) {
        // Metrics count lines as read, joined or not.
        let mut run: Option<(crate::tail::identity::FileId, u64)> = None;
        for line in &batch {
            self.metrics
                .record(&line.source, detect_level(&line.text), line.text.len());
            // Where each file's handled lines end, for backfill boundaries; files come in
            // runs, so one map update per run.
            match &mut run {
                Some((id, end)) if *id == line.at.id => *end = line.at.end,
                _ => {
                    if let Some((id, end)) = run.replace((line.at.id, line.at.end)) {
                        self.handled_to.insert(id, end);
                    }
                }
            }
        }
        if let Some((id, end)) = run {
            self.handled_to.insert(id, end);
        }
        if self.handled_to.len() > MAX_HANDLED_FILES {
            self.handled_to.clear();
        }
        if self.sessions.is_empty() {
            // Metrics-only: nothing to join or parse (what the joiner held goes out first).
            self.flush_multiline(now, true).await;
            for _ in &batch {
                self.seq.take();
            }
            return;
        }
        let mut records = Vec::with_capacity(batch.len());
        self.joiner.push(batch, now, &mut records);
        self.process(records, now).await;
    }

    /// Processes records held for continuation lines that have been quiet long enough (all
    /// of them with `all`, when the tailer stopped).
    async fn flush_multiline(&mut self, now: Instant, all: bool) {
        if self.joiner.holding() {
            let mut records = Vec::new();
            self.joiner.flush_idle(now, all, &mut records);
            self.process(records, now).await;
        }
    }

    /// Numbers `batch`'s records as they leave the joiner, so `seq` order is delivery order
    /// (a record the joiner held comes after records of other files read meanwhile), and runs
    /// them through the sessions.
    async fn process(&mut self, batch: TailBatch, now: Instant) {
        if !self.backlog_unreported.is_empty() {
            self.report_backlog_dropped();
        }
        if batch.is_empty() {
            return;
        }
        let streaming = !self.sessions.is_empty();
        let mut records = Vec::with_capacity(if streaming { batch.len() } else { 0 });
        // Only while a session still skips what its backfill sent.
        let mut positions: Vec<LinePos> = Vec::new();
        let located = self.sessions.values().any(Session::skips_backfilled);
        for line in batch {
            let seq = self.seq.take();
            if streaming {
                if located {
                    positions.push(line.at);
                }
                records.push(self.parsers.record(seq, line));
            }
        }
        if records.is_empty() {
            return;
        }
        let sessions = std::mem::take(&mut self.sessions);
        let frames = std::mem::take(&mut self.frames);
        let filtered = tokio::task::spawn_blocking(move || {
            offer_all(sessions, &records, &positions, now, frames)
        })
        .await;
        match filtered {
            Ok((sessions, frames, failed)) => {
                self.sessions = sessions;
                self.frames = frames;
                for id in failed {
                    self.sessions_changed = true;
                    info!(session = %id, "session ended: its filters failed");
                    self.remember_failed(id);
                }
            }
            // Only when the runtime shuts down, which ends the pipeline too.
            Err(e) => error!(error = %e, "filtering task lost; its sessions end"),
        }
        self.send_frames();
    }

    /// Remembers that session `id` failed here (bounded, oldest forgotten first).
    fn remember_failed(&mut self, id: String) {
        if self.failed.len() == MAX_REMEMBERED_FAILED_SESSIONS {
            self.failed.pop_front();
        }
        self.failed.push_back(id);
    }

    /// Applies a command from the host.
    pub fn handle_host(&mut self, frame: HostFrame) {
        match frame {
            HostFrame::Start(spec) => self.start(spec),
            HostFrame::Stop { session_id } => self.stop(&session_id, "stopped by the host"),
            HostFrame::Sessions(specs) => {
                // The host sends its list after every connect: requests queued before the
                // link dropped may have been lost.
                self.loader.resend_fetches();
                let listed: Vec<&str> = specs.iter().map(|s| s.id.as_str()).collect();
                let unlisted: Vec<String> = self
                    .sessions
                    .keys()
                    .chain(self.pending.keys())
                    .filter(|id| !listed.contains(&id.as_str()))
                    .cloned()
                    .collect();
                for id in unlisted {
                    self.stop(&id, "not in the host's session list");
                }
                let now = Instant::now();
                for spec in specs {
                    // Keep a running session (its rate limiter and batch), or one being
                    // prepared, if nothing changed but the time it has left, which is the
                    // host's newer word.
                    let ends = deadline(&spec, now);
                    if let Some(running) = self
                        .sessions
                        .get_mut(&spec.id)
                        .filter(|s| same_work(s.spec(), &spec))
                    {
                        running.set_ends(ends);
                        // Restored after a restart, it resumed from checkpoints instead of
                        // backfilling; the host still waits for the backfill to end.
                        if spec.backfill.is_some() && running.spec().backfill.is_none() {
                            self.outbox.push(AgentFrame::BackfillDone {
                                session_id: spec.id.clone(),
                                count: 0,
                                truncated: false,
                            });
                        }
                    } else if let Some(preparing) = self
                        .pending
                        .get_mut(&spec.id)
                        .filter(|p| same_work(&p.spec, &spec))
                    {
                        preparing.ends = ends;
                    } else {
                        self.start(spec);
                    }
                }
            }
            HostFrame::Plugin { digest, bytes } => self.loader.plugin_received(digest, bytes),
            HostFrame::PluginUnavailable { digest, message } => {
                self.loader.plugin_unavailable(&digest, &message);
            }
            // The uplink hands acknowledgements to the outbox; none comes this way.
            HostFrame::Ack { .. } => {}
        }
    }

    /// Starts preparing `spec`'s chain; the session runs once it is ready ([`Self::activate`]).
    fn start(&mut self, spec: SessionSpec) {
        if spec.remaining_ms == 0 {
            debug!(session = %spec.id, "session already over; not starting it");
            return;
        }
        let ends = deadline(&spec, Instant::now());
        if self.failed.contains(&spec.id) {
            debug!(session = %spec.id, "session's filters failed here; the host ends it, not restarting it");
            return;
        }
        // A running session with this id (its filters changed) keeps running under its old
        // chain until the new one is ready (`activate`), so no line falls between the two.
        // A replaced pending session is cancelled by dropping it; one restored at start stays
        // restored (lines keep waiting for it: its backlog is in the files).
        let restored = self.pending.remove(&spec.id).is_some_and(|p| p.restored);
        self.sessions_changed = true;
        let generation = self.next_generation;
        self.next_generation += 1;
        let loader = self.loader.clone();
        let ready = self.ready_tx.clone();
        let id = spec.id.clone();
        let filters = spec.filters.clone();
        let task = tokio::spawn(async move {
            let built = loader.load(filters).await;
            // Closed only when the pipeline is gone, and then nobody needs the chain.
            let _ = ready
                .send(Ready {
                    id,
                    generation,
                    built,
                })
                .await;
        });
        info!(session = %spec.id, remaining_ms = spec.remaining_ms, "session starting; preparing its filters");
        self.pending.insert(
            spec.id.clone(),
            Pending {
                spec,
                ends,
                generation,
                since: Instant::now(),
                restored,
                _task: AbortOnDrop(task),
            },
        );
    }

    /// Starts the session a loader task prepared `ready` for, unless it was stopped, replaced
    /// or expired meanwhile.
    fn activate(&mut self, ready: Ready, now: Instant) {
        if self
            .pending
            .get(&ready.id)
            .is_none_or(|p| p.generation != ready.generation)
        {
            debug!(session = %ready.id, "chain ready for a session no longer pending; dropped");
            return;
        }
        let Some(pending) = self.pending.remove(&ready.id) else {
            return;
        };
        self.sessions_changed = true;
        if now >= pending.ends {
            info!(session = %ready.id, "session expired before its filters were ready");
            return;
        }
        // What the replaced chain (if any) kept goes out first, in stream order; what its
        // backfill covered stays covered under the new filters (else the tailer's lines up to
        // the boundary would go out twice).
        let replaced = self.sessions.remove(&ready.id).map(|mut old| {
            old.flush(&mut self.frames);
            self.send_frames();
            old.take_backfilled()
        });
        let chain = match ready.built {
            Ok(chain) => chain,
            Err(failure) => {
                // Never runs without one of its filters: it ends before its first record
                // under them (and a session whose new filters cannot start ends too).
                info!(session = %ready.id, filter = %failure.plugin, error = %failure.message, "session ended: a filter cannot start");
                self.outbox.push(filter_error(&ready.id, failure, 0));
                self.remember_failed(ready.id);
                return;
            }
        };
        let prepared_ms = u64::try_from(pending.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        if replaced.is_some() {
            info!(session = %ready.id, prepared_ms, "session's new filters in force");
            self.outbox.push(AgentFrame::FiltersChanged {
                session_id: ready.id.clone(),
            });
        } else {
            info!(session = %ready.id, prepared_ms, "session started");
        }
        if pending.restored {
            self.backlog_unreported.push(ready.id.clone());
        } else if replaced.is_none() && pending.spec.backfill.is_some() {
            self.backfill_due.push(ready.id.clone());
        }
        let mut session = Session::start(pending.spec, chain, pending.ends, now);
        session.skip_backfilled(replaced.unwrap_or_default());
        self.sessions.insert(ready.id, session);
    }

    /// Runs the backfills of sessions just activated (see [`crate::backfill`]): each scan on a
    /// blocking thread, awaited, so no tail batch is handled before the session's backfill
    /// and `BackfillDone` are out.
    async fn run_backfills(&mut self) {
        for id in std::mem::take(&mut self.backfill_due) {
            let Some(mut session) = self.sessions.remove(&id) else {
                continue;
            };
            let Some(lines) = session.spec().backfill else {
                self.sessions.insert(id, session);
                continue;
            };
            let sources = self.sources.clone();
            let budget = self.backfill_scan_bytes;
            let only = session.spec().filters.sources.clone();
            let started = Instant::now();
            let scanned = tokio::task::spawn_blocking(move || {
                let found = scan(&sources, &only, lines as usize, budget, session.chain_mut());
                (session, found)
            })
            .await;
            let Ok((mut session, found)) = scanned else {
                // Only when the runtime shuts down, which ends the pipeline too.
                error!(session = %id, "backfill task lost; the session ends");
                continue;
            };
            match found {
                Ok(found) => {
                    let mut records = found.records;
                    for r in &mut records {
                        r.seq = self.seq.take();
                    }
                    let now = Instant::now();
                    // Live records of a file still to skip start where the pipeline's
                    // handled lines of it end (see `Session::offer_at`).
                    let boundaries = found
                        .boundaries
                        .into_iter()
                        .map(|b| crate::tail::LinePos {
                            start: self.handled_to.get(&b.id).copied().unwrap_or(0),
                            ..b
                        })
                        .collect();
                    let count = session.backfill(records, boundaries, now, &mut self.frames);
                    info!(session = %id, asked = lines, count, truncated = found.truncated, elapsed_ms = started.elapsed().as_millis() as u64, "backfill sent");
                    self.frames.push(AgentFrame::BackfillDone {
                        session_id: id.clone(),
                        count,
                        truncated: found.truncated,
                    });
                    self.send_frames();
                    self.sessions.insert(id, session);
                }
                Err(failed) => {
                    session.fail(failed.failure, failed.undecided, &mut self.frames);
                    self.send_frames();
                    self.sessions_changed = true;
                    info!(session = %id, "session ended: its filters failed during the backfill");
                    self.remember_failed(id);
                }
            }
        }
    }

    fn stop(&mut self, id: &str, why: &str) {
        self.sessions_changed = true;
        if self.pending.remove(id).is_some() {
            info!(session = %id, "session ended before its filters were ready: {why}");
        }
        if let Some(mut session) = self.sessions.remove(id) {
            session.flush(&mut self.frames);
            self.send_frames();
            info!(session = %id, "session ended: {why}");
        }
    }

    /// Flushes every session's pending batch and ends sessions past their expiry.
    pub fn flush(&mut self, now: Instant) {
        for session in self.sessions.values_mut() {
            session.flush(&mut self.frames);
        }
        self.send_frames();
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expired(now))
            .map(|(id, _)| id.clone())
            .collect();
        let expired_pending: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.ends)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired.into_iter().chain(expired_pending) {
            self.stop(&id, "expired");
        }
    }

    /// Queues a metrics report for the interval ending now.
    pub fn report_metrics(&mut self, now: Instant) {
        let health = HealthInputs {
            files_watched: self.tail_stats.files_watched(),
            // Pending sessions count: the agent is serving them, only not streaming yet.
            active_sessions: u32::try_from(self.sessions.len() + self.pending.len())
                .unwrap_or(u32::MAX),
            lines_truncated_total: self.tail_stats.lines_truncated(),
            buffered_bytes: self.outbox.buffered_bytes() as u64,
        };
        let report = self.metrics.report(now, now_ms(), health);
        self.outbox.push(AgentFrame::Metrics(report));
    }

    /// Waits for the next prepared chain and starts its session, as [`Pipeline::run`] does.
    #[cfg(test)]
    pub(crate) async fn activate_next(&mut self) {
        if let Some(ready) = self.ready_rx.recv().await {
            self.activate(ready, Instant::now());
            self.run_backfills().await;
        }
    }

    fn send_frames(&mut self) {
        for frame in self.frames.drain(..) {
            self.outbox.push(frame);
        }
    }

    /// Runs until the tailer's channel closes (the tailer stopped), then flushes what sessions
    /// hold. Host commands keep being applied until then.
    pub async fn run(
        mut self,
        mut lines: mpsc::Receiver<TailBatch>,
        mut host: mpsc::Receiver<HostFrame>,
        batch_interval: Duration,
        metrics_interval: Duration,
    ) {
        let mut flush_tick = tokio::time::interval(batch_interval);
        flush_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let start = tokio::time::Instant::now() + metrics_interval;
        let mut metrics_tick = tokio::time::interval_at(start, metrics_interval);
        metrics_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut host_open = true;
        // Since when the outbox has been too full to take lines (see `outbox`).
        let mut full_since: Option<tokio::time::Instant> = None;
        let outbox = self.outbox.clone();
        loop {
            let now = tokio::time::Instant::now();
            let held_back = if outbox.has_room() {
                full_since = None;
                None
            } else {
                let until = *full_since.get_or_insert(now) + BACKPRESSURE_MAX_WAIT;
                (now < until).then_some(until)
            };
            // Biased, timers first: a busy tail channel must not starve flushes; host commands
            // before lines, so a session started before lines arrived sees them.
            tokio::select! {
                biased;
                _ = flush_tick.tick() => {
                    self.flush_multiline(Instant::now(), false).await;
                    self.flush(Instant::now());
                    self.checkpoint(Instant::now());
                }
                _ = metrics_tick.tick() => self.report_metrics(Instant::now()),
                frame = host.recv(), if host_open => match frame {
                    Some(frame) => self.handle_host(frame),
                    None => host_open = false,
                },
                // Never `None`: the pipeline holds a sender.
                Some(ready) = self.ready_rx.recv() => {
                    self.activate(ready, Instant::now());
                    self.run_backfills().await;
                }
                _ = outbox.room(), if held_back.is_some() => {}
                _ = tokio::time::sleep_until(held_back.unwrap_or(now)), if held_back.is_some() => {}
                // Not while a restored session is pending, nor while the outbox holds back
                // lines: the files hold them meanwhile.
                batch = lines.recv(), if !self.holds_lines() && held_back.is_none() => match batch {
                    Some(batch) => {
                        // The snapshot taken after the last batch is visible now (the tailer
                        // publishes it before sending the next): its one chance to be cut
                        // exactly (see `checkpointing`).
                        self.checkpoint(Instant::now());
                        self.handle_lines(batch, Instant::now()).await;
                        if let Some(c) = self.checkpointing.as_mut() {
                            c.batch_handled();
                        }
                        // Nothing more read yet: ship now rather than wait for the timer. Under
                        // load the channel is rarely empty, so batches still fill up.
                        if lines.is_empty() {
                            self.flush(Instant::now());
                        }
                        self.checkpoint(Instant::now());
                    }
                    None => break,
                },
            }
            self.save_sessions();
        }
        self.save_sessions();
        self.flush_multiline(Instant::now(), true).await;
        self.flush(Instant::now());
        self.checkpoint(Instant::now());
        if let Some(c) = self.checkpointing.take() {
            c.finish().await;
        }
        if let Some(saver) = self.saver.take() {
            saver.finish().await;
        }
        debug!("pipeline stopped");
    }
}

/// How `spec`, ending at `ends`, is remembered across a restart: a restart has no monotonic
/// clock to go on, so its end is written by the wall clock (`wall` is now by it).
fn saved_session(spec: &SessionSpec, ends: Instant, now: Instant, wall: i64) -> SavedSession {
    let left = i64::try_from(ends.saturating_duration_since(now).as_millis()).unwrap_or(i64::MAX);
    SavedSession {
        id: spec.id.clone(),
        filters: spec.filters.clone(),
        limits: spec.limits,
        ends_at_ms: wall.saturating_add(left),
    }
}

/// Offers `records` to every session (blocking: filters run here), collecting their frames in
/// `frames`. Returns the sessions still running, the frames, and the ids of sessions that
/// failed (already removed; their last frames are in `frames`).
fn offer_all(
    mut sessions: HashMap<String, Session>,
    records: &[Record],
    positions: &[LinePos],
    now: Instant,
    mut frames: Vec<AgentFrame>,
) -> (HashMap<String, Session>, Vec<AgentFrame>, Vec<String>) {
    let mut failed = Vec::new();
    for (id, session) in &mut sessions {
        // The runtime contains filter misbehaviour; a panic here is a bug of ours. It must end
        // this session (closed: nothing of the batch passes) without taking the others along.
        // Unwind safety: the session is failed and dropped, never used again.
        let offered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.offer_at(records, positions, now, &mut frames)
        }));
        match offered {
            Ok(Ok(())) => {}
            Ok(Err(_)) => failed.push(id.clone()),
            Err(_) => {
                error!(session = %id, "filtering panicked; the session ends");
                let failure = FilterFailure {
                    plugin: RUNTIME_FILTER_NAME.to_owned(),
                    message: "the agent's filter runtime failed".to_owned(),
                };
                session.fail(failure, records.len() as u64, &mut frames);
                failed.push(id.clone());
            }
        }
    }
    for id in &failed {
        sessions.remove(id);
    }
    (sessions, frames, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::tests::{builder, level_plugin};
    use crate::tail::TailLine;
    use logfleet_protocol::Filters;
    use logfleet_protocol::agent::{RateLimits, decode};
    use logfleet_protocol::client::DropReason;

    fn pipeline(outbox: &Outbox) -> Pipeline {
        Pipeline::new(
            ["app", "web"],
            ChainLoader::new(builder(), outbox.clone()),
            outbox.clone(),
            Arc::new(TailStats::default()),
        )
    }

    /// `spec` as saved with a minute left.
    fn saved(spec: &SessionSpec) -> SavedSession {
        let now = Instant::now();
        saved_session(spec, now + Duration::from_secs(60), now, now_ms())
    }

    fn spec(id: &str, sources: &[&str], lines_per_second: u32) -> SessionSpec {
        SessionSpec {
            id: id.into(),
            filters: Filters {
                sources: sources.iter().map(|s| s.to_string()).collect(),
                ..Filters::default()
            },
            limits: RateLimits {
                lines_per_second,
                bytes_per_second: 0,
            },
            remaining_ms: 60_000,
            backfill: None,
        }
    }

    /// Starts a session and waits until it runs.
    async fn start(p: &mut Pipeline, spec: SessionSpec) {
        p.handle_host(HostFrame::Start(spec));
        p.activate_next().await;
    }

    fn lines(source: &str, texts: &[&str]) -> TailBatch {
        let source: Arc<str> = source.into();
        let file: Arc<str> = format!("/var/log/{source}.log").into();
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| TailLine {
                source: source.clone(),
                file: file.clone(),
                line: i as u64 + 1,
                text: t.to_string(),
                read_at_ms: 1,
                at: LinePos::default(),
            })
            .collect()
    }

    fn drain(outbox: &Outbox) -> Vec<AgentFrame> {
        std::iter::from_fn(|| outbox.try_pop())
            .map(|e| decode::<AgentFrame>(e.bytes()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn seq_starts_from_the_clock_and_counts_every_line() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        let first = p.seq.peek();
        assert!(first >= initial_seq(1_700_000_000_000));
        p.handle_lines(lines("app", &["a", "b"]), Instant::now())
            .await;
        start(&mut p, spec("s1", &[], 0)).await;
        p.handle_lines(lines("web", &["ERROR c", "d"]), Instant::now())
            .await;
        p.flush(Instant::now());
        let frames = drain(&outbox);
        let AgentFrame::Logs(batch) = &frames[0] else {
            panic!("expected logs, got {frames:?}");
        };
        let seqs: Vec<u64> = batch.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [first + 2, first + 3]);
        assert_eq!(batch.records[0].level, logfleet_protocol::Level::Error);
        assert_eq!(batch.records[0].file, "/var/log/web.log");
    }

    #[tokio::test]
    async fn sessions_filter_independently() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        let now = Instant::now();
        start(&mut p, spec("a", &["app"], 0)).await;
        start(&mut p, spec("w", &["web"], 1)).await;
        p.handle_lines(lines("app", &["1", "2"]), now).await;
        p.handle_lines(lines("web", &["3", "4", "5"]), now).await;
        p.flush(Instant::now());
        let mut got: Vec<String> = drain(&outbox)
            .iter()
            .map(|f| match f {
                AgentFrame::Logs(b) => format!("{}:{}", b.session_id, b.records.len()),
                AgentFrame::Dropped {
                    session_id,
                    count,
                    reason: DropReason::RateLimited,
                } => {
                    format!("{session_id}:dropped {count}")
                }
                other => format!("{other:?}"),
            })
            .collect();
        got.sort();
        assert_eq!(got, ["a:2", "w:1", "w:dropped 2"]);
    }

    #[tokio::test]
    async fn session_set_starts_and_stops_and_expiry_ends_sessions() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        let keep = spec("keep", &[], 0);
        start(&mut p, spec("old", &[], 0)).await;
        start(&mut p, keep.clone()).await;
        // The full set after a reconnect: a listed session whose time left changed (and
        // nothing else) keeps running, to the new end.
        let keep = SessionSpec {
            remaining_ms: 5_000,
            ..keep
        };
        p.handle_host(HostFrame::Sessions(vec![keep, spec("new", &[], 0)]));
        assert_eq!(p.session_ids(), ["keep"]);
        assert_eq!(p.pending_sessions(), 1);
        p.activate_next().await;
        assert_eq!(p.session_ids(), ["keep", "new"]);
        // Each ends on its own once its time is up, host or no host.
        p.flush(Instant::now() + Duration::from_secs(10));
        assert_eq!(p.session_ids(), ["new"]);
        p.handle_host(HostFrame::Stop {
            session_id: "new".into(),
        });
        assert_eq!(p.active_sessions(), 0);
        let mut expired = spec("late", &[], 0);
        expired.remaining_ms = 0;
        p.handle_host(HostFrame::Start(expired));
        assert_eq!(p.active_sessions() + p.pending_sessions(), 0);
    }

    #[tokio::test]
    async fn start_replaces_spec_and_flushes_old_batch() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        let now = Instant::now();
        start(&mut p, spec("s", &["app"], 0)).await;
        p.handle_lines(lines("app", &["1"]), now).await;
        start(&mut p, spec("s", &["web"], 0)).await;
        p.handle_lines(lines("app", &["2"]), now).await;
        p.handle_lines(lines("web", &["3"]), now).await;
        p.flush(Instant::now());
        let texts: Vec<String> = drain(&outbox)
            .iter()
            .filter_map(|f| match f {
                AgentFrame::Logs(b) => Some(b.records[0].message.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["1", "3"]);
    }

    #[tokio::test]
    async fn pending_sessions_fetch_plugins_and_can_be_cancelled() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        let now = Instant::now();
        let (plugin, bytes) = level_plugin("errors", r#"{"levels":["ERROR"]}"#);
        let mut with_plugin = spec("s", &[], 0);
        with_plugin.filters.plugins = vec![plugin.clone()];
        p.handle_host(HostFrame::Start(with_plugin.clone()));
        let mut other = with_plugin.clone();
        other.id = "t".into();
        p.handle_host(HostFrame::Start(other));

        // Lines read while the chain is being prepared are not part of the session.
        p.handle_lines(lines("app", &["ERROR early"]), now).await;
        let entry = tokio::time::timeout(Duration::from_secs(10), outbox.next())
            .await
            .unwrap();
        assert_eq!(
            decode::<AgentFrame>(entry.bytes()).unwrap(),
            AgentFrame::FetchPlugin {
                digest: plugin.digest.clone()
            }
        );
        // Stopping a pending session cancels it.
        p.handle_host(HostFrame::Stop {
            session_id: "t".into(),
        });
        p.handle_host(HostFrame::Plugin {
            digest: plugin.digest.clone(),
            bytes,
        });
        p.activate_next().await;
        assert_eq!(p.session_ids(), ["s"]);
        assert_eq!(p.pending_sessions(), 0);
        p.handle_lines(lines("app", &["INFO skipped", "ERROR kept"]), now)
            .await;
        p.flush(Instant::now());
        let frames = drain(&outbox);
        assert_eq!(frames.len(), 1, "{frames:?}");
        let AgentFrame::Logs(batch) = &frames[0] else {
            panic!("expected logs, got {frames:?}");
        };
        assert_eq!(batch.session_id, "s");
        let messages: Vec<&str> = batch.records.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(messages, ["kept"]);
    }

    /// A session whose plugin cannot be had never runs: it ends before its first record with
    /// one `FilterError` naming the plugin (0 records dropped), streams nothing, and a session
    /// list that still names it (sent before the host learnt of the failure) does not restart it.
    #[tokio::test]
    async fn a_session_whose_plugin_is_unavailable_ends_without_streaming() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        let (plugin, _) = level_plugin("errors", r#"{"levels":["ERROR"]}"#);
        let mut with_plugin = spec("s", &["app"], 0);
        with_plugin.filters.plugins = vec![plugin.clone()];
        p.handle_host(HostFrame::Start(with_plugin.clone()));
        tokio::time::timeout(Duration::from_secs(10), outbox.next())
            .await
            .unwrap();
        p.handle_host(HostFrame::PluginUnavailable {
            digest: plugin.digest,
            message: "no such plugin".into(),
        });
        p.activate_next().await;
        assert_eq!(p.active_sessions() + p.pending_sessions(), 0);
        p.handle_lines(lines("app", &["INFO never streamed"]), Instant::now())
            .await;
        p.flush(Instant::now());
        p.handle_host(HostFrame::Sessions(vec![with_plugin]));
        assert_eq!(p.active_sessions() + p.pending_sessions(), 0);
        let frames = drain(&outbox);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(
            matches!(&frames[0], AgentFrame::FilterError { session_id, plugin, message, dropped: 0 }
                if session_id == "s" && plugin == "errors" && message.contains("no such plugin")),
            "{frames:?}"
        );
    }

    /// Fail closed: when a plugin fails mid-stream, the records every filter decided still go
    /// out, then one `FilterError` counting the records the plugin held; not one of those, nor
    /// any later line, is sent; other sessions carry on.
    #[tokio::test]
    async fn a_failing_plugin_ends_its_session_and_passes_nothing_it_did_not_decide() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        let bytes = testkit::plugin_bytes("hostile-trap");
        let trap = logfleet_protocol::PluginRef {
            name: "hostile-trap".into(),
            config: r#"{"on":"boom"}"#.into(),
            digest: logfleet_filter_runtime::digest(&bytes),
        };
        let mut hostile = spec("h", &[], 0);
        hostile.filters.plugins = vec![trap.clone()];
        p.handle_host(HostFrame::Start(hostile));
        tokio::time::timeout(Duration::from_secs(10), outbox.next())
            .await
            .unwrap();
        p.handle_host(HostFrame::Plugin {
            digest: trap.digest,
            bytes,
        });
        p.activate_next().await;
        start(&mut p, spec("plain", &[], 0)).await;

        let now = Instant::now();
        p.handle_lines(lines("app", &["decided 1", "decided 2"]), now)
            .await;
        p.handle_lines(lines("app", &["held", "boom", "held too"]), now)
            .await;
        p.handle_lines(lines("app", &["after"]), now).await;
        p.flush(Instant::now());
        assert_eq!(p.session_ids(), ["plain"]);

        let frames = drain(&outbox);
        let hostile: Vec<String> = frames
            .iter()
            .filter_map(|f| match f {
                AgentFrame::Logs(b) if b.session_id == "h" => Some(
                    b.records
                        .iter()
                        .map(|r| r.message.clone())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                AgentFrame::FilterError {
                    session_id,
                    plugin,
                    dropped,
                    ..
                } if session_id == "h" => Some(format!("error {plugin} dropped {dropped}")),
                AgentFrame::Logs(_) | AgentFrame::FilterError { .. } => None,
                other => Some(format!("{other:?}")),
            })
            .collect();
        assert_eq!(
            hostile,
            ["decided 1,decided 2", "error hostile-trap dropped 3"]
        );
        let plain: usize = frames
            .iter()
            .map(|f| match f {
                AgentFrame::Logs(b) if b.session_id == "plain" => b.records.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(plain, 6, "the other session carries on");
    }

    /// Waits (bounded) until the state directory holds the session ids `want`.
    async fn saved_ids(state: &StateDir, want: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ids: Vec<String> = state.load_sessions().into_iter().map(|s| s.id).collect();
            if ids == want {
                return;
            }
            assert!(Instant::now() < deadline, "saved {ids:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A restart resumes saved sessions that have not ended (not those that did), lines wait
    /// while a restored session is prepared, and the saved set follows every change.
    #[tokio::test]
    async fn saved_sessions_are_restored_and_the_set_is_saved_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox).with_state(&state);
        let live = saved(&spec("live", &[], 0));
        let mut ended = saved(&spec("ended", &[], 0));
        ended.ends_at_ms = now_ms() - 1;
        assert_eq!(p.restore(vec![live.clone(), ended]), 1);
        assert!(p.holds_lines(), "lines wait for the restored session");
        p.save_sessions();
        saved_ids(&state, &["live"]).await;
        p.activate_next().await;
        assert_eq!(p.session_ids(), ["live"]);
        assert!(!p.holds_lines());
        // Its spec is as saved, so the host's list keeps it running rather than restarting.
        let listed = spec("live", &[], 0);
        p.handle_host(HostFrame::Sessions(vec![listed, spec("new", &[], 0)]));
        assert_eq!(
            (p.session_ids(), p.pending_sessions()),
            (vec!["live".into()], 1)
        );
        assert!(!p.holds_lines(), "only restored sessions hold lines");
        p.save_sessions();
        saved_ids(&state, &["live", "new"]).await;
        p.handle_host(HostFrame::Stop {
            session_id: "live".into(),
        });
        p.save_sessions();
        saved_ids(&state, &["new"]).await;
        // Seqs come from the state directory: a second pipeline continues above.
        p.handle_lines(lines("app", &["a"]), Instant::now()).await;
        let next = p.seq.peek();
        let p2 = pipeline(&outbox).with_state(&state);
        assert!(p2.seq.peek() >= next, "{} < {next}", p2.seq.peek());
    }

    /// Backlog the tailer skipped over its cap at a restart is not lost silently: each restored
    /// session it concerns gets one `Dropped` frame with the count before its first records;
    /// a session on another source, and sessions started by the host, get none.
    #[tokio::test]
    async fn backlog_skipped_at_restart_is_reported_to_restored_sessions() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        p.tail_stats.add_backlog_dropped(
            "app",
            crate::tail::Skipped {
                lines: 7,
                bytes: 700,
            },
        );
        p.restore(vec![
            saved(&spec("all", &[], 0)),
            saved(&spec("web-only", &["web"], 0)),
        ]);
        p.activate_next().await;
        p.activate_next().await;
        start(&mut p, spec("fresh", &[], 0)).await;
        p.handle_lines(lines("app", &["first"]), Instant::now())
            .await;
        p.handle_lines(lines("app", &["second"]), Instant::now())
            .await;
        p.flush(Instant::now());
        let frames = drain(&outbox);
        let dropped: Vec<&AgentFrame> = frames
            .iter()
            .filter(|f| matches!(f, AgentFrame::Dropped { .. }))
            .collect();
        assert_eq!(
            dropped,
            [&AgentFrame::Dropped {
                session_id: "all".into(),
                count: 7,
                reason: DropReason::AgentBufferFull,
            }]
        );
        let first_of_all = frames
            .iter()
            .position(|f| matches!(f, AgentFrame::Logs(b) if b.session_id == "all"))
            .unwrap();
        let report = frames
            .iter()
            .position(|f| matches!(f, AgentFrame::Dropped { .. }))
            .unwrap();
        assert!(report < first_of_all, "{frames:?}");
    }

    /// A restored session whose filters the host changed while the agent was down still holds
    /// the lines for its backlog while its new chain is prepared.
    #[tokio::test]
    async fn a_restored_session_with_new_filters_still_holds_lines() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        p.restore(vec![saved(&spec("r", &[], 0))]);
        assert!(p.holds_lines());
        p.handle_host(HostFrame::Sessions(vec![spec("r", &["web"], 0)]));
        assert_eq!(p.pending_sessions(), 1);
        assert!(
            p.holds_lines(),
            "the replaced pending session stays restored"
        );
    }

    /// Lines read before a restored session's filters are ready are not lost: they reach the
    /// session once its plugin arrives (a host-started session would not see them).
    #[tokio::test]
    async fn lines_wait_for_a_restored_session() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        let (plugin, bytes) = level_plugin("errors", r#"{"levels":["ERROR"]}"#);
        let mut restored = spec("r", &[], 0);
        restored.filters.plugins = vec![plugin.clone()];
        p.restore(vec![saved(&restored)]);
        let (line_tx, line_rx) = mpsc::channel(4);
        let (host_tx, host_rx) = mpsc::channel(4);
        let task = tokio::spawn(p.run(
            line_rx,
            host_rx,
            Duration::from_millis(5),
            Duration::from_secs(3600),
        ));
        line_tx
            .send(lines("app", &["ERROR early", "INFO not kept"]))
            .await
            .unwrap();
        let entry = tokio::time::timeout(Duration::from_secs(10), outbox.next())
            .await
            .unwrap();
        assert_eq!(
            decode::<AgentFrame>(entry.bytes()).unwrap(),
            AgentFrame::FetchPlugin {
                digest: plugin.digest.clone()
            }
        );
        host_tx
            .send(HostFrame::Plugin {
                digest: plugin.digest,
                bytes,
            })
            .await
            .unwrap();
        let entry = tokio::time::timeout(Duration::from_secs(10), outbox.next())
            .await
            .unwrap();
        let AgentFrame::Logs(batch) = decode::<AgentFrame>(entry.bytes()).unwrap() else {
            panic!("expected logs");
        };
        let messages: Vec<&str> = batch.records.iter().map(|r| r.message.as_str()).collect();
        assert_eq!((batch.session_id.as_str(), messages), ("r", vec!["early"]));
        drop(line_tx);
        task.await.unwrap();
    }

    /// A session that asks for a backfill gets its file's last records first, numbered below
    /// every live record, then `BackfillDone`; a live line the backfill covered (read before
    /// the scan, handled after it) is not sent again, and the line after it is.
    #[tokio::test]
    async fn backfill_comes_first_and_live_lines_it_covered_are_skipped() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let text: String = (1..=10).map(|n| format!("a {n}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let covered_end = text.len() as u64;
        let meta = std::fs::metadata(&path).unwrap();
        let id = (meta.dev(), meta.ino());
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox)
            .parse_sources_as(&[SourceConfig::new("app", path.display().to_string())]);
        let first_seq = p.seq.peek();
        let mut with_backfill = spec("s", &[], 0);
        with_backfill.backfill = Some(3);
        start(&mut p, with_backfill).await;
        let line = |n: u64, end: u64| TailLine {
            source: "app".into(),
            file: path.display().to_string().into(),
            line: n,
            text: format!("a {n}"),
            read_at_ms: 1,
            at: LinePos {
                id,
                start: end,
                end,
            },
        };
        p.handle_lines(
            vec![line(10, covered_end), line(11, covered_end + 5)],
            Instant::now(),
        )
        .await;
        p.flush(Instant::now());
        let got: Vec<String> = drain(&outbox)
            .iter()
            .map(|f| match f {
                AgentFrame::Logs(b) => b
                    .records
                    .iter()
                    .map(|r| format!("{}@{}#{}", r.message, r.line, r.seq - first_seq))
                    .collect::<Vec<_>>()
                    .join(","),
                AgentFrame::BackfillDone {
                    count, truncated, ..
                } => format!("done {count} {truncated}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            ["a 8@8#0,a 9@9#1,a 10@10#2", "done 3 false", "a 11@11#4"]
        );
    }

    /// A filter change (PATCH) after the backfill does not undo its boundary: a live line the
    /// backfill already sent, which the tailer hands over only after the change, is not sent
    /// again; the line after it is.
    #[tokio::test]
    async fn a_filter_change_after_the_backfill_keeps_its_boundary() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let text: String = (1..=10).map(|n| format!("a {n}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let covered_end = text.len() as u64;
        let meta = std::fs::metadata(&path).unwrap();
        let id = (meta.dev(), meta.ino());
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox)
            .parse_sources_as(&[SourceConfig::new("app", path.display().to_string())]);
        let mut with_backfill = spec("s", &[], 0);
        with_backfill.backfill = Some(3);
        start(&mut p, with_backfill.clone()).await;
        // The host keeps asking for the backfill until it hears `BackfillDone`.
        let mut patched = with_backfill;
        patched.filters.pattern = Some("a".into());
        start(&mut p, patched).await;
        let line = |n: u64, end: u64| TailLine {
            source: "app".into(),
            file: path.display().to_string().into(),
            line: n,
            text: format!("a {n}"),
            read_at_ms: 1,
            at: LinePos {
                id,
                start: end,
                end,
            },
        };
        p.handle_lines(
            vec![line(10, covered_end), line(11, covered_end + 5)],
            Instant::now(),
        )
        .await;
        p.flush(Instant::now());
        let live: Vec<String> = drain(&outbox)
            .iter()
            .filter_map(|f| match f {
                AgentFrame::Logs(b) => Some(b.records.iter().map(|r| r.message.clone())),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(live, ["a 8", "a 9", "a 10", "a 11"], "a 10 once");
    }

    /// A session restored after a restart resumes from checkpoints instead of backfilling;
    /// when the host still waits for its backfill (the agent died before saying it was done),
    /// the agent says it is over, with nothing sent.
    #[tokio::test]
    async fn a_restored_session_ends_the_backfill_the_host_waits_for() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        p.restore(vec![saved(&spec("r", &[], 0))]);
        p.activate_next().await;
        let mut listed = spec("r", &[], 0);
        listed.backfill = Some(100);
        p.handle_host(HostFrame::Sessions(vec![listed]));
        assert_eq!(p.session_ids(), ["r"], "kept running");
        assert_eq!(
            drain(&outbox),
            [AgentFrame::BackfillDone {
                session_id: "r".into(),
                count: 0,
                truncated: false,
            }]
        );
    }

    #[tokio::test]
    async fn metrics_count_lines_without_sessions() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        p.handle_lines(lines("app", &["ERROR x", "WARN y", "z"]), Instant::now())
            .await;
        p.report_metrics(Instant::now());
        let frames = drain(&outbox);
        let AgentFrame::Metrics(m) = &frames[0] else {
            panic!("expected metrics");
        };
        assert_eq!(m.sources[0].name, "app");
        assert_eq!(m.sources[0].levels, [0, 0, 1, 1, 1, 0]);
        assert_eq!(m.sources[0].bytes, 14);
    }

    #[tokio::test]
    async fn run_flushes_on_the_timer_and_on_close() {
        let outbox = Outbox::new(1 << 20);
        let p = pipeline(&outbox);
        let (line_tx, line_rx) = mpsc::channel(4);
        let (host_tx, host_rx) = mpsc::channel(4);
        let task = tokio::spawn(p.run(
            line_rx,
            host_rx,
            Duration::from_millis(5),
            Duration::from_secs(3600),
        ));
        host_tx
            .send(HostFrame::Start(spec("s", &[], 0)))
            .await
            .unwrap();
        // The session runs once its chain is ready; lines before that are not part of it.
        let entry = loop {
            line_tx.send(lines("app", &["one"])).await.unwrap();
            if let Ok(entry) = tokio::time::timeout(Duration::from_millis(50), outbox.next()).await
            {
                break entry;
            }
        };
        assert!(matches!(
            decode::<AgentFrame>(entry.bytes()).unwrap(),
            AgentFrame::Logs(_)
        ));
        line_tx.send(lines("app", &["two"])).await.unwrap();
        drop(line_tx);
        task.await.unwrap();
        assert!(
            drain(&outbox)
                .iter()
                .any(|f| matches!(f, AgentFrame::Logs(b) if b.records[0].message == "two"))
        );
    }
}
