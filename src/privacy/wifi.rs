//! Wi-Fi identifiers: the source address and the information-element list of a probe request
//! become keyed SipHash values, and a visit is named by a pseudonym of its device-track number
//! (docs/wifi.md, "Privacy"; docs/design.md, "Privacy model").
//!
//! The address and fingerprint keys are drawn from the kernel CSPRNG per key epoch (the epochs
//! of [`DevicePseudonymizer`], forced rotations included), live only in RAM and are wiped when
//! replaced or dropped: a hash of today cannot be linked to one of yesterday. The hashes are
//! 64-bit values for RAM-only maps; they never leave the gateway. What leaves is counts and,
//! opt-in, visits named by [`visit_pseudonym`] (HMAC-SHA256 under the device key, hex).

use super::device::DevicePseudonymizer;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Element ids whose content describes the hardware and driver, so it is stable across scans.
const CONTENT_ELEMENTS: [u8; 7] = [
    1,   // supported rates
    50,  // extended supported rates
    127, // extended capabilities
    59,  // supported operating classes
    70,  // RM enabled capabilities
    107, // interworking
    114, // mesh id presence as a capability
];

/// What the key epoch of a frame means for the caller, who must forget everything keyed by
/// the old keys whenever they change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEpoch {
    /// The keys of the previous frame still apply (the epoch number is given).
    Current(i64),
    /// A new epoch: new keys were drawn and the old ones wiped; forget every hash made before.
    New(i64),
    /// A new epoch and no key material (the kernel CSPRNG failed): fail closed, drop the
    /// frame, and forget every hash made before, as for [`KeyEpoch::New`].
    NoKey,
}

/// The per-epoch keys of the Wi-Fi keyed hashes (source address, element fingerprint), so raw
/// MACs and element lists do not outlive the call that decodes their frame.
pub struct ProbeKeys {
    devices: Arc<DevicePseudonymizer>,
    epoch: i64,
    /// The pseudonymizer's forced-rotation count when `epoch` was computed.
    generation: i64,
    /// Event times known to lie in `epoch` (a time-zone lookup per frame would cost more
    /// than the rest of the frame's processing).
    from_ms: i64,
    until_ms: i64,
    addr: Zeroizing<[u8; 16]>,
    fingerprint: Zeroizing<[u8; 16]>,
}

impl ProbeKeys {
    /// Keys that follow the epochs of `devices`; none is drawn before the first frame.
    pub fn new(devices: Arc<DevicePseudonymizer>) -> ProbeKeys {
        ProbeKeys {
            devices,
            epoch: i64::MIN,
            generation: 0,
            from_ms: i64::MAX,
            until_ms: i64::MIN,
            addr: Zeroizing::new([0; 16]),
            fingerprint: Zeroizing::new([0; 16]),
        }
    }

    /// The key epoch of a frame received at `ts_ms`; a new epoch draws new keys (the old ones
    /// are wiped), and without key material the answer is [`KeyEpoch::NoKey`].
    pub fn epoch(&mut self, ts_ms: i64) -> KeyEpoch {
        let generation = self.devices.generation();
        if generation == self.generation && (self.from_ms..self.until_ms).contains(&ts_ms) {
            return KeyEpoch::Current(self.epoch);
        }
        self.generation = generation;
        let epoch = self.devices.epoch_of(ts_ms);
        if epoch == self.epoch && ts_ms < self.from_ms {
            self.from_ms = ts_ms;
            return KeyEpoch::Current(epoch);
        }
        let new = epoch != self.epoch;
        if new {
            self.epoch = i64::MIN;
            self.until_ms = i64::MIN;
            let Ok(k) = super::random_key() else {
                return KeyEpoch::NoKey;
            };
            self.addr.copy_from_slice(&k[..16]);
            self.fingerprint.copy_from_slice(&k[16..]);
            self.epoch = epoch;
        }
        self.from_ms = ts_ms;
        self.until_ms = self.devices.next_rotation_ms(ts_ms);
        match new {
            true => KeyEpoch::New(epoch),
            false => KeyEpoch::Current(epoch),
        }
    }

