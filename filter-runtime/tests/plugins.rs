//! Example plugins from `plugins/` running in a chain after the built-ins.

mod common;

use common::{plugin, record, runtime, with_plugins};
use logfleet_filter_runtime::{ChainError, Kept};
use logfleet_protocol::{Filters, Level, PluginRef};

#[test]
fn redact_rewrites_and_later_filters_see_the_rewrite() {
    let rt = runtime();
    let (redact, redact_bytes) = plugin("redact", "null");
    let (template, template_bytes) = plugin("template", r#"{"contains":"<email>","tag":"[pii]"}"#);
    let filters = Filters {
        levels: vec![Level::Error],
        plugins: vec![redact, template],
        ..Filters::default()
    };
    let source = |p: &PluginRef| match p.name.as_str() {
        "redact" => Some(redact_bytes.clone()),
        "template" => Some(template_bytes.clone()),
        _ => None,
    };
    let mut chain = rt.chain(&filters, &source).unwrap();
    assert_eq!(
        chain.filters().collect::<Vec<_>>(),
        ["level", "redact", "template"]
    );
    let records = [
        record(
            Level::Error,
            "api",
            "reset for bob@example.com from 10.0.0.7",
        ),
        record(Level::Info, "api", "reset for eve@example.com"),
        record(Level::Error, "api", "no address here"),
    ];
    let out = chain.apply(&records);
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert_eq!(
        out.kept,
        [Kept {
            index: 0,
            message: Some("[pii] reset for <email> from <ipv4>".into())
        }]
    );
}

#[test]
fn sample_and_json_field() {
    let rt = runtime();
    let (sample, sample_bytes) = plugin("sample", r#"{"one_in":2}"#);
    let (json, json_bytes) = plugin("json-field", r#"{"field":"status","equals":500}"#);
    let source = |p: &PluginRef| match p.name.as_str() {
        "sample" => Some(sample_bytes.clone()),
        "json-field" => Some(json_bytes.clone()),
        _ => None,
    };
    let mut chain = rt
        .chain(&with_plugins(vec![json, sample]), &source)
        .unwrap();
    let records: Vec<_> = (0..8)
        .map(|i| {
            let status = if i % 4 == 3 { 200 } else { 500 };
            record(
                Level::Info,
                "web",
                &format!(r#"{{"status":{status},"i":{i}}}"#),
            )
        })
        .collect();
    let out = chain.apply(&records);
    // json-field keeps 0,1,2,4,5,6; sample keeps every other one of those.
    let kept: Vec<u32> = out.kept.iter().map(|k| k.index).collect();
    assert_eq!(kept, [0, 2, 5]);
}

#[test]
fn plugin_bytes_are_checked_and_only_fetched_on_a_cache_miss() {
    let rt = runtime();
    let (mut redact, bytes) = plugin("redact", "null");
    let fetches = std::sync::atomic::AtomicUsize::new(0);
    let source = |_: &PluginRef| {
        fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(bytes.clone())
    };
    rt.chain(&with_plugins(vec![redact.clone()]), &source)
        .unwrap();
    // Zero when an earlier run left the compiled component in the disk cache.
    let first = fetches.load(std::sync::atomic::Ordering::Relaxed);
    assert!(first <= 1);
    rt.chain(&with_plugins(vec![redact.clone()]), &source)
        .unwrap();
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::Relaxed),
        first,
        "second chain must reuse the compiled component"
    );

    let missing = |_: &PluginRef| None;
    redact.digest = format!("sha256:{}", "0".repeat(64));
    let err = rt
        .chain(&with_plugins(vec![redact.clone()]), &missing)
        .unwrap_err();
    assert!(matches!(err, ChainError::PluginUnavailable { .. }), "{err}");
    let err = rt
        .chain(&with_plugins(vec![redact]), &|_: &PluginRef| {
            Some(b"other".to_vec())
        })
        .unwrap_err();
    assert!(matches!(err, ChainError::DigestMismatch { .. }), "{err}");
}

#[test]
fn plugins_prepared_in_parallel_report_the_failing_one() {
    let rt = runtime();
    let (sample, bytes) = plugin("sample", r#"{"one_in": 2}"#);
    let mut missing = sample.clone();
    missing.name = "gone".into();
    missing.digest = format!("sha256:{}", "1".repeat(64));
    let digest = sample.digest.clone();
    let source = |p: &PluginRef| (p.digest == digest).then(|| bytes.clone());
    let err = rt
        .chain(&with_plugins(vec![sample.clone(), missing]), &source)
        .unwrap_err();
    assert!(
        matches!(&err, ChainError::PluginUnavailable { plugin, .. } if plugin == "gone"),
        "{err}"
    );
    // The plugin that was fine is ready for the next chain.
    rt.chain(&with_plugins(vec![sample.clone(), sample]), &source)
        .unwrap();
}
