//! Checkpoints: the read position of every followed file, persisted so a restarted agent can
//! continue where it stopped reading.
//!
//! One file, [`CHECKPOINT_FILE`] in the state directory, JSON: per file its source, the path
//! it was followed under, its identity (device, inode, head fingerprint: the first
//! [`FINGERPRINT_BYTES`](super::FINGERPRINT_BYTES) bytes, hex), the byte offset after the last
//! line read and that line's number. Written atomically by [`CheckpointStore::save`] (a temp
//! file in the same directory, fsync, rename, fsync of the directory), so a crash leaves the
//! old or the new checkpoint, never a mix; a torn or invalid file is ignored with a warning
//! ([`CheckpointStore::load`]): the agent then starts as without checkpoints, never crashes.
//! The tailer does not write it: it publishes a [`Snapshot`] of its read positions every
//! [`CHECKPOINT_INTERVAL`] when something changed and when it stops, numbered by the batches
//! sent before it. Read positions run ahead of what is safe (lines in the channel, in the
//! multiline joiner, in a session's unsent batch), so the pipeline writes a snapshot only
//! once every line before it has left the pipeline for the outbox, and only after the
//! outbox's disk buffer is flushed (see [`crate::pipeline`]): a restart resumes exactly after
//! the last line the outbox (and its disk buffer, with `--buffer-dir`) took.
//!
//! Resuming ([`StartPolicy::Resume`]): a file found by the first scan that has the identity of
//! a checkpoint (device, inode, and a head that still starts with the checkpointed
//! fingerprint) and is not shorter than its offset continues from it, numbering included; a
//! different file at a checkpointed path (rotated while the agent was down) is read from its
//! start; a file the checkpoint does not know starts at its end, as without checkpoints.
//! Either way, backlog beyond `backlog_cap_bytes` is skipped — the oldest whole lines — and
//! counted per source ([`TailStats::backlog_dropped`](super::TailStats::backlog_dropped)).
//! Rotated files that were followed at the checkpoint resume only if a source's glob still
//! matches them.
//!
//! How the agent uses it (the wiring of `--state-dir` and the session-aware choice of policy
//! live outside this module):
//!
//! ```no_run
//! use std::sync::Arc;
//! use logfleet_agent::SourceConfig;
//! use logfleet_agent::tail::checkpoint::DEFAULT_BACKLOG_CAP_BYTES;
//! use logfleet_agent::tail::{CheckpointStore, Snapshot, StartPolicy, TailOptions, TailStats, spawn};
//!
//! let sources = [SourceConfig::new("app", "/var/log/app.log")];
//! let store = CheckpointStore::new(std::path::Path::new("/var/lib/logfleet"));
//! let options = TailOptions {
//!     // Resume (sessions were active), or `StartPolicy::AtEnd` as without checkpoints.
//!     start: StartPolicy::Resume { backlog_cap_bytes: DEFAULT_BACKLOG_CAP_BYTES },
//!     resume_from: store.load(),
//!     // The pipeline writes them to `store` once their lines are safe.
//!     snapshots: Some(tokio::sync::watch::channel(Snapshot::default()).0),
//!     ..TailOptions::default()
//! };
//! let stats = Arc::new(TailStats::default());
//! let (tx, _rx) = tokio::sync::mpsc::channel(8);
//! let handle = spawn(&sources, options, stats.clone(), tx)?;
//! // Later: lines skipped because a backlog exceeded the cap, per source.
//! let dropped = stats.backlog_dropped();
//! # drop((handle, dropped));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::warn;

/// The checkpoint file's name inside the state directory.
pub const CHECKPOINT_FILE: &str = "tail-checkpoints.json";
/// How often the tailer writes its checkpoint when positions changed.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// A reasonable backlog cap for [`StartPolicy::Resume`]: 64 MiB per file.
pub const DEFAULT_BACKLOG_CAP_BYTES: u64 = 64 * 1024 * 1024;
/// Format version written in the file; other versions are ignored.
const VERSION: u32 = 1;

/// The tailer's read positions right after it sent its `batches`-th batch: every line before
/// them is in that batch or an earlier one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub batches: u64,
    pub checkpoints: Checkpoints,
}

/// Where files present at start begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPolicy {
    /// At their end, after counting their lines (no checkpoint used).
    #[default]
    AtEnd,
    /// From the checkpoints in [`TailOptions::resume_from`](super::TailOptions::resume_from),
    /// reading at most `backlog_cap_bytes` of backlog per file (see the module docs).
    Resume { backlog_cap_bytes: u64 },
}

/// The position of one followed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    pub source: String,
    /// The path the file was followed under.
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// The file's first bytes (up to [`FINGERPRINT_BYTES`](super::FINGERPRINT_BYTES)).
    #[serde(with = "hex")]
    pub head: Vec<u8>,
    /// Offset after the last line read.
    pub offset: u64,
    /// Number of the last line read (0: none).
    pub line: u64,
}

/// Positions of all followed files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoints {
    pub files: Vec<FileCheckpoint>,
    /// Where the outbox's disk buffer ended (segment, offset) when these positions were
    /// written: records after it hold lines after these positions, which a resumed tailer
    /// reads again, so they are not resent (see [`crate::outbox::spool`]).
    pub spool_end: Option<(u64, u64)>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    files: Vec<FileCheckpoint>,
    #[serde(default)]
    spool_end: Option<(u64, u64)>,
}

/// The checkpoint file in a state directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    path: PathBuf,
}

impl CheckpointStore {
    /// The store for `state_dir` (created on the first save).
    pub fn new(state_dir: &Path) -> CheckpointStore {
        CheckpointStore {
            path: state_dir.join(CHECKPOINT_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved checkpoints; none if there is no file, and none (with a warning) if it cannot
    /// be read or is not a valid checkpoint (torn, hand-edited, another version).
    pub fn load(&self) -> Checkpoints {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Checkpoints::default(),
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot read checkpoint; starting without it");
                return Checkpoints::default();
            }
        };
        match serde_json::from_slice::<OnDisk>(&bytes) {
            Ok(disk) if disk.version == VERSION => Checkpoints {
                files: disk.files,
                spool_end: disk.spool_end,
            },
            Ok(disk) => {
                warn!(path = %self.path.display(), version = disk.version, "checkpoint of another version ignored");
                Checkpoints::default()
            }
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "invalid checkpoint ignored");
                Checkpoints::default()
            }
        }
    }

    /// Writes `checkpoints` atomically: temp file, fsync, rename over the old one, fsync of
    /// the directory.
    pub fn save(&self, checkpoints: &Checkpoints) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{CHECKPOINT_FILE}.tmp"));
        let disk = OnDisk {
            version: VERSION,
            files: checkpoints.files.clone(),
            spool_end: checkpoints.spool_end,
        };
        let bytes = serde_json::to_vec(&disk).map_err(io::Error::other)?;
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        // The rename itself is durable once the directory is synced.
        File::open(dir)?.sync_all()
    }
}

/// Hex (de)serialisation of the head fingerprint.
mod hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() % 2 != 0 || text.len() > 2 * super::super::FINGERPRINT_BYTES {
            return Err(D::Error::custom("bad fingerprint length"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| D::Error::custom("bad fingerprint hex"))
            })
            .collect()
    }
}
