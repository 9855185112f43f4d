//! IEEE 802.11 frames as far as footfall needs them: frame control, the management header
//! and the probe request body (information elements). Zero-copy and panic-free: a probe request
//! borrows its element bytes from the frame.

/// Frame type "management".
pub const TYPE_MGMT: u8 = 0;
/// Management subtype "probe request".
pub const SUBTYPE_PROBE_REQ: u8 = 4;
/// Element id of the SSID element.
pub const EID_SSID: u8 = 0;

/// The two frame-control octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameControl {
    /// Protocol Version (bits 0-1 of octet 0): only 0 is defined; other frames are rejected.
    pub version: u8,
    /// Type (bits 2-3): 0 management ([`TYPE_MGMT`]), 1 control, 2 data.
    pub ftype: u8,
    /// Subtype (bits 4-7), meaning depends on the type: 4 under management is a probe request.
    pub subtype: u8,
    /// The second octet's flag bits (Retry, Protected, +HTC/Order, ...), read by the methods.
    pub flags: u8,
}

impl FrameControl {
    /// Reads frame control from the first two octets.
    pub fn parse(b: &[u8]) -> Option<FrameControl> {
        let (&b0, &b1) = (b.first()?, b.get(1)?);
        Some(FrameControl {
            version: b0 & 0x03,
            ftype: (b0 >> 2) & 0x03,
            subtype: b0 >> 4,
            flags: b1,
        })
    }

    /// `+HTC/Order`: a management frame then carries a 4-byte HT Control field.
    pub fn order(&self) -> bool {
        self.flags & 0x80 != 0
    }

    /// Protected frame: the body is encrypted and cannot be walked.
    pub fn protected(&self) -> bool {
        self.flags & 0x40 != 0
    }

    /// Retransmission of an earlier frame.
    pub fn retry(&self) -> bool {
        self.flags & 0x08 != 0
    }

    /// True for a probe request.
    pub fn is_probe_request(&self) -> bool {
        self.ftype == TYPE_MGMT && self.subtype == SUBTYPE_PROBE_REQ
    }
}

/// A MAC address as transmitted.
pub type Mac = [u8; 6];

/// Locally administered (bit 1 of the first octet): how randomized MACs show up.
pub fn is_locally_administered(m: &Mac) -> bool {
    m[0] & 0x02 != 0
}

/// Group (multicast) bit: never set on a real transmitter address.
pub fn is_group(m: &Mac) -> bool {
    m[0] & 0x01 != 0
}

/// What the SSID element says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ssid<'a> {
    /// Zero-length SSID: "any network".
    Wildcard,
    /// A named network (bytes, not necessarily UTF-8).
    Directed(&'a [u8]),
    /// No complete SSID element in the frame.
    Missing,
}

impl Ssid<'_> {
    /// The only thing that leaves the gateway about an SSID.
    pub fn is_directed(&self) -> bool {
        matches!(self, Ssid::Directed(_))
    }
}

/// A parsed probe request; element bytes are borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest<'a> {
    /// Address 1 (DA): broadcast, or one AP's address for a unicast probe.
    pub da: Mac,
    /// Address 2 (SA): the transmitter's MAC; the privacy stage replaces it with a keyed hash.
    pub sa: Mac,
    /// Address 3 (BSSID): broadcast (any BSS), or the one BSS a unicast probe asks for.
    pub bssid: Mac,
    /// Sequence number (upper 12 bits of Sequence Control).
    pub seq: u16,
    /// Fragment number (low 4 bits of Sequence Control); 0 unless fragmented.
    pub frag: u8,
    /// The Retry bit of frame control: a retransmission of an earlier frame.
    pub retry: bool,
    /// The first SSID element; only whether it is directed leaves the gateway.
    pub ssid: Ssid<'a>,
    /// The element bytes (FCS already removed by the caller).
    pub elements: &'a [u8],
    /// False when the last element runs past the end of the frame.
    pub elements_complete: bool,
}

impl<'a> ProbeRequest<'a> {
    /// The complete elements, in order.
    pub fn elements(&self) -> Elements<'a> {
        Elements {
            rest: self.elements,
        }
    }
}

/// Why an 802.11 frame was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dot11Error {
    /// Shorter than the header its frame control announces.
    Truncated,
    /// Protocol version is not 0.
    BadVersion,
}

/// Iterator over complete information elements: `(id, body)`. Stops at the first element that
/// runs past the end; a walk can never loop because every step consumes at least two bytes.
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    rest: &'a [u8],
}

