//! The README's first command: `storegw demo` runs the whole pipeline against the embedded
//! rumqttd broker and reports what a subscriber received.

use std::process::Command;

fn demo(env: &[(&str, &str)]) -> Result<(String, String), Box<dyn std::error::Error>> {
    let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .args(["demo", "--duration", "3", "--rate", "400"])
        .env_remove("STOREGW_LOG")
        .envs(env.iter().copied())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "demo failed: {stdout}\n{stderr}");
    Ok((stdout, stderr))
}

/// The value after `key=` in `line`, up to the next space.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()
}

#[test]
fn demo_delivers_every_kind_through_the_embedded_broker() -> Result<(), Box<dyn std::error::Error>>
{
    let (text, stderr) = demo(&[])?;
    for kind in storegw::event::EventKind::ALL {
        assert!(
            text.contains(kind.as_str()),
            "no {kind} in the demo summary:\n{text}"
        );
    }
    assert!(text.contains("sample event"), "{text}");

    // A first run shows no error or warning: nothing went wrong.
    for line in text.lines().chain(stderr.lines()) {
        assert!(
            !line.contains("ERROR") && !line.contains("WARN"),
            "unexpected log line in a clean demo run: {line}"
        );
    }

    // The last status says where the gateway stands and what it did.
    let status = text
        .lines()
        .find(|l| l.starts_with("last status:"))
        .ok_or_else(|| format!("no last status line:\n{text}"))?;
    assert!(
        status.contains(r#"state="offline""#) || status.contains(r#"state="online""#),
        "{status}"
    );
    for key in ["uptime_s", "spool_depth", "delivered"] {
        let v = field(status, key).ok_or_else(|| format!("no {key} in: {status}"))?;
        assert!(
            v.parse::<u64>().is_ok(),
            "{key}={v} is not a number: {status}"
        );
    }
    let delivered: u64 = field(status, "delivered").unwrap_or("0").parse()?;
    assert!(delivered > 0, "{status}");
    assert!(!status.contains("null"), "{status}");
    Ok(())
}

/// The embedded broker's readiness probe is an MQTT session, not a bare TCP connect that
/// rumqttd would log as an error ("connection closed by peer") even with its log turned on.
#[test]
fn demo_broker_probe_is_not_logged_as_an_error() -> Result<(), Box<dyn std::error::Error>> {
    let (text, stderr) = demo(&[("STOREGW_LOG", "warn")])?;
    let all = format!("{text}\n{stderr}");
    assert!(
        !all.contains("connection closed by peer") && !all.contains("MQTT connect packet"),
        "{all}"
    );
    Ok(())
}
