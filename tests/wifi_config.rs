//! `storegw check-config` on a broken `[sources.wifi]` section: every bad key named with its
//! file and line.

use std::process::Command;

#[test]
fn bad_wifi_keys_are_reported_with_lines() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[gateway]\nstore_id = \"s1\"\ngateway_id = \"gw1\"\nstate_dir = \"/tmp/x\"\n\n\
         [sources.wifi]\nenabled = true\ninterface = \"wlan/1\"\nchannels = [6, 200]\n\
         window = \"7s\"\nin_store_rssi = 10\nsession_gap = \"1s\"\nbad_fcs = \"maybe\"\n",
    )?;
    let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .arg("check-config")
        .arg(&path)
        .output()?;
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // An unknown enum value is a parse error, reported alone with its line.
    assert!(msg.contains(":13:") && msg.contains("bad_fcs"), "{msg}");
    std::fs::write(
        &path,
        "[gateway]\nstore_id = \"s1\"\ngateway_id = \"gw1\"\nstate_dir = \"/tmp/x\"\n\n\
         [sources.wifi]\nenabled = true\ninterface = \"wlan/1\"\nchannels = [6, 200]\n\
         window = \"7s\"\nin_store_rssi = 10\nsession_gap = \"1s\"\n",
    )?;
    let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .arg("check-config")
        .arg(&path)
        .output()?;
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for (line, key) in [
        (8, "sources.wifi.interface"),
        (9, "sources.wifi.channels"),
        (10, "sources.wifi.window"),
        (11, "sources.wifi.in_store_rssi"),
        (12, "sources.wifi.session_gap"),
    ] {
        assert!(msg.contains(&format!(":{line}: {key}:")), "{key}: {msg}");
    }
    Ok(())
}
