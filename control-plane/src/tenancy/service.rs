//! The tenancy service: orgs, teams, memberships, users and service accounts. Typed input in,
//! typed entities out; who may do what is asked of [`super::authz`]; every change and its
//! audit entry are written in one transaction. The management API and the admin UI both call
//! these functions.
//!
//! Entities the caller may not see answer 404; visible ones the caller may not change answer
//! 403. A request body is judged only after those checks ([`Parsed`]).

use super::authz::check_policy_rights;
use super::input::*;
use super::model::{PolicyFields, Role};
use super::store::{self as ts, MemberRow, OrgRow, SaRow, Sql, TeamRow, Tx, UserRow, Val};
use crate::audit::{self, Action};
use crate::auth::Authed;
use crate::domain::input::*;
use crate::domain::{Error, List};
use crate::gateway::{now, Gateway};
use crate::tokens::service::{self as keys, Token};
use aqueduct_policy::ApiError;
use serde::Serialize;
use utoipa::ToSchema;

// ----- what the API shows -----

/// An org.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Org {
    /// Always `org`.
    pub object: String,
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// Exclusions and limits.
    #[serde(flatten)]
    pub policy: PolicyFields,
}

impl From<&OrgRow> for Org {
    fn from(o: &OrgRow) -> Self {
        Self {
            object: "org".into(),
            id: id_str(o.id),
            name: o.name.clone(),
            created_at: rfc3339(o.created_at),
            policy: o.policy.clone(),
        }
    }
}

/// A team.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Team {
    /// Always `team`.
    pub object: String,
    /// Id.
    pub id: String,
    /// Its org.
    pub org_id: String,
    /// Name, unique in the org.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The OIDC group whose members sign in as members of this team.
    pub oidc_group: String,
    /// RFC 3339.
    pub created_at: String,
    /// Exclusions and limits.
    #[serde(flatten)]
    pub policy: PolicyFields,
}

impl From<&TeamRow> for Team {
    fn from(t: &TeamRow) -> Self {
        Self {
            object: "team".into(),
            id: id_str(t.id),
            org_id: id_str(t.org_id),
            name: t.name.clone(),
            description: t.description.clone(),
            oidc_group: t.oidc_group.clone(),
            created_at: rfc3339(t.created_at),
            policy: t.policy.clone(),
        }
    }
}

/// A user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    /// Always `user`.
    pub object: String,
    /// Id.
    pub id: String,
    /// Unique email.
    pub email: String,
    /// Their org (none only for an admin).
    pub org_id: Option<String>,
    /// `user`, `org-admin` or `admin`.
    pub role: Role,
    /// An inactive user's keys and sessions are refused.
    pub active: bool,
    /// Whether an OIDC sign-in bound the account to a provider's subject.
    pub oidc_bound: bool,
    /// RFC 3339.
    pub created_at: String,
    /// Exclusions and limits.
    #[serde(flatten)]
    pub policy: PolicyFields,
}

impl From<&UserRow> for User {
    fn from(u: &UserRow) -> Self {
        Self {
            object: "user".into(),
            id: id_str(u.id),
            email: u.email.clone(),
            org_id: u.org_id.map(id_str),
            role: Role::parse(&u.role).unwrap_or(Role::User),
            active: u.active,
            oidc_bound: u.oidc_bound,
            created_at: rfc3339(u.created_at),
            policy: u.policy.clone(),
        }
    }
}

/// A team membership.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Member {
    /// Always `team_member`.
    pub object: String,
    /// The team.
    pub team_id: String,
    /// The user.
    pub user_id: String,
    /// Whether the user administers the team.
    pub team_admin: bool,
    /// RFC 3339.
    pub added_at: String,
}

impl From<&MemberRow> for Member {
    fn from(m: &MemberRow) -> Self {
        Self {
            object: "team_member".into(),
            team_id: id_str(m.team_id),
            user_id: id_str(m.user_id),
            team_admin: m.team_admin,
            added_at: rfc3339(m.added_at),
        }
    }
}

/// A service account: a team's identity for programs, with one key owned by a member.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceAccount {
    /// Always `service_account`.
    pub object: String,
    /// Id.
    pub id: String,
    /// Its team.
    pub team_id: String,
    /// The member accountable for it (owner of its key).
    pub owner_user_id: String,
    /// Name, unique among the team's live service accounts.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Its live key, if any.
    pub token_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Exclusions and limits.
    #[serde(flatten)]
    pub policy: PolicyFields,
    /// The new key, shown once (creation only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The new key's entry (creation only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
}

impl From<&SaRow> for ServiceAccount {
    fn from(s: &SaRow) -> Self {
        Self {
            object: "service_account".into(),
            id: id_str(s.id),
            team_id: id_str(s.team_id),
            owner_user_id: id_str(s.owner_user_id),
            name: s.name.clone(),
            description: s.description.clone(),
            token_id: s.token_id.map(id_str),
            created_at: rfc3339(s.created_at),
            policy: s.policy.clone(),
            key: None,
            token: None,
        }
    }
}

