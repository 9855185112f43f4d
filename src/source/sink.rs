//! The durable path (docs/design.md, "Durability"): a source that may acknowledge its input
//! only once the input is on disk (POS answers the till with 2xx, deletes an export file, moves
//! a poll cursor) appends and flushes through this capability. It is the only way a source
//! reaches the spool; sensor sources go through the writer's channel.

use crate::event::Event;
use crate::spool::{Spool, SpoolError};
use std::sync::Arc;

/// Append-and-flush access to the spool, and the side indexes stored with it.
#[derive(Clone)]
pub struct DurableSink {
    spool: Arc<Spool>,
}

impl DurableSink {
    /// The sink of a spool the daemon (or a test) opened.
    pub fn new(spool: Arc<Spool>) -> DurableSink {
        DurableSink { spool }
    }

    /// A side tree in the spool's database, made durable by the same flushes as the events
    /// (the POS idempotency index).
    pub fn index(&self, name: &str) -> Result<sled::Tree, SpoolError> {
        self.spool.aux_tree(name)
    }

    /// The side tree `name` if an earlier run created it, without creating it.
    pub fn existing_index(&self, name: &str) -> Result<Option<sled::Tree>, SpoolError> {
        self.spool.existing_aux_tree(name)
    }

    /// Removes the side tree `name` (an index an earlier release left, once empty).
    pub fn drop_index(&self, name: &str) -> Result<bool, SpoolError> {
        self.spool.drop_aux_tree(name)
    }

    /// Appends `events` together with `entries` in `index` (one sled transaction): written,
    /// not yet durable. Callers that serialize their check-and-append under a lock append there
    /// and [`flush_covering`] the returned seqs after releasing it, so concurrent inputs share
    /// one fsync; only then may they acknowledge their input.
    ///
    /// [`flush_covering`]: DurableSink::flush_covering
    pub fn append(
        &self,
        events: &[Event],
        index: &sled::Tree,
        entries: &sled::Batch,
    ) -> Result<Vec<u64>, SpoolError> {
        self.spool.append_indexed(events, index, entries)
    }

    /// Makes everything appended so far durable.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        self.spool.flush().await
    }

    /// Returns once every seq below `end` is on disk (one flush serves every input waiting
    /// for it).
    pub async fn flush_covering(&self, end: u64) -> Result<(), SpoolError> {
        self.spool.flush_covering(end).await
    }
}
