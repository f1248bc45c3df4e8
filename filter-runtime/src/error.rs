//! Errors of the runtime's three entry points: building a runtime, validating an upload,
//! building a session's chain. Failures while a chain runs are not errors: they are reported
//! as a [`FilterFailure`](crate::FilterFailure) in the chain's output, and the chain keeps
//! nothing from then on.

use std::path::PathBuf;

/// Why a [`Runtime`](crate::Runtime) could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The wasmtime engine refused the configuration (a bug, or an unsupported platform).
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    /// The compiled-component cache directory cannot be created.
    #[error("cannot create the filter cache directory {path}: {source}")]
    CacheDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The epoch ticker thread could not be started.
    #[error("cannot start the filter deadline thread: {0}")]
    Ticker(#[source] std::io::Error),
    /// The background compiler thread of the fast tier could not be started.
    #[error("cannot start the background filter compiler thread: {0}")]
    Worker(#[source] std::io::Error),
    /// `RuntimeConfig` holds a value the runtime cannot enforce.
    #[error("invalid filter runtime config: {0}")]
    Config(&'static str),
}

/// Why an uploaded plugin was refused. The text is meant for the uploader as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidateError {
    #[error("plugin is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not a WebAssembly binary (no `\\0asm` header)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component: build the plugin with \
         `cargo build --release --target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("precompiled artifacts are not accepted; upload the component's `.wasm`")]
    Precompiled,
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error(
        "the component imports `{0}`, which LogFleet filters cannot use (only the WIT's \
         `logfleet:filter/host` and the WASI interfaces a Rust guest links by default)"
    )]
    UnsupportedImport(String),
    #[error("the component does not implement the world `logfleet:filter/filter@1.0.0`: {0}")]
    WrongWorld(String),
    #[error("the component fails when started: {0}")]
    Startup(String),
}

/// Why a session's chain could not be built. Each names the filter it is about (`level`,
/// `source`, `pattern` or the plugin's name) so the agent can report it as a `filter_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The plugin source has no component for this digest (yet).
    #[error("plugin '{plugin}': component {digest} is not available")]
    PluginUnavailable { plugin: String, digest: String },
    /// The bytes supplied for a plugin do not hash to the digest the host named.
    #[error("plugin '{plugin}': component digest is {actual}, expected {expected}")]
    DigestMismatch {
        plugin: String,
        expected: String,
        actual: String,
    },
    /// The component cannot be compiled or does not implement the world.
    #[error("filter '{plugin}': {message}")]
    Invalid { plugin: String, message: String },
    /// The filter refused its config; `message` is the filter's own text.
    #[error("filter '{plugin}' refused its config: {message}")]
    Configure { plugin: String, message: String },
    /// Instantiating or configuring trapped, ran out of time or memory.
    #[error("filter '{plugin}' failed to start: {message}")]
    Startup { plugin: String, message: String },
}

impl ChainError {
    /// The filter this error is about.
    pub fn plugin(&self) -> &str {
        match self {
            ChainError::PluginUnavailable { plugin, .. }
            | ChainError::DigestMismatch { plugin, .. }
            | ChainError::Invalid { plugin, .. }
            | ChainError::Configure { plugin, .. }
            | ChainError::Startup { plugin, .. } => plugin,
        }
    }
}
