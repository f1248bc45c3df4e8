//! Fan-out of one session's messages to any number of WebSocket clients.
//!
//! Each message is serialised once and shared by every client. Messages travel in [`Burst`]s —
//! one per agent batch — through the session's [`live`] queue, so a burst of lines costs one
//! entry, and a client writes it with one flush. A slow client never slows the agent or the other
//! clients: when it falls behind what the queue holds it loses the oldest bursts and is told
//! exactly how many lines (`logs_dropped`, `client_lagging`), counted with the per-session log
//! ordinal every burst carries. Log messages are also kept in a replay buffer, bounded in
//! messages and in bytes, so a client can resume with `?since_seq=N`; what it evicted is
//! reported to a resuming client as `logs_dropped`. A session serves at most `max_clients`
//! clients at once.
//!
//! A session's *opening* — its backfill and `backfill_done`, which the agent sends right after
//! the start, usually before any client has connected — is kept until the first client
//! subscribes and given to it first, so the backfill a start request asked for is not lost to
//! the moment between the start's answer and the client's connection. It holds at most
//! [`MAX_OPENING_MESSAGES`] (the largest backfill and its controls), and nothing once the
//! first client has it; later clients resume from the replay buffer as usual.
//!
//! Both buffers also count against host-wide [`ByteBudget`]s (one for replay, one for live
//! queues), so the fan-out of the whole host holds at most twice each budget plus one burst and
//! one message per session, however many sessions and agents there are, plus each session's
//! opening until its first client takes it (at most [`MAX_OPENING_BYTES`] each, and its text
//! shared with the replay buffer while both hold it; what the opening cannot keep is reported
//! to the first client as `logs_dropped`).

mod budget;
mod live;

pub use budget::{ByteBudget, Share};
pub use live::{LiveBounds, LiveQueue, LiveReceiver, Next};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use logfleet_protocol::client::{ClientMessage, Control, DropReason, EndReason};

use crate::config::Tuning;

/// Seqs of messages evicted from the replay buffer that are remembered, so a resuming client
/// is told exactly how many it lost (8 bytes each).
pub const EVICTED_SEQ_MEMORY: usize = 16 * 1024;

/// Most bytes of log messages a session's opening keeps (the default replay buffer of a
/// session): records beyond it are reported to the first client as `logs_dropped`.
pub const MAX_OPENING_BYTES: usize = 16 * 1024 * 1024;

/// What the first client is told of opening records not kept for it.
fn cut_report(count: u64) -> Control {
    Control::LogsDropped {
        count,
        reason: DropReason::ClientLagging,
        agent_id: None,
    }
}

/// Most messages a session's opening keeps for its first client: a backfill's records, its
/// drop reports and `backfill_done`, with room to spare. An opening that never ends (an agent
/// that lost its backfill in a crash) stops growing here.
pub const MAX_OPENING_MESSAGES: usize = logfleet_protocol::rest::MAX_BACKFILL_LINES as usize + 64;

/// One message ready for clients: serialised once, cheap to clone.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The `seq` of log messages: the agent's, or in a fleet session the session's
    /// ([`Hub::publish_numbered`]).
    pub seq: Option<u64>,
    /// This is `session_ended`: the client closes after sending it.
    pub ends: bool,
    pub text: Utf8Bytes,
}

impl Outgoing {
    pub fn control(control: Control) -> Self {
        let ends = matches!(control, Control::SessionEnded { .. });
        Self {
            seq: None,
            ends,
            text: to_text(&ClientMessage::Control(control)),
        }
    }
}

/// What the channel carries: the messages of one agent batch (or one control message), with the
/// number of log messages the session published before them.
#[derive(Debug, Clone)]
pub struct Burst {
    pub logs_before: u64,
    /// Log messages among `messages`, counted once here rather than by every client.
    pub logs: u64,
    /// Bytes of the messages' texts, what the burst holds in a live queue.
    pub bytes: usize,
    pub messages: Arc<[Outgoing]>,
}

/// Serialises a client message. Plain data always serialises.
pub fn to_text(msg: &ClientMessage) -> Utf8Bytes {
    serde_json::to_string(msg)
        .unwrap_or_else(|e| unreachable!("client message serialises: {e}"))
        .into()
}

/// A hub's bounds (from the host's [`Tuning`]).
#[derive(Debug, Clone, Copy)]
pub struct HubBounds {
    /// Bursts the live queue holds for a lagging client...
    pub client_queue: usize,
    /// ...and bytes of them.
    pub client_queue_bytes: usize,
    /// Log messages the replay buffer keeps.
    pub replay_messages: usize,
    /// Bytes of log messages (their JSON text) the replay buffer keeps.
    pub replay_bytes: usize,
    /// Clients connected at once.
    pub max_clients: usize,
}

