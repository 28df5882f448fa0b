//! The one authorization model of the management API and the admin UI: who may act on whom,
//! decided from the actor (role, org, team memberships, and whether it is a service account)
//! and the target (its role, org and team). Every handler asks these functions; none decides
//! on its own. `docs/tenancy.md` has the same rules as a table.
//!
//! Two principles hold throughout:
//! - **Never higher than the actor.** Acting on a user (changing them, deleting them, minting or
//!   regenerating their keys) is allowed only on users the actor strictly outranks, so no action
//!   yields a key or a role the actor does not already hold. Roles granted are at most the actor's
//!   own.
//! - **A service account acts as itself.** Its key may call models and MCP servers and read its
//!   own usage; it has no management rights, and never acts as its owner.

use super::model::Role;
use crate::domain::input::{forbidden, PolicyPatch};
use crate::domain::Error;
use crate::tenancy::store::{TokenFull, UserRow, Val};

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The user (for a service-account key, the account's owner; used only to attribute).
    pub user_id: i64,
    /// The user's role (always [`Role::User`] for a service-account key).
    pub role: Role,
    /// The user's org.
    pub org_id: Option<i64>,
    /// Team memberships: (team id, team admin). Empty for a service-account key.
    pub teams: Vec<(i64, bool)>,
    /// Set when the caller presented a service account's key: (account id, its team).
    pub service_account: Option<(i64, i64)>,
}

/// A user acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Their id.
    pub id: i64,
    /// Their role.
    pub role: Role,
    /// Their org.
    pub org_id: Option<i64>,
}

/// A key acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTarget {
    /// The key's owner (for a service account's key, the account's owner).
    pub owner: Target,
    /// For a service account's key: the account's (team, org).
    pub service_account_team: Option<(i64, i64)>,
}

/// The management routes a service account's key may call: its own usage.
pub const SERVICE_ACCOUNT_ROUTES: &[(&str, &str)] = &[("GET", "/api/v1/usage"), ("GET", "/api/v1/usage/requests")];

/// Whether a service account's key may call `method` `path` of the management API.
pub fn service_account_may_call(method: &str, path: &str) -> bool {
    SERVICE_ACCOUNT_ROUTES.iter().any(|(m, p)| *m == method && *p == path)
}

/// A role's rank: what it may do is a superset of every lower rank's.
pub fn rank(role: Role) -> u8 {
    match role {
        Role::User => 0,
        Role::OrgAdmin => 1,
        Role::Admin => 2,
    }
}

impl Actor {
    /// Whether the caller is a service account's key.
    pub fn is_service_account(&self) -> bool {
        self.service_account.is_some()
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        !self.is_service_account() && self.role == Role::Admin
    }

