//! The outbox: frames waiting between the pipeline and the uplink, bounded by bytes, and kept
//! until the host acknowledges them.
//!
//! The pipeline pushes, the uplink pops; a std `Mutex` guards the queue (never held across an
//! await) and a `Notify` wakes the uplink, as in mini-redis's shared state.
//!
//! While the host is unreachable frames queue up to [`Tuning::buffer_bytes`](crate::Tuning)
//! of encoded data. Overflow policy, by frame kind:
//!
//! - `Logs`: a batch that does not fit is dropped (newest data goes first, older data already
//!   queued is kept in order) and its lines are counted per session. The count is reported as
//!   `Dropped{reason: AgentBufferFull}` right before that session's next batch once space
//!   exists, or when the queue has emptied — so every gap is reported, in stream order.
//! - `Dropped`: counted against the bound too; one that does not fit (or whose session already
//!   has unreported drops) is merged into the session's unreported counts.
//! - `Metrics`: not counted against the byte bound but capped at [`MAX_QUEUED_METRICS`]
//!   frames; at the cap the two oldest are merged into one longer interval, so no counts are
//!   lost and the host's history only gets coarser.
//! - `FilterError`: always queued, at most one per session (it ends the session). The
//!   session's unreported drops go right before it, so they reach the host while the session
//!   still exists there.
//! - Other control frames: always queued; they are few and small.
//!
//! Acknowledged delivery: a frame is not done when the socket takes it (a link that dies
//! without a reset swallows a socket buffer and everything written until the death is
//! noticed). Taking a frame to send ([`Outbox::try_pop`]) numbers it — consecutively from 1
//! for the life of the outbox, whose random [`Outbox::id`] tells the host which numbering it
//! is — and moves it into the *unacknowledged window*. It leaves the window when the host
//! acknowledges it ([`Outbox::ack`]: cumulative, every frame numbered up to `upto`). After a
//! reconnect, [`Outbox::rewind`] puts the whole window back at the front of the queue, in
//! number order, and its frames go out again under their numbers; the host skips those it
//! has already handled, so each is applied once. Frames in the window count against
//! `buffer_bytes` exactly like queued ones, so a host that never acknowledges is an
//! unreachable host: the window fills, then new batches overflow and are counted as above.
//! A frame is taken only while the window holds less than `buffer_bytes` (one frame always
//! may be in flight), so control frames and metrics cannot grow it past the bound either:
//! they wait in the queue, where metrics are capped. Rewound frames keep their numbers and
//! are never merged: the numbers on a link must follow each other without a gap.
//!
//! Backpressure while the host is reachable: overflow is for a host that is away, not for
//! one that is only slower than reading for a moment (a restart's backlog, a burst). While
//! a link is up and the outbox holds more than half its bound, [`Outbox::has_room`] says no
//! and the pipeline takes no more lines from the tailer (the files hold them) until
//! acknowledgements make room, for at most [`BACKPRESSURE_MAX_WAIT`] at a time; after that,
//! or with no link, lines flow and the overflow policy above applies.
//!
//! With a disk buffer ([`Outbox::with_spool`], `--buffer-dir`), the frames that must not be
//! lost (`Logs`, `Dropped`, `FilterError`) are also appended to a [`spool`] as they are queued
//! (a batch the policy drops is not), and the spool's acknowledged position follows the
//! window. A restarted agent queues what the spool still holds ahead of anything new, under
//! the same byte bound: what does not fit, the oldest first, is counted as
//! `agent_buffer_full` like any overflow. A frame the disk buffer cannot take (a full or
//! failing disk) stays in memory only, and until the host acknowledges it no checkpoint is
//! written (a crash would otherwise lose its lines: see [`Outbox::sync_disk`]). Without a
//! disk buffer, what is queued or unacknowledged when the agent stops is lost with the
//! process (at most `buffer_bytes`).

pub mod spool;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use logfleet_protocol::agent::{AgentFrame, Metrics, decode, encode};
use logfleet_protocol::client::DropReason;
use tokio::sync::Notify;

use crate::metrics::merge_metrics;
use spool::{Pos, Spool};

/// Most metrics frames kept while disconnected: an hour at the default 60 s interval.
pub const MAX_QUEUED_METRICS: usize = 60;

/// Longest the pipeline holds back lines for room in the outbox while a link is up (see the
/// module docs): long enough for a working host to catch up, short enough that a host that
/// stopped acknowledging does not hold the tailer (and its rotation handling) for long.
pub const BACKPRESSURE_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The number of the first frame an outbox sends.
pub const FIRST_FRAME: u64 = 1;

