//! The durable queue between the sources and the uplink: one sled tree per stream, capped by
//! bytes and age. See docs/design.md, "Durability" and "Data path".
//!
//! # Design note
//!
//! - **Chunks** ([`chunk`]). Events are stored in chunks: key = big-endian seq of the chunk's
//!   first event, value = `[8 enqueue ms][1 format][4 count][body]`, body =
//!   `([8 seq][4 len][wire JSON])*`, raw or LZ4-compressed. One sled write per chunk instead of
//!   per event is what lets a Raspberry Pi spool 100k+ events/s, and compression keeps the SD
//!   card's daily writes and the backlog's footprint small.
//! - **Queue** ([`queue`]). Producers append (seqs are reserved in blocks of a durable
//!   high-water mark, so they grow across restarts); the uplink peeks from a cursor and
//!   acknowledges what the broker acknowledged. A chunk is deleted once every event in it was
//!   acknowledged; partial acknowledgements are kept in RAM (after a crash, a partly
//!   acknowledged chunk is resent whole, which at-least-once delivery with id deduplication
//!   absorbs).
//! - **Caps and eviction** ([`caps`]). Sensor streams evict their oldest chunks past their byte
//!   cap or `max_age`; POS is never evicted: it is refused at its cap ([`SpoolError::Full`]),
//!   and an old POS backlog raises an alarm. Every drop is counted by stream and reason.
//! - **Flush and health** ([`flush`]). Nothing is durable before a flush (sled does not flush
//!   by itself here); flushes are bounded in time, and a spool whose writes keep failing says so
//!   to the health check, which lets the watchdog restart the service.
//! - **Start-up** (this module). A spool that cannot be opened is moved aside and a new one
//!   started, so a damaged SD card never turns into a crash loop.

use crate::config::{SpoolConfig, StreamCap};
use crate::event::{Event, Stream};
use crate::telemetry::Telemetry;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod caps;
mod chunk;
mod flush;
mod queue;

pub use chunk::CHUNK_EVENTS;
use chunk::*;

const SEQ_HWM_KEY: &[u8] = b"seq_hwm";
const DROPS_KEY: &[u8] = b"drops";
/// Sequence numbers reserved per durable high-water-mark write.
const SEQ_RESERVE: u64 = 1 << 20;
/// An id mark or key above this is damage (a flipped top bit), never an id handed out: ids
/// start at the clock in µs, and no clock reaches the upper half of the range (the year
/// 292,000). Anything below is honoured, however far ahead (a clock once set decades ahead
/// leaves ids that must not be reused, and room enough above them).
const IDS_DAMAGED_ABOVE: u64 = u64::MAX / 2;

/// Why an append was refused.
#[derive(Debug)]
pub enum SpoolError {
    /// The POS tree is at its byte cap: the caller must refuse its input (HTTP 503).
    Full {
        /// The refused stream: always POS, since sensor streams evict their oldest instead.
        stream: Stream,
        /// Bytes the stream held before this append (keys and chunk values).
        bytes: u64,
        /// The stream's byte cap (`spool.pos.max_bytes`), which the append would have passed.
        cap: u64,
    },
    /// sled failed (disk full, I/O error).
    Storage(String),
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::Full { stream, bytes, cap } => {
                write!(
                    f,
                    "{stream} spool is full ({bytes} of {cap} bytes); retry later"
                )
            }
            SpoolError::Storage(e) => write!(f, "spool storage error: {e}"),
        }
    }
}

impl std::error::Error for SpoolError {}

impl From<sled::Error> for SpoolError {
    fn from(e: sled::Error) -> Self {
        SpoolError::Storage(e.to_string())
    }
}

