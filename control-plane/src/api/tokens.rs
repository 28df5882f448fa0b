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

/// What the control plane is serving (`GET /api/v1/status`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `sqlite` or `postgres`.
    pub database: String,
    /// The model names the gateway serves.
    pub models: Vec<String>,
    /// The version last built per xDS resource type.
    pub xds_versions: std::collections::BTreeMap<String, String>,
    /// Policy snapshots built since start.
    pub policy_publications: u64,
    /// xDS streams and acknowledgements.
    pub xds: XdsStatus,
    /// The key journal the filters poll.
    pub key_journal: JournalStatus,
}

/// xDS streams and acknowledgements since start.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct XdsStatus {
    /// Streams open now.
    pub streams: u64,
    /// Configurations Envoy accepted.
    pub acks: u64,
    /// Configurations Envoy refused.
    pub nacks: u64,
}

/// The key journal: key changes the filters apply between snapshots.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct JournalStatus {
    /// The journal's identity (a new one with every control-plane process).
    pub epoch: u64,
    /// Changes recorded so far.
    pub position: u64,
    /// Changes held for filters that have not caught up.
    pub held: usize,
}

/// `GET /api/v1/status`: what the control plane is serving (admin).
pub async fn status(State(gw): State<Arc<Gateway>>, a: Authed) -> Result<Json<Status>, Error> {
    a.require_admin()?;
    let snap = gw.cache.current();
    Ok(Json(Status {
        database: gw.db.backend().to_string(),
        models: gw.models().groups.iter().map(|g| g.name.clone()).collect(),
        xds_versions: snap.types.iter().map(|(t, s)| (t.to_string(), s.version.clone())).collect(),
        policy_publications: gw.published.load(Ordering::Relaxed),
        xds: XdsStatus {
            streams: gw.xds_metrics.streams.load(Ordering::Relaxed),
            acks: gw.xds_metrics.acks.load(Ordering::Relaxed),
            nacks: gw.xds_metrics.nacks.load(Ordering::Relaxed),
        },
        key_journal: JournalStatus {
            epoch: gw.journal.epoch(),
            position: gw.journal.mark().seq,
            held: gw.journal.len(),
        },
    }))
}
