//! The accept policy: what a message on a config topic leads to. Unverified input is only
//! counted; a signed document waits while a change is pending; an accepted one is committed to
//! disk in an order a power cut cannot break, then applied live or by a restart.

use super::{damaged_reason, layer_index, Agent, DocumentOutcome, UNVERIFIED_LOG_EVERY};
use crate::event::{now_ms, rfc3339_ms};
use crate::ops::reload;
use crate::remote::document::{self, Rejection};
use crate::remote::state::{Installing, Layer, Pending, Persisted, Report, ReportState};
use time::OffsetDateTime;

impl Agent {
    /// Verifies a document from a config topic and decides how it applies; an accepted
    /// document is on disk before this returns. Input no trusted key signed is only counted
    /// (never persisted, reported or answered); a signed refusal is reported, not written; and a
    /// signed document that comes while a change is pending or on probation waits until that
    /// change is settled, so the rollback target stays the one before it.
    pub fn on_document(&mut self, layer: Layer, signed: &[u8]) -> DocumentOutcome {
        if signed.is_empty() {
            // A cleared retained message: the layer's document stays; only a newer signed
            // document changes anything.
            return DocumentOutcome::Unchanged;
        }
        let i = layer_index(layer);
        if self.last_unverified[i].as_deref() == Some(signed)
            || self.refused.contains(signed)
            || self.dir.document(layer).ok().flatten().as_deref() == Some(signed)
        {
            return DocumentOutcome::Unchanged;
        }
        let doc = match document::verify_signature(signed, &self.keys) {
            Ok(d) => d,
            Err(r) if r.is_unverified() => {
                self.unverified("config", &r);
                self.last_unverified[i] = Some(signed.to_vec());
                return DocumentOutcome::Ignored;
            }
            Err(r) => return self.refuse(layer, signed, 0, r),
        };
        if let Some(e) = &self.state_damaged {
            let reason = damaged_reason(e);
            tracing::warn!(layer = layer.as_str(), version = doc.version, %reason, "remote configuration refused");
            // Reported, not persisted: the damaged file is left for a person to look at.
            self.refused.insert(signed);
            self.report(
                doc.version,
                layer,
                ReportState::Rejected,
                Some(reason.clone()),
            );
            return DocumentOutcome::Rejected(reason);
        }
        match self.accept(layer, signed, doc) {
            Ok(o) => o,
            Err((version, r)) => self.refuse(layer, signed, version, r),
        }
    }

    /// True while a change applied by a restart is being confirmed or is on probation: a new
    /// document then waits, so a rollback always restores the document before that change.
    pub(super) fn busy(&self) -> bool {
        self.state.pending.is_some() || self.state.probation.is_some()
    }

    /// The documents deferred while a change was pending or on probation, to pass to
    /// [`Agent::on_document`] again now that it is settled (fleet first, then gateway).
    pub fn take_deferred(&mut self) -> Vec<(Layer, Vec<u8>)> {
        if self.busy() {
            return Vec::new();
        }
        Layer::ALL
            .into_iter()
            .filter_map(|l| self.deferred[layer_index(l)].take().map(|(_, d)| (l, d)))
            .collect()
    }

    /// Counts unverified input on a remote topic (`storegw_remote_unverified_total`) and logs
    /// it at most once a minute; nothing of the input is kept, reported or written.
    pub(super) fn unverified(&mut self, topic: &str, r: &Rejection) {
        self.telemetry.metrics().count(
            crate::telemetry::metrics::Metric::RemoteUnverified,
            &crate::telemetry::metrics::labels(&[("topic", topic), ("reason", r.label())]),
            1,
        );
        if let Some(held) = self.unverified_log.allow(UNVERIFIED_LOG_EVERY) {
            tracing::warn!(
                topic,
                reason = r.label(),
                held_back = held,
                "unverified message on a remote topic ignored (storegw_remote_unverified_total counts them)"
            );
        }
    }

    /// A signed document refused: reported (status document, `config/state`), not written to
    /// disk. Each refused document is remembered (a bounded set, cleared at every connection
    /// and reload), so a broker replaying genuine old documents in a loop costs one report per
    /// document per connection, and no disk write at all; the retained documents are checked
    /// again at the next connection, when the clock or the local file may have changed.
    pub(super) fn refuse(
        &mut self,
        layer: Layer,
        signed: &[u8],
        version: i64,
        r: Rejection,
    ) -> DocumentOutcome {
        let reason = r.reason();
        tracing::warn!(layer = layer.as_str(), version, %reason, "remote configuration rejected");
        // A refusal for a cause that may pass (a disk that refused a write) is not
        // remembered: the document is tried again when it comes again.
        if !matches!(&r, Rejection::Invalid { key, .. } if key == "(state)") {
            self.refused.insert(signed);
        }
        self.report(version, layer, ReportState::Rejected, Some(reason.clone()));
        DocumentOutcome::Rejected(reason)
    }

    /// The `target` a document on `layer` must be signed for.
    pub(super) fn target(&self, layer: Layer) -> String {
        match layer {
            Layer::Fleet => document::FLEET_TARGET.to_string(),
            Layer::Gateway => document::gateway_target(&self.store, &self.gateway),
        }
    }

