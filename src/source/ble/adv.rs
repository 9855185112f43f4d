//! Pure decoding of BLE advertising data (Core Spec Vol 3 Part C §11 and the Supplement to
//! the Core Specification Part A), and of the beacon formats a store deploys: Apple iBeacon,
//! Google Eddystone (UID, URL, TLM, EID) and AltBeacon.
//!
//! Nothing here allocates or does I/O: a gateway sees thousands of adverts per second and must
//! never fall behind or panic on what a radio hands it. Bad structures are skipped and counted.

use std::fmt;

/// Eddystone's 16-bit service UUID.
pub const EDDYSTONE_UUID: u16 = 0xFEAA;
/// Apple's Bluetooth SIG company identifier (iBeacon).
pub const APPLE: u16 = 0x004C;

/// Walks the AD structures of one advertising or scan-response payload.
///
/// A zero length octet is padding and is skipped (controllers pad to 31 bytes, and real
/// payloads carry structures after such padding). A length that runs past the end cannot be
/// resynchronised: it is counted in `malformed` and the walk stops, keeping what came before.
#[derive(Debug, Clone)]
pub struct AdIter<'a> {
    data: &'a [u8],
    pos: usize,
    /// Structures that could not be read (truncated).
    pub malformed: u32,
}

impl<'a> AdIter<'a> {
    /// Starts a walk over `data`.
    pub fn new(data: &'a [u8]) -> AdIter<'a> {
        AdIter {
            data,
            pos: 0,
            malformed: 0,
        }
    }
}

impl<'a> Iterator for AdIter<'a> {
    /// (AD type, AD data).
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        loop {
            let len = *self.data.get(self.pos)? as usize;
            if len == 0 {
                self.pos += 1;
                continue;
            }
            let start = self.pos + 1;
            let end = start + len;
            match (self.data.get(start), self.data.get(start + 1..end)) {
                (Some(&t), Some(body)) => {
                    self.pos = end;
                    return Some((t, body));
                }
                _ => {
                    self.malformed += 1;
                    self.pos = self.data.len();
                    return None;
                }
            }
        }
    }
}

/// AD types this gateway interprets (Assigned Numbers §2.3).
pub mod ad_type {
    /// Flags: one octet of discoverable-mode and BR/EDR support bits.
    pub const FLAGS: u8 = 0x01;
    /// Incomplete list of 16-bit service UUIDs: the device offers more than it lists.
    pub const UUID16_INCOMPLETE: u8 = 0x02;
    /// Complete list of 16-bit service UUIDs.
    pub const UUID16_COMPLETE: u8 = 0x03;
    /// Incomplete list of 32-bit service UUIDs.
    pub const UUID32_INCOMPLETE: u8 = 0x04;
    /// Complete list of 32-bit service UUIDs.
    pub const UUID32_COMPLETE: u8 = 0x05;
    /// Incomplete list of 128-bit service UUIDs.
    pub const UUID128_INCOMPLETE: u8 = 0x06;
    /// Complete list of 128-bit service UUIDs.
    pub const UUID128_COMPLETE: u8 = 0x07;
    /// Shortened local name (a prefix of the complete one).
    pub const NAME_SHORT: u8 = 0x08;
    /// Complete local name.
    pub const NAME_COMPLETE: u8 = 0x09;
    /// TX Power Level: one signed octet, the transmit power in dBm.
    pub const TX_POWER: u8 = 0x0A;
    /// Service data led by a 16-bit UUID (where Eddystone frames sit, UUID 0xFEAA).
    pub const SERVICE_DATA16: u8 = 0x16;
    /// Service data led by a 32-bit UUID.
    pub const SERVICE_DATA32: u8 = 0x20;
    /// Service data led by a 128-bit UUID.
    pub const SERVICE_DATA128: u8 = 0x21;
    /// Manufacturer specific data led by a 16-bit company id (iBeacon, AltBeacon).
    pub const MANUFACTURER: u8 = 0xFF;
}

/// A service UUID as advertised, widened to 128 bits on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceUuid {
    /// A 16-bit SIG-assigned UUID (e.g. Eddystone's 0xFEAA), in the Bluetooth Base UUID.
    U16(u16),
    /// A 32-bit SIG-assigned UUID, in the Bluetooth Base UUID.
    U32(u32),
    /// Big-endian (display order) bytes.
    U128([u8; 16]),
}

