//! The loopback HTTP server: `/metrics`, `/healthz`, and whatever routes sources add (POS ingest).
//!
//! Connections are bounded before any authentication can happen: a request head must arrive
//! within `http.header_timeout`, a connection silent for `http.idle_timeout` is closed, and at
//! most `http.max_connections` are open; one more gets a `503` and is closed at once, so idle or
//! half-open clients cannot exhaust the process's file descriptors. `/healthz` and the status
//! document report the saturation (docs/pos.md, "Timeouts and limits").

use crate::spool::Spool;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

async fn metrics(State(spool): State<Arc<Spool>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::ops::status::metrics_text(Some(&spool)),
    )
}

async fn healthz(State(spool): State<Arc<Spool>>) -> impl IntoResponse {
    let mut reasons = crate::ops::status::unhealthy_reasons(&spool);
    reasons.extend(saturation());
    if reasons.is_empty() {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n") + "\n")
    }
}

/// Routes every gateway serves.
pub fn base_router(spool: Arc<Spool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(spool)
}

/// Open connections, the cap, and the last time one was refused (Unix ms).
static OPEN: AtomicUsize = AtomicUsize::new(0);
static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);
static REFUSED_AT: AtomicI64 = AtomicI64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// How long after a refused connection `/healthz` still reports saturation.
const SATURATION_HOLD_MS: i64 = 30_000;

/// Why the HTTP server is saturated (`None`: it is not): every connection slot taken, or a
/// connection refused within the last 30 s. `/healthz` answers 503 with it; the systemd
/// watchdog does not act on it (a restart would not stop the clients).
pub fn saturation() -> Option<String> {
    let open = OPEN.load(Ordering::Relaxed);
    let cap = CAP.load(Ordering::Relaxed);
    let recent = crate::event::now_ms() - REFUSED_AT.load(Ordering::Relaxed) < SATURATION_HOLD_MS;
    (open >= cap || recent).then(|| {
        format!(
            "HTTP connections saturated: {open} of http.max_connections = {cap} open, {} refused since start",
            REFUSED.load(Ordering::Relaxed)
        )
    })
}

/// Connection limits of the server (from `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The limits `[http]` configures.
    pub fn from_config(c: &crate::config::HttpConfig) -> Limits {
        Limits {
            header_timeout: c.header_timeout.0,
            idle_timeout: c.idle_timeout.0,
            max_connections: c.max_connections,
        }
    }
}

/// Counts an open connection until dropped.
struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        let left = OPEN.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        if left + 1 == CAP.load(Ordering::Relaxed) {
            crate::telemetry::health::set_source(
                "http",
                crate::telemetry::health::SourceState::Running,
                None,
            );
        }
    }
}

/// A socket that fails with `TimedOut` when nothing was read or written for `idle`.
struct IdleIo {
    inner: tokio::net::TcpStream,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl IdleIo {
    fn new(inner: tokio::net::TcpStream, idle: Duration) -> IdleIo {
        IdleIo {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn touch(&mut self) {
        let at = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(at);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection idle")
}

use std::future::Future;

impl AsyncRead for IdleIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                me.touch();
                Poll::Ready(r)
            }
            Poll::Pending if me.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        match Pin::new(&mut me.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                me.touch();
                Poll::Ready(r)
            }
            Poll::Pending if me.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: 31\r\n\r\nHTTP connection limit reached\r\n";

/// Serves `router` on `listen` until the process ends, within `limits`; a bind failure is
/// returned, not fatal to the rest of the gateway.
pub async fn serve(
    listen: &str,
    router: Router,
    limits: Limits,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("http.listen: cannot bind {listen}: {e}"))?;
    CAP.store(limits.max_connections, Ordering::Relaxed);
    tracing::info!(
        listen,
        max_connections = limits.max_connections,
        "HTTP server listening (/metrics, /healthz)"
    );
    Ok(tokio::spawn(accept_loop(listener, router, limits)))
}

async fn accept_loop(listener: tokio::net::TcpListener, router: Router, limits: Limits) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE/ENFILE and the like: back off instead of spinning.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if OPEN.load(Ordering::Relaxed) >= limits.max_connections {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            REFUSED_AT.store(crate::event::now_ms(), Ordering::Relaxed);
            crate::telemetry::metrics::global().count(
                crate::telemetry::metrics::Metric::HttpConnectionsRefused,
                "",
                1,
            );
            crate::telemetry::health::set_source(
                "http",
                crate::telemetry::health::SourceState::Degraded,
                Some(format!(
                    "connection limit reached (http.max_connections = {})",
                    limits.max_connections
                )),
            );
            // Best effort, never waits: the socket buffer of a fresh connection has room.
            let _ = stream.try_write(REFUSAL);
            drop(stream);
            continue;
        }
        OPEN.fetch_add(1, Ordering::Relaxed);
        let slot = Slot;
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(IdleIo::new(stream, limits.idle_timeout));
        let svc = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true)
                .serve_connection(io, svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn healthz_names_the_reasons_with_503() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let spool = Arc::new(Spool::open(
            dir.path(),
            "gw",
            &crate::config::SpoolConfig::default(),
        )?);
        crate::telemetry::health::set_source(
            "healthz-test",
            crate::telemetry::health::SourceState::Failed,
            Some("no adapter".into()),
        );
        let r = healthz(State(spool.clone())).await.into_response();
        crate::telemetry::health::set_source(
            "healthz-test",
            crate::telemetry::health::SourceState::Stopped,
            None,
        );
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(r.into_body(), 4096).await?;
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("source healthz-test failed: no adapter"),
            "{text}"
        );
        Ok(())
    }
}
