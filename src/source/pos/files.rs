//! Watched export directories. A till (or its back office) writes a file; once the file has
//! not changed for `settle` it is read, stored, and moved to `done/`; a bad file goes to
//! `failed/` next to `<name>.error` saying why and where. Files whose name starts with `.` or
//! ends in `.tmp`/`.part` are still being written and are ignored (write then rename is the
//! safest convention). Polling, not inotify: a few stat calls every few seconds cost nothing,
//! work on every file system (including network shares tills write to) and need no crate.
//!
//! A crash mid-file is safe: transactions are stored in chunks, each made durable together
//! with its idempotency entries; on restart the file is read again and what was stored is
//! recognised as duplicate.

use super::config::WatchConfig;
use super::ingest::{Ingest, StoreError};
use super::model::{Reject, Tx};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Transactions stored (and fsynced) per chunk of a file.
const CHUNK: usize = 500;

/// Largest file read (export files are days, not years).
const MAX_FILE: u64 = 256 * 1024 * 1024;

/// What happened to one file.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Done {
        accepted: usize,
        duplicates: usize,
    },
    Failed(String),
    /// Left in place to retry (spool full, storage error).
    Retry(String),
}

/// Watches one directory until shutdown.
pub async fn run(
    w: WatchConfig,
    ingest: Arc<Ingest>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    for sub in ["", "done", "failed"] {
        if let Err(e) = std::fs::create_dir_all(w.dir.join(sub)) {
            tracing::error!(dir = %w.dir.display(), error = %e, "cannot create POS watch directory");
            crate::ops::status::set_source(
                "pos",
                "degraded",
                Some(format!("watch dir {}: {e}", w.dir.display())),
            );
        }
    }
    tracing::info!(dir = %w.dir.display(), format = %w.format, "watching for POS export files");
    loop {
        for f in ready_files(&w.dir, w.settle.0) {
            if *stop.borrow() {
                return;
            }
            let out = process(&f, &w, &ingest).await;
            log_outcome(&f, &out);
        }
        tokio::select! {
            _ = tokio::time::sleep(w.interval.0) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn log_outcome(f: &Path, out: &Outcome) {
    let m = crate::ops::metrics::global();
    match out {
        Outcome::Done {
            accepted,
            duplicates,
        } => {
            m.count("storegw_pos_files_total", "result=\"done\"", 1);
            tracing::info!(file = %f.display(), accepted, duplicates, "POS file imported");
        }
        Outcome::Failed(why) => {
            m.count("storegw_pos_files_total", "result=\"failed\"", 1);
            tracing::warn!(file = %f.display(), reason = %why, "POS file moved to failed/");
        }
        Outcome::Retry(why) => {
            tracing::warn!(file = %f.display(), reason = %why, "POS file left in place; retrying later");
        }
    }
}

/// Regular files in `dir` that are complete: not hidden, not `.tmp`/`.part`, unchanged for
/// `settle`. Sorted by name so exports are imported in order.
pub fn ready_files(dir: &Path, settle: Duration) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            !(n.starts_with('.')
                || n.ends_with(".tmp")
                || n.ends_with(".part")
                || n.ends_with(".error"))
        })
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= settle)
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Imports one file and moves it.
pub async fn process(path: &Path, w: &WatchConfig, ingest: &Ingest) -> Outcome {
    let out = import(path, w, ingest).await;
    let name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    match &out {
        Outcome::Done { .. } => {
            if let Err(e) = move_to(path, &dir.join("done"), &name) {
                return Outcome::Retry(format!("imported, but cannot move to done/: {e}"));
            }
        }
        Outcome::Failed(why) => match move_to(path, &dir.join("failed"), &name) {
            Ok(dest) => {
                let mut err = dest.clone().into_os_string();
                err.push(".error");
                if let Err(e) = std::fs::write(&err, format!("{why}\n")) {
                    tracing::error!(error = %e, "cannot write {}", PathBuf::from(err).display());
                }
            }
            Err(e) => tracing::error!(file = %path.display(), error = %e, "cannot move to failed/"),
        },
        Outcome::Retry(_) => {}
    }
    out
}

fn move_to(src: &Path, dir: &Path, name: &std::ffi::OsStr) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut dest = dir.join(name);
    if dest.exists() {
        let mut n = name.to_os_string();
        n.push(format!(".{}", crate::event::now_ms()));
        dest = dir.join(n);
    }
    std::fs::rename(src, &dest)?;
    Ok(dest)
}

async fn import(path: &Path, w: &WatchConfig, ingest: &Ingest) -> Outcome {
    let fname = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let fail = |r: &Reject| Outcome::Failed(format!("{fname}: {}: {}", r.at, r.reason));
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE => {
            return Outcome::Failed(format!("{fname}: larger than {MAX_FILE} bytes"))
        }
        Ok(_) => {}
        Err(e) => return Outcome::Retry(format!("cannot stat: {e}")),
    }
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) => return Outcome::Retry(format!("cannot read: {e}")),
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Outcome::Failed(format!(
                "{fname}: byte {}: not UTF-8 (export as UTF-8)",
                e.utf8_error().valid_up_to()
            ))
        }
    };
    let format = if w.format == "auto" {
        super::detect_format(path, &text)
    } else {
        w.format.clone()
    };
    let mut opts = ingest.opts.clone();
    opts.csv = w.csv.clone();
    let parsed = match super::parse_input(&text, &format, &opts) {
        Ok(p) => p,
        Err(r) => return fail(&r),
    };
    let errors: Vec<String> = parsed
        .items
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|r| format!("{fname}: {}: {}", r.at, r.reason))
        .collect();
    if !errors.is_empty() {
        return Outcome::Failed(format!(
            "{} bad record(s), nothing imported:\n{}",
            errors.len(),
            errors.join("\n")
        ));
    }
    let txs: Vec<Tx> = parsed.items.into_iter().flatten().collect();
    let normalized = match ingest.normalize_all(txs) {
        Ok(n) => n,
        Err(r) => return fail(&r),
    };
    let (mut accepted, mut duplicates) = (0, 0);
    let mut it = normalized.into_iter().peekable();
    while it.peek().is_some() {
        let chunk: Vec<_> = it.by_ref().take(CHUNK).collect();
        match ingest.store(chunk).await {
            Ok(s) => {
                accepted += s.accepted;
                duplicates += s.duplicates;
            }
            Err(StoreError::Invalid(r)) | Err(StoreError::Conflict(r)) => return fail(&r),
            Err(e) => return Outcome::Retry(e.to_string()),
        }
    }
    Outcome::Done {
        accepted,
        duplicates,
    }
}
