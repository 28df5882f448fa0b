//! `/api/v1/tokens`: parse, call [`crate::tokens::service`], render; and `/api/v1/status`.

use super::auth::Authed;
use super::error::Error;
use super::{body, Body};
use crate::domain::input::{PageQuery, TenancySettings};
use crate::domain::List;
use crate::gateway::Gateway;
use crate::tokens::service::{self as svc, Token};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `POST /api/v1/tokens`: a personal key or a service account's key; the key is in the answer
/// once.
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    Extension(cfg): Extension<TenancySettings>,
    a: Authed,
    b: Body,
) -> Result<(StatusCode, Json<Token>), Error> {
    Ok((StatusCode::CREATED, Json(svc::create(&gw, cfg, &a, body(b)).await?)))
}

/// `GET /api/v1/tokens`: the keys the caller sees, revoked ones included, by id.
pub async fn list(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Query(q): Query<PageQuery>,
) -> Result<Json<List<Token>>, Error> {
    Ok(Json(svc::list(&gw, &a, q.page()?).await?))
}

/// `GET /api/v1/tokens/{id}`
pub async fn get_one(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Path<String>) -> Result<Json<Token>, Error> {
    Ok(Json(svc::get(&gw, &a, &id).await?))
}

/// `PATCH /api/v1/tokens/{id}`: `name`, `expires_at`, and (admin, org-admin) policy fields.
pub async fn patch(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
    b: Body,
) -> Result<Json<Token>, Error> {
    Ok(Json(svc::update(&gw, &a, &id, body(b)).await?))
}

/// `DELETE /api/v1/tokens/{id}`: revokes the key; 404 if already revoked.
pub async fn revoke(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Path<String>) -> Result<StatusCode, Error> {
    svc::revoke(&gw, &a, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/tokens/{id}/regenerate`: a new secret on the same row, in the answer once.
pub async fn regenerate(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<Json<Token>, Error> {
    Ok(Json(svc::regenerate(&gw, &a, &id).await?))
}

/// `GET /api/v1/status`: what the control plane is serving (admin).
pub async fn status(State(gw): State<Arc<Gateway>>, a: Authed) -> Result<impl IntoResponse, Error> {
    a.require_admin()?;
    let snap = gw.cache.current();
    let versions: serde_json::Map<String, serde_json::Value> =
        snap.types.iter().map(|(t, s)| (t.to_string(), s.version.clone().into())).collect();
    Ok(Json(serde_json::json!({
        "database": gw.db.backend(),
        "models": gw.models().groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>(),
        "xds_versions": versions,
        "policy_publications": gw.published.load(Ordering::Relaxed),
        "xds": {
            "streams": gw.xds_metrics.streams.load(Ordering::Relaxed),
            "acks": gw.xds_metrics.acks.load(Ordering::Relaxed),
            "nacks": gw.xds_metrics.nacks.load(Ordering::Relaxed),
        },
        "key_journal": {
            "epoch": gw.journal.epoch(),
            "position": gw.journal.mark().seq,
            "held": gw.journal.len(),
        },
    })))
}
