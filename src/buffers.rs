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

/// A buffer of raw input (a POS request body may carry e-mail addresses, phone numbers, card
/// numbers in free text). However it ends (stored, refused, cut off by a limit or a timeout),
/// it is zeroed before its memory is freed or kept, and it grows by copying into a larger
/// buffer and zeroing the old one, never by the allocator's reallocation, which would free the
/// old copy as it was: freed heap memory is reused, not cleared (docs/design.md, "Privacy").
pub struct RawInput {
    buf: Vec<u8>,
    pool: &'static Pool,
}

impl RawInput {
    /// An empty buffer with room for `capacity` bytes (a kept one when there is one).
    pub fn with_capacity(capacity: usize) -> RawInput {
        RawInput::in_pool(&POOL, capacity)
    }

    fn in_pool(pool: &'static Pool, capacity: usize) -> RawInput {
        RawInput {
            buf: pool.take(capacity),
            pool,
        }
    }

    /// Appends `bytes`, moving to a buffer twice the size (or more) when there is no room.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let needed = self.buf.len().saturating_add(bytes.len());
        if needed > self.buf.capacity() {
            let mut larger = self
                .pool
                .take(needed.max(self.buf.capacity().saturating_mul(2)));
            larger.extend_from_slice(&self.buf);
            self.pool
                .give_wiped(std::mem::replace(&mut self.buf, larger));
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The input read so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        self.pool.give_wiped(std::mem::take(&mut self.buf));
    }
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
            // Zeroed by the allocator (`calloc`: fresh pages are zero, heap memory is cleared at
            // once), not written byte by byte: in the size-optimized build that loop was 3% of
            // a bulk push's instructions.
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
    fn raw_input_grows_keeps_its_bytes_and_is_wiped_on_every_path() {
        static RAW: Pool = Pool::new();
        // Growth from nothing, past the pool's minimum, and past several doublings: every
        // buffer it leaves behind goes back through the wipe.
        let mut raw = RawInput::in_pool(&RAW, 0);
        let mut want = Vec::new();
        for i in 0..200_000u32 {
            let piece = (i | 0x8080_8080).to_be_bytes();
            raw.extend_from_slice(&piece);
            want.extend_from_slice(&piece);
        }
        assert_eq!(raw.as_slice(), &want[..]);
        assert_eq!(raw.len(), want.len());
        assert!(!raw.is_empty());
        assert!(RAW.kept().0 > 0, "the outgrown buffers were kept");
        drop(raw);
        let pool = RAW.0.lock().unwrap_or_else(|p| p.into_inner());
        assert!(!pool.is_empty());
        for v in pool.iter() {
            // A kept buffer keeps its length until it is taken again: all of it is zeros.
            assert!(!v.is_empty());
            assert!(v.iter().all(|&b| b == 0), "a kept buffer holds input");
        }
    }

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
