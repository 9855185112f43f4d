//! The loopback HTTP server: `/metrics`, `/healthz`, and whatever routes sources add (POS ingest).
//!
//! Connections are bounded before any authentication can happen: a request head must arrive
//! within `http.header_timeout`, a connection silent for `http.idle_timeout` is closed, and at
//! most `http.max_connections` are open; one more gets a `503` and is closed at once, so idle or
//! half-open clients cannot exhaust the process's file descriptors. `/healthz` and the status
//! document report the saturation (docs/pos.md, "Timeouts and limits").

use crate::spool::Spool;
use crate::telemetry::health::SourceState;
use crate::telemetry::metrics::Metric;
use crate::telemetry::Telemetry;
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

/// What the server's own routes and its accept loop share: the pipeline's spool and
/// registries, and the connection counters. Handed in by the daemon (one per pipeline), so
/// `/metrics` and `/healthz` report the pipeline they serve and no counter is process-wide.
#[derive(Clone)]
pub struct ServerState {
    spool: Arc<Spool>,
    telemetry: Telemetry,
    connections: Arc<Connections>,
}

impl ServerState {
    /// The state of a server for this pipeline's spool and telemetry, no connection open yet.
    pub fn new(spool: Arc<Spool>, telemetry: Telemetry) -> ServerState {
        ServerState {
            spool,
            telemetry,
            connections: Arc::new(Connections::default()),
        }
    }

    /// Why the HTTP server is saturated (`None`: it is not): every connection slot taken, or a
    /// connection refused within the last 30 s. `/healthz` answers 503 with it; the systemd
    /// watchdog does not act on it (a restart would not stop the clients).
    pub fn saturation(&self) -> Option<String> {
        let c = &self.connections;
        let open = c.open.load(Ordering::Relaxed);
        let cap = c.cap.load(Ordering::Relaxed);
        let recent =
            crate::event::now_ms() - c.refused_at.load(Ordering::Relaxed) < SATURATION_HOLD_MS;
        (open >= cap || recent).then(|| {
            format!(
                "HTTP connections saturated: {open} of http.max_connections = {cap} open, {} refused since start",
                c.refused.load(Ordering::Relaxed)
            )
        })
    }
}

/// Open connections, the cap, and the last time one was refused (Unix ms).
struct Connections {
    open: AtomicUsize,
    cap: AtomicUsize,
    refused_at: AtomicI64,
    refused: AtomicU64,
}

impl Default for Connections {
    fn default() -> Connections {
        Connections {
            open: AtomicUsize::new(0),
            // No cap until the server listens with its limits.
            cap: AtomicUsize::new(usize::MAX),
            refused_at: AtomicI64::new(0),
            refused: AtomicU64::new(0),
        }
    }
}

async fn metrics(State(st): State<ServerState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::ops::status::metrics_text(&st.telemetry, Some(&st.spool)),
    )
}

async fn healthz(State(st): State<ServerState>) -> impl IntoResponse {
    let mut reasons = crate::ops::status::unhealthy_reasons(st.telemetry.health(), &st.spool);
    reasons.extend(st.saturation());
    if reasons.is_empty() {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n") + "\n")
    }
}

/// Routes every gateway serves, reading `state` (pass the same state to [`serve`]).
pub fn base_router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// How long after a refused connection `/healthz` still reports saturation.
const SATURATION_HOLD_MS: i64 = 30_000;

/// Connection limits of the server (from `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `http.header_timeout` (default 10 s): a request head must arrive within it, or the
    /// connection is closed.
    pub header_timeout: Duration,
    /// `http.idle_timeout` (default 60 s): a connection with nothing read or written for this
    /// long is closed.
    pub idle_timeout: Duration,
    /// `http.max_connections` (default 64): one more connection gets `503` and is closed at once.
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
struct Slot(ServerState);

impl Drop for Slot {
    fn drop(&mut self) {
        let c = &self.0.connections;
        let left = c.open.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        if left + 1 == c.cap.load(Ordering::Relaxed) {
            self.0
                .telemetry
                .health()
                .set_source("http", SourceState::Running, None);
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

/// The most a connection buffers for reading, and for writing (hyper's default is about 400
/// KiB), and the largest request head (else 431 and the connection is closed); a body is
/// read through it in pieces of at most this size, so an open connection holds about 64 KiB
/// for reading whatever the body's size, and the buffer comes from the heap instead of a
/// mapping of its own (BENCHMARKS.md, "POS push", item 13).
const READ_BUFFER_MAX: usize = 64 * 1024;

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: 31\r\n\r\nHTTP connection limit reached\r\n";

/// Serves `router` on `listen` until the task is aborted, within `limits`, counting
/// connections in `state` (the one [`base_router`] got); a bind failure is returned, not fatal
/// to the rest of the gateway.
pub async fn serve(
    listen: &str,
    router: Router,
    limits: Limits,
    state: ServerState,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("http.listen: cannot bind {listen}: {e}"))?;
    state
        .connections
        .cap
        .store(limits.max_connections, Ordering::Relaxed);
    tracing::info!(
        listen,
        max_connections = limits.max_connections,
        "HTTP server listening (/metrics, /healthz)"
    );
    Ok(tokio::spawn(accept_loop(listener, router, limits, state)))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    state: ServerState,
) {
    let c = state.connections.clone();
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
        if c.open.load(Ordering::Relaxed) >= limits.max_connections {
            c.refused.fetch_add(1, Ordering::Relaxed);
            c.refused_at
                .store(crate::event::now_ms(), Ordering::Relaxed);
            state
                .telemetry
                .metrics()
                .count(Metric::HttpConnectionsRefused, "", 1);
            state.telemetry.health().set_source(
                "http",
                SourceState::Degraded,
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
        c.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(state.clone());
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(IdleIo::new(stream, limits.idle_timeout));
        let svc = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true)
                .max_buf_size(READ_BUFFER_MAX)
                .max_header_size(READ_BUFFER_MAX)
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
        let st = ServerState::new(spool, Telemetry::new());
        st.telemetry.health().set_source(
            "healthz-test",
            SourceState::Failed,
            Some("no adapter".into()),
        );
        let r = healthz(State(st.clone())).await.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(r.into_body(), 4096).await?;
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("source healthz-test failed: no adapter"),
            "{text}"
        );
        Ok(())
    }

    /// A refused connection makes its own server saturated, not every server in the process.
    #[test]
    fn saturation_belongs_to_one_server() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let spool = Arc::new(Spool::open(
            dir.path(),
            "gw",
            &crate::config::SpoolConfig::default(),
        )?);
        let busy = ServerState::new(spool.clone(), Telemetry::new());
        let quiet = ServerState::new(spool, Telemetry::new());
        busy.connections.cap.store(1, Ordering::Relaxed);
        busy.connections.refused.fetch_add(1, Ordering::Relaxed);
        busy.connections
            .refused_at
            .store(crate::event::now_ms(), Ordering::Relaxed);
        let why = busy
            .saturation()
            .ok_or("the busy server is not saturated")?;
        assert!(why.contains("1 refused since start"), "{why}");
        assert_eq!(quiet.saturation(), None);
        Ok(())
    }
}
