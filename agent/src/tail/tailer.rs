//! [`Tailer`]: every file of every source, and the thread loop that drives it.

use std::collections::{HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::checkpoint::{CHECKPOINT_INTERVAL, Checkpoints, Snapshot, StartPolicy};
use super::file::{FileTail, Known, StartAt};
use super::identity::{FileId, Retired};
use super::wake::{Watcher, dirs_to_watch};
use super::{
    DEFAULT_ROTATE_WAIT, EVENT_POLL_INTERVAL, MAX_BATCH_BYTES, MAX_BATCH_LINES, MAX_RETIRED,
    MAX_ROTATED_FOLLOWED, TailBatch, TailLine, TailOptions, TailStats,
};
use crate::config::SourceConfig;

/// What the tailer thread is told: by its [`TailHandle`](super::TailHandle), or by the
/// inotify thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Stop,
    /// Something was written: poll now.
    Wake,
    /// A file was created, renamed or deleted: expand the globs now.
    Rescan,
}

/// One configured source: its glob and the files it currently matches.
#[derive(Debug)]
struct SourceTail {
    name: Arc<str>,
    pattern: String,
    /// Whether "matches no files" was already logged, so it is said once.
    warned_empty: bool,
}

/// Follows all sources: expands globs, polls every file, collects lines. Synchronous; see
/// [`spawn`](super::spawn) for the thread that drives it.
#[derive(Debug)]
pub struct Tailer {
    sources: Vec<SourceTail>,
    /// Every followed path, of all sources.
    files: Vec<FileTail>,
    /// Where the next poll starts, so files share the batch limits fairly.
    cursor: usize,
    retired: VecDeque<Retired>,
    /// The first scan starts existing files at their end (or their checkpoint); later scans
    /// read new files whole.
    scanned_once: bool,
    rotate_wait: Duration,
    start: StartPolicy,
    /// Positions loaded at start, used by the first scan only.
    resume_from: Checkpoints,
    stats: Arc<TailStats>,
}

impl Tailer {
    /// A tailer for `sources`, with an initial scan done: files that exist now are followed
    /// from their end.
    pub fn new(sources: &[SourceConfig], stats: Arc<TailStats>) -> Tailer {
        Tailer::with_options(
            sources,
            stats,
            &TailOptions {
                rotate_wait: DEFAULT_ROTATE_WAIT,
                ..TailOptions::default()
            },
        )
    }

    /// A tailer for `sources` with the rotate wait and start policy of `options`, with an
    /// initial scan done.
    pub fn with_options(
        sources: &[SourceConfig],
        stats: Arc<TailStats>,
        options: &TailOptions,
    ) -> Tailer {
        let mut tailer = Tailer {
            sources: sources
                .iter()
                .map(|s| SourceTail {
                    name: s.name.as_str().into(),
                    pattern: s.path.clone(),
                    warned_empty: false,
                })
                .collect(),
            files: Vec::new(),
            cursor: 0,
            retired: VecDeque::new(),
            scanned_once: false,
            rotate_wait: options.rotate_wait,
            start: options.start,
            resume_from: options.resume_from.clone(),
            stats,
        };
        tailer.rescan();
        tailer.resume_from = Checkpoints::default();
        tailer
    }

    /// Where a file found by the first scan starts.
    fn initial_start(&self, path: &str, id: (u64, u64)) -> StartAt {
        let StartPolicy::Resume { backlog_cap_bytes } = self.start else {
            return StartAt::End;
        };
        let by_id = self.resume_from.files.iter().find(|c| (c.dev, c.ino) == id);
        let by_path = || self.resume_from.files.iter().find(|c| c.path == path);
        match by_id.or_else(by_path) {
            Some(c) => StartAt::Checkpoint {
                id: (c.dev, c.ino),
                head: c.head.clone(),
                pos: c.offset,
                lines: c.line,
                backlog_cap: backlog_cap_bytes,
            },
            // Nothing known about this file: as without checkpoints.
            None => StartAt::End,
        }
    }

