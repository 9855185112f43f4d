//! `[sources.ble]`: the shipped file documents every key with its default, and mistakes are
//! reported as `file:line: key: message`.

use storegw::source::ble::BleConfig;

#[test]
fn shipped_file_lists_every_ble_key_with_its_default() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/storegw.toml");
    let cfg = match storegw::config::load(&p) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        format!("{:?}", cfg.sources.ble),
        format!("{:?}", BleConfig::default()),
        "config/storegw.toml must show the defaults"
    );
    let text = std::fs::read_to_string(&p).unwrap_or_default();
    let section = text
        .split("[sources.ble]")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let debug = format!("{:?}", BleConfig::default());
    // Every field name of the Debug form appears as a `key =` line of the section.
    for field in debug
        .split(['{', ',', '}'])
        .filter_map(|p| p.trim().split_once(':').map(|(k, _)| k.trim().to_string()))
        .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !k.is_empty())
    {
        assert!(
            section.contains(&format!("\n{field} ="))
                || section.contains(&format!("[sources.ble.{field}]")),
            "key {field} not documented in [sources.ble]"
        );
    }
}

/// Only this store's own beacons are known unless `known_beacons = "all"` is written: the
/// default does not publish the fixed identity of a phone app or personal tag.
#[test]
fn default_knows_only_allowlisted_beacons() {
    let base =
        "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\n\n[sources.ble]\nenabled = true\n";
    let cfg = match storegw::config::parse("x.toml", base, None) {
        Ok(c) => c,
        Err(e) => panic!("an empty allowlist is valid: {e}"),
    };
    assert_eq!(cfg.sources.ble.known_beacons, "allowlist");
    assert!(cfg.sources.ble.allowlist.is_empty());
    let text = format!("{base}known_beacons = \"all\"\n");
    match storegw::config::parse("x.toml", &text, None) {
        Ok(c) => assert_eq!(c.sources.ble.known_beacons, "all"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn bad_ble_values_name_line_and_key() {
    let base = "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\n\n[sources.ble]\n";
    let cases = [
        (
            "exit_rssi = -60\n",
            "x.toml:6: sources.ble.exit_rssi: must not be above enter_rssi",
        ),
        (
            "window = \"0s\"\n",
            "x.toml:6: sources.ble.window: must be between 1s and 1h",
        ),
        (
            "known_beacons = \"some\"\n",
            "x.toml:6: sources.ble.known_beacons: `some` is not one of all, allowlist",
        ),
        (
            "path_loss_exponent = 9.0\n",
            "x.toml:6: sources.ble.path_loss_exponent: must be between 1.0 and 6.0",
        ),
        (
            "rssi_smoothing = 0.0\n",
            "x.toml:6: sources.ble.rssi_smoothing: must be greater than 0",
        ),
        (
            "stall_timeout = \"1s\"\n",
            "x.toml:6: sources.ble.stall_timeout: must be between 2s and 24h",
        ),
        (
            "adapter = \"hci0/x\"\n",
            "x.toml:6: sources.ble.adapter: `hci0/x` is not an adapter name",
        ),
        (
            "scan_mode = 1\n",
            "x.toml:6: sources.ble.scan_mode: unknown field `scan_mode`",
        ),
        (
            "[sources.ble.allowlist]\nibeacon = [\"nope:1\"]\n",
            "x.toml:7: sources.ble.allowlist.ibeacon: `nope:1` is not \"uuid\" or \"uuid:major\"",
        ),
    ];
    for (extra, want) in cases {
        let text = format!("{base}{extra}");
        let err = storegw::config::parse("x.toml", &text, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with(want), "{extra}: got `{err}`, want `{want}`");
    }
}
