//! What an agent may send the host: bounds on every agent → host frame, so that one agent,
//! buggy or hostile, cannot exhaust the host. The host checks each frame with [`check`] and
//! closes the link of an agent that breaks one with
//! [`CLOSE_LIMIT_EXCEEDED`](crate::agent::CLOSE_LIMIT_EXCEEDED).
//!
//! A well-behaved agent stays well inside them: it sends a batch once it holds 512 records or
//! about 256 KiB, cuts lines at 64 KiB, and its names and paths come from its configuration.

use std::fmt;

use crate::agent::{AgentFrame, Hello, LogBatch, Metrics, Record};

/// Records in one log batch (the agent flushes at 512).
pub const MAX_BATCH_RECORDS: usize = 512;
/// Longest agent name, hostname, version, source name, session id, plugin name or digest.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest file path or source path (glob): Linux's `PATH_MAX`.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest line the agent ships (it cuts longer ones there).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Bytes of one record: its message, fields, source and file together.
pub const MAX_RECORD_BYTES: usize =
    MAX_LINE_BYTES + crate::parse::MAX_FIELDS_BYTES + MAX_NAME_BYTES + MAX_PATH_BYTES;
/// Bytes of one batch's records together (message, source and file): the agent flushes at
/// 256 KiB, so a batch holds at most that plus its last record.
pub const MAX_BATCH_BYTES: usize = 256 * 1024 + MAX_RECORD_BYTES;
/// Sources in `Hello`, and entries in one metrics report.
pub const MAX_SOURCES: usize = 128;
/// Longest free text an agent sends (a filter error's message, traps with backtraces).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Largest agent → host frame after inflation. The largest legitimate frames are a full batch
/// (≈ 330 KiB of text plus ≈ 20 KiB of per-record overhead) and a `Hello` with every source at
/// its longest path (≈ 560 KiB); the unit tests check both fit.
pub const MAX_AGENT_FRAME_BYTES: usize = 1024 * 1024;

thread_local! {
    /// The bound a bounded sequence refused in the decode running on this thread: postcard
    /// reports a visitor's error without its text, so [`crate::agent::decode_within`] asks
    /// here which bound it was.
    static REFUSED: std::cell::Cell<Option<LimitExceeded>> = const { std::cell::Cell::new(None) };
}

/// Takes (and clears) the bound the last decode on this thread refused, if any.
pub(crate) fn take_refused() -> Option<LimitExceeded> {
    REFUSED.take()
}

/// `LogBatch::records` as decoded: at most [`MAX_BATCH_RECORDS`].
pub(crate) fn bounded_records<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    bounded_seq(d, Limit::BatchRecords, MAX_BATCH_RECORDS)
}

/// `Hello::sources` and `Metrics::sources` as decoded: at most [`MAX_SOURCES`].
pub(crate) fn bounded_sources<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    bounded_seq(d, Limit::Sources, MAX_SOURCES)
}

/// Decodes a sequence of at most `max` items, refusing a longer one from its length prefix,
/// before anything is allocated. Checking after decoding would be too late: a frame of many
/// tiny elements (an empty record is 7 bytes on the wire, over 100 in memory) decodes into
/// fifteen times its size.
fn bounded_seq<'de, D, T>(d: D, limit: Limit, max: usize) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Bounded<T> {
        limit: Limit,
        max: usize,
        item: std::marker::PhantomData<T>,
    }
    impl<T> Bounded<T> {
        fn refuse<E: serde::de::Error>(&self, actual: usize) -> E {
            let exceeded = LimitExceeded {
                limit: self.limit,
                actual,
                max: self.max,
            };
            let message = exceeded.to_string();
            REFUSED.set(Some(exceeded));
            E::custom(message)
        }
    }
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a sequence of at most {} items", self.max)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let announced = seq.size_hint().unwrap_or(0);
            if announced > self.max {
                return Err(self.refuse(announced));
            }
            let mut items = Vec::with_capacity(announced);
            while let Some(item) = seq.next_element()? {
                if items.len() == self.max {
                    return Err(self.refuse(self.max + 1));
                }
                items.push(item);
            }
            Ok(items)
        }
    }
    d.deserialize_seq(Bounded {
        limit,
        max,
        item: std::marker::PhantomData,
    })
}

/// `text` cut to at most `max` bytes on a character boundary, ending in `…` when cut: for free
/// text that must fit a bound (an agent's filter error, a message echoing input).
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    const ELLIPSIS: &str = "…";
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..end])
}

