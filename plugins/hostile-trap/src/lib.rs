//! Test plugin: fails batches. `{"mode": "panic"}` (default) panics with a message the host
//! should surface; `{"mode": "unreachable"}` executes `unreachable` with no message. With
//! `{"on": "TEXT"}` it fails only a batch holding a message that contains TEXT and keeps every
//! record of other batches, so tests can show that what it had not decided never passes.

use logfleet_filter_sdk::{Batch, Fields, Filter, Verdicts, export_filter, parse_config};
use serde::Deserialize;

/// How to fail.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: Option<String>,
    /// Fail only batches with a message containing this.
    #[serde(default)]
    on: Option<String>,
}

/// The failing filter.
struct Trap {
    unreachable: bool,
    on: Option<String>,
}

impl Filter for Trap {
    const FIELDS: Fields = Fields::MESSAGE;

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        Ok(Trap {
            unreachable: config.mode.as_deref() == Some("unreachable"),
            on: config.on,
        })
    }

    fn batch(&mut self, batch: &Batch<'_>, _verdicts: &mut Verdicts) {
        if let Some(on) = &self.on
            && !batch.iter().any(|r| r.message().contains(on.as_str()))
        {
            return;
        }
        if self.unreachable {
            #[cfg(target_arch = "wasm32")]
            core::arch::wasm32::unreachable();
        }
        panic!(
            "hostile-trap: deliberate failure on a batch of {}",
            batch.len()
        );
    }
}

export_filter!(Trap);
