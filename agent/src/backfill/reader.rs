//! [`BackwardLines`]: a file's lines from an offset back towards its start, newest first, read
//! in [`BACKWARD_CHUNK_BYTES`] chunks within a byte budget, so finding the last lines of a
//! large file costs what they take, not the file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::tail::MAX_LINE_BYTES;

/// Size of one backward read.
pub const BACKWARD_CHUNK_BYTES: usize = 64 * 1024;

/// One line found going backwards: its text as the tailer would have emitted it (a trailing
/// `\r` stripped, cut at [`MAX_LINE_BYTES`], lossy UTF-8) and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackLine {
    pub text: String,
    /// Offset of its first byte.
    pub start: u64,
    /// Offset just after its newline: what [`crate::tail::LinePos::end`] says of it live.
    pub end: u64,
}

/// Lines of `file` that end at or before an offset, newest first. Only newline-terminated
/// lines count: bytes after the last newline before that offset (a line still being written)
/// are not a line yet, and the tailer reads them whole once their newline arrives. Reading
/// stops at the file's start or when the budget is spent; a line whose start lies beyond the
/// budget is not returned (see [`BackwardLines::budget_spent`]).
pub struct BackwardLines<'f> {
    file: &'f File,
    /// Bytes before this offset are not read yet.
    pos: u64,
    /// Bytes that may still be read.
    budget: u64,
    /// The bytes of the line being assembled that have been read (its end part).
    carry: Vec<u8>,
    /// Where the line being assembled ends (after its newline); `None` until the last newline
    /// before the starting offset is found.
    line_end: Option<u64>,
    /// Lines split from the last chunk, newest first.
    ready: std::collections::VecDeque<BackLine>,
    buf: Vec<u8>,
    /// After the last newline before the starting offset, once found.
    boundary_at: Option<u64>,
    budget_spent: bool,
    done: bool,
}

impl<'f> BackwardLines<'f> {
    /// Lines of `file` ending at or before `end`, reading at most `budget` bytes.
    pub fn new(file: &'f File, end: u64, budget: u64) -> BackwardLines<'f> {
        BackwardLines {
            file,
            pos: end,
            budget,
            carry: Vec::new(),
            line_end: None,
            ready: std::collections::VecDeque::new(),
            buf: vec![0; BACKWARD_CHUNK_BYTES],
            boundary_at: None,
            budget_spent: false,
            done: false,
        }
    }

    /// Where the newest line returned ends: after the last newline before the starting
    /// offset, once it has been found (`None`: no newline found yet, or none at all).
    pub fn boundary(&self) -> Option<u64> {
        self.boundary_at
    }

    /// Bytes of the budget not read.
    pub fn budget_left(&self) -> u64 {
        self.budget
    }

    /// Whether reading stopped because the budget was spent before the file's start.
    pub fn budget_spent(&self) -> bool {
        self.budget_spent
    }

    fn emit(&mut self, start: u64, end: u64, head: &[u8]) {
        let mut bytes = Vec::with_capacity(head.len() + self.carry.len());
        bytes.extend_from_slice(head);
        bytes.append(&mut self.carry);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        bytes.truncate(MAX_LINE_BYTES);
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        self.ready.push_back(BackLine { text, start, end });
    }

    /// Reads the next chunk back and splits it; `Ok(false)` when nothing more can be read.
    fn read_chunk(&mut self) -> io::Result<bool> {
        if self.pos == 0 {
            return Ok(false);
        }
        if self.budget == 0 {
            self.budget_spent = true;
            return Ok(false);
        }
        let len = (BACKWARD_CHUNK_BYTES as u64).min(self.pos).min(self.budget) as usize;
        let at = self.pos - len as u64;
        self.file.read_exact_at(&mut self.buf[..len], at)?;
        self.pos = at;
        self.budget -= len as u64;
        let chunk = std::mem::take(&mut self.buf);
        let mut unsplit = len;
        while let Some(nl) = memchr::memrchr(b'\n', &chunk[..unsplit]) {
            let after = at + nl as u64 + 1;
            match self.line_end {
                // The newline ending the newest line; what follows it is unfinished.
                None => {
                    self.carry.clear();
                    self.boundary_at = Some(after);
                }
                Some(end) => self.emit(after, end, &chunk[nl + 1..unsplit]),
            }
            self.line_end = Some(after);
            unsplit = nl;
        }
        if self.line_end.is_some() {
            // Lines longer than any kept text need no more of their head than the cut keeps;
            // the carry is bounded by the budget either way.
            self.carry.splice(0..0, chunk[..unsplit].iter().copied());
        }
        self.buf = chunk;
        Ok(true)
    }
}

impl Iterator for BackwardLines<'_> {
    type Item = io::Result<BackLine>;

