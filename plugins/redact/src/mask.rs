//! The masking logic, independent of the component bindings so it is unit-tested natively.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use regex::{Captures, Regex, RegexBuilder};

/// Most extra patterns a config may add.
pub const MAX_PATTERNS: usize = 32;
/// Longest extra pattern, in bytes (as for the built-in `pattern` filter).
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Compiled-size cap per regex (as for the built-in `pattern` filter).
pub const MAX_PATTERN_COMPILED_BYTES: usize = 1 << 20;

const EMAIL: &str = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}";
/// IPv6 candidates: hex groups with at least two colons, maybe an IPv4 tail. Each candidate is
/// checked with `Ipv6Addr`'s parser and must not touch word characters, so times (`12:30:45`),
/// MAC addresses and `module::path`s are left alone.
const IPV6_CANDIDATE: &str = r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}";
/// IPv4 candidates: dotted digit runs, checked with `Ipv4Addr`'s parser and for isolation, so
/// version strings (`1.2.3.4.5`) and out-of-range octets are left alone.
const IPV4_CANDIDATE: &str = r"[0-9]+(?:\.[0-9]+)+";
/// `key=value` / `key: value` secrets; the value may be quoted.
const SECRET: &str = r#"(?i)\b(password|passwd|pwd|token|secret|api[_-]?key)(\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&]+)"#;

/// Masks what a config asks for. Built once per session.
pub struct Masker {
    defaults: Option<Defaults>,
    extra: Vec<Regex>,
    replacement: String,
}

/// The default maskers.
struct Defaults {
    email: Regex,
    ipv6: Regex,
    ipv4: Regex,
    secret: Regex,
}

fn build(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(MAX_PATTERN_COMPILED_BYTES)
        .build()
}

impl Masker {
    /// A masker with the defaults (if `defaults`) plus `patterns`, each replaced by
    /// `replacement`. Errors name the offending pattern.
    pub fn new(defaults: bool, patterns: &[String], replacement: &str) -> Result<Masker, String> {
        if patterns.len() > MAX_PATTERNS {
            return Err(format!("redact: at most {MAX_PATTERNS} patterns"));
        }
        let mut extra = Vec::with_capacity(patterns.len());
        for (i, pattern) in patterns.iter().enumerate() {
            if pattern.len() > MAX_PATTERN_BYTES {
                return Err(format!(
                    "redact: patterns[{i}] is over {MAX_PATTERN_BYTES} bytes"
                ));
            }
            extra.push(build(pattern).map_err(|e| format!("redact: patterns[{i}]: {e}"))?);
        }
        let defaults = if defaults {
            // The default expressions are constants, tested below; a failure is a bug.
            let compiled = (|| -> Result<Defaults, regex::Error> {
                Ok(Defaults {
                    email: build(EMAIL)?,
                    ipv6: build(IPV6_CANDIDATE)?,
                    ipv4: build(IPV4_CANDIDATE)?,
                    secret: build(SECRET)?,
                })
            })();
            Some(compiled.map_err(|e| format!("redact: built-in pattern: {e}"))?)
        } else {
            None
        };
        Ok(Masker {
            defaults,
            extra,
            replacement: replacement.to_owned(),
        })
    }

    /// The masked message, or `None` when nothing needed masking.
    pub fn mask(&self, message: &str) -> Option<String> {
        let mut text = Cow::Borrowed(message);
        if let Some(d) = &self.defaults {
            // Secrets first (a password may look like an address), IPv6 before IPv4 (an
            // IPv6 address may end in dotted IPv4).
            replace(&mut text, &d.secret, |c: &Captures<'_>| {
                format!("{}{}***", &c[1], &c[2])
            });
            replace(&mut text, &d.email, |_: &Captures<'_>| "<email>".to_owned());
            mask_parsed(&mut text, &d.ipv6, "<ipv6>", |s| {
                s.parse::<Ipv6Addr>().is_ok()
            });
            mask_parsed(&mut text, &d.ipv4, "<ipv4>", |s| {
                s.parse::<Ipv4Addr>().is_ok()
            });
        }
        for re in &self.extra {
            replace(&mut text, re, |_: &Captures<'_>| self.replacement.clone());
        }
        match text {
            Cow::Borrowed(_) => None,
            Cow::Owned(masked) => Some(masked),
        }
    }
}

/// Replaces every match of `re` in `text`, allocating only if something matched.
fn replace(text: &mut Cow<'_, str>, re: &Regex, with: impl FnMut(&Captures<'_>) -> String) {
    if let Cow::Owned(new) = re.replace_all(text, with) {
        *text = Cow::Owned(new);
    }
}