/// One spooled event as the uplink reads it.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// The event's sequence number: the `<seq>` of its id, growing across restarts.
    pub seq: u64,
    /// When its chunk was appended (Unix ms); the uplink lingers on young events to fill batches.
    pub enqueued_ms: i64,
    /// Key of the chunk holding the event (what [`Spool::ack`] needs).
    pub chunk: u64,
    body: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Spooled {
    /// The event's wire JSON.
    pub fn json(&self) -> &[u8] {
        self.body.get(self.start..self.end).unwrap_or(&[])
    }

    /// What to hand to [`Spool::ack`] once the broker acknowledged the event.
    pub fn ack_ref(&self) -> AckRef {
        AckRef {
            chunk: self.chunk,
            seq: self.seq,
        }
    }
}

/// Identifies an acknowledged event: its chunk and its seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckRef {
    /// Key of the chunk holding the event: the seq of the chunk's first event.
    pub chunk: u64,
    /// The acknowledged event's seq; the chunk is deleted once every seq in it is.
    pub seq: u64,
}

#[derive(Default)]
struct StreamState {
    /// Stored bytes (keys + chunk values, as on the wire to sled).
    bytes: AtomicU64,
    /// Events not yet acknowledged.
    count: AtomicU64,
    /// Events ever appended since the spool was opened: lets the uplink tell whether a stream
    /// it is lingering on has grown, without reading it.
    appended: AtomicU64,
    /// Events appended since the last flush began: what a failed flush may have lost.
    unflushed: AtomicU64,
    /// Chunk key → acknowledged seqs of chunks that are only partly acknowledged. The lock also
    /// serializes every removal of a stream's chunks, so counts never go wrong under races.
    partial: Mutex<HashMap<u64, HashSet<u64>>>,
}

/// Depth of one stream, for status and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamDepth {
    /// Events appended and not yet acknowledged by the broker.
    pub depth: u64,
    /// Bytes the stream holds in sled (keys and chunk values as stored): what its cap limits.
    pub bytes: u64,
    /// Seconds since the oldest chunk still held was appended; None when the stream is empty.
    pub oldest_age_s: Option<f64>,
}

/// The sled-backed spool shared by every producer and the uplink.
pub struct Spool {
    db: sled::Db,
    trees: [sled::Tree; 3],
    meta: sled::Tree,
    gateway: String,
    caps: [StreamCap; 3],
    state: [StreamState; 3],
    append_lock: Mutex<SeqState>,
    drops: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    dirty: AtomicBool,
    recovered: Option<String>,
    /// The last write error while writes keep failing (disk full, I/O error); cleared by the
    /// next successful flush.
    storage_failure: Mutex<Option<String>>,
    appended: tokio::sync::Notify,
    /// POS events with a seq below this are on disk (fsynced): only those are handed to the
    /// uplink. A POS event published before its fsync could be lost by a crash after the
    /// broker took it, and its retry (a till, a re-read export) would be stored again under a
    /// new id; published only once durable, a crash can only cause a redelivery of the same id.
    pos_durable_below: std::sync::atomic::AtomicU64,
    path: PathBuf,
    /// The chunk each stream's uplink read last, decoded: a 1,024-event chunk feeds several
    /// batches, and decompressing it once per batch cost more than the publish. Chunk values
    /// never change and their keys (seqs) are never reused, so the cache cannot go stale.
    last_decoded: Mutex<[Option<DecodedChunk>; 3]>,
    /// A flush that outlived [`flush::FLUSH_TIMEOUT`] and may still be running.
    stuck_flush: Mutex<Option<tokio::task::JoinHandle<sled::Result<usize>>>>,
    /// One flush at a time: sled's flushes started together stall each other (seen as 5 s
    /// timeouts with eight POS clients). Callers waiting here for the same data find it
    /// covered by the flush before them ([`Spool::flush_covering`]): group commit.
    flush_gate: tokio::sync::Mutex<()>,
    /// Where drops are counted (`storegw_dropped_events_total`): the pipeline's registries.
    telemetry: Telemetry,
}

struct SeqState {
    next: u64,
    hwm: u64,
}

