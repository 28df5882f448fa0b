//! Who is calling a management action, however they came: a key on the management API, or a
//! session cookie (API or admin UI). Both give the same [`Actor`], so the role rules are the
//! same; what the actor may do is decided in [`crate::tenancy::authz`] alone.

use crate::db::Db;
use crate::domain::Error;
use crate::tenancy::authz::{self, Actor};
use crate::tenancy::model::Role;
use crate::tenancy::store as tstore;
use crate::tokens::{hash_hex, store};
use aqueduct_policy::ApiError;

/// Which transport an action came through (the audit log records it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The management API (with a key or a session cookie).
    Api,
    /// The admin UI's forms.
    Ui,
}

impl Via {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::Ui => "ui",
        }
    }
}

/// The authenticated caller of a management action: a live key (not revoked, deleted or
/// expired) of an active, not deleted user, or a live session of such a user. A service
/// account's key is an actor of its own with no management rights: it reaches only
/// [`authz::SERVICE_ACCOUNT_ROUTES`].
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
    /// The transport (the audit log records it).
    pub via: Via,
}

impl std::ops::Deref for Authed {
    type Target = Actor;
    fn deref(&self) -> &Actor {
        &self.actor
    }
}

impl Authed {
    /// The caller presenting `key` to `method` `path` of the management API; `None` for an
    /// unknown, revoked or expired key. Looked up by hash: the database compares digests, never
    /// the secret itself.
    pub async fn from_key(db: &Db, key: &str, method: &str, path: &str, now: i64) -> Result<Option<Self>, Error> {
        let Some(caller) = store::caller(db, &hash_hex(key), now).await? else {
            return Ok(None);
        };
        let actor = match (caller.service_account_id, caller.sa_team_id) {
            (Some(sa), Some(team)) => {
                // The account acts as itself, never as its owner: no role, no memberships.
                if !authz::service_account_may_call(method, path) {
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
                teams: tstore::memberships(db, caller.user_id).await?,
                service_account: None,
            },
        };
        Ok(Some(Authed {
            actor,
            email: caller.email,
            token_id: Some(caller.token_id),
            key_created_by: caller.created_by,
            csrf: None,
            via: Via::Api,
        }))
    }

    /// The caller behind a UI session cookie, if the session is live.
    pub async fn from_session(db: &Db, cookie: &str, now: i64, via: Via) -> Result<Option<Self>, Error> {
        let Some(s) = super::session::lookup(db, cookie, now).await? else {
            return Ok(None);
        };
        let teams = tstore::memberships(db, s.user_id).await?;
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
            via,
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

/// 403 for a service account's key on a route it may not call.
pub fn service_account_refused() -> Error {
    ApiError::new(
        403,
        "A service account's key has no management rights; it may call models and MCP servers and read its own usage.",
    )
    .code("forbidden")
    .into()
}
