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
        .fallback(error::not_found)
        .with_state(gw)
}
