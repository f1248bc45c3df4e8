//! Plugin components the agent has fetched from the host, kept by content digest so a later
//! session does not fetch them again.
//!
//! With a cache directory they live on disk as `<cache_dir>/plugins/sha256-<hex>.wasm`
//! (written atomically: temp file, fsync, rename), so they survive restarts; without one, or
//! when a write fails, they are kept in memory up to [`MAX_MEMORY_PLUGIN_BYTES`].
//!
//! A component is checked against its digest when it arrives ([`PluginStore::put`]) and again
//! whenever it is read back ([`PluginStore::get`]): a file damaged or replaced on disk is
//! deleted and never run. Digests are validated before they become file names, so a digest
//! from the wire can never name a path outside the directory.
//!
//! The store is synchronous (file I/O): call it from blocking threads.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use logfleet_filter_runtime::{MAX_COMPONENT_BYTES, PluginSource};
use logfleet_protocol::PluginRef;
use tracing::{debug, warn};

/// Most bytes of plugin components kept in memory when they cannot be kept on disk; the
/// oldest are forgotten first (and fetched again if a later session needs them). Holds at
/// least four components of the largest size the host accepts.
pub const MAX_MEMORY_PLUGIN_BYTES: usize = 4 * MAX_COMPONENT_BYTES;

/// How every digest starts; the rest is the SHA-256 in lower-case hex.
const DIGEST_PREFIX: &str = "sha256:";
/// Hex digits of a SHA-256.
const DIGEST_HEX_LEN: usize = 64;