impl ServiceUuid {
    /// The full 128-bit UUID (short forms sit in the Bluetooth Base UUID).
    pub fn to_u128_bytes(self) -> [u8; 16] {
        const BASE: [u8; 16] = [
            0, 0, 0, 0, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0x80, 0x5f, 0x9b, 0x34, 0xfb,
        ];
        let mut b = BASE;
        match self {
            ServiceUuid::U16(v) => b[2..4].copy_from_slice(&v.to_be_bytes()),
            ServiceUuid::U32(v) => b[0..4].copy_from_slice(&v.to_be_bytes()),
            ServiceUuid::U128(full) => b = full,
        }
        b
    }
}

impl fmt::Display for ServiceUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_uuid(f, &self.to_u128_bytes())
    }
}

/// Writes 16 bytes in the 8-4-4-4-12 UUID form, lowercase.
pub fn write_uuid(f: &mut impl fmt::Write, b: &[u8; 16]) -> fmt::Result {
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            f.write_char('-')?;
        }
        write!(f, "{x:02x}")?;
    }
    Ok(())
}

/// The UUID string of 16 bytes (allocates; for events, not the hot path).
pub fn uuid_string(b: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    let _ = write_uuid(&mut s, b);
    s
}

fn reversed16(le: &[u8]) -> Option<[u8; 16]> {
    let mut out: [u8; 16] = le.get(..16)?.try_into().ok()?;
    out.reverse();
    Some(out)
}

/// One AD structure, interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ad<'a> {
    /// Flags (AD type 0x01): discoverable-mode and BR/EDR support bits.
    Flags(u8),
    /// A list of service UUIDs (`width` 2, 4 or 16 bytes, little-endian on air); a trailing
    /// partial UUID is ignored.
    Uuids {
        /// Bytes per UUID, from the AD type: 2, 4 or 16.
        width: u8,
        /// True for a complete list, false for an incomplete one (more services exist).
        complete: bool,
        /// The UUIDs as on air (little-endian); walk them with [`uuids`].
        raw: &'a [u8],
    },
    /// Local name bytes (UTF-8 by the spec, not guaranteed on air).
    Name {
        /// True for the Complete Local Name (0x09), false for the Shortened one (0x08).
        complete: bool,
        /// The name bytes, never empty (an empty name is counted as malformed).
        name: &'a [u8],
    },
    /// TX Power Level (AD type 0x0A): the device's transmit power in dBm.
    TxPower(i8),
    /// Service data (AD types 0x16, 0x20, 0x21): one service's payload after its UUID.
    ServiceData {
        /// The service the data belongs to (0xFEAA: an Eddystone frame).
        uuid: ServiceUuid,
        /// The service data after the UUID.
        data: &'a [u8],
    },
    /// Manufacturer specific data (AD type 0xFF), where iBeacon and AltBeacon frames sit.
    Manufacturer {
        /// Bluetooth SIG company identifier, little-endian on air (0x004C is Apple).
        company: u16,
        /// The vendor bytes after the company id.
        data: &'a [u8],
    },
    /// Any AD type not interpreted here, kept raw.
    Other {
        /// The AD type octet (Assigned Numbers).
        ad_type: u8,
        /// The AD data after the type octet.
        data: &'a [u8],
    },
}

