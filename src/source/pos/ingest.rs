//! The one way into the spool for every POS input: normalize all transactions of an input
//! first (one bad record refuses the whole input, nothing half-stored), drop the ones already
//! seen within the idempotency window, append the rest and fsync, and only then answer.
//!
//! The idempotency index is a side tree in the spool's own sled database, keyed by
//! `register ␟ business day ␟ transaction id`, valued with the time it was stored; it is made
//! durable by the same flush as the events, so it survives restarts and crashes.

use super::normalize::{normalize_at, Normalized};
use super::transaction::{Reject, Tx};
use super::{ParseOpts, PosConfig};
use crate::privacy::customer::CustomerKeys;
use crate::source::DurableSink;
use crate::spool::SpoolError;
use crate::telemetry::metrics::Metric;
use crate::telemetry::Telemetry;
use std::sync::Arc;
use std::time::Duration;

/// Shared state of the POS inputs: one per gateway, built by `pos::start` and handed to the
/// HTTP routes, the watched directories and the pollers (one lock, one index).
pub struct Ingest {
    sink: DurableSink,
    pub key: CustomerKeys,
    pub opts: ParseOpts,
    pub cfg: PosConfig,
    index: sled::Tree,
    gateway: String,
    window_ms: i64,
    /// Serializes check-append-mark so two pushes of one transaction cannot both pass.
    lock: tokio::sync::Mutex<()>,
    /// The pipeline's registries: every POS input (HTTP, files, pollers) counts and reports
    /// its health through the ingest it shares.
    pub telemetry: Telemetry,
}

/// Why an input was not stored.
#[derive(Debug)]
pub enum StoreError {
    /// A record failed to parse or normalize (400, `failed/`).
    Invalid(Reject),
    /// The POS spool is full (503: retry later).
    Full(String),
    /// sled failed (500).
    Storage(String),
    /// A transaction with this key was stored with other content (409): a till that reuses
    /// an id for another sale must not see it silently dropped as a duplicate.
    Conflict(Reject),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Invalid(r) | StoreError::Conflict(r) => write!(f, "{r}"),
            StoreError::Full(e) | StoreError::Storage(e) => f.write_str(e),
        }
    }
}

/// What a stored input gave.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stored {
    pub accepted: usize,
    pub duplicates: usize,
    pub ids: Vec<String>,
}

fn conflict(n: &Normalized, telemetry: &Telemetry) -> StoreError {
    telemetry.metrics().count(Metric::PosConflicts, "", 1);
    let id = n
        .event
        .body()
        .get("transaction_id")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    StoreError::Conflict(Reject {
        transaction_id: id,
        ..Reject::new(
            "transaction_id",
            "already stored with different content for this register and business day",
        )
    })
}

impl Ingest {
    /// Builds the ingest state for a spool and configuration, reporting into `telemetry`.
    pub fn new(
        sink: DurableSink,
        cfg: &crate::config::Config,
        telemetry: Telemetry,
    ) -> Result<Ingest, String> {
        let pc = cfg.sources.pos.clone();
        let key = CustomerKeys::from_config(
            &cfg.privacy,
            &cfg.gateway.store_id,
            &pc.phone_default_country,
            &telemetry,
        )?;
        let index = sink
            .index("pos_idempotency")
            .map_err(|e| format!("idempotency index: {e}"))?;
        Ok(Ingest {
            sink,
            key,
            opts: ParseOpts::from_config(&pc),
            window_ms: i64::try_from(pc.idempotency_window.0.as_millis()).unwrap_or(i64::MAX),
            cfg: pc,
            index,
            gateway: cfg.gateway.gateway_id.clone(),
            lock: tokio::sync::Mutex::new(()),
            telemetry,
        })
    }

    /// Normalizes every transaction; the first failure refuses the whole input.
    pub fn normalize_all(&self, txs: Vec<Tx>) -> Result<Vec<Normalized>, Reject> {
        let now = crate::event::now_ms();
        txs.into_iter()
            .map(|t| normalize_at(t, &self.key, now, self.opts.offset_s))
            .collect()
    }

