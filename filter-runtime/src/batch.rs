//! Encoding records into the WIT's columnar `batch`: one buffer of messages plus end offsets,
//! levels as bytes, interned source and file tables, parallel lists for the rest. Only the
//! columns the receiving filter declared are filled. This layout is what makes crossing into
//! WebAssembly cost ~40 ns per record instead of ~250 (see `wit/README.md`).

use std::collections::HashMap;

use logfleet_protocol::agent::Record;

use crate::bindings::{Batch, Fields};

/// Most records in one batch. The WIT promises filters at most 4096, which also keeps the
/// `u16` source and file ids in range.
pub(crate) const MAX_BATCH_RECORDS: usize = 4096;

/// Most message bytes in one batch (a single longer message travels alone), so the copy into
/// a filter's memory stays far below its memory cap.
pub(crate) const MAX_BATCH_MESSAGE_BYTES: usize = 1 << 20;

/// The records still in a chain during one `apply`: their indices in the caller's slice, in
/// order, and the messages filters have rewritten so far (by record index, allocated on the
/// first rewrite: most chains never rewrite).
pub(crate) struct Survivors {
    pub(crate) indices: Vec<u32>,
    rewritten: Vec<Option<String>>,
}

impl Survivors {
    /// Every one of `len` records.
    pub(crate) fn all(len: usize) -> Survivors {
        Survivors {
            // `apply` is called with bounded batches, far below u32::MAX records.
            indices: (0..len as u32).collect(),
            rewritten: Vec::new(),
        }
    }

    /// The message later filters see for record `index`: the latest rewrite, else the original.
    pub(crate) fn message<'a>(&'a self, records: &'a [Record], index: u32) -> &'a str {
        match self.rewritten.get(index as usize) {
            Some(Some(message)) => message,
            _ => &records[index as usize].message,
        }
    }

    /// Records a rewrite of record `index` (of `len` records).
    pub(crate) fn rewrite(&mut self, len: usize, index: u32, message: String) {
        if self.rewritten.is_empty() {
            self.rewritten.resize(len, None);
        }
        self.rewritten[index as usize] = Some(message);
    }

    /// Takes the final rewritten message of record `index`, if any.
    pub(crate) fn take_message(&mut self, index: u32) -> Option<String> {
        self.rewritten
            .get_mut(index as usize)
            .and_then(Option::take)
    }
}

/// A batch being filled, reused across calls so its buffers are allocated once per chain.
pub(crate) struct BatchEncoder {
    batch: Batch,
}

impl BatchEncoder {
    pub(crate) fn new() -> BatchEncoder {
        BatchEncoder {
            batch: Batch {
                len: 0,
                messages: String::new(),
                message_ends: Vec::new(),
                levels: Vec::new(),
                sources: Vec::new(),
                source_ids: Vec::new(),
                files: Vec::new(),
                file_ids: Vec::new(),
                lines: Vec::new(),
                timestamps: Vec::new(),
            },
        }
    }

    /// The batch last encoded.
    pub(crate) fn batch(&self) -> &Batch {
        &self.batch
    }

    /// Encodes survivors from position `from` on (at least one record if any, within the batch
    /// bounds) with only `fields`, and returns how many records it took. With `lines`, the
    /// message column holds each record's line as read ([`Record::line_text`]) instead of
    /// its message.
    pub(crate) fn encode(
        &mut self,
        records: &[Record],
        survivors: &Survivors,
        from: usize,
        fields: Fields,
        lines: bool,
    ) -> usize {
        let b = &mut self.batch;
        b.messages.clear();
        b.message_ends.clear();
        b.levels.clear();
        b.sources.clear();
        b.source_ids.clear();
        b.files.clear();
        b.file_ids.clear();
        b.lines.clear();
        b.timestamps.clear();

        let mut sources = Interner::default();
        let mut files = Interner::default();
        let mut taken = 0;
        for &index in survivors.indices[from..].iter().take(MAX_BATCH_RECORDS) {
            let record = &records[index as usize];
            if fields.contains(Fields::MESSAGE) {
                let message = if lines {
                    record.line_text()
                } else {
                    survivors.message(records, index)
                };
                if taken > 0 && b.messages.len() + message.len() > MAX_BATCH_MESSAGE_BYTES {
                    break;
                }
                b.messages.push_str(message);
                // A message over 4 GiB cannot reach here (lines are read in bounded chunks).
                b.message_ends
                    .push(u32::try_from(b.messages.len()).unwrap_or(u32::MAX));
            }
            if fields.contains(Fields::LEVEL) {
                // `Level::index` is 0..=5 in the WIT's order.
                b.levels.push(record.level.index() as u8);
            }
            if fields.contains(Fields::SOURCE) {
                b.source_ids
                    .push(sources.id(&mut b.sources, &record.source));
            }
            if fields.contains(Fields::FILE) {
                b.file_ids.push(files.id(&mut b.files, &record.file));
            }
            if fields.contains(Fields::LINE) {
                b.lines.push(record.line);
            }
            if fields.contains(Fields::TIMESTAMP) {
                b.timestamps.push(record.timestamp_ms);
            }
            taken += 1;
        }
        // `taken <= MAX_BATCH_RECORDS`, which fits in u32.
        b.len = taken as u32;
        taken
    }
}

/// Distinct values an [`Interner`] finds by linear scan before switching to a hash map: a
/// batch usually has a handful of sources and files, and comparing a few short strings beats
/// SipHashing every record's (17 % of a chain profile before this).
const INTERN_LINEAR_MAX: usize = 16;

