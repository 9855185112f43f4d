//! Confirmation, rollback and probation of a change (docs/fleet.md, "On the gateway"): a
//! change applied by a restart is kept only once the broker was reached, the subscription
//! granted, the state publish acknowledged, the session settled and the pipeline healthy; each
//! start gets one confirm window on the monotonic clock, and the start count bounds the tries.

use super::{Agent, MAX_PROBATION_STARTS, MAX_UNCONFIRMED_STARTS, PROBATION};
use crate::remote::document;
use crate::remote::state::{Layer, Probation, ReportState};
use std::time::Duration;

impl Agent {
    /// A change installed by the previous process is confirmed by reaching the broker and
    /// running healthy; this start counts one more try and gets a full `confirm_timeout`,
    /// measured on the monotonic clock. The tries are the bound: after
    /// [`MAX_UNCONFIRMED_STARTS`] the change is rolled back before anything runs, so a
    /// configuration that crashes the gateway is undone too, whatever the wall clock did.
    pub(super) fn check_pending_at_boot(&mut self) -> Result<(), String> {
        let Some(mut p) = self.state.pending.clone() else {
            return Ok(());
        };
        p.starts += 1;
        if p.starts > MAX_UNCONFIRMED_STARTS {
            let why = format!("not confirmed after {} starts", p.starts - 1);
            self.roll_back(p.layer, p.version, why)?;
        } else {
            self.confirm_by = Some(tokio::time::Instant::now() + self.confirm_timeout);
            tracing::warn!(
                layer = p.layer.as_str(),
                version = p.version,
                start = p.starts,
                confirm_within_s = self.confirm_timeout.as_secs(),
                "configuration applied by restart: waiting to reach the broker and run healthy before keeping it"
            );
            self.state.pending = Some(p);
        }
        self.save()
    }

    /// A change in effect but still on probation: this start counts; too many starts within
    /// [`PROBATION`] of it roll it back.
    pub(super) fn check_probation_at_boot(&mut self) -> Result<(), String> {
        let Some(mut p) = self.state.probation.clone() else {
            return Ok(());
        };
        p.starts += 1;
        if p.starts >= MAX_PROBATION_STARTS {
            let why = format!(
                "the gateway started {} times within {} min of this change",
                p.starts,
                PROBATION.as_secs() / 60
            );
            self.state.probation = None;
            self.roll_back(p.layer, p.version, why)?;
        } else {
            self.state.probation = Some(p);
            self.probation_until = Some(tokio::time::Instant::now() + PROBATION);
        }
        self.save()
    }

    /// When this start has run long enough to end a change's probation (None: none).
    pub fn probation_deadline(&self) -> Option<tokio::time::Instant> {
        self.probation_until
    }

    /// This start ran for [`PROBATION`]: the change on probation is kept for good if the
    /// gateway has no health problem it did not have before the change (`problems`: the
    /// pipeline's health problems now); if it has, it is looked at again a minute later.
    /// Returns true when the probation ended (documents deferred meanwhile may apply now).
    pub fn on_probation_elapsed(&mut self, problems: &[String]) -> bool {
        let baseline = self
            .state
            .probation
            .as_ref()
            .map(|p| p.baseline.clone())
            .unwrap_or_default();
        let new = new_problems(problems, &baseline);
        if !new.is_empty() {
            tracing::warn!(reason = %new.join("; "), "a recent configuration change is still on probation: the gateway is unhealthy");
            self.probation_until = Some(tokio::time::Instant::now() + Duration::from_secs(60));
            return false;
        }
        self.probation_until = None;
        if self.state.probation.take().is_some() {
            if let Err(e) = self.save() {
                tracing::error!(error = %e, "cannot record the end of a change's probation");
            }
        }
        true
    }

    pub(super) fn roll_back(
        &mut self,
        layer: Layer,
        version: i64,
        why: String,
    ) -> Result<(), String> {
        let last = self
            .unhealthy
            .as_ref()
            .or(self.last_connect_error.as_ref())
            .or(self
                .state
                .pending
                .as_ref()
                .and_then(|p| p.last_error.as_ref()));
        let reason = match last {
            Some(e) => format!("{why} (last problem: {})", document::excerpt(e, 200)),
            None => why,
        };
        tracing::error!(layer = layer.as_str(), version, %reason, "rolling back to the previous configuration");
        // Only the document being rolled back is replaced: a rollback run again (a power cut
        // after it) finds the previous one already back and leaves it.
        let stored = self.stored_overlay(layer).ok().flatten().map(|(_, v)| v);
        if stored == Some(version) {
            self.dir.restore_previous(layer)?;
        }
        let prev = self
            .stored_overlay(layer)
            .ok()
            .flatten()
            .map(|(_, v)| v)
            .unwrap_or(0);
        let v = self.state.layer_mut(layer);
        v.applied = prev;
        v.floor = v.floor.max(version);
        self.state.pending = None;
        self.confirm_by = None;
        self.report(version, layer, ReportState::RolledBack, Some(reason));
        Ok(())
    }

