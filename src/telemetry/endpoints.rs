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
/// `telemetries`: each validator's the member serves, in its order, named when it serves several.
pub async fn serve(
    listener: tokio::net::TcpListener,
    telemetries: Vec<(Option<String>, Arc<Telemetry>)>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let telemetry = Arc::new(telemetries);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(telemetry);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

type Each = Arc<Vec<(Option<String>, Arc<Telemetry>)>>;

async fn metrics(State(t): State<Each>) -> impl IntoResponse {
    let texts: Vec<String> = t.iter().map(|(_, t)| t.metrics.encode()).collect();
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], super::exposition::merge(&texts))
}

async fn healthz(State(t): State<Each>) -> impl IntoResponse {
    answer(all_of(t.iter().map(|(v, t)| (v, t.liveness()))))
}

async fn readyz(State(t): State<Each>) -> impl IntoResponse {
    answer(all_of(t.iter().map(|(v, t)| (v, t.readiness()))))
}

/// Every validator's check, all of which must pass; each named, one a line, when there are
/// several.
fn all_of<'a>(checks: impl Iterator<Item = (&'a Option<String>, Check)>) -> Check {
    let mut ok = true;
    let mut lines = Vec::new();
    for (validator, check) in checks {
        ok &= check.ok;
        lines.push(match validator {
            Some(v) => format!("validator {v}: {}", check.detail),
            None => check.detail,
        });
    }
    if lines.is_empty() {
        return Check { ok: false, detail: "this member serves no validator".into() };
    }
    Check { ok, detail: lines.join("\n") }
}

fn answer(check: Check) -> impl IntoResponse {
    let status = if check.ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, format!("{}\n", check.detail))
}
