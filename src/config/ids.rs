//! Identifiers and hosts as the configuration and the remote topics accept them: ids that are
//! one MQTT topic level, the ids reserved for the remote topics, and what counts as this machine.
//!
//! A leaf of the configuration layer: it imports nothing of storegw, so the configuration, the
//! remote tools and the operator tools share one rule without importing each other.

/// Store ids no gateway may use: `{prefix}/_fleet/config` is every gateway's fleet topic, and
/// an ACL written for a store named `_fleet` would cover it.
pub const RESERVED_STORE_IDS: &[&str] = &["_fleet"];

/// Gateway ids no gateway may use: `{prefix}/{store}/config` and `.../cmd` would then be both a
/// gateway's level and another's remote topics.
pub const RESERVED_GATEWAY_IDS: &[&str] = &["config", "cmd"];

/// True for ids that are safe as one MQTT topic level (docs/design.md, "Wire contract").
pub fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// True when `host` is this machine (a loopback address or `localhost`): plain MQTT to it never
/// crosses a network. Anything else, names that merely look local included, is remote.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match h.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => a.is_loopback(),
        Ok(std::net::IpAddr::V6(a)) => {
            a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v| v.is_loopback())
        }
        Err(_) => false,
    }
}
