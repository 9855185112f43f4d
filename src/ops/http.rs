//! The loopback HTTP server: `/metrics`, `/healthz`, and whatever routes sources add (POS ingest).

use crate::spool::Spool;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

async fn metrics(State(spool): State<Arc<Spool>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::ops::metrics::global().render(Some(&spool)),
    )
}

async fn healthz(State(spool): State<Arc<Spool>>) -> impl IntoResponse {
    let reasons = crate::ops::status::unhealthy_reasons(&spool);
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

/// Serves `router` on `listen` until the process ends; a bind failure is returned, not fatal
/// to the rest of the gateway.
pub async fn serve(listen: &str, router: Router) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("http.listen: cannot bind {listen}: {e}"))?;
    tracing::info!(listen, "HTTP server listening (/metrics, /healthz)");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }))
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
        crate::ops::status::set_source("healthz-test", "failed", Some("no adapter".into()));
        let r = healthz(State(spool.clone())).await.into_response();
        crate::ops::status::set_source("healthz-test", "stopped", None);
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
