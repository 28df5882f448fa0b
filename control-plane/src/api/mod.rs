//! The management API (`/api/v1`): JSON in, JSON out, errors in OpenAI's shape, every route
//! authorized by the caller's role.

pub mod auth;
pub mod common;
pub mod error;
pub mod journal;
pub mod openapi;
pub mod tenancy;
pub mod tokens;
pub mod usage;

pub use common::TenancySettings;

use crate::gateway::Gateway;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use std::sync::Arc;

/// The management API and health routes, mounted at the root of the control plane's HTTP side.
pub fn router(gw: Arc<Gateway>, settings: TenancySettings) -> Router {
    use tenancy as t;
    Router::new()
        .route("/api/v1/orgs", get(t::list_orgs).post(t::create_org))
        .route("/api/v1/orgs/{id}", get(t::get_org).patch(t::patch_org).delete(t::delete_org))
        .route("/api/v1/teams", get(t::list_teams).post(t::create_team))
        .route("/api/v1/teams/{id}", get(t::get_team).patch(t::patch_team).delete(t::delete_team))
        .route("/api/v1/teams/{id}/members/{user_id}", put(t::put_member).delete(t::delete_member))
        .route("/api/v1/teams/{id}/service-accounts", get(t::list_sas).post(t::create_sa))
        .route("/api/v1/users", get(t::list_users).post(t::create_user))
        .route("/api/v1/users/{id}", get(t::get_user).patch(t::patch_user).delete(t::delete_user))
        .route("/api/v1/service-accounts/{id}", get(t::get_sa).patch(t::patch_sa).delete(t::delete_sa))
        .route("/api/v1/service-accounts/{id}/transfer", post(t::transfer_sa))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}", get(tokens::get_one).patch(tokens::patch).delete(tokens::revoke))
        .route("/api/v1/tokens/{id}/regenerate", post(tokens::regenerate))
        .route("/api/v1/mcp-servers", get(crate::mcp::api::list).post(crate::mcp::api::create))
        .route(
            "/api/v1/mcp-servers/{name}",
            get(crate::mcp::api::get_one).put(crate::mcp::api::replace).delete(crate::mcp::api::delete),
        )
        .route("/api/v1/status", get(tokens::status))
        .route("/api/v1/usage", get(usage::summary))
        .route("/api/v1/usage/requests", get(usage::requests))
        .route(aqueduct_policy::ledger::INGEST_PATH, post(usage::ingest))
        .route(aqueduct_policy::journal::JOURNAL_PATH, get(journal::poll))
        .route("/api/v1/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(Extension(settings))
        .layer(axum::middleware::from_fn_with_state(gw.clone(), crate::audit::api_layer))
        .with_state(gw)
}

/// `GET /metrics` (control-plane address only; the public listener does not route it).
async fn metrics(axum::extract::State(gw): axum::extract::State<Arc<Gateway>>) -> impl axum::response::IntoResponse {
    use std::fmt::Write;
    let mut out = String::new();
    gw.xds_metrics.render(&mut out);
    let _ = writeln!(
        out,
        "# HELP aqueduct_policy_publications_total Policy snapshots built.\n# TYPE aqueduct_policy_publications_total counter\naqueduct_policy_publications_total {}",
        gw.published.load(std::sync::atomic::Ordering::Relaxed)
    );
    gw.usage_metrics.render(&mut out);
    ([("content-type", "text/plain; version=0.0.4")], out)
}
