//! What a filter answers: per record, drop, keep, or keep with a new message.

use crate::bindings::Verdicts as RawVerdicts;
use crate::bindings::logfleet::filter::types::Rewrite;

/// A decision about one record, returned by [`Filter::record`](crate::Filter::record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the record on unchanged.
    Keep,
    /// Drop the record.
    Drop,
    /// Pass the record on with this message instead (redaction, enrichment).
    Rewrite(String),
}

impl Verdict {
    /// `Keep` when `keep` is true, else `Drop`: the usual shape of a predicate filter.
    pub fn keep_if(keep: bool) -> Verdict {
        if keep { Verdict::Keep } else { Verdict::Drop }
    }
}

/// The decisions about a whole batch, built by [`Filter::batch`](crate::Filter::batch).
/// Starts with every record kept.
#[derive(Debug, Clone)]
pub struct Verdicts {
    keep: Vec<u8>,
    rewrites: Vec<Rewrite>,
}

impl Verdicts {
    /// Every one of `len` records kept, nothing rewritten.
    pub(crate) fn keep_all(len: usize) -> Verdicts {
        Verdicts {
            keep: vec![1; len],
            rewrites: Vec::new(),
        }
    }

    /// Number of records decided about.
    pub fn len(&self) -> usize {
        self.keep.len()
    }

    /// Whether the batch was empty.
    pub fn is_empty(&self) -> bool {
        self.keep.is_empty()
    }

    /// Keeps record `index` (undoing an earlier [`Verdicts::discard`]).
    pub fn keep(&mut self, index: usize) {
        self.keep[index] = 1;
    }

    /// Drops record `index`; a rewrite of it is then ignored.
    pub fn discard(&mut self, index: usize) {
        self.keep[index] = 0;
    }

    /// Keeps or drops record `index`.
    pub fn set(&mut self, index: usize, keep: bool) {
        self.keep[index] = u8::from(keep);
    }

    /// Drops every record; follow with [`Verdicts::keep`] for the few that pass.
    pub fn discard_all(&mut self) {
        self.keep.fill(0);
    }

    /// Whether record `index` is currently kept.
    pub fn is_kept(&self, index: usize) -> bool {
        self.keep[index] != 0
    }

    /// Keeps record `index` with `message` as its new message. The last rewrite of a record wins.
    pub fn rewrite(&mut self, index: usize, message: String) {
        self.keep[index] = 1;
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        self.rewrites.push(Rewrite { index, message });
    }

    /// The rewritten message of record `index`, if any (the last one wins).
    pub fn rewritten(&self, index: usize) -> Option<&str> {
        self.rewrites
            .iter()
            .rev()
            .find(|r| r.index as usize == index)
            .map(|r| r.message.as_str())
    }

    /// The per-record decisions as [`Verdict`]s (used by [`testing`](crate::testing)).
    pub fn to_vec(&self) -> Vec<Verdict> {
        (0..self.len())
            .map(|i| match (self.is_kept(i), self.rewritten(i)) {
                (false, _) => Verdict::Drop,
                (true, None) => Verdict::Keep,
                (true, Some(message)) => Verdict::Rewrite(message.to_owned()),
            })
            .collect()
    }

    /// The wire form returned to the host.
    pub(crate) fn into_raw(self) -> RawVerdicts {
        RawVerdicts {
            keep: self.keep,
            rewrites: self.rewrites,
        }
    }
}