impl<'a> Ad<'a> {
    /// Interprets one structure; `None` when its data is too short for its type.
    pub fn from_raw(t: u8, d: &'a [u8]) -> Option<Ad<'a>> {
        use ad_type::*;
        Some(match t {
            FLAGS => Ad::Flags(*d.first()?),
            UUID16_INCOMPLETE | UUID16_COMPLETE => Ad::Uuids {
                width: 2,
                complete: t == UUID16_COMPLETE,
                raw: d,
            },
            UUID32_INCOMPLETE | UUID32_COMPLETE => Ad::Uuids {
                width: 4,
                complete: t == UUID32_COMPLETE,
                raw: d,
            },
            UUID128_INCOMPLETE | UUID128_COMPLETE => Ad::Uuids {
                width: 16,
                complete: t == UUID128_COMPLETE,
                raw: d,
            },
            NAME_SHORT | NAME_COMPLETE => {
                if d.is_empty() {
                    return None;
                }
                Ad::Name {
                    complete: t == NAME_COMPLETE,
                    name: d,
                }
            }
            TX_POWER => Ad::TxPower(*d.first()? as i8),
            SERVICE_DATA16 => Ad::ServiceData {
                uuid: ServiceUuid::U16(u16::from_le_bytes([*d.first()?, *d.get(1)?])),
                data: d.get(2..)?,
            },
            SERVICE_DATA32 => Ad::ServiceData {
                uuid: ServiceUuid::U32(u32::from_le_bytes(d.get(..4)?.try_into().ok()?)),
                data: d.get(4..)?,
            },
            SERVICE_DATA128 => Ad::ServiceData {
                uuid: ServiceUuid::U128(reversed16(d)?),
                data: d.get(16..)?,
            },
            MANUFACTURER => Ad::Manufacturer {
                company: u16::from_le_bytes([*d.first()?, *d.get(1)?]),
                data: d.get(2..)?,
            },
            _ => Ad::Other {
                ad_type: t,
                data: d,
            },
        })
    }
}

/// Iterates the UUIDs of an [`Ad::Uuids`] list.
pub fn uuids(width: u8, raw: &[u8]) -> impl Iterator<Item = ServiceUuid> + '_ {
    raw.chunks_exact(width.max(1) as usize)
        .filter_map(move |c| match width {
            2 => Some(ServiceUuid::U16(u16::from_le_bytes([c[0], c[1]]))),
            4 => Some(ServiceUuid::U32(u32::from_le_bytes([
                c[0], c[1], c[2], c[3],
            ]))),
            16 => reversed16(c).map(ServiceUuid::U128),
            _ => None,
        })
}

/// Walks a payload and yields interpreted structures; unreadable ones are counted in
/// [`AdStructures::malformed`] and skipped.
pub struct AdStructures<'a> {
    inner: AdIter<'a>,
    bad: u32,
}

impl<'a> AdStructures<'a> {
    /// Starts a walk over `data`.
    pub fn new(data: &'a [u8]) -> AdStructures<'a> {
        AdStructures {
            inner: AdIter::new(data),
            bad: 0,
        }
    }

    /// Truncated or too-short structures seen so far.
    pub fn malformed(&self) -> u32 {
        self.inner.malformed + self.bad
    }
}

impl<'a> Iterator for AdStructures<'a> {
    type Item = Ad<'a>;
    fn next(&mut self) -> Option<Ad<'a>> {
        loop {
            let (t, d) = self.inner.next()?;
            match Ad::from_raw(t, d) {
                Some(ad) => return Some(ad),
                None => self.bad += 1,
            }
        }
    }
}

/// The Eddystone-URL scheme prefixes (spec: URL Scheme Prefix).
const URL_SCHEMES: [&str; 4] = ["http://www.", "https://www.", "http://", "https://"];
/// The Eddystone-URL expansion codes 0x00-0x0d (spec: HTTP URL encoding).
const URL_EXPANSIONS: [&str; 14] = [
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/", ".com", ".org", ".edu", ".net",
    ".info", ".biz", ".gov",
];

/// An Eddystone-URL as encoded on air (scheme byte and encoded bytes), checked against the
/// spec's alphabet; expanded only when an event is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedUrl<'a> {
    /// URL Scheme Prefix byte, 0x00-0x03: `http://www.`, `https://www.`, `http://`, `https://`.
    pub scheme: u8,
    /// The encoded URL after the prefix: printable ASCII and expansion codes 0x00-0x0d.
    pub encoded: &'a [u8],
}

