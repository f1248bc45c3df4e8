//! Per-session rate limiting: token buckets for lines/s and bytes/s.
//!
//! Each bucket holds at most one second of its rate (the allowed burst) and refills
//! continuously. A record passes only if both buckets allow it; what does not pass is counted
//! by the session and reported as `rate_limited` drops.

use std::time::Instant;

use logfleet_protocol::agent::RateLimits;

/// One token bucket. A rate of 0 means "no limit" (the host always sends effective limits, so
/// 0 only appears if an operator configured the host that way on purpose).
#[derive(Debug, Clone)]
struct Bucket {
    /// Tokens per second, also the bucket's capacity.
    rate: f64,
    tokens: f64,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket { rate, tokens: rate }
    }

    fn refill(&mut self, elapsed_s: f64) {
        self.tokens = (self.tokens + elapsed_s * self.rate).min(self.rate);
    }

    /// Whether `cost` tokens are available. A cost above the capacity (one line longer than a
    /// second's worth of bytes) passes when the bucket is full, and leaves it in debt, so such
    /// lines are slowed down rather than blocked forever.
    fn allows(&self, cost: f64) -> bool {
        self.rate == 0.0 || self.tokens >= cost.min(self.rate)
    }

    fn take(&mut self, cost: f64) {
        if self.rate > 0.0 {
            self.tokens -= cost;
        }
    }
}

/// The rate limiter of one session.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    lines: Bucket,
    bytes: Bucket,
    last: Instant,
}

impl RateLimiter {
    pub fn new(limits: RateLimits, now: Instant) -> RateLimiter {
        RateLimiter {
            lines: Bucket::new(f64::from(limits.lines_per_second)),
            bytes: Bucket::new(limits.bytes_per_second as f64),
            last: now,
        }
    }

    /// Whether a record of `bytes` bytes may pass at `now`; takes its tokens if so.
    pub fn allow(&mut self, bytes: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.lines.refill(elapsed);
        self.bytes.refill(elapsed);
        let cost = bytes as f64;
        if self.lines.allows(1.0) && self.bytes.allows(cost) {
            self.lines.take(1.0);
            self.bytes.take(cost);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(lines: u32, bytes: u64) -> RateLimits {
        RateLimits {
            lines_per_second: lines,
            bytes_per_second: bytes,
        }
    }

    #[test]
    fn line_limit_allows_a_burst_then_refills() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(limits(10, 0), t0);
        let passed = (0..25).filter(|_| rl.allow(10, t0)).count();
        assert_eq!(passed, 10);
        // 100 ms refills one line.
        assert!(rl.allow(10, t0 + Duration::from_millis(100)));
        assert!(!rl.allow(10, t0 + Duration::from_millis(100)));
        // A long pause refills only up to the one-second burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..25).filter(|_| rl.allow(10, later)).count(), 10);
    }

    #[test]
    fn byte_limit() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(limits(0, 1000), t0);
        assert_eq!((0..20).filter(|_| rl.allow(100, t0)).count(), 10);
        assert!(rl.allow(50, t0 + Duration::from_millis(50)));
        assert!(!rl.allow(50, t0 + Duration::from_millis(50)));
    }

    #[test]
    fn oversized_line_passes_when_full_and_leaves_debt() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(limits(0, 100), t0);
        assert!(rl.allow(250, t0));
        // 150 bytes of debt at 100 B/s: still blocked after 1 s, free after 2 s.
        assert!(!rl.allow(1, t0 + Duration::from_secs(1)));
        assert!(rl.allow(1, t0 + Duration::from_secs(2)));
    }

    #[test]
    fn both_limits_apply() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(limits(100, 300), t0);
        assert_eq!((0..10).filter(|_| rl.allow(100, t0)).count(), 3);
        let mut rl = RateLimiter::new(limits(2, 1_000_000), t0);
        assert_eq!((0..10).filter(|_| rl.allow(1, t0)).count(), 2);
    }

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(limits(0, 0), t0);
        assert!((0..10_000).all(|_| rl.allow(1_000_000, t0)));
    }
}
