//! The keys service: create, list, read, change, revoke and regenerate API keys. Typed input
//! in, typed keys out (never the secret, except once on creation and regeneration); who may
//! do what is asked of [`crate::tenancy::authz`]; every change and its audit entry are written
//! in one transaction. The management API and the admin UI both call these functions.

use crate::audit::{self, Action};
use crate::auth::Authed;
use crate::domain::input::*;
use crate::domain::{Error, List};
use crate::gateway::{now, Gateway};
use crate::tenancy::authz::check_policy_rights;
use crate::tenancy::model::{PolicyFields, Role};
use crate::tenancy::store::{self as ts, NewKey, Sql, TokenFull, Tx, Val, TOKEN_FROM};
use crate::tokens::{generate_key, hash_hex, preview};
use utoipa::ToSchema;

/// A key as the API shows it (never the key itself).
#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct Token {
    /// Always `token`.
    pub object: String,
    /// Id.
    pub id: String,
    /// Owner (for a service account's key, the account's owner).
    pub user_id: String,
    /// Set for a service account's key.
    pub service_account_id: Option<String>,
    /// Name.
    pub name: String,
    /// `sk-…abcd`: enough to recognise the key, never to use it.
    pub preview: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; none: never expires.
    pub expires_at: Option<String>,
    /// RFC 3339 of the last request made with it (set as its usage is stored).
    pub last_used_at: Option<String>,
    /// RFC 3339; a revoked key is refused everywhere.
    pub revoked_at: Option<String>,
    /// Exclusions and limits.
    #[serde(flatten)]
    pub policy: PolicyFields,
    /// The secret, shown once (creation and regeneration only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl From<&TokenFull> for Token {
    fn from(k: &TokenFull) -> Self {
        Self {
            object: "token".into(),
            id: id_str(k.id),
            user_id: id_str(k.user_id),
            service_account_id: k.service_account_id.map(id_str),
            name: k.name.clone(),
            preview: k.preview.clone(),
            created_at: rfc3339(k.created_at),
            expires_at: k.expires_at.map(rfc3339),
            last_used_at: k.last_used_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
            policy: k.policy.clone(),
            key: None,
        }
    }
}

/// A new key.
#[derive(Debug, Clone, Default, ToSchema)]
pub struct NewToken {
    /// Name.
    pub name: String,
    /// RFC 3339, in the future; none: never expires.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<i64>,
    /// Owner: the caller when absent; another user needs a role above theirs.
    #[schema(value_type = Option<String>)]
    pub user_id: Option<i64>,
    /// A service account (one live key per account) instead of a personal key.
    #[schema(value_type = Option<String>)]
    pub service_account_id: Option<i64>,
    /// Exclusions and limits.
    #[serde(flatten)]
    #[schema(inline)]
    pub policy: PolicyPatch,
}

impl Input for NewToken {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        Ok(Self {
            name: f.req_str("name", MAX_NAME)?,
            expires_at: f.opt_time("expires_at")?.flatten(),
            user_id: f.opt_id("user_id")?,
            service_account_id: f.opt_id("service_account_id")?,
            policy: f.policy()?,
        })
    }
}

/// Changes to a key; absent fields stay.
#[derive(Debug, Clone, Default, ToSchema)]
pub struct TokenChanges {
    /// New name.
    pub name: Option<String>,
    /// RFC 3339 in the future, or null for never; an expiry a manager set may only be brought
    /// forward by the key's holder.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<i64>>,
    /// Exclusions and limits (admin, org-admin).
    #[serde(flatten)]
    #[schema(inline)]
    pub policy: PolicyPatch,
}

impl Input for TokenChanges {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        Ok(Self { name: f.req_str_opt("name")?, expires_at: f.opt_time("expires_at")?, policy: f.policy()? })
    }
}

