//! The fast tier's background half: optimised (Cranelift) compiles of plugins whose sessions
//! already run on baseline (Winch) code, and the slots chains watch for the result.
//!
//! Policy:
//! - One compile at a time, on one thread at a low scheduling priority (Linux: nice
//!   [`BACKGROUND_NICE`] for that thread only), with Cranelift's own parallelism off:
//!   optimising never takes more than one core from the agent, and mostly yields it to
//!   anything else that wants it.
//! - One compile per component: sessions that start on the same plugin while its compile is
//!   queued or running share its slot.
//! - The queue holds at most [`MAX_QUEUED_UPGRADES`] components. When it is full a request is
//!   dropped, not waited for: that session keeps running on baseline code (correct, slower),
//!   and the next session naming the plugin asks again.
//! - A chain switches to the optimised code at a batch boundary (see `chain.rs`), so every
//!   record goes through exactly one instance of each filter.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::cache::Prepared;

/// Most plugins waiting for their optimised compile; see the module policy for overflow.
/// A compile takes ≈ 1 s per MB of component, so a full queue is a minute of work at most.
pub(crate) const MAX_QUEUED_UPGRADES: usize = 32;

/// Where a plugin's optimised code appears: `Some` once compiled, `None` if compiling failed
/// (the sessions keep the baseline code).
pub(crate) type UpgradeSlot = OnceLock<Option<Arc<Prepared>>>;

/// Compiles waiting or running, by component digest.
type Pending = Arc<Mutex<HashMap<String, Arc<UpgradeSlot>>>>;

/// The runtime's side of the background compiler: where requests go.
pub(crate) struct Upgrades {
    queue: SyncSender<UpgradeJob>,
    pending: Pending,
}

/// One component to optimise, and the slot its sessions watch.
pub(crate) struct UpgradeJob {
    pub(crate) digest: String,
    /// The component (checked against `digest` when the session started).
    pub(crate) bytes: Vec<u8>,
    slot: Arc<UpgradeSlot>,
    pending: Pending,
}

impl Upgrades {
    /// The request side, and the queue [`start_worker`] serves.
    pub(crate) fn new() -> (Upgrades, Receiver<UpgradeJob>) {
        let (queue, jobs) = mpsc::sync_channel(MAX_QUEUED_UPGRADES);
        let upgrades = Upgrades {
            queue,
            pending: Pending::default(),
        };
        (upgrades, jobs)
    }

    /// The slot where `digest`'s optimised code will appear, asking for the compile unless
    /// one is already pending. `None` when the queue is full (see the module policy).
    pub(crate) fn request(&self, digest: &str, bytes: Vec<u8>) -> Option<Arc<UpgradeSlot>> {
        let mut pending = lock(&self.pending);
        if let Some(slot) = pending.get(digest) {
            return Some(Arc::clone(slot));
        }
        let slot = Arc::new(UpgradeSlot::new());
        let job = UpgradeJob {
            digest: digest.to_owned(),
            bytes,
            slot: Arc::clone(&slot),
            pending: Arc::clone(&self.pending),
        };
        match self.queue.try_send(job) {
            Ok(()) => {
                pending.insert(digest.to_owned(), Arc::clone(&slot));
                Some(slot)
            }
            Err(TrySendError::Full(_)) => {
                tracing::warn!(%digest, limit = MAX_QUEUED_UPGRADES, "background compile queue full; the session keeps baseline code");
                None
            }
            Err(TrySendError::Disconnected(_)) => None,
        }
    }
}

impl UpgradeJob {
    /// Publishes the result to every chain watching, and forgets the job.
    pub(crate) fn finish(self, prepared: Option<Arc<Prepared>>) {
        // Only this job ever sets its slot.
        let _ = self.slot.set(prepared);
        lock(&self.pending).remove(&self.digest);
    }
}

/// Starts the background compiler thread: it runs `run` on each job until the queue
/// disconnects (the runtime is dropped) or `run` returns `false`.
pub(crate) fn start_worker(
    jobs: Receiver<UpgradeJob>,
    mut run: impl FnMut(UpgradeJob) -> bool + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("logfleet-filter-optimize".to_owned())
        .spawn(move || {
            lower_priority();
            while let Ok(job) = jobs.recv() {
                if !run(job) {
                    break;
                }
            }
            tracing::debug!("background filter compiler stopped");
        })?;
    Ok(())
}

/// The background compiler's nice value. Not the lowest (19): a nice-19 thread gets 15/1024
/// of a nice-0 thread's CPU share, so next to a dozen busy processes a one-second compile
/// would stretch to minutes while the session runs slower code; at 10 (110/1024) it still
/// yields most of the CPU to everything else.
pub(crate) const BACKGROUND_NICE: i32 = 10;

/// Gives the calling thread a low CPU priority ([`BACKGROUND_NICE`]). On Linux, `setpriority(PRIO_PROCESS, 0)`
/// applies to the calling thread only; elsewhere it would renice the whole process, so it is
/// not done there.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        #[allow(unsafe_code)]
        // SAFETY: plain syscall wrapper with no pointers; who = 0 is the calling thread.
        let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
        if result != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the background compiler's priority");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every mutation is one insert or remove: a panic cannot leave the map inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
