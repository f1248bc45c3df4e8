//! [`Runtime::validate`]: what an uploaded plugin must pass before the host stores it.

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::cache::Prepared;
use crate::error::ValidateError;
use crate::instance::FilterInstance;
use crate::runtime::Runtime;
use crate::sandbox;

/// Largest accepted component: 64 MiB. A regex-using Rust guest is ~1.2 MB, a JavaScript one
/// (componentize-js, StarlingMonkey inside) ~12 MB, a Python one (componentize-py, CPython and
/// its standard library inside) ~18 MB; this leaves room for a Python plugin with a few
/// pure-Python dependencies while bounding compile time and memory.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// The 8-byte preamble of a core module: magic + version 1.
const CORE_MODULE_PREAMBLE: [u8; 8] = *b"\0asm\x01\0\0\0";

/// Runs every check, cheapest first, and compiles once at the end.
pub(crate) fn validate(runtime: &Runtime, bytes: &[u8]) -> Result<(), ValidateError> {
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(ValidateError::TooLarge {
            size: bytes.len(),
            limit: MAX_COMPONENT_BYTES,
        });
    }
    if Engine::detect_precompiled(bytes).is_some() {
        return Err(ValidateError::Precompiled);
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(ValidateError::NotWasm);
    }
    if bytes.starts_with(&CORE_MODULE_PREAMBLE) {
        return Err(ValidateError::CoreModule);
    }
    let engine = runtime.engine();
    let component =
        Component::new(engine, bytes).map_err(|e| ValidateError::Invalid(format!("{e:#}")))?;
    if let Some((name, _)) = component
        .component_type()
        .imports(engine)
        .find(|(name, _)| !sandbox::import_allowed(name))
    {
        return Err(ValidateError::UnsupportedImport(name.to_owned()));
    }
    let pre = runtime
        .link(&component)
        .map_err(|e| ValidateError::WrongWorld(format!("{e:#}")))?;
    // Instantiate it once under the sandbox's limits: catches components whose initial memory
    // is over the cap or that trap when instantiated. (Configuring needs a session's config.)
    let prepared = Prepared { pre };
    FilterInstance::start(engine, &prepared, runtime.bounds(), "upload")
        .map_err(|failure| ValidateError::Startup(failure.to_string()))?;
    // Sessions naming this component start without compiling it again.
    runtime.remember(crate::cache::digest(bytes), &component, prepared.pre);
    Ok(())
}
