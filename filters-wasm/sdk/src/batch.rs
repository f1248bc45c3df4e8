//! The read-only view of one batch of records: [`Batch`], [`Record`] and [`Level`].
//!
//! The host sends records column by column (see `wit/README.md`); this module turns that back
//! into per-record accessors without copying anything.

use std::fmt;

use crate::bindings::Batch as RawBatch;

/// A log level, as the host normalises it. Ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Fatal = 5,
}

impl Level {
    /// Every level, least severe first; `Level::ALL[l as usize] == l`.
    pub const ALL: [Level; 6] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ];

    /// The level the host encodes as `byte` (0 TRACE … 5 FATAL), if any.
    pub fn from_u8(byte: u8) -> Option<Level> {
        Level::ALL.get(usize::from(byte)).copied()
    }

    /// The canonical upper-case name (`"ERROR"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::Fatal => "FATAL",
        }
    }

    /// Parses a canonical level name, ignoring ASCII case. The host normalises synonyms
    /// (`warning`, `err`, …) before a session's config reaches a filter, so these six suffice.
    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The records of one `filter-batch` call. Only the columns the filter declared in
/// [`Filter::FIELDS`](crate::Filter::FIELDS) are present; reading another one panics with a
/// message saying which field to declare.
pub struct Batch<'a> {
    raw: &'a RawBatch,
    len: usize,
}

impl<'a> Batch<'a> {
    /// Wraps the wire form. Column lengths are checked lazily, by the accessors.
    pub(crate) fn new(raw: &'a RawBatch) -> Batch<'a> {
        Batch {
            raw,
            len: raw.len as usize,
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Record `index` (`index < len()`).
    pub fn record(&self, index: usize) -> Record<'_> {
        assert!(index < self.len, "record {index} out of {}", self.len);
        Record { batch: self, index }
    }

    /// Every record, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Record<'_>> + '_ {
        (0..self.len).map(move |index| Record { batch: self, index })
    }

    /// The distinct source names of this batch; [`Record::source_id`] indexes it. Lets a filter
    /// decide once per distinct source instead of once per record.
    pub fn source_table(&self) -> &'a [String] {
        self.column("source", self.raw.source_ids.len());
        &self.raw.sources
    }

    /// The distinct file paths of this batch; [`Record::file_id`] indexes it.
    pub fn file_table(&self) -> &'a [String] {
        self.column("file", self.raw.file_ids.len());
        &self.raw.files
    }

    /// Panics, naming the field to declare, unless a column of `present` entries is complete.
    fn column(&self, field: &str, present: usize) {
        if present != self.len {
            missing_column(field);
        }
    }
}

/// The panic behind reading an undeclared column; out of line so accessors stay small.
#[cold]
#[inline(never)]
fn missing_column(field: &str) -> ! {
    panic!(
        "the `{field}` column was not sent: add `Fields::{}` to `Filter::FIELDS`",
        field.to_ascii_uppercase()
    )
}

/// One record of a [`Batch`]: cheap to copy, borrows the batch.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    batch: &'a Batch<'a>,
    index: usize,
}

impl<'a> Record<'a> {
    /// Position in the batch; what [`Verdicts`](crate::Verdicts) methods take.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The message (the log line without what the agent parsed out of it).
    pub fn message(&self) -> &'a str {
        let raw = self.batch.raw;
        let Some(&end) = raw.message_ends.get(self.index) else {
            missing_column("message")
        };
        let start = match self.index {
            0 => 0,
            i => raw.message_ends[i - 1],
        };
        // The host guarantees offsets on character boundaries, ascending; `get` keeps a
        // malformed batch from reading out of bounds (it then reads as an empty message).
        raw.messages
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// The normalised level.
    pub fn level(&self) -> Level {
        let Some(&byte) = self.batch.raw.levels.get(self.index) else {
            missing_column("level")
        };
        // The host sends 0..=5 only; saturate rather than panic on anything else.
        Level::from_u8(byte).unwrap_or(Level::Fatal)
    }

    /// Index of this record's source in [`Batch::source_table`].
    pub fn source_id(&self) -> usize {
        let Some(&id) = self.batch.raw.source_ids.get(self.index) else {
            missing_column("source")
        };
        usize::from(id)
    }

    /// The source name (as configured on the agent, e.g. `nginx`).
    pub fn source(&self) -> &'a str {
        let id = self.source_id();
        self.batch.raw.sources.get(id).map_or("", String::as_str)
    }

    /// Index of this record's file in [`Batch::file_table`].
    pub fn file_id(&self) -> usize {
        let Some(&id) = self.batch.raw.file_ids.get(self.index) else {
            missing_column("file")
        };
        usize::from(id)
    }

    /// The path of the file the line was read from.
    pub fn file(&self) -> &'a str {
        let id = self.file_id();
        self.batch.raw.files.get(id).map_or("", String::as_str)
    }

    /// 1-based line number in [`Record::file`].
    pub fn line(&self) -> u64 {
        match self.batch.raw.lines.get(self.index) {
            Some(&line) => line,
            None => missing_column("line"),
        }
    }

    /// When the agent read the line, milliseconds since the Unix epoch. Filters have no clock;
    /// rate-based ones use this.
    pub fn timestamp_ms(&self) -> i64 {
        match self.batch.raw.timestamps.get(self.index) {
            Some(&ts) => ts,
            None => missing_column("timestamp"),
        }
    }
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("index", &self.index)
            .finish()
    }
}
