//! One followed path: [`FileTail`]. See the [module docs](super) for the algorithm.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::checkpoint::FileCheckpoint;
use super::identity::{FileId, Retired, fingerprint_matches, read_head};
use super::{
    DEFAULT_ROTATE_WAIT, FILE_BUDGET_BYTES, LinePos, MAX_LINE_BYTES, MISSING_GRACE,
    READ_CHUNK_BYTES, TailLine,
};
use crate::time::now_ms;

/// Where a tail should begin when it (re)opens its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// After the last complete line, numbering from the lines already there (startup).
    End,
    /// Offset 0, line 1 (a file that appeared later, or a rotated-in file).
    Beginning,
    /// A known position in a known file (a rotated file renamed into the glob).
    Resume { id: FileId, pos: u64, lines: u64 },
    /// A checkpoint from an earlier run: continue at `pos` if the file is still the one
    /// checkpointed (identity and head fingerprint) and not shorter than `pos`, else read it
    /// from offset 0 (another file at that path). Either way, backlog beyond `backlog_cap`
    /// bytes is skipped (whole lines, the oldest) and counted as dropped.
    Checkpoint {
        id: FileId,
        head: Vec<u8>,
        pos: u64,
        lines: u64,
        backlog_cap: u64,
    },
}

/// An open file and where reading stands in it.
#[derive(Debug)]
pub(super) struct OpenFile {
    file: File,
    pub(super) id: FileId,
    /// Bytes consumed (next read offset).
    pos: u64,
    /// Complete lines consumed; the next line is `lines + 1`.
    lines: u64,
    /// Bytes of an unfinished line, at most [`MAX_LINE_BYTES`].
    partial: Vec<u8>,
    /// The current line overflowed [`MAX_LINE_BYTES`]; its remaining bytes are skipped.
    overlong: bool,
    /// Where the current (unfinished) line begins.
    line_start: u64,
    /// The file's first bytes as last seen, up to [`FINGERPRINT_BYTES`](super::FINGERPRINT_BYTES).
    head: Vec<u8>,
    /// Size and mtime at the last stat, to skip unchanged files without reading.
    last_len: u64,
    last_mtime: Option<SystemTime>,
}

/// A rotated-away (or deleted) file still followed through its open handle.
#[derive(Debug)]
struct Rotated {
    file: OpenFile,
    /// When it last grew (or was rotated away): closed once quiet for the rotate wait.
    last_growth: Instant,
}

/// What one poll of one file did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollOutcome {
    /// The file has more to read right away (the poll stopped at its byte budget).
    pub more: bool,
    /// Lines cut to [`MAX_LINE_BYTES`] in this poll.
    pub truncated: u64,
}

/// Lines and bytes skipped because a backlog exceeded its cap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub lines: u64,
    pub bytes: u64,
}

/// Follows one path. [`FileTail::poll`] is the whole per-file algorithm, synchronous so tests
/// drive it directly.
#[derive(Debug)]
pub struct FileTail {
    source: Arc<str>,
    path: PathBuf,
    path_str: Arc<str>,
    open: Option<OpenFile>,
    /// Files rotated away from this path and still followed, oldest first.
    rotated: Vec<Rotated>,
    rotate_wait: Duration,
    /// How to start when the file is next opened.
    start: StartAt,
    /// Since when the path has been missing.
    missing_since: Option<Instant>,
    /// The last error kind warned about, so a persistent problem is logged once.
    warned: Option<io::ErrorKind>,
    /// Set when the tail stops following an identity; collected by the [`Tailer`](super::Tailer).
    pub(super) retired: Vec<Retired>,
    /// Backlog skipped when opening from a checkpoint; collected by the tailer.
    pub(super) skipped: Skipped,
    /// Retired positions this tail resumed from; the tailer forgets them.
    pub(super) took_retired: Vec<FileId>,
}

/// What the [`Tailer`](super::Tailer) knows beyond one tail: files followed by any tail, and
/// positions of files no tail follows any more.
#[derive(Debug, Default, Clone, Copy)]
pub struct Known<'a> {
    pub followed: Option<&'a HashSet<FileId>>,
    pub retired: Option<&'a VecDeque<Retired>>,
}

