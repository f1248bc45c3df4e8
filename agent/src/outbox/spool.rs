//! The disk buffer (`--buffer-dir`): the outbox's log frames kept in files, so what the host
//! has not acknowledged survives an agent restart (a crash, an upgrade, a reboot) during a
//! host outage.
//!
//! The spool is a log of records in numbered segment files (`{index:016}.spool`, a new one
//! after [`SEGMENT_BYTES`]), each record `[len: u32 LE][crc32: u32 LE][frame bytes]`, plus an
//! `acked` file naming the position up to which the host has acknowledged everything
//! (`"{segment} {offset}"`). The outbox appends every frame it must not lose (`Logs`,
//! `Dropped`, `FilterError`) when it queues it, in queue order, and moves the acknowledged
//! position when the host acknowledges frames; a segment wholly before that position is
//! deleted. At start [`Spool::open`] returns the records after it, which the outbox queues
//! again ahead of anything new.
//!
//! Durability: appends and the acknowledged position are written to the page cache (no
//! fsync per frame: that would cost the hot path milliseconds); [`Spool::unsynced`] hands
//! them out to flush, and the agent calls it before every checkpoint it writes, so a checkpoint never
//! points past lines the spool does not hold. A process crash loses nothing written; a power
//! loss may lose what was appended since the last sync (at most one checkpoint interval).
//! The acknowledged position may lag (it is written without ordering against the host's
//! acknowledgement), so after a restart some frames the host already has can go out again;
//! the host drops log lines it already has by `seq`.
//!
//! Damage: a record that is cut short or fails its checksum ends its segment (a torn write
//! at a crash); the rest of that segment is ignored, and the segment is not appended to
//! again. Unreadable segments or marker are logged and skipped: a damaged buffer costs what
//! it held, never the agent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::warn;

/// A segment is closed and a new one begun once it holds this many bytes, so acknowledged
/// data is given back to the disk in steps of this size.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Largest record read back; anything longer is damage (the outbox's frames are far smaller).
const MAX_RECORD_BYTES: u32 = 64 * 1024 * 1024;
const HEADER_BYTES: u64 = 8;
const ACKED_FILE: &str = "acked";
/// Not `lock`: that is the state directory's, and the two may be one directory.
const LOCK_FILE: &str = "buffer.lock";
const SUFFIX: &str = ".spool";

/// A record read back at start: its bytes and where it ends.
pub type Stored = (Vec<u8>, Pos);

/// Where a record ends in the spool: everything up to here may be acknowledged together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

/// The disk buffer of one agent. Not shared: the outbox owns it behind its mutex.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// The segment appended to, and its length.
    current: File,
    current_index: u64,
    current_len: u64,
    /// Older segments not yet wholly acknowledged, oldest first.
    older: Vec<u64>,
    acked: Pos,
    acked_file: File,
    /// Segments closed since the last [`Spool::unsynced`], still to be flushed.
    /// Bounded by the segments on disk: a deleted segment's handle goes with it.
    rolled: Vec<(u64, File)>,
    /// Set after a failed write: warned about once, retried on the next append.
    failing: bool,
    /// Held while the spool is open: two agents appending to one spool would resend each
    /// other's frames.
    _lock: File,
}

