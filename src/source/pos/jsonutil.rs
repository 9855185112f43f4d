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
        let minor = format!("{k}_minor");
        if let Some(v) = self.get(&minor) {
            return money::from_json_minor(v)
                .map(Some)
                .map_err(|e| Reject::new(self.key_path(&minor), e));
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
/// PIN-block field name, or a string that looks like magnetic-stripe track data.
pub fn sweep_sensitive(v: &Value, path: &str) -> Result<(), Reject> {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                if card::is_forbidden_field(k) && !x.is_null() {
                    return Err(Reject::sensitive(
                        p,
                        "card authentication data (CVV, track or PIN block) is never accepted",
                    ));
                }
                sweep_sensitive(x, &p)?;
            }
            Ok(())
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                sweep_sensitive(x, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        Value::String(s) if card::looks_like_track(s) => Err(Reject::sensitive(
            path,
            "magnetic-stripe track data is never accepted",
        )),
        _ => Ok(()),
    }
}