/// Shared handle to the outbox; clones refer to the same queue.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// What every clone of an [`Outbox`] points at.
struct Shared {
    state: Mutex<State>,
    /// Wakes the uplink when a frame is queued or the window shrinks.
    notify: Notify,
    /// Wakes the pipeline waiting for room (see [`Outbox::room`]).
    room: Notify,
    /// Whether a link to the host is up (set by the uplink).
    connected: std::sync::atomic::AtomicBool,
    /// This outbox's identity on the wire (`Hello::outbox`).
    id: u64,
}

/// The queue, the window and their accounting, behind the mutex.
struct State {
    queue: VecDeque<Entry>,
    /// Encoded bytes in `queue`.
    bytes: usize,
    /// Frames sent and not yet acknowledged, in number order.
    unacked: VecDeque<Entry>,
    /// Encoded bytes in `unacked`.
    unacked_bytes: usize,
    limit: usize,
    /// `Metrics` entries in `queue`.
    metrics: usize,
    /// Lines dropped but not reported yet, in the order sessions first lost lines.
    unreported: Vec<Unreported>,
    /// The number the next frame sent for the first time gets.
    next_number: u64,
    /// The disk buffer, if any.
    spool: Option<Spool>,
    /// Queued or unacknowledged frames the disk buffer failed to take (a full or failing
    /// disk): while there are any, no checkpoint may be written, as it would pass lines that
    /// a crash would then lose (see [`Outbox::sync_disk`]).
    unspooled: usize,
}

/// Unreported drops of one session for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unreported {
    session_id: String,
    reason: DropReason,
    count: u64,
}

/// One encoded frame ready for the wire.
#[derive(Debug, Clone)]
pub struct Entry {
    bytes: Bytes,
    kind: Kind,
    /// Its number, once it has been taken to send (it keeps it when rewound).
    number: Option<u64>,
    /// Where it ends in the disk buffer, if it is there.
    spooled: Option<Pos>,
    /// A frame that belongs in the disk buffer but could not be written there.
    unspooled: bool,
}

/// What an entry holds, as far as overflow handling needs to know.
#[derive(Debug, Clone)]
enum Kind {
    /// Kept decoded so it can be merged with a neighbour at the cap.
    Metrics(Box<Metrics>),
    Other,
}

impl Entry {
    fn new(frame: &AgentFrame) -> Entry {
        let kind = match frame {
            AgentFrame::Metrics(m) => Kind::Metrics(Box::new(m.clone())),
            _ => Kind::Other,
        };
        Entry {
            bytes: Bytes::from(encode(frame)),
            kind,
            number: None,
            spooled: None,
            unspooled: false,
        }
    }

    /// The frame's encoding, a binary WebSocket message.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Its frame number: set on every entry [`Outbox::try_pop`] returns.
    pub fn number(&self) -> Option<u64> {
        self.number
    }

    fn is_unnumbered_metrics(&self) -> bool {
        self.number.is_none() && matches!(self.kind, Kind::Metrics(_))
    }
}

impl Outbox {
    /// An empty outbox holding at most `limit` bytes of log data, queued and unacknowledged
    /// together, with a random identity.
    pub fn new(limit: usize) -> Outbox {
        Outbox::from_state(State {
            queue: VecDeque::new(),
            bytes: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            limit,
            metrics: 0,
            unreported: Vec::new(),
            next_number: FIRST_FRAME,
            spool: None,
            unspooled: 0,
        })
    }

    /// An outbox kept on disk in `dir` as well (see the module docs), holding first what an
    /// earlier run left unacknowledged there, up to `upto` when given (the tailer reads the
    /// lines of later records again: see [`Checkpoints::spool_end`]). Blocking (reads the
    /// spool).
    ///
    /// [`Checkpoints::spool_end`]: crate::tail::Checkpoints::spool_end
    pub fn with_spool(
        limit: usize,
        dir: &std::path::Path,
        upto: Option<Pos>,
    ) -> std::io::Result<Outbox> {
        let (spool, records) = Spool::open(dir, upto)?;
        let outbox = Outbox::new(limit);
        {
            let mut state = outbox.state();
            state.spool = Some(spool);
            state.restore(records);
        }
        Ok(outbox)
    }

