//! What a start makes of the state on disk.

use super::*;

#[test]
fn a_damaged_state_file_starts_reports_and_refuses_documents() -> R {
    let tmp = tempfile::tempdir()?;
    let (path, local) = gateway_with_pending(tmp.path(), 0)?;
    let state_path = tmp.path().join("state/remote/state.json");
    std::fs::write(&state_path, b"{\"gateway\": broken")?;
    let (cfg, agent) = Agent::boot(&path, local, Telemetry::new())?;
    let mut agent = agent.ok_or("no agent")?;
    assert_eq!(cfg.sources.sim.rate, 9.0, "the stored documents still run");
    let s = agent.status_object();
    assert_eq!(s["state"], "rejected");
    assert!(s["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("state_damaged")));
    let v3 = signed("version = 3\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n")?;
    assert!(matches!(
        agent.on_document(Layer::Gateway, &v3),
        DocumentOutcome::Rejected(r) if r.starts_with("state_damaged")
    ));
    assert_eq!(std::fs::read(&state_path)?, b"{\"gateway\": broken");
    Ok(())
}

#[test]
fn an_interrupted_installation_is_undone_at_start() -> R {
    let tmp = tempfile::tempdir()?;
    let (path, local) = gateway_with_pending(tmp.path(), 0)?;
    // Power lost after version 2 was installed, before its state was recorded.
    let sd = StateDir::open(&tmp.path().join("state"))?;
    let mut st = sd.load()?;
    st.gateway.applied = 1;
    st.gateway.floor = 1;
    st.pending = None;
    st.installing = Some(Installing {
        layer: Layer::Gateway,
        version: 2,
    });
    sd.save(&st)?;
    let (cfg, agent) = Agent::boot(&path, local, Telemetry::new())?;
    assert_eq!(cfg.sources.sim.rate, 5.0);
    let s = agent.ok_or("no agent")?.status_object();
    assert_eq!(s["versions"]["gateway"], 1);
    let st = sd.load()?;
    assert!(st.installing.is_none());
    // Version 2 was never applied: it may come again.
    assert_eq!(st.gateway.floor, 1);
    Ok(())
}

#[test]
fn a_lost_state_file_adopts_the_stored_versions() -> R {
    let tmp = tempfile::tempdir()?;
    let (path, local) = gateway_with_pending(tmp.path(), 0)?;
    std::fs::remove_file(tmp.path().join("state/remote/state.json"))?;
    let (cfg, agent) = Agent::boot(&path, local, Telemetry::new())?;
    assert_eq!(
        cfg.sources.sim.rate, 9.0,
        "the stored document stays in effect"
    );
    let s = agent.ok_or("no agent")?.status_object();
    assert_eq!(s["versions"]["gateway"], 2);
    Ok(())
}

#[test]
fn the_topics_follow_a_remotely_changed_prefix() -> R {
    let tmp = tempfile::tempdir()?;
    let (path, local) = gateway_with_pending(tmp.path(), 0)?;
    let sd = StateDir::open(&tmp.path().join("state"))?;
    sd.install(
        Layer::Gateway,
        &signed("version = 3\ntarget = \"s1/g1\"\n[mqtt]\ntopic_prefix = \"retail/v2\"\n")?,
    )?;
    let mut st = sd.load()?;
    st.gateway.applied = 3;
    st.gateway.floor = 3;
    st.pending = None;
    sd.save(&st)?;
    let (cfg, agent) = Agent::boot(&path, local, Telemetry::new())?;
    let agent = agent.ok_or("no agent")?;
    assert_eq!(cfg.mqtt.topic_prefix, "retail/v2");
    assert!(agent
        .subscriptions()
        .contains(&"retail/v2/s1/g1/config".to_string()));
    assert_eq!(agent.state_topic(), "retail/v2/s1/g1/config/state");
    assert_eq!(
        agent.inbox("retail/v2/_fleet/config"),
        Some(Inbox::Config(Layer::Fleet))
    );
    assert_eq!(agent.inbox("storegw/v1/s1/g1/cmd"), None);
    Ok(())
}

#[test]
fn stored_documents_from_an_untrusted_key_are_not_used() -> R {
    let tmp = tempfile::tempdir()?;
    let (path, local) = gateway_with_pending(tmp.path(), 0)?;
    // The central team replaced its key: the stored documents no longer verify.
    let other = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
    std::fs::write(
        tmp.path().join("central.pub"),
        document::format_public_key(&other.verifying_key()),
    )?;
    let (cfg, agent) = Agent::boot(&path, local, Telemetry::new())?;
    assert_eq!(cfg.sources.sim.rate, 1.0, "the local file alone");
    let s = agent.ok_or("no agent")?.status_object();
    assert_eq!(s["state"], "rejected");
    assert!(s["reason"]
        .as_str()
        .is_some_and(|r| r.contains("unknown_key")));
    Ok(())
}
