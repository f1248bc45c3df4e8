//! Unit and model tests of the tailer: one path ([`FileTail`]), rotation sequences with a
//! synthetic clock, all sources ([`Tailer`]), checkpoints.

#![allow(clippy::unwrap_used)]

use super::checkpoint::*;
use super::file::*;
use super::tailer::*;
use super::*;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn tail_of(path: &Path, start: StartAt) -> FileTail {
    let mut t = FileTail::new("src".into(), path.to_path_buf(), start);
    t.prime();
    t
}

/// Polls until nothing more is ready; returns (line number, text) pairs.
fn drain(t: &mut FileTail) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while t.poll(&mut out, Instant::now()).more {}
    out.into_iter().map(|l| (l.line, l.text)).collect()
}

fn lines(pairs: &[(u64, &str)]) -> Vec<(u64, String)> {
    pairs.iter().map(|(n, s)| (*n, s.to_string())).collect()
}

#[test]
fn appends_with_numbers_counting_existing_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, "one\ntwo\nthree\n");
    let mut t = tail_of(&p, StartAt::End);
    append(&p, "four\nfive\n");
    assert_eq!(drain(&mut t), lines(&[(4, "four"), (5, "five")]));
    assert_eq!(drain(&mut t), vec![]);
    append(&p, "six\r\n");
    assert_eq!(drain(&mut t), lines(&[(6, "six")]));
}

#[test]
fn partial_lines_wait_for_their_newline() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    // An unfinished last line at start is read whole once it completes.
    append(&p, "one\ntw");
    let mut t = tail_of(&p, StartAt::End);
    assert_eq!(drain(&mut t), vec![]);
    append(&p, "o\nthr");
    assert_eq!(drain(&mut t), lines(&[(2, "two")]));
    append(&p, "ee");
    assert_eq!(drain(&mut t), vec![]);
    append(&p, "\n");
    assert_eq!(drain(&mut t), lines(&[(3, "three")]));
}

#[test]
fn invalid_utf8_is_replaced_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    std::fs::write(&p, b"").unwrap();
    let mut t = tail_of(&p, StartAt::End);
    std::fs::write(&p, b"ok \xff\xfe bytes\n").unwrap();
    assert_eq!(drain(&mut t), lines(&[(1, "ok \u{fffd}\u{fffd} bytes")]));
}

#[test]
fn truncation_restarts_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, "one\ntwo\n");
    let mut t = tail_of(&p, StartAt::End);
    append(&p, "three\npart");
    assert_eq!(drain(&mut t), lines(&[(3, "three")]));
    // copytruncate: the file is emptied in place, then written again.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(drain(&mut t), vec![]);
    append(&p, "fresh\n");
    assert_eq!(drain(&mut t), lines(&[(1, "fresh")]));
}

#[test]
fn copytruncate_with_fast_rewrite_is_detected_by_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, "2024-01-15 first line\n");
    let mut t = tail_of(&p, StartAt::End);
    assert_eq!(drain(&mut t), vec![]);
    // Truncated and rewritten past the old position before the next poll.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(0).unwrap();
    drop(f);
    append(&p, "2024-01-16 new a\n2024-01-16 new b\n");
    assert_eq!(
        drain(&mut t),
        lines(&[(1, "2024-01-16 new a"), (2, "2024-01-16 new b")])
    );
}

#[test]
fn move_and_recreate_reads_old_tail_first() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, "one\n");
    let mut t = tail_of(&p, StartAt::End);
    append(&p, "two\nunterminated");
    // logrotate `create`: rename, then a new file at the path, before the tailer looks.
    std::fs::rename(&p, dir.path().join("a.log.1")).unwrap();
    append(&dir.path().join("a.log.1"), " end\n");
    append(&p, "new one\n");
    assert_eq!(
        drain(&mut t),
        lines(&[(2, "two"), (3, "unterminated end"), (1, "new one")])
    );
    append(&p, "new two\n");
    assert_eq!(drain(&mut t), lines(&[(2, "new two")]));
}

