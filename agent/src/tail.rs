//! File tailing: follows every file of every source and turns appended bytes into numbered
//! lines.
//!
//! This is a small polling tailer rather than a crate such as `linemux`, because the product
//! needs what those do not give: the 1-based line number of every line (counting lines already
//! in the file at start), byte positions, and correct handling of `copytruncate` rotation.
//!
//! Per file ([`FileTail`]) it keeps the file's identity (device, inode), the read position, a
//! line counter, the bytes of an unfinished last line and a fingerprint of the file's first
//! [`FINGERPRINT_BYTES`] bytes. Every poll it stats the path and handles:
//!
//! - **rotation** (inode changed: mv-and-recreate, logrotate `create`, delete and recreate):
//!   the old handle is read to its end first, so lines written just before rotation are kept,
//!   then the new file is read from offset 0 with line numbers restarting at 1;
//! - **missing path**: the open handle keeps being drained; the path is watched for its return,
//!   and the handle is closed after [`MISSING_GRACE`] to release the deleted file's space;
//! - **truncation** (size below position, or the head fingerprint changed: `copytruncate`
//!   followed by a fast rewrite): reading restarts at 0, numbering at 1, the partial line is
//!   dropped. A rewrite that keeps the same first bytes and outgrows the old position cannot be
//!   told from an append; that is the limit of a stat-based tailer;
//! - **new bytes**: read in [`READ_CHUNK_BYTES`] chunks, split on `\n`, a trailing `\r`
//!   stripped, decoded as lossy UTF-8; lines longer than [`MAX_LINE_BYTES`] are cut there.
//!
//! Files present when the agent starts are read from their end (after their existing lines are
//! counted); files that appear later are read from the start. A file renamed into a source's
//! glob while the tailer still knows its position (e.g. `app.log` → `app.log.1` with a
//! `app.log*` glob) continues from that position instead of being read again.
//!
//! The [`Tailer`] is synchronous (file I/O blocks) and runs on its own thread ([`spawn`]). It
//! hands batches of [`TailLine`]s to the pipeline through a bounded channel; when the channel is
//! full the thread simply waits. That backpressure costs nothing: the unread data stays in the
//! files, which are the buffer.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::SourceConfig;
use crate::time::now_ms;

/// Longest line kept, in bytes; the rest of a longer line is skipped up to its newline and the
/// line counted in `lines_truncated`. Bounds memory per file and per record.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Size of one read from a file.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How much of a file's head is fingerprinted to detect truncate-and-rewrite.
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
/// How long a handle is kept after its path disappeared: a writer may still append to the
/// unlinked file for a moment, but holding it forever would pin its disk space.
pub const MISSING_GRACE: Duration = Duration::from_secs(5);
/// Most rotated-away files whose position is remembered (see module docs); the oldest is
/// forgotten first.
pub const MAX_RETIRED: usize = 256;

/// One line read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailLine {
    /// The configured source name.
    pub source: Arc<str>,
    /// The file's path, as the source's glob matched it.
    pub file: Arc<str>,
    /// 1-based line number in the file, counting lines already there at start.
    pub line: u64,
    pub text: String,
    /// When the line was read, ms since the Unix epoch.
    pub read_at_ms: i64,
}

/// What the pipeline receives from the tailer in one message.
pub type TailBatch = Vec<TailLine>;

/// Counters the tailer publishes for the agent's health report.
#[derive(Debug, Default)]
pub struct TailStats {
    files_watched: AtomicU32,
    lines_truncated: AtomicU64,
}

impl TailStats {
    /// Files currently open.
    pub fn files_watched(&self) -> u32 {
        self.files_watched.load(Ordering::Relaxed)
    }

    /// Lines cut to [`MAX_LINE_BYTES`] since start.
    pub fn lines_truncated(&self) -> u64 {
        self.lines_truncated.load(Ordering::Relaxed)
    }
}

/// A file's identity: (device, inode). A changed identity at the same path means rotation.
type FileId = (u64, u64);

