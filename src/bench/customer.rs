//! Cost of protecting one POS customer identifier: sealing (HPKE to the platform's key) beside
//! the keyed HMAC it replaces (issue: under 50 µs per identifier on the reference machine).

use super::Row;
use crate::config::recipient_keys::RecipientKeys;
use crate::privacy::customer::{CustomerKeys, RawCustomer};
use std::time::Instant;

/// µs per identifier, sealed and keyed, over the same phone numbers.
pub fn sealing() -> Result<Vec<Row>, String> {
    const N: u32 = 20_000;
    // A fixed valid public key (the X25519 base point): only the sealing cost is measured.
    let mut nine = [0u8; 32];
    nine[0] = 9;
    let keys = RecipientKeys::parse(&crate::config::recipient_keys::format_public_key(&nine))?;
    let sealed = CustomerKeys::sealed(keys.sealing().ok_or("no key")?, "bench", "49")?;
    let keyed = CustomerKeys::from_bytes(b"bench-join-key-0123456789abcdef", "49");
    let time = |k: &CustomerKeys| {
        let start = Instant::now();
        let mut n = 0u32;
        for i in 0..N {
            let c = RawCustomer {
                phone: Some(format!("+4917055{i:05}")),
                ..RawCustomer::default()
            };
            n += u32::from(k.pseudonyms(&c).is_some_and(|p| p.phone.is_some()));
        }
        (start.elapsed().as_secs_f64() * 1e6 / f64::from(N), n)
    };
    let (hmac_us, n1) = time(&keyed);
    let (seal_us, n2) = time(&sealed);
    if n1 != N || n2 != N {
        return Err("not every identifier was protected".into());
    }
    Ok(vec![Row::new(
        "POS customer identifier sealed (HPKE X25519/ChaCha20-Poly1305), per identifier",
        seal_us,
        "µs",
    )
    .baseline("keyed HMAC-SHA256", hmac_us)
    .target("under 50 µs", seal_us < 50.0)])
}
