//! Wires the pipeline together: sources → spool writer → spool → uplink, plus the control plane.

use crate::config::Config;
use crate::event::Event;
use crate::ops::{http_server, metrics, status, systemd};
use crate::spool::Spool;
use crate::uplink::{self, UplinkSettings};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Capacity of the channel between sources and the spool writer (backpressure, not RAM growth).
pub const SOURCE_CHANNEL: usize = 4096;

/// A running pipeline; dropping it does not stop it, call [`Pipeline::shutdown`].
pub struct Pipeline {
    pub spool: Arc<Spool>,
    sources: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
    uplink: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    http: Option<JoinHandle<()>>,
    shutdown_tx: watch::Sender<bool>,
    sources_stop: watch::Sender<bool>,
    /// The configuration in effect; SIGHUP reload publishes here (see `ops::reload`).
    pub config: watch::Sender<Arc<Config>>,
}

/// Moves events from the sources' channel into the spool: buffered up to one chunk per stream
/// or one flush interval, then appended and flushed together. A power cut loses at most one
/// flush interval of sensor events, and the SD card sees one fsync per interval, not per event.
async fn spool_writer(spool: Arc<Spool>, mut rx: mpsc::Receiver<Event>, flush_interval: Duration) {
    let _vital = status::Vital::panic_only("spool writer");
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
                    write_batch(&spool, &mut buf);
                }
            }
            _ = tick.tick() => {
                write_batch(&spool, &mut buf);
                if let Err(e) = spool.flush_if_dirty().await {
                    tracing::error!(error = %e, "spool flush failed");
                }
            }
        }
    }
    // Every sender is gone (sources stopped, or a simulator reached its limit): what came in
    // since the last tick must still reach the disk, not wait for a tick that never comes.
    write_batch(&spool, &mut buf);
    if let Err(e) = spool.flush_if_dirty().await {
        tracing::error!(error = %e, "spool flush failed");
    }
}

fn write_batch(spool: &Spool, buf: &mut Vec<Event>) {
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
            Ok(_) => metrics::global().events_in(stream, part.len() as u64),
            Err(crate::spool::SpoolError::Full { .. }) => {}
            Err(e) => {
                tracing::error!(error = %e, stream = %stream, events = part.len(), "spool append failed");
                spool.count_drop(stream, "spool_error", part.len() as u64);
            }
        }
    }
}

impl Pipeline {
    /// Opens the spool and starts every configured source, the uplink and the HTTP server.
    pub async fn start(cfg: &Config) -> Result<Pipeline, String> {
        status::mark_started();
        status::set_stopping(false);
        let settings = UplinkSettings::from_config(cfg)?;
        let spool = Arc::new(
            Spool::open(&cfg.spool_dir(), &cfg.gateway.gateway_id, &cfg.spool)
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
        let writer = tokio::spawn(spool_writer(spool.clone(), rx, cfg.spool.flush_interval.0));
        let ctx = crate::source::SourceContext {
            cfg: Arc::new(cfg.clone()),
            tx,
            pos_sink: crate::source::DurableSink::new(spool.clone()),
            devices: devices.clone(),
            shutdown: sources_stop_rx,
            config: config_rx,
        };
        let crate::source::Started {
            tasks: sources,
            routes: source_routes,
        } = crate::source::start_all(&ctx);
        // The writer ends once every sender is gone: the context's copy must go too.
        drop(ctx);
        let mut http_task = None;
        if cfg.http.enabled {
            let router = http_server::base_router(spool.clone()).merge(source_routes);
            let limits = http_server::Limits::from_config(&cfg.http);
            match http_server::serve(&cfg.http.listen, router, limits).await {
                Ok(h) => http_task = Some(h),
                Err(e) => tracing::error!("{e}; metrics, health and POS ingest are off"),
            }
        }
        background.push(tokio::spawn(housekeeping(cfg.clone(), spool.clone())));
        background.push(tokio::spawn(expire_device_keys(devices)));
        let up_spool = spool.clone();
        let up_config = config_tx.subscribe();
        let uplink = tokio::spawn(async move {
            let _vital = status::Vital::new("uplink");
            uplink::run_live(settings, up_spool, shutdown_rx, Some(up_config)).await
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
            shutdown_tx,
            sources_stop,
            config: config_tx,
        })
    }

    /// Stops sources, spools what they produced, flushes, lets the uplink wait for in-flight
    /// acknowledgements, publishes `offline` and disconnects.
    pub async fn shutdown(self) {
        systemd::stopping();
        status::set_stopping(true);
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
async fn housekeeping(cfg: Config, spool: Arc<Spool>) {
    let wd = systemd::watchdog_interval();
    let mut tick = tokio::time::interval(
        wd.unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5)),
    );
    let path = cfg.gateway.state_dir.join("status.json");
    loop {
        tick.tick().await;
        let payload = status::file_payload(
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
        let reasons = status::unhealthy_reasons(&spool);
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
                if metrics::global().connected() {
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

/// `storegw run`: start, reload the configuration from `path` on SIGHUP, run until a
/// termination signal, drain.
pub async fn run(cfg: Config, path: &std::path::Path) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered before anything starts: SIGHUP's default action would end the process.
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
    let mut reloader = crate::ops::reload::Reloader::new(path);
    let p = Pipeline::start(&cfg).await?;
    let term = termination();
    tokio::pin!(term);
    loop {
        tokio::select! {
            _ = &mut term => break,
            Some(()) = hup.recv() => {
                tracing::info!(file = %path.display(), "SIGHUP: reloading the configuration");
                reloader.reload(path, &p.config);
            }
        }
    }
    tracing::info!("termination signal: draining");
    p.shutdown().await;
    Ok(())
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
        let writer = tokio::spawn(spool_writer(spool.clone(), rx, Duration::from_secs(3600)));
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
