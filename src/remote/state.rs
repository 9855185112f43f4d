//! What a gateway keeps on disk about remote configuration (docs/fleet.md, "On the gateway"):
//! the accepted signed documents of each layer with the previous one beside them, the merged
//! configuration it runs, the replay floors, the last report and a change awaiting
//! confirmation. Everything lives under `{state_dir}/remote/` and is written atomically
//! (temporary file, fsync, rename, fsync of the directory), so a power cut leaves either the
//! old or the new state, never half of one.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One of the two remote layers; the gateway's overrides the fleet's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// `{prefix}/_fleet/config`, shared by every gateway.
    Fleet,
    /// `{prefix}/{store}/{gateway}/config`, this gateway's own.
    Gateway,
}

impl Layer {
    /// Both layers, lowest precedence first.
    pub const ALL: [Layer; 2] = [Layer::Fleet, Layer::Gateway];

    /// The word used in file names, status and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Layer::Fleet => "fleet",
            Layer::Gateway => "gateway",
        }
    }
}

/// Versions of one layer.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerVersions {
    /// Version of the document in effect (0: none).
    pub applied: i64,
    /// Highest version ever processed on this layer: applied, or rolled back. A document must
    /// carry a greater one, so a rolled-back change that stays retained on the broker is not
    /// applied again at the next connection.
    pub floor: i64,
}

/// Where the last document (or start-up check) left the configuration: the `state` of the
/// status document's `config` object and of `config/state`, from agent to wire as one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportState {
    /// In effect.
    Applied,
    /// Applied by a restart, not yet confirmed.
    Pending,
    /// Refused; nothing changed.
    Rejected,
    /// The previous configuration is back.
    RolledBack,
}

impl ReportState {
    /// The word on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReportState::Applied => "applied",
            ReportState::Pending => "pending",
            ReportState::Rejected => "rejected",
            ReportState::RolledBack => "rolled_back",
        }
    }
}

/// The outcome of the last document (or start-up check), as the status document reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// The document's version (0 when the problem is not tied to one).
    pub version: i64,
    /// Which layer it came on.
    pub layer: Layer,
    /// What became of it.
    pub state: ReportState,
    /// Why it was rejected or rolled back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When (RFC 3339, UTC).
    pub at: String,
}

/// A change applied by a restart, kept until the gateway reaches the broker with it and runs
/// healthy. Its time limit is measured per start on the monotonic clock (the wall clock of a
/// box without a battery-backed clock can step by hours during the restart); the number of
/// starts bounds how often it is tried.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    /// The layer and version being confirmed.
    pub layer: Layer,
    /// The version of that layer's document awaiting confirmation.
    pub version: i64,
    /// Starts with this change so far.
    pub starts: u32,
    /// Why the broker could not be reached, for the rollback's report.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The health problems the gateway had when the change was accepted (source names and
    /// the like): they are not held against the change.
    #[serde(default)]
    pub baseline: Vec<String>,
}

/// A change already in effect, watched for a while: a gateway that keeps restarting soon after
/// it (a source that fails later, a watchdog that is no longer fed) has it rolled back before
/// systemd's start limit leaves the unit failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Probation {
    /// The layer of the change watched: a rollback puts its previous document back.
    pub layer: Layer,
    /// The version of that change, named in a rollback's report.
    pub version: i64,
    /// Starts since the change was applied that did not run through the probation time.
    pub starts: u32,
    /// The health problems the gateway had before the change (see [`Pending::baseline`]).
    #[serde(default)]
    pub baseline: Vec<String>,
}

/// A document being installed: recorded before the document file is written and cleared with
/// the state that follows it, so a start can tell an interrupted installation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Installing {
    /// The layer whose document is being written.
    pub layer: Layer,
    /// Its version: a stored document of this version at start is replaced by the previous one.
    pub version: i64,
}

/// `state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Persisted {
    /// Applied version and replay floor of the fleet layer (0: none).
    #[serde(default)]
    pub fleet: LayerVersions,
    /// Applied version and replay floor of this gateway's own layer (0: none).
    #[serde(default)]
    pub gateway: LayerVersions,
    /// What the status document's `config` reports; None: no document yet (`local`).
    #[serde(default)]
    pub report: Option<Report>,
    /// A change applied by a restart, awaiting confirmation; None when there is none.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// Set while a document is being installed; found at start, the installation is undone.
    #[serde(default)]
    pub installing: Option<Installing>,
    /// A confirmed change watched for repeated starts; None when there is none.
    #[serde(default)]
    pub probation: Option<Probation>,
    /// The latest wall-clock time this gateway recorded (ms since the epoch): expiry is never
    /// judged against an earlier time, so a clock that booted behind cannot revive an
    /// expired document.
    #[serde(default)]
    pub clock_ms: i64,
}

impl Persisted {
    /// The `config` object of the status document (docs/fleet.md, "Reporting").
    pub fn status_object(&self) -> serde_json::Value {
        let versions = serde_json::json!({
            "fleet": self.fleet.applied,
            "gateway": self.gateway.applied,
        });
        match &self.report {
            Some(r) => serde_json::json!({
                "version": r.version,
                "layer": r.layer.as_str(),
                "state": r.state.as_str(),
                "reason": r.reason,
                "at": r.at,
                "versions": versions,
            }),
            None => serde_json::json!({
                "version": 0,
                "layer": null,
                "state": "local",
                "reason": null,
                "at": null,
                "versions": versions,
            }),
        }
    }

    /// The versions of a layer.
    pub fn layer(&self, l: Layer) -> &LayerVersions {
        match l {
            Layer::Fleet => &self.fleet,
            Layer::Gateway => &self.gateway,
        }
    }

