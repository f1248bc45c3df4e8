//! The audit trail: who did what, when, from which org — session start, stop and expiry,
//! plugin upload and delete, agent enrollment and revocation, refused authentication.
//!
//! Events are JSON lines, one trail per org under `<data-dir>/audit/orgs/<hash of the org>/`:
//! `audit.log`, rotated to `audit.log.1` … `audit.log.{ROTATED_FILES}` once it reaches
//! [`MAX_FILE_BYTES`], the oldest file deleted, so each org's trail is bounded on disk and no
//! org's activity rotates another's away. Refusals of tokens that could not be verified have no
//! org and go to `refused.log`. A writer thread owns the files, so handlers never wait on a
//! disk; they hand events over a bounded queue.
//!
//! Overflow policy: an event that finds the queue full (the disk stalled for
//! [`QUEUE_EVENTS`] events) is not written; it is counted, the count is exported on
//! `/metrics`, and the next event written carries it in `"lost_before"` so a reader sees the
//! gap. Refused authentications are rate-limited ([`MAX_REFUSALS_PER_SECOND`] per org, and as
//! many for unverified tokens), the rest counted the same way (`"suppressed"`).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::time::rfc3339_millis;

mod read;

pub use read::Query;

/// The org-scoped trail's live file.
const LIVE_FILE: &str = "audit.log";
/// Refusals of tokens that could not be verified (no trustworthy org): kept apart.
const ANONYMOUS_FILE: &str = "refused.log";
/// Org trails the writer keeps open at once (a file each).
const MAX_OPEN_TRAILS: usize = 256;
/// Rotated files of [`ANONYMOUS_FILE`] kept.
pub const ANONYMOUS_ROTATED_FILES: usize = 1;
/// Longest `reason` kept for a refused authentication, in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// Size at which a log file is rotated.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Rotated files kept besides the live one: the trail holds at most
/// `(ROTATED_FILES + 1) × MAX_FILE_BYTES` bytes.
pub const ROTATED_FILES: usize = 4;
/// Events waiting for the writer thread.
pub const QUEUE_EVENTS: usize = 4096;
/// Refused authentications recorded per second; the rest are counted.
pub const MAX_REFUSALS_PER_SECOND: u32 = 20;
/// Most events one `GET /api/v1/audit` page returns.
pub const MAX_PAGE: usize = 1000;
/// Audit reads running at once; each holds a blocking thread and reads up to an org's
/// whole trail.
pub const MAX_CONCURRENT_READS: usize = 4;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    SessionStart,
    SessionStop,
    SessionPatch,
    SessionExpire,
    SessionFailed,
    PluginUpload,
    PluginDelete,
    AgentEnroll,
    AgentRevoke,
    AuthRefused,
}

impl Kind {
    /// Every kind, for messages and documents.
    pub const ALL: [Kind; 10] = [
        Kind::SessionStart,
        Kind::SessionStop,
        Kind::SessionPatch,
        Kind::SessionExpire,
        Kind::SessionFailed,
        Kind::PluginUpload,
        Kind::PluginDelete,
        Kind::AgentEnroll,
        Kind::AgentRevoke,
        Kind::AuthRefused,
    ];

    /// As written in events and `?kind=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SessionStart => "session_start",
            Kind::SessionStop => "session_stop",
            Kind::SessionPatch => "session_patch",
            Kind::SessionExpire => "session_expire",
            Kind::SessionFailed => "session_failed",
            Kind::PluginUpload => "plugin_upload",
            Kind::PluginDelete => "plugin_delete",
            Kind::AgentEnroll => "agent_enroll",
            Kind::AgentRevoke => "agent_revoke",
            Kind::AuthRefused => "auth_refused",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One audit record, as written and as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When, UTC, ms.
    pub at: String,
    pub kind: Kind,
    /// The org it happened in; absent for refused authentications whose org is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Who: a user's `sub`, `agent:<id>`, or `host` for expiry.
    pub actor: String,
    /// What: session id, agents, filters, plugin name and digest, reason… per kind.
    pub details: serde_json::Value,
    /// Events lost before this one (queue full).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost_before: u64,
    /// Refused authentications not recorded since the previous one (rate limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Shared handle: records events, reads them back.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    tx: Mutex<Option<SyncSender<Event>>>,
    lost: AtomicU64,
    /// Rate windows for refusals: one for unverified tokens, one per org for genuine tokens
    /// (an org's users short of a role, revoked agents), so no flood hides another org's.
    refusals: Mutex<Refusals>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// [`MAX_CONCURRENT_READS`] permits.
    readers: Arc<tokio::sync::Semaphore>,
}

