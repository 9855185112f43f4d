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

/// Watchdog interval to feed at (half of WatchdogSec), if systemd asked for one. The
/// environment is outside input: `WATCHDOG_USEC=0` means no watchdog (as systemd reads it; a
/// timer of zero would not start at all), and a tiny one is fed every 100 ms, not in a loop
/// that rewrites the status file every millisecond.
pub fn watchdog_interval() -> Option<Duration> {
    feed_interval(sd_notify::watchdog_enabled())
}

fn feed_interval(watchdog: Option<Duration>) -> Option<Duration> {
    watchdog
        .filter(|d| !d.is_zero())
        .map(|d| (d / 2).max(Duration::from_millis(100)))
}

/// Pets the watchdog; callers do so only while the pipeline is healthy.
pub fn pet() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_watchdog_is_none_and_a_tiny_one_is_fed_every_100ms() {
        assert_eq!(feed_interval(None), None);
        assert_eq!(feed_interval(Some(Duration::ZERO)), None);
        assert_eq!(
            feed_interval(Some(Duration::from_micros(1))),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            feed_interval(Some(Duration::from_secs(30))),
            Some(Duration::from_secs(15))
        );
    }
}
