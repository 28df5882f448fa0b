//! The audit log: every management action, made through the API or the admin UI, with who
//! made it (and with which key, and who created that key), when, the answer's status, and the entity before and after (as the API shows it).
//!
//! API calls are recorded by [`api_layer`] around the management routes; the UI acts through
//! the same handlers without HTTP, so it records through `admin::act`. Both read the before and
//! after states with the caller's own rights through [`snapshot`]. Secrets (`key`) are removed
//! before anything is stored.

use crate::api::auth::Authed;
use crate::gateway::{now, Gateway};
use crate::tenancy::store::{self as ts, Sql, Val};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;

/// One entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    /// Id (newest highest).
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Email of the caller.
    pub actor_email: String,
    /// The key the action was made with (none for the admin UI's session).
    pub token_id: Option<i64>,
    /// Who created that key, when it was someone other than the caller's own doing.
    pub key_created_by: Option<i64>,
    /// `api` or `ui`.
    pub via: String,
    /// HTTP method of the action (the API's, for UI actions too).
    pub method: String,
    /// API path of the action.
    pub path: String,
    /// Status of the answer (4xx: refused, nothing changed).
    pub status: i64,
    /// The entity before, as JSON text.
    pub before_json: Option<String>,
    /// The entity after, as JSON text.
    pub after_json: Option<String>,
}

/// The newest `limit` entries.
pub async fn recent(gw: &Gateway, limit: i64) -> Result<Vec<Entry>, sqlx::Error> {
    recent_db(&gw.db, limit).await
}

/// The newest `limit` entries of the log in `db`.
pub async fn recent_db(db: &crate::db::Db, limit: i64) -> Result<Vec<Entry>, sqlx::Error> {
    let mut q = Sql::new(
        "SELECT id, at, actor_email, token_id, key_created_by, via, method, path, status, before_json, after_json FROM audit_log ORDER BY id DESC LIMIT ",
    );
    q.arg(Val::Int(Some(limit)));
    ts::fetch_all(db, &q).await
}

fn scrub(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("key");
    }
    v
}

/// Stores one entry; a failure is logged, never turned into a failed action.
#[allow(clippy::too_many_arguments)]
pub async fn record(
    gw: &Gateway,
    a: &Authed,
    via: &str,
    method: &str,
    path: &str,
    status: u16,
    before: Option<Value>,
    after: Option<Value>,
) {
    let text = |v: Option<Value>| Val::Text(v.map(scrub).map(|v| v.to_string()).unwrap_or_default());
    let mut q = Sql::new(
        "INSERT INTO audit_log (at, actor_id, actor_email, token_id, key_created_by, via, method, path, status, \
         before_json, after_json) VALUES (",
    );
    q.arg(Val::Int(Some(now())))
        .push(", ")
        .id(a.user_id)
        .push(", ")
        .arg(Val::Text(a.email.clone()))
        .push(", ")
        .arg(Val::Int(a.token_id))
        .push(", ")
        .arg(Val::Int(a.key_created_by))
        .push(", ")
        .arg(Val::Text(via.into()))
        .push(", ")
        .arg(Val::Text(method.into()))
        .push(", ")
        .arg(Val::Text(path.into()))
        .push(", ")
        .arg(Val::Int(Some(i64::from(status))))
        .push(", NULLIF(")
        .arg(text(before))
        .push(", ''), NULLIF(")
        .arg(text(after))
        .push(", ''))");
    if let Err(e) = ts::execute_tx(&gw.db, &[q]).await {
        tracing::error!(error = %e, path, "cannot write the audit log");
    }
}

/// The entity an API path acts on, as the caller sees it through the API (`None` for paths
/// without one, or when it does not exist or is hidden from the caller).
pub async fn snapshot(gw: &Arc<Gateway>, a: &Authed, path: &str) -> Option<Value> {
    use crate::api::{tenancy as t, tokens};
    let parts: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    let (st, a) = (State(gw.clone()), a.clone());
    let id = |i: usize| Path(parts.get(i).copied().unwrap_or_default().to_string());
    let v = match parts.as_slice() {
        ["orgs", _, ..] => crate::admin::api(t::get_org(st, a, id(1)).await).await,
        ["teams", _, "members", user] => return member(gw, parts[1], user).await,
        ["teams", _] => crate::admin::api(t::get_team(st, a, id(1)).await).await,
        ["users", _] => crate::admin::api(t::get_user(st, a, id(1)).await).await,
        ["service-accounts", _, ..] => crate::admin::api(t::get_sa(st, a, id(1)).await).await,
        ["tokens", _, ..] => crate::admin::api(tokens::get_one(st, a, id(1)).await).await,
        _ => return None,
    };
    v.ok()
}

async fn member(gw: &Gateway, team: &str, user: &str) -> Option<Value> {
    #[derive(sqlx::FromRow)]
    struct M {
        team_admin: bool,
    }
    let (team, user) = (team.parse::<i64>().ok()?, user.parse::<i64>().ok()?);
    let mut q = Sql::new("SELECT team_admin FROM team_members WHERE team_id = ");
    q.id(team).push(" AND user_id = ").id(user);
    let m: M = ts::fetch_opt(&gw.db, &q).await.ok().flatten()?;
    Some(
        serde_json::json!({"object": "team_member", "team_id": team.to_string(), "user_id": user.to_string(), "team_admin": m.team_admin}),
    )
}

/// The after-state: the created entity from the answer for a create, else a fresh read.
pub async fn after_state(
    gw: &Arc<Gateway>,
    a: &Authed,
    method: &str,
    path: &str,
    answer: Option<Value>,
) -> Option<Value> {
    match snapshot(gw, a, path).await {
        Some(v) if method != "DELETE" => Some(v),
        _ if method == "POST" => answer,
        _ => None,
    }
}

/// Middleware of the management API: records every authenticated request that may change
/// something (any method but GET, HEAD and OPTIONS).
pub async fn api_layer(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    if req.method().is_safe() || !req.uri().path().starts_with("/api/v1/") {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let who = Authed::from_request_parts(&mut parts, &gw).await.ok();
    let method: Method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let before = match &who {
        Some(a) => snapshot(&gw, a, &path).await,
        None => None,
    };
    let resp = next.run(Request::from_parts(parts, body)).await;
    let Some(a) = who else {
        return resp;
    };
    let status = resp.status();
    let (rparts, rbody) = resp.into_parts();
    let bytes = match axum::body::to_bytes(rbody, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            record(&gw, &a, "api", method.as_str(), &path, status.as_u16(), before, None).await;
            return Response::from_parts(rparts, axum::body::Body::empty());
        }
    };
    let after = if status.is_success() {
        let answer = serde_json::from_slice::<Value>(&bytes).ok();
        after_state(&gw, &a, method.as_str(), &path, answer).await
    } else {
        None
    };
    record(&gw, &a, "api", method.as_str(), &path, status.as_u16(), before, after).await;
    Response::from_parts(rparts, axum::body::Body::from(bytes)).into_response()
}
