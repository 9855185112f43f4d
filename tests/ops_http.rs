//! The control plane of the running binary: `/metrics` parsed as Prometheus text exposition
//! format 0.0.4 (families, types, label syntax, histogram consistency) and `/healthz`.

mod common;
use common::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// A plain HTTP/1.0 GET against the loopback server; returns (status, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status code")?;
    Ok((status, body.to_string()))
}

/// One sample: metric name, labels, value.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: TYPE per family and every sample.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: HashMap<String, String>,
    pub help: HashSet<String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

fn valid_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => v.parse::<f64>().map_err(|_| format!("bad value `{v}`")),
    }
}

/// Parses `{a="x",b="y"}` starting after the `{`; returns the labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = rest.get(..eq).ok_or("label name")?.trim();
        if !valid_label_name(name) {
            return Err(format!("bad label name `{name}`"));
        }
        rest = rest
            .get(eq + 1..)
            .and_then(|r| r.strip_prefix('"'))
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label `{name}` repeated"));
        }
        rest = rest.get(end + 1..).ok_or("label end")?.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        }
    }
}

/// The family a sample belongs to (histogram and summary series carry suffixes).
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base;
            }
        }
    }
    name
}

/// Parses Prometheus text format 0.0.4 strictly: TYPE at most once and before the family's
/// samples, a family's samples contiguous, no repeated series, histograms consistent.
pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    let mut done_families: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line}", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let mut parts = c.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !valid_metric_name(name) {
                        return Err(at("bad metric name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if e.types.insert(name.into(), kind.into()).is_some() {
                        return Err(at("TYPE repeated".into()));
                    }
                    if done_families.contains(name) || current.as_deref() == Some(name) {
                        return Err(at("TYPE after samples".into()));
                    }
                }
                (Some("HELP"), Some(name), _) if !e.help.insert(name.into()) => {
                    return Err(at("HELP repeated".into()));
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = line.get(..name_end).unwrap_or_default();
        if !valid_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let rest = line.get(name_end..).unwrap_or_default();
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(r) => parse_labels(r).map_err(at)?,
            None => (BTreeMap::new(), rest),
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing text".into()));
        }
        let fam = family_of(name, &e.types).to_string();
        if current.as_deref() != Some(fam.as_str()) {
            if done_families.contains(&fam) {
                return Err(at(format!("samples of {fam} are not contiguous")));
            }
            if let Some(prev) = current.replace(fam.clone()) {
                done_families.insert(prev);
            }
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("series repeated".into()));
        }
        if e.types.get(&fam).map(String::as_str) == Some("counter") && !name.ends_with("_total") {
            return Err(at("counter name without _total".into()));
        }
        e.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    for (fam, kind) in &e.types {
        if kind != "histogram" {
            continue;
        }
        let buckets: Vec<&Sample> = e
            .samples
            .iter()
            .filter(|s| s.name == format!("{fam}_bucket"))
            .collect();
        let mut last = 0.0;
        for b in &buckets {
            if b.value < last {
                return Err(format!("{fam}: buckets not cumulative"));
            }
            last = b.value;
        }
        let inf = buckets
            .iter()
            .find(|b| b.labels.get("le").map(String::as_str) == Some("+Inf"))
            .ok_or_else(|| format!("{fam}: no +Inf bucket"))?;
        if e.value(&format!("{fam}_count"), &[]) != Some(inf.value) {
            return Err(format!("{fam}: _count differs from the +Inf bucket"));
        }
    }
    Ok(e)
}

#[test]
fn parser_rejects_what_the_format_forbids() {
    assert!(parse_exposition("# TYPE a_total counter\na_total 1\n").is_ok());
    assert!(parse_exposition("a{x=\"1\"} 1\nb 2\na{x=\"2\"} 3\n").is_err());
    assert!(parse_exposition("# TYPE a gauge\n# TYPE a gauge\n").is_err());
    assert!(parse_exposition("a{x=\"1} 1\n").is_err());
    assert!(parse_exposition("a{1x=\"1\"} 1\n").is_err());
    assert!(parse_exposition("a one\n").is_err());
    assert!(parse_exposition("a 1\na 2\n").is_err());
    assert!(parse_exposition("a 1\n# TYPE a gauge\n").is_err());
    assert!(parse_exposition(
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n"
    )
    .is_err());
    assert!(parse_exposition("# TYPE c counter\nc 1\n").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_healthz_of_the_running_binary() -> TestResult {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/#", 0, None).await;
    let http = free_port();
    let cfg = write_config(
        dir.path(),
        broker.port,
        "",
        "[sources.sim]\nenabled = true\nrate = 500.0\nseed = 5\nlimit = 2000\n",
    )?;
    let text = std::fs::read_to_string(&cfg)?.replace(
        "[http]\nenabled = false",
        &format!("[http]\nenabled = true\nlisten = \"127.0.0.1:{http}\""),
    );
    std::fs::write(&cfg, text)?;
    let gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    let got = sub.wait_for(2000, Duration::from_secs(60)).await;
    assert_eq!(got, 2000, "log:\n{}", gw.log_text());

    // The counters settle once the last PUBACK is processed.
    let until = Instant::now() + Duration::from_secs(10);
    let expo = loop {
        let (code, body) = http_get(http, "/metrics")?;
        assert_eq!(code, 200);
        let e = parse_exposition(&body).map_err(|m| format!("{m}\n{body}"))?;
        let out: f64 = ["ble", "wifi", "pos"]
            .iter()
            .filter_map(|s| e.value("storegw_events_out_total", &[("stream", s)]))
            .sum();
        if out >= 2000.0 || Instant::now() > until {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for fam in [
        "storegw_events_in_total",
        "storegw_events_out_total",
        "storegw_spool_depth",
        "storegw_spool_bytes",
        "storegw_spool_oldest_age_seconds",
        "storegw_dropped_events_total",
        "storegw_mqtt_connected",
        "storegw_mqtt_reconnects_total",
        "storegw_publish_ack_seconds",
        "storegw_source_up",
        "storegw_source_restarts_total",
        "storegw_malformed_total",
        "storegw_healthy",
    ] {
        assert!(expo.types.contains_key(fam), "{fam} has no TYPE");
        assert!(expo.help.contains(fam), "{fam} has no HELP");
    }
    let sum = |n: &str| -> f64 {
        ["ble", "wifi", "pos"]
            .iter()
            .filter_map(|s| expo.value(n, &[("stream", s)]))
            .sum()
    };
    assert_eq!(sum("storegw_events_in_total"), 2000.0);
    assert_eq!(sum("storegw_events_out_total"), 2000.0);
    assert_eq!(expo.value("storegw_mqtt_connected", &[]), Some(1.0));
    assert!(expo.value("storegw_publish_ack_seconds_count", &[]) >= Some(1.0));
    assert_eq!(
        expo.value("storegw_source_up", &[("source", "sim")]),
        Some(0.0),
        "the simulator stops at its limit"
    );
    assert_eq!(expo.value("storegw_healthy", &[]), Some(1.0));

    let (code, body) = http_get(http, "/healthz")?;
    assert_eq!((code, body.trim()), (200, "ok"));
    Ok(())
}