// ----- shared pieces -----

fn quota(msg: String) -> Error {
    ApiError::new(409, msg).code("quota_exceeded").into()
}

fn email_ok(e: &str) -> bool {
    let parts: Vec<&str> = e.split('@').collect();
    parts.len() == 2 && !parts[0].is_empty() && !parts[1].is_empty() && !e.chars().any(char::is_whitespace)
}

fn path_id(what: &str, id: &str) -> Result<i64, Error> {
    parse_id(id).ok_or_else(|| not_found(what, id))
}

async fn count(tx: &mut Tx, q: Sql) -> Result<i64, Error> {
    Ok(tx.scalar(&q).await?.unwrap_or(0))
}

/// Sets the policy columns of the row `id` of `table` (just inserted).
async fn set_policy(tx: &mut Tx, table: &str, id: i64, p: &PolicyPatch) -> Result<(), Error> {
    if let Some(q) = ts::update_sql(table, &p.0, id, "") {
        tx.execute(&q).await?;
    }
    Ok(())
}

/// Writes the audit entry and commits.
async fn commit(
    tx: Tx,
    a: &Authed,
    method: &str,
    path: &str,
    status: u16,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<(), Error> {
    Ok(audit::commit(tx, a, Action { method, path, status }, before, after).await?)
}

/// A team the caller sees, else 404.
pub async fn visible_team(tx: &mut Tx, a: &Authed, id: &str) -> Result<TeamRow, Error> {
    let tid = path_id("Team", id)?;
    match ts::load_team(tx, tid).await? {
        Some(t) if a.sees_team(t.id, t.org_id) => Ok(t),
        _ => Err(not_found("Team", id)),
    }
}

async fn visible_org(tx: &mut Tx, a: &Authed, id: &str) -> Result<OrgRow, Error> {
    let oid = path_id("Org", id)?;
    match ts::load_org(tx, oid).await? {
        Some(o) if a.is_admin() || a.org_id == Some(o.id) => Ok(o),
        _ => Err(not_found("Org", id)),
    }
}

fn user_visibility(a: &Authed, q: &mut Sql) {
    if a.is_admin() {
        return;
    }
    q.push(" AND (u.id = ").id(a.user_id);
    if a.role == Role::OrgAdmin {
        if let Some(o) = a.org_id {
            q.push(" OR u.org_id = ").id(o);
        }
    }
    q.push(" OR u.id IN (SELECT m.user_id FROM team_members m JOIN team_members me ON me.team_id = m.team_id WHERE me.team_admin AND me.user_id = ")
        .id(a.user_id)
        .push("))");
}

async fn visible_user(tx: &mut Tx, a: &Authed, id: &str) -> Result<UserRow, Error> {
    let uid = path_id("User", id)?;
    let mut q = Sql::new(format!("SELECT {} FROM users u WHERE u.deleted_at IS NULL AND u.id = ", ts::user_cols()));
    q.id(uid);
    user_visibility(a, &mut q);
    tx.fetch_opt(&q).await?.ok_or_else(|| not_found("User", id))
}

async fn visible_sa(tx: &mut Tx, a: &Authed, id: &str) -> Result<(SaRow, TeamRow), Error> {
    let sid = path_id("Service account", id)?;
    if let Some(s) = ts::load_sa(tx, sid).await? {
        if let Some(t) = ts::load_team(tx, s.team_id).await? {
            if a.sees_team(t.id, t.org_id) {
                return Ok((s, t));
            }
        }
    }
    Err(not_found("Service account", id))
}

fn state<T: Serialize>(v: &T) -> Option<serde_json::Value> {
    audit::state(v)
}

// ----- orgs -----

/// Creates an org (admin).
pub async fn create_org(gw: &Gateway, a: &Authed, input: Parsed<NewOrg>) -> Result<Org, Error> {
    a.require_admin()?;
    let NewOrg { name, policy } = input?;
    let mut tx = Tx::begin(&gw.db).await?;
    let mut ins = Sql::new("INSERT INTO orgs (name, created_at) VALUES (");
    ins.arg(Val::Text(name)).push(", ").arg(Val::Int(Some(now()))).push(") RETURNING id");
    let id = tx.insert(&ins).await.map_err(|e| unique_or(e, "name", "An org with this name exists."))?;
    set_policy(&mut tx, "orgs", id, &policy).await?;
    let o = Org::from(&ts::load_org(&mut tx, id).await?.ok_or_else(|| not_found("Org", &id_str(id)))?);
    commit(tx, a, "POST", "/api/v1/orgs", 201, None, state(&o)).await?;
    gw.request_rebuild();
    Ok(o)
}

/// Every org for an admin, else the caller's own.
pub async fn list_orgs(gw: &Gateway, a: &Authed, page: Page) -> Result<List<Org>, Error> {
    let mut q = Sql::new(format!("SELECT {} FROM orgs o WHERE o.deleted_at IS NULL", ts::org_cols()));
    if !a.is_admin() {
        q.push(" AND o.id = ").arg(Val::Int(a.org_id));
    }
    paginate(&mut q, "o", page);
    let rows: Vec<OrgRow> = ts::fetch_all(&gw.db, &q).await?;
    Ok(List::page(rows, page))
}

/// One org the caller sees.
pub async fn get_org(gw: &Gateway, a: &Authed, id: &str) -> Result<Org, Error> {
    let mut tx = Tx::read(&gw.db).await?;
    Ok(Org::from(&visible_org(&mut tx, a, id).await?))
}

/// Renames an org or changes its policy (admin).
pub async fn update_org(gw: &Gateway, a: &Authed, id: &str, input: Parsed<OrgChanges>) -> Result<Org, Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let o = visible_org(&mut tx, a, id).await?;
    a.require_admin()?;
    let OrgChanges { name, policy } = input?;
    let mut sets = Vec::new();
    if let Some(n) = name {
        sets.push(("name", Val::Text(n)));
    }
    sets.extend(policy.0);
    let Some(q) = ts::update_sql("orgs", &sets, o.id, " AND deleted_at IS NULL") else {
        return Ok(Org::from(&o));
    };
    tx.execute(&q).await.map_err(|e| unique_or(e, "name", "An org with this name exists."))?;
    let after = Org::from(&ts::load_org(&mut tx, o.id).await?.ok_or_else(|| not_found("Org", id))?);
    commit(tx, a, "PATCH", &format!("/api/v1/orgs/{}", o.id), 200, state(&Org::from(&o)), state(&after)).await?;
    gw.request_rebuild();
    Ok(after)
}