#[test]
fn delete_and_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, "one\n");
    let mut t = tail_of(&p, StartAt::End);
    append(&p, "two\n");
    std::fs::remove_file(&p).unwrap();
    // Lines written before deletion are still read from the open handle.
    assert_eq!(drain(&mut t), lines(&[(2, "two")]));
    assert!(t.is_open(), "kept open for the grace period");
    append(&p, "again\n");
    assert_eq!(drain(&mut t), lines(&[(1, "again")]));
}

#[test]
fn missing_file_is_closed_after_grace_and_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, "one\n");
    let mut t = tail_of(&p, StartAt::End);
    std::fs::remove_file(&p).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    t.poll(&mut out, start);
    assert!(t.is_open());
    // Followed (a writer may still hold it) until quiet for the rotate wait, then closed.
    t.poll(&mut out, start + DEFAULT_ROTATE_WAIT / 2);
    assert!(t.is_open());
    t.poll(&mut out, start + DEFAULT_ROTATE_WAIT);
    assert!(!t.is_open());
    assert!(t.is_gone(start + DEFAULT_ROTATE_WAIT));
    // The path comes back: it is a new file, read from the start.
    append(&p, "back\n");
    assert_eq!(drain(&mut t), lines(&[(1, "back")]));
}

#[test]
fn long_lines_are_cut_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    std::fs::write(&p, "").unwrap();
    let mut t = tail_of(&p, StartAt::End);
    let long = "x".repeat(MAX_LINE_BYTES * 2 + 10);
    append(&p, &format!("short\n{long}\nafter\n"));
    let mut out = Vec::new();
    let mut truncated = 0;
    loop {
        let o = t.poll(&mut out, Instant::now());
        truncated += o.truncated;
        if !o.more {
            break;
        }
    }
    assert_eq!(truncated, 1);
    assert_eq!(out.len(), 3);
    assert_eq!(out[1].line, 2);
    assert_eq!(out[1].text.len(), MAX_LINE_BYTES);
    assert_eq!((out[2].line, out[2].text.as_str()), (3, "after"));
}

#[test]
fn new_files_are_read_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("later.log");
    let mut t = tail_of(&p, StartAt::Beginning);
    assert_eq!(drain(&mut t), vec![]);
    append(&p, "a\nb\n");
    assert_eq!(drain(&mut t), lines(&[(1, "a"), (2, "b")]));
}

#[test]
fn large_backlog_is_read_in_budgeted_polls() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.log");
    let line = "y".repeat(99);
    let text: String = (0..10_000).map(|_| format!("{line}\n")).collect();
    std::fs::write(&p, &text).unwrap();
    let mut t = tail_of(&p, StartAt::Beginning);
    let mut out = Vec::new();
    assert!(t.poll(&mut out, Instant::now()).more);
    assert!(out.len() * 100 <= FILE_BUDGET_BYTES);
    let rest = drain(&mut t);
    assert_eq!(out.len() + rest.len(), 10_000);
    assert_eq!(rest.last().map(|l| l.0), Some(10_000));
}

fn stats() -> Arc<TailStats> {
    Arc::new(TailStats::default())
}

fn poll_all(t: &mut Tailer) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    while t.poll(&mut out) {}
    out.into_iter()
        .map(|l| {
            (
                l.file.rsplit('/').next().unwrap_or("").to_string(),
                l.line,
                l.text,
            )
        })
        .collect()
}

#[test]
fn glob_picks_up_new_files_from_their_start() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("a.log"), "old\n");
    let pattern = dir.path().join("*.log").to_string_lossy().into_owned();
    let stats = stats();
    let mut t = Tailer::new(&[SourceConfig::new("app", pattern)], stats.clone());
    assert_eq!(poll_all(&mut t), vec![]);
    assert_eq!(stats.files_watched(), 1);
    append(&dir.path().join("b.log"), "b1\nb2\n");
    append(&dir.path().join("a.log"), "a2\n");
    append(&dir.path().join("ignored.txt"), "x\n");
    t.rescan();
    let mut got = poll_all(&mut t);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a.log".into(), 2, "a2".into()),
            ("b.log".into(), 1, "b1".into()),
            ("b.log".into(), 2, "b2".into()),
        ]
    );
    assert_eq!(stats.files_watched(), 2);
}

