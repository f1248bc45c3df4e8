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
//! many log lines it lost from that burst's `logs_before` ordinal. The newest burst is always
//! kept, so a client that keeps up gets everything whatever the bounds.

use std::collections::VecDeque;
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
}

impl Ring {
    fn next_index(&self) -> u64 {
        self.first + self.bursts.len() as u64
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
            while ring.bursts.len() > 1
                && (ring.bursts.len() > ring.bounds.bursts
                    || ring.share.held() > ring.bounds.bytes
                    || ring.share.must_shrink())
            {
                let Some(old) = ring.bursts.pop_front() else {
                    break;
                };
                ring.share.release(old.bytes);
                ring.first += 1;
            }
        }
        self.wake.send_replace(());
    }

    /// Ends the queue: receivers get what is left, then `None`.
    pub fn close(&self) {
        lock(&self.ring).closed = true;
        self.wake.send_replace(());
    }

    /// A receiver that starts with the next burst pushed.
    pub fn subscribe(&self) -> LiveReceiver {
        let next = lock(&self.ring).next_index();
        LiveReceiver {
            ring: self.ring.clone(),
            wake: self.wake.subscribe(),
            next,
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
    /// Index of the next burst this client reads.
    next: u64,
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
        let ring = lock(&self.ring);
        self.next = self.next.max(ring.first);
        match ring.bursts.get((self.next - ring.first) as usize) {
            Some(burst) => {
                self.next += 1;
                Next::Burst(burst.clone())
            }
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
    /// bursts, and dropping a queue returns its bytes.
    #[test]
    fn queues_share_the_host_budget_fairly() {
        let budget = ByteBudget::new(1_000);
        let bounds = LiveBounds {
            bursts: 1_000,
            bytes: usize::MAX,
        };
        let quiet = LiveQueue::new(bounds, &budget);
        let flood = LiveQueue::new(bounds, &budget);
        for i in 0..4 {
            quiet.push(burst(i, 100));
        }
        for i in 0..100 {
            flood.push(burst(i, 100));
            assert!(budget.used() <= 2 * 1_000 + 2 * 100, "{}", budget.used());
        }
        assert_eq!(quiet.usage(), (4, 400));
        assert!(flood.usage().1 <= 600);
        drop(flood);
        assert_eq!(budget.used(), 400);
    }
}
