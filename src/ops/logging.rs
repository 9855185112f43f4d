//! Logging through tracing: journald fields under systemd, compact text on a terminal, JSON on
//! demand, and a level that SIGHUP can change without a restart.
//!
//! Under systemd the native journald protocol is used (tracing-journald) rather than stderr
//! with `<N>` priority prefixes, because it keeps every tracing field as its own journal field
//! (`journalctl -u storegw SOURCE=wifi`), which a prefix cannot do. Outside systemd, or when the
//! journal socket is unreachable, logs go to stderr.

//!
//! No log line may carry a device identifier, at any level (docs/operations.md §6). Two rules
//! make sure of it: the libraries (btleplug and its D-Bus layer, rumqttc, sled, hyper, ...)
//! never log below `warn`, whatever `log.level` says (at `trace`, bluez-async prints every
//! BlueZ object path, `/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF`); and every line is scrubbed
//! of address-like patterns before it is written (text and JSON), or re-emitted scrubbed
//! (journald), so a library message or an `STOREGW_LOG` override cannot leak one either.

use std::borrow::Cow;
use std::io::Write;
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
// `Targets` rather than `EnvFilter`: the same `warn,storegw=info` directives without the regex
// engine and its Unicode tables (about 1 MiB of the store binary). Span and field filters are
// the part of env-filter syntax it does not read.
use tracing_subscriber::filter::Targets;
use tracing_subscriber::{reload, Layer, Registry};

type FilterHandle = reload::Handle<Targets, Registry>;

static HANDLE: OnceLock<FilterHandle> = OnceLock::new();
/// Set when `STOREGW_LOG` chose the filter: a config reload then leaves it alone.
static ENV_OVERRIDE: OnceLock<bool> = OnceLock::new();

/// Where log lines end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Native journald protocol, one journal field per tracing field.
    Journald,
    /// Compact text on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
}

/// True when stderr is connected to the journal (systemd sets `JOURNAL_STREAM=dev:inode` of the
/// stream it gave us; a child that inherited the variable but writes elsewhere does not match).
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    stderr_dev_ino().is_some_and(|(d, i)| d == dev && i == ino)
}

fn stderr_dev_ino() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Chooses the sink for a configured format (`auto`, `text`, `json`, `journald`).
pub fn choose(format: &str) -> Sink {
    match format {
        "json" => Sink::Json,
        "text" => Sink::Text,
        "journald" => Sink::Journald,
        _ if stderr_is_journal() => Sink::Journald,
        _ => Sink::Text,
    }
}

/// The filter of a configured level: storegw's own targets at `level`, every library at
/// `warn` at most (below it they print identifiers and payloads).
fn filter_for(level: &str) -> Targets {
    let libs = if level == "error" { "error" } else { "warn" };
    format!("{libs},storegw={level}")
        .parse()
        .or_else(|_| "warn,storegw=info".parse())
        .unwrap_or_default()
}

/// What replaces an address-like pattern in a log line.
pub const REDACTED: &str = "[addr]";

fn hex_at(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(|c| c.is_ascii_hexdigit())
}

