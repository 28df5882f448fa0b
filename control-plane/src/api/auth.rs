//! Who is calling: the `Authed` extractor and the role checks every route uses.

use super::error::Error;
use crate::gateway::{now, Gateway};
use crate::tenancy::authz::{self, Actor};
use crate::tenancy::model::Role;
use crate::tenancy::store as tstore;
use crate::tokens::hash_hex;
use crate::tokens::store;
use aqueduct_policy::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::sync::Arc;

/// The authenticated caller of a management route: a live key (not revoked, deleted or
/// expired) of an active, not deleted user, or else the admin UI's session cookie (a live
/// session of such a user; state-changing requests must then carry the session's CSRF token in
/// `x-csrf-token`). Both give the same [`Actor`], so the role rules are the same. A service
/// account's key is an actor of its own with no management rights: it reaches only
/// [`authz::SERVICE_ACCOUNT_ROUTES`]. What the actor may do is decided in [`authz`] alone.
#[derive(Debug, Clone)]
pub struct Authed {
    /// Who acts, as the authorization model sees it.
    pub actor: Actor,
    /// The user's email (for a service account's key: the account's owner's, to attribute).
    pub email: String,
    /// The key used; `None` when signed in by a UI session.
    pub token_id: Option<i64>,
    /// Who created the key used, when known (the audit log names them).
    pub key_created_by: Option<i64>,
    /// The UI session's CSRF token; `None` when called with a key.
    pub csrf: Option<String>,
}

impl std::ops::Deref for Authed {
    type Target = Actor;
    fn deref(&self) -> &Actor {
        &self.actor
    }
}

impl FromRequestParts<Arc<Gateway>> for Authed {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let has_key = header("authorization").is_some() || header("x-api-key").is_some();
        if !has_key {
            if let Some(cookie) = crate::auth::cookie(&parts.headers, crate::auth::SESSION_COOKIE) {
                let a = Authed::from_session(gw, cookie).await?.ok_or_else(session_expired)?;
                // Reads are safe; anything else made with a cookie must prove it comes from our
                // own pages (SameSite=Lax alone leaves top-level POSTs from old browsers).
                if !parts.method.is_safe() {
                    let sent = header(crate::auth::CSRF_HEADER).unwrap_or_default();
                    if !a.csrf.as_deref().is_some_and(|c| crate::auth::same_secret(c, sent)) {
                        return Err(csrf_failed());
                    }
                }
                return Ok(a);
            }
        }
        // Same credentials as the model API: `Authorization: Bearer` or `x-api-key`.
        let key = header("authorization")
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k.trim().to_string())
            .or_else(|| header("x-api-key").map(|k| k.trim().to_string()))
            .filter(|k| !k.is_empty())
            .ok_or_else(ApiError::missing_key)?;
        // Looked up by hash: the database compares digests, never the secret itself.
        let caller = store::caller(&gw.db, &hash_hex(&key), now()).await?.ok_or_else(ApiError::invalid_key)?;
        let actor = match (caller.service_account_id, caller.sa_team_id) {
            (Some(sa), Some(team)) => {
                // The account acts as itself, never as its owner: no role, no memberships.
                if !authz::service_account_may_call(parts.method.as_str(), parts.uri.path()) {
                    return Err(service_account_refused());
                }
                Actor {
                    user_id: caller.user_id,
                    role: Role::User,
                    org_id: caller.org_id,
                    teams: Vec::new(),
                    service_account: Some((sa, team)),
                }
            }
            _ => Actor {
                user_id: caller.user_id,
                role: Role::parse(&caller.role).unwrap_or(Role::User),
                org_id: caller.org_id,
                teams: tstore::memberships(&gw.db, caller.user_id).await?,
                service_account: None,
            },
        };
        Ok(Authed {
            actor,
            email: caller.email,
            token_id: Some(caller.token_id),
            key_created_by: caller.created_by,
            csrf: None,
        })
    }
}

/// 401 for a session cookie that is unknown, expired or whose user is gone.
pub fn session_expired() -> Error {
    ApiError::new(401, "Your session has ended; sign in again.").code("invalid_session").into()
}

/// 403 for a service account's key on a route it may not call.
pub fn service_account_refused() -> Error {
    ApiError::new(
        403,
        "A service account's key has no management rights; it may call models and MCP servers and read its own usage.",
    )
    .code("forbidden")
    .into()
}

/// 403 for a state-changing request made with the session cookie but without its CSRF token.
pub fn csrf_failed() -> Error {
    ApiError::new(403, "Missing or wrong CSRF token; reload the page and try again.").code("csrf_failed").into()
}

impl Authed {
    /// The caller behind a UI session cookie, if the session is live.
    pub async fn from_session(gw: &Gateway, cookie: &str) -> Result<Option<Self>, Error> {
        let Some(s) = crate::auth::session::lookup(&gw.db, cookie, now()).await? else {
            return Ok(None);
        };
        let teams = tstore::memberships(&gw.db, s.user_id).await?;
        Ok(Some(Authed {
            actor: Actor {
                user_id: s.user_id,
                role: Role::parse(&s.role).unwrap_or(Role::User),
                org_id: s.org_id,
                teams,
                service_account: None,
            },
            email: s.email,
            token_id: None,
            key_created_by: None,
            csrf: Some(s.csrf),
        }))
    }

    /// Refuses anyone but an admin.
    pub fn require_admin(&self) -> Result<(), Error> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::new(403, "This action needs the admin role.").code("forbidden").into())
        }
    }
}