/// Deletes an org without live users or teams (admin).
pub async fn delete_org(gw: &Gateway, a: &Authed, id: &str) -> Result<(), Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let o = visible_org(&mut tx, a, id).await?;
    a.require_admin()?;
    let mut q = Sql::new("SELECT (SELECT COUNT(*) FROM users WHERE deleted_at IS NULL AND org_id = ");
    q.id(o.id).push(") + (SELECT COUNT(*) FROM teams WHERE deleted_at IS NULL AND org_id = ").id(o.id).push(")");
    if count(&mut tx, q).await? > 0 {
        return Err(conflict("id", "The org still has users or teams; delete them first."));
    }
    let mut d = Sql::new("UPDATE orgs SET deleted_at = ");
    d.arg(Val::Int(Some(now())))
        .push(", name = name || ' (deleted ' || CAST(id AS TEXT) || ')' WHERE deleted_at IS NULL AND id = ")
        .id(o.id);
    tx.execute(&d).await?;
    commit(tx, a, "DELETE", &format!("/api/v1/orgs/{}", o.id), 204, state(&Org::from(&o)), None).await?;
    gw.request_rebuild();
    Ok(())
}

// ----- teams -----

/// Creates a team (admin; org-admin in their org).
pub async fn create_team(gw: &Gateway, a: &Authed, input: Parsed<NewTeam>) -> Result<Team, Error> {
    if !(a.is_admin() || a.role == Role::OrgAdmin) {
        return Err(forbidden("Creating teams needs the admin or org-admin role."));
    }
    let NewTeam { org_id, name, description, oidc_group, policy } = input?;
    let org_id = match org_id {
        Some(o) => o,
        None if a.role == Role::OrgAdmin && a.org_id.is_some() => a.org_id.unwrap_or_default(),
        None => return Err(bad("org_id", "'org_id' is required.")),
    };
    let mut tx = Tx::begin(&gw.db).await?;
    if !a.manages_org(Some(org_id)) || ts::load_org(&mut tx, org_id).await?.is_none() {
        return Err(not_found("Org", &id_str(org_id)).with_param("org_id"));
    }
    check_policy_rights(a, Some(org_id), &policy)?;
    let mut ins = Sql::new("INSERT INTO teams (org_id, name, description, oidc_group, created_at) VALUES (");
    ins.id(org_id)
        .push(", ")
        .arg(Val::Text(name))
        .push(", ")
        .arg(Val::Text(description.unwrap_or_default()))
        .push(", ")
        .arg(Val::Text(oidc_group.unwrap_or_default()))
        .push(", ")
        .arg(Val::Int(Some(now())))
        .push(") RETURNING id");
    let id = tx.insert(&ins).await.map_err(|e| unique_or(e, "name", "A team with this name exists in the org."))?;
    set_policy(&mut tx, "teams", id, &policy).await?;
    let t = Team::from(&ts::load_team(&mut tx, id).await?.ok_or_else(|| not_found("Team", &id_str(id)))?);
    commit(tx, a, "POST", "/api/v1/teams", 201, None, state(&t)).await?;
    gw.request_rebuild();
    Ok(t)
}

