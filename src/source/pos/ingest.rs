//! The one way into the spool for every POS input: normalize all transactions of an input
//! first (one bad record refuses the whole input, nothing half-stored), drop the ones already
//! seen within the idempotency window, append the rest and fsync, and only then answer.
//!
//! The idempotency index is a side tree in the spool's own sled database, keyed by
//! `register ␟ business day ␟ transaction id`, valued with the time it was stored; it is made
//! durable by the same flush as the events, so it survives restarts and crashes.

use super::customer::JoinKey;
use super::model::{Reject, Tx};
use super::normalize::{normalize, Normalized};
use super::{ParseOpts, PosConfig};
use crate::source::SourceContext;
use crate::spool::{Spool, SpoolError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Shared state of the POS inputs.
pub struct Ingest {
    pub spool: Arc<Spool>,
    pub key: JoinKey,
    pub opts: ParseOpts,
    pub cfg: PosConfig,
    index: sled::Tree,
    gateway: String,
    window_ms: i64,
    /// Serializes check-append-mark so two pushes of one transaction cannot both pass.
    lock: tokio::sync::Mutex<()>,
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
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Invalid(r) => write!(f, "{r}"),
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

type Registry = Mutex<Vec<(usize, std::sync::Weak<Ingest>)>>;
static SHARED: Registry = Mutex::new(Vec::new());

impl Ingest {
    /// Builds the ingest state for a spool and configuration.
    pub fn new(spool: Arc<Spool>, cfg: &crate::config::Config) -> Result<Ingest, String> {
        let pc = cfg.sources.pos.clone();
        let key = JoinKey::load(
            cfg.privacy.join_key_file.as_deref(),
            &pc.phone_default_country,
        )?;
        let index = spool
            .aux_tree("pos_idempotency")
            .map_err(|e| format!("idempotency index: {e}"))?;
        Ok(Ingest {
            spool,
            key,
            opts: ParseOpts::from_config(&pc),
            window_ms: i64::try_from(pc.idempotency_window.0.as_millis()).unwrap_or(i64::MAX),
            cfg: pc,
            index,
            gateway: cfg.gateway.gateway_id.clone(),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// One instance per spool, shared by HTTP, files and pollers (one lock, one index).
    pub fn shared(ctx: &SourceContext) -> Result<Arc<Ingest>, String> {
        let id = Arc::as_ptr(&ctx.spool) as usize;
        let mut reg = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|(_, w)| w.strong_count() > 0);
        if let Some(i) = reg
            .iter()
            .find(|(k, _)| *k == id)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(i);
        }
        let i = Arc::new(Ingest::new(ctx.spool.clone(), &ctx.cfg)?);
        reg.push((id, Arc::downgrade(&i)));
        Ok(i)
    }

    /// Normalizes every transaction; the first failure refuses the whole input.
    pub fn normalize_all(&self, txs: Vec<Tx>) -> Result<Vec<Normalized>, Reject> {
        let now = crate::event::now_ms();
        txs.into_iter()
            .map(|t| normalize(t, &self.key, now))
            .collect()
    }

    fn seen(&self, key: &str, now: i64) -> Result<bool, StoreError> {
        match self.index.get(key.as_bytes()) {
            Ok(Some(v)) => {
                let at = v
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(i64::from_be_bytes)
                    .unwrap_or(0);
                Ok(now - at < self.window_ms)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(StoreError::Storage(e.to_string())),
        }
    }

    /// Stores normalized transactions durably; returns after the fsync.
    pub async fn store(&self, items: Vec<Normalized>) -> Result<Stored, StoreError> {
        let _g = self.lock.lock().await;
        let now = crate::event::now_ms();
        let mut out = Stored::default();
        let mut fresh = Vec::new();
        let mut keys = std::collections::BTreeSet::new();
        for n in items {
            if self.seen(&n.key, now)? || !keys.insert(n.key.clone()) {
                out.duplicates += 1;
                crate::ops::metrics::global().count("storegw_pos_duplicates_total", "", 1);
                continue;
            }
            fresh.push(n);
        }
        if fresh.is_empty() {
            return Ok(out);
        }
        let events: Vec<_> = fresh.iter().map(|n| n.event.clone()).collect();
        // Events and their idempotency entries go to disk in one transaction: a crash can
        // never leave transactions stored without their index entries (or the reverse).
        let mut batch = sled::Batch::default();
        for k in &keys {
            batch.insert(k.as_bytes(), &now.to_be_bytes());
        }
        let seqs = match self.spool.append_indexed(&events, &self.index, &batch) {
            Ok(s) => s,
            Err(SpoolError::Full { .. }) => {
                crate::ops::metrics::global().count(
                    "storegw_pos_refused_total",
                    "reason=\"spool_full\"",
                    1,
                );
                return Err(StoreError::Full("POS spool is full; retry later".into()));
            }
            Err(e) => return Err(StoreError::Storage(e.to_string())),
        };
        self.spool
            .flush()
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        out.accepted = fresh.len();
        out.ids = seqs
            .iter()
            .map(|s| format!("{}:{s}", self.gateway))
            .collect();
        crate::ops::metrics::global().events_in(crate::event::Stream::Pos, fresh.len() as u64);
        crate::ops::status::source_input("pos");
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
                if now - at >= self.window_ms && self.index.remove(k).is_ok() {
                    removed += 1;
                }
            }
            if removed > 0 {
                tracing::debug!(removed, "POS idempotency entries expired");
            }
        }
    }
}
