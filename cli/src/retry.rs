//! When to try again after a failure the host or the network may recover from, and which
//! failures those are.
//!
//! Policy: exponential backoff from [`INITIAL_BACKOFF`], doubling up to [`MAX_BACKOFF`], each
//! delay drawn uniformly from its upper half ("equal jitter"), so a fleet of CLIs cut off by the
//! same outage does not come back in lock step, yet none waits less than half the nominal delay.
//! A success resets it. Only failures that can heal by waiting are retried: the network, an
//! offline agent, a proxy's 502/503/504, a busy host (429). Everything else (bad token, unknown
//! agent, invalid request) is final at once.

use std::time::Duration;

use crate::error::Error;

/// The first delay after a failure.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// The longest delay between two attempts: a host that comes back is noticed within this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Exponential backoff with jitter (see the module docs).
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    /// Failures since the last success (or since creation).
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: INITIAL_BACKOFF,
            failures: 0,
        }
    }
}

impl Backoff {
    /// The delay before the next attempt; grows the one after it.
    pub fn delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        let half = nominal / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Failures since the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a success: the next failure starts from [`INITIAL_BACKOFF`] again.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// Whether `e` may go away by trying again later.
pub fn is_transient(e: &Error) -> bool {
    match e {
        Error::Network { .. } | Error::StreamClosed { .. } => true,
        Error::Api { status, .. } => matches!(status, 409 | 429 | 502 | 503 | 504),
        Error::MissingToken
        | Error::InvalidUrl { .. }
        | Error::CaCert { .. }
        | Error::Usage(_)
        | Error::Protocol(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delays grow, stay within [half, full] of their nominal value, and never exceed the cap.
    #[test]
    fn delays_grow_with_jitter_up_to_the_cap() {
        let mut b = Backoff::default();
        let mut nominal = INITIAL_BACKOFF;
        for _ in 0..12 {
            let d = b.delay();
            assert!(d >= nominal / 2 && d <= nominal, "{d:?} vs {nominal:?}");
            nominal = (nominal * 2).min(MAX_BACKOFF);
        }
        assert_eq!(b.failures(), 12);
        b.reset();
        assert!(b.delay() <= INITIAL_BACKOFF);
    }

    /// Offline agents and network trouble are retried; refusals are not.
    #[test]
    fn only_recoverable_failures_are_transient() {
        let api = |status| Error::from_response(status, b"");
        assert!(is_transient(&api(409)));
        assert!(is_transient(&api(503)));
        assert!(!is_transient(&api(401)));
        assert!(!is_transient(&api(404)));
        assert!(!is_transient(&api(400)));
        assert!(is_transient(&Error::Network {
            url: "u".into(),
            detail: "refused".into()
        }));
    }
}