    fn from_state(state: State) -> Outbox {
        Outbox {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                notify: Notify::new(),
                room: Notify::new(),
                connected: std::sync::atomic::AtomicBool::new(false),
                id: fastrand::u64(..),
            }),
        }
    }

    /// Where the disk buffer ends now (after the last frame queued), if there is one.
    pub fn spool_end(&self) -> Option<Pos> {
        self.state().spool.as_ref().map(Spool::end)
    }

    /// Flushes the disk buffer to the disk, if there is one; without holding the outbox's
    /// lock during the fsync. Blocking. An error while frames the disk buffer could not take
    /// are still unacknowledged: a checkpoint written now would pass lines no disk holds.
    pub fn sync_disk(&self) -> std::io::Result<()> {
        let files = {
            let mut state = self.state();
            if state.unspooled > 0 {
                return Err(std::io::Error::other(
                    "frames the disk buffer could not take are not acknowledged yet",
                ));
            }
            match state.spool.as_mut() {
                Some(spool) => spool.unsynced()?,
                None => return Ok(()),
            }
        };
        for file in files {
            file.sync_data()?;
        }
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in the short, non-panicking critical
        // sections below; recovering the data is still better than taking the agent down.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This outbox's identity, sent in `Hello::outbox`: frame numbers count within it.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Queues a frame, applying the overflow policy in the module docs.
    pub fn push(&self, frame: AgentFrame) {
        {
            let mut state = self.state();
            match frame {
                AgentFrame::Logs(batch) => {
                    let lines = batch.records.len() as u64;
                    let session_id = batch.session_id.clone();
                    state.push_logs(&session_id, Entry::new(&AgentFrame::Logs(batch)), lines);
                }
                AgentFrame::Dropped {
                    session_id,
                    count,
                    reason,
                } => state.push_dropped(session_id, count, reason),
                frame @ AgentFrame::Metrics(_) => state.push_metrics(Entry::new(&frame)),
                frame @ AgentFrame::FilterError { .. } => state.push_session_end(frame),
                other => state.push_back(Entry::new(&other)),
            }
        }
        self.shared.notify.notify_one();
    }

    /// Takes the next frame to send, if any and if the window has room: it gets its number
    /// and stays in the window until acknowledged.
    pub fn try_pop(&self) -> Option<Entry> {
        self.state().pop()
    }

    /// Waits for the next frame to send (see [`Outbox::try_pop`]). Cancel-safe: nothing is
    /// taken unless it returns.
    pub async fn next(&self) -> Entry {
        loop {
            // The only await is here; the pop below cannot be interrupted after taking.
            if let Some(entry) = self.try_pop() {
                return entry;
            }
            self.shared.notify.notified().await;
        }
    }

    /// The host has handled every frame numbered up to `upto`: they leave the window. Only
    /// the window: a rewound frame not yet sent again stays queued even if covered, because
    /// the host numbers a link's frames by their order, so the link must carry every number
    /// from its `Hello::next_frame` on (the host skips the ones it has).
    pub fn ack(&self, upto: u64) {
        {
            let mut state = self.state();
            state.ack(upto);
        }
        self.shared.notify.notify_one();
        self.shared.room.notify_waiters();
    }

    /// The uplink has a link up (`true`) or lost it (`false`).
    pub fn set_connected(&self, up: bool) {
        self.shared
            .connected
            .store(up, std::sync::atomic::Ordering::Relaxed);
        self.shared.room.notify_waiters();
    }

    /// Whether the pipeline may hand over more lines without waiting (see the module docs):
    /// no link is up, or the outbox is at most half full.
    pub fn has_room(&self) -> bool {
        if !self
            .shared
            .connected
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return true;
        }
        let state = self.state();
        state.bytes + state.unacked_bytes <= state.limit / 2
    }

    /// Waits until [`Outbox::has_room`].
    pub async fn room(&self) {
        loop {
            let notified = self.shared.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a wake-up in between is not missed.
            notified.as_mut().enable();
            if self.has_room() {
                return;
            }
            notified.await;
        }
    }

    /// For a new link: puts the unacknowledged frames back at the front of the queue, in
    /// order, to be sent again under their numbers. Returns the number of the first frame
    /// the link will carry (`Hello::next_frame`).
    pub fn rewind(&self) -> u64 {
        let mut state = self.state();
        state.rewind();
        state
            .queue
            .front()
            .and_then(|e| e.number)
            .unwrap_or(state.next_number)
    }

    /// Encoded bytes waiting to be sent or acknowledged.
    pub fn buffered_bytes(&self) -> usize {
        let state = self.state();
        state.bytes + state.unacked_bytes
    }

    /// Frames sent and not acknowledged yet.
    pub fn unacknowledged(&self) -> usize {
        self.state().unacked.len()
    }

    /// Whether nothing at all is waiting, unreported drops and unacknowledged frames included.
    pub fn is_empty(&self) -> bool {
        let state = self.state();
        state.queue.is_empty() && state.unreported.is_empty() && state.unacked.is_empty()
    }
}

impl State {
    fn fits(&self, bytes: usize) -> bool {
        self.bytes + self.unacked_bytes + bytes <= self.limit
    }

    fn push_back(&mut self, entry: Entry) {
        self.bytes += entry.bytes.len();
        if matches!(entry.kind, Kind::Metrics(_)) {
            self.metrics += 1;
        }
        self.queue.push_back(entry);
    }