/// The stream's slot in the per-stream arrays (the one mapping, `Stream::index()`).
fn idx(s: Stream) -> usize {
    s.index()
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn open_db(path: &Path, cache: u64) -> Result<sled::Db, String> {
    let cfg = sled::Config::new()
        .path(path)
        .cache_capacity(cache)
        .flush_every_ms(None)
        .mode(sled::Mode::LowSpace);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cfg.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("sled panicked while recovering the spool".into()),
    }
}

impl Spool {
    /// [`Spool::open_with`] with registries of its own: for tools and tests that read the spool
    /// itself (`storegw status`, replay, bench), where nobody renders its drop counters.
    pub fn open(path: &Path, gateway: &str, cfg: &SpoolConfig) -> Result<Spool, SpoolError> {
        Self::open_with(path, gateway, cfg, Telemetry::new())
    }

    /// Opens (or creates) the spool, counting its drops into `telemetry` (the pipeline's, so
    /// they appear on that pipeline's `/metrics`); a spool that cannot be opened is moved aside
    /// and a new one started, so a damaged SD card never turns into a crash loop.
    pub fn open_with(
        path: &Path,
        gateway: &str,
        cfg: &SpoolConfig,
        telemetry: Telemetry,
    ) -> Result<Spool, SpoolError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                SpoolError::Storage(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let (db, recovered) = match open_waiting_for_lock(path, cfg.cache_capacity.0) {
            Ok(db) => (db, None),
            Err(e) if is_lock_error(&e) => {
                return Err(SpoolError::Storage(format!(
                    "spool {} is in use by another storegw process ({e})",
                    path.display()
                )))
            }
            Err(e) => {
                let aside = path.with_file_name(format!(
                    "{}.corrupt-{}",
                    path.file_name().and_then(|n| n.to_str()).unwrap_or("spool"),
                    crate::event::now_ms()
                ));
                std::fs::rename(path, &aside).map_err(|re| {
                    SpoolError::Storage(format!(
                        "spool {} cannot be opened ({e}) nor moved aside ({re})",
                        path.display()
                    ))
                })?;
                let msg = format!(
                    "spool {} could not be opened ({e}); moved aside to {} and started empty",
                    path.display(),
                    aside.display()
                );
                tracing::error!(error = %e, moved_to = %aside.display(), "spool damaged: moved aside, starting a new one");
                (
                    open_db(path, cfg.cache_capacity.0).map_err(SpoolError::Storage)?,
                    Some(msg),
                )
            }
        };
        // Indexed by `Stream::index()`, like every per-stream array.
        let trees = [
            db.open_tree(Stream::ALL[0].as_str())?,
            db.open_tree(Stream::ALL[1].as_str())?,
            db.open_tree(Stream::ALL[2].as_str())?,
        ];
        let meta = db.open_tree("meta")?;
        let state: [StreamState; 3] = Default::default();
        // Never reuse an id a consumer may have seen: start above everything ever reserved,
        // above every key on disk and above the clock in microseconds. A mark or a key in the
        // upper half of the range is damage, not an id ever handed out: ignored, with an
        // error, instead of leaving no ids to give.
        let now = unix_us();
        let plausible = |v: u64, what: &str| {
            if v > IDS_DAMAGED_ABOVE {
                tracing::error!(
                    id = v,
                    clock_us = now,
                    "damaged spool id {what} (in the upper half of the id range) ignored: ids continue above the clock and every plausible key"
                );
                return 0;
            }
            v
        };
        let mut last = 0u64;
        for (t, st) in trees.iter().zip(state.iter()) {
            let (mut n, mut b) = (0u64, 0u64);
            for kv in t.iter() {
                let (k, v) = kv?;
                n += chunk_count(&v);
                b += (k.len() + v.len()) as u64;
                let after = be_u64(&k).saturating_add(chunk_count(&v).max(1));
                last = last.max(plausible(after, "key"));
            }
            st.count.store(n, Ordering::Relaxed);
            st.bytes.store(b, Ordering::Relaxed);
        }
        let hwm = plausible(
            meta.get(SEQ_HWM_KEY)?.map(|v| be_u64(&v)).unwrap_or(0),
            "mark",
        );
        let next = hwm.max(last).max(now);
        // A mark near the end of the range (a damaged record) saturates: appends are then
        // refused (`append_inner`) rather than wrap around and reuse ids.
        let new_hwm = next.saturating_add(SEQ_RESERVE);
        meta.insert(SEQ_HWM_KEY, &new_hwm.to_be_bytes())?;
        let drops = meta
            .get(DROPS_KEY)?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        db.flush()?;
        Ok(Spool {
            db,
            trees,
            meta,
            gateway: gateway.to_string(),
            caps: Stream::ALL.map(|s| match s {
                Stream::Ble => cfg.ble.clone(),
                Stream::Wifi => cfg.wifi.clone(),
                Stream::Pos => cfg.pos.clone(),
            }),
            state,
            append_lock: Mutex::new(SeqState { next, hwm: new_hwm }),
            drops: Mutex::new(drops),
            dirty: AtomicBool::new(false),
            recovered,
            storage_failure: Mutex::new(None),
            appended: tokio::sync::Notify::new(),
            // Everything on disk at open is durable.
            pos_durable_below: std::sync::atomic::AtomicU64::new(next),
            last_decoded: Mutex::new(Default::default()),
            stuck_flush: Mutex::new(None),
            flush_gate: tokio::sync::Mutex::new(()),
            path: path.to_path_buf(),
            telemetry,
        })
    }

