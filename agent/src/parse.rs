//! Level detection for one line. The detector is pure (bytes in, a [`Level`] out), so it lives
//! in [`logfleet_protocol::line_level`], where the `line_parser` fuzz target reaches it without
//! building the agent's WebAssembly runtime; this module keeps the agent's own path for it.
//!
//! [`Level`]: logfleet_protocol::Level

pub use logfleet_protocol::line_level::{BRACKET_SCAN_BYTES, MAX_LEVEL_TOKENS, detect_level};
