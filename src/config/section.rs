//! What a feed's configuration section promises the root configuration (docs/design.md,
//! "Adding a feed"): its own checks and path resolution, and its rows of the reload table. A
//! leaf: it imports nothing of storegw, so each feed's `config.rs` can implement it without
//! reaching back up to the root [`crate::config::Config`].

use std::path::Path;

/// A feed's `[sources.<name>]` section.
pub trait Section {
    /// Semantic checks serde cannot express, as (dotted key, message) pairs; keys are written
    /// in full (`sources.ble.window`) so `check-config` can point at the line.
    fn check(&self, issues: &mut Vec<(String, String)>);

    /// Makes the section's relative paths relative to the config file's directory.
    fn resolve(&mut self, _base: &Path) {}
}

/// How a changed key of a section takes effect (the reload table, `ops::reload`).
pub enum Apply<S: 'static> {
    /// A running task reads the new value and uses it at once.
    Live,
    /// Only a restart applies it; until then the function copies the running value into the
    /// section being published (`(published, running)`).
    Restart(fn(&mut S, &S)),
}

/// One row of a section's reload table: a key relative to the section (`""` is the whole
/// section) and how its changes apply. The most specific row wins.
pub struct Row<S: 'static> {
    /// Key below the section, dotted; `""` for the section itself.
    pub key: &'static str,
    /// Live or restart-only.
    pub apply: Apply<S>,
}

/// A live row.
pub const fn live<S>(key: &'static str) -> Row<S> {
    Row {
        key,
        apply: Apply::Live,
    }
}

/// A restart-only row and how to keep its running value.
pub const fn restart<S>(key: &'static str, keep: fn(&mut S, &S)) -> Row<S> {
    Row {
        key,
        apply: Apply::Restart(keep),
    }
}
