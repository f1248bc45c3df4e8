//! Log writers: lines appended to a tailed file at a fixed rate (each carrying its write time,
//! for latency), or as fast as the disk takes them (for throughput ceilings).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;

/// Wall-clock nanoseconds since the Unix epoch: what a latency line carries, so the client can
/// subtract it from its own arrival time (same machine, same clock).
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Writes `total` lines at `rate` lines/s in 1 ms slices; line `n` (1-based) is `line(n)`.
/// Returns the bytes written.
pub async fn write_at_rate(
    path: PathBuf,
    rate: u64,
    total: u64,
    mut line: impl FnMut(u64) -> String,
) -> anyhow::Result<u64> {
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await?;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut written = 0u64;
    let mut bytes = 0u64;
    while written < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        let mut chunk = String::new();
        while written < due {
            written += 1;
            chunk.push_str(&line(written));
            chunk.push('\n');
        }
        bytes += chunk.len() as u64;
        file.write_all(chunk.as_bytes()).await?;
    }
    Ok(bytes)
}

/// Starts writing `total` [`timestamped`] lines with `pad` bytes of filler at `rate` lines/s.
pub fn spawn_timestamped(
    path: PathBuf,
    rate: u64,
    total: u64,
    pad: usize,
) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    let pad = "x".repeat(pad);
    tokio::spawn(write_at_rate(path, rate, total, move |n| {
        timestamped(n, &pad)
    }))
}

/// A line stamped with its write time (`t=<ns>`), its number and `pad` bytes of filler.
pub fn timestamped(n: u64, pad: &str) -> String {
    format!("INFO t={} n={n} {pad}", now_ns())
}

/// The `t=` stamp of a [`timestamped`] line.
pub fn stamp_of(message: &str) -> Option<u128> {
    word_value(message, "t=")
}

/// The `n=` number of a [`timestamped`] line: where a sink that has no sequence number of its
/// own (rsyslog's TCP forward) sees a line missing.
pub fn number_of(message: &str) -> Option<u64> {
    word_value(message, "n=")
}

/// The value of the first word starting with `key` (`t=`, `n=`).
fn word_value<T: std::str::FromStr>(message: &str, key: &str) -> Option<T> {
    // Words end at quotes too: in a client message's JSON the parsed message starts `"t=…`.
    message
        .split(|c: char| c.is_whitespace() || c == '"')
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

/// An nginx access-log line (≈ 150 bytes), varied by `n` so it compresses like the real thing.
pub fn nginx_access(n: u64) -> String {
    format!(
        "10.{}.{}.{} - - [24/Nov/2026:05:{:02}:{:02} +0000] \"GET /api/v1/items/{} HTTP/1.1\" {} {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\"",
        n % 7,
        n % 13,
        n % 251,
        (n / 60) % 60,
        n % 60,
        n * 7919 % 100_000,
        if n.is_multiple_of(10) { 500 } else { 200 },
        200 + n % 3000
    )
}

/// A realistic mix of log formats (≈ 120 bytes each), for the agent's parse path: plain
/// levelled app lines, nginx error and access lines, syslog, JSON and logfmt.
pub fn mixed(n: u64) -> String {
    let levels = ["INFO", "WARN", "ERROR", "DEBUG"];
    let level = levels[(n % 4) as usize];
    match n % 6 {
        0 => format!(
            "2026-11-24T05:53:{:02}.{:03}Z {level} [api] request handled path=/v1/items/{} status=200 took={}ms",
            n % 60,
            n % 1000,
            n * 31 % 10_000,
            n % 700
        ),
        1 => format!(
            "2026/11/24 05:53:{:02} [error] 1234#0: *{n} upstream timed out (110: Connection timed out) while reading upstream",
            n % 60
        ),
        2 => nginx_access(n),
        3 => format!(
            "<{}>Nov 24 05:53:{:02} edge-01 sshd[{}]: Accepted publickey for deploy from 10.0.0.{} port 52{:03}",
            8 + n % 8,
            n % 60,
            1000 + n % 9000,
            n % 255,
            n % 1000
        ),
        4 => format!(
            "{{\"ts\":\"2026-11-24T05:53:{:02}Z\",\"level\":\"{}\",\"msg\":\"job finished\",\"job\":{n},\"took_ms\":{}}}",
            n % 60,
            level.to_lowercase(),
            n % 900
        ),
        _ => format!(
            "ts=2026-11-24T05:53:{:02}Z level={} msg=\"cache refresh\" keys={} duration={}ms",
            n % 60,
            level.to_lowercase(),
            n % 5000,
            n % 300
        ),
    }
}
