//! Units every configuration section writes: durations (`30s`, `5m`) and byte sizes (`64MiB`).
//!
//! A leaf of the configuration layer: it imports nothing of storegw, so the root `Config` and
//! every feed's section (`src/source/*/config.rs`) can use it without importing each other.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A duration written as `500ms`, `30s`, `5m`, `24h` or `7d` (or an integer of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    /// Whole seconds.
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }

    /// A duration read from a file, refused above [`MAX_DAYS`]: a deadline is the clock plus a
    /// duration, and a clock plus centuries overflows (it would panic the task that waits).
    fn bounded(ms: Option<u64>, s: &str) -> Result<Dur, String> {
        match ms {
            Some(ms) if ms <= MAX_DAYS * 86_400_000 => Ok(Dur(Duration::from_millis(ms))),
            _ => Err(format!("`{s}` is too long (at most {MAX_DAYS}d)")),
        }
    }
}

/// The longest duration any key takes: about 100 years, past any window or timeout, far
/// below what a clock can add.
pub const MAX_DAYS: u64 = 36_525;

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Dur, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration (use e.g. 500ms, 30s, 5m, 24h, 7d)"))?;
        let ms = match unit.trim() {
            "ms" => Some(n),
            "" | "s" => n.checked_mul(1000),
            "m" | "min" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            "d" => n.checked_mul(86_400_000),
            other => return Err(format!("unknown duration unit `{other}` (ms, s, m, h, d)")),
        };
        Dur::bounded(ms, s)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration such as \"30s\" or an integer of seconds")
        })? {
            Raw::Int(n) => {
                Dur::bounded(n.checked_mul(1000), &n.to_string()).map_err(serde::de::Error::custom)
            }
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A size written as `64MiB`, `512KB`, `1GiB` or an integer of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size (use e.g. 512KiB, 64MiB, 1GiB)"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "KiB" => 1024,
            "MB" => 1_000_000,
            "MiB" => 1024 * 1024,
            "GB" => 1_000_000_000,
            "GiB" => 1024 * 1024 * 1024,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` (B, KiB, MiB, GiB, KB, MB, GB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a size such as \"64MiB\" or an integer of bytes")
        })? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(
            "500ms".parse::<Dur>().ok(),
            Some(Dur(Duration::from_millis(500)))
        );
        assert_eq!("2h".parse::<Dur>().ok(), Some(Dur::secs(7200)));
        assert!("2x".parse::<Dur>().is_err());
        // A clock plus any duration a key takes stays a clock: `Instant + d` cannot overflow.
        assert_eq!(
            "36525d".parse::<Dur>().ok(),
            Some(Dur::secs(MAX_DAYS * 86_400))
        );
        for long in ["36526d", "99999999999999999d", "18446744073709551615"] {
            assert!(long.parse::<Dur>().is_err(), "{long}");
        }
        let int: Result<Dur, _> = toml::from_str::<toml::Value>("d = 9223372036854775807")
            .map_err(|e| e.to_string())
            .and_then(|v| v["d"].clone().try_into::<Dur>().map_err(|e| e.to_string()));
        assert!(int.is_err_and(|e| e.contains("too long")));
        let now = std::time::Instant::now();
        assert!(now.checked_add(Dur::secs(MAX_DAYS * 86_400).0).is_some());
        assert_eq!("64MiB".parse::<ByteSize>().ok(), Some(ByteSize(64 << 20)));
        assert!("99999999999GiB".parse::<ByteSize>().is_err());
    }
}
