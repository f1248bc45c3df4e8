//! What the agent keeps across its own restarts, in its state directory (`--state-dir`):
//! the `seq` it may use next and the sessions it was running. The tailer's read positions
//! live there too (see [`crate::tail`]).
//!
//! - **seq** (`seq`): `seq` must never repeat for an agent, also across restarts and clock
//!   changes, because the host drops what it already has by `seq`. The agent reserves blocks
//!   of [`SEQ_BLOCK`] numbers, writing the end of the block before using any of it, so after a
//!   crash it starts above everything it may have used: one small atomic write per block.
//! - **sessions** (`sessions.json`): the running sessions' ids, filters and limits, and when
//!   each ends by the wall clock, rewritten whenever the set changes. A restarted agent runs
//!   the ones that have not ended yet straight away, so the lines written while it was down
//!   go through their filters before the host is even reachable.
//!
//! Every file is written atomically (temporary file, fsync, rename). A file that cannot be
//! read or parsed is logged and ignored: losing state costs resumption, never the agent.

use std::path::{Path, PathBuf};

use logfleet_filter_runtime::write_atomically;
use logfleet_protocol::Filters;
use logfleet_protocol::agent::RateLimits;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// Seqs reserved per write of the `seq` file: at 20,000 lines/s one write every 50 s.
pub const SEQ_BLOCK: u64 = 1_000_000;
/// Most sessions remembered (the host runs at most 32 per agent).
pub const MAX_SAVED_SESSIONS: usize = 64;

/// The state directory's name under the cache directory when none is configured.
pub const DEFAULT_STATE_DIR_NAME: &str = "state";

const SEQ_FILE: &str = "seq";
const LOCK_FILE: &str = "lock";
const SESSIONS_FILE: &str = "sessions.json";

/// The agent's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    /// Held while the agent runs (see [`StateDir::open_exclusive`]); the lock goes with the
    /// last clone.
    _lock: Option<std::sync::Arc<std::fs::File>>,
}

/// A session as remembered across a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSession {
    pub id: String,
    pub filters: Filters,
    pub limits: RateLimits,
    /// When it ends, ms since the Unix epoch by this machine's clock when it was saved.
    pub ends_at_ms: i64,
}

/// The state directory to use: the configured one, which must work (a clear startup error
/// otherwise), or `state` under the cache directory, or none when there is no usable cache
/// directory (or the default cannot be created, logged): the agent then keeps nothing across
/// restarts and starts at the end of every file, as before state existed. Blocking.
pub fn resolve(
    configured: Option<&Path>,
    cache_dir: Option<&Path>,
) -> Result<Option<StateDir>, crate::ConfigError> {
    if let Some(dir) = configured {
        return StateDir::open(dir)
            .map(Some)
            .map_err(|error| crate::ConfigError::StateDir {
                path: dir.display().to_string(),
                error,
            });
    }
    let Some(cache) = cache_dir else {
        return Ok(None);
    };
    let dir = cache.join(DEFAULT_STATE_DIR_NAME);
    match StateDir::open(&dir) {
        Ok(state) => Ok(Some(state)),
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "state directory not usable; restarts will not resume");
            Ok(None)
        }
    }
}

impl StateDir {
    /// Creates `dir` if needed (owner-only: it holds session filters).
    pub fn open(dir: &Path) -> std::io::Result<StateDir> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        Ok(StateDir {
            dir: dir.to_owned(),
            _lock: None,
        })
    }

    /// Opens `dir` for this agent alone: two agents sharing a state directory would resume
    /// each other's sessions and overwrite each other's read positions, so the second one is
    /// refused with a clear error (an exclusive `flock` on `dir/lock`, released when the
    /// agent exits, however it exits).
    pub fn open_exclusive(dir: &Path) -> std::io::Result<StateDir> {
        let mut state = StateDir::open(dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::other(
                    "another agent is using this state directory; give each agent its own --state-dir",
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        state._lock = Some(std::sync::Arc::new(file));
        Ok(state)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read agent state; ignoring it");
                None
            }
        }
    }

    /// The sessions saved last, in the order saved; empty when there is no usable file.
    pub fn load_sessions(&self) -> Vec<SavedSession> {
        let Some(bytes) = self.read(SESSIONS_FILE) else {
            return Vec::new();
        };
        match serde_json::from_slice::<Vec<SavedSession>>(&bytes) {
            Ok(mut sessions) => {
                sessions.truncate(MAX_SAVED_SESSIONS);
                sessions
            }
            Err(e) => {
                warn!(error = %e, "saved sessions are unreadable; starting without them");
                Vec::new()
            }
        }
    }

    /// Replaces the saved sessions (at most [`MAX_SAVED_SESSIONS`]). Blocking (fsync).
    pub fn save_sessions(&self, sessions: &[SavedSession]) -> std::io::Result<()> {
        let sessions = &sessions[..sessions.len().min(MAX_SAVED_SESSIONS)];
        let bytes = serde_json::to_vec(sessions).map_err(std::io::Error::other)?;
        write_atomically(&self.dir.join(SESSIONS_FILE), &bytes)
    }

    /// Where `seq` continues: above every block reserved before, and never below `floor`
    /// (the clock-derived start an agent without state uses).
    pub fn seq(&self, floor: u64) -> SeqSource {
        let reserved = self
            .read(SEQ_FILE)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let next = floor.max(reserved);
        SeqSource {
            state: Some(self.clone()),
            next,
            reserved: next,
        }
    }

    fn reserve(&self, until: u64) -> std::io::Result<()> {
        write_atomically(&self.dir.join(SEQ_FILE), until.to_string().as_bytes())
    }
}