    fn push_logs(&mut self, session_id: &str, entry: Entry, lines: u64) {
        let owed: Vec<Entry> = self
            .unreported
            .iter()
            .filter(|u| u.session_id == session_id)
            .map(|u| u.to_entry())
            .collect();
        let needed = entry.bytes.len() + owed.iter().map(|e| e.bytes.len()).sum::<usize>();
        if self.fits(needed) {
            self.unreported.retain(|u| u.session_id != session_id);
            for e in owed {
                self.push_durable(e);
            }
            self.push_durable(entry);
        } else {
            self.count_unreported(session_id, DropReason::AgentBufferFull, lines);
        }
    }

    /// Queues a frame that must not be lost, writing it to the disk buffer first if any.
    fn push_durable(&mut self, mut entry: Entry) {
        self.spool(&mut entry);
        self.push_back(entry);
    }

    fn spool(&mut self, entry: &mut Entry) {
        if let Some(spool) = self.spool.as_mut() {
            entry.spooled = spool.append(&entry.bytes);
            if entry.spooled.is_none() {
                entry.unspooled = true;
                self.unspooled += 1;
            }
        }
    }

    /// Queues what a disk buffer held at start, oldest first; what does not fit in the
    /// bound is dropped from the oldest on and counted per session.
    fn restore(&mut self, records: Vec<spool::Stored>) {
        let mut entries: VecDeque<Entry> = records
            .into_iter()
            .map(|(bytes, pos)| Entry {
                bytes: Bytes::from(bytes),
                kind: Kind::Other,
                number: None,
                spooled: Some(pos),
                unspooled: false,
            })
            .collect();
        let mut total: usize = entries.iter().map(|e| e.bytes.len()).sum();
        let mut dropped_to = None;
        while total > self.limit
            && let Some(old) = entries.pop_front()
        {
            total -= old.bytes.len();
            dropped_to = old.spooled;
            match decode(&old.bytes) {
                Ok(AgentFrame::Logs(batch)) => self.count_unreported(
                    &batch.session_id,
                    DropReason::AgentBufferFull,
                    batch.records.len() as u64,
                ),
                Ok(AgentFrame::Dropped {
                    session_id,
                    count,
                    reason,
                }) => self.count_unreported(&session_id, reason, count),
                // A session's end, or damage: nothing left to count.
                _ => {}
            }
        }
        if let (Some(pos), Some(spool)) = (dropped_to, self.spool.as_mut()) {
            spool.ack(pos);
        }
        // The gaps are reported ahead of the lines after them. Not spooled: spooled frames
        // must leave in spool order, and these would come after the ones still there.
        for owed in std::mem::take(&mut self.unreported) {
            self.push_back(owed.to_entry());
        }
        for entry in entries {
            self.push_back(entry);
        }
    }

    /// Queues a frame that ends its session (`FilterError`) after the session's unreported
    /// drops, whatever the byte bound: nothing of the session can follow to carry them.
    fn push_session_end(&mut self, frame: AgentFrame) {
        if let AgentFrame::FilterError { session_id, .. } = &frame {
            let owed: Vec<Entry> = self
                .unreported
                .iter()
                .filter(|u| &u.session_id == session_id)
                .map(|u| u.to_entry())
                .collect();
            self.unreported.retain(|u| &u.session_id != session_id);
            for e in owed {
                self.push_durable(e);
            }
        }
        self.push_durable(Entry::new(&frame));
    }

    fn push_dropped(&mut self, session_id: String, count: u64, reason: DropReason) {
        let already_owed = self.unreported.iter().any(|u| u.session_id == session_id);
        let entry = Entry::new(&AgentFrame::Dropped {
            session_id: session_id.clone(),
            count,
            reason,
        });
        if !already_owed && self.fits(entry.bytes.len()) {
            self.push_durable(entry);
        } else {
            self.count_unreported(&session_id, reason, count);
        }
    }

    fn count_unreported(&mut self, session_id: &str, reason: DropReason, count: u64) {
        match self
            .unreported
            .iter_mut()
            .find(|u| u.session_id == session_id && u.reason == reason)
        {
            Some(u) => u.count += count,
            None => self.unreported.push(Unreported {
                session_id: session_id.to_owned(),
                reason,
                count,
            }),
        }
    }

    fn push_metrics(&mut self, entry: Entry) {
        if self.metrics >= MAX_QUEUED_METRICS {
            self.merge_oldest_metrics();
        }
        self.push_back(entry);
    }

