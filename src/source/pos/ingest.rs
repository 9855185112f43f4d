//! The one way into the spool for every POS input: normalize all transactions of an input
//! first (one bad record refuses the whole input, nothing half-stored), drop the ones already
//! seen within the idempotency window, append the rest, fsync, and only then answer.
//!
//! The idempotency index ([`super::seen`]) is held in RAM and written as one record per input
//! into a side tree of the spool's own sled database, in the same transaction as the input's
//! events, so it survives restarts and crashes exactly as the events do. Checking and appending
//! happen under one lock (two pushes of one transaction cannot both pass); the fsync happens
//! after it is released, so inputs arriving together share one fsync. No answer leaves before
//! what it reports is on disk: a duplicate of a transaction whose fsync is still running waits
//! for (or runs) a flush too.

use super::normalize::{normalize_at, normalize_tallied, Normalized};
use super::seen::{self, DigestHasher, Found, Seen};
use super::transaction::{Reject, Tx};
use super::ParseOpts;
use crate::privacy::customer::{CustomerKeys, Dropped};
use crate::source::DurableSink;
use crate::spool::SpoolError;
use crate::telemetry::metrics::Metric;
use crate::telemetry::Telemetry;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Shared state of the POS inputs: one per gateway, built by `pos::start` and handed to the
/// HTTP routes, the watched directories and the pollers (one lock, one index).
pub struct Ingest {
    sink: DurableSink,
    /// How customer identifiers are protected (`privacy.customer` and its keys); normalizing
    /// needs it.
    pub key: CustomerKeys,
    /// The parser options from `[sources.pos]`; files replace the CSV mapping with their own.
    pub opts: ParseOpts,
    tree: sled::Tree,
    gateway: String,
    window_ms: i64,
    /// The index; its lock serializes check-append-remember.
    index: tokio::sync::Mutex<Index>,
    /// One past the last seq this ingest appended: an answer that relies on anything below it
    /// waits until the spool's durable mark passes it.
    appended_end: AtomicU64,
    /// The pipeline's registries: every POS input (HTTP, files, pollers) counts and reports
    /// its health through the ingest it shares.
    pub telemetry: Telemetry,
}

/// The RAM index and the tree an earlier release left (until it is empty).
struct Index {
    seen: Seen,
    legacy: Option<sled::Tree>,
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

impl std::error::Error for StoreError {}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Invalid(r) | StoreError::Conflict(r) => write!(f, "{r}"),
            StoreError::Full(e) | StoreError::Storage(e) => f.write_str(e),
        }
    }
}

/// What a stored input gave.
#[derive(Debug, Default, Clone)]
pub struct Stored {
    /// Transactions stored by this call (new keys); the HTTP answer is 201 when above 0.
    pub accepted: usize,
    /// Transactions already stored with the same key and content, or repeated in the input
    /// (REST polling also counts changed orders here).
    pub duplicates: usize,
    /// The accepted transactions' event ids, in input order (the HTTP answer's `ids`).
    pub ids: EventIds,
}

/// The event ids (`<gateway>:<seq>`) of the accepted transactions, in input order. Kept as
/// numbers and spelled out only while the answer is written: a bulk push of 1000 answers
/// with 1000 ids, and building each as a string first cost an allocation per transaction.
#[derive(Debug, Default, Clone)]
pub struct EventIds {
    gateway: String,
    seqs: Vec<u64>,
}