impl<'a> EncodedUrl<'a> {
    /// Validates: a known scheme byte, and every byte either an expansion code or printable
    /// ASCII (0x0e-0x20 and 0x7f-0xff are reserved by the spec).
    pub fn new(scheme: u8, encoded: &'a [u8]) -> Option<EncodedUrl<'a>> {
        URL_SCHEMES.get(scheme as usize)?;
        if encoded
            .iter()
            .any(|&b| (0x0e..=0x20).contains(&b) || b >= 0x7f)
        {
            return None;
        }
        Some(EncodedUrl { scheme, encoded })
    }

    /// The expanded URL; scheme and host are lowercased (they are case-insensitive, RFC 3986),
    /// the path keeps its case.
    pub fn expand(&self) -> String {
        let mut s = String::with_capacity(self.encoded.len() + 16);
        s.push_str(URL_SCHEMES.get(self.scheme as usize).copied().unwrap_or(""));
        let mut in_host = true;
        for &b in self.encoded {
            match URL_EXPANSIONS.get(b as usize) {
                Some(exp) => {
                    s.push_str(exp);
                    if exp.ends_with('/') {
                        in_host = false;
                    }
                }
                None => {
                    let c = b as char;
                    if matches!(c, '/' | '?' | '#') {
                        in_host = false;
                    }
                    s.push(if in_host { c.to_ascii_lowercase() } else { c });
                }
            }
        }
        s
    }
}

/// Eddystone-TLM telemetry (unencrypted, version 0x00).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tlm {
    /// Battery millivolts; `None` when the beacon reports 0 (not battery powered).
    pub battery_mv: Option<u16>,
    /// Degrees Celsius (signed 8.8 fixed point on air); `None` for 0x8000 (not supported).
    pub temperature_c: Option<f64>,
    /// Advertising PDUs since power-up.
    pub adv_count: u32,
    /// Time since power-up in 0.1 s units, as on air.
    pub sec_count: u32,
}

/// A beacon frame found in an advertising payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Frame<'a> {
    /// Apple iBeacon: proximity UUID, major, minor, measured power at 1 m.
    IBeacon {
        /// Proximity UUID, in display order (big-endian on air).
        uuid: [u8; 16],
        /// Major, big-endian on air; an allowlist entry may match UUID and major.
        major: u16,
        /// Minor, big-endian on air: tells apart beacons that share UUID and major.
        minor: u16,
        /// Measured power: the RSSI in dBm expected at 1 m (the distance reference).
        tx_power: i8,
    },
    /// AltBeacon: 20-byte beacon id (id1 UUID, id2, id3), reference RSSI at 1 m.
    AltBeacon {
        /// Company id of the manufacturer data that carried the frame (the spec's MFG ID).
        mfg: u16,
        /// Beacon id: id1 (a 16-byte UUID), then id2 and id3 (2 bytes each, big-endian).
        id: [u8; 20],
        /// Reference RSSI: the RSSI in dBm expected at 1 m (the distance reference).
        ref_rssi: i8,
        /// The manufacturer-reserved byte (MFG RSVD); kept as read, not interpreted.
        reserved: u8,
    },
    /// Eddystone-UID; `tx_power` is calibrated at 0 m.
    EddystoneUid {
        /// Ranging Data: TX power in dBm as received at 0 m (the 1 m reference is 41 dB less).
        tx_power: i8,
        /// 10-byte namespace ID, the part the allowlist matches.
        namespace: [u8; 10],
        /// 6-byte instance ID: one beacon within the namespace.
        instance: [u8; 6],
    },
    /// Eddystone-URL; `tx_power` is calibrated at 0 m.
    EddystoneUrl {
        /// TX Power: calibrated power in dBm as received at 0 m (the 1 m reference is 41 dB less).
        tx_power: i8,
        /// The URL as encoded on air, checked; see [`EncodedUrl::expand`].
        url: EncodedUrl<'a>,
    },
    /// Eddystone-TLM, unencrypted.
    EddystoneTlm(Tlm),
    /// Eddystone-TLM, encrypted (ETLM): recognised, not decryptable without the beacon's key.
    /// Salt and MIC are `None` when the structure ends before them (seen in the wild).
    EddystoneEtlm {
        /// The 12 encrypted TLM bytes, opaque without the beacon's key.
        etlm: [u8; 12],
        /// The 2-byte random salt; `None` when the structure ends before it.
        salt: Option<[u8; 2]>,
        /// The 2-byte message integrity check; `None` when the structure ends before it.
        mic: Option<[u8; 2]>,
    },
    /// Eddystone-EID: an 8-byte rotating identifier; `tx_power` is calibrated at 0 m.
    EddystoneEid {
        /// Ranging Data: TX power in dBm as received at 0 m (the 1 m reference is 41 dB less).
        tx_power: i8,
        /// The 8-byte ephemeral id; it rotates, and only the beacon owner's service resolves it.
        eid: [u8; 8],
    },
}

