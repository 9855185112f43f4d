//! Wires the pipeline together: sources → spool writer → spool → uplink, plus the control plane.

use crate::config::Config;
use crate::event::Event;
use crate::ops::{http_server, status, systemd};
use crate::spool::Spool;
use crate::telemetry::health::SourceState;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::Telemetry;
use crate::uplink::{self, UplinkSettings};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Capacity of the channel between sources and the spool writer (backpressure, not RAM growth).
pub const SOURCE_CHANNEL: usize = 4096;

/// A running pipeline; dropping it does not stop it, call [`Pipeline::shutdown`].
pub struct Pipeline {
    /// The spool between the sources and the uplink; public so tools and the fleet bench can read
    /// its depth.
    pub spool: Arc<Spool>,
    sources: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
    uplink: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    http: Option<JoinHandle<()>>,
    /// Why the HTTP listener is not serving although it is enabled.
    http_error: Option<String>,
    shutdown_tx: watch::Sender<bool>,
    sources_stop: watch::Sender<bool>,
    /// The configuration in effect; SIGHUP reload publishes here (see `ops::reload`).
    pub config: watch::Sender<Arc<Config>>,
    /// The device pseudonymizer (the `rotate-keys` command rotates it).
    pub devices: Arc<crate::privacy::DevicePseudonymizer>,
    /// This pipeline's metrics and health registries (every part of it reports here; a second
    /// pipeline in the same process has its own).
    pub telemetry: Telemetry,
}

/// Moves events from the sources' channel into the spool: buffered up to one chunk per stream
/// or one flush interval, then appended and flushed together. A power cut loses at most one
/// flush interval of sensor events, and the SD card sees one fsync per interval, not per event.
async fn spool_writer(
    spool: Arc<Spool>,
    mut rx: mpsc::Receiver<Event>,
    flush_interval: Duration,
    telemetry: Telemetry,
) {
    let _vital = telemetry.health().vital_panic_only("spool writer");
    let metrics = telemetry.metrics();
    let mut buf: Vec<Event> = Vec::with_capacity(crate::spool::CHUNK_EVENTS);
    let mut tick = tokio::time::interval(flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut buf, crate::spool::CHUNK_EVENTS) => {
                if n == 0 {
                    break;
                }
                if buf.len() >= crate::spool::CHUNK_EVENTS {
                    write_batch(&spool, &mut buf, metrics);
                }
            }
            _ = tick.tick() => {
                write_batch(&spool, &mut buf, metrics);
                if let Err(e) = spool.flush_if_dirty().await {
                    tracing::error!(error = %e, "spool flush failed");
                }
            }
        }
    }
    // Every sender is gone (sources stopped, or a simulator reached its limit): what came in
    // since the last tick must still reach the disk, not wait for a tick that never comes.
    write_batch(&spool, &mut buf, metrics);
    if let Err(e) = spool.flush_if_dirty().await {
        tracing::error!(error = %e, "spool flush failed");
    }
}

fn write_batch(spool: &Spool, buf: &mut Vec<Event>, metrics: &Metrics) {
    if buf.is_empty() {
        return;
    }
    // One append per stream, so a refused POS append never takes sensor events with it. The
    // events are moved into their stream's part, never cloned.
    let mut parts: [Vec<Event>; crate::event::Stream::COUNT] = Default::default();
    for e in buf.drain(..) {
        parts[e.stream().index()].push(e);
    }
    for (stream, part) in crate::event::Stream::ALL.into_iter().zip(parts) {
        if part.is_empty() {
            continue;
        }
        match spool.append(&part) {
            Ok(_) => metrics.events_in(stream, part.len() as u64),
            Err(crate::spool::SpoolError::Full { .. }) => {}
            Err(e) => {
                tracing::error!(error = %e, stream = %stream, events = part.len(), "spool append failed");
                spool.count_drop(stream, "spool_error", part.len() as u64);
            }
        }
    }
}

