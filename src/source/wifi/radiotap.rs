//! Radiotap header (<https://www.radiotap.org>): the per-frame radio metadata a monitor-mode
//! interface prepends. Only what footfall needs is kept (first dBm antenna signal, channel
//! frequency, FCS flags), but every defined field is walked with its alignment and size, so a
//! field after an unusual one is still found. Extended presence bitmaps and namespace switches
//! (radiotap namespace reset, vendor namespaces skipped by their `skip_length`) are followed
//! as the Linux radiotap iterator does. Zero-copy, no allocation, no panics.

/// `Flags` bit: the frame ends with a 4-byte FCS.
pub const FLAG_FCS_AT_END: u8 = 0x10;
/// `Flags` bit: the receiver found the FCS wrong.
pub const FLAG_BAD_FCS: u8 = 0x40;

/// What the footfall pipeline reads from a radiotap header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Radiotap {
    /// Header length: the 802.11 frame starts here.
    pub len: usize,
    /// The `Flags` field, when present.
    pub flags: Option<u8>,
    /// First dBm antenna signal (field 5) in the radiotap namespace.
    pub dbm_signal: Option<i8>,
    /// Channel frequency in MHz (field 3, else XChannel field 18).
    pub freq_mhz: Option<u16>,
    /// Channel flags (field 3).
    pub channel_flags: Option<u16>,
    /// False when an undefined radiotap field stopped the walk: fields after it are unknown.
    pub complete: bool,
}

impl Radiotap {
    /// The frame carries an FCS in its last four bytes.
    pub fn fcs_at_end(&self) -> bool {
        self.flags.is_some_and(|f| f & FLAG_FCS_AT_END != 0)
    }

    /// The receiver flagged the FCS as bad.
    pub fn bad_fcs(&self) -> bool {
        self.flags.is_some_and(|f| f & FLAG_BAD_FCS != 0)
    }
}

/// Why a radiotap header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RadiotapError {
    /// Shorter than its 8-byte fixed part or than its own length field.
    Truncated,
    /// Version is not 0.
    BadVersion,
    /// The presence bitmaps or a field run past the header length.
    FieldOverrun,
}

/// Alignment and size of radiotap-namespace field `bit` (radiotap.org defined fields).
/// `None` for undefined fields, whose size cannot be known.
pub const fn field_align_size(bit: u32) -> Option<(usize, usize)> {
    Some(match bit {
        0 => (8, 8),   // TSFT
        1 => (1, 1),   // Flags
        2 => (1, 1),   // Rate
        3 => (2, 4),   // Channel: freq u16, flags u16
        4 => (1, 2),   // FHSS
        5 => (1, 1),   // dBm antenna signal
        6 => (1, 1),   // dBm antenna noise
        7 => (2, 2),   // Lock quality
        8 => (2, 2),   // TX attenuation
        9 => (2, 2),   // dB TX attenuation
        10 => (1, 1),  // dBm TX power
        11 => (1, 1),  // Antenna
        12 => (1, 1),  // dB antenna signal
        13 => (1, 1),  // dB antenna noise
        14 => (2, 2),  // RX flags
        15 => (2, 2),  // TX flags
        16 => (1, 1),  // RTS retries
        17 => (1, 1),  // data retries
        18 => (4, 8),  // XChannel: flags u32, freq u16, channel u8, maxpower u8
        19 => (1, 3),  // MCS
        20 => (4, 8),  // A-MPDU status
        21 => (2, 12), // VHT
        22 => (8, 12), // timestamp
        23 => (2, 12), // HE
        24 => (2, 12), // HE-MU
        25 => (2, 6),  // HE-MU-other-user
        26 => (1, 1),  // 0-length PSDU
        27 => (2, 4),  // L-SIG
        _ => return None,
    })
}

const BIT_TLV: u32 = 28;
const BIT_RADIOTAP_NS: u32 = 29;
const BIT_VENDOR_NS: u32 = 30;
const BIT_EXT: u32 = 31;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ns {
    Radiotap,
    /// A vendor namespace: its data was skipped with its `skip_length`.
    Vendor,
}

fn align_up(off: usize, align: usize) -> usize {
    off.div_ceil(align) * align
}