    /// What the index holds for `key` within the window: `None` (not seen), or the content
    /// hash stored with it (`None` inside for entries written before hashes were kept).
    fn seen(&self, key: &str, now: i64) -> Result<Option<Option<[u8; 32]>>, StoreError> {
        match self.index.get(key.as_bytes()) {
            Ok(Some(v)) => {
                let at = v
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(i64::from_be_bytes)
                    .unwrap_or(0);
                let hash = v.get(8..40).and_then(|b| <[u8; 32]>::try_from(b).ok());
                Ok((now.saturating_sub(at) < self.window_ms).then_some(hash))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::Storage(e.to_string())),
        }
    }

    /// Whether `n` was stored before: `Ok(true)` same content, `Err(Conflict)` other content.
    fn check(&self, n: &Normalized, now: i64) -> Result<bool, StoreError> {
        let mut found = self.seen(&n.key, now)?;
        if found.is_none() {
            if let Some(legacy) = &n.legacy_key {
                found = self.seen(legacy, now)?;
            }
        }
        match found {
            None => Ok(false),
            Some(Some(h)) if h != n.content => Err(conflict(n, &self.telemetry)),
            Some(_) => Ok(true),
        }
    }

    /// Stores normalized transactions durably; returns after the fsync. A known key with
    /// other content refuses the whole input ([`StoreError::Conflict`]).
    pub async fn store(&self, items: Vec<Normalized>) -> Result<Stored, StoreError> {
        self.store_inner(items, false).await
    }

    /// Like [`Ingest::store`] for REST APIs, whose orders change after they were first seen
    /// (`updated_at` moves): a known key with other content counts as a duplicate.
    pub async fn store_updates(&self, items: Vec<Normalized>) -> Result<Stored, StoreError> {
        self.store_inner(items, true).await
    }

    async fn store_inner(
        &self,
        items: Vec<Normalized>,
        updates: bool,
    ) -> Result<Stored, StoreError> {
        let _g = self.lock.lock().await;
        let now = crate::event::now_ms();
        let mut out = Stored::default();
        let mut fresh = Vec::new();
        let mut keys: std::collections::BTreeMap<String, [u8; 32]> =
            std::collections::BTreeMap::new();
        for n in items {
            let dup = match keys.get(&n.key) {
                Some(h) if *h != n.content && !updates => {
                    return Err(conflict(&n, &self.telemetry))
                }
                Some(_) => true,
                None => match self.check(&n, now) {
                    Err(StoreError::Conflict(_)) if updates => true,
                    other => other?,
                },
            };
            if dup {
                out.duplicates += 1;
                self.telemetry.metrics().count(Metric::PosDuplicates, "", 1);
                continue;
            }
            keys.insert(n.key.clone(), n.content);
            fresh.push(n);
        }
        if fresh.is_empty() {
            return Ok(out);
        }
        let events: Vec<_> = fresh.iter().map(|n| n.event.clone()).collect();
        // Events and their idempotency entries go to disk in one transaction: a crash can
        // never leave transactions stored without their index entries (or the reverse).
        let mut batch = sled::Batch::default();
        for (k, h) in &keys {
            let mut v = Vec::with_capacity(40);
            v.extend_from_slice(&now.to_be_bytes());
            v.extend_from_slice(h);
            batch.insert(k.as_bytes(), v);
        }
        let seqs = match self.sink.append_durable(&events, &self.index, &batch).await {
            Ok(s) => s,
            Err(SpoolError::Full { .. }) => {
                self.telemetry
                    .metrics()
                    .count(Metric::PosRefused, "reason=\"spool_full\"", 1);
                return Err(StoreError::Full("POS spool is full; retry later".into()));
            }
            Err(e) => return Err(StoreError::Storage(e.to_string())),
        };
        out.accepted = fresh.len();
        out.ids = seqs
            .iter()
            .map(|s| format!("{}:{s}", self.gateway))
            .collect();
        self.telemetry
            .metrics()
            .events_in(crate::event::Stream::Pos, fresh.len() as u64);
        self.telemetry.health().source_input("pos");
        Ok(out)
    }

    /// Forgets index entries older than the window, every few minutes.
    pub async fn run_expiry(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = crate::event::now_ms();
            let mut removed = 0;
            for (k, v) in self.index.iter().flatten() {
                let at = v
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(i64::from_be_bytes)
                    .unwrap_or(0);
                if now.saturating_sub(at) >= self.window_ms && self.index.remove(k).is_ok() {
                    removed += 1;
                }
            }
            if removed > 0 {
                tracing::debug!(removed, "POS idempotency entries expired");
            }
        }
    }
}
