//! File tailing: follows every file of every source and turns appended bytes into numbered
//! lines.
//!
//! This is a small tailer of its own rather than a crate such as `linemux`, because the product
//! needs what those do not give: the 1-based line number of every line (counting lines already
//! in the file at start), byte positions, rotated files followed to their end, checkpoints, and
//! correct handling of `copytruncate` rotation.
//!
//! # Map
//!
//! - [`file`](mod@file): [`FileTail`], one path: its current file, the rotated-away files still
//!   followed, truncation, reading and splitting lines.
//! - [`identity`]: what makes a file the same file (device, inode, head fingerprint) and the
//!   positions remembered for files no longer followed.
//! - [`tailer`]: [`Tailer`], all sources: glob expansion, fair polling with batch limits, the
//!   cap on rotated files, the thread loop.
//! - [`wake`]: inotify wake-ups, so a write is read at once instead of at the next poll.
//! - [`checkpoint`]: persisted read positions and how a tailer resumes from them.
//!
//! # Per file
//!
//! Per path ([`FileTail`]) the tailer keeps the open file's identity (device, inode), the read
//! position, a line counter, the bytes of an unfinished last line and a fingerprint of the
//! file's first [`FINGERPRINT_BYTES`] bytes. Every poll it stats the path and handles:
//!
//! - **rotation** (inode at the path changed: mv-and-recreate, logrotate `create`, delete and
//!   recreate) and a **missing path** (moved or deleted, nothing there yet): the old file's
//!   open handle is *kept and followed* — a writer that keeps its descriptor across the rename
//!   and reopens late (a daemon waiting for its reopen signal) still appends there — until it
//!   has been quiet (no growth, read to its end) for [`Tuning::rotate_wait`] (default
//!   [`DEFAULT_ROTATE_WAIT`], TOML `rotate_wait`, flag `--rotate-wait`); only then is it closed
//!   (its unterminated last line, if any, emitted). Meanwhile the new file at the path is read
//!   from offset 0 with line numbers restarting at 1. The old file's lines keep **the name the
//!   tailer followed it under** (`app.log`, not `app.log.1`: the name the writer wrote to, and
//!   independent of when the tailer noticed the rename) and **continue the old file's own line
//!   count**, so a client tells `app.log:11` of the old file from `app.log:1` of the new one by
//!   their numbers. Memory is bounded: at most [`MAX_ROTATED_FOLLOWED`] rotated files are
//!   followed at once over all sources; beyond that the one quiet the longest is read to its
//!   end and closed early (logged);
//! - **truncation** (size below position, or the head fingerprint changed: `copytruncate`
//!   followed by a fast rewrite): reading restarts at 0, numbering at 1, the partial line is
//!   dropped;
//! - **new bytes**: read in [`READ_CHUNK_BYTES`] chunks, split on `\n`, a trailing `\r`
//!   stripped, decoded as lossy UTF-8; lines longer than [`MAX_LINE_BYTES`] are cut there.
//!
//! ## copytruncate's known window
//!
//! `copytruncate` keeps the same inode, so nothing is followed "to the end": lines the writer
//! appends between logrotate's copy and its truncate are in neither the copy we do not follow
//! nor the truncated file, and lines written after the tailer's last read and before the
//! truncate are lost with it (logrotate's own documented race). A rewrite that keeps the same
//! first [`FINGERPRINT_BYTES`] bytes and outgrows the old position before the next poll cannot
//! be told from an append; that is the limit of a stat-based tailer. Use `create` (with a
//! reopen signal) where lines matter.
//!
//! # Over sources
//!
//! Files present when the agent starts are read from their end (after their existing lines are
//! counted), or from a checkpoint ([`StartPolicy::Resume`]); files that appear later are read
//! from the start. A file renamed into a source's glob while the tailer still knows its
//! position (e.g. `app.log` → `app.log.1` with a `app.log*` glob) is left to the tail that
//! follows it as rotated; once that one closes it, the next scan continues it under its new
//! name from the remembered position instead of reading it again: no line twice. The same
//! holds when a followed name gets another followed file (logrotate's `app.log.1` →
//! `app.log.2`, `app.log` → `app.log.1` under `app.log*`): a tail never opens a file another
//! tail holds, and takes it over from its remembered position once that tail lets it go.
//!
//! The [`Tailer`] is synchronous (file I/O blocks) and runs on its own thread ([`spawn`]). It
//! wakes on inotify events for the directories of its files ([`wake`]) and polls every
//! `poll_interval` as the fallback for filesystems without events (a longer interval,
//! [`EVENT_POLL_INTERVAL`], when events work). It hands batches of [`TailLine`]s to the
//! pipeline through a bounded channel; when the channel is full the thread simply waits. That
//! backpressure costs nothing: the unread data stays in the files, which are the buffer.
//!
//! [`Tuning::rotate_wait`]: crate::config::Tuning::rotate_wait

