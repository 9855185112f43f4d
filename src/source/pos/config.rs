//! `[sources.pos]`: the three ways transactions arrive (HTTP push, export files, REST polling)
//! and how their data is read.

use crate::config::units::{ByteSize, Dur};
use serde::Deserialize;
use std::path::PathBuf;

/// The largest `http.body_limit`: a body is held whole until it is stored, so the limit is
/// memory each of `http.max_connections` may take (and a 32-bit build cannot size more).
pub const BODY_LIMIT_MAX: u64 = 64 * 1024 * 1024;

/// `[sources.pos]` in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PosConfig {
    /// Off by default: no POS input is taken (push, files, polling) until it is true.
    pub enabled: bool,
    /// Currency for sources that do not state one (UCI-style CSV).
    pub default_currency: String,
    /// Register for sources that do not name one.
    pub default_register: String,
    /// UTC offset of times written without one (POSLog `EndDateTime`, CSV dates).
    pub naive_time_offset: String,
    /// Country calling code (digits) for national phone numbers with a trunk `0`; empty drops them.
    pub phone_default_country: String,
    /// How long a (register, transaction id) pair is remembered to refuse duplicates.
    pub idempotency_window: Dur,
    /// `[sources.pos.http]`: the push endpoint on the loopback server.
    pub http: PosHttpConfig,
    /// `[[sources.pos.watch]]`: one entry per export directory; none by default.
    pub watch: Vec<WatchConfig>,
    /// `[[sources.pos.poll]]`: one entry per REST API; none by default.
    pub poll: Vec<PollConfig>,
}

impl Default for PosConfig {
    fn default() -> Self {
        PosConfig {
            enabled: false,
            default_currency: "EUR".into(),
            default_register: "default".into(),
            naive_time_offset: "+00:00".into(),
            phone_default_country: String::new(),
            idempotency_window: Dur::secs(30 * 86_400),
            http: PosHttpConfig::default(),
            watch: Vec::new(),
            poll: Vec::new(),
        }
    }
}

/// `[sources.pos.http]`: `POST /v1/pos/transactions` on the loopback server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PosHttpConfig {
    /// Serves `POST /v1/pos/transactions` (default true); needs `[http]` enabled too.
    pub enabled: bool,
    /// File holding the bearer token tills send; required when enabled.
    pub token_file: Option<PathBuf>,
    /// Largest accepted body (default 1 MiB, at least 1 KiB); a larger one is answered `413`.
    pub body_limit: ByteSize,
    /// The whole body must arrive within this time after the request head (`408` otherwise),
    /// so a slow client cannot hold a connection slot.
    pub body_timeout: Dur,
}

impl Default for PosHttpConfig {
    fn default() -> Self {
        PosHttpConfig {
            enabled: true,
            token_file: None,
            body_limit: ByteSize(1024 * 1024),
            body_timeout: Dur::secs(30),
        }
    }
}

/// One `[[sources.pos.watch]]`: a directory a till exports files into.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// The export directory (required); `done/` and `failed/` are created inside it. A relative
    /// path is relative to the configuration file.
    pub dir: PathBuf,
    /// `auto` (by extension), `poslog`, `csv`, `json`, `jsonl`, `square`, `shopify`.
    pub format: String,
    /// How often the directory is listed (default 5 s): a few `stat` calls, and it works on
    /// network shares where inotify does not.
    pub interval: Dur,
    /// A file must be unmodified this long before it is read (writers still appending).
    pub settle: Dur,
    /// How long an imported file is kept in `done/`; 0 (the default) deletes it as soon as
    /// its transactions are stored and fsynced.
    pub done_retention: Dur,
    /// How long a refused file is kept in `failed/` for the operator (mode 0600). A file
    /// refused for card authentication data is deleted at once whatever this says.
    pub failed_retention: Dur,
    /// `[sources.pos.watch.csv]`: the column mapping of this directory's CSV files.
    pub csv: CsvMapping,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            dir: PathBuf::new(),
            format: "auto".into(),
            interval: Dur::secs(5),
            settle: Dur::secs(5),
            done_retention: Dur::secs(0),
            failed_retention: Dur::secs(7 * 86_400),
            csv: CsvMapping::default(),
        }
    }
}