/// All teams (admin), the org's (org-admin), else the caller's.
pub async fn list_teams(gw: &Gateway, a: &Authed, page: Page) -> Result<List<Team>, Error> {
    let mut q = Sql::new(format!("SELECT {} FROM teams t WHERE t.deleted_at IS NULL", ts::team_cols()));
    if !a.is_admin() {
        q.push(" AND (t.id IN (SELECT team_id FROM team_members WHERE user_id = ").id(a.user_id).push(")");
        if a.role == Role::OrgAdmin {
            q.push(" OR t.org_id = ").arg(Val::Int(a.org_id));
        }
        q.push(")");
    }
    paginate(&mut q, "t", page);
    let rows: Vec<TeamRow> = ts::fetch_all(&gw.db, &q).await?;
    Ok(List::page(rows, page))
}

/// One team the caller sees.
pub async fn get_team(gw: &Gateway, a: &Authed, id: &str) -> Result<Team, Error> {
    let mut tx = Tx::read(&gw.db).await?;
    Ok(Team::from(&visible_team(&mut tx, a, id).await?))
}

/// Changes a team (admin; org-admin of its org).
pub async fn update_team(gw: &Gateway, a: &Authed, id: &str, input: Parsed<TeamChanges>) -> Result<Team, Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let t = visible_team(&mut tx, a, id).await?;
    if !a.manages_org(Some(t.org_id)) {
        return Err(forbidden("Changing a team needs the admin or org-admin role."));
    }
    let TeamChanges { name, description, oidc_group, policy } = input?;
    let mut sets = Vec::new();
    if let Some(n) = name {
        sets.push(("name", Val::Text(n)));
    }
    if let Some(d) = description {
        sets.push(("description", Val::Text(d)));
    }
    if let Some(g) = oidc_group {
        sets.push(("oidc_group", Val::Text(g)));
    }
    check_policy_rights(a, Some(t.org_id), &policy)?;
    sets.extend(policy.0);
    let Some(q) = ts::update_sql("teams", &sets, t.id, " AND deleted_at IS NULL") else {
        return Ok(Team::from(&t));
    };
    tx.execute(&q).await.map_err(|e| unique_or(e, "name", "A team with this name exists in the org."))?;
    let after = Team::from(&ts::load_team(&mut tx, t.id).await?.ok_or_else(|| not_found("Team", id))?);
    commit(tx, a, "PATCH", &format!("/api/v1/teams/{}", t.id), 200, state(&Team::from(&t)), state(&after)).await?;
    gw.request_rebuild();
    Ok(after)
}

/// Deletes a team (admin; org-admin of its org): removes its memberships, deletes its service
/// accounts and revokes their keys.
pub async fn delete_team(gw: &Gateway, a: &Authed, id: &str) -> Result<(), Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let t = visible_team(&mut tx, a, id).await?;
    if !a.manages_org(Some(t.org_id)) {
        return Err(forbidden("Deleting a team needs the admin or org-admin role."));
    }
    let now = Val::Int(Some(now()));
    let mut revoke = Sql::new("UPDATE tokens SET revoked_at = ");
    revoke
        .arg(now.clone())
        .push(" WHERE revoked_at IS NULL AND service_account_id IN (SELECT id FROM service_accounts WHERE team_id = ")
        .id(t.id)
        .push(")");
    let mut sas = Sql::new("UPDATE service_accounts SET deleted_at = ");
    sas.arg(now.clone()).push(" WHERE deleted_at IS NULL AND team_id = ").id(t.id);
    let mut members = Sql::new("DELETE FROM team_members WHERE team_id = ");
    members.id(t.id);
    let mut team = Sql::new("UPDATE teams SET deleted_at = ");
    team.arg(now)
        .push(", name = name || ' (deleted ' || CAST(id AS TEXT) || ')' WHERE deleted_at IS NULL AND id = ")
        .id(t.id);
    for q in [revoke, sas, members, team] {
        tx.execute(&q).await?;
    }
    commit(tx, a, "DELETE", &format!("/api/v1/teams/{}", t.id), 204, state(&Team::from(&t)), None).await?;
    gw.request_rebuild();
    Ok(())
}

// ----- members -----

