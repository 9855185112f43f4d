//! The queue API the sources and the uplink use: append (optionally with an index in the same
//! transaction), peek from a cursor, acknowledge, and depth.

use super::*;

impl Spool {
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

    pub(super) fn append_inner(
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
        // Ids are never reused: at the end of the range (only a damaged mark gets there)
        // appends are refused, not wrapped around.
        let Some(end) = first
            .checked_add(events.len() as u64)
            .filter(|end| end.checked_add(SEQ_RESERVE).is_some())
        else {
            return Err(SpoolError::Storage(
                "event ids exhausted (damaged id mark)".into(),
            ));
        };
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
                        body: crate::buffers::take(events.len().min(CHUNK_EVENTS) * 512),
                    };
                    c.push(&self.gateway, seq, e);
                    list.push(c);
                }
            }
            seqs.push(seq);
        }
        let mut chunks: [Vec<(u64, Vec<u8>, u64)>; 3] = Default::default();
        for s in Stream::ALL {
            for c in std::mem::take(&mut building[idx(s)]) {
                chunks[idx(s)].push((c.key, encode_chunk(now, c.count, &c.body), c.count as u64));
                crate::buffers::give(c.body);
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
        // POS events are handed out only once fsynced (see `pos_durable_below`).
        let below = match s {
            Stream::Pos => self.pos_durable_below.load(Ordering::Acquire),
            _ => u64::MAX,
        };
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
                    if seq >= below {
                        break 'chunks;
                    }
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
        let oldest = self.trees[idx(s)].first().ok().flatten().map(|(_, v)| {
            (crate::event::now_ms().saturating_sub(enqueued(&v)).max(0) as f64) / 1000.0
        });
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

    /// Resolves when something is appended after this call.
    pub async fn wait_appended(&self) {
        self.appended.notified().await
    }
}