/// Where a tail should begin when it (re)opens its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// After the last complete line, numbering from the lines already there (startup).
    End,
    /// Offset 0, line 1 (a file that appeared later, or a rotated-in file).
    Beginning,
    /// A known position in a known file (a rotated file renamed into the glob).
    Resume {
        id: (u64, u64),
        pos: u64,
        lines: u64,
    },
}

/// The position of a file the tailer stopped following, kept so the same file showing up
/// under another matching name continues where it left off.
#[derive(Debug, Clone, Copy)]
struct Retired {
    id: FileId,
    pos: u64,
    lines: u64,
}

/// An open file and where reading stands in it.
#[derive(Debug)]
struct OpenFile {
    file: File,
    id: FileId,
    /// Bytes consumed (next read offset).
    pos: u64,
    /// Complete lines consumed; the next line is `lines + 1`.
    lines: u64,
    /// Bytes of an unfinished line, at most [`MAX_LINE_BYTES`].
    partial: Vec<u8>,
    /// The current line overflowed [`MAX_LINE_BYTES`]; its remaining bytes are skipped.
    overlong: bool,
    /// The file's first bytes as last seen, up to [`FINGERPRINT_BYTES`].
    head: Vec<u8>,
    /// Size and mtime at the last stat, to skip unchanged files without reading.
    last_len: u64,
    last_mtime: Option<SystemTime>,
}

/// What one poll of one file did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollOutcome {
    /// The file has more to read right away (the poll stopped at its byte budget).
    pub more: bool,
    /// Lines cut to [`MAX_LINE_BYTES`] in this poll.
    pub truncated: u64,
}

/// Follows one path. [`FileTail::poll`] is the whole per-file algorithm, synchronous so tests
/// drive it directly.
#[derive(Debug)]
pub struct FileTail {
    source: Arc<str>,
    path: PathBuf,
    path_str: Arc<str>,
    open: Option<OpenFile>,
    /// How to start when the file is next opened.
    start: StartAt,
    /// Since when the path has been missing.
    missing_since: Option<Instant>,
    /// The last error kind warned about, so a persistent problem is logged once.
    warned: Option<io::ErrorKind>,
    /// Set when the tail stops following an identity; collected by the [`Tailer`].
    retired: Vec<Retired>,
}

