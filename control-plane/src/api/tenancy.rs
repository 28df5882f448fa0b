//! `/api/v1/orgs`, `/teams`, `/teams/{id}/members`, `/users`, `/service-accounts`: the tenancy
//! routes. Entities the caller may not see answer 404; visible ones the caller may not change
//! answer 403.

use super::auth::Authed;
use super::common::*;
use super::error::Error;
use super::tokens::{new_key_row, token_view_by_id, NewKey};
use crate::gateway::{now, Gateway};
use crate::tenancy::authz::Target;
use crate::tenancy::model::Role;
use crate::tenancy::store::{self as ts, MemberRow, OrgRow, SaRow, Sql, TeamRow, UserRow, Val, NEW_ID};
use aqueduct_policy::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::{json, Value};
use std::sync::Arc;

type Body = Result<Json<Value>, JsonRejection>;

/// Policy fields accepted by PATCH (the columns every level carries).
const POLICY_KEYS: &[&str] = crate::tenancy::model::POLICY_COLUMNS;

fn allowed(own: &[&'static str]) -> Vec<&'static str> {
    own.iter().chain(POLICY_KEYS).copied().collect()
}

fn path_id(what: &str, id: &str) -> Result<i64, Error> {
    parse_id(id).ok_or_else(|| not_found(what, id))
}

// ----- views -----

fn opt_id(i: Option<i64>) -> Value {
    i.map(id_str).into()
}

/// An org as the API shows it.
pub fn org_view(o: &OrgRow) -> Value {
    with_policy(
        json!({"object": "org", "id": id_str(o.id), "name": o.name, "created_at": rfc3339(o.created_at)}),
        &o.policy,
    )
}

/// A team as the API shows it.
pub fn team_view(t: &TeamRow) -> Value {
    with_policy(
        json!({"object": "team", "id": id_str(t.id), "org_id": id_str(t.org_id), "name": t.name,
               "description": t.description, "oidc_group": t.oidc_group, "created_at": rfc3339(t.created_at)}),
        &t.policy,
    )
}

/// A user as the API shows it.
pub fn user_view(u: &UserRow) -> Value {
    with_policy(
        json!({"object": "user", "id": id_str(u.id), "email": u.email, "org_id": opt_id(u.org_id), "role": u.role,
               "active": u.active, "oidc_bound": u.oidc_bound, "created_at": rfc3339(u.created_at)}),
        &u.policy,
    )
}

/// A service account as the API shows it.
pub fn sa_view(s: &SaRow) -> Value {
    with_policy(
        json!({"object": "service_account", "id": id_str(s.id), "team_id": id_str(s.team_id),
               "owner_user_id": id_str(s.owner_user_id), "name": s.name, "description": s.description,
               "token_id": opt_id(s.token_id), "created_at": rfc3339(s.created_at)}),
        &s.policy,
    )
}

fn member_view(m: &MemberRow) -> Value {
    json!({"object": "team_member", "team_id": id_str(m.team_id), "user_id": id_str(m.user_id),
           "team_admin": m.team_admin, "added_at": rfc3339(m.added_at)})
}

// ----- loaders (no visibility check) -----

async fn load_org(gw: &Gateway, id: i64) -> Result<Option<OrgRow>, Error> {
    let mut q = Sql::new(format!("SELECT {} FROM orgs o WHERE o.deleted_at IS NULL AND o.id = ", ts::org_cols()));
    q.id(id);
    Ok(ts::fetch_opt(&gw.db, &q).await?)
}

/// A live team.
pub async fn load_team(gw: &Gateway, id: i64) -> Result<Option<TeamRow>, Error> {
    let mut q = Sql::new(format!("SELECT {} FROM teams t WHERE t.deleted_at IS NULL AND t.id = ", ts::team_cols()));
    q.id(id);
    Ok(ts::fetch_opt(&gw.db, &q).await?)
}

/// A live user.
pub async fn load_user(gw: &Gateway, id: i64) -> Result<Option<UserRow>, Error> {
    let mut q = Sql::new(format!("SELECT {} FROM users u WHERE u.deleted_at IS NULL AND u.id = ", ts::user_cols()));
    q.id(id);
    Ok(ts::fetch_opt(&gw.db, &q).await?)
}

/// A live service account.
pub async fn load_sa(gw: &Gateway, id: i64) -> Result<Option<SaRow>, Error> {
    let mut q =
        Sql::new(format!("SELECT {} FROM service_accounts s WHERE s.deleted_at IS NULL AND s.id = ", ts::sa_cols()));
    q.id(id);
    Ok(ts::fetch_opt(&gw.db, &q).await?)
}

async fn load_member(gw: &Gateway, team: i64, user: i64) -> Result<Option<MemberRow>, Error> {
    let mut q = Sql::new("SELECT team_id, user_id, team_admin, added_at FROM team_members WHERE team_id = ");
    q.id(team).push(" AND user_id = ").id(user);
    Ok(ts::fetch_opt(&gw.db, &q).await?)
}

async fn count(gw: &Gateway, q: Sql) -> Result<i64, Error> {
    Ok(ts::scalar(&gw.db, &q).await?.unwrap_or(0))
}

// ----- visibility -----

/// Whether the caller may see `team`.
pub fn sees_team(a: &Authed, t: &TeamRow) -> bool {
    a.sees_team(t.id, t.org_id)
}

/// Whether the caller may manage `team`'s members, service accounts and their keys.
pub fn manages_team(a: &Authed, t: &TeamRow) -> bool {
    a.manages_team(t.id, t.org_id)
}

/// A user as the authorization model sees them.
pub fn target(u: &UserRow) -> Target {
    Target { id: u.id, role: Role::parse(&u.role).unwrap_or(Role::User), org_id: u.org_id }
}

/// A visible team, else 404.
pub async fn visible_team(gw: &Gateway, a: &Authed, id: &str) -> Result<TeamRow, Error> {
    let tid = path_id("Team", id)?;
    match load_team(gw, tid).await? {
        Some(t) if sees_team(a, &t) => Ok(t),
        _ => Err(not_found("Team", id)),
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

async fn visible_user(gw: &Gateway, a: &Authed, id: &str) -> Result<UserRow, Error> {
    let uid = path_id("User", id)?;
    let mut q = Sql::new(format!("SELECT {} FROM users u WHERE u.deleted_at IS NULL AND u.id = ", ts::user_cols()));
    q.id(uid);
    user_visibility(a, &mut q);
    ts::fetch_opt(&gw.db, &q).await?.ok_or_else(|| not_found("User", id))
}

/// Policy fields may be set only by an admin or an org-admin of the entity's org; a merge flag
/// may be turned off only by an admin (it drops the exclusions of every level above, the org's
/// and the global default included).
pub fn check_policy_rights(a: &Authed, org: Option<i64>, p: &PolicyPatch) -> Result<(), Error> {
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

fn quota(msg: String) -> Error {
    ApiError::new(409, msg).code("quota_exceeded").into()
}

fn email_ok(e: &str) -> bool {
    let parts: Vec<&str> = e.split('@').collect();
    parts.len() == 2 && !parts[0].is_empty() && !parts[1].is_empty() && !e.chars().any(char::is_whitespace)
}

// ----- orgs -----

/// `POST /api/v1/orgs` (admin).
pub async fn create_org(State(gw): State<Arc<Gateway>>, a: Authed, body: Body) -> Result<impl IntoResponse, Error> {
    a.require_admin()?;
    let mut f = Fields::parse(body, &allowed(&["name"]))?;
    let name = f.req_str("name", MAX_NAME)?;
    let policy = f.policy()?;
    let mut ins = Sql::new("INSERT INTO orgs (name, created_at) VALUES (");
    ins.arg(Val::Text(name)).push(", ").arg(Val::Int(Some(now()))).push(") RETURNING id");
    let rest: Vec<Sql> = update_sql("orgs", &policy.0, 0, "").into_iter().map(with_new_id).collect();
    let id =
        ts::insert_tx(&gw.db, &ins, &rest).await.map_err(|e| unique_or(e, "name", "An org with this name exists."))?;
    gw.request_rebuild();
    let o = load_org(&gw, id).await?.ok_or_else(|| not_found("Org", &id_str(id)))?;
    Ok((StatusCode::CREATED, Json(org_view(&o))))
}

/// Rewrites `WHERE id = $n` of an [`update_sql`] built for id 0 to the new row's id.
fn with_new_id(mut s: Sql) -> Sql {
    if let Some(Val::Int(Some(0))) = s.args.last() {
        let n = s.args.len();
        s.text = s.text.replace(&format!("id = ${n}"), &format!("id = {NEW_ID}"));
        s.args.pop();
    }
    s
}

/// `GET /api/v1/orgs`: every org for an admin, else the caller's own.
pub async fn list_orgs(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Query(pq): Query<PageQuery>,
) -> Result<impl IntoResponse, Error> {
    let page = pq.page()?;
    let mut q = Sql::new(format!("SELECT {} FROM orgs o WHERE o.deleted_at IS NULL", ts::org_cols()));
    if !a.is_admin() {
        q.push(" AND o.id = ").arg(Val::Int(a.org_id));
    }
    paginate(&mut q, "o", page);
    let rows: Vec<OrgRow> = ts::fetch_all(&gw.db, &q).await?;
    Ok(list_json(rows, page, org_view))
}

async fn visible_org(gw: &Gateway, a: &Authed, id: &str) -> Result<OrgRow, Error> {
    let oid = path_id("Org", id)?;
    match load_org(gw, oid).await? {
        Some(o) if a.is_admin() || a.org_id == Some(o.id) => Ok(o),
        _ => Err(not_found("Org", id)),
    }
}

/// `GET /api/v1/orgs/{id}`
pub async fn get_org(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Path<String>) -> Result<Json<Value>, Error> {
    Ok(Json(org_view(&visible_org(&gw, &a, &id).await?)))
}

/// `PATCH /api/v1/orgs/{id}` (admin).
pub async fn patch_org(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, Error> {
    let o = visible_org(&gw, &a, &id).await?;
    a.require_admin()?;
    let mut f = Fields::parse(body, &allowed(&["name"]))?;
    let mut sets = Vec::new();
    if let Some(n) = f.req_str_opt("name")? {
        sets.push(("name", Val::Text(n)));
    }
    sets.extend(f.policy()?.0);
    if let Some(q) = update_sql("orgs", &sets, o.id, " AND deleted_at IS NULL") {
        ts::execute_tx(&gw.db, &[q]).await.map_err(|e| unique_or(e, "name", "An org with this name exists."))?;
        gw.request_rebuild();
    }
    get_org(State(gw), a, Path(id)).await
}

/// `DELETE /api/v1/orgs/{id}` (admin): only an org without live users or teams.
pub async fn delete_org(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Error> {
    let o = visible_org(&gw, &a, &id).await?;
    a.require_admin()?;
    let mut q = Sql::new("SELECT (SELECT COUNT(*) FROM users WHERE deleted_at IS NULL AND org_id = ");
    q.id(o.id).push(") + (SELECT COUNT(*) FROM teams WHERE deleted_at IS NULL AND org_id = ").id(o.id).push(")");
    if count(&gw, q).await? > 0 {
        return Err(conflict("id", "The org still has users or teams; delete them first."));
    }
    let mut d = Sql::new("UPDATE orgs SET deleted_at = ");
    d.arg(Val::Int(Some(now())))
        .push(", name = name || ' (deleted ' || CAST(id AS TEXT) || ')' WHERE deleted_at IS NULL AND id = ")
        .id(o.id);
    ts::execute_tx(&gw.db, &[d]).await?;
    gw.request_rebuild();
    Ok(StatusCode::NO_CONTENT)
}

// ----- teams -----

/// `POST /api/v1/teams` (admin; org-admin in their org).
pub async fn create_team(State(gw): State<Arc<Gateway>>, a: Authed, body: Body) -> Result<impl IntoResponse, Error> {
    if !(a.is_admin() || a.role == Role::OrgAdmin) {
        return Err(forbidden("Creating teams needs the admin or org-admin role."));
    }
    let mut f = Fields::parse(body, &allowed(&["org_id", "name", "description", "oidc_group"]))?;
    let org_id = match f.opt_id("org_id")? {
        Some(o) => o,
        None if a.role == Role::OrgAdmin && a.org_id.is_some() => a.org_id.unwrap_or_default(),
        None => return Err(bad("org_id", "'org_id' is required.")),
    };
    let name = f.req_str("name", MAX_NAME)?;
    let description = f.opt_text("description", MAX_TEXT)?.unwrap_or_default();
    let oidc_group = f.opt_text("oidc_group", MAX_NAME)?.unwrap_or_default();
    let policy = f.policy()?;
    if !a.manages_org(Some(org_id)) || load_org(&gw, org_id).await?.is_none() {
        return Err(not_found("Org", &id_str(org_id)).with_param("org_id"));
    }
    check_policy_rights(&a, Some(org_id), &policy)?;
    let mut ins = Sql::new("INSERT INTO teams (org_id, name, description, oidc_group, created_at) VALUES (");
    ins.id(org_id)
        .push(", ")
        .arg(Val::Text(name))
        .push(", ")
        .arg(Val::Text(description))
        .push(", ")
        .arg(Val::Text(oidc_group))
        .push(", ")
        .arg(Val::Int(Some(now())))
        .push(") RETURNING id");
    let rest: Vec<Sql> = update_sql("teams", &policy.0, 0, "").into_iter().map(with_new_id).collect();
    let id = ts::insert_tx(&gw.db, &ins, &rest)
        .await
        .map_err(|e| unique_or(e, "name", "A team with this name exists in the org."))?;
    gw.request_rebuild();
    let t = load_team(&gw, id).await?.ok_or_else(|| not_found("Team", &id_str(id)))?;
    Ok((StatusCode::CREATED, Json(team_view(&t))))
}

/// `GET /api/v1/teams`: all (admin), the org's (org-admin), else the caller's teams.
pub async fn list_teams(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Query(pq): Query<PageQuery>,
) -> Result<impl IntoResponse, Error> {
    let page = pq.page()?;
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
    Ok(list_json(rows, page, team_view))
}

/// `GET /api/v1/teams/{id}`
pub async fn get_team(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Path<String>) -> Result<Json<Value>, Error> {
    Ok(Json(team_view(&visible_team(&gw, &a, &id).await?)))
}

/// `PATCH /api/v1/teams/{id}` (admin; org-admin of its org).
pub async fn patch_team(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, Error> {
    let t = visible_team(&gw, &a, &id).await?;
    if !a.manages_org(Some(t.org_id)) {
        return Err(forbidden("Changing a team needs the admin or org-admin role."));
    }
    let mut f = Fields::parse(body, &allowed(&["name", "description", "oidc_group"]))?;
    let mut sets = Vec::new();
    if let Some(n) = f.req_str_opt("name")? {
        sets.push(("name", Val::Text(n)));
    }
    if let Some(d) = f.opt_text("description", MAX_TEXT)? {
        sets.push(("description", Val::Text(d)));
    }
    if let Some(g) = f.opt_text("oidc_group", MAX_NAME)? {
        sets.push(("oidc_group", Val::Text(g)));
    }
    let policy = f.policy()?;
    check_policy_rights(&a, Some(t.org_id), &policy)?;
    sets.extend(policy.0);
    if let Some(q) = update_sql("teams", &sets, t.id, " AND deleted_at IS NULL") {
        ts::execute_tx(&gw.db, &[q])
            .await
            .map_err(|e| unique_or(e, "name", "A team with this name exists in the org."))?;
        gw.request_rebuild();
    }
    get_team(State(gw), a, Path(id)).await
}

/// `DELETE /api/v1/teams/{id}` (admin; org-admin of its org): removes its memberships, deletes its
/// service accounts and revokes their keys, in one transaction.
pub async fn delete_team(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Error> {
    let t = visible_team(&gw, &a, &id).await?;
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
    ts::execute_tx(&gw.db, &[revoke, sas, members, team]).await?;
    gw.request_rebuild();
    Ok(StatusCode::NO_CONTENT)
}

// ----- members -----

/// `PUT /api/v1/teams/{id}/members/{user_id}` with `{"team_admin": bool}` (admin, org-admin,
/// team-admin; only admins and org-admins grant or withdraw the team-admin flag).
pub async fn put_member(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path((id, user_id)): Path<(String, String)>,
    body: Body,
) -> Result<impl IntoResponse, Error> {
    let t = visible_team(&gw, &a, &id).await?;
    if !manages_team(&a, &t) {
        return Err(forbidden("Managing members needs the admin, org-admin or team-admin role."));
    }
    let mut f = Fields::parse_optional(body, &["team_admin"])?;
    let flag = f.opt_bool("team_admin")?;
    let uid = parse_id(&user_id).ok_or_else(|| not_found("User", &user_id).with_param("user_id"))?;
    let Some(u) = load_user(&gw, uid).await? else {
        return Err(not_found("User", &user_id).with_param("user_id"));
    };
    if u.org_id != Some(t.org_id) {
        return Err(bad("user_id", "The user belongs to another org than the team."));
    }
    let existing = load_member(&gw, t.id, uid).await?;
    let was_admin = existing.as_ref().is_some_and(|m| m.team_admin);
    if !a.may_manage_member(t.id, t.org_id, &target(&u), was_admin) {
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
    ts::execute_tx(&gw.db, &[q]).await?;
    gw.request_rebuild();
    let m = load_member(&gw, t.id, uid).await?.ok_or_else(|| not_found("Member", &user_id))?;
    let status = if existing.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(member_view(&m))))
}

/// `DELETE /api/v1/teams/{id}/members/{user_id}`; 409 while the user owns service accounts of
/// the team (transfer them first).
pub async fn delete_member(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, Error> {
    let t = visible_team(&gw, &a, &id).await?;
    if !manages_team(&a, &t) {
        return Err(forbidden("Managing members needs the admin, org-admin or team-admin role."));
    }
    let uid = parse_id(&user_id).ok_or_else(|| not_found("Member", &user_id))?;
    let m = load_member(&gw, t.id, uid).await?.ok_or_else(|| not_found("Member", &user_id))?;
    if m.team_admin && !a.manages_org(Some(t.org_id)) {
        return Err(forbidden("Only an admin or an org-admin may remove a team-admin."));
    }
    let u = load_user(&gw, uid).await?.ok_or_else(|| not_found("Member", &user_id))?;
    if !a.may_manage_member(t.id, t.org_id, &target(&u), m.team_admin) {
        return Err(forbidden("You may remove only members your role outranks."));
    }
    let mut q = Sql::new("SELECT COUNT(*) FROM service_accounts WHERE deleted_at IS NULL AND team_id = ");
    q.id(t.id).push(" AND owner_user_id = ").id(uid);
    if count(&gw, q).await? > 0 {
        return Err(conflict(
            "user_id",
            "The user owns service accounts of this team; transfer them to another member first.",
        ));
    }
    let mut d = Sql::new("DELETE FROM team_members WHERE team_id = ");
    d.id(t.id).push(" AND user_id = ").id(uid);
    ts::execute_tx(&gw.db, &[d]).await?;
    gw.request_rebuild();
    Ok(StatusCode::NO_CONTENT)
}

// ----- users -----

/// `POST /api/v1/users` (admin; org-admin in their org, never creating admins).
pub async fn create_user(State(gw): State<Arc<Gateway>>, a: Authed, body: Body) -> Result<impl IntoResponse, Error> {
    if !(a.is_admin() || a.role == Role::OrgAdmin) {
        return Err(forbidden("Creating users needs the admin or org-admin role."));
    }
    let mut f = Fields::parse(body, &allowed(&["email", "org_id", "role"]))?;
    let email = f.req_str("email", MAX_EMAIL)?;
    if !email_ok(&email) {
        return Err(bad("email", "'email' must be an address with one '@'."));
    }
    let org_id = f.opt_id("org_id")?.or(if a.is_admin() { None } else { a.org_id });
    let role = match f.opt_str("role", 32)? {
        None => Role::User,
        Some(r) => Role::parse(&r).ok_or_else(|| bad("role", "'role' must be user, org-admin or admin."))?,
    };
    let policy = f.policy()?;
    if role == Role::Admin && !a.is_admin() {
        return Err(forbidden("Only an admin may create admins.").with_param("role"));
    }
    if let Some(o) = org_id {
        if !a.manages_org(Some(o)) || load_org(&gw, o).await?.is_none() {
            return Err(not_found("Org", &id_str(o)).with_param("org_id"));
        }
    } else if role != Role::Admin {
        return Err(bad("org_id", "'org_id' is required."));
    }
    if !a.may_grant(role, org_id) {
        return Err(forbidden("You may not grant a role above your own.").with_param("role"));
    }
    check_policy_rights(&a, org_id, &policy)?;
    let mut ins = Sql::new("INSERT INTO users (email, org_id, role, created_at) VALUES (");
    ins.arg(Val::Text(email))
        .push(", ")
        .arg(Val::Int(org_id))
        .push(", ")
        .arg(Val::Text(role.as_str().into()))
        .push(", ")
        .arg(Val::Int(Some(now())))
        .push(") RETURNING id");
    let rest: Vec<Sql> = update_sql("users", &policy.0, 0, "").into_iter().map(with_new_id).collect();
    let id = ts::insert_tx(&gw.db, &ins, &rest)
        .await
        .map_err(|e| unique_or(e, "email", "A user with this email exists."))?;
    gw.request_rebuild();
    let u = load_user(&gw, id).await?.ok_or_else(|| not_found("User", &id_str(id)))?;
    Ok((StatusCode::CREATED, Json(user_view(&u))))
}

/// `GET /api/v1/users`: all (admin), the org's (org-admin), else the caller and the members of
/// teams the caller administers.
pub async fn list_users(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Query(pq): Query<PageQuery>,
) -> Result<impl IntoResponse, Error> {
    let page = pq.page()?;
    let mut q = Sql::new(format!("SELECT {} FROM users u WHERE u.deleted_at IS NULL", ts::user_cols()));
    user_visibility(&a, &mut q);
    paginate(&mut q, "u", page);
    let rows: Vec<UserRow> = ts::fetch_all(&gw.db, &q).await?;
    Ok(list_json(rows, page, user_view))
}

/// `GET /api/v1/users/{id}`
pub async fn get_user(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Path<String>) -> Result<Json<Value>, Error> {
    Ok(Json(user_view(&visible_user(&gw, &a, &id).await?)))
}

fn may_manage_user(a: &Authed, u: &UserRow) -> bool {
    a.outranks(&target(u))
}

/// `PATCH /api/v1/users/{id}` (admin; org-admin for non-admins of their org).
pub async fn patch_user(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, Error> {
    let u = visible_user(&gw, &a, &id).await?;
    if !may_manage_user(&a, &u) {
        return Err(forbidden("Changing this user needs the admin or org-admin role."));
    }
    let mut f = Fields::parse(body, &allowed(&["email", "role", "active", "oidc_bound"]))?;
    let mut sets = Vec::new();
    if let Some(e) = f.req_str_opt_max("email", MAX_EMAIL)? {
        if !email_ok(&e) {
            return Err(bad("email", "'email' must be an address with one '@'."));
        }
        sets.push(("email", Val::Text(e)));
    }
    if let Some(r) = f.opt_str("role", 32)? {
        let role = Role::parse(&r).ok_or_else(|| bad("role", "'role' must be user, org-admin or admin."))?;
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
    if let Some(b) = f.opt_bool("active")? {
        sets.push(("active", Val::Bool(b)));
    }
    // Clearing the binding lets the next OIDC sign-in with the account's email bind another
    // subject: that hands the account over, so only an admin may.
    let unbind = match f.opt_bool("oidc_bound")? {
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
    let policy = f.policy()?;
    check_policy_rights(&a, u.org_id, &policy)?;
    sets.extend(policy.0);
    let stmts: Vec<Sql> =
        update_sql("users", &sets, u.id, " AND deleted_at IS NULL").into_iter().chain(unbind).collect();
    if !stmts.is_empty() {
        ts::execute_tx(&gw.db, &stmts).await.map_err(|e| unique_or(e, "email", "A user with this email exists."))?;
        gw.request_rebuild();
    }
    get_user(State(gw), a, Path(id)).await
}

/// `DELETE /api/v1/users/{id}`: marks the user deleted (history keeps it; its keys stop
/// working) and removes its memberships. 409 while it owns live service accounts.
pub async fn delete_user(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Error> {
    let u = visible_user(&gw, &a, &id).await?;
    if !may_manage_user(&a, &u) {
        return Err(forbidden("Deleting this user needs the admin or org-admin role."));
    }
    if u.id == a.user_id {
        return Err(conflict("id", "You cannot delete yourself."));
    }
    let mut q = Sql::new("SELECT COUNT(*) FROM service_accounts WHERE deleted_at IS NULL AND owner_user_id = ");
    q.id(u.id);
    if count(&gw, q).await? > 0 {
        return Err(conflict("id", "The user owns service accounts; transfer them to another member first."));
    }
    let mut d = Sql::new("UPDATE users SET active = FALSE, deleted_at = ");
    d.arg(Val::Int(Some(now()))).push(" WHERE deleted_at IS NULL AND id = ").id(u.id);
    let mut m = Sql::new("DELETE FROM team_members WHERE user_id = ");
    m.id(u.id);
    ts::execute_tx(&gw.db, &[d, m]).await?;
    gw.request_rebuild();
    Ok(StatusCode::NO_CONTENT)
}

// ----- service accounts -----

/// `POST /api/v1/teams/{id}/service-accounts` (admin, org-admin, team-admin): creates the account
/// and its key (returned once as `key`). Owner: `user_id` (a team member) or the caller.
pub async fn create_sa(
    State(gw): State<Arc<Gateway>>,
    Extension(cfg): Extension<TenancySettings>,
    a: Authed,
    Path(id): Path<String>,
    body: Body,
) -> Result<impl IntoResponse, Error> {
    let t = visible_team(&gw, &a, &id).await?;
    if !manages_team(&a, &t) {
        return Err(forbidden("Creating service accounts needs the admin, org-admin or team-admin role."));
    }
    let mut f = Fields::parse(body, &allowed(&["name", "description", "user_id"]))?;
    let name = f.req_str("name", MAX_NAME)?;
    let description = f.opt_text("description", MAX_TEXT)?.unwrap_or_default();
    let owner = match f.opt_id("user_id")? {
        Some(o) => {
            if load_member(&gw, t.id, o).await?.is_none() {
                return Err(bad("user_id", "The owner must be a member of the team."));
            }
            o
        }
        None => a.user_id,
    };
    let policy = f.policy()?;
    check_policy_rights(&a, Some(t.org_id), &policy)?;
    let mut c = Sql::new("SELECT COUNT(*) FROM service_accounts WHERE deleted_at IS NULL AND team_id = ");
    c.id(t.id);
    if count(&gw, c).await? >= cfg.max_service_accounts_per_team {
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
        .arg(Val::Text(description))
        .push(", ")
        .arg(Val::Int(Some(now)))
        .push(") RETURNING id");
    let new = NewKey {
        user_id: owner,
        created_by: a.user_id,
        name: &name,
        expires_at: None,
        managed: true,
        sa: Some(NEW_ID),
    };
    let (key, key_sql) = new_key_row(&new, now);
    let mut rest = vec![key_sql];
    rest.extend(update_sql("service_accounts", &policy.0, 0, "").map(with_new_id));
    let sid = ts::insert_tx(&gw.db, &ins, &rest)
        .await
        .map_err(|e| unique_or(e, "name", "A service account with this name exists in the team."))?;
    gw.request_rebuild();
    let s = load_sa(&gw, sid).await?.ok_or_else(|| not_found("Service account", &id_str(sid)))?;
    let mut v = sa_view(&s);
    v["key"] = key.into();
    if let Some(tid) = s.token_id {
        v["token"] = token_view_by_id(&gw, tid).await?;
    }
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /api/v1/teams/{id}/service-accounts` (anyone who sees the team).
pub async fn list_sas(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
    Query(pq): Query<PageQuery>,
) -> Result<impl IntoResponse, Error> {
    let page = pq.page()?;
    let t = visible_team(&gw, &a, &id).await?;
    let mut q = Sql::new(format!(
        "SELECT {} FROM service_accounts s WHERE s.deleted_at IS NULL AND s.team_id = ",
        ts::sa_cols()
    ));
    q.id(t.id);
    paginate(&mut q, "s", page);
    let rows: Vec<SaRow> = ts::fetch_all(&gw.db, &q).await?;
    Ok(list_json(rows, page, sa_view))
}

async fn visible_sa(gw: &Gateway, a: &Authed, id: &str) -> Result<(SaRow, TeamRow), Error> {
    let sid = path_id("Service account", id)?;
    if let Some(s) = load_sa(gw, sid).await? {
        if let Some(t) = load_team(gw, s.team_id).await? {
            if sees_team(a, &t) {
                return Ok((s, t));
            }
        }
    }
    Err(not_found("Service account", id))
}

/// `GET /api/v1/service-accounts/{id}`
pub async fn get_sa(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Path<String>) -> Result<Json<Value>, Error> {
    Ok(Json(sa_view(&visible_sa(&gw, &a, &id).await?.0)))
}

/// `PATCH /api/v1/service-accounts/{id}` (admin, org-admin, team-admin; policy fields: admin and
/// org-admin only).
pub async fn patch_sa(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, Error> {
    let (s, t) = visible_sa(&gw, &a, &id).await?;
    if !manages_team(&a, &t) {
        return Err(forbidden("Changing service accounts needs the admin, org-admin or team-admin role."));
    }
    let mut f = Fields::parse(body, &allowed(&["name", "description"]))?;
    let mut sets = Vec::new();
    if let Some(n) = f.req_str_opt("name")? {
        sets.push(("name", Val::Text(n)));
    }
    if let Some(d) = f.opt_text("description", MAX_TEXT)? {
        sets.push(("description", Val::Text(d)));
    }
    let policy = f.policy()?;
    check_policy_rights(&a, Some(t.org_id), &policy)?;
    sets.extend(policy.0);
    if let Some(q) = update_sql("service_accounts", &sets, s.id, " AND deleted_at IS NULL") {
        ts::execute_tx(&gw.db, &[q])
            .await
            .map_err(|e| unique_or(e, "name", "A service account with this name exists in the team."))?;
        gw.request_rebuild();
    }
    get_sa(State(gw), a, Path(id)).await
}

/// `DELETE /api/v1/service-accounts/{id}`: marks it deleted and revokes its key.
pub async fn delete_sa(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Error> {
    let (s, t) = visible_sa(&gw, &a, &id).await?;
    if !manages_team(&a, &t) {
        return Err(forbidden("Deleting service accounts needs the admin, org-admin or team-admin role."));
    }
    let now = Val::Int(Some(now()));
    let mut r = Sql::new("UPDATE tokens SET revoked_at = ");
    r.arg(now.clone()).push(" WHERE revoked_at IS NULL AND service_account_id = ").id(s.id);
    let mut d = Sql::new("UPDATE service_accounts SET deleted_at = ");
    d.arg(now).push(" WHERE deleted_at IS NULL AND id = ").id(s.id);
    ts::execute_tx(&gw.db, &[r, d]).await?;
    gw.request_rebuild();
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/service-accounts/{id}/transfer` with `{"user_id": "…"}`: the new owner must be
/// a member of the account's team; its key moves with it.
pub async fn transfer_sa(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, Error> {
    let (s, t) = visible_sa(&gw, &a, &id).await?;
    if !manages_team(&a, &t) {
        return Err(forbidden("Transferring service accounts needs the admin, org-admin or team-admin role."));
    }
    let mut f = Fields::parse(body, &["user_id"])?;
    let uid = f.req_id("user_id")?;
    if load_member(&gw, t.id, uid).await?.is_none() || load_user(&gw, uid).await?.is_none() {
        return Err(bad("user_id", "The new owner must be a member of the service account's team."));
    }
    let mut o = Sql::new("UPDATE service_accounts SET owner_user_id = ");
    o.id(uid).push(" WHERE deleted_at IS NULL AND id = ").id(s.id);
    let mut k = Sql::new("UPDATE tokens SET user_id = ");
    k.id(uid).push(" WHERE service_account_id = ").id(s.id);
    ts::execute_tx(&gw.db, &[o, k]).await?;
    gw.request_rebuild();
    get_sa(State(gw), a, Path(id)).await
}