/// Orgs whose refusal windows are kept; past it, idle windows are dropped (their suppressed
/// counts are lost only if an org stops being refused entirely).
const MAX_REFUSAL_WINDOWS: usize = 4096;

/// The refusal rate windows.
struct Refusals {
    anonymous: RefusalWindow,
    by_org: HashMap<String, RefusalWindow>,
}

/// A one-second window counting refused authentications.
struct RefusalWindow {
    started: Instant,
    recorded: u32,
    suppressed: u64,
}

impl RefusalWindow {
    fn new() -> RefusalWindow {
        RefusalWindow {
            started: Instant::now(),
            recorded: 0,
            suppressed: 0,
        }
    }
}

impl Audit {
    /// Opens the trail under `data_dir/audit` and starts its writer thread.
    pub fn open(data_dir: &Path) -> std::io::Result<Audit> {
        let dir = data_dir.join("audit");
        fs::create_dir_all(&dir)?;
        let (tx, rx) = sync_channel(QUEUE_EVENTS);
        let writer_dir = dir.clone();
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_events(&writer_dir, rx))?;
        Ok(Audit {
            inner: Arc::new(Inner {
                dir,
                tx: Mutex::new(Some(tx)),
                lost: AtomicU64::new(0),
                refusals: Mutex::new(Refusals {
                    anonymous: RefusalWindow::new(),
                    by_org: HashMap::new(),
                }),
                writer: Mutex::new(Some(writer)),
                readers: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_READS)),
            }),
        })
    }

    /// Records an event (see the overflow policy above).
    pub fn record(&self, kind: Kind, org: Option<&str>, actor: &str, details: serde_json::Value) {
        self.push(Event {
            at: rfc3339_millis(Utc::now().timestamp_millis()),
            kind,
            org: org.map(str::to_owned),
            actor: actor.to_owned(),
            details,
            lost_before: 0,
            suppressed: 0,
        });
    }

    /// Records a refused authentication or authorisation, rate-limited. `org` and `actor` are
    /// given only when the token was genuine (a revoked agent, a user short of a role).
    pub fn auth_refused(&self, org: Option<&str>, actor: Option<&str>, path: &str, why: &str) {
        let suppressed = {
            let mut windows = self
                .inner
                .refusals
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let windows = &mut *windows;
            let w = match org {
                None => &mut windows.anonymous,
                Some(org) => {
                    let full = |w: &Refusals| {
                        w.by_org.len() >= MAX_REFUSAL_WINDOWS && !w.by_org.contains_key(org)
                    };
                    if full(windows) {
                        windows
                            .by_org
                            .retain(|_, w| w.started.elapsed().as_secs() < 1 || w.suppressed > 0);
                    }
                    if full(windows) {
                        // Thousands of orgs refused within a second: share one window.
                        &mut windows.anonymous
                    } else {
                        windows
                            .by_org
                            .entry(org.to_owned())
                            .or_insert_with(RefusalWindow::new)
                    }
                }
            };
            if w.started.elapsed().as_secs() >= 1 {
                w.started = Instant::now();
                w.recorded = 0;
            }
            if w.recorded >= MAX_REFUSALS_PER_SECOND {
                w.suppressed += 1;
                return;
            }
            w.recorded += 1;
            std::mem::take(&mut w.suppressed)
        };
        let path = crate::error::truncate_bytes(path, MAX_REASON_BYTES);
        let why = crate::error::truncate_bytes(why, MAX_REASON_BYTES);
        self.push(Event {
            at: rfc3339_millis(Utc::now().timestamp_millis()),
            kind: Kind::AuthRefused,
            org: org.map(str::to_owned),
            actor: actor.unwrap_or("unknown").to_owned(),
            details: serde_json::json!({"path": path, "reason": why}),
            lost_before: 0,
            suppressed,
        });
    }

    fn push(&self, mut event: Event) {
        let tx = self.inner.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else {
            self.inner.lost.fetch_add(1, Ordering::Relaxed);
            return;
        };
        event.lost_before = self.inner.lost.swap(0, Ordering::Relaxed);
        if let Err(TrySendError::Full(e) | TrySendError::Disconnected(e)) = tx.try_send(event) {
            // Put the count back, plus this event.
            self.inner
                .lost
                .fetch_add(e.lost_before + 1, Ordering::Relaxed);
        }
    }

    /// Events lost to a full queue and not yet reported in a written event.
    pub fn lost(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }

    /// Writes what is queued and stops the writer (host shutdown).
    pub fn close(&self) {
        self.inner
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    /// The events matching `query`, newest first, and whether more follow. At most
    /// [`MAX_CONCURRENT_READS`] run at once (each reads the org's files from their end on a
    /// blocking thread); others wait their turn.
    pub async fn read(&self, query: Query) -> std::io::Result<(Vec<Event>, bool)> {
        // The permit goes with the read: a caller that gives up does not free its slot while
        // the read still runs.
        let permit = self
            .inner
            .readers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| std::io::Error::other("the audit trail is closed"))?;
        let files = trail_files(&self.inner.dir, &query.org);
        tokio::task::spawn_blocking(move || {
            let page = read::page(&files, &query);
            drop(permit);
            page
        })
        .await
        .map_err(|_| std::io::Error::other("the audit read task failed"))?
    }
}

