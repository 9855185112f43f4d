//! `storegw replay`: runs a recorded input (btsnoop, pcap, POS export) through the same stages
//! as the live source, and prints the events it would publish, or publishes them.
//!
//! Each source implements `replay(path, &mut Replay) -> summary`; this module owns what is
//! common: the configuration, the device key, and where the events go.

use crate::config::{self, Config};
use crate::event::Event;
use crate::privacy::DevicePseudonymizer;
use crate::spool::Spool;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// State shared by every replay: configuration, device key and the event sink.
pub struct Replay {
    /// The configuration (the file given with `--config`, or the embedded demo one).
    pub cfg: Config,
    /// `--format` when the file type cannot be told from its content.
    pub format: Option<String>,
    /// A fresh RAM-only device key, exactly as the live daemon has.
    pub devices: Arc<DevicePseudonymizer>,
    publish: bool,
    events: Vec<Event>,
    printed: u64,
}

impl Replay {
    /// Builds the replay context; without a config file the embedded demo config is used.
    pub fn new(
        config_path: Option<&std::path::Path>,
        format: Option<String>,
        publish: bool,
    ) -> Result<Replay, String> {
        let cfg = match config_path {
            Some(p) => config::load(p).map_err(|e| e.to_string())?,
            None => {
                if publish {
                    return Err("--publish needs --config (the broker to publish to)".into());
                }
                let mut c = config::parse("(embedded demo config)", config::demo::DEMO_TOML, None)
                    .map_err(|e| e.to_string())?;
                c.sources.sim.enabled = false;
                c
            }
        };
        let devices = Arc::new(DevicePseudonymizer::new(
            cfg.privacy.rotation.0,
            cfg.privacy.pseudonym_bytes,
        )?);
        Ok(Replay {
            cfg,
            format,
            devices,
            publish,
            events: Vec::new(),
            printed: 0,
        })
    }

    /// One event the pipeline produced: printed as a wire JSON line now, or kept to publish.
    pub fn emit(&mut self, e: Event) {
        if self.publish {
            self.events.push(e);
            return;
        }
        self.printed += 1;
        let line = e.to_wire(&self.cfg.gateway.gateway_id, self.printed);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.write_all(b"\n");
    }

    /// Ends the replay: publishes the kept events (waiting until the broker acknowledged every
    /// one), then prints the summary line.
    pub async fn finish(self, summary: serde_json::Value) -> Result<(), String> {
        if self.publish && !self.events.is_empty() {
            publish(&self.cfg, &self.events).await?;
        }
        // A closed pipe (`| head`) is the reader's choice, not an error worth a panic.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{summary}");
        Ok(())
    }
}

/// Spools `events` in the configured state directory and runs the uplink until they are
/// acknowledged (or the connect/drain timeout passes).
async fn publish(cfg: &Config, events: &[Event]) -> Result<(), String> {
    let settings = crate::uplink::UplinkSettings::from_config(cfg)?;
    // The spool and the uplink of this publish share registries nobody renders.
    let telemetry = crate::telemetry::Telemetry::new();
    let spool = Arc::new(
        Spool::open_with(
            &cfg.spool_dir(),
            &cfg.gateway.gateway_id,
            &cfg.spool,
            telemetry.clone(),
        )
        .map_err(|e| format!("spool: {e}"))?,
    );
    for chunk in events.chunks(1024) {
        spool.append(chunk).map_err(|e| format!("spool: {e}"))?;
    }
    spool
        .flush()
        .await
        .map_err(|e| format!("spool flush: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let uplink = tokio::spawn(crate::uplink::run(
        settings,
        spool.clone(),
        telemetry,
        stop_rx,
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while spool.total_depth() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = spool.total_depth();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), uplink).await;
    let _ = spool.flush().await;
    if left > 0 {
        return Err(format!(
            "{left} events not acknowledged by the broker within 120 s; they stay in the spool at {}",
            spool.path().display()
        ));
    }
    eprintln!("published {} events", events.len());
    Ok(())
}