impl Spool {
    /// Opens (creating) the spool in `dir` and returns the records not acknowledged yet,
    /// oldest first, each with the position it ends at. With `upto`, records after it are
    /// discarded, from the disk too (their lines are read again from the files).
    pub fn open(dir: &Path, upto: Option<Pos>) -> io::Result<(Spool, Vec<Stored>)> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        let lock = lock(dir)?;
        let acked_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(ACKED_FILE))?;
        let acked = read_marker(&acked_file);
        let mut indexes = segment_indexes(dir)?;
        indexes.sort_unstable();
        let mut records = Vec::new();
        let mut kept = Vec::new();
        for &index in &indexes {
            let path = segment_path(dir, index);
            if index < acked.segment {
                remove(&path);
                continue;
            }
            let from = if index == acked.segment {
                acked.offset
            } else {
                0
            };
            match read_segment(&path, index, from, &mut records) {
                Ok(()) => kept.push(index),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "unreadable buffer segment; skipping it")
                }
            }
        }
        if let Some(upto) = upto {
            discard_after(dir, upto, &mut kept, &mut records);
        }
        // Always append to a fresh segment, after every one read, acknowledged or named by the
        // checkpoint: the last one may end in a torn record, an acknowledged offset must never
        // land in new data, and new records must sort after a checkpoint taken before them
        // (also one from a buffer directory since emptied), or a crash before the next
        // checkpoint would resend lines the tailer reads again.
        let current_index = kept
            .last()
            .copied()
            .unwrap_or(0)
            .max(acked.segment)
            .max(upto.map_or(0, |p| p.segment))
            + 1;
        let current = create_segment(dir, current_index)?;
        let spool = Spool {
            dir: dir.to_owned(),
            current,
            current_index,
            current_len: 0,
            older: kept,
            acked,
            acked_file,
            rolled: Vec::new(),
            failing: false,
            _lock: lock,
        };
        Ok((spool, records))
    }

    /// Appends one record; `None` when it could not be written (logged once per failure
    /// spell: the frame then lives in memory only, as without a buffer).
    pub fn append(&mut self, bytes: &[u8]) -> Option<Pos> {
        match self.try_append(bytes) {
            Ok(pos) => {
                self.failing = false;
                Some(pos)
            }
            Err(e) => {
                if !self.failing {
                    warn!(dir = %self.dir.display(), error = %e, "cannot write to the disk buffer; frames are kept in memory only until it works again");
                }
                self.failing = true;
                None
            }
        }
    }

    fn try_append(&mut self, bytes: &[u8]) -> io::Result<Pos> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&l| l <= MAX_RECORD_BYTES)
            .ok_or_else(|| io::Error::other("frame too large for the disk buffer"))?;
        if self.current_len >= SEGMENT_BYTES {
            let next = self.current_index + 1;
            let file = create_segment(&self.dir, next)?;
            let closed = std::mem::replace(&mut self.current, file);
            self.rolled.push((self.current_index, closed));
            self.older.push(self.current_index);
            self.current_index = next;
            self.current_len = 0;
        }
        let mut record = Vec::with_capacity(bytes.len() + HEADER_BYTES as usize);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
        record.extend_from_slice(bytes);
        // One write at the known end: a failure part-way leaves a torn record that
        // `read_segment` stops at, and the next append starts over at the same offset.
        self.current.write_all_at(&record, self.current_len)?;
        self.current_len += record.len() as u64;
        Ok(Pos {
            segment: self.current_index,
            offset: self.current_len,
        })
    }

    /// Everything up to `pos` is acknowledged: remembered, and segments wholly before it
    /// deleted. Positions never move back.
    pub fn ack(&mut self, pos: Pos) {
        if pos <= self.acked {
            return;
        }
        self.acked = pos;
        let marker = format!("{:020} {:020}\n", pos.segment, pos.offset);
        // Fixed width, one write at offset 0: never a mix of two markers after a crash.
        if let Err(e) = self.acked_file.write_all_at(marker.as_bytes(), 0) {
            warn!(dir = %self.dir.display(), error = %e, "cannot record acknowledged position; frames may be sent again after a restart");
        }
        let dir = &self.dir;
        self.older.retain(|&index| {
            let done = index < pos.segment;
            if done {
                remove(&segment_path(dir, index));
            }
            !done
        });
        self.rolled.retain(|(index, _)| *index >= pos.segment);
    }

    /// Where the spool ends now: after the last record appended.
    pub fn end(&self) -> Pos {
        Pos {
            segment: self.current_index,
            offset: self.current_len,
        }
    }

    /// Handles to every file with writes not yet flushed to the disk (the segments closed
    /// since the last call, the current one, the marker), to fsync outside the outbox's lock.
    pub fn unsynced(&mut self) -> io::Result<Vec<File>> {
        let mut files: Vec<File> = self.rolled.drain(..).map(|(_, f)| f).collect();
        files.push(self.current.try_clone()?);
        files.push(self.acked_file.try_clone()?);
        Ok(files)
    }

    /// Segment files not deleted yet, the one appended to included.
    #[cfg(test)]
    fn disk_segments(&self) -> usize {
        self.older.len() + 1
    }
}

