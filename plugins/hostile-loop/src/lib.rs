//! Test plugin: spins forever, in `filter-batch` by default or in `configure` with
//! `{"in": "configure"}`. The runtime's CPU deadline must stop it.

use logfleet_filter_sdk::{Batch, Fields, Filter, Verdicts, export_filter, parse_config};
use serde::Deserialize;

/// Where to spin.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(rename = "in", default)]
    place: Option<String>,
}

/// The spinning filter.
struct Loop;

/// Never returns; `black_box` keeps the optimiser from proving anything about the loop.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

impl Filter for Loop {
    const FIELDS: Fields = Fields::empty();

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        if config.place.as_deref() == Some("configure") {
            spin();
        }
        Ok(Loop)
    }

    fn batch(&mut self, _batch: &Batch<'_>, _verdicts: &mut Verdicts) {
        spin();
    }
}

export_filter!(Loop);
