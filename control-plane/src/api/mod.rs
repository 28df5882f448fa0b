//! The management API (`/api/v1`): JSON in, JSON out, errors in OpenAI's shape, every route
//! authorized by the caller's role.

pub mod error;
pub mod tokens;

use crate::gateway::Gateway;
use axum::routing::{delete, get};
use axum::Router;
use std::sync::Arc;

/// The management API and health routes, mounted at the root of the control plane's HTTP side.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route(
            "/api/v1/tokens/{id}",
            delete(tokens::revoke).get(tokens::get_one),
        )
        .route("/api/v1/status", get(tokens::status))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(gw)
}

/// `GET /metrics` (control-plane address only; the public listener does not route it).
async fn metrics(
    axum::extract::State(gw): axum::extract::State<Arc<Gateway>>,
) -> impl axum::response::IntoResponse {
    use std::fmt::Write;
    let mut out = String::new();
    gw.xds_metrics.render(&mut out);
    let _ = writeln!(
        out,
        "# HELP aqueduct_policy_publications_total Policy snapshots built.\n# TYPE aqueduct_policy_publications_total counter\naqueduct_policy_publications_total {}",
        gw.published.load(std::sync::atomic::Ordering::Relaxed)
    );
    ([("content-type", "text/plain; version=0.0.4")], out)
}
