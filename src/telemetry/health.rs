//! The health registry: how each source is doing, which pipeline tasks died, uptime, the
//! configuration keys waiting for a restart and the remote configuration state. Sources, the
//! spool writer and the uplink report here; `ops::status` and `/metrics` read it.

use crate::event::{now_ms, rfc3339_ms};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
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
    /// Why the state is what it is (the error, the missing device), as last reported; None
    /// when the source gave no reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the source last saw input (RFC 3339 UTC); None until it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_input: Option<String>,
    /// The same instant in ms, for the metrics' age gauge.
    #[serde(skip)]
    pub last_input_ms: Option<i64>,
    /// Restarts inside the source since the gateway started (e.g. the BLE scanner), not
    /// restarts of the process.
    pub restarts: u64,
}

/// Marks a pipeline task that must keep running: if it panics, or (for tasks that only end on
/// shutdown) ends before the gateway is stopping, the gateway turns unhealthy, `/healthz` says
/// why and the systemd watchdog is no longer fed, so systemd restarts the process. It holds the
/// registry it reports to, so a task dying in one pipeline never marks another one unhealthy.
pub struct Vital {
    health: Arc<Health>,
    name: &'static str,
    panic_only: bool,
}

impl Drop for Vital {
    fn drop(&mut self) {
        let failed = std::thread::panicking()
            || (!self.panic_only && !self.health.stopping.load(Ordering::Relaxed));
        if failed {
            tracing::error!(task = self.name, "pipeline task ended unexpectedly");
            self.health.lock_dead().push(self.name);
        }
    }
}

/// One pipeline's health registry. It is handed down inside [`super::Telemetry`] rather than
/// kept in statics, so each pipeline (and each test) reads only what its own parts reported.
#[derive(Default)]
pub struct Health {
    sources: Mutex<BTreeMap<String, SourceHealth>>,
    started: OnceLock<Instant>,
    dead_tasks: Mutex<Vec<&'static str>>,
    stopping: AtomicBool,
    pending_restart: Mutex<Vec<String>>,
    config_state: Mutex<Option<serde_json::Value>>,
}

impl Health {
    /// Watches a task that runs until shutdown (the uplink).
    pub fn vital(self: &Arc<Self>, name: &'static str) -> Vital {
        Vital {
            health: self.clone(),
            name,
            panic_only: false,
        }
    }

    /// Watches a task that may end normally (the spool writer ends when every source is done),
    /// so only a panic counts.
    pub fn vital_panic_only(self: &Arc<Self>, name: &'static str) -> Vital {
        Vital {
            health: self.clone(),
            name,
            panic_only: true,
        }
    }

    // A writer that panicked left at worst one entry half updated: reporting on with it beats
    // losing every later report (and a dead task's own report).
    fn lock_sources(&self) -> MutexGuard<'_, BTreeMap<String, SourceHealth>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_dead(&self) -> MutexGuard<'_, Vec<&'static str>> {
        self.dead_tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Declares an orderly shutdown (vital tasks may end) or a fresh start (clears old failures).
    pub fn set_stopping(&self, stopping: bool) {
        self.stopping.store(stopping, Ordering::Relaxed);
        if !stopping {
            self.lock_dead().clear();
        }
    }

    /// Marks the pipeline's start for the uptime figure (the first call counts).
    pub fn mark_started(&self) {
        let _ = self.started.set(Instant::now());
    }

    /// Seconds since start (0 before [`Health::mark_started`]: a tool, not a running gateway).
    pub fn uptime_s(&self) -> u64 {
        self.started
            .get()
            .map(|s| s.elapsed().as_secs())
            .unwrap_or(0)
    }

    /// Sets a source's state and detail.
    pub fn set_source(&self, name: &str, state: SourceState, detail: Option<String>) {
        let mut m = self.lock_sources();
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

    /// Records the changed keys a reload could not apply (they wait for a restart), so the status
    /// file tells the operator what the running gateway is not doing yet.
    pub fn set_pending_restart(&self, keys: Vec<String>) {
        *self
            .pending_restart
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// Sets the remote configuration state (`config` in the status document; docs/fleet.md). None
    /// when remote configuration is off: the field is then left out.
    pub fn set_config(&self, state: Option<serde_json::Value>) {
        *self.config_state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// The remote configuration state, when remote configuration is on.
    pub fn config_state(&self) -> Option<serde_json::Value> {
        self.config_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The changed keys that wait for a restart (empty when the running configuration is the file).
    pub fn pending_restart(&self) -> Vec<String> {
        self.pending_restart
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records that a source saw input now.
    pub fn source_input(&self, name: &str) {
        let now = now_ms();
        let mut m = self.lock_sources();
        let h = m.entry(name.to_string()).or_default();
        h.last_input = Some(rfc3339_ms(now));
        h.last_input_ms = Some(now);
    }

    /// Counts a restart of a source (e.g. the BLE scanner watchdog) in its health; the metric
    /// with `what` is counted by [`super::Telemetry::source_restart`].
    pub fn source_restart(&self, name: &str) {
        self.lock_sources()
            .entry(name.to_string())
            .or_default()
            .restarts += 1;
    }

    /// Snapshot of every source.
    pub fn source_snapshot(&self) -> BTreeMap<String, SourceHealth> {
        self.lock_sources().clone()
    }

    /// The pipeline tasks that ended unexpectedly (see [`Vital`]).
    pub fn dead_tasks(&self) -> Vec<&'static str> {
        self.lock_dead().clone()
    }
}