pub mod checkpoint;
pub mod file;
pub mod identity;
pub mod tailer;
pub mod wake;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::{SourceConfig, Tuning};

pub use checkpoint::{CheckpointStore, Checkpoints, FileCheckpoint, Snapshot, StartPolicy};
pub use file::{FileTail, PollOutcome, Skipped, StartAt};
pub use tailer::Tailer;

/// Longest line kept, in bytes; the rest of a longer line is skipped up to its newline and the
/// line counted in `lines_truncated`. Bounds memory per file and per record.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Size of one read from a file.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How much of a file's head is fingerprinted to detect truncate-and-rewrite, and to tell a
/// checkpointed file from another that reuses its inode.
pub const FINGERPRINT_BYTES: usize = 64;
/// Most bytes read from one file in one poll, so one busy file cannot starve the others and
/// a batch stays bounded.
pub const FILE_BUDGET_BYTES: usize = 256 * 1024;
/// A poll stops visiting further files once its batch holds this many lines...
pub const MAX_BATCH_LINES: usize = 2048;
/// ...or this many bytes of text; together with [`FILE_BUDGET_BYTES`] this bounds a batch.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Batches in flight between the tailer and the pipeline. When full, the tailer waits (the
/// files hold the data), so this only bounds memory: at most this many batches.
pub const TAIL_CHANNEL_BATCHES: usize = 8;
/// How long a tail whose path disappeared (and has no rotated file left to follow) is kept
/// before the tailer forgets it; a reappearing file is found again by the glob.
pub const MISSING_GRACE: Duration = Duration::from_secs(5);
/// Most rotated-away files whose position is remembered (see module docs); the oldest is
/// forgotten first.
pub const MAX_RETIRED: usize = 256;
/// Default for [`Tuning::rotate_wait`](crate::config::Tuning::rotate_wait): how long a
/// rotated-away or deleted file must have been quiet before it is closed (Fluent Bit's
/// `rotate_wait` default is 5 s; daemons that reopen on a signal from a `postrotate` script
/// can take a few seconds).
pub const DEFAULT_ROTATE_WAIT: Duration = Duration::from_secs(10);
/// Most rotated-away files followed at once, over all sources: each costs a descriptor, a
/// line buffer of up to [`MAX_LINE_BYTES`] and pins its disk space. Beyond it, the one quiet
/// the longest is read to its end and closed early.
pub const MAX_ROTATED_FOLLOWED: usize = 64;
/// The safety-net poll interval while inotify events are delivered: events wake the tailer at
/// once, polling only covers what they miss (a file moved out of the watched directories, a
/// filesystem that drops events). The configured `poll_interval` applies when it is longer,
/// and always without events.
pub const EVENT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// One line read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailLine {
    /// The configured source name.
    pub source: Arc<str>,
    /// The file's path, as the source's glob matched it (for a rotated-away file still
    /// followed: the path it was followed under, see the module docs).
    pub file: Arc<str>,
    /// 1-based line number in the file, counting lines already there at start.
    pub line: u64,
    pub text: String,
    /// When the line was read, ms since the Unix epoch.
    pub read_at_ms: i64,
    /// Where it is in which file: a backfill's records are told from live ones by it.
    pub at: LinePos,
}

/// Where a line is in the file it was read from: the file's identity, the offset of its first
/// byte and the offset just after its newline (after its last byte for an unterminated last
/// line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LinePos {
    pub id: identity::FileId,
    pub start: u64,
    pub end: u64,
}

/// What the pipeline receives from the tailer in one message.
pub type TailBatch = Vec<TailLine>;

/// Counters the tailer publishes for the agent's health report.
#[derive(Debug, Default)]
pub struct TailStats {
    pub(crate) files_watched: AtomicU32,
    pub(crate) lines_truncated: AtomicU64,
    pub(crate) rotated_followed: AtomicU32,
    pub(crate) rotated_closed_early: AtomicU64,
    backlog_dropped: Mutex<BTreeMap<String, Skipped>>,
}

impl TailStats {
    /// Files currently open (followed paths and rotated-away files still followed).
    pub fn files_watched(&self) -> u32 {
        self.files_watched.load(Ordering::Relaxed)
    }

