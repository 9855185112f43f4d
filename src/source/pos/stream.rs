//! Streaming readers for large CSV and JSON-lines exports: one transaction (CSV: the adjacent
//! rows sharing a transaction id) or one line at a time goes through the same parser as a
//! small file, so memory stays bounded by the largest transaction, not by the file.

use super::transaction::{Reject, Tx};
use super::{csv, json, ParseOpts};
use std::io::{BufRead, Read};
use std::path::Path;

/// Largest single transaction (CSV rows of one id) or JSON line read.
pub const MAX_RECORD: usize = 8 * 1024 * 1024;

/// Why a stream stopped.
#[derive(Debug)]
pub enum Error {
    /// The file could not be read (retry later).
    Io(std::io::Error),
    /// A bad record: the file is refused.
    Bad(Reject),
}

impl From<Reject> for Error {
    fn from(r: Reject) -> Error {
        Error::Bad(r)
    }
}

/// Shifts the `line N` a parser reported for a slice of the file to the file's own line.
fn shift(at: &str, delta: usize) -> String {
    let Some(rest) = at.strip_prefix("line ") else {
        return at.to_string();
    };
    let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
    match n.parse::<usize>() {
        Ok(k) => format!("line {}{}", k + delta, rest.get(n.len()..).unwrap_or("")),
        Err(_) => at.to_string(),
    }
}

fn shifted(mut r: Reject, delta: usize) -> Reject {
    r.at = shift(&r.at, delta);
    r
}

/// Reads one physical line (with its `\n`), at most [`MAX_RECORD`] bytes.
fn read_line(
    rd: &mut impl BufRead,
    buf: &mut Vec<u8>,
    line: usize,
) -> Result<Option<String>, Error> {
    buf.clear();
    let n = rd
        .by_ref()
        .take(MAX_RECORD as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(Error::Io)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_RECORD {
        return Err(Reject::new(
            format!("line {line}"),
            format!("line longer than {} MiB", MAX_RECORD >> 20),
        )
        .into());
    }
    String::from_utf8(std::mem::take(buf))
        .map(Some)
        .map_err(|_| Reject::new(format!("line {line}"), "not UTF-8 (export as UTF-8)").into())
}

/// Calls `f` with every transaction of the file, in order; the first error stops.
pub fn each(
    path: &Path,
    format: &str,
    o: &ParseOpts,
    f: impl FnMut(Tx) -> Result<(), Reject>,
) -> Result<(), Error> {
    let file = std::fs::File::open(path).map_err(Error::Io)?;
    let rd = std::io::BufReader::with_capacity(256 * 1024, file);
    match format {
        "csv" => each_csv(rd, o, f),
        _ => each_jsonl(rd, o, f),
    }
}

fn each_jsonl(
    mut rd: impl BufRead,
    o: &ParseOpts,
    mut f: impl FnMut(Tx) -> Result<(), Reject>,
) -> Result<(), Error> {
    let mut buf = Vec::new();
    let mut line = 0usize;
    while let Some(text) = read_line(&mut rd, &mut buf, line + 1)? {
        line += 1;
        if text.trim().is_empty() {
            continue;
        }
        for item in json::parse_lines(&text, o) {
            f(item.map_err(|r| shifted(r, line - 1))?)
                .map_err(|r| Reject::new(format!("line {line}: {}", r.at), r.reason))?;
        }
    }
    Ok(())
}

/// Physical lines up to the end of one CSV record (quotes may span lines).
fn csv_record(
    rd: &mut impl BufRead,
    buf: &mut Vec<u8>,
    line: &mut usize,
) -> Result<Option<(usize, String)>, Error> {
    let start = *line + 1;
    let mut rec = String::new();
    let mut quotes = 0usize;
    loop {
        let Some(l) = read_line(rd, buf, *line + 1)? else {
            return Ok((!rec.is_empty()).then_some((start, rec)));
        };
        *line += 1;
        quotes += l.matches('"').count();
        rec.push_str(&l);
        if rec.len() > MAX_RECORD {
            return Err(Reject::new(
                format!("line {start}"),
                "record longer than 8 MiB (unterminated quote?)",
            )
            .into());
        }
        if quotes % 2 == 0 {
            return Ok(Some((start, rec)));
        }
    }
}

fn each_csv(
    mut rd: impl BufRead,
    o: &ParseOpts,
    mut f: impl FnMut(Tx) -> Result<(), Reject>,
) -> Result<(), Error> {
    let m = &o.csv;
    let delim = m.delimiter.chars().next().unwrap_or(',');
    let mut buf = Vec::new();
    let mut line = 0usize;
    let Some((_, header)) = csv_record(&mut rd, &mut buf, &mut line)? else {
        return Err(Reject::new("line 1", "empty file: no header row").into());
    };
    // The header alone checks the mapping and refuses card-data columns.
    csv::parse(&header, m, o)?;
    let names: Vec<String> = csv::records(&header, delim)?
        .into_iter()
        .next()
        .map(|r| r.fields.into_iter().map(|h| h.trim().to_string()).collect())
        .unwrap_or_default();
    let id_col = names
        .iter()
        .position(|n| *n == m.transaction_id)
        .ok_or_else(|| Reject::new("line 1", "no transaction id column"))?;
    let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut group = String::new();
    let mut group_id: Option<String> = None;
    let mut group_line = 0usize;
    let flush = |text: &str, start: usize, f: &mut dyn FnMut(Tx) -> Result<(), Reject>| {
        let doc = format!("{header}{text}");
        for item in csv::parse(&doc, m, o)? {
            let tx = item.map_err(|r| shifted(r, start - 2))?;
            f(tx).map_err(|r| Reject {
                at: format!("line {start}: {}", r.at),
                ..r
            })?;
        }
        Ok::<(), Reject>(())
    };
    loop {
        let next = csv_record(&mut rd, &mut buf, &mut line)?;
        let id = next.as_ref().and_then(|(_, rec)| {
            csv::records(rec, delim)
                .ok()
                .and_then(|r| r.into_iter().next())
                .and_then(|r| r.fields.get(id_col).map(|s| s.trim().to_string()))
        });
        let same = next.is_some() && id.is_some() && id == group_id;
        if !same && group_id.is_some() {
            flush(&group, group_line, &mut f)?;
            group.clear();
        }
        let Some((start, rec)) = next else {
            return Ok(());
        };
        if rec.trim().is_empty() {
            continue;
        }
        if !same {
            let idv = id.clone().unwrap_or_default();
            let h = {
                use std::hash::{Hash, Hasher};
                let mut s = std::collections::hash_map::DefaultHasher::new();
                idv.hash(&mut s);
                s.finish()
            };
            if !idv.is_empty() && !seen.insert(h) {
                return Err(Reject::new(
                    format!("line {start}: column `{}`", m.transaction_id),
                    "rows of this transaction are not adjacent (a large file is read as a stream: keep the rows of a transaction together)",
                )
                .into());
            }
            group_id = Some(idv);
            group_line = start;
        }
        group.push_str(&rec);
        if !rec.ends_with('\n') {
            group.push('\n');
        }
        if group.len() > MAX_RECORD {
            return Err(Reject::new(
                format!("line {group_line}"),
                "one transaction larger than 8 MiB",
            )
            .into());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shifts_line_numbers() {
        assert_eq!(
            super::shift("line 2: column `X`", 10),
            "line 12: column `X`"
        );
        assert_eq!(super::shift("$.a", 10), "$.a");
    }
}