/// Column names of a line-per-row CSV export; defaults are the UCI Online Retail layout.
/// An empty name means the export has no such column.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvMapping {
    /// Field separator, one ASCII character (default `,`).
    pub delimiter: String,
    /// Column whose value groups rows into one transaction (default `InvoiceNo`); required.
    pub transaction_id: String,
    /// Item code column (default `StockCode`).
    pub sku: String,
    /// Item name column (default `Description`).
    pub description: String,
    /// Quantity column (default `Quantity`); an empty cell, or no column, counts 1.
    pub qty: String,
    /// Unit price column, a decimal amount (default `UnitPrice`).
    pub unit_price: String,
    /// Line amount column; when empty it is qty × unit price.
    pub amount: String,
    /// Time column (default `InvoiceDate`): `2010-12-22 10:29:00`, `12/1/2010 8:26` or
    /// RFC 3339; a transaction takes its first non-empty cell.
    pub time: String,
    /// Register column, read from a transaction's first row; empty (the default) uses
    /// `default_register`.
    pub register: String,
    /// Currency column (ISO 4217), read from a transaction's first row; empty (the default)
    /// uses `default_currency`.
    pub currency: String,
    /// Loyalty id column (default `CustomerID`); a transaction takes its first non-empty cell.
    pub loyalty_id: String,
    /// E-mail column, read from a transaction's first row; empty by default.
    pub email: String,
    /// Phone column, read from a transaction's first row; empty by default.
    pub phone: String,
    /// Tender column; empty by default. Each row with a value adds a tender of its line amount.
    pub tender: String,
    /// Transaction ids starting with this are cancellations (UCI: `C`); empty disables it.
    pub cancel_prefix: String,
}

impl Default for CsvMapping {
    fn default() -> Self {
        CsvMapping {
            delimiter: ",".into(),
            transaction_id: "InvoiceNo".into(),
            sku: "StockCode".into(),
            description: "Description".into(),
            qty: "Quantity".into(),
            unit_price: "UnitPrice".into(),
            amount: String::new(),
            time: "InvoiceDate".into(),
            register: String::new(),
            currency: String::new(),
            loyalty_id: "CustomerID".into(),
            email: String::new(),
            phone: String::new(),
            tender: String::new(),
            cancel_prefix: "C".into(),
        }
    }
}

/// One `[[sources.pos.poll]]`: a REST API polled with an updated-since cursor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    /// A short name; the cursor file is `pos-cursor-<name>.json` in the state directory.
    pub name: String,
    /// `square` (SearchOrders) or `shopify` (Orders API).
    pub api: String,
    /// Base URL, e.g. `https://connect.squareup.com` or `https://shop.myshopify.com/admin/api/2024-01`.
    pub url: String,
    /// File holding the API token (Square bearer, Shopify access token); required, re-read
    /// every poll.
    pub token_file: Option<PathBuf>,
    /// Wait after one poll before the next (default 60 s).
    pub interval: Dur,
    /// Square location ids to search (required for Square).
    pub location_ids: Vec<String>,
    /// Where the cursor starts on first run (RFC 3339); empty = now.
    pub start: String,
    /// Longest wait between retries after 429/5xx when the server gives no Retry-After.
    pub max_backoff: Dur,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            name: String::new(),
            api: String::new(),
            url: String::new(),
            token_file: None,
            interval: Dur::secs(60),
            location_ids: Vec::new(),
            start: String::new(),
            max_backoff: Dur::secs(300),
        }
    }
}

/// Longest a raw export file may be kept in `done/` or `failed/`.
pub const MAX_RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Input formats every path understands.
pub const FORMATS: [&str; 6] = ["poslog", "csv", "json", "jsonl", "square", "shopify"];

impl PosConfig {
    /// Semantic checks: (dotted key path, message) pairs.
    pub fn validate(&self, issues: &mut Vec<(String, String)>) {
        let mut issues_file: Vec<(String, String)> = Vec::new();
        self.validate_keys(issues, &mut issues_file);
        issues.append(&mut issues_file);
    }

