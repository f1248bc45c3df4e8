//! The plugin registry: filter components users upload, stored content-addressed under
//! `<data-dir>/plugins/`, named per org, surviving restarts.
//!
//! Layout: `blobs/sha256-<hex>.wasm.gz` holds each distinct component once, gzip-compressed
//! (interpreter components — CPython, a JavaScript engine — are 12–18 MB and shrink about
//! threefold; a blob written before compression, `sha256-<hex>.wasm`, is still read);
//! `index.json` maps org → name → digest and is replaced atomically (write, fsync, rename) on
//! every change. A blob no name refers to any more (the name was deleted, or re-uploaded with
//! other bytes) is removed once the index no longer names it.
//!
//! Limits, per org: [`MAX_PLUGINS_PER_ORG`] names and [`MAX_ORG_PLUGIN_BYTES`] of components
//! (their uncompressed sizes, as uploaded, summed over the org's names: what the org sees in
//! `GET /api/v1/plugins`, independent of compression and of other orgs sharing a blob).
//!
//! Every method here touches the disk (fsyncs, reads and (de)compression of up to 64 MiB):
//! async callers run them on a blocking thread (`spawn_blocking`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use logfleet_filter_runtime::{MAX_COMPONENT_BYTES, digest, write_atomically};
use logfleet_protocol::rest::PluginInfo;
use serde::{Deserialize, Serialize};

use crate::time::rfc3339;

/// Most plugins one org may store.
pub const MAX_PLUGINS_PER_ORG: usize = 256;

/// Most component bytes one org may store: the sum of its plugins' uncompressed sizes
/// (1 GiB: sixteen of the largest components, or ~55 Python plugins). Replacing a name counts
/// the new size instead of the old.
pub const MAX_ORG_PLUGIN_BYTES: u64 = 1 << 30;

/// gzip level of stored blobs: level 6 (the default) costs ~1 s of CPU for an 18 MB Python
/// component for a few percent over level 1; uploads are rare but compile already takes
/// seconds, so the faster level is chosen.
const BLOB_COMPRESSION: flate2::Compression = flate2::Compression::fast();

/// Why a plugin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin is {0} bytes; the limit is {MAX_COMPONENT_BYTES}")]
    TooLarge(usize),
    #[error("this org already stores {MAX_PLUGINS_PER_ORG} plugins; delete one first")]
    TooMany,
    #[error(
        "this org's plugins would take {would} bytes; the org's storage quota is {MAX_ORG_PLUGIN_BYTES} bytes; delete a plugin first"
    )]
    QuotaExceeded { would: u64 },
    #[error("no plugin '{0}'")]
    NotFound(String),
    #[error("plugin storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("plugin index is corrupt: {0}")]
    Index(#[from] serde_json::Error),
}

/// Shared handle to the registry.
#[derive(Clone)]
pub struct Plugins {
    inner: Arc<Mutex<Store>>,
}

struct Store {
    dir: PathBuf,
    index: Index,
}

/// What `index.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    orgs: BTreeMap<String, BTreeMap<String, PluginInfo>>,
}