impl serde::Serialize for EventIds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.seqs.len()))?;
        for n in &self.seqs {
            seq.serialize_element(&format_args!("{}:{n}", self.gateway))?;
        }
        seq.end()
    }
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
        let pc = &cfg.sources.pos;
        let key = CustomerKeys::from_config(
            &cfg.privacy,
            &cfg.gateway.store_id,
            &pc.phone_default_country,
            &telemetry,
        )?;
        let tree = sink
            .index(seen::TREE)
            .map_err(|e| format!("idempotency index: {e}"))?;
        let legacy = sink
            .existing_index(seen::LEGACY_TREE)
            .map_err(|e| format!("idempotency index: {e}"))?;
        let window_ms = i64::try_from(pc.idempotency_window.0.as_millis()).unwrap_or(i64::MAX);
        let seen = Seen::load(&tree, legacy.as_ref(), crate::event::now_ms(), window_ms);
        Ok(Ingest {
            sink,
            key,
            opts: ParseOpts::from_config(pc),
            window_ms,
            tree,
            gateway: cfg.gateway.gateway_id.clone(),
            index: tokio::sync::Mutex::new(Index { seen, legacy }),
            appended_end: AtomicU64::new(0),
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

    /// A JSON document read and normalized in one pass: each transaction is normalized as it
    /// is read, so a bulk push holds its transactions only in their stored shape (the
    /// transactions of a 1000-transaction request were 0.9 MB of fresh memory twice over,
    /// BENCHMARKS.md "POS push"). `None` when the fast parser leaves the document to the tree
    /// parser: the caller then takes the general path. The answer is that path's: a document
    /// that does not parse is refused for that even where an earlier transaction would not
    /// normalize.
    pub fn normalize_json(&self, text: &str) -> Option<Result<Vec<Normalized>, Reject>> {
        let now = crate::event::now_ms();
        let mut out = Vec::new();
        let mut refused = None;
        // Identifiers dropped are counted only if this pass is kept: the general path counts
        // its own.
        let mut dropped = Dropped::default();
        let taken = super::json_fast::parse_each(text, &self.opts, |t| {
            if refused.is_none() {
                match normalize_tallied(t, &self.key, now, self.opts.offset_s, &mut dropped) {
                    Ok(n) => out.push(n),
                    Err(r) => refused = Some(r),
                }
            }
        });
        if !taken {
            return None;
        }
        self.key.count(dropped);
        Some(refused.map_or(Ok(out), Err))
    }

    /// Whether `n` (key digest `key`, content digest `content`) was stored before: `Ok(true)`
    /// same content, `Err(Conflict)` other content.
    fn check(
        &self,
        seen: &Seen,
        n: &Normalized,
        key: u64,
        content: u64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut found = seen.find(key, now, self.window_ms);
        if found == Found::New {
            if let Some(legacy) = &n.legacy_key {
                found = seen.find(seen::key_digest(legacy), now, self.window_ms);
            }
        }
        match found {
            Found::New => Ok(false),
            Found::Stored(c) if c != seen::short(content) => Err(conflict(n, &self.telemetry)),
            Found::Legacy(Some(c))
                if c != seen::first_u64(&n.legacy_content(self.key.randomized())) =>
            {
                Err(conflict(n, &self.telemetry))
            }
            Found::Stored(_) | Found::Legacy(_) => Ok(true),
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
        let mut out = Stored::default();
        let mut index = self.index.lock().await;
        let now = crate::event::now_ms();
        let mut fresh = Vec::with_capacity(items.len());
        let mut entries: Vec<(u64, u64)> = Vec::with_capacity(items.len());
        let mut in_input: HashMap<u64, u64, BuildHasherDefault<DigestHasher>> =
            HashMap::with_capacity_and_hasher(items.len(), Default::default());
        for n in items {
            let key = seen::key_digest(&n.key);
            let content = seen::first_u64(&n.content);
            let dup = match in_input.get(&key) {
                Some(c) if *c != content && !updates => return Err(conflict(&n, &self.telemetry)),
                Some(_) => true,
                None => match self.check(&index.seen, &n, key, content, now) {
                    Err(StoreError::Conflict(_)) if updates => true,
                    other => other?,
                },
            };
            if dup {
                out.duplicates += 1;
                self.telemetry.metrics().count(Metric::PosDuplicates, "", 1);
                continue;
            }
            in_input.insert(key, content);
            entries.push((key, content));
            fresh.push(n.event);
        }
        let Some(first) = entries.first() else {
            drop(index);
            // Only duplicates: answer once what they duplicate is on disk.
            let end = self.appended_end.load(Ordering::Acquire);
            self.sink.flush_covering(end).await.map_err(storage)?;
            return Ok(out);
        };
        // Events and their index record go to disk in one transaction: a crash can never
        // leave transactions stored without their index entries (or the reverse).
        let mut batch = sled::Batch::default();
        batch.insert(
            &seen::record_key(now, first.0),
            seen::record_value(&entries),
        );
        let seqs = match self.sink.append(&fresh, &self.tree, &batch) {
            Ok(s) => s,
            Err(SpoolError::Full { .. }) => {
                self.telemetry
                    .metrics()
                    .count(Metric::PosRefused, "reason=\"spool_full\"", 1);
                return Err(StoreError::Full("POS spool is full; retry later".into()));
            }
            Err(e) => return Err(storage(e)),
        };
        index.seen.insert(&entries, now);
        let end = seqs.last().map_or(0, |s| s + 1);
        self.appended_end.fetch_max(end, Ordering::AcqRel);
        drop(index);
        // The events are in sled now: waiting for the flush holds only their seqs.
        let accepted = fresh.len();
        drop((fresh, entries, in_input, batch));
        // Outside the lock: inputs that arrive meanwhile append and share one fsync.
        self.sink.flush_covering(end).await.map_err(storage)?;
        out.accepted = accepted;
        out.ids = EventIds {
            gateway: self.gateway.clone(),
            seqs,
        };
        self.telemetry
            .metrics()
            .events_in(crate::event::Stream::Pos, accepted as u64);
        self.telemetry.health().source_input("pos");
        Ok(out)
    }

    /// Transactions the index remembers.
    #[cfg(test)]
    pub async fn remembered(&self) -> usize {
        self.index.lock().await.seen.len()
    }

    /// Forgets index entries older than the window, every few minutes.
    pub async fn run_expiry(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.expire(crate::event::now_ms()).await;
        }
    }

    /// Forgets what is older than the window at `now`; drops an earlier release's tree once
    /// it is empty.
    pub async fn expire(&self, now: i64) {
        let mut index = self.index.lock().await;
        let Index { seen, legacy } = &mut *index;
        match seen.expire(&self.tree, legacy.as_ref(), now, self.window_ms) {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "POS idempotency entries expired"),
            Err(e) => tracing::warn!(error = %e, "POS idempotency entries could not be expired"),
        }
        if legacy.as_ref().is_some_and(sled::Tree::is_empty)
            && self.sink.drop_index(seen::LEGACY_TREE).is_ok()
        {
            *legacy = None;
        }
    }
}

