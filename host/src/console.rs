//! The web console: a single page served at `/`, its script and its stylesheet, all embedded
//! in the binary at build time (`include_bytes!`), so the host needs no files, Node.js or CDN
//! at run time.
//!
//! The page is built from `host/console/src` with esbuild into `host/console/dist`, which is
//! committed: a fresh clone builds the host with cargo alone, and `scripts/console-build.sh
//! --check` (run by `.ci/run`) fails when the committed bundle differs from its sources.
//!
//! Policy: every console answer carries [`CSP`], which allows only this origin's script,
//! style and connections (no `unsafe-inline`, no `eval`, no framing), plus `nosniff` and
//! `no-referrer`. The page keeps the token in `sessionStorage` and sends it only in
//! `Authorization` headers (REST) and as the session WebSocket's subprotocol
//! `logfleet.token.<JWT>` (browsers cannot set headers on a WebSocket; see [`crate::auth`]),
//! never in a URL. The console routes live
//! outside the API's route table: they are not API endpoints and are not in the OpenAPI
//! document.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

/// The page: markup only; script and style come from the two files below.
const INDEX_HTML: &[u8] = include_bytes!("../console/dist/index.html");
/// The bundled script (the page's code and `@logfleet/client`).
const APP_JS: &[u8] = include_bytes!("../console/dist/app.js");
/// The stylesheet (light and dark themes).
const APP_CSS: &[u8] = include_bytes!("../console/dist/app.css");

/// Where the script and stylesheet are served; the page links them by these paths.
pub const SCRIPT_PATH: &str = "/console/app.js";
pub const STYLE_PATH: &str = "/console/app.css";

/// The Content-Security-Policy of every console answer: same-origin script, style, fetches
/// and WebSockets (`'self'` covers `ws:`/`wss:` to this host in CSP 3) and images; nothing
/// inline, no `eval`, no `<base>`, no form posts, no framing. (The sparklines are SVG built
/// through the DOM, which needs no `img-src`; downloads are `blob:` links, which CSP does not
/// govern.)
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// The console's routes, merged into the host's router beside the API's.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            SCRIPT_PATH,
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            STYLE_PATH,
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
}

/// One embedded file with the console's security headers. `no-cache` makes the browser
/// revalidate, so a host upgrade is never served a stale script.
fn asset(body: &'static [u8], content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page links exactly the script and stylesheet the host serves, and has no inline
    /// script or style the CSP would block.
    #[test]
    fn the_page_links_the_served_assets_and_nothing_inline() {
        let html = std::str::from_utf8(INDEX_HTML).unwrap();
        assert!(html.contains(&format!("src=\"{SCRIPT_PATH}\"")), "{html}");
        assert!(html.contains(&format!("href=\"{STYLE_PATH}\"")), "{html}");
        assert!(!html.contains("<style"), "inline style");
        assert_eq!(html.matches("<script").count(), 1, "one external script");
        assert!(!html.contains(" style="), "inline style attribute");
        assert!(!html.contains("onclick"), "inline handler");
        assert!(!CSP.contains("unsafe"));
    }
}