    fn next(&mut self) -> Option<io::Result<BackLine>> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(Ok(line));
            }
            if self.done {
                return None;
            }
            match self.read_chunk() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    // At the file's start the carry is the first line, whole.
                    if self.pos == 0
                        && let Some(end) = self.line_end
                        && end > 0
                    {
                        self.emit(0, end, &[]);
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        let file = File::open(f.path()).unwrap();
        (f, file)
    }

    fn all(bytes: &[u8], budget: u64) -> (Vec<BackLine>, bool, Option<u64>) {
        let (_keep, file) = file_with(bytes);
        let mut r = BackwardLines::new(&file, bytes.len() as u64, budget);
        let lines = r.by_ref().map(|l| l.unwrap()).collect();
        (lines, r.budget_spent(), r.boundary())
    }

    fn texts(lines: &[BackLine]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    /// Every complete line comes back newest first with its exact byte range, the same range
    /// the tailer reports for it live.
    #[test]
    fn lines_come_newest_first_with_their_positions() {
        let (lines, spent, boundary) = all(b"one\ntwo\r\n\nthree\n", u64::MAX);
        assert_eq!(texts(&lines), ["three", "", "two", "one"]);
        let ranges: Vec<(u64, u64)> = lines.iter().map(|l| (l.start, l.end)).collect();
        assert_eq!(ranges, [(10, 16), (9, 10), (4, 9), (0, 4)]);
        assert!(!spent);
        assert_eq!(boundary, Some(16));
    }

    /// A line still being written (no newline yet) is not a line: the tailer emits it once it
    /// is complete, so the backfill must end before it.
    #[test]
    fn an_unfinished_last_line_is_left_to_the_tailer() {
        let (lines, _, boundary) = all(b"a\nb\npartial", u64::MAX);
        assert_eq!(texts(&lines), ["b", "a"]);
        assert_eq!(boundary, Some(4));
        let (lines, _, boundary) = all(b"no newline at all", u64::MAX);
        assert!(lines.is_empty());
        assert_eq!(boundary, None);
        let (lines, _, _) = all(b"", u64::MAX);
        assert!(lines.is_empty());
    }

    /// Lines spanning many chunks come back whole (cut to the tailer's line bound), and a
    /// file much larger than a chunk is read correctly across chunk edges.
    #[test]
    fn lines_across_chunk_edges_and_long_lines() {
        let mut bytes = Vec::new();
        for i in 0..20_000 {
            bytes.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let long = "x".repeat(MAX_LINE_BYTES * 2 + 17);
        bytes.extend_from_slice(long.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(b"last\n");
        let (lines, spent, _) = all(&bytes, u64::MAX);
        assert!(!spent);
        assert_eq!(lines.len(), 20_002);
        assert_eq!(lines[0].text, "last");
        assert_eq!(lines[1].text.len(), MAX_LINE_BYTES);
        let numbers: Vec<String> = lines[2..].iter().map(|l| l.text.clone()).collect();
        let want: Vec<String> = (0..20_000).rev().map(|i| format!("line {i}")).collect();
        assert_eq!(numbers, want);
        for pair in lines.windows(2) {
            assert_eq!(pair[1].end, pair[0].start, "ranges are contiguous");
        }
    }

    /// The budget bounds what is read: reading stops once it is spent, says so, and a line
    /// whose start was not reached is not returned (it would be a fragment).
    #[test]
    fn the_budget_bounds_the_read() {
        let mut bytes = Vec::new();
        for i in 0..100_000 {
            bytes.extend_from_slice(format!("{i:09}\n").as_bytes());
        }
        let budget = 3 * BACKWARD_CHUNK_BYTES as u64 + 5;
        let (lines, spent, _) = all(&bytes, budget);
        assert!(spent);
        let read = lines.len() as u64 * 10;
        assert!(read <= budget, "{read} > {budget}");
        assert!(read + 10 > budget, "{read} lines' bytes, budget {budget}");
        assert_eq!(lines[0].text, "000099999");
        assert!(lines.iter().all(|l| l.text.len() == 9));
    }
}
