//! Test plugin: fails every batch. `{"mode": "panic"}` (default) panics with a message the
//! host should surface; `{"mode": "unreachable"}` executes `unreachable` with no message.

use logfleet_filter_sdk::{Batch, Fields, Filter, Verdicts, export_filter, parse_config};
use serde::Deserialize;

/// How to fail.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: Option<String>,
}

/// The failing filter.
struct Trap {
    unreachable: bool,
}

impl Filter for Trap {
    const FIELDS: Fields = Fields::MESSAGE;

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        Ok(Trap {
            unreachable: config.mode.as_deref() == Some("unreachable"),
        })
    }

    fn batch(&mut self, batch: &Batch<'_>, _verdicts: &mut Verdicts) {
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
