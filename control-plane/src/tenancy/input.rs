//! What the tenancy service accepts: one type per action, read field by field from a JSON
//! object (API) or built from a form (admin UI). Each type's schema is its documentation and
//! the list of fields it accepts ([`Input`]).

use super::model::Role;
use crate::domain::input::*;
use crate::domain::Error;
use utoipa::ToSchema;

fn role(f: &mut Fields) -> Result<Option<Role>, Error> {
    match f.opt_str("role", 32)? {
        None => Ok(None),
        Some(r) => Role::parse(&r).map(Some).ok_or_else(|| bad("role", "'role' must be user, org-admin or admin.")),
    }
}

/// A new org.
#[derive(Debug, Clone, Default, ToSchema)]
pub struct NewOrg {
    /// Unique name (1 to 255 characters).
    pub name: String,
    /// Exclusions and limits.
    #[serde(flatten)]
    #[schema(inline)]
    pub policy: PolicyPatch,
}

impl Input for NewOrg {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        Ok(Self { name: f.req_str("name", MAX_NAME)?, policy: f.policy()? })
    }
}

/// Changes to an org; absent fields stay.
#[derive(Debug, Clone, Default, ToSchema)]
pub struct OrgChanges {
    /// New name.
    pub name: Option<String>,
    /// Exclusions and limits.
    #[serde(flatten)]
    #[schema(inline)]
    pub policy: PolicyPatch,
}

impl Input for OrgChanges {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        Ok(Self { name: f.req_str_opt("name")?, policy: f.policy()? })
    }
}

/// A new team.
#[derive(Debug, Clone, Default, ToSchema)]
pub struct NewTeam {
    /// Its org (an org-admin's own when absent).
    #[schema(value_type = Option<String>)]
    pub org_id: Option<i64>,
    /// Name, unique in the org.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The OIDC group whose members sign in as members of this team.
    pub oidc_group: Option<String>,
    /// Exclusions and limits.
    #[serde(flatten)]
    #[schema(inline)]
    pub policy: PolicyPatch,
}

impl Input for NewTeam {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        Ok(Self {
            org_id: f.opt_id("org_id")?,
            name: f.req_str("name", MAX_NAME)?,
            description: f.opt_text("description", MAX_TEXT)?,
            oidc_group: f.opt_text("oidc_group", MAX_NAME)?,
            policy: f.policy()?,
        })
    }
}

/// Changes to a team; absent fields stay.
#[derive(Debug, Clone, Default, ToSchema)]
pub struct TeamChanges {
    /// New name.
    pub name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The OIDC group whose members sign in as members of this team.
    pub oidc_group: Option<String>,
    /// Exclusions and limits.
    #[serde(flatten)]
    #[schema(inline)]
    pub policy: PolicyPatch,
}

impl Input for TeamChanges {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        Ok(Self {
            name: f.req_str_opt("name")?,
            description: f.opt_text("description", MAX_TEXT)?,
            oidc_group: f.opt_text("oidc_group", MAX_NAME)?,
            policy: f.policy()?,
        })
    }
}

/// A membership (the body may be empty).
#[derive(Debug, Clone, Default, ToSchema)]
pub struct MemberChanges {
    /// Whether the user administers the team (unchanged, or false for a new member, when absent).
    pub team_admin: Option<bool>,
}

impl Input for MemberChanges {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        Ok(Self { team_admin: f.opt_bool("team_admin")? })
    }
}

/// A new user.
#[derive(Debug, Clone, ToSchema)]
pub struct NewUser {
    /// Unique email.
    pub email: String,
    /// Their org (an org-admin's own when absent; only an admin may be without one).
    #[schema(value_type = Option<String>)]
    pub org_id: Option<i64>,
    /// `user` (default), `org-admin` or `admin`.
    pub role: Option<Role>,
    /// Exclusions and limits.
    #[serde(flatten)]
    #[schema(inline)]
    pub policy: PolicyPatch,
}

impl Input for NewUser {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        Ok(Self {
            email: f.req_str("email", MAX_EMAIL)?,
            org_id: f.opt_id("org_id")?,
            role: role(f)?,
            policy: f.policy()?,
        })
    }
}

/// Changes to a user; absent fields stay.
#[derive(Debug, Clone, Default, ToSchema)]
pub struct UserChanges {
    /// New email.
    pub email: Option<String>,
    /// New role (at most the caller's).
    pub role: Option<Role>,
    /// Whether the user's keys and sessions work.
    pub active: Option<bool>,
    /// Only `false`: clears the OIDC binding so the next sign-in with the email binds anew (admin).
    pub oidc_bound: Option<bool>,
    /// Exclusions and limits.
    #[serde(flatten)]
    #[schema(inline)]
    pub policy: PolicyPatch,
}

impl Input for UserChanges {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        Ok(Self {
            email: f.req_str_opt_max("email", MAX_EMAIL)?,
            role: role(f)?,
            active: f.opt_bool("active")?,
            oidc_bound: f.opt_bool("oidc_bound")?,
            policy: f.policy()?,
        })
    }
}

/// A new service account.
#[derive(Debug, Clone, Default, ToSchema)]
pub struct NewServiceAccount {
    /// Name, unique among the team's live service accounts.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The owner, a member of the team (the caller when absent).
    #[schema(value_type = Option<String>)]
    pub user_id: Option<i64>,
    /// Exclusions and limits.
    #[serde(flatten)]
    #[schema(inline)]
    pub policy: PolicyPatch,
}

impl Input for NewServiceAccount {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        Ok(Self {
            name: f.req_str("name", MAX_NAME)?,
            description: f.opt_text("description", MAX_TEXT)?,
            user_id: f.opt_id("user_id")?,
            policy: f.policy()?,
        })
    }
}

/// Changes to a service account; absent fields stay.
#[derive(Debug, Clone, Default, ToSchema)]
pub struct ServiceAccountChanges {
    /// New name.
    pub name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Exclusions and limits.
    #[serde(flatten)]
    #[schema(inline)]
    pub policy: PolicyPatch,
}

impl Input for ServiceAccountChanges {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        Ok(Self {
            name: f.req_str_opt("name")?,
            description: f.opt_text("description", MAX_TEXT)?,
            policy: f.policy()?,
        })
    }
}

/// A service account's new owner.
#[derive(Debug, Clone, ToSchema)]
pub struct Transfer {
    /// A member of the account's team.
    #[schema(value_type = String)]
    pub user_id: i64,
}

impl Input for Transfer {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        Ok(Self { user_id: f.req_id("user_id")? })
    }
}
