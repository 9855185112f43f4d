//! Reconnect pacing, kept apart from the sockets so its rules are unit-tested
//! (`session/tests.rs`). See docs/design.md, "Uplink".

use std::time::Duration;

/// A session this long resets the reconnect backoff.
pub const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Reconnect pacing: full-jitter exponential backoff, started over only after a session that
/// lasted [`STABLE_SESSION`], so a broker that accepts and then drops the connection is not
/// hammered.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// No attempt made yet: the first wait is at most `min`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            attempt: 0,
        }
    }

    /// Failed attempts since the backoff last started over (for the log).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The longest the next wait may be: min(max, min·2^attempt).
    pub fn ceiling(&self) -> Duration {
        self.min
            .checked_mul(1u32 << self.attempt.min(20))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The next wait, uniform in [0, ceiling] (`pick(n)`: a number in 0..=n, random in
    /// production); counts the attempt.
    pub fn next_wait(&mut self, pick: impl FnOnce(u64) -> u64) -> Duration {
        let ms = self.ceiling().as_millis() as u64;
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(pick(ms.max(1)).min(ms.max(1)))
    }

    /// A session ended after `lasted`: a stable one starts the backoff over.
    pub fn session_ended(&mut self, lasted: Duration) {
        if lasted >= STABLE_SESSION {
            self.attempt = 0;
        }
    }
}
