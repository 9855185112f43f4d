//! The durable queue between the sources and the uplink: one sled tree per stream, keyed by the
//! big-endian event sequence number, capped by bytes and age (DESIGN §4).
//!
//! Value layout: 8 bytes of enqueue time (Unix ms, big-endian) followed by the wire JSON of the
//! event, so the uplink can splice events into a batch without re-encoding them.

use crate::config::{SpoolConfig, StreamCap};
use crate::event::{Event, Stream};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const SEQ_HWM_KEY: &[u8] = b"seq_hwm";
const DROPS_KEY: &[u8] = b"drops";
/// Sequence numbers reserved per durable high-water-mark write.
const SEQ_RESERVE: u64 = 1 << 20;

/// Why an append was refused.
#[derive(Debug)]
pub enum SpoolError {
    /// The POS tree is at its byte cap: the caller must refuse its input (HTTP 503).
    Full {
        stream: Stream,
        bytes: u64,
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
    pub seq: u64,
    pub enqueued_ms: i64,
    value: sled::IVec,
}

impl Spooled {
    /// The event's wire JSON.
    pub fn json(&self) -> &[u8] {
        self.value.get(8..).unwrap_or(&[])
    }
}

#[derive(Default)]
struct StreamState {
    bytes: AtomicU64,
    count: AtomicU64,
}

/// Depth of one stream, for status and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamDepth {
    pub depth: u64,
    pub bytes: u64,
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
    appended: tokio::sync::Notify,
    path: PathBuf,
}

struct SeqState {
    next: u64,
    hwm: u64,
}

