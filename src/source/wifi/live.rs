//! The live Wi-Fi task: capture socket → [`FrameStage`] → spool channel, a one-second timer that
//! advances event time (so quiet windows are still reported), channel hopping, and recovery
//! when the adapter disappears (retried every 10 s, visible in status).

use super::capture::{Capture, CaptureError, LinkMode};
use super::frame_stage::{FrameStage, Stats};
use crate::config::Config;
use crate::event::Stream;
use crate::event::{now_ms, Event};
use crate::source::SourceContext;
use crate::telemetry::health::SourceState;
use crate::telemetry::metrics::{Metric, Metrics};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const RETRY: Duration = Duration::from_secs(10);
/// Frames longer than this are cut (probe requests are a few hundred bytes).
const SNAP: usize = 4096;

/// Runs until shutdown: opens the interface, captures, retries on failure.
pub async fn run(ctx: SourceContext, mode: LinkMode) {
    let cfg = ctx.cfg.sources.wifi.clone();
    let mut stop = ctx.shutdown.clone();
    let health = ctx.telemetry.health();
    let mut p = FrameStage::new(&cfg, ctx.cfg.privacy.min_count, ctx.devices.clone(), false);
    p.footfall.open_at(now_ms());
    let mut reported = Stats::default();
    loop {
        health.set_source(
            "wifi",
            SourceState::Starting,
            Some(format!("opening {}", cfg.interface)),
        );
        let err = match Capture::open(&cfg.interface, mode, cfg.bpf_filter) {
            Ok(cap) => {
                health.set_source(
                    "wifi",
                    SourceState::Running,
                    Some(format!("capturing on {}", cfg.interface)),
                );
                tracing::info!(
                    interface = %cfg.interface,
                    linktype = cap.linktype,
                    bpf = cfg.bpf_filter,
                    "wifi capture started"
                );
                let hopper = tokio::spawn(hop(
                    cfg.interface.clone(),
                    ctx.config.clone(),
                    ctx.telemetry.clone(),
                ));
                let r = capture_loop(&ctx, &cap, &mut p, &mut reported).await;
                hopper.abort();
                match r {
                    Ok(()) => return, // shutdown
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        let msg = err.to_string();
        tracing::error!(interface = %cfg.interface, "{msg}");
        health.set_source("wifi", SourceState::Failed, Some(msg));
        // Keep the windows ticking while the adapter is away.
        let until = tokio::time::Instant::now() + RETRY;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let mut out = Vec::new();
                    p.advance(now_ms(), &mut out);
                    send(&ctx.tx, out).await;
                }
                _ = stopped(&mut stop) => {
                    finish(&ctx, &mut p).await;
                    return;
                }
            }
        }
    }
}

/// Resolves when shutdown is signalled (or the sender is gone).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn finish(ctx: &SourceContext, p: &mut FrameStage) {
    let mut out = Vec::new();
    p.finish(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(2), send(&ctx.tx, out)).await;
    ctx.telemetry
        .health()
        .set_source("wifi", SourceState::Stopped, None);
}

async fn send(tx: &mpsc::Sender<Event>, out: Vec<Event>) {
    for e in out {
        if tx.send(e).await.is_err() {
            return;
        }
    }
}

/// Publishes counter increments since the last call to the pipeline's `m`.
fn report(s: &Stats, last: &mut Stats, m: &Metrics) {
    for (name, now, before) in [
        (Metric::WifiFrames, s.frames, last.frames),
        (
            Metric::WifiProbeRequests,
            s.probe_requests,
            last.probe_requests,
        ),
        (Metric::WifiAccepted, s.accepted, last.accepted),
        (Metric::WifiMalformed, s.malformed, last.malformed),
        (Metric::WifiBadFcs, s.bad_fcs, last.bad_fcs),
        (Metric::WifiGroupSource, s.group_source, last.group_source),
    ] {
        if now > before {
            m.count(name, "", now - before);
        }
    }
    if s.no_key > last.no_key {
        m.drops(Stream::Wifi, "no_key", s.no_key - last.no_key);
    }
    *last = *s;
}

