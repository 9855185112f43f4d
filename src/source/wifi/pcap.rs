//! pcap and pcapng readers over a byte slice, so replay needs neither libpcap nor a copy of
//! each record. Both formats yield the same [`Record`]: link type, time and the captured bytes.
//!
//! pcap: both byte orders, microsecond (0xa1b2c3d4) and nanosecond (0xa1b23c4d) magic; the link
//! type is the low 16 bits of the header field (libpcap's `LT_LINKTYPE`), the upper bits carry
//! FCS-length hints some writers set. pcapng: SHB (either byte order, several sections), IDB
//! (link type, `if_tsresol`, `if_tsoffset` per interface), EPB, SPB; every other block is
//! skipped by its length. `orig_len` larger than the captured length is tolerated (the record
//! is simply truncated by the capture).

/// One captured packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Link-layer header type (127 radiotap, 105 bare 802.11, ...).
    pub linktype: u16,
    /// Capture time in Unix nanoseconds (0 when the format carries none, e.g. SPB).
    pub ts_ns: i64,
    /// The captured bytes.
    pub data: &'a [u8],
    /// Length on the wire; larger than `data.len()` when the capture cut the packet.
    pub orig_len: u32,
}

/// Why a file cannot be read (further).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcapError {
    /// Not a pcap or pcapng file.
    BadMagic,
    /// The file ends inside a header or record.
    Truncated,
    /// A structural field is impossible (block length, interface id, ...).
    Invalid(&'static str),
}

impl std::fmt::Display for PcapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PcapError::BadMagic => f.write_str("not a pcap or pcapng file"),
            PcapError::Truncated => f.write_str("file truncated inside a record"),
            PcapError::Invalid(w) => write!(f, "invalid file structure: {w}"),
        }
    }
}

impl std::error::Error for PcapError {}

/// The container format, told from the first four bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// pcap: either byte order, microsecond or nanosecond timestamps.
    Pcap,
    /// pcapng: blocks, from a section header block (magic 0x0A0D0D0A).
    Pcapng,
}

/// Detects pcap / pcapng by magic.
pub fn detect(buf: &[u8]) -> Option<Format> {
    let m = buf.get(..4)?;
    match m {
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => Some(Format::Pcap),
        [0x0a, 0x0d, 0x0d, 0x0a] => Some(Format::Pcapng),
        _ => None,
    }
}

#[derive(Clone, Copy)]
struct Endian {
    big: bool,
}

impl Endian {
    fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let s: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big {
            u16::from_be_bytes(s)
        } else {
            u16::from_le_bytes(s)
        })
    }
    fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let s: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    }
}

/// Per-interface facts from a pcapng IDB.
#[derive(Debug, Clone, Copy)]
struct Iface {
    linktype: u16,
    /// Timestamp units per second.
    units_per_s: u64,
    offset_s: i64,
}

/// Converts a timestamp in `units_per_s` to Unix nanoseconds without overflow.
fn units_to_ns(ts: u64, units_per_s: u64, offset_s: i64) -> i64 {
    let ups = units_per_s.max(1);
    let secs = ts / ups;
    let frac = ts % ups;
    let ns = (frac as u128 * 1_000_000_000u128 / ups as u128) as i64;
    (secs as i64)
        .saturating_add(offset_s)
        .saturating_mul(1_000_000_000)
        .saturating_add(ns)
}

/// Iterates the records of a pcap or pcapng file held in memory.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    kind: Kind,
    done: bool,
}

enum Kind {
    Pcap {
        e: Endian,
        nanos: bool,
        linktype: u16,
    },
    Pcapng {
        e: Endian,
        ifaces: Vec<Iface>,
    },
}

