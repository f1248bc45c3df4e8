//! Exactly once for resent agent frames: how far the host has handled each agent's outbox.
//!
//! An agent numbers the frames it sends (protocol 3: `Hello::outbox` names the numbering,
//! `Hello::next_frame` says where a link starts, and each later frame on the link is the next
//! number) and keeps each until the host acknowledges it; after a reconnect it sends the
//! unacknowledged ones again, in order. The host may have handled some of those already —
//! their acknowledgement died with the old link. [`Delivered`] remembers, per agent, the
//! outbox of its newest link and the highest frame number handled, and [`Delivered::claim`]
//! lets a frame through only if it is above that mark. Frames arrive in number order on each
//! link and a resend starts at or below the mark, so one number per agent is all the memory
//! exactly-once takes, whatever the sessions or frame kinds (`Logs`, `Dropped`,
//! `FilterError`, metrics).
//!
//! A claim and the work it guards run with no await in between, so when an old link (not yet
//! noticed dead) and its successor both carry a frame, whichever claims it applies it and the
//! other skips it; both acknowledge it. A frame of another outbox than the newest link's
//! comes from a replaced agent process (a restart): nothing resends those, so they are
//! applied without a claim and the mark is left alone.
//!
//! A restarted agent with a disk buffer (`--buffer-dir`) sends again, under its new outbox,
//! log frames its old process may already have delivered (their acknowledgement was not on
//! its disk yet). Frame numbers cannot tell those apart, but `seq` can: it only grows, per
//! agent, in the order lines are sent, also across restarts. [`Delivered::fresh_logs`] keeps
//! per session the highest `seq` published and lets through only what is above it.
//!
//! A clustered host can keep the same promise: (agent, outbox, number) names a frame across
//! hosts (a JetStream message id for its de-duplication window), and the acknowledgement can
//! wait until the frame is durable without the agent noticing.

use std::collections::HashMap;
use std::sync::Mutex;

use logfleet_protocol::agent::Record;

/// Sessions per agent whose highest published `seq` is remembered (the host runs at most 32
/// per agent); beyond it the one updated least recently (an ended session) is forgotten.
pub const MAX_SEQ_MARKS: usize = 64;

/// How far one agent's outbox has been handled. Shared by all links of the agent.
#[derive(Debug, Default)]
pub struct Delivered {
    mark: Mutex<Mark>,
    seqs: Mutex<SeqMarks>,
}

/// Per session, the highest `seq` published, and when it was last updated (a counter).
#[derive(Debug, Default)]
struct SeqMarks {
    by_session: HashMap<String, (u64, u64)>,
    tick: u64,
}

/// The newest link's outbox and the highest of its frame numbers handled (`None`: none yet).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Mark {
    outbox: u64,
    upto: Option<u64>,
}

impl Delivered {
    fn mark(&self) -> std::sync::MutexGuard<'_, Mark> {
        // Two integers: consistent whatever a panicking holder did.
        self.mark.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A link of `outbox` said hello. Another outbox than the last is a new agent process
    /// whose numbering starts afresh.
    pub fn resume(&self, outbox: u64) {
        let mut mark = self.mark();
        if mark.outbox != outbox {
            *mark = Mark { outbox, upto: None };
        }
    }

    /// Whether frame `number` of `outbox` is new, to be applied now; it then counts as
    /// handled. `false`: handled already (a resend), to be skipped and acknowledged.
    pub fn claim(&self, outbox: u64, number: u64) -> bool {
        let mut mark = self.mark();
        if mark.outbox != outbox {
            return true;
        }
        if mark.upto.is_some_and(|upto| number <= upto) {
            return false;
        }
        mark.upto = Some(number);
        true
    }