/// Parses the radiotap header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Radiotap, RadiotapError> {
    let fixed = buf.get(..8).ok_or(RadiotapError::Truncated)?;
    if fixed.first() != Some(&0) {
        return Err(RadiotapError::BadVersion);
    }
    let len = u16::from_le_bytes([fixed[2], fixed[3]]) as usize;
    if len < 8 {
        return Err(RadiotapError::FieldOverrun);
    }
    let hdr = buf.get(..len).ok_or(RadiotapError::Truncated)?;
    let word = |i: usize| -> Option<u32> {
        let at = 4 + 4 * i;
        let s: [u8; 4] = hdr.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(s))
    };
    // Count presence words: each with bit 31 set is followed by another.
    let mut nwords = 1usize;
    loop {
        let w = word(nwords - 1).ok_or(RadiotapError::FieldOverrun)?;
        if w & (1 << BIT_EXT) == 0 {
            break;
        }
        nwords += 1;
    }
    let mut out = Radiotap {
        len,
        complete: true,
        ..Radiotap::default()
    };
    let mut off = 4 + 4 * nwords;
    let mut ns = Ns::Radiotap;
    // Bit index base of the current word within its namespace.
    let mut base = 0u32;
    'words: for i in 0..nwords {
        let w = word(i).ok_or(RadiotapError::FieldOverrun)?;
        let mut next_ns: Option<Ns> = None;
        // Set bits in ascending order (field order), without visiting the clear ones.
        let mut rest = w;
        while rest != 0 {
            let bit = rest.trailing_zeros();
            rest &= rest - 1;
            match bit {
                BIT_EXT => {}
                BIT_RADIOTAP_NS => next_ns = Some(Ns::Radiotap),
                BIT_VENDOR_NS => {
                    // Vendor namespace header: OUI(3), sub-namespace(1), skip_length(2).
                    off = align_up(off, 2);
                    let f = hdr.get(off..off + 6).ok_or(RadiotapError::FieldOverrun)?;
                    let skip = u16::from_le_bytes([f[4], f[5]]) as usize;
                    // Vendor data is not interpreted: skip it now (as Linux does for an
                    // unregistered namespace).
                    off += 6 + skip;
                    if off > len {
                        return Err(RadiotapError::FieldOverrun);
                    }
                    next_ns = Some(Ns::Vendor);
                }
                _ => match ns {
                    Ns::Vendor => {} // data already skipped
                    Ns::Radiotap => {
                        let idx = base + bit;
                        if idx == BIT_TLV {
                            // TLVs follow; none of them is needed here.
                            break 'words;
                        }
                        let Some((align, size)) = field_align_size(idx) else {
                            out.complete = false;
                            break 'words;
                        };
                        off = align_up(off, align);
                        let f = hdr
                            .get(off..off + size)
                            .ok_or(RadiotapError::FieldOverrun)?;
                        match idx {
                            1 => out.flags = f.first().copied(),
                            3 => {
                                out.freq_mhz = Some(u16::from_le_bytes([f[0], f[1]]));
                                out.channel_flags = Some(u16::from_le_bytes([f[2], f[3]]));
                            }
                            5 if out.dbm_signal.is_none() => {
                                out.dbm_signal = f.first().map(|&b| b as i8);
                            }
                            18 if out.freq_mhz.is_none() => {
                                out.freq_mhz = Some(u16::from_le_bytes([f[4], f[5]]));
                            }
                            _ => {}
                        }
                        off += size;
                    }
                },
            }
        }
        match next_ns {
            Some(n) => {
                ns = n;
                base = 0;
            }
            None => base = base.saturating_add(32),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 15-byte header of the baccichet capture: Flags, Rate, Channel, dBm signal.
    #[test]
    fn simple_header() {
        let h = [
            0x00, 0x00, 0x0f, 0x00, 0x2e, 0x00, 0x00, 0x00, 0x10, 0x02, 0x6c, 0x09, 0xa0, 0x00,
            0xc4,
        ];
        let r = parse(&h).expect("ok");
        assert_eq!(r.len, 15);
        assert!(r.fcs_at_end());
        assert!(!r.bad_fcs());
        assert_eq!(r.freq_mhz, Some(2412));
        assert_eq!(r.dbm_signal, Some(-60));
    }

    #[test]
    fn alignment_after_tsft_and_ext_words() {
        // Word0: TSFT, Flags, Channel, dBm signal, radiotap-ns + ext. Word1: dBm signal
        // (antenna 1), ext clear.
        let mut h = vec![0u8, 0, 0, 0];
        let w0: u32 = 1 | 2 | 8 | 32 | (1 << 29) | (1 << 31);
        let w1: u32 = 32;
        h.extend(w0.to_le_bytes());
        h.extend(w1.to_le_bytes());
        // offset 12: TSFT needs 8-alignment -> 16
        h.extend([0; 4]);
        h.extend(7u64.to_le_bytes()); // 16..24
        h.push(0x10); // flags @24
        h.push(0); // pad -> channel @26
        h.extend(5180u16.to_le_bytes());
        h.extend(0x0140u16.to_le_bytes());
        h.push(0xb0u8); // -80 @30
        h.push(0xa0u8); // second namespace: -96 @31
        let l = h.len() as u16;
        h[2..4].copy_from_slice(&l.to_le_bytes());
        let r = parse(&h).expect("ok");
        assert_eq!(r.freq_mhz, Some(5180));
        assert_eq!(r.dbm_signal, Some(-80));
        assert!(r.fcs_at_end());
        assert!(r.complete);
    }

    #[test]
    fn vendor_namespace_is_skipped() {
        // Word0: Flags, vendor-ns + ext. Word1 (vendor): bits 0,1 ; radiotap-ns + ext.
        // Word2 (radiotap again): dBm signal.
        let w0: u32 = 2 | (1 << 30) | (1 << 31);
        let w1: u32 = 3 | (1 << 29) | (1 << 31);
        let w2: u32 = 32;
        let mut h = vec![0u8, 0, 0, 0];
        for w in [w0, w1, w2] {
            h.extend(w.to_le_bytes());
        }
        h.push(0x40); // flags @16: bad FCS
        h.push(0); // align 2 -> vendor header @18
        h.extend([0x00, 0x11, 0x22, 0x01]);
        h.extend(5u16.to_le_bytes()); // skip 5 bytes of vendor data
        h.extend([0xee; 5]); // @24..29
        h.push(0xc4); // dBm signal @29 = -60
        let l = h.len() as u16;
        h[2..4].copy_from_slice(&l.to_le_bytes());
        let r = parse(&h).expect("ok");
        assert!(r.bad_fcs());
        assert_eq!(r.dbm_signal, Some(-60));
    }

    #[test]
    fn undefined_field_stops_walk_keeps_earlier() {
        let w0: u32 = 32 | (1 << 31);
        let w1: u32 = 1; // bit 32 in the radiotap namespace: undefined
        let mut h = vec![0u8, 0, 0, 0];
        h.extend(w0.to_le_bytes());
        h.extend(w1.to_le_bytes());
        h.push(0xc0);
        h.extend([0; 3]);
        let l = h.len() as u16;
        h[2..4].copy_from_slice(&l.to_le_bytes());
        let r = parse(&h).expect("ok");
        assert_eq!(r.dbm_signal, Some(-64));
        assert!(!r.complete);
    }

    #[test]
    fn truncation_and_garbage() {
        assert_eq!(parse(&[0, 0, 8]), Err(RadiotapError::Truncated));
        assert_eq!(
            parse(&[1, 0, 8, 0, 0, 0, 0, 0]),
            Err(RadiotapError::BadVersion)
        );
        assert_eq!(
            parse(&[0, 0, 4, 0, 0, 0, 0, 0]),
            Err(RadiotapError::FieldOverrun)
        );
        // All-ones presence words never terminate within the header.
        let h = [0, 0, 12, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(parse(&h), Err(RadiotapError::FieldOverrun));
        // Field past the header length.
        let h = [0, 0, 8, 0, 0x20, 0, 0, 0];
        assert_eq!(parse(&h), Err(RadiotapError::FieldOverrun));
        let mut x = 0x1234_5678u32;
        for _ in 0..20_000 {
            let mut b = [0u8; 40];
            for v in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *v = x as u8;
            }
            b[0] = 0;
            b[2] = (x % 48) as u8;
            b[3] = 0;
            let _ = parse(&b);
        }
    }
}
