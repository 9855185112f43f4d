//! `POST /v1/pos/transactions`: tills push canonical JSON (one object or an array), JSON lines,
//! or ARTS POSLog XML, chosen by Content-Type. The 2xx is sent only after the spool fsync.

use super::config::PosHttpConfig;
use super::ingest::{EventIds, Ingest, StoreError};
use super::transaction::{Reject, Tx};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use std::sync::Arc;

struct HttpState {
    ingest: Arc<Ingest>,
    /// `None`: the token file could not be read; every request is refused.
    token: Option<Vec<u8>>,
    limit: usize,
    body_timeout: std::time::Duration,
}

/// The most a request's declared Content-Length reserves before its body arrives (a bulk
/// push of 1000 transactions is 0.4-0.7 MiB); larger bodies grow as they are read.
const PRESIZE_MAX: usize = 4 * 1024 * 1024;

/// The ingest route, ready to merge into the loopback server.
pub fn routes(ingest: Arc<Ingest>, cfg: &PosHttpConfig) -> Router {
    let token = match &cfg.token_file {
        Some(p) => match std::fs::read(p) {
            Ok(mut t) => {
                while t.last().is_some_and(u8::is_ascii_whitespace) {
                    t.pop();
                }
                if t.is_empty() {
                    tracing::error!(file = %p.display(), "POS token file is empty; POS push refuses every request");
                    None
                } else {
                    Some(t)
                }
            }
            Err(e) => {
                tracing::error!(file = %p.display(), error = %e, "cannot read POS token file; POS push refuses every request");
                None
            }
        },
        None => None,
    };
    let st = Arc::new(HttpState {
        ingest,
        token,
        limit: usize::try_from(cfg.body_limit.0).unwrap_or(usize::MAX),
        body_timeout: cfg.body_timeout.0,
    });
    Router::new()
        .route("/v1/pos/transactions", post(push))
        // The route reads the body itself with its own limit (after the token check).
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(st)
}

/// Compares without an early exit, so response time says nothing about the token.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

fn json_err(code: StatusCode, body: serde_json::Value) -> Response {
    (code, axum::Json(body)).into_response()
}

fn authorized(st: &HttpState, h: &HeaderMap) -> bool {
    let Some(token) = &st.token else {
        return false;
    };
    let given = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or("");
    ct_eq(given.as_bytes(), token)
}

fn bad_request(st: &HttpState, r: &Reject) -> Response {
    st.ingest.telemetry.metrics().count(
        crate::telemetry::metrics::Metric::PosRejected,
        "input=\"http\"",
        1,
    );
    tracing::warn!(at = %r.at, reason = %r.reason, "POS push rejected");
    json_err(
        StatusCode::BAD_REQUEST,
        serde_json::json!({"error": r.reason, "path": r.at, "transaction_id": r.transaction_id}),
    )
}

/// Reads and discards up to `cap` more bytes so a client still sending gets the answer
/// instead of a reset connection; beyond `cap` the connection is simply closed.
async fn drain(body: Body, cap: usize) {
    drain_stream(body.into_data_stream(), cap).await;
}

async fn drain_stream(mut s: axum::body::BodyDataStream, cap: usize) {
    let mut seen = 0usize;
    while let Some(Ok(c)) = s.next().await {
        seen += c.len();
        if seen > cap {
            break;
        }
    }
}

