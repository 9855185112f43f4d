//! Confirmation, rollback and probation of a change.

use super::*;

#[test]
fn a_change_that_keeps_crashing_the_gateway_is_rolled_back() -> R {
    let tmp = tempfile::tempdir()?;
    let (path, local) = gateway_with_pending(tmp.path(), MAX_UNCONFIRMED_STARTS)?;
    let (cfg, agent) = Agent::boot(&path, local, Telemetry::new())?;
    assert_eq!(cfg.sources.sim.rate, 5.0, "the previous document is back");
    let agent = agent.ok_or("no agent")?;
    let s = agent.status_object();
    assert_eq!(s["state"], "rolled_back");
    assert_eq!(s["version"], 2);
    assert_eq!(s["versions"]["gateway"], 1);
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("after 3 starts"), "{reason}");
    assert!(reason.contains("Connection refused"), "{reason}");
    assert!(agent.confirm_deadline().is_none());
    // The rolled-back version stays refused.
    let st = state_file(tmp.path())?;
    assert_eq!((st.gateway.applied, st.gateway.floor), (1, 2));
    assert!(st.pending.is_none());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_confirm_window_is_per_start_on_the_monotonic_clock() -> R {
    // The change was accepted by a process whose wall clock was hours behind; the clock
    // stepped during the restart. Whatever the wall clock says, this start gets a full
    // confirm_timeout, and only the start count bounds the tries.
    let tmp = tempfile::tempdir()?;
    let (mut agent, cfg) = pending_agent(tmp.path())?;
    assert_eq!(cfg.sources.sim.rate, 9.0, "the change runs");
    let t0 = tokio::time::Instant::now();
    assert_eq!(agent.confirm_deadline(), Some(t0 + Duration::from_secs(60)));
    assert_eq!(state_file(tmp.path())?.pending.map(|p| p.starts), Some(1));
    // Nothing reached: the deadline rolls back.
    tokio::time::advance(Duration::from_secs(61)).await;
    agent.on_connect_failed("Connection refused".into());
    agent.on_confirm_timeout()?;
    let s = agent.status_object();
    assert_eq!(s["state"], "rolled_back");
    assert!(s["reason"]
        .as_str()
        .is_some_and(|r| r.contains("not reached within 60s")));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_healthy_settled_session_confirms_and_starts_the_probation() -> R {
    let tmp = tempfile::tempdir()?;
    let (mut agent, _) = pending_agent(tmp.path())?;
    assert!(!agent.on_connected(true));
    agent.on_acknowledged();
    let settle_at = agent.settle_deadline().ok_or("not settling")?;
    assert_eq!(settle_at - tokio::time::Instant::now(), agent.settle_time());
    tokio::time::advance(agent.settle_time()).await;
    assert!(agent.on_settled(&[]));
    assert_eq!(agent.status_object()["state"], "applied");
    assert!(agent.confirm_deadline().is_none());
    let st = state_file(tmp.path())?;
    assert!(st.pending.is_none());
    assert_eq!(st.gateway.applied, 2);
    assert_eq!(
        st.probation,
        Some(Probation {
            layer: Layer::Gateway,
            version: 2,
            starts: 0,
            baseline: vec!["source ble failed: no adapter".into()],
        })
    );
    // Ten healthy minutes end the probation.
    assert_eq!(
        agent.probation_deadline(),
        Some(tokio::time::Instant::now() + PROBATION)
    );
    agent.on_probation_elapsed(&["source wifi failed: no capability".to_string()]);
    assert!(
        state_file(tmp.path())?.probation.is_some(),
        "unhealthy: kept"
    );
    agent.on_probation_elapsed(&[]);
    assert!(state_file(tmp.path())?.probation.is_none());
    assert!(agent.probation_deadline().is_none());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_pipeline_never_confirms_and_is_rolled_back() -> R {
    // The broker is reachable, but the change broke a source (Wi-Fi without its
    // capability, BLE without an adapter, an HTTP port the sandbox refuses).
    let tmp = tempfile::tempdir()?;
    let (mut agent, _) = pending_agent(tmp.path())?;
    settle(&mut agent);
    for _ in 0..5 {
        tokio::time::advance(agent.settle_time()).await;
        assert!(!agent.on_settled(&["source wifi failed: Operation not permitted".to_string()]));
        assert!(agent.settle_deadline().is_some(), "tried again");
    }
    assert_eq!(state_file(tmp.path())?.pending.map(|p| p.version), Some(2));
    tokio::time::advance(Duration::from_secs(60)).await;
    agent.on_confirm_timeout()?;
    let s = agent.status_object();
    assert_eq!(s["state"], "rolled_back");
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("did not run healthy"), "{reason}");
    assert!(reason.contains("source wifi failed"), "{reason}");
    assert_eq!(s["versions"]["gateway"], 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_refused_subscription_does_not_confirm() -> R {
    let tmp = tempfile::tempdir()?;
    let (mut agent, _) = pending_agent(tmp.path())?;
    agent.on_connected(false);
    agent.on_acknowledged();
    assert!(agent.settle_deadline().is_none());
    assert!(!agent.on_settled(&[]));
    assert!(state_file(tmp.path())?.pending.is_some());
    Ok(())
}

#[test]
fn repeated_starts_within_the_probation_roll_the_change_back() -> R {
    let tmp = tempfile::tempdir()?;
    let (path, local) = gateway_with_pending(tmp.path(), 0)?;
    let sd = StateDir::open(&tmp.path().join("state"))?;
    let mut st = sd.load()?;
    st.pending = None;
    st.probation = Some(Probation {
        layer: Layer::Gateway,
        version: 2,
        starts: 0,
        baseline: Vec::new(),
    });
    sd.save(&st)?;
    for start in 1..MAX_PROBATION_STARTS {
        let (cfg, _) = Agent::boot(&path, local.clone(), Telemetry::new())?;
        assert_eq!(cfg.sources.sim.rate, 9.0, "start {start} keeps the change");
    }
    let (cfg, agent) = Agent::boot(&path, local, Telemetry::new())?;
    assert_eq!(cfg.sources.sim.rate, 5.0, "rolled back");
    let s = agent.ok_or("no agent")?.status_object();
    assert_eq!(s["state"], "rolled_back");
    assert!(s["reason"]
        .as_str()
        .is_some_and(|r| r.contains("started 5 times")));
    let st = sd.load()?;
    assert!(st.probation.is_none());
    assert_eq!((st.gateway.applied, st.gateway.floor), (1, 2));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_problem_older_than_the_change_does_not_block_its_confirmation() -> R {
    // The BLE adapter was already missing when the change was accepted (the fixture's
    // baseline); a Wi-Fi failure is new.
    let tmp = tempfile::tempdir()?;
    let (mut agent, _) = pending_agent(tmp.path())?;
    settle(&mut agent);
    tokio::time::advance(agent.settle_time()).await;
    let both = [
        "source ble failed: still no adapter".to_string(),
        "source wifi failed: Operation not permitted".to_string(),
    ];
    assert!(!agent.on_settled(&both), "the new Wi-Fi failure blocks it");
    tokio::time::advance(agent.settle_time()).await;
    assert!(agent.on_settled(&both[..1]), "the old BLE failure does not");
    assert_eq!(agent.status_object()["state"], "applied");
    Ok(())
}
