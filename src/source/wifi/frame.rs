//! One captured frame, whatever its link type, to a probe request with its radio facts; the
//! single decode step shared by live capture and replay. Allocation-free.

use super::dot11::{self, Dot11Error, FrameControl, ProbeRequest};
use super::fcs;
use super::radiotap::{self, RadiotapError};

/// `LINKTYPE_IEEE802_11`: bare 802.11 frames, no radio header.
pub const LINKTYPE_IEEE802_11: u16 = 105;
/// `LINKTYPE_IEEE802_11_RADIOTAP`: radiotap header then the 802.11 frame.
pub const LINKTYPE_RADIOTAP: u16 = 127;

/// State of the frame check sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FcsStatus {
    /// The frame carries no FCS (or the capture cut it off).
    Absent,
    /// Present and verified.
    Good,
    /// Present and wrong, or flagged bad by the receiver.
    Bad,
    /// Present, not checked (verification turned off).
    Unverified,
}

/// A probe request with the radio facts from its capture header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe<'a> {
    /// The 802.11 probe request, FCS already stripped.
    pub req: ProbeRequest<'a>,
    /// First dBm antenna signal, when the header has one.
    pub rssi: Option<i8>,
    /// Channel frequency in MHz (radiotap Channel, else XChannel); `None` for bare 802.11.
    pub freq_mhz: Option<u16>,
    /// State of the FCS: decides whether the `bad_fcs` policy applies.
    pub fcs: FcsStatus,
}

/// Why a frame was counted as malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The radiotap header is unreadable (link type 127).
    Radiotap(RadiotapError),
    /// The 802.11 header or element list is truncated, or the version is not 0.
    Dot11(Dot11Error),
    /// Neither 105 nor 127.
    LinkType(u16),
}

/// The decode result of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A probe request with its radio facts.
    Probe(Probe<'a>),
    /// A well-formed frame that is not a probe request.
    Other,
    /// A damaged frame: counted in `malformed`, nothing more is read.
    Malformed(Malformed),
}

/// Decodes one frame. `cut` is true when the capture stored fewer bytes than were on the air
/// (then there is no FCS to strip or check). `verify_fcs` computes the CRC when an FCS is
/// present.
pub fn decode(linktype: u16, data: &[u8], cut: bool, verify_fcs: bool) -> Decoded<'_> {
    let (rt, frame) = match linktype {
        LINKTYPE_RADIOTAP => match radiotap::parse(data) {
            Ok(rt) => (Some(rt), data.get(rt.len..).unwrap_or(&[])),
            Err(e) => return Decoded::Malformed(Malformed::Radiotap(e)),
        },
        LINKTYPE_IEEE802_11 => (None, data),
        other => return Decoded::Malformed(Malformed::LinkType(other)),
    };
    let Some(fc) = FrameControl::parse(frame) else {
        return Decoded::Malformed(Malformed::Dot11(Dot11Error::Truncated));
    };
    if fc.version != 0 {
        return Decoded::Malformed(Malformed::Dot11(Dot11Error::BadVersion));
    }
    let has_fcs_flag = rt.is_some_and(|r| r.fcs_at_end()) && !cut;
    if !fc.is_probe_request() {
        return check_other(fc, frame, has_fcs_flag);
    }
    let has_fcs = rt.is_some_and(|r| r.fcs_at_end()) && !cut;
    let (body, mut status) = if has_fcs {
        match frame.len().checked_sub(4) {
            Some(n) => {
                let st = if verify_fcs {
                    if fcs::fcs_ok(frame) {
                        FcsStatus::Good
                    } else {
                        FcsStatus::Bad
                    }
                } else {
                    FcsStatus::Unverified
                };
                (frame.get(..n).unwrap_or(&[]), st)
            }
            None => return Decoded::Malformed(Malformed::Dot11(Dot11Error::Truncated)),
        }
    } else {
        (frame, FcsStatus::Absent)
    };
    if rt.is_some_and(|r| r.bad_fcs()) {
        status = FcsStatus::Bad;
    }
    match dot11::parse_probe_request(body) {
        Ok(req) => Decoded::Probe(Probe {
            req,
            rssi: rt.and_then(|r| r.dbm_signal),
            freq_mhz: rt.and_then(|r| r.freq_mhz),
            fcs: status,
        }),
        Err(e) => Decoded::Malformed(Malformed::Dot11(e)),
    }
}

