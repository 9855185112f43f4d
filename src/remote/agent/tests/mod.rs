//! Unit tests of the agent's state machines, without a network: the accept policy and the
//! confirm/rollback/probation machine, with paused time where a clock matters.

mod accept;
mod boot;
mod confirm;

use super::*;
pub(super) use crate::remote::command::Action;
pub(super) use crate::remote::state::{Installing, Pending, Probation};
pub(super) use std::time::Duration;
pub(super) use time::OffsetDateTime;

pub(super) type R = Result<(), Box<dyn std::error::Error>>;

pub(super) fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[9u8; 32])
}

pub(super) fn signed(overlay: &str) -> Result<Vec<u8>, String> {
    document::sign(overlay.as_bytes(), &key())
}

/// A gateway directory with a local file trusting `key()` (`remote_extra` added to its
/// `[remote]`), two installed gateway documents (rate 5 then rate 9, the second awaiting
/// confirmation after `starts` starts).
pub(super) fn gateway_with(
    dir: &Path,
    starts: u32,
    remote_extra: &str,
) -> Result<(PathBuf, Config), Box<dyn std::error::Error>> {
    std::fs::write(
        dir.join("central.pub"),
        document::format_public_key(&key().verifying_key()),
    )?;
    let path = dir.join("storegw.toml");
    let text = format!(
        "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\nstate_dir = \"{}\"\n[http]\nenabled = false\n\
         [sources.sim]\nenabled = true\nrate = 1.0\n[remote]\npublic_key_file = \"central.pub\"\nconfirm_timeout = \"60s\"\n{remote_extra}",
        dir.join("state").display()
    );
    std::fs::write(&path, &text)?;
    let local = crate::config::parse("storegw.toml", &text, Some(dir))?;
    let sd = StateDir::open(&dir.join("state"))?;
    sd.install(
        Layer::Gateway,
        &signed("version = 1\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 5.0\n")?,
    )?;
    sd.install(
        Layer::Gateway,
        &signed("version = 2\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 9.0\n")?,
    )?;
    let mut st = Persisted::default();
    st.gateway.applied = 2;
    st.gateway.floor = 2;
    st.pending = Some(Pending {
        layer: Layer::Gateway,
        version: 2,
        starts,
        last_error: Some("Connection refused".into()),
        baseline: vec!["source ble failed: no adapter".into()],
    });
    sd.save(&st)?;
    Ok((path, local))
}

pub(super) fn gateway_with_pending(
    dir: &Path,
    starts: u32,
) -> Result<(PathBuf, Config), Box<dyn std::error::Error>> {
    gateway_with(dir, starts, "")
}

/// A booted agent with version 2 pending (first start after the change).
pub(super) fn pending_agent(dir: &Path) -> Result<(Agent, Config), Box<dyn std::error::Error>> {
    let (path, local) = gateway_with_pending(dir, 0)?;
    let (cfg, agent) = Agent::boot(&path, local, Telemetry::new())?;
    Ok((agent.ok_or("no agent")?, cfg))
}

/// Connects, has the state publish acknowledged and lets the session settle.
pub(super) fn settle(agent: &mut Agent) {
    agent.on_connected(true);
    agent.on_acknowledged();
}

pub(super) fn state_file(dir: &Path) -> Result<Persisted, Box<dyn std::error::Error>> {
    Ok(StateDir::open(&dir.join("state"))?.load()?)
}
