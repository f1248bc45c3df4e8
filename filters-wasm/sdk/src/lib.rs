//! Write LogFleet log filters as WebAssembly components.
//!
//! A filter is one type implementing [`Filter`] plus one [`export_filter!`] call; build it with
//! `cargo build --release --target wasm32-wasip2` and the `.wasm` is a component the agent runs.
//!
//! ```ignore
//! use logfleet_filter_sdk::{export_filter, Fields, Filter, Record, Verdict};
//!
//! /// Keeps lines that mention "timeout".
//! struct Timeouts;
//!
//! impl Filter for Timeouts {
//!     const FIELDS: Fields = Fields::MESSAGE;
//!
//!     fn configure(_config: &str) -> Result<Self, String> {
//!         Ok(Timeouts)
//!     }
//!
//!     fn record(&mut self, record: Record<'_>) -> Verdict {
//!         Verdict::keep_if(record.message().contains("timeout"))
//!     }
//! }
//!
//! export_filter!(Timeouts);
//! ```
//!
//! Where things live:
//! - [`filter`]: the [`Filter`] trait an author implements.
//! - [`batch`]: [`Batch`], [`Record`] and [`Level`], the read-only view of the records a call sees.
//! - [`verdict`]: [`Verdict`] and [`Verdicts`], what a filter answers.
//! - [`config`]: [`parse_config`], JSON configuration into a `serde` type (feature `json`).
//! - [`testing`]: run a filter natively in `cargo test`, no WebAssembly needed.
//! - `bindings` / `export` (hidden): the generated WIT bindings and the glue [`export_filter!`]
//!   expands to.

pub mod batch;
#[cfg(feature = "json")]
pub mod config;
pub mod filter;
pub mod testing;
pub mod verdict;

#[doc(hidden)]
pub mod bindings;
#[doc(hidden)]
pub mod export;

pub use batch::{Batch, Level, Record};
pub use bindings::Fields;
#[cfg(feature = "json")]
pub use config::parse_config;
pub use filter::Filter;
pub use verdict::{Verdict, Verdicts};
