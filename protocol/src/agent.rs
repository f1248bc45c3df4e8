//! Frames between an agent and the host on `GET /api/v1/agent/connect`.
//!
//! Each WebSocket binary message carries one frame: a one-byte codec tag, then the frame in
//! postcard (compact, varint-encoded serde), deflated when that pays (log batches: typical logs
//! shrink to a fifth or less, which is what keeps streaming cheap on an edge link). Enums are
//! externally tagged and no field is skipped, because postcard is not self-describing.
//! [`PROTOCOL_VERSION`] is checked in [`Hello`]; any change to these types bumps it.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::client::DropReason;
use crate::rest::SourceInfo;
use crate::{Filters, Level};

/// Version of the frames below; the host refuses an agent that speaks another.
///
/// 2: `FilterError` ends its session (filters fail closed) and carries `dropped`. Agents of
/// version 1 let records pass a failed filter, so a host refuses them rather than let them
/// stream unfiltered data.
///
/// 3: acknowledged delivery. Every frame after `Hello` is numbered implicitly, from
/// `Hello::next_frame` up by one per binary message; the host answers `Ack { upto }` once
/// frames are handled and skips frames of the same outbox (`Hello::outbox`) it has handled
/// already, so the agent can resend what was not acknowledged after a reconnect. Sessions
/// carry the time they have left (`SessionSpec::remaining_ms`) instead of an absolute end, so
/// an agent's wrong wall clock neither ends them early nor keeps them from starting.
///
/// 4: backfill. `SessionSpec::backfill` asks for recent records before the live ones; the
/// agent sends them as the session's first `Logs`, then `BackfillDone`.
pub const PROTOCOL_VERSION: u32 = 4;
/// Largest frame either side accepts, in bytes, after inflation (and the largest WebSocket
/// message the agent reads). Host → agent frames carry plugin components (up to 64 MiB, the
/// filter runtime's `MAX_COMPONENT_BYTES`) plus a small envelope; agent → host frames are held
/// to the much smaller [`crate::agent_limits::MAX_AGENT_FRAME_BYTES`] with [`decode_within`].
pub const MAX_FRAME_BYTES: usize = 72 * 1024 * 1024;

/// Close code for an agent speaking another protocol version.
pub const CLOSE_PROTOCOL_MISMATCH: u16 = 4002;
/// Close code for an agent link superseded by a newer link of the same agent (same org and
/// id): two copies of one agent are running. The agent backs off for long and logs why,
/// instead of the two taking the link from each other in a loop.
pub const CLOSE_SUPERSEDED: u16 = 4009;
/// Close code for an agent whose enrollment was revoked: its token is refused from now on.
pub const CLOSE_REVOKED: u16 = 4010;
/// Close code for an agent that broke one of the host's limits on what an agent sends
/// (records per batch, bytes per record or batch, sources, frame size after inflation).
pub const CLOSE_LIMIT_EXCEEDED: u16 = 4011;

/// Codec tag: the rest of the message is plain postcard.
const CODEC_POSTCARD: u8 = 0;
/// Codec tag: the rest of the message is postcard, deflated (raw DEFLATE, RFC 1951).
const CODEC_POSTCARD_DEFLATE: u8 = 1;
/// Frames smaller than this go uncompressed: metrics and commands are a few dozen bytes and
/// would only grow.
pub const COMPRESS_MIN_BYTES: usize = 512;