impl Frame<'_> {
    /// Short name of the frame type (summary counters, logs).
    pub fn type_name(&self) -> &'static str {
        match self {
            Frame::IBeacon { .. } => "ibeacon",
            Frame::AltBeacon { .. } => "altbeacon",
            Frame::EddystoneUid { .. } => "eddystone_uid",
            Frame::EddystoneUrl { .. } => "eddystone_url",
            Frame::EddystoneTlm(_) => "eddystone_tlm",
            Frame::EddystoneEtlm { .. } => "eddystone_tlm_encrypted",
            Frame::EddystoneEid { .. } => "eddystone_eid",
        }
    }
}

/// Apple iBeacon in manufacturer data: type 0x02, length 0x15, UUID, major, minor (big-endian),
/// measured power. Extra trailing bytes (vendor extensions) are tolerated.
pub fn ibeacon(company: u16, d: &[u8]) -> Option<Frame<'static>> {
    if company != APPLE || d.first() != Some(&0x02) || d.get(1) != Some(&0x15) {
        return None;
    }
    let b = d.get(2..23)?;
    Some(Frame::IBeacon {
        uuid: b.get(..16)?.try_into().ok()?,
        major: u16::from_be_bytes([b[16], b[17]]),
        minor: u16::from_be_bytes([b[18], b[19]]),
        tx_power: b[20] as i8,
    })
}

/// AltBeacon in manufacturer data: beacon code 0xBEAC, 20-byte id, reference RSSI, one
/// manufacturer-reserved byte (AltBeacon spec v1.0).
pub fn altbeacon(company: u16, d: &[u8]) -> Option<Frame<'static>> {
    if d.get(..2)? != [0xBE, 0xAC] {
        return None;
    }
    let b = d.get(2..24)?;
    Some(Frame::AltBeacon {
        mfg: company,
        id: b.get(..20)?.try_into().ok()?,
        ref_rssi: b[20] as i8,
        reserved: b[21],
    })
}

/// An Eddystone frame from the service data of UUID 0xFEAA (Eddystone protocol specification).
pub fn eddystone(d: &[u8]) -> Option<Frame<'_>> {
    let (&frame_type, rest) = d.split_first()?;
    match frame_type {
        0x00 => {
            // UID: tx power, 10-byte namespace, 6-byte instance, 2 RFU bytes (often omitted).
            let tx_power = *rest.first()? as i8;
            Some(Frame::EddystoneUid {
                tx_power,
                namespace: rest.get(1..11)?.try_into().ok()?,
                instance: rest.get(11..17)?.try_into().ok()?,
            })
        }
        0x10 => {
            let tx_power = *rest.first()? as i8;
            let scheme = *rest.get(1)?;
            let url = EncodedUrl::new(scheme, rest.get(2..)?)?;
            Some(Frame::EddystoneUrl { tx_power, url })
        }
        0x20 => match *rest.first()? {
            0x00 => {
                let b = rest.get(1..13)?;
                let vbatt = u16::from_be_bytes([b[0], b[1]]);
                let temp = i16::from_be_bytes([b[2], b[3]]);
                Some(Frame::EddystoneTlm(Tlm {
                    battery_mv: (vbatt != 0).then_some(vbatt),
                    temperature_c: (temp != i16::MIN).then(|| temp as f64 / 256.0),
                    adv_count: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                    sec_count: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                }))
            }
            0x01 => {
                let b = rest.get(1..)?;
                let two = |i: usize| b.get(i..i + 2).and_then(|x| x.try_into().ok());
                Some(Frame::EddystoneEtlm {
                    etlm: b.get(..12)?.try_into().ok()?,
                    salt: two(12),
                    mic: two(14),
                })
            }
            _ => None,
        },
        0x30 => Some(Frame::EddystoneEid {
            tx_power: *rest.first()? as i8,
            eid: rest.get(1..9)?.try_into().ok()?,
        }),
        _ => None,
    }
}

/// What one advertising payload says, for the aggregators: the beacon frame if any, the first
/// advertised company id (census), the TX Power Level structure, and the malformed count.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Advert<'a> {
    /// The first beacon frame in the payload; `None` when there is none.
    pub frame: Option<Frame<'a>>,
    /// Company id of the first manufacturer data structure (the census's `by_company`).
    pub company: Option<u16>,
    /// The TX Power Level structure in dBm (the last one, if repeated); `None` when absent.
    pub tx_power: Option<i8>,
    /// Structures that were truncated or too short for their type.
    pub malformed: u32,
}