impl FileTail {
    pub fn new(source: Arc<str>, path: PathBuf, start: StartAt) -> FileTail {
        let path_str: Arc<str> = path.to_string_lossy().into();
        FileTail {
            source,
            path,
            path_str,
            open: None,
            start,
            missing_since: None,
            warned: None,
            retired: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a file handle is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The path has been gone for [`MISSING_GRACE`] and nothing is left to read: the tailer
    /// may forget this tail (a reappearing file is found again by the glob).
    pub fn is_gone(&self, now: Instant) -> bool {
        self.open.is_none()
            && self
                .missing_since
                .is_some_and(|since| now.duration_since(since) >= MISSING_GRACE)
    }

    /// Opens the file now if it exists, so a tail that starts at the end starts at the end as
    /// of this moment rather than at its first poll.
    pub fn prime(&mut self) {
        if self.open.is_some() {
            return;
        }
        if let Ok(meta) = std::fs::metadata(&self.path)
            && let Err(e) = self.open_file((meta.dev(), meta.ino()))
        {
            self.warn_once(&e, "cannot open");
        }
    }

    fn identity(&self) -> Option<FileId> {
        self.open.as_ref().map(|o| o.id)
    }

    /// Checks the path once and reads what is new (at most [`FILE_BUDGET_BYTES`]), appending
    /// complete lines to `out`.
    pub fn poll(&mut self, out: &mut Vec<TailLine>, now: Instant) -> PollOutcome {
        let mut outcome = PollOutcome::default();
        match std::fs::metadata(&self.path) {
            Ok(meta) => {
                self.missing_since = None;
                let id = (meta.dev(), meta.ino());
                match self.open.as_ref().map(|o| o.id) {
                    None => {
                        if let Err(e) = self.open_file(id) {
                            self.warn_once(&e, "cannot open");
                            return outcome;
                        }
                    }
                    Some(old) if old != id => {
                        // Rotation: finish the old file before switching.
                        let eof = self.read_open(out, &mut outcome);
                        if !eof {
                            return outcome;
                        }
                        info!(file = %self.path_str, "file rotated; following the new file from its start");
                        self.flush_partial(out);
                        self.retire();
                        self.start = StartAt::Beginning;
                        if let Err(e) = self.open_file(id) {
                            self.warn_once(&e, "cannot open rotated file");
                            return outcome;
                        }
                    }
                    Some(_) => {}
                }
                self.check_truncation(&meta);
                // Skip the read (and its buffer) when the file has not grown.
                if self
                    .open
                    .as_ref()
                    .is_some_and(|o| o.id != id || meta.len() > o.pos)
                {
                    self.read_open(out, &mut outcome);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let since = *self.missing_since.get_or_insert(now);
                if self.open.is_some() {
                    let eof = self.read_open(out, &mut outcome);
                    if eof && now.duration_since(since) >= MISSING_GRACE {
                        debug!(file = %self.path_str, "file gone; closing it");
                        self.flush_partial(out);
                        self.retire();
                    }
                }
                // Whatever appears at this path next is a new file.
                self.start = StartAt::Beginning;
            }
            Err(e) => self.warn_once(&e, "cannot stat"),
        }
        outcome
    }

    fn warn_once(&mut self, e: &io::Error, what: &str) {
        if self.warned != Some(e.kind()) {
            warn!(file = %self.path_str, error = %e, "{what} file; will keep retrying");
            self.warned = Some(e.kind());
        }
    }

    /// Opens the path according to `self.start`. `id` is what stat saw; if the file changed
    /// between stat and open, the next poll notices.
    fn open_file(&mut self, id: FileId) -> io::Result<()> {
        let mut file = File::open(&self.path)?;
        let opened_id = {
            let m = file.metadata()?;
            (m.dev(), m.ino())
        };
        let (pos, lines) = match self.start {
            StartAt::Beginning => (0, 0),
            StartAt::Resume {
                id: rid,
                pos,
                lines,
            } if rid == opened_id => (pos, lines),
            StartAt::Resume { .. } => (0, 0),
            StartAt::End => count_lines(&mut file)?,
        };
        file.seek(SeekFrom::Start(pos))?;
        let mut head = Vec::new();
        read_head(&file, &mut head)?;
        if opened_id != id {
            debug!(file = %self.path_str, "file replaced while opening");
        }
        self.open = Some(OpenFile {
            file,
            id: opened_id,
            pos,
            lines,
            partial: Vec::new(),
            overlong: false,
            head,
            last_len: u64::MAX,
            last_mtime: None,
        });
        self.warned = None;
        Ok(())
    }

    /// Detects truncation of the open file (same identity) and restarts it at offset 0.
    fn check_truncation(&mut self, meta: &std::fs::Metadata) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        if open.id != (meta.dev(), meta.ino()) {
            return;
        }
        let len = meta.len();
        let mtime = meta.modified().ok();
        let changed = len != open.last_len || mtime != open.last_mtime;
        open.last_len = len;
        open.last_mtime = mtime;
        let truncated = if len < open.pos {
            true
        } else if changed {
            let mut now_head = Vec::new();
            match read_head(&open.file, &mut now_head) {
                Ok(()) => {
                    let keep = open.head.len().min(now_head.len());
                    let differs = now_head[..keep] != open.head[..keep];
                    open.head = now_head;
                    differs
                }
                Err(_) => false,
            }
        } else {
            false
        };
        if truncated {
            info!(file = %self.path_str, "file truncated; reading it again from the start");
            open.pos = 0;
            open.lines = 0;
            open.partial.clear();
            open.overlong = false;
            if let Err(e) = open.file.seek(SeekFrom::Start(0)) {
                warn!(file = %self.path_str, error = %e, "cannot rewind truncated file");
            }
        }
    }

    /// Reads from the open handle up to the budget; returns whether it reached end of file.
    fn read_open(&mut self, out: &mut Vec<TailLine>, outcome: &mut PollOutcome) -> bool {
        let Some(open) = self.open.as_mut() else {
            return true;
        };
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        let mut budget = FILE_BUDGET_BYTES;
        let read_at_ms = now_ms();
        loop {
            if budget == 0 {
                outcome.more = true;
                return false;
            }
            let want = budget.min(buf.len());
            let n = match open.file.read(&mut buf[..want]) {
                Ok(0) => return true,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(file = %self.path_str, error = %e, "read failed; will retry");
                    return true;
                }
            };
            budget -= n;
            open.pos += n as u64;
            let mut rest = &buf[..n];
            while let Some(nl) = memchr::memchr(b'\n', rest) {
                open.push_bytes(&rest[..nl]);
                let line = open.take_line(&self.source, &self.path_str, read_at_ms);
                if line.1 {
                    outcome.truncated += 1;
                }
                out.push(line.0);
                rest = &rest[nl + 1..];
            }
            open.push_bytes(rest);
        }
    }

    /// Stops following the open file and remembers its position (see [`Tailer::rescan`]).
    fn retire(&mut self) {
        if let Some(open) = self.open.take() {
            self.retired.push(Retired {
                id: open.id,
                pos: open.pos - open.partial_len(),
                lines: open.lines,
            });
        }
    }

    /// Emits the unterminated last line of the open file, if any, as a line: used when the
    /// file will not grow any more (rotated away or deleted), so its last bytes are not lost.
    fn flush_partial(&mut self, out: &mut Vec<TailLine>) {
        if let Some(open) = self.open.as_mut()
            && (open.overlong || !open.partial.is_empty())
        {
            let (line, _) = open.take_line(&self.source, &self.path_str, now_ms());
            out.push(line);
        }
    }
}

impl OpenFile {
    /// Appends bytes of the current line, keeping at most [`MAX_LINE_BYTES`].
    fn push_bytes(&mut self, bytes: &[u8]) {
        if self.overlong || bytes.is_empty() {
            return;
        }
        let room = MAX_LINE_BYTES - self.partial.len();
        if bytes.len() > room {
            self.partial.extend_from_slice(&bytes[..room]);
            self.overlong = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    /// Completes the current line; returns it and whether it was truncated.
    fn take_line(
        &mut self,
        source: &Arc<str>,
        file: &Arc<str>,
        read_at_ms: i64,
    ) -> (TailLine, bool) {
        self.lines += 1;
        if !self.overlong && self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        let text = match String::from_utf8(std::mem::take(&mut self.partial)) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        let truncated = std::mem::replace(&mut self.overlong, false);
        (
            TailLine {
                source: source.clone(),
                file: file.clone(),
                line: self.lines,
                text,
                read_at_ms,
            },
            truncated,
        )
    }

    /// Bytes consumed but not yet part of an emitted line (0 once the line overflowed, as the
    /// position of its start is no longer meaningful to resume from).
    fn partial_len(&self) -> u64 {
        if self.overlong {
            0
        } else {
            self.partial.len() as u64
        }
    }
}

/// Counts complete lines in `file` and returns (offset after the last newline, line count):
/// where a tail that starts at the end begins, so an unfinished last line is read whole once
/// its newline arrives.
fn count_lines(file: &mut File) -> io::Result<(u64, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut offset = 0u64;
    let mut lines = 0u64;
    let mut after_last_newline = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        lines += memchr::memchr_iter(b'\n', chunk).count() as u64;
        if let Some(last) = memchr::memrchr(b'\n', chunk) {
            after_last_newline = offset + last as u64 + 1;
        }
        offset += n as u64;
    }
    Ok((after_last_newline, lines))
}

/// Reads the file's first [`FINGERPRINT_BYTES`] (fewer if it is shorter) into `head`.
fn read_head(file: &File, head: &mut Vec<u8>) -> io::Result<()> {
    let mut buf = [0u8; FINGERPRINT_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    head.clear();
    head.extend_from_slice(&buf[..filled]);
    Ok(())
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
/// [`spawn`] for the thread that drives it.
#[derive(Debug)]
pub struct Tailer {
    sources: Vec<SourceTail>,
    /// Every followed file, of all sources.
    files: Vec<FileTail>,
    /// Where the next poll starts, so files share the batch limits fairly.
    cursor: usize,
    retired: VecDeque<Retired>,
    /// The first scan starts existing files at their end; later scans read new files whole.
    scanned_once: bool,
    stats: Arc<TailStats>,
}

impl Tailer {
    /// A tailer for `sources`, with an initial scan done: files that exist now are followed
    /// from their end.
    pub fn new(sources: &[SourceConfig], stats: Arc<TailStats>) -> Tailer {
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
            stats,
        };
        tailer.rescan();
        tailer
    }

    /// Expands every source's glob and starts following files not followed yet.
    pub fn rescan(&mut self) {
        let start_default = if self.scanned_once {
            StartAt::Beginning
        } else {
            StartAt::End
        };
        self.scanned_once = true;
        for source in &mut self.sources {
            let paths = match glob::glob(&source.pattern) {
                Ok(paths) => paths,
                Err(e) => {
                    // Config validation makes this unreachable in practice; never crash on it.
                    warn!(source = %source.name, error = %e, "invalid source glob");
                    continue;
                }
            };
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
                // The same file still open under another name (rotation not yet noticed by its
                // tail): leave it for the next scan, when its position will be known.
                if self.files.iter().any(|f| f.identity() == Some(id)) {
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
                    None => start_default,
                };
                debug!(source = %source.name, file = %path.display(), ?start, "following file");
                let mut tail = FileTail::new(source.name.clone(), path, start);
                tail.prime();
                self.files.push(tail);
            }
            if matched == 0 && !source.warned_empty {
                info!(source = %source.name, path = %source.pattern, "source matches no files yet; watching for them");
                source.warned_empty = true;
            } else if matched > 0 {
                source.warned_empty = false;
            }
        }
    }

    /// Polls files, starting where the last call stopped, until all were polled or `out`
    /// reached the batch limits. Returns whether more data is ready (call again without
    /// waiting).
    pub fn poll(&mut self, out: &mut Vec<TailLine>) -> bool {
        let now = Instant::now();
        let mut more = false;
        let mut truncated = 0;
        let count = self.files.len();
        let mut bytes: usize = out.iter().map(|l| l.text.len()).sum();
        for step in 0..count {
            let i = (self.cursor + step) % count;
            let before = out.len();
            let tail = &mut self.files[i];
            let outcome = tail.poll(out, now);
            more |= outcome.more;
            truncated += outcome.truncated;
            bytes += out[before..].iter().map(|l| l.text.len()).sum::<usize>();
            if out.len() >= MAX_BATCH_LINES || bytes >= MAX_BATCH_BYTES {
                self.cursor = (i + 1) % count;
                more = true;
                break;
            }
        }
        self.collect_retired();
        self.files.retain(|f| !f.is_gone(now));
        if self.cursor >= self.files.len() {
            self.cursor = 0;
        }
        self.stats.files_watched.store(
            self.files.iter().filter(|f| f.is_open()).count() as u32,
            Ordering::Relaxed,
        );
        self.stats
            .lines_truncated
            .fetch_add(truncated, Ordering::Relaxed);
        more
    }

    fn collect_retired(&mut self) {
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

    /// Runs the tailer until `stop` fires (or its sender is dropped) or the pipeline goes
    /// away, sending batches to `tx`.
    pub fn run(
        mut self,
        tx: mpsc::Sender<TailBatch>,
        stop: std_mpsc::Receiver<()>,
        poll_interval: Duration,
        glob_interval: Duration,
    ) {
        let mut next_scan = Instant::now() + glob_interval;
        loop {
            if Instant::now() >= next_scan {
                self.rescan();
                next_scan = Instant::now() + glob_interval;
            }
            let mut batch = Vec::new();
            let more = self.poll(&mut batch);
            // Waits while the pipeline is behind: the files hold the unread data meanwhile.
            if !batch.is_empty() && tx.blocking_send(batch).is_err() {
                debug!("pipeline gone; tailer stopping");
                return;
            }
            let wait = if more { Duration::ZERO } else { poll_interval };
            match stop.recv_timeout(wait) {
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    debug!("tailer stopping");
                    return;
                }
            }
        }
    }
}

/// Controls a running tailer thread. Dropping it stops the thread too, so an aborted agent
/// leaves no tailer behind.
#[derive(Debug)]
pub struct TailHandle {
    stop: std_mpsc::Sender<()>,
}

impl TailHandle {
    /// Asks the tailer to stop after its current poll; it closes its channel when it does.
    /// Does not wait: the thread may be waiting for the pipeline to take a batch.
    pub fn signal_stop(&self) {
        // The thread may already have exited (pipeline gone); nothing to tell it then.
        let _ = self.stop.send(());
    }
}

/// Starts the tailer on its own thread: file I/O blocks, and a dedicated thread keeps it off
/// the async runtime's few workers without a `spawn_blocking` per poll. The initial scan (which
/// counts the lines of every existing file: gigabytes on a busy machine) runs on that thread
/// too, so the agent connects to its host at once instead of after reading them.
pub fn spawn(
    sources: &[SourceConfig],
    poll_interval: Duration,
    glob_interval: Duration,
    stats: Arc<TailStats>,
    tx: mpsc::Sender<TailBatch>,
) -> io::Result<TailHandle> {
    let sources = sources.to_vec();
    let (stop, stop_rx) = std_mpsc::channel();
    // Detached: it ends on its own when told to stop or when the pipeline goes away.
    thread::Builder::new()
        .name("logfleet-tail".into())
        .spawn(move || {
            Tailer::new(&sources, stats).run(tx, stop_rx, poll_interval, glob_interval)
        })?;
    Ok(TailHandle { stop })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn tail_of(path: &Path, start: StartAt) -> FileTail {
        let mut t = FileTail::new("src".into(), path.to_path_buf(), start);
        t.prime();
        t
    }

    /// Polls until nothing more is ready; returns (line number, text) pairs.
    fn drain(t: &mut FileTail) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while t.poll(&mut out, Instant::now()).more {}
        out.into_iter().map(|l| (l.line, l.text)).collect()
    }