    /// Folds the oldest queued metrics frame that was never sent into the next such one (sent
    /// ones keep their numbers, see the module docs).
    fn merge_oldest_metrics(&mut self) {
        let mut positions = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_unnumbered_metrics())
            .map(|(i, _)| i);
        let (Some(first), Some(second)) = (positions.next(), positions.next()) else {
            return;
        };
        let Some(oldest) = self.queue.remove(first) else {
            return;
        };
        self.bytes -= oldest.bytes.len();
        self.metrics -= 1;
        // `second` shifted down by one with the removal.
        let Some(next) = self.queue.get_mut(second - 1) else {
            return;
        };
        if let (Kind::Metrics(old), Kind::Metrics(new)) = (&oldest.kind, &mut next.kind) {
            merge_metrics(old, new);
            let bytes = Bytes::from(encode(&AgentFrame::Metrics((**new).clone())));
            self.bytes = self.bytes - next.bytes.len() + bytes.len();
            next.bytes = bytes;
        }
    }

    fn pop(&mut self) -> Option<Entry> {
        // The window is full: wait for acknowledgements (one frame may always be in flight).
        if !self.unacked.is_empty() && self.unacked_bytes >= self.limit {
            return None;
        }
        let mut entry = match self.queue.pop_front() {
            Some(entry) => {
                self.bytes -= entry.bytes.len();
                if matches!(entry.kind, Kind::Metrics(_)) {
                    self.metrics -= 1;
                }
                entry
            }
            // Everything queued is out: drops not reported yet go now, even if their sessions
            // send nothing more. They are newer than anything already sent for the session.
            None if !self.unreported.is_empty() => {
                let mut entry = self.unreported.remove(0).to_entry();
                self.spool(&mut entry);
                entry
            }
            None => return None,
        };
        if entry.number.is_none() {
            entry.number = Some(self.next_number);
            self.next_number += 1;
        }
        self.unacked_bytes += entry.bytes.len();
        self.unacked.push_back(entry.clone());
        Some(entry)
    }

    fn ack(&mut self, upto: u64) {
        let mut spooled = None;
        while let Some(front) = self.unacked.front() {
            if front.number.is_none_or(|n| n > upto) {
                break;
            }
            if let Some(done) = self.unacked.pop_front() {
                self.unacked_bytes -= done.bytes.len();
                spooled = done.spooled.or(spooled);
                if done.unspooled {
                    self.unspooled -= 1;
                }
            }
        }
        // Spooled frames leave the window in the order they were spooled (see the module
        // docs), so the last one acknowledged covers all before it.
        if let (Some(pos), Some(spool)) = (spooled, self.spool.as_mut()) {
            spool.ack(pos);
        }
    }

    fn rewind(&mut self) {
        while let Some(entry) = self.unacked.pop_back() {
            self.unacked_bytes -= entry.bytes.len();
            self.push_front(entry);
        }
    }

    fn push_front(&mut self, entry: Entry) {
        self.bytes += entry.bytes.len();
        if matches!(entry.kind, Kind::Metrics(_)) {
            self.metrics += 1;
        }
        self.queue.push_front(entry);
    }
}

