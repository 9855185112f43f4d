//! Watched export directories. A till (or its back office) writes a file; once the file has
//! not changed for `settle` it is read and stored, then deleted (or kept in `done/` for
//! `done_retention`); a bad file goes to `failed/` next to `<name>.error` saying why and where,
//! and is deleted after `failed_retention`; a file carrying card authentication data is deleted
//! at once and only its `.error` note stays. Kept files are mode 0600. Files whose name starts
//! with `.` or ends in `.tmp`/`.part` are still being written and are ignored (write then
//! rename is the safest convention). Polling, not inotify: a few stat calls every few seconds
//! cost nothing, work on every file system (including network shares tills write to) and need
//! no crate.
//!
//! CSV and JSON-lines files are streamed twice (check everything, then store), so memory stays
//! bounded whatever the size; documents that must be parsed whole (POSLog XML, JSON, Square,
//! Shopify) are capped in size and XML nodes (docs/pos.md, "Export files").
//!
//! A crash mid-file is safe: transactions are stored in chunks, each made durable together
//! with its idempotency entries; on restart the file is read again and what was stored is
//! recognised as duplicate.

use super::config::WatchConfig;
use super::ingest::{Ingest, StoreError};
use super::normalize::Normalized;
use super::transaction::{Reject, Tx};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Transactions stored (and fsynced) per chunk of a file.
const CHUNK: usize = 500;

/// Largest file read at all (export files are days, not years).
pub const MAX_FILE: u64 = 256 * 1024 * 1024;

/// Largest document parsed whole (POSLog XML, JSON documents): its tree takes several times
/// its size in RAM, which a Raspberry Pi cannot give for hundreds of megabytes.
pub const MAX_DOCUMENT: u64 = 32 * 1024 * 1024;

/// Files up to this size are read in one piece; larger CSV / JSON-lines files are streamed.
const STREAM_ABOVE: u64 = 4 * 1024 * 1024;

/// Most XML nodes in one POSLog document.
pub const MAX_XML_NODES: u32 = 4_000_000;

