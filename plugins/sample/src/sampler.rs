//! Sampling state, independent of the component bindings so it is unit-tested natively.

/// Decides, record by record, whether a sampled stream keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sampler {
    /// Keep one record, then skip `n - 1`.
    OneIn { n: u64, seen: u64 },
    /// Keep at most `limit` records per second of record time.
    PerSecond {
        limit: u64,
        /// The second being counted (ms timestamp / 1000).
        second: i64,
        kept: u64,
    },
}

impl Sampler {
    /// Keeps 1 record in `n` (`n >= 1`).
    pub fn one_in(n: u64) -> Result<Sampler, String> {
        if n == 0 {
            return Err("sample: `one_in` must be at least 1".to_owned());
        }
        Ok(Sampler::OneIn { n, seen: 0 })
    }

    /// Keeps at most `limit` records per second (`limit >= 1`).
    pub fn per_second(limit: u64) -> Result<Sampler, String> {
        if limit == 0 {
            return Err("sample: `per_second` must be at least 1".to_owned());
        }
        Ok(Sampler::PerSecond {
            limit,
            second: i64::MIN,
            kept: 0,
        })
    }

    /// Whether [`Sampler::keep`] looks at timestamps.
    pub fn needs_time(&self) -> bool {
        matches!(self, Sampler::PerSecond { .. })
    }

    /// Whether to keep the next record, read at `timestamp_ms`. Records from an earlier second
    /// than the current one (interleaved sources) count against the current second.
    pub fn keep(&mut self, timestamp_ms: i64) -> bool {
        match self {
            Sampler::OneIn { n, seen } => {
                let keep = *seen % *n == 0;
                *seen = seen.wrapping_add(1);
                keep
            }
            Sampler::PerSecond {
                limit,
                second,
                kept,
            } => {
                let now = timestamp_ms.div_euclid(1000);
                if now > *second {
                    *second = now;
                    *kept = 0;
                }
                let keep = *kept < *limit;
                if keep {
                    *kept += 1;
                }
                keep
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_in_three() {
        let mut s = Sampler::one_in(3).unwrap();
        let kept: Vec<bool> = (0..7).map(|_| s.keep(0)).collect();
        assert_eq!(kept, [true, false, false, true, false, false, true]);
    }

    #[test]
    fn per_second_resets_each_second_and_tolerates_late_records() {
        let mut s = Sampler::per_second(2).unwrap();
        assert!(s.keep(10_000));
        assert!(s.keep(10_100));
        assert!(!s.keep(10_900));
        assert!(!s.keep(9_000)); // late: counts against second 10
        assert!(s.keep(11_000));
        assert!(s.keep(11_001));
        assert!(!s.keep(11_002));
    }

    #[test]
    fn zero_is_refused() {
        assert!(Sampler::one_in(0).is_err());
        assert!(Sampler::per_second(0).is_err());
    }
}