    /// The broker was reached and (`subscribed`) granted the remote topics: confirms a change
    /// applied by restart. A refused subscription does not confirm: the gateway could not be
    /// corrected remotely any more. Returns true when the report changed.
    pub fn on_connected(&mut self, subscribed: bool) -> bool {
        self.subscribed = subscribed;
        // The retained documents come again: refusals are judged again (the clock may have
        // been set, the local file reloaded).
        self.refused.clear();
        if !subscribed {
            self.on_connect_failed(
                "connected, but the broker refused the subscription to the remote topics".into(),
            );
        }
        false
    }

    /// The broker acknowledged the configuration state published on this session: with the
    /// subscription granted, the session only has to last [`Agent::settle_time`] to confirm a
    /// change applied by restart (a broker that accepts and then drops the session, as an ACL
    /// that refuses the new topics may, does not confirm it).
    pub fn on_acknowledged(&mut self) {
        if self.subscribed && self.state.pending.is_some() {
            self.settle_until = Some(tokio::time::Instant::now() + self.settle_time());
        }
    }

    /// The session ended: a confirmation waiting for it to settle is off.
    pub fn on_disconnected(&mut self) {
        self.subscribed = false;
        self.settle_until = None;
    }

    /// How long a working session must last to confirm: a quarter of `confirm_timeout`, at
    /// most 10 s.
    pub fn settle_time(&self) -> Duration {
        (self.confirm_timeout / 4).min(Duration::from_secs(10))
    }

    /// When a settling session confirms the pending change (None: nothing settling).
    pub fn settle_deadline(&self) -> Option<tokio::time::Instant> {
        self.settle_until
    }

    /// The session lasted: confirms the change applied by restart if the pipeline is healthy
    /// (`problems`: the pipeline's health problems now; healthy means every enabled source
    /// running, the HTTP listener bound, the spool writable), not counting problems it already
    /// had before the change. An unhealthy gateway does not confirm; it tries again one settle
    /// time later, until the confirm deadline rolls the change back with the health problem as
    /// the reason. Returns true when the report changed.
    pub fn on_settled(&mut self, problems: &[String]) -> bool {
        if self.settle_until.take().is_none() {
            return false;
        }
        self.last_connect_error = None;
        let Some(baseline) = self.state.pending.as_ref().map(|p| p.baseline.clone()) else {
            return false;
        };
        let new = new_problems(problems, &baseline);
        if !new.is_empty() {
            let why = new.join("; ");
            if self.unhealthy.as_deref() != Some(why.as_str()) {
                tracing::warn!(reason = %why, "configuration change not confirmed yet: the gateway is not healthy with it");
            }
            self.unhealthy = Some(why);
            if self.subscribed {
                self.settle_until = Some(tokio::time::Instant::now() + self.settle_time());
            }
            return false;
        }
        self.unhealthy = None;
        let Some(p) = self.state.pending.take() else {
            return false;
        };
        self.confirm_by = None;
        // Confirmed, and watched for a while: repeated starts soon after still roll it back.
        self.state.probation = Some(Probation {
            layer: p.layer,
            version: p.version,
            starts: 0,
            baseline: p.baseline.clone(),
        });
        self.probation_until = Some(tokio::time::Instant::now() + PROBATION);
        self.report(p.version, p.layer, ReportState::Applied, None);
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "cannot record the confirmed configuration");
        }
        tracing::info!(
            layer = p.layer.as_str(),
            version = p.version,
            "configuration confirmed: the broker was reached with it"
        );
        true
    }

    /// The uplink could not connect; the reason goes into a rollback's report.
    pub fn on_connect_failed(&mut self, error: String) {
        self.subscribed = false;
        self.settle_until = None;
        let error = document::excerpt(&error, 200);
        let changed = match &mut self.state.pending {
            Some(p) if p.last_error.as_deref() != Some(error.as_str()) => {
                p.last_error = Some(error.clone());
                true
            }
            _ => false,
        };
        if changed {
            if let Err(e) = self.save() {
                tracing::error!(error = %e, "cannot record the remote configuration state");
            }
        }
        self.last_connect_error = Some(error);
    }

    /// When an unconfirmed change must be rolled back (None: nothing to confirm).
    pub fn confirm_deadline(&self) -> Option<tokio::time::Instant> {
        self.confirm_by
    }

    /// The deadline passed without reaching the broker: puts the previous document back. The
    /// process must then exit so the previous configuration runs.
    pub fn on_confirm_timeout(&mut self) -> Result<(), String> {
        let Some(p) = self.state.pending.clone() else {
            return Ok(());
        };
        let why = if self.unhealthy.is_some() {
            format!(
                "not confirmed: the gateway did not run healthy within {}s of applying it",
                self.confirm_timeout.as_secs()
            )
        } else {
            format!(
                "not confirmed: the broker was not reached within {}s of applying it",
                self.confirm_timeout.as_secs()
            )
        };
        self.roll_back(p.layer, p.version, why)?;
        self.save()
    }
}

/// The problems in `now` the gateway did not have before the change (`baseline`), compared by
/// what failed (the text before the first `:`), not by the detail.
fn new_problems(now: &[String], baseline: &[String]) -> Vec<String> {
    let what = |p: &str| p.split(':').next().unwrap_or(p).trim().to_string();
    let before: Vec<String> = baseline.iter().map(|b| what(b)).collect();
    now.iter()
        .filter(|p| !before.contains(&what(p)))
        .cloned()
        .collect()
}
