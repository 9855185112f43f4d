//! The POS feed: transactions pushed over HTTP, dropped as export files, or polled from a
//! REST API, all parsed into one canonical transaction, scrubbed of card data, customer
//! identifiers pseudonymized, and spooled durably before anyone is told "accepted".
//!
//! One concept per module: `transaction` (the canonical transaction), `money`, `timefmt`,
//! `normalize`; parsers `poslog`, `csv`, `json`, `square`, `shopify`; the durable store with its
//! idempotency index `ingest`; and the three inputs `http_push`, `files`, `poll`. Card numbers,
//! personal data in free text and customer identifiers are handled by `crate::privacy` (`card`,
//! `pii`, `customer`), which the parsers and `normalize` call.

mod body_json;
pub mod config;
pub mod csv;
pub mod files;
pub mod http_push;
pub mod ingest;
pub mod json;
mod json_fast;
mod json_wire;
mod jsonutil;
pub mod money;
pub mod normalize;
pub mod poll;
pub mod poslog;
pub mod seen;
pub mod shopify;
pub mod square;
pub mod stream;
pub mod timefmt;
pub mod transaction;

pub use config::PosConfig;

use crate::source::{SourceContext, Started};
use crate::telemetry::health::SourceState;
use std::collections::BTreeMap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use transaction::{Parsed, Reject};

/// What every parser needs from the configuration.
#[derive(Debug, Clone)]
pub struct ParseOpts {
    /// `sources.pos.default_currency`: the currency of inputs that state none.
    pub default_currency: String,
    /// `sources.pos.default_register`: the register of inputs that name none.
    pub default_register: String,
    /// `naive_time_offset` in seconds east of UTC: for times without an offset, and for the
    /// business day of the idempotency key.
    pub offset_s: i32,
    /// CSV column mapping: the first watch entry's or the default; files use their directory's.
    pub csv: config::CsvMapping,
}

impl ParseOpts {
    /// Options from `[sources.pos]` (CSV mapping from the first watch entry, or the default).
    pub fn from_config(c: &PosConfig) -> ParseOpts {
        ParseOpts {
            default_currency: c.default_currency.clone(),
            default_register: c.default_register.clone(),
            offset_s: c.offset_s(),
            csv: c.watch.first().map(|w| w.csv.clone()).unwrap_or_default(),
        }
    }
}

/// A parsed input: transactions (each parsed or rejected) and records skipped on purpose
/// (POSLog control transactions, Square calculations).
pub struct ParseOut {
    /// Each transaction, parsed or refused, in input order.
    pub items: Parsed,
    /// Records left out on purpose (POSLog control transactions, Square calculations); answered
    /// as `skipped`.
    pub skipped: usize,
}

/// The format of a file: `--format`/config when given, else by extension and, for `.json`,
/// by content (Square money objects, Shopify orders, or the canonical shape).
pub fn detect_format(path: &std::path::Path, text: &str) -> String {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "xml" | "poslog" => "poslog".into(),
        "csv" | "txt" => "csv".into(),
        "jsonl" | "ndjson" => "jsonl".into(),
        _ => sniff_json(text).into(),
    }
}

fn sniff_json(text: &str) -> &'static str {
    let head: String = text.chars().take(64 * 1024).collect();
    if text.trim_start().starts_with('<') {
        "poslog"
    } else if head.contains("\"total_price\"") || head.contains("\"source_name\"") {
        "shopify"
    } else if head.contains("_money\"") {
        "square"
    } else {
        "json"
    }
}

/// Parses `text` as `format` (one of [`config::FORMATS`]).
pub fn parse_input(text: &str, format: &str, o: &ParseOpts) -> Result<ParseOut, Reject> {
    let plain = |items| ParseOut { items, skipped: 0 };
    match format {
        "poslog" => poslog::parse(text, o).map(|p| ParseOut {
            items: p.items,
            skipped: p.skipped,
        }),
        "csv" => csv::parse(text, &o.csv, o).map(plain),
        "json" => {
            // A JSON-lines file given as `json` still works.
            match json::parse_document(text, o) {
                Ok(items) => Ok(plain(items)),
                Err(e) if text.lines().filter(|l| !l.trim().is_empty()).count() > 1 => {
                    let items = json::parse_lines(text, o);
                    if items.iter().all(Result::is_err) {
                        Err(e)
                    } else {
                        Ok(plain(items))
                    }
                }
                Err(e) => Err(e),
            }
        }
        "jsonl" => Ok(plain(json::parse_lines(text, o))),
        "square" => square::parse(text, o).map(|s| ParseOut {
            items: s.items,
            skipped: s.skipped,
        }),
        "shopify" => shopify::parse(text, o).map(plain),
        other => Err(Reject::new(
            "format",
            format!(
                "unknown format `{other}` (expected {})",
                config::FORMATS.join(", ")
            ),
        )),
    }
}