/// Agent → host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentFrame {
    /// First frame after connecting.
    Hello(Hello),
    Metrics(Metrics),
    Logs(LogBatch),
    /// Lines a session lost on the agent (rate limit, full buffer), in stream order.
    Dropped {
        session_id: String,
        count: u64,
        reason: DropReason,
    },
    /// A filter of this session failed (trap, deadline, memory cap, broken verdicts, or it
    /// could not be fetched, loaded, configured or started), so the agent has stopped the
    /// session: filters fail closed. Sent once, after the session's last `Logs` (records every
    /// filter decided to keep). The host ends the session with reason `filter_failed`.
    FilterError {
        session_id: String,
        /// The failed filter: a plugin's name, or `level` / `source` / `pattern`.
        plugin: String,
        /// What happened, for users.
        message: String,
        /// Records the failure kept from being decided (held by the failed filter, or kept by
        /// it before later filters saw them): dropped, reported as `filter_failed`.
        dropped: u64,
    },
    /// Asks for a plugin component the agent does not have cached.
    FetchPlugin {
        digest: String,
    },
    /// A running session's new filters (a `Start` with the same id) are in force: the
    /// session's records before this frame passed the old filters, those after it the new.
    FiltersChanged {
        session_id: String,
    },
    /// The session's backfill ([`SessionSpec::backfill`]) is complete: its `Logs` since the
    /// session started on this agent, `count` records, were read from the end of its files,
    /// oldest first (rate-limit drops among them went out as `Dropped`); its live records
    /// follow. `truncated`: the scan bound per source stopped the search before it found as
    /// many records as asked for.
    BackfillDone {
        session_id: String,
        count: u64,
        truncated: bool,
    },
    /// A `Hello` with the agent's own labels (`--label`, `[labels]`), sent instead of `Hello`
    /// by an agent that has labels. A new variant rather than a new `Hello` field: postcard
    /// has no optional trailing fields, so agents without labels keep sending `Hello`.
    HelloLabeled {
        hello: Hello,
        labels: crate::labels::Labels,
    },
}

/// Who the agent is, and where its numbered frames resume. Its id is not here: it comes from
/// the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub name: String,
    pub hostname: String,
    pub version: String,
    #[serde(deserialize_with = "crate::agent_limits::bounded_sources")]
    pub sources: Vec<SourceInfo>,
    /// Identity of the agent's outbox (random, fixed for the life of the agent process): frame
    /// numbers count within it, so a restarted agent's frames are never taken for resends.
    pub outbox: u64,
    /// The number of the first frame after this `Hello`; each later binary message on the link
    /// has the next number, without a gap (the host counts them, they carry no number). A
    /// reconnecting agent resumes at its oldest unacknowledged frame.
    pub next_frame: u64,
}

/// Counts over one metrics interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// End of the interval, ms since the Unix epoch.
    pub timestamp_ms: i64,
    pub interval_ms: u32,
    #[serde(deserialize_with = "crate::agent_limits::bounded_sources")]
    pub sources: Vec<SourceCounts>,
    pub health: Health,
}

/// Per-source counts; `levels[l.index()]` counts lines of level `l`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    pub name: String,
    pub levels: [u64; 6],
    pub bytes: u64,
}

/// The agent's own health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub uptime_s: u64,
    pub rss_bytes: u64,
    pub files_watched: u32,
    pub active_sessions: u32,
    pub lines_truncated: u64,
    pub buffered_bytes: u64,
}

/// Matching lines of one session, in `seq` order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    pub session_id: String,
    #[serde(deserialize_with = "crate::agent_limits::bounded_records")]
    pub records: Vec<Record>,
}

/// One line as the agent read and parsed it (see [`crate::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// When the agent read the line, ms since the Unix epoch.
    pub timestamp_ms: i64,
    pub level: Level,
    pub source: String,
    pub file: String,
    /// 1-based line number in the file.
    pub line: u64,
    /// The line without the prefix its parser recognised (the whole line when none).
    pub message: String,
    /// The time the line says it happened, when its parser recognised one.
    pub event_ms: Option<i64>,
    /// Other key/values of a structured line: a JSON object of at most
    /// [`crate::parse::MAX_FIELDS_BYTES`].
    pub fields: Option<String>,
    /// The line as read, when `message` is only part of it. Agent-local, never sent: the
    /// `pattern` filter matches it (grep semantics), while plugins and clients get `message`.
    #[serde(skip)]
    pub raw: Option<String>,
}

impl Record {
    /// What `pattern` matches: the line as read.
    pub fn line_text(&self) -> &str {
        self.raw.as_deref().unwrap_or(&self.message)
    }
}

