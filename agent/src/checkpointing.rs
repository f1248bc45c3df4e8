//! When a tail checkpoint may be written: only at a point where every line before it is in
//! the outbox and none after it is.
//!
//! The tailer publishes its read positions ([`Snapshot`]) but lines read are not yet shipped:
//! up to [`TAIL_CHANNEL_BATCHES`](crate::tail::TAIL_CHANNEL_BATCHES) batches wait in the
//! channel, the multiline joiner holds a record for its continuation lines, and each session
//! holds an unsent batch. A checkpoint at the read position loses all of those in a crash; one
//! written when the outbox already holds later lines repeats those (they are read again, and
//! with a disk buffer also resent, under other `seq`s). So the pipeline writes the snapshot
//! taken after the tailer's batch *N* only:
//!
//! 1. when it has handled exactly batches 1..=*N* (it checks before taking batch *N + 1*, and
//!    when idle: the tailer publishes snapshot *N* before it sends batch *N + 1*),
//! 2. moved back, per file, to the first line of a record the joiner still holds (known by
//!    its byte position), so the held lines are read again rather than lost, and
//! 3. after flushing the sessions' batches into the outbox (the pipeline does this right
//!    before handing the snapshot over),
//!
//! and the writer flushes the outbox's disk buffer before it writes the checkpoint file,
//! stamped with where the buffer ends. A restart then resumes right after the last line the
//! outbox took, and drops buffered frames after that stamp (their lines are read again):
//! nothing twice from the buffer, and with a disk buffer nothing lost. Without one, what the
//! outbox held in memory is lost with the process (see [`crate::outbox`]).
//!
//! Snapshots replace each other (the newest wins), so one can be missed while the pipeline
//! is busy; the next gets its turn. The checkpoint on disk trails reading by about one
//! checkpoint interval plus what the channel holds.

use tokio::sync::watch;

use crate::outbox::Outbox;
use crate::state::LatestWriter;
use crate::tail::{CheckpointStore, Checkpoints, Snapshot, TailLine};

/// The pipeline's side of checkpoints: the tailer's snapshots, what the pipeline has handled,
/// and the writer.
pub struct Checkpointing {
    snapshots: watch::Receiver<Snapshot>,
    /// Batches from the tailer handled so far.
    handled: u64,
    /// The checkpoint handed to the writer last.
    written: Checkpoints,
    writer: LatestWriter<Checkpoints>,
    outbox: Outbox,
}

impl Checkpointing {
    /// Writes to `store`, flushing `outbox`'s disk buffer first. Spawns the writer task on
    /// the current tokio runtime.
    pub fn new(
        snapshots: watch::Receiver<Snapshot>,
        store: CheckpointStore,
        outbox: Outbox,
    ) -> Checkpointing {
        let disk = outbox.clone();
        let writer = LatestWriter::spawn("the tail checkpoint", move |cp: &Checkpoints| {
            disk.sync_disk()?;
            store.save(cp)
        });
        Checkpointing {
            snapshots,
            handled: 0,
            written: Checkpoints::default(),
            writer,
            outbox,
        }
    }

    /// The pipeline has handled the tailer's next batch.
    pub fn batch_handled(&mut self) {
        self.handled += 1;
    }

