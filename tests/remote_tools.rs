//! The central team's remote-configuration tools as the real binary runs them: `keygen` →
//! `sign` → `verify` (accepted, tampered, expired, forbidden key), and `push` to a real mosquitto,
//! checking that the retained document arrives byte for byte on the gateway's and the fleet's
//! config topics.

mod common;
use common::*;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn storegw(args: &[&str], dir: &Path) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_storegw"))
        .args(args)
        .current_dir(dir)
        .output()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn keygen_and_local(dir: &Path) -> TestResult {
    let o = storegw(&["keygen", "--out", "central"], dir)?;
    assert!(o.status.success(), "{}", text(&o));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("central.key"))?
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(dir.join("central.pub"))?.starts_with("ed25519:"));
    // keygen never overwrites a key.
    let again = storegw(&["keygen", "--out", "central"], dir)?;
    assert!(!again.status.success());
    // The gateway's local file, trusting the public key.
    std::fs::write(
        dir.join("local.toml"),
        format!(
            "[gateway]\nstore_id = \"s042\"\ngateway_id = \"gw1\"\nstate_dir = \"{}\"\n\n[http]\nenabled = false\n\n[remote]\npublic_key_file = \"central.pub\"\n",
            dir.join("state").display()
        ),
    )?;
    let o = storegw(&["check-config", "local.toml"], dir)?;
    assert!(o.status.success(), "{}", text(&o));
    Ok(())
}

fn sign(dir: &Path, name: &str, overlay: &str) -> Result<Output, Box<dyn std::error::Error>> {
    std::fs::write(dir.join(name), overlay)?;
    Ok(storegw(&["sign", name, "--key", "central.key"], dir)?)
}

fn verify(dir: &Path, name: &str) -> std::io::Result<Output> {
    storegw(
        &[
            "verify",
            name,
            "--public-key",
            "central.pub",
            "--config",
            "local.toml",
        ],
        dir,
    )
}

#[test]
fn keygen_sign_verify() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    keygen_and_local(dir)?;

    let o = sign(
        dir,
        "change.toml",
        "version = 3\ntarget = \"s042/gw1\"\n[log]\nlevel = \"debug\"\n",
    )?;
    assert!(o.status.success(), "{}", text(&o));
    let o = verify(dir, "change.toml.signed")?;
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("level = \"debug\""), "{out}");
    assert!(out.contains("store_id = \"s042\""), "{out}");

    // The same document when the gateway already applied version 3: a replay.
    let o = storegw(
        &[
            "verify",
            "change.toml.signed",
            "--public-key",
            "central.pub",
            "--config",
            "local.toml",
            "--last-version",
            "3",
        ],
        dir,
    )?;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("rejected: stale_version: 3 <= 3"),
        "{}",
        text(&o)
    );

    // One byte changed after signing.
    let signed = std::fs::read_to_string(dir.join("change.toml.signed"))?;
    std::fs::write(
        dir.join("tampered.signed"),
        signed.replace("debug", "trace"),
    )?;
    let o = verify(dir, "tampered.signed")?;
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("rejected: bad_signature"), "{}", text(&o));

    // Expired.
    let o = sign(
        dir,
        "old.toml",
        "version = 4\ntarget = \"s042/gw1\"\nnot_after = 2020-01-01T00:00:00Z\n[log]\nlevel = \"warn\"\n",
    )?;
    assert!(o.status.success(), "{}", text(&o));
    let o = verify(dir, "old.toml.signed")?;
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("rejected: expired"), "{}", text(&o));

    // A secret's path.
    let o = sign(
        dir,
        "pw.toml",
        "version = 5\ntarget = \"s042/gw1\"\n[mqtt]\npassword_file = \"/tmp/pw\"\n",
    )?;
    assert!(o.status.success(), "{}", text(&o));
    let o = verify(dir, "pw.toml.signed")?;
    assert!(
        text(&o).contains("rejected: forbidden_key: mqtt.password_file"),
        "{}",
        text(&o)
    );

    // A value check-config refuses.
    let o = sign(
        dir,
        "bad.toml",
        "version = 6\ntarget = \"s042/gw1\"\n[log]\nlevel = \"loud\"\n",
    )?;
    assert!(o.status.success(), "{}", text(&o));
    let o = verify(dir, "bad.toml.signed")?;
    assert!(
        text(&o).contains("rejected: invalid: log.level: "),
        "{}",
        text(&o)
    );

    // sign refuses a file without an integer version, or that is not TOML.
    let o = sign(dir, "nover.toml", "[log]\nlevel = \"debug\"\n")?;
    assert!(!o.status.success());
    assert!(text(&o).contains("version"), "{}", text(&o));
    let o = sign(
        dir,
        "broken.toml",
        "version = 7\ntarget = \"s042/gw1\"\n[log\n",
    )?;
    assert!(!o.status.success());
    Ok(())
}

