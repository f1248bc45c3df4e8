//! Records/s through `agent::encode` and `agent::decode` of a log batch frame, the agent's and
//! the host's per-batch cost of shipping lines: postcard, then deflate (level 1) because the
//! frame is over `COMPRESS_MIN_BYTES`. The same frame through postcard alone shows the deflate
//! share. A small metrics frame (4 sources, sent once per interval, never deflated) is measured
//! too.
//!
//! Input: one `AgentFrame::Logs` of 1,024 deterministic synthetic records, ≈ 120-byte messages
//! (nginx access 60 %, nginx error 15 %, application 25 %), as a session of a busy nginx/API host
//! would ship them. Setup checks the round trip and prints raw message bytes against encoded
//! frame bytes (the on-the-wire compression ratio, before WebSocket framing).
//!
//!   cargo bench -p logfleet-protocol --bench frames

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logfleet_protocol::Level;
use logfleet_protocol::agent::{
    AgentFrame, Health, LogBatch, Metrics, Record, SourceCounts, decode, encode,
};

/// Records in the batch: a full agent batch.
const RECORDS: usize = 1024;

/// 2026-11-24T05:53:50.123Z in ms since the Unix epoch.
const START_MS: i64 = 1_795_499_630_123;

/// Deterministic synthetic records of a busy nginx + API host.
fn records() -> Vec<Record> {
    const AGENTS: [&str; 5] = [
        "curl/8.5.0",
        "Go-http-client/1.1",
        "python-requests/2.32.3",
        "kube-probe/1.30",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ];
    let mut rng = fastrand::Rng::with_seed(11);
    let mut ms = START_MS;
    let mut lines = [0u64; 3];
    (0..RECORDS)
        .map(|i| {
            ms += rng.i64(1..20);
            let s = ms / 1000;
            let (h, m, sec) = (s / 3600 % 24, s / 60 % 60, s % 60);
            let client = format!("10.{}.{}.{}", rng.u8(..4), rng.u8(..), rng.u8(1..255));
            let kind = match rng.u32(..100) {
                0..=59 => 0,
                60..=74 => 1,
                _ => 2,
            };
            let (level, source, file, message) = match kind {
                0 => (
                    Level::Info,
                    "nginx",
                    "/var/log/nginx/access.log",
                    format!(
                        "{client} - - [24/Nov/2026:{h:02}:{m:02}:{sec:02} +0000] \"GET /api/v1/items/{} HTTP/1.1\" {} {} \"-\" \"{}\"",
                        rng.u32(..100_000),
                        [200, 200, 200, 304, 404, 502][rng.usize(..6)],
                        rng.u32(..50_000),
                        AGENTS[rng.usize(..AGENTS.len())]
                    ),
                ),
                1 => (
                    Level::Error,
                    "nginx",
                    "/var/log/nginx/error.log",
                    format!(
                        "2026/11/24 {h:02}:{m:02}:{sec:02} [error] {}#0: *{} upstream timed out (110: Connection timed out), client: {client}",
                        rng.u32(1000..1100),
                        rng.u32(1..100_000)
                    ),
                ),
                _ => (
                    [Level::Info, Level::Warn, Level::Error][rng.usize(..3)],
                    "api",
                    "/var/log/api/app.log",
                    format!(
                        "2026-11-24T{h:02}:{m:02}:{sec:02}.{:03}Z INFO [http] request done path=/api/v1/orders/{} status=200 duration={}ms user={}",
                        ms % 1000,
                        rng.u32(..100_000),
                        rng.u32(1..900),
                        rng.u32(..100_000)
                    ),
                ),
            };
            lines[kind] += 1;
            Record {
                seq: 40_000 + i as u64,
                timestamp_ms: ms,
                level,
                source: source.to_owned(),
                file: file.to_owned(),
                line: 10_000 + lines[kind],
                message,
                event_ms: None,
                fields: None,
                raw: None,
            }
        })
        .collect()
}

/// One metrics report: 4 sources with per-level counts, plus the agent's health.
fn metrics() -> AgentFrame {
    let sources = ["nginx", "api", "worker", "syslog"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let i = i as u64;
            SourceCounts {
                name: (*name).to_owned(),
                levels: [0, 12 * i, 48_211 + i, 311, 42 + i, i % 2],
                bytes: 5_912_344 + i * 1000,
            }
        })
        .collect();
    AgentFrame::Metrics(Metrics {
        timestamp_ms: START_MS,
        interval_ms: 60_000,
        sources,
        health: Health {
            uptime_s: 86_400,
            rss_bytes: 13_800_000,
            files_watched: 4,
            active_sessions: 1,
            lines_truncated: 0,
            buffered_bytes: 0,
        },
    })
}

fn bench(c: &mut Criterion) {
    let records = records();
    let raw: usize = records.iter().map(|r| r.message.len() + 1).sum();
    let logs = AgentFrame::Logs(LogBatch {
        session_id: "sess_01JDQ7ZK3T9W4V6X8Y2B5N0M1C".into(),
        records,
    });
    let plain = postcard::to_stdvec(&logs).expect("postcard serialisation");
    let encoded = encode(&logs);
    assert!(encoded.len() < plain.len(), "the batch frame is deflated");
    assert_eq!(decode::<AgentFrame>(&encoded).expect("decode"), logs);
    eprintln!(
        "{RECORDS} records: raw messages {raw} B (avg {} B + newline), postcard {} B ({:.1} %), encoded frame {} B = {:.1} % of raw",
        raw / RECORDS - 1,
        plain.len(),
        plain.len() as f64 * 100.0 / raw as f64,
        encoded.len(),
        encoded.len() as f64 * 100.0 / raw as f64
    );

    let mut group = c.benchmark_group("logs_1024");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("encode", |b| b.iter(|| encode(black_box(&logs))));
    group.bench_function("decode", |b| {
        b.iter(|| decode::<AgentFrame>(black_box(&encoded)).expect("decode"))
    });
    group.bench_function("postcard_only_encode", |b| {
        b.iter(|| postcard::to_stdvec(black_box(&logs)).expect("postcard serialisation"))
    });
    group.bench_function("postcard_only_decode", |b| {
        b.iter(|| postcard::from_bytes::<AgentFrame>(black_box(&plain)).expect("postcard"))
    });
    group.finish();

    let metrics = metrics();
    let encoded = encode(&metrics);
    assert_eq!(decode::<AgentFrame>(&encoded).expect("decode"), metrics);
    eprintln!("metrics frame, 4 sources: {} B encoded", encoded.len());
    let mut group = c.benchmark_group("metrics_4_sources");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| b.iter(|| encode(black_box(&metrics))));
    group.bench_function("decode", |b| {
        b.iter(|| decode::<AgentFrame>(black_box(&encoded)).expect("decode"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