impl<'a> Reader<'a> {
    /// Opens a buffer holding a whole capture file.
    pub fn new(buf: &'a [u8]) -> Result<Reader<'a>, PcapError> {
        match detect(buf).ok_or(PcapError::BadMagic)? {
            Format::Pcap => {
                let (big, nanos) = match buf.get(..4) {
                    Some([0xd4, 0xc3, 0xb2, 0xa1]) => (false, false),
                    Some([0xa1, 0xb2, 0xc3, 0xd4]) => (true, false),
                    Some([0x4d, 0x3c, 0xb2, 0xa1]) => (false, true),
                    _ => (true, true),
                };
                let e = Endian { big };
                let lt = e.u32(buf, 20).ok_or(PcapError::Truncated)?;
                Ok(Reader {
                    buf,
                    pos: 24,
                    kind: Kind::Pcap {
                        e,
                        nanos,
                        linktype: (lt & 0xffff) as u16,
                    },
                    done: false,
                })
            }
            Format::Pcapng => {
                // The byte order is settled by the first SHB, read by `next`.
                Ok(Reader {
                    buf,
                    pos: 0,
                    kind: Kind::Pcapng {
                        e: Endian { big: false },
                        ifaces: Vec::new(),
                    },
                    done: false,
                })
            }
        }
    }

    /// Link type of a classic pcap file (pcapng has one per interface).
    pub fn pcap_linktype(&self) -> Option<u16> {
        match self.kind {
            Kind::Pcap { linktype, .. } => Some(linktype),
            Kind::Pcapng { .. } => None,
        }
    }

    fn next_pcap(&mut self) -> Option<Result<Record<'a>, PcapError>> {
        let Kind::Pcap { e, nanos, linktype } = self.kind else {
            return None;
        };
        let buf = self.buf;
        let rem = buf.len().saturating_sub(self.pos);
        if rem == 0 {
            return None;
        }
        if rem < 16 {
            return Some(Err(PcapError::Truncated));
        }
        let h = self.pos;
        let (Some(sec), Some(frac), Some(incl), Some(orig)) = (
            e.u32(buf, h),
            e.u32(buf, h + 4),
            e.u32(buf, h + 8),
            e.u32(buf, h + 12),
        ) else {
            return Some(Err(PcapError::Truncated));
        };
        let start = h + 16;
        let Some(data) = start
            .checked_add(incl as usize)
            .and_then(|end| buf.get(start..end))
        else {
            return Some(Err(PcapError::Truncated));
        };
        self.pos = start + data.len();
        let ns_frac = if nanos {
            frac as i64
        } else {
            frac as i64 * 1000
        };
        Some(Ok(Record {
            linktype,
            ts_ns: (sec as i64) * 1_000_000_000 + ns_frac,
            data,
            orig_len: orig,
        }))
    }

