//! Device pseudonyms (DESIGN §3): HMAC-SHA256 under a key that exists only in RAM and is
//! replaced every rotation period, aligned to local midnight, so pseudonyms of different days
//! cannot be linked, not even by the operator.

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use std::io::Read;
use std::sync::Mutex;
use std::sync::OnceLock;

type HmacSha256 = hmac::Hmac<Sha256>;

static LOCAL_OFFSET_S: OnceLock<i64> = OnceLock::new();

/// Records the local UTC offset; call once at start-up, before threads exist (reading the
/// local offset is only sound while the process is single-threaded).
pub fn init_local_offset() {
    let off = time::UtcOffset::current_local_offset()
        .map(|o| o.whole_seconds() as i64)
        .unwrap_or(0);
    let _ = LOCAL_OFFSET_S.set(off);
}

fn local_offset_s() -> i64 {
    LOCAL_OFFSET_S.get().copied().unwrap_or(0)
}

/// Fresh key material from the kernel's CSPRNG.
pub fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .is_ok();
    if !ok {
        // No /dev/urandom (not Linux): mix time and address entropy; still never persisted.
        let mut h = <Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, crate::event::now_ms().to_le_bytes());
        sha2::Digest::update(&mut h, (&k as *const _ as usize).to_le_bytes());
        sha2::Digest::update(&mut h, std::process::id().to_le_bytes());
        k.copy_from_slice(&sha2::Digest::finalize(h)[..32]);
    }
    k
}

struct KeyState {
    epoch: i64,
    key: [u8; 32],
}

/// Turns raw device identifiers into rotating pseudonyms.
pub struct DevicePseudonymizer {
    rotation_s: i64,
    bytes: usize,
    state: Mutex<KeyState>,
}

impl DevicePseudonymizer {
    /// A pseudonymizer with a fresh key; `bytes` of the HMAC are kept (hex on the wire).
    pub fn new(rotation: std::time::Duration, bytes: usize) -> DevicePseudonymizer {
        DevicePseudonymizer {
            rotation_s: (rotation.as_secs() as i64).max(60),
            bytes: bytes.clamp(4, 32),
            state: Mutex::new(KeyState {
                epoch: i64::MIN,
                key: [0; 32],
            }),
        }
    }

    /// Key epoch of a time: periods counted from local midnight of 1970-01-01.
    pub fn epoch_of(&self, now_ms: i64) -> i64 {
        (now_ms.div_euclid(1000) + local_offset_s()).div_euclid(self.rotation_s)
    }

    /// The pseudonym of `raw` at `now_ms` (lowercase hex), and the key epoch it belongs to.
    /// Aggregators forget state of older epochs, so nothing links across a rotation.
    pub fn pseudonym(&self, raw: &[u8], now_ms: i64) -> (String, i64) {
        let epoch = self.epoch_of(now_ms);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.epoch != epoch {
            st.key = random_key();
            st.epoch = epoch;
        }
        let mut mac = match HmacSha256::new_from_slice(&st.key) {
            Ok(m) => m,
            Err(_) => return (String::new(), epoch),
        };
        drop(st);
        mac.update(raw);
        let out = mac.finalize().into_bytes();
        (hex(&out[..self.bytes.min(out.len())]), epoch)
    }
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

/// k-anonymity: a count below `min_count` is reported as 0, with the flag set.
pub fn suppress(count: u64, min_count: u32) -> (u64, bool) {
    if count > 0 && count < min_count as u64 {
        (0, true)
    } else {
        (count, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stable_within_epoch_unlinkable_across() {
        let p = DevicePseudonymizer::new(Duration::from_secs(86_400), 8);
        let mac = [0x90, 0xa4, 0xde, 0xc0, 0x46, 0x11];
        let t = 1_764_000_000_000;
        let (a, e1) = p.pseudonym(&mac, t);
        let (b, e2) = p.pseudonym(&mac, t + 1000);
        assert_eq!((a.clone(), e1), (b, e2));
        assert_eq!(a.len(), 16);
        assert!(!a.contains("90a4dec04611"));
        let (c, e3) = p.pseudonym(&mac, t + 86_400_000);
        assert_ne!(a, c);
        assert_eq!(e3, e1 + 1);
        let q = DevicePseudonymizer::new(Duration::from_secs(86_400), 8);
        assert_ne!(q.pseudonym(&mac, t).0, a, "keys are random per process");
    }

    #[test]
    fn suppression() {
        assert_eq!(suppress(2, 3), (0, true));
        assert_eq!(suppress(3, 3), (3, false));
        assert_eq!(suppress(0, 3), (0, false));
    }
}
