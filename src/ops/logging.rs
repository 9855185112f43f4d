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
//! of address-like patterns ([`crate::privacy::logs::scrub`]) before it is written (text and
//! JSON), or re-emitted scrubbed (journald), so a library message or an `STOREGW_LOG` override
//! cannot leak one either. The BLE stack's libraries, whose messages carry device names and
//! payloads (no address pattern), write only their errors whatever the filter
//! ([`DEVICE_DESCRIBING`]).

use crate::privacy::logs::{has_identifier, scrub};
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

/// The BLE stack's libraries describe devices in their messages below `error`: bluez-async
/// prints whole D-Bus property maps at `trace` (names, aliases, manufacturer data) and
/// payloads of the wrong type at `warn`, btleplug lost events with their data (the D-Bus
/// crates under them log nothing today, and are held to the same ceiling). A name is no
/// address pattern, so scrubbing cannot catch it: whatever `log.level` or `STOREGW_LOG` says,
/// only their errors are written (scrubbed like every line).
const DEVICE_DESCRIBING: [&str; 5] = [
    "btleplug",
    "bluez_async",
    "bluez_generated",
    "dbus",
    "dbus_tokio",
];

/// Whether a span or event is one of those messages.
fn describes_devices(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() > tracing::Level::ERROR
        && DEVICE_DESCRIBING.iter().any(|t| {
            meta.target()
                .strip_prefix(t)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

/// The ceiling no filter can lift ([`DEVICE_DESCRIBING`]).
fn ble_stack_ceiling() -> tracing_subscriber::filter::FilterFn {
    tracing_subscriber::filter::filter_fn(|meta| !describes_devices(meta))
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

impl FieldText {
    /// The event as one line: its target, message and fields.
    fn line(&self, event: &tracing::Event<'_>) -> String {
        format!(
            "{}: {}{}",
            event.metadata().target(),
            self.message,
            self.fields
        )
    }
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
    /// Writes the scrubbed line: [`reemit`] (through the global subscriber, so the line
    /// passes the filters and reaches the journal as `storegw::log`), another sink in tests.
    emit: fn(tracing::Level, &str),
}

/// Logs a scrubbed library line as storegw's own, at the level it had.
fn reemit(level: tracing::Level, text: &str) {
    match level {
        tracing::Level::ERROR => tracing::error!(target: "storegw::log", "{text}"),
        tracing::Level::WARN => tracing::warn!(target: "storegw::log", "{text}"),
        tracing::Level::INFO => tracing::info!(target: "storegw::log", "{text}"),
        tracing::Level::DEBUG => tracing::debug!(target: "storegw::log", "{text}"),
        tracing::Level::TRACE => tracing::trace!(target: "storegw::log", "{text}"),
    }
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
        (self.emit)(*event.metadata().level(), &scrub(&f.line(event)));
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
                emit: reemit,
            }
            .boxed(),
            Err(_) => text_layer(),
        },
        Sink::Text => text_layer(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(ble_stack_ceiling())
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

    /// Collects every event's text as the sinks would see it.
    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut f = FieldText::default();
            event.record(&mut f);
            if let Ok(mut v) = self.0.lock() {
                v.push(f.line(event));
            }
        }
    }

    #[test]
    fn the_ble_stack_describes_no_device_whatever_the_filter() {
        let seen = Capture::default();
        // The most permissive filter an operator can write.
        let everything: Targets = "trace".parse().unwrap_or_default();
        let subscriber = tracing_subscriber::registry()
            .with(everything)
            .with(ble_stack_ceiling())
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "bluez_async::events", "InterfacesAdded: Name: Jane Doe's iPhone");
            tracing::warn!(target: "bluez_async::device", "Manufacturer data had wrong type: [76, 0, 2]");
            tracing::debug!(target: "btleplug::common::adapter_manager", "Lost central event: Jane");
            tracing::info!(target: "dbus", "Jane");
            tracing::error!(target: "bluez_async", "starting discovery failed: NotReady");
            tracing::trace!(target: "storegw::source::ble", "own trace line");
            tracing::warn!(target: "dbusy", "another crate whose name starts alike");
        });
        let lines = seen.0.lock().map(|v| v.clone()).unwrap_or_default();
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("Jane") && !l.contains("[76")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("starting discovery failed")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("own trace line")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("another crate")),
            "{lines:?}"
        );
    }

    #[test]
    fn the_journal_gets_a_library_message_with_an_address_only_scrubbed() {
        // The journald layer sits inside Redact: what reaches `journal` is written as it is;
        // what Redact re-emits (through the global subscriber in the gateway) lands in
        // REEMITTED here.
        static REEMITTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let journal = Capture::default();
        let subscriber = tracing_subscriber::registry().with(Redact {
            inner: journal.clone(),
            emit: |level, text| {
                if let Ok(mut v) = REEMITTED.lock() {
                    v.push(format!("{level} {text}"));
                }
            },
        });
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "bluez_async", "object /org/bluez/hci0/dev_C0_11_22_33_44_55 gone");
            tracing::error!(target: "rumqttc", addr = "c0:11:22:33:44:55", "a field carries it");
            tracing::warn!(target: "rumqttc", "nothing to hide");
        });
        let written = journal.0.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(written, ["rumqttc: nothing to hide"]);
        let redacted = REEMITTED.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(redacted.len(), 2, "{redacted:?}");
        for l in &redacted {
            let folded = l.to_ascii_lowercase().replace(['_', ':'], "");
            assert!(
                !folded.contains("c01122334455") && l.contains("[addr]"),
                "{l}"
            );
        }
        assert!(
            redacted[0].starts_with("WARN bluez_async: object"),
            "{redacted:?}"
        );
        assert!(
            redacted[1].starts_with("ERROR rumqttc: a field carries it addr="),
            "{redacted:?}"
        );
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
