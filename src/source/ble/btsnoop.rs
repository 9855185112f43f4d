//! Android "Bluetooth HCI snoop log" files (btsnoop v1, RFC 1761 layout) and the HCI LE
//! advertising events inside them, so recorded field logs replay through the live pipeline.
//!
//! Only LE Meta events with the LE Advertising Report (0x02) and LE Extended Advertising Report
//! (0x0d) subevents are read; every other packet is skipped. A record or report that ends early
//! is counted, never trusted.

use std::io::Read;

/// File magic, 8 bytes.
pub const MAGIC: &[u8; 8] = b"btsnoop\0";
/// Datalink: HCI UART (H4), each packet prefixed with its packet-type byte.
pub const DATALINK_H4: u32 = 1002;
/// Datalink: un-encapsulated HCI; the record flags say command/event.
pub const DATALINK_HCI: u32 = 1001;
/// Microseconds between 0000-01-01 (btsnoop's epoch) and 1970-01-01.
pub const EPOCH_OFFSET_US: i64 = 0x00dc_ddb3_0f2f_8000;
/// Largest record accepted: an HCI packet is at most a few KiB; anything bigger is corruption.
const MAX_RECORD: u32 = 1 << 20;

/// One advertising report from an HCI event, borrowing the AD bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report<'a> {
    /// Device address, most significant byte first (as written `aa:bb:...`).
    pub addr: [u8; 6],
    /// 0 public, 1 random (2/3 identity addresses from extended reports).
    pub addr_type: u8,
    /// Legacy event type (0 ADV_IND .. 4 SCAN_RSP), or the extended report's 16-bit bits.
    pub event_type: u16,
    /// dBm; `None` when the controller says 127 (not available).
    pub rssi: Option<i8>,
    /// Extended reports only: advertised TX power, `None` when 127.
    pub tx_power: Option<i8>,
    /// AD structures, as received.
    pub data: &'a [u8],
}

impl Report<'_> {
    /// `aa:bb:cc:dd:ee:ff` (tests and diagnostics only: raw addresses never leave the BLE stage).
    pub fn addr_string(&self) -> String {
        let mut s = String::with_capacity(17);
        for (i, b) in self.addr.iter().enumerate() {
            if i > 0 {
                s.push(':');
            }
            s.push_str(&crate::privacy::hex(&[*b]));
        }
        s
    }
}

fn opt_dbm(b: u8) -> Option<i8> {
    (b != 127).then_some(b as i8)
}

fn addr_msb_first(le: &[u8]) -> Option<[u8; 6]> {
    let mut a: [u8; 6] = le.get(..6)?.try_into().ok()?;
    a.reverse();
    Some(a)
}

/// Reads the advertising reports of one H4 packet (packet-type byte first). Returns whether the
/// packet was an LE advertising report event; malformed reports are added to `malformed`.
pub fn h4_adv_reports<'a>(
    packet: &'a [u8],
    malformed: &mut u32,
    f: impl FnMut(Report<'a>),
) -> bool {
    match packet.split_first() {
        Some((0x04, event)) => hci_event_adv_reports(event, malformed, f),
        _ => false,
    }
}

/// Same as [`h4_adv_reports`] for an HCI event without the H4 byte (event code first).
pub fn hci_event_adv_reports<'a>(
    event: &'a [u8],
    malformed: &mut u32,
    mut f: impl FnMut(Report<'a>),
) -> bool {
    let (Some(&0x3E), Some(&plen)) = (event.first(), event.get(1)) else {
        return false;
    };
    let params = event.get(2..).unwrap_or_default();
    let params = match params.get(..plen as usize) {
        Some(p) => p,
        None => {
            // The event says more than the record holds: read what is there, count it.
            *malformed += 1;
            params
        }
    };
    let (Some(&sub), Some(&num)) = (params.first(), params.get(1)) else {
        return false;
    };
    let mut rest = params.get(2..).unwrap_or_default();
    match sub {
        0x02 => {
            for _ in 0..num {
                let parsed = (|| {
                    let len = *rest.get(8)? as usize;
                    let r = Report {
                        event_type: *rest.first()? as u16,
                        addr_type: *rest.get(1)?,
                        addr: addr_msb_first(rest.get(2..8)?)?,
                        data: rest.get(9..9 + len)?,
                        rssi: opt_dbm(*rest.get(9 + len)?),
                        tx_power: None,
                    };
                    Some((r, rest.get(10 + len..).unwrap_or_default()))
                })();
                match parsed {
                    Some((r, next)) => {
                        f(r);
                        rest = next;
                    }
                    None => {
                        *malformed += 1;
                        break;
                    }
                }
            }
            true
        }
        0x0D => {
            for _ in 0..num {
                let parsed = (|| {
                    let len = *rest.get(23)? as usize;
                    let r = Report {
                        event_type: u16::from_le_bytes([*rest.first()?, *rest.get(1)?]),
                        addr_type: *rest.get(2)?,
                        addr: addr_msb_first(rest.get(3..9)?)?,
                        tx_power: opt_dbm(*rest.get(12)?),
                        rssi: opt_dbm(*rest.get(13)?),
                        data: rest.get(24..24 + len)?,
                    };
                    Some((r, rest.get(24 + len..).unwrap_or_default()))
                })();
                match parsed {
                    Some((r, next)) => {
                        f(r);
                        rest = next;
                    }
                    None => {
                        *malformed += 1;
                        break;
                    }
                }
            }
            true
        }
        _ => false,
    }
}

