//! The tailer's wake-up source: inotify watches on the directories of the followed files and
//! of the source globs, read on a small thread that nudges the tailer.
//!
//! A directory watch sees writes to (`IN_MODIFY`), creation of, and renames and deletions in,
//! every file in it, so one watch per directory covers rotation too, and a file that appears
//! under a glob is found at once instead of at the next glob scan. Watching directories rather
//! than files also survives the file being replaced.
//!
//! The nudges are coalesced: at most one wake and one rescan request are in flight, whatever
//! the event rate (20k lines/s are 20k `IN_MODIFY` events), and the tailer reads everything
//! that is there when it wakes. Polling stays: where inotify is unavailable (the watch limit,
//! a filesystem that delivers no events, e.g. NFS changes made on another machine) the tailer
//! polls at its `poll_interval`; with events it still polls at
//! [`EVENT_POLL_INTERVAL`](super::EVENT_POLL_INTERVAL) as a safety net.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tracing::{debug, warn};

use super::tailer::Signal;

/// What a directory watch listens for.
fn mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE
        | WatchMask::CLOSE_WRITE
}

/// Flags shared by the watcher thread and the tailer: whether a nudge is already queued.
#[derive(Debug, Default)]
pub struct Pending {
    wake: AtomicBool,
    rescan: AtomicBool,
    stopped: AtomicBool,
}

impl Pending {
    /// Called by the tailer before it polls: events from now on send a new nudge.
    pub fn clear_wake(&self) {
        self.wake.store(false, Ordering::SeqCst);
    }

    /// Called by the tailer before it rescans.
    pub fn clear_rescan(&self) {
        self.rescan.store(false, Ordering::SeqCst);
    }
}

/// The inotify watches of one tailer. Dropping it stops the watcher thread.
pub struct Watcher {
    watches: Watches,
    dirs: BTreeMap<PathBuf, WatchDescriptor>,
    /// Directories a watch could not be added for (logged once each).
    failed: BTreeSet<PathBuf>,
    pending: Arc<Pending>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("dirs", &self.dirs.keys())
            .finish()
    }
}

impl Watcher {
    /// Starts the watcher thread; `None` (and a warning) when inotify is unavailable, in which
    /// case the tailer only polls.
    pub fn start(nudge: std_mpsc::Sender<Signal>) -> Option<(Watcher, Arc<Pending>)> {
        let inotify = match Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "inotify unavailable; files are polled only");
                return None;
            }
        };
        let watches = inotify.watches();
        let pending = Arc::new(Pending::default());
        let shared = pending.clone();
        let spawned = thread::Builder::new()
            .name("logfleet-tail-wake".into())
            .spawn(move || read_events(inotify, nudge, &shared));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the inotify thread; files are polled only");
            return None;
        }
        Some((
            Watcher {
                watches,
                dirs: BTreeMap::new(),
                failed: BTreeSet::new(),
                pending: pending.clone(),
            },
            pending,
        ))
    }

    /// Whether at least one directory is watched (events are expected).
    pub fn active(&self) -> bool {
        !self.dirs.is_empty()
    }

    /// Watches exactly `dirs` (adding new ones, removing those no longer needed).
    pub fn sync(&mut self, dirs: &BTreeSet<PathBuf>) {
        let stale: Vec<PathBuf> = self
            .dirs
            .keys()
            .filter(|d| !dirs.contains(*d))
            .cloned()
            .collect();
        for dir in stale {
            if let Some(wd) = self.dirs.remove(&dir) {
                // Fails when the directory is gone (the kernel removed the watch): fine.
                let _ = self.watches.remove(wd);
            }
        }
        for dir in dirs {
            if self.dirs.contains_key(dir) {
                continue;
            }
            match self.watches.add(dir, mask()) {
                Ok(wd) => {
                    debug!(dir = %dir.display(), "watching directory");
                    self.failed.remove(dir);
                    self.dirs.insert(dir.clone(), wd);
                }
                Err(e) => {
                    if self.failed.insert(dir.clone()) {
                        warn!(dir = %dir.display(), error = %e, "cannot watch directory; its files are polled");
                    }
                }
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.pending.stopped.store(true, Ordering::SeqCst);
        // Removing a watch queues an IN_IGNORED event, which wakes the thread to see `stopped`.
        for (_, wd) in std::mem::take(&mut self.dirs) {
            let _ = self.watches.remove(wd);
        }
        // With no watch left to remove, add and remove one so the thread still wakes.
        if let Ok(wd) = self.watches.add("/", WatchMask::DELETE_SELF) {
            let _ = self.watches.remove(wd);
        }
    }
}

/// The watcher thread: blocks on the inotify descriptor and nudges the tailer, at most one
/// nudge of each kind in flight.
fn read_events(mut inotify: Inotify, nudge: std_mpsc::Sender<Signal>, pending: &Pending) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let events = match inotify.read_events_blocking(&mut buf) {
            Ok(events) => events,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(error = %e, "reading inotify events failed; files are polled only");
                return;
            }
        };
        let mut wake = false;
        let mut rescan = false;
        for event in events {
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                rescan = true;
            }
            if event.mask.intersects(
                EventMask::CREATE | EventMask::MOVED_TO | EventMask::MOVED_FROM | EventMask::DELETE,
            ) {
                rescan = true;
            }
            wake = true;
        }
        if pending.stopped.load(Ordering::SeqCst) {
            return;
        }
        if rescan
            && !pending.rescan.swap(true, Ordering::SeqCst)
            && nudge.send(Signal::Rescan).is_err()
        {
            return;
        }
        if wake && !pending.wake.swap(true, Ordering::SeqCst) && nudge.send(Signal::Wake).is_err() {
            return;
        }
    }
}