impl Pipeline {
    /// Opens the spool and starts every configured source, the uplink and the HTTP server,
    /// all reporting into fresh registries ([`Pipeline::telemetry`]).
    pub async fn start(cfg: &Config) -> Result<Pipeline, String> {
        Self::start_with(cfg, None, Telemetry::new()).await
    }

    /// [`Pipeline::start`], with the uplink carrying a remote-control link (docs/fleet.md),
    /// reporting into `telemetry` (which the remote agent and the reloader share).
    pub async fn start_with(
        cfg: &Config,
        remote: Option<uplink::RemoteLink>,
        telemetry: Telemetry,
    ) -> Result<Pipeline, String> {
        telemetry.health().mark_started();
        telemetry.health().set_stopping(false);
        let settings = UplinkSettings::from_config(cfg)?;
        let spool = Arc::new(
            Spool::open_with(
                &cfg.spool_dir(),
                &cfg.gateway.gateway_id,
                &cfg.spool,
                telemetry.clone(),
            )
            .map_err(|e| format!("spool: {e}"))?,
        );
        if let Some(r) = spool.recovered() {
            tracing::error!("{r}");
        }
        // No random key, no start (fail closed): nothing may be pseudonymized with a weak key.
        let devices = Arc::new(crate::privacy::DevicePseudonymizer::new(
            cfg.privacy.rotation.0,
            cfg.privacy.pseudonym_bytes,
        )?);
        let (tx, rx) = mpsc::channel::<Event>(SOURCE_CHANNEL);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (sources_stop, sources_stop_rx) = watch::channel(false);
        let (config_tx, config_rx) = watch::channel(Arc::new(cfg.clone()));
        let mut background = vec![tokio::spawn(
            spool.clone().run_purger(Duration::from_secs(10)),
        )];
        let writer = tokio::spawn(spool_writer(
            spool.clone(),
            rx,
            cfg.spool.flush_interval.0,
            telemetry.clone(),
        ));
        let ctx = crate::source::SourceContext {
            cfg: Arc::new(cfg.clone()),
            tx,
            pos_sink: crate::source::DurableSink::new(spool.clone()),
            devices: devices.clone(),
            shutdown: sources_stop_rx,
            config: config_rx,
            telemetry: telemetry.clone(),
        };
        let crate::source::Started {
            tasks: sources,
            routes: source_routes,
        } = crate::source::start_all(&ctx);
        // The writer ends once every sender is gone: the context's copy must go too.
        drop(ctx);
        let mut http_task = None;
        let mut http_error = None;
        if cfg.http.enabled {
            let state = http_server::ServerState::new(spool.clone(), telemetry.clone());
            let router = http_server::base_router(state.clone()).merge(source_routes);
            let limits = http_server::Limits::from_config(&cfg.http);
            match http_server::serve(&cfg.http.listen, router, limits, state).await {
                Ok(h) => http_task = Some(h),
                Err(e) => {
                    tracing::error!("{e}; metrics, health and POS ingest are off");
                    http_error = Some(format!("http.listen not bound: {e}"));
                }
            }
        }
        background.push(tokio::spawn(housekeeping(
            cfg.clone(),
            spool.clone(),
            telemetry.clone(),
        )));
        background.push(tokio::spawn(expire_device_keys(devices.clone())));
        let up_spool = spool.clone();
        let up_config = config_tx.subscribe();
        let up_telemetry = telemetry.clone();
        let uplink = tokio::spawn(async move {
            let _vital = up_telemetry.health().vital("uplink");
            uplink::run_live(
                settings,
                up_spool,
                up_telemetry.clone(),
                shutdown_rx,
                Some(up_config),
                remote,
            )
            .await
        });
        systemd::ready();
        tracing::info!(store = %cfg.gateway.store_id, gateway = %cfg.gateway.gateway_id, spool = %spool.path().display(), "storegw started");
        Ok(Pipeline {
            spool,
            sources,
            writer,
            uplink,
            background,
            http: http_task,
            http_error,
            shutdown_tx,
            sources_stop,
            config: config_tx,
            devices,
            telemetry,
        })
    }

