//! Agent labels and the selectors that pick agents by them (fleet sessions).
//!
//! Labels are `KEY=VALUE` pairs an agent carries: set at enrollment (`POST /api/v1/agents`),
//! by the agent itself (`--label`, TOML `[labels]`, sent in its hello), and shown and filtered
//! on in `GET /api/v1/agents?label=KEY=VALUE`. A [`Selector`] in a start request picks every
//! agent whose labels include all of its pairs and whose name matches its glob. One set of
//! bounds applies everywhere labels enter, so an agent's config, an enrollment and a hello are
//! refused alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most labels on one agent (and pairs in one selector).
pub const MAX_LABELS: usize = 32;
/// Longest label key and value, in characters.
pub const MAX_LABEL_CHARS: usize = 128;
/// Longest name glob in a selector, in characters.
pub const MAX_NAME_GLOB_CHARS: usize = 256;

/// Labels, sorted by key.
pub type Labels = BTreeMap<String, String>;

/// Why labels or a selector were refused; the text is for users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LabelError(pub String);

/// Checks labels against the bounds: at most [`MAX_LABELS`], keys of 1..=[`MAX_LABEL_CHARS`]
/// characters out of `a-z A-Z 0-9 - _ . /`, values of at most [`MAX_LABEL_CHARS`] characters
/// without control characters.
pub fn check_labels(labels: &Labels) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError(format!("at most {MAX_LABELS} labels")));
    }
    for (key, value) in labels {
        check_pair(key, value)?;
    }
    Ok(())
}

fn check_pair(key: &str, value: &str) -> Result<(), LabelError> {
    let key_ok = !key.is_empty()
        && key.chars().count() <= MAX_LABEL_CHARS
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if !key_ok {
        return Err(LabelError(format!(
            "label keys are 1..={MAX_LABEL_CHARS} of a-z, A-Z, 0-9, '-', '_', '.', '/'"
        )));
    }
    if value.chars().count() > MAX_LABEL_CHARS || value.chars().any(char::is_control) {
        return Err(LabelError(format!(
            "label values are at most {MAX_LABEL_CHARS} characters, no control characters"
        )));
    }
    Ok(())
}

/// `KEY=VALUE` (as `--label` and `?label=` take it), checked.
pub fn parse_label(s: &str) -> Result<(String, String), LabelError> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| LabelError(format!("expected KEY=VALUE, got '{s}'")))?;
    check_pair(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Which agents a fleet session runs on: all given parts must match; an empty selector is
/// refused ([`Selector::check`]), so a selector never means "every agent" by accident.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Pairs the agent's labels must all include.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// A glob on the agent's name: `*` any run of characters, `?` one character.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Selector {
    /// Refuses an empty selector and one over the label or glob bounds.
    pub fn check(&self) -> Result<(), LabelError> {
        if self.labels.is_empty() && self.name.is_none() {
            return Err(LabelError(
                "a selector needs labels, a name glob, or both".to_owned(),
            ));
        }
        check_labels(&self.labels)?;
        if let Some(glob) = &self.name {
            let chars = glob.chars().count();
            if chars == 0 || chars > MAX_NAME_GLOB_CHARS {
                return Err(LabelError(format!(
                    "a name glob is 1..={MAX_NAME_GLOB_CHARS} characters"
                )));
            }
        }
        Ok(())
    }

    /// Whether an agent named `name` carrying `labels` is selected.
    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self
                .name
                .as_deref()
                .is_none_or(|glob| glob_match(glob, name))
    }
}

/// Whether `text` matches `glob` (`*` any run, `?` one character, everything else itself).
/// Linear backtracking on the last `*`: no pattern costs more than `glob × text` steps.
pub fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match g.get(gi) {
            Some('*') => {
                star = Some((gi, ti));
                gi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                gi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sg, st)) => {
                    gi = sg + 1;
                    ti = st + 1;
                    star = Some((sg, st + 1));
                }
                None => return false,
            },
        }
    }
    g[gi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// A selector picks an agent only when every given label pair and the name glob match.
    #[test]
    fn selector_needs_every_part_to_match() {
        let sel = Selector {
            labels: labels(&[("env", "prod"), ("role", "edge")]),
            name: Some("edge-*".into()),
        };
        let prod_edge = labels(&[("env", "prod"), ("role", "edge"), ("zone", "a")]);
        assert!(sel.matches("edge-1", &prod_edge));
        assert!(!sel.matches("core-1", &prod_edge), "name glob");
        assert!(
            !sel.matches("edge-1", &labels(&[("env", "prod")])),
            "a label missing"
        );
        assert!(
            !sel.matches("edge-1", &labels(&[("env", "dev"), ("role", "edge")])),
            "a value differs"
        );
        let by_name = Selector {
            labels: Labels::new(),
            name: Some("web-??".into()),
        };
        assert!(by_name.matches("web-01", &Labels::new()));
        assert!(!by_name.matches("web-1", &Labels::new()));
    }

    #[test]
    fn globs_match_runs_and_single_characters() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(glob_match("a*b", "abab"));
        assert!(!glob_match("a*b", "abac"));
        assert!(glob_match("é?", "éx"));
        assert!(!glob_match("edge", "edge-1"));
    }

    /// Empty selectors, bad keys and values over the bounds are refused with a reason.
    #[test]
    fn selectors_and_labels_are_bounded() {
        assert!(Selector::default().check().is_err());
        let too_many: Labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(check_labels(&too_many).is_err());
        assert!(check_labels(&labels(&[("bad key", "v")])).is_err());
        assert!(check_labels(&labels(&[("k", &"v".repeat(MAX_LABEL_CHARS + 1))])).is_err());
        let long_glob = Selector {
            labels: Labels::new(),
            name: Some("x".repeat(MAX_NAME_GLOB_CHARS + 1)),
        };
        assert!(long_glob.check().is_err());
        assert_eq!(
            parse_label("env=prod"),
            Ok(("env".to_owned(), "prod".to_owned()))
        );
        assert!(parse_label("envprod").is_err());
        assert!(serde_json::from_str::<Selector>(r#"{"labels":{"a":"b"},"bogus":1}"#).is_err());
    }
}
