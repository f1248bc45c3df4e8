//! The thread that advances the engines' epochs, which is what makes call deadlines fire.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use wasmtime::Engine;

/// Owns the epoch thread of a runtime's engines (one per compiler tier). The thread stops when this is dropped (its channel
/// disconnects), so it lives exactly as long as the runtime that owns it.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    /// Never sent on; dropping it is the stop signal.
    _stop: Sender<()>,
}

impl EpochTicker {
    /// Starts a thread incrementing every one of `engines`' epochs every `tick`.
    pub(crate) fn start(engines: Vec<Engine>, tick: Duration) -> std::io::Result<EpochTicker> {
        let (stop, stopped) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("logfleet-filter-epoch".to_owned())
            .spawn(move || {
                // Only a timeout ticks; a message or disconnection (the owner dropped) stops.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
                tracing::debug!("filter epoch ticker stopped");
            })?;
        Ok(EpochTicker { _stop: stop })
    }
}