    /// Why the spool had to be replaced at start-up, if it had to be.
    pub fn recovered(&self) -> Option<&str> {
        self.recovered.as_deref()
    }

    /// Where the spool lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A named side tree in the spool's database (e.g. the POS idempotency index), so what it
    /// holds is made durable by the same [`Spool::flush`] as the events.
    pub fn aux_tree(&self, name: &str) -> Result<sled::Tree, SpoolError> {
        Ok(self.db.open_tree(format!("aux:{name}"))?)
    }

    /// The side tree `name` if an earlier run created it (an earlier release's index), without
    /// creating it.
    pub fn existing_aux_tree(&self, name: &str) -> Result<Option<sled::Tree>, SpoolError> {
        let full = format!("aux:{name}");
        if self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == full.as_bytes())
        {
            Ok(Some(self.db.open_tree(full)?))
        } else {
            Ok(None)
        }
    }

    /// Removes the side tree `name` (an earlier release's index, once empty).
    pub fn drop_aux_tree(&self, name: &str) -> Result<bool, SpoolError> {
        Ok(self.db.drop_tree(format!("aux:{name}"))?)
    }

    /// Every seq below this one is on disk (the last successful flush covered it).
    fn durable_below(&self) -> u64 {
        self.pos_durable_below
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Bytes of the spool files on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// How long an open waits for the database lock before it reports the spool as in use.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// [`open_db`], waiting up to [`LOCK_WAIT`] while the lock is held: a sled database closed a
/// moment ago in this process (a restart of the pipeline, a test reopening it) releases its
/// lock only when its background writes and deferred frees have finished, which on a slow
/// machine takes a fraction of a second. Another process that holds it is still reported,
/// [`LOCK_WAIT`] later.
fn open_waiting_for_lock(path: &Path, cache: u64) -> Result<sled::Db, String> {
    let until = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match open_db(path, cache) {
            Err(e) if is_lock_error(&e) && std::time::Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn is_lock_error(e: &str) -> bool {
    e.contains("lock") || e.contains("WouldBlock") || e.contains("Resource temporarily unavailable")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, Dur};
    use crate::event::EventKind;

    fn cfg(cap: u64) -> SpoolConfig {
        let mut c = SpoolConfig::default();
        c.ble.max_bytes = ByteSize(cap);
        c.pos.max_bytes = ByteSize(cap);
        c
    }

    /// An event padded with `n` pseudo-random (incompressible) characters.
    fn ev(kind: EventKind, n: usize) -> Event {
        let mut rng = fastrand::Rng::with_seed(n as u64 ^ 0x5eed);
        let pad: String = (0..n).map(|_| rng.alphanumeric()).collect();
        Event::from_value(kind, 1, serde_json::json!({ "pad": pad }))
    }

    #[test]
    fn seq_grows_across_reopen_and_ack_deletes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("spool");
        let first = {
            let s = Spool::open(&p, "gw", &cfg(1 << 20))?;
            let seqs = s.append(&[
                ev(EventKind::BleCensus, 10),
                ev(EventKind::PosTransaction, 10),
            ])?;
            assert_eq!(s.depth(Stream::Ble).depth, 1);
            // A POS event is handed to the uplink only once it is on disk; sensor events at once.
            assert!(s.peek(Stream::Pos, 0, 10, 1 << 20)?.is_empty());
            assert_eq!(s.peek(Stream::Ble, 0, 10, 1 << 20)?.len(), 1);
            s.flush_blocking()?;
            let got = s.peek(Stream::Pos, 0, 10, 1 << 20)?;
            assert_eq!(got.len(), 1);
            let v: serde_json::Value = serde_json::from_slice(got[0].json())?;
            assert_eq!(v["id"], format!("gw:{}", seqs[1]));
            assert_eq!(got[0].seq, seqs[1]);
            s.ack(Stream::Pos, &[got[0].ack_ref()])?;
            assert_eq!(s.depth(Stream::Pos).depth, 0);
            s.flush_blocking()?;
            seqs[1]
        };
        let s = Spool::open(&p, "gw", &cfg(1 << 20))?;
        assert_eq!(s.depth(Stream::Ble).depth, 1);
        let seqs = s.append(&[ev(EventKind::BleCensus, 1)])?;
        assert!(seqs[0] > first);
        Ok(())
    }

    #[test]
    fn sensors_drop_oldest_pos_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut c = cfg(64 * 1024);
        c.ble.max_age = Dur::secs(3600);
        let telemetry = Telemetry::new();
        let s = Spool::open_with(&dir.path().join("spool"), "gw", &c, telemetry.clone())?;
        let mut first_seq = None;
        for _ in 0..200 {
            let seqs = s.append(&[ev(EventKind::BleCensus, 1000)])?;
            first_seq.get_or_insert(seqs[0]);
        }
        assert!(s.depth(Stream::Ble).bytes <= 64 * 1024);
        let oldest = s.peek(Stream::Ble, 0, 1, 1 << 20)?;
        assert!(oldest[0].seq > first_seq.unwrap_or(0));
        assert!(s.drops()["ble"]["spool_full"] > 0);
        // Counted on the registry the spool was handed, and nowhere else.
        let dropped = |t: &Telemetry, reason: &str| {
            t.metrics().counter_value(
                crate::telemetry::metrics::Metric::DroppedEvents,
                &crate::telemetry::metrics::labels(&[("stream", "ble"), ("reason", reason)]),
            )
        };
        assert_eq!(
            dropped(&telemetry, "spool_full"),
            s.drops()["ble"]["spool_full"]
        );
        let mut refused = 0;
        for _ in 0..200 {
            if let Err(SpoolError::Full { .. }) = s.append(&[ev(EventKind::PosTransaction, 1000)]) {
                refused += 1;
            }
        }
        assert!(refused > 100);
        assert!(s.depth(Stream::Pos).bytes <= 64 * 1024);
        Ok(())
    }

    #[test]
    fn a_damaged_id_mark_is_ignored_and_ids_stay_unique() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("spool");
        let before = {
            let s = Spool::open(&p, "gw", &cfg(1 << 20))?;
            let ids = s.append(&[ev(EventKind::BleCensus, 10), ev(EventKind::BleCensus, 11)])?;
            s.db.flush()?;
            ids
        };
        {
            // A flipped high bit in the mark, and in the key of a copy of a chunk. (The spool
            // above releases its lock when sled's background work ends: waited for.)
            let db = open_waiting_for_lock(&p, 1 << 20)?;
            db.open_tree("meta")?
                .insert(SEQ_HWM_KEY, &(u64::MAX - 5).to_be_bytes())?;
            let ble = db.open_tree(Stream::Ble.as_str())?;
            let (_, chunk) = ble.first()?.ok_or("no chunk")?;
            ble.insert((u64::MAX - 100).to_be_bytes(), chunk)?;
            db.flush()?;
        }
        let s = Spool::open(&p, "gw", &cfg(1 << 20))?;
        let after = s.append(&[ev(EventKind::BleCensus, 12)])?;
        let last_before = before.iter().copied().max().unwrap_or(0);
        assert!(after
            .iter()
            .all(|&id| id > last_before && id >= unix_us() - 60_000_000));
        assert!(after.iter().all(|&id| id < u64::MAX / 2));
        // The damaged mark was replaced: a third start goes on from there.
        drop(s);
        let s = Spool::open(&p, "gw", &cfg(1 << 20))?;
        let third = s.append(&[ev(EventKind::BleCensus, 13)])?;
        assert!(third.iter().all(|&id| after.iter().all(|&a| id > a)));
        // The end of the id range still refuses rather than wraps (append_inner's guard).
        s.append_lock.lock().map_err(|_| "poisoned")?.next = u64::MAX - 5;
        let r = s.append(&[ev(EventKind::BleCensus, 14)]);
        assert!(matches!(r, Err(SpoolError::Storage(_))), "{r:?}");
        // A damaged enqueue stamp reads as very old or very new, without overflow.
        assert!(s.purge_expired().is_ok());
        // A mark far ahead but in the lower half (a clock once set decades ahead) is honoured:
        // ids handed out then must not come back.
        let p2 = dir.path().join("spool2");
        let ahead = unix_us() + 60 * 366 * 86_400 * 1_000_000;
        {
            let db = sled::Config::new().path(&p2).open()?;
            db.open_tree("meta")?
                .insert(SEQ_HWM_KEY, &ahead.to_be_bytes())?;
            db.flush()?;
        }
        let s2 = Spool::open(&p2, "gw", &cfg(1 << 20))?;
        let ids = s2.append(&[ev(EventKind::BleCensus, 15)])?;
        assert!(ids.iter().all(|&id| id >= ahead), "{ids:?}");
        Ok(())
    }

    #[test]
    fn corrupt_spool_moved_aside() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("spool");
        std::fs::create_dir_all(&p)?;
        std::fs::write(
            p.join("conf"),
            b"garbage that is not a sled config \x00\xff",
        )?;
        std::fs::write(p.join("db"), vec![0xA5u8; 4096])?;
        let s = Spool::open(&p, "gw", &cfg(1 << 20))?;
        assert!(s.recovered().is_some());
        s.append(&[ev(EventKind::PosTransaction, 1)])?;
        Ok(())
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::*;
    use crate::event::EventKind;

    fn census(i: usize) -> Event {
        Event::from_value(
            EventKind::BleCensus,
            i as i64,
            serde_json::json!({ "devices": i, "by_address_type": {"random": i} }),
        )
    }

    #[test]
    fn chunks_split_partial_acks_and_full_delete() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("spool");
        let events: Vec<Event> = (0..2500).map(census).collect();
        {
            let s = Spool::open(&p, "gw", &SpoolConfig::default())?;
            let seqs = s.append(&events)?;
            assert_eq!(s.depth(Stream::Ble).depth, 2500);
            assert_eq!(
                s.trees[idx(Stream::Ble)].len(),
                3,
                "2500 events make 3 chunks"
            );
            // Compressed: far below the raw JSON size.
            let raw: usize = events.iter().map(|e| e.to_wire("gw", 1).len()).sum();
            assert!(s.depth(Stream::Ble).bytes < raw as u64 / 2);
            let first = s.peek(Stream::Ble, 0, 500, usize::MAX)?;
            assert_eq!(first.len(), 500);
            assert_eq!(first[0].seq, seqs[0]);
            let v: serde_json::Value = serde_json::from_slice(first[499].json())?;
            assert_eq!(v["id"], format!("gw:{}", seqs[499]));
            s.ack(
                Stream::Ble,
                &first.iter().map(|e| e.ack_ref()).collect::<Vec<_>>(),
            )?;
            assert_eq!(s.depth(Stream::Ble).depth, 2000);
            // Acknowledged events are not handed out again, even when peeking from 0.
            let again = s.peek(Stream::Ble, 0, 1, usize::MAX)?;
            assert_eq!(again[0].seq, seqs[500]);
            s.flush_blocking()?;
        }
        // After a restart the partly acknowledged first chunk is resent whole.
        let s = Spool::open(&p, "gw", &SpoolConfig::default())?;
        assert_eq!(s.depth(Stream::Ble).depth, 2500);
        let mut cursor = 0;
        loop {
            let b = s.peek(Stream::Ble, cursor, 700, usize::MAX)?;
            let Some(last) = b.last() else { break };
            cursor = last.seq + 1;
            s.ack(
                Stream::Ble,
                &b.iter().map(|e| e.ack_ref()).collect::<Vec<_>>(),
            )?;
        }
        assert_eq!(s.depth(Stream::Ble).depth, 0);
        assert_eq!(s.depth(Stream::Ble).bytes, 0);
        assert_eq!(s.trees[idx(Stream::Ble)].len(), 0);
        Ok(())
    }

    #[test]
    fn damaged_chunk_is_dropped_and_counted() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = Spool::open(&dir.path().join("spool"), "gw", &SpoolConfig::default())?;
        let seqs = s.append(&(0..10).map(census).collect::<Vec<_>>())?;
        s.append(&(0..5).map(census).collect::<Vec<_>>())?;
        // Damage the first chunk's body in place.
        let key = seqs[0].to_be_bytes();
        let mut v = s.trees[idx(Stream::Ble)]
            .get(key)?
            .ok_or("chunk missing")?
            .to_vec();
        v.truncate(HEADER + 7);
        s.trees[idx(Stream::Ble)].insert(key, v)?;
        let got = s.peek(Stream::Ble, 0, 100, usize::MAX)?;
        assert_eq!(got.len(), 5, "the intact chunk is still delivered");
        assert_eq!(s.drops()["ble"]["corrupt"], 10);
        assert_eq!(s.depth(Stream::Ble).depth, 5);
        Ok(())
    }
}

#[cfg(test)]
mod indexed_tests {
    use super::*;
    use crate::event::EventKind;

    fn tx(i: u64) -> Event {
        Event::from_value(
            EventKind::PosTransaction,
            i as i64,
            serde_json::json!({ "transaction_id": format!("T{i}") }),
        )
    }

    #[test]
    fn indexed_append_writes_events_and_index_together() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = Spool::open(&dir.path().join("spool"), "gw", &SpoolConfig::default())?;
        let index = s.aux_tree("idx")?;
        let mut b = sled::Batch::default();
        b.insert(b"R1/T1".as_slice(), b"x".as_slice());
        s.append_indexed(&[tx(1)], &index, &b)?;
        assert_eq!(s.depth(Stream::Pos).depth, 1);
        assert!(index.get(b"R1/T1")?.is_some());
        let mixed = [
            tx(2),
            Event::from_value(EventKind::BleCensus, 0, serde_json::json!({})),
        ];
        assert!(s
            .append_indexed(&mixed, &index, &sled::Batch::default())
            .is_err());
        assert_eq!(
            s.depth(Stream::Pos).depth,
            1,
            "a refused call stores nothing"
        );
        Ok(())
    }
}
