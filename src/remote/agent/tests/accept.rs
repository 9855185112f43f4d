//! What a document or command that arrives leads to.

use super::*;

#[tokio::test(start_paused = true)]
async fn documents_during_a_pending_change_wait_and_keep_the_rollback_target() -> R {
    let tmp = tempfile::tempdir()?;
    let (mut agent, _) = pending_agent(tmp.path())?;
    // A live-only v3 on the same layer, and a restart document on the other layer.
    let v3 = signed("version = 3\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n")?;
    let fleet = signed("version = 1\ntarget = \"_fleet\"\n[log]\nformat = \"json\"\n")?;
    assert!(matches!(
        agent.on_document(Layer::Gateway, &v3),
        DocumentOutcome::Deferred
    ));
    assert!(matches!(
        agent.on_document(Layer::Fleet, &fleet),
        DocumentOutcome::Deferred
    ));
    assert!(agent.take_deferred().is_empty(), "nothing while pending");
    let st = state_file(tmp.path())?;
    assert_eq!(
        st.pending.map(|p| (p.layer, p.version)),
        Some((Layer::Gateway, 2))
    );
    // The rollback restores v1, the document before the pending one.
    agent.on_confirm_timeout()?;
    let st = state_file(tmp.path())?;
    assert_eq!((st.gateway.applied, st.gateway.floor), (1, 2));
    let back = StateDir::open(&tmp.path().join("state"))?.document(Layer::Gateway)?;
    assert!(back.is_some_and(|d| String::from_utf8_lossy(&d).contains("rate = 5.0")));
    // v3 was never refused: it applies after the rollback.
    assert!(matches!(
        agent.on_document(Layer::Gateway, &v3),
        DocumentOutcome::Live { .. }
    ));
    assert_eq!(agent.status_object()["versions"]["gateway"], 3);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn deferred_documents_apply_once_the_change_is_confirmed() -> R {
    let tmp = tempfile::tempdir()?;
    let (mut agent, _) = pending_agent(tmp.path())?;
    let v3 = signed("version = 3\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n")?;
    assert!(matches!(
        agent.on_document(Layer::Gateway, &v3),
        DocumentOutcome::Deferred
    ));
    settle(&mut agent);
    tokio::time::advance(agent.settle_time()).await;
    assert!(agent.on_settled(&[]));
    // Confirmed, then on probation: still one change at a time.
    assert!(agent.take_deferred().is_empty());
    tokio::time::advance(PROBATION).await;
    assert!(agent.on_probation_elapsed(&[]));
    let deferred = agent.take_deferred();
    assert_eq!(deferred.len(), 1);
    for (layer, doc) in deferred {
        assert!(matches!(
            agent.on_document(layer, &doc),
            DocumentOutcome::Live { .. }
        ));
    }
    let st = state_file(tmp.path())?;
    assert_eq!((st.gateway.applied, st.gateway.floor), (3, 3));
    Ok(())
}

#[test]
fn unverified_input_is_counted_never_written_or_reported() -> R {
    let tmp = tempfile::tempdir()?;
    let (mut agent, _) = pending_agent(tmp.path())?;
    let state_path = tmp.path().join("state/remote/state.json");
    let before = std::fs::read(&state_path)?;
    let modified = std::fs::metadata(&state_path)?.modified()?;
    let report = agent.status_object();
    let label = crate::telemetry::metrics::labels(&[("topic", "config"), ("reason", "malformed")]);
    // The agent's own registry (a clone of the handle it reports into), not a process-wide one.
    let telemetry = agent.telemetry.clone();
    let counted = || {
        telemetry
            .metrics()
            .counter_value(crate::telemetry::metrics::Metric::RemoteUnverified, &label)
    };
    let n0 = counted();
    // A key id of 250,000 control bytes, then many distinct forgeries.
    let mut huge = b"version = 9\n# storegw-signature: ed25519:".to_vec();
    huge.extend(std::iter::repeat_n(1u8, 250_000));
    huge.extend_from_slice(b":AAAA\n");
    assert!(matches!(
        agent.on_document(Layer::Fleet, &huge),
        DocumentOutcome::Ignored
    ));
    let other = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    for i in 0..200 {
        let forged = document::sign(
            format!("version = {}\ntarget = \"_fleet\"\n", 100 + i).as_bytes(),
            &other,
        )?;
        assert!(matches!(
            agent.on_document(Layer::Fleet, &forged),
            DocumentOutcome::Ignored
        ));
        let mut tampered = signed(&format!("version = {}\ntarget = \"_fleet\"\n", 500 + i))?;
        tampered[0] = b'V';
        assert!(matches!(
            agent.on_document(Layer::Fleet, &tampered),
            DocumentOutcome::Ignored
        ));
        assert!(matches!(
            agent.on_command(format!("junk {i}").as_bytes()),
            CommandOutcome::Ignored
        ));
    }
    assert!(counted() > n0, "counted");
    assert_eq!(agent.status_object(), report, "the report is untouched");
    assert_eq!(std::fs::read(&state_path)?, before);
    assert_eq!(std::fs::metadata(&state_path)?.modified()?, modified);
    let files: Vec<_> = std::fs::read_dir(tmp.path().join("state/remote"))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert!(
        !files.iter().any(|f| f.to_string_lossy().contains("nonce")),
        "{files:?}"
    );
    assert!(agent.state_payload().len() < 2048);
    Ok(())
}

#[test]
fn min_version_refuses_old_documents_on_a_fresh_gateway() -> R {
    let tmp = tempfile::tempdir()?;
    let (path, local) = gateway_with(tmp.path(), 0, "[remote.min_version]\ngateway = 5\n")?;
    std::fs::remove_file(tmp.path().join("state/remote/state.json"))?;
    let (cfg, agent) = Agent::boot(&path, local, Telemetry::new())?;
    let mut agent = agent.ok_or("no agent")?;
    assert_eq!(
        cfg.sources.sim.rate, 1.0,
        "the stored v2 is below the minimum"
    );
    let old = signed("version = 4\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n")?;
    assert!(matches!(
        agent.on_document(Layer::Gateway, &old),
        DocumentOutcome::Rejected(r) if r.starts_with("stale_version")
    ));
    let new = signed("version = 5\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n")?;
    assert!(matches!(
        agent.on_document(Layer::Gateway, &new),
        DocumentOutcome::Live { .. }
    ));
    Ok(())
}

#[test]
fn documents_must_expire_and_not_too_far_ahead() -> R {
    let tmp = tempfile::tempdir()?;
    let (mut agent, _) = pending_agent(tmp.path())?;
    agent.state.pending = None;
    let text = "version = 3\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n";
    let no_expiry = document::seal(text, &key());
    assert!(matches!(
        agent.on_document(Layer::Gateway, &no_expiry),
        DocumentOutcome::Rejected(r) if r.starts_with("no_expiry")
    ));
    let far = document::seal(&format!("not_after = 2999-01-01T00:00:00Z\n{text}"), &key());
    assert!(matches!(
        agent.on_document(Layer::Gateway, &far),
        DocumentOutcome::Rejected(r) if r.starts_with("expiry_too_far")
    ));
    // A clock that booted behind the last recorded time judges by the recorded time.
    agent.state.clock_ms = now_ms() + 10 * 86_400_000;
    let soon = document::sign_at(
        text.as_bytes(),
        &key(),
        OffsetDateTime::now_utc(),
        Duration::from_secs(86_400),
    )?;
    assert!(matches!(
        agent.on_document(Layer::Gateway, &soon),
        DocumentOutcome::Rejected(r) if r == "expired"
    ));
    Ok(())
}

#[test]
fn a_damaged_nonce_log_refuses_commands_until_all_could_have_expired() -> R {
    let tmp = tempfile::tempdir()?;
    let (path, local) = gateway_with_pending(tmp.path(), 0)?;
    let cmd = command::sign(
        &command::render(
            Action::Status,
            "s1",
            "g1",
            "abcdefghijklmnop",
            now_ms() + 60_000,
        ),
        &key(),
    )?;
    std::fs::write(tmp.path().join("state/remote/nonces.json"), b"{broken")?;
    let (_, agent) = Agent::boot(&path, local.clone(), Telemetry::new())?;
    let mut agent = agent.ok_or("no agent")?;
    match agent.on_command(&cmd) {
        CommandOutcome::Refused(a) => {
            assert!(String::from_utf8_lossy(&a).contains("nonce log was lost"))
        }
        other => return Err(format!("a command ran without its nonce log: {other:?}").into()),
    }
    // With a readable log the same command runs.
    std::fs::remove_file(tmp.path().join("state/remote/nonces.json"))?;
    let (_, agent) = Agent::boot(&path, local, Telemetry::new())?;
    let mut agent = agent.ok_or("no agent")?;
    assert!(matches!(agent.on_command(&cmd), CommandOutcome::Run(_)));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn only_a_newer_document_for_this_topic_is_deferred() -> R {
    let tmp = tempfile::tempdir()?;
    let (mut agent, _) = pending_agent(tmp.path())?;
    let v4 = signed("version = 4\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 12.0\n")?;
    let v3 = signed("version = 3\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n")?;
    assert!(matches!(
        agent.on_document(Layer::Gateway, &v4),
        DocumentOutcome::Deferred
    ));
    // A lower version does not displace it; a stale or misdirected one is refused at once.
    assert!(matches!(
        agent.on_document(Layer::Gateway, &v3),
        DocumentOutcome::Deferred
    ));
    let stale = signed("version = 1\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 2.0\n")?;
    assert!(matches!(
        agent.on_document(Layer::Gateway, &stale),
        DocumentOutcome::Rejected(r) if r.starts_with("stale_version")
    ));
    let other = signed("version = 9\ntarget = \"s1/g2\"\n")?;
    assert!(matches!(
        agent.on_document(Layer::Gateway, &other),
        DocumentOutcome::Rejected(r) if r.starts_with("wrong_target")
    ));
    agent.on_confirm_timeout()?;
    let deferred = agent.take_deferred();
    assert_eq!(deferred.len(), 1);
    assert!(deferred.iter().all(|(_, d)| d == &v4));
    Ok(())
}

#[test]
fn replayed_genuine_documents_cost_no_disk_write_and_one_report_each() -> R {
    let tmp = tempfile::tempdir()?;
    let (mut agent, _) = pending_agent(tmp.path())?;
    agent.on_confirm_timeout()?;
    let state_path = tmp.path().join("state/remote/state.json");
    let before = std::fs::read(&state_path)?;
    let modified = std::fs::metadata(&state_path)?.modified()?;
    // Genuine documents the broker keeps: an old one, one for another gateway, a fleet one on
    // the gateway topic. Replayed alternately, many times.
    let old = signed("version = 1\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 6.0\n")?;
    let misdirected = signed("version = 30\ntarget = \"s1/g7\"\n")?;
    let fleet = signed("version = 30\ntarget = \"_fleet\"\n")?;
    let mut rejected = 0;
    for _ in 0..100 {
        for d in [&old, &misdirected, &fleet] {
            if matches!(
                agent.on_document(Layer::Gateway, d),
                DocumentOutcome::Rejected(_)
            ) {
                rejected += 1;
            }
        }
    }
    assert_eq!(rejected, 3, "one report per document");
    assert_eq!(std::fs::read(&state_path)?, before);
    assert_eq!(std::fs::metadata(&state_path)?.modified()?, modified);
    // A new connection judges them again, once.
    agent.on_connected(true);
    assert!(matches!(
        agent.on_document(Layer::Gateway, &old),
        DocumentOutcome::Rejected(_)
    ));
    assert!(matches!(
        agent.on_document(Layer::Gateway, &old),
        DocumentOutcome::Unchanged
    ));
    Ok(())
}