impl<'a> Elements<'a> {
    /// A walk over raw element bytes.
    pub fn new(rest: &'a [u8]) -> Elements<'a> {
        Elements { rest }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let (&id, &len) = (self.rest.first()?, self.rest.get(1)?);
        let body = self.rest.get(2..2 + len as usize)?;
        self.rest = self.rest.get(2 + len as usize..).unwrap_or(&[]);
        Some((id, body))
    }
}

/// True when the elements exactly fill `b` (no element runs past the end).
pub fn elements_complete(b: &[u8]) -> bool {
    let mut rest = b;
    while let (Some(_), Some(&len)) = (rest.first(), rest.get(1)) {
        match rest.get(2 + len as usize..) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

fn mac_at(b: &[u8], at: usize) -> Option<Mac> {
    b.get(at..at + 6)?.try_into().ok()
}

/// Parses a probe request (the caller checked frame control). `frame` excludes any FCS.
pub fn parse_probe_request(frame: &[u8]) -> Result<ProbeRequest<'_>, Dot11Error> {
    let fc = FrameControl::parse(frame).ok_or(Dot11Error::Truncated)?;
    if fc.version != 0 {
        return Err(Dot11Error::BadVersion);
    }
    let hdr_len = if fc.order() { 28 } else { 24 };
    let (Some(da), Some(sa), Some(bssid), Some(sc)) = (
        mac_at(frame, 4),
        mac_at(frame, 10),
        mac_at(frame, 16),
        frame.get(22..24),
    ) else {
        return Err(Dot11Error::Truncated);
    };
    let sc = u16::from_le_bytes([sc[0], sc[1]]);
    let elements = frame.get(hdr_len..).ok_or(Dot11Error::Truncated)?;
    let mut ssid = Ssid::Missing;
    let mut walked = 0usize;
    let mut it = Elements { rest: elements };
    for (id, body) in it.by_ref() {
        walked += 2 + body.len();
        if id == EID_SSID && ssid == Ssid::Missing {
            ssid = if body.is_empty() {
                Ssid::Wildcard
            } else {
                Ssid::Directed(body)
            };
        }
    }
    Ok(ProbeRequest {
        da,
        sa,
        bssid,
        seq: sc >> 4,
        frag: (sc & 0x0f) as u8,
        retry: fc.retry(),
        ssid,
        elements,
        elements_complete: walked == elements.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(ies: &[u8]) -> Vec<u8> {
        let mut f = vec![0x40, 0x00, 0, 0];
        f.extend([0xff; 6]);
        f.extend([0xda, 0xa1, 0x19, 0x00, 0x11, 0x22]);
        f.extend([0xff; 6]);
        f.extend(((1234u16 << 4) | 3).to_le_bytes());
        f.extend_from_slice(ies);
        f
    }

    #[test]
    fn wildcard_and_directed() {
        let f = probe(&[0, 0, 1, 2, 0x82, 0x84, 255, 1, 35]);
        let p = parse_probe_request(&f).expect("ok");
        assert_eq!(p.sa, [0xda, 0xa1, 0x19, 0x00, 0x11, 0x22]);
        assert!(is_locally_administered(&p.sa));
        assert!(!is_group(&p.sa));
        assert_eq!((p.seq, p.frag), (1234, 3));
        assert_eq!(p.ssid, Ssid::Wildcard);
        assert!(p.elements_complete);
        let ids: Vec<u8> = p.elements().map(|(id, _)| id).collect();
        assert_eq!(ids, [0, 1, 255]);
        let f = probe(&[0, 4, b'o', b'm', b'u', b's']);
        let p = parse_probe_request(&f).expect("ok");
        assert_eq!(p.ssid, Ssid::Directed(b"omus"));
        assert!(p.ssid.is_directed());
    }

    #[test]
    fn truncated_elements_and_header() {
        let f = probe(&[0, 0, 1, 8, 0x82]);
        let p = parse_probe_request(&f).expect("header ok");
        assert!(!p.elements_complete);
        assert_eq!(p.ssid, Ssid::Wildcard);
        let f = probe(&[0, 9, b'x']);
        let p = parse_probe_request(&f).expect("header ok");
        assert_eq!(p.ssid, Ssid::Missing);
        for cut in 0..24 {
            assert_eq!(
                parse_probe_request(&f[..cut]),
                Err(Dot11Error::Truncated),
                "cut {cut}"
            );
        }
        let mut g = probe(&[]);
        g[0] |= 1;
        assert_eq!(parse_probe_request(&g), Err(Dot11Error::BadVersion));
    }

    #[test]
    fn ht_control_shifts_body() {
        let mut f = probe(&[]);
        f[1] |= 0x80;
        f.extend([0xaa, 0xbb, 0xcc, 0xdd]);
        f.extend([0, 2, b'h', b'i']);
        let p = parse_probe_request(&f).expect("ok");
        assert_eq!(p.ssid, Ssid::Directed(b"hi"));
    }
}
