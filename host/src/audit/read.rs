//! Reading an org's trail back, newest first, for `GET /api/v1/audit`.
//!
//! Files are read from their end in blocks, so a page of the newest events costs a few blocks
//! however large the trail, and reading stops as soon as the page is full.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{Event, Kind, MAX_PAGE};
use crate::api::body::MAX_JSON_BODY_BYTES;

/// What a reader asks for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub org: String,
    pub since: Option<DateTime<Utc>>,
    pub actor: Option<String>,
    pub kind: Option<Kind>,
    pub limit: usize,
    pub offset: usize,
}

/// Bytes read from a file at once, going backwards.
const BLOCK_BYTES: usize = 64 * 1024;
/// Longest line taken for an event. An event's details come from a request of at most
/// [`MAX_JSON_BODY_BYTES`], so only a damaged file has longer lines; they are skipped without
/// being held whole.
const MAX_LINE_BYTES: usize = 2 * MAX_JSON_BODY_BYTES;

/// The events of `files` (newest first) matching `query`, newest first, after skipping
/// `query.offset` of them; and whether more follow.
pub(super) fn page(files: &[PathBuf], query: &Query) -> io::Result<(Vec<Event>, bool)> {
    let limit = query.limit.min(MAX_PAGE);
    let mut skipped = 0;
    let mut page = Vec::new();
    for path in files {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in LinesBackwards::new(file)? {
            let Ok(event) = serde_json::from_slice::<Event>(&line?) else {
                continue;
            };
            if !matches(&event, query) {
                continue;
            }
            if skipped < query.offset {
                skipped += 1;
            } else if page.len() < limit {
                page.push(event);
            } else {
                return Ok((page, true));
            }
        }
    }
    Ok((page, false))
}

fn matches(e: &Event, q: &Query) -> bool {
    e.org.as_deref() == Some(q.org.as_str())
        && q.kind.is_none_or(|k| e.kind == k)
        && q.actor.as_ref().is_none_or(|a| e.actor == *a)
        && q.since
            .is_none_or(|since| DateTime::parse_from_rfc3339(&e.at).is_ok_and(|at| at >= since))
}

/// The non-empty lines of a file, last first.
struct LinesBackwards {
    file: File,
    /// Offset of `buf[0]` in the file; everything before it is unread.
    pos: u64,
    /// Read but not yet returned: the end of the unread part of the file.
    buf: Vec<u8>,
    /// `buf` ends inside a line longer than [`MAX_LINE_BYTES`]: drop up to its start.
    skipping: bool,
}

impl LinesBackwards {
    fn new(file: File) -> io::Result<LinesBackwards> {
        let pos = file.metadata()?.len();
        Ok(LinesBackwards {
            file,
            pos,
            buf: Vec::new(),
            skipping: false,
        })
    }
}

impl Iterator for LinesBackwards {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(newline) = self.buf.iter().rposition(|&b| b == b'\n') {
                let line = self.buf.split_off(newline + 1);
                self.buf.truncate(newline);
                if std::mem::take(&mut self.skipping) || line.is_empty() {
                    continue;
                }
                return Some(Ok(line));
            }
            if self.pos == 0 {
                let line = std::mem::take(&mut self.buf);
                return (!line.is_empty() && !self.skipping).then_some(Ok(line));
            }
            if self.buf.len() > MAX_LINE_BYTES {
                self.buf.clear();
                self.skipping = true;
            }
            let n = BLOCK_BYTES.min(usize::try_from(self.pos).unwrap_or(BLOCK_BYTES));
            self.pos -= n as u64;
            let mut block = vec![0; n];
            if let Err(e) = self.file.read_exact_at(&mut block, self.pos) {
                self.pos = 0;
                self.buf.clear();
                return Some(Err(e));
            }
            block.extend_from_slice(&self.buf);
            self.buf = block;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn backwards(content: &[u8]) -> Vec<Vec<u8>> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        LinesBackwards::new(f)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Every line comes back, last first, whatever the block boundaries, with or without a
    /// final newline; a damaged over-long line is skipped, not held.
    #[test]
    fn lines_come_back_last_first() {
        let lines: Vec<String> = (0..20_000).map(|i| format!("event {i}")).collect();
        let text = lines.join("\n");
        let mut expected: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
        expected.reverse();
        assert_eq!(backwards(text.as_bytes()), expected);
        assert_eq!(backwards(format!("{text}\n").as_bytes()), expected);
        assert!(backwards(b"").is_empty());
        let long = "x".repeat(3 * MAX_LINE_BYTES);
        assert_eq!(
            backwards(format!("first\n{long}\nlast\n").as_bytes()),
            vec![b"last".to_vec(), b"first".to_vec()]
        );
        assert_eq!(
            backwards(format!("{long}\nlast").as_bytes()),
            vec![b"last".to_vec()]
        );
    }
}
