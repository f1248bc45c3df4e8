//! Lines/s through `parse::detect_level`, one benchmark per line format plus all formats
//! interleaved. Level detection runs once for every line the agent reads, matched or not, so
//! its cost is paid in full at the agent's tail + parse + count ceiling (target 500 k lines/s
//! per core, a 2,000 ns/line budget for all three).
//!
//! Input: per format, 1,000 deterministic synthetic lines averaging 110–140 bytes (≈ 120 over
//! all formats) with a realistic level mix (mostly info). Setup asserts that every line detects
//! the level it was written with, so each benchmark measures the path that recognises its
//! format, not a fallback by accident. The nginx access log names no level: it falls back to
//! `Info` after every check has run (a full logfmt scan of the line), the worst case.
//!
//!   cargo bench -p logfleet-agent --bench parse

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logfleet_agent::parse::detect_level;
use logfleet_protocol::Level;

/// Lines per format.
const LINES: usize = 1_000;

/// Deterministic line generator: a seeded RNG and a clock that advances a few ms per line.
struct Gen {
    rng: fastrand::Rng,
    /// Milliseconds since 2026-11-24T00:00:00Z.
    ms: u64,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen {
            rng: fastrand::Rng::with_seed(seed),
            ms: (5 * 3600 + 53 * 60 + 50) * 1000 + 123,
        }
    }

    fn tick(&mut self) -> (u64, u64, u64, u64) {
        self.ms += self.rng.u64(1..40);
        let s = self.ms / 1000;
        (s / 3600 % 24, s / 60 % 60, s % 60, self.ms % 1000)
    }

    /// `2026-11-24T05:53:50.123Z`
    fn iso(&mut self) -> String {
        let (h, m, s, ms) = self.tick();
        format!("2026-11-24T{h:02}:{m:02}:{s:02}.{ms:03}Z")
    }

    /// A level drawn from a typical production mix: mostly info, some warn/debug, few errors.
    fn level(&mut self) -> Level {
        match self.rng.u32(..100) {
            0..=59 => Level::Info,
            60..=71 => Level::Debug,
            72..=85 => Level::Warn,
            86..=96 => Level::Error,
            97 => Level::Trace,
            _ => Level::Fatal,
        }
    }

    fn ip(&mut self) -> String {
        format!(
            "10.{}.{}.{}",
            self.rng.u8(..4),
            self.rng.u8(..),
            self.rng.u8(1..255)
        )
    }

    /// A free-text application message of ≈ 60–90 bytes, lower case, without quotes.
    fn message(&mut self) -> String {
        let r = &mut self.rng;
        match r.u32(..8) {
            0 => format!(
                "request completed method=GET path=/api/v1/orders/{} status=200 duration={}ms",
                r.u32(..100_000),
                r.u32(1..900)
            ),
            1 => format!(
                "upstream timed out while connecting to payments-svc:{}, retry {} of 3",
                r.u32(8000..8100),
                r.u32(1..4)
            ),
            2 => format!(
                "cache miss for key user:{}:profile, loading from primary replica",
                r.u32(..1_000_000)
            ),
            3 => format!(
                "slow query on orders (select by customer_id) took {} ms, rows={}",
                r.u32(200..5000),
                r.u32(..10_000)
            ),
            4 => format!(
                "connection pool exhausted for db-primary, {} waiters, max_size=32",
                r.u32(1..64)
            ),
            5 => format!(
                "job {:016x} finished in {} ms, {} items processed, 0 failed",
                r.u64(..),
                r.u32(10..60_000),
                r.u32(1..5000)
            ),
            6 => format!(
                "tls handshake with 10.0.{}.{}:443 aborted, certificate expired for api.example.com",
                r.u8(..),
                r.u8(..)
            ),
            _ => format!(
                "consumer group billing rebalanced, partitions={} lag={} generation={}",
                r.u32(1..64),
                r.u32(..100_000),
                r.u32(1..500)
            ),
        }
    }
}

/// Upper-case level word as most application loggers write it.
fn upper(level: Level) -> &'static str {
    level.as_str()
}

fn lower(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
        Level::Fatal => "fatal",
    }
}

