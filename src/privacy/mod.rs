//! The privacy boundary: every transformation of an identifier happens in this folder, and
//! nowhere else (docs/design.md, "Privacy model"). Sources hand raw identifiers in, in RAM, and
//! get back pseudonyms, keyed hashes, scrubbed text or a refusal; this module imports nothing
//! of the sources.
//!
//! Where each identifier dies, and what leaves the gateway instead:
//!
//! | Identifier | Where it dies (file, function) | What leaves the gateway |
//! |---|---|---|
//! | Wi-Fi source MAC | `wifi.rs`, `ProbeKeys::address` | nothing per device: counts in `wifi.census` |
//! | Wi-Fi maker prefix (first three bytes of a globally unique address) | `wifi.rs`, `ProbeKeys::maker` | nothing: its devices count as equipment (`resident_estimated`) |
//! | Wi-Fi element list (capabilities) | `wifi.rs`, `ProbeKeys::fingerprint` | nothing: links addresses to device tracks in RAM |
//! | Wi-Fi SSID | dropped with its frame; `Ssid::is_directed` (`source/wifi/dot11.rs`) keeps one bit | `directed_probes` count |
//! | Wi-Fi device track (estimated device) | `wifi.rs`, `visit_pseudonym` | `wifi.visit` `device` (opt-in): HMAC-SHA256, daily key, hex |
//! | BLE advertiser address | `ble.rs`, `address_pseudonym` | nothing per device: counts in `ble.census` |
//! | BLE beacon identity (iBeacon, Eddystone, AltBeacon) | not transformed: only allowlisted beacons are known (`source/ble/aggregate.rs`, `Known::matches`) | the identity of the store's own beacons; other beacons only counted |
//! | Device key (Wi-Fi, BLE) | `device.rs`, `DevicePseudonymizer::pseudonym` (wiped at rotation), `expire`, `rotate_now` | never |
//! | Wi-Fi hash keys | `wifi.rs`, `ProbeKeys::epoch` (wiped at rotation) | never |
//! | Card number (PAN) in free text | `card.rs`, `scrub_text` (through `pii.rs`, `FreeText::text`) | `[card removed]` and flag `card_number_removed` |
//! | PAN in an identifier (transaction id, register, SKU) | `card.rs`, `identifier_holds_card` | nothing: the transaction is refused |
//! | CVV, track data, PIN block | `card.rs`, `is_forbidden_field`, `looks_like_track` | nothing: the whole input is refused |
//! | E-mail address, phone number in free text | `pii.rs`, `scrub_emails`, `scrub_phones` (through `FreeText::text`) | `[email removed]`, `[phone removed]` and their flags |
//! | Personal values quoted in an error | `pii.rs`, `redact_message`; `card.rs`, `scrub` (rejected ids) | `[redacted]` in rejections (HTTP answer, `.error` file, log) |
//! | Customer loyalty id, e-mail, phone | `customer.rs`, `CustomerKeys::pseudonyms` (sealing in `sealed.rs`, `Sealer::seal`) | `customer` object by `privacy.customer`: `sealed` (HPKE to the platform's key, base64url token, randomized; nothing on the gateway opens or tests it), `keyed` (HMAC-SHA256 under the join key, 64 hex) or `drop` |
//! | Customer name, postal address | not read: `customer.rs`, `RawCustomer` has no field for them | nothing |
//! | MAC-like text in a log line | `logs.rs`, `scrub` | `[addr]` |
//!
//! Callers: `source/wifi/frame_stage.rs` (`FrameStage::frame`) and `source/wifi/footfall.rs`
//! (`Footfall::emit_visit`) for Wi-Fi; `source/ble/aggregate.rs` (`Aggregator::push`) for BLE;
//! `source/pos/normalize.rs` (`normalize_at`), the POS parsers and `source/pos/transaction.rs`
//! (`Reject::new`) for POS; `ops/logging.rs` for logs. Counts below `privacy.min_count` are
//! withheld with [`suppress`].
//!
//! Hashes outside this folder that are not identifier transformations, on purpose: the map
//! hasher of `source/wifi/estimate.rs` (`U64Hasher`, over values that are already keyed
//! hashes or track numbers), the SHA-256 of a finished, scrubbed `pos.transaction` body
//! (`source/pos/normalize.rs`, `content_hash`: idempotency conflicts), the in-RAM hash of
//! transaction ids in `source/pos/stream.rs` (adjacency check; transaction ids are published
//! as they are), and the digests of signed documents and keys in `remote/`.
//!
//! One module per concept: `device` (device keys and their rotation), `wifi`, `ble`, `card`,
//! `pii` (personal data in free text and error texts, with the text folding of `textfold`),
//! `customer` (with `sealed`: HPKE sealing to the central platform's key), `logs`.

