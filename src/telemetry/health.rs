//! The health registry: how each source is doing, which pipeline tasks died, uptime, the
//! configuration keys waiting for a restart and the remote configuration state. Sources, the
//! spool writer and the uplink report here; `ops::status` and `/metrics` read it.

use crate::event::{now_ms, rfc3339_ms};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// The health a source reports (its `state` in the status document and on `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// Opening its device or input.
    Starting,
    /// Producing events.
    Running,
    /// Running with a problem worth attention (channel hopping failed, a watch dir missing).
    Degraded,
    /// Not producing; the gateway is unhealthy until it recovers.
    Failed,
    /// Ended on purpose (shutdown, simulator limit).
    Stopped,
}

impl SourceState {
    /// The word used in the status document and the `state` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Running => "running",
            SourceState::Degraded => "degraded",
            SourceState::Failed => "failed",
            SourceState::Stopped => "stopped",
        }
    }
}

/// What one source reports about itself.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SourceHealth {
    /// A [`SourceState`] word (`starting`, `running`, …), kept as text in the document.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_input: Option<String>,
    /// The same instant in ms, for the metrics' age gauge.
    #[serde(skip)]
    pub last_input_ms: Option<i64>,
    pub restarts: u64,
}

static SOURCES: OnceLock<Mutex<BTreeMap<String, SourceHealth>>> = OnceLock::new();
static STARTED: OnceLock<Instant> = OnceLock::new();
static DEAD_TASKS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
static STOPPING: AtomicBool = AtomicBool::new(false);
static PENDING_RESTART: Mutex<Vec<String>> = Mutex::new(Vec::new());
static CONFIG_STATE: Mutex<Option<serde_json::Value>> = Mutex::new(None);

/// Marks a pipeline task that must keep running: if it panics, or (for tasks that only end on
/// shutdown) ends before the gateway is stopping, the gateway turns unhealthy, `/healthz` says
/// why and the systemd watchdog is no longer fed, so systemd restarts the process.
pub struct Vital {
    name: &'static str,
    panic_only: bool,
}

impl Vital {
    /// Watches a task that runs until shutdown (the uplink).
    pub fn new(name: &'static str) -> Vital {
        Vital {
            name,
            panic_only: false,
        }
    }

    /// Watches a task that may end normally (the spool writer ends when every source is done),
    /// so only a panic counts.
    pub fn panic_only(name: &'static str) -> Vital {
        Vital {
            name,
            panic_only: true,
        }
    }
}

impl Drop for Vital {
    fn drop(&mut self) {
        let failed =
            std::thread::panicking() || (!self.panic_only && !STOPPING.load(Ordering::Relaxed));
        if failed {
            tracing::error!(task = self.name, "pipeline task ended unexpectedly");
            if let Ok(mut d) = DEAD_TASKS.lock() {
                d.push(self.name);
            }
        }
    }
}

/// Declares an orderly shutdown (vital tasks may end) or a fresh start (clears old failures).
pub fn set_stopping(stopping: bool) {
    STOPPING.store(stopping, Ordering::Relaxed);
    if !stopping {
        if let Ok(mut d) = DEAD_TASKS.lock() {
            d.clear();
        }
    }
}

fn sources() -> &'static Mutex<BTreeMap<String, SourceHealth>> {
    SOURCES.get_or_init(Default::default)
}

/// Marks process start for the uptime figure.
pub fn mark_started() {
    let _ = STARTED.set(Instant::now());
}

/// Seconds since start.
pub fn uptime_s() -> u64 {
    STARTED.get().map(|s| s.elapsed().as_secs()).unwrap_or(0)
}

/// Sets a source's state and detail.
pub fn set_source(name: &str, state: SourceState, detail: Option<String>) {
    if let Ok(mut m) = sources().lock() {
        let h = m.entry(name.to_string()).or_default();
        let word = state.as_str();
        if word != h.state {
            match state {
                SourceState::Failed | SourceState::Degraded => tracing::warn!(
                    source = name,
                    state = word,
                    detail = detail.as_deref().unwrap_or(""),
                    "source unhealthy"
                ),
                _ => tracing::info!(source = name, state = word, "source state"),
            }
        }
        h.state = word.to_string();
        h.detail = detail;
    }
}

/// Records the changed keys a reload could not apply (they wait for a restart), so the status
/// file tells the operator what the running gateway is not doing yet.
pub fn set_pending_restart(keys: Vec<String>) {
    if let Ok(mut p) = PENDING_RESTART.lock() {
        *p = keys;
    }
}

/// Sets the remote configuration state (`config` in the status document; docs/fleet.md). None
/// when remote configuration is off: the field is then left out.
pub fn set_config(state: Option<serde_json::Value>) {
    if let Ok(mut c) = CONFIG_STATE.lock() {
        *c = state;
    }
}

/// The remote configuration state, when remote configuration is on.
pub fn config_state() -> Option<serde_json::Value> {
    CONFIG_STATE.lock().ok().and_then(|c| c.clone())
}

/// The changed keys that wait for a restart (empty when the running configuration is the file).
pub fn pending_restart() -> Vec<String> {
    PENDING_RESTART
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default()
}

/// Records that a source saw input now.
pub fn source_input(name: &str) {
    if let Ok(mut m) = sources().lock() {
        let now = now_ms();
        let h = m.entry(name.to_string()).or_default();
        h.last_input = Some(rfc3339_ms(now));
        h.last_input_ms = Some(now);
    }
}

/// Counts a restart of a source (e.g. the BLE scanner watchdog) in its health; the metric
/// with `what` is counted by [`crate::telemetry::source_restart`].
pub fn source_restart(name: &str) {
    if let Ok(mut m) = sources().lock() {
        m.entry(name.to_string()).or_default().restarts += 1;
    }
}

/// Snapshot of every source.
pub fn source_snapshot() -> BTreeMap<String, SourceHealth> {
    sources().lock().map(|m| m.clone()).unwrap_or_default()
}

/// The pipeline tasks that ended unexpectedly (see [`Vital`]).
pub fn dead_tasks() -> Vec<&'static str> {
    DEAD_TASKS.lock().map(|d| d.clone()).unwrap_or_default()
}
