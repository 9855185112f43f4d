//! The 802.11 frame check sequence (CRC-32, IEEE 802.3 polynomial), table-driven (slicing by
//! eight) so verifying a probe request stays cheap on a Pi.

const POLY: u32 = 0xedb8_8320;

const fn make_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

static TABLES: [[u32; 256]; 8] = make_tables();

/// CRC-32 of `data` (the value an 802.11 FCS carries, little-endian on the air).
pub fn crc32(data: &[u8]) -> u32 {
    let t = &TABLES;
    let mut c = !0u32;
    let mut chunks = data.chunks_exact(8);
    for ch in chunks.by_ref() {
        let lo = c ^ u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]);
        let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
        c = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        c = (c >> 8) ^ t[0][((c ^ b as u32) & 0xff) as usize];
    }
    !c
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