/// Bytes of fixed fields before the elements of management subtypes that carry elements.
fn mgmt_fixed_len(subtype: u8) -> Option<usize> {
    match subtype {
        0 => Some(4),      // association request
        1 | 3 => Some(6),  // (re)association response
        2 => Some(10),     // reassociation request
        5 | 8 => Some(12), // probe response, beacon
        4 => Some(0),      // probe request
        _ => None,
    }
}

/// Cheap structural check of a frame that is not a probe request, so damaged frames are
/// counted: header length by type, and for management frames the element walk.
fn check_other<'a>(fc: FrameControl, frame: &'a [u8], has_fcs: bool) -> Decoded<'a> {
    let frame = if has_fcs {
        match frame.len().checked_sub(4).and_then(|n| frame.get(..n)) {
            Some(f) => f,
            None => return Decoded::Malformed(Malformed::Dot11(Dot11Error::Truncated)),
        }
    } else {
        frame
    };
    let min = match fc.ftype {
        dot11::TYPE_MGMT | 2 => 24,
        1 => 10,
        _ => 0,
    };
    if frame.len() < min {
        return Decoded::Malformed(Malformed::Dot11(Dot11Error::Truncated));
    }
    if fc.ftype == dot11::TYPE_MGMT && !fc.protected() {
        if let Some(fixed) = mgmt_fixed_len(fc.subtype) {
            let start = if fc.order() { 28 } else { 24 } + fixed;
            let Some(elements) = frame.get(start..) else {
                return Decoded::Malformed(Malformed::Dot11(Dot11Error::Truncated));
            };
            if !dot11::elements_complete(elements) {
                return Decoded::Malformed(Malformed::Dot11(Dot11Error::Truncated));
            }
        }
    }
    Decoded::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn radiotap_probe(rssi: i8, freq: u16, with_fcs: bool, ssid: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8, 0, 14, 0];
        f.extend((2u32 | 8 | 32).to_le_bytes());
        f.push(if with_fcs { 0x10 } else { 0 });
        f.push(0);
        f.extend(freq.to_le_bytes());
        f.extend(0x00a0u16.to_le_bytes());
        f.push(rssi as u8);
        f.push(0);
        f[2] = f.len() as u8;
        let start = f.len();
        f.extend([0x40, 0, 0, 0]);
        f.extend([0xff; 6]);
        f.extend([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        f.extend([0xff; 6]);
        f.extend((77u16 << 4).to_le_bytes());
        f.push(0);
        f.push(ssid.len() as u8);
        f.extend_from_slice(ssid);
        if with_fcs {
            let c = fcs::crc32(&f[start..]);
            f.extend(c.to_le_bytes());
        }
        f
    }

    #[test]
    fn decodes_radiotap_probe_with_fcs() {
        let f = radiotap_probe(-55, 2437, true, b"shop");
        let Decoded::Probe(p) = decode(127, &f, false, true) else {
            panic!("probe expected");
        };
        assert_eq!(p.rssi, Some(-55));
        assert_eq!(p.freq_mhz, Some(2437));
        assert_eq!(p.fcs, FcsStatus::Good);
        assert_eq!(p.req.seq, 77);
        assert!(p.req.ssid.is_directed());
        assert!(p.req.elements_complete);
        let mut g = f.clone();
        let n = g.len();
        g[n - 1] ^= 0xff;
        let Decoded::Probe(p) = decode(127, &g, false, true) else {
            panic!("probe expected");
        };
        assert_eq!(p.fcs, FcsStatus::Bad);
        let Decoded::Probe(p) = decode(127, &g, false, false) else {
            panic!("probe expected");
        };
        assert_eq!(p.fcs, FcsStatus::Unverified);
    }

    #[test]
    fn bare_80211_and_unknown_linktype() {
        let f = radiotap_probe(-55, 2437, false, b"");
        let bare = &f[f[2] as usize..];
        let Decoded::Probe(p) = decode(105, bare, false, true) else {
            panic!("probe expected");
        };
        assert_eq!((p.rssi, p.freq_mhz, p.fcs), (None, None, FcsStatus::Absent));
        assert_eq!(
            decode(1, bare, false, true),
            Decoded::Malformed(Malformed::LinkType(1))
        );
        for cut in 0..f.len() {
            let _ = decode(127, &f[..cut], true, true);
            let _ = decode(105, &f[..cut], true, true);
        }
    }
}
