//! The durable queue between the sources and the uplink: one sled tree per stream, capped by
//! bytes and age (DESIGN §4).
//!
//! Events are stored in chunks: key = big-endian seq of the chunk's first event, value =
//! `[8 enqueue ms][1 format][4 count][body]`, body = `([8 seq][4 len][wire JSON])*`, raw or
//! LZ4-compressed. One sled write per chunk instead of per event is what lets a Raspberry Pi
//! spool 100k+ events/s, and compression keeps the SD card's daily writes and the backlog's
//! footprint small. A chunk is deleted once every event in it was acknowledged; partial
//! acknowledgements are kept in RAM (after a crash, a partly acknowledged chunk is resent whole,
//! which at-least-once delivery with id deduplication absorbs).

use crate::config::{SpoolConfig, StreamCap};
use crate::event::{Event, Stream};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SEQ_HWM_KEY: &[u8] = b"seq_hwm";
const DROPS_KEY: &[u8] = b"drops";
/// Sequence numbers reserved per durable high-water-mark write.
const SEQ_RESERVE: u64 = 1 << 20;
/// Most events in one chunk; the spool writer cuts its buffer at this size.
pub const CHUNK_EVENTS: usize = 1024;
const HEADER: usize = 13;
const FORMAT_RAW: u8 = 0;
const FORMAT_LZ4: u8 = 1;
/// Bodies smaller than this are stored raw: compressing them saves nothing worth the CPU.
const COMPRESS_MIN: usize = 512;

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
    pub chunk: u64,
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
    /// The last write error while writes keep failing (disk full, I/O error); cleared by the
    /// next successful flush.
    storage_failure: Mutex<Option<String>>,
    appended: tokio::sync::Notify,
    path: PathBuf,
    /// The chunk each stream's uplink read last, decoded: a 1,024-event chunk feeds several
    /// batches, and decompressing it once per batch cost more than the publish. Chunk values
    /// never change and their keys (seqs) are never reused, so the cache cannot go stale.
    last_decoded: Mutex<[Option<DecodedChunk>; 3]>,
    /// A flush that outlived [`FLUSH_TIMEOUT`] and may still be running.
    stuck_flush: Mutex<Option<tokio::task::JoinHandle<sled::Result<usize>>>>,
}

