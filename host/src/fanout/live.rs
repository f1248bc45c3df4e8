//! The live queue of one session: its most recent bursts, which every client reads at its own
//! pace.
//!
//! It stands where a `tokio::sync::broadcast` channel stood, for one reason: a broadcast channel
//! is bounded in slots, and a slot may hold a whole agent batch, so its memory was bounded per
//! session but not per host. This queue is bounded in bursts, in bytes per session, and by a
//! host-wide [`ByteBudget`] shared fairly between sessions.
//!
//! Overflow policy: the oldest bursts go first. A client that had not read them is neither
//! blocked nor blocks the publisher: it goes on with the oldest burst still held and learns how
//! many log lines it lost from that burst's `logs_before` ordinal. The newest burst is kept
//! while a client has not read it, so a client that keeps up gets everything whatever the
//! bounds. Bursts every client has read are dropped as the next one comes (and as clients
//! drain an ended session), so a queue holds only what some client still lacks: nothing when
//! no client is connected.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::Burst;
use super::budget::{ByteBudget, Share};

/// How much one session's live queue holds at most (besides the newest burst).
#[derive(Debug, Clone, Copy)]
pub struct LiveBounds {
    pub bursts: usize,
    pub bytes: usize,
}

/// The publishing side, owned by the session's hub.
pub struct LiveQueue {
    ring: Arc<Mutex<Ring>>,
    /// Bumped after every change of the ring; receivers wait on it.
    wake: watch::Sender<()>,
}

struct Ring {
    bursts: VecDeque<Burst>,
    /// Index of `bursts[0]` among every burst ever pushed.
    first: u64,
    bounds: LiveBounds,
    /// The bytes of `bursts`, against the host's budget.
    share: Share,
    /// Set when the session ended: receivers drain what is left, then see the end.
    closed: bool,
    /// Each receiver's next index; only its receiver writes it.
    cursors: Vec<Arc<AtomicU64>>,
}

impl Ring {
    fn next_index(&self) -> u64 {
        self.first + self.bursts.len() as u64
    }

    /// Drops the bursts every receiver has read (all of them when there is none).
    fn drop_read(&mut self) {
        let next = self.next_index();
        let min = self
            .cursors
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(next);
        while self.first < min {
            let Some(old) = self.bursts.pop_front() else {
                break;
            };
            self.share.release(old.bytes);
            self.first += 1;
        }
    }

    /// Drops the oldest bursts while a bound or the host budget's fair share is exceeded,
    /// never the newest.
    fn enforce_bounds(&mut self) {
        while self.bursts.len() > 1
            && (self.bursts.len() > self.bounds.bursts
                || self.share.held() > self.bounds.bytes
                || self.share.must_shrink())
        {
            let Some(old) = self.bursts.pop_front() else {
                break;
            };
            self.share.release(old.bytes);
            self.first += 1;
        }
    }
}

fn lock(ring: &Mutex<Ring>) -> MutexGuard<'_, Ring> {
    ring.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveQueue {
    pub fn new(bounds: LiveBounds, budget: &ByteBudget) -> LiveQueue {
        let (wake, _) = watch::channel(());
        LiveQueue {
            ring: Arc::new(Mutex::new(Ring {
                bursts: VecDeque::new(),
                first: 0,
                bounds,
                share: budget.join(),
                closed: false,
                cursors: Vec::new(),
            })),
            wake,
        }
    }

    /// Appends a burst, evicting the oldest ones while a bound is exceeded (never the new one).
    pub fn push(&self, burst: Burst) {
        {
            let mut ring = lock(&self.ring);
            if ring.closed {
                return;
            }
            ring.share.add(burst.bytes);
            ring.bursts.push_back(burst);
            ring.drop_read();
            ring.enforce_bounds();
        }
        self.wake.send_replace(());
    }

    /// Gives up what the host budget's fair share no longer allows (a quiet session that
    /// filled up when fewer sessions shared the budget) and what every receiver has read.
    pub fn trim(&self) {
        let mut ring = lock(&self.ring);
        ring.drop_read();
        ring.enforce_bounds();
    }

    /// Ends the queue: receivers get what is left, then `None`.
    pub fn close(&self) {
        lock(&self.ring).closed = true;
        self.wake.send_replace(());
    }

    /// A receiver that starts with the next burst pushed.
    pub fn subscribe(&self) -> LiveReceiver {
        let mut ring = lock(&self.ring);
        let cursor = Arc::new(AtomicU64::new(ring.next_index()));
        ring.cursors.push(cursor.clone());
        LiveReceiver {
            ring: self.ring.clone(),
            wake: self.wake.subscribe(),
            cursor,
        }
    }

    /// Bursts and bytes held now.
    pub fn usage(&self) -> (usize, usize) {
        let ring = lock(&self.ring);
        (ring.bursts.len(), ring.share.held())
    }
}

