//! Layers and merge: each layer's stored document, verified again at every start, merged over
//! the local file and validated as `check-config` does.

use super::{layer_index, Agent};
use crate::config::Config;
use crate::remote::document::{self, Rejection};
use crate::remote::state::Layer;

impl Agent {
    /// The stored document of a layer, verified again, and its version.
    pub(super) fn stored_overlay(&self, l: Layer) -> Result<Option<(toml::Table, i64)>, String> {
        let Some(doc) = self.dir.document(l)? else {
            return Ok(None);
        };
        let d = document::verify_signature(&doc, &self.keys).map_err(|r| r.reason())?;
        if d.target != self.target(l) {
            return Err(Rejection::WrongTarget(d.target).reason());
        }
        if let Some(k) = document::forbidden_keys(&d.overlay).into_iter().next() {
            return Err(Rejection::ForbiddenKey(k).reason());
        }
        Ok(Some((d.overlay, d.version)))
    }

    /// A layer's overlay at start. A document whose installation was interrupted (the intent
    /// is still recorded) is taken back: the previous one returns, and the document, still
    /// retained on the broker, is processed again at the next connection. A stored document
    /// whose version the state does not record (state.json moved away, or a document refused at
    /// an earlier start whose key is trusted again) is adopted as the layer's version.
    pub(super) fn boot_layer(&mut self, l: Layer) -> Result<Option<toml::Table>, String> {
        if let Some(i) = self.state.installing.filter(|i| i.layer == l) {
            let stored = self.stored_overlay(l).ok().flatten().map(|(_, v)| v);
            if stored == Some(i.version) {
                tracing::warn!(
                    layer = l.as_str(),
                    version = i.version,
                    "the installation of a document was interrupted; the previous one is back"
                );
                self.dir.restore_previous(l)?;
            }
            self.state.installing = None;
        }
        let stored = self.stored_overlay(l)?;
        let version = stored.as_ref().map(|(_, v)| *v).unwrap_or(0);
        let min = self.min_version[layer_index(l)];
        if stored.is_some() && version < min {
            return Err(format!(
                "version {version} is below remote.min_version.{} ({min})",
                l.as_str()
            ));
        }
        let v = self.state.layer_mut(l);
        if version != v.applied {
            v.applied = version;
            v.floor = v.floor.max(version);
        }
        Ok(stored.map(|(o, _)| o))
    }

    pub(super) fn set_overlay(&mut self, l: Layer, o: Option<toml::Table>) {
        match l {
            Layer::Fleet => self.fleet = o,
            Layer::Gateway => self.gateway_overlay = o,
        }
    }

    /// Merges the layers (with `replace` standing in for one of them) over the local file and
    /// validates the result as `check-config` does.
    pub(super) fn merged(
        &self,
        replace: Option<(Layer, &toml::Table)>,
    ) -> Result<(String, Config), Rejection> {
        let pick = |l: Layer, cur: &Option<toml::Table>| -> Option<toml::Table> {
            match replace {
                Some((r, t)) if r == l => Some(t.clone()),
                _ => cur.clone(),
            }
        };
        let fleet = pick(Layer::Fleet, &self.fleet);
        let gw = pick(Layer::Gateway, &self.gateway_overlay);
        let m = document::merge_layers(&self.local, fleet.as_ref(), gw.as_ref());
        document::validate_merged(&m, self.base.as_deref())
    }

    /// The local file was re-read (SIGHUP, `reload` command): the layers merged over its new
    /// text, validated.
    pub fn remerge_local(&mut self, local_text: &str) -> Result<(String, Config), String> {
        let table: toml::Table = local_text.parse().map_err(|e| format!("{e}"))?;
        // Documents refused against the old file are judged again against the new one.
        self.refused.clear();
        let old = std::mem::replace(&mut self.local, table);
        match self.merged(None) {
            Ok((text, cfg)) => {
                self.running_text = text.clone();
                let _ = self.dir.write_effective(&text);
                Ok((text, cfg))
            }
            Err(r) => {
                self.local = old;
                Err(format!(
                    "the remote layers over the new local file: {}",
                    r.reason()
                ))
            }
        }
    }

    /// The merged configuration text in effect.
    pub fn running_text(&self) -> &str {
        &self.running_text
    }
}
