//! The management API (`/api/v1`): JSON in, JSON out, errors in OpenAI's shape, every route
//! authorized by the caller's role.

pub mod auth;
pub mod error;
pub mod health;
pub mod journal;
pub mod mcp;
pub mod openapi;
pub mod tenancy;
pub mod tokens;
pub mod usage;

pub use crate::domain::input::TenancySettings;

use crate::audit::{self, Action};
use crate::domain::input::{Input, Parsed};
use crate::gateway::Gateway;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, on, post, MethodFilter};
use axum::{Extension, Json, Router};
use serde_json::Value;
use std::sync::Arc;

/// A JSON request body as axum hands it over.
pub type Body = Result<Json<Value>, JsonRejection>;

/// A typed body: the JSON object checked field by field (400s name the field; a wrong content
/// type is a 415).
pub fn body<T: Input>(b: Body) -> Parsed<T> {
    let Json(v) = b.map_err(error::json_rejection)?;
    T::parse(v)
}

/// Like [`body`], but no body at all is an empty object.
pub fn body_or_empty<T: Input>(b: Body) -> Parsed<T> {
    match b {
        Err(JsonRejection::MissingJsonContentType(_)) => T::parse(Value::Object(Default::default())),
        other => body(other),
    }
}

/// Declares the management routes once: [`MANAGEMENT_ROUTES`] lists them, `management_router`
/// serves them and [`openapi::document`] describes them, all from the same list, so a route
/// cannot exist without being listed and documented (the role-matrix test walks the list). Each
/// entry: method, path, handler; summary; `body` and its type when it takes one; the success
/// status and the answer's type when it has one.
macro_rules! management_routes {
    ($( $method:ident $path:literal => $handler:path ; $summary:literal ; $(body $req:ty ;)? $status:literal $($resp:ty)? ),* $(,)?) => {
        /// Every management route a caller authenticates to: (method, path template).
        pub const MANAGEMENT_ROUTES: &[(&str, &str)] = &[ $( (stringify!($method), $path) ),* ];

        fn management_router(r: Router<Arc<Gateway>>) -> Router<Arc<Gateway>> {
            r $( .route($path, on(MethodFilter::$method, $handler)) )*
        }

        /// The operations of [`MANAGEMENT_ROUTES`] for the OpenAPI document.
        pub(crate) fn operations(doc: &mut openapi::Builder) {
            $(
                let body: Option<serde_json::Value> = None $(.or(Some(doc.schema::<$req>())))?;
                let answer: Option<serde_json::Value> = None $(.or(Some(doc.schema::<$resp>())))?;
                doc.operation(stringify!($method), $path, $summary, body, $status, answer);
            )*
        }
    };
}

use crate::domain::List;
use crate::mcp::service::{McpServer, McpServerEntry, NewMcpServer};
use crate::tenancy::input::*;
use crate::tenancy::service::{Member, Org, ServiceAccount, Team, User};
use crate::tokens::service::{NewToken, Token, TokenChanges};
use crate::usage::service::{RequestPage, Summary};

