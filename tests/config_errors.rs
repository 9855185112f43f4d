//! `storegw check-config` on broken files: non-zero exit, file:line: key: message.

use std::process::Command;

const GOOD: &str = "[gateway]\nstore_id = \"s042\"\ngateway_id = \"gw1\"\nstate_dir = \"/tmp/x\"\n";

fn check(text: &str) -> (i32, String) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return (-1, e.to_string()),
    };
    let path = dir.path().join("bad.toml");
    if let Err(e) = std::fs::write(&path, text) {
        return (-1, e.to_string());
    }
    let out = match Command::new(env!("CARGO_BIN_EXE_storegw"))
        .arg("check-config")
        .arg(&path)
        .output()
    {
        Ok(o) => o,
        Err(e) => return (-1, e.to_string()),
    };
    let msg = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap_or(-1), msg)
}

#[test]
fn good_config_passes() {
    let (code, msg) = check(GOOD);
    assert_eq!(code, 0, "{msg}");
}

#[test]
fn shipped_configs_pass() {
    for f in ["config/storegw.toml", "config/demo.toml"] {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
            .arg("check-config")
            .arg(&p)
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) => panic!("cannot run storegw: {e}"),
        };
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn bad_configs_name_file_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "[gateway]\nstore_id = \"s042\"\n",
            "FILE:1: gateway: missing field `gateway_id`",
        ),
        (
            &format!("{GOOD}[mqtt]\nprot = 1883\n"),
            "FILE:6: mqtt.prot: unknown field `prot`",
        ),
        (
            &format!("{GOOD}[mqtt]\nport = \"abc\"\n"),
            "FILE:6: mqtt.port: invalid type: string \"abc\", expected u16",
        ),
        (
            &format!("{GOOD}[mqtt]\nport = 70000\n"),
            "FILE:6: mqtt.port:",
        ),
        (
            "[gateway]\nstore_id = \"s/42\"\ngateway_id = \"gw1\"\n",
            "FILE:2: gateway.store_id: `s/42` must match [A-Za-z0-9_-]{1,64}",
        ),
        (
            "[gateway]\nstore_id = \"s42\"\ngateway_id = \"gw#1\"\n",
            "FILE:3: gateway.gateway_id: `gw#1` must match",
        ),
        (
            &format!("{GOOD}[mqtt]\ntopic_prefix = \"storegw/+/v1\"\n"),
            "FILE:6: mqtt.topic_prefix: `storegw/+/v1` must be non-empty topic levels",
        ),
        (
            &format!("{GOOD}[mqtt]\nkeep_alive = \"30 parsecs\"\n"),
            "FILE:6: mqtt.keep_alive: unknown duration unit `parsecs`",
        ),
        (
            &format!("{GOOD}[mqtt]\nreconnect_min = \"10s\"\nreconnect_max = \"1s\"\n"),
            "FILE:7: mqtt.reconnect_max: must not be smaller than mqtt.reconnect_min",
        ),
        (
            &format!("{GOOD}[mqtt]\ntls = true\nca_file = \"/nonexistent/ca.pem\"\n"),
            "FILE:7: mqtt.ca_file: cannot read `/nonexistent/ca.pem`",
        ),
        (
            &format!("{GOOD}[mqtt]\nurl = \"http://broker:1883\"\n"),
            "FILE:6: mqtt.url: unsupported scheme `http`",
        ),
        (
            &format!("{GOOD}[spool.ble]\nmax_bytes = \"12 parsecs\"\nmax_age = \"1h\"\n"),
            "FILE:6: spool.ble.max_bytes: unknown size unit `parsecs`",
        ),
        (
            &format!("{GOOD}[spool]\nflush_interval = \"0s\"\n"),
            "FILE:6: spool.flush_interval: must be between 1ms and 60s",
        ),
        (
            &format!("{GOOD}[sources.sim]\nrate = -5.0\n"),
            "FILE:6: sources.sim.rate: must be greater than 0",
        ),
        (
            &format!("{GOOD}[log]\nlevel = \"loud\"\n"),
            "FILE:6: log.level: `loud` is not one of",
        ),
        (
            &format!("{GOOD}[mqtt]\nmax_inflight = 0\n"),
            "FILE:6: mqtt.max_inflight: 0 is out of range 1-1000",
        ),
        (
            &format!("{GOOD}[mqtt]\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n"),
            "FILE:7: mqtt.password_file: cannot read",
        ),
        ("[gateway\nstore_id = 1\n", "FILE:1:"),
    ];
    let mut failures = Vec::new();
    for (text, want) in cases {
        let (code, msg) = check(text);
        if code != 2 || !msg.contains(want) {
            failures.push(format!("want `{want}` (exit 2), got exit {code}: {msg}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn missing_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .args(["check-config", "/nonexistent/storegw.toml"])
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run storegw: {e}"),
    };
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("/nonexistent/storegw.toml: (file): cannot read"));
}
