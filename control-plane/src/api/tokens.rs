//! `/api/v1/tokens`: create, list, read, change, revoke and regenerate API keys; `/api/v1/status`.

use super::auth::Authed;
use super::common::*;
use super::error::Error;
use super::tenancy::{load_sa, load_team, load_user, manages_team};
use crate::gateway::{now, Gateway};
use crate::tenancy::authz::{KeyTarget, Target};
use crate::tenancy::model::Role;
use crate::tenancy::store::{self as ts, Sql, TokenFull, Val, TOKEN_FROM};
use crate::tokens::{generate_key, hash_hex, preview};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

type Body = Result<Json<Value>, JsonRejection>;

/// Policy fields accepted by PATCH (the columns every level carries).
const POLICY_KEYS: &[&str] = crate::tenancy::model::POLICY_COLUMNS;

/// A key as the API shows it (never the key itself).
pub fn token_view(k: &TokenFull) -> Value {
    with_policy(
        json!({
            "object": "token",
            "id": id_str(k.id),
            "user_id": id_str(k.user_id),
            "service_account_id": k.service_account_id.map(id_str),
            "name": k.name,
            "preview": k.preview,
            "created_at": rfc3339(k.created_at),
            "expires_at": k.expires_at.map(rfc3339),
            "last_used_at": k.last_used_at.map(rfc3339),
            "revoked_at": k.revoked_at.map(rfc3339),
        }),
        &k.policy,
    )
}

/// What a new key row holds besides its secret.
pub struct NewKey<'a> {
    /// Owner.
    pub user_id: i64,
    /// Who creates it.
    pub created_by: i64,
    /// Name.
    pub name: &'a str,
    /// Expiry.
    pub expires_at: Option<i64>,
    /// Whether a manager sets the expiry (then it binds the holder).
    pub managed: bool,
    /// Service account id, or [`ts::NEW_ID`] inside [`ts::insert_tx`].
    pub sa: Option<&'a str>,
}

/// A fresh key and the INSERT storing it (by hash).
pub fn new_key_row(k: &NewKey<'_>, now: i64) -> (String, Sql) {
    let NewKey { user_id, created_by, name, expires_at, managed, sa } = *k;
    let key = generate_key();
    let mut q = Sql::new(
        "INSERT INTO tokens (user_id, created_by, name, key_hash, preview, created_at, expires_at, max_expires_at, \
         service_account_id) VALUES (",
    );
    q.id(user_id)
        .push(", ")
        .id(created_by)
        .push(", ")
        .arg(Val::Text(name.to_string()))
        .push(", ")
        .arg(Val::Text(hash_hex(&key)))
        .push(", ")
        .arg(Val::Text(preview(&key)))
        .push(", ")
        .arg(Val::Int(Some(now)))
        .push(", ")
        .arg(Val::Int(expires_at))
        .push(", ")
        .arg(Val::Int(expires_at.filter(|_| managed)))
        .push(", ")
        .push(sa.unwrap_or("NULL"))
        .push(") RETURNING id");
    (key, q)
}

async fn load_token(gw: &Gateway, id: i64) -> Result<Option<TokenFull>, Error> {
    let mut q =
        Sql::new(format!("SELECT {} FROM {TOKEN_FROM} WHERE k.deleted_at IS NULL AND k.id = ", ts::token_cols()));
    q.id(id);
    Ok(ts::fetch_opt(&gw.db, &q).await?)
}

/// A token's view by id (no visibility check; for responses of the caller's own writes).
pub async fn token_view_by_id(gw: &Gateway, id: i64) -> Result<Value, Error> {
    let k = load_token(gw, id).await?.ok_or_else(|| not_found("Token", &id_str(id)))?;
    Ok(token_view(&k))
}

fn token_visibility(a: &Authed, q: &mut Sql) {
    if a.is_admin() {
        return;
    }
    if a.is_service_account() {
        q.push(" AND 1 = 0");
        return;
    }
    q.push(" AND (k.user_id = ").id(a.user_id);
    if a.role == Role::OrgAdmin {
        q.push(" OR u.org_id = ").arg(Val::Int(a.org_id));
    }
    q.push(" OR s.team_id IN (SELECT team_id FROM team_members WHERE team_admin AND user_id = ")
        .id(a.user_id)
        .push("))");
}

/// The key as the authorization model sees it.
fn key_target(k: &TokenFull) -> KeyTarget {
    KeyTarget {
        owner: Target { id: k.user_id, role: Role::parse(&k.owner_role).unwrap_or(Role::User), org_id: k.owner_org_id },
        service_account_team: k.sa_team_id.zip(k.sa_org_id),
    }
}

/// Whether the caller sees `k` (see [`crate::tenancy::authz::Actor::sees_key`]).
fn sees_token(a: &Authed, k: &TokenFull) -> bool {
    a.sees_key(&key_target(k))
}