/// Host → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostFrame {
    /// The complete set of this agent's active sessions, sent after every `Hello`: the agent
    /// starts what it lacks and stops what is not listed.
    Sessions(Vec<SessionSpec>),
    Start(SessionSpec),
    Stop {
        session_id: String,
    },
    /// A plugin component the agent asked for.
    Plugin {
        digest: String,
        bytes: Vec<u8>,
    },
    /// The host cannot supply a plugin the agent asked for.
    PluginUnavailable {
        digest: String,
        message: String,
    },
    /// Cumulative acknowledgement: every frame of this link numbered up to `upto` (see
    /// [`Hello::next_frame`]) is handled and need not be resent. Today that means in the
    /// session's hub; a clustered host may send it only once frames are durable instead,
    /// without the agent noticing the difference.
    Ack {
        upto: u64,
    },
}

/// What an agent needs to run a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    pub id: String,
    pub filters: Filters,
    pub limits: RateLimits,
    /// How long the session has left, in ms, reckoned when the host sent the frame. The agent
    /// counts it down on its monotonic clock and stops on its own then, even if the host is
    /// unreachable: neither side's wall clock (nor their difference) matters.
    pub remaining_ms: u64,
    /// Records to send from the end of the session's files before its live records, when it
    /// first runs on this agent (`None`: none, also once the host heard `BackfillDone`).
    pub backfill: Option<u32>,
}

/// Effective per-session rate limits (defaults and maxima already applied by the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub lines_per_second: u32,
    pub bytes_per_second: u64,
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("unknown frame codec {0}")]
    UnknownCodec(u8),
    #[error("frame is over the {limit}-byte limit (at least {size} bytes)")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("corrupt compressed frame: {0}")]
    Inflate(String),
    #[error("{0}")]
    OverLimit(crate::agent_limits::LimitExceeded),
}

/// Encodes a frame for a binary WebSocket message, deflating it when it is large enough to
/// gain from it.
pub fn encode<T: Serialize>(frame: &T) -> Vec<u8> {
    let mut out = vec![CODEC_POSTCARD];
    // Serialising plain data into a Vec cannot fail; an error would be a bug in these types.
    postcard::to_io(frame, &mut out).expect("postcard serialisation of a frame");
    if out.len() < COMPRESS_MIN_BYTES {
        return out;
    }
    // Level 1: most of the gain on log text at a fraction of the CPU of higher levels.
    let mut deflated = vec![CODEC_POSTCARD_DEFLATE];
    let mut encoder = DeflateEncoder::new(&mut deflated, Compression::fast());
    // Writing into a Vec cannot fail.
    encoder
        .write_all(&out[1..])
        .and_then(|()| encoder.finish().map(drop))
        .expect("deflate into memory");
    if deflated.len() < out.len() {
        deflated
    } else {
        out
    }
}

/// Decodes a binary WebSocket message into a frame of at most [`MAX_FRAME_BYTES`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    decode_within(bytes, MAX_FRAME_BYTES)
}

