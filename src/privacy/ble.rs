//! BLE identifiers: the advertiser address of every report becomes a device pseudonym on entry
//! to the aggregator (docs/ble.md, "Privacy"). The pseudonym keys RAM-only state (census sets,
//! the address-to-beacon association for telemetry) and is never published: BLE events carry
//! beacon identities of allowlisted beacons and counts only.

use super::device::DevicePseudonymizer;

/// The pseudonym of a BLE address (6 bytes, most significant first) at `at_ms` and its key
/// epoch: HMAC-SHA256 under the rotating device key, so nothing links an address across a
/// rotation. Fails closed when there is no key: the caller drops the report.
pub fn address_pseudonym(
    devices: &DevicePseudonymizer,
    addr: &[u8; 6],
    at_ms: i64,
) -> Result<(String, i64), String> {
    devices.pseudonym(addr, at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_address_is_one_pseudonym_per_epoch() {
        let d = DevicePseudonymizer::new(Duration::from_secs(86_400), 8).expect("kernel CSPRNG");
        let addr = [0xc0, 0x11, 0x22, 0x33, 0x44, 0x55];
        let t = 1_764_000_000_000;
        let (a, e) = address_pseudonym(&d, &addr, t).unwrap_or_default();
        assert_eq!(a.len(), 16);
        assert!(!a.contains("c01122334455"));
        assert_eq!(
            address_pseudonym(&d, &addr, t + 1000).ok(),
            Some((a.clone(), e))
        );
        let (b, f) = address_pseudonym(&d, &addr, t + 86_400_000).unwrap_or_default();
        assert_ne!(a, b);
        assert_eq!(f, e + 1);
    }
}