fn word_at(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Length of a MAC-like pattern starting at `i`, if any: six hex pairs joined by one of
/// `: - _ . space` (BlueZ object paths use `_`), three groups of four hex digits joined by `.`,
/// twelve hex digits in a row, or six decimal bytes in brackets (`[192, 17, 34, 51, 68, 85]`,
/// a `Debug`-printed address).
fn mac_len_at(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'[') {
        let mut j = i + 1;
        for k in 0..6 {
            let start = j;
            while b.get(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
            let n: u32 = std::str::from_utf8(b.get(start..j)?).ok()?.parse().ok()?;
            if j - start > 3 || n > 255 {
                return None;
            }
            if k < 5 {
                if b.get(j) != Some(&b',') {
                    return None;
                }
                j += 1;
                while b.get(j) == Some(&b' ') {
                    j += 1;
                }
            }
        }
        return (b.get(j) == Some(&b']')).then_some(j + 1 - i);
    }
    // The caller starts a match only at a word boundary (`_` counts as one: `dev_` + address).
    if !(hex_at(b, i) && hex_at(b, i + 1)) {
        return None;
    }
    // Six pairs with one separator.
    if let Some(&sep) = b.get(i + 2) {
        if b":-_. ".contains(&sep)
            && (0..6).all(|k| hex_at(b, i + 3 * k) && hex_at(b, i + 3 * k + 1))
            && (0..5).all(|k| b.get(i + 3 * k + 2) == Some(&sep))
            && !hex_at(b, i + 17)
        {
            return Some(17);
        }
    }
    // Three groups of four joined by dots.
    if (0..3).all(|g| (0..4).all(|k| hex_at(b, i + 5 * g + k)))
        && b.get(i + 4) == Some(&b'.')
        && b.get(i + 9) == Some(&b'.')
        && !word_at(b, i + 14)
    {
        return Some(14);
    }
    // Twelve hex digits, not part of a longer word or number.
    if (0..12).all(|k| hex_at(b, i + k)) && !word_at(b, i + 12) {
        return Some(12);
    }
    None
}

/// `s` with every MAC-like pattern replaced by `[addr]` (see `mac_len_at`).
pub fn scrub(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let at_start = i == 0 || !b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_';
        let found = if at_start || b[i] == b'[' {
            mac_len_at(b, i)
        } else {
            None
        };
        match found {
            Some(n) => {
                let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
                o.push_str(s.get(copied..i).unwrap_or(""));
                o.push_str(REDACTED);
                i += n;
                copied = i;
            }
            None => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(s),
        Some(mut o) => {
            o.push_str(s.get(copied..).unwrap_or(""));
            Cow::Owned(o)
        }
    }
}

/// True when `s` holds a MAC-like pattern.
pub fn has_identifier(s: &str) -> bool {
    matches!(scrub(s), Cow::Owned(_))
}

/// stderr, every formatted line scrubbed of addresses before it is written.
struct ScrubbedStderr;

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubWriter;
    fn make_writer(&'a self) -> ScrubWriter {
        ScrubWriter
    }
}

/// One formatted event (the fmt layer writes each in a single call).
struct ScrubWriter;

impl Write for ScrubWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Collects an event's fields as text.
#[derive(Default)]
struct FieldText {
    message: String,
    fields: String,
}

impl Visit for FieldText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields.push_str(&format!(" {}={value}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message.push_str(&format!("{value:?}"));
        } else {
            self.fields
                .push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

/// Wraps a layer that writes fields as they are (journald): an event carrying an address-like
/// pattern is not passed on but re-emitted once, scrubbed, as `storegw::log` at its level.
struct Redact<L> {
    inner: L,
}

impl<S, L> Layer<S> for Redact<L>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_new_span(attrs, id, ctx);
    }
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_record(id, values, ctx);
    }
    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }
    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }
    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut f = FieldText::default();
        event.record(&mut f);
        if !has_identifier(&f.message) && !has_identifier(&f.fields) {
            self.inner.on_event(event, ctx);
            return;
        }
        let text = format!("{}: {}{}", event.metadata().target(), f.message, f.fields);
        let text = scrub(&text);
        match *event.metadata().level() {
            tracing::Level::ERROR => tracing::error!(target: "storegw::log", "{text}"),
            tracing::Level::WARN => tracing::warn!(target: "storegw::log", "{text}"),
            tracing::Level::INFO => tracing::info!(target: "storegw::log", "{text}"),
            tracing::Level::DEBUG => tracing::debug!(target: "storegw::log", "{text}"),
            tracing::Level::TRACE => tracing::trace!(target: "storegw::log", "{text}"),
        }
    }
}