/// An exclusive `flock` on `dir/buffer.lock`, released when the process exits however it exits.
fn lock(dir: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::other(
            "another agent is using this buffer directory; give each agent its own --buffer-dir",
        )),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Drops the records after `upto`, from `records` and from the disk (`kept`: the segment
/// indexes read).
fn discard_after(dir: &Path, upto: Pos, kept: &mut Vec<u64>, records: &mut Vec<Stored>) {
    let before = records.len();
    records.retain(|(_, pos)| *pos <= upto);
    if records.len() == before {
        return;
    }
    warn!(
        records = before - records.len(),
        "disk buffer records after the last checkpoint dropped: their lines are read again"
    );
    kept.retain(|&index| {
        let path = segment_path(dir, index);
        if index > upto.segment {
            remove(&path);
            return false;
        }
        if index == upto.segment {
            let cut = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(upto.offset));
            if let Err(e) = cut {
                warn!(path = %path.display(), error = %e, "cannot cut a buffer segment; its tail may be sent again after another restart");
            }
        }
        true
    });
}

fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:016}{SUFFIX}"))
}

fn create_segment(dir: &Path, index: u64) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(segment_path(dir, index))
}

fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "cannot delete an acknowledged buffer segment");
    }
}

fn segment_indexes(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(index) = name
            .strip_suffix(SUFFIX)
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push(index);
        }
    }
    Ok(out)
}

fn read_marker(file: &File) -> Pos {
    let mut text = String::new();
    let mut file = file;
    if file.read_to_string(&mut text).is_err() {
        return Pos::default();
    }
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => Pos { segment, offset },
        _ => Pos::default(),
    }
}

