//! Test plugin: refuses every config with its own message, which must reach the user.

use logfleet_filter_sdk::{Filter, export_filter};

/// Never successfully configured.
struct Refuse;

impl Filter for Refuse {
    fn configure(config: &str) -> Result<Self, String> {
        Err(format!(
            "hostile-config: `threshold` must be a positive number (got config {config})"
        ))
    }
}

export_filter!(Refuse);