    /// The keyed hash of a source address under the epoch's address key: where a raw MAC
    /// dies. Call [`ProbeKeys::epoch`] for the frame first.
    pub fn address(&self, sa: &[u8]) -> u64 {
        SipHasher13::new_with_key(&self.addr).hash(sa)
    }

    /// The keyed hash of a globally unique address's maker prefix (its first three bytes)
    /// under the epoch's address key, apart from every address hash (four bytes hashed, not
    /// six): `source::wifi::fleet` learns the store's equipment by it.
    pub fn maker(&self, sa: &[u8]) -> u64 {
        let mut prefix = [b'm'; 4];
        for (d, s) in prefix.iter_mut().skip(1).zip(sa.iter()) {
            *d = *s;
        }
        SipHasher13::new_with_key(&self.addr).hash(&prefix)
    }

    /// A keyed hash of the stable parts of a probe request's information elements (`(id,
    /// body)` pairs in frame order): the element order, the capability contents that describe
    /// hardware and driver, vendor OUIs and types. Left out because they vary between scans of
    /// one device: the SSID (only its presence counts), the DS parameter set (channel), the
    /// supported MCS/NSS sets of HT/VHT/HE (they follow the active antenna chains), the
    /// contents of extension elements other than HE/EHT capabilities, and vendor element
    /// bodies. Device estimation links addresses by it; it never leaves the gateway.
    pub fn fingerprint<'a>(&self, elements: impl IntoIterator<Item = (u8, &'a [u8])>) -> u64 {
        fingerprint(&self.fingerprint, elements)
    }
}

/// [`ProbeKeys::fingerprint`] under `key`.
fn fingerprint<'a>(key: &[u8; 16], elements: impl IntoIterator<Item = (u8, &'a [u8])>) -> u64 {
    let mut h = SipHasher13::new_with_key(key);
    for (id, body) in elements {
        h.write_u8(id);
        match id {
            0 | 3 => {}
            221 => h.write(body.get(..4).unwrap_or(body)),
            255 => {
                let ext = body.first().copied().unwrap_or(0);
                h.write_u8(ext);
                match ext {
                    // HE capabilities: MAC (6) and PHY (11) capability fields.
                    35 => h.write(body.get(1..18).unwrap_or(body)),
                    // EHT capabilities: MAC (2) and PHY (9) capability fields.
                    108 => h.write(body.get(1..12).unwrap_or(body)),
                    _ => {}
                }
            }
            // HT capability info and A-MPDU parameters; extended, TxBF and ASEL capabilities.
            45 => {
                h.write(body.get(..3).unwrap_or(body));
                h.write(body.get(19..).unwrap_or(&[]));
            }
            // VHT capability info, not the MCS maps.
            191 => h.write(body.get(..4).unwrap_or(body)),
            id if CONTENT_ELEMENTS.contains(&id) => {
                h.write_u8(body.len() as u8);
                h.write(body);
            }
            _ => h.write_u8(body.len() as u8),
        }
    }
    h.finish()
}

/// The key of [`Infrastructure`] hashes: drawn once per process from the kernel CSPRNG, held
/// in RAM only, so a configuration reload hashes the same address to the same value and no
/// hash outlives the process.
fn infrastructure_key() -> Option<&'static [u8; 16]> {
    static KEY: std::sync::OnceLock<Option<[u8; 16]>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let k = super::random_key().ok()?;
        let mut out = [0u8; 16];
        out.copy_from_slice(&k[..16]);
        Some(out)
    })
    .as_ref()
}

/// Parses a MAC address written with `:` or `-` between bytes, dotted (`aabb.ccdd.eeff`) or
/// without separators.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let hex: Vec<u8> = s
        .bytes()
        .filter(|b| !matches!(b, b':' | b'-' | b'.'))
        .collect();
    if hex.len() != 12 || s.len() > 17 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, pair) in hex.chunks(2).enumerate() {
        let txt = std::str::from_utf8(pair).ok()?;
        *mac.get_mut(i)? = u8::from_str_radix(txt, 16).ok()?;
    }
    Some(mac)
}

