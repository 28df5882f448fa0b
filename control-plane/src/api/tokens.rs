//! `/api/v1/tokens`: create, list, read and revoke API keys.

use super::error::{json_rejection, Error};
use crate::gateway::{now, Gateway};
use crate::tokens::store::{self, Caller, TokenRow};
use crate::tokens::{generate_key, hash_hex, preview};
use aqueduct_policy::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The authenticated caller of a management route.
pub struct Authed(pub Caller);

impl FromRequestParts<Arc<Gateway>> for Authed {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        gw: &Arc<Gateway>,
    ) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        // Same credentials as the model API: `Authorization: Bearer` or `x-api-key`.
        let key = header("authorization")
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k.trim().to_string())
            .or_else(|| header("x-api-key").map(|k| k.trim().to_string()))
            .filter(|k| !k.is_empty())
            .ok_or_else(ApiError::missing_key)?;
        // Looked up by hash: the database compares digests, never the secret itself.
        let caller = store::caller(&gw.db, &hash_hex(&key), now())
            .await?
            .ok_or_else(ApiError::invalid_key)?;
        Ok(Authed(caller))
    }
}

impl Authed {
    fn require_admin(&self) -> Result<(), Error> {
        if self.0.role == "admin" {
            Ok(())
        } else {
            Err(ApiError::new(403, "This action needs the admin role.")
                .code("forbidden")
                .into())
        }
    }
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A name to recognise the key by.
    pub name: String,
    /// Owner; defaults to the caller.
    #[serde(default)]
    pub user_id: Option<i64>,
    /// Expiry as RFC 3339 (`2027-01-31T00:00:00Z`); none means the key never expires.
    #[serde(default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A created key: the only time `key` is ever shown.
#[derive(Debug, Serialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    row: TokenView,
    /// The key itself. Store it now; it cannot be shown again.
    key: String,
}

/// A key as the API shows it.
#[derive(Debug, Serialize)]
pub struct TokenView {
    id: i64,
    user_id: i64,
    name: String,
    preview: String,
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

impl From<TokenRow> for TokenView {
    fn from(r: TokenRow) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            name: r.name,
            preview: r.preview,
            created_at: rfc3339(r.created_at),
            expires_at: r.expires_at.map(rfc3339),
            last_used_at: r.last_used_at.map(rfc3339),
            revoked_at: r.revoked_at.map(rfc3339),
        }
    }
}

/// `POST /api/v1/tokens`
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    auth: Authed,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> Result<impl IntoResponse, Error> {
    auth.require_admin()?;
    let Json(req) = body.map_err(json_rejection)?;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(ApiError::bad_request("'name' must be 1 to 255 characters.")
            .param("name")
            .into());
    }
    let now = now();
    let expires_at = req.expires_at.map(|t| t.timestamp());
    if expires_at.is_some_and(|t| t <= now) {
        return Err(ApiError::bad_request("'expires_at' must be in the future.")
            .param("expires_at")
            .into());
    }
    let user_id = req.user_id.unwrap_or(auth.0.user_id);
    if !store::user_exists(&gw.db, user_id).await? {
        return Err(ApiError::new(404, format!("User {user_id} not found."))
            .param("user_id")
            .into());
    }
    let key = generate_key();
    let row = store::insert(
        &gw.db,
        user_id,
        name,
        &hash_hex(&key),
        &preview(&key),
        now,
        expires_at,
    )
    .await?;
    tracing::info!(
        token = row.id,
        user = user_id,
        by = auth.0.user_id,
        "token created"
    );
    gw.request_rebuild();
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            row: row.into(),
            key,
        }),
    ))
}

/// `GET /api/v1/tokens`
pub async fn list(
    State(gw): State<Arc<Gateway>>,
    auth: Authed,
) -> Result<impl IntoResponse, Error> {
    auth.require_admin()?;
    let data: Vec<TokenView> = store::list(&gw.db)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(serde_json::json!({ "object": "list", "data": data })))
}

fn token_not_found(id: &str) -> Error {
    ApiError::new(404, format!("Token {id} not found."))
        .code("not_found")
        .into()
}

fn parse_id(id: &str) -> Result<i64, Error> {
    id.parse::<i64>().map_err(|_| token_not_found(id))
}

/// `GET /api/v1/tokens/{id}`
pub async fn get_one(
    State(gw): State<Arc<Gateway>>,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Error> {
    auth.require_admin()?;
    let row = store::get(&gw.db, parse_id(&id)?)
        .await?
        .ok_or_else(|| token_not_found(&id))?;
    Ok(Json(TokenView::from(row)))
}

/// `DELETE /api/v1/tokens/{id}`: revokes the key (its row and history stay).
pub async fn revoke(
    State(gw): State<Arc<Gateway>>,
    auth: Authed,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Error> {
    auth.require_admin()?;
    if !store::revoke(&gw.db, parse_id(&id)?, now()).await? {
        return Err(token_not_found(&id));
    }
    tracing::info!(token = %id, by = auth.0.user_id, "token revoked");
    gw.request_rebuild();
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/status`: what the control plane is serving.
pub async fn status(
    State(gw): State<Arc<Gateway>>,
    auth: Authed,
) -> Result<impl IntoResponse, Error> {
    auth.require_admin()?;
    let snap = gw.cache.current();
    let versions: serde_json::Map<String, serde_json::Value> = snap
        .types
        .iter()
        .map(|(t, s)| (t.to_string(), s.version.clone().into()))
        .collect();
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
    })))
}