#[test]
fn rotated_file_matching_the_glob_is_not_read_twice() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.log");
    append(&live, "one\n");
    let pattern = dir.path().join("app.log*").to_string_lossy().into_owned();
    let mut t = Tailer::new(&[SourceConfig::new("app", pattern)], stats());
    append(&live, "two\n");
    std::fs::rename(&live, dir.path().join("app.log.1")).unwrap();
    append(&live, "fresh\n");
    t.rescan();
    assert_eq!(
        poll_all(&mut t),
        vec![
            ("app.log".into(), 2, "two".into()),
            ("app.log".into(), 1, "fresh".into())
        ]
    );
    // app.log.1 is still followed as app.log's rotated file: the scan leaves it alone, its
    // lines keep the name it was followed under and continue its numbering.
    t.rescan();
    append(&dir.path().join("app.log.1"), "late write\n");
    assert_eq!(
        poll_all(&mut t),
        vec![("app.log".into(), 3, "late write".into())]
    );
    // Quiet for the rotate wait: closed; the next scan continues it under its own name.
    let later = Instant::now() + DEFAULT_ROTATE_WAIT;
    let mut out = Vec::new();
    t.poll_at(&mut out, later);
    assert!(out.is_empty());
    t.rescan();
    append(&dir.path().join("app.log.1"), "later write\n");
    assert_eq!(
        poll_all(&mut t),
        vec![("app.log.1".into(), 4, "later write".into())]
    );
}

#[test]
fn literal_path_that_appears_later() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("later.log");
    let mut t = Tailer::new(
        &[SourceConfig::new("app", p.to_string_lossy().into_owned())],
        stats(),
    );
    assert_eq!(poll_all(&mut t), vec![]);
    append(&p, "hello\n");
    t.rescan();
    assert_eq!(
        poll_all(&mut t),
        vec![("later.log".into(), 1, "hello".into())]
    );
}

#[test]
fn tailer_thread_sends_batches_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, "before\n");
    let (tx, mut rx) = mpsc::channel(TAIL_CHANNEL_BATCHES);
    let stats = stats();
    let handle = spawn(
        &[SourceConfig::new("app", p.to_string_lossy().into_owned())],
        TailOptions {
            poll_interval: Duration::from_millis(5),
            glob_interval: Duration::from_millis(50),
            ..TailOptions::default()
        },
        stats.clone(),
        tx,
    )
    .unwrap();
    // The initial scan runs on the tailer's thread; what is written before it ends counts
    // as existing. Wait until the file is followed.
    while stats.files_watched.load(Ordering::Relaxed) == 0 {
        thread::sleep(Duration::from_millis(1));
    }
    append(&p, "after\n");
    let batch = rx.blocking_recv().unwrap();
    assert_eq!(batch[0].text, "after");
    assert_eq!(batch[0].line, 2);
    assert_eq!(&*batch[0].source, "app");
    handle.signal_stop();
    assert!(
        rx.blocking_recv().is_none(),
        "channel closes when the tailer stops"
    );
}

// ---- Rotation sequences, with a synthetic clock. ----

/// Opens `path` for appending, as a writer that keeps its descriptor would.
fn writer(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

fn poll_at(t: &mut FileTail, now: Instant) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    while t.poll(&mut out, now).more {}
    out.into_iter()
        .map(|l| {
            (
                l.file.rsplit('/').next().unwrap_or("").to_string(),
                l.line,
                l.text,
            )
        })
        .collect()
}

fn named(pairs: &[(&str, u64, &str)]) -> Vec<(String, u64, String)> {
    pairs
        .iter()
        .map(|(f, n, s)| (f.to_string(), *n, s.to_string()))
        .collect()
}