    /// Lines cut to [`MAX_LINE_BYTES`] since start.
    pub fn lines_truncated(&self) -> u64 {
        self.lines_truncated.load(Ordering::Relaxed)
    }

    /// Rotated-away files currently followed until they are quiet.
    pub fn rotated_followed(&self) -> u32 {
        self.rotated_followed.load(Ordering::Relaxed)
    }

    /// Rotated files closed before their quiet wait because [`MAX_ROTATED_FOLLOWED`] was
    /// reached (lines appended to them afterwards are not read).
    pub fn rotated_closed_early(&self) -> u64 {
        self.rotated_closed_early.load(Ordering::Relaxed)
    }

    /// Per source, the backlog skipped when resuming from checkpoints because it exceeded the
    /// cap of [`StartPolicy::Resume`]: lines and bytes read past without being shipped.
    pub fn backlog_dropped(&self) -> BTreeMap<String, Skipped> {
        self.backlog_dropped
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    pub(crate) fn add_backlog_dropped(&self, source: &str, skipped: Skipped) {
        if let Ok(mut m) = self.backlog_dropped.lock() {
            let e = m.entry(source.to_owned()).or_default();
            e.lines += skipped.lines;
            e.bytes += skipped.bytes;
        }
    }
}

/// How the tailer thread runs; see [`TailOptions::from_tuning`].
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Polling interval without inotify events (the fallback).
    pub poll_interval: Duration,
    /// How often globs are expanded (also at once on a create/rename event).
    pub glob_interval: Duration,
    /// Quiet time after which a rotated-away file is closed.
    pub rotate_wait: Duration,
    /// Wake on inotify events (falls back to polling when unavailable).
    pub events: bool,
    /// Where files present at start begin: at their end, or from checkpoints.
    pub start: StartPolicy,
    /// The checkpoints [`StartPolicy::Resume`] continues from (see [`CheckpointStore::load`]).
    pub resume_from: Checkpoints,
    /// Where to publish read positions (every [`checkpoint::CHECKPOINT_INTERVAL`] when
    /// something changed, and when the tailer stops); whoever receives them writes the
    /// checkpoint once the lines before them are safe (see [`Snapshot`]). `None`: not kept.
    pub snapshots: Option<tokio::sync::watch::Sender<Snapshot>>,
}

impl TailOptions {
    pub fn from_tuning(tuning: &Tuning) -> TailOptions {
        TailOptions {
            poll_interval: tuning.poll_interval,
            glob_interval: tuning.glob_interval,
            rotate_wait: tuning.rotate_wait,
            events: true,
            start: StartPolicy::AtEnd,
            resume_from: Checkpoints::default(),
            snapshots: None,
        }
    }
}

impl Default for TailOptions {
    fn default() -> TailOptions {
        TailOptions::from_tuning(&Tuning::default())
    }
}

/// Controls a running tailer thread. Dropping it stops the thread too, so an aborted agent
/// leaves no tailer behind.
#[derive(Debug)]
pub struct TailHandle {
    stop: std_mpsc::Sender<tailer::Signal>,
}

impl TailHandle {
    /// Asks the tailer to stop after its current poll; it closes its channel when it does.
    /// Does not wait: the thread may be waiting for the pipeline to take a batch.
    pub fn signal_stop(&self) {
        // The thread may already have exited (pipeline gone); nothing to tell it then.
        let _ = self.stop.send(tailer::Signal::Stop);
    }
}

impl Drop for TailHandle {
    fn drop(&mut self) {
        // The inotify thread holds a sender too, so the channel does not close by itself.
        self.signal_stop();
    }
}

/// Starts the tailer on its own thread: file I/O blocks, and a dedicated thread keeps it off
/// the async runtime's few workers without a `spawn_blocking` per poll. The initial scan (which
/// counts the lines of every existing file: gigabytes on a busy machine) runs on that thread
/// too, so the agent connects to its host at once instead of after reading them.
pub fn spawn(
    sources: &[SourceConfig],
    options: TailOptions,
    stats: Arc<TailStats>,
    tx: mpsc::Sender<TailBatch>,
) -> io::Result<TailHandle> {
    let sources = sources.to_vec();
    let (stop, signals) = std_mpsc::channel();
    let wake_tx = stop.clone();
    // Detached: it ends on its own when told to stop or when the pipeline goes away.
    thread::Builder::new()
        .name("logfleet-tail".into())
        .spawn(move || {
            let tailer = Tailer::with_options(&sources, stats, &options);
            tailer.run(tx, signals, wake_tx, &options)
        })?;
    Ok(TailHandle { stop })
}