/// Adds a member or changes their team-admin flag (admin, org-admin, team-admin; only admins
/// and org-admins grant or withdraw the flag). Returns the membership and whether it is new.
pub async fn put_member(
    gw: &Gateway,
    a: &Authed,
    team: &str,
    user: &str,
    input: Parsed<MemberChanges>,
) -> Result<(Member, bool), Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let t = visible_team(&mut tx, a, team).await?;
    if !a.manages_team(t.id, t.org_id) {
        return Err(forbidden("Managing members needs the admin, org-admin or team-admin role."));
    }
    let MemberChanges { team_admin: flag } = input?;
    let uid = parse_id(user).ok_or_else(|| not_found("User", user).with_param("user_id"))?;
    let Some(u) = ts::load_user(&mut tx, uid).await? else {
        return Err(not_found("User", user).with_param("user_id"));
    };
    if u.org_id != Some(t.org_id) {
        return Err(bad("user_id", "The user belongs to another org than the team."));
    }
    let existing = ts::load_member(&mut tx, t.id, uid).await?;
    let was_admin = existing.as_ref().is_some_and(|m| m.team_admin);
    if !a.may_manage_member(t.id, t.org_id, &u.target(), was_admin) {
        return Err(forbidden("You may add or change only members your role outranks.").with_param("user_id"));
    }
    let team_admin = flag.unwrap_or(was_admin);
    if team_admin != was_admin && !a.manages_org(Some(t.org_id)) {
        return Err(
            forbidden("Only an admin or an org-admin may grant or withdraw team-admin.").with_param("team_admin")
        );
    }
    let mut q = Sql::new("INSERT INTO team_members (team_id, user_id, team_admin, added_at) VALUES (");
    q.id(t.id)
        .push(", ")
        .id(uid)
        .push(", ")
        .arg(Val::Bool(team_admin))
        .push(", ")
        .arg(Val::Int(Some(now())))
        .push(") ON CONFLICT (team_id, user_id) DO UPDATE SET team_admin = excluded.team_admin");
    tx.execute(&q).await?;
    let m = Member::from(&ts::load_member(&mut tx, t.id, uid).await?.ok_or_else(|| not_found("Member", user))?);
    let created = existing.is_none();
    let path = format!("/api/v1/teams/{}/members/{uid}", t.id);
    let before = existing.as_ref().map(Member::from);
    commit(tx, a, "PUT", &path, if created { 201 } else { 200 }, before.as_ref().and_then(state), state(&m)).await?;
    gw.request_rebuild();
    Ok((m, created))
}

/// Removes a member; 409 while they own service accounts of the team (transfer them first).
pub async fn delete_member(gw: &Gateway, a: &Authed, team: &str, user: &str) -> Result<(), Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let t = visible_team(&mut tx, a, team).await?;
    if !a.manages_team(t.id, t.org_id) {
        return Err(forbidden("Managing members needs the admin, org-admin or team-admin role."));
    }
    let uid = parse_id(user).ok_or_else(|| not_found("Member", user))?;
    let m = ts::load_member(&mut tx, t.id, uid).await?.ok_or_else(|| not_found("Member", user))?;
    if m.team_admin && !a.manages_org(Some(t.org_id)) {
        return Err(forbidden("Only an admin or an org-admin may remove a team-admin."));
    }
    let u = ts::load_user(&mut tx, uid).await?.ok_or_else(|| not_found("Member", user))?;
    if !a.may_manage_member(t.id, t.org_id, &u.target(), m.team_admin) {
        return Err(forbidden("You may remove only members your role outranks."));
    }
    let mut q = Sql::new("SELECT COUNT(*) FROM service_accounts WHERE deleted_at IS NULL AND team_id = ");
    q.id(t.id).push(" AND owner_user_id = ").id(uid);
    if count(&mut tx, q).await? > 0 {
        return Err(conflict(
            "user_id",
            "The user owns service accounts of this team; transfer them to another member first.",
        ));
    }
    let mut d = Sql::new("DELETE FROM team_members WHERE team_id = ");
    d.id(t.id).push(" AND user_id = ").id(uid);
    tx.execute(&d).await?;
    let path = format!("/api/v1/teams/{}/members/{uid}", t.id);
    commit(tx, a, "DELETE", &path, 204, state(&Member::from(&m)), None).await?;
    gw.request_rebuild();
    Ok(())
}

/// The members of a team the caller sees, with their emails, by user id.
pub async fn members(gw: &Gateway, a: &Authed, team: &str) -> Result<Vec<(Member, String)>, Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        team_id: i64,
        user_id: i64,
        team_admin: bool,
        added_at: i64,
        email: String,
    }
    let mut tx = Tx::read(&gw.db).await?;
    let t = visible_team(&mut tx, a, team).await?;
    let mut q = Sql::new(
        "SELECT m.team_id, m.user_id, m.team_admin, m.added_at, u.email FROM team_members m \
         JOIN users u ON u.id = m.user_id WHERE u.deleted_at IS NULL AND m.team_id = ",
    );
    q.id(t.id).push(" ORDER BY m.user_id");
    let rows: Vec<Row> = tx.fetch_all(&q).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let m =
                MemberRow { team_id: r.team_id, user_id: r.user_id, team_admin: r.team_admin, added_at: r.added_at };
            (Member::from(&m), r.email)
        })
        .collect())
}

// ----- users -----