/// Decodes one payload in a single pass, without allocating.
pub fn decode(data: &[u8]) -> Advert<'_> {
    let mut out = Advert::default();
    let mut it = AdStructures::new(data);
    for ad in it.by_ref() {
        match ad {
            Ad::Manufacturer { company, data } => {
                out.company.get_or_insert(company);
                if out.frame.is_none() {
                    out.frame = ibeacon(company, data).or_else(|| altbeacon(company, data));
                }
            }
            Ad::ServiceData {
                uuid: ServiceUuid::U16(EDDYSTONE_UUID),
                data,
            } if out.frame.is_none() => out.frame = eddystone(data),
            Ad::TxPower(p) => out.tx_power = Some(p),
            _ => {}
        }
    }
    out.malformed = it.malformed();
    out
}

/// Parses hex text (either case, no separators) into `out`; false on bad input.
pub fn hex_decode(s: &str, out: &mut Vec<u8>) -> bool {
    out.clear();
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return false;
    }
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for pair in b.chunks_exact(2) {
        match (nib(pair[0]), nib(pair[1])) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        assert!(hex_decode(s, &mut v), "{s}");
        v
    }

    #[test]
    fn walks_padding_and_stops_on_overrun() {
        let d = h("0201060009163dfd63c0ff");
        let mut it = AdIter::new(&d);
        assert_eq!(it.next(), Some((0x01, &[0x06][..])));
        assert_eq!(it.next(), None);
        assert_eq!(it.malformed, 1);
        let d = h("020106000416aabbcc");
        let v: Vec<_> = AdIter::new(&d).collect();
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn ibeacon_spec_layout() {
        let d = h("0201061aff4c000215fda50693a4e24fb1afcfc6eb0764782500050006b0");
        let a = decode(&d);
        match a.frame {
            Some(Frame::IBeacon {
                uuid,
                major,
                minor,
                tx_power,
            }) => {
                assert_eq!(uuid_string(&uuid), "fda50693-a4e2-4fb1-afcf-c6eb07647825");
                assert_eq!((major, minor, tx_power), (5, 6, -80));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.company, Some(APPLE));
        // Cut one byte short of the measured power: not an iBeacon, and not malformed AD.
        let d = h("0201061aff4c000215fda50693a4e24fb1afcfc6eb07647825000500");
        assert_eq!(decode(&d).frame, None);
    }

    #[test]
    fn url_reserved_bytes_rejected_and_host_lowercased() {
        assert!(EncodedUrl::new(4, b"abc").is_none());
        assert!(EncodedUrl::new(0, &[b'a', 0x20]).is_none());
        let u = EncodedUrl::new(2, b"GOO.gl/C2HC48").map(|u| u.expand());
        assert_eq!(u.as_deref(), Some("http://goo.gl/C2HC48"));
        let u = EncodedUrl::new(1, &[b'E', b'x', 0x00, b'P']).map(|u| u.expand());
        assert_eq!(u.as_deref(), Some("https://www.ex.com/P"));
    }

    #[test]
    fn random_payloads_never_panic() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let heads: [&[u8]; 4] = [
            &[0x1a, 0xff, 0x4c, 0x00, 0x02, 0x15],
            &[0x1b, 0xff, 0x18, 0x01, 0xbe, 0xac],
            &[0x17, 0x16, 0xaa, 0xfe, 0x00],
            &[0x14, 0x16, 0xaa, 0xfe, 0x10],
        ];
        let mut frames = 0;
        for i in 0..50_000 {
            let mut p = heads[i % 4].to_vec();
            let n = (next() % 40) as usize;
            p.extend((0..n).map(|_| next() as u8));
            if i % 5 == 0 {
                p.truncate((next() % 40) as usize);
            }
            if let Some(f) = decode(&p).frame {
                frames += 1;
                if let Frame::EddystoneUrl { url, .. } = f {
                    let _ = url.expand();
                }
            }
            let _ = AdStructures::new(&p).count();
        }
        assert!(frames > 0);
    }
}
