//! The privacy boundary: every transformation of an identifier (docs/design.md, "Privacy
//! model").

pub mod ble;
pub mod card;
pub mod customer;
pub mod device;
pub mod logs;
pub mod pii;
pub mod textfold;
pub mod wifi;

pub use device::{init_local_offset, local_offset_at, random_key, DeviceKey, DevicePseudonymizer};

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

    #[test]
    fn suppression() {
        assert_eq!(suppress(2, 3), (0, true));
        assert_eq!(suppress(3, 3), (3, false));
        assert_eq!(suppress(0, 3), (0, false));
    }
}