/// Writes the newest of a series of values off the async workers: the pipeline hands it each
/// new value ([`LatestWriter::save`], never blocks) and one task writes them on a blocking
/// thread, one write at a time. Values handed in while a write runs replace each other, so
/// only the newest is written next: bounded to one value waiting, and the file always ends
/// up with the latest. Used for the running sessions and for the tail checkpoints.
#[derive(Debug)]
pub struct LatestWriter<T> {
    latest: tokio::sync::watch::Sender<Option<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Clone + Send + Sync + 'static> LatestWriter<T> {
    /// Starts the writer task (on the current tokio runtime), which calls `write` with each
    /// value to write; `what` names the file in its warnings. The task ends when the writer
    /// is dropped or finished, after writing the value handed in last.
    pub fn spawn<F>(what: &'static str, write: F) -> LatestWriter<T>
    where
        F: Fn(&T) -> std::io::Result<()> + Send + Sync + 'static,
    {
        let (latest, mut rx) = tokio::sync::watch::channel(None::<T>);
        let write = std::sync::Arc::new(write);
        let task = tokio::spawn(async move {
            // `changed` errs once the sender is gone and the last value has been seen.
            while rx.changed().await.is_ok() {
                let Some(value) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let write = write.clone();
                match tokio::task::spawn_blocking(move || write(&value)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        warn!(error = %e, "cannot save {what}; a restart will not resume from it")
                    }
                    Err(e) => warn!(error = %e, "{what} writer lost"),
                }
            }
        });
        LatestWriter { latest, task }
    }

    /// Queues `value` to be written (replacing one not written yet).
    pub fn save(&self, value: T) {
        self.latest.send_replace(Some(value));
    }

    /// Waits until the value handed in last is written, then ends the task.
    pub async fn finish(self) {
        drop(self.latest);
        // Only a panic in `write` or a runtime shutting down; either was logged there.
        let _ = self.task.await;
    }
}

/// Saves the running sessions (see [`LatestWriter`]).
pub type SessionWriter = LatestWriter<Vec<SavedSession>>;

impl SessionWriter {
    /// The writer of `state`'s saved sessions.
    pub fn sessions(state: StateDir) -> SessionWriter {
        LatestWriter::spawn(
            "the running sessions",
            move |sessions: &Vec<SavedSession>| state.save_sessions(sessions),
        )
    }
}

/// Hands out `seq`s, reserving them in the state directory block by block.
#[derive(Debug)]
pub struct SeqSource {
    /// `None` without a state directory: seqs then only rest on the clock.
    state: Option<StateDir>,
    next: u64,
    /// Seqs below this are reserved on disk.
    reserved: u64,
}

impl SeqSource {
    /// A source with no state directory, starting at `first`.
    pub fn in_memory(first: u64) -> SeqSource {
        SeqSource {
            state: None,
            next: first,
            reserved: u64::MAX,
        }
    }

    /// The next seq. When a block must be reserved and the write fails, the seq is still
    /// handed out (the line is not held back): only a crash before the next successful
    /// reservation could then repeat seqs, and the failure is logged.
    pub fn take(&mut self) -> u64 {
        if self.next >= self.reserved
            && let Some(state) = &self.state
        {
            let until = self.next.saturating_add(SEQ_BLOCK);
            match state.reserve(until) {
                Ok(()) => self.reserved = until,
                Err(e) => {
                    warn!(error = %e, "cannot reserve seqs in the state directory");
                    self.reserved = self.next.saturating_add(1);
                }
            }
        }
        let seq = self.next;
        self.next += 1;
        seq
    }

    /// The seq the next line gets.
    pub fn peek(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After any number of restarts, including ones with the clock set back, no seq is handed
    /// out twice: a restart continues above every block reserved before.
    #[test]
    fn seqs_never_repeat_across_restarts_or_clock_changes() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let mut used = Vec::new();
        let mut src = state.seq(5_000);
        used.extend((0..10).map(|_| src.take()));
        assert_eq!(used[0], 5_000);
        // A restart with the clock far behind.
        let mut src = StateDir::open(dir.path()).unwrap().seq(1);
        let after = src.take();
        assert!(after > *used.last().unwrap(), "{after}");
        used.push(after);
        // Crossing a block boundary reserves the next block first.
        for _ in 0..SEQ_BLOCK {
            used.push(src.take());
        }
        let mut src = StateDir::open(dir.path()).unwrap().seq(1);
        let again = src.take();
        assert!(again > *used.last().unwrap(), "{again}");
        // A clock ahead of the reservations wins.
        assert_eq!(state.seq(u64::MAX / 2).take(), u64::MAX / 2);
    }

    /// One state directory serves one agent at a time: a second one is refused until the
    /// first lets go.
    #[test]
    fn a_state_directory_serves_one_agent() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::open_exclusive(dir.path()).unwrap();
        let second = StateDir::open_exclusive(dir.path()).unwrap_err();
        assert!(second.to_string().contains("another agent"), "{second}");
        drop(first);
        assert!(StateDir::open_exclusive(dir.path()).is_ok());
    }

    /// Saved sessions come back as saved; a damaged file costs the sessions, not the agent.
    #[test]
    fn sessions_round_trip_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert!(state.load_sessions().is_empty());
        let saved = vec![SavedSession {
            id: "sess_1".into(),
            filters: Filters::default(),
            limits: RateLimits {
                lines_per_second: 10,
                bytes_per_second: 1000,
            },
            ends_at_ms: 1_700_000_000_000,
        }];
        state.save_sessions(&saved).unwrap();
        assert_eq!(state.load_sessions(), saved);
        std::fs::write(dir.path().join(SESSIONS_FILE), b"{not json").unwrap();
        assert!(state.load_sessions().is_empty());
        std::fs::write(dir.path().join(SEQ_FILE), b"garbage").unwrap();
        assert_eq!(state.seq(7).take(), 7);
    }
}