    /// Removes from `records` (one log batch of session `session_id`, in seq order) the
    /// lines this agent already delivered to the session, and remembers the highest left;
    /// returns how many it removed.
    pub fn fresh_logs(&self, session_id: &str, records: &mut Vec<Record>) -> usize {
        let Some(last) = records.last().map(|r| r.seq) else {
            return 0;
        };
        let before = records.len();
        let mut marks = self.seqs.lock().unwrap_or_else(|e| e.into_inner());
        marks.tick += 1;
        let tick = marks.tick;
        match marks.by_session.get_mut(session_id) {
            Some((high, used)) => {
                let high_before = *high;
                records.retain(|r| r.seq > high_before);
                *high = high_before.max(last);
                *used = tick;
            }
            None => {
                if marks.by_session.len() >= MAX_SEQ_MARKS
                    && let Some(oldest) = marks
                        .by_session
                        .iter()
                        .min_by_key(|(_, (_, used))| *used)
                        .map(|(id, _)| id.clone())
                {
                    marks.by_session.remove(&oldest);
                }
                marks.by_session.insert(session_id.to_owned(), (last, tick));
            }
        }
        before - records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resend after a reconnect is applied from where the host was, not from where the
    /// agent resumed: nothing twice, nothing skipped.
    #[test]
    fn resent_frames_are_applied_once() {
        let d = Delivered::default();
        d.resume(7);
        let first_link: Vec<bool> = (1..=5).map(|n| d.claim(7, n)).collect();
        assert_eq!(first_link, [true; 5]);
        // The acknowledgement of 4 and 5 died with the link; the agent resumes at 4.
        d.resume(7);
        let second_link: Vec<bool> = (4..=7).map(|n| d.claim(7, n)).collect();
        assert_eq!(second_link, [false, false, true, true]);
    }

    /// An old link and its successor carrying the same frames: each is applied by whichever
    /// claims it first.
    #[test]
    fn two_links_of_one_outbox_share_the_mark() {
        let d = Delivered::default();
        d.resume(7);
        assert!(d.claim(7, 1));
        d.resume(7);
        assert!(!d.claim(7, 1));
        assert!(d.claim(7, 2));
        assert!(!d.claim(7, 2), "the old link's copy");
    }

    fn record(seq: u64) -> Record {
        Record {
            seq,
            timestamp_ms: 0,
            level: logfleet_protocol::Level::Info,
            source: "app".into(),
            file: "app.log".into(),
            line: seq,
            message: String::new(),
            event_ms: None,
            fields: None,
            raw: None,
        }
    }

    /// Lines a restarted agent sends again are published once: whatever the batches'
    /// boundaries, only seqs above the session's highest pass, per session.
    #[test]
    fn log_lines_already_published_are_dropped_by_seq() {
        let d = Delivered::default();
        let batch =
            |seqs: std::ops::RangeInclusive<u64>| -> Vec<Record> { seqs.map(record).collect() };
        let seqs = |r: &[Record]| r.iter().map(|r| r.seq).collect::<Vec<_>>();
        let mut first = batch(1..=5);
        d.fresh_logs("a", &mut first);
        assert_eq!(seqs(&first), [1, 2, 3, 4, 5]);
        // The restarted agent's buffer starts at 4 and overlaps; another session is apart.
        let mut again = batch(4..=8);
        d.fresh_logs("a", &mut again);
        assert_eq!(seqs(&again), [6, 7, 8]);
        let mut other = batch(2..=3);
        d.fresh_logs("b", &mut other);
        assert_eq!(seqs(&other), [2, 3]);
        let mut stale = batch(1..=8);
        d.fresh_logs("a", &mut stale);
        assert!(stale.is_empty());
    }

    /// The memory is bounded: marks of sessions not heard from for longest are forgotten.
    #[test]
    fn seq_marks_are_bounded() {
        let d = Delivered::default();
        for i in 0..(MAX_SEQ_MARKS as u64 * 2) {
            let mut one = vec![record(i + 1)];
            d.fresh_logs(&format!("s{i}"), &mut one);
        }
        assert_eq!(d.seqs.lock().unwrap().by_session.len(), MAX_SEQ_MARKS);
    }

    /// A restarted agent numbers from the start again under a new outbox: all of it is new,
    /// frames still in flight from the old process are applied, and a frame numbered 0 is
    /// not mistaken for a resend.
    #[test]
    fn a_new_outbox_starts_afresh() {
        let d = Delivered::default();
        d.resume(7);
        assert!((1..=100).all(|n| d.claim(7, n)));
        d.resume(8);
        assert!(d.claim(8, 0));
        assert!(d.claim(8, 1));
        assert!(
            d.claim(7, 101),
            "from the replaced process: applied, unchecked"
        );
        assert!(d.claim(7, 50));
        assert!(!d.claim(8, 1), "the mark of the newest outbox is untouched");
    }
}