/// The directories to watch for `patterns` (the directory part up to the first glob
/// metacharacter) and the files followed now.
pub fn dirs_to_watch<'a>(
    patterns: impl Iterator<Item = &'a str>,
    files: impl Iterator<Item = &'a Path>,
) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for pattern in patterns {
        let literal: PathBuf = Path::new(pattern)
            .components()
            .take_while(|c| {
                !c.as_os_str()
                    .to_string_lossy()
                    .contains(['*', '?', '[', ']'])
            })
            .collect();
        // A literal path names the file: watch its directory. A glob: its literal prefix.
        let dir = if literal.as_os_str().len() == pattern.len() {
            literal.parent().map(Path::to_path_buf)
        } else {
            Some(literal)
        };
        if let Some(dir) = dir
            && !dir.as_os_str().is_empty()
            && dir.is_dir()
        {
            dirs.insert(dir);
        }
    }
    for file in files {
        if let Some(dir) = file.parent()
            && !dir.as_os_str().is_empty()
        {
            dirs.insert(dir.to_path_buf());
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_the_literal_part_of_globs_and_files_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let p1 = format!("{}/*.log", dir.path().display());
        let p2 = format!("{}/app.log", sub.display());
        let p3 = format!("{}/missing/app.log", dir.path().display());
        let file = sub.join("x.log");
        let dirs = dirs_to_watch(
            [p1.as_str(), p2.as_str(), p3.as_str()].into_iter(),
            [file.as_path()].into_iter(),
        );
        assert_eq!(
            dirs,
            BTreeSet::from([dir.path().to_path_buf(), sub.clone()])
        );
    }

    #[test]
    fn a_write_wakes_the_tailer() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = std_mpsc::channel();
        let (mut watcher, pending) = Watcher::start(tx).unwrap();
        watcher.sync(&BTreeSet::from([dir.path().to_path_buf()]));
        assert!(watcher.active());
        std::fs::write(dir.path().join("a.log"), "x\n").unwrap();
        let mut got = Vec::new();
        while let Ok(s) = rx.recv_timeout(std::time::Duration::from_secs(2)) {
            got.push(s);
            if got.contains(&Signal::Wake) && got.contains(&Signal::Rescan) {
                break;
            }
        }
        assert!(got.contains(&Signal::Wake), "{got:?}");
        assert!(got.contains(&Signal::Rescan), "{got:?}");
        pending.clear_wake();
        drop(watcher);
    }
}