async fn push(State(st): State<Arc<HttpState>>, req: Request) -> Response {
    let (parts, body): (_, Body) = req.into_parts();
    if !authorized(&st, &parts.headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({"error": "missing or wrong bearer token"})),
        )
            .into_response();
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        json_err(
            StatusCode::PAYLOAD_TOO_LARGE,
            serde_json::json!({"error": format!("body larger than {} bytes", st.limit)}),
        )
    };
    if declared.is_some_and(|n| n > st.limit) {
        let _ =
            tokio::time::timeout(st.body_timeout, drain(body, st.limit.saturating_mul(4))).await;
        return too_large();
    }
    let mut stream = body.into_data_stream();
    let read = async {
        // Sized once from Content-Length (already checked against the limit), so a bulk body
        // is not copied through doubling buffers, but never beyond PRESIZE_MAX before the
        // bytes arrive: a declared length is a claim, not memory to hand out. Zeroed however
        // the request ends.
        let mut bytes = crate::buffers::RawInput::with_capacity(
            declared.unwrap_or(0).min(st.limit).min(PRESIZE_MAX),
        );
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return Err(json_err(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "body could not be read"}),
                ));
            };
            if bytes.len() + chunk.len() > st.limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    let bytes = match tokio::time::timeout(st.body_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(resp)) => {
            if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
                let drained = drain_stream(stream, st.limit.saturating_mul(4));
                let _ = tokio::time::timeout(st.body_timeout, drained).await;
            }
            return resp;
        }
        Err(_) => {
            let mut r = json_err(
                StatusCode::REQUEST_TIMEOUT,
                serde_json::json!({"error": "body not received within sources.pos.http.body_timeout"}),
            );
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    let ctype = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match ctype.as_str() {
        "application/json" => "json",
        "application/x-ndjson" | "application/jsonl" | "application/json-lines" => "jsonl",
        "application/xml" | "text/xml" | "application/poslog+xml" => "poslog",
        _ => {
            return json_err(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                serde_json::json!({"error": "unsupported Content-Type: use application/json, application/x-ndjson or application/xml"}),
            )
        }
    };
    let Ok(text) = std::str::from_utf8(bytes.as_slice()) else {
        return bad_request(&st, &Reject::new("body", "not UTF-8"));
    };
    let fused = match format {
        "json" => st.ingest.normalize_json(text),
        _ => None,
    };
    let (normalized, skipped) = match fused {
        Some(n) => (n, 0),
        None => {
            let parsed = match super::parse_input(text, format, &st.ingest.opts) {
                Ok(p) => p,
                Err(r) => return bad_request(&st, &r),
            };
            let txs: Result<Vec<Tx>, Reject> = parsed.items.into_iter().collect();
            (txs.and_then(|t| st.ingest.normalize_all(t)), parsed.skipped)
        }
    };
    let normalized = match normalized {
        Ok(n) => n,
        Err(r) => return bad_request(&st, &r),
    };
    if normalized.is_empty() && skipped == 0 {
        return bad_request(&st, &Reject::new("body", "no transaction in the body"));
    }
    // The body is no longer needed: a bulk request waiting for the index or the flush does
    // not hold it (eight clients pushing 1000 transactions each held 3 MB of bodies so).
    drop(bytes);
    match st.ingest.store(normalized).await {
        Ok(s) => {
            let code = if s.accepted > 0 {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            /// The 201/200 answer (docs/pos.md, "HTTP push").
            #[derive(serde::Serialize)]
            struct Answer<'a> {
                accepted: usize,
                duplicates: usize,
                ids: &'a EventIds,
                skipped: usize,
            }
            let answer = Answer {
                accepted: s.accepted,
                duplicates: s.duplicates,
                ids: &s.ids,
                skipped,
            };
            (code, axum::Json(answer)).into_response()
        }
        Err(StoreError::Full(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "30")],
            axum::Json(serde_json::json!({"error": e})),
        )
            .into_response(),
        Err(StoreError::Invalid(r)) => bad_request(&st, &r),
        Err(StoreError::Conflict(r)) => {
            tracing::warn!(at = %r.at, reason = %r.reason, "POS push conflicts with a stored transaction");
            json_err(
                StatusCode::CONFLICT,
                serde_json::json!({"error": r.reason, "path": r.at, "transaction_id": r.transaction_id}),
            )
        }
        Err(StoreError::Storage(e)) => {
            // A full or failing disk is the till's cue to retry, exactly like a full spool.
            tracing::error!(error = %e, "POS push could not be stored");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "30")],
                axum::Json(serde_json::json!({"error": "storage error; retry later"})),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq() {
        assert!(super::ct_eq(b"secret", b"secret"));
        assert!(!super::ct_eq(b"secret", b"secreT"));
        assert!(!super::ct_eq(b"secret", b"secret2"));
        assert!(!super::ct_eq(b"", b"x"));
    }
}