/// An org's trail files, newest first.
fn trail_files(data_dir: &Path, org: &str) -> Vec<PathBuf> {
    let dir = org_dir(data_dir, org);
    let mut files = vec![dir.join(LIVE_FILE)];
    files.extend((1..=ROTATED_FILES).map(|n| rotated(&dir, n)));
    files
}

fn rotated(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{LIVE_FILE}.{n}"))
}

/// One append-only log file and its rotation.
struct Log {
    dir: PathBuf,
    name: &'static str,
    rotated: usize,
    file: Option<File>,
}

impl Log {
    fn open(dir: &Path, name: &'static str, rotated: usize) -> Log {
        if let Err(e) = fs::create_dir_all(dir) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot create an audit directory");
        }
        let mut log = Log {
            dir: dir.to_owned(),
            name,
            rotated,
            file: None,
        };
        log.file = open_append(&log.path(0));
        log
    }

    /// `name` for the live file, `name.N` for the N-th rotated one.
    fn path(&self, n: usize) -> PathBuf {
        if n == 0 {
            self.dir.join(self.name)
        } else {
            self.dir.join(format!("{}.{n}", self.name))
        }
    }

    fn append(&mut self, line: &[u8]) {
        let live = self.path(0);
        let size = fs::metadata(&live).map_or(0, |m| m.len());
        if size + line.len() as u64 > MAX_FILE_BYTES {
            self.rotate();
        }
        let written = match self.file.as_mut() {
            Some(f) => f.write_all(line).and_then(|()| f.flush()),
            None => Err(std::io::Error::other("audit log not open")),
        };
        if let Err(e) = written {
            tracing::error!(file = self.name, error = %e, "cannot write the audit log; event lost");
            self.file = open_append(&live);
        }
    }

    /// `name.{N-1}` → `name.N`, …, `name` → `name.1`; the oldest is replaced.
    fn rotate(&mut self) {
        for n in (1..self.rotated).rev() {
            let _ = fs::rename(self.path(n), self.path(n + 1));
        }
        if self.rotated == 0 {
            let _ = fs::remove_file(self.path(0));
        } else if let Err(e) = fs::rename(self.path(0), self.path(1)) {
            tracing::error!(file = self.name, error = %e, "cannot rotate the audit log");
        }
        self.file = open_append(&self.path(0));
    }

    fn close(self) {
        if let Some(f) = self.file {
            let _ = f.sync_all();
        }
    }
}

/// The writer thread: appends each event as a line, rotating by size, until the queue closes.
/// Refusals of tokens that could not be verified have no trustworthy org and are read by no
/// one through the API: they go to their own file, so a flood of them never rotates an org's
/// events away.
fn write_events(dir: &Path, rx: Receiver<Event>) {
    let mut trails: HashMap<String, Log> = HashMap::new();
    let mut anonymous = Log::open(dir, ANONYMOUS_FILE, ANONYMOUS_ROTATED_FILES);
    while let Ok(event) = rx.recv() {
        let Ok(mut line) = serde_json::to_vec(&event) else {
            continue;
        };
        line.push(b'\n');
        match &event.org {
            Some(org) => {
                if !trails.contains_key(org) && trails.len() >= MAX_OPEN_TRAILS {
                    // Closing every file is simpler than tracking use, and reopening is cheap.
                    trails.drain().for_each(|(_, log)| log.close());
                }
                trails
                    .entry(org.clone())
                    .or_insert_with(|| Log::open(&org_dir(dir, org), LIVE_FILE, ROTATED_FILES))
                    .append(&line);
            }
            None => anonymous.append(&line),
        }
    }
    trails.into_values().for_each(Log::close);
    anonymous.close();
}