/// What happened to one file.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Imported: its transactions are stored and fsynced (or were already); the file is then
    /// deleted or kept in `done/`.
    Done {
        /// Transactions newly stored from the file.
        accepted: usize,
        /// Transactions already stored (e.g. a file read again after a crash).
        duplicates: usize,
    },
    /// Refused; `sensitive` when it carries card authentication data (deleted at once).
    Failed {
        /// The `<name>.error` note and log reason: where and what is wrong, never the value.
        why: String,
        /// Card authentication data (CVV, track, PIN block): the file is deleted at once.
        sensitive: bool,
    },
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
            ingest.telemetry.health().set_source(
                "pos",
                crate::telemetry::health::SourceState::Degraded,
                Some(format!("watch dir {}: {e}", w.dir.display())),
            );
        }
    }
    tracing::info!(dir = %w.dir.display(), format = %w.format, "watching for POS export files");
    let mut last_sweep: Option<std::time::Instant> = None;
    loop {
        if last_sweep.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            sweep(&w);
            last_sweep = Some(std::time::Instant::now());
        }
        for f in ready_files(&w.dir, w.settle.0) {
            if *stop.borrow() {
                return;
            }
            let out = process(&f, &w, &ingest).await;
            log_outcome(&f, &out, ingest.telemetry.metrics());
        }
        tokio::select! {
            _ = tokio::time::sleep(w.interval.0) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn log_outcome(f: &Path, out: &Outcome, m: &crate::telemetry::metrics::Metrics) {
    match out {
        Outcome::Done {
            accepted,
            duplicates,
        } => {
            m.count(
                crate::telemetry::metrics::Metric::PosFiles,
                "result=\"done\"",
                1,
            );
            tracing::info!(file = %f.display(), accepted, duplicates, "POS file imported");
        }
        Outcome::Failed { why, sensitive } => {
            m.count(
                crate::telemetry::metrics::Metric::PosFiles,
                "result=\"failed\"",
                1,
            );
            if *sensitive {
                tracing::warn!(file = %f.display(), reason = %why, "POS file refused and deleted: it carries card authentication data, or cannot be searched for it");
            } else {
                tracing::warn!(file = %f.display(), reason = %why, "POS file moved to failed/");
            }
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

/// Imports one file, then deletes it or moves it (docs/pos.md, "Export files").
pub async fn process(path: &Path, w: &WatchConfig, ingest: &Ingest) -> Outcome {
    let out = match import(path, w, ingest).await {
        // Refused before its card authentication data was reached (not UTF-8, too large, a
        // bad record first): the whole file is searched before it may be kept, and a file
        // the search cannot read as text is not kept either.
        Outcome::Failed {
            why,
            sensitive: false,
        } => match search_for_auth_data(path).await {
            Search::Clean => failed(why),
            Search::Carries => Outcome::Failed {
                why: format!(
                    "{why}\nThe file also carries card authentication data (CVV, track or PIN block), or could not be read to search for it."
                ),
                sensitive: true,
            },
            Search::Unsearchable(what) => Outcome::Failed {
                why: format!(
                    "{why}\nThe file is {what}, so it cannot be searched for card authentication data (CVV, track or PIN block); export text (CSV, JSON lines, POSLog XML) instead."
                ),
                sensitive: true,
            },
        },
        out => out,
    };
    let name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    match &out {
        Outcome::Done { .. } if w.done_retention.0.is_zero() => {
            if let Err(e) = std::fs::remove_file(path) {
                return Outcome::Retry(format!("imported, but cannot delete: {e}"));
            }
        }
        Outcome::Done { .. } => match move_to(path, &dir.join("done"), &name) {
            Ok(dest) => private(&dest),
            Err(e) => return Outcome::Retry(format!("imported, but cannot move to done/: {e}")),
        },
        Outcome::Failed { why, sensitive } => {
            let dest = if *sensitive {
                // PCI DSS 3.3.1: sensitive authentication data is not kept, not even here.
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::error!(file = %path.display(), error = %e, "cannot delete a file with card authentication data");
                }
                Ok(dir.join("failed").join(&name))
            } else {
                move_to(path, &dir.join("failed"), &name)
            };
            match dest {
                Ok(dest) => {
                    private(&dest);
                    let mut err = dest.into_os_string();
                    err.push(".error");
                    let err = PathBuf::from(err);
                    let note = if *sensitive {
                        format!("{why}\nThe file was deleted: card authentication data is never kept, nor a refused file that may hold it.\n")
                    } else {
                        format!("{why}\n")
                    };
                    if let Err(e) = write_private(&err, note.as_bytes()) {
                        tracing::error!(error = %e, "cannot write {}", err.display());
                    }
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot move to failed/")
                }
            }
        }
        Outcome::Retry(_) => {}
    }
    out
}

/// What the search of a refused file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    /// Text without card authentication data: the file may be kept in `failed/`.
    Clean,
    /// Card authentication data, or a file that could not be read: deleted at once.
    Carries,
    /// Not text (this kind of file): nothing in it can be vouched for, so it is deleted too.
    Unsearchable(&'static str),
}

/// Whether a refused file carries card authentication data anywhere
/// ([`crate::privacy::card::text_carries_auth_data`]), read in blocks whatever its size, as
/// UTF-8 or any 8-bit code page, or as UTF-16 (Excel's "Unicode text", [`Encoding`]). A
/// file that cannot be read counts as carrying it (it is not kept); one that is gone does
/// not. A compressed, archived, encrypted or binary file cannot be searched, so it cannot be
/// kept either (docs/pos.md, "Export files").
async fn search_for_auth_data(path: &Path) -> Search {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || match scan_blocks(&p) {
        Ok(found) => found,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Search::Clean,
        Err(_) => Search::Carries,
    })
    .await
    .unwrap_or(Search::Carries)
}

/// Formats whose bytes are not text, by the signature they start with: compressed, archived
/// (a `.zip` and the office formats built on it, `.xlsx`, `.ods`), a document container or an
/// encrypted message.
const NOT_TEXT: [(&[u8], &str); 11] = [
    (b"\x1f\x8b", "gzip-compressed"),
    (
        b"PK\x03\x04",
        "a ZIP archive (or a spreadsheet built on one, .xlsx or .ods)",
    ),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"PK\x07\x08", "a ZIP archive"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
    (b"\x04\x22\x4d\x18", "LZ4-compressed"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "an OLE document (such as .xls)",
    ),
    (b"-----BEGIN PGP MESSAGE-----", "an OpenPGP message"),
];

/// The signature a file starts with, if it is one of a format that is not text.
fn not_text(start: &[u8]) -> Option<&'static str> {
    // bzip2's "BZh" is plain text; its level digit and block magic (the digits of pi) are not.
    if start.starts_with(b"BZh")
        && start.get(3).is_some_and(|d| (b'1'..=b'9').contains(d))
        && start.get(4..10) == Some(b"1AY&SY")
    {
        return Some("bzip2-compressed");
    }
    NOT_TEXT
        .iter()
        .find(|(magic, _)| start.starts_with(magic))
        .map(|(_, what)| *what)
}

/// How a refused file's bytes are read as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// UTF-8 or an 8-bit code page (every byte from 0x80 up is a letter or sign in some).
    Bytes,
    /// UTF-16, declared by a byte-order mark or seen in where its zero bytes fall.
    Utf16 { big_endian: bool },
}