/// Why a btsnoop file cannot be read at all.
#[derive(Debug)]
pub enum BtsnoopError {
    /// Reading failed; a file too short for its header is [`BtsnoopError::NotBtsnoop`] instead.
    Io(std::io::Error),
    /// No `btsnoop\0` magic, or fewer than the 16 header bytes.
    NotBtsnoop,
    /// A header version other than 1, the only one defined; carries the version read.
    Version(u32),
    /// A datalink other than 1002 (H4) or 1001 (HCI), e.g. 2001 (Linux monitor).
    Datalink(u32),
}

impl std::fmt::Display for BtsnoopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BtsnoopError::Io(e) => write!(f, "read error: {e}"),
            BtsnoopError::NotBtsnoop => write!(f, "not a btsnoop file (bad magic)"),
            BtsnoopError::Version(v) => write!(f, "btsnoop version {v} (only 1 is known)"),
            BtsnoopError::Datalink(d) => write!(
                f,
                "btsnoop datalink {d} not supported (1002 H4 and 1001 HCI are; 2001 monitor is not)"
            ),
        }
    }
}

/// Header fields of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// 1-based record number (TShark's frame number).
    pub frame: u64,
    /// Original Length: the packet's size before the logger cut it; only stored bytes are read.
    pub orig_len: u32,
    /// Packet Flags: bit 0 received (else sent), bit 1 command/event (else data).
    pub flags: u32,
    /// Unix time in microseconds.
    pub ts_us: i64,
}

/// A streaming btsnoop reader reusing one buffer, so long logs need no more RAM than a record.
pub struct Btsnoop<R: Read> {
    r: R,
    /// 1002 (H4) or 1001 (HCI).
    pub datalink: u32,
    frame: u64,
    /// Records cut short by the end of the file (at most one) or with an absurd length.
    pub truncated: u64,
}

