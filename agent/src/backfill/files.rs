//! Which files a backfill reads: what a source's glob matches now, the most recent rotated
//! file beside one, and the file reads it needs besides the backward one.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::reader;
use crate::tail::identity::FileId;

/// Compressed rotated files are never read.
const COMPRESSED: [&str; 7] = [".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4", ".Z"];

/// The files `pattern` matches now, most recently modified first: the source's byte bound
/// goes to the files most likely to hold its newest records.
pub(super) fn matching(pattern: &str) -> Vec<PathBuf> {
    match glob::glob(pattern) {
        Ok(paths) => {
            let mut paths: Vec<(std::time::SystemTime, PathBuf)> = paths
                .flatten()
                .filter_map(|p| {
                    let meta = std::fs::metadata(&p).ok().filter(|m| m.is_file())?;
                    Some((meta.modified().unwrap_or(std::time::UNIX_EPOCH), p))
                })
                .collect();
            paths.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            paths.into_iter().map(|(_, p)| p).collect()
        }
        Err(e) => {
            warn!(pattern, error = %e, "invalid source glob; nothing to backfill from it");
            Vec::new()
        }
    }
}

/// The most recently modified rotated file of `path` in its directory: a name that extends
/// `path`'s with `.`, `-` or `_` (`app.log.1`, `app.log-20261202`), not compressed, not one
/// already read.
pub(super) fn predecessor(path: &Path, seen: &HashSet<FileId>) -> Option<PathBuf> {
    let dir = path.parent()?;
    let name = path.file_name()?.to_str()?;
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let file_name = entry.file_name();
        let Some(other) = file_name.to_str() else {
            continue;
        };
        let Some(rest) = other.strip_prefix(name) else {
            continue;
        };
        if rest.len() < 2
            || !rest.starts_with(['.', '-', '_'])
            || COMPRESSED.iter().any(|ext| other.ends_with(ext))
        {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if !meta.is_file() || seen.contains(&(meta.dev(), meta.ino())) {
            continue;
        }
        let Ok(modified) = meta.modified() else {
            continue;
        };
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, entry.path()));
        }
    }
    best.map(|(_, p)| p)
}

pub(super) fn open(path: &Path) -> io::Result<(File, FileId, u64)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino()), meta.len()))
}

/// Newlines in `file` before offset `to`, read forwards in chunks.
pub(super) fn count_newlines(file: &File, to: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; reader::BACKWARD_CHUNK_BYTES];
    let (mut at, mut count) = (0u64, 0u64);
    while at < to {
        let want = (to - at).min(buf.len() as u64) as usize;
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        count += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        at += n as u64;
    }
    Ok(count)
}
