//! The HTTP listener on `metrics.listen`: `GET /metrics` (Prometheus text format), `GET /healthz`
//! (200 while the decision loop turns) and `GET /readyz` (200 while the store answers and, on a
//! producer, the node probes succeed). Plain HTTP, read-only: it serves what [`Telemetry`] holds
//! and never changes anything.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::{Check, Telemetry};

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(telemetry);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], t.metrics.encode())
}

async fn healthz(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    answer(t.liveness())
}

async fn readyz(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    answer(t.readiness())
}

fn answer(check: Check) -> impl IntoResponse {
    let status = if check.ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, format!("{}\n", check.detail))
}
