//! The built-in `level`, `source` and `pattern` filters: components from `filters-wasm/`,
//! compiled for `wasm32-wasip2` by this crate's build script and embedded in the binary.

use std::sync::OnceLock;

use crate::cache;

/// One of the built-in filters a session's `filters.level`, `.source` and `.pattern` map onto.
/// They run as WebAssembly like any plugin; there is no native filtering path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    Level,
    Source,
    Pattern,
}

static LEVEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/level.wasm"));
static SOURCE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/source.wasm"));
static PATTERN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pattern.wasm"));

impl Builtin {
    /// Every built-in, in chain order.
    pub const ALL: [Builtin; 3] = [Builtin::Level, Builtin::Source, Builtin::Pattern];

    /// The name failures are reported under (`filter_error`'s `plugin`).
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Level => "level",
            Builtin::Source => "source",
            Builtin::Pattern => "pattern",
        }
    }

    /// The component's bytes.
    pub fn component(self) -> &'static [u8] {
        match self {
            Builtin::Level => LEVEL,
            Builtin::Source => SOURCE,
            Builtin::Pattern => PATTERN,
        }
    }

    /// `sha256:<hex>` of [`Builtin::component`], computed once.
    pub fn digest(self) -> &'static str {
        static DIGESTS: [OnceLock<String>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        DIGESTS[self as usize].get_or_init(|| cache::digest(self.component()))
    }
}