impl FileTail {
    pub fn new(source: Arc<str>, path: PathBuf, start: StartAt) -> FileTail {
        let path_str: Arc<str> = path.to_string_lossy().into();
        FileTail {
            source,
            path,
            path_str,
            open: None,
            rotated: Vec::new(),
            rotate_wait: DEFAULT_ROTATE_WAIT,
            start,
            missing_since: None,
            warned: None,
            retired: Vec::new(),
            skipped: Skipped::default(),
            took_retired: Vec::new(),
        }
    }

    /// Sets how long a rotated-away file must be quiet before it is closed.
    pub fn with_rotate_wait(mut self, rotate_wait: Duration) -> FileTail {
        self.rotate_wait = rotate_wait;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn source(&self) -> &Arc<str> {
        &self.source
    }

    /// Whether any file handle is open (the path's file or a rotated one).
    pub fn is_open(&self) -> bool {
        self.open.is_some() || !self.rotated.is_empty()
    }

    /// Whether the path's current file is open.
    pub fn is_current_open(&self) -> bool {
        self.open.is_some()
    }

    /// Rotated-away files still followed.
    pub fn rotated_count(&self) -> usize {
        self.rotated.len()
    }

    /// The path has been gone for [`MISSING_GRACE`] and nothing is left to follow: the tailer
    /// may forget this tail (a reappearing file is found again by the glob).
    pub fn is_gone(&self, now: Instant) -> bool {
        !self.is_open()
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

    /// Whether this tail holds the file `id` open (as its current or a rotated file).
    pub fn follows(&self, id: FileId) -> bool {
        self.open.as_ref().is_some_and(|o| o.id == id)
            || self.rotated.iter().any(|r| r.file.id == id)
    }

    /// Positions of every file this tail follows, for a checkpoint.
    pub fn checkpoints(&self, out: &mut Vec<FileCheckpoint>) {
        let files = self
            .rotated
            .iter()
            .map(|r| &r.file)
            .chain(self.open.as_ref());
        for f in files {
            out.push(FileCheckpoint {
                source: self.source.to_string(),
                path: self.path_str.to_string(),
                dev: f.id.0,
                ino: f.id.1,
                head: f.head.clone(),
                offset: f.pos - f.partial_len(),
                line: f.lines,
            });
        }
    }

    /// When the rotated file quiet the longest last grew, if any.
    pub fn oldest_rotated(&self) -> Option<Instant> {
        self.rotated.iter().map(|r| r.last_growth).min()
    }

    /// Reads the rotated file quiet the longest to its end (within the budget) and closes it:
    /// used when too many rotated files are followed.
    pub fn close_oldest_rotated(&mut self, out: &mut Vec<TailLine>) {
        let Some(i) = (0..self.rotated.len()).min_by_key(|&i| self.rotated[i].last_growth) else {
            return;
        };
        let mut r = self.rotated.remove(i);
        let mut outcome = PollOutcome::default();
        read_file(&mut r.file, &self.source, &self.path_str, out, &mut outcome);
        warn!(file = %self.path_str, "too many rotated files followed; closing the oldest before its quiet wait");
        self.close_rotated(r.file, out);
    }

    /// Checks the path once and reads what is new (at most [`FILE_BUDGET_BYTES`] per file),
    /// appending complete lines to `out`: first what rotated-away files still get, then the
    /// path's current file.
    pub fn poll(&mut self, out: &mut Vec<TailLine>, now: Instant) -> PollOutcome {
        self.poll_with(out, now, &Known::default())
    }

    /// [`FileTail::poll`], knowing which files other tails follow or retired (see [`Known`]).
    pub fn poll_with(
        &mut self,
        out: &mut Vec<TailLine>,
        now: Instant,
        known: &Known<'_>,
    ) -> PollOutcome {
        let mut outcome = PollOutcome::default();
        let current = match std::fs::metadata(&self.path) {
            Ok(meta) => {
                self.missing_since = None;
                let id = (meta.dev(), meta.ino());
                match self.open.as_ref().map(|o| o.id) {
                    None => self.open_new(id, known),
                    Some(old) if old != id => {
                        info!(file = %self.path_str, "file rotated; following the new file from its start and the old one until it is quiet");
                        self.rotate_away(now);
                        self.start = StartAt::Beginning;
                        self.open_new(id, known);
                    }
                    Some(_) => {}
                }
                Some(meta)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.missing_since.get_or_insert(now);
                if self.open.is_some() {
                    debug!(file = %self.path_str, "file gone; following its handle until it is quiet");
                    self.rotate_away(now);
                }
                // Whatever appears at this path next is a new file.
                self.start = StartAt::Beginning;
                None
            }
            Err(e) => {
                self.warn_once(&e, "cannot stat");
                None
            }
        };
        // Rotated files first: their lines were (mostly) written before the new file's.
        self.poll_rotated(out, &mut outcome, now);
        if let Some(meta) = current {
            self.check_truncation(&meta);
            // Skip the read (and its buffer) when the file has not grown.
            let id = (meta.dev(), meta.ino());
            if let Some(open) = self.open.as_mut()
                && (open.id != id || meta.len() > open.pos)
            {
                read_file(open, &self.source, &self.path_str, out, &mut outcome);
            }
        }
        outcome
    }

    /// Opens the file `id` now at the path, unless another tail follows it (then its lines are
    /// that tail's until it closes it, and this tail takes it over from the retired position
    /// on a later poll): one file is never read by two tails.
    fn open_new(&mut self, id: FileId, known: &Known<'_>) {
        if known.followed.is_some_and(|f| f.contains(&id)) && !self.follows(id) {
            return;
        }
        if let Some(r) = known.retired.and_then(|r| r.iter().find(|r| r.id == id)) {
            self.start = StartAt::Resume {
                id,
                pos: r.pos,
                lines: r.lines,
            };
            self.took_retired.push(id);
        }
        if let Err(e) = self.open_file(id) {
            self.warn_once(&e, "cannot open");
        }
    }

    /// Identities of every file this tail holds open.
    pub fn ids(&self) -> impl Iterator<Item = FileId> + '_ {
        self.open
            .iter()
            .map(|o| o.id)
            .chain(self.rotated.iter().map(|r| r.file.id))
    }

    /// Moves the current file to the rotated ones.
    fn rotate_away(&mut self, now: Instant) {
        if let Some(file) = self.open.take() {
            self.rotated.push(Rotated {
                file,
                last_growth: now,
            });
        }
    }

    /// Reads every rotated file; closes those read to their end and quiet for the rotate wait.
    fn poll_rotated(&mut self, out: &mut Vec<TailLine>, outcome: &mut PollOutcome, now: Instant) {
        let mut i = 0;
        while i < self.rotated.len() {
            let r = &mut self.rotated[i];
            let before = r.file.pos;
            let eof = read_file(&mut r.file, &self.source, &self.path_str, out, outcome);
            if r.file.pos != before {
                r.last_growth = now;
            }
            if eof && now.saturating_duration_since(r.last_growth) >= self.rotate_wait {
                let r = self.rotated.remove(i);
                debug!(file = %self.path_str, "rotated file quiet; closing it");
                self.close_rotated(r.file, out);
            } else {
                i += 1;
            }
        }
    }

    /// Emits the unterminated last line, if any (the file will not grow any more), and
    /// remembers the position (see [`Tailer::rescan`](super::Tailer::rescan)).
    fn close_rotated(&mut self, mut file: OpenFile, out: &mut Vec<TailLine>) {
        if file.overlong || !file.partial.is_empty() {
            let end = file.pos;
            let (line, _) = file.take_line(&self.source, &self.path_str, now_ms(), end);
            out.push(line);
        }
        self.retired.push(Retired {
            id: file.id,
            pos: file.pos,
            lines: file.lines,
        });
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
        let (opened_id, len) = {
            let m = file.metadata()?;
            ((m.dev(), m.ino()), m.len())
        };
        let mut head = Vec::new();
        read_head(&file, &mut head)?;
        let (pos, lines) = match &self.start {
            StartAt::Beginning => (0, 0),
            StartAt::Resume {
                id: rid,
                pos,
                lines,
            } if *rid == opened_id => (*pos, *lines),
            StartAt::Resume { .. } => (0, 0),
            StartAt::End => count_lines(&mut file, 0, u64::MAX)?,
            StartAt::Checkpoint {
                id: cid,
                head: chead,
                pos,
                lines,
                backlog_cap,
            } => {
                let (from, lines) = if *cid == opened_id
                    && fingerprint_matches(chead, &head)
                    && *pos <= len
                {
                    (*pos, *lines)
                } else {
                    info!(file = %self.path_str, "not the checkpointed file; reading it from its start");
                    (0, 0)
                };
                let backlog = len - from;
                if backlog > *backlog_cap {
                    // Skip the oldest lines until at most the cap is left, whole lines only;
                    // count them as dropped.
                    let cut = len - backlog_cap;
                    let (mut skip_to, mut skipped_lines) = count_lines(&mut file, from, cut)?;
                    if skip_to < cut {
                        // The cut falls inside a line: skip that line too.
                        let (after, n) = count_lines_until_one(&mut file, cut, len)?;
                        skip_to = after.max(skip_to);
                        skipped_lines += n;
                    }
                    self.skipped.lines += skipped_lines;
                    self.skipped.bytes += skip_to - from;
                    warn!(file = %self.path_str, lines = skipped_lines, bytes = skip_to - from, "backlog beyond the cap skipped");
                    (skip_to, lines + skipped_lines)
                } else {
                    (from, lines)
                }
            }
        };
        file.seek(SeekFrom::Start(pos))?;
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
            line_start: pos,
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
            open.line_start = 0;
            open.partial.clear();
            open.overlong = false;
            if let Err(e) = open.file.seek(SeekFrom::Start(0)) {
                warn!(file = %self.path_str, error = %e, "cannot rewind truncated file");
            }
        }
    }
}

