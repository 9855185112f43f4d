//! Input feeds. Raw identifiers exist only inside a source and its privacy stage
//! (`crate::privacy`), in RAM.
//!
//! The feed contract (docs/design.md, "Adding a feed"): every feed implements [`Feed`] (its
//! name, `start(&SourceContext) -> Started` with its tasks and HTTP routes, and `replay` when
//! it has recorded inputs); its configuration section implements `config::section::Section`; and
//! it is listed once, in `config::feeds`, which gives it its place in [`FEEDS`] and in the
//! configuration. The daemon never needs to know a feed's internals, so each feed
//! lives in its own folder.

/// Declares a feed folder's unit struct and its [`Feed`] implementation from the folder's
/// `start` (and `replay`, when it has recorded inputs) functions: one line per feed.
macro_rules! feed {
    ($(#[$doc:meta])* $ty:ident, $name:literal, start = $start:path $(, replay = $replay:path)?) => {
        $(#[$doc])*
        pub struct $ty;

        impl $crate::source::Feed for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn start(&self, ctx: &$crate::source::SourceContext) -> $crate::source::Started {
                $start(ctx)
            }

            $(
            fn replay(
                &self,
                path: &std::path::Path,
                r: &mut $crate::source::replay::Replay,
            ) -> Option<Result<serde_json::Value, String>> {
                Some($replay(path, r))
            }
            )?
        }
    };
}

// The feeds' folders. Declared here like every module (so `cargo fmt` and the tools see them);
// what makes a folder a feed is its line in `config::feeds`.
pub mod ble;
pub mod pos;
pub mod sim;
pub mod wifi;

pub mod replay;
pub mod sink;

/// Declares [`FEEDS`] from the list of feeds (`config::feeds`), so a new feed adds nothing here.
macro_rules! feed_registry {
    ($($name:ident: $feed:ident, $ty:path;)+) => {
        /// Every feed, in start order (the order of `config::feeds`).
        pub const FEEDS: &[&dyn Feed] = &[$(&$name::$feed),+];
    };
}

crate::config::feeds::with_feeds!(feed_registry);

pub use sink::DurableSink;

use crate::config::Config;
use crate::event::Event;
use crate::privacy::DevicePseudonymizer;
use crate::telemetry::Telemetry;
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
    /// running values, see `ops::reload::rules`). Sources apply live settings by reading
    /// `config.borrow()` when they use them, or by awaiting `config.changed()`.
    pub config: watch::Receiver<Arc<Config>>,
    /// The pipeline's metrics and health registries: where a source reports its state, its
    /// input and its counts (handed in, so a source never reaches for a global or for `ops/`).
    pub telemetry: Telemetry,
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

/// One input feed: what the daemon and `storegw replay` need of it (docs/design.md, "Adding
/// a feed"). Its configuration section, checks and reload rows live in its `config.rs`
/// (`crate::config::section::Section`), below the root configuration.
pub trait Feed: Sync {
    /// Its name: `[sources.<name>]`, the source label in status and metrics, `replay --<name>`.
    fn name(&self) -> &'static str;

    /// Starts it when its section enables it (an empty [`Started`] otherwise); a feed that
    /// cannot start reports itself in status and the others keep running.
    fn start(&self, ctx: &SourceContext) -> Started;

    /// Runs a recorded input through the live pipeline for `storegw replay`; None when the
    /// feed has no recorded inputs.
    fn replay(
        &self,
        _path: &std::path::Path,
        _r: &mut replay::Replay,
    ) -> Option<Result<serde_json::Value, String>> {
        None
    }
}

/// Starts every enabled feed.
pub fn start_all(ctx: &SourceContext) -> Started {
    FEEDS
        .iter()
        .fold(Started::default(), |all, f| all.merge(f.start(ctx)))
}

/// The feed of that name.
pub fn feed(name: &str) -> Option<&'static dyn Feed> {
    FEEDS.iter().copied().find(|f| f.name() == name)
}

/// `storegw replay`: the named feed's recorded input through the live pipeline.
pub fn replay(
    name: &str,
    path: &std::path::Path,
    r: &mut replay::Replay,
) -> Result<serde_json::Value, String> {
    feed(name)
        .and_then(|f| f.replay(path, r))
        .unwrap_or_else(|| Err(format!("the {name} feed has no recorded inputs to replay")))
}