/// A key's entry by id, read in `tx` (no visibility check; for answers to the caller's own
/// writes).
pub async fn token_in(tx: &mut Tx, id: i64) -> Result<Token, Error> {
    let k = ts::load_token(tx, id).await?.ok_or_else(|| not_found("Token", &id_str(id)))?;
    Ok(Token::from(&k))
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

async fn visible_token(tx: &mut Tx, a: &Authed, id: &str) -> Result<TokenFull, Error> {
    let tid = parse_id(id).ok_or_else(|| not_found("Token", id))?;
    match ts::load_token(tx, tid).await? {
        Some(k) if a.sees_key(&k.target()) => Ok(k),
        _ => Err(not_found("Token", id)),
    }
}

/// Writes the audit entry (the key as the API shows it, never its secret) and commits.
async fn commit(
    tx: Tx,
    a: &Authed,
    method: &str,
    path: &str,
    status: u16,
    before: Option<&Token>,
    after: Option<&Token>,
) -> Result<(), Error> {
    let (before, after) = (before.and_then(audit::state), after.and_then(audit::state));
    Ok(audit::commit(tx, a, Action { method, path, status }, before, after).await?)
}

/// Creates a personal key (for the caller, or for `user_id`: someone the caller outranks) or a
/// service account's key (one live key per account). The key is in the answer once.
pub async fn create(gw: &Gateway, cfg: TenancySettings, a: &Authed, input: Parsed<NewToken>) -> Result<Token, Error> {
    let NewToken { name, expires_at, user_id, service_account_id, policy } = input?;
    let now = now();
    if expires_at.is_some_and(|t| t <= now) {
        return Err(bad("expires_at", "'expires_at' must be in the future."));
    }
    let mut tx = Tx::begin(&gw.db).await?;
    let (owner, owner_org, sa, managed) = if let Some(sid) = service_account_id {
        let sa_nf = || not_found("Service account", &id_str(sid)).with_param("service_account_id");
        let s = ts::load_sa(&mut tx, sid).await?.ok_or_else(sa_nf)?;
        let t = ts::load_team(&mut tx, s.team_id).await?.ok_or_else(sa_nf)?;
        if !a.sees_team(t.id, t.org_id) {
            return Err(sa_nf());
        }
        if !a.manages_team(t.id, t.org_id) {
            return Err(forbidden("Keys of service accounts need the admin, org-admin or team-admin role."));
        }
        if user_id.is_some_and(|u| u != s.owner_user_id) {
            return Err(bad("user_id", "A service account's key belongs to the account's owner."));
        }
        if s.token_id.is_some() {
            return Err(conflict(
                "service_account_id",
                "The service account already has a live key; regenerate or revoke it instead.",
            ));
        }
        (s.owner_user_id, Some(t.org_id), Some(sid), true)
    } else {
        let uid = user_id.unwrap_or(a.user_id);
        let Some(u) = ts::load_user(&mut tx, uid).await? else {
            return Err(not_found("User", &id_str(uid)).with_param("user_id"));
        };
        let owner = u.target();
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
        if tx.scalar(&c).await?.unwrap_or(0) >= cfg.max_keys_per_user {
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
    check_policy_rights(a, owner_org, &policy)?;
    // An expiry a manager sets binds the key's holder (who may shorten it, never lift it).
    let new = NewKey { user_id: owner, created_by: a.user_id, name: &name, expires_at, managed, sa };
    let (id, key) = ts::insert_key(&mut tx, &new, now).await?;
    if let Some(q) = ts::update_sql("tokens", &policy.0, id, "") {
        tx.execute(&q).await?;
    }
    let mut t = token_in(&mut tx, id).await?;
    commit(tx, a, "POST", "/api/v1/tokens", 201, None, Some(&t)).await?;
    tracing::info!(token = id, user = owner, by = a.user_id, "token created");
    gw.key_changed(id).await;
    t.key = Some(key);
    Ok(t)
}

/// The keys the caller sees, revoked ones included, by id.
pub async fn list(gw: &Gateway, a: &Authed, page: Page) -> Result<List<Token>, Error> {
    let mut q = Sql::new(format!("SELECT {} FROM {TOKEN_FROM} WHERE k.deleted_at IS NULL", ts::token_cols()));
    token_visibility(a, &mut q);
    paginate(&mut q, "k", page);
    let rows: Vec<TokenFull> = ts::fetch_all(&gw.db, &q).await?;
    Ok(List::page(rows, page))
}

/// One key the caller sees.
pub async fn get(gw: &Gateway, a: &Authed, id: &str) -> Result<Token, Error> {
    let mut tx = Tx::read(&gw.db).await?;
    Ok(Token::from(&visible_token(&mut tx, a, id).await?))
}

/// Changes a key's name, expiry and (admin, org-admin) policy.
pub async fn update(gw: &Gateway, a: &Authed, id: &str, input: Parsed<TokenChanges>) -> Result<Token, Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let k = visible_token(&mut tx, a, id).await?;
    if !a.may_modify_key(&k.target()) {
        return Err(forbidden("You may not change this key."));
    }
    let TokenChanges { name, expires_at, policy } = input?;
    let mut sets = Vec::new();
    if let Some(n) = name {
        sets.push(("name", Val::Text(n)));
    }
    if let Some(e) = expires_at {
        if e.is_some_and(|t| t <= now()) {
            return Err(bad("expires_at", "'expires_at' must be in the future."));
        }
        if a.manages_key(&k.target()) {
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
    check_policy_rights(a, k.owner_org_id, &policy)?;
    sets.extend(policy.0);
    let Some(q) = ts::update_sql("tokens", &sets, k.id, " AND deleted_at IS NULL") else {
        return Ok(Token::from(&k));
    };
    tx.execute(&q).await?;
    let after = token_in(&mut tx, k.id).await?;
    commit(tx, a, "PATCH", &format!("/api/v1/tokens/{}", k.id), 200, Some(&Token::from(&k)), Some(&after)).await?;
    gw.key_changed(k.id).await;
    Ok(after)
}

/// Revokes a key (its row and history stay); 404 if already revoked.
pub async fn revoke(gw: &Gateway, a: &Authed, id: &str) -> Result<(), Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let k = visible_token(&mut tx, a, id).await?;
    if !a.may_modify_key(&k.target()) {
        return Err(forbidden("You may not revoke this key."));
    }
    let mut q = Sql::new("UPDATE tokens SET revoked_at = ");
    q.arg(Val::Int(Some(now()))).push(" WHERE revoked_at IS NULL AND id = ").id(k.id);
    if tx.execute(&q).await? == 0 {
        return Err(not_found("Token", id));
    }
    commit(tx, a, "DELETE", &format!("/api/v1/tokens/{}", k.id), 204, Some(&Token::from(&k)), None).await?;
    tracing::info!(token = %id, by = a.user_id, "token revoked");
    gw.key_changed(k.id).await;
    Ok(())
}

/// A new secret on the same row (same id, name, expiry and policy); the old secret stops
/// working. The new key is in the answer once.
pub async fn regenerate(gw: &Gateway, a: &Authed, id: &str) -> Result<Token, Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let k = visible_token(&mut tx, a, id).await?;
    if !a.may_modify_key(&k.target()) {
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
    if tx.execute(&q).await? == 0 {
        return Err(not_found("Token", id));
    }
    let mut after = token_in(&mut tx, k.id).await?;
    let path = format!("/api/v1/tokens/{}/regenerate", k.id);
    commit(tx, a, "POST", &path, 200, Some(&Token::from(&k)), Some(&after)).await?;
    tracing::info!(token = %id, by = a.user_id, "token regenerated");
    gw.key_changed(k.id).await;
    after.key = Some(key);
    Ok(after)
}
