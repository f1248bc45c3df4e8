//! Enrolled and revoked agents, kept under `<data-dir>/agents.json` so both survive a restart.
//!
//! Enrolling gives an org's admin an agent id and token without shell access to the host;
//! revoking refuses every token of that agent from then on (agent tokens last a year, so
//! waiting for a stolen one to expire is no answer). A revocation is keyed by (org, id): it is
//! written to disk before the agent's link is closed, so neither a restart nor a quick
//! reconnect lets the agent back in.
//!
//! The file is rewritten whole and atomically on every change: changes are rare (people
//! enroll and revoke), and the file is bounded by [`MAX_RECORDS_PER_ORG`]. Callers run the
//! changing methods on a blocking thread (they fsync). The maps' lock is held only to change
//! them and to serialise a snapshot, never across the write and fsync, so the revocation check
//! every agent connection makes does not wait on the disk; a second lock orders the writes,
//! and each takes its snapshot inside it, so the last write always holds every change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use logfleet_filter_runtime::write_atomically;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identity::AgentKey;

/// Enrollments plus revocations one org may hold: the file (and the registry's offline
/// entries) stay bounded whatever an admin script does.
pub const MAX_RECORDS_PER_ORG: usize = 100_000;
/// Longest agent name, in characters.
pub const MAX_AGENT_NAME_CHARS: usize = 128;
pub use logfleet_protocol::labels::{MAX_LABEL_CHARS, MAX_LABELS};

/// Why an enrollment change failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    #[error("{0}")]
    Invalid(String),
    #[error("this org already holds {MAX_RECORDS_PER_ORG} enrolled or revoked agents")]
    TooMany,
    #[error("agent store: {0}")]
    Io(#[from] std::io::Error),
    #[error("agent store is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error(
        "revoked in memory, but the revocation could not be saved ({0}); retry, or it is lost at the next restart"
    )]
    NotPersisted(Box<EnrollmentError>),
}

/// An enrolled agent, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub org: String,
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub enrolled_at: DateTime<Utc>,
    pub enrolled_by: String,
}

/// A revoked agent, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub org: String,
    pub id: Uuid,
    pub revoked_at: DateTime<Utc>,
    pub revoked_by: String,
}

/// What `agents.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    enrolled: Vec<Enrolled>,
    revoked: Vec<Revoked>,
}

/// Shared handle to the store.
#[derive(Clone)]
pub struct Enrollments {
    inner: Arc<Mutex<Store>>,
    /// Held across a snapshot's write and fsync, so writes happen one at a time, in order.
    writer: Arc<Mutex<()>>,
}

struct Store {
    path: PathBuf,
    enrolled: HashMap<AgentKey, Enrolled>,
    revoked: HashMap<AgentKey, Revoked>,
    /// Looked up on every agent connection; kept apart so that check is one hash lookup.
    revoked_keys: HashSet<AgentKey>,
    /// The last write failed: memory holds changes the file does not.
    unsaved: bool,
}

