//! Writes the agent_frame seed corpus: real frames made with `encode`, one of each kind an
//! agent sends plus host frames, plain and deflated. Run from the fuzz directory:
//! `cargo run --example seed_frames` (it overwrites `corpus/agent_frame/seed-*`).

use logfleet_protocol::agent::{
    AgentFrame, Health, Hello, HostFrame, LogBatch, Metrics, PROTOCOL_VERSION, RateLimits, Record,
    SessionSpec, SourceCounts, encode,
};
use logfleet_protocol::client::DropReason;
use logfleet_protocol::rest::SourceInfo;
use logfleet_protocol::{Filters, Level, PluginRef};

fn record(seq: u64, level: Level, message: &str) -> Record {
    Record {
        seq,
        timestamp_ms: 1_705_312_800_000 + seq as i64,
        level,
        source: "nginx".into(),
        file: "/var/log/nginx/error.log".into(),
        line: seq + 1,
        message: message.into(),
        event_ms: None,
        fields: None,
        raw: None,
    }
}

fn main() -> std::io::Result<()> {
    let hello = AgentFrame::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        name: "edge-01".into(),
        hostname: "web-1.example.com".into(),
        version: "0.1.0".into(),
        sources: vec![
            SourceInfo {
                name: "nginx".into(),
                path: "/var/log/nginx/*.log".into(),
            },
            SourceInfo {
                name: "app".into(),
                path: "/srv/app/logs/app.log".into(),
            },
        ],
        outbox: 0x5eed_0f_0b0c,
        next_frame: 1,
    });
    let metrics = AgentFrame::Metrics(Metrics {
        timestamp_ms: 1_705_312_860_000,
        interval_ms: 60_000,
        sources: vec![SourceCounts {
            name: "nginx".into(),
            levels: [0, 2, 1200, 14, 3, 0],
            bytes: 245_311,
        }],
        health: Health {
            uptime_s: 3600,
            rss_bytes: 18 << 20,
            files_watched: 3,
            active_sessions: 1,
            lines_truncated: 0,
            buffered_bytes: 0,
        },
    });
    let small_batch = AgentFrame::Logs(LogBatch {
        session_id: "sess_abc123".into(),
        records: vec![record(
            7,
            Level::Error,
            "2024/01/15 10:00:00 [error] 1234#0: *1 upstream timed out (110: Connection timed out)",
        )],
    });
    // Large enough to be deflated.
    let big_batch = AgentFrame::Logs(LogBatch {
        session_id: "sess_abc123".into(),
        records: (0..40)
            .map(|i| {
                record(
                    i,
                    Level::Info,
                    &format!(
                        "10.0.0.{i} - - [15/Jan/2024:10:00:00 +0000] \"GET /api/v1/items/{i} HTTP/1.1\" 200 512 \"-\" \"curl/8.0\""
                    ),
                )
            })
            .collect(),
    });
    // A parsed record: its message without the prefix, the line's time and JSON fields.
    let mut parsed = record(8, Level::Warn, "slow query");
    parsed.event_ms = Some(1_705_312_801_000);
    parsed.fields = Some(r#"{"user_id":12345,"db":{"ms":812}}"#.into());
    let parsed_batch = AgentFrame::Logs(LogBatch {
        session_id: "sess_abc123".into(),
        records: vec![parsed],
    });
    let filters_changed = AgentFrame::FiltersChanged {
        session_id: "sess_abc123".into(),
    };
    let dropped = AgentFrame::Dropped {
        session_id: "sess_abc123".into(),
        count: 42,
        reason: DropReason::RateLimited,
    };
    let filter_error = AgentFrame::FilterError {
        session_id: "sess_abc123".into(),
        plugin: "redact".into(),
        message: "wasm trap: unreachable executed".into(),
        dropped: 3,
    };
    let fetch = AgentFrame::FetchPlugin {
        digest: format!("sha256:{}", "ab".repeat(32)),
    };
    let start = HostFrame::Start(SessionSpec {
        id: "sess_abc123".into(),
        filters: Filters {
            levels: vec![Level::Warn, Level::Error],
            sources: vec!["nginx".into()],
            pattern: Some("timeout".into()),
            plugins: vec![PluginRef {
                name: "redact".into(),
                config: r#"{"fields":["email"]}"#.into(),
                digest: format!("sha256:{}", "cd".repeat(32)),
            }],
        },
        limits: RateLimits {
            lines_per_second: 1000,
            bytes_per_second: 1 << 20,
        },
        remaining_ms: 300_000,
        backfill: Some(100),
    });
    let backfill_done = AgentFrame::BackfillDone {
        session_id: "sess_abc123".into(),
        count: 100,
        truncated: true,
    };

    let ack = HostFrame::Ack { upto: 4_096 };

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/agent_frame");
    std::fs::create_dir_all(&dir)?;
    let frames = [
        ("hello", encode(&hello)),
        ("metrics", encode(&metrics)),
        ("logs-plain", encode(&small_batch)),
        ("logs-deflated", encode(&big_batch)),
        ("logs-parsed", encode(&parsed_batch)),
        ("filters-changed", encode(&filters_changed)),
        ("dropped", encode(&dropped)),
        ("filter-error", encode(&filter_error)),
        ("fetch-plugin", encode(&fetch)),
        ("backfill-done", encode(&backfill_done)),
        ("host-start", encode(&start)),
        ("host-ack", encode(&ack)),
    ];
    for (name, bytes) in frames {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