impl<R: Read> Btsnoop<R> {
    /// Reads and checks the file header.
    pub fn new(mut r: R) -> Result<Btsnoop<R>, BtsnoopError> {
        let mut h = [0u8; 16];
        r.read_exact(&mut h).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => BtsnoopError::NotBtsnoop,
            _ => BtsnoopError::Io(e),
        })?;
        if &h[..8] != MAGIC {
            return Err(BtsnoopError::NotBtsnoop);
        }
        let version = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        let datalink = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        if version != 1 {
            return Err(BtsnoopError::Version(version));
        }
        if datalink != DATALINK_H4 && datalink != DATALINK_HCI {
            return Err(BtsnoopError::Datalink(datalink));
        }
        Ok(Btsnoop {
            r,
            datalink,
            frame: 0,
            truncated: 0,
        })
    }

    /// Reads the next record into `buf`; `Ok(None)` at the end (a cut-off last record is
    /// counted in `truncated`).
    pub fn next_record(&mut self, buf: &mut Vec<u8>) -> Result<Option<RecordHeader>, BtsnoopError> {
        let mut h = [0u8; 24];
        let got = read_full(&mut self.r, &mut h).map_err(BtsnoopError::Io)?;
        if got == 0 {
            return Ok(None);
        }
        if got < h.len() {
            self.truncated += 1;
            return Ok(None);
        }
        let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let incl = be32(4);
        if incl > MAX_RECORD {
            self.truncated += 1;
            return Ok(None);
        }
        buf.clear();
        buf.resize(incl as usize, 0);
        let got = read_full(&mut self.r, buf).map_err(BtsnoopError::Io)?;
        if got < buf.len() {
            self.truncated += 1;
            return Ok(None);
        }
        self.frame += 1;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&h[16..24]);
        Ok(Some(RecordHeader {
            frame: self.frame,
            orig_len: be32(0),
            flags: be32(8),
            ts_us: i64::from_be_bytes(ts).wrapping_sub(EPOCH_OFFSET_US),
        }))
    }

    /// The advertising reports in a record read by [`Btsnoop::next_record`].
    pub fn adv_reports<'a>(
        &self,
        hdr: &RecordHeader,
        packet: &'a [u8],
        malformed: &mut u32,
        f: impl FnMut(Report<'a>),
    ) -> bool {
        match self.datalink {
            DATALINK_H4 => h4_adv_reports(packet, malformed, f),
            // Flags bit 1 = command/event, bit 0 = received: a received event.
            _ if hdr.flags & 0x3 == 0x3 => hci_event_adv_reports(packet, malformed, f),
            _ => false,
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_reports_per_event_and_truncation() {
        // Two legacy reports in one event; then the same event cut inside the second one.
        let r1 = [0u8, 1, 1, 2, 3, 4, 5, 6, 3, 2, 1, 6, 0xC0];
        let r2 = [4u8, 0, 6, 5, 4, 3, 2, 1, 0, 127];
        let mut ev = vec![0x04, 0x3E, 0, 0x02, 2];
        ev.extend_from_slice(&r1);
        ev.extend_from_slice(&r2);
        ev[2] = (ev.len() - 3) as u8;
        let mut got = Vec::new();
        let mut bad = 0;
        assert!(h4_adv_reports(&ev, &mut bad, |r| got.push(r)));
        assert_eq!(bad, 0);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].addr, [6, 5, 4, 3, 2, 1]);
        assert_eq!(got[0].rssi, Some(-64));
        assert_eq!(got[0].data, &[2, 1, 6]);
        assert_eq!(got[1].rssi, None);
        assert_eq!(got[1].event_type, 4);
        let cut = &ev[..ev.len() - 3];
        got.clear();
        assert!(h4_adv_reports(cut, &mut bad, |r| got.push(r)));
        assert_eq!(got.len(), 1);
        assert_eq!(bad, 2, "short event and short report both counted");
    }

    #[test]
    fn extended_report() {
        let mut ev = vec![0x04, 0x3E, 0, 0x0D, 1];
        ev.extend_from_slice(&[0x13, 0x00, 1, 1, 2, 3, 4, 5, 6, 1, 0, 0xFF, 0xF4, 0xB5]);
        ev.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 2, 1, 6]);
        ev[2] = (ev.len() - 3) as u8;
        let mut got = Vec::new();
        let mut bad = 0;
        assert!(h4_adv_reports(&ev, &mut bad, |r| got.push(r)));
        assert_eq!((bad, got.len()), (0, 1));
        assert_eq!(got[0].event_type, 0x13);
        assert_eq!(got[0].tx_power, Some(-12));
        assert_eq!(got[0].rssi, Some(-75));
        assert_eq!(got[0].data, &[2, 1, 6]);
    }

    #[test]
    fn other_traffic_is_not_advertising() {
        let mut bad = 0;
        assert!(!h4_adv_reports(&[0x02, 0, 0, 0], &mut bad, |_| {}));
        assert!(!h4_adv_reports(
            &[0x04, 0x0E, 4, 1, 0, 0x20, 0],
            &mut bad,
            |_| {}
        ));
        assert!(!h4_adv_reports(&[], &mut bad, |_| {}));
        assert_eq!(bad, 0);
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift: deterministic garbage shaped like LE Meta events.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut reports = 0u32;
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if p.len() > 3 {
                p[0] = 0x04;
                p[1] = 0x3E;
                p[3] = if next() % 2 == 0 { 0x02 } else { 0x0D };
            }
            let mut bad = 0;
            h4_adv_reports(&p, &mut bad, |r| {
                reports += 1;
                let _ = crate::source::ble::adv::decode(r.data);
            });
        }
        assert!(reports > 0);
    }
}
