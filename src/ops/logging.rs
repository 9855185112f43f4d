//! Logging through tracing: journald fields under systemd, compact text on a terminal, JSON on
//! demand, and a level that SIGHUP can change without a restart.
//!
//! Under systemd the native journald protocol is used (tracing-journald) rather than stderr
//! with `<N>` priority prefixes, because it keeps every tracing field as its own journal field
//! (`journalctl -u storegw SOURCE=wifi`), which a prefix cannot do. Outside systemd, or when the
//! journal socket is unreachable, logs go to stderr.

use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

type FilterHandle = reload::Handle<EnvFilter, Registry>;

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

fn filter_for(level: &str) -> EnvFilter {
    // Quiet the MQTT and HTTP libraries unless asked for explicitly.
    EnvFilter::try_new(format!(
        "{level},rumqttc=warn,rumqttd=warn,hyper=warn,sled=warn"
    ))
    .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber once; later calls are ignored. `STOREGW_LOG` (an env-filter
/// directive such as `storegw=debug`) overrides `level`.
pub fn init(level: &str, format: &str) {
    let (filter, from_env) = match std::env::var("STOREGW_LOG") {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
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
            .with_writer(std::io::stderr)
            .boxed(),
        Sink::Journald => match tracing_journald::layer() {
            Ok(j) => j
                .with_field_prefix(None)
                .with_syslog_identifier("storegw".into())
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
        .with_writer(std::io::stderr)
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
    fn every_configurable_level_builds_a_filter() {
        for l in ["trace", "debug", "info", "warn", "error"] {
            assert!(EnvFilter::try_new(format!("{l},rumqttc=warn")).is_ok());
        }
    }
}
