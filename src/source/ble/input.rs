//! Recorded advertising input for replay: a btsnoop log or JSON lines of reports (the shared
//! `*.adv_reports.jsonl` format), told apart by content so no flag is needed.

use super::btsnoop::{Btsnoop, Report, MAGIC};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Counters of what reading the input met.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputStats {
    /// btsnoop records, or non-empty JSON lines.
    pub records: u64,
    /// Records that were not LE advertising reports (other HCI traffic).
    pub skipped: u64,
    /// Records cut short (end of file or absurd length).
    pub truncated: u64,
    /// Advertising events or reports whose length fields do not fit.
    pub bad_reports: u64,
    /// JSON lines that could not be read as a report.
    pub bad_lines: u64,
}

/// One JSON line: `ts` (Unix seconds), `addr`, `addr_type`, `rssi`, `ad_hex`; other keys ignored.
#[derive(Deserialize)]
struct JsonReport {
    ts: f64,
    addr: String,
    #[serde(default)]
    addr_type: u8,
    #[serde(default)]
    event_type: u16,
    rssi: Option<i16>,
    #[serde(default)]
    tx_power: Option<i16>,
    ad_hex: String,
}

/// Parses `aa:bb:cc:dd:ee:ff` (also `-` separated or bare 12 hex digits).
pub fn parse_addr(s: &str) -> Option<[u8; 6]> {
    let mut buf = Vec::with_capacity(6);
    let compact: String = s.chars().filter(|c| *c != ':' && *c != '-').collect();
    if compact.len() != 12 || !super::adv::hex_decode(&compact, &mut buf) {
        return None;
    }
    buf.try_into().ok()
}

/// Which recorded format a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An Android btsnoop v1 log: starts with the btsnoop magic (`--format btsnoop`).
    Btsnoop,
    /// JSON lines of reports, the shared `*.adv_reports.jsonl` format (`--format jsonl`).
    JsonLines,
}

/// Looks at the first bytes: the btsnoop magic, or a `{` starting a JSON line.
pub fn detect(head: &[u8]) -> Option<Format> {
    if head.starts_with(MAGIC) {
        return Some(Format::Btsnoop);
    }
    match head.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Some(Format::JsonLines),
        _ => None,
    }
}

/// Reads every advertising report of `path` in order, calling `f(ts_us, report)`.
pub fn for_each_report(
    path: &Path,
    forced: Option<&str>,
    f: impl FnMut(i64, Report<'_>),
) -> Result<InputStats, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut r = BufReader::new(file);
    let format = match forced {
        Some("btsnoop") => Format::Btsnoop,
        Some("jsonl") | Some("json") => Format::JsonLines,
        Some(other) => {
            return Err(format!(
                "--format {other} is not a BLE input format (btsnoop, jsonl)"
            ))
        }
        None => {
            let head = r
                .fill_buf()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            detect(head).ok_or_else(|| {
                format!(
                    "{}: neither a btsnoop log nor JSON lines of advertising reports",
                    path.display()
                )
            })?
        }
    };
    read_reports(r, format, f).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads every advertising report of an already opened input in `format` (replay and the
/// fuzz targets share this path with [`for_each_report`]).
pub fn read_reports(
    r: impl BufRead,
    format: Format,
    mut f: impl FnMut(i64, Report<'_>),
) -> Result<InputStats, String> {
    match format {
        Format::Btsnoop => btsnoop(r, &mut f),
        Format::JsonLines => Ok(json_lines(r, &mut f)),
    }
}

fn btsnoop(r: impl Read, f: &mut impl FnMut(i64, Report<'_>)) -> Result<InputStats, String> {
    let mut snoop = Btsnoop::new(r).map_err(|e| e.to_string())?;
    let mut st = InputStats::default();
    let mut buf = Vec::with_capacity(512);
    while let Some(hdr) = snoop.next_record(&mut buf).map_err(|e| e.to_string())? {
        st.records += 1;
        let mut bad = 0u32;
        let ts = hdr.ts_us;
        let adv = snoop.adv_reports(&hdr, &buf, &mut bad, |rep| f(ts, rep));
        if !adv {
            st.skipped += 1;
        }
        st.bad_reports += bad as u64;
    }
    st.truncated = snoop.truncated;
    Ok(st)
}

fn json_lines(r: impl BufRead, f: &mut impl FnMut(i64, Report<'_>)) -> InputStats {
    let mut st = InputStats::default();
    let mut data = Vec::with_capacity(64);
    for line in r.lines() {
        let Ok(line) = line else {
            st.bad_lines += 1;
            break;
        };
        if line.trim().is_empty() {
            continue;
        }
        st.records += 1;
        let Ok(j) = serde_json::from_str::<JsonReport>(&line) else {
            st.bad_lines += 1;
            continue;
        };
        let Some(addr) = parse_addr(&j.addr) else {
            st.bad_lines += 1;
            continue;
        };
        if !j.ts.is_finite() || !super::adv::hex_decode(&j.ad_hex, &mut data) {
            st.bad_lines += 1;
            continue;
        }
        let dbm = |v: Option<i16>| v.and_then(|x| i8::try_from(x).ok()).filter(|x| *x != 127);
        let rep = Report {
            addr,
            addr_type: j.addr_type,
            event_type: j.event_type,
            rssi: dbm(j.rssi),
            tx_power: dbm(j.tx_power),
            data: &data,
        };
        f((j.ts * 1e6).round() as i64, rep);
    }
    st
}
