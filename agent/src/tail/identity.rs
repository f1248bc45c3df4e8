//! What makes a file the same file.
//!
//! While the agent runs, (device, inode) is enough: an inode cannot be reused while the tailer
//! holds the file open, and a remembered position ([`Retired`]) is only used for an identity
//! seen moments ago. Across restarts it is not: a deleted file's inode is reused by the next
//! file created, so a checkpoint also carries the file's head fingerprint (its first
//! [`FINGERPRINT_BYTES`]), and a file only continues from a checkpoint when both match
//! ([`fingerprint_matches`]). The same fingerprint detects truncate-and-rewrite in place.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::FINGERPRINT_BYTES;

/// A file's identity while the agent runs: (device, inode). A changed identity at the same
/// path means rotation.
pub type FileId = (u64, u64);

/// The position of a file the tailer stopped following, kept so the same file showing up
/// under another matching name continues where it left off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    pub id: FileId,
    /// Offset after the last emitted line.
    pub pos: u64,
    /// Lines emitted; the next is `lines + 1`.
    pub lines: u64,
}

/// Reads the file's first [`FINGERPRINT_BYTES`] (fewer if it is shorter) into `head`.
pub fn read_head(file: &File, head: &mut Vec<u8>) -> io::Result<()> {
    let mut buf = [0u8; FINGERPRINT_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    head.clear();
    head.extend_from_slice(&buf[..filled]);
    Ok(())
}

/// Whether a file whose head is now `now` can be the file whose head was `then`: the shorter
/// is a prefix of the longer (a file shorter than the fingerprint grows into it). An empty
/// `then` matches anything of the same inode, which is all that can be said of an empty file.
pub fn fingerprint_matches(then: &[u8], now: &[u8]) -> bool {
    let keep = then.len().min(now.len());
    then[..keep] == now[..keep] && now.len() >= then.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_match_on_growth_only() {
        assert!(fingerprint_matches(b"", b"anything"));
        assert!(fingerprint_matches(b"abc", b"abcdef"));
        assert!(fingerprint_matches(b"abc", b"abc"));
        assert!(!fingerprint_matches(b"abc", b"abd"));
        // Shorter now than then: truncated, not the same content.
        assert!(!fingerprint_matches(b"abcdef", b"abc"));
    }
}
