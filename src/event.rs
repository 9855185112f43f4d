//! The wire model: what the central platform receives (docs/design.md, "Wire contract"; schema `storegw.v1`).

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Schema tag carried by every batch and status payload, so consumers can route by version.
pub const SCHEMA: &str = "storegw.v1";

/// The feeds a gateway publishes; each has its own topic, spool tree and drop policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Beacon sightings, presence and the BLE census (`ble.*`); may drop its oldest events.
    Ble,
    /// Probe-request footfall (`wifi.census`, opt-in `wifi.visit`); may drop its oldest events.
    Wifi,
    /// Till transactions (`pos.transaction`): never dropped, and first in uplink priority.
    Pos,
}

impl Stream {
    /// Every data stream, in uplink priority order; `ALL[s.index()] == s` (POS first: it is what the till waits on).
    pub const ALL: [Stream; 3] = [Stream::Pos, Stream::Ble, Stream::Wifi];

    /// Number of data streams, the length of every per-stream array.
    pub const COUNT: usize = Stream::ALL.len();

    /// The stream's slot in per-stream arrays: its position in [`Stream::ALL`]. The one
    /// stream-to-index mapping; every per-stream array is indexed by it.
    pub const fn index(self) -> usize {
        match self {
            Stream::Pos => 0,
            Stream::Ble => 1,
            Stream::Wifi => 2,
        }
    }

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

/// Every event kind of wire contract v1 (one JSON Schema each in `schemas/`). A typed kind
/// cannot be misspelled at a construction site, and its stream is a `match`, not a string split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// `ble.sighting`: one known beacon heard in one window (count, RSSI, distance, TLM).
    BleSighting,
    /// `ble.presence`: a known beacon entered or left (`enter` / `exit`).
    BlePresence,
    /// `ble.census`: how many other BLE devices were around in a window, without identities.
    BleCensus,
    /// `wifi.census`: footfall counts from the probe requests of one window.
    WifiCensus,
    /// `wifi.visit`: one pseudonymous device's stay in the store (opt-in, `visits = true`).
    WifiVisit,
    /// `pos.transaction`: one normalized till transaction, on the stream that never drops.
    PosTransaction,
}

impl EventKind {
    /// Every kind, in the order of docs/design.md ("Wire contract").
    pub const ALL: [EventKind; 6] = [
        EventKind::BleSighting,
        EventKind::BlePresence,
        EventKind::BleCensus,
        EventKind::WifiCensus,
        EventKind::WifiVisit,
        EventKind::PosTransaction,
    ];

    /// The exact `kind` string on the wire (and the schema file's stem).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::BleSighting => "ble.sighting",
            EventKind::BlePresence => "ble.presence",
            EventKind::BleCensus => "ble.census",
            EventKind::WifiCensus => "wifi.census",
            EventKind::WifiVisit => "wifi.visit",
            EventKind::PosTransaction => "pos.transaction",
        }
    }

    /// The stream (topic, spool tree, drop policy) events of this kind travel on.
    pub const fn stream(self) -> Stream {
        match self {
            EventKind::BleSighting | EventKind::BlePresence | EventKind::BleCensus => Stream::Ble,
            EventKind::WifiCensus | EventKind::WifiVisit => Stream::Wifi,
            EventKind::PosTransaction => Stream::Pos,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serializes as the wire string, so a kind inside a serialized struct matches the envelope.
impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Parses the wire string (tools reading payloads back, tests); anything else is an error.
impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event kind `{s}`"))
    }
}