impl From<&Tuning> for HubBounds {
    fn from(t: &Tuning) -> Self {
        Self {
            client_queue: t.client_queue,
            client_queue_bytes: t.client_queue_bytes,
            replay_messages: t.replay_messages,
            replay_bytes: t.replay_bytes,
            max_clients: t.max_clients_per_session,
        }
    }
}

/// Why a client could not subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The session has ended.
    Ended,
    /// The session already serves [`HubBounds::max_clients`] clients.
    Full,
}

/// The fan-out point of one session.
pub struct Hub {
    state: Mutex<HubState>,
    clients: Arc<AtomicUsize>,
    max_clients: usize,
}

/// The budgets a hub's buffers count against.
#[derive(Debug, Clone)]
pub struct HostBudgets {
    pub replay: ByteBudget,
    pub live: ByteBudget,
}

impl HostBudgets {
    pub fn unlimited() -> HostBudgets {
        HostBudgets {
            replay: ByteBudget::unlimited(),
            live: ByteBudget::unlimited(),
        }
    }
}

struct HubState {
    /// `None` once the session ended: receivers then drain and see the end.
    live: Option<LiveQueue>,
    /// Log messages published so far: the ordinal clients count losses with, and in a fleet
    /// session the `seq` of the last one ([`Hub::publish_numbered`]).
    logs_published: u64,
    replay: VecDeque<Outgoing>,
    replay_capacity: usize,
    /// Bytes of the texts in `replay` (kept at most `replay_byte_capacity`), against the
    /// host-wide replay budget.
    replay_bytes: Share,
    replay_byte_capacity: usize,
    /// Seqs of the most recently evicted log messages, oldest first.
    evicted: VecDeque<u64>,
    /// Evicted messages older than `evicted` remembers.
    evicted_forgotten: u64,
    /// Set once `session_ending` was sent, so later subscribers get it too.
    ending_at: Option<Instant>,
    /// The session's opening (see the module docs), until the first client takes it.
    opening: Option<Vec<Outgoing>>,
    /// Bytes of log messages in `opening`.
    opening_bytes: usize,
    /// Log messages of the opening not kept for being over [`MAX_OPENING_BYTES`], not yet
    /// reported in it.
    opening_cut: u64,
}

/// What a new client starts with: missed messages to send first, then the live receiver.
pub struct Subscription {
    pub backlog: Vec<Outgoing>,
    pub live: LiveReceiver,
    /// The log ordinal the next live burst should start at; a later one means lines were lost.
    pub next_log: u64,
    /// Counts this client as connected while it lives.
    pub guard: ClientGuard,
}