async fn visible_token(gw: &Gateway, a: &Authed, id: &str) -> Result<TokenFull, Error> {
    let tid = parse_id(id).ok_or_else(|| not_found("Token", id))?;
    match load_token(gw, tid).await? {
        Some(k) if sees_token(a, &k) => Ok(k),
        _ => Err(not_found("Token", id)),
    }
}

/// `POST /api/v1/tokens`: a personal key (for the caller, or for `user_id`: admin, or org-admin
/// of the user's org) or a service account's key (`service_account_id`; one live key per
/// account). The key is in the answer once.
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    Extension(cfg): Extension<TenancySettings>,
    a: Authed,
    body: Body,
) -> Result<impl IntoResponse, Error> {
    let allowed: Vec<&str> = ["name", "expires_at", "user_id", "service_account_id"]
        .into_iter()
        .chain(POLICY_KEYS.iter().copied())
        .collect();
    let mut f = Fields::parse(body, &allowed)?;
    let name = f.req_str("name", MAX_NAME)?;
    let now = now();
    let expires_at = f.opt_time("expires_at")?.flatten();
    if expires_at.is_some_and(|t| t <= now) {
        return Err(bad("expires_at", "'expires_at' must be in the future."));
    }
    let user_id = f.opt_id("user_id")?;
    let sa_id = f.opt_id("service_account_id")?;
    let policy = f.policy()?;
    let (owner, owner_org, sa, managed) = if let Some(sid) = sa_id {
        let sa_nf = || not_found("Service account", &id_str(sid)).with_param("service_account_id");
        let s = load_sa(&gw, sid).await?.ok_or_else(sa_nf)?;
        let t = load_team(&gw, s.team_id).await?.ok_or_else(sa_nf)?;
        if !super::tenancy::sees_team(&a, &t) {
            return Err(sa_nf());
        }
        if !manages_team(&a, &t) {
            return Err(forbidden("Keys of service accounts need the admin, org-admin or team-admin role."));
        }
        if user_id.is_some_and(|u| u != s.owner_user_id) {
            return Err(bad("user_id", "A service account's key belongs to the account's owner."));
        }
        let managed = true;
        if s.token_id.is_some() {
            return Err(conflict(
                "service_account_id",
                "The service account already has a live key; regenerate or revoke it instead.",
            ));
        }
        (s.owner_user_id, Some(t.org_id), Some(sid), managed)
    } else {
        let uid = user_id.unwrap_or(a.user_id);
        let u = load_user(&gw, uid).await?;
        let Some(u) = u else {
            return Err(not_found("User", &id_str(uid)).with_param("user_id"));
        };
        let owner = super::tenancy::target(&u);
        if !a.acts_for(&owner) {
            let visible = a.is_admin() || (a.org_id.is_some() && a.org_id == u.org_id);
            return Err(if visible {
                forbidden("Keys for other users need a role above theirs (admin, or org-admin for the plain users of its org).")
                    .with_param("user_id")
            } else {
                not_found("User", &id_str(uid)).with_param("user_id")
            });
        }
        let mut c = Sql::new(
            "SELECT COUNT(*) FROM tokens WHERE service_account_id IS NULL AND revoked_at IS NULL AND deleted_at IS NULL AND user_id = ",
        );
        c.id(uid).push(" AND (expires_at IS NULL OR expires_at > ").arg(Val::Int(Some(now))).push(")");
        if ts::scalar(&gw.db, &c).await?.unwrap_or(0) >= cfg.max_keys_per_user {
            return Err(aqueduct_policy::ApiError::new(
                409,
                format!(
                    "The user has the maximum of {} live personal keys (AQUEDUCT_MAX_KEYS_PER_USER); revoke one first.",
                    cfg.max_keys_per_user
                ),
            )
            .code("quota_exceeded")
            .into());
        }
        (uid, u.org_id, None, a.outranks(&owner))
    };
    super::tenancy::check_policy_rights(&a, owner_org, &policy)?;
    let sa_text = sa.map(id_str);
    // An expiry a manager sets binds the key's holder (who may shorten it, never lift it).
    let new =
        NewKey { user_id: owner, created_by: a.user_id, name: &name, expires_at, managed, sa: sa_text.as_deref() };
    let (key, ins) = new_key_row(&new, now);
    let rest: Vec<Sql> = update_sql("tokens", &policy.0, 0, "")
        .map(|mut s| {
            let n = s.args.len();
            s.text = s.text.replace(&format!("id = ${n}"), &format!("id = {}", ts::NEW_ID));
            s.args.pop();
            s
        })
        .into_iter()
        .collect();
    let id = ts::insert_tx(&gw.db, &ins, &rest).await?;
    tracing::info!(token = id, user = owner, by = a.user_id, "token created");
    gw.key_changed(id).await;
    let mut v = token_view_by_id(&gw, id).await?;
    v["key"] = key.into();
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /api/v1/tokens`: the keys the caller sees, revoked ones included, by id.
pub async fn list(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Query(pq): Query<PageQuery>,
) -> Result<impl IntoResponse, Error> {
    let page = pq.page()?;
    let mut q = Sql::new(format!("SELECT {} FROM {TOKEN_FROM} WHERE k.deleted_at IS NULL", ts::token_cols()));
    token_visibility(&a, &mut q);
    paginate(&mut q, "k", page);
    let rows: Vec<TokenFull> = ts::fetch_all(&gw.db, &q).await?;
    Ok(list_json(rows, page, token_view))
}

/// `GET /api/v1/tokens/{id}`
pub async fn get_one(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Path<String>) -> Result<Json<Value>, Error> {
    Ok(Json(token_view(&visible_token(&gw, &a, &id).await?)))
}

/// Who may change, revoke or regenerate a visible key (see
/// [`crate::tenancy::authz::Actor::may_modify_key`]): never someone the owner outranks.
fn may_modify(a: &Authed, k: &TokenFull) -> bool {
    a.may_modify_key(&key_target(k))
}

/// `PATCH /api/v1/tokens/{id}`: `name`, `expires_at`, and (admin, org-admin) policy fields.
pub async fn patch(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, Error> {
    let k = visible_token(&gw, &a, &id).await?;
    if !may_modify(&a, &k) {
        return Err(forbidden("You may not change this key."));
    }
    let allowed: Vec<&str> = ["name", "expires_at"].into_iter().chain(POLICY_KEYS.iter().copied()).collect();
    let mut f = Fields::parse(body, &allowed)?;
    let mut sets = Vec::new();
    if let Some(n) = f.req_str_opt("name")? {
        sets.push(("name", Val::Text(n)));
    }
    if let Some(e) = f.opt_time("expires_at")? {
        if e.is_some_and(|t| t <= now()) {
            return Err(bad("expires_at", "'expires_at' must be in the future."));
        }
        if a.manages_key(&key_target(&k)) {
            // A manager's expiry binds the holder from now on; none lifts the bond.
            sets.push(("max_expires_at", Val::Int(e)));
        } else if let Some(max) = k.max_expires_at {
            if e.is_none_or(|t| t > max) {
                return Err(forbidden(
                    "An admin or manager set this key's expiry; you may bring it forward, not remove or extend it.",
                )
                .with_param("expires_at"));
            }
        }
        sets.push(("expires_at", Val::Int(e)));
    }
    let policy = f.policy()?;
    super::tenancy::check_policy_rights(&a, k.owner_org_id, &policy)?;
    sets.extend(policy.0);
    if let Some(q) = update_sql("tokens", &sets, k.id, " AND deleted_at IS NULL") {
        ts::execute_tx(&gw.db, &[q]).await?;
        gw.key_changed(k.id).await;
    }
    get_one(State(gw), a, Path(id)).await
}

/// `DELETE /api/v1/tokens/{id}`: revokes the key (its row and history stay); 404 if already
/// revoked.
pub async fn revoke(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Error> {
    let k = visible_token(&gw, &a, &id).await?;
    if !may_modify(&a, &k) {
        return Err(forbidden("You may not revoke this key."));
    }
    let mut q = Sql::new("UPDATE tokens SET revoked_at = ");
    q.arg(Val::Int(Some(now()))).push(" WHERE revoked_at IS NULL AND id = ").id(k.id);
    if ts::execute_tx(&gw.db, &[q]).await?.first().copied().unwrap_or(0) == 0 {
        return Err(not_found("Token", &id));
    }
    tracing::info!(token = %id, by = a.user_id, "token revoked");
    gw.key_changed(k.id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/tokens/{id}/regenerate`: a new secret on the same row (same id, name, expiry
/// and policy); the old secret stops working. The new key is in the answer once.
pub async fn regenerate(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Error> {
    let k = visible_token(&gw, &a, &id).await?;
    if !may_modify(&a, &k) {
        return Err(forbidden("You may not regenerate this key."));
    }
    if k.revoked_at.is_some() {
        return Err(conflict("id", "The key is revoked; create a new one instead."));
    }
    let key = generate_key();
    let mut q = Sql::new("UPDATE tokens SET key_hash = ");
    q.arg(Val::Text(hash_hex(&key)))
        .push(", preview = ")
        .arg(Val::Text(preview(&key)))
        .push(" WHERE revoked_at IS NULL AND deleted_at IS NULL AND id = ")
        .id(k.id);
    if ts::execute_tx(&gw.db, &[q]).await?.first().copied().unwrap_or(0) == 0 {
        return Err(not_found("Token", &id));
    }
    tracing::info!(token = %id, by = a.user_id, "token regenerated");
    gw.key_changed(k.id).await;
    let mut v = token_view_by_id(&gw, k.id).await?;
    v["key"] = key.into();
    Ok(Json(v))
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