/// Replaces with `label` the matches of `re` that pass `valid` and stand alone (no word
/// character on either side, no `.` before). Candidates are maximal runs, so a `:` next to one
/// is a port or a separator, not part of it.
fn mask_parsed(text: &mut Cow<'_, str>, re: &Regex, label: &str, valid: impl Fn(&str) -> bool) {
    let mut out = String::new();
    let mut last = 0;
    let mut masked = false;
    for m in re.find_iter(text) {
        let before = text[..m.start()].chars().next_back();
        let after = text[m.end()..].chars().next();
        // A `.` may end a sentence after an address, not precede one.
        let isolated =
            !before.is_some_and(|c| is_word(c) || c == '.') && !after.is_some_and(is_word);
        if isolated && valid(m.as_str()) {
            out.push_str(&text[last..m.start()]);
            out.push_str(label);
            last = m.end();
            masked = true;
        }
    }
    if masked {
        out.push_str(&text[last..]);
        *text = Cow::Owned(out);
    }
}

/// Characters that make an address candidate part of a longer token.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Masker {
        Masker::new(true, &[], "***").unwrap()
    }

    #[test]
    fn masks_emails_and_addresses() {
        let m = defaults();
        assert_eq!(
            m.mask("from alice.b+x@mail.example.org to 10.0.0.254")
                .as_deref(),
            Some("from <email> to <ipv4>")
        );
        assert_eq!(
            m.mask("connect 10.1.2.3:8080 failed; retry from 192.168.0.1.")
                .as_deref(),
            Some("connect <ipv4>:8080 failed; retry from <ipv4>.")
        );
        assert_eq!(
            m.mask("peer 2001:db8::1 and [fe80::1ff:fe23:4567:890a]:443")
                .as_deref(),
            Some("peer <ipv6> and [<ipv6>]:443")
        );
        assert_eq!(
            m.mask("loopback ::1 up").as_deref(),
            Some("loopback <ipv6> up")
        );
        assert_eq!(
            m.mask("mapped ::ffff:192.168.1.1 ok").as_deref(),
            Some("mapped <ipv6> ok")
        );
    }

    #[test]
    fn leaves_lookalikes_alone() {
        let m = defaults();
        for text in [
            "at 12:30:45 the job ran",
            "mac aa:bb:cc:dd:ee:ff seen",
            "in std::fs::read failed",
            "version 1.2.3.4.5",
            "999.1.1.1 is not an address",
            "plain text",
        ] {
            assert_eq!(m.mask(text), None, "{text}");
        }
    }

    #[test]
    fn masks_secret_values_keeping_keys() {
        let m = defaults();
        assert_eq!(
            m.mask("login password=hunter2 user=bob").as_deref(),
            Some("login password=*** user=bob")
        );
        assert_eq!(
            m.mask(r#"Token: "abc def" secret='x y' api_key=K1&x=1"#)
                .as_deref(),
            Some(r#"Token: *** secret=*** api_key=***&x=1"#)
        );
    }

    #[test]
    fn extra_patterns_and_no_defaults() {
        let m = Masker::new(false, &[r"card=\d+".into()], "[gone]").unwrap();
        assert_eq!(
            m.mask("card=4111111111111111 from 1.2.3.4").as_deref(),
            Some("[gone] from 1.2.3.4")
        );
        assert!(Masker::new(true, &["(".into()], "x").is_err());
    }
}
