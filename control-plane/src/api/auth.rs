//! Who is calling: the `Authed` extractor and the role checks every route uses.

use super::error::Error;
use crate::gateway::{now, Gateway};
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
/// `x-csrf-token`). Both give the same caller, so the role rules are the same.
#[derive(Debug, Clone)]
pub struct Authed {
    /// The user.
    pub user_id: i64,
    /// Their email.
    pub email: String,
    /// Their role.
    pub role: Role,
    /// Their org.
    pub org_id: Option<i64>,
    /// The key used; `None` when signed in by a UI session.
    pub token_id: Option<i64>,
    /// The UI session's CSRF token; `None` when called with a key.
    pub csrf: Option<String>,
    /// Team memberships: (team id, team admin).
    pub teams: Vec<(i64, bool)>,
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
        let teams = tstore::memberships(&gw.db, caller.user_id).await?;
        Ok(Authed {
            user_id: caller.user_id,
            email: caller.email,
            role: Role::parse(&caller.role).unwrap_or(Role::User),
            org_id: caller.org_id,
            token_id: Some(caller.token_id),
            csrf: None,
            teams,
        })
    }
}

/// 401 for a session cookie that is unknown, expired or whose user is gone.
pub fn session_expired() -> Error {
    ApiError::new(401, "Your session has ended; sign in again.").code("invalid_session").into()
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
            user_id: s.user_id,
            email: s.email,
            role: Role::parse(&s.role).unwrap_or(Role::User),
            org_id: s.org_id,
            token_id: None,
            csrf: Some(s.csrf),
            teams,
        }))
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the caller is an org-admin of `org`.
    pub fn org_admin_of(&self, org: i64) -> bool {
        self.role == Role::OrgAdmin && self.org_id == Some(org)
    }

    /// Admin, or org-admin of `org`.
    pub fn manages_org(&self, org: Option<i64>) -> bool {
        self.is_admin() || org.is_some_and(|o| self.org_admin_of(o))
    }

    /// Whether the caller belongs to `team`.
    pub fn member_of(&self, team: i64) -> bool {
        self.teams.iter().any(|(t, _)| *t == team)
    }

    /// Whether the caller is a team-admin of `team`.
    pub fn team_admin_of(&self, team: i64) -> bool {
        self.teams.iter().any(|(t, a)| *t == team && *a)
    }

    /// Teams the caller administers.
    pub fn admin_teams(&self) -> Vec<i64> {
        self.teams.iter().filter(|(_, a)| *a).map(|(t, _)| *t).collect()
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
