//! The trait a filter author implements.

use crate::{Batch, Fields, Record, Verdict, Verdicts};

/// A log filter: configured once per session, then asked about batches of records.
///
/// Implement [`Filter::record`] for a per-record decision, or [`Filter::batch`] to work on a
/// whole batch at once (for instance to look at each distinct source name only once). State in
/// `self` lives for the whole session.
pub trait Filter: Sized + 'static {
    /// The record columns this filter reads. The host sends only these; reading any other
    /// column panics with a message naming the missing field. Declare as few as you can: a
    /// filter that never reads messages never pays for copying them.
    const FIELDS: Fields = Fields::all();

    /// The columns this configured filter reads: [`Filter::FIELDS`] unless overridden. Override
    /// only when they depend on the config (e.g. a sampler that reads timestamps only in its
    /// per-second mode).
    fn fields(&self) -> Fields {
        Self::FIELDS
    }

    /// Builds the filter from the session's JSON config (`null` when none was given). An
    /// `Err` refuses the session and its text is shown to the user, so make it specific.
    fn configure(config: &str) -> Result<Self, String>;

    /// Decides about one record. The default keeps every record.
    fn record(&mut self, record: Record<'_>) -> Verdict {
        let _ = record;
        Verdict::Keep
    }

    /// Decides about a batch. `verdicts` starts with every record kept. The default calls
    /// [`Filter::record`] for each record in order.
    fn batch(&mut self, batch: &Batch<'_>, verdicts: &mut Verdicts) {
        for record in batch.iter() {
            let index = record.index();
            match self.record(record) {
                Verdict::Keep => {}
                Verdict::Drop => verdicts.discard(index),
                Verdict::Rewrite(message) => verdicts.rewrite(index, message),
            }
        }
    }
}
