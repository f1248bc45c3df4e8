//! Test plugin: on every batch, allocates 1 MiB blocks and keeps them, forever. The runtime's
//! memory cap must stop it.

use logfleet_filter_sdk::{Batch, Fields, Filter, Verdicts, export_filter};

/// Size of each block it holds on to.
const BLOCK_BYTES: usize = 1 << 20;

/// The hoarding filter; `hoard` is never freed.
struct Hog {
    hoard: Vec<Vec<u8>>,
}

impl Filter for Hog {
    const FIELDS: Fields = Fields::empty();

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Hog { hoard: Vec::new() })
    }

    fn batch(&mut self, _batch: &Batch<'_>, _verdicts: &mut Verdicts) {
        loop {
            // Touch the block so it is really committed.
            self.hoard.push(vec![0xAB; BLOCK_BYTES]);
        }
    }
}

export_filter!(Hog);