impl Drop for LiveQueue {
    fn drop(&mut self) {
        self.close();
    }
}

/// One client's read position in a session's [`LiveQueue`].
pub struct LiveReceiver {
    ring: Arc<Mutex<Ring>>,
    wake: watch::Receiver<()>,
    /// Index of the next burst this client reads; shared with the ring, which drops what
    /// every receiver has read.
    cursor: Arc<AtomicU64>,
}

impl Drop for LiveReceiver {
    fn drop(&mut self) {
        let mut ring = lock(&self.ring);
        ring.cursors.retain(|c| !Arc::ptr_eq(c, &self.cursor));
        ring.drop_read();
    }
}

impl LiveReceiver {
    /// The next burst — after lagging, the oldest one still held — or `None` once the session
    /// ended and everything was read.
    pub async fn recv(&mut self) -> Option<Burst> {
        loop {
            // Marked seen before looking, so a push after the look wakes the wait below.
            self.wake.borrow_and_update();
            match self.try_recv() {
                Next::Burst(burst) => return Some(burst),
                Next::Ended => return None,
                Next::Empty => {}
            }
            if self.wake.changed().await.is_err() {
                // The queue is gone (the hub dropped): whatever is left, then the end.
                return match self.try_recv() {
                    Next::Burst(burst) => Some(burst),
                    Next::Ended | Next::Empty => None,
                };
            }
        }
    }

    /// The next burst if one is there, without waiting.
    pub fn try_recv(&mut self) -> Next {
        let mut ring = lock(&self.ring);
        let next = self.cursor.load(Ordering::Relaxed).max(ring.first);
        let found = ring.bursts.get((next - ring.first) as usize).cloned();
        let next = next + u64::from(found.is_some());
        self.cursor.store(next, Ordering::Relaxed);
        if ring.closed {
            // Nothing more comes: what every client has read can go at once.
            ring.drop_read();
        }
        match found {
            Some(burst) => Next::Burst(burst),
            None if ring.closed => Next::Ended,
            None => Next::Empty,
        }
    }
}

/// What [`LiveReceiver::try_recv`] found.
#[derive(Debug)]
pub enum Next {
    Burst(Burst),
    Empty,
    Ended,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::Outgoing;

    fn burst(logs_before: u64, bytes: usize) -> Burst {
        let text: String = "x".repeat(bytes);
        Burst {
            logs_before,
            logs: 1,
            bytes,
            messages: vec![Outgoing {
                seq: Some(logs_before + 1),
                ends: false,
                text: text.into(),
            }]
            .into(),
        }
    }

    fn got(next: Next) -> u64 {
        match next {
            Next::Burst(b) => b.logs_before,
            other => panic!("expected a burst, got {other:?}"),
        }
    }

