//! `[sources.pos]` mistakes are reported by `storegw check-config` with file, line and key.

use std::process::Command;

#[test]
fn pos_config_errors_point_at_the_line() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        r#"[gateway]
store_id = "s1"
gateway_id = "g1"
state_dir = "state"

[sources.pos]
enabled = true
default_currency = "euro"
naive_time_offset = "1h"

[sources.pos.http]
token_file = "missing.token"

[[sources.pos.watch]]
dir = "inbox"
format = "xls"

[[sources.pos.poll]]
name = "sq"
api = "clover"
url = "ftp://x"
"#,
    )?;
    let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .arg("check-config")
        .arg(&cfg)
        .output()?;
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    for want in [
        "bad.toml:8: sources.pos.default_currency",
        "bad.toml:9: sources.pos.naive_time_offset",
        "sources.pos.http.token_file: cannot read",
        "sources.pos.watch.0.format",
        "sources.pos.poll.0.api",
        "sources.pos.poll.0.url",
        "sources.pos.poll.0.token_file: required",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    Ok(())
}
