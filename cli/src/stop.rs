//! Stopping sessions on the way out, so an interrupted or failed stream leaves nothing
//! streaming on the host, or says plainly which session it left.
//!
//! Policy: every session is stopped with retries (backoff from [`crate::retry`]) on a fresh
//! connection each time (a pooled one may be the broken one), all sessions together within
//! [`STOP_TIMEOUT`] so a dead host cannot hang Ctrl-C. `session_not_found` means it ended
//! already, which is success. What still failed is returned, not logged, so the caller can
//! say it once, in its own words.

use std::time::Duration;

use logfleet_protocol::rest::Session;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::Error;
use crate::retry::{Backoff, is_transient};

/// How long stopping the sessions may take in all, retries included.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A session that could not be stopped: it stays active on the host until it expires.
#[derive(Debug)]
pub struct NotStopped {
    pub session_id: String,
    /// Its expiry, as the host stated it when it started.
    pub expires_at: String,
    /// Why the last attempt to stop it failed.
    pub error: Error,
}

/// Stops `sessions` (see the module docs); returns the ones that could not be stopped.
pub async fn stop_all(client: &Client, sessions: Vec<Session>) -> Vec<NotStopped> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut failed = Vec::new();
    for session in sessions {
        match stop_one(client, &session.id, deadline).await {
            None => tracing::debug!(session = %session.id, "session stopped"),
            Some(error) => failed.push(NotStopped {
                session_id: session.id,
                expires_at: session.expires_at,
                error,
            }),
        }
    }
    failed
}

/// Stops one session by `deadline`; the last error when it could not.
async fn stop_one(client: &Client, id: &str, deadline: Instant) -> Option<Error> {
    let mut client = client.clone();
    let mut backoff = Backoff::default();
    loop {
        let error = match tokio::time::timeout_at(deadline, client.stop(id)).await {
            Ok(Ok(_)) => return None,
            Ok(Err(e)) if e.code() == Some("session_not_found") => return None,
            Ok(Err(e)) => e,
            Err(_) => Error::Network {
                url: client.base_url().to_string(),
                detail: format!("no answer within {}s", STOP_TIMEOUT.as_secs()),
            },
        };
        let delay = backoff.delay();
        if !is_transient(&error) || Instant::now() + delay >= deadline {
            return Some(error);
        }
        tracing::debug!(session = %id, %error, "stopping failed; retrying");
        tokio::time::sleep(delay).await;
        // A pooled connection may be the broken one: the retry opens its own.
        if let Ok(fresh) = client.fresh() {
            client = fresh;
        }
    }
}
