//! Agent ↔ host frames (`logfleet_protocol::agent`) and the host's bounds on what an agent
//! sends (`logfleet_protocol::agent_limits`).
//!
//! Each input is used twice: as a binary WebSocket message, as a hostile agent (or host) would
//! send it, and as the choices that build a frame a well-behaved agent could send.

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use logfleet_protocol::agent::{
    AgentFrame, FrameError, Health, HostFrame, LogBatch, MAX_FRAME_BYTES, Metrics, Record,
    SourceCounts, decode, decode_within, encode,
};
use logfleet_protocol::agent_limits::{
    self, MAX_AGENT_FRAME_BYTES, MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_LINE_BYTES,
    MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_SOURCES, MAX_TEXT_BYTES, record_bytes,
};
use logfleet_protocol::client::DropReason;
use logfleet_protocol::rest::SourceInfo;
use logfleet_protocol::{Level, agent::Hello};

/// A small frame bound, so inputs of a few KiB reach the inflate limit as well as the parser.
const SMALL_LIMIT: usize = 512;

/// Checks every frame property on one input.
pub fn check(data: &[u8]) {
    hostile_agent_frame(data);
    hostile_host_frame(data);
    if let Ok(frame) = legitimate_frame(&mut Unstructured::new(data)) {
        legitimate_frame_is_accepted(&frame);
    }
}

/// What the host does with an agent's message: decoding never panics and never yields a frame
/// larger than the bound (after inflation); a frame within the limits survives re-encoding; a
/// frame the limits refuse is refused with a close reason that fits a close frame.
fn hostile_agent_frame(data: &[u8]) {
    let decoded = decode_within::<AgentFrame>(data, MAX_AGENT_FRAME_BYTES);
    if let Err(FrameError::TooLarge { limit, .. }) = &decoded {
        assert_eq!(*limit, MAX_AGENT_FRAME_BYTES);
    }
    let small = decode_within::<AgentFrame>(data, SMALL_LIMIT);
    if let Ok(frame) = &small {
        assert!(plain_size(frame) <= SMALL_LIMIT);
        // A larger bound accepts whatever a smaller one does, as the same frame.
        assert_eq!(decoded.as_ref().ok(), Some(frame));
    }
    let Ok(frame) = decoded else { return };
    assert!(plain_size(&frame) <= MAX_AGENT_FRAME_BYTES);
    match agent_limits::check(&frame) {
        Ok(()) => assert_eq!(
            decode_within::<AgentFrame>(&encode(&frame), MAX_AGENT_FRAME_BYTES).ok(),
            Some(frame),
            "a frame within the limits does not survive encode → decode_within"
        ),
        Err(e) => {
            assert!(e.actual > e.max, "{e}");
            assert!(e.to_string().len() <= 123, "close reason too long: {e}");
        }
    }
}

/// What the agent does with the host's message: the same, at the host → agent bound.
fn hostile_host_frame(data: &[u8]) {
    let Ok(frame) = decode::<HostFrame>(data) else {
        return;
    };
    assert!(plain_size(&frame) <= MAX_FRAME_BYTES);
    assert_eq!(decode::<HostFrame>(&encode(&frame)).ok(), Some(frame));
}

/// Whatever a well-behaved agent sends passes the host's limits and arrives unchanged.
fn legitimate_frame_is_accepted(frame: &AgentFrame) {
    assert_eq!(agent_limits::check(frame), Ok(()), "{}", describe(frame));
    let bytes = encode(frame);
    match decode_within::<AgentFrame>(&bytes, MAX_AGENT_FRAME_BYTES) {
        Ok(back) => assert!(&back == frame, "{} changed in transit", describe(frame)),
        Err(e) => panic!("{} refused: {e}", describe(frame)),
    }
}

/// A short description of a (possibly huge) frame for assertion messages.
fn describe(frame: &AgentFrame) -> String {
    let debug = format!("{frame:?}");
    let cut = (0..=debug.len().min(200))
        .rev()
        .find(|&i| debug.is_char_boundary(i))
        .unwrap_or(0);
    format!("frame of {} bytes ({}…)", plain_size(frame), &debug[..cut])
}

/// The postcard size of a frame: what it holds once decoded, whatever the wire form was.
fn plain_size<T: serde::Serialize>(frame: &T) -> usize {
    postcard::to_allocvec(frame)
        .expect("frames serialise")
        .len()
}

