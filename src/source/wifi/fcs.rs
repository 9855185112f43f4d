//! The 802.11 frame check sequence (CRC-32, IEEE 802.3 polynomial), hardware-accelerated where
//! the CPU has it so verifying a probe request stays cheap on a Pi.

/// CRC-32 of `data` (the value an 802.11 FCS carries, little-endian on the air). crc32fast
/// uses the carry-less multiply of x86-64 and the CRC instructions of ARMv8 (Raspberry Pi 4/5),
/// with a table fallback: the FCS check was the largest cost of a probe request.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// True when the last four bytes of `frame` are the FCS of the rest.
pub fn fcs_ok(frame: &[u8]) -> bool {
    let Some(split) = frame.len().checked_sub(4) else {
        return false;
    };
    let (body, fcs) = frame.split_at(split);
    let want = u32::from_le_bytes([fcs[0], fcs[1], fcs[2], fcs[3]]);
    crc32(body) == want
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLY: u32 = 0xedb8_8320;

    #[test]
    fn known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        // Bytewise reference.
        let mut c = !0u32;
        for &b in &long {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            }
        }
        assert_eq!(crc32(&long), !c);
        let mut f = b"probe".to_vec();
        f.extend(crc32(b"probe").to_le_bytes());
        assert!(fcs_ok(&f));
        f[0] ^= 1;
        assert!(!fcs_ok(&f));
        assert!(!fcs_ok(b"abc"));
    }
}
