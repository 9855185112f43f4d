//! Small helpers for reading JSON inputs with the path of every bad field in the error, and
//! the sensitive-data sweep every JSON-based format goes through first.

use super::money;
use super::transaction::Reject;
use crate::privacy::card;
use serde_json::Value;

/// A JSON value and its path from the document root (`$[0].lines[2]`).
#[derive(Clone, Copy)]
pub struct At<'a> {
    pub v: &'a Value,
    pub path: &'a str,
}

impl<'a> At<'a> {
    /// The root of a document.
    pub fn root(v: &'a Value, path: &'a str) -> At<'a> {
        At { v, path }
    }

    /// The path of a child key.
    pub fn key_path(&self, k: &str) -> String {
        format!("{}.{k}", self.path)
    }

    /// A child value, if present and not null.
    pub fn get(&self, k: &str) -> Option<&'a Value> {
        self.v.get(k).filter(|x| !x.is_null())
    }

    /// An optional string (numbers are accepted as their text, ids often are numbers).
    pub fn str(&self, k: &str) -> Result<Option<String>, Reject> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(Reject::new(
                self.key_path(k),
                format!("expected a string, found {}", money::kind(other)),
            )),
        }
    }

    /// A required string.
    pub fn req_str(&self, k: &str) -> Result<String, Reject> {
        self.str(k)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| Reject::new(self.key_path(k), "missing"))
    }

    /// Money given as `<k>_minor` (integer minor units) or `<k>` (decimal in major units).
    pub fn money(&self, k: &str, exp: u32) -> Result<Option<i64>, Reject> {
        let minor = self.v.as_object().and_then(|m| {
            m.iter()
                .find(|(name, v)| !v.is_null() && name.strip_prefix(k) == Some("_minor"))
        });
        if let Some((name, v)) = minor {
            return money::from_json_minor(v)
                .map(Some)
                .map_err(|e| Reject::new(self.key_path(name), e));
        }
        match self.get(k) {
            None => Ok(None),
            Some(v) => money::from_json_decimal(v, exp)
                .map(Some)
                .map_err(|e| Reject::new(self.key_path(k), e)),
        }
    }

    /// An array child (absent = empty).
    pub fn array(&self, k: &str) -> Result<&'a [Value], Reject> {
        match self.get(k) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a.as_slice()),
            Some(other) => Err(Reject::new(
                self.key_path(k),
                format!("expected an array, found {}", money::kind(other)),
            )),
        }
    }

    /// A Square-style money object `{"amount": 6176, "currency": "USD"}` in minor units.
    pub fn money_obj(&self, k: &str) -> Result<Option<(i64, Option<String>)>, Reject> {
        let Some(m) = self.get(k) else {
            return Ok(None);
        };
        let p = self.key_path(k);
        let amount = m
            .get("amount")
            .ok_or_else(|| Reject::new(format!("{p}.amount"), "missing"))?;
        let a =
            money::from_json_minor(amount).map_err(|e| Reject::new(format!("{p}.amount"), e))?;
        let c = m
            .get("currency")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Some((a, c)))
    }
}

/// Refuses a document that carries card authentication data anywhere: a CVV, track or
/// PIN-block field name, or a string that looks like magnetic-stripe track data. The walk
/// allocates nothing; the path of the offending field is built only when there is one.
pub fn sweep_sensitive(v: &Value, path: &str) -> Result<(), Reject> {
    let Some((rev, why)) = find_sensitive(v) else {
        return Ok(());
    };
    let mut p = path.to_string();
    for seg in rev.iter().rev() {
        match seg {
            Seg::Key(k) => {
                p.push('.');
                p.push_str(k);
            }
            Seg::Index(i) => {
                use std::fmt::Write as _;
                let _ = write!(p, "[{i}]");
            }
        }
    }
    Err(Reject::sensitive(p, why))
}

/// One step of the path to a refused value, innermost first.
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn find_sensitive(v: &Value) -> Option<(Vec<Seg<'_>>, &'static str)> {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if card::is_forbidden_field(k) && !x.is_null() {
                    return Some((
                        vec![Seg::Key(k)],
                        "card authentication data (CVV, track or PIN block) is never accepted",
                    ));
                }
                if let Some((mut rev, why)) = find_sensitive(x) {
                    rev.push(Seg::Key(k));
                    return Some((rev, why));
                }
            }
            None
        }
        Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| {
            find_sensitive(x).map(|(mut rev, why)| {
                rev.push(Seg::Index(i));
                (rev, why)
            })
        }),
        Value::String(s) if card::looks_like_track(s) => {
            Some((Vec::new(), "magnetic-stripe track data is never accepted"))
        }
        _ => None,
    }
}
