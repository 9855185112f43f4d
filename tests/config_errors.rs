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
            "FILE:6: mqtt.port: invalid type: a string, expected u16",
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

/// `check-config` on `text` written next to the files in `files` (name, content, mode); the
/// directory is shown as DIR in the message.
fn check_with_files(text: &str, files: &[(&str, &str, u32)]) -> (i32, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return (-1, e.to_string()),
    };
    for (name, content, mode) in files {
        let p = dir.path().join(name);
        if let Err(e) = std::fs::write(&p, content)
            .and_then(|_| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)))
        {
            return (-1, e.to_string());
        }
    }
    let path = dir.path().join("storegw.toml");
    if let Err(e) = std::fs::write(
        &path,
        text.replace("DIR", &dir.path().display().to_string()),
    ) {
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
    let msg = String::from_utf8_lossy(&out.stderr)
        .replace(&path.display().to_string(), "FILE")
        .replace(&dir.path().display().to_string(), "DIR");
    (out.status.code().unwrap_or(-1), msg)
}

#[test]
fn url_contradicting_tls_host_or_port_is_refused() {
    let refused: &[(&str, &str)] = &[
        (
            "[mqtt]\nurl = \"mqtt://broker.example.com:1883\"\ntls = true\n",
            "FILE:8: mqtt.tls: tls = true contradicts url `mqtt://broker.example.com:1883`",
        ),
        (
            "[mqtt]\ntls = true\nurl = \"tcp://127.0.0.1\"\n",
            "FILE:7: mqtt.tls: tls = true contradicts url `tcp://127.0.0.1`",
        ),
        (
            "[mqtt]\nurl = \"mqtts://broker.example.com\"\ntls = false\n",
            "FILE:8: mqtt.tls: tls = false contradicts url `mqtts://broker.example.com`",
        ),
        (
            "[mqtt]\nurl = \"mqtts://broker.example.com:8883\"\nhost = \"other.example.com\"\n",
            "FILE:8: mqtt.host: `other.example.com` contradicts url",
        ),
        (
            "[mqtt]\nurl = \"mqtts://broker.example.com:8883\"\nport = 1883\n",
            "FILE:8: mqtt.port: 1883 contradicts url",
        ),
    ];
    let mut failures = Vec::new();
    for (extra, want) in refused {
        let (code, msg) = check(&format!("{GOOD}\n{extra}"));
        if code != 2 || !msg.contains(want) {
            failures.push(format!("want `{want}` (exit 2), got exit {code}: {msg}"));
        }
    }
    // Dotted keys at the top level are the same keys.
    let (code, msg) = check(&format!(
        "mqtt.url = \"mqtt://127.0.0.1\"\nmqtt.tls = true\n{GOOD}"
    ));
    if code != 2 || !msg.contains("FILE:2: mqtt.tls: tls = true contradicts url") {
        failures.push(format!("dotted keys: got exit {code}: {msg}"));
    }
    for ok in [
        "[mqtt]\nurl = \"mqtts://broker.example.com:8883\"\ntls = true\n",
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\ntls = false\nhost = \"127.0.0.1\"\nport = 1883\n",
        "[mqtt]\nurl = \"mqtts://broker.example.com\"\n",
    ] {
        let (code, msg) = check(&format!("{GOOD}\n{ok}"));
        if code != 0 {
            failures.push(format!("`{ok}` must pass, got exit {code}: {msg}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn credentials_or_pos_in_clear_to_a_remote_broker_are_refused() {
    let creds = "username = \"s042-gw1\"\n";
    let pos = "[sources.pos]\nenabled = true\n[sources.pos.http]\nenabled = false\n";
    let refused = [
        format!("[mqtt]\nhost = \"broker.example.com\"\n{creds}"),
        format!("[mqtt]\nurl = \"mqtt://broker.example.com\"\n{creds}"),
        format!("[mqtt]\nurl = \"mqtt://10.1.2.3:1883\"\n{pos}"),
        format!("[mqtt]\nhost = \"192.168.0.10\"\ntls = false\n{creds}"),
        format!("[mqtt]\nhost = \"localhost.example.com\"\n{creds}"),
        format!("[mqtt]\nhost = \"0.0.0.0\"\n{creds}"),
        format!("[mqtt]\nhost = \"fe80::1\"\nallow_insecure = false\n{creds}"),
    ];
    let mut failures = Vec::new();
    for text in &refused {
        let (code, msg) = check(&format!("{GOOD}\n{text}"));
        if code != 2
            || !msg.contains("in clear")
            || !msg.contains("allow_insecure = true")
            || !(msg.contains(": mqtt.url: ") || msg.contains(": mqtt.tls: "))
        {
            failures.push(format!("`{text}` must be refused, got exit {code}: {msg}"));
        }
    }
    let allowed = [
        format!("[mqtt]\nhost = \"broker.example.com\"\nallow_insecure = true\n{creds}"),
        format!("[mqtt]\nhost = \"broker.example.com\"\ntls = true\n{creds}"),
        format!("[mqtt]\nurl = \"mqtts://broker.example.com\"\n{creds}{pos}"),
        format!("[mqtt]\nhost = \"127.0.0.1\"\n{creds}{pos}"),
        format!("[mqtt]\nhost = \"127.8.9.10\"\n{creds}"),
        format!("[mqtt]\nurl = \"mqtt://localhost:1884\"\n{creds}"),
        format!("[mqtt]\nurl = \"mqtt://[::1]:1884\"\n{creds}"),
        format!("[mqtt]\nhost = \"::ffff:127.0.0.1\"\n{creds}"),
        // Pseudonymized sensor data without credentials is not refused.
        "[mqtt]\nhost = \"broker.example.com\"\n".to_string(),
    ];
    for text in &allowed {
        let (code, msg) = check(&format!("{GOOD}\n{text}"));
        if code != 0 {
            failures.push(format!("`{text}` must pass, got exit {code}: {msg}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn secrets_readable_by_others_are_refused_with_file_and_mode() {
    let secrets: &[(&str, &str)] = &[
        (
            "[mqtt]\nusername = \"u\"\npassword_file = \"secret\"\n",
            "mqtt.password_file",
        ),
        (
            "[mqtt]\ntls = true\nclient_cert_file = \"cert.pem\"\nclient_key_file = \"secret\"\n",
            "mqtt.client_key_file",
        ),
        ("[privacy]\njoin_key_file = \"DIR/secret\"\n", "privacy.join_key_file"),
        (
            "[sources.pos]\nenabled = true\n[sources.pos.http]\ntoken_file = \"secret\"\n",
            "sources.pos.http.token_file",
        ),
        (
            "[sources.pos]\nenabled = true\n[sources.pos.http]\nenabled = false\n[[sources.pos.poll]]\nname = \"sq\"\napi = \"square\"\nurl = \"https://connect.squareup.com\"\nlocation_ids = [\"L1\"]\ntoken_file = \"secret\"\n",
            "sources.pos.poll.0.token_file",
        ),
    ];
    let modes: &[(u32, &str)] = &[
        (0o644, "mode 0644 is readable by group/others; chmod 600 it"),
        (0o640, "mode 0640 is readable by group; chmod 600 it"),
        (0o604, "mode 0604 is readable by others; chmod 600 it"),
        (
            0o660,
            "mode 0660 is readable and writable by group; chmod 600 it",
        ),
        (0o602, "mode 0602 is writable by others; chmod 600 it"),
    ];
    let mut failures = Vec::new();
    for (section, key) in secrets {
        let text = format!("{GOOD}\n{section}");
        for (mode, want) in modes {
            let files = [
                ("secret", "s3cret-value-0123456789\n", *mode),
                ("cert.pem", "x", 0o644),
            ];
            let (code, msg) = check_with_files(&text, &files);
            let want = format!("{key}: `DIR/secret`: {want}");
            if code != 2 || !msg.contains(&want) || msg.contains("s3cret") {
                failures.push(format!("want `{want}` (exit 2), got exit {code}: {msg}"));
            }
        }
        for mode in [0o600, 0o400] {
            let files = [
                ("secret", "s3cret-value-0123456789\n", mode),
                ("cert.pem", "x", 0o644),
            ];
            let (code, msg) = check_with_files(&text, &files);
            if code != 0 {
                failures.push(format!("{key} with mode {mode:o} must pass: {msg}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn run_refuses_a_readable_secret_before_starting() {
    use std::os::unix::fs::PermissionsExt;
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let pw = dir.path().join("mqtt.password");
    let cfg = dir.path().join("storegw.toml");
    let written = std::fs::write(&pw, "pw\n")
        .and_then(|_| std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)))
        .and_then(|_| {
            std::fs::write(
                &cfg,
                format!(
                    "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\nstate_dir = \"{}\"\n[mqtt]\nusername = \"u\"\npassword_file = \"mqtt.password\"\n[http]\nenabled = false\n",
                    dir.path().join("state").display()
                ),
            )
        });
    if let Err(e) = written {
        panic!("{e}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "mqtt.password_file: `{}`: mode 0644 is readable by group/others",
            pw.display()
        )),
        "{err}"
    );
    assert!(!dir.path().join("state").exists(), "nothing started");
}
