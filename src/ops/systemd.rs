//! systemd integration: readiness, watchdog fed from pipeline health, stopping notice.

use std::time::Duration;

/// Tells systemd the service is ready (no-op outside systemd).
pub fn ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Updates the one-line status `systemctl status` shows.
pub fn status(line: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(line)]);
}

/// Watchdog interval to feed at (half of WatchdogSec), if systemd asked for one.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// Pets the watchdog; callers do so only while the pipeline is healthy.
pub fn pet() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
}