impl Encoding {
    /// From the first block: a byte-order mark, or zero bytes at one parity (the high half of
    /// every ASCII character, in the Latin, Cyrillic, Greek, CJK... text of an export: digits,
    /// separators, line ends) and hardly any at the other. A binary file's zeros fall at both.
    fn of(first: &[u8]) -> Encoding {
        if first.starts_with(&[0xff, 0xfe]) {
            return Encoding::Utf16 { big_endian: false };
        }
        if first.starts_with(&[0xfe, 0xff]) {
            return Encoding::Utf16 { big_endian: true };
        }
        let zeros = |parity: usize| {
            first
                .iter()
                .skip(parity)
                .step_by(2)
                .filter(|&&b| b == 0)
                .count()
        };
        let (even, odd) = (zeros(0), zeros(1));
        let units = first.len() / 2;
        if units > 0 && odd * 10 >= units && even * 10 <= odd {
            Encoding::Utf16 { big_endian: false }
        } else if units > 0 && even * 10 >= units && odd * 10 <= even {
            Encoding::Utf16 { big_endian: true }
        } else {
            Encoding::Bytes
        }
    }

    /// The text of a block (its whole code units). In UTF-16 an unpaired surrogate, which no
    /// text holds and random bytes give once in about 32 units, is read as a control
    /// character (U+0001), so [`is_binary`] counts it.
    fn text<'a>(&self, block: &'a [u8]) -> std::borrow::Cow<'a, str> {
        match self {
            Encoding::Bytes => String::from_utf8_lossy(block),
            Encoding::Utf16 { big_endian } => {
                let units = block.chunks_exact(2).map(|u| {
                    if *big_endian {
                        u16::from_be_bytes([u[0], u[1]])
                    } else {
                        u16::from_le_bytes([u[0], u[1]])
                    }
                });
                std::borrow::Cow::Owned(
                    char::decode_utf16(units)
                        .map(|c| c.unwrap_or('\u{1}'))
                        .collect(),
                )
            }
        }
    }
}

/// Text is judged in stretches of up to this many bytes, one starting every half stretch, so
/// a compressed or encoded part inside a text export is found however large the text around
/// it.
const WINDOW: usize = 1024;