/// Reads the whole records of segment `index` that start at or after `from`, stopping at the
/// first torn or damaged one.
fn read_segment(path: &Path, index: u64, from: u64, out: &mut Vec<Stored>) -> io::Result<()> {
    let data = fs::read(path)?;
    let mut at = 0u64;
    while let Some(header) = data.get(at as usize..(at + HEADER_BYTES) as usize) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = at + HEADER_BYTES;
        let end = start + u64::from(len);
        let body = match data.get(start as usize..end as usize) {
            Some(body) if len <= MAX_RECORD_BYTES && crc32fast::hash(body) == crc => body,
            _ => {
                warn!(path = %path.display(), offset = at, "torn or damaged record in the disk buffer; the rest of this segment is ignored");
                break;
            }
        };
        if at >= from {
            out.push((
                body.to_vec(),
                Pos {
                    segment: index,
                    offset: end,
                },
            ));
        }
        at = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(records: &[Stored]) -> Vec<String> {
        records
            .iter()
            .map(|(b, _)| String::from_utf8(b.clone()).unwrap())
            .collect()
    }

    /// What was appended and not acknowledged comes back after a restart, in order; what was
    /// acknowledged does not.
    #[test]
    fn unacknowledged_records_survive_a_restart_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, old) = Spool::open(dir.path(), None).unwrap();
        assert!(old.is_empty());
        let positions: Vec<Pos> = (0..5)
            .map(|i| spool.append(format!("frame {i}").as_bytes()).unwrap())
            .collect();
        spool.ack(positions[1]);
        drop(spool);
        let (mut spool, back) = Spool::open(dir.path(), None).unwrap();
        assert_eq!(texts(&back), ["frame 2", "frame 3", "frame 4"]);
        // Acknowledging what came back, then more: a third start sees only the new ones.
        spool.ack(back[2].1);
        spool.append(b"frame 5").unwrap();
        drop(spool);
        let (_, back) = Spool::open(dir.path(), None).unwrap();
        assert_eq!(texts(&back), ["frame 5"]);
    }

    /// A record cut short by a crash, at any length, is never returned and never hides the
    /// whole records before it.
    #[test]
    fn a_torn_record_is_ignored_at_any_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), None).unwrap();
        spool.append(b"first").unwrap();
        let end = spool.append(b"second record").unwrap();
        drop(spool);
        let path = segment_path(dir.path(), end.segment);
        let full = fs::read(&path).unwrap();
        let first_end = HEADER_BYTES as usize + 5;
        for cut in first_end..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            // Reopening must not touch the damaged segment's data.
            let mut records = Vec::new();
            read_segment(&path, end.segment, 0, &mut records).unwrap();
            assert_eq!(texts(&records), ["first"], "cut at {cut}");
        }
        // A flipped byte fails the checksum.
        let mut bad = full.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        fs::write(&path, &bad).unwrap();
        let (_, back) = Spool::open(dir.path(), None).unwrap();
        assert_eq!(texts(&back), ["first"]);
    }

    /// Acknowledged segments are given back to the disk; the spool never grows by what the
    /// host has.
    #[test]
    fn acknowledged_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), None).unwrap();
        let big = vec![b'x'; 1024 * 1024];
        let mut last = Pos::default();
        for _ in 0..(3 * SEGMENT_BYTES / big.len() as u64 + 2) {
            last = spool.append(&big).unwrap();
        }
        assert!(spool.disk_segments() >= 3);
        spool.ack(last);
        assert_eq!(spool.disk_segments(), 1);
        let on_disk = segment_indexes(dir.path()).unwrap();
        assert_eq!(on_disk, [last.segment]);
        drop(spool);
        let (_, back) = Spool::open(dir.path(), None).unwrap();
        assert!(back.is_empty());
    }

    /// Records after the checkpoint's end are dropped for good: their lines are read again,
    /// so sending them too would repeat them.
    #[test]
    fn records_after_the_checkpoint_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), None).unwrap();
        spool.append(b"a").unwrap();
        let checkpoint = spool.append(b"b").unwrap();
        spool.append(b"c").unwrap();
        drop(spool);
        let (spool, back) = Spool::open(dir.path(), Some(checkpoint)).unwrap();
        assert_eq!(texts(&back), ["a", "b"]);
        drop(spool);
        let (_, back) = Spool::open(dir.path(), None).unwrap();
        assert_eq!(texts(&back), ["a", "b"], "gone from the disk too");
    }

    /// Records written after a checkpoint are never sent again after a crash, also when the
    /// checkpoint names a spool position this directory never reached (the buffer directory
    /// was emptied or replaced since): the tailer reads their lines again from that
    /// checkpoint, so resending them too would deliver those lines twice.
    #[test]
    fn records_after_a_checkpoint_from_an_emptied_buffer_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        // The checkpoint was written while another (since deleted) spool had reached here.
        let checkpoint = Pos {
            segment: 5,
            offset: 1000,
        };
        let (mut spool, back) = Spool::open(dir.path(), Some(checkpoint)).unwrap();
        assert!(back.is_empty());
        // Lines read after the checkpoint; the agent dies before writing a newer one.
        spool.append(b"read again after the restart").unwrap();
        drop(spool);
        let (_, back) = Spool::open(dir.path(), Some(checkpoint)).unwrap();
        assert_eq!(texts(&back), Vec::<String>::new());
    }

    /// The buffer may share the agent's state directory (`--buffer-dir` = `--state-dir`):
    /// one agent holding both starts, a second one is still refused.
    #[test]
    fn the_buffer_can_share_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _state = crate::state::StateDir::open_exclusive(dir.path()).unwrap();
        let (mut spool, _) = Spool::open(dir.path(), None).unwrap();
        spool.append(b"a").unwrap();
        assert!(Spool::open(dir.path(), None).is_err());
    }

    /// A damaged marker costs at most a resend, never the agent: everything still in the
    /// segments comes back.
    #[test]
    fn a_damaged_marker_resends_rather_than_loses() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), None).unwrap();
        let a = spool.append(b"a").unwrap();
        spool.append(b"b").unwrap();
        spool.ack(a);
        drop(spool);
        fs::write(dir.path().join(ACKED_FILE), b"garbage").unwrap();
        let (_, back) = Spool::open(dir.path(), None).unwrap();
        assert_eq!(texts(&back), ["a", "b"]);
    }
}