/// Subscribes to `filter` and returns the retained (topic, payload) pairs seen within `wait`.
async fn retained(port: u16, filter: &str, wait: Duration) -> Vec<(String, Vec<u8>, bool)> {
    let mut o = MqttOptions::new(format!("test-read-{}", free_port()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 16);
    let mut got = Vec::new();
    let until = Instant::now() + wait;
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(200), ev.poll()).await {
            Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {
                let _ = client.subscribe(filter, QoS::AtLeastOnce).await;
            }
            Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => {
                got.push((p.topic.clone(), p.payload.to_vec(), p.retain));
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => {}
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_publishes_retained_on_config_topics() -> TestResult {
    require_mosquitto!();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let broker = Mosquitto::start(&dir.join("mosq"), "")?;
    keygen_and_local(dir)?;
    let o = sign(
        dir,
        "change.toml",
        "version = 3\ntarget = \"s042/gw1\"\n[log]\nlevel = \"debug\"\n",
    )?;
    assert!(o.status.success(), "{}", text(&o));
    let url = format!("mqtt://127.0.0.1:{}", broker.port);

    let o = storegw(
        &[
            "push",
            "change.toml.signed",
            "--broker",
            &url,
            "--store",
            "s042",
            "--gateway",
            "gw1",
        ],
        dir,
    )?;
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("storegw/v1/s042/gw1/config"),
        "{}",
        text(&o)
    );
    // A document signed for one gateway is not pushed to the fleet topic (gateways would
    // refuse it there); one signed for the fleet is.
    let to_fleet = |file: &str| {
        storegw(
            &[
                "push", file, "--broker", &url, "--store", "s042", "--prefix", "acme/v1",
            ],
            dir,
        )
    };
    let o = to_fleet("change.toml.signed")?;
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("target `s042/gw1`"), "{}", text(&o));
    let o = sign(
        dir,
        "fleet.toml",
        "version = 3\ntarget = \"_fleet\"\n[log]\nlevel = \"debug\"\n",
    )?;
    assert!(o.status.success(), "{}", text(&o));
    let o = to_fleet("fleet.toml.signed")?;
    assert!(o.status.success(), "{}", text(&o));

    // An unsigned file is not pushed.
    let o = storegw(
        &[
            "push",
            "change.toml",
            "--broker",
            &url,
            "--store",
            "s042",
            "--gateway",
            "gw1",
        ],
        dir,
    )?;
    assert!(!o.status.success(), "{}", text(&o));

    // A subscriber arriving afterwards gets both, retained, byte for byte.
    let signed = std::fs::read(dir.join("change.toml.signed"))?;
    let fleet = std::fs::read(dir.join("fleet.toml.signed"))?;
    let got = retained(broker.port, "#", Duration::from_secs(2)).await;
    let mut topics: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
    topics.sort();
    assert_eq!(
        topics,
        ["acme/v1/_fleet/config", "storegw/v1/s042/gw1/config"]
    );
    for (t, payload, retain) in &got {
        assert!(*retain, "{t} not retained");
        let want = if t.contains("_fleet") {
            &fleet
        } else {
            &signed
        };
        assert_eq!(payload, want, "{t} payload differs");
    }
    Ok(())
}
