//! Large byte buffers kept for reuse. The allocator maps every buffer above 128 KiB afresh
//! and unmaps it when freed (`main.rs` fixes that threshold so the heap does not keep them),
//! so a bulk POS request paid for its body, its spool chunk and the chunk the uplink decodes
//! with a page fault per 4 KiB, every time: a tenth of the push path's CPU
//! (BENCHMARKS.md, "POS push"). The few buffers of that size in use at once are handed back
//! here instead, and at most [`KEEP`] of them holding [`KEEP_BYTES`] stay, so memory stays
//! bounded.

use std::sync::Mutex;

/// Buffers kept at most.
pub const KEEP: usize = 4;
/// Bytes kept at most (a bulk push uses four buffers of 0.4 to 0.6 MiB).
pub const KEEP_BYTES: usize = 2 * 1024 * 1024 + 512 * 1024;
/// Smaller buffers come from the heap cheaply and are not kept.
const MIN: usize = 128 * 1024;
/// Larger ones are rare (a body near the limit) and would hold too much memory.
const MAX: usize = 4 * 1024 * 1024;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with room for at least `capacity` bytes, a kept one when there is one.
pub fn take(capacity: usize) -> Vec<u8> {
    let mut v = pop(capacity).unwrap_or_default();
    v.clear();
    v.reserve(capacity);
    v
}

/// A buffer of exactly `len` bytes for a function that writes into a slice (a compressor, a
/// decompressor), which reports how much it wrote: only that much may be read. The rest is
/// whatever a kept buffer held (zeros in a new one), so a kept buffer is not zeroed again on
/// every use.
pub fn take_for_writing(len: usize) -> Vec<u8> {
    let mut v = pop(len).unwrap_or_default();
    v.resize(len, 0);
    v
}

/// The kept buffer that fits `capacity` best (else the largest), when `capacity` is large.
fn pop(capacity: usize) -> Option<Vec<u8>> {
    if capacity < MIN {
        return None;
    }
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let best = (0..pool.len())
        .filter(|&i| pool[i].capacity() >= capacity)
        .min_by_key(|&i| pool[i].capacity())
        .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()))?;
    Some(pool.swap_remove(best))
}

/// Hands a buffer back; kept when it is large and there is room, freed otherwise.
pub fn give(v: Vec<u8>) {
    if !(MIN..=MAX).contains(&v.capacity()) {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let kept: usize = pool.iter().map(Vec::capacity).sum();
    if pool.len() < KEEP && kept + v.capacity() <= KEEP_BYTES {
        pool.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_come_back_empty_and_the_pool_stays_bounded() {
        let a = take(MIN);
        let cap = a.capacity();
        let mut b = take(MIN * 2);
        b.extend_from_slice(b"left over");
        give(a);
        give(b);
        // Another test may share the pool: only what this one can rely on is checked.
        let again = take(MIN);
        assert!(again.is_empty() && again.capacity() >= cap);
        for _ in 0..KEEP * 3 {
            give(Vec::with_capacity(MIN));
        }
        let (n, bytes) = POOL
            .lock()
            .map(|p| (p.len(), p.iter().map(Vec::capacity).sum::<usize>()))
            .unwrap_or_default();
        assert!(n <= KEEP && bytes <= KEEP_BYTES);
        give(Vec::with_capacity(16));
        give(Vec::with_capacity(MAX + 1));
        assert!(
            take(10).capacity() < MIN,
            "small requests do not take a kept buffer"
        );
    }
}