/// Reads from an open file up to the budget; returns whether it reached end of file.
fn read_file(
    open: &mut OpenFile,
    source: &Arc<str>,
    name: &Arc<str>,
    out: &mut Vec<TailLine>,
    outcome: &mut PollOutcome,
) -> bool {
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
                warn!(file = %name, error = %e, "read failed; will retry");
                return true;
            }
        };
        budget -= n;
        open.pos += n as u64;
        let mut rest = &buf[..n];
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            open.push_bytes(&rest[..nl]);
            let end = open.pos - (rest.len() - nl - 1) as u64;
            let line = open.take_line(source, name, read_at_ms, end);
            if line.1 {
                outcome.truncated += 1;
            }
            out.push(line.0);
            rest = &rest[nl + 1..];
        }
        open.push_bytes(rest);
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

    /// Completes the current line, which ends at offset `end`; returns it and whether it was
    /// truncated.
    fn take_line(
        &mut self,
        source: &Arc<str>,
        file: &Arc<str>,
        read_at_ms: i64,
        end: u64,
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
        let start = std::mem::replace(&mut self.line_start, end);
        (
            TailLine {
                source: source.clone(),
                file: file.clone(),
                line: self.lines,
                text,
                read_at_ms,
                at: LinePos {
                    id: self.id,
                    start,
                    end,
                },
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

/// From `from`, finds the end of the first line (up to `to`): (offset after its newline, 1), or
/// (`from`, 0) if there is no newline before `to`.
fn count_lines_until_one(file: &mut File, from: u64, to: u64) -> io::Result<(u64, u64)> {
    file.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut offset = from;
    while offset < to {
        let want = (to - offset).min(buf.len() as u64) as usize;
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(nl) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok((offset + nl as u64 + 1, 1));
        }
        offset += n as u64;
    }
    Ok((from, 0))
}

/// Counts complete lines in `file` between offsets `from` and `to` and returns (offset after
/// the last newline, or `from` if none; line count): where a tail that starts at the end
/// begins, so an unfinished last line is read whole once its newline arrives.
pub(super) fn count_lines(file: &mut File, from: u64, to: u64) -> io::Result<(u64, u64)> {
    file.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut offset = from;
    let mut lines = 0u64;
    let mut after_last_newline = from;
    while offset < to {
        let want = (to - offset).min(buf.len() as u64) as usize;
        let n = match file.read(&mut buf[..want]) {
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