/// `2026-11-24T05:53:50.123Z ERROR [api] message`
fn plain(g: &mut Gen) -> (String, Level) {
    let level = g.level();
    let module = ["api", "db", "auth", "worker", "http"][g.rng.usize(..5)];
    let line = format!("{} {:<5} [{module}] {}", g.iso(), upper(level), g.message());
    (line, level)
}

/// nginx `error_log`: `2026/11/24 05:53:50 [error] 1234#0: *5 upstream timed out ...`
fn nginx_error(g: &mut Gen) -> (String, Level) {
    let (word, level) = match g.rng.u32(..10) {
        0..=3 => ("error", Level::Error),
        4..=6 => ("warn", Level::Warn),
        7 => ("crit", Level::Fatal),
        8 => ("notice", Level::Info),
        _ => ("info", Level::Info),
    };
    let (h, m, s, _) = g.tick();
    let pid = g.rng.u32(1000..1100);
    let conn = g.rng.u32(1..100_000);
    let client = g.ip();
    let r = &mut g.rng;
    let text = match r.u32(..4) {
        0 => format!(
            "upstream timed out (110: Connection timed out) while reading upstream, client: {client}"
        ),
        1 => format!(
            "connect() failed (111: Connection refused) while connecting to upstream, client: {client}"
        ),
        2 => format!(
            "client intended to send too large body: {} bytes, client: {client}",
            r.u32(1_000_000..9_000_000)
        ),
        _ => format!(
            "open() \"/srv/www/static/img/{}.png\" failed (2: No such file or directory)",
            r.u32(..10_000)
        ),
    };
    let line = format!("2026/11/24 {h:02}:{m:02}:{s:02} [{word}] {pid}#0: *{conn} {text}");
    (line, level)
}

/// nginx combined access log: no level anywhere, so every check runs before `Info`.
fn nginx_access(g: &mut Gen) -> (String, Level) {
    const AGENTS: [&str; 5] = [
        "curl/8.5.0",
        "Go-http-client/1.1",
        "python-requests/2.32.3",
        "kube-probe/1.30",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ];
    let (h, m, s, _) = g.tick();
    let client = g.ip();
    let r = &mut g.rng;
    let (method, path) = match r.u32(..4) {
        0 => ("GET", format!("/api/v1/items/{}", r.u32(..100_000))),
        1 => ("POST", "/api/v1/orders".to_owned()),
        2 => ("GET", format!("/static/js/app.{:08x}.js", r.u32(..))),
        _ => (
            "GET",
            format!(
                "/api/v1/search?q=item{}&page={}",
                r.u32(..1000),
                r.u32(1..20)
            ),
        ),
    };
    let status = [200, 200, 200, 200, 201, 204, 304, 404, 499, 502][r.usize(..10)];
    let line = format!(
        "{client} - - [24/Nov/2026:{h:02}:{m:02}:{s:02} +0000] \"{method} {path} HTTP/1.1\" {status} {} \"-\" \"{}\"",
        r.u32(..50_000),
        AGENTS[r.usize(..AGENTS.len())]
    );
    (line, Level::Info)
}

/// syslog with a `<PRI>` prefix, RFC 3164 and RFC 5424 headers.
fn syslog(g: &mut Gen) -> (String, Level) {
    let facility = [1u16, 3, 4, 16, 23][g.rng.usize(..5)];
    let severity = match g.level() {
        Level::Fatal => g.rng.u16(0..3),
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => g.rng.u16(5..7),
        Level::Debug | Level::Trace => 7,
    };
    let pri = facility * 8 + severity;
    let level = Level::from_syslog_severity(severity as u8);
    let pid = g.rng.u32(100..32_000);
    let line = if g.rng.bool() {
        let (h, m, s, _) = g.tick();
        format!(
            "<{pri}>Nov 24 {h:02}:{m:02}:{s:02} web-01 api[{pid}]: {}",
            g.message()
        )
    } else {
        format!(
            "<{pri}>1 {} web-01.prod api {pid} - - {}",
            g.iso(),
            g.message()
        )
    };
    (line, level)
}

