//! Where the benches find the shared captures and their references.

use std::path::PathBuf;

/// The shared test data directory (captures and their references).
pub(super) fn shared_data() -> Result<PathBuf, String> {
    [
        std::env::var("STOREGW_SHARED_DATA").ok().map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("SOURCES.md").exists())
    .ok_or_else(|| "shared test data not found (set STOREGW_SHARED_DATA)".into())
}