impl Plugins {
    /// Opens (creating if needed) the registry under `data_dir/plugins`.
    pub fn open(data_dir: &Path) -> Result<Plugins, PluginError> {
        let dir = data_dir.join("plugins");
        std::fs::create_dir_all(dir.join("blobs"))?;
        let index = match std::fs::read(dir.join("index.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(e.into()),
        };
        Ok(Plugins {
            inner: Arc::new(Mutex::new(Store { dir, index })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores an already validated component under `name` for `org`, replacing any previous
    /// version of that name (whose blob goes when nothing else refers to it).
    pub fn put(&self, org: &str, name: &str, bytes: &[u8]) -> Result<PluginInfo, PluginError> {
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(PluginError::TooLarge(bytes.len()));
        }
        let digest = digest(bytes);
        let mut store = self.lock();
        let names = store.index.orgs.get(org);
        let count = names.map_or(0, |m| m.len());
        let replaced = names.and_then(|m| m.get(name));
        if replaced.is_none() && count >= MAX_PLUGINS_PER_ORG {
            return Err(PluginError::TooMany);
        }
        let used: u64 = names.map_or(0, |m| m.values().map(|p| p.size).sum());
        let would = used - replaced.map_or(0, |p| p.size) + bytes.len() as u64;
        if would > MAX_ORG_PLUGIN_BYTES {
            return Err(PluginError::QuotaExceeded { would });
        }
        let blob = store.blob_path(&digest);
        if !blob.exists() && !store.legacy_blob_path(&digest).exists() {
            write_atomically(&blob, &compress(bytes)?)?;
        }
        let info = PluginInfo {
            name: name.to_owned(),
            digest,
            size: bytes.len() as u64,
            uploaded_at: rfc3339(Utc::now()),
        };
        let previous = store
            .index
            .orgs
            .entry(org.to_owned())
            .or_default()
            .insert(name.to_owned(), info.clone());
        store.save()?;
        if let Some(previous) = previous {
            store.remove_blob_if_unused(&previous.digest);
        }
        Ok(info)
    }

    pub fn list(&self, org: &str) -> Vec<PluginInfo> {
        self.lock()
            .index
            .orgs
            .get(org)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, org: &str, name: &str) -> Option<PluginInfo> {
        self.lock().index.orgs.get(org)?.get(name).cloned()
    }

    /// Removes `name` from `org`. The blob stays while another name or org refers to it.
    pub fn delete(&self, org: &str, name: &str) -> Result<PluginInfo, PluginError> {
        let mut store = self.lock();
        let info = store
            .index
            .orgs
            .get_mut(org)
            .and_then(|m| m.remove(name))
            .ok_or_else(|| PluginError::NotFound(name.to_owned()))?;
        store.save()?;
        store.remove_blob_if_unused(&info.digest);
        Ok(info)
    }

    /// The bytes of a component `org` stores under some name, for an agent of that org.
    /// The file is read after the lock is released: a concurrent delete may remove it first,
    /// and then there is nothing to send, as if the delete had come first.
    pub fn bytes_for(&self, org: &str, digest: &str) -> Option<Vec<u8>> {
        let path = {
            let store = self.lock();
            let owned = store
                .index
                .orgs
                .get(org)?
                .values()
                .any(|p| p.digest == digest);
            if !owned {
                return None;
            }
            (store.blob_path(digest), store.legacy_blob_path(digest))
        };
        match std::fs::read(&path.0) {
            Ok(compressed) => match decompress(&compressed) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::error!(path = %path.0.display(), error = %e, "a stored plugin blob does not inflate");
                    None
                }
            },
            Err(_) => std::fs::read(&path.1).ok(),
        }
    }

    /// Where the blob of `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.lock().blob_path(digest)
    }
}

impl Store {
    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.join("blobs").join(format!("sha256-{hex}.wasm.gz"))
    }

    /// Where a blob stored before compression lives.
    fn legacy_blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.join("blobs").join(format!("sha256-{hex}.wasm"))
    }

    /// Removes the blob of `digest` if no name of any org refers to it. Called after the index
    /// that dropped the reference is saved, so a crash leaves an unreferenced blob, never a
    /// name without its blob.
    fn remove_blob_if_unused(&self, digest: &str) {
        let used = self
            .index
            .orgs
            .values()
            .flat_map(|m| m.values())
            .any(|p| p.digest == digest);
        if used {
            return;
        }
        for path in [self.blob_path(digest), self.legacy_blob_path(digest)] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove an unused plugin blob");
            }
        }
    }

    fn save(&self) -> Result<(), PluginError> {
        let json = serde_json::to_vec_pretty(&self.index)?;
        write_atomically(&self.dir.join("index.json"), &json)?;
        Ok(())
    }
}