    /// The newest snapshot, if it was taken right after the last batch handled (condition 1
    /// of the module docs) and differs from the one written last, moved back to the records
    /// in `held` (the joiner's; condition 2). The caller flushes its sessions, then passes it
    /// to [`Checkpointing::write`].
    pub fn ready<'a>(&self, held: impl Iterator<Item = &'a TailLine>) -> Option<Checkpoints> {
        let mut checkpoints = {
            let snapshot = self.snapshots.borrow();
            if snapshot.batches != self.handled {
                return None;
            }
            snapshot.checkpoints.clone()
        };
        for line in held {
            let (dev, ino) = line.at.id;
            if let Some(file) = checkpoints
                .files
                .iter_mut()
                .find(|f| (f.dev, f.ino) == (dev, ino))
                && line.at.start < file.offset
            {
                file.offset = line.at.start;
                file.line = line.line.saturating_sub(1);
            }
        }
        (checkpoints != self.written).then_some(checkpoints)
    }

    /// Hands `checkpoints` to the writer, stamped with where the outbox's disk buffer ends
    /// now (the caller has just flushed every line before them into the outbox).
    pub fn write(&mut self, mut checkpoints: Checkpoints) {
        self.written = checkpoints.clone();
        checkpoints.spool_end = self.outbox.spool_end().map(|p| (p.segment, p.offset));
        self.writer.save(checkpoints);
    }

    /// Waits for the last checkpoint handed over to be written.
    pub async fn finish(self) {
        self.writer.finish().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::FileCheckpoint;

    fn snapshot(batches: u64, offset: u64) -> Snapshot {
        Snapshot {
            batches,
            checkpoints: Checkpoints {
                files: vec![FileCheckpoint {
                    source: "app".into(),
                    path: "/a.log".into(),
                    dev: 1,
                    ino: 2,
                    head: b"first line".to_vec(),
                    offset,
                    line: offset,
                }],
                spool_end: None,
            },
        }
    }

    /// After a crash, every line is delivered once: the disk buffer resends exactly the
    /// lines before the checkpoint's positions and the tailer reads those after them again,
    /// also when the pipeline handled and shipped a further batch before it saw the
    /// snapshot (the tailer publishes it just after sending its batch, so this is common).
    #[tokio::test]
    async fn after_a_crash_the_buffer_and_the_checkpoint_deliver_each_line_once() {
        use crate::filter::tests::record;
        use logfleet_protocol::agent::{AgentFrame, LogBatch, decode};
        // Line `n` of the file spans offsets 10 * (n - 1) .. 10 * n.
        let line = |seq: u64| {
            AgentFrame::Logs(LogBatch {
                session_id: "s".into(),
                records: vec![record(seq, logfleet_protocol::Level::Info, "app", "x")],
            })
        };
        let state = tempfile::tempdir().unwrap();
        let buffer = tempfile::tempdir().unwrap();
        let outbox = Outbox::with_spool(1 << 20, buffer.path(), None).unwrap();
        let (tx, rx) = watch::channel(Snapshot::default());
        let store = CheckpointStore::new(state.path());
        let mut c = Checkpointing::new(rx, store.clone(), outbox.clone());
        // The checkpoint at the start of the file.
        tx.send_replace(snapshot(0, 0));
        let cp = c.ready(std::iter::empty()).unwrap();
        c.write(cp);
        // Batch 1 (line 1) is handled and shipped before the tailer's snapshot after it is
        // visible; batch 2 (line 2) is handled and shipped next.
        outbox.push(line(1));
        c.batch_handled();
        assert_eq!(c.ready(std::iter::empty()), None);
        tx.send_replace(snapshot(1, 10));
        outbox.push(line(2));
        c.batch_handled();
        if let Some(cp) = c.ready(std::iter::empty()) {
            c.write(cp);
        }
        c.finish().await;
        drop(outbox);
        // The crash, and the restart.
        let cp = store.load();
        let upto = cp
            .spool_end
            .map(|(segment, offset)| crate::outbox::spool::Pos { segment, offset });
        let (_, resent) = crate::outbox::spool::Spool::open(buffer.path(), upto).unwrap();
        let mut delivered: Vec<u64> = resent
            .iter()
            .flat_map(|(bytes, _)| match decode::<AgentFrame>(bytes).unwrap() {
                AgentFrame::Logs(batch) => batch.records.iter().map(|r| r.seq).collect(),
                _ => Vec::new(),
            })
            .collect();
        let reread_from = cp.files[0].offset;
        delivered.extend((1..=2).filter(|n| 10 * (n - 1) >= reread_from));
        assert_eq!(delivered, [1, 2], "checkpoint {cp:?}");
    }

    /// A checkpoint is never written past lines the disk buffer failed to take (a full or
    /// failing disk) while the host has not acknowledged them: a crash would lose them, as
    /// neither the buffer nor the files (read from the checkpoint on) would give them back.
    #[tokio::test]
    async fn no_checkpoint_passes_lines_the_buffer_could_not_take() {
        use crate::filter::tests::record;
        use logfleet_protocol::agent::{AgentFrame, LogBatch};
        let state = tempfile::tempdir().unwrap();
        let buffer = tempfile::tempdir().unwrap();
        let outbox = Outbox::with_spool(256 << 20, buffer.path(), None).unwrap();
        // The buffer's second segment cannot be created: appends fail once the first is full.
        std::fs::create_dir(buffer.path().join(format!("{:016}.spool", 2))).unwrap();
        let text: String = (0..1 << 20).map(|_| fastrand::alphanumeric()).collect();
        for seq in 1..=16 {
            outbox.push(AgentFrame::Logs(LogBatch {
                session_id: "s".into(),
                records: vec![record(seq, logfleet_protocol::Level::Info, "app", &text)],
            }));
        }
        let store = CheckpointStore::new(state.path());
        let (tx, rx) = watch::channel(Snapshot::default());
        let mut c = Checkpointing::new(rx, store.clone(), outbox.clone());
        tx.send_replace(snapshot(0, 160));
        let cp = c.ready(std::iter::empty()).unwrap();
        c.write(cp);
        c.finish().await;
        assert_eq!(
            store.load(),
            Checkpoints::default(),
            "written past lost lines"
        );
        // Once the host has them all, the checkpoint moves on.
        while let Some(e) = outbox.try_pop() {
            outbox.ack(e.number().unwrap());
        }
        let (tx, rx) = watch::channel(Snapshot::default());
        let mut c = Checkpointing::new(rx, store.clone(), outbox.clone());
        tx.send_replace(snapshot(0, 160));
        let cp = c.ready(std::iter::empty()).unwrap();
        c.write(cp);
        c.finish().await;
        assert_eq!(store.load().files, snapshot(0, 160).checkpoints.files);
    }

    /// A snapshot is written only right after the pipeline handled exactly the batches before
    /// it, and a record the joiner still holds moves it back to that record's first line.
    #[tokio::test]
    async fn a_snapshot_is_cut_at_its_batch_and_before_held_records() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = watch::channel(Snapshot::default());
        let store = CheckpointStore::new(dir.path());
        let mut c = Checkpointing::new(rx, store.clone(), Outbox::new(1 << 20));
        tx.send_replace(snapshot(2, 50));
        c.batch_handled();
        assert_eq!(c.ready(std::iter::empty()), None, "batch 2 not handled yet");
        c.batch_handled();
        // The joiner holds a record whose first line is line 3, at offsets 20..30.
        let held = TailLine {
            source: "app".into(),
            file: "/a.log".into(),
            line: 3,
            text: "ERROR boom".into(),
            read_at_ms: 0,
            at: crate::tail::LinePos {
                id: (1, 2),
                start: 20,
                end: 30,
            },
        };
        let cp = c.ready(std::iter::once(&held)).expect("batch 2 handled");
        assert_eq!((cp.files[0].offset, cp.files[0].line), (20, 2));
        let other_file = TailLine {
            at: crate::tail::LinePos {
                id: (1, 3),
                ..held.at
            },
            ..held.clone()
        };
        let whole = c.ready(std::iter::once(&other_file)).unwrap();
        assert_eq!((whole.files[0].offset, whole.files[0].line), (50, 50));
        c.write(cp.clone());
        assert_eq!(c.ready(std::iter::once(&held)), None, "written already");
        c.batch_handled();
        assert_eq!(
            c.ready(std::iter::empty()),
            None,
            "batch 3 is past the snapshot"
        );
        c.finish().await;
        assert_eq!(store.load().files, cp.files);
    }
}