#[test]
fn old_file_growing_after_rename_is_read_until_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    let mut w = writer(&p);
    w.write_all(b"one\n").unwrap();
    let wait = Duration::from_secs(10);
    let mut t = FileTail::new("src".into(), p.clone(), StartAt::End).with_rotate_wait(wait);
    t.prime();
    let t0 = Instant::now();
    w.write_all(b"two\n").unwrap();
    std::fs::rename(&p, dir.path().join("app.log.1")).unwrap();
    // The writer has not reopened yet: the path is missing, the old file still grows.
    assert_eq!(poll_at(&mut t, t0), named(&[("app.log", 2, "two")]));
    w.write_all(b"three\n").unwrap();
    assert_eq!(
        poll_at(&mut t, t0 + Duration::from_secs(1)),
        named(&[("app.log", 3, "three")])
    );
    // Growth restarts the quiet wait.
    w.write_all(b"four\nunterminated").unwrap();
    let grew = t0 + Duration::from_secs(9);
    assert_eq!(poll_at(&mut t, grew), named(&[("app.log", 4, "four")]));
    assert_eq!(poll_at(&mut t, t0 + wait), vec![]);
    assert!(t.is_open(), "quiet for 1 s only");
    // The writer reopens: a new file at the path, read from line 1, the old one still open.
    let mut w2 = writer(&p);
    w2.write_all(b"new one\n").unwrap();
    assert_eq!(
        poll_at(&mut t, grew + wait - Duration::from_millis(1)),
        named(&[("app.log", 1, "new one")])
    );
    assert_eq!(t.rotated_count(), 1);
    // Quiet for the whole wait: closed, its unterminated last line emitted.
    assert_eq!(
        poll_at(&mut t, grew + wait),
        named(&[("app.log", 5, "unterminated")])
    );
    assert_eq!(t.rotated_count(), 0);
    assert!(t.is_open(), "the new file stays open");
    // Writes to the closed old file are no longer read; the new file continues.
    w.write_all(b"\nafter close\n").unwrap();
    w2.write_all(b"new two\n").unwrap();
    assert_eq!(
        poll_at(&mut t, grew + wait * 2),
        named(&[("app.log", 2, "new two")])
    );
}

#[test]
fn create_rotation_with_late_reopen_keeps_both_files_apart() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    let mut old = writer(&p);
    for i in 1..=10 {
        writeln!(old, "line {i}").unwrap();
    }
    let mut t = FileTail::new("src".into(), p.clone(), StartAt::Beginning);
    t.prime();
    let t0 = Instant::now();
    assert_eq!(poll_at(&mut t, t0).len(), 10);
    // logrotate `create`: renamed, an empty file created at once; the daemon reopens late.
    std::fs::rename(&p, dir.path().join("app.log.1")).unwrap();
    std::fs::File::create(&p).unwrap();
    let mut got = Vec::new();
    for i in 11..=15 {
        writeln!(old, "line {i}").unwrap();
        got.extend(poll_at(&mut t, t0 + Duration::from_millis(200 * i)));
    }
    let mut new = writer(&p);
    writeln!(new, "reopened").unwrap();
    got.extend(poll_at(&mut t, t0 + Duration::from_secs(4)));
    let mut want: Vec<(String, u64, String)> = (11..=15)
        .map(|i| ("app.log".to_string(), i, format!("line {i}")))
        .collect();
    want.push(("app.log".into(), 1, "reopened".into()));
    assert_eq!(got, want);
}