fn compress(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), BLOB_COMPRESSION);
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// Inflates a blob, refusing one that would inflate past the component limit.
fn decompress(compressed: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(MAX_COMPONENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(std::io::Error::other("inflates past the component limit"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_survives_reopen_and_isolates_orgs() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = Plugins::open(dir.path()).unwrap();
        let info = plugins.put("acme", "redact", b"component").unwrap();
        assert!(info.digest.starts_with("sha256:") && info.digest.len() == 71);
        assert_eq!(
            plugins.bytes_for("acme", &info.digest).unwrap(),
            b"component"
        );
        assert!(plugins.bytes_for("globex", &info.digest).is_none());

        let reopened = Plugins::open(dir.path()).unwrap();
        assert_eq!(reopened.list("acme"), vec![info.clone()]);
        assert!(reopened.list("globex").is_empty());
        reopened.delete("acme", "redact").unwrap();
        assert!(reopened.get("acme", "redact").is_none());
        assert!(matches!(
            reopened.delete("acme", "redact"),
            Err(PluginError::NotFound(_))
        ));
    }

    /// A blob is removed once no name refers to it: after re-uploading its only name with other
    /// bytes, or deleting its last name; while another name (of any org) refers to it, it stays.
    #[test]
    fn unreferenced_blobs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = Plugins::open(dir.path()).unwrap();
        let v1 = plugins.put("acme", "redact", b"v1").unwrap();
        plugins.put("globex", "mine", b"v1").unwrap();
        let v1_blob = plugins.blob_path(&v1.digest);
        let v2 = plugins.put("acme", "redact", b"v2").unwrap();
        assert!(v1_blob.exists(), "globex still refers to v1");
        plugins.put("globex", "mine", b"v3").unwrap();
        assert!(!v1_blob.exists(), "nothing refers to v1 any more");
        // Re-uploading the same bytes keeps the blob.
        plugins.put("acme", "redact", b"v2").unwrap();
        let v2_blob = plugins.blob_path(&v2.digest);
        assert!(v2_blob.exists());
        plugins.delete("acme", "redact").unwrap();
        assert!(!v2_blob.exists());
    }

    /// Blobs are stored compressed and read back byte for byte; a blob written before
    /// compression (plain `.wasm`) is still served.
    #[test]
    fn blobs_are_compressed_and_legacy_blobs_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = Plugins::open(dir.path()).unwrap();
        let bytes = b"component ".repeat(10_000);
        let info = plugins.put("acme", "big", &bytes).unwrap();
        let stored = std::fs::metadata(plugins.blob_path(&info.digest))
            .unwrap()
            .len();
        assert!(stored < bytes.len() as u64 / 10, "{stored}");
        assert_eq!(plugins.bytes_for("acme", &info.digest).unwrap(), bytes);

        let legacy = plugins.put("acme", "old", b"old bytes").unwrap();
        let store = plugins.lock();
        std::fs::remove_file(store.blob_path(&legacy.digest)).unwrap();
        std::fs::write(store.legacy_blob_path(&legacy.digest), b"old bytes").unwrap();
        drop(store);
        assert_eq!(
            plugins.bytes_for("acme", &legacy.digest).unwrap(),
            b"old bytes"
        );
    }

    /// An org may store at most MAX_ORG_PLUGIN_BYTES of components; replacing a name counts
    /// the new size instead of the old, and other orgs have quotas of their own.
    #[test]
    fn org_storage_quota() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = Plugins::open(dir.path()).unwrap();
        // Sizes are checked before anything is written, so filling the index is enough.
        let filler = PluginInfo {
            name: "filler".into(),
            digest: "sha256:00".into(),
            size: MAX_ORG_PLUGIN_BYTES - 10,
            uploaded_at: String::new(),
        };
        plugins
            .lock()
            .index
            .orgs
            .entry("acme".into())
            .or_default()
            .insert("filler".into(), filler);
        assert!(plugins.put("acme", "small", b"0123456789").is_ok());
        assert!(matches!(
            plugins.put("acme", "more", b"x"),
            Err(PluginError::QuotaExceeded { would }) if would == MAX_ORG_PLUGIN_BYTES + 1
        ));
        // Replacing "small" with a same-size component fits.
        assert!(plugins.put("acme", "small", b"abcdefghij").is_ok());
        assert!(plugins.put("globex", "more", b"x").is_ok());
    }
}