/// Decodes a binary WebSocket message into a frame of at most `limit` bytes, compressed or
/// inflated. Inflating stops at the limit: a small deflated frame that would expand past it
/// is refused without ever holding more than `limit` bytes.
pub fn decode_within<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, FrameError> {
    if bytes.len() > limit.saturating_add(1) {
        return Err(FrameError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let decoded = match bytes.split_first() {
        None => return Err(FrameError::Empty),
        Some((&CODEC_POSTCARD, rest)) => postcard::from_bytes(rest),
        Some((&CODEC_POSTCARD_DEFLATE, rest)) => postcard::from_bytes(&inflate(rest, limit)?),
        Some((&other, _)) => return Err(FrameError::UnknownCodec(other)),
    };
    // A bounded sequence that refused tells which bound; clear it either way for the next.
    let refused = crate::agent_limits::take_refused();
    decoded.map_err(|e| match refused {
        Some(exceeded) => FrameError::OverLimit(exceeded),
        None => FrameError::Malformed(e),
    })
}

/// Inflates `deflated`, refusing output past `limit`. The buffer grows by at most what was
/// read and never past `limit` (a `Vec` left to itself doubles, up to twice the limit).
fn inflate(deflated: &[u8], limit: usize) -> Result<Vec<u8>, FrameError> {
    /// Inflate step: small enough that the overshoot past `limit` is checked before it is kept.
    const CHUNK: usize = 64 * 1024;
    let mut decoder = DeflateDecoder::new(deflated);
    let mut plain: Vec<u8> = Vec::with_capacity(deflated.len().saturating_mul(4).min(limit));
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = decoder
            .read(&mut chunk)
            .map_err(|e| FrameError::Inflate(e.to_string()))?;
        if n == 0 {
            return Ok(plain);
        }
        let len = plain.len() + n;
        if len > limit {
            return Err(FrameError::TooLarge { size: len, limit });
        }
        if len > plain.capacity() {
            let target = plain.capacity().saturating_mul(2).max(len).min(limit);
            plain.reserve_exact(target - plain.len());
        }
        plain.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frame = AgentFrame::Logs(LogBatch {
            session_id: "sess_1".into(),
            records: vec![Record {
                seq: 1,
                timestamp_ms: 1_700_000_000_000,
                level: Level::Warn,
                source: "nginx".into(),
                file: "/var/log/x".into(),
                line: 3,
                message: "hello".into(),
                event_ms: None,
                fields: None,
                raw: None,
            }],
        });
        let bytes = encode(&frame);
        assert_eq!(decode::<AgentFrame>(&bytes).unwrap(), frame);
        let spec = HostFrame::Start(SessionSpec {
            id: "sess_1".into(),
            filters: Filters::default(),
            limits: RateLimits {
                lines_per_second: 1,
                bytes_per_second: 2,
            },
            remaining_ms: 5,
            backfill: Some(100),
        });
        assert_eq!(decode::<HostFrame>(&encode(&spec)).unwrap(), spec);
    }

    #[test]
    fn large_batches_are_compressed_and_round_trip() {
        let records = (0..200)
            .map(|i| Record {
                seq: i,
                timestamp_ms: 1_700_000_000_000 + i as i64,
                level: Level::Info,
                source: "nginx".into(),
                file: "/var/log/nginx/access.log".into(),
                line: i + 1,
                message: format!(
                    "10.0.0.{} - - [15/Jan/2024:10:00:00 +0000] \"GET /api/v1/items/{i} HTTP/1.1\" 200 512 \"-\" \"curl/8.0\"",
                    i % 250
                ),
                event_ms: None,
                fields: None,
                raw: None,
            })
            .collect::<Vec<_>>();
        let raw: usize = records.iter().map(|r| r.message.len() + 1).sum();
        let frame = AgentFrame::Logs(LogBatch {
            session_id: "sess_1".into(),
            records,
        });
        let bytes = encode(&frame);
        assert_eq!(bytes[0], CODEC_POSTCARD_DEFLATE);
        assert!(
            bytes.len() * 100 / raw < 35,
            "{} of {raw} raw bytes",
            bytes.len()
        );
        assert_eq!(decode::<AgentFrame>(&bytes).unwrap(), frame);
        // Small frames stay plain.
        let small = encode(&HostFrame::Stop {
            session_id: "sess_1".into(),
        });
        assert_eq!(small[0], CODEC_POSTCARD);
        assert!(matches!(
            decode::<AgentFrame>(&[CODEC_POSTCARD_DEFLATE, 1, 2, 3]),
            Err(FrameError::Inflate(_) | FrameError::Malformed(_))
        ));
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(matches!(decode::<AgentFrame>(&[]), Err(FrameError::Empty)));
        assert!(matches!(
            decode::<AgentFrame>(&[9, 1]),
            Err(FrameError::UnknownCodec(9))
        ));
        assert!(matches!(
            decode::<AgentFrame>(&[0, 200]),
            Err(FrameError::Malformed(_))
        ));
    }

    /// A deflate bomb is refused at the limit: inflating never holds more than the limit.
    #[test]
    fn inflating_stops_at_the_limit() {
        let bomb = encode(&AgentFrame::FilterError {
            session_id: "s".into(),
            plugin: "p".into(),
            message: "x".repeat(4 << 20),
            dropped: 0,
        });
        assert_eq!(bomb[0], CODEC_POSTCARD_DEFLATE);
        assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
        assert!(matches!(
            decode_within::<AgentFrame>(&bomb, 1 << 20),
            Err(FrameError::TooLarge { limit, .. }) if limit == 1 << 20
        ));
        assert!(decode_within::<AgentFrame>(&bomb, 5 << 20).is_ok());
        let plain = inflate(&bomb[1..], 5 << 20).unwrap();
        assert!(plain.capacity() <= 5 << 20);
    }
}
