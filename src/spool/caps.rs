//! Caps and eviction: sensor streams lose their oldest chunks to stay under their byte cap and
//! `max_age`; POS is never evicted (it is refused at the cap, and an old POS backlog is an
//! alarm). Drops are counted by stream and reason and persisted.

use super::*;

impl Spool {
    /// Removes a stream's oldest chunk; returns how many unacknowledged events it held.
    pub(super) fn pop_oldest(
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

    pub(super) fn evict_over_cap(&self, s: Stream) -> Result<(), SpoolError> {
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
            let max_age =
                i64::try_from(self.caps[idx(s)].max_age.0.as_millis()).unwrap_or(i64::MAX);
            let st = &self.state[idx(s)];
            let mut partial = st.partial.lock().unwrap_or_else(|p| p.into_inner());
            let mut n = 0;
            while let Some((_, v)) = self.trees[idx(s)].first()? {
                // A stamp read back from disk is outside input: a damaged one never overflows.
                if now.saturating_sub(enqueued(&v)) <= max_age {
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

    pub(super) fn drop_corrupt(&self, s: Stream, chunk: u64) -> Result<(), SpoolError> {
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
        self.telemetry.metrics().drops(s, reason, n);
        tracing::warn!(stream = %s, reason, count = n, "events dropped");
        self.dirty.store(true, Ordering::Release);
    }
}
