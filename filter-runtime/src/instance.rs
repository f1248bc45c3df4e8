//! One configured filter instance — a `Store` of its own plus the typed bindings — and how a
//! call into it can fail.

use std::fmt;
use std::time::Duration;

use wasmtime::{Engine, Store, Trap};

use crate::bindings::{Batch, Fields, Filter, Verdicts};
use crate::cache::Prepared;
use crate::runtime::EPOCH_TICK;
use crate::sandbox::StoreState;

/// Why a call into a filter failed. After any of these the instance is poisoned (a trap
/// leaves it unusable) and must be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallFailure {
    /// Ran past its CPU deadline.
    Deadline(Duration),
    /// Tried to grow its memory past the cap.
    Memory(usize),
    /// A Rust guest panicked, with the message it reported.
    Panic(String),
    /// Any other trap (unreachable, out-of-bounds access, an import that is not provided…).
    Trap(String),
    /// Returned verdicts that do not fit the batch.
    Contract(String),
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallFailure::Deadline(d) => write!(f, "exceeded its CPU deadline of {d:?}"),
            CallFailure::Memory(limit) => {
                write!(f, "exceeded its memory limit of {} MiB", limit >> 20)
            }
            CallFailure::Panic(message) => write!(f, "panicked: {message}"),
            CallFailure::Trap(message) => write!(f, "trapped: {message}"),
            CallFailure::Contract(message) => write!(f, "broke the filter contract: {message}"),
        }
    }
}

/// Deadlines and caps applied to every call of one instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) call_deadline: Duration,
    pub(crate) configure_deadline: Duration,
    pub(crate) memory_limit: usize,
}

/// A live, configured filter: owns its store, so one session's filter shares nothing mutable
/// with any other.
pub(crate) struct FilterInstance {
    store: Store<StoreState>,
    filter: Filter,
    fields: Fields,
    bounds: Bounds,
}

impl FilterInstance {
    /// Instantiates `prepared`. [`FilterInstance::configure`] must follow before any batch.
    /// `label` names the filter in the log lines of its stdout/stderr.
    pub(crate) fn start(
        engine: &Engine,
        prepared: &Prepared,
        bounds: Bounds,
        label: &str,
    ) -> Result<FilterInstance, CallFailure> {
        let mut store = Store::new(engine, StoreState::new(bounds.memory_limit, label.into()));
        store.limiter(|state| &mut state.memory);
        store.epoch_deadline_trap();
        // Epochs start at zero: without a deadline the first instruction would trap.
        store.set_epoch_deadline(ticks(bounds.configure_deadline));
        store.data_mut().wasi.start_call(bounds.configure_deadline);
        let filter = prepared
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&mut store, bounds.configure_deadline, bounds, e))?;
        Ok(FilterInstance {
            store,
            filter,
            fields: Fields::all(),
            bounds,
        })
    }

    /// The columns this filter reads.
    pub(crate) fn fields(&self) -> Fields {
        self.fields
    }

    /// Calls `configure`, then `required-fields` (which may depend on the config).
    /// `Ok(Err(message))` is the filter refusing its config.
    pub(crate) fn configure(&mut self, config: &str) -> Result<Result<(), String>, CallFailure> {
        let deadline = self.bounds.configure_deadline;
        self.store.set_epoch_deadline(ticks(deadline));
        self.store.data_mut().wasi.start_call(deadline);
        let bounds = self.bounds;
        let configured = self
            .filter
            .call_configure(&mut self.store, config)
            .map_err(|e| classify(&mut self.store, deadline, bounds, e))?;
        if configured.is_ok() {
            self.fields = self
                .filter
                .call_required_fields(&mut self.store)
                .map_err(|e| classify(&mut self.store, deadline, bounds, e))?;
        }
        Ok(configured)
    }

    /// Runs one batch and checks the verdicts fit it.
    pub(crate) fn filter_batch(&mut self, batch: &Batch) -> Result<Verdicts, CallFailure> {
        let deadline = self.bounds.call_deadline;
        self.store.set_epoch_deadline(ticks(deadline));
        self.store.data_mut().wasi.start_call(deadline);
        let bounds = self.bounds;
        let verdicts = self
            .filter
            .call_filter_batch(&mut self.store, batch)
            .map_err(|e| classify(&mut self.store, deadline, bounds, e))?;
        if verdicts.keep.len() != batch.len as usize {
            return Err(CallFailure::Contract(format!(
                "{} verdicts for {} records",
                verdicts.keep.len(),
                batch.len
            )));
        }
        if let Some(bad) = verdicts.rewrites.iter().find(|r| r.index >= batch.len) {
            return Err(CallFailure::Contract(format!(
                "rewrite of record {} in a batch of {}",
                bad.index, batch.len
            )));
        }
        Ok(verdicts)
    }
}

/// Epoch ticks that guarantee at least `deadline` before the trap: the epoch may advance
/// just after the deadline is set, so one tick is added.
fn ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    let whole = deadline.as_nanos().div_ceil(tick);
    u64::try_from(whole).unwrap_or(u64::MAX / 2) + 1
}

/// Turns a failed call into its cause, using what the store observed.
fn classify(
    store: &mut Store<StoreState>,
    deadline: Duration,
    bounds: Bounds,
    error: wasmtime::Error,
) -> CallFailure {
    if store.data().memory.exceeded {
        return CallFailure::Memory(bounds.memory_limit);
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return CallFailure::Deadline(deadline);
    }
    if let Some(message) = store.data_mut().panic_message.take() {
        return CallFailure::Panic(message);
    }
    CallFailure::Trap(format!("{error:#}"))
}