    /// What keeps the pipeline from running as configured (empty: healthy): a failed or
    /// still-starting source, a dead task, the HTTP listener not bound, the spool not
    /// writable. A configuration change is confirmed only without new problems
    /// (docs/fleet.md, "On the gateway").
    pub fn health(&self) -> Vec<String> {
        let health = self.telemetry.health();
        let mut r = status::unhealthy_reasons(health, &self.spool);
        if let Some(e) = &self.http_error {
            r.push(e.clone());
        }
        for (name, h) in health.source_snapshot() {
            if h.state == SourceState::Starting.as_str() {
                r.push(format!("source {name} has not started yet"));
            }
        }
        r
    }

    /// Stops sources, spools what they produced, flushes, lets the uplink wait for in-flight
    /// acknowledgements, publishes `offline` and disconnects.
    pub async fn shutdown(self) {
        systemd::stopping();
        self.telemetry.health().set_stopping(true);
        // Sources get a moment to emit what they aggregated (open windows), then are stopped.
        let _ = self.sources_stop.send(true);
        for s in self.sources {
            let abort = s.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), s)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // The HTTP server holds a sender for POS ingest: stop it so the writer can finish.
        if let Some(h) = self.http {
            h.abort();
            let _ = h.await;
        }
        // The writer ends once every sender is gone, after spooling what was queued.
        let _ = self.writer.await;
        if let Err(e) = self.spool.flush().await {
            tracing::error!(error = %e, "final spool flush failed");
        }
        let _ = self.shutdown_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.uplink).await;
        for b in self.background {
            b.abort();
        }
        if let Err(e) = self.spool.flush().await {
            tracing::error!(error = %e, "final spool flush failed");
        }
        if let Some(e) = self.spool.storage_failure() {
            // sled flushes again when the database is dropped, and on a disk that refuses
            // writes that flush never returns: keep it alive so the process can exit.
            tracing::warn!(error = %e, "spool not flushed at exit: the disk refuses writes");
            std::mem::forget(self.spool.clone());
        }
        tracing::info!("storegw stopped");
    }
}

/// Wipes the device key at every rotation (the next local midnight for a daily key, computed
/// with the time zone's offset at that instant), so a quiet night does not keep yesterday's key
/// in RAM until the next device is seen. Wakes at least every minute: a changed clock or a
/// repeated daylight-saving hour is caught too.
async fn expire_device_keys(devices: Arc<crate::privacy::DevicePseudonymizer>) {
    loop {
        let now = crate::event::now_ms();
        let wait_ms = devices
            .next_rotation_ms(now)
            .saturating_sub(now)
            .clamp(0, 60_000);
        tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
        devices.expire(crate::event::now_ms());
    }
}

