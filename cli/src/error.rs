//! The one error type of the client library, and the exit code each kind maps to.
//!
//! Scripts branch on the exit code, so every failure a user can act on differently has its
//! own: fix the token, fix the agent name, wait for the agent, fix the network.

use logfleet_protocol::rest::ErrorBody;

/// Process exit codes of `logfleet`. Documented in `--help` and the README; do not renumber.
pub mod exit {
    /// Success (also: the stream ended because its session timed out or was stopped, or
    /// stdout was closed by the reader, e.g. `| head`).
    pub const OK: u8 = 0;
    /// Any failure not listed below.
    pub const OTHER: u8 = 1;
    /// Bad usage: invalid arguments, or a request the host refused as invalid (400).
    pub const USAGE: u8 = 2;
    /// Authentication or authorisation failed: no token, or the host answered 401/403.
    pub const AUTH: u8 = 3;
    /// The agent, session or plugin does not exist (404).
    pub const NOT_FOUND: u8 = 4;
    /// The agent is known but offline (409).
    pub const AGENT_OFFLINE: u8 = 5;
    /// The host could not be reached, the connection was lost, or the host shut down.
    pub const NETWORK: u8 = 6;
    /// Interrupted by Ctrl-C (SIGINT) or SIGTERM, after stopping the session(s) on the host.
    pub const INTERRUPTED: u8 = 130;
}

/// Why a call to the host failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host answered with an error body (`{"error": {"code", "message"}}`).
    #[error("{message} ({status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The host could not be reached or the connection broke.
    #[error("cannot reach the host at {url}: {detail}")]
    Network { url: String, detail: String },
    /// A session stream closed without saying the session ended.
    #[error("the stream of session {session_id} closed unexpectedly: {detail}")]
    StreamClosed { session_id: String, detail: String },
    /// No token was configured.
    #[error("no token: set LOGFLEET_TOKEN or pass --token")]
    MissingToken,
    /// The configured host URL is not a usable http(s) URL.
    #[error("invalid host URL '{url}': {detail}")]
    InvalidUrl { url: String, detail: String },
    /// The `--ca-cert` file could not be read or holds no usable CA certificate.
    #[error("cannot use the CA certificate file {path}: {detail}")]
    CaCert { path: String, detail: String },
    /// An argument the CLI itself refuses (an unknown level in `--level X+`, say).
    #[error("{0}")]
    Usage(String),
    /// The host answered something this client does not understand.
    #[error("unexpected answer from the host: {0}")]
    Protocol(String),
}

impl Error {
    /// Builds an [`Error::Api`] from a non-success status and the response body, which is
    /// normally the documented error body but may be anything (e.g. from a proxy).
    pub fn from_response(status: u16, body: &[u8]) -> Error {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => Error::Api {
                status,
                code: b.error.code,
                message: b.error.message,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                Error::Api {
                    status,
                    code: format!("http_{status}"),
                    message: if text.is_empty() {
                        "the host gave no details".to_owned()
                    } else {
                        text.chars().take(MAX_ERROR_TEXT_CHARS).collect()
                    },
                }
            }
        }
    }

    /// The `logfleet` exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Api { status, .. } => match status {
                401 | 403 => exit::AUTH,
                404 => exit::NOT_FOUND,
                409 => exit::AGENT_OFFLINE,
                400 | 413 | 422 => exit::USAGE,
                _ => exit::OTHER,
            },
            Error::Network { .. } | Error::StreamClosed { .. } => exit::NETWORK,
            Error::MissingToken => exit::AUTH,
            Error::InvalidUrl { .. } | Error::CaCert { .. } | Error::Usage(_) => exit::USAGE,
            Error::Protocol(_) => exit::OTHER,
        }
    }

    /// The API error code (`agent_not_found`, …), if the host sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A non-JSON error body (say, a proxy's HTML page) is cut to this many characters.
const MAX_ERROR_TEXT_CHARS: usize = 200;

/// The innermost cause of an error chain: `reqwest` and `tungstenite` wrap the useful part
/// ("Connection refused") in layers of context.
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_map_to_exit_codes() {
        let e = Error::from_response(
            404,
            br#"{"error":{"code":"agent_not_found","message":"no agent 'x'"}}"#,
        );
        assert_eq!(e.code(), Some("agent_not_found"));
        assert_eq!(e.exit_code(), exit::NOT_FOUND);
        assert_eq!(e.to_string(), "no agent 'x' (404 agent_not_found)");
        assert_eq!(Error::from_response(401, b"").exit_code(), exit::AUTH);
        assert_eq!(
            Error::from_response(409, b"x").exit_code(),
            exit::AGENT_OFFLINE
        );
        assert_eq!(
            Error::from_response(502, b"<html>").code(),
            Some("http_502")
        );
    }
}
