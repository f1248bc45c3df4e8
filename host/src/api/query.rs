//! Query strings, read with axum's `Query` (percent-decoded, `+` as space) and refused with
//! our JSON error (400 `invalid_request`) when malformed, when a value does not fit its type,
//! or when a key is given twice: `limit=1&limit=abc` is ambiguous, and taking either would
//! hide a client's bug.

use axum::extract::FromRequestParts;
use axum::http::Uri;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, echo};

/// A handler's typed query parameters. Unknown keys are ignored (a WebSocket URL also carries
/// `?token=`); known ones must parse.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse(&parts.uri).map(Query)
    }
}

/// The query of `uri` as `T`; see the module docs for what is refused.
pub fn parse<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    pairs(uri)?;
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| invalid(e.body_text()))
}

/// Every `key=value` pair, decoded, in order.
fn decoded(uri: &Uri) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| invalid(e.body_text()))
}

/// Every `key=value` pair, decoded, in order; a key given twice is refused.
fn pairs(uri: &Uri) -> Result<Vec<(String, String)>, ApiError> {
    pairs_repeating(uri, None)
}

/// As [`pairs`], but `repeatable` may be given any number of times.
fn pairs_repeating(uri: &Uri, repeatable: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let pairs = decoded(uri)?;
    for (i, (key, _)) in pairs.iter().enumerate() {
        if Some(key.as_str()) != repeatable && pairs[..i].iter().any(|(k, _)| k == key) {
            return Err(invalid(format!(
                "query parameter `{}` is given more than once",
                echo(key)
            )));
        }
    }
    Ok(pairs)
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_request", message)
}

/// The decoded value of query parameter `key`, if it is given exactly once. Other keys are
/// not judged here: the handler's own [`Query`] refuses what is wrong with them.
pub fn query_param(uri: &Uri, key: &str) -> Option<String> {
    let mut values = decoded(uri)
        .ok()?
        .into_iter()
        .filter_map(|(k, v)| (k == key).then_some(v));
    let value = values.next()?;
    values.next().is_none().then_some(value)
}

/// Query parameter `key`, if present; a 400 for a malformed query or a key given twice.
pub fn query_text(uri: &Uri, key: &str) -> Result<Option<String>, ApiError> {
    Ok(pairs(uri)?
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v)))
}

/// Every value of query parameter `key`, which may repeat (`?label=a=1&label=b=2`); a 400 for a
/// malformed query or another key given twice.
pub fn query_values(uri: &Uri, key: &str) -> Result<Vec<String>, ApiError> {
    Ok(pairs_repeating(uri, Some(key))?
        .into_iter()
        .filter_map(|(k, v)| (k == key).then_some(v))
        .collect())
}

/// Query parameter `key` as a non-negative integer, if present; a 400 naming it otherwise
/// (also for a malformed query or a key given twice).
pub fn query_count<T: std::str::FromStr>(uri: &Uri, key: &str) -> Result<Option<T>, ApiError> {
    query_count_repeating(uri, key, None)
}

/// As [`query_count`], in a query where `repeatable` may repeat.
pub fn query_count_repeating<T: std::str::FromStr>(
    uri: &Uri,
    key: &str,
    repeatable: Option<&str>,
) -> Result<Option<T>, ApiError> {
    pairs_repeating(uri, repeatable)?
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
        .map(|v| {
            v.parse()
                .map_err(|_| invalid(format!("{key} must be a non-negative integer")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Page {
        limit: Option<u32>,
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn decoded_and_duplicates_refused() {
        assert_eq!(
            parse::<Page>(&uri("/x?limit=%31&token=a")).unwrap(),
            Page { limit: Some(1) }
        );
        assert_eq!(parse::<Page>(&uri("/x")).unwrap(), Page { limit: None });
        assert!(parse::<Page>(&uri("/x?limit=abc")).is_err());
        let dup = parse::<Page>(&uri("/x?limit=1&limit=abc")).unwrap_err();
        assert!(dup.message.contains("more than once"), "{}", dup.message);
        assert_eq!(
            query_count::<u32>(&uri("/x?limit=%32"), "limit").unwrap(),
            Some(2)
        );
        assert!(query_count::<u32>(&uri("/x?limit=1&limit=1"), "limit").is_err());
        let labels = uri("/x?label=env%3Dprod&label=role=edge&limit=2");
        assert_eq!(
            query_values(&labels, "label").unwrap(),
            ["env=prod", "role=edge"]
        );
        assert!(query_values(&uri("/x?label=a=b&limit=1&limit=2"), "label").is_err());
        assert_eq!(
            query_param(&uri("/x?token=a%2Eb"), "token").as_deref(),
            Some("a.b")
        );
        assert_eq!(query_param(&uri("/x?token=a&token=b"), "token"), None);
        assert_eq!(
            query_param(&uri("/x?token=a&n=1&n=2"), "token").as_deref(),
            Some("a")
        );
    }
}