    fn validate_keys(
        &self,
        issues: &mut Vec<(String, String)>,
        issues_file: &mut Vec<(String, String)>,
    ) {
        let mut bad = |k: &str, m: String| issues.push((format!("sources.pos.{k}"), m));
        if super::money::exponent(&self.default_currency).is_none() {
            bad(
                "default_currency",
                format!("`{}` is not an ISO 4217 code", self.default_currency),
            );
        }
        if let Err(e) = super::timefmt::parse_offset(&self.naive_time_offset) {
            bad("naive_time_offset", e);
        }
        if !self
            .phone_default_country
            .bytes()
            .all(|b| b.is_ascii_digit())
            || self.phone_default_country.len() > 3
            || self.phone_default_country.starts_with('0')
        {
            bad(
                "phone_default_country",
                "must be a country calling code such as 49, or empty".into(),
            );
        }
        if self.idempotency_window.0.is_zero() {
            bad("idempotency_window", "must be greater than 0".into());
        }
        if !self.enabled {
            return;
        }
        if self.http.enabled && self.http.token_file.is_none() {
            bad(
                "http.token_file",
                "required when sources.pos.http.enabled (the bearer token tills send)".into(),
            );
        }
        let mut check_file = |k: &str, p: &Option<PathBuf>| {
            if let Some(path) = p {
                if let Err(e) = std::fs::metadata(path) {
                    issues_file.push((
                        format!("sources.pos.{k}"),
                        format!("cannot read `{}`: {e}", path.display()),
                    ));
                }
            }
        };
        if self.http.enabled {
            check_file("http.token_file", &self.http.token_file);
        }
        for (i, p) in self.poll.iter().enumerate() {
            check_file(&format!("poll.{i}.token_file"), &p.token_file);
        }
        if self.http.body_timeout.0.is_zero() {
            bad("http.body_timeout", "must be greater than 0".into());
        }
        if self.http.body_limit.0 < 1024 {
            bad("http.body_limit", "must be at least 1KiB".into());
        }
        if self.http.body_limit.0 > BODY_LIMIT_MAX {
            bad("http.body_limit", "must be at most 64MiB".into());
        }
        for (i, w) in self.watch.iter().enumerate() {
            if w.dir.as_os_str().is_empty() {
                bad(&format!("watch.{i}.dir"), "must be set".into());
            }
            if w.format != "auto" && !FORMATS.contains(&w.format.as_str()) {
                bad(
                    &format!("watch.{i}.format"),
                    format!("`{}`: expected auto, {}", w.format, FORMATS.join(", ")),
                );
            }
            if w.interval.0.is_zero() {
                bad(
                    &format!("watch.{i}.interval"),
                    "must be greater than 0".into(),
                );
            }
            for (k, d) in [
                ("done_retention", w.done_retention.0),
                ("failed_retention", w.failed_retention.0),
            ] {
                if d > MAX_RETENTION {
                    bad(
                        &format!("watch.{i}.{k}"),
                        "must be at most 30d (raw exports hold personal data)".into(),
                    );
                }
            }
            if w.csv.delimiter.chars().count() != 1 || !w.csv.delimiter.is_ascii() {
                bad(
                    &format!("watch.{i}.csv.delimiter"),
                    "must be one ASCII character".into(),
                );
            }
            if w.csv.transaction_id.is_empty() || (w.csv.qty.is_empty() && w.csv.amount.is_empty())
            {
                bad(
                    &format!("watch.{i}.csv"),
                    "transaction_id and qty (or amount) columns are required".into(),
                );
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.poll.iter().enumerate() {
            if p.name.is_empty()
                || !p
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                || !names.insert(p.name.clone())
            {
                bad(
                    &format!("poll.{i}.name"),
                    "must be a unique name of [A-Za-z0-9_-]".into(),
                );
            }
            if p.api != "square" && p.api != "shopify" {
                bad(
                    &format!("poll.{i}.api"),
                    format!("`{}`: expected square or shopify", p.api),
                );
            }
            if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                bad(&format!("poll.{i}.url"), "must be an http(s) URL".into());
            }
            if p.token_file.is_none() {
                bad(&format!("poll.{i}.token_file"), "required".into());
            }
            if p.api == "square" && p.location_ids.is_empty() {
                bad(
                    &format!("poll.{i}.location_ids"),
                    "Square SearchOrders needs at least one location id".into(),
                );
            }
            if p.interval.0.is_zero() {
                bad(
                    &format!("poll.{i}.interval"),
                    "must be greater than 0".into(),
                );
            }
            if !p.start.is_empty() && super::timefmt::parse(&p.start, 0).is_err() {
                bad(
                    &format!("poll.{i}.start"),
                    "must be an RFC 3339 time".into(),
                );
            }
        }
    }

    /// Makes relative paths relative to the config file's directory.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        if let Some(t) = &mut self.http.token_file {
            fix(t);
        }
        for w in &mut self.watch {
            fix(&mut w.dir);
        }
        for p in &mut self.poll {
            if let Some(t) = &mut p.token_file {
                fix(t);
            }
        }
    }

    /// Naive-time offset in seconds (validated).
    pub fn offset_s(&self) -> i32 {
        super::timefmt::parse_offset(&self.naive_time_offset).unwrap_or(0)
    }
}

impl crate::config::section::Section for PosConfig {
    fn check(&self, issues: &mut Vec<(String, String)>) {
        self.validate(issues);
    }

    fn resolve(&mut self, base: &std::path::Path) {
        self.resolve_paths(base);
    }
}

impl PosConfig {
    /// POS's rows of the reload table: the ingest store (currency, register, time offset,
    /// idempotency window, join key country) and the HTTP routes are built once; watchers and
    /// pollers restart on reload.
    pub const RELOAD: &'static [crate::config::section::Row<PosConfig>] = &[
        crate::config::section::restart("", |e, r| {
            let watch = std::mem::take(&mut e.watch);
            let poll = std::mem::take(&mut e.poll);
            *e = r.clone();
            e.watch = watch;
            e.poll = poll;
        }),
        crate::config::section::live("watch"),
        crate::config::section::live("poll"),
    ];
}