    /// Expands every source's glob and starts following files not followed yet.
    pub fn rescan(&mut self) {
        let first = !self.scanned_once;
        self.scanned_once = true;
        for si in 0..self.sources.len() {
            let source = &self.sources[si];
            let paths = match glob::glob(&source.pattern) {
                Ok(paths) => paths,
                Err(e) => {
                    // Config validation makes this unreachable in practice; never crash on it.
                    warn!(source = %source.name, error = %e, "invalid source glob");
                    continue;
                }
            };
            let name = source.name.clone();
            let mut matched = 0;
            for path in paths.filter_map(Result::ok) {
                matched += 1;
                if self.files.iter().any(|f| f.path() == path) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let id = (meta.dev(), meta.ino());
                // The same file still followed under another name (rotated away and not quiet
                // yet, or rotation not yet noticed by its tail): leave it for a later scan,
                // when its position will be known.
                if self.files.iter().any(|f| f.follows(id)) {
                    continue;
                }
                // A remembered position is used once: removed as it is taken.
                let resumed = self
                    .retired
                    .iter()
                    .position(|r| r.id == id)
                    .and_then(|i| self.retired.remove(i));
                let start = match resumed {
                    Some(r) => StartAt::Resume {
                        id,
                        pos: r.pos,
                        lines: r.lines,
                    },
                    None if first => self.initial_start(&path.to_string_lossy(), id),
                    None => StartAt::Beginning,
                };
                debug!(source = %name, file = %path.display(), ?start, "following file");
                let mut tail =
                    FileTail::new(name.clone(), path, start).with_rotate_wait(self.rotate_wait);
                tail.prime();
                self.files.push(tail);
            }
            let source = &mut self.sources[si];
            if matched == 0 && !source.warned_empty {
                info!(source = %source.name, path = %source.pattern, "source matches no files yet; watching for them");
                source.warned_empty = true;
            } else if matched > 0 {
                source.warned_empty = false;
            }
        }
        self.collect_skipped();
    }

    /// Polls files, starting where the last call stopped, until all were polled or `out`
    /// reached the batch limits. Returns whether more data is ready (call again without
    /// waiting).
    pub fn poll(&mut self, out: &mut Vec<TailLine>) -> bool {
        self.poll_at(out, Instant::now())
    }

    /// [`Tailer::poll`] at a given time (tests drive the rotate wait with it).
    pub fn poll_at(&mut self, out: &mut Vec<TailLine>, now: Instant) -> bool {
        let mut more = false;
        let mut truncated = 0;
        let count = self.files.len();
        let mut bytes: usize = out.iter().map(|l| l.text.len()).sum();
        let followed: HashSet<FileId> = self.files.iter().flat_map(FileTail::ids).collect();
        let known = Known {
            followed: Some(&followed),
            retired: Some(&self.retired),
        };
        for step in 0..count {
            let i = (self.cursor + step) % count;
            let before = out.len();
            let tail = &mut self.files[i];
            let outcome = tail.poll_with(out, now, &known);
            more |= outcome.more;
            truncated += outcome.truncated;
            bytes += out[before..].iter().map(|l| l.text.len()).sum::<usize>();
            if out.len() >= MAX_BATCH_LINES || bytes >= MAX_BATCH_BYTES {
                self.cursor = (i + 1) % count;
                more = true;
                break;
            }
        }
        self.cap_rotated(out);
        self.collect_retired();
        self.collect_skipped();
        self.files.retain(|f| !f.is_gone(now));
        if self.cursor >= self.files.len() {
            self.cursor = 0;
        }
        let open = self.files.iter().filter(|f| f.is_current_open()).count();
        let rotated: usize = self.files.iter().map(FileTail::rotated_count).sum();
        self.stats
            .files_watched
            .store((open + rotated) as u32, Ordering::Relaxed);
        self.stats
            .rotated_followed
            .store(rotated as u32, Ordering::Relaxed);
        self.stats
            .lines_truncated
            .fetch_add(truncated, Ordering::Relaxed);
        more
    }

    /// Closes the rotated files quiet the longest while more than [`MAX_ROTATED_FOLLOWED`] are
    /// followed.
    fn cap_rotated(&mut self, out: &mut Vec<TailLine>) {
        let mut total: usize = self.files.iter().map(FileTail::rotated_count).sum();
        while total > MAX_ROTATED_FOLLOWED {
            let oldest = self
                .files
                .iter()
                .enumerate()
                .filter_map(|(i, f)| f.oldest_rotated().map(|t| (t, i)))
                .min();
            let Some((_, i)) = oldest else { break };
            self.files[i].close_oldest_rotated(out);
            self.stats
                .rotated_closed_early
                .fetch_add(1, Ordering::Relaxed);
            total -= 1;
        }
    }

    fn collect_retired(&mut self) {
        for tail in &mut self.files {
            for id in tail.took_retired.drain(..) {
                self.retired.retain(|r| r.id != id);
            }
        }
        for tail in &mut self.files {
            for r in tail.retired.drain(..) {
                self.retired.retain(|old| old.id != r.id);
                if self.retired.len() == MAX_RETIRED {
                    self.retired.pop_front();
                }
                self.retired.push_back(r);
            }
        }
    }