/// Starts the POS source when enabled: one ingest store shared by the watched directories, the
/// pollers and the HTTP routes it returns.
pub fn start(ctx: &SourceContext) -> Started {
    let c = &ctx.cfg.sources.pos;
    if !c.enabled {
        return Started::default();
    }
    let health = ctx.telemetry.health();
    let ingest = match ingest::Ingest::new(ctx.pos_sink.clone(), &ctx.cfg, ctx.telemetry.clone()) {
        Ok(i) => std::sync::Arc::new(i),
        Err(e) => {
            tracing::error!(error = %e, "POS source cannot start");
            health.set_source("pos", SourceState::Failed, Some(e));
            return Started::default();
        }
    };
    health.set_source("pos", SourceState::Running, None);
    let routes = if c.http.enabled {
        http_push::routes(ingest.clone(), &c.http)
    } else {
        axum::Router::new()
    };
    let mut tasks = vec![tokio::spawn(
        ingest.clone().run_expiry(ctx.shutdown.clone()),
    )];
    tasks.push(tokio::spawn(run_inputs(
        ingest,
        ctx.cfg.gateway.state_dir.clone(),
        ctx.config.clone(),
        ctx.shutdown.clone(),
    )));
    Started { tasks, routes }
}

/// Runs the watched directories and pollers of the live configuration; when a reload changes
/// `sources.pos.watch` or `sources.pos.poll`, stops them (a file half stored is read again and
/// recognised as duplicate, docs/pos.md) and starts the new set.
async fn run_inputs(
    ingest: std::sync::Arc<ingest::Ingest>,
    state_dir: std::path::PathBuf,
    mut config: watch::Receiver<std::sync::Arc<crate::config::Config>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (watches, polls) = {
            let c = config.borrow_and_update();
            (c.sources.pos.watch.clone(), c.sources.pos.poll.clone())
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        for w in &watches {
            tasks.push(tokio::spawn(files::run(
                w.clone(),
                ingest.clone(),
                stop_rx.clone(),
            )));
        }
        for p in &polls {
            tasks.push(tokio::spawn(poll::run(
                p.clone(),
                ingest.clone(),
                state_dir.clone(),
                stop_rx.clone(),
            )));
        }
        let mut config_open = true;
        let reload = loop {
            tokio::select! {
                changed = config.changed(), if config_open => {
                    if changed.is_err() {
                        config_open = false;
                        continue;
                    }
                    let c = config.borrow().clone();
                    if c.sources.pos.watch != watches || c.sources.pos.poll != polls {
                        break true;
                    }
                }
                _ = shutdown.wait_for(|s| *s) => break false,
            }
        };
        let _ = stop_tx.send(true);
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(10), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if !reload {
            return;
        }
        tracing::info!(
            "POS: watched directories and pollers restarting with the reloaded configuration"
        );
    }
}

/// `storegw replay --pos FILE`: the same parsing, normalization and scrubbing as the live
/// inputs; prints the events and returns the summary.
pub fn replay(
    path: &std::path::Path,
    r: &mut crate::source::replay::Replay,
) -> Result<serde_json::Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text =
        String::from_utf8(bytes).map_err(|e| format!("{}: not UTF-8 ({e})", path.display()))?;
    let pc = r.cfg.sources.pos.clone();
    let mut opts = ParseOpts::from_config(&pc);
    let format = match &r.format {
        Some(f) => f.clone(),
        None => detect_format(path, &text),
    };
    if format == "csv" {
        if let Some(w) = pc.watch.iter().find(|w| w.format == "csv") {
            opts.csv = w.csv.clone();
        }
    }
    // A replay is no pipeline: what it drops is counted in the summary's rejects, and its
    // metrics go nowhere.
    let key = crate::privacy::customer::CustomerKeys::from_config(
        &r.cfg.privacy,
        &r.cfg.gateway.store_id,
        &pc.phone_default_country,
        &crate::telemetry::Telemetry::new(),
    )?;
    let parsed =
        parse_input(&text, &format, &opts).map_err(|e| format!("{}: {e}", path.display()))?;
    let now = crate::event::now_ms();
    let mut transactions = 0u64;
    let mut lines = 0u64;
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let mut rejected = Vec::new();
    let mut flagged: BTreeMap<String, u64> = BTreeMap::new();
    for item in parsed.items {
        match item.and_then(|tx| normalize::normalize_at(tx, &key, now, opts.offset_s)) {
            Ok(n) => {
                transactions += 1;
                lines += n.body_lines as u64;
                let t = totals.entry(n.currency.clone()).or_default();
                *t = t.saturating_add(n.total_minor);
                if let Some(f) = n.event.body().get("flags").and_then(|f| f.as_array()) {
                    for x in f.iter().filter_map(|x| x.as_str()) {
                        *flagged.entry(x.to_string()).or_default() += 1;
                    }
                }
                r.emit(n.event);
            }
            Err(e) => rejected.push(e),
        }
    }
    Ok(serde_json::json!({
        "summary": "pos",
        "file": path.display().to_string(),
        "format": format,
        "transactions": transactions,
        "lines": lines,
        "skipped": parsed.skipped,
        "rejected": rejected,
        "flags": flagged,
        "total_minor": totals,
    }))
}

feed!(
    /// POS transactions as a feed.
    Pos,
    "pos",
    start = start,
    replay = replay
);