    /// Whether the caller is an org-admin of `org`.
    pub fn org_admin_of(&self, org: i64) -> bool {
        !self.is_service_account() && self.role == Role::OrgAdmin && self.org_id == Some(org)
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

    /// Whether the caller may see `team` (of `org`).
    pub fn sees_team(&self, team: i64, org: i64) -> bool {
        self.manages_org(Some(org)) || self.member_of(team)
    }

    /// Whether the caller may manage `team`'s members, service accounts and their keys.
    pub fn manages_team(&self, team: i64, org: i64) -> bool {
        self.manages_org(Some(org)) || self.team_admin_of(team)
    }

    /// Whether the caller strictly outranks `t`: an admin outranks everyone; an org-admin the
    /// plain users of its org; nobody else anyone. Changing or deleting a user, and minting or
    /// regenerating their keys, needs this.
    pub fn outranks(&self, t: &Target) -> bool {
        if self.is_service_account() || t.id == self.user_id && !self.is_admin() {
            return false;
        }
        match self.role {
            Role::Admin => true,
            Role::OrgAdmin => t.role == Role::User && t.org_id.is_some() && t.org_id == self.org_id,
            Role::User => false,
        }
    }

    /// Whether the caller may manage `t`'s personal keys: its own, or those of a user it
    /// outranks.
    pub fn acts_for(&self, t: &Target) -> bool {
        !self.is_service_account() && (t.id == self.user_id || self.outranks(t))
    }

    /// Whether the caller may give `role` to a user of `org`: an admin any role; an org-admin
    /// `user` or `org-admin` in its own org; nobody else any.
    pub fn may_grant(&self, role: Role, org: Option<i64>) -> bool {
        self.is_admin() || (org.is_some_and(|o| self.org_admin_of(o)) && rank(role) <= rank(self.role))
    }

    /// Whether the caller may add `t` to `team` (of `org`) or remove them, given whether `t` is
    /// the team's admin now. Admins and org-admins act on anyone their rank reaches; a team-admin
    /// only on plain users who are not team-admins.
    pub fn may_manage_member(&self, team: i64, org: i64, t: &Target, t_team_admin: bool) -> bool {
        if self.manages_org(Some(org)) {
            return rank(t.role) <= rank(self.role);
        }
        self.team_admin_of(team) && t.role == Role::User && !t_team_admin
    }

    /// Whether the caller may set limits and exclusions on an entity of `org`.
    pub fn may_set_policy(&self, org: Option<i64>) -> bool {
        self.manages_org(org)
    }

    /// Whether the caller may set `merge_excluded_models` / `merge_excluded_mcp_servers` to
    /// false. That stops a level inheriting the exclusions above it, including the org's and the
    /// global default that only an admin sets, so only an admin may.
    pub fn may_unmerge(&self) -> bool {
        self.is_admin()
    }

    /// Whether the caller may see key `k`: its own, its org's (org-admin), its teams' service
    /// accounts' (team-admin), or any (admin).
    pub fn sees_key(&self, k: &KeyTarget) -> bool {
        self.may_modify_key(k)
            || self.manages_org(k.owner.org_id)
            || k.service_account_team.is_some_and(|(t, _)| self.team_admin_of(t))
    }

    /// Whether the caller may change, revoke or regenerate key `k`. A personal key: its owner, or
    /// someone who outranks the owner. A service account's key: the account's owner, or whoever
    /// manages its team.
    pub fn may_modify_key(&self, k: &KeyTarget) -> bool {
        if self.is_service_account() {
            return false;
        }
        match k.service_account_team {
            Some((team, org)) => self.manages_team(team, org) || k.owner.id == self.user_id,
            None => self.acts_for(&k.owner),
        }
    }

    /// Whether the caller changes `k` as a manager (not as its holder): a manager's expiry binds
    /// the holder, who may shorten it but not remove or extend it.
    pub fn manages_key(&self, k: &KeyTarget) -> bool {
        if self.is_service_account() {
            return false;
        }
        match k.service_account_team {
            Some((team, org)) => self.manages_team(team, org),
            None => self.is_admin() || self.outranks(&k.owner),
        }
    }
}

impl UserRow {
    /// The user as the authorization model sees them.
    pub fn target(&self) -> Target {
        Target { id: self.id, role: Role::parse(&self.role).unwrap_or(Role::User), org_id: self.org_id }
    }
}

impl TokenFull {
    /// The key as the authorization model sees it.
    pub fn target(&self) -> KeyTarget {
        KeyTarget {
            owner: Target {
                id: self.user_id,
                role: Role::parse(&self.owner_role).unwrap_or(Role::User),
                org_id: self.owner_org_id,
            },
            service_account_team: self.sa_team_id.zip(self.sa_org_id),
        }
    }
}

/// Policy fields may be set only by an admin or an org-admin of the entity's org (`org`); a
/// merge flag may be turned off only by an admin (it drops the exclusions of every level above,
/// the org's and the global default included).
pub fn check_policy_rights(a: &Actor, org: Option<i64>, p: &PolicyPatch) -> Result<(), Error> {
    if let Some(f) = p.first() {
        if !a.may_set_policy(org) {
            return Err(
                forbidden("Only an admin or an org-admin of this org may change limits and exclusions.").with_param(f)
            );
        }
    }
    let unmerges = p.0.iter().find(|(k, v)| k.starts_with("merge_") && matches!(v, Val::Bool(false)));
    match unmerges {
        Some((f, _)) if !a.may_unmerge() => Err(forbidden(
            "Only an admin may stop a level inheriting the exclusions above it (the org's and the global ones).",
        )
        .with_param(f)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(role: Role, org: Option<i64>, teams: &[(i64, bool)]) -> Actor {
        Actor { user_id: 1, role, org_id: org, teams: teams.to_vec(), service_account: None }
    }

    fn user(id: i64, role: Role, org: i64) -> Target {
        Target { id, role, org_id: Some(org) }
    }

    #[test]
    fn an_org_admin_outranks_only_the_plain_users_of_its_org() {
        let oa = actor(Role::OrgAdmin, Some(7), &[]);
        assert!(oa.outranks(&user(2, Role::User, 7)));
        assert!(!oa.outranks(&user(2, Role::User, 8)));
        assert!(!oa.outranks(&user(2, Role::OrgAdmin, 7)));
        // An admin whose org is this org (bootstrap with --org, OIDC admin group).
        assert!(!oa.outranks(&user(2, Role::Admin, 7)));
        assert!(!oa.acts_for(&user(2, Role::Admin, 7)));
        assert!(oa.acts_for(&user(1, Role::OrgAdmin, 7)), "its own keys");
    }

    #[test]
    fn nobody_grants_more_than_it_holds() {
        let oa = actor(Role::OrgAdmin, Some(7), &[]);
        assert!(oa.may_grant(Role::User, Some(7)));
        assert!(oa.may_grant(Role::OrgAdmin, Some(7)));
        assert!(!oa.may_grant(Role::Admin, Some(7)));
        assert!(!oa.may_grant(Role::User, Some(8)));
        let ta = actor(Role::User, Some(7), &[(3, true)]);
        assert!(!ta.may_grant(Role::User, Some(7)));
        assert!(actor(Role::Admin, None, &[]).may_grant(Role::Admin, None));
    }

    #[test]
    fn a_service_account_key_has_no_management_rights() {
        let mut sa = actor(Role::Admin, Some(7), &[(3, true)]);
        sa.service_account = Some((5, 3));
        assert!(!sa.is_admin());
        assert!(!sa.manages_org(Some(7)));
        assert!(!sa.acts_for(&user(1, Role::Admin, 7)));
        let own_key = KeyTarget { owner: user(1, Role::Admin, 7), service_account_team: Some((3, 7)) };
        assert!(!sa.may_modify_key(&own_key));
        assert!(service_account_may_call("GET", "/api/v1/usage"));
        assert!(!service_account_may_call("POST", "/api/v1/tokens"));
        assert!(!service_account_may_call("GET", "/api/v1/users"));
    }

    #[test]
    fn a_team_admin_manages_only_plain_members() {
        let ta = actor(Role::User, Some(7), &[(3, true)]);
        assert!(ta.may_manage_member(3, 7, &user(2, Role::User, 7), false));
        assert!(!ta.may_manage_member(3, 7, &user(2, Role::User, 7), true));
        assert!(!ta.may_manage_member(3, 7, &user(2, Role::OrgAdmin, 7), false));
        assert!(!ta.may_manage_member(3, 7, &user(2, Role::Admin, 7), false));
        assert!(!ta.may_manage_member(4, 7, &user(2, Role::User, 7), false));
        let oa = actor(Role::OrgAdmin, Some(7), &[]);
        assert!(oa.may_manage_member(3, 7, &user(2, Role::OrgAdmin, 7), true));
        assert!(!oa.may_manage_member(3, 7, &user(2, Role::Admin, 7), false));
    }

    #[test]
    fn keys_of_others_follow_rank() {
        let oa = actor(Role::OrgAdmin, Some(7), &[]);
        let admins_key = KeyTarget { owner: user(2, Role::Admin, 7), service_account_team: None };
        assert!(oa.sees_key(&admins_key), "visible in its org");
        assert!(!oa.may_modify_key(&admins_key));
        let users_key = KeyTarget { owner: user(2, Role::User, 7), service_account_team: None };
        assert!(oa.may_modify_key(&users_key) && oa.manages_key(&users_key));
        let own = KeyTarget { owner: user(1, Role::OrgAdmin, 7), service_account_team: None };
        assert!(oa.may_modify_key(&own) && !oa.manages_key(&own));
        let ta = actor(Role::User, Some(7), &[(3, true)]);
        let sa_key = KeyTarget { owner: user(9, Role::OrgAdmin, 7), service_account_team: Some((3, 7)) };
        assert!(ta.may_modify_key(&sa_key) && ta.manages_key(&sa_key));
        let member = actor(Role::User, Some(7), &[(3, false)]);
        assert!(!member.may_modify_key(&sa_key));
        assert!(!member.may_unmerge() && !oa.may_unmerge() && actor(Role::Admin, None, &[]).may_unmerge());
    }
}