    /// The time expiry is judged against: never earlier than the latest time this gateway
    /// recorded, so a clock that booted behind cannot make an expired document valid again.
    pub(super) fn checked_now(&self) -> OffsetDateTime {
        let now = now_ms().max(self.state.clock_ms);
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000)
            .unwrap_or_else(|_| OffsetDateTime::now_utc())
    }

    pub(super) fn accept(
        &mut self,
        layer: Layer,
        signed: &[u8],
        doc: document::Document,
    ) -> Result<DocumentOutcome, (i64, Rejection)> {
        let v = doc.version;
        if doc.target != self.target(layer) {
            return Err((v, Rejection::WrongTarget(doc.target)));
        }
        let lv = *self.state.layer(layer);
        if v == lv.floor && lv.floor > lv.applied {
            // The change rolled back earlier, still retained on the broker: its rollback stays
            // the report.
            tracing::debug!(
                layer = layer.as_str(),
                version = v,
                "rolled-back document delivered again; ignored"
            );
            return Ok(DocumentOutcome::Unchanged);
        }
        if v == lv.applied
            && self
                .stored_overlay(layer)
                .ok()
                .flatten()
                .is_some_and(|(o, _)| o == doc.overlay)
        {
            // The document in effect, in other bytes (line endings): nothing to apply or report.
            return Ok(DocumentOutcome::Unchanged);
        }
        let floor = lv
            .applied
            .max(lv.floor)
            .max(self.min_version[layer_index(layer)].saturating_sub(1));
        document::check_fresh(&doc, self.checked_now(), floor).map_err(|r| (v, r))?;
        if let Some(k) = document::forbidden_keys(&doc.overlay).into_iter().next() {
            return Err((v, Rejection::ForbiddenKey(k)));
        }
        let (text, cfg) = self
            .merged(Some((layer, &doc.overlay)))
            .map_err(|r| (v, r))?;
        document::check_bounds(&doc.overlay, &cfg).map_err(|r| (v, r))?;
        if self.busy() {
            // One change at a time: kept (the highest version per layer) and applied once the
            // change in progress is confirmed and off probation.
            let slot = &mut self.deferred[layer_index(layer)];
            if slot.as_ref().is_none_or(|(kept, _)| *kept < v) {
                *slot = Some((v, signed.to_vec()));
            }
            tracing::info!(
                layer = layer.as_str(),
                version = v,
                "signed document received while a change is being confirmed: it is applied after"
            );
            return Ok(DocumentOutcome::Deferred);
        }
        let changed = reload::changed_keys(&self.running_text, &text);
        let restart: Vec<String> = changed
            .iter()
            .filter(|k| reload::needs_restart(k))
            .cloned()
            .collect();
        let fail = |e: String| {
            (
                v,
                Rejection::Invalid {
                    key: "(state)".into(),
                    message: e,
                },
            )
        };
        // The state after this document, committed only once every file is written: a full or
        // failing disk leaves the running state as it was.
        let mut next = self.state.clone();
        {
            let s = next.layer_mut(layer);
            s.applied = v;
            s.floor = s.floor.max(v);
        }
        let at = rfc3339_ms(now_ms());
        if restart.is_empty() {
            next.report = Some(Report {
                version: v,
                layer,
                state: ReportState::Applied,
                reason: None,
                at,
            });
        } else {
            next.pending = Some(Pending {
                layer,
                version: v,
                starts: 0,
                last_error: None,
                // What was already wrong before the change is not held against it.
                baseline: self.health_now.clone(),
            });
            next.report = Some(Report {
                version: v,
                layer,
                state: ReportState::Pending,
                reason: Some(format!("restarting for {}", restart.join(", "))),
                at,
            });
        }
        self.commit(layer, v, signed, next).map_err(fail)?;
        if let Err(e) = self.dir.write_effective(&text) {
            tracing::warn!(error = %e, "cannot record the merged configuration (effective.toml)");
        }
        if restart.is_empty() {
            self.set_overlay(layer, Some(doc.overlay));
            self.running_text = text.clone();
            tracing::info!(layer = layer.as_str(), version = v, keys = %changed.join(", "), "remote configuration applied live");
            Ok(DocumentOutcome::Live {
                text,
                config: Box::new(cfg),
                changed,
            })
        } else {
            tracing::warn!(layer = layer.as_str(), version = v, keys = %restart.join(", "), "remote configuration needs a restart: exiting for systemd to start storegw with it");
            Ok(DocumentOutcome::Restart { keys: restart })
        }
    }

    /// Stores a layer's new document and the state that goes with it, in an order a power cut
    /// cannot break: the intent (`installing`) is recorded first, then the document is
    /// installed (the previous one kept), then the new state replaces the intent. A start that
    /// finds the intent puts the previous document back ([`Agent::boot`]). On a write error the
    /// previous document and state stay in effect.
    pub(super) fn commit(
        &mut self,
        layer: Layer,
        version: i64,
        signed: &[u8],
        mut next: Persisted,
    ) -> Result<(), String> {
        let mut intent = self.state.clone();
        intent.installing = Some(Installing { layer, version });
        intent.clock_ms = intent.clock_ms.max(now_ms());
        next.clock_ms = intent.clock_ms;
        self.dir.save(&intent)?;
        if let Err(e) = self.dir.install(layer, signed) {
            let _ = self.dir.save(&self.state);
            return Err(e);
        }
        next.installing = None;
        if let Err(e) = self.dir.save(&next) {
            let _ = self.dir.restore_previous(layer);
            let _ = self.dir.save(&self.state);
            return Err(e);
        }
        self.state = next;
        self.telemetry
            .health()
            .set_config(Some(self.status_object()));
        Ok(())
    }
}