/// Whether `digest` is a well-formed `sha256:<64 lower-case hex digits>`: the only digests
/// the agent fetches, stores or turns into file names.
pub fn is_digest(digest: &str) -> bool {
    digest.strip_prefix(DIGEST_PREFIX).is_some_and(|hex| {
        hex.len() == DIGEST_HEX_LEN
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Why a component was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginStoreError {
    #[error("'{0}' is not a plugin digest (expected sha256:<64 hex digits>)")]
    BadDigest(String),
    #[error("the component is {size} bytes; the limit is {MAX_COMPONENT_BYTES}")]
    TooLarge { size: usize },
    #[error("the component's bytes hash to {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: String },
}

/// Fetched plugin components by digest, on disk or in memory (see the module docs). Shared
/// by every session; the runtime reads it as its [`PluginSource`].
pub struct PluginStore {
    /// `<cache_dir>/plugins`, or `None` to keep components in memory only.
    dir: Option<PathBuf>,
    memory: Mutex<MemoryPlugins>,
}

/// Components kept in memory, oldest first, bounded by [`MAX_MEMORY_PLUGIN_BYTES`].
#[derive(Default)]
struct MemoryPlugins {
    entries: VecDeque<(String, Vec<u8>)>,
    bytes: usize,
}

impl PluginStore {
    /// A store keeping components in `dir` (created if missing). If it cannot be created the
    /// store falls back to memory, with a warning: fetching again later is the only cost.
    pub fn open(dir: impl Into<PathBuf>) -> PluginStore {
        let dir = dir.into();
        match fs::create_dir_all(&dir) {
            Ok(()) => PluginStore {
                dir: Some(dir),
                memory: Mutex::default(),
            },
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot create the plugin cache directory; keeping plugins in memory");
                PluginStore::in_memory()
            }
        }
    }

    /// A store keeping components in memory only.
    pub fn in_memory() -> PluginStore {
        PluginStore {
            dir: None,
            memory: Mutex::default(),
        }
    }

    /// The directory components are written to, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether the component for `digest` is here (not verified until [`PluginStore::get`]).
    pub fn contains(&self, digest: &str) -> bool {
        if !is_digest(digest) {
            return false;
        }
        if self.memory().entries.iter().any(|(d, _)| d == digest) {
            return true;
        }
        self.path(digest).is_some_and(|path| path.is_file())
    }

    /// Stores `bytes` as the component for `digest` after checking they hash to it.
    pub fn put(&self, digest: &str, bytes: Vec<u8>) -> Result<(), PluginStoreError> {
        if !is_digest(digest) {
            return Err(PluginStoreError::BadDigest(digest.to_owned()));
        }
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(PluginStoreError::TooLarge { size: bytes.len() });
        }
        let actual = logfleet_filter_runtime::digest(&bytes);
        if actual != digest {
            return Err(PluginStoreError::DigestMismatch {
                expected: digest.to_owned(),
                actual,
            });
        }
        if let Some(path) = self.path(digest) {
            match logfleet_filter_runtime::write_atomically(&path, &bytes) {
                Ok(()) => {
                    debug!(%digest, path = %path.display(), "plugin component cached on disk");
                    return Ok(());
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot cache plugin component on disk; keeping it in memory");
                }
            }
        }
        self.memory().insert(digest.to_owned(), bytes);
        Ok(())
    }

    /// The component for `digest`, if stored and still matching its digest. A file that no
    /// longer matches is deleted.
    pub fn get(&self, digest: &str) -> Option<Vec<u8>> {
        if !is_digest(digest) {
            return None;
        }
        if let Some((_, bytes)) = self.memory().entries.iter().find(|(d, _)| d == digest) {
            return Some(bytes.clone());
        }
        let path = self.path(digest)?;
        let bytes = match read_bounded(&path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                warn!(path = %path.display(), "cached plugin component is over the size limit; deleting it");
                let _ = fs::remove_file(&path);
                return None;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read cached plugin component");
                return None;
            }
        };
        if logfleet_filter_runtime::digest(&bytes) != digest {
            warn!(path = %path.display(), "cached plugin component does not match its digest; deleting it");
            let _ = fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    /// `<dir>/sha256-<hex>.wasm` for a well-formed digest.
    fn path(&self, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let hex = digest.strip_prefix(DIGEST_PREFIX)?;
        Some(dir.join(format!("sha256-{hex}.wasm")))
    }

    /// The in-memory part. Every mutation is a push or pop that leaves it consistent, so a
    /// lock poisoned by a panicking thread is used as is.
    fn memory(&self) -> MutexGuard<'_, MemoryPlugins> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// Not derived: the component bytes have no place in logs.
impl std::fmt::Debug for PluginStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let memory = self.memory();
        f.debug_struct("PluginStore")
            .field("dir", &self.dir)
            .field("in_memory", &memory.entries.len())
            .field("in_memory_bytes", &memory.bytes)
            .finish()
    }
}

/// The runtime asks for bytes only when it has no compiled copy of the component.
impl PluginSource for PluginStore {
    fn component(&self, plugin: &PluginRef) -> Option<Vec<u8>> {
        self.get(&plugin.digest)
    }
}

impl MemoryPlugins {
    fn insert(&mut self, digest: String, bytes: Vec<u8>) {
        if self.entries.iter().any(|(d, _)| *d == digest) {
            return;
        }
        while self.bytes + bytes.len() > MAX_MEMORY_PLUGIN_BYTES {
            let Some((_, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.len();
        }
        self.bytes += bytes.len();
        self.entries.push_back((digest, bytes));
    }
}

/// Reads `path` unless it is over [`MAX_COMPONENT_BYTES`] (`Ok(None)`), never holding more
/// than the limit in memory.
fn read_bounded(path: &Path) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = fs::File::open(path)?;
    let mut bytes = Vec::new();
    // One byte over the limit tells "too large" from "exactly at the limit".
    file.take(MAX_COMPONENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() <= MAX_COMPONENT_BYTES).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component() -> (String, Vec<u8>) {
        let bytes = b"\0asm pretend component".to_vec();
        (logfleet_filter_runtime::digest(&bytes), bytes)
    }

    #[test]
    fn digests_are_validated_before_use() {
        let (digest, _) = component();
        assert!(is_digest(&digest));
        for bad in [
            "",
            "sha256:",
            "sha256:../../etc/passwd",
            &digest.to_uppercase(),
            &format!("{digest}0"),
            &digest.replace("sha256:", "md5:"),
        ] {
            assert!(!is_digest(bad), "{bad}");
        }
        let store = PluginStore::in_memory();
        assert!(matches!(
            store.put("sha256:../x", vec![]),
            Err(PluginStoreError::BadDigest(_))
        ));
    }

    #[test]
    fn disk_store_verifies_on_put_and_on_get() {
        let dir = tempfile::tempdir().unwrap();
        let store = PluginStore::open(dir.path().join("plugins"));
        let (digest, bytes) = component();
        assert!(!store.contains(&digest));
        let mut wrong = bytes.clone();
        wrong.push(0);
        assert!(matches!(
            store.put(&digest, wrong),
            Err(PluginStoreError::DigestMismatch { .. })
        ));
        assert!(!store.contains(&digest));

        store.put(&digest, bytes.clone()).unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap();
        let file = dir.path().join(format!("plugins/sha256-{hex}.wasm"));
        assert_eq!(std::fs::read(&file).unwrap(), bytes);
        // A second store on the same directory (a restart) finds it.
        let again = PluginStore::open(dir.path().join("plugins"));
        assert!(again.contains(&digest));
        assert_eq!(again.get(&digest), Some(bytes));

        // Damaged on disk: refused and deleted.
        std::fs::write(&file, b"tampered").unwrap();
        assert_eq!(again.get(&digest), None);
        assert!(!file.exists());
        assert!(!again.contains(&digest));
    }

    #[test]
    fn memory_store_is_bounded() {
        let store = PluginStore::in_memory();
        let (digest, bytes) = component();
        store.put(&digest, bytes.clone()).unwrap();
        assert_eq!(store.get(&digest), Some(bytes));
        let mut memory = MemoryPlugins::default();
        let big = MAX_MEMORY_PLUGIN_BYTES / 3 + 1;
        for i in 0..4 {
            memory.insert(format!("d{i}"), vec![0; big]);
        }
        assert!(memory.bytes <= MAX_MEMORY_PLUGIN_BYTES);
        let kept: Vec<&str> = memory.entries.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(kept, ["d2", "d3"], "the oldest go first");
    }
}
