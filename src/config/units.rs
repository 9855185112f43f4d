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
}

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
            "ms" => n,
            "" | "s" => n.saturating_mul(1000),
            "m" | "min" => n.saturating_mul(60_000),
            "h" => n.saturating_mul(3_600_000),
            "d" => n.saturating_mul(86_400_000),
            other => return Err(format!("unknown duration unit `{other}` (ms, s, m, h, d)")),
        };
        Ok(Dur(Duration::from_millis(ms)))
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
            Raw::Int(n) => Ok(Dur::secs(n)),
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
        assert_eq!("64MiB".parse::<ByteSize>().ok(), Some(ByteSize(64 << 20)));
        assert!("99999999999GiB".parse::<ByteSize>().is_err());
    }
}