    fn lines(pairs: &[(u64, &str)]) -> Vec<(u64, String)> {
        pairs.iter().map(|(n, s)| (*n, s.to_string())).collect()
    }

    #[test]
    fn appends_with_numbers_counting_existing_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        append(&p, "one\ntwo\nthree\n");
        let mut t = tail_of(&p, StartAt::End);
        append(&p, "four\nfive\n");
        assert_eq!(drain(&mut t), lines(&[(4, "four"), (5, "five")]));
        assert_eq!(drain(&mut t), vec![]);
        append(&p, "six\r\n");
        assert_eq!(drain(&mut t), lines(&[(6, "six")]));
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        // An unfinished last line at start is read whole once it completes.
        append(&p, "one\ntw");
        let mut t = tail_of(&p, StartAt::End);
        assert_eq!(drain(&mut t), vec![]);
        append(&p, "o\nthr");
        assert_eq!(drain(&mut t), lines(&[(2, "two")]));
        append(&p, "ee");
        assert_eq!(drain(&mut t), vec![]);
        append(&p, "\n");
        assert_eq!(drain(&mut t), lines(&[(3, "three")]));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"").unwrap();
        let mut t = tail_of(&p, StartAt::End);
        std::fs::write(&p, b"ok \xff\xfe bytes\n").unwrap();
        assert_eq!(drain(&mut t), lines(&[(1, "ok \u{fffd}\u{fffd} bytes")]));
    }

    #[test]
    fn truncation_restarts_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        append(&p, "one\ntwo\n");
        let mut t = tail_of(&p, StartAt::End);
        append(&p, "three\npart");
        assert_eq!(drain(&mut t), lines(&[(3, "three")]));
        // copytruncate: the file is emptied in place, then written again.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(drain(&mut t), vec![]);
        append(&p, "fresh\n");
        assert_eq!(drain(&mut t), lines(&[(1, "fresh")]));
    }

    #[test]
    fn copytruncate_with_fast_rewrite_is_detected_by_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        append(&p, "2024-01-15 first line\n");
        let mut t = tail_of(&p, StartAt::End);
        assert_eq!(drain(&mut t), vec![]);
        // Truncated and rewritten past the old position before the next poll.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(0).unwrap();
        drop(f);
        append(&p, "2024-01-16 new a\n2024-01-16 new b\n");
        assert_eq!(
            drain(&mut t),
            lines(&[(1, "2024-01-16 new a"), (2, "2024-01-16 new b")])
        );
    }

    #[test]
    fn move_and_recreate_reads_old_tail_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        append(&p, "one\n");
        let mut t = tail_of(&p, StartAt::End);
        append(&p, "two\nunterminated");
        // logrotate `create`: rename, then a new file at the path, before the tailer looks.
        std::fs::rename(&p, dir.path().join("a.log.1")).unwrap();
        append(&dir.path().join("a.log.1"), " end\n");
        append(&p, "new one\n");
        assert_eq!(
            drain(&mut t),
            lines(&[(2, "two"), (3, "unterminated end"), (1, "new one")])
        );
        append(&p, "new two\n");
        assert_eq!(drain(&mut t), lines(&[(2, "new two")]));
    }

    #[test]
    fn delete_and_recreate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        append(&p, "one\n");
        let mut t = tail_of(&p, StartAt::End);
        append(&p, "two\n");
        std::fs::remove_file(&p).unwrap();
        // Lines written before deletion are still read from the open handle.
        assert_eq!(drain(&mut t), lines(&[(2, "two")]));
        assert!(t.is_open(), "kept open for the grace period");
        append(&p, "again\n");
        assert_eq!(drain(&mut t), lines(&[(1, "again")]));
    }

    #[test]
    fn missing_file_is_closed_after_grace_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        append(&p, "one\n");
        let mut t = tail_of(&p, StartAt::End);
        std::fs::remove_file(&p).unwrap();
        let mut out = Vec::new();
        let start = Instant::now();
        t.poll(&mut out, start);
        assert!(t.is_open());
        t.poll(&mut out, start + MISSING_GRACE);
        assert!(!t.is_open());
        assert!(t.is_gone(start + MISSING_GRACE));
        // The path comes back: it is a new file, read from the start.
        append(&p, "back\n");
        assert_eq!(drain(&mut t), lines(&[(1, "back")]));
    }

    #[test]
    fn long_lines_are_cut_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, "").unwrap();
        let mut t = tail_of(&p, StartAt::End);
        let long = "x".repeat(MAX_LINE_BYTES * 2 + 10);
        append(&p, &format!("short\n{long}\nafter\n"));
        let mut out = Vec::new();
        let mut truncated = 0;
        loop {
            let o = t.poll(&mut out, Instant::now());
            truncated += o.truncated;
            if !o.more {
                break;
            }
        }
        assert_eq!(truncated, 1);
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].line, 2);
        assert_eq!(out[1].text.len(), MAX_LINE_BYTES);
        assert_eq!((out[2].line, out[2].text.as_str()), (3, "after"));
    }

    #[test]
    fn new_files_are_read_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("later.log");
        let mut t = tail_of(&p, StartAt::Beginning);
        assert_eq!(drain(&mut t), vec![]);
        append(&p, "a\nb\n");
        assert_eq!(drain(&mut t), lines(&[(1, "a"), (2, "b")]));
    }

    #[test]
    fn large_backlog_is_read_in_budgeted_polls() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.log");
        let line = "y".repeat(99);
        let text: String = (0..10_000).map(|_| format!("{line}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        let mut t = tail_of(&p, StartAt::Beginning);
        let mut out = Vec::new();
        assert!(t.poll(&mut out, Instant::now()).more);
        assert!(out.len() * 100 <= FILE_BUDGET_BYTES);
        let rest = drain(&mut t);
        assert_eq!(out.len() + rest.len(), 10_000);
        assert_eq!(rest.last().map(|l| l.0), Some(10_000));
    }

    fn stats() -> Arc<TailStats> {
        Arc::new(TailStats::default())
    }

    fn poll_all(t: &mut Tailer) -> Vec<(String, u64, String)> {
        let mut out = Vec::new();
        while t.poll(&mut out) {}
        out.into_iter()
            .map(|l| {
                (
                    l.file.rsplit('/').next().unwrap_or("").to_string(),
                    l.line,
                    l.text,
                )
            })
            .collect()
    }

    #[test]
    fn glob_picks_up_new_files_from_their_start() {
        let dir = tempfile::tempdir().unwrap();
        append(&dir.path().join("a.log"), "old\n");
        let pattern = dir.path().join("*.log").to_string_lossy().into_owned();
        let stats = stats();
        let mut t = Tailer::new(&[SourceConfig::new("app", pattern)], stats.clone());
        assert_eq!(poll_all(&mut t), vec![]);
        assert_eq!(stats.files_watched(), 1);
        append(&dir.path().join("b.log"), "b1\nb2\n");
        append(&dir.path().join("a.log"), "a2\n");
        append(&dir.path().join("ignored.txt"), "x\n");
        t.rescan();
        let mut got = poll_all(&mut t);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("a.log".into(), 2, "a2".into()),
                ("b.log".into(), 1, "b1".into()),
                ("b.log".into(), 2, "b2".into()),
            ]
        );
        assert_eq!(stats.files_watched(), 2);
    }

    #[test]
    fn rotated_file_matching_the_glob_is_not_read_twice() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("app.log");
        append(&live, "one\n");
        let pattern = dir.path().join("app.log*").to_string_lossy().into_owned();
        let mut t = Tailer::new(&[SourceConfig::new("app", pattern)], stats());
        append(&live, "two\n");
        std::fs::rename(&live, dir.path().join("app.log.1")).unwrap();
        append(&live, "fresh\n");
        t.rescan();
        assert_eq!(
            poll_all(&mut t),
            vec![
                ("app.log".into(), 2, "two".into()),
                ("app.log".into(), 1, "fresh".into())
            ]
        );
        // The next scan finds app.log.1 and continues it where the old tail stopped.
        t.rescan();
        append(&dir.path().join("app.log.1"), "late write\n");
        assert_eq!(
            poll_all(&mut t),
            vec![("app.log.1".into(), 3, "late write".into())]
        );
    }

    #[test]
    fn literal_path_that_appears_later() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("later.log");
        let mut t = Tailer::new(
            &[SourceConfig::new("app", p.to_string_lossy().into_owned())],
            stats(),
        );
        assert_eq!(poll_all(&mut t), vec![]);
        append(&p, "hello\n");
        t.rescan();
        assert_eq!(
            poll_all(&mut t),
            vec![("later.log".into(), 1, "hello".into())]
        );
    }

    #[test]
    fn tailer_thread_sends_batches_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        append(&p, "before\n");
        let (tx, mut rx) = mpsc::channel(TAIL_CHANNEL_BATCHES);
        let stats = stats();
        let handle = spawn(
            &[SourceConfig::new("app", p.to_string_lossy().into_owned())],
            Duration::from_millis(5),
            Duration::from_millis(50),
            stats.clone(),
            tx,
        )
        .unwrap();
        // The initial scan runs on the tailer's thread; what is written before it ends counts
        // as existing. Wait until the file is followed.
        while stats.files_watched.load(Ordering::Relaxed) == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        append(&p, "after\n");
        let batch = rx.blocking_recv().unwrap();
        assert_eq!(batch[0].text, "after");
        assert_eq!(batch[0].line, 2);
        assert_eq!(&*batch[0].source, "app");
        handle.signal_stop();
        assert!(
            rx.blocking_recv().is_none(),
            "channel closes when the tailer stops"
        );
    }
}
