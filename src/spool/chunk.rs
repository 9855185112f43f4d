//! The chunk format: how events are laid out in one sled value (see the module doc of
//! [`super`] for the layout), encoded, decoded and cached.

use super::*;

/// Most events in one chunk; the spool writer cuts its buffer at this size.
pub const CHUNK_EVENTS: usize = 1024;
pub(super) const HEADER: usize = 13;
pub(super) const FORMAT_RAW: u8 = 0;
pub(super) const FORMAT_LZ4: u8 = 1;
/// Bodies smaller than this are stored raw: compressing them saves nothing worth the CPU.
pub(super) const COMPRESS_MIN: usize = 512;

/// A decoded chunk: key, body and the span of every event.
#[derive(Clone)]
pub(super) struct DecodedChunk {
    pub(super) key: u64,
    pub(super) body: Arc<Vec<u8>>,
    pub(super) items: Arc<Vec<EventSpan>>,
}

/// A chunk being assembled: its key (first seq), event count and body (`[seq][len][json]`...).
pub(super) struct ChunkBuf {
    pub(super) key: u64,
    pub(super) count: u32,
    pub(super) body: Vec<u8>,
}

impl ChunkBuf {
    pub(super) fn push(&mut self, gateway: &str, seq: u64, e: &Event) {
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
pub(super) fn encode_chunk(enqueued_ms: i64, count: u32, body: &[u8]) -> Vec<u8> {
    if body.len() >= COMPRESS_MIN {
        // The block as `lz4_flex::block::compress_prepend_size` lays it out (the size as a
        // little-endian u32, then the compressed bytes), compressed into a kept buffer: a
        // full chunk's worst-case output is several hundred KiB, mapped afresh otherwise.
        let mut packed =
            crate::buffers::take_for_writing(lz4_flex::block::get_maximum_output_size(body.len()));
        let n = lz4_flex::block::compress_into(body, &mut packed).ok();
        let out = n.filter(|n| n + 4 < body.len()).map(|n| {
            let mut out = Vec::with_capacity(HEADER + 4 + n);
            out.extend_from_slice(&enqueued_ms.to_be_bytes());
            out.push(FORMAT_LZ4);
            out.extend_from_slice(&count.to_be_bytes());
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&packed[..n]);
            out
        });
        crate::buffers::give(packed);
        if let Some(out) = out {
            return out;
        }
    }
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&enqueued_ms.to_be_bytes());
    out.push(FORMAT_RAW);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Event count of a chunk value (header only; no decompression).
pub(super) fn chunk_count(v: &[u8]) -> u64 {
    v.get(9..13)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64)
        .unwrap_or(0)
}

/// Where one event lies in a decoded chunk body: (seq, start, end).
pub(super) type EventSpan = (u64, usize, usize);

/// Decodes a chunk into its body and the span of every event; None if damaged.
pub(super) fn decode_chunk(v: &[u8]) -> Option<(Arc<Vec<u8>>, Vec<EventSpan>)> {
    let format = *v.get(8)?;
    let count = chunk_count(v) as usize;
    let raw = v.get(HEADER..)?;
    let body = match format {
        FORMAT_RAW => raw.to_vec(),
        FORMAT_LZ4 => {
            let (size, packed) = lz4_flex::block::uncompressed_size(raw).ok()?;
            // A damaged size field must not claim memory: LZ4 expands at most 255 to 1.
            if size > packed.len().saturating_mul(255).saturating_add(16) {
                return None;
            }
            let mut body = crate::buffers::take_for_writing(size);
            let n = lz4_flex::block::decompress_into(packed, &mut body).ok()?;
            body.truncate(n);
            body
        }
        _ => return None,
    };
    // Every event takes at least its 12-byte frame: a damaged count reserves no more.
    let mut items = Vec::with_capacity(count.min(body.len() / 12));
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
    /// The decoded form of chunk `key` (value `v`), from the one-chunk cache when it is there.
    pub(super) fn decoded(&self, s: Stream, key: u64, v: &[u8]) -> Option<DecodedChunk> {
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
        // The chunk it replaces goes back to the buffer pool unless a batch still reads it.
        if let Some(old) = cache[idx(s)].replace(d.clone()) {
            if let Ok(body) = Arc::try_unwrap(old.body) {
                crate::buffers::give(body);
            }
        }
        Some(d)
    }
}

pub(super) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

pub(super) fn enqueued(v: &[u8]) -> i64 {
    be_u64(v.get(..8).unwrap_or(&[])) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks written by earlier releases and by this one are the same bytes, and decode back.
    #[test]
    fn chunks_keep_their_layout_and_decode_back() {
        let mut body = Vec::new();
        for seq in 0..700u64 {
            let json = format!("{{\"id\":\"gw1:{seq}\",\"kind\":\"pos.transaction\",\"n\":{seq}}}");
            body.extend_from_slice(&seq.to_be_bytes());
            body.extend_from_slice(&(json.len() as u32).to_be_bytes());
            body.extend_from_slice(json.as_bytes());
        }
        let v = encode_chunk(7, 700, &body);
        let mut before = 7i64.to_be_bytes().to_vec();
        before.push(FORMAT_LZ4);
        before.extend_from_slice(&700u32.to_be_bytes());
        before.extend_from_slice(&lz4_flex::block::compress_prepend_size(&body));
        assert_eq!(v, before);
        let (decoded, items) = decode_chunk(&v).unwrap_or_else(|| panic!("chunk did not decode"));
        assert_eq!(*decoded, body);
        assert_eq!(items.len(), 700);
        // Too small to compress, or not worth it: stored raw.
        let small = encode_chunk(7, 1, &body[..100]);
        assert_eq!(small.get(8), Some(&FORMAT_RAW));
        assert_eq!(small.get(HEADER..), Some(&body[..100]));
        // Damaged headers: a size or a count far beyond the data is refused or bounded.
        let mut huge = v.clone();
        huge[HEADER..HEADER + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_chunk(&huge).is_none());
        let mut many = v.clone();
        many[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            decode_chunk(&many).is_none(),
            "a count that disagrees is damage"
        );
    }
}