#[test]
fn deleted_file_still_written_is_read_then_recreated_file_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    let mut old = writer(&p);
    old.write_all(b"one\n").unwrap();
    let mut t = FileTail::new("src".into(), p.clone(), StartAt::End)
        .with_rotate_wait(Duration::from_secs(2));
    t.prime();
    let t0 = Instant::now();
    std::fs::remove_file(&p).unwrap();
    old.write_all(b"two\n").unwrap();
    assert_eq!(poll_at(&mut t, t0), named(&[("app.log", 2, "two")]));
    let mut new = writer(&p);
    new.write_all(b"fresh\n").unwrap();
    old.write_all(b"three\n").unwrap();
    assert_eq!(
        poll_at(&mut t, t0 + Duration::from_secs(1)),
        named(&[("app.log", 3, "three"), ("app.log", 1, "fresh")])
    );
    assert_eq!(t.rotated_count(), 1);
    assert_eq!(poll_at(&mut t, t0 + Duration::from_secs(3)), vec![]);
    assert_eq!(
        t.rotated_count(),
        0,
        "the deleted file is released once quiet"
    );
    assert!(!t.is_gone(t0 + Duration::from_secs(60)));
}

#[test]
fn glob_matching_the_rotated_name_reads_each_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    let mut old = writer(&p);
    old.write_all(b"one\n").unwrap();
    let pattern = dir.path().join("app.log*").to_string_lossy().into_owned();
    let options = TailOptions {
        rotate_wait: Duration::from_secs(1),
        ..TailOptions::default()
    };
    let mut t = Tailer::with_options(&[SourceConfig::new("app", pattern)], stats(), &options);
    let t0 = Instant::now();
    std::fs::rename(&p, dir.path().join("app.log.1")).unwrap();
    old.write_all(b"two\n").unwrap();
    let mut out = Vec::new();
    t.poll_at(&mut out, t0);
    t.rescan();
    old.write_all(b"three\n").unwrap();
    t.poll_at(&mut out, t0 + Duration::from_millis(500));
    t.rescan();
    // Quiet: closed; the scan takes app.log.1 over from its position.
    t.poll_at(&mut out, t0 + Duration::from_secs(2));
    t.rescan();
    old.write_all(b"four\n").unwrap();
    t.poll_at(&mut out, t0 + Duration::from_secs(3));
    let got: Vec<(String, u64, String)> = out
        .into_iter()
        .map(|l| {
            (
                l.file.rsplit('/').next().unwrap().to_string(),
                l.line,
                l.text,
            )
        })
        .collect();
    assert_eq!(
        got,
        named(&[
            ("app.log", 2, "two"),
            ("app.log", 3, "three"),
            ("app.log.1", 4, "four")
        ])
    );
}

#[test]
fn rotated_files_followed_at_once_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    std::fs::write(&p, "").unwrap();
    let stats = stats();
    let mut t = Tailer::new(
        &[SourceConfig::new("app", p.to_string_lossy().into_owned())],
        stats.clone(),
    );
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut writers = Vec::new();
    for i in 0..MAX_ROTATED_FOLLOWED + 6 {
        writers.push(writer(&p));
        std::fs::rename(&p, dir.path().join(format!("app.log.{i}"))).unwrap();
        std::fs::write(&p, "").unwrap();
        t.poll_at(&mut out, t0 + Duration::from_millis(i as u64));
    }
    assert_eq!(stats.rotated_followed() as usize, MAX_ROTATED_FOLLOWED);
    assert_eq!(stats.rotated_closed_early(), 6);
}

// ---- Checkpoints. ----

#[test]
fn checkpoints_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(&dir.path().join("state"));
    assert_eq!(store.load(), Checkpoints::default(), "nothing saved yet");
    let cp = Checkpoints {
        files: vec![FileCheckpoint {
            source: "app".into(),
            path: "/var/log/app.log".into(),
            dev: 2049,
            ino: 1234,
            head: b"2024-01-01 \x00\xffhead".to_vec(),
            offset: 4096,
            line: 77,
        }],
        spool_end: Some((3, 1234)),
    };
    store.save(&cp).unwrap();
    assert_eq!(store.load(), cp);
    // Saving again replaces it; no temp file is left behind.
    store.save(&Checkpoints::default()).unwrap();
    assert_eq!(store.load(), Checkpoints::default());
    let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![CHECKPOINT_FILE.to_string()]);
}