/// `[sources.wifi] infrastructure`: the store's own equipment (PCs, tills, printers) that
/// probes all day and is not people. The addresses are hashed (keyed SipHash, key in RAM for
/// the process) the moment the configuration is read; the text as written is dropped there,
/// so the list can be compared against frames but never printed, logged or published.
#[derive(Clone, Default)]
pub struct Infrastructure {
    hashes: Vec<u64>,
    /// Validation messages (they name the entry by position, not by its content).
    errors: Vec<String>,
}

impl std::fmt::Debug for Infrastructure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Infrastructure({} addresses)", self.hashes.len())
    }
}

impl Infrastructure {
    /// Hashes `addresses`; entries that are not MAC addresses become validation errors.
    pub fn from_addresses<S: AsRef<str>>(addresses: &[S]) -> Infrastructure {
        let mut list = Infrastructure::default();
        let Some(key) = infrastructure_key() else {
            if !addresses.is_empty() {
                list.errors
                    .push("no key to hash the list (the kernel CSPRNG failed)".into());
            }
            return list;
        };
        for (i, a) in addresses.iter().enumerate() {
            match parse_mac(a.as_ref().trim()) {
                Some(mac) => list.hashes.push(SipHasher13::new_with_key(key).hash(&mac)),
                None => list
                    .errors
                    .push(format!("entry {} is not a MAC address", i + 1)),
            }
        }
        list.hashes.sort_unstable();
        list.hashes.dedup();
        list
    }

    /// Addresses listed.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// True when no address is listed.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Validation messages for `check-config`.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// True when `sa` is on the list (one keyed hash and a binary search).
    pub fn contains(&self, sa: &[u8]) -> bool {
        if self.hashes.is_empty() {
            return false;
        }
        let Some(key) = infrastructure_key() else {
            return false;
        };
        let h = SipHasher13::new_with_key(key).hash(sa);
        self.hashes.binary_search(&h).is_ok()
    }
}

impl<'de> serde::Deserialize<'de> for Infrastructure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let written: Zeroizing<Vec<String>> = Zeroizing::new(Vec::deserialize(d)?);
        Ok(Infrastructure::from_addresses(&written))
    }
}