/// Creates a user (admin; org-admin in their org, never an admin).
pub async fn create_user(gw: &Gateway, a: &Authed, input: Parsed<NewUser>) -> Result<User, Error> {
    if !(a.is_admin() || a.role == Role::OrgAdmin) {
        return Err(forbidden("Creating users needs the admin or org-admin role."));
    }
    let NewUser { email, org_id, role, policy } = input?;
    if !email_ok(&email) {
        return Err(bad("email", "'email' must be an address with one '@'."));
    }
    let org_id = org_id.or(if a.is_admin() { None } else { a.org_id });
    let role = role.unwrap_or(Role::User);
    if role == Role::Admin && !a.is_admin() {
        return Err(forbidden("Only an admin may create admins.").with_param("role"));
    }
    let mut tx = Tx::begin(&gw.db).await?;
    if let Some(o) = org_id {
        if !a.manages_org(Some(o)) || ts::load_org(&mut tx, o).await?.is_none() {
            return Err(not_found("Org", &id_str(o)).with_param("org_id"));
        }
    } else if role != Role::Admin {
        return Err(bad("org_id", "'org_id' is required."));
    }
    if !a.may_grant(role, org_id) {
        return Err(forbidden("You may not grant a role above your own.").with_param("role"));
    }
    check_policy_rights(a, org_id, &policy)?;
    let mut ins = Sql::new("INSERT INTO users (email, org_id, role, created_at) VALUES (");
    ins.arg(Val::Text(email))
        .push(", ")
        .arg(Val::Int(org_id))
        .push(", ")
        .arg(Val::Text(role.as_str().into()))
        .push(", ")
        .arg(Val::Int(Some(now())))
        .push(") RETURNING id");
    let id = tx.insert(&ins).await.map_err(|e| unique_or(e, "email", "A user with this email exists."))?;
    set_policy(&mut tx, "users", id, &policy).await?;
    let u = User::from(&ts::load_user(&mut tx, id).await?.ok_or_else(|| not_found("User", &id_str(id)))?);
    commit(tx, a, "POST", "/api/v1/users", 201, None, state(&u)).await?;
    gw.request_rebuild();
    Ok(u)
}

/// All users (admin), the org's (org-admin), else the caller and the members of teams the
/// caller administers.
pub async fn list_users(gw: &Gateway, a: &Authed, page: Page) -> Result<List<User>, Error> {
    let mut q = Sql::new(format!("SELECT {} FROM users u WHERE u.deleted_at IS NULL", ts::user_cols()));
    user_visibility(a, &mut q);
    paginate(&mut q, "u", page);
    let rows: Vec<UserRow> = ts::fetch_all(&gw.db, &q).await?;
    Ok(List::page(rows, page))
}

/// One user the caller sees.
pub async fn get_user(gw: &Gateway, a: &Authed, id: &str) -> Result<User, Error> {
    let mut tx = Tx::read(&gw.db).await?;
    Ok(User::from(&visible_user(&mut tx, a, id).await?))
}

/// Changes a user (someone who outranks them).
pub async fn update_user(gw: &Gateway, a: &Authed, id: &str, input: Parsed<UserChanges>) -> Result<User, Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let u = visible_user(&mut tx, a, id).await?;
    if !a.outranks(&u.target()) {
        return Err(forbidden("Changing this user needs the admin or org-admin role."));
    }
    let UserChanges { email, role, active, oidc_bound, policy } = input?;
    let mut sets = Vec::new();
    if let Some(e) = email {
        if !email_ok(&e) {
            return Err(bad("email", "'email' must be an address with one '@'."));
        }
        sets.push(("email", Val::Text(e)));
    }
    if let Some(role) = role {
        if role == Role::Admin && !a.is_admin() {
            return Err(forbidden("Only an admin may grant the admin role.").with_param("role"));
        }
        if !a.may_grant(role, u.org_id) {
            return Err(forbidden("You may not grant a role above your own.").with_param("role"));
        }
        if role != Role::Admin && u.org_id.is_none() {
            return Err(bad("role", "A user without an org can only be an admin."));
        }
        sets.push(("role", Val::Text(role.as_str().into())));
    }
    if let Some(b) = active {
        sets.push(("active", Val::Bool(b)));
    }
    // Clearing the binding lets the next OIDC sign-in with the account's email bind another
    // subject: that hands the account over, so only an admin may.
    let unbind = match oidc_bound {
        None => None,
        Some(true) => return Err(bad("oidc_bound", "'oidc_bound' can only be set to false (a sign-in binds).")),
        Some(false) if !a.is_admin() => {
            return Err(forbidden("Only an admin may clear an account's OIDC binding.").with_param("oidc_bound"))
        }
        Some(false) => {
            let mut q = Sql::new("UPDATE users SET oidc_issuer = NULL, oidc_subject = NULL WHERE id = ");
            q.id(u.id);
            Some(q)
        }
    };
    check_policy_rights(a, u.org_id, &policy)?;
    sets.extend(policy.0);
    let stmts: Vec<Sql> =
        ts::update_sql("users", &sets, u.id, " AND deleted_at IS NULL").into_iter().chain(unbind).collect();
    if stmts.is_empty() {
        return Ok(User::from(&u));
    }
    for q in &stmts {
        tx.execute(q).await.map_err(|e| unique_or(e, "email", "A user with this email exists."))?;
    }
    let after = User::from(&ts::load_user(&mut tx, u.id).await?.ok_or_else(|| not_found("User", id))?);
    commit(tx, a, "PATCH", &format!("/api/v1/users/{}", u.id), 200, state(&User::from(&u)), state(&after)).await?;
    gw.request_rebuild();
    Ok(after)
}