#[test]
fn torn_or_invalid_checkpoints_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path());
    let cp = Checkpoints {
        files: vec![FileCheckpoint {
            source: "app".into(),
            path: "/a".into(),
            dev: 1,
            ino: 2,
            head: b"abc".to_vec(),
            offset: 3,
            line: 1,
        }],
        spool_end: None,
    };
    store.save(&cp).unwrap();
    let good = std::fs::read(store.path()).unwrap();
    // Torn at every length: never a crash, never a partial checkpoint.
    for cut in 0..good.len() {
        std::fs::write(store.path(), &good[..cut]).unwrap();
        assert_eq!(store.load(), Checkpoints::default(), "cut at {cut}");
    }
    for bad in [
        &b"\xff\xfe garbage"[..],
        br#"{"version":99,"files":[]}"#,
        br#"{"version":1,"files":[{"source":"a","path":"/a","dev":1,"ino":2,"head":"zz","offset":0,"line":0}]}"#,
    ] {
        std::fs::write(store.path(), bad).unwrap();
        assert_eq!(store.load(), Checkpoints::default());
    }
}

fn resume_options(cp: Checkpoints, cap: u64) -> TailOptions {
    TailOptions {
        start: StartPolicy::Resume {
            backlog_cap_bytes: cap,
        },
        resume_from: cp,
        ..TailOptions::default()
    }
}

#[test]
fn resume_reads_what_was_written_while_down_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    append(&p, "one\ntwo\n");
    let sources = [SourceConfig::new("app", p.to_string_lossy().into_owned())];
    let mut first = Tailer::new(&sources, stats());
    append(&p, "three\npart");
    assert_eq!(
        poll_all(&mut first),
        vec![("app.log".into(), 3, "three".into())]
    );
    let store = CheckpointStore::new(dir.path());
    store.save(&first.checkpoints()).unwrap();
    drop(first);
    // Written while the agent is down.
    append(&p, "ial\nfive\n");
    let mut second =
        Tailer::with_options(&sources, stats(), &resume_options(store.load(), 1 << 20));
    assert_eq!(
        poll_all(&mut second),
        vec![
            ("app.log".into(), 4, "partial".into()),
            ("app.log".into(), 5, "five".into())
        ]
    );
    // AtEnd (today's behaviour) ignores checkpoints.
    let mut at_end = Tailer::with_options(
        &sources,
        stats(),
        &TailOptions {
            resume_from: store.load(),
            ..TailOptions::default()
        },
    );
    assert_eq!(poll_all(&mut at_end), vec![]);
}

#[test]
fn a_different_file_at_a_checkpointed_path_starts_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    append(&p, "old one\nold two\n");
    let sources = [SourceConfig::new("app", p.to_string_lossy().into_owned())];
    let first = Tailer::new(&sources, stats());
    let mut cp = first.checkpoints();
    drop(first);
    // Rotated while down: another file (another inode) at the path.
    std::fs::rename(&p, dir.path().join("app.log.1")).unwrap();
    append(&p, "new one\n");
    let mut second = Tailer::with_options(&sources, stats(), &resume_options(cp.clone(), 1 << 20));
    assert_eq!(
        poll_all(&mut second),
        vec![("app.log".into(), 1, "new one".into())]
    );
    // Same inode, other head (the inode was reused, or the file rewritten): also from zero.
    std::fs::write(&p, "rewritten\n").unwrap();
    let meta = std::fs::metadata(&p).unwrap();
    cp.files[0].dev = std::os::unix::fs::MetadataExt::dev(&meta);
    cp.files[0].ino = std::os::unix::fs::MetadataExt::ino(&meta);
    let mut third = Tailer::with_options(&sources, stats(), &resume_options(cp, 1 << 20));
    assert_eq!(
        poll_all(&mut third),
        vec![("app.log".into(), 1, "rewritten".into())]
    );
}

