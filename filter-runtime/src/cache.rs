//! Compiled components, kept so a session start never recompiles: in memory as ready-to-
//! instantiate [`Prepared`] components, and on disk as `.cwasm` artifacts keyed by content
//! digest and engine compatibility.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::bindings::FilterPre;
use crate::runtime::Tier;
use crate::sandbox::StoreState;

/// Most compiled components kept in memory (≈ 2–3 MB each for a regex guest); the least
/// recently used is dropped beyond that. Sessions already running keep theirs alive.
pub(crate) const MAX_CACHED_COMPONENTS: usize = 64;

/// `sha256:<hex>` of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in Sha256::digest(bytes) {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A component compiled, linked and type-checked against the world: instantiating it is a
/// few microseconds.
pub(crate) struct Prepared {
    pub(crate) pre: FilterPre<StoreState>,
}

/// Ready components by digest, least-recently-used eviction.
#[derive(Default)]
pub(crate) struct MemoryCache {
    entries: HashMap<String, (Arc<Prepared>, u64)>,
    /// Use counter; an entry's stamp is the counter value at its last use.
    clock: u64,
}

impl MemoryCache {
    pub(crate) fn get(&mut self, digest: &str) -> Option<Arc<Prepared>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(digest).map(|(prepared, used)| {
            *used = clock;
            Arc::clone(prepared)
        })
    }

    /// Forgets `digest` (running chains keep their own reference).
    pub(crate) fn remove(&mut self, digest: &str) {
        self.entries.remove(digest);
    }

    pub(crate) fn insert(&mut self, digest: String, prepared: Arc<Prepared>) {
        self.clock += 1;
        if self.entries.len() >= MAX_CACHED_COMPONENTS && !self.entries.contains_key(&digest) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(d, _)| d.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(digest, (prepared, self.clock));
    }
}

/// `.cwasm` artifacts under one directory. File names carry the component digest, a hash
/// of the engine's compatibility key (wasmtime version, features, config) and the compiler
/// tier, so an artifact is only ever loaded into an engine that can run it, and a baseline
/// (Winch) artifact and an optimised (Cranelift) one of the same component are different
/// entries. Writes are atomic (temp file + rename): a crash never leaves a truncated artifact
/// under a real name.
pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_key: String,
    /// `""` for the optimised tier (the names used before tiers existed), `.winch` for the
    /// baseline tier.
    suffix: &'static str,
}

impl DiskCache {
    /// Opens (creating) `dir` for artifacts of `engine`, whose compiler is `tier`.
    pub(crate) fn open(dir: &Path, engine: &Engine, tier: Tier) -> std::io::Result<DiskCache> {
        fs::create_dir_all(dir)?;
        let mut hasher = Sha256Hasher::default();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = digest(&hasher.0.finalize())["sha256:".len()..][..16].to_owned();
        Ok(DiskCache {
            dir: dir.to_owned(),
            engine_key,
            suffix: match tier {
                Tier::Optimized => "",
                Tier::Baseline => ".winch",
            },
        })
    }

    fn path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .join(format!("{hex}-{}{}.cwasm", self.engine_key, self.suffix))
    }

    /// The artifact for `digest`, if this program compiled one for this engine earlier.
    pub(crate) fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.is_file() {
            return None;
        }
        match load_artifact(engine, &path) {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unusable cached filter artifact");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Saves `component` as the artifact for `digest`. Failures only cost a recompile later,
    /// so they are logged, not returned.
    pub(crate) fn store(&self, digest: &str, component: &Component) {
        let path = self.path(digest);
        let result = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|bytes| write_atomically(&path, &bytes));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled filter");
        }
    }
}

/// Loads a `.cwasm` written by [`DiskCache::store`].
#[allow(unsafe_code)]
fn load_artifact(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be wasmtime's own output. Files under this
    // name are only ever written by `DiskCache::store` (atomically, so never partial) in a
    // cache directory private to this program, and their name pins the engine compatibility
    // hash, so the artifact matches this engine. Bytes from the network are never loaded
    // this way: uploads go through `Component::new`, which compiles.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Writes `bytes` to `path` through a unique temp file in the same directory, fsync and
/// rename, so a crash or a concurrent writer never leaves a truncated file under a real name.
/// Shared by every on-disk store in LogFleet (compiled artifacts, plugin components, indexes).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Feeds `Hash` output into SHA-256, giving a key that is stable across processes (std's
/// `DefaultHasher` makes no such promise).
#[derive(Default)]
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let hash = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_prefixed_hex_sha256() {
        assert_eq!(
            digest(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
