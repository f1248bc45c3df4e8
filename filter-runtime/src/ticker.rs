//! The thread that advances an engine's epoch, which is what makes call deadlines fire.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use wasmtime::Engine;

/// Owns the epoch thread of one engine. The thread stops when this is dropped (its channel
/// disconnects), so it lives exactly as long as the runtime that owns it.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    /// Never sent on; dropping it is the stop signal.
    _stop: Sender<()>,
}

impl EpochTicker {
    /// Starts a thread incrementing `engine`'s epoch every `tick`.
    pub(crate) fn start(engine: Engine, tick: Duration) -> std::io::Result<EpochTicker> {
        let (stop, stopped) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("logfleet-filter-epoch".to_owned())
            .spawn(move || {
                // Only a timeout ticks; a message or disconnection (the owner dropped) stops.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    engine.increment_epoch();
                }
                tracing::debug!("filter epoch ticker stopped");
            })?;
        Ok(EpochTicker { _stop: stop })
    }
}