fn idx(s: Stream) -> usize {
    match s {
        Stream::Ble => 0,
        Stream::Wifi => 1,
        Stream::Pos => 2,
    }
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
    /// Opens (or creates) the spool; a spool that cannot be opened is moved aside and a new one
    /// started, so a damaged SD card never turns into a crash loop.
    pub fn open(path: &Path, gateway: &str, cfg: &SpoolConfig) -> Result<Spool, SpoolError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                SpoolError::Storage(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let (db, recovered) = match open_db(path, cfg.cache_capacity.0) {
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
        let trees = [
            db.open_tree("ble")?,
            db.open_tree("wifi")?,
            db.open_tree("pos")?,
        ];
        let meta = db.open_tree("meta")?;
        let state: [StreamState; 3] = Default::default();
        let mut last = 0u64;
        for (t, st) in trees.iter().zip(state.iter()) {
            let (mut n, mut b) = (0u64, 0u64);
            for kv in t.iter() {
                let (k, v) = kv?;
                n += 1;
                b += (k.len() + v.len()) as u64;
            }
            st.count.store(n, Ordering::Relaxed);
            st.bytes.store(b, Ordering::Relaxed);
            if let Some((k, _)) = t.last()? {
                last = last.max(be_u64(&k).saturating_add(1));
            }
        }
        let hwm = meta.get(SEQ_HWM_KEY)?.map(|v| be_u64(&v)).unwrap_or(0);
        // Never reuse an id a consumer may have seen: start above everything ever reserved,
        // above every key on disk and above the clock in microseconds.
        let next = hwm.max(last).max(unix_us());
        let new_hwm = next + SEQ_RESERVE;
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
            caps: [cfg.ble.clone(), cfg.wifi.clone(), cfg.pos.clone()],
            state,
            append_lock: Mutex::new(SeqState { next, hwm: new_hwm }),
            drops: Mutex::new(drops),
            dirty: AtomicBool::new(false),
            recovered,
            appended: tokio::sync::Notify::new(),
            path: path.to_path_buf(),
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

    /// Appends events atomically per stream and assigns their ids. Sensor streams evict their
    /// oldest events to stay under the cap; POS refuses with [`SpoolError::Full`] instead, and
    /// then nothing of the call is stored.
    pub fn append(&self, events: &[Event]) -> Result<Vec<u64>, SpoolError> {
        let now = crate::event::now_ms();
        let mut seqs = Vec::with_capacity(events.len());
        let mut guard = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batches: [Option<(sled::Batch, u64, u64)>; 3] = Default::default();
        let first = guard.next;
        for (i, e) in events.iter().enumerate() {
            let seq = first + i as u64;
            let mut value = Vec::with_capacity(264);
            value.extend_from_slice(&now.to_be_bytes());
            value.extend_from_slice(&e.to_wire(&self.gateway, seq));
            let entry =
                batches[idx(e.stream())].get_or_insert_with(|| (sled::Batch::default(), 0, 0));
            entry.1 += 8 + value.len() as u64;
            entry.2 += 1;
            entry.0.insert(&seq.to_be_bytes(), value);
            seqs.push(seq);
        }
        let pos = &batches[idx(Stream::Pos)];
        if let Some((_, add, _)) = pos {
            let st = &self.state[idx(Stream::Pos)];
            let cur = st.bytes.load(Ordering::Relaxed);
            let cap = self.caps[idx(Stream::Pos)].max_bytes.0;
            if cur + add > cap {
                self.count_drop(
                    Stream::Pos,
                    "refused_full",
                    events.iter().filter(|e| e.stream() == Stream::Pos).count() as u64,
                );
                return Err(SpoolError::Full {
                    stream: Stream::Pos,
                    bytes: cur,
                    cap,
                });
            }
        }
        let end = first + events.len() as u64;
        if end >= guard.hwm {
            let hwm = end + SEQ_RESERVE;
            self.meta.insert(SEQ_HWM_KEY, &hwm.to_be_bytes())?;
            guard.hwm = hwm;
        }
        for s in Stream::ALL {
            if let Some((batch, add, n)) = batches[idx(s)].take() {
                self.trees[idx(s)].apply_batch(batch)?;
                let st = &self.state[idx(s)];
                st.bytes.fetch_add(add, Ordering::Relaxed);
                st.count.fetch_add(n, Ordering::Relaxed);
                if s.is_sensor() {
                    self.evict_over_cap(s)?;
                }
            }
        }
        guard.next = end;
        drop(guard);
        self.dirty.store(true, Ordering::Release);
        self.appended.notify_one();
        Ok(seqs)
    }

    fn evict_over_cap(&self, s: Stream) -> Result<(), SpoolError> {
        let cap = self.caps[idx(s)].max_bytes.0;
        let st = &self.state[idx(s)];
        let mut dropped = 0;
        while st.bytes.load(Ordering::Relaxed) > cap {
            match self.trees[idx(s)].pop_min()? {
                Some((k, v)) => {
                    st.bytes
                        .fetch_sub((k.len() + v.len()) as u64, Ordering::Relaxed);
                    st.count.fetch_sub(1, Ordering::Relaxed);
                    dropped += 1;
                }
                None => break,
            }
        }
        if dropped > 0 {
            self.count_drop(s, "spool_full", dropped);
        }
        Ok(())
    }

    /// Removes sensor events older than their stream's `max_age`. POS is never dropped: an old
    /// POS backlog is reported as an alarm instead (see [`Spool::pos_backlog_too_old`]).
    pub fn purge_expired(&self) -> Result<u64, SpoolError> {
        let now = crate::event::now_ms();
        let mut total = 0;
        for s in [Stream::Ble, Stream::Wifi] {
            let max_age = self.caps[idx(s)].max_age.0.as_millis() as i64;
            let t = &self.trees[idx(s)];
            let st = &self.state[idx(s)];
            let mut n = 0;
            while let Some((k, v)) = t.first()? {
                if now - enqueued(&v) <= max_age {
                    break;
                }
                if t.remove(&k)?.is_some() {
                    st.bytes
                        .fetch_sub((k.len() + v.len()) as u64, Ordering::Relaxed);
                    st.count.fetch_sub(1, Ordering::Relaxed);
                    n += 1;
                }
            }
            if n > 0 {
                self.count_drop(s, "max_age", n);
                total += n;
            }
        }
        Ok(total)
    }

    /// True when the oldest unsent POS transaction is older than the POS `max_age`.
    pub fn pos_backlog_too_old(&self) -> bool {
        let max = self.caps[idx(Stream::Pos)].max_age.0.as_secs_f64();
        self.depth(Stream::Pos)
            .oldest_age_s
            .is_some_and(|a| a > max)
    }

    /// Up to `max_events` / `max_bytes` events of a stream with seq >= `from`, oldest first.
    pub fn peek(
        &self,
        s: Stream,
        from: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Spooled>, SpoolError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for kv in self.trees[idx(s)].range(from.to_be_bytes()..) {
            let (k, v) = kv?;
            let len = v.len().saturating_sub(8);
            if !out.is_empty() && bytes + len > max_bytes {
                break;
            }
            bytes += len + 1;
            out.push(Spooled {
                seq: be_u64(&k),
                enqueued_ms: enqueued(&v),
                value: v,
            });
            if out.len() >= max_events {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes events the broker acknowledged.
    pub fn ack(&self, s: Stream, seqs: &[u64]) -> Result<(), SpoolError> {
        let t = &self.trees[idx(s)];
        let st = &self.state[idx(s)];
        for seq in seqs {
            if let Some(v) = t.remove(seq.to_be_bytes())? {
                st.bytes.fetch_sub(8 + v.len() as u64, Ordering::Relaxed);
                st.count.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Depth, logical bytes and oldest age of a stream.
    pub fn depth(&self, s: Stream) -> StreamDepth {
        let st = &self.state[idx(s)];
        let oldest = self.trees[idx(s)]
            .first()
            .ok()
            .flatten()
            .map(|(_, v)| ((crate::event::now_ms() - enqueued(&v)).max(0) as f64) / 1000.0);
        StreamDepth {
            depth: st.count.load(Ordering::Relaxed),
            bytes: st.bytes.load(Ordering::Relaxed),
            oldest_age_s: oldest,
        }
    }

    /// Total events waiting across streams.
    pub fn total_depth(&self) -> u64 {
        self.state
            .iter()
            .map(|s| s.count.load(Ordering::Relaxed))
            .sum()
    }

    /// Drops so far, by stream and reason (persisted across restarts).
    pub fn drops(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.drops.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Records dropped or refused events.
    pub fn count_drop(&self, s: Stream, reason: &str, n: u64) {
        if let Ok(mut d) = self.drops.lock() {
            *d.entry(s.as_str().to_string())
                .or_default()
                .entry(reason.to_string())
                .or_default() += n;
        }
        crate::ops::metrics::global().drops(s, reason, n);
        tracing::warn!(stream = %s, reason, count = n, "events dropped");
        self.dirty.store(true, Ordering::Release);
    }

    /// Durable flush: returns once everything appended so far is on disk.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        self.persist_drops()?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Blocking variant of [`Spool::flush`] for non-async callers.
    pub fn flush_blocking(&self) -> Result<(), SpoolError> {
        self.persist_drops()?;
        self.db.flush()?;
        Ok(())
    }

    fn persist_drops(&self) -> Result<(), SpoolError> {
        let d = self.drops();
        if let Ok(json) = serde_json::to_vec(&d) {
            self.meta.insert(DROPS_KEY, json)?;
        }
        Ok(())
    }

    /// Flushes at least every `interval` while there are unflushed writes, and purges expired
    /// sensor events; runs until the process ends.
    pub async fn run_flusher(self: std::sync::Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purge_at = std::time::Instant::now();
        loop {
            tick.tick().await;
            if purge_at.elapsed() >= Duration::from_secs(10) {
                purge_at = std::time::Instant::now();
                if let Err(e) = self.purge_expired() {
                    tracing::error!(error = %e, "spool purge failed");
                }
            }
            if self.dirty.swap(false, Ordering::AcqRel) {
                if let Err(e) = self.flush().await {
                    self.dirty.store(true, Ordering::Release);
                    tracing::error!(error = %e, "spool flush failed");
                }
            }
        }
    }

    /// Resolves when something is appended after this call.
    pub async fn wait_appended(&self) {
        self.appended.notified().await
    }

    /// Bytes of the spool files on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

fn is_lock_error(e: &str) -> bool {
    e.contains("lock") || e.contains("WouldBlock") || e.contains("Resource temporarily unavailable")
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

fn enqueued(v: &[u8]) -> i64 {
    be_u64(v.get(..8).unwrap_or(&[])) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, Dur};

    fn cfg(cap: u64) -> SpoolConfig {
        let mut c = SpoolConfig::default();
        c.ble.max_bytes = ByteSize(cap);
        c.pos.max_bytes = ByteSize(cap);
        c
    }

    fn ev(kind: &'static str, n: usize) -> Event {
        Event {
            kind,
            ts_ms: 1,
            body: serde_json::json!({ "pad": "x".repeat(n) }),
        }
    }

    #[test]
    fn seq_grows_across_reopen_and_ack_deletes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("spool");
        let first = {
            let s = Spool::open(&p, "gw", &cfg(1 << 20))?;
            let seqs = s.append(&[ev("ble.census", 10), ev("pos.transaction", 10)])?;
            assert_eq!(s.depth(Stream::Ble).depth, 1);
            let got = s.peek(Stream::Pos, 0, 10, 1 << 20)?;
            assert_eq!(got.len(), 1);
            let v: serde_json::Value = serde_json::from_slice(got[0].json())?;
            assert_eq!(v["id"], format!("gw:{}", seqs[1]));
            s.ack(Stream::Pos, &[seqs[1]])?;
            assert_eq!(s.depth(Stream::Pos).depth, 0);
            s.flush_blocking()?;
            seqs[1]
        };
        let s = Spool::open(&p, "gw", &cfg(1 << 20))?;
        assert_eq!(s.depth(Stream::Ble).depth, 1);
        let seqs = s.append(&[ev("ble.census", 1)])?;
        assert!(seqs[0] > first);
        Ok(())
    }

    #[test]
    fn sensors_drop_oldest_pos_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut c = cfg(64 * 1024);
        c.ble.max_age = Dur::secs(3600);
        let s = Spool::open(&dir.path().join("spool"), "gw", &c)?;
        let mut first_seq = None;
        for _ in 0..200 {
            let seqs = s.append(&[ev("ble.census", 1000)])?;
            first_seq.get_or_insert(seqs[0]);
        }
        assert!(s.depth(Stream::Ble).bytes <= 64 * 1024);
        let oldest = s.peek(Stream::Ble, 0, 1, 1 << 20)?;
        assert!(oldest[0].seq > first_seq.unwrap_or(0));
        assert!(s.drops()["ble"]["spool_full"] > 0);
        let mut refused = 0;
        for _ in 0..200 {
            if let Err(SpoolError::Full { .. }) = s.append(&[ev("pos.transaction", 1000)]) {
                refused += 1;
            }
        }
        assert!(refused > 100);
        assert!(s.depth(Stream::Pos).bytes <= 64 * 1024);
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
        s.append(&[ev("pos.transaction", 1)])?;
        Ok(())
    }
}
