//! One host-wide byte budget shared fairly by every session's buffer of one kind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The bytes every session of the host holds in one kind of buffer (replay buffers, or live
/// client queues), against one budget.
///
/// Policy: while the host is over its budget, a session that holds more than its fair share
/// (the budget divided by the sessions) evicts its own oldest entries as it adds new ones, down
/// to that share, and quiet sessions over their share are trimmed the same way every
/// [`crate::session::TRIM_INTERVAL`]; a session under its share is never made to give up
/// anything for another. So one session flooding cannot take the others' buffers, and the
/// buffers of the whole host hold at most twice the budget (what sessions within their shares
/// hold, plus at most the budget beyond it) once trimmed, plus the one entry each session
/// always keeps.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    inner: Arc<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    max: usize,
    used: AtomicUsize,
    members: AtomicUsize,
}

impl ByteBudget {
    pub fn new(max: usize) -> ByteBudget {
        ByteBudget {
            inner: Arc::new(BudgetState {
                max,
                used: AtomicUsize::new(0),
                members: AtomicUsize::new(0),
            }),
        }
    }

    /// A budget nothing is held against beyond each session's own bounds.
    pub fn unlimited() -> ByteBudget {
        ByteBudget::new(usize::MAX)
    }

    /// Bytes held by every session now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Whether sessions hold more than the budget (some must give up bytes when trimmed).
    pub fn over(&self) -> bool {
        self.used() > self.inner.max
    }

    /// A session's share of this budget; dropping it returns what it still holds.
    pub fn join(&self) -> Share {
        self.inner.members.fetch_add(1, Ordering::Relaxed);
        Share {
            budget: self.clone(),
            held: 0,
        }
    }
}

/// What one session holds against a [`ByteBudget`].
#[derive(Debug)]
pub struct Share {
    budget: ByteBudget,
    held: usize,
}

impl Share {
    /// Bytes this session holds.
    pub fn held(&self) -> usize {
        self.held
    }

    pub fn add(&mut self, bytes: usize) {
        self.held += bytes;
        self.budget.inner.used.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn release(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.budget.inner.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Whether this session must give up its oldest: the host is over budget and this session
    /// holds more than its fair share.
    pub fn must_shrink(&self) -> bool {
        let inner = &self.budget.inner;
        let members = inner.members.load(Ordering::Relaxed).max(1);
        inner.used.load(Ordering::Relaxed) > inner.max && self.held > inner.max / members
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget
            .inner
            .used
            .fetch_sub(self.held, Ordering::Relaxed);
        self.budget.inner.members.fetch_sub(1, Ordering::Relaxed);
    }
}
