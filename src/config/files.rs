//! Who may read or change the files the configuration names: secret files (`chmod 600`) and
//! files of trusted keys (writable only by root or the service user, and so is their directory).
//!
//! A leaf of the configuration layer: it imports nothing of storegw, so `check-config`, the
//! remote tools and `storegw tail` apply the same rules.

use std::path::{Path, PathBuf};

/// Refuses a secret file (password, private key, token, join key) that anyone but its owner may
/// read or write: secrets are `chmod 600`, owned by the service user (docs/operations.md §3).
/// A file that cannot be examined is reported by the caller's own existence check.
pub fn check_secret_mode(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    let loose = mode & 0o077;
    if loose == 0 {
        return Ok(());
    }
    let who = match (loose & 0o070 != 0, loose & 0o007 != 0) {
        (true, true) => "group/others",
        (true, false) => "group",
        _ => "others",
    };
    let how = match (loose & 0o044 != 0, loose & 0o022 != 0) {
        (true, true) => "readable and writable",
        (true, false) => "readable",
        (false, true) => "writable",
        (false, false) => "accessible",
    };
    Err(format!(
        "`{}`: mode {mode:04o} is {how} by {who}; chmod 600 it",
        path.display()
    ))
}

/// Refuses a file of trusted keys that anyone but root or the service user could change: the
/// file itself (owner, group/other write bits) and its directory (same rules, so nobody else
/// can swap the file for another). Public keys are not secret, so 0644 is fine.
pub fn check_trusted_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = current_uid();
    let check = |p: &Path, what: &str, fix: &str| -> Result<(), String> {
        let meta =
            std::fs::metadata(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(format!(
                "`{}`: {what}mode {mode:04o} is writable by group/others; {fix}",
                p.display()
            ));
        }
        if meta.uid() != 0 && Some(meta.uid()) != me {
            return Err(format!(
                "`{}`: {what}owned by uid {}, neither root nor the user storegw runs as; chown it",
                p.display(),
                meta.uid()
            ));
        }
        Ok(())
    };
    check(path, "", "chmod 644 it")?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    check(&dir, "its directory: ", "chmod go-w the directory")
}

/// The user this process runs as (the owner of `/proc/self`), without unsafe code.
pub(crate) fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}
