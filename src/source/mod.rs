//! Input feeds. Raw identifiers exist only inside a source and its privacy stage
//! (`crate::privacy`), in RAM.
//!
//! The source contract (docs/design.md, "Source contract"): every source has
//! `start(&SourceContext) -> Started` (its tasks and HTTP routes) and, when it has recorded
//! inputs, `replay(path, &mut Replay) -> summary`; the daemon never needs to know a source's
//! internals, so each feed lives in its own folder.

pub mod ble;
pub mod pos;
pub mod replay;
pub mod sim;
pub mod sink;
pub mod wifi;

pub use sink::DurableSink;

use crate::config::Config;
use crate::event::Event;
use crate::privacy::DevicePseudonymizer;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What the pipeline hands every source.
#[derive(Clone)]
pub struct SourceContext {
    /// The configuration the source was started with.
    pub cfg: Arc<Config>,
    /// Bounded channel to the spool writer (sensor events): a slow disk is backpressure.
    pub tx: mpsc::Sender<Event>,
    /// The durable path for sources that may acknowledge their input only once it is on disk
    /// (POS answers the till after append + flush); sensor sources use `tx`.
    pub pos_sink: DurableSink,
    /// The RAM-only rotating device key shared by BLE and Wi-Fi.
    pub devices: Arc<DevicePseudonymizer>,
    /// Flips to true when the gateway shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// The configuration in effect, replaced on SIGHUP reload (restart-only settings keep their
    /// running values, see `ops::reload::RULES`). Sources apply live settings by reading
    /// `config.borrow()` when they use them, or by awaiting `config.changed()`.
    pub config: watch::Receiver<Arc<Config>>,
}

/// What a started source hands back: the tasks the daemon stops at shutdown, and the routes it
/// adds to the loopback HTTP server (empty for sources without an HTTP input).
#[derive(Default)]
pub struct Started {
    /// Tasks that end when `SourceContext::shutdown` flips.
    pub tasks: Vec<JoinHandle<()>>,
    /// Routes merged into the loopback server.
    pub routes: axum::Router,
}

impl Started {
    /// A source that only runs tasks.
    pub fn tasks(tasks: Vec<JoinHandle<()>>) -> Started {
        Started {
            tasks,
            routes: axum::Router::new(),
        }
    }

    fn merge(mut self, other: Started) -> Started {
        self.tasks.extend(other.tasks);
        self.routes = self.routes.merge(other.routes);
        self
    }
}

/// Starts every enabled source the same way (`<source>::start(ctx) -> Started`); a source that
/// cannot start reports itself in status and the others keep running.
pub fn start_all(ctx: &SourceContext) -> Started {
    [sim::start, ble::start, wifi::start, pos::start]
        .into_iter()
        .fold(Started::default(), |all, start| all.merge(start(ctx)))
}

/// The feeds `storegw replay` can run a recorded input through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFeed {
    /// btsnoop logs or JSON lines of advertising reports.
    Ble,
    /// pcap / pcapng captures.
    Wifi,
    /// POS export files.
    Pos,
}

/// `storegw replay`: every source's `replay(path, &mut Replay)` entry point, by feed.
pub fn replay(
    feed: ReplayFeed,
    path: &std::path::Path,
    r: &mut replay::Replay,
) -> Result<serde_json::Value, String> {
    match feed {
        ReplayFeed::Ble => ble::replay(path, r),
        ReplayFeed::Wifi => wifi::replay(path, r),
        ReplayFeed::Pos => pos::replay(path, r),
    }
}