/// Whether a block of text holds binary or encoded data rather than text:
/// - a stretch where more than 1 byte in 100 (and at least 3) is a control character text
///   does not use: anything below 0x20 but tab, line feed, vertical tab, form feed, carriage
///   return, substitute, escape and the information separators 0x1c-0x1f that some legacy
///   exports delimit fields and records with; and 0x7f. NUL counts. Compressed or encrypted
///   bytes carry about 1 in 12; an export in any 8-bit code page or in UTF-16, none;
/// - or an unbroken run of [`WINDOW`] characters of the base64 alphabet (which holds hex):
///   encoded data, such as a compressed or encrypted export inside a JSON field.
fn is_binary(text: &[u8]) -> bool {
    let odd = |b: &u8| {
        (*b < 0x1c && !matches!(*b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1a | 0x1b))
            || *b == 0x7f
    };
    let controls = (0..text.len().max(1)).step_by(WINDOW / 2).any(|at| {
        let w = text
            .get(at..(at + WINDOW).min(text.len()))
            .unwrap_or_default();
        let n = w.iter().filter(|b| odd(b)).count();
        n >= 3 && n * 100 > w.len()
    });
    let encoded = text
        .split(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')))
        .any(|run| run.len() >= WINDOW);
    controls || encoded
}

/// Bytes of a refused file searched at once: 1 MiB of RAM however large the file.
pub const BLOCK: usize = 1 << 20;

fn scan_blocks(path: &Path) -> std::io::Result<Search> {
    scan_reader(std::fs::File::open(path)?, BLOCK)
}

/// The search of [`search_for_auth_data`] over any reader, `block` bytes at a time (the
/// fuzzer takes small blocks, so that its inputs cross block boundaries).
fn scan_reader(mut f: impl std::io::Read, block: usize) -> std::io::Result<Search> {
    // Longer than any window the scan looks through (a tag, a key, a track: 512 bytes at
    // most, a stretch of `WINDOW`), so nothing is cut between blocks; one more byte keeps a
    // UTF-16 block on a whole code unit.
    const OVERLAP: usize = 2 * WINDOW;
    let mut buf = vec![0u8; block.max(1) + OVERLAP + 1];
    let mut kept = 0usize;
    let mut first = true;
    let mut encoding = Encoding::Bytes;
    loop {
        // A whole block however the reads come (a pipe or a network file system gives
        // short ones), so the first holds the header and enough to tell the encoding.
        let mut n = 0;
        while let Some(room) = buf.get_mut(kept + n..).filter(|r| !r.is_empty()) {
            match f.read(room) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // The end; what was kept from the last block has been searched with it.
        if n == 0 {
            return Ok(Search::Clean);
        }
        let end = kept + n;
        let block = buf.get(..end).unwrap_or_default();
        if first {
            if let Some(what) = not_text(block) {
                return Ok(Search::Unsearchable(what));
            }
            encoding = Encoding::of(block);
        }
        let text = encoding.text(block);
        if is_binary(text.as_bytes()) {
            return Ok(Search::Unsearchable("binary or encoded data, not text"));
        }
        if crate::privacy::card::text_carries_auth_data(&text, first) {
            return Ok(Search::Carries);
        }
        first = false;
        // The next block starts on a whole UTF-16 code unit (an even offset into the file).
        kept = end.min(OVERLAP);
        if encoding != Encoding::Bytes && (end - kept) % 2 == 1 {
            kept += 1;
        }
        buf.copy_within(end - kept..end, 0);
    }
}

/// The fuzz target's entry (`storegw::fuzzing::pos_refused`): the verdict on a refused file
/// of these bytes, searched in blocks of `block` bytes.
#[cfg(feature = "fuzzing")]
pub fn refused_file_verdict(data: &[u8], block: usize) -> &'static str {
    match scan_reader(data, block) {
        Ok(Search::Clean) => "clean",
        Ok(Search::Carries) | Err(_) => "carries",
        Ok(Search::Unsearchable(what)) => what,
    }
}

/// Restricts a kept file to the service user (0600).
fn private(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(file = %p.display(), error = %e, "cannot restrict file mode to 0600");
    }
}

fn write_private(p: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)?;
    f.write_all(data)?;
    private(p);
    Ok(())
}