impl Unreported {
    fn to_entry(&self) -> Entry {
        Entry::new(&AgentFrame::Dropped {
            session_id: self.session_id.clone(),
            count: self.count,
            reason: self.reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::tests::record;
    use logfleet_protocol::Level;
    use logfleet_protocol::agent::{Health, LogBatch, SourceCounts, decode};

    fn logs(session: &str, first_seq: u64, n: u64) -> AgentFrame {
        AgentFrame::Logs(LogBatch {
            session_id: session.into(),
            records: (first_seq..first_seq + n)
                .map(|s| record(s, Level::Info, "app", "some message text"))
                .collect(),
        })
    }

    /// Sends everything to a host that acknowledges each frame at once.
    fn drain(outbox: &Outbox) -> Vec<AgentFrame> {
        std::iter::from_fn(|| outbox.try_pop())
            .map(|e| {
                outbox.ack(e.number().unwrap());
                decode::<AgentFrame>(e.bytes()).unwrap()
            })
            .collect()
    }

    /// Sends everything the window lets out, acknowledging nothing: (number, frame).
    fn send_unacked(outbox: &Outbox) -> Vec<(u64, String)> {
        std::iter::from_fn(|| outbox.try_pop())
            .map(|e| {
                let frame = decode::<AgentFrame>(e.bytes()).unwrap();
                (e.number().unwrap(), describe(&[frame]).remove(0))
            })
            .collect()
    }

    /// Describes frames compactly: "L:s1:10" (first seq), "D:s1:5:full", "M:120000".
    fn describe(frames: &[AgentFrame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                AgentFrame::Logs(b) => format!("L:{}:{}", b.session_id, b.records[0].seq),
                AgentFrame::Dropped {
                    session_id,
                    count,
                    reason,
                } => format!(
                    "D:{session_id}:{count}:{}",
                    match reason {
                        DropReason::AgentBufferFull => "full",
                        DropReason::RateLimited => "rate",
                        DropReason::ClientLagging => "lag",
                        DropReason::FilterFailed => "filter",
                    }
                ),
                AgentFrame::Metrics(m) => format!("M:{}", m.interval_ms),
                AgentFrame::FilterError {
                    session_id,
                    dropped,
                    ..
                } => format!("E:{session_id}:{dropped}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// While a link is up, an outbox more than half full holds lines back until
    /// acknowledgements make room; with no link it never does (overflow applies instead).
    #[tokio::test]
    async fn a_connected_outbox_more_than_half_full_holds_lines_back_until_acknowledged() {
        let one = size_of(&logs("s", 1, 10));
        let outbox = Outbox::new(4 * one);
        for first in [1, 11, 21] {
            outbox.push(logs("s", first, 10));
        }
        assert!(outbox.has_room(), "no link: never held back");
        outbox.set_connected(true);
        assert!(!outbox.has_room());
        let sent: Vec<Entry> = std::iter::from_fn(|| outbox.try_pop()).collect();
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "sent is not acknowledged");
        outbox.ack(sent[1].number().unwrap());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("room once acknowledged")
            .unwrap();
        assert!(outbox.has_room());
        // A link going down releases a waiter too.
        outbox.push(logs("s", 31, 10));
        outbox.push(logs("s", 41, 10));
        assert!(!outbox.has_room());
        outbox.set_connected(false);
        tokio::time::timeout(std::time::Duration::from_secs(5), outbox.room())
            .await
            .expect("no link: room");
    }

    /// With a disk buffer, the next process sends again what the host did not acknowledge,
    /// in order, and not what it did.
    #[test]
    fn a_disk_buffer_resends_what_was_not_acknowledged_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::with_spool(1 << 20, dir.path(), None).unwrap();
        outbox.push(logs("s", 1, 3));
        outbox.push(AgentFrame::Dropped {
            session_id: "s".into(),
            count: 2,
            reason: DropReason::RateLimited,
        });
        outbox.push(logs("s", 7, 3));
        let first = outbox.try_pop().unwrap();
        let _sent_not_acked = outbox.try_pop().unwrap();
        outbox.ack(first.number().unwrap());
        drop(outbox);
        let outbox = Outbox::with_spool(1 << 20, dir.path(), None).unwrap();
        assert_eq!(describe(&drain(&outbox)), ["D:s:2:rate", "L:s:7"]);
        drop(outbox);
        let outbox = Outbox::with_spool(1 << 20, dir.path(), None).unwrap();
        assert!(
            outbox.is_empty(),
            "drained and acknowledged: nothing comes back"
        );
    }

    /// A buffer left bigger than the bound (the bound was lowered) loses its oldest frames
    /// first, and counts their lines as `agent_buffer_full`.
    #[test]
    fn a_restored_buffer_over_the_bound_counts_what_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::with_spool(1 << 20, dir.path(), None).unwrap();
        for first in [1, 11, 21] {
            outbox.push(logs("s", first, 10));
        }
        let one = size_of(&logs("s", 1, 10));
        drop(outbox);
        let outbox = Outbox::with_spool(2 * one + one / 2, dir.path(), None).unwrap();
        assert_eq!(
            describe(&drain(&outbox)),
            ["D:s:10:full", "L:s:11", "L:s:21"]
        );
    }

    fn size_of(frame: &AgentFrame) -> usize {
        encode(frame).len()
    }

    #[test]
    fn overflow_drops_newest_and_reports_before_next_batch() {
        let one = size_of(&logs("s1", 1, 10));
        // Room for two batches and a drop report.
        let outbox = Outbox::new(one * 2 + 40);
        outbox.push(logs("s1", 1, 10));
        outbox.push(logs("s1", 11, 10));
        outbox.push(logs("s1", 21, 10)); // does not fit: dropped
        outbox.push(logs("s2", 1, 5)); // other session, does not fit either
        outbox.push(logs("s1", 31, 10)); // still no room
        assert_eq!(outbox.buffered_bytes(), one * 2);
        // Connection back: the uplink sends the first batch and the host acknowledges it,
        // making room.
        let sent = outbox.try_pop().unwrap();
        assert_eq!(describe(&[decode(sent.bytes()).unwrap()]), ["L:s1:1"]);
        assert_eq!(outbox.buffered_bytes(), one * 2, "sent is not delivered");
        outbox.ack(sent.number().unwrap());
        assert_eq!(outbox.buffered_bytes(), one);
        outbox.push(logs("s1", 41, 10));
        assert_eq!(
            describe(&drain(&outbox)),
            ["L:s1:11", "D:s1:20:full", "L:s1:41", "D:s2:5:full"]
        );
        assert!(outbox.is_empty());
    }

    /// A session's end (`FilterError`) is queued even when full, after the session's
    /// unreported drops, so the host learns of every lost line while the session still exists.
    #[test]
    fn a_session_end_carries_its_unreported_drops_before_it() {
        let one = size_of(&logs("s1", 1, 10));
        let outbox = Outbox::new(one);
        outbox.push(logs("s1", 1, 10));
        outbox.push(logs("s1", 11, 10)); // does not fit: dropped
        outbox.push(logs("s2", 1, 5)); // nor this
        outbox.push(AgentFrame::FilterError {
            session_id: "s1".into(),
            plugin: "redact".into(),
            message: "trapped".into(),
            dropped: 3,
        });
        assert_eq!(
            describe(&drain(&outbox)),
            ["L:s1:1", "D:s1:10:full", "E:s1:3", "D:s2:5:full"]
        );
    }

    #[test]
    fn rate_limit_drops_queue_in_order_and_merge_on_overflow() {
        let outbox = Outbox::new(1 << 20);
        outbox.push(logs("s1", 1, 2));
        outbox.push(AgentFrame::Dropped {
            session_id: "s1".into(),
            count: 3,
            reason: DropReason::RateLimited,
        });
        outbox.push(logs("s1", 6, 2));
        assert_eq!(
            describe(&drain(&outbox)),
            ["L:s1:1", "D:s1:3:rate", "L:s1:6"]
        );

        let tiny = Outbox::new(0);
        for _ in 0..3 {
            tiny.push(AgentFrame::Dropped {
                session_id: "s1".into(),
                count: 2,
                reason: DropReason::RateLimited,
            });
        }
        tiny.push(logs("s1", 1, 4));
        assert_eq!(describe(&drain(&tiny)), ["D:s1:6:rate", "D:s1:4:full"]);
    }

    fn metrics(interval_ms: u32, lines: u64) -> AgentFrame {
        AgentFrame::Metrics(Metrics {
            timestamp_ms: i64::from(interval_ms),
            interval_ms,
            sources: vec![SourceCounts {
                name: "app".into(),
                levels: [0, 0, lines, 0, 0, 0],
                bytes: lines * 10,
            }],
            health: Health::default(),
        })
    }

    #[test]
    fn metrics_are_capped_by_merging_the_oldest() {
        let outbox = Outbox::new(0);
        for _ in 0..MAX_QUEUED_METRICS + 2 {
            outbox.push(metrics(1000, 1));
        }
        let frames = drain(&outbox);
        assert_eq!(frames.len(), MAX_QUEUED_METRICS);
        let AgentFrame::Metrics(first) = &frames[0] else {
            panic!("expected metrics");
        };
        assert_eq!(first.interval_ms, 3000);
        assert_eq!(first.sources[0].levels[2], 3);
        let total: u64 = frames
            .iter()
            .map(|f| match f {
                AgentFrame::Metrics(m) => m.sources[0].levels[2],
                _ => 0,
            })
            .sum();
        assert_eq!(total, MAX_QUEUED_METRICS as u64 + 2, "no counts lost");
    }

    /// Frames the host did not acknowledge go again after a reconnect, first, in their order
    /// and under their numbers, followed by what was never sent; the link starts at the oldest.
    #[test]
    fn unacknowledged_frames_are_resent_first_in_order_under_their_numbers() {
        let outbox = Outbox::new(1 << 20);
        for first in [1, 2, 3] {
            outbox.push(logs("s1", first, 1));
        }
        assert_eq!(
            outbox.rewind(),
            FIRST_FRAME,
            "a fresh outbox starts at the first number"
        );
        assert_eq!(
            send_unacked(&outbox),
            [
                (1, "L:s1:1".into()),
                (2, "L:s1:2".into()),
                (3, "L:s1:3".into())
            ]
        );
        outbox.ack(1);
        outbox.push(logs("s1", 4, 1));
        // The link died with 2 and 3 unacknowledged.
        assert_eq!(outbox.rewind(), 2);
        assert_eq!(outbox.rewind(), 2, "rewinding twice changes nothing");
        assert_eq!(
            send_unacked(&outbox),
            [
                (2, "L:s1:2".into()),
                (3, "L:s1:3".into()),
                (4, "L:s1:4".into())
            ]
        );
        // Dies again. An ack covering frames the next link has not carried yet leaves them
        // queued: the link must carry every number from where it starts.
        assert_eq!(outbox.rewind(), 2);
        outbox.ack(3);
        assert_eq!(send_unacked(&outbox).len(), 3);
        outbox.ack(4);
        assert!(outbox.is_empty());
        assert_eq!(outbox.buffered_bytes(), 0);
        assert_eq!(outbox.rewind(), 5, "numbers are never reused");
    }

    /// Acknowledgements are cumulative: one for a later frame covers the earlier ones; what
    /// is acknowledged no longer counts against the bound; stale or repeated ones do nothing.
    #[test]
    fn acks_are_cumulative_and_free_the_bound() {
        let one = size_of(&logs("s1", 1, 10));
        let outbox = Outbox::new(one * 3);
        for first in [1, 11, 21] {
            outbox.push(logs("s1", first, 10));
        }
        assert_eq!(send_unacked(&outbox).len(), 3);
        assert_eq!(outbox.unacknowledged(), 3);
        assert_eq!(outbox.buffered_bytes(), one * 3);
        outbox.ack(2);
        assert_eq!(outbox.unacknowledged(), 1);
        assert_eq!(outbox.buffered_bytes(), one);
        outbox.ack(1);
        outbox.ack(0);
        assert_eq!(outbox.unacknowledged(), 1, "stale acks change nothing");
        outbox.ack(u64::MAX);
        assert!(outbox.is_empty());
    }

    /// A host that never acknowledges is an unreachable host: sent frames fill the window up
    /// to the bound, the uplink stops taking frames, and every batch beyond the bound is
    /// dropped and counted exactly, reported once the host acknowledges again.
    #[test]
    fn a_host_that_never_acknowledges_fills_the_bound_and_overflow_is_counted_exactly() {
        let one = size_of(&logs("s1", 1, 10));
        let outbox = Outbox::new(one * 2);
        outbox.push(logs("s1", 1, 10));
        outbox.push(logs("s1", 11, 10));
        assert_eq!(send_unacked(&outbox).len(), 2);
        for first in (21..=91).step_by(10) {
            outbox.push(logs("s1", first, 10)); // 8 batches of 10 lines: no room
        }
        outbox.push(logs("s2", 1, 7));
        outbox.push(metrics(1000, 1));
        assert!(
            outbox.try_pop().is_none(),
            "the window is full: nothing more is sent"
        );
        assert_eq!(
            outbox.buffered_bytes() - one * 2,
            size_of(&metrics(1000, 1))
        );
        // The host catches up.
        outbox.ack(2);
        assert_eq!(
            describe(&drain(&outbox)),
            ["M:1000", "D:s1:80:full", "D:s2:7:full"]
        );
    }

    /// However small the bound, one frame is always let out; the next waits for its ack.
    #[test]
    fn one_frame_is_always_in_flight() {
        let outbox = Outbox::new(0);
        outbox.push(metrics(1000, 1));
        outbox.push(metrics(2000, 1));
        let first = outbox.try_pop().unwrap();
        assert!(outbox.try_pop().is_none());
        outbox.ack(first.number().unwrap());
        assert_eq!(outbox.try_pop().unwrap().number(), Some(2));
    }

    /// Metrics sent once keep their numbers when rewound: the cap merges only the others.
    #[test]
    fn rewound_metrics_are_not_merged() {
        let outbox = Outbox::new(1 << 20);
        outbox.push(metrics(1000, 1));
        outbox.push(metrics(1000, 1));
        assert_eq!(send_unacked(&outbox).len(), 2);
        outbox.rewind();
        for _ in 0..MAX_QUEUED_METRICS {
            outbox.push(metrics(1000, 1));
        }
        let sent: Vec<(u64, String)> = std::iter::from_fn(|| outbox.try_pop())
            .map(|e| {
                outbox.ack(e.number().unwrap());
                let frame = decode::<AgentFrame>(e.bytes()).unwrap();
                (e.number().unwrap(), describe(&[frame]).remove(0))
            })
            .collect();
        // 62 frames met the cap of 60: the oldest unsent ones were merged twice, never the
        // two sent before.
        assert_eq!(
            sent[..3],
            [
                (1, "M:1000".into()),
                (2, "M:1000".into()),
                (3, "M:3000".into())
            ]
        );
        assert_eq!(sent.len(), MAX_QUEUED_METRICS);
    }

    #[tokio::test]
    async fn next_waits_for_a_push() {
        let outbox = Outbox::new(1 << 20);
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.next().await })
        };
        tokio::task::yield_now().await;
        outbox.push(logs("s1", 7, 1));
        let entry = waiter.await.unwrap();
        assert_eq!(describe(&[decode(entry.bytes()).unwrap()]), ["L:s1:7"]);
    }

    /// The uplink waiting on a full window is woken by the acknowledgement that empties it.
    #[tokio::test]
    async fn next_waits_for_an_ack_when_the_window_is_full() {
        let outbox = Outbox::new(0);
        outbox.push(logs("s1", 1, 1));
        outbox.push(metrics(1000, 1));
        let first = outbox.next().await;
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.next().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        outbox.ack(first.number().unwrap());
        assert_eq!(waiter.await.unwrap().number(), Some(2));
    }
}
