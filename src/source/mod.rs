//! Input feeds. Raw identifiers exist only inside a source and its privacy stage, in RAM.
//!
//! Every source gets a [`SourceContext`] and returns the tasks it started; the daemon never
//! needs to know a source's internals, so each feed lives in its own folder.

pub mod ble;
pub mod pos;
pub mod sim;
pub mod wifi;

use crate::config::Config;
use crate::event::Event;
use crate::privacy::DevicePseudonymizer;
use crate::spool::Spool;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What the pipeline hands every source.
#[derive(Clone)]
pub struct SourceContext {
    /// The configuration the source was started with.
    pub cfg: Arc<Config>,
    /// Bounded channel to the spool writer (sensor events).
    pub tx: mpsc::Sender<Event>,
    /// Direct spool access for sources that must acknowledge only after a durable write (POS).
    pub spool: Arc<Spool>,
    /// The RAM-only rotating device key shared by BLE and Wi-Fi.
    pub devices: Arc<DevicePseudonymizer>,
    /// Flips to true when the gateway shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// The configuration in effect, replaced on SIGHUP reload (restart-only settings keep their
    /// running values). Sources apply thresholds and allowlists live by reading
    /// `config.borrow()` when they use them, or by awaiting `config.changed()`.
    pub config: watch::Receiver<Arc<Config>>,
}

/// Starts every enabled source; a source that cannot start reports itself in status and the
/// others keep running.
pub fn start_all(ctx: &SourceContext) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if ctx.cfg.sources.sim.enabled {
        let sim = sim::run(
            ctx.cfg.sources.sim.clone(),
            ctx.tx.clone(),
            Some(ctx.config.clone()),
        );
        let mut stop = ctx.shutdown.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = sim => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }));
    }
    tasks.extend(ble::start(ctx));
    tasks.extend(wifi::start(ctx));
    tasks.extend(pos::start(ctx));
    tasks
}

/// HTTP routes sources add to the loopback server (POS ingest).
pub fn http_routes(ctx: &SourceContext) -> axum::Router {
    pos::http_routes(ctx)
}