/// Marks a user deleted (history keeps them; their keys stop working) and removes their
/// memberships. 409 while they own live service accounts.
pub async fn delete_user(gw: &Gateway, a: &Authed, id: &str) -> Result<(), Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let u = visible_user(&mut tx, a, id).await?;
    if !a.outranks(&u.target()) {
        return Err(forbidden("Deleting this user needs the admin or org-admin role."));
    }
    if u.id == a.user_id {
        return Err(conflict("id", "You cannot delete yourself."));
    }
    let mut q = Sql::new("SELECT COUNT(*) FROM service_accounts WHERE deleted_at IS NULL AND owner_user_id = ");
    q.id(u.id);
    if count(&mut tx, q).await? > 0 {
        return Err(conflict("id", "The user owns service accounts; transfer them to another member first."));
    }
    let mut d = Sql::new("UPDATE users SET active = FALSE, deleted_at = ");
    d.arg(Val::Int(Some(now()))).push(" WHERE deleted_at IS NULL AND id = ").id(u.id);
    let mut m = Sql::new("DELETE FROM team_members WHERE user_id = ");
    m.id(u.id);
    tx.execute(&d).await?;
    tx.execute(&m).await?;
    commit(tx, a, "DELETE", &format!("/api/v1/users/{}", u.id), 204, state(&User::from(&u)), None).await?;
    gw.request_rebuild();
    Ok(())
}

// ----- service accounts -----

/// Creates a service account and its key (shown once in `key`) (admin, org-admin,
/// team-admin). Owner: `user_id` (a team member) or the caller.
pub async fn create_sa(
    gw: &Gateway,
    cfg: TenancySettings,
    a: &Authed,
    team: &str,
    input: Parsed<NewServiceAccount>,
) -> Result<ServiceAccount, Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let t = visible_team(&mut tx, a, team).await?;
    if !a.manages_team(t.id, t.org_id) {
        return Err(forbidden("Creating service accounts needs the admin, org-admin or team-admin role."));
    }
    let NewServiceAccount { name, description, user_id, policy } = input?;
    let owner = match user_id {
        Some(o) => {
            if ts::load_member(&mut tx, t.id, o).await?.is_none() {
                return Err(bad("user_id", "The owner must be a member of the team."));
            }
            o
        }
        None => a.user_id,
    };
    check_policy_rights(a, Some(t.org_id), &policy)?;
    let mut c = Sql::new("SELECT COUNT(*) FROM service_accounts WHERE deleted_at IS NULL AND team_id = ");
    c.id(t.id);
    if count(&mut tx, c).await? >= cfg.max_service_accounts_per_team {
        return Err(quota(format!(
            "The team has its maximum of {} service accounts (AQUEDUCT_MAX_SERVICE_ACCOUNTS_PER_TEAM).",
            cfg.max_service_accounts_per_team
        )));
    }
    let now = now();
    let mut ins =
        Sql::new("INSERT INTO service_accounts (team_id, owner_user_id, name, description, created_at) VALUES (");
    ins.id(t.id)
        .push(", ")
        .id(owner)
        .push(", ")
        .arg(Val::Text(name.clone()))
        .push(", ")
        .arg(Val::Text(description.unwrap_or_default()))
        .push(", ")
        .arg(Val::Int(Some(now)))
        .push(") RETURNING id");
    let sid = tx
        .insert(&ins)
        .await
        .map_err(|e| unique_or(e, "name", "A service account with this name exists in the team."))?;
    let new = ts::NewKey {
        user_id: owner,
        created_by: a.user_id,
        name: &name,
        expires_at: None,
        managed: true,
        sa: Some(sid),
    };
    let (token_id, key) = ts::insert_key(&mut tx, &new, now).await?;
    set_policy(&mut tx, "service_accounts", sid, &policy).await?;
    let s = ts::load_sa(&mut tx, sid).await?.ok_or_else(|| not_found("Service account", &id_str(sid)))?;
    let mut v = ServiceAccount::from(&s);
    v.token = Some(keys::token_in(&mut tx, token_id).await?);
    commit(tx, a, "POST", &format!("/api/v1/teams/{}/service-accounts", t.id), 201, None, state(&v)).await?;
    gw.request_rebuild();
    v.key = Some(key);
    Ok(v)
}