/// Text of at most `max` bytes: an arbitrary string repeated, so small inputs reach the bounds.
fn text(u: &mut Unstructured, max: usize) -> Result<String> {
    let unit: String = u.arbitrary()?;
    let mut end = unit.len().min(max);
    while !unit.is_char_boundary(end) {
        end -= 1;
    }
    let unit = &unit[..end];
    if unit.is_empty() {
        return Ok(String::new());
    }
    let times = u.int_in_range(1..=max / unit.len())?;
    Ok(unit.repeat(times))
}

fn level(u: &mut Unstructured) -> Result<Level> {
    u.choose(&Level::ALL).copied()
}

/// A frame a well-behaved agent could send: every name, path, text and count within
/// `agent_limits`, possibly right at the bound.
pub fn legitimate_frame(u: &mut Unstructured) -> Result<AgentFrame> {
    Ok(match u.int_in_range(0..=6u8)? {
        0 => AgentFrame::Hello(Hello {
            protocol: u.arbitrary()?,
            name: text(u, MAX_NAME_BYTES)?,
            hostname: text(u, MAX_NAME_BYTES)?,
            version: text(u, MAX_NAME_BYTES)?,
            sources: (0..u.int_in_range(0..=MAX_SOURCES)?)
                .map(|_| {
                    Ok(SourceInfo {
                        name: text(u, MAX_NAME_BYTES)?,
                        path: text(u, MAX_PATH_BYTES)?,
                    })
                })
                .collect::<Result<_>>()?,
            outbox: u.arbitrary()?,
            next_frame: u.arbitrary()?,
        }),
        1 => AgentFrame::Metrics(Metrics {
            timestamp_ms: u.arbitrary()?,
            interval_ms: u.arbitrary()?,
            sources: (0..u.int_in_range(0..=MAX_SOURCES)?)
                .map(|_| {
                    Ok(SourceCounts {
                        name: text(u, MAX_NAME_BYTES)?,
                        levels: u.arbitrary()?,
                        bytes: u.arbitrary()?,
                    })
                })
                .collect::<Result<_>>()?,
            health: Health {
                uptime_s: u.arbitrary()?,
                rss_bytes: u.arbitrary()?,
                files_watched: u.arbitrary()?,
                active_sessions: u.arbitrary()?,
                lines_truncated: u.arbitrary()?,
                buffered_bytes: u.arbitrary()?,
            },
        }),
        2 => AgentFrame::Logs(legitimate_batch(u)?),
        3 => AgentFrame::Dropped {
            session_id: text(u, MAX_NAME_BYTES)?,
            count: u.arbitrary()?,
            reason: *u.choose(&[
                DropReason::ClientLagging,
                DropReason::RateLimited,
                DropReason::AgentBufferFull,
                DropReason::FilterFailed,
            ])?,
        },
        4 => AgentFrame::FilterError {
            session_id: text(u, MAX_NAME_BYTES)?,
            plugin: text(u, MAX_NAME_BYTES)?,
            message: text(u, MAX_TEXT_BYTES)?,
            dropped: u.arbitrary()?,
        },
        5 => AgentFrame::BackfillDone {
            session_id: text(u, MAX_NAME_BYTES)?,
            count: u.arbitrary()?,
            truncated: u.arbitrary()?,
        },
        _ => AgentFrame::FetchPlugin {
            digest: text(u, MAX_NAME_BYTES)?,
        },
    })
}

/// A batch as the agent builds it: records are added while the batch stays within its byte
/// bound (the agent flushes before it would overflow).
fn legitimate_batch(u: &mut Unstructured) -> Result<LogBatch> {
    let session_id = text(u, MAX_NAME_BYTES)?;
    let mut records = Vec::new();
    let mut total = 0;
    for _ in 0..u.int_in_range(0..=MAX_BATCH_RECORDS)? {
        let record = Record {
            seq: u.arbitrary()?,
            timestamp_ms: u.arbitrary()?,
            level: level(u)?,
            source: text(u, MAX_NAME_BYTES)?,
            file: text(u, MAX_PATH_BYTES)?,
            line: u.arbitrary()?,
            message: text(u, MAX_LINE_BYTES)?,
            event_ms: None,
            fields: None,
            raw: None,
        };
        total += record_bytes(&record);
        if total > MAX_BATCH_BYTES {
            break;
        }
        records.push(record);
    }
    Ok(LogBatch {
        session_id,
        records,
    })
}
