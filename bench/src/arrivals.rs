//! What an end-to-end latency run records of each stamped line that reaches its reader, and the
//! one-line report it prints. `latency` (LogFleet: file → agent → host → WebSocket client) and
//! `rsyslog` (file → rsyslogd → TCP sink) both count through [`Arrivals`], so their figures are
//! the same arithmetic over the same lines ([`crate::write::timestamped`]) and can be set side by
//! side.

use crate::rig::percentile;
use crate::write::{now_ns, stamp_of};

/// Filler bytes per stamped line: with the stamp and the number a line is ≈ 100 bytes, a short
/// application log line. Both systems get the same lines.
pub const LINE_PAD: usize = 60;

/// Latencies, sequence breaks and reported drops of one run, as lines arrive.
pub struct Arrivals {
    /// Arrival − write time of every stamped line received, in milliseconds.
    latencies_ms: Vec<f64>,
    last_seq: Option<u64>,
    /// Times the sequence did not go up by exactly one: each is at least one line lost (or
    /// reordered) on the way.
    gaps: u64,
    /// Lines the system itself said it dropped; `None` for a system that has no such report
    /// (rsyslog's TCP forward), printed as `n/a` rather than a 0 it never claimed.
    dropped_reported: Option<u64>,
}

impl Arrivals {
    /// An empty record for a run of `total` lines; `reports_drops` when the system tells its
    /// reader about lines it dropped.
    pub fn new(total: u64, reports_drops: bool) -> Arrivals {
        Arrivals {
            latencies_ms: Vec::with_capacity(usize::try_from(total).unwrap_or(0)),
            last_seq: None,
            gaps: 0,
            dropped_reported: reports_drops.then_some(0),
        }
    }

    /// Records a line that arrived at `arrived_ns` (read from the clock as soon as the reader
    /// had it) carrying `message`, numbered `seq` by the system. Returns false, recording
    /// nothing, for a line without a stamp.
    pub fn record(&mut self, arrived_ns: u128, message: &str, seq: Option<u64>) -> bool {
        let Some(sent) = stamp_of(message) else {
            return false;
        };
        self.latencies_ms
            .push(arrived_ns.saturating_sub(sent) as f64 / 1e6);
        if let Some(seq) = seq {
            if let Some(prev) = self.last_seq
                && seq != prev + 1
            {
                self.gaps += 1;
            }
            self.last_seq = Some(seq);
        }
        true
    }

    /// [`Arrivals::record`] with the arrival time read now.
    pub fn record_now(&mut self, message: &str, seq: Option<u64>) -> bool {
        self.record(now_ns(), message, seq)
    }

    /// Adds lines the system reported dropped.
    pub fn dropped(&mut self, count: u64) {
        *self.dropped_reported.get_or_insert(0) += count;
    }

    /// Lines accounted for so far: received, plus reported dropped. A run waits for `total`.
    pub fn accounted(&self) -> u64 {
        self.latencies_ms.len() as u64 + self.dropped_reported.unwrap_or(0)
    }

    /// The report line, `name rate=… lines=… received=… dropped_reported=… seq_gaps=… p50=…
    /// p99=… max=…`, the same for every system.
    pub fn report(mut self, name: &str, rate: u64, total: u64) -> String {
        self.latencies_ms.sort_by(f64::total_cmp);
        let dropped = self
            .dropped_reported
            .map_or_else(|| "n/a".to_owned(), |d| d.to_string());
        format!(
            "{name} rate={rate}/s lines={total} received={} dropped_reported={dropped} seq_gaps={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
            self.latencies_ms.len(),
            self.gaps,
            percentile(&self.latencies_ms, 0.50),
            percentile(&self.latencies_ms, 0.99),
            self.latencies_ms.last().copied().unwrap_or(f64::NAN)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::timestamped;

    /// A line's latency is its reader's arrival time minus the write time stamped in it.
    #[test]
    fn latency_is_arrival_minus_stamp() {
        let mut arrivals = Arrivals::new(2, true);
        assert!(arrivals.record(3_500_000, "INFO t=1000000 n=1 xx", Some(1)));
        assert!(arrivals.record(2_000_000, "INFO t=1000000 n=2 xx", Some(2)));
        assert_eq!(
            arrivals.report("latency", 1000, 2),
            "latency rate=1000/s lines=2 received=2 dropped_reported=0 seq_gaps=0 p50=2.50ms p99=2.50ms max=2.50ms"
        );
    }

    /// A break in the sequence is counted once per break, and lines without a stamp are not
    /// counted as received.
    #[test]
    fn sequence_breaks_are_gaps_and_unstamped_lines_are_ignored() {
        let mut arrivals = Arrivals::new(4, false);
        assert!(!arrivals.record(5, "probe 3", None));
        for n in [1, 2, 5, 6] {
            assert!(arrivals.record_now(&timestamped(n, "x"), Some(n)));
        }
        assert_eq!(arrivals.accounted(), 4);
        let report = arrivals.report("rsyslog", 10, 6);
        assert!(
            report.starts_with(
                "rsyslog rate=10/s lines=6 received=4 dropped_reported=n/a seq_gaps=1 p50="
            ),
            "{report}"
        );
    }

    /// Reported drops count towards the lines a run waits for.
    #[test]
    fn reported_drops_are_accounted() {
        let mut arrivals = Arrivals::new(3, true);
        arrivals.record_now(&timestamped(1, ""), Some(1));
        arrivals.dropped(2);
        assert_eq!(arrivals.accounted(), 3);
    }
}