impl Enrollments {
    /// Opens the store under `data_dir` (empty if the file does not exist yet).
    pub fn open(data_dir: &Path) -> Result<Enrollments, EnrollmentError> {
        let path = data_dir.join("agents.json");
        let file: File = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(e.into()),
        };
        let revoked: HashMap<AgentKey, Revoked> = file
            .revoked
            .into_iter()
            .map(|r| (AgentKey::new(r.org.clone(), r.id), r))
            .collect();
        let enrolled = file
            .enrolled
            .into_iter()
            .map(|e| (AgentKey::new(e.org.clone(), e.id), e))
            .filter(|(key, _)| !revoked.contains_key(key))
            .collect();
        Ok(Enrollments {
            inner: Arc::new(Mutex::new(Store {
                path,
                enrolled,
                revoked_keys: revoked.keys().cloned().collect(),
                revoked,
                unsaved: false,
            })),
            writer: Arc::new(Mutex::new(())),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // Plain maps stay consistent across a panic elsewhere; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_revoked(&self, key: &AgentKey) -> bool {
        self.lock().revoked_keys.contains(key)
    }

    /// Every enrolled (not revoked) agent, for the registry at start-up.
    pub fn enrolled(&self) -> Vec<Enrolled> {
        self.lock().enrolled.values().cloned().collect()
    }

    /// Records a new agent of `org` and persists it. Blocking (fsync).
    pub fn enroll(
        &self,
        org: &str,
        name: &str,
        labels: BTreeMap<String, String>,
        by: &str,
    ) -> Result<Enrolled, EnrollmentError> {
        check_name(name)?;
        check_labels(&labels)?;
        let mut store = self.lock();
        store.check_room(org)?;
        let record = Enrolled {
            org: org.to_owned(),
            id: Uuid::new_v4(),
            name: name.to_owned(),
            labels,
            enrolled_at: Utc::now(),
            enrolled_by: by.to_owned(),
        };
        let key = AgentKey::new(org, record.id);
        store.enrolled.insert(key.clone(), record.clone());
        drop(store);
        if let Err(e) = self.save() {
            // Never handed out: nobody holds this id's token, so forgetting it is safe even if
            // a concurrent write did put it on disk.
            self.lock().enrolled.remove(&key);
            return Err(e);
        }
        Ok(record)
    }

    /// Revokes an agent and persists it; the agent is refused from the moment this returns
    /// (also after a restart). Revoking twice keeps the first record. Blocking (fsync).
    ///
    /// A revocation that cannot be written stays in force in memory (the agent is refused
    /// until this host restarts) and is reported as [`EnrollmentError::NotPersisted`], so the
    /// caller still cuts the agent off and tells the admin to retry.
    pub fn revoke(&self, key: &AgentKey, by: &str) -> Result<Revoked, EnrollmentError> {
        let mut store = self.lock();
        if let Some(existing) = store.revoked.get(key) {
            let existing = existing.clone();
            // A revocation whose write failed is written by the retry the admin was asked for.
            if !store.unsaved {
                return Ok(existing);
            }
            drop(store);
            return match self.save() {
                Ok(()) => Ok(existing),
                Err(e) => Err(EnrollmentError::NotPersisted(Box::new(e))),
            };
        }
        // Moving an enrolled agent to the revoked list does not grow the file.
        if !store.enrolled.contains_key(key) {
            store.check_room(&key.org)?;
        }
        let record = Revoked {
            org: key.org.clone(),
            id: key.id,
            revoked_at: Utc::now(),
            revoked_by: by.to_owned(),
        };
        store.revoked.insert(key.clone(), record.clone());
        store.enrolled.remove(key);
        store.revoked_keys.insert(key.clone());
        drop(store);
        if let Err(e) = self.save() {
            return Err(EnrollmentError::NotPersisted(Box::new(e)));
        }
        Ok(record)
    }

    /// Writes the store as it is now. The snapshot is taken inside the writer lock, so a write
    /// that finishes last holds every change made before it started.
    fn save(&self) -> Result<(), EnrollmentError> {
        let _writing = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let (path, bytes) = {
            let store = self.lock();
            (store.path.clone(), store.snapshot()?)
        };
        let written = write_atomically(&path, &bytes);
        self.lock().unsaved = written.is_err();
        Ok(written?)
    }
}

impl Store {
    fn check_room(&self, org: &str) -> Result<(), EnrollmentError> {
        let held = self.enrolled.keys().filter(|k| k.org == org).count()
            + self.revoked.keys().filter(|k| k.org == org).count();
        if held >= MAX_RECORDS_PER_ORG {
            return Err(EnrollmentError::TooMany);
        }
        Ok(())
    }

