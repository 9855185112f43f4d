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

    /// Appends `events` together with `entries` in `index` (one sled transaction), then
    /// flushes: when this returns `Ok`, both survive a power cut. Returns the events' seqs.
    pub async fn append_durable(
        &self,
        events: &[Event],
        index: &sled::Tree,
        entries: &sled::Batch,
    ) -> Result<Vec<u64>, SpoolError> {
        let seqs = self.spool.append_indexed(events, index, entries)?;
        self.spool.flush().await?;
        Ok(seqs)
    }
}