/// The service accounts of a team the caller sees.
pub async fn list_sas(gw: &Gateway, a: &Authed, team: &str, page: Page) -> Result<List<ServiceAccount>, Error> {
    let mut tx = Tx::read(&gw.db).await?;
    let t = visible_team(&mut tx, a, team).await?;
    let mut q = Sql::new(format!(
        "SELECT {} FROM service_accounts s WHERE s.deleted_at IS NULL AND s.team_id = ",
        ts::sa_cols()
    ));
    q.id(t.id);
    paginate(&mut q, "s", page);
    let rows: Vec<SaRow> = tx.fetch_all(&q).await?;
    Ok(List::page(rows, page))
}

/// One service account the caller sees.
pub async fn get_sa(gw: &Gateway, a: &Authed, id: &str) -> Result<ServiceAccount, Error> {
    let mut tx = Tx::read(&gw.db).await?;
    Ok(ServiceAccount::from(&visible_sa(&mut tx, a, id).await?.0))
}

/// Changes a service account (admin, org-admin, team-admin; policy: admin and org-admin).
pub async fn update_sa(
    gw: &Gateway,
    a: &Authed,
    id: &str,
    input: Parsed<ServiceAccountChanges>,
) -> Result<ServiceAccount, Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let (s, t) = visible_sa(&mut tx, a, id).await?;
    if !a.manages_team(t.id, t.org_id) {
        return Err(forbidden("Changing service accounts needs the admin, org-admin or team-admin role."));
    }
    let ServiceAccountChanges { name, description, policy } = input?;
    let mut sets = Vec::new();
    if let Some(n) = name {
        sets.push(("name", Val::Text(n)));
    }
    if let Some(d) = description {
        sets.push(("description", Val::Text(d)));
    }
    check_policy_rights(a, Some(t.org_id), &policy)?;
    sets.extend(policy.0);
    let Some(q) = ts::update_sql("service_accounts", &sets, s.id, " AND deleted_at IS NULL") else {
        return Ok(ServiceAccount::from(&s));
    };
    tx.execute(&q).await.map_err(|e| unique_or(e, "name", "A service account with this name exists in the team."))?;
    let after =
        ServiceAccount::from(&ts::load_sa(&mut tx, s.id).await?.ok_or_else(|| not_found("Service account", id))?);
    let path = format!("/api/v1/service-accounts/{}", s.id);
    commit(tx, a, "PATCH", &path, 200, state(&ServiceAccount::from(&s)), state(&after)).await?;
    gw.request_rebuild();
    Ok(after)
}

/// Deletes a service account and revokes its key.
pub async fn delete_sa(gw: &Gateway, a: &Authed, id: &str) -> Result<(), Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let (s, t) = visible_sa(&mut tx, a, id).await?;
    if !a.manages_team(t.id, t.org_id) {
        return Err(forbidden("Deleting service accounts needs the admin, org-admin or team-admin role."));
    }
    let now = Val::Int(Some(now()));
    let mut r = Sql::new("UPDATE tokens SET revoked_at = ");
    r.arg(now.clone()).push(" WHERE revoked_at IS NULL AND service_account_id = ").id(s.id);
    let mut d = Sql::new("UPDATE service_accounts SET deleted_at = ");
    d.arg(now).push(" WHERE deleted_at IS NULL AND id = ").id(s.id);
    tx.execute(&r).await?;
    tx.execute(&d).await?;
    let path = format!("/api/v1/service-accounts/{}", s.id);
    commit(tx, a, "DELETE", &path, 204, state(&ServiceAccount::from(&s)), None).await?;
    gw.request_rebuild();
    Ok(())
}

/// Hands a service account (and its key) to another member of its team.
pub async fn transfer_sa(gw: &Gateway, a: &Authed, id: &str, input: Parsed<Transfer>) -> Result<ServiceAccount, Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let (s, t) = visible_sa(&mut tx, a, id).await?;
    if !a.manages_team(t.id, t.org_id) {
        return Err(forbidden("Transferring service accounts needs the admin, org-admin or team-admin role."));
    }
    let Transfer { user_id: uid } = input?;
    if ts::load_member(&mut tx, t.id, uid).await?.is_none() || ts::load_user(&mut tx, uid).await?.is_none() {
        return Err(bad("user_id", "The new owner must be a member of the service account's team."));
    }
    let mut o = Sql::new("UPDATE service_accounts SET owner_user_id = ");
    o.id(uid).push(" WHERE deleted_at IS NULL AND id = ").id(s.id);
    let mut k = Sql::new("UPDATE tokens SET user_id = ");
    k.id(uid).push(" WHERE service_account_id = ").id(s.id);
    tx.execute(&o).await?;
    tx.execute(&k).await?;
    let after =
        ServiceAccount::from(&ts::load_sa(&mut tx, s.id).await?.ok_or_else(|| not_found("Service account", id))?);
    let path = format!("/api/v1/service-accounts/{}/transfer", s.id);
    commit(tx, a, "POST", &path, 200, state(&ServiceAccount::from(&s)), state(&after)).await?;
    gw.request_rebuild();
    Ok(after)
}