/// Assigns ids to distinct strings of one batch. The previous record's value is checked
/// first (runs of one source are common), then a short list, then a map once values are many.
#[derive(Default)]
struct Interner<'a> {
    last: Option<(&'a str, u16)>,
    /// Distinct values in id order.
    seen: Vec<&'a str>,
    /// Filled once `seen` outgrows [`INTERN_LINEAR_MAX`].
    ids: HashMap<&'a str, u16>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, table: &mut Vec<String>, value: &'a str) -> u16 {
        if let Some((last, id)) = self.last
            && last == value
        {
            return id;
        }
        let found = if self.ids.is_empty() {
            self.seen.iter().position(|s| *s == value)
        } else {
            self.ids.get(value).map(|&id| usize::from(id))
        };
        // At most MAX_BATCH_RECORDS distinct values per batch, which fits in u16.
        let id = match found {
            Some(id) => id as u16,
            None => {
                let id = self.seen.len() as u16;
                self.seen.push(value);
                table.push(value.to_owned());
                if self.seen.len() > INTERN_LINEAR_MAX {
                    if self.ids.is_empty() {
                        self.ids
                            .extend(self.seen.iter().enumerate().map(|(i, s)| (*s, i as u16)));
                    } else {
                        self.ids.insert(value, id);
                    }
                }
                id
            }
        };
        self.last = Some((value, id));
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logfleet_protocol::Level;

    fn record(message: &str, source: &str, level: Level) -> Record {
        Record {
            seq: 0,
            timestamp_ms: 7,
            level,
            source: source.to_owned(),
            file: "/f".to_owned(),
            line: 3,
            message: message.to_owned(),
            event_ms: None,
            fields: None,
            raw: None,
        }
    }

    fn all(n: usize) -> Survivors {
        Survivors::all(n)
    }

    #[test]
    fn encodes_only_requested_columns() {
        let records = [
            record("ab", "x", Level::Error),
            record("c", "y", Level::Info),
            record("", "x", Level::Fatal),
        ];
        let mut enc = BatchEncoder::new();
        let n = enc.encode(
            &records,
            &all(3),
            0,
            Fields::MESSAGE | Fields::SOURCE,
            false,
        );
        assert_eq!(n, 3);
        let b = enc.batch();
        assert_eq!(b.len, 3);
        assert_eq!(b.messages, "abc");
        assert_eq!(b.message_ends, [2, 3, 3]);
        assert_eq!(b.sources, ["x", "y"]);
        assert_eq!(b.source_ids, [0, 1, 0]);
        assert!(b.levels.is_empty() && b.lines.is_empty() && b.files.is_empty());

        enc.encode(&records, &all(3), 0, Fields::LEVEL | Fields::LINE, false);
        let b = enc.batch();
        assert_eq!(b.levels, [4, 2, 5]);
        assert_eq!(b.lines, [3, 3, 3]);
        assert!(b.messages.is_empty() && b.sources.is_empty());
    }

    #[test]
    fn interning_survives_the_switch_to_a_map() {
        let records: Vec<_> = (0..100)
            .map(|i| record("m", &format!("s{}", i % 40), Level::Info))
            .collect();
        let mut enc = BatchEncoder::new();
        enc.encode(&records, &all(100), 0, Fields::SOURCE, false);
        let b = enc.batch();
        assert_eq!(b.sources.len(), 40);
        for (i, id) in b.source_ids.iter().enumerate() {
            assert_eq!(b.sources[usize::from(*id)], format!("s{}", i % 40));
        }
    }

    #[test]
    fn rewritten_messages_replace_originals() {
        let records = [
            record("secret", "x", Level::Info),
            record("plain", "x", Level::Info),
        ];
        let mut survivors = Survivors::all(2);
        survivors.rewrite(2, 0, "***".to_owned());
        let mut enc = BatchEncoder::new();
        enc.encode(&records, &survivors, 0, Fields::MESSAGE, false);
        assert_eq!(enc.batch().messages, "***plain");
        assert_eq!(
            enc.encode(&records, &survivors, 1, Fields::MESSAGE, false),
            1
        );
        assert_eq!(enc.batch().messages, "plain");
        assert_eq!(survivors.take_message(0).as_deref(), Some("***"));
        assert_eq!(survivors.take_message(1), None);
    }

    #[test]
    fn batches_are_bounded() {
        let big = "x".repeat(MAX_BATCH_MESSAGE_BYTES / 2 + 1);
        let records: Vec<_> = (0..3).map(|_| record(&big, "s", Level::Info)).collect();
        let mut enc = BatchEncoder::new();
        assert_eq!(enc.encode(&records, &all(3), 0, Fields::MESSAGE, false), 1);
        // Without messages, only the record count bounds a batch.
        assert_eq!(enc.encode(&records, &all(3), 0, Fields::LEVEL, false), 3);
        let many: Vec<_> = (0..MAX_BATCH_RECORDS + 5)
            .map(|_| record("m", "s", Level::Info))
            .collect();
        assert_eq!(
            enc.encode(&many, &all(many.len()), 0, Fields::MESSAGE, false),
            MAX_BATCH_RECORDS
        );
        // A single message over the byte bound still travels, alone.
        let huge = [record(
            &"y".repeat(MAX_BATCH_MESSAGE_BYTES + 1),
            "s",
            Level::Info,
        )];
        assert_eq!(enc.encode(&huge, &all(1), 0, Fields::MESSAGE, false), 1);
    }
}
