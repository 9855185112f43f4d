//! REST polling of the Square Orders (SearchOrders) and Shopify Orders APIs with an
//! updated-since cursor. The cursor file in the state directory moves forward only after the
//! page's transactions were durably spooled, so a crash re-reads (and deduplicates) rather
//! than skips. 429 and 5xx back off, honouring Retry-After.

use super::config::PollConfig;
use super::ingest::{Ingest, StoreError};
use super::transaction::Tx;
use super::ParseOpts;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Square API version sent with every request.
const SQUARE_VERSION: &str = "2024-01-18";

/// The most one API response may hold (a page of orders is well below 1 MiB): a server that
/// answers without end, or declares gigabytes, gets an error, not the gateway's memory.
const MAX_RESPONSE: usize = 32 * 1024 * 1024;

/// Reads a response body of at most `max` bytes.
async fn read_capped(mut r: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let too_large = || format!("response: larger than {} MiB", max >> 20);
    if r.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| format!("response: {e}"))? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Where a poller's cursor lives.
pub fn cursor_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!("pos-cursor-{name}.json"))
}

fn load_cursor(path: &Path) -> Option<String> {
    let t = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&t).ok()?;
    v.get("updated_since")?.as_str().map(str::to_string)
}

fn save_cursor(path: &Path, c: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::json!({ "updated_since": c }).to_string();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Runs one poller until shutdown.
pub async fn run(
    p: PollConfig,
    ingest: Arc<Ingest>,
    state_dir: PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "POS poller cannot build an HTTP client");
            return;
        }
    };
    let cpath = cursor_path(&state_dir, &p.name);
    let mut poller = Poller {
        p: p.clone(),
        client,
        ingest,
        cursor_path: cpath.clone(),
        cursor: load_cursor(&cpath).unwrap_or_else(|| {
            if p.start.is_empty() {
                crate::event::rfc3339_ms(crate::event::now_ms())
            } else {
                p.start.clone()
            }
        }),
    };
    tracing::info!(name = %p.name, api = %p.api, cursor = %poller.cursor, "POS poller started");
    loop {
        match poller.poll_once(&mut stop).await {
            Ok(n) if n > 0 => {
                tracing::info!(name = %p.name, accepted = n, "POS poll stored transactions")
            }
            Ok(_) => {}
            Err(e) => {
                poller.ingest.telemetry.metrics().count(
                    crate::telemetry::metrics::Metric::PosPollErrors,
                    "",
                    1,
                );
                tracing::warn!(name = %p.name, error = %e, "POS poll failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(p.interval.0) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One configured API and its cursor.
pub struct Poller {
    /// The `[[sources.pos.poll]]` entry this poller runs.
    pub p: PollConfig,
    /// The HTTP client of every request of this poller (60 s timeout each).
    pub client: reqwest::Client,
    /// Where the pages' transactions are stored (changed orders count as duplicates).
    pub ingest: Arc<Ingest>,
    /// Where the cursor is saved: `pos-cursor-<name>.json` in the state directory.
    pub cursor_path: PathBuf,
    /// The latest `updated_at` seen (RFC 3339), the next poll's lower bound; saved only once
    /// the pages are on disk. Starts from the file, else `start`, else now.
    pub cursor: String,
}

impl Poller {
    /// Fetches every page updated since the cursor; returns the number of new transactions.
    pub async fn poll_once(
        &mut self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<usize, String> {
        let token = match &self.p.token_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| format!("token_file {}: {e}", f.display()))?
                .trim()
                .to_string(),
            None => return Err("no token_file".into()),
        };
        let mut page: Option<String> = None;
        let mut accepted = 0;
        let mut max_updated = self.cursor.clone();
        loop {
            let (body, next) = self.fetch(&token, page.as_deref(), stop).await?;
            let (txs, updated) = self.parse(&body);
            for u in updated {
                if later(&u, &max_updated) {
                    max_updated = u;
                }
            }
            let normalized = self.ingest.normalize_all(txs).map_err(|r| r.to_string());
            let normalized = match normalized {
                Ok(n) => n,
                Err(e) => return Err(format!("normalization: {e}")),
            };
            match self.ingest.store_updates(normalized).await {
                Ok(s) => accepted += s.accepted,
                Err(StoreError::Full(e)) | Err(StoreError::Storage(e)) => return Err(e),
                Err(StoreError::Invalid(r)) | Err(StoreError::Conflict(r)) => {
                    return Err(r.to_string())
                }
            }
            match next {
                Some(n) => page = Some(n),
                None => break,
            }
        }
        if max_updated != self.cursor {
            save_cursor(&self.cursor_path, &max_updated)
                .map_err(|e| format!("cursor {}: {e}", self.cursor_path.display()))?;
            self.cursor = max_updated;
        }
        Ok(accepted)
    }

    /// Transactions of a page (rejected ones are logged and counted, an API cannot be told
    /// "400") and the `updated_at` of every order.
    fn parse(&self, body: &Value) -> (Vec<Tx>, Vec<String>) {
        let opts: &ParseOpts = &self.ingest.opts;
        let items = if self.p.api == "square" {
            super::square::parse_value(body, opts).items
        } else {
            super::shopify::parse_value(body, opts).unwrap_or_default()
        };
        let list = body
            .get("orders")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let updated = list
            .iter()
            .filter_map(|o| {
                o.get("updated_at")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        let mut txs = Vec::new();
        for i in items {
            match i {
                Ok(t) => txs.push(t),
                Err(r) => {
                    self.ingest.telemetry.metrics().count(
                        crate::telemetry::metrics::Metric::PosRejected,
                        "input=\"poll\"",
                        1,
                    );
                    tracing::warn!(name = %self.p.name, at = %r.at, reason = %r.reason, "POS poll record rejected");
                }
            }
        }
        (txs, updated)
    }

    async fn fetch(
        &self,
        token: &str,
        page: Option<&str>,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(Value, Option<String>), String> {
        let mut backoff = Duration::from_secs(1);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let req = self.request(token, page);
            let resp = req.send().await.map_err(|e| format!("request: {e}"));
            let wait = match resp {
                Ok(r) if r.status().is_success() => {
                    let next = if self.p.api == "shopify" {
                        r.headers()
                            .get("link")
                            .and_then(|v| v.to_str().ok())
                            .and_then(next_link)
                    } else {
                        None
                    };
                    let body = read_capped(r, MAX_RESPONSE).await?;
                    let v: Value =
                        serde_json::from_slice(&body).map_err(|e| format!("response: {e}"))?;
                    let next = if self.p.api == "square" {
                        v.get("cursor")
                            .and_then(Value::as_str)
                            .filter(|c| !c.is_empty())
                            .map(str::to_string)
                    } else {
                        next
                    };
                    return Ok((v, next));
                }
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                    let ra = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(retry_after);
                    tracing::warn!(name = %self.p.name, status = r.status().as_u16(), retry_after = ?ra, "POS API asks to back off");
                    ra.unwrap_or_else(|| jitter(backoff))
                }
                Ok(r) => return Err(format!("HTTP {}", r.status())),
                Err(e) => {
                    tracing::warn!(name = %self.p.name, error = %e, "POS API unreachable");
                    jitter(backoff)
                }
            };
            if attempts >= 8 {
                return Err("giving up after 8 attempts".into());
            }
            backoff = (backoff * 2).min(self.p.max_backoff.0);
            let wait = wait.min(self.p.max_backoff.0.max(Duration::from_secs(1)));
            // Our own backoff is jittered; the server's Retry-After is honoured as given.
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return Err("shutting down".into()),
            }
        }
    }

    fn request(&self, token: &str, page: Option<&str>) -> reqwest::RequestBuilder {
        let base = self.p.url.trim_end_matches('/');
        if self.p.api == "square" {
            let mut body = serde_json::json!({
                "location_ids": self.p.location_ids,
                "limit": 100,
                "query": {
                    "filter": {
                        "date_time_filter": {"updated_at": {"start_at": self.cursor}},
                        "state_filter": {"states": ["COMPLETED", "CANCELED"]}
                    },
                    "sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"}
                }
            });
            if let (Some(c), Some(m)) = (page, body.as_object_mut()) {
                m.insert("cursor".into(), c.into());
            }
            self.client
                .post(format!("{base}/v2/orders/search"))
                .bearer_auth(token)
                .header("Square-Version", SQUARE_VERSION)
                .json(&body)
        } else {
            let url = match page {
                Some(next) => next.to_string(),
                None => format!(
                    "{base}/orders.json?status=any&limit=250&updated_at_min={}",
                    urlencode(&self.cursor)
                ),
            };
            self.client.get(url).header("X-Shopify-Access-Token", token)
        }
    }
}

/// A random wait between half and all of `d`, so many gateways do not retry in step.
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let fmt = time::format_description::well_known::Rfc2822;
    let t = time::OffsetDateTime::parse(v.replace("GMT", "+0000").as_str(), &fmt).ok()?;
    let now = time::OffsetDateTime::now_utc();
    let d = t - now;
    Some(Duration::from_secs(d.whole_seconds().max(0) as u64))
}

/// The `rel="next"` URL of a Link header (Shopify cursor pagination).
pub fn next_link(v: &str) -> Option<String> {
    v.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// Whether RFC 3339 time `a` is after `b` (by instant; text compare as a fallback).
fn later(a: &str, b: &str) -> bool {
    match (super::timefmt::parse(a, 0), super::timefmt::parse(b, 0)) {
        (Ok(x), Ok(y)) => x > y,
        _ => a > b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_response_over_the_cap_is_an_error_not_memory() {
        let response = |n: usize| reqwest::Response::from(hyper::Response::new(vec![b' '; n]));
        assert_eq!(
            read_capped(response(100), 100).await.map(|b| b.len()),
            Ok(100)
        );
        let big = read_capped(response(101), 100).await;
        assert!(big.is_err_and(|e| e.contains("larger than")));
    }

    #[test]
    fn headers() {
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
        assert_eq!(
            next_link("<https://x/orders.json?page_info=abc>; rel=\"next\", <https://x/p>; rel=\"previous\"").as_deref(),
            Some("https://x/orders.json?page_info=abc")
        );
        assert!(!later("2020-01-02T00:00:00Z", "2020-01-01T23:00:00-05:00"));
        assert!(later("2020-01-02T05:00:00Z", "2020-01-01T23:00:00-05:00"));
    }
}
