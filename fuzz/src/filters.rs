//! A session's `filters` as users send them: JSON → [`FilterSpec`] (plain serde and the host's
//! strict decoding) → [`FilterSpec::validate`] → [`Filters`], the normalised form the host stores
//! and pushes to agents.

use logfleet_protocol::agent::{HostFrame, RateLimits, SessionSpec, decode, encode};
use logfleet_protocol::filters::{
    MAX_PATTERN_BYTES, MAX_PLUGIN_CONFIG_BYTES, MAX_PLUGINS, MAX_SOURCE_BYTES, MAX_SOURCES,
    OneOrMany, PluginSpec, compile_pattern, valid_plugin_name,
};
use logfleet_protocol::rest::StartRequest;
use logfleet_protocol::{FilterSpec, Filters, strict_json};
use serde_json::Value;

/// Checks every filter property on one input, read as a `filters` object and as a whole start
/// request.
pub fn check(data: &[u8]) {
    if let Some(spec) = decode_spec(data) {
        validates_to_normal_form(&spec);
    }
    if let Ok(request) = strict_json::from_slice::<StartRequest>(data) {
        assert_eq!(
            serde_json::from_slice::<StartRequest>(data).ok().as_ref(),
            Some(&request),
            "strict decoding accepted a start request plain serde refuses or reads differently"
        );
        if let Some(spec) = &request.filters {
            validates_to_normal_form(spec);
        }
    }
}

/// Strict decoding only narrows plain serde: what it accepts, serde accepts as the same value.
fn decode_spec(data: &[u8]) -> Option<FilterSpec> {
    let strict = strict_json::from_slice::<FilterSpec>(data).ok()?;
    assert_eq!(
        serde_json::from_slice::<FilterSpec>(data).ok().as_ref(),
        Some(&strict),
        "strict decoding accepted filters plain serde refuses or reads differently"
    );
    Some(strict)
}

/// Validation either refuses the spec or yields filters that are within every bound, that an
/// agent receives unchanged, and that are a fixed point: written back as the JSON a user would
/// send, they decode strictly and validate to the same filters.
fn validates_to_normal_form(spec: &FilterSpec) {
    let Ok(filters) = spec.validate() else { return };
    within_bounds(spec, &filters);
    survives_the_agent_link(&filters);

    let again = as_spec(&filters);
    let json = serde_json::to_vec(&again).expect("a spec serialises");
    let decoded = strict_json::from_slice::<FilterSpec>(&json)
        .unwrap_or_else(|e| panic!("normal form {again:?} does not decode: {e}"));
    let revalidated = decoded
        .validate()
        .unwrap_or_else(|e| panic!("normal form {again:?} does not validate: {e}"));
    assert_eq!(revalidated.levels, filters.levels);
    assert_eq!(revalidated.sources, filters.sources);
    assert_eq!(revalidated.pattern, filters.pattern);
    assert_eq!(revalidated.plugins.len(), filters.plugins.len());
    for (a, b) in revalidated.plugins.iter().zip(&filters.plugins) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.digest, b.digest);
        assert!(
            same_json(&parse(&a.config), &parse(&b.config)),
            "config {} became {}",
            b.config,
            a.config
        );
    }
}

fn within_bounds(spec: &FilterSpec, filters: &Filters) {
    assert!(
        filters.levels.windows(2).all(|w| w[0] < w[1]),
        "levels sorted, no duplicates"
    );
    assert_eq!(filters.levels.is_empty(), spec.level.is_none());
    assert!(filters.sources.len() <= MAX_SOURCES);
    assert_eq!(filters.sources.is_empty(), spec.source.is_none());
    for source in &filters.sources {
        assert!((1..=MAX_SOURCE_BYTES).contains(&source.len()), "{source:?}");
    }
    if let Some(pattern) = &filters.pattern {
        assert!(pattern.len() <= MAX_PATTERN_BYTES);
        assert!(compile_pattern(pattern).is_ok(), "{pattern:?}");
    }
    assert!(filters.plugins.len() <= MAX_PLUGINS);
    let specs = spec.plugins.as_deref().unwrap_or_default();
    assert_eq!(filters.plugins.len(), specs.len());
    for (plugin, spec) in filters.plugins.iter().zip(specs) {
        assert!(valid_plugin_name(&plugin.name), "{:?}", plugin.name);
        assert!(
            plugin.digest.is_empty(),
            "digests are the host's to fill in"
        );
        assert!(plugin.config.len() <= MAX_PLUGIN_CONFIG_BYTES);
        // The config an agent hands the plugin is the user's JSON value.
        assert!(
            same_json(&parse(&plugin.config), &spec.config),
            "{}",
            plugin.config
        );
    }
}

/// Filters travel to agents in a `Start` frame; they arrive as they left.
fn survives_the_agent_link(filters: &Filters) {
    let frame = HostFrame::Start(SessionSpec {
        id: "sess_fuzz".into(),
        filters: filters.clone(),
        limits: RateLimits {
            lines_per_second: 1,
            bytes_per_second: 1,
        },
        remaining_ms: 0,
        backfill: None,
    });
    assert_eq!(decode::<HostFrame>(&encode(&frame)).ok(), Some(frame));
}

/// The JSON a user would write for normalised filters.
fn as_spec(filters: &Filters) -> FilterSpec {
    FilterSpec {
        level: (!filters.levels.is_empty()).then(|| {
            filters
                .levels
                .iter()
                .map(|l| l.as_str().to_owned())
                .collect()
        }),
        source: (!filters.sources.is_empty()).then(|| OneOrMany::Many(filters.sources.clone())),
        pattern: filters.pattern.clone(),
        plugins: (!filters.plugins.is_empty()).then(|| {
            filters
                .plugins
                .iter()
                .map(|p| PluginSpec {
                    name: p.name.clone(),
                    config: parse(&p.config),
                })
                .collect()
        }),
    }
}

fn parse(config: &str) -> Value {
    serde_json::from_str(config).unwrap_or_else(|e| panic!("config {config:?} is not JSON: {e}"))
}

/// JSON equality, with numbers compared as the same double: serde_json's default float
/// parsing may land one ULP away from the value its own output was printed from, which is
/// serde_json's documented trade-off (its `float_roundtrip` feature), not ours.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()),
                    _ => false,
                }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| same_json(a, b)))
        }
        _ => a == b,
    }
}