/// Cuts a record's parts to their bounds (message, fields, file), so a record the agent
/// builds from any line always passes [`check`]: a line cut at [`MAX_LINE_BYTES`] can still
/// grow when invalid UTF-8 is replaced or JSON is re-serialised, and a plugin may return a
/// longer message. Fields that do not fit are replaced by a count of what was dropped.
pub fn fit_record(record: &mut Record) {
    if record.message.len() > MAX_LINE_BYTES {
        record.message = clip(&record.message, MAX_LINE_BYTES);
    }
    if record
        .fields
        .as_ref()
        .is_some_and(|f| f.len() > crate::parse::MAX_FIELDS_BYTES)
    {
        record.fields = Some(r#"{"_truncated":"fields over the size bound"}"#.to_owned());
    }
    if record.file.len() > MAX_PATH_BYTES {
        record.file = clip(&record.file, MAX_PATH_BYTES);
    }
    if record.source.len() > MAX_NAME_BYTES {
        record.source = clip(&record.source, MAX_NAME_BYTES);
    }
}

/// Which bound a frame broke; named in the close reason and the host's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    FrameBytes,
    BatchRecords,
    BatchBytes,
    RecordBytes,
    Sources,
    NameBytes,
    PathBytes,
    TextBytes,
    /// Labels in a `HelloLabeled` ([`crate::labels::MAX_LABELS`]).
    Labels,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::FrameBytes => "frame_bytes",
            Limit::BatchRecords => "batch_records",
            Limit::BatchBytes => "batch_bytes",
            Limit::RecordBytes => "record_bytes",
            Limit::Sources => "sources",
            Limit::NameBytes => "name_bytes",
            Limit::PathBytes => "path_bytes",
            Limit::TextBytes => "text_bytes",
            Limit::Labels => "labels",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A frame over one of the bounds. Its text fits a WebSocket close reason (≤ 123 bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit exceeded: {limit} ({actual} > {max})")]
pub struct LimitExceeded {
    pub limit: Limit,
    pub actual: usize,
    pub max: usize,
}

fn at_most(limit: Limit, actual: usize, max: usize) -> Result<(), LimitExceeded> {
    if actual > max {
        return Err(LimitExceeded { limit, actual, max });
    }
    Ok(())
}

fn name(s: &str) -> Result<(), LimitExceeded> {
    at_most(Limit::NameBytes, s.len(), MAX_NAME_BYTES)
}

fn path(s: &str) -> Result<(), LimitExceeded> {
    at_most(Limit::PathBytes, s.len(), MAX_PATH_BYTES)
}

/// Checks a decoded agent frame against every bound above (the frame size is checked while
/// decoding, with [`crate::agent::decode_within`]).
pub fn check(frame: &AgentFrame) -> Result<(), LimitExceeded> {
    match frame {
        AgentFrame::Hello(hello) => check_hello(hello),
        AgentFrame::Metrics(metrics) => check_metrics(metrics),
        AgentFrame::Logs(batch) => check_batch(batch),
        AgentFrame::Dropped { session_id, .. } => name(session_id),
        AgentFrame::FilterError {
            session_id,
            plugin,
            message,
            dropped: _,
        } => {
            name(session_id)?;
            name(plugin)?;
            at_most(Limit::TextBytes, message.len(), MAX_TEXT_BYTES)
        }
        AgentFrame::FetchPlugin { digest } => name(digest),
        AgentFrame::FiltersChanged { session_id } => name(session_id),
        AgentFrame::BackfillDone { session_id, .. } => name(session_id),
        AgentFrame::HelloLabeled { hello, labels } => {
            check_hello(hello)?;
            at_most(Limit::Labels, labels.len(), crate::labels::MAX_LABELS)?;
            for (key, value) in labels {
                name(key)?;
                name(value)?;
            }
            Ok(())
        }
    }
}

fn check_hello(hello: &Hello) -> Result<(), LimitExceeded> {
    name(&hello.name)?;
    name(&hello.hostname)?;
    name(&hello.version)?;
    at_most(Limit::Sources, hello.sources.len(), MAX_SOURCES)?;
    for source in &hello.sources {
        name(&source.name)?;
        path(&source.path)?;
    }
    Ok(())
}

fn check_metrics(metrics: &Metrics) -> Result<(), LimitExceeded> {
    at_most(Limit::Sources, metrics.sources.len(), MAX_SOURCES)?;
    metrics.sources.iter().try_for_each(|s| name(&s.name))
}

fn check_batch(batch: &LogBatch) -> Result<(), LimitExceeded> {
    name(&batch.session_id)?;
    at_most(Limit::BatchRecords, batch.records.len(), MAX_BATCH_RECORDS)?;
    let mut total = 0usize;
    for record in &batch.records {
        name(&record.source)?;
        path(&record.file)?;
        // Each part within its own bound, and the whole within the record's.
        at_most(Limit::RecordBytes, record.message.len(), MAX_LINE_BYTES)?;
        let fields = record.fields.as_ref().map_or(0, String::len);
        at_most(Limit::RecordBytes, fields, crate::parse::MAX_FIELDS_BYTES)?;
        let bytes = record_bytes(record);
        at_most(Limit::RecordBytes, bytes, MAX_RECORD_BYTES)?;
        total += bytes;
    }
    at_most(Limit::BatchBytes, total, MAX_BATCH_BYTES)
}

/// What a record weighs against [`MAX_RECORD_BYTES`] and [`MAX_BATCH_BYTES`].
pub fn record_bytes(record: &Record) -> usize {
    record.message.len()
        + record.fields.as_ref().map_or(0, String::len)
        + record.source.len()
        + record.file.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Level;
    use crate::agent::{Health, SourceCounts};
    use crate::rest::SourceInfo;

    fn record(message: String) -> Record {
        Record {
            seq: u64::MAX,
            timestamp_ms: i64::MIN,
            level: Level::Fatal,
            source: "s".repeat(MAX_NAME_BYTES),
            file: "f".repeat(MAX_PATH_BYTES),
            line: u64::MAX,
            message,
            event_ms: None,
            fields: None,
            raw: None,
        }
    }

    /// The largest batch within the limits: full records up to the batch bound, the rest
    /// empty ones, up to the record count.
    fn largest_batch() -> LogBatch {
        let mut records = Vec::new();
        let mut total = 0;
        while records.len() < MAX_BATCH_RECORDS {
            let room = (MAX_BATCH_BYTES - total).min(MAX_RECORD_BYTES);
            let full = record(String::new());
            let room = room.saturating_sub(record_bytes(&full));
            let message = room.min(MAX_LINE_BYTES);
            let fields = (room - message).min(crate::parse::MAX_FIELDS_BYTES);
            let mut r = record("m".repeat(message));
            r.fields = (fields > 0).then(|| "f".repeat(fields));
            total += record_bytes(&r);
            records.push(r);
            if total + record_bytes(&full) > MAX_BATCH_BYTES {
                break;
            }
        }
        LogBatch {
            session_id: "x".repeat(MAX_NAME_BYTES),
            records,
        }
    }

    fn plain_size(frame: &AgentFrame) -> usize {
        postcard::to_allocvec(frame).unwrap().len() + 1
    }

    /// Every frame a well-behaved agent can send fits the inflated frame bound.
    #[test]
    fn largest_legitimate_frames_fit_the_frame_bound() {
        let batch = AgentFrame::Logs(largest_batch());
        assert_eq!(check(&batch), Ok(()));
        let hello = AgentFrame::Hello(Hello {
            protocol: u32::MAX,
            name: "n".repeat(MAX_NAME_BYTES),
            hostname: "h".repeat(MAX_NAME_BYTES),
            version: "v".repeat(MAX_NAME_BYTES),
            sources: (0..MAX_SOURCES)
                .map(|_| SourceInfo {
                    name: "s".repeat(MAX_NAME_BYTES),
                    path: "p".repeat(MAX_PATH_BYTES),
                })
                .collect(),
            outbox: u64::MAX,
            next_frame: u64::MAX,
        });
        assert_eq!(check(&hello), Ok(()));
        let metrics = AgentFrame::Metrics(Metrics {
            timestamp_ms: i64::MIN,
            interval_ms: u32::MAX,
            sources: (0..MAX_SOURCES)
                .map(|_| SourceCounts {
                    name: "s".repeat(MAX_NAME_BYTES),
                    levels: [u64::MAX; 6],
                    bytes: u64::MAX,
                })
                .collect(),
            health: Health::default(),
        });
        assert_eq!(check(&metrics), Ok(()));
        // A batch of 512 maximal records is refused (by bytes), so the batch bound is the one
        // that keeps frames small.
        for frame in [&batch, &hello, &metrics] {
            let size = plain_size(frame);
            assert!(size <= MAX_AGENT_FRAME_BYTES, "{size} bytes");
        }
    }

    /// Whatever a line holds — invalid UTF-8 expanded by replacement, JSON that grows when
    /// re-serialised, a huge syslog tag — the record the agent builds from it fits the bounds
    /// the host checks, so no line in a log file can get the agent's link closed.
    #[test]
    fn records_from_any_line_fit_the_bounds() {
        use crate::parse::{Format, Timezone, parse_line};
        let invalid = String::from_utf8_lossy(&[0xFF; MAX_LINE_BYTES]).into_owned();
        let numbers = format!("{{\"msg\":[{}1e5]}}", "1e5,".repeat(MAX_LINE_BYTES / 5));
        let tag = format!(
            "Jan 15 10:00:00 host {}: hi",
            "t".repeat(MAX_LINE_BYTES / 2)
        );
        let controls = format!(
            "Jan 15 10:00:00 host {}: hi",
            "\u{1}".repeat(MAX_LINE_BYTES / 4)
        );
        for line in [&invalid, &numbers, &tag, &controls] {
            for format in Format::ALL {
                let parsed = parse_line(line, format, Timezone::UTC, 0);
                let mut r = record(parsed.message.into_owned());
                r.fields = parsed.fields;
                r.file = "f".repeat(3 * MAX_PATH_BYTES);
                fit_record(&mut r);
                let batch = AgentFrame::Logs(LogBatch {
                    session_id: "s".into(),
                    records: vec![r],
                });
                assert_eq!(check(&batch), Ok(()), "{format}");
            }
        }
    }

    #[test]
    fn each_bound_is_named_when_broken() {
        let mut batch = largest_batch();
        batch.records.push(record(String::new()));
        assert_eq!(
            check(&AgentFrame::Logs(batch)).unwrap_err().limit,
            Limit::BatchBytes
        );
        let many = LogBatch {
            session_id: "s".into(),
            records: vec![record(String::new()); MAX_BATCH_RECORDS + 1],
        };
        assert_eq!(
            check(&AgentFrame::Logs(many)).unwrap_err().limit,
            Limit::BatchRecords
        );
        let long = LogBatch {
            session_id: "s".into(),
            records: vec![record("m".repeat(MAX_LINE_BYTES + 1))],
        };
        let err = check(&AgentFrame::Logs(long)).unwrap_err();
        assert_eq!(err.limit, Limit::RecordBytes);
        assert!(err.to_string().len() <= 123, "{err}");
        let hello = Hello {
            protocol: 1,
            name: "a".into(),
            hostname: "h".into(),
            version: "1".into(),
            sources: vec![
                SourceInfo {
                    name: "s".into(),
                    path: "/p".into()
                };
                MAX_SOURCES + 1
            ],
            outbox: 1,
            next_frame: 1,
        };
        assert_eq!(
            check(&AgentFrame::Hello(hello)).unwrap_err().limit,
            Limit::Sources
        );
        assert_eq!(
            check(&AgentFrame::FetchPlugin {
                digest: "d".repeat(MAX_NAME_BYTES + 1)
            })
            .unwrap_err()
            .limit,
            Limit::NameBytes
        );
    }

    /// A frame announcing more records or sources than the bounds is refused from its length
    /// prefix, naming the bound, before the items are allocated: 100,000 empty records fit in a
    /// 1 MiB frame and would decode into over 16 MiB.
    #[test]
    fn long_sequences_are_refused_while_decoding() {
        use crate::agent::{AgentFrame, FrameError, LogBatch, Record, decode_within, encode};
        let empty = Record {
            seq: 0,
            timestamp_ms: 0,
            level: Level::Info,
            source: String::new(),
            file: String::new(),
            line: 0,
            message: String::new(),
            event_ms: None,
            fields: None,
            raw: None,
        };
        let bomb = encode(&AgentFrame::Logs(LogBatch {
            session_id: "s".into(),
            records: vec![empty.clone(); 100_000],
        }));
        assert!(bomb.len() < MAX_AGENT_FRAME_BYTES);
        match decode_within::<AgentFrame>(&bomb, MAX_AGENT_FRAME_BYTES) {
            Err(FrameError::OverLimit(e)) => {
                assert_eq!(
                    (e.limit, e.actual, e.max),
                    (Limit::BatchRecords, 100_000, 512)
                );
            }
            other => panic!("expected the records bound, got {other:?}"),
        }
        let fits = encode(&AgentFrame::Logs(LogBatch {
            session_id: "s".into(),
            records: vec![empty; MAX_BATCH_RECORDS],
        }));
        assert!(decode_within::<AgentFrame>(&fits, MAX_AGENT_FRAME_BYTES).is_ok());
        let malformed = decode_within::<AgentFrame>(&[0, 200, 1], MAX_AGENT_FRAME_BYTES);
        assert!(
            matches!(malformed, Err(FrameError::Malformed(_))),
            "{malformed:?}"
        );
    }
}