    /// The versions of a layer, to change.
    pub fn layer_mut(&mut self, l: Layer) -> &mut LayerVersions {
        match l {
            Layer::Fleet => &mut self.fleet,
            Layer::Gateway => &mut self.gateway,
        }
    }
}

/// The longest report reason kept, in characters (reasons are built from bounded excerpts).
pub const MAX_REASON: usize = 400;

/// The remote directory of a gateway.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// `{state_dir}/remote`, created 0700 if missing.
    pub fn open(state_dir: &Path) -> Result<StateDir, String> {
        let dir = state_dir.join("remote");
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(StateDir { dir })
    }

    /// The directory itself (messages, tests).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn doc_path(&self, l: Layer) -> PathBuf {
        self.dir.join(format!("{}.signed", l.as_str()))
    }

    fn prev_path(&self, l: Layer) -> PathBuf {
        self.dir.join(format!("{}.signed.prev", l.as_str()))
    }

    /// The merged configuration the gateway runs (for people; the gateway rebuilds it from the
    /// local file and the layers at every start, so a local edit is never lost).
    pub fn effective_path(&self) -> PathBuf {
        self.dir.join("effective.toml")
    }

    /// Reads `state.json`; a missing file is the empty state, a damaged one an error. A report
    /// reason is cut to a bounded excerpt, so a file written by an older release with an
    /// unbounded reason cannot size what the gateway publishes.
    pub fn load(&self) -> Result<Persisted, String> {
        let p = self.dir.join("state.json");
        match std::fs::read(&p) {
            Ok(b) => {
                let mut s: Persisted = serde_json::from_slice(&b).map_err(|e| {
                    format!(
                        "{}: {}",
                        p.display(),
                        crate::remote::document::excerpt(&e.to_string(), 120)
                    )
                })?;
                if let Some(r) = s.report.as_mut() {
                    if let Some(reason) = r.reason.as_mut() {
                        *reason = crate::remote::document::excerpt(reason, MAX_REASON);
                    }
                    r.at = crate::remote::document::excerpt(&r.at, 40);
                }
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
            Err(e) => Err(format!("cannot read {}: {e}", p.display())),
        }
    }

    /// Writes `state.json` atomically.
    pub fn save(&self, s: &Persisted) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(s).map_err(|e| e.to_string())?;
        write_atomic(&self.dir.join("state.json"), &bytes)
    }

    /// The signed document in effect on a layer, if any.
    pub fn document(&self, l: Layer) -> Result<Option<Vec<u8>>, String> {
        read_opt(&self.doc_path(l))
    }

    /// Makes `signed` the layer's document; the one it replaces becomes the previous one (an
    /// absent document is remembered as absent).
    pub fn install(&self, l: Layer, signed: &[u8]) -> Result<(), String> {
        let cur = self.doc_path(l);
        let prev = self.prev_path(l);
        match read_opt(&cur)? {
            Some(old) => write_atomic(&prev, &old)?,
            None => remove_opt(&prev)?,
        }
        write_atomic(&cur, signed)
    }

    /// Puts the previous document of a layer back (none, if there was none). The previous file
    /// stays, so a rollback cut short by a power loss gives the same result when it runs again.
    pub fn restore_previous(&self, l: Layer) -> Result<(), String> {
        match read_opt(&self.prev_path(l))? {
            Some(old) => write_atomic(&self.doc_path(l), &old),
            None => remove_opt(&self.doc_path(l)),
        }
    }

    /// Records the merged configuration, keeping the one it replaces as `effective.toml.prev`.
    pub fn write_effective(&self, text: &str) -> Result<(), String> {
        let cur = self.effective_path();
        if let Some(old) = read_opt(&cur)? {
            if old == text.as_bytes() {
                return Ok(());
            }
            write_atomic(&cur.with_extension("toml.prev"), &old)?;
        }
        write_atomic(&cur, text.as_bytes())
    }
}

fn read_opt(p: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

fn remove_opt(p: &Path) -> Result<(), String> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", p.display())),
    }
}

/// Temporary file (0600), fsync, rename over the target, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let written = o
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    if let Some(d) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_keeps_the_previous_document_and_restores_it(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = StateDir::open(dir.path())?;
        assert_eq!(s.document(Layer::Gateway)?, None);
        s.install(Layer::Gateway, b"one")?;
        s.install(Layer::Gateway, b"two")?;
        assert_eq!(s.document(Layer::Gateway)?.as_deref(), Some(&b"two"[..]));
        s.restore_previous(Layer::Gateway)?;
        assert_eq!(s.document(Layer::Gateway)?.as_deref(), Some(&b"one"[..]));
        // Running a rollback again (power lost before it was recorded) gives the same result.
        s.restore_previous(Layer::Gateway)?;
        assert_eq!(s.document(Layer::Gateway)?.as_deref(), Some(&b"one"[..]));
        // The first document of a layer rolls back to no document at all.
        s.install(Layer::Fleet, b"f1")?;
        s.restore_previous(Layer::Fleet)?;
        assert_eq!(s.document(Layer::Fleet)?, None);
        Ok(())
    }

    #[test]
    fn state_round_trips_and_a_damaged_file_is_an_error() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let s = StateDir::open(dir.path())?;
        assert_eq!(s.load()?, Persisted::default());
        let mut p = Persisted::default();
        p.gateway.applied = 4;
        p.gateway.floor = 5;
        p.pending = Some(Pending {
            layer: Layer::Gateway,
            version: 5,
            starts: 1,
            last_error: None,
            baseline: Vec::new(),
        });
        s.save(&p)?;
        assert_eq!(s.load()?, p);
        std::fs::write(s.path().join("state.json"), b"{not json")?;
        assert!(s.load().is_err());
        Ok(())
    }
}