/// A decoded chunk: key, body and the span of every event.
#[derive(Clone)]
struct DecodedChunk {
    key: u64,
    body: Arc<Vec<u8>>,
    items: Arc<Vec<EventSpan>>,
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

/// The longest a flush may take before it counts as a storage failure.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A chunk being assembled: its key (first seq), event count and body (`[seq][len][json]`...).
struct ChunkBuf {
    key: u64,
    count: u32,
    body: Vec<u8>,
}

impl ChunkBuf {
    fn push(&mut self, gateway: &str, seq: u64, e: &Event) {
        self.body.extend_from_slice(&seq.to_be_bytes());
        let at = self.body.len();
        self.body.extend_from_slice(&[0; 4]);
        e.write_wire(gateway, seq, &mut self.body);
        let len = (self.body.len() - at - 4) as u32;
        self.body[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self.count += 1;
    }
}

/// Encodes a chunk value: header, then the body, LZ4-compressed when that saves bytes.
fn encode_chunk(enqueued_ms: i64, count: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&enqueued_ms.to_be_bytes());
    if body.len() >= COMPRESS_MIN {
        let packed = lz4_flex::block::compress_prepend_size(body);
        if packed.len() < body.len() {
            out.push(FORMAT_LZ4);
            out.extend_from_slice(&count.to_be_bytes());
            out.extend_from_slice(&packed);
            return out;
        }
    }
    out.push(FORMAT_RAW);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Event count of a chunk value (header only; no decompression).
fn chunk_count(v: &[u8]) -> u64 {
    v.get(9..13)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64)
        .unwrap_or(0)
}

/// Where one event lies in a decoded chunk body: (seq, start, end).
type EventSpan = (u64, usize, usize);

/// Decodes a chunk into its body and the span of every event; None if damaged.
fn decode_chunk(v: &[u8]) -> Option<(Arc<Vec<u8>>, Vec<EventSpan>)> {
    let format = *v.get(8)?;
    let count = chunk_count(v) as usize;
    let raw = v.get(HEADER..)?;
    let body = match format {
        FORMAT_RAW => raw.to_vec(),
        FORMAT_LZ4 => lz4_flex::block::decompress_size_prepended(raw).ok()?,
        _ => return None,
    };
    let mut items = Vec::with_capacity(count);
    let mut at = 0usize;
    while at < body.len() {
        let seq = be_u64(body.get(at..at + 8)?);
        let len = u32::from_be_bytes(body.get(at + 8..at + 12)?.try_into().ok()?) as usize;
        let start = at + 12;
        let end = start.checked_add(len)?;
        body.get(start..end)?;
        items.push((seq, start, end));
        at = end;
    }
    (items.len() == count).then_some((Arc::new(body), items))
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
                n += chunk_count(&v);
                b += (k.len() + v.len()) as u64;
            }
            st.count.store(n, Ordering::Relaxed);
            st.bytes.store(b, Ordering::Relaxed);
            if let Some((k, v)) = t.last()? {
                let after = be_u64(&k).saturating_add(chunk_count(&v).max(1));
                last = last.max(after);
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
            storage_failure: Mutex::new(None),
            appended: tokio::sync::Notify::new(),
            last_decoded: Mutex::new(Default::default()),
            stuck_flush: Mutex::new(None),
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

    /// Appends events atomically per stream and assigns their ids; each stream's events become
    /// one chunk per [`CHUNK_EVENTS`]. Sensor streams evict their oldest chunks to stay under the
    /// cap; POS refuses with [`SpoolError::Full`] instead, and then nothing of the call is stored.
    pub fn append(&self, events: &[Event]) -> Result<Vec<u64>, SpoolError> {
        let r = self.append_inner(events, None);
        if matches!(r, Err(SpoolError::Storage(_))) {
            self.note_write(&r);
        }
        r
    }

    /// Appends events of one stream and applies `entries` to `index` (a tree of this spool,
    /// see [`Spool::aux_tree`]) in the same sled transaction: after a crash either both are on
    /// disk or neither, so an idempotency index can never disagree with the events.
    pub fn append_indexed(
        &self,
        events: &[Event],
        index: &sled::Tree,
        entries: &sled::Batch,
    ) -> Result<Vec<u64>, SpoolError> {
        if events.windows(2).any(|w| w[0].stream() != w[1].stream()) {
            return Err(SpoolError::Storage(
                "an indexed append must hold events of one stream".into(),
            ));
        }
        let r = self.append_inner(events, Some((index, entries)));
        if matches!(r, Err(SpoolError::Storage(_))) {
            self.note_write(&r);
        }
        r
    }

    fn append_inner(
        &self,
        events: &[Event],
        index: Option<(&sled::Tree, &sled::Batch)>,
    ) -> Result<Vec<u64>, SpoolError> {
        // While the disk refuses writes, appends would only pile up in sled's memory and vanish
        // with the process: refuse them, so every loss is counted where it happens.
        if let Some(f) = self.storage_failure() {
            return Err(SpoolError::Storage(f));
        }
        let now = crate::event::now_ms();
        let mut guard = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        let first = guard.next;
        let mut building: [Vec<ChunkBuf>; 3] = Default::default();
        let mut seqs = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let seq = first + i as u64;
            let list = &mut building[idx(e.stream())];
            match list.last_mut() {
                Some(c) if (c.count as usize) < CHUNK_EVENTS => c.push(&self.gateway, seq, e),
                _ => {
                    let mut c = ChunkBuf {
                        key: seq,
                        count: 0,
                        body: Vec::with_capacity(events.len().min(CHUNK_EVENTS) * 400),
                    };
                    c.push(&self.gateway, seq, e);
                    list.push(c);
                }
            }
            seqs.push(seq);
        }
        let mut chunks: [Vec<(u64, Vec<u8>, u64)>; 3] = Default::default();
        for s in Stream::ALL {
            for c in &building[idx(s)] {
                chunks[idx(s)].push((c.key, encode_chunk(now, c.count, &c.body), c.count as u64));
            }
        }
        let pos_add: u64 = chunks[idx(Stream::Pos)]
            .iter()
            .map(|(_, v, _)| 8 + v.len() as u64)
            .sum();
        if pos_add > 0 {
            let cur = self.state[idx(Stream::Pos)].bytes.load(Ordering::Relaxed);
            let cap = self.caps[idx(Stream::Pos)].max_bytes.0;
            if cur + pos_add > cap {
                let n = chunks[idx(Stream::Pos)].iter().map(|c| c.2).sum();
                self.count_drop(Stream::Pos, "refused_full", n);
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
            let list = std::mem::take(&mut chunks[idx(s)]);
            if list.is_empty() {
                continue;
            }
            let mut batch = sled::Batch::default();
            let mut plain = Vec::new();
            let (mut add, mut n) = (0u64, 0u64);
            for (key, value, count) in list {
                add += 8 + value.len() as u64;
                n += count;
                if index.is_some() {
                    batch.insert(&key.to_be_bytes(), value);
                } else {
                    plain.push((key, value));
                }
            }
            match index {
                Some((tree, entries)) => {
                    use sled::Transactional;
                    (&self.trees[idx(s)], tree)
                        .transaction(|(t, x)| {
                            t.apply_batch(&batch)?;
                            x.apply_batch(entries)?;
                            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                        })
                        .map_err(|e| SpoolError::Storage(format!("{e:?}")))?;
                }
                // Plain inserts, not a batch: sled seals and syncs its log buffer for every
                // batch, which at store load tripled the SD-card writes. Chunks are independent,
                // so a crash between two inserts only loses the newer one, like any crash
                // inside a flush interval.
                None => {
                    for (key, value) in plain {
                        self.trees[idx(s)].insert(key.to_be_bytes(), value)?;
                    }
                }
            }
            let st = &self.state[idx(s)];
            st.bytes.fetch_add(add, Ordering::Relaxed);
            st.count.fetch_add(n, Ordering::Relaxed);
            st.appended.fetch_add(n, Ordering::Relaxed);
            st.unflushed.fetch_add(n, Ordering::Relaxed);
            if s.is_sensor() {
                self.evict_over_cap(s)?;
            }
        }
        guard.next = end;
        drop(guard);
        self.dirty.store(true, Ordering::Release);
        self.appended.notify_one();
        Ok(seqs)
    }

    /// Removes a stream's oldest chunk; returns how many unacknowledged events it held.
    fn pop_oldest(
        &self,
        s: Stream,
        partial: &mut HashMap<u64, HashSet<u64>>,
    ) -> Result<Option<u64>, SpoolError> {
        let st = &self.state[idx(s)];
        match self.trees[idx(s)].pop_min()? {
            Some((k, v)) => {
                let acked = partial
                    .remove(&be_u64(&k))
                    .map(|a| a.len() as u64)
                    .unwrap_or(0);
                let lost = chunk_count(&v).saturating_sub(acked);
                st.bytes
                    .fetch_sub((k.len() + v.len()) as u64, Ordering::Relaxed);
                st.count.fetch_sub(lost, Ordering::Relaxed);
                Ok(Some(lost))
            }
            None => Ok(None),
        }
    }

    fn evict_over_cap(&self, s: Stream) -> Result<(), SpoolError> {
        let cap = self.caps[idx(s)].max_bytes.0;
        let st = &self.state[idx(s)];
        let mut partial = st.partial.lock().unwrap_or_else(|p| p.into_inner());
        let mut dropped = 0;
        while st.bytes.load(Ordering::Relaxed) > cap {
            match self.pop_oldest(s, &mut partial)? {
                Some(n) => dropped += n,
                None => break,
            }
        }
        drop(partial);
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
            let st = &self.state[idx(s)];
            let mut partial = st.partial.lock().unwrap_or_else(|p| p.into_inner());
            let mut n = 0;
            while let Some((_, v)) = self.trees[idx(s)].first()? {
                if now - enqueued(&v) <= max_age {
                    break;
                }
                n += self.pop_oldest(s, &mut partial)?.unwrap_or(0);
            }
            drop(partial);
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

    /// Up to `max_events` / `max_bytes` unacknowledged events of a stream with seq >= `from`,
    /// oldest first. A chunk that cannot be decoded is removed and counted as dropped
    /// (`corrupt`), so one bad sector never stalls the uplink.
    pub fn peek(
        &self,
        s: Stream,
        from: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Spooled>, SpoolError> {
        let tree = &self.trees[idx(s)];
        let start = match tree.range(..=from.to_be_bytes()).next_back() {
            Some(kv) => be_u64(&kv?.0),
            None => from,
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut corrupt = Vec::new();
        {
            let partial = self.state[idx(s)]
                .partial
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            'chunks: for kv in tree.range(start.to_be_bytes()..) {
                let (k, v) = kv?;
                let chunk = be_u64(&k);
                let Some(DecodedChunk { body, items, .. }) = self.decoded(s, chunk, &v) else {
                    corrupt.push(chunk);
                    continue;
                };
                let acked = partial.get(&chunk);
                for &(seq, a, b) in items.iter() {
                    if seq < from || acked.is_some_and(|x| x.contains(&seq)) {
                        continue;
                    }
                    let len = b - a;
                    if !out.is_empty() && bytes + len > max_bytes {
                        break 'chunks;
                    }
                    bytes += len + 1;
                    out.push(Spooled {
                        seq,
                        enqueued_ms: enqueued(&v),
                        chunk,
                        body: body.clone(),
                        start: a,
                        end: b,
                    });
                    if out.len() >= max_events {
                        break 'chunks;
                    }
                }
            }
        }
        for chunk in corrupt {
            self.drop_corrupt(s, chunk)?;
        }
        Ok(out)
    }

    /// The decoded form of chunk `key` (value `v`), from the one-chunk cache when it is there.
    fn decoded(&self, s: Stream, key: u64, v: &[u8]) -> Option<DecodedChunk> {
        let mut cache = self.last_decoded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache[idx(s)].as_ref().filter(|c| c.key == key) {
            return Some(c.clone());
        }
        let (body, items) = decode_chunk(v)?;
        let d = DecodedChunk {
            key,
            body,
            items: Arc::new(items),
        };
        cache[idx(s)] = Some(d.clone());
        Some(d)
    }

    fn drop_corrupt(&self, s: Stream, chunk: u64) -> Result<(), SpoolError> {
        let st = &self.state[idx(s)];
        let mut partial = st.partial.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = self.trees[idx(s)].remove(chunk.to_be_bytes())? {
            let acked = partial.remove(&chunk).map(|a| a.len() as u64).unwrap_or(0);
            let lost = chunk_count(&v).saturating_sub(acked);
            st.bytes.fetch_sub(8 + v.len() as u64, Ordering::Relaxed);
            st.count.fetch_sub(lost, Ordering::Relaxed);
            drop(partial);
            tracing::error!(stream = %s, events = lost, "damaged spool chunk removed");
            self.count_drop(s, "corrupt", lost);
        }
        Ok(())
    }

    /// Records events the broker acknowledged; a chunk is deleted once all of it is.
    pub fn ack(&self, s: Stream, refs: &[AckRef]) -> Result<(), SpoolError> {
        let t = &self.trees[idx(s)];
        let st = &self.state[idx(s)];
        let mut by_chunk: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for r in refs {
            by_chunk.entry(r.chunk).or_default().push(r.seq);
        }
        let mut partial = st.partial.lock().unwrap_or_else(|p| p.into_inner());
        for (chunk, seqs) in by_chunk {
            let Some(v) = t.get(chunk.to_be_bytes())? else {
                continue; // evicted or already deleted
            };
            let total = chunk_count(&v);
            let set = partial.entry(chunk).or_default();
            let before = set.len() as u64;
            set.extend(seqs);
            let newly = (set.len() as u64).saturating_sub(before);
            st.count.fetch_sub(
                newly.min(st.count.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            if set.len() as u64 >= total {
                partial.remove(&chunk);
                if t.remove(chunk.to_be_bytes())?.is_some() {
                    st.bytes.fetch_sub(8 + v.len() as u64, Ordering::Relaxed);
                }
            }
        }
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// True when something changed since the last flush (tests of the writers).
    #[cfg(test)]
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Events appended to a stream since the spool was opened (grows only).
    pub fn appended(&self, s: Stream) -> u64 {
        self.state[idx(s)].appended.load(Ordering::Relaxed)
    }

    /// Depth, stored bytes and oldest age of a stream.
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
        self.dirty.store(false, Ordering::Release);
        let pending = self.take_unflushed();
        let r = match self.persist_drops() {
            Ok(()) => self.bounded_flush().await,
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.dirty.store(true, Ordering::Release);
            self.count_unflushed_lost(pending);
        }
        self.note_write(&r);
        r
    }

    /// After a write error (disk full) a sled flush can wait forever. A flush that does not
    /// finish within [`FLUSH_TIMEOUT`] is a storage failure like any other, and until it
    /// finishes every later flush fails at once: the writer, the shutdown and the health check
    /// never queue up behind it.
    async fn bounded_flush(&self) -> Result<(), SpoolError> {
        let mut handle = {
            let mut pending = self.stuck_flush.lock().unwrap_or_else(|p| p.into_inner());
            if pending.as_ref().is_some_and(|h| !h.is_finished()) {
                return Err(SpoolError::Storage(
                    "an earlier flush has not completed".into(),
                ));
            }
            *pending = None;
            let db = self.db.clone();
            tokio::spawn(async move { db.flush_async().await })
        };
        match tokio::time::timeout(FLUSH_TIMEOUT, &mut handle).await {
            Ok(Ok(r)) => r.map(|_| ()).map_err(SpoolError::from),
            Ok(Err(e)) => Err(SpoolError::Storage(format!("flush task: {e}"))),
            Err(_) => {
                *self.stuck_flush.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
                Err(SpoolError::Storage(format!(
                    "flush did not complete within {} s",
                    FLUSH_TIMEOUT.as_secs()
                )))
            }
        }
    }

    fn take_unflushed(&self) -> [u64; 3] {
        Stream::ALL.map(|s| self.state[idx(s)].unflushed.swap(0, Ordering::Relaxed))
    }

    /// A failed flush leaves the sensor events appended since the previous one in memory only:
    /// they are counted as lost (`spool_error`). POS callers get the error and retry.
    fn count_unflushed_lost(&self, pending: [u64; 3]) {
        for (s, n) in Stream::ALL.into_iter().zip(pending) {
            if s.is_sensor() && n > 0 {
                self.count_drop(s, "spool_error", n);
            }
        }
    }

    /// Records whether writes work. sled 0.34 stays failed after an I/O error such as a full
    /// disk, even once space returns; health reports it so the watchdog restarts the service,
    /// which reopens the spool.
    fn note_write<T>(&self, r: &Result<T, SpoolError>) {
        if let Ok(mut f) = self.storage_failure.lock() {
            match r {
                Ok(_) => *f = None,
                // The first error is the cause (a full disk); later ones are its echoes.
                Err(SpoolError::Storage(e)) if f.is_none() => *f = Some(e.clone()),
                Err(_) => {}
            }
        }
    }

    /// The write error the spool is stuck on, if any.
    pub fn storage_failure(&self) -> Option<String> {
        self.storage_failure.lock().ok().and_then(|f| f.clone())
    }

    /// Flushes only when something changed since the last flush.
    pub async fn flush_if_dirty(&self) -> Result<(), SpoolError> {
        // A failed spool is retried every interval, so a passing I/O error clears by itself.
        if self.dirty.load(Ordering::Acquire) || self.storage_failure().is_some() {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Blocking variant of [`Spool::flush`] for non-async callers.
    pub fn flush_blocking(&self) -> Result<(), SpoolError> {
        self.dirty.store(false, Ordering::Release);
        let pending = self.take_unflushed();
        let r = self
            .persist_drops()
            .and_then(|()| self.db.flush().map(|_| ()).map_err(SpoolError::from));
        if r.is_err() {
            self.dirty.store(true, Ordering::Release);
            self.count_unflushed_lost(pending);
        }
        self.note_write(&r);
        r
    }

    fn persist_drops(&self) -> Result<(), SpoolError> {
        let d = self.drops();
        if d.is_empty() {
            return Ok(());
        }
        if let Ok(json) = serde_json::to_vec(&d) {
            if self.meta.get(DROPS_KEY)?.as_deref() != Some(json.as_slice()) {
                self.meta.insert(DROPS_KEY, json)?;
            }
        }
        Ok(())
    }

    /// Purges expired sensor events every `interval`; runs until the process ends. (Flushing is
    /// the spool writer's job: one fsync per flush interval is what an SD card can afford.)
    pub async fn run_purger(self: std::sync::Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.purge_expired() {
                tracing::error!(error = %e, "spool purge failed");
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

    /// An event padded with `n` pseudo-random (incompressible) characters.
    fn ev(kind: &'static str, n: usize) -> Event {
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
            let seqs = s.append(&[ev("ble.census", 10), ev("pos.transaction", 10)])?;
            assert_eq!(s.depth(Stream::Ble).depth, 1);
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

#[cfg(test)]
mod chunk_tests {
    use super::*;

    fn census(i: usize) -> Event {
        Event::from_value(
            "ble.census",
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
            assert_eq!(s.trees[0].len(), 3, "2500 events make 3 chunks");
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
        assert_eq!(s.trees[0].len(), 0);
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
        let mut v = s.trees[0].get(key)?.ok_or("chunk missing")?.to_vec();
        v.truncate(HEADER + 7);
        s.trees[0].insert(key, v)?;
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

    fn tx(i: u64) -> Event {
        Event::from_value(
            "pos.transaction",
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
            Event::from_value("ble.census", 0, serde_json::json!({})),
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
