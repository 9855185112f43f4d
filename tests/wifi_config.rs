//! `storegw check-config` on a broken `[sources.wifi]` section: every bad key named with its
//! file and line.

use std::path::Path;
use std::process::{Command, Output};

/// `storegw check-config PATH`, as store IT runs it.
fn check_config(path: &Path) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_storegw"))
        .arg("check-config")
        .arg(path)
        .output()
}

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
    let out = check_config(&path)?;
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
    let out = check_config(&path)?;
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

/// A broken `[sources.wifi.calibration]` section and a bad `infrastructure` entry are named
/// key by key with their lines; the section `storegw calibrate wifi` prints is accepted.
#[test]
fn calibration_and_infrastructure_are_checked() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cal.toml");
    let head = "[gateway]\nstore_id = \"s1\"\ngateway_id = \"gw1\"\nstate_dir = \"/tmp/x\"\n\n\
                [sources.wifi]\ninfrastructure = [\"dc:fb:48:68:be:e4\", \"not-a-mac\"]\n\n";
    std::fs::write(
        &path,
        format!(
            "{head}[sources.wifi.calibration]\nin_store_rssi = 5\nhold = \"2h\"\n\
             devices_per_person = 0\nbackground = -1\nrandomized_weight = 1.5\ninfrastructure_weight = -0.5\nequipment_fleet = 1\nresident_after = \"2d\"\nmin_stay = \"3h\"\n"
        ),
    )?;
    let out = check_config(&path)?;
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        msg.contains("sources.wifi.infrastructure: entry 2 is not a MAC address"),
        "{msg}"
    );
    assert!(!msg.contains("dc:fb:48"), "the list is never echoed: {msg}");
    for key in [
        "in_store_rssi",
        "hold",
        "devices_per_person",
        "background",
        "randomized_weight",
        "infrastructure_weight",
        "equipment_fleet",
        "resident_after",
        "min_stay",
    ] {
        assert!(
            msg.contains(&format!("sources.wifi.calibration.{key}")),
            "{key}: {msg}"
        );
    }
    // A list written as one string: the type error names the key and line, not the value,
    // in check-config and in run, however the address is spelled.
    for spelling in ["dc:fb:48:68:be:e4", "DC-FB-48-68-BE-E4", "dcfb4868bee4"] {
        std::fs::write(
            &path,
            head.replace(
                "[\"dc:fb:48:68:be:e4\", \"not-a-mac\"]",
                &format!("\"{spelling}\""),
            ),
        )?;
        for cmd in ["check-config", "run"] {
            let mut c = Command::new(env!("CARGO_BIN_EXE_storegw"));
            let out = if cmd == "run" {
                c.arg("run").arg("--config").arg(&path).output()?
            } else {
                c.arg(cmd).arg(&path).output()?
            };
            let msg = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{cmd}: {msg}");
            assert!(msg.contains("sources.wifi.infrastructure"), "{cmd}: {msg}");
            let folded = msg.to_ascii_lowercase().replace([':', '-'], "");
            assert!(!folded.contains("dcfb4868bee4"), "{cmd} echoed it: {msg}");
        }
    }
    let section = storegw::source::wifi::config::Calibration {
        in_store_rssi: Some(-75),
        equipment_fleet: 3,
        ..Default::default()
    }
    .to_toml();
    std::fs::write(
        &path,
        format!("{}{section}", head.replace(", \"not-a-mac\"", "")),
    )?;
    let out = check_config(&path)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What docs/wifi.md tells store IT to do: append the printed section to the shipped file.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/storegw.toml");
    let text = std::fs::read_to_string(&shipped)?;
    let cfg = storegw::config::load(&shipped).map_err(|e| e.to_string())?;
    assert_eq!(
        format!("{:?}", cfg.sources.wifi.calibration),
        format!(
            "{:?}",
            storegw::source::wifi::config::Calibration::default()
        ),
        "the shipped file's calibration is the defaults (its section commented out)"
    );
    std::fs::write(&path, format!("{text}\n{section}"))?;
    let out = check_config(&path)?;
    assert!(
        out.status.success(),
        "appended to the shipped file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = storegw::config::load(&path).map_err(|e| e.to_string())?;
    assert_eq!(cfg.sources.wifi.calibration.equipment_fleet, 3);
    assert_eq!(cfg.sources.wifi.calibration.in_store_rssi, Some(-75));
    Ok(())
}