/// Installs the global subscriber once; later calls are ignored. `STOREGW_LOG` (comma-separated
/// `target=level` directives such as `storegw=debug`) overrides `level`.
pub fn init(level: &str, format: &str) {
    let (filter, from_env) = match std::env::var("STOREGW_LOG") {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<Targets>() {
            Ok(f) => (f, true),
            Err(_) => (filter_for(level), false),
        },
        _ => (filter_for(level), false),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let sink = choose(format);
    let fmt_layer: Box<dyn Layer<_> + Send + Sync> = match sink {
        Sink::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(ScrubbedStderr)
            .boxed(),
        Sink::Journald => match tracing_journald::layer() {
            Ok(j) => Redact {
                inner: j
                    .with_field_prefix(None)
                    .with_syslog_identifier("storegw".into()),
            }
            .boxed(),
            Err(_) => text_layer(),
        },
        Sink::Text => text_layer(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .try_init()
        .is_ok()
    {
        let _ = HANDLE.set(handle);
        let _ = ENV_OVERRIDE.set(from_env);
    }
}

fn text_layer<S>() -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal;
    tracing_subscriber::fmt::layer()
        .compact()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(ScrubbedStderr)
        .boxed()
}

/// Applies a new level at once (SIGHUP). Returns false when `STOREGW_LOG` pins the filter or
/// logging was never initialised.
pub fn set_level(level: &str) -> bool {
    if ENV_OVERRIDE.get().copied().unwrap_or(false) {
        return false;
    }
    match HANDLE.get() {
        Some(h) => h.reload(filter_for(level)).is_ok(),
        None => false,
    }
}

/// At most one log line per interval for messages that outside input can trigger at will (a
/// broker flooding the remote topics must not flood the journal); counts the lines it held
/// back, so the line that is written can say how many.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<std::time::Instant>,
    held: u64,
}

impl Throttle {
    /// Some(lines held back since the last one) when a line may be written now.
    pub fn allow(&mut self, every: std::time::Duration) -> Option<u64> {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) < every) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_formats_win_over_detection() {
        assert_eq!(choose("json"), Sink::Json);
        assert_eq!(choose("text"), Sink::Text);
        assert_eq!(choose("journald"), Sink::Journald);
    }

    #[test]
    fn addresses_are_scrubbed_in_every_spelling() {
        for line in [
            "PropertiesChanged for /org/bluez/hci0/dev_C0_11_22_33_44_55: x",
            "device C0:11:22:33:44:55 found",
            "device c0:11:22:33:44:55",
            "device c0-11-22-33-44-55.",
            "addr=c01122334455",
            "addr=\"C01122334455\"",
            "cisco c011.2233.4455 form",
            "bytes c0 11 22 33 44 55 end",
            "dotted c0.11.22.33.44.55",
            "BDAddr { address: [192, 17, 34, 51, 68, 85] }",
            "reversed 55:44:33:22:11:c0",
        ] {
            let out = scrub(line);
            assert!(out.contains(REDACTED), "{line} -> {out}");
            for form in ["c0", "C0", "192, 17"] {
                assert!(!out.contains(&format!("{form}:11")), "{out}");
            }
            assert!(!out.to_lowercase().contains("2233"), "{line} -> {out}");
            assert!(!out.contains("51, 68"), "{line} -> {out}");
        }
        // Not addresses: times, ids, pseudonyms, longer hex, IPv6, ordinary words.
        for line in [
            "2026-12-01T22:51:47.249018Z sent batch gw1:1795631589428721",
            "pseudonym 3f2a9c0d11e4b5a6 epoch 20423",
            "listening on [::1]:9380 and 127.0.0.1:9380",
            "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "published 123456 events in 12 batches",
            "bytes [2, 21, 253, 165, 6, 147, 164]",
        ] {
            assert_eq!(scrub(line), line);
        }
    }

    #[test]
    fn libraries_never_log_below_warn() {
        let f = filter_for("trace").to_string();
        assert!(f.contains("storegw=trace"), "{f}");
        assert!(
            f.starts_with("warn") || f.contains(",warn") || f.contains("warn,"),
            "{f}"
        );
        assert!(filter_for("error").to_string().contains("error"));
    }

    #[test]
    fn every_configurable_level_builds_a_filter() {
        for l in ["trace", "debug", "info", "warn", "error"] {
            assert!(format!("{l},rumqttc=warn").parse::<Targets>().is_ok());
        }
    }
}