/// Periodic status file for `storegw status`, and the systemd watchdog fed only while healthy.
async fn housekeeping(cfg: Config, spool: Arc<Spool>, telemetry: Telemetry) {
    let health = telemetry.health();
    let wd = systemd::watchdog_interval();
    let mut tick = tokio::time::interval(
        wd.unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5)),
    );
    let path = cfg.gateway.state_dir.join("status.json");
    loop {
        tick.tick().await;
        let payload = status::file_payload(
            health,
            &cfg.gateway.store_id,
            &cfg.gateway.gateway_id,
            "running",
            Some(&spool),
        );
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, &payload)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .is_err()
        {
            tracing::debug!(path = %path.display(), "cannot write status file");
        }
        let reasons = status::unhealthy_reasons(health, &spool);
        tracing::debug!(
            spool_depth = spool.total_depth(),
            healthy = reasons.is_empty(),
            "housekeeping"
        );
        if reasons.is_empty() {
            if wd.is_some() {
                systemd::pet();
            }
            systemd::status(&format!(
                "spool depth {}, mqtt {}",
                spool.total_depth(),
                if telemetry.metrics().connected() {
                    "connected"
                } else {
                    "disconnected"
                }
            ));
        } else {
            systemd::status(&format!("unhealthy: {}", reasons.join("; ")));
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How `storegw run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// A termination signal: drained and stopped.
    Stopped,
    /// A remote configuration change (or its rollback) takes a restart: the process exits with
    /// [`RESTART_EXIT_CODE`] and systemd starts it again.
    Restart,
}

/// Exit status asking systemd for a restart (EX_TEMPFAIL; the unit's
/// `RestartForceExitStatus=75` restarts on it whatever `Restart=` says, and
/// `SuccessExitStatus=75` keeps it from counting as a failure).
pub const RESTART_EXIT_CODE: u8 = 75;

/// `storegw run`: start (the local file merged with accepted remote layers), reload on SIGHUP,
/// handle remote documents and commands, run until a termination signal, drain.
pub async fn run(local: Config, path: &std::path::Path) -> Result<RunEnd, String> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered before anything starts: SIGHUP's default action would end the process.
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
    serve(local, path, termination(), Some(&mut hup)).await
}

/// The body of [`run`] without the process's signals: runs until `stop` resolves (or a remote
/// change asks for a restart); `hup`, when given, triggers reloads. The fleet benchmark runs
/// many of these in one process.
pub async fn serve(
    local: Config,
    path: &std::path::Path,
    stop: impl std::future::Future<Output = ()>,
    mut hup: Option<&mut tokio::signal::unix::Signal>,
) -> Result<RunEnd, String> {
    use crate::remote::agent::Agent;
    // One set of registries for everything this run starts: the agent and the reloader report
    // before the pipeline exists, and into the same status document.
    let telemetry = Telemetry::new();
    let local_level = local.log.level.clone();
    let (cfg, mut agent) = Agent::boot(path, local, telemetry.clone())?;
    if cfg.log.level != local_level {
        crate::ops::logging::set_level(&cfg.log.level);
    }
    let mut reloader = match &agent {
        Some(a) => {
            crate::ops::reload::Reloader::from_text(a.running_text().to_string(), telemetry.clone())
        }
        None => crate::ops::reload::Reloader::new(path, telemetry.clone()),
    };
    let mut control = None;
    let link = agent.as_ref().map(|a| {
        let (in_tx, in_rx) = mpsc::channel(uplink::INBOUND_CAPACITY);
        let (out_tx, out_rx) = mpsc::channel(64);
        control = Some(Control {
            inbound: in_rx,
            outbound: out_tx,
        });
        uplink::RemoteLink {
            subscribe: a.subscriptions(),
            inbound: in_tx,
            outbound: out_rx,
        }
    });
    let p = Pipeline::start_with(&cfg, link, telemetry).await?;
    let term = stop;
    tokio::pin!(term);
    let mut end = RunEnd::Stopped;
    loop {
        let deadline = agent.as_ref().and_then(Agent::confirm_deadline);
        let settled = agent.as_ref().and_then(Agent::settle_deadline);
        let probation = agent.as_ref().and_then(Agent::probation_deadline);
        tokio::select! {
            _ = &mut term => {
                tracing::info!("termination signal: draining");
                break;
            }
            Some(()) = recv_hup(hup.as_deref_mut()) => {
                tracing::info!(file = %path.display(), "SIGHUP: reloading the configuration");
                let _ = reload_local(path, &mut reloader, &p, agent.as_mut());
            }
            Some(msg) = recv_inbound(control.as_mut()) => {
                if let (Some(a), Some(c)) = (agent.as_mut(), control.as_ref()) {
                    let ctx = RemoteCtx { path, reloader: &mut reloader, pipeline: &p, out: &c.outbound };
                    if handle_remote(a, msg, ctx).await == RunEnd::Restart {
                        end = RunEnd::Restart;
                        break;
                    }
                }
            }
            _ = sleep_until_opt(settled), if settled.is_some() => {
                if let (Some(a), Some(c)) = (agent.as_mut(), control.as_ref()) {
                    if a.on_settled(&p.health()) {
                        let _ = c.outbound.try_send(state_update(a, false));
                    }
                }
            }
            _ = sleep_until_opt(probation), if probation.is_some() => {
                if let (Some(a), Some(c)) = (agent.as_mut(), control.as_ref()) {
                    if a.on_probation_elapsed(&p.health()) {
                        // Documents that came while the change was settling apply now.
                        let mut restart = false;
                        for (layer, doc) in a.take_deferred() {
                            let msg = uplink::Inbound::Message { topic: a.config_topic(layer), payload: doc };
                            let ctx = RemoteCtx { path, reloader: &mut reloader, pipeline: &p, out: &c.outbound };
                            if handle_remote(a, msg, ctx).await == RunEnd::Restart {
                                restart = true;
                                break;
                            }
                        }
                        if restart {
                            end = RunEnd::Restart;
                            break;
                        }
                    }
                }
            }
            _ = sleep_until_opt(deadline), if deadline.is_some() => {
                if let Some(a) = agent.as_mut() {
                    // Restart even when the rollback could not be written: the next start finds
                    // the change unconfirmed past its deadline and rolls it back before running.
                    if let Err(e) = a.on_confirm_timeout() {
                        tracing::error!(error = %e, "cannot roll back the configuration now; restarting to retry");
                    }
                    end = RunEnd::Restart;
                    break;
                }
            }
        }
    }
    p.shutdown().await;
    Ok(end)
}

/// The daemon's ends of the remote link.
struct Control {
    inbound: mpsc::Receiver<uplink::Inbound>,
    outbound: mpsc::Sender<uplink::Outbound>,
}

struct RemoteCtx<'a> {
    path: &'a std::path::Path,
    reloader: &'a mut crate::ops::reload::Reloader,
    pipeline: &'a Pipeline,
    out: &'a mpsc::Sender<uplink::Outbound>,
}

/// The retained configuration state, published; with `confirms` its acknowledgement is
/// reported back to the agent.
fn state_update(a: &crate::remote::agent::Agent, confirms: bool) -> uplink::Outbound {
    uplink::Outbound::Publish {
        topic: a.state_topic(),
        payload: a.state_payload(),
        retain: true,
        confirms,
    }
}

async fn recv_hup(hup: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    match hup {
        Some(h) => h.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_inbound(c: Option<&mut Control>) -> Option<uplink::Inbound> {
    match c {
        Some(c) => c.inbound.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// SIGHUP and the `reload` command: the local file again, with the remote layers over it when
/// remote configuration is on. Ok when the file was applied; Err with why it was not (for the
/// command's answer).
fn reload_local(
    path: &std::path::Path,
    reloader: &mut crate::ops::reload::Reloader,
    p: &Pipeline,
    agent: Option<&mut crate::remote::agent::Agent>,
) -> Result<(), String> {
    let Some(agent) = agent else {
        return if reloader.reload(path, &p.config) {
            Ok(())
        } else {
            Err("see the log".into())
        };
    };
    let file = path.display().to_string();
    let Some((text, _)) = reloader.read(path) else {
        return Err("see the log".into());
    };
    match agent.remerge_local(&text) {
        Ok((merged, cfg)) => {
            reloader.apply(&file, merged, cfg, &p.config);
            Ok(())
        }
        Err(e) => {
            reloader.rejected(&file, &e);
            Err(e)
        }
    }
}

/// One message from the uplink for the agent; returns [`RunEnd::Restart`] when the process
/// must exit for a configuration change to take effect.
async fn handle_remote(
    agent: &mut crate::remote::agent::Agent,
    msg: uplink::Inbound,
    cx: RemoteCtx<'_>,
) -> RunEnd {
    use crate::remote::agent::{CommandOutcome, DocumentOutcome, Inbox};
    use crate::remote::command::Action;
    use uplink::{Inbound, Outbound};
    // The channel only fills when the uplink is stuck; the state is published again at the
    // next connection anyway.
    let publish = |topic: String, payload: Vec<u8>, retain: bool| {
        let _ = cx.out.try_send(Outbound::Publish {
            topic,
            payload,
            retain,
            confirms: false,
        });
    };
    match msg {
        Inbound::Connected { subscribed } => {
            agent.on_connected(subscribed);
            // Its acknowledgement confirms a pending change: the broker took a message on
            // the new session, not only the connection.
            let _ = cx.out.try_send(state_update(agent, true));
            for answer in agent.take_reconnect_answers() {
                publish(agent.result_topic(), answer, false);
            }
        }
        Inbound::ConnectFailed(e) => agent.on_connect_failed(e),
        Inbound::Acknowledged => agent.on_acknowledged(),
        Inbound::Disconnected => agent.on_disconnected(),
        Inbound::Message { topic, payload } => match agent.inbox(&topic) {
            Some(Inbox::Config(layer)) => match agent
                .with_health(cx.pipeline.health())
                .on_document(layer, &payload)
            {
                DocumentOutcome::Unchanged
                | DocumentOutcome::Ignored
                | DocumentOutcome::Deferred => {}
                DocumentOutcome::Rejected(_) => {
                    publish(agent.state_topic(), agent.state_payload(), true);
                }
                DocumentOutcome::Live { text, config, .. } => {
                    let label = format!("remote {} document", layer.as_str());
                    cx.reloader
                        .apply(&label, text, *config, &cx.pipeline.config);
                    publish(agent.state_topic(), agent.state_payload(), true);
                }
                DocumentOutcome::Restart { .. } => {
                    publish(agent.state_topic(), agent.state_payload(), true);
                    return RunEnd::Restart;
                }
            },
            Some(Inbox::Command) => match agent.on_command(&payload) {
                CommandOutcome::Ignored => {}
                CommandOutcome::Refused(answer) => publish(agent.result_topic(), answer, false),
                CommandOutcome::Run(c) => match c.action {
                    Action::Status => {
                        let _ = cx.out.try_send(Outbound::Status);
                        publish(agent.result_topic(), agent.command_result(&c, None), false);
                    }
                    Action::Reconnect => {
                        agent.defer_reconnect_answer(c.nonce.clone());
                        let _ = cx.out.try_send(Outbound::Reconnect);
                    }
                    Action::RotateKeys => {
                        cx.pipeline.devices.rotate_now();
                        tracing::info!("device keys rotated by a signed command");
                        publish(agent.result_topic(), agent.command_result(&c, None), false);
                    }
                    Action::Reload => {
                        let outcome = reload_local(cx.path, cx.reloader, cx.pipeline, Some(agent));
                        publish(agent.state_topic(), agent.state_payload(), true);
                        let answer = match outcome {
                            Err(why) => agent.command_refused(&c, &why),
                            Ok(()) => agent.command_result(&c, Some("reloaded")),
                        };
                        publish(agent.result_topic(), answer, false);
                    }
                },
            },
            None => tracing::debug!(%topic, "message on an unexpected topic ignored"),
        },
    }
    RunEnd::Stopped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SpoolConfig;
    use crate::event::EventKind;

    /// A source that stops (a simulator at its limit) closes the channel: its last events must
    /// be flushed then, not left for a tick that never comes.
    #[tokio::test]
    async fn writer_flushes_when_the_sources_are_gone() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let spool = Arc::new(Spool::open(
            &dir.path().join("spool"),
            "gw",
            &SpoolConfig::default(),
        )?);
        let (tx, rx) = mpsc::channel(16);
        let writer = tokio::spawn(spool_writer(
            spool.clone(),
            rx,
            Duration::from_secs(3600),
            Telemetry::new(),
        ));
        // Let the interval's immediate first tick pass, so only the close can flush.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..10 {
            let e = Event::from_value(EventKind::BleCensus, i, serde_json::json!({ "devices": i }));
            tx.send(e).await?;
        }
        drop(tx);
        writer.await?;
        assert_eq!(spool.total_depth(), 10);
        assert!(!spool.is_dirty(), "the writer left unflushed events behind");
        Ok(())
    }
}