/// Deletes files in `done/` older than `done_retention` and in `failed/` older than
/// `failed_retention` (their `.error` notes too).
pub fn sweep(w: &WatchConfig) {
    for (sub, keep) in [
        ("done", w.done_retention.0),
        ("failed", w.failed_retention.0),
    ] {
        let Ok(rd) = std::fs::read_dir(w.dir.join(sub)) else {
            continue;
        };
        let now = SystemTime::now();
        for e in rd.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= keep);
            if old && e.file_type().is_ok_and(|t| t.is_file()) {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => {
                        tracing::info!(file = %e.path().display(), "POS file past its retention deleted")
                    }
                    Err(err) => {
                        tracing::warn!(file = %e.path().display(), error = %err, "cannot delete POS file past its retention")
                    }
                }
            }
        }
    }
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

fn failed(why: String) -> Outcome {
    Outcome::Failed {
        why,
        sensitive: false,
    }
}

async fn import(path: &Path, w: &WatchConfig, ingest: &Ingest) -> Outcome {
    let fname = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let fail = |r: &Reject| Outcome::Failed {
        why: format!("{fname}: {}: {}", r.at, r.reason),
        sensitive: r.sensitive,
    };
    let size = match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE => {
            return failed(format!(
                "{fname}: larger than {} MiB: split the export",
                MAX_FILE >> 20
            ))
        }
        Ok(m) => m.len(),
        Err(e) => return Outcome::Retry(format!("cannot stat: {e}")),
    };
    let format = if w.format == "auto" {
        let head = read_head(path, 64 * 1024);
        super::detect_format(path, &head)
    } else {
        w.format.clone()
    };
    let mut opts = ingest.opts.clone();
    opts.csv = w.csv.clone();
    if size > STREAM_ABOVE && (format == "csv" || format == "jsonl") {
        return stream(path, &format, &opts, ingest, &fname).await;
    }
    if size > MAX_DOCUMENT {
        return failed(format!(
            "{fname}: a {format} document larger than {} MiB is not read (it would need several times its size in RAM): export CSV or JSON lines, or split it",
            MAX_DOCUMENT >> 20
        ));
    }
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) => return Outcome::Retry(format!("cannot read: {e}")),
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return failed(format!(
                "{fname}: byte {}: not UTF-8 (export as UTF-8)",
                e.utf8_error().valid_up_to()
            ))
        }
    };
    let parsed = match super::parse_input(&text, &format, &opts) {
        Ok(p) => p,
        Err(r) => return fail(&r),
    };
    drop(text);
    let errors: Vec<&Reject> = parsed
        .items
        .iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    if !errors.is_empty() {
        let sensitive = errors.iter().any(|r| r.sensitive);
        let list: Vec<String> = errors
            .iter()
            .map(|r| format!("{fname}: {}: {}", r.at, r.reason))
            .collect();
        return Outcome::Failed {
            why: format!(
                "{} bad record(s), nothing imported:\n{}",
                list.len(),
                list.join("\n")
            ),
            sensitive,
        };
    }
    let txs: Vec<Tx> = parsed.items.into_iter().flatten().collect();
    let normalized = match ingest.normalize_all(txs) {
        Ok(n) => n,
        Err(r) => return fail(&r),
    };
    let mut st = Totals::default();
    let mut it = normalized.into_iter().peekable();
    while it.peek().is_some() {
        let chunk: Vec<_> = it.by_ref().take(CHUNK).collect();
        if let Err(o) = st.store(ingest, chunk, &fname).await {
            return o;
        }
    }
    st.done()
}

/// Running counts of a file's import.
#[derive(Default)]
struct Totals {
    accepted: usize,
    duplicates: usize,
}

