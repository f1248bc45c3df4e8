//! `Runtime::validate`: what the host's plugin upload accepts and refuses.

mod common;

use common::{plugin_bytes, runtime};
use logfleet_filter_runtime::ValidateError;

#[test]
fn example_plugins_are_accepted() {
    let rt = runtime();
    for name in ["redact", "sample", "json-field", "template", "hostile-loop"] {
        rt.validate(&plugin_bytes(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn junk_is_refused() {
    let rt = runtime();
    assert_eq!(rt.validate(b"hello world"), Err(ValidateError::NotWasm));
    assert_eq!(rt.validate(b""), Err(ValidateError::NotWasm));
    let err = rt.validate(b"\0asm\x0d\0\x01\0garbage").unwrap_err();
    assert!(matches!(err, ValidateError::Invalid(_)), "{err}");
}

#[test]
fn core_modules_are_refused_with_a_hint() {
    let rt = runtime();
    // The smallest valid core module: magic + version, no sections.
    let err = rt.validate(b"\0asm\x01\0\0\0").unwrap_err();
    assert_eq!(err, ValidateError::CoreModule);
    assert!(err.to_string().contains("wasm32-wasip2"));
}

#[test]
fn wrong_world_is_refused() {
    let rt = runtime();
    let err = rt.validate(&plugin_bytes("wrong-world")).unwrap_err();
    assert!(matches!(err, ValidateError::WrongWorld(_)), "{err}");
    assert!(
        err.to_string().contains("logfleet:filter/filter@1.0.0"),
        "{err}"
    );
}

#[test]
fn oversized_uploads_are_refused_before_compiling() {
    let rt = runtime();
    let big = vec![0u8; logfleet_filter_runtime::MAX_COMPONENT_BYTES + 1];
    assert!(matches!(
        rt.validate(&big),
        Err(ValidateError::TooLarge { .. })
    ));
}
