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
use axum::routing::{get, on, post, MethodFilter};
use axum::{Extension, Json, Router};
use std::sync::Arc;

/// Declares the management routes once: [`MANAGEMENT_ROUTES`] lists them and
/// `management_router` is built from the same list, so a route cannot exist without being
/// listed (the role-matrix test walks the list).
macro_rules! management_routes {
    ($( $method:ident $path:literal => $handler:path ),* $(,)?) => {
        /// Every management route a caller authenticates to: (method, path template).
        pub const MANAGEMENT_ROUTES: &[(&str, &str)] = &[ $( (stringify!($method), $path) ),* ];

        fn management_router(r: Router<Arc<Gateway>>) -> Router<Arc<Gateway>> {
            r $( .route($path, on(MethodFilter::$method, $handler)) )*
        }
    };
}

management_routes! {
    GET "/api/v1/orgs" => tenancy::list_orgs,
    POST "/api/v1/orgs" => tenancy::create_org,
    GET "/api/v1/orgs/{id}" => tenancy::get_org,
    PATCH "/api/v1/orgs/{id}" => tenancy::patch_org,
    DELETE "/api/v1/orgs/{id}" => tenancy::delete_org,
    GET "/api/v1/teams" => tenancy::list_teams,
    POST "/api/v1/teams" => tenancy::create_team,
    GET "/api/v1/teams/{id}" => tenancy::get_team,
    PATCH "/api/v1/teams/{id}" => tenancy::patch_team,
    DELETE "/api/v1/teams/{id}" => tenancy::delete_team,
    PUT "/api/v1/teams/{id}/members/{user_id}" => tenancy::put_member,
    DELETE "/api/v1/teams/{id}/members/{user_id}" => tenancy::delete_member,
    GET "/api/v1/teams/{id}/service-accounts" => tenancy::list_sas,
    POST "/api/v1/teams/{id}/service-accounts" => tenancy::create_sa,
    GET "/api/v1/users" => tenancy::list_users,
    POST "/api/v1/users" => tenancy::create_user,
    GET "/api/v1/users/{id}" => tenancy::get_user,
    PATCH "/api/v1/users/{id}" => tenancy::patch_user,
    DELETE "/api/v1/users/{id}" => tenancy::delete_user,
    GET "/api/v1/service-accounts/{id}" => tenancy::get_sa,
    PATCH "/api/v1/service-accounts/{id}" => tenancy::patch_sa,
    DELETE "/api/v1/service-accounts/{id}" => tenancy::delete_sa,
    POST "/api/v1/service-accounts/{id}/transfer" => tenancy::transfer_sa,
    GET "/api/v1/tokens" => tokens::list,
    POST "/api/v1/tokens" => tokens::create,
    GET "/api/v1/tokens/{id}" => tokens::get_one,
    PATCH "/api/v1/tokens/{id}" => tokens::patch,
    DELETE "/api/v1/tokens/{id}" => tokens::revoke,
    POST "/api/v1/tokens/{id}/regenerate" => tokens::regenerate,
    GET "/api/v1/mcp-servers" => crate::mcp::api::list,
    POST "/api/v1/mcp-servers" => crate::mcp::api::create,
    GET "/api/v1/mcp-servers/{name}" => crate::mcp::api::get_one,
    PUT "/api/v1/mcp-servers/{name}" => crate::mcp::api::replace,
    DELETE "/api/v1/mcp-servers/{name}" => crate::mcp::api::delete,
    GET "/api/v1/status" => tokens::status,
    GET "/api/v1/usage" => usage::summary,
    GET "/api/v1/usage/requests" => usage::requests,
}

/// The management API and health routes, mounted at the root of the control plane's HTTP side.
/// The usage ingest and key journal routes are the filter's, authenticated by the deployment
/// secret; the OpenAPI document and health need no caller.
pub fn router(gw: Arc<Gateway>, settings: TenancySettings) -> Router {
    management_router(Router::new())
        .route(aqueduct_policy::ledger::INGEST_PATH, post(usage::ingest))
        .route(aqueduct_policy::journal::JOURNAL_PATH, get(journal::poll))
        .route("/api/v1/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(crate::app::ready))
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