/// An event before the spool gives it an id: kind, time and the kind-specific fields.
///
/// The body is kept as its serialized JSON object, so putting an event on the wire is a copy,
/// not a second serialization: at full load that is most of the gateway's CPU.
#[derive(Clone, PartialEq, Eq)]
pub struct Event {
    /// What the event is: its wire `kind` and, through it, its stream.
    pub kind: EventKind,
    /// Event time in Unix milliseconds, written as `ts` (RFC 3339 UTC with milliseconds).
    pub ts_ms: i64,
    /// The body as a JSON object (`{...}`), without `id`, `kind` and `ts`.
    body: Vec<u8>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("kind", &self.kind)
            .field("ts_ms", &self.ts_ms)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Event {
    /// Builds an event from a struct with named fields (none of them `id`, `kind` or `ts`:
    /// those are the envelope's).
    pub fn new<T: Serialize>(kind: EventKind, ts_ms: i64, body: &T) -> Event {
        let mut buf = Vec::with_capacity(256);
        let is_object = serde_json::to_writer(&mut buf, body).is_ok()
            && buf.first() == Some(&b'{')
            && buf.last() == Some(&b'}');
        if !is_object {
            buf.clear();
            buf.extend_from_slice(b"{}");
        }
        Event {
            kind,
            ts_ms,
            body: buf,
        }
    }

    /// An event whose body is already serialized: `body` must be one JSON object without
    /// `id`, `kind` and `ts` (a copy of a body [`Event::new`] made, with a field rewritten in
    /// place). Anything that is not `{...}` becomes an empty body, as in [`Event::new`].
    pub fn from_object(kind: EventKind, ts_ms: i64, mut body: Vec<u8>) -> Event {
        if body.first() != Some(&b'{') || body.last() != Some(&b'}') {
            body.clear();
            body.extend_from_slice(b"{}");
        }
        Event { kind, ts_ms, body }
    }

    /// The serialized body, a JSON object.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// Builds an event from a JSON value (tools and tests); `id`, `kind` and `ts` are removed,
    /// anything that is not an object becomes an empty body.
    pub fn from_value(kind: EventKind, ts_ms: i64, body: serde_json::Value) -> Event {
        let map = match body {
            serde_json::Value::Object(mut m) => {
                for k in ["id", "kind", "ts"] {
                    m.remove(k);
                }
                m
            }
            _ => serde_json::Map::new(),
        };
        Event::new(kind, ts_ms, &map)
    }

    /// The body parsed back into a JSON value (replay summaries, tests).
    pub fn body(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The stream this event belongs to (its kind's).
    pub fn stream(&self) -> Stream {
        self.kind.stream()
    }

    /// Serializes the event as it goes on the wire, with the id the spool assigned.
    pub fn to_wire(&self, gateway: &str, seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.body.len());
        self.write_wire(gateway, seq, &mut out);
        out
    }

    /// Appends the wire form to `out` (the spool writes chunks this way, without a buffer per
    /// event).
    pub fn write_wire(&self, gateway: &str, seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(gateway.as_bytes());
        out.push(b':');
        write_u64(out, seq);
        out.extend_from_slice(b"\",\"kind\":\"");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"ts\":\"");
        write_rfc3339_ms(out, self.ts_ms);
        out.push(b'"');
        match self.body.get(1..) {
            Some(rest) if self.body.len() > 2 => {
                out.push(b',');
                out.extend_from_slice(rest);
            }
            _ => out.push(b'}'),
        }
    }
}

/// Appends the decimal digits of `v`, without going through `fmt` (hand-written bodies).
pub fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    if v < 10 {
        out.push(b'0' + v as u8);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
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
    events: impl Iterator<Item = &'a [u8]> + Clone,
) -> Vec<u8> {
    // Sized once: a batch is up to `batch_max_bytes` (256 KiB), which grown by doubling was
    // copied seven times.
    let size = events.clone().map(|e| e.len() + 1).sum::<usize>();
    let mut out = Vec::with_capacity(160 + store.len() + gateway.len() + size);
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
    let mut out = Vec::with_capacity(24);
    write_rfc3339_ms(&mut out, ms);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ` (every event carries one; `format!` would dominate).
pub fn write_rfc3339_ms(out: &mut Vec<u8>, ms: i64) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let two = |v: u32| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    let [h0, h1] = two(sod / 3600);
    let [mi0, mi1] = two(sod / 60 % 60);
    let [s0, s1] = two(sod % 60);
    let [m0, m1] = two(m);
    let [d0, d1] = two(d);
    let (ms0, [ms1, ms2]) = (b'0' + (milli / 100) as u8, two(milli % 100));
    let rest = [
        b'-', m0, m1, b'-', d0, d1, b'T', h0, h1, b':', mi0, mi1, b':', s0, s1, b'.', ms0, ms1,
        ms2, b'Z',
    ];
    if (0..=9999).contains(&y) {
        // One write of the whole stamp: one per piece cost a call each in the size-optimized
        // build, for every event.
        let y = y as u32;
        let [y0, y1] = two(y / 100);
        let [y2, y3] = two(y % 100);
        let mut all = [0u8; 24];
        all[..4].copy_from_slice(&[y0, y1, y2, y3]);
        all[4..].copy_from_slice(&rest);
        out.extend_from_slice(&all);
    } else {
        // Outside RFC 3339's range: still a readable, if non-conforming, year.
        out.extend_from_slice(y.to_string().as_bytes());
        out.extend_from_slice(&rest);
    }
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
    fn one_index_per_stream() {
        for (i, s) in Stream::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }

    #[test]
    fn formats_rfc3339_ms() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_506_780_191_123), "2017-09-30T14:03:11.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        // Every field of random times, against the calendar of the `time` crate.
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..20_000 {
            let ms = rng.i64(-62_135_596_800_000..253_402_300_800_000);
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let want = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            );
            assert_eq!(rfc3339_ms(ms), want, "{ms}");
        }
        let empty = Event::from_value(EventKind::BleCensus, 0, serde_json::json!({}));
        let v: serde_json::Value =
            serde_json::from_slice(&empty.to_wire("g", 18446744073709551615)).expect("valid json");
        assert_eq!(v["id"], "g:18446744073709551615");
    }

    #[test]
    fn wire_event_splices_body() {
        let e = Event::from_value(
            EventKind::WifiCensus,
            0,
            serde_json::json!({"probe_requests": 3, "id": "x"}),
        );
        let w = e.to_wire("gw1", 7);
        let v: serde_json::Value = serde_json::from_slice(&w).expect("valid json");
        assert_eq!(v["id"], "gw1:7");
        assert_eq!(v["kind"], "wifi.census");
        assert_eq!(v["probe_requests"], 3);
        let b = batch_payload("s1", "gw1", 0, [w.as_slice(), w.as_slice()].into_iter());
        let v: serde_json::Value = serde_json::from_slice(&b).expect("valid json");
        assert_eq!(v["events"].as_array().map(|a| a.len()), Some(2));
    }

    #[test]
    fn one_wire_string_and_stream_per_kind() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
            // The stream is the wire string's prefix (`ble.sighting` on `ble`).
            assert_eq!(k.as_str().split('.').next(), Some(k.stream().as_str()));
            assert_eq!(
                serde_json::to_string(&k).ok(),
                Some(format!("\"{}\"", k.as_str()))
            );
        }
        assert!("ble".parse::<EventKind>().is_err());
        assert!("status".parse::<EventKind>().is_err());
        assert_eq!(EventKind::PosTransaction.stream(), Stream::Pos);
    }
}
