//! The properties the fuzz targets check, one module per target. They live in a library, not in
//! the targets, so `tests/corpus.rs` can replay the committed corpus through the same checks
//! with a plain `cargo test` (no sanitizer, no libFuzzer).
//!
//! - [`frames`]: agent ↔ host frames, inflate included, and the host's limits on agent frames.
//! - [`filters`]: a session's `filters` JSON, strict decoding and validation.
//! - [`lines`]: the agent's level detection on raw log lines.

pub mod filters;
pub mod frames;
pub mod lines;
