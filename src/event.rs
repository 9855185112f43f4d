//! The wire model: what the central platform receives (DESIGN §2, schema `storegw.v1`).

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Schema tag carried by every batch and status payload, so consumers can route by version.
pub const SCHEMA: &str = "storegw.v1";

/// The feeds a gateway publishes; each has its own topic, spool tree and drop policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Ble,
    Wifi,
    Pos,
}

impl Stream {
    /// Every data stream, in uplink priority order (POS first: it is what the till waits on).
    pub const ALL: [Stream; 3] = [Stream::Pos, Stream::Ble, Stream::Wifi];

    /// Topic and tree name of the stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Ble => "ble",
            Stream::Wifi => "wifi",
            Stream::Pos => "pos",
        }
    }

    /// Sensor streams may lose their oldest events under pressure; POS never does.
    pub fn is_sensor(self) -> bool {
        !matches!(self, Stream::Pos)
    }

    /// The stream an event kind travels on (`ble.sighting` → ble).
    pub fn of_kind(kind: &str) -> Option<Stream> {
        kind.split('.').next().and_then(|p| p.parse().ok())
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ble" => Ok(Stream::Ble),
            "wifi" => Ok(Stream::Wifi),
            "pos" => Ok(Stream::Pos),
            other => Err(format!(
                "unknown stream `{other}` (expected ble, wifi or pos)"
            )),
        }
    }
}

/// Every event kind of wire contract v1.
pub const KINDS: [&str; 6] = [
    "ble.sighting",
    "ble.presence",
    "ble.census",
    "wifi.census",
    "wifi.visit",
    "pos.transaction",
];

/// An event before the spool gives it an id: kind, time and the kind-specific fields.
///
/// `body` must be a JSON object; its fields are spliced next to `id`, `kind` and `ts`.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub ts_ms: i64,
    pub body: serde_json::Value,
}

impl Event {
    /// Builds an event from any serializable body (a struct with named fields).
    pub fn new<T: Serialize>(kind: &'static str, ts_ms: i64, body: &T) -> Event {
        let body = serde_json::to_value(body).unwrap_or(serde_json::Value::Null);
        Event { kind, ts_ms, body }
    }

    /// The stream this event belongs to.
    pub fn stream(&self) -> Stream {
        Stream::of_kind(self.kind).unwrap_or(Stream::Ble)
    }

    /// Serializes the event as it goes on the wire, with the id the spool assigned.
    pub fn to_wire(&self, gateway: &str, seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(gateway.as_bytes());
        out.push(b':');
        out.extend_from_slice(seq.to_string().as_bytes());
        out.extend_from_slice(b"\",\"kind\":\"");
        out.extend_from_slice(self.kind.as_bytes());
        out.extend_from_slice(b"\",\"ts\":\"");
        out.extend_from_slice(rfc3339_ms(self.ts_ms).as_bytes());
        out.push(b'"');
        if let serde_json::Value::Object(map) = &self.body {
            for (k, v) in map {
                if k == "id" || k == "kind" || k == "ts" {
                    continue;
                }
                out.push(b',');
                // Serializing a String and a Value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut out, k);
                out.push(b':');
                let _ = serde_json::to_writer(&mut out, v);
            }
        }
        out.push(b'}');
        out
    }
}

/// The event id the contract promises: `{gateway}:{seq}`.
pub fn event_id(gateway: &str, seq: u64) -> String {
    format!("{gateway}:{seq}")
}

/// Topic of a stream: `{prefix}/{store}/{gateway}/{stream}`.
pub fn topic(prefix: &str, store: &str, gateway: &str, stream: &str) -> String {
    format!("{prefix}/{store}/{gateway}/{stream}")
}

/// Builds a batch payload from already-serialized events without re-encoding them.
pub fn batch_payload<'a>(
    store: &str,
    gateway: &str,
    sent_at_ms: i64,
    events: impl Iterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"schema\":\"");
    out.extend_from_slice(SCHEMA.as_bytes());
    out.extend_from_slice(b"\",\"store\":\"");
    out.extend_from_slice(store.as_bytes());
    out.extend_from_slice(b"\",\"gateway\":\"");
    out.extend_from_slice(gateway.as_bytes());
    out.extend_from_slice(b"\",\"sent_at\":\"");
    out.extend_from_slice(rfc3339_ms(sent_at_ms).as_bytes());
    out.extend_from_slice(b"\",\"events\":[");
    for (i, e) in events.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Current wall-clock time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats Unix milliseconds as RFC 3339 UTC with exactly three fractional digits.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_ms() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_506_780_191_123), "2017-09-30T14:03:11.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn wire_event_splices_body() {
        let e = Event {
            kind: "wifi.census",
            ts_ms: 0,
            body: serde_json::json!({"probe_requests": 3}),
        };
        let w = e.to_wire("gw1", 7);
        let v: serde_json::Value = serde_json::from_slice(&w).expect("valid json");
        assert_eq!(v["id"], "gw1:7");
        assert_eq!(v["kind"], "wifi.census");
        assert_eq!(v["probe_requests"], 3);
        let b = batch_payload("s1", "gw1", 0, [w.as_slice(), w.as_slice()].into_iter());
        let v: serde_json::Value = serde_json::from_slice(&b).expect("valid json");
        assert_eq!(v["events"].as_array().map(|a| a.len()), Some(2));
        assert_eq!(Stream::of_kind("pos.transaction"), Some(Stream::Pos));
    }
}