/// Decrements the session's client count when a client goes away.
pub struct ClientGuard(Arc<AtomicUsize>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    /// A hub with no host-wide bound beyond `bounds`.
    pub fn new(bounds: HubBounds) -> Self {
        Self::with_budgets(bounds, &HostBudgets::unlimited())
    }

    /// A hub whose buffers also count against the host-wide `budgets`.
    pub fn with_budgets(bounds: HubBounds, budgets: &HostBudgets) -> Self {
        let live = LiveQueue::new(
            LiveBounds {
                bursts: bounds.client_queue,
                bytes: bounds.client_queue_bytes,
            },
            &budgets.live,
        );
        Self {
            max_clients: bounds.max_clients,
            state: Mutex::new(HubState {
                live: Some(live),
                logs_published: 0,
                replay: VecDeque::new(),
                replay_capacity: bounds.replay_messages,
                replay_bytes: budgets.replay.join(),
                replay_byte_capacity: bounds.replay_bytes,
                evicted: VecDeque::new(),
                evicted_forgotten: 0,
                ending_at: None,
                opening: Some(Vec::new()),
                opening_bytes: 0,
                opening_cut: 0,
            }),
            clients: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Messages and bytes the replay buffer holds now.
    pub fn replay_usage(&self) -> (usize, usize) {
        let st = self.lock();
        (st.replay.len(), st.replay_bytes.held())
    }

    /// Gives up what the host budgets' fair shares no longer allow: a quiet session that
    /// filled its buffers when fewer sessions shared the budgets only shrinks when asked.
    pub fn trim(&self) {
        let mut st = self.lock();
        st.shrink_replay();
        if let Some(live) = &st.live {
            live.trim();
        }
    }

    /// Bursts and bytes the live queue holds now (nothing once the session ended).
    pub fn live_usage(&self) -> (usize, usize) {
        self.lock().live.as_ref().map_or((0, 0), LiveQueue::usage)
    }

    /// Publishes log messages (in seq order, one agent batch) to clients and the replay buffer.
    pub fn publish_logs(&self, messages: Vec<Outgoing>) {
        let mut st = self.lock();
        if st.live.is_none() {
            return;
        }
        for msg in &messages {
            st.remember(msg.clone());
        }
        st.send(messages);
    }

    /// Publishes part of the session's opening (its backfill): as [`Hub::publish_logs`], and
    /// kept for the first client if none has connected yet.
    pub fn publish_opening_logs(&self, messages: Vec<Outgoing>) {
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            if let Some(opening) = &mut st.opening {
                for msg in &messages {
                    let fits = opening.len() < MAX_OPENING_MESSAGES
                        && st.opening_bytes + msg.text.len() <= MAX_OPENING_BYTES;
                    // Once one is cut, the rest are too: the first client sees one gap.
                    if fits && st.opening_cut == 0 {
                        st.opening_bytes += msg.text.len();
                        opening.push(msg.clone());
                    } else {
                        st.opening_cut += 1;
                    }
                }
            }
        }
        // Not under the lock above: publishing takes it again.
        self.publish_logs(messages);
    }

    /// Publishes a control event of the session's opening (`backfill_done`, drops among the
    /// backfill), kept for the first client like [`Hub::publish_opening_logs`], after a
    /// `logs_dropped` for records the opening could not keep.
    pub fn publish_opening(&self, control: Control) {
        let msg = Outgoing::control(control);
        let mut st = self.lock();
        let st = &mut *st;
        if let Some(opening) = &mut st.opening {
            if st.opening_cut > 0 {
                opening.push(Outgoing::control(cut_report(st.opening_cut)));
                st.opening_cut = 0;
            }
            opening.push(msg.clone());
        }
        st.send(vec![msg]);
    }

    /// Publishes one agent batch of a fleet session, numbered by the session: `build` gets the
    /// `seq` of the first message (one more than the last published; 1 for the first) and
    /// returns the messages, each with the next `seq`. Numbering and publishing happen under
    /// one lock, so `seq` ascends in the order clients and the replay buffer get them,
    /// whichever agent's link publishes first; the texts are built there too (a batch is at
    /// most 512 records).
    pub fn publish_numbered(&self, build: impl FnOnce(u64) -> Vec<Outgoing>) {
        let mut st = self.lock();
        if st.live.is_none() {
            return;
        }
        let messages = build(st.logs_published + 1);
        for msg in &messages {
            st.remember(msg.clone());
        }
        st.send(messages);
    }

    /// Publishes a control event to every connected client.
    pub fn publish(&self, control: Control) {
        self.lock().send(vec![Outgoing::control(control)]);
    }

    /// Sends `session_ending` and remembers it for clients that connect later.
    pub fn warn_ending(&self, expires: Instant) {
        let mut st = self.lock();
        st.ending_at = Some(expires);
        st.send(vec![ending_message(expires)]);
    }

    /// Sends `session_ended` and closes the live queue: clients drain, then close.
    pub fn end(&self, reason: EndReason) {
        let mut st = self.lock();
        st.send(vec![Outgoing::control(Control::SessionEnded { reason })]);
        if let Some(live) = st.live.take() {
            live.close();
        }
    }

    /// Subscribes a client. With `since_seq`, log messages after it that are still in the
    /// replay buffer come first, and a `logs_dropped` if some are no longer there. Subscribing
    /// and reading the buffer happen under one lock, so nothing is missed or sent twice, and
    /// the client count is checked and taken under it, so the cap is exact.
    pub fn subscribe(&self, since_seq: Option<u64>) -> Result<Subscription, SubscribeError> {
        let mut st = self.lock();
        let live = st.live.as_ref().ok_or(SubscribeError::Ended)?.subscribe();
        if self.clients.load(Ordering::Relaxed) >= self.max_clients {
            return Err(SubscribeError::Full);
        }
        let mut backlog = Vec::new();
        // The first client gets the opening; one resuming has its logs from the replay.
        if let Some(opening) = st.opening.take()
            && since_seq.is_none()
        {
            backlog = opening;
            if st.opening_cut > 0 {
                backlog.push(Outgoing::control(cut_report(st.opening_cut)));
            }
        }
        if let Some(ending_at) = st.ending_at {
            backlog.push(ending_message(ending_at));
        }
        if let Some(since) = since_seq {
            let lost = st.lost_after(since);
            if lost > 0 {
                backlog.push(Outgoing::control(Control::LogsDropped {
                    count: lost,
                    reason: DropReason::ClientLagging,
                    agent_id: None,
                }));
            }
            let start = st.replay.partition_point(|m| m.seq.unwrap_or(0) <= since);
            backlog.extend(st.replay.range(start..).cloned());
        }
        self.clients.fetch_add(1, Ordering::Relaxed);
        Ok(Subscription {
            backlog,
            live,
            next_log: st.logs_published,
            guard: ClientGuard(self.clients.clone()),
        })
    }
}

impl HubState {
    fn send(&mut self, messages: Vec<Outgoing>) {
        let Some(live) = &self.live else { return };
        let logs = messages.iter().filter(|m| m.seq.is_some()).count() as u64;
        let bytes = messages.iter().map(|m| m.text.len()).sum();
        let burst = Burst {
            logs_before: self.logs_published,
            logs,
            bytes,
            messages: messages.into(),
        };
        self.logs_published += logs;
        live.push(burst);
    }

    /// Keeps a log message for resume, evicting the oldest ones while either bound is
    /// exceeded. A message larger than the whole byte bound is not kept (and counted as
    /// evicted) rather than emptying the buffer for nothing.
    fn remember(&mut self, msg: Outgoing) {
        if self.replay_capacity == 0 {
            return;
        }
        if msg.text.len() > self.replay_byte_capacity {
            self.forget(msg.seq.unwrap_or(0));
            return;
        }
        self.replay_bytes.add(msg.text.len());
        self.replay.push_back(msg);
        self.shrink_replay();
    }

    /// Evicts the oldest log messages while a bound or the host budget's fair share is
    /// exceeded.
    fn shrink_replay(&mut self) {
        while self.replay.len() > self.replay_capacity
            || self.replay_bytes.held() > self.replay_byte_capacity
            || self.replay_bytes.must_shrink()
        {
            let Some(old) = self.replay.pop_front() else {
                break;
            };
            self.replay_bytes.release(old.text.len());
            self.forget(old.seq.unwrap_or(0));
        }
    }

    /// Remembers that the message with `seq` is no longer in the replay buffer.
    fn forget(&mut self, seq: u64) {
        if self.evicted.len() == EVICTED_SEQ_MEMORY {
            self.evicted.pop_front();
            self.evicted_forgotten += 1;
        }
        self.evicted.push_back(seq);
    }

    /// Log messages after `since` that the replay buffer no longer holds. Exact while the
    /// client is within [`EVICTED_SEQ_MEMORY`] evictions; beyond that every forgotten one is
    /// counted as lost.
    fn lost_after(&self, since: u64) -> u64 {
        let remembered = self.evicted.len() - self.evicted.partition_point(|&s| s <= since);
        let forgotten = if self.evicted.front().is_some_and(|&s| s > since) {
            self.evicted_forgotten
        } else {
            0
        };
        remembered as u64 + forgotten
    }
}

fn ending_message(expires: Instant) -> Outgoing {
    let remaining = expires.saturating_duration_since(Instant::now());
    // Round up: "ends in 30 s" should not show as 29 because a millisecond passed.
    let seconds_remaining = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
    Outgoing::control(Control::SessionEnding {
        reason: EndReason::Timeout,
        seconds_remaining,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(client_queue: usize, replay_messages: usize) -> Hub {
        Hub::new(HubBounds {
            client_queue,
            client_queue_bytes: usize::MAX,
            replay_messages,
            replay_bytes: usize::MAX,
            max_clients: usize::MAX,
        })
    }

    fn log(seq: u64) -> Outgoing {
        Outgoing {
            seq: Some(seq),
            ends: false,
            text: format!("{seq}").into(),
        }
    }

    fn seqs(sub: &Subscription) -> Vec<Option<u64>> {
        sub.backlog.iter().map(|m| m.seq).collect()
    }

    /// The backfill the agent sent before anyone connected reaches the session's first
    /// client, with its `backfill_done`, and only it: later clients start live as before.
    #[test]
    fn the_opening_waits_for_the_first_client() {
        let hub = hub(16, 100);
        hub.publish_opening_logs(vec![log(1), log(2)]);
        hub.publish_opening(Control::BackfillDone {
            count: 2,
            truncated: false,
        });
        hub.publish_logs(vec![log(3)]);
        let first = hub.subscribe(None).unwrap();
        assert_eq!(seqs(&first), vec![Some(1), Some(2), None]);
        assert!(first.backlog[2].text.contains("backfill_done"));
        let second = hub.subscribe(None).unwrap();
        assert!(second.backlog.is_empty());
    }

    /// An opening bigger than its byte bound keeps its oldest records whole and tells the
    /// first client how many it could not keep, right before `backfill_done`.
    #[test]
    fn an_opening_over_its_byte_bound_reports_what_it_cut() {
        let hub = hub(16, 100);
        let big = |seq: u64| Outgoing {
            seq: Some(seq),
            ends: false,
            text: format!("{seq}{}", "x".repeat(MAX_OPENING_BYTES / 3 - 8)).into(),
        };
        hub.publish_opening_logs((1..=5).map(big).collect());
        hub.publish_opening(Control::BackfillDone {
            count: 5,
            truncated: false,
        });
        let first = hub.subscribe(None).unwrap();
        assert_eq!(seqs(&first), vec![Some(1), Some(2), Some(3), None, None]);
        assert!(
            first.backlog[3].text.contains(r#""count":2"#),
            "{:?}",
            first.backlog[3].text
        );
        assert!(first.backlog[4].text.contains("backfill_done"));
    }

    #[test]
    fn resume_replays_after_since_without_duplicates() {
        let hub = hub(16, 100);
        hub.publish_logs(vec![log(10), log(12), log(13)]);
        let sub = hub.subscribe(Some(12)).unwrap();
        assert_eq!(seqs(&sub), vec![Some(13)]);
        assert_eq!(hub.clients(), 1);
        drop(sub);
        assert_eq!(hub.clients(), 0);
    }

    #[test]
    fn resume_past_the_buffer_reports_exact_loss() {
        let hub = hub(16, 2);
        hub.publish_logs(vec![log(1), log(2), log(5), log(7)]);
        // 1 and 2 were evicted; since 1 → only 2 is lost.
        let sub = hub.subscribe(Some(1)).unwrap();
        assert_eq!(seqs(&sub), vec![None, Some(5), Some(7)]);
        assert!(sub.backlog[0].text.as_str().contains(r#""count":1"#));
    }

    #[test]
    fn late_subscriber_sees_ending_and_ended_closes() {
        let hub = hub(16, 0);
        hub.warn_ending(Instant::now() + std::time::Duration::from_secs(20));
        let mut sub = hub.subscribe(None).unwrap();
        assert!(
            sub.backlog[0]
                .text
                .as_str()
                .contains(r#""seconds_remaining":20"#)
        );
        hub.end(EndReason::Stopped);
        let Next::Burst(last) = sub.live.try_recv() else {
            panic!("session_ended is queued")
        };
        assert!(last.messages[0].ends);
        assert!(matches!(sub.live.try_recv(), Next::Ended));
        assert_eq!(hub.subscribe(None).err(), Some(SubscribeError::Ended));
    }

    #[test]
    fn a_lagging_receiver_can_count_lost_lines_exactly() {
        let hub = hub(2, 0);
        let mut sub = hub.subscribe(None).unwrap();
        assert_eq!(sub.next_log, 0);
        hub.publish_logs(vec![log(1), log(2)]);
        hub.publish(Control::AgentDisconnected { agent_id: None });
        hub.publish_logs(vec![log(3)]);
        hub.publish_logs(vec![log(4), log(5), log(6)]);
        // The oldest bursts (lines 1 and 2, the control) are gone; the next says so.
        let Next::Burst(burst) = sub.live.try_recv() else {
            panic!("the newest bursts are held")
        };
        assert_eq!(burst.logs_before - sub.next_log, 2);
        assert_eq!(burst.logs, 1);
    }

    /// The replay buffer never holds more bytes than its bound, and a client resuming from
    /// the start is told exactly how many lines the byte bound evicted.
    #[test]
    fn replay_is_bounded_in_bytes_with_exact_loss() {
        let bound = 10 * 1024;
        let hub = Hub::new(HubBounds {
            client_queue: 4,
            client_queue_bytes: usize::MAX,
            replay_messages: 1_000,
            replay_bytes: bound,
            max_clients: 8,
        });
        let line = |seq: u64| Outgoing {
            seq: Some(seq),
            ends: false,
            text: format!("{seq:>1000}").into(),
        };
        for batch in 0..20u64 {
            hub.publish_logs((1..=10).map(|i| line(batch * 10 + i)).collect());
            let (_, bytes) = hub.replay_usage();
            assert!(bytes <= bound, "{bytes} bytes held");
        }
        let (messages, bytes) = hub.replay_usage();
        assert_eq!((messages, bytes), (10, 10 * 1000));
        let sub = hub.subscribe(Some(0)).unwrap();
        assert!(sub.backlog[0].text.as_str().contains(r#""count":190"#));
        assert_eq!(sub.backlog.len(), 11);
        // A message bigger than the whole bound is not kept, and counted as evicted.
        hub.publish_logs(vec![Outgoing {
            seq: Some(1_000),
            ends: false,
            text: "x".repeat(bound + 1).into(),
        }]);
        assert_eq!(hub.replay_usage(), (10, 10 * 1000));
        let sub = hub.subscribe(Some(195)).unwrap();
        assert!(sub.backlog[0].text.as_str().contains(r#""count":1"#));
        assert_eq!(sub.backlog.len(), 6);
    }

    /// Sessions share the host's replay budget fairly: while the host is over it, a session
    /// above its share gives up its own oldest messages, one within its share keeps all of its
    /// history, the host holds at most twice the budget, and an ended session returns its bytes.
    #[test]
    fn sessions_share_the_host_replay_budget() {
        let budgets = HostBudgets {
            replay: ByteBudget::new(40_000),
            live: ByteBudget::unlimited(),
        };
        let budget = &budgets.replay;
        let bounds = HubBounds {
            client_queue: 4,
            client_queue_bytes: usize::MAX,
            replay_messages: 1_000,
            replay_bytes: usize::MAX,
            max_clients: 8,
        };
        let line = |seq: u64| Outgoing {
            seq: Some(seq),
            ends: false,
            text: format!("{seq:>1000}").into(),
        };
        let flooder = Hub::with_budgets(bounds, &budgets);
        let quiet = Hub::with_budgets(bounds, &budgets);
        quiet.publish_logs((1..=15).map(line).collect());
        for batch in 0..50u64 {
            flooder.publish_logs((1..=10).map(|i| line(1000 + batch * 10 + i)).collect());
            assert!(
                budget.used() <= 2 * 40_000 + 2 * 1000,
                "{} held",
                budget.used()
            );
        }
        assert_eq!(
            quiet.replay_usage().1,
            15_000,
            "the quiet session keeps its history"
        );
        assert!(
            flooder.replay_usage().1 <= 40_000 - 15_000,
            "the flooder has only what the others leave"
        );
        assert!(budget.used() <= 40_000);
        drop(flooder);
        assert_eq!(budget.used(), 15_000);
    }

    /// A session serves at most `max_clients` clients; one leaving makes room for another.
    #[test]
    fn clients_are_capped_exactly() {
        let hub = Hub::new(HubBounds {
            client_queue: 4,
            client_queue_bytes: usize::MAX,
            replay_messages: 0,
            replay_bytes: 0,
            max_clients: 2,
        });
        let a = hub.subscribe(None).unwrap();
        let _b = hub.subscribe(None).unwrap();
        assert_eq!(hub.subscribe(None).err(), Some(SubscribeError::Full));
        drop(a);
        assert!(hub.subscribe(None).is_ok());
    }

    /// Batches of several agents published into one fleet session get one ascending `seq`
    /// in publishing order, so a client resuming after any of them gets exactly the rest.
    #[test]
    fn fleet_batches_are_numbered_by_the_session() {
        let hub = hub(16, 100);
        let agent_batch = |agent_seqs: &'static [u64]| {
            move |first: u64| -> Vec<Outgoing> {
                (first..)
                    .zip(agent_seqs)
                    .map(|(seq, agent_seq)| Outgoing {
                        seq: Some(seq),
                        ends: false,
                        text: format!("{seq}/{agent_seq}").into(),
                    })
                    .collect()
            }
        };
        hub.publish_numbered(agent_batch(&[900, 901]));
        hub.publish_numbered(agent_batch(&[3]));
        hub.publish(Control::AgentJoined {
            agent_id: "c".into(),
        });
        hub.publish_numbered(agent_batch(&[902, 1]));
        let all = hub.subscribe(Some(0)).unwrap();
        let texts: Vec<&str> = all.backlog.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["1/900", "2/901", "3/3", "4/902", "5/1"]);
        let rest = hub.subscribe(Some(3)).unwrap();
        assert_eq!(seqs(&rest), vec![Some(4), Some(5)]);
    }
}