    fn collect_skipped(&mut self) {
        for tail in &mut self.files {
            let skipped = std::mem::take(&mut tail.skipped);
            if skipped.bytes > 0 || skipped.lines > 0 {
                self.stats.add_backlog_dropped(tail.source(), skipped);
            }
        }
    }

    /// The read positions of every file followed now (current and rotated), for a
    /// checkpoint.
    pub fn checkpoints(&self) -> Checkpoints {
        let mut files = Vec::new();
        for tail in &self.files {
            tail.checkpoints(&mut files);
        }
        Checkpoints {
            files,
            spool_end: None,
        }
    }

    fn watch_dirs(&self) -> std::collections::BTreeSet<std::path::PathBuf> {
        dirs_to_watch(
            self.sources.iter().map(|s| s.pattern.as_str()),
            self.files.iter().map(FileTail::path),
        )
    }

    /// Runs the tailer until told to stop (or its handle is dropped) or the pipeline goes
    /// away, sending batches to `tx`. `nudge` is handed to the inotify thread.
    pub fn run(
        mut self,
        tx: mpsc::Sender<TailBatch>,
        signals: std_mpsc::Receiver<Signal>,
        nudge: std_mpsc::Sender<Signal>,
        options: &TailOptions,
    ) {
        let watcher = if options.events {
            Watcher::start(nudge)
        } else {
            drop(nudge);
            None
        };
        let (mut watcher, pending) = match watcher {
            Some((w, p)) => (Some(w), Some(p)),
            None => (None, None),
        };
        if let Some(w) = watcher.as_mut() {
            w.sync(&self.watch_dirs());
        }
        let mut next_scan = Instant::now() + options.glob_interval;
        let mut next_checkpoint = Instant::now() + CHECKPOINT_INTERVAL;
        let mut published = Checkpoints::default();
        let mut sent: u64 = 0;
        let mut rescan_now = false;
        loop {
            let now = Instant::now();
            if now >= next_scan || rescan_now {
                if let Some(p) = &pending {
                    p.clear_rescan();
                }
                self.rescan();
                if let Some(w) = watcher.as_mut() {
                    w.sync(&self.watch_dirs());
                }
                next_scan = Instant::now() + options.glob_interval;
                rescan_now = false;
            }
            if let Some(p) = &pending {
                p.clear_wake();
            }
            let mut batch = Vec::new();
            let more = self.poll(&mut batch);
            // Waits while the pipeline is behind: the files hold the unread data meanwhile.
            if !batch.is_empty() {
                if tx.blocking_send(batch).is_err() {
                    debug!("pipeline gone; tailer stopping");
                    break;
                }
                sent += 1;
            }
            if let Some(snapshots) = &options.snapshots
                && Instant::now() >= next_checkpoint
            {
                self.publish_checkpoint(snapshots, sent, &mut published);
                next_checkpoint = Instant::now() + CHECKPOINT_INTERVAL;
            }
            let interval = if watcher.as_ref().is_some_and(Watcher::active) {
                options.poll_interval.max(EVENT_POLL_INTERVAL)
            } else {
                options.poll_interval
            };
            let wait = if more {
                Duration::ZERO
            } else {
                let now = Instant::now();
                interval.min(next_scan.saturating_duration_since(now)).min(
                    if options.snapshots.is_some() {
                        next_checkpoint.saturating_duration_since(now)
                    } else {
                        interval
                    },
                )
            };
            let stop = match signals.recv_timeout(wait) {
                Err(std_mpsc::RecvTimeoutError::Timeout) => false,
                Ok(Signal::Wake) => false,
                Ok(Signal::Rescan) => {
                    rescan_now = true;
                    false
                }
                Ok(Signal::Stop) | Err(std_mpsc::RecvTimeoutError::Disconnected) => true,
            };
            if stop {
                debug!("tailer stopping");
                break;
            }
        }
        if let Some(snapshots) = &options.snapshots {
            self.publish_checkpoint(snapshots, sent, &mut published);
        }
        drop(watcher);
    }

    /// Publishes the read positions after `sent` batches, if they changed.
    fn publish_checkpoint(
        &self,
        snapshots: &tokio::sync::watch::Sender<Snapshot>,
        sent: u64,
        published: &mut Checkpoints,
    ) {
        let now = self.checkpoints();
        if now == *published {
            return;
        }
        *published = now.clone();
        snapshots.send_replace(Snapshot {
            batches: sent,
            checkpoints: now,
        });
    }
}