    /// The file's bytes for the store as it is.
    fn snapshot(&self) -> Result<Vec<u8>, EnrollmentError> {
        let mut file = File {
            enrolled: self.enrolled.values().cloned().collect(),
            revoked: self.revoked.values().cloned().collect(),
        };
        // A stable order keeps the file diffable and the writes reproducible.
        file.enrolled
            .sort_by(|a, b| (&a.org, a.id).cmp(&(&b.org, b.id)));
        file.revoked
            .sort_by(|a, b| (&a.org, a.id).cmp(&(&b.org, b.id)));
        Ok(serde_json::to_vec_pretty(&file)?)
    }
}

fn check_name(name: &str) -> Result<(), EnrollmentError> {
    // Ids and names share `{id}` in the API: a name that reads as a UUID would stand for
    // another agent there.
    if Uuid::parse_str(name).is_ok() {
        return Err(EnrollmentError::Invalid(
            "an agent name must not look like an agent id (a UUID)".to_owned(),
        ));
    }
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_AGENT_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(EnrollmentError::Invalid(format!(
            "an agent name is 1..={MAX_AGENT_NAME_CHARS} characters, none of them control characters"
        )));
    }
    Ok(())
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), EnrollmentError> {
    logfleet_protocol::labels::check_labels(labels).map_err(|e| EnrollmentError::Invalid(e.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A revocation whose write failed is written when the admin retries it, as the error
    /// asks: the retry does not report success while the file still lacks it.
    #[test]
    fn a_retried_revocation_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Enrollments::open(dir.path()).unwrap();
        let key = AgentKey::new("acme", Uuid::new_v4());
        let real = store.lock().path.clone();
        store.lock().path = dir.path().join("missing/agents.json");
        assert!(matches!(
            store.revoke(&key, "root"),
            Err(EnrollmentError::NotPersisted(_))
        ));
        assert!(store.is_revoked(&key), "in force in memory");
        store.lock().path = real;
        store.revoke(&key, "root").unwrap();
        assert!(Enrollments::open(dir.path()).unwrap().is_revoked(&key));
    }

    /// The revocation check agents' connections make never waits on the disk: while a write
    /// is stalled, a revocation is already in force, and it is on disk once the write ends.
    #[test]
    fn revocation_checks_do_not_wait_on_a_slow_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Enrollments::open(dir.path()).unwrap();
        let key = AgentKey::new("acme", Uuid::new_v4());
        let stalled_disk = store.writer.lock().unwrap();
        let revoking = std::thread::spawn({
            let (store, key) = (store.clone(), key.clone());
            move || store.revoke(&key, "root")
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !store.is_revoked(&key) {
            assert!(
                std::time::Instant::now() < deadline,
                "revocation not in force"
            );
            std::thread::yield_now();
        }
        assert!(!revoking.is_finished(), "the write is still stalled");
        drop(stalled_disk);
        revoking.join().unwrap().unwrap();
        assert!(Enrollments::open(dir.path()).unwrap().is_revoked(&key));
    }

    /// Enrollments and revocations survive reopening the store (a host restart), and a
    /// revoked agent is no longer listed as enrolled.
    #[test]
    fn enrollments_and_revocations_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Enrollments::open(dir.path()).unwrap();
        let a = store
            .enroll(
                "acme",
                "edge-1",
                BTreeMap::from([("env".into(), "prod".into())]),
                "root",
            )
            .unwrap();
        let b = store
            .enroll("acme", "edge-2", BTreeMap::new(), "root")
            .unwrap();
        let b_key = AgentKey::new("acme", b.id);
        store.revoke(&b_key, "root").unwrap();
        let again = Enrollments::open(dir.path()).unwrap();
        assert!(again.is_revoked(&b_key));
        assert!(!again.is_revoked(&AgentKey::new("other", b.id)), "per org");
        assert_eq!(again.enrolled(), vec![a.clone()]);
        let first = again.revoke(&b_key, "someone").unwrap();
        assert_eq!(
            first.revoked_by, "root",
            "revoking twice keeps the first record"
        );
    }

    #[test]
    fn names_and_labels_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Enrollments::open(dir.path()).unwrap();
        let uuid = Uuid::new_v4().to_string();
        for bad in ["", "a\nb", &"x".repeat(MAX_AGENT_NAME_CHARS + 1), &uuid] {
            assert!(store.enroll("acme", bad, BTreeMap::new(), "root").is_err());
        }
        let labels = BTreeMap::from([("bad key".to_owned(), "v".to_owned())]);
        assert!(store.enroll("acme", "edge", labels, "root").is_err());
        assert!(store.enrolled().is_empty());
    }
}