    fn next_pcapng(&mut self) -> Option<Result<Record<'a>, PcapError>> {
        let buf = self.buf;
        loop {
            let rem = buf.len().saturating_sub(self.pos);
            if rem == 0 {
                return None;
            }
            if rem < 12 {
                return Some(Err(PcapError::Truncated));
            }
            let b = self.pos;
            let raw_type = buf.get(b..b + 4)?;
            if raw_type == [0x0a, 0x0d, 0x0d, 0x0a] {
                // Section header: the byte-order magic decides this section's endianness.
                let big = match buf.get(b + 8..b + 12) {
                    Some([0x1a, 0x2b, 0x3c, 0x4d]) => true,
                    Some([0x4d, 0x3c, 0x2b, 0x1a]) => false,
                    Some(_) => return Some(Err(PcapError::Invalid("SHB byte-order magic"))),
                    None => return Some(Err(PcapError::Truncated)),
                };
                if let Kind::Pcapng { e, ifaces } = &mut self.kind {
                    *e = Endian { big };
                    ifaces.clear();
                }
            }
            let Kind::Pcapng { e, ifaces } = &mut self.kind else {
                return None;
            };
            let e = *e;
            let (Some(btype), Some(blen)) = (e.u32(buf, b), e.u32(buf, b + 4)) else {
                return Some(Err(PcapError::Truncated));
            };
            let blen = blen as usize;
            if blen < 12 || blen % 4 != 0 {
                return Some(Err(PcapError::Invalid("block length")));
            }
            let Some(block) = b.checked_add(blen).and_then(|end| buf.get(b..end)) else {
                return Some(Err(PcapError::Truncated));
            };
            self.pos = b + blen;
            let body = block.get(8..blen - 4).unwrap_or(&[]);
            match btype {
                // Interface Description Block.
                0x0000_0001 => {
                    let Some(lt) = e.u16(body, 0) else {
                        return Some(Err(PcapError::Invalid("IDB too short")));
                    };
                    let mut iface = Iface {
                        linktype: lt,
                        units_per_s: 1_000_000,
                        offset_s: 0,
                    };
                    let mut o = 8;
                    while let (Some(code), Some(len)) = (e.u16(body, o), e.u16(body, o + 2)) {
                        let val = body.get(o + 4..o + 4 + len as usize).unwrap_or(&[]);
                        match code {
                            0 => break,
                            9 => {
                                if let Some(&r) = val.first() {
                                    let v = (r & 0x7f) as u32;
                                    iface.units_per_s = if r & 0x80 != 0 {
                                        1u64.checked_shl(v).unwrap_or(0)
                                    } else {
                                        10u64.checked_pow(v).unwrap_or(0)
                                    };
                                    if iface.units_per_s == 0 {
                                        return Some(Err(PcapError::Invalid("if_tsresol")));
                                    }
                                }
                            }
                            14 => {
                                if let Some(s) =
                                    val.get(..8).and_then(|s| <[u8; 8]>::try_from(s).ok())
                                {
                                    iface.offset_s = if e.big {
                                        i64::from_be_bytes(s)
                                    } else {
                                        i64::from_le_bytes(s)
                                    };
                                }
                            }
                            _ => {}
                        }
                        o += 4 + (len as usize).div_ceil(4) * 4;
                    }
                    ifaces.push(iface);
                }
                // Enhanced Packet Block.
                0x0000_0006 => {
                    let (Some(id), Some(hi), Some(lo), Some(cap), Some(orig)) = (
                        e.u32(body, 0),
                        e.u32(body, 4),
                        e.u32(body, 8),
                        e.u32(body, 12),
                        e.u32(body, 16),
                    ) else {
                        return Some(Err(PcapError::Invalid("EPB too short")));
                    };
                    let Some(iface) = ifaces.get(id as usize).copied() else {
                        return Some(Err(PcapError::Invalid("EPB interface id")));
                    };
                    let Some(data) = body.get(20..20usize.saturating_add(cap as usize)) else {
                        return Some(Err(PcapError::Invalid("EPB captured length")));
                    };
                    let ts = ((hi as u64) << 32) | lo as u64;
                    return Some(Ok(Record {
                        linktype: iface.linktype,
                        ts_ns: units_to_ns(ts, iface.units_per_s, iface.offset_s),
                        data,
                        orig_len: orig,
                    }));
                }
                // Simple Packet Block: interface 0, no timestamp.
                0x0000_0003 => {
                    let (Some(orig), Some(iface)) = (e.u32(body, 0), ifaces.first().copied())
                    else {
                        return Some(Err(PcapError::Invalid("SPB without interface")));
                    };
                    let avail = body.get(4..).unwrap_or(&[]);
                    let data = avail.get(..(orig as usize).min(avail.len())).unwrap_or(&[]);
                    return Some(Ok(Record {
                        linktype: iface.linktype,
                        ts_ns: 0,
                        data,
                        orig_len: orig,
                    }));
                }
                _ => {}
            }
        }
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Record<'a>, PcapError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = match self.kind {
            Kind::Pcap { .. } => self.next_pcap(),
            Kind::Pcapng { .. } => self.next_pcapng(),
        };
        if matches!(r, Some(Err(_)) | None) {
            self.done = true;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(big: bool, nanos: bool, lt: u32, recs: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut b = Vec::new();
        b.extend(w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
        b.extend(w16(2));
        b.extend(w16(4));
        b.extend(w32(0));
        b.extend(w32(0));
        b.extend(w32(65535));
        b.extend(w32(lt));
        for (s, f, d, orig) in recs {
            b.extend(w32(*s));
            b.extend(w32(*f));
            b.extend(w32(d.len() as u32));
            b.extend(w32(*orig));
            b.extend_from_slice(d);
        }
        b
    }

    #[test]
    fn pcap_all_magics_and_linktype_low_bits() {
        for big in [false, true] {
            for nanos in [false, true] {
                let f = pcap(big, nanos, 0x3000_007f, &[(10, 5, b"abc", 262_144)]);
                let mut r = Reader::new(&f).expect("pcap");
                let rec = r.next().expect("one").expect("ok");
                assert_eq!(rec.linktype, 127);
                assert_eq!(rec.data, b"abc");
                assert_eq!(rec.orig_len, 262_144);
                let want = 10_000_000_000 + if nanos { 5 } else { 5000 };
                assert_eq!(rec.ts_ns, want);
                assert!(r.next().is_none());
            }
        }
    }

    #[test]
    fn pcap_truncated_record_is_an_error_not_a_panic() {
        let mut f = pcap(false, false, 105, &[(1, 0, b"abcdef", 6)]);
        f.truncate(f.len() - 2);
        let mut r = Reader::new(&f).expect("pcap");
        assert_eq!(r.next(), Some(Err(PcapError::Truncated)));
        assert_eq!(r.next(), None);
        assert!(Reader::new(b"\xd4\xc3\xb2").is_err());
        assert!(Reader::new(b"hello world").is_err());
    }

    fn block(big: bool, t: u32, body: &[u8]) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut body = body.to_vec();
        while body.len() % 4 != 0 {
            body.push(0);
        }
        let len = body.len() as u32 + 12;
        let mut b = Vec::new();
        b.extend(w32(t));
        b.extend(w32(len));
        b.extend(body);
        b.extend(w32(len));
        b
    }

    fn ng(big: bool) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut f = Vec::new();
        let mut shb = Vec::new();
        shb.extend(w32(0x1a2b_3c4d));
        shb.extend(w16(1));
        shb.extend(w16(0));
        shb.extend((-1i64).to_le_bytes());
        let mut s = block(big, 0x0a0d_0d0a, &shb);
        s[..4].copy_from_slice(&[0x0a, 0x0d, 0x0d, 0x0a]);
        f.extend(s);
        // IDB 0: radiotap, microseconds. IDB 1: bare 802.11, ns resolution (tsresol 9).
        let mut idb = Vec::new();
        idb.extend(w16(127));
        idb.extend(w16(0));
        idb.extend(w32(0));
        f.extend(block(big, 1, &idb));
        let mut idb = Vec::new();
        idb.extend(w16(105));
        idb.extend(w16(0));
        idb.extend(w32(0));
        idb.extend(w16(9));
        idb.extend(w16(1));
        idb.extend([9, 0, 0, 0]);
        idb.extend(w16(0));
        idb.extend(w16(0));
        f.extend(block(big, 1, &idb));
        // An unknown block is skipped.
        f.extend(block(big, 0x0bad, b"zzzz"));
        for (id, ts, d) in [
            (0u32, 1_500_000u64, &b"radio"[..]),
            (1, 2_000_000_123, b"bare"),
        ] {
            let mut epb = Vec::new();
            epb.extend(w32(id));
            epb.extend(w32((ts >> 32) as u32));
            epb.extend(w32(ts as u32));
            epb.extend(w32(d.len() as u32));
            epb.extend(w32(d.len() as u32 + 10));
            epb.extend_from_slice(d);
            f.extend(block(big, 6, &epb));
        }
        let mut spb = Vec::new();
        spb.extend(w32(3));
        spb.extend(b"spb");
        f.extend(block(big, 3, &spb));
        f
    }

    #[test]
    fn pcapng_blocks_both_orders() {
        for big in [false, true] {
            let f = ng(big);
            let recs: Vec<_> = Reader::new(&f).expect("ng").collect();
            assert_eq!(recs.len(), 3, "big={big}");
            let a = recs[0].clone().expect("epb");
            assert_eq!(
                (a.linktype, a.ts_ns, a.data),
                (127, 1_500_000_000, &b"radio"[..])
            );
            assert_eq!(a.orig_len, 15);
            let b = recs[1].clone().expect("epb");
            assert_eq!(
                (b.linktype, b.ts_ns, b.data),
                (105, 2_000_000_123, &b"bare"[..])
            );
            let c = recs[2].clone().expect("spb");
            assert_eq!((c.linktype, c.data), (127, &b"spb"[..]));
        }
    }

    #[test]
    fn pcapng_garbage_never_panics() {
        let f = ng(false);
        for cut in 0..f.len() {
            let _ = Reader::new(&f[..cut]).map(|r| r.count());
        }
        let mut g = f.clone();
        for i in 0..g.len() {
            let old = g[i];
            g[i] = 0xff;
            let _ = Reader::new(&g).map(|r| r.count());
            g[i] = old;
        }
    }
}
