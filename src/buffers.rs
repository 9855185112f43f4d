//! Large byte buffers kept for reuse. A bulk POS request needs a few buffers of 0.2 to 0.7 MiB
//! (its body, its spool chunk, the LZ4 output, the chunk the uplink decodes). The allocator maps
//! those above its threshold (512 KiB, `main.rs`) afresh and unmaps them when freed, a page fault
//! per 4 KiB every time (BENCHMARKS.md, "POS push"), and takes the smaller ones from whichever
//! heap is free, where they can leave holes. The few in use at once are handed back here
//! instead and reused whole, and at most [`KEEP`] of them holding [`KEEP_BYTES`] stay, so
//! memory stays bounded.

use std::sync::Mutex;

/// Buffers kept at most.
pub const KEEP: usize = 4;
/// Bytes kept at most (a bulk push uses four buffers of 0.4 to 0.6 MiB).
pub const KEEP_BYTES: usize = 2 * 1024 * 1024 + 512 * 1024;
/// Smaller buffers come from the heap cheaply and are not kept.
const MIN: usize = 128 * 1024;
/// Larger ones are rare (a body near the limit) and would hold too much memory.
const MAX: usize = 4 * 1024 * 1024;

/// The process's pool.
static POOL: Pool = Pool::new();

/// An empty buffer with room for at least `capacity` bytes, a kept one when there is one.
pub fn take(capacity: usize) -> Vec<u8> {
    POOL.take(capacity)
}

/// A buffer of exactly `len` bytes for a function that writes into a slice (a compressor, a
/// decompressor), which reports how much it wrote: only that much may be read. The rest is
/// whatever a kept buffer held (zeros in a new one), so a kept buffer is not zeroed again on
/// every use.
pub fn take_for_writing(len: usize) -> Vec<u8> {
    POOL.take_for_writing(len)
}

/// Hands a buffer back; kept when it is large and there is room, freed otherwise.
pub fn give(v: Vec<u8>) {
    POOL.give(v);
}

/// [`give`] for a buffer that held raw input (a POS request body may carry e-mail addresses,
/// phone numbers, card numbers in free text): zeroed first, so a kept buffer holds nothing of
/// it while it waits.
pub fn give_wiped(v: Vec<u8>) {
    POOL.give_wiped(v);
}

/// Kept buffers behind a lock (taken for a moment per request, never across an await).
struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    const fn new() -> Pool {
        Pool(Mutex::new(Vec::new()))
    }

    fn take(&self, capacity: usize) -> Vec<u8> {
        let mut v = self.pop(capacity).unwrap_or_default();
        v.clear();
        v.reserve(capacity);
        v
    }

    fn take_for_writing(&self, len: usize) -> Vec<u8> {
        match self.pop(len) {
            // Only the part past the kept buffer's old length is written.
            Some(mut v) => {
                v.resize(len, 0);
                v
            }
            // Zeroed by the allocator (fresh pages are zero), not written byte by byte: in the
            // size-optimized build that loop was 3% of a bulk push's instructions.
            None => vec![0; len],
        }
    }

    /// The kept buffer that fits `capacity` best (else the largest), when `capacity` is large.
    fn pop(&self, capacity: usize) -> Option<Vec<u8>> {
        if capacity < MIN {
            return None;
        }
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let best = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= capacity)
            .min_by_key(|&i| pool[i].capacity())
            .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()))?;
        Some(pool.swap_remove(best))
    }

    fn give(&self, v: Vec<u8>) {
        if !(MIN..=MAX).contains(&v.capacity()) {
            return;
        }
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let kept: usize = pool.iter().map(Vec::capacity).sum();
        if pool.len() < KEEP && kept + v.capacity() <= KEEP_BYTES {
            pool.push(v);
        }
    }

    fn give_wiped(&self, mut v: Vec<u8>) {
        v.fill(0);
        self.give(v);
    }

    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (pool.len(), pool.iter().map(Vec::capacity).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_come_back_empty_and_the_pool_stays_bounded() {
        let pool = Pool::new();
        let a = pool.take(MIN);
        let cap = a.capacity();
        let mut b = pool.take(MIN * 2);
        b.extend_from_slice(b"left over");
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.kept().0, 2);
        let again = pool.take(MIN);
        assert!(again.is_empty() && again.capacity() >= cap);
        for _ in 0..KEEP * 3 {
            pool.give(Vec::with_capacity(MIN));
        }
        let (n, bytes) = pool.kept();
        assert!(n <= KEEP && bytes <= KEEP_BYTES);
        pool.give(Vec::with_capacity(16));
        pool.give(Vec::with_capacity(MAX + 1));
        assert!(
            pool.take(10).capacity() < MIN,
            "small requests take no kept buffer"
        );
        assert_eq!(pool.take_for_writing(MIN + 5).len(), MIN + 5);
    }

    /// Raw input handed back wiped leaves nothing in the buffer a compressor gets next.
    #[test]
    fn a_wiped_buffer_keeps_nothing_of_its_input() {
        let pool = Pool::new();
        let mut body = pool.take(MIN);
        body.extend(std::iter::repeat_n(b'4', MIN));
        pool.give_wiped(body);
        let next = pool.take_for_writing(MIN);
        assert_eq!(pool.kept().0, 0, "the wiped buffer was the one reused");
        assert!(next.iter().all(|&b| b == 0));
    }
}