/// JSON lines: zap/bunyan style (`"level":"warn"` after a timestamp), logrus style (level
/// first) and pino numeric levels.
fn json(g: &mut Gen) -> (String, Level) {
    let level = g.level();
    let line = match g.rng.u32(..3) {
        0 => format!(
            r#"{{"ts":"{}","level":"{}","logger":"api.http","msg":"{}"}}"#,
            g.iso(),
            lower(level),
            g.message()
        ),
        1 => format!(
            r#"{{"level":"{}","msg":"{}","time":"{}"}}"#,
            lower(level),
            g.message(),
            g.iso()
        ),
        _ => {
            let number = match level {
                Level::Trace => 10,
                Level::Debug => 20,
                Level::Info => 30,
                Level::Warn => 40,
                Level::Error => 50,
                Level::Fatal => 60,
            };
            g.tick();
            format!(
                r#"{{"level":{number},"time":{},"pid":{},"hostname":"web-01","msg":"{}"}}"#,
                1_795_478_400_000 + g.ms,
                g.rng.u32(100..32_000),
                g.message()
            )
        }
    };
    (line, level)
}

/// logfmt: `ts=... level=error msg="..."` (logrus/slog/go-kit style).
fn logfmt(g: &mut Gen) -> (String, Level) {
    let level = g.level();
    let line = format!(
        "ts={} level={} msg=\"{}\"",
        g.iso(),
        lower(level),
        g.message()
    );
    (line, level)
}

/// Python `logging` default-ish format: `2026-11-24 05:53:50,123 - app.db - WARNING - ...`
fn python(g: &mut Gen) -> (String, Level) {
    let (word, level) = match g.level() {
        Level::Trace | Level::Debug => ("DEBUG", Level::Debug),
        Level::Info => ("INFO", Level::Info),
        Level::Warn => ("WARNING", Level::Warn),
        Level::Error => ("ERROR", Level::Error),
        Level::Fatal => ("CRITICAL", Level::Fatal),
    };
    let logger = [
        "app.db",
        "app.http",
        "celery.worker",
        "urllib3.connectionpool",
    ][g.rng.usize(..4)];
    let (h, m, s, ms) = g.tick();
    let line = format!(
        "2026-11-24 {h:02}:{m:02}:{s:02},{ms:03} - {logger} - {word} - {}",
        g.message()
    );
    (line, level)
}

type Format = (&'static str, fn(&mut Gen) -> (String, Level));

const FORMATS: [Format; 7] = [
    ("plain", plain),
    ("nginx_error", nginx_error),
    ("nginx_access", nginx_access),
    ("syslog", syslog),
    ("json", json),
    ("logfmt", logfmt),
    ("python", python),
];

/// Detects every line's level and counts per level, as the pipeline does.
fn count(lines: &[String]) -> [u64; 6] {
    let mut counts = [0u64; 6];
    for line in lines {
        counts[detect_level(black_box(line)).index()] += 1;
    }
    counts
}

fn bench(c: &mut Criterion) {
    let mut sets = Vec::new();
    for (seed, (name, generate)) in FORMATS.iter().enumerate() {
        let mut g = Gen::new(seed as u64 + 1);
        let mut lines = Vec::with_capacity(LINES);
        for _ in 0..LINES {
            let (line, want) = generate(&mut g);
            assert_eq!(detect_level(&line), want, "{name}: {line}");
            lines.push(line);
        }
        let avg = lines.iter().map(String::len).sum::<usize>() / LINES;
        eprintln!("{name}: {LINES} lines, avg {avg} bytes, e.g. {}", lines[0]);
        sets.push((*name, lines));
    }
    // Every format in turn, line by line, as an agent tailing several sources sees them.
    let mixed: Vec<String> = (0..LINES)
        .flat_map(|i| sets.iter().map(move |(_, lines)| lines[i].clone()))
        .collect();
    sets.push(("mixed", mixed));

    let mut group = c.benchmark_group("detect_level");
    for (name, lines) in &sets {
        group.throughput(Throughput::Elements(lines.len() as u64));
        group.bench_function(*name, |b| b.iter(|| count(lines)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
