//! `storegw unseal`: the central platform opens the sealed customer tokens of received events
//! (docs/pos.md, "Sealed customer identifiers"). Feature `unseal`: the central team's build,
//! not the store binary.
//!
//! Input, one JSON value per line: events as `storegw replay` prints them, broker batches
//! (`{"schema":…,"store":…,"events":[…]}`) or `storegw tail --json` lines (events with `store`
//! and `gateway`). Other lines that are JSON objects (replay's summary) pass unchanged. Each
//! sealed token of a `pos.transaction` `customer` object is opened, or with `--rekey` replaced
//! by the platform's keyed pseudonym, `hex(HMAC-SHA256(key, tag ":" value))` — the same value
//! a keyed gateway publishes, so joins over both stay consistent and raw values need not be
//! stored. Keyed pseudonyms (64 hex) pass unchanged.

use super::customer::{keyed_pseudonym, read_join_key};
use super::sealed::{looks_sealed, Opener};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use zeroize::Zeroizing;

/// What `storegw unseal` was asked to do.
pub struct UnsealOptions {
    /// Private key files (`x25519-private:` lines); the token's key id picks one.
    pub keys: Vec<PathBuf>,
    /// Join key of the platform: write keyed pseudonyms instead of raw values.
    pub rekey: Option<PathBuf>,
    /// Store id for lines that carry none (`storegw replay` output).
    pub store: Option<String>,
}

/// Counts of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnsealTotals {
    /// Lines read.
    pub lines: u64,
    /// Tokens opened (or re-keyed).
    pub opened: u64,
    /// Tokens that could not be opened (removed from the output, reported on stderr).
    pub failed: u64,
    /// Lines that were not JSON objects (reported, not written).
    pub bad_lines: u64,
}

/// Opens and rewrites the customer tokens of JSON lines.
pub struct Unsealer {
    opener: Opener,
    rekey: Option<Zeroizing<Vec<u8>>>,
    store: Option<String>,
    /// Counts so far.
    pub totals: UnsealTotals,
}

impl Unsealer {
    /// Reads the key files (private keys must be `chmod 600`).
    pub fn new(o: &UnsealOptions) -> Result<Unsealer, String> {
        if o.keys.is_empty() {
            return Err("give at least one --key PRIVATE_KEY_FILE".into());
        }
        let mut texts = Vec::new();
        for p in &o.keys {
            crate::config::check_secret_mode(p)?;
            let t = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
            texts.push(t);
        }
        let opener = Opener::new(&texts)?;
        let rekey = match &o.rekey {
            None => None,
            Some(p) => {
                crate::config::check_secret_mode(p)?;
                Some(Zeroizing::new(read_join_key(p)?))
            }
        };
        Ok(Unsealer {
            opener,
            rekey,
            store: o.store.clone(),
            totals: UnsealTotals::default(),
        })
    }

    /// Ids of the private keys held.
    pub fn key_ids(&self) -> Vec<String> {
        self.opener.key_ids()
    }

    /// One event: opens its customer tokens for `store`; problems are appended to `notes`.
    fn event(&mut self, e: &mut Value, store: Option<&str>, notes: &mut Vec<String>) {
        if e.get("kind").and_then(Value::as_str) != Some("pos.transaction") {
            return;
        }
        let id = e
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let Some(customer) = e.get_mut("customer").and_then(Value::as_object_mut) else {
            return;
        };
        let mut remove = Vec::new();
        for (tag, v) in customer.iter_mut() {
            let Some(token) = v.as_str().filter(|t| looks_sealed(t)) else {
                continue;
            };
            let Some(store) = store else {
                notes.push(format!(
                    "event {id}: customer.{tag}: no store id (give --store for replay output)"
                ));
                self.totals.failed += 1;
                remove.push(tag.clone());
                continue;
            };
            match self.opener.open(tag, store, token) {
                Ok(plain) => {
                    let plain = Zeroizing::new(plain);
                    let out = match &self.rekey {
                        None => Some(plain.to_string()),
                        Some(k) => keyed_pseudonym(k, tag, &plain),
                    };
                    match out {
                        Some(o) => {
                            *v = Value::String(o);
                            self.totals.opened += 1;
                        }
                        None => {
                            remove.push(tag.clone());
                            self.totals.failed += 1;
                        }
                    }
                }
                Err(err) => {
                    notes.push(format!("event {id}: customer.{tag}: {err}"));
                    self.totals.failed += 1;
                    remove.push(tag.clone());
                }
            }
        }
        for t in remove {
            customer.remove(&t);
        }
    }

    /// One input line: the line to write (None for a line that is not a JSON object) and the
    /// problems to report.
    pub fn line(&mut self, text: &str) -> (Option<String>, Vec<String>) {
        self.totals.lines += 1;
        let mut notes = Vec::new();
        let mut v: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                self.totals.bad_lines += 1;
                return (None, vec!["not a JSON object".into()]);
            }
        };
        let store = v
            .get("store")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| self.store.clone());
        if let Some(events) = v.get_mut("events").and_then(Value::as_array_mut) {
            for e in events {
                self.event(e, store.as_deref(), &mut notes);
            }
        } else {
            self.event(&mut v, store.as_deref(), &mut notes);
        }
        (Some(v.to_string()), notes)
    }
}

/// Runs over `input` into `output`; problems go to `errors` with the line number. Returns the
/// totals.
pub fn run(
    o: &UnsealOptions,
    input: impl BufRead,
    mut output: impl Write,
    mut errors: impl Write,
) -> Result<UnsealTotals, String> {
    let mut u = Unsealer::new(o)?;
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| format!("reading input: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let (out, notes) = u.line(&line);
        for n in notes {
            let _ = writeln!(errors, "line {}: {n}", i + 1);
        }
        if let Some(out) = out {
            writeln!(output, "{out}").map_err(|e| format!("writing output: {e}"))?;
        }
    }
    output.flush().map_err(|e| format!("writing output: {e}"))?;
    Ok(u.totals)
}

/// `storegw keygen --recipient --out PREFIX`: writes PREFIX.key (0600, created new) and
/// PREFIX.pub (the line for `privacy.recipient_keys_file`); returns the key id.
pub fn keygen_recipient(prefix: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let (private, public, id) = super::sealed::generate_keypair()?;
    let with_ext = |ext: &str| {
        let mut s = prefix.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    let key_path = with_ext(".key");
    let pub_path = with_ext(".pub");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    f.write_all(format!("{}\n", private.as_str()).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    std::fs::write(&pub_path, format!("{public}\n"))
        .map_err(|e| format!("{}: {e}", pub_path.display()))?;
    Ok(id)
}