/// Where one org's trail lives: `orgs/<hash of the org>/`, so any org name makes a safe path
/// and one org's records never rotate another's away.
fn org_dir(dir: &Path, org: &str) -> PathBuf {
    let digest = logfleet_filter_runtime::digest(org.as_bytes());
    let hex = digest.trim_start_matches("sha256:");
    dir.join("orgs").join(&hex[..hex.len().min(32)])
}

fn open_append(path: &Path) -> Option<File> {
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the audit log");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(org: &str) -> Query {
        Query {
            org: org.into(),
            limit: 100,
            ..Query::default()
        }
    }

    /// Events are read back newest first, only the caller's org, filtered and paged; what
    /// was written before a restart is still there.
    #[tokio::test]
    async fn events_are_org_scoped_filtered_and_paged() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(dir.path()).unwrap();
        for i in 0..5 {
            audit.record(
                Kind::SessionStart,
                Some("acme"),
                "alice",
                serde_json::json!({"n": i}),
            );
        }
        audit.record(
            Kind::PluginDelete,
            Some("acme"),
            "root",
            serde_json::json!({}),
        );
        audit.record(
            Kind::SessionStart,
            Some("evil"),
            "mallory",
            serde_json::json!({}),
        );
        audit.auth_refused(None, None, "/api/v1/agents", "token expired");
        audit.auth_refused(Some("acme"), Some("bob"), "/api/v1/plugins", "needs admin");
        audit.close();

        let audit = Audit::open(dir.path()).unwrap();
        let (all, more) = audit.read(query("acme")).await.unwrap();
        assert_eq!((all.len(), more), (7, false));
        assert_eq!(all[0].kind, Kind::AuthRefused, "newest first");
        assert_eq!(all[1].kind, Kind::PluginDelete);
        let (page, more) = audit
            .read(Query {
                kind: Some(Kind::SessionStart),
                limit: 2,
                offset: 1,
                ..query("acme")
            })
            .await
            .unwrap();
        let ns: Vec<_> = page
            .iter()
            .map(|e| e.details["n"].as_i64().unwrap())
            .collect();
        assert_eq!((ns, more), (vec![3, 2], true));
        let (by_actor, _) = audit
            .read(Query {
                actor: Some("root".into()),
                ..query("acme")
            })
            .await
            .unwrap();
        assert_eq!(by_actor.len(), 1);
        assert!(
            audit
                .read(query("evil"))
                .await
                .unwrap()
                .0
                .iter()
                .all(|e| e.actor == "mallory")
        );
    }

    /// Rotation keeps each org's trail bounded (at most ROTATED_FILES old files, each under
    /// the cap), and one org's flood never rotates another org's events away.
    #[tokio::test]
    async fn rotation_bounds_the_trail() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(dir.path()).unwrap();
        audit.record(
            Kind::AgentRevoke,
            Some("globex"),
            "root",
            serde_json::json!({}),
        );
        let big = "x".repeat(64 * 1024);
        let events = (MAX_FILE_BYTES as usize / big.len()) * (ROTATED_FILES + 3);
        assert!(
            events < QUEUE_EVENTS,
            "the burst fits the queue: nothing is lost"
        );
        for _ in 0..events {
            audit.record(
                Kind::SessionStart,
                Some("acme"),
                "a",
                serde_json::json!({"pad": big}),
            );
        }
        assert_eq!(audit.lost(), 0);
        audit.close();
        let audit = Audit::open(dir.path()).unwrap();
        let (globex, _) = audit.read(query("globex")).await.unwrap();
        assert_eq!(
            globex.len(),
            1,
            "another org's flood left globex's trail alone"
        );
        audit.close();
        let files: Vec<_> = fs::read_dir(org_dir(&dir.path().join("audit"), "acme"))
            .unwrap()
            .map(|f| f.unwrap())
            .filter(|f| f.file_name().to_string_lossy().starts_with(LIVE_FILE))
            .collect();
        assert_eq!(files.len(), ROTATED_FILES + 1);
        for f in files {
            assert!(f.metadata().unwrap().len() <= MAX_FILE_BYTES);
        }
    }

    /// Every kind reads back as written (serde's names are the documented ones).
    #[test]
    fn kinds_round_trip() {
        for kind in Kind::ALL {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
    }

    /// A flood of refused authentications is recorded at a bounded rate, the rest counted.
    #[test]
    fn refusals_are_rate_limited_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(dir.path()).unwrap();
        for _ in 0..(MAX_REFUSALS_PER_SECOND + 50) {
            audit.auth_refused(None, None, "/x", "bad");
        }
        audit.close();
        let text = fs::read_to_string(dir.path().join("audit/refused.log")).unwrap();
        assert!(text.lines().count() <= MAX_REFUSALS_PER_SECOND as usize);
    }
}