pub mod ble;
pub mod card;
pub mod customer;
pub mod device;
pub mod logs;
pub mod pii;
pub mod sealed;
pub mod textfold;
/// `storegw unseal` and `keygen --recipient`: the central platform's side of sealed customer
/// identifiers, not in the store binary.
#[cfg(feature = "unseal")]
pub mod unseal;
pub mod wifi;

// The device pseudonymizer is what the daemon and every sensor source hold.
pub use device::{init_local_offset, local_offset_at, random_key, DeviceKey, DevicePseudonymizer};

/// Lowercase hex: how pseudonyms (and beacon ids) are written on the wire.
pub fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

/// k-anonymity: a count below `min_count` is reported as 0, with the flag set, so no published
/// figure can single out fewer than `privacy.min_count` devices.
pub fn suppress(count: u64, min_count: u32) -> (u64, bool) {
    if count > 0 && count < min_count as u64 {
        (0, true)
    } else {
        (count, false)
    }
}

/// Complementary suppression. `parts` add up to a whole that is published (or can be
/// recomputed), so a part withheld alone would be the whole minus the others. Parts below
/// `min_count` are withheld, then the smallest others until the withheld parts together
/// count at least `min_count` (or all are withheld): what subtraction recovers is then a
/// group of at least `min_count`, never fewer.
pub fn suppress_parts(parts: &[u64], min_count: u32) -> Vec<(u64, bool)> {
    let mut out: Vec<(u64, bool)> = parts.iter().map(|&n| suppress(n, min_count)).collect();
    let mut hidden: u64 = parts
        .iter()
        .zip(&out)
        .filter(|(_, o)| o.1)
        .map(|(n, _)| *n)
        .sum();
    while hidden > 0 && hidden < u64::from(min_count) {
        let smallest = parts
            .iter()
            .zip(&out)
            .enumerate()
            .filter(|(_, (&n, o))| n > 0 && !o.1)
            .min_by_key(|(_, (&n, _))| n)
            .map(|(i, (&n, _))| (i, n));
        let Some((i, n)) = smallest else { break };
        if let Some(o) = out.get_mut(i) {
            *o = (0, true);
        }
        hidden += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_withheld_part_cannot_be_recovered_from_the_whole() {
        // 10 devices, 8 in the store, 2 passing: the 2 alone would be 10 − 8.
        assert_eq!(suppress_parts(&[8, 2], 3), [(0, true), (0, true)]);
        // Two small parts together reach k: the rest stays published.
        assert_eq!(
            suppress_parts(&[9, 2, 2], 3),
            [(9, false), (0, true), (0, true)]
        );
        // The smallest published part is added first.
        assert_eq!(
            suppress_parts(&[9, 4, 1], 3),
            [(9, false), (0, true), (0, true)]
        );
        // Nothing small, nothing withheld; k = 1 withholds nothing.
        assert_eq!(
            suppress_parts(&[5, 3, 0], 3),
            [(5, false), (3, false), (0, false)]
        );
        assert_eq!(suppress_parts(&[1, 1], 1), [(1, false), (1, false)]);
        // Whatever the parts, the withheld ones sum to 0 or to at least k.
        let mut x = 7u64;
        for _ in 0..2_000 {
            let parts: Vec<u64> = (0..4)
                .map(|_| {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (x >> 60) % 6
                })
                .collect();
            let out = suppress_parts(&parts, 4);
            let hidden: u64 = parts
                .iter()
                .zip(&out)
                .filter(|(_, o)| o.1)
                .map(|(n, _)| n)
                .sum();
            assert!(
                hidden == 0 || hidden >= 4 || out.iter().all(|o| o.1 || o.0 == 0),
                "{parts:?} {out:?}"
            );
            for (n, o) in parts.iter().zip(&out) {
                assert!(
                    o.1 || (o.0 == *n && (*n == 0 || *n >= 4)),
                    "{parts:?} {out:?}"
                );
            }
        }
    }

    #[test]
    fn suppression() {
        assert_eq!(suppress(2, 3), (0, true));
        assert_eq!(suppress(3, 3), (3, false));
        assert_eq!(suppress(0, 3), (0, false));
    }
}
