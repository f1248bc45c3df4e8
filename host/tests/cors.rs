//! Cross-origin access (`--cors-origin`) on a real host: a listed origin's preflights and
//! requests are allowed, every other origin's are not, and without the option there is no
//! CORS at all.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use reqwest::Method;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, AUTHORIZATION, HeaderMap,
    ORIGIN, VARY,
};
use testkit::TestHost;

const ALLOWED: &str = "https://app.example.com";
const OTHER: &str = "https://evil.example.net";

async fn host_allowing(origins: &[&str]) -> TestHost {
    let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
    TestHost::start_with(move |c| c.cors_origins = origins).await
}

/// A browser's preflight for `POST /api/v1/stream/start` with a bearer token and JSON, from
/// `origin`: the answer's status and headers.
async fn preflight(host: &TestHost, origin: &str) -> (u16, HeaderMap) {
    let resp = reqwest::Client::new()
        .request(
            Method::OPTIONS,
            format!("{}/api/v1/stream/start", host.base),
        )
        .header(ORIGIN, origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type")
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.headers().clone())
}

/// `GET /api/v1/agents` from `origin` with `token`: status and headers.
async fn get_agents(host: &TestHost, origin: &str, token: &str) -> (u16, HeaderMap) {
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/agents", host.base))
        .header(ORIGIN, origin)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.headers().clone())
}

fn header<'h>(headers: &'h HeaderMap, name: &reqwest::header::HeaderName) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A listed origin may preflight the API's methods and headers, and its requests (successful
/// or refused) are readable by its pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_origin_is_allowed() {
    let host = host_allowing(&[ALLOWED, "http://localhost:5173"]).await;
    let (status, headers) = preflight(&host, ALLOWED).await;
    assert!((200..300).contains(&status), "{status}");
    assert_eq!(header(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN), ALLOWED);
    assert!(header(&headers, &ACCESS_CONTROL_ALLOW_METHODS).contains("POST"));
    let allowed_headers = header(&headers, &ACCESS_CONTROL_ALLOW_HEADERS).to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization") && allowed_headers.contains("content-type"),
        "{allowed_headers}"
    );

    let token = host.user_token("acme", "alice");
    let (status, headers) = get_agents(&host, ALLOWED, &token).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN), ALLOWED);
    assert!(
        header(&headers, &VARY)
            .to_ascii_lowercase()
            .contains("origin"),
        "{headers:?}"
    );
    // An error answer is readable too, so a page can show the host's message.
    let (status, headers) = get_agents(&host, "http://localhost:5173", "not-a-jwt").await;
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
        "http://localhost:5173"
    );
}

/// An origin that is not listed gets no CORS permission, for preflights and requests alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_origins_are_refused() {
    let host = host_allowing(&[ALLOWED]).await;
    let (_, headers) = preflight(&host, OTHER).await;
    assert!(
        headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "{headers:?}"
    );
    let token = host.user_token("acme", "alice");
    let (_, headers) = get_agents(&host, OTHER, &token).await;
    assert!(
        headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "{headers:?}"
    );
}

/// Without `--cors-origin` no origin is allowed: CORS is off by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default() {
    let host = host_allowing(&[]).await;
    let (_, headers) = preflight(&host, ALLOWED).await;
    assert!(
        headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "{headers:?}"
    );
    let token = host.user_token("acme", "alice");
    let (status, headers) = get_agents(&host, ALLOWED, &token).await;
    assert_eq!(status, 200);
    assert!(
        headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "{headers:?}"
    );
}