/// Reads frames until shutdown (`Ok`) or a socket error (`Err`).
async fn capture_loop(
    ctx: &SourceContext,
    cap: &Capture,
    p: &mut FrameStage,
    reported: &mut Stats,
) -> Result<(), CaptureError> {
    let mut stop = ctx.shutdown.clone();
    let mut config = ctx.config.clone();
    let mut config_open = true;
    let mut buf = vec![0u8; SNAP];
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = config.changed(), if config_open => {
                if changed.is_ok() {
                    let c = config.borrow_and_update().clone();
                    p.reconfigure(&c.sources.wifi, c.privacy.min_count);
                    tracing::info!("Wi-Fi: thresholds and policies reloaded");
                } else {
                    config_open = false;
                }
            }
            r = cap.recv(&mut buf) => {
                let mut r = Some(r?);
                let now = now_ms();
                // Drain what is queued before yielding, up to a bound.
                let mut n = 0;
                while let Some(got) = r {
                    let data = buf.get(..got.len).unwrap_or(&[]);
                    p.frame(cap.linktype, data, got.cut, now, &mut out);
                    n += 1;
                    r = if n < 256 { cap.try_recv(&mut buf)? } else { None };
                }
                send(&ctx.tx, std::mem::take(&mut out)).await;
            }
            _ = tick.tick() => {
                p.advance(now_ms(), &mut out);
                send(&ctx.tx, std::mem::take(&mut out)).await;
                report(&p.stats, reported, ctx.telemetry.metrics());
                ctx.telemetry.metrics().gauge(
                    Metric::WifiTrackedDevices,
                    "",
                    p.estimator.len() as f64,
                );
                let drops = cap.kernel_drops();
                if drops > 0 {
                    ctx.telemetry.metrics().count(Metric::WifiKernelDrops, "", drops);
                }
                if p.stats.frames > 0 {
                    ctx.telemetry.health().source_input("wifi");
                }
            }
            _ = stopped(&mut stop) => {
                report(&p.stats, reported, ctx.telemetry.metrics());
                finish(ctx, p).await;
                return Ok(());
            }
        }
    }
}

/// Channel hopping through `iw` (nl80211 from Rust would need a netlink implementation;
/// `iw` is in every distribution and already needed to set monitor mode). The channel list and
/// dwell are read from the live configuration before every hop, so a reload applies them at
/// the next hop; with no channels configured the hopper waits for a reload that sets some.
async fn hop(
    interface: String,
    mut config: watch::Receiver<Arc<Config>>,
    telemetry: crate::telemetry::Telemetry,
) {
    let mut warned = false;
    let mut next = 0usize;
    let mut current: Vec<u16> = Vec::new();
    loop {
        let (channels, dwell) = {
            let c = config.borrow_and_update();
            (c.sources.wifi.channels.clone(), c.sources.wifi.hop_dwell.0)
        };
        if channels.is_empty() {
            if config.changed().await.is_err() {
                return;
            }
            continue;
        }
        if channels != current {
            if !current.is_empty() {
                tracing::info!(channels = ?channels, "Wi-Fi: channel list reloaded");
            }
            current = channels;
            next = 0;
        }
        let ch = current[next % current.len()];
        next = (next + 1) % current.len();
        let iface = interface.clone();
        let r = tokio::task::spawn_blocking(move || {
            std::process::Command::new("iw")
                .args(["dev", &iface, "set", "channel", &ch.to_string()])
                .output()
        })
        .await;
        let failed = match r {
            Ok(Ok(o)) if o.status.success() => None,
            Ok(Ok(o)) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Ok(Err(e)) => Some(format!("cannot run iw: {e}")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failed {
            if !warned {
                tracing::warn!(interface = %interface, channel = ch, "channel hop failed: {why}");
                telemetry.health().set_source(
                    "wifi",
                    SourceState::Degraded,
                    Some(format!("channel hopping: {why}")),
                );
                warned = true;
            }
        }
        tokio::time::sleep(dwell).await;
    }
}
