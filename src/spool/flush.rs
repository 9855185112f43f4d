//! Flush and health: durable flushes bounded in time, and the storage failure a health check
//! reports when writes keep failing.

use super::*;

/// The longest a flush may take before it counts as a storage failure.
pub(super) const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl Spool {
    /// Durable flush: returns once everything appended so far is on disk.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        let _one = self.flush_gate.lock().await;
        self.flush_now().await
    }

    /// Returns once every seq below `end` is on disk: at once if an earlier flush covered
    /// them, else after a flush of everything appended so far. Inputs that append while a
    /// flush runs are all covered by the next one.
    pub async fn flush_covering(&self, end: u64) -> Result<(), SpoolError> {
        let _one = self.flush_gate.lock().await;
        if self.durable_below() >= end {
            return Ok(());
        }
        self.flush_now().await
    }

    async fn flush_now(&self) -> Result<(), SpoolError> {
        self.dirty.store(false, Ordering::Release);
        let pending = self.take_unflushed();
        let covered = self.next_seq();
        let r = match self.persist_drops() {
            Ok(()) => self.bounded_flush().await,
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.dirty.store(true, Ordering::Release);
            self.count_unflushed_lost(pending);
        } else {
            self.mark_durable(covered);
        }
        self.note_write(&r);
        r
    }

    /// The next seq to be handed out: every seq below it was written to sled before.
    fn next_seq(&self) -> u64 {
        self.append_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next
    }

    /// A flush that started when `covered` was the next seq succeeded: POS events below it may
    /// be published now.
    fn mark_durable(&self, covered: u64) {
        self.pos_durable_below.fetch_max(covered, Ordering::AcqRel);
        self.appended.notify_one();
    }

    /// After a write error (disk full) a sled flush can wait forever. A flush that does not
    /// finish within [`FLUSH_TIMEOUT`] is a storage failure like any other, and until it
    /// finishes every later flush fails at once: the writer, the shutdown and the health check
    /// never queue up behind it.
    pub(super) async fn bounded_flush(&self) -> Result<(), SpoolError> {
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

    pub(super) fn take_unflushed(&self) -> [u64; 3] {
        Stream::ALL.map(|s| self.state[idx(s)].unflushed.swap(0, Ordering::Relaxed))
    }

    /// A failed flush leaves the sensor events appended since the previous one in memory only:
    /// they are counted as lost (`spool_error`). POS callers get the error and retry.
    pub(super) fn count_unflushed_lost(&self, pending: [u64; 3]) {
        for (s, n) in Stream::ALL.into_iter().zip(pending) {
            if s.is_sensor() && n > 0 {
                self.count_drop(s, "spool_error", n);
            }
        }
    }

    /// Records whether writes work. sled 0.34 stays failed after an I/O error such as a full
    /// disk, even once space returns; health reports it so the watchdog restarts the service,
    /// which reopens the spool.
    pub(super) fn note_write<T>(&self, r: &Result<T, SpoolError>) {
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
        let covered = self.next_seq();
        let r = self
            .persist_drops()
            .and_then(|()| self.db.flush().map(|_| ()).map_err(SpoolError::from));
        if r.is_err() {
            self.dirty.store(true, Ordering::Release);
            self.count_unflushed_lost(pending);
        } else {
            self.mark_durable(covered);
        }
        self.note_write(&r);
        r
    }

    pub(super) fn persist_drops(&self) -> Result<(), SpoolError> {
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
}