management_routes! {
    GET "/api/v1/orgs" => tenancy::list_orgs; "List orgs (admin: all; others: their own)"; 200 List<Org>,
    POST "/api/v1/orgs" => tenancy::create_org; "Create an org (admin)"; body NewOrg; 201 Org,
    GET "/api/v1/orgs/{id}" => tenancy::get_org; "Read an org"; 200 Org,
    PATCH "/api/v1/orgs/{id}" => tenancy::patch_org; "Change an org's name and policy (admin)"; body OrgChanges; 200 Org,
    DELETE "/api/v1/orgs/{id}" => tenancy::delete_org; "Delete an empty org (admin)"; 204,
    GET "/api/v1/teams" => tenancy::list_teams; "List visible teams"; 200 List<Team>,
    POST "/api/v1/teams" => tenancy::create_team; "Create a team (admin, org-admin)"; body NewTeam; 201 Team,
    GET "/api/v1/teams/{id}" => tenancy::get_team; "Read a team"; 200 Team,
    PATCH "/api/v1/teams/{id}" => tenancy::patch_team; "Change a team (admin, org-admin)"; body TeamChanges; 200 Team,
    DELETE "/api/v1/teams/{id}" => tenancy::delete_team; "Delete a team, its memberships and service accounts (admin, org-admin)"; 204,
    PUT "/api/v1/teams/{id}/members/{user_id}" => tenancy::put_member; "Add (201) or update (200) a member (admin, org-admin, team-admin); the body may be empty"; body MemberChanges; 201 Member,
    DELETE "/api/v1/teams/{id}/members/{user_id}" => tenancy::delete_member; "Remove a member (admin, org-admin, team-admin)"; 204,
    GET "/api/v1/teams/{id}/service-accounts" => tenancy::list_sas; "List a team's service accounts"; 200 List<ServiceAccount>,
    POST "/api/v1/teams/{id}/service-accounts" => tenancy::create_sa; "Create a service account and its key, shown once in `key` (admin, org-admin, team-admin)"; body NewServiceAccount; 201 ServiceAccount,
    GET "/api/v1/users" => tenancy::list_users; "List visible users"; 200 List<User>,
    POST "/api/v1/users" => tenancy::create_user; "Create a user (admin, org-admin)"; body NewUser; 201 User,
    GET "/api/v1/users/{id}" => tenancy::get_user; "Read a user"; 200 User,
    PATCH "/api/v1/users/{id}" => tenancy::patch_user; "Change a user (someone whose role is above theirs)"; body UserChanges; 200 User,
    DELETE "/api/v1/users/{id}" => tenancy::delete_user; "Delete a user; its keys stop working, history stays"; 204,
    GET "/api/v1/service-accounts/{id}" => tenancy::get_sa; "Read a service account"; 200 ServiceAccount,
    PATCH "/api/v1/service-accounts/{id}" => tenancy::patch_sa; "Change a service account (admin, org-admin, team-admin)"; body ServiceAccountChanges; 200 ServiceAccount,
    DELETE "/api/v1/service-accounts/{id}" => tenancy::delete_sa; "Delete a service account and revoke its key"; 204,
    POST "/api/v1/service-accounts/{id}/transfer" => tenancy::transfer_sa; "Transfer ownership to another team member"; body Transfer; 200 ServiceAccount,
    GET "/api/v1/tokens" => tokens::list; "List visible keys"; 200 List<Token>,
    POST "/api/v1/tokens" => tokens::create; "Create a key (shown once in `key`)"; body NewToken; 201 Token,
    GET "/api/v1/tokens/{id}" => tokens::get_one; "Read a key (never the secret)"; 200 Token,
    PATCH "/api/v1/tokens/{id}" => tokens::patch; "Change a key's name, expiry and (admin, org-admin) policy"; body TokenChanges; 200 Token,
    DELETE "/api/v1/tokens/{id}" => tokens::revoke; "Revoke a key"; 204,
    POST "/api/v1/tokens/{id}/regenerate" => tokens::regenerate; "Replace a key's secret (shown once in `key`)"; 200 Token,
    GET "/api/v1/mcp-servers" => mcp::list; "List MCP servers (url and headers for admins only)"; 200 List<McpServer>,
    POST "/api/v1/mcp-servers" => mcp::create; "Add an MCP server (admin)"; body NewMcpServer; 201 McpServer,
    GET "/api/v1/mcp-servers/{name}" => mcp::get_one; "Read an MCP server"; 200 McpServer,
    PUT "/api/v1/mcp-servers/{name}" => mcp::replace; "Replace an API-managed MCP server (admin; file entries: 409)"; body McpServerEntry; 200 McpServer,
    DELETE "/api/v1/mcp-servers/{name}" => mcp::delete; "Remove an API-managed MCP server (admin; file entries: 409)"; 204,
    GET "/api/v1/status" => tokens::status; "What the control plane serves (admin)"; 200 tokens::Status,
    GET "/api/v1/usage" => usage::summary; "Usage totals, a series per bucket and groups (admin: all; org-admin: the org; a service account's key: its own; others: own keys and their teams' service accounts)"; 200 Summary,
    GET "/api/v1/usage/requests" => usage::requests; "The request log, newest first, same scope and filters"; 200 RequestPage,
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
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(Extension(settings))
        .layer(axum::middleware::from_fn_with_state(gw.clone(), record_refusals))
        .with_state(gw)
}

/// Records refused management actions (a 4xx to anything but GET, HEAD and OPTIONS) in the
/// audit log. Changes are recorded by the services that make them, in their transaction.
async fn record_refusals(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    if req.method().is_safe() || !req.uri().path().starts_with("/api/v1/") {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let who = auth::Authed::from_request_parts(&mut parts, &gw).await.ok();
    let (method, path) = (parts.method.clone(), parts.uri.path().to_string());
    let resp = next.run(Request::from_parts(parts, body)).await;
    if let Some(a) = who {
        if resp.status().is_client_error() {
            let action = Action { method: method.as_str(), path: &path, status: resp.status().as_u16() };
            audit::refusal(&gw.db, &a, action).await;
        }
    }
    resp
}

/// `GET /metrics` (control-plane address only; the public listener does not route it), in the
/// Prometheus text format. The metrics live in the gateway's state, some of them as plain
/// counters that `/api/v1/status` reads too, so each scrape registers them in a fresh registry.
async fn metrics(
    axum::extract::State(gw): axum::extract::State<Arc<Gateway>>,
    tasks: Option<Extension<crate::supervisor::Stats>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use prometheus_client::encoding::prometheus_text;
    use prometheus_client::metrics::counter::ConstCounter;
    let mut registry = prometheus_client::registry::Registry::default();
    gw.xds_metrics.register(&mut registry);
    let published = gw.published.load(std::sync::atomic::Ordering::Relaxed);
    registry.register("aqueduct_policy_publications", "Policy snapshots built", ConstCounter::new(published));
    gw.usage_metrics.register(&mut registry);
    if let Some(Extension(tasks)) = tasks {
        tasks.register(&mut registry);
    }
    let mut out = String::new();
    match prometheus_text::encode(&mut out, &registry) {
        Ok(()) => ([(axum::http::header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], out).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