#[test]
fn backlog_beyond_the_cap_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    append(&p, "start\n");
    let sources = [SourceConfig::new("app", p.to_string_lossy().into_owned())];
    let cp = Tailer::new(&sources, stats()).checkpoints();
    // 100 lines of 10 bytes while down; the cap keeps the newest whole lines within 25 bytes.
    let text: String = (0..100).map(|i| format!("line {i:04}\n")).collect();
    append(&p, &text);
    let stats = stats();
    let mut t = Tailer::with_options(&sources, stats.clone(), &resume_options(cp, 25));
    let got = poll_all(&mut t);
    assert_eq!(
        got,
        vec![
            ("app.log".into(), 100, "line 0098".into()),
            ("app.log".into(), 101, "line 0099".into())
        ]
    );
    let dropped = stats.backlog_dropped();
    assert_eq!(
        dropped["app"],
        Skipped {
            lines: 98,
            bytes: 980
        }
    );
}

/// The tailer publishes, when it stops, the read positions after the last line it sent,
/// numbered by the batches sent before them.
#[test]
fn tailer_thread_publishes_its_positions() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, "before\n");
    let (tx, mut rx) = mpsc::channel(TAIL_CHANNEL_BATCHES);
    let stats = stats();
    let (snapshots, published) = tokio::sync::watch::channel(Snapshot::default());
    let handle = spawn(
        &[SourceConfig::new("app", p.to_string_lossy().into_owned())],
        TailOptions {
            poll_interval: Duration::from_millis(5),
            snapshots: Some(snapshots),
            ..TailOptions::default()
        },
        stats.clone(),
        tx,
    )
    .unwrap();
    while stats.files_watched() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    append(&p, "after\n");
    assert_eq!(rx.blocking_recv().unwrap()[0].text, "after");
    handle.signal_stop();
    assert!(rx.blocking_recv().is_none());
    let snapshot = published.borrow().clone();
    assert_eq!(snapshot.batches, 1);
    let cp = snapshot.checkpoints;
    assert_eq!(cp.files.len(), 1);
    assert_eq!((cp.files[0].offset, cp.files[0].line), (13, 2));
}

#[test]
fn multi_generation_rotation_under_a_glob_reads_each_line_once() {
    // logrotate with `rotate 5` and an `app.log*` glob: app.log.1 → app.log.2, app.log →
    // app.log.1, a new app.log; each file's lines once, under one name at a time.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    let p1 = dir.path().join("app.log.1");
    let p2 = dir.path().join("app.log.2");
    append(&p1, "gen1 a\n");
    let mut live = writer(&p);
    live.write_all(b"live a\n").unwrap();
    let pattern = dir.path().join("app.log*").to_string_lossy().into_owned();
    let options = TailOptions {
        rotate_wait: Duration::from_secs(1),
        ..TailOptions::default()
    };
    let mut t = Tailer::with_options(&[SourceConfig::new("app", pattern)], stats(), &options);
    let t0 = Instant::now();
    let mut out = Vec::new();
    std::fs::rename(&p1, &p2).unwrap();
    std::fs::rename(&p, &p1).unwrap();
    let mut new = writer(&p);
    live.write_all(b"live b\n").unwrap();
    new.write_all(b"new a\n").unwrap();
    let mut at = t0;
    for _ in 0..5 {
        t.poll_at(&mut out, at);
        t.rescan();
        at += Duration::from_millis(600);
    }
    live.write_all(b"live c\n").unwrap();
    new.write_all(b"new b\n").unwrap();
    for _ in 0..5 {
        t.poll_at(&mut out, at);
        t.rescan();
        at += Duration::from_millis(600);
    }
    let mut got: Vec<(String, u64, String)> = out
        .into_iter()
        .map(|l| {
            (
                l.file.rsplit('/').next().unwrap().to_string(),
                l.line,
                l.text,
            )
        })
        .collect();
    got.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(
        got,
        named(&[
            ("app.log", 2, "live b"),
            ("app.log.1", 3, "live c"),
            ("app.log", 1, "new a"),
            ("app.log", 2, "new b"),
        ])
    );
}