impl Totals {
    async fn store(
        &mut self,
        ingest: &Ingest,
        chunk: Vec<Normalized>,
        fname: &str,
    ) -> Result<(), Outcome> {
        match ingest.store(chunk).await {
            Ok(s) => {
                self.accepted += s.accepted;
                self.duplicates += s.duplicates;
                Ok(())
            }
            Err(StoreError::Invalid(r)) | Err(StoreError::Conflict(r)) => Err(Outcome::Failed {
                why: format!("{fname}: {}: {}", r.at, r.reason),
                sensitive: r.sensitive,
            }),
            Err(e) => Err(Outcome::Retry(e.to_string())),
        }
    }

    fn done(self) -> Outcome {
        Outcome::Done {
            accepted: self.accepted,
            duplicates: self.duplicates,
        }
    }
}

fn read_head(path: &Path, n: usize) -> String {
    use std::io::Read;
    let mut buf = Vec::with_capacity(n);
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(n as u64).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A large CSV or JSON-lines file: a first pass parses and normalizes every transaction and
/// keeps nothing (one bad record refuses the file, as for small files); a second pass stores
/// them in chunks. Memory holds one transaction (CSV) or one line (JSON lines) at a time.
async fn stream(
    path: &Path,
    format: &str,
    opts: &super::ParseOpts,
    ingest: &Ingest,
    fname: &str,
) -> Outcome {
    let fail = |r: &Reject| Outcome::Failed {
        why: format!("{fname}: {}: {}", r.at, r.reason),
        sensitive: r.sensitive,
    };
    // Pass 1: check, on a blocking thread (parsing a large file takes seconds).
    let (p, f, o) = (path.to_path_buf(), format.to_string(), opts.clone());
    let key = ingest.key.clone();
    let offset = ingest.opts.offset_s;
    let checked = tokio::task::spawn_blocking(move || {
        let now = crate::event::now_ms();
        let mut count = 0usize;
        super::stream::each(&p, &f, &o, |t| {
            super::normalize::normalize_at(t, &key, now, offset).map(|_| count += 1)
        })
        .map(|()| count)
    })
    .await;
    let count = match checked {
        Ok(Ok(n)) => n,
        Ok(Err(super::stream::Error::Io(e))) => return Outcome::Retry(format!("cannot read: {e}")),
        Ok(Err(super::stream::Error::Bad(r))) => return fail(&r),
        Err(e) => return Outcome::Retry(format!("import task: {e}")),
    };
    // Pass 2: store, CHUNK transactions at a time. The parser runs on a blocking thread and
    // hands chunks over a bounded channel, so at most two chunks are in memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Normalized>, Outcome>>(1);
    let (p, f, o) = (path.to_path_buf(), format.to_string(), opts.clone());
    let key = ingest.key.clone();
    let offset = ingest.opts.offset_s;
    let fname_owned = fname.to_string();
    let reader = tokio::task::spawn_blocking(move || {
        let mut buf: Vec<Normalized> = Vec::with_capacity(CHUNK);
        let now = crate::event::now_ms();
        let r = super::stream::each(&p, &f, &o, |t| {
            let n = super::normalize::normalize_at(t, &key, now, offset)?;
            buf.push(n);
            if buf.len() >= CHUNK {
                let chunk = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK));
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return Err(Reject::new("file", "import stopped"));
                }
            }
            Ok(())
        });
        let last = match r {
            Ok(()) => Ok(buf),
            Err(super::stream::Error::Io(e)) => Err(Outcome::Retry(format!("cannot read: {e}"))),
            Err(super::stream::Error::Bad(r)) => Err(Outcome::Failed {
                why: format!("{fname_owned}: {}: {}", r.at, r.reason),
                sensitive: r.sensitive,
            }),
        };
        let _ = tx.blocking_send(last);
    });
    let mut st = Totals::default();
    while let Some(msg) = rx.recv().await {
        match msg {
            Ok(chunk) if chunk.is_empty() => {}
            Ok(chunk) => {
                if let Err(o) = st.store(ingest, chunk, fname).await {
                    drop(rx);
                    let _ = reader.await;
                    return o;
                }
            }
            Err(o) => return o,
        }
    }
    let _ = reader.await;
    tracing::debug!(file = fname, transactions = count, "POS file streamed");
    st.done()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(bytes: &[u8]) -> Search {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let p = dir.path().join("export");
        if let Err(e) = std::fs::write(&p, bytes) {
            panic!("write: {e}");
        }
        match scan_blocks(&p) {
            Ok(s) => s,
            Err(e) => panic!("scan: {e}"),
        }
    }

    /// Bytes that look like compressed output: a simple generator, no real compressor needed.
    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn utf16(text: &str, bom: bool, big_endian: bool) -> Vec<u8> {
        let mut v = Vec::new();
        let units = bom.then_some(0xfeff).into_iter().chain(text.encode_utf16());
        for u in units {
            v.extend_from_slice(&if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            });
        }
        v
    }

    fn utf16le(text: &str) -> Vec<u8> {
        utf16(text, true, false)
    }

    /// Whatever the block size, what lies across a block boundary is searched: the overlap
    /// carries every window the search looks through into the next block.
    #[test]
    fn small_blocks_find_what_one_block_finds() {
        let mut text = String::from("register,business_day,transaction_id,total\n");
        while text.len() < 9_000 {
            text.push_str("r1,2026-12-01,t1,12.50\n");
        }
        let clean = text.clone();
        text.push_str("r1,2026-12-01,t2,4111111111111111=28121010000012345678\n");
        while text.len() < 20_000 {
            text.push_str("r1,2026-12-01,t3,1.00\n");
        }
        for block in [256, 1000, 4096, BLOCK] {
            let verdict = |b: &[u8]| scan_reader(b, block).ok();
            assert_eq!(verdict(clean.as_bytes()), Some(Search::Clean), "{block}");
            assert_eq!(verdict(text.as_bytes()), Some(Search::Carries), "{block}");
            let mut mixed = clean.clone().into_bytes();
            mixed.extend(noise(3_000, 7));
            mixed.extend(clean.as_bytes());
            assert!(
                matches!(verdict(&mixed), Some(Search::Unsearchable(_))),
                "{block}"
            );
        }
    }

    #[test]
    fn text_in_any_encoding_is_searched() {
        let clean = "InvoiceNo,Description,UnitPrice\n1,rolling pin=2 \u{a3}5 off,1.00\n";
        let cvv = "InvoiceNo,Description,CVV\n1,x,123\n";
        assert_eq!(scan(clean.as_bytes()), Search::Clean);
        assert_eq!(scan(cvv.as_bytes()), Search::Carries);
        // Windows-1252 (0x80-0x9f are letters and signs there, not controls).
        assert_eq!(
            scan(b"InvoiceNo,Description\n1,\xa3 off \x80 \x93quoted\x94 \x0c\n"),
            Search::Clean
        );
        assert_eq!(scan(&utf16le(clean)), Search::Clean);
        assert_eq!(scan(&utf16le(cvv)), Search::Carries);
        // UTF-16 declared by its mark is text even where its characters' bytes are controls
        // (U+3001 is 01 30).
        assert_eq!(
            scan(&utf16le("\u{3001}\u{3002}\u{4e2d}\u{6587},1\n")),
            Search::Clean
        );
        assert_eq!(
            scan(&utf16le("\u{3001}\u{3002},CVV\n1,123\n")),
            Search::Carries
        );
        // UTF-16 without a mark, in scripts whose every character has a control byte
        // (Cyrillic 04xx, Polish ł 0142, Greek 03xx), either byte order.
        let cyrillic = "Номер;Описание;Сумма\n1;Хлеб ржаной łódź αβγ;1,00\n2;Молоко;2,50\n";
        let cyrillic_cvv = "Номер;Описание;CVV\n1;Хлеб;123\n2;Молоко;456\n";
        for big_endian in [false, true] {
            assert_eq!(scan(&utf16(cyrillic, false, big_endian)), Search::Clean);
            assert_eq!(
                scan(&utf16(cyrillic_cvv, false, big_endian)),
                Search::Carries
            );
            assert_eq!(scan(&utf16(clean, false, big_endian)), Search::Clean);
        }
        // Fields and records separated by the ASCII unit and record separators, any
        // configured delimiter.
        assert_eq!(
            scan(b"InvoiceNo\x1fDescription\x1fCVV\x1fTender\x1e1\x1fx\x1f123\x1fcash\x1e"),
            Search::Carries
        );
        assert_eq!(
            scan(&"1\x1fA\x1fx\x1f1.00\x1e".repeat(1000).into_bytes()),
            Search::Clean
        );
        assert_eq!(scan(b"InvoiceNo~Amount~Track2\n1~2~x\n"), Search::Carries);
        // A first value that happens to begin like bzip2's signature is text.
        assert_eq!(scan(b"BZh9 bread,1.00\n"), Search::Clean);
        assert_eq!(scan(b""), Search::Clean);
    }

    #[test]
    fn compressed_archived_and_binary_files_cannot_be_searched() {
        let unsearchable = |bytes: &[u8]| matches!(scan(bytes), Search::Unsearchable(_));
        for (magic, _) in NOT_TEXT {
            let mut f = magic.to_vec();
            f.extend_from_slice(b"InvoiceNo,Description\n1,plain text after the signature\n");
            assert!(unsearchable(&f), "{magic:02x?}");
        }
        assert!(unsearchable(b"BZh91AY&SY\x01\x02rest of a bzip2 stream"));
        // No signature, compressed-looking bytes: binary; also behind a UTF-16 mark, where
        // they give unpaired surrogates.
        assert!(unsearchable(&noise(4096, 7)));
        let mut marked = vec![0xff, 0xfe];
        marked.extend_from_slice(&noise(4096, 3));
        assert!(unsearchable(&marked));
        // A table padded with zero bytes (a dBase file: field names, then NUL-padded records
        // with card data) is binary, however printable its records.
        let mut dbf = b"\x03\x7e\x0c\x01".to_vec();
        for name in ["INVOICE", "CARDNO", "CVV"] {
            let mut field = name.as_bytes().to_vec();
            field.resize(32, 0);
            dbf.extend_from_slice(&field);
        }
        for i in 0..200 {
            let mut rec = format!(" {i:08}4111111111111111123").into_bytes();
            rec.resize(64, 0);
            dbf.extend_from_slice(&rec);
        }
        assert!(unsearchable(&dbf));
        // A text export with binary bytes after its first megabyte is judged there too.
        let mut long = "1,an ordinary row of a large export,1.00\n"
            .repeat(30_000)
            .into_bytes();
        assert_eq!(scan(&long), Search::Clean);
        long.extend_from_slice(&noise(65_536, 11));
        assert!(unsearchable(&long));
        // A compressed part inside a text export, in the middle of its first block.
        let mut inside = "1,an ordinary row,1.00\n".repeat(20_000).into_bytes();
        let tail = inside.split_off(200_000);
        inside.extend_from_slice(&noise(300, 5));
        inside.extend_from_slice(&tail);
        assert!(unsearchable(&inside));
        // Encoded data: a long base64 run in a JSON field, an OpenPGP-armoured export.
        let b64: String = noise(3000, 9)
            .iter()
            .map(|b| {
                char::from(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                        [usize::from(b % 64)],
                )
            })
            .collect();
        assert!(unsearchable(
            format!("{{\"id\":\"T1\",\"export\":\"{b64}\"}}\n").as_bytes()
        ));
        assert!(unsearchable(
            b"-----BEGIN PGP MESSAGE-----\n\nhQEMA0/xyz\n-----END PGP MESSAGE-----\n"
        ));
        // A few stray controls in a text do not make it binary.
        let mut stray = "1,x,1.00\n".repeat(10_000).into_bytes();
        stray.extend_from_slice(b"\x01\x02");
        assert_eq!(scan(&stray), Search::Clean);
        assert_eq!(scan(b"1,x\x01y\n"), Search::Clean);
    }
}