/// The `device` of a `wifi.visit`: a pseudonym of the visit's track number (an estimator
/// counter, random per device and epoch) under the rotating device key, at the visit's last
/// in-store time; never derived from an address or a fingerprint. None when there is no key
/// (fail closed: the visit is not published under a weak name).
pub fn visit_pseudonym(devices: &DevicePseudonymizer, track: u64, at_ms: i64) -> Option<String> {
    let mut raw = *b"wifi-track\0\0\0\0\0\0\0\0";
    raw[10..].copy_from_slice(&track.to_le_bytes());
    devices.pseudonym(&raw, at_ms).ok().map(|(d, _)| d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SA: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    fn devices(rotation_s: u64) -> Arc<DevicePseudonymizer> {
        DevicePseudonymizer::new(Duration::from_secs(rotation_s), 8)
            .map(Arc::new)
            .expect("kernel CSPRNG")
    }

    #[test]
    fn address_hashes_hold_within_an_epoch_and_change_with_it() {
        let d = devices(60);
        let mut k = ProbeKeys::new(d.clone());
        let t0 = 1_700_000_040_000; // a minute boundary
        let e = d.epoch_of(t0);
        assert_eq!(k.epoch(t0 + 1000), KeyEpoch::New(e));
        let a = k.address(&SA);
        assert_eq!(k.epoch(t0 + 2000), KeyEpoch::Current(e));
        assert_eq!(k.epoch(t0), KeyEpoch::Current(e), "earlier, same epoch");
        assert_eq!(k.address(&SA), a);
        assert_ne!(k.address(&[0x02, 0x11, 0x22, 0x33, 0x44, 0x56]), a);
        assert_eq!(k.epoch(t0 + 61_000), KeyEpoch::New(e + 1));
        assert_ne!(k.address(&SA), a, "a new epoch, a new key");
        d.rotate_now();
        assert_eq!(
            k.epoch(t0 + 62_000),
            KeyEpoch::New(e + 2),
            "forced rotation"
        );
        let mut other = ProbeKeys::new(d.clone());
        assert_eq!(other.epoch(t0 + 62_000), KeyEpoch::New(e + 2));
        assert_ne!(
            other.address(&SA),
            k.address(&SA),
            "keys are random per stage"
        );
    }

    /// `(id, body)` pairs of raw element bytes, as the Wi-Fi decoder walks them.
    fn elements(mut rest: &[u8]) -> Vec<(u8, &[u8])> {
        let mut out = Vec::new();
        while let [id, len, tail @ ..] = rest {
            let Some(body) = tail.get(..*len as usize) else {
                break;
            };
            out.push((*id, body));
            rest = &tail[*len as usize..];
        }
        out
    }

    #[test]
    fn fingerprint_ignores_what_varies_between_scans() {
        let key = [7u8; 16];
        let fp = |ies: &[u8]| fingerprint(&key, elements(ies));
        // SSID content, channel, HT MCS set and HE MCS map differ; capabilities do not.
        let mut ht_a = vec![45, 26, 0x2d, 0x40, 0x1b, 0xff, 0x00];
        ht_a.extend([0u8; 21]);
        let mut ht_b = vec![45, 26, 0x2d, 0x40, 0x1b, 0xff, 0xff];
        ht_b.extend([0u8; 21]);
        let mut a = vec![0, 0, 1, 2, 0x82, 0x84, 3, 1, 1];
        a.extend(&ht_a);
        let mut b = vec![0, 3, b'a', b'b', b'c', 1, 2, 0x82, 0x84, 3, 1, 11];
        b.extend(&ht_b);
        assert_eq!(fp(&a), fp(&b));
        // Other rates: another device.
        let mut c = vec![0, 0, 1, 2, 0x02, 0x04, 3, 1, 1];
        c.extend(&ht_a);
        assert_ne!(fp(&a), fp(&c));
        // Another key: unrelated values.
        assert_ne!(fingerprint(&[8u8; 16], elements(&a)), fp(&a));
    }

    #[test]
    fn infrastructure_is_hashed_and_matched_in_any_spelling() {
        let l = Infrastructure::from_addresses(&["DC:FB:48:68:BE:E4", "40-ec-99-f9-34-a6", "nope"]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.errors(), ["entry 3 is not a MAC address"]);
        assert!(l.contains(&[0xdc, 0xfb, 0x48, 0x68, 0xbe, 0xe4]));
        assert!(l.contains(&[0x40, 0xec, 0x99, 0xf9, 0x34, 0xa6]));
        assert!(!l.contains(&[0x40, 0xec, 0x99, 0xf9, 0x34, 0xa7]));
        let shown = format!("{l:?}");
        assert!(!shown.to_lowercase().contains("dc:fb") && !shown.contains("40-ec"));
        assert_eq!(
            parse_mac("dcfb.4868.bee4"),
            Some([0xdc, 0xfb, 0x48, 0x68, 0xbe, 0xe4])
        );
        assert_eq!(parse_mac("dc:fb:48:68:be"), None);
    }

    #[test]
    fn visit_pseudonyms_are_per_track_and_per_epoch() {
        let d = devices(86_400);
        let t = 1_764_000_000_000;
        let a = visit_pseudonym(&d, 1, t).unwrap_or_default();
        assert_eq!(a.len(), 16);
        assert_eq!(visit_pseudonym(&d, 1, t + 1000).as_deref(), Some(&*a));
        assert_ne!(visit_pseudonym(&d, 2, t).as_deref(), Some(&*a));
        d.rotate_now();
        assert_ne!(visit_pseudonym(&d, 1, t).as_deref(), Some(&*a));
    }
}