    /// A client that keeps up reads every burst in order, then the end.
    #[tokio::test]
    async fn a_reader_that_keeps_up_gets_everything_then_the_end() {
        let q = LiveQueue::new(
            LiveBounds {
                bursts: 2,
                bytes: 100,
            },
            &ByteBudget::unlimited(),
        );
        let mut rx = q.subscribe();
        for i in 0..5 {
            q.push(burst(i, 10));
            assert_eq!(rx.recv().await.map(|b| b.logs_before), Some(i));
        }
        q.push(burst(5, 500)); // bigger than the byte bound: still delivered
        q.close();
        assert_eq!(rx.recv().await.map(|b| b.logs_before), Some(5));
        assert!(rx.recv().await.is_none());
    }

    /// A lagging client loses the oldest bursts, never blocks the publisher, and goes on from
    /// the oldest still held; the queue holds at most its bounds in bursts and bytes.
    #[test]
    fn a_lagging_reader_skips_to_the_oldest_held() {
        let q = LiveQueue::new(
            LiveBounds {
                bursts: 3,
                bytes: 25,
            },
            &ByteBudget::unlimited(),
        );
        let mut rx = q.subscribe();
        for i in 0..10 {
            q.push(burst(i, 10));
            let (bursts, bytes) = q.usage();
            assert!(bursts <= 3 && bytes <= 25, "{bursts} bursts, {bytes} bytes");
        }
        assert_eq!(got(rx.try_recv()), 8);
        assert_eq!(got(rx.try_recv()), 9);
        assert!(matches!(rx.try_recv(), Next::Empty));
    }

    /// Sessions share the host's queue budget: one flooding session cannot push out another's
    /// bursts, a quiet session that filled up when it had the budget to itself gives back
    /// what is over its share once trimmed, and dropping a queue returns its bytes.
    #[test]
    fn queues_share_the_host_budget_fairly() {
        let budget = ByteBudget::new(1_000);
        let bounds = LiveBounds {
            bursts: 1_000,
            bytes: usize::MAX,
        };
        let early = LiveQueue::new(bounds, &budget);
        let _early_client = early.subscribe();
        for i in 0..10 {
            early.push(burst(i, 100));
        }
        let quiet = LiveQueue::new(bounds, &budget);
        let _quiet_client = quiet.subscribe();
        let flood = LiveQueue::new(bounds, &budget);
        let flood_client = flood.subscribe();
        for i in 0..3 {
            quiet.push(burst(i, 100));
        }
        for i in 0..100 {
            flood.push(burst(i, 100));
            assert!(budget.used() <= 2 * 1_000 + 3 * 100, "{}", budget.used());
        }
        assert_eq!(quiet.usage(), (3, 300), "within its share: kept");
        assert!(
            budget.used() > 1_000,
            "over budget while the early queue idles"
        );
        early.trim();
        assert!(budget.used() <= 1_000, "{}", budget.used());
        drop((flood, flood_client));
        assert_eq!(budget.used(), early.usage().1 + 300);
    }

    /// A queue holds only what some client has not read: nothing without clients, and a
    /// burst every client has read goes when the next one comes.
    #[test]
    fn bursts_every_client_read_are_not_kept() {
        let budget = ByteBudget::unlimited();
        let q = LiveQueue::new(
            LiveBounds {
                bursts: 100,
                bytes: usize::MAX,
            },
            &budget,
        );
        q.push(burst(0, 10));
        assert_eq!(q.usage(), (0, 0), "no client, nothing kept");
        let mut a = q.subscribe();
        let mut b = q.subscribe();
        q.push(burst(1, 10));
        q.push(burst(2, 10));
        assert_eq!(got(a.try_recv()), 1);
        assert_eq!(got(a.try_recv()), 2);
        assert_eq!(got(b.try_recv()), 1);
        q.push(burst(3, 10));
        assert_eq!(q.usage(), (2, 20), "2 and 3: b has not read them");
        drop(b);
        assert_eq!(q.usage(), (1, 10), "3: a has not read it");
        assert_eq!(budget.used(), 10);
    }
}