fn storage(e: SpoolError) -> StoreError {
    StoreError::Storage(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spool;

    type R = Result<(), Box<dyn std::error::Error>>;

    /// The test configuration, with `extra` (more sections) appended.
    fn config_with(dir: &std::path::Path, extra: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "[gateway]\nstore_id = \"s1\"\ngateway_id = \"gw1\"\nstate_dir = \"{}\"\n\
             [http]\nenabled = false\n[sources.pos]\nenabled = true\n[sources.pos.http]\nenabled = false\n{extra}",
            dir.display()
        );
        crate::config::parse("(test)", &text, None).map_err(|e| e.to_string())
    }

    fn config(dir: &std::path::Path) -> Result<crate::config::Config, String> {
        config_with(dir, "")
    }

    fn open(dir: &std::path::Path) -> Result<Ingest, Box<dyn std::error::Error>> {
        open_with(dir, "", Telemetry::default())
    }

    fn open_with(
        dir: &std::path::Path,
        extra: &str,
        telemetry: Telemetry,
    ) -> Result<Ingest, Box<dyn std::error::Error>> {
        let cfg = config_with(dir, extra)?;
        let spool = Spool::open(&cfg.spool_dir(), "gw1", &cfg.spool)?;
        Ok(Ingest::new(
            DurableSink::new(Arc::new(spool)),
            &cfg,
            telemetry,
        )?)
    }

    fn txs(ing: &Ingest, body: &str) -> Result<Vec<Normalized>, Box<dyn std::error::Error>> {
        let parsed =
            super::super::json::parse_document(body, &ing.opts).map_err(|r| r.to_string())?;
        let t: Result<Vec<Tx>, Reject> = parsed.into_iter().collect();
        Ok(ing
            .normalize_all(t.map_err(|r| r.to_string())?)
            .map_err(|r| r.to_string())?)
    }

    fn sale(id: &str, total: i64) -> String {
        format!(
            r#"{{"transaction_id":"{id}","register":"R1","time":"2026-12-01T10:00:00Z","currency":"EUR","lines":[{{"sku":"A","amount_minor":{total}}}],"totals":{{"total_minor":{total}}}}}"#
        )
    }

    /// Parsing and normalizing in one pass answers what parsing, then normalizing, answers:
    /// the same events, the same first refusal, and a document the fast parser leaves goes
    /// to the general path whole.
    #[test]
    fn one_pass_normalizing_answers_as_two_passes() -> R {
        let dir = tempfile::tempdir()?;
        let ing = open(dir.path())?;
        // A card number as an identifier parses, and normalizing refuses it.
        let card = sale("4111111111111111", 5);
        let docs = [
            sale("T1", 100),
            format!(
                "[{},{},{}]",
                sale("T1", 100),
                sale("T2", 200),
                sale("T3", 0)
            ),
            format!("[{},{card},{}]", sale("T1", 100), sale("T2", 200)),
            format!("[{card},{}]", sale("T2", 200).replace("EUR", "euro")),
            format!("[{}]", sale("T1", 1).replace("T1", "  ")),
            "[]".to_string(),
            format!("[{}] x", sale("T1", 1)),
        ];
        let two_pass = |doc: &str| {
            let parsed = super::super::json::parse_document(doc, &ing.opts)?;
            let t: Result<Vec<Tx>, Reject> = parsed.into_iter().collect();
            ing.normalize_all(t?)
        };
        let mut fused = 0;
        for doc in &docs {
            let Some(one) = ing.normalize_json(doc) else {
                // Left to the general path: nothing of it was taken.
                continue;
            };
            fused += 1;
            // Events carry no clock-dependent field for documents with times.
            assert_eq!(format!("{one:?}"), format!("{:?}", two_pass(doc)), "{doc}");
        }
        // The first three documents and the empty one are read in one pass; a bad currency,
        // a blank id and trailing text go to the general path.
        assert_eq!(fused, 4);
        for left in [3, 4, 6] {
            assert!(ing.normalize_json(&docs[left]).is_none(), "{}", docs[left]);
        }
        Ok(())
    }

    /// An identifier dropped while normalizing is counted once per input: not by a one-pass
    /// reading that the fast parser gives up on (the general path then counts it), and once
    /// when the one pass is kept.
    #[test]
    fn a_pass_that_is_left_counts_no_dropped_identifier() -> R {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("join.key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef")?;
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let privacy = format!(
            "[privacy]\ncustomer = \"keyed\"\njoin_key_file = \"{}\"\n",
            key.display()
        );
        let telemetry = Telemetry::default();
        let ing = open_with(dir.path(), &privacy, telemetry.clone())?;
        let counted = || {
            telemetry.metrics().counter_value(
                Metric::Malformed,
                &crate::telemetry::metrics::labels(&[
                    ("source", "pos"),
                    ("reason", "customer_email"),
                ]),
            )
        };
        let bad_email = sale("T1", 100).replace(
            r#""totals""#,
            r#""customer":{"email":"not an address"},"totals""#,
        );
        // The duplicate key makes the fast parser give up after the first transaction.
        let left = format!(
            "[{bad_email},{}]",
            sale("T2", 5).replace(r#""register":"R1""#, r#""register":"R1","register":"R1""#)
        );
        assert!(ing.normalize_json(&left).is_none());
        assert_eq!(counted(), 0);
        txs(&ing, &left)?;
        assert_eq!(counted(), 1);
        assert!(ing.normalize_json(&format!("[{bad_email}]")).is_some());
        assert_eq!(counted(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn duplicates_and_conflicts_survive_a_restart() -> R {
        let dir = tempfile::tempdir()?;
        {
            let ing = open(dir.path())?;
            let body = format!("[{},{}]", sale("T1", 100), sale("T2", 200));
            let s = ing.store(txs(&ing, &body)?).await?;
            assert_eq!((s.accepted, s.duplicates), (2, 0));
            // Twice in one input: stored once.
            let body = format!("[{},{}]", sale("T3", 300), sale("T3", 300));
            let s = ing.store(txs(&ing, &body)?).await?;
            assert_eq!((s.accepted, s.duplicates), (1, 1));
            assert_eq!(ing.remembered().await, 3);
        }
        let ing = open(dir.path())?;
        assert_eq!(ing.remembered().await, 3, "read back at start");
        let s = ing.store(txs(&ing, &sale("T2", 200))?).await?;
        assert_eq!((s.accepted, s.duplicates), (0, 1));
        match ing.store(txs(&ing, &sale("T2", 250))?).await {
            Err(StoreError::Conflict(r)) => assert_eq!(r.transaction_id.as_deref(), Some("T2")),
            other => panic!("expected a conflict, got {other:?}"),
        }
        // REST orders change: other content is a duplicate there.
        let s = ing.store_updates(txs(&ing, &sale("T2", 250))?).await?;
        assert_eq!((s.accepted, s.duplicates), (0, 1));
        // Past the window, a transaction is new again.
        ing.expire(crate::event::now_ms() + 31 * 86_400_000).await;
        assert_eq!(ing.remembered().await, 0);
        let s = ing.store(txs(&ing, &sale("T2", 200))?).await?;
        assert_eq!(s.accepted, 1);
        Ok(())
    }

    #[tokio::test]
    async fn entries_of_an_earlier_release_are_honoured() -> R {
        let dir = tempfile::tempdir()?;
        let cfg = config(dir.path())?;
        let now = crate::event::now_ms();
        {
            // What the previous release wrote: one entry per transaction, the key as text,
            // the time and the SHA-256 of the body parsed back with sorted keys.
            let spool = Spool::open(&cfg.spool_dir(), "gw1", &cfg.spool)?;
            let sink = DurableSink::new(Arc::new(spool));
            let ing = Ingest::new(sink.clone(), &cfg, Telemetry::default())?;
            let n = txs(&ing, &sale("T7", 700))?;
            let old = sink.index(seen::LEGACY_TREE)?;
            for t in &n {
                let mut v = now.to_be_bytes().to_vec();
                v.extend_from_slice(&t.legacy_content(false));
                old.insert(t.key.as_bytes(), v)?;
            }
            old.insert("R1\u{1f}\u{1f}T8", now.to_be_bytes().to_vec())?;
            sink.flush().await?;
        }
        let ing = open(dir.path())?;
        assert_eq!(ing.remembered().await, 2);
        let s = ing.store(txs(&ing, &sale("T7", 700))?).await?;
        assert_eq!((s.accepted, s.duplicates), (0, 1), "same content");
        assert!(matches!(
            ing.store(txs(&ing, &sale("T7", 701))?).await,
            Err(StoreError::Conflict(_))
        ));
        // Stored before hashes were kept, with an empty business day: a duplicate.
        let no_day = sale("T8", 800).replace(r#""time":"2026-12-01T10:00:00Z","#, "");
        let s = ing.store(txs(&ing, &no_day)?).await?;
        assert_eq!(s.duplicates, 1);
        // Once expired, the old tree is dropped.
        ing.expire(now + 31 * 86_400_000).await;
        assert!(ing.sink.existing_index(seen::LEGACY_TREE)?.is_none());
        Ok(())
    }

    /// Eight tills pushing one sale per request at once: every push is answered 2xx after its
    /// fsync (they share flushes), none fails, all are stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_single_pushes_share_flushes() -> R {
        let dir = tempfile::tempdir()?;
        let ing = Arc::new(open(dir.path())?);
        let mut tasks = Vec::new();
        for till in 0..8 {
            let ing = ing.clone();
            let mut inputs = Vec::new();
            for i in 0..150 {
                inputs.push(txs(&ing, &sale(&format!("T{till}-{i}"), 100 + i))?);
            }
            tasks.push(tokio::spawn(async move {
                let mut accepted = 0;
                for n in inputs {
                    accepted += ing.store(n).await?.accepted;
                }
                Ok::<usize, StoreError>(accepted)
            }));
        }
        let mut accepted = 0;
        for t in tasks {
            accepted += t.await??;
        }
        assert_eq!(accepted, 8 * 150);
        assert_eq!(ing.remembered().await, 8 * 150);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_pushes_of_one_transaction_store_it_once() -> R {
        let dir = tempfile::tempdir()?;
        let ing = Arc::new(open(dir.path())?);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let ing = ing.clone();
            let n = txs(&ing, &sale("T1", 100))?;
            tasks.push(tokio::spawn(async move { ing.store(n).await }));
        }
        let mut accepted = 0;
        for t in tasks {
            accepted += t.await??.accepted;
        }
        assert_eq!(accepted, 1);
        Ok(())
    }
}
