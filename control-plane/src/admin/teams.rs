//! Teams and team detail: members and team-admins, service accounts (create, transfer,
//! regenerate, delete), and the team's own settings for admins and org-admins.

use super::keys::{page_all, secret_page};
use super::{act, api, body, error_page, field, list_of, render, s, unavailable, Nav, Ui};
use crate::api::tenancy::{self as t, manages_team};
use crate::api::{tokens, TenancySettings};
use crate::gateway::Gateway;
use crate::tenancy::store::{self as ts, Sql, Val};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// A team as the pages show it.
struct TeamView {
    id: String,
    name: String,
    org: String,
    description: String,
    oidc_group: String,
    my_role: &'static str,
}

/// A member row.
#[derive(sqlx::FromRow)]
struct MemberView {
    user_id: i64,
    email: String,
    team_admin: bool,
}

/// A service account row.
struct SaView {
    id: String,
    name: String,
    description: String,
    owner: String,
    owner_id: i64,
    key: String,
    has_key: bool,
}

#[derive(Template)]
#[template(path = "teams.html")]
struct TeamsPage {
    nav: Nav,
    teams: Vec<TeamView>,
    can_create: bool,
    orgs: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "team.html")]
struct TeamPage {
    nav: Nav,
    team: TeamView,
    members: Vec<MemberView>,
    sas: Vec<SaView>,
    manages: bool,
    manages_org: bool,
}

/// Names of orgs by id (for labels).
pub async fn org_names(gw: &Gateway) -> HashMap<String, String> {
    #[derive(sqlx::FromRow)]
    struct O {
        id: i64,
        name: String,
    }
    let rows: Vec<O> =
        ts::fetch_all(&gw.db, &Sql::new("SELECT id, name FROM orgs WHERE deleted_at IS NULL ORDER BY name"))
            .await
            .unwrap_or_default();
    rows.into_iter().map(|o| (o.id.to_string(), o.name)).collect()
}

fn team_view(u: &Ui, v: &Value, orgs: &HashMap<String, String>) -> TeamView {
    let id: i64 = s(v, "id").parse().unwrap_or(0);
    let org = s(v, "org_id");
    let my_role = if u.a.manages_org(org.parse().ok()) {
        if u.a.is_admin() {
            "admin"
        } else {
            "org-admin"
        }
    } else if u.a.team_admin_of(id) {
        "team-admin"
    } else if u.a.member_of(id) {
        "member"
    } else {
        "none"
    };
    TeamView {
        id: id.to_string(),
        name: s(v, "name"),
        org: orgs.get(&org).cloned().unwrap_or(org),
        description: s(v, "description"),
        oidc_group: s(v, "oidc_group"),
        my_role,
    }
}

/// `GET /ui/teams`
pub async fn list(State(gw): State<Arc<Gateway>>, u: Ui) -> Response {
    let rows = match list_of(api(t::list_teams(State(gw.clone()), u.a.clone(), Query(page_all())).await).await) {
        Ok(l) => l,
        Err(e) => return unavailable(&e),
    };
    let names = org_names(&gw).await;
    let teams = rows.iter().map(|v| team_view(&u, v, &names)).collect();
    let mut orgs: Vec<(String, String)> = names.into_iter().collect();
    orgs.sort_by(|a, b| a.1.cmp(&b.1));
    let can_create = u.a.is_admin() || u.a.role == crate::tenancy::model::Role::OrgAdmin;
    render(StatusCode::OK, &TeamsPage { nav: u.nav(&gw, "teams").await, teams, can_create, orgs })
}

/// `POST /ui/teams`: creates a team (admin; org-admin in their org).
pub async fn create(State(gw): State<Arc<Gateway>>, u: Ui, Form(f): Form<HashMap<String, String>>) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    let mut b = json!({"name": field(&f, "name"), "description": field(&f, "description"), "oidc_group": field(&f, "oidc_group")});
    if !field(&f, "org_id").is_empty() {
        b["org_id"] = field(&f, "org_id").into();
    }
    match act(&gw, &u, "POST", "/api/v1/teams", t::create_team(State(gw.clone()), u.a.clone(), body(b))).await {
        Ok(v) => {
            u.done(&gw, &format!("/ui/teams/{}", s(&v, "id")), Ok(format!("Team {} created.", s(&v, "name")))).await
        }
        Err(e) => u.done(&gw, "/ui/teams", Err(e)).await,
    }
}

async fn members(gw: &Gateway, team: i64) -> Vec<MemberView> {
    let mut q = Sql::new(
        "SELECT m.user_id, u.email, m.team_admin FROM team_members m JOIN users u ON u.id = m.user_id \
         WHERE u.deleted_at IS NULL AND m.team_id = ",
    );
    q.id(team).push(" ORDER BY u.email");
    ts::fetch_all(&gw.db, &q).await.unwrap_or_default()
}

/// `GET /ui/teams/{id}`
pub async fn detail(State(gw): State<Arc<Gateway>>, u: Ui, Path(id): Path<String>) -> Response {
    let team = match t::visible_team(&gw, &u.a, &id).await {
        Ok(t) => t,
        Err(e) => return error_page(StatusCode::from_u16(e.0.status).unwrap_or(StatusCode::NOT_FOUND), &e.0.message),
    };
    let names = org_names(&gw).await;
    let tv = team_view(&u, &t::team_view(&team), &names);
    let members = members(&gw, team.id).await;
    let manages = manages_team(&u.a, &team);
    let sas_json = match list_of(
        api(t::list_sas(State(gw.clone()), u.a.clone(), Path(id.clone()), Query(page_all())).await).await,
    ) {
        Ok(l) => l,
        Err(e) => return unavailable(&e),
    };
    let mut sas = Vec::new();
    for v in &sas_json {
        let owner_id: i64 = s(v, "owner_user_id").parse().unwrap_or(0);
        let owner = members
            .iter()
            .find(|m| m.user_id == owner_id)
            .map_or_else(|| format!("user {owner_id}"), |m| m.email.clone());
        let token_id = s(v, "token_id");
        // Key details are shown to those who may manage the key (as the API decides).
        let key = if token_id.is_empty() {
            "none".to_string()
        } else {
            match api(tokens::get_one(State(gw.clone()), u.a.clone(), Path(token_id.clone())).await).await {
                Ok(k) => s(&k, "preview"),
                Err(_) => "set".to_string(),
            }
        };
        sas.push(SaView {
            id: s(v, "id"),
            name: s(v, "name"),
            description: s(v, "description"),
            owner,
            owner_id,
            key,
            has_key: !token_id.is_empty(),
        });
    }
    let manages_org = u.a.manages_org(Some(team.org_id));
    render(StatusCode::OK, &TeamPage { nav: u.nav(&gw, "teams").await, team: tv, members, sas, manages, manages_org })
}

async fn user_in_org_by_email(gw: &Gateway, org: i64, email: &str) -> Option<i64> {
    let mut q = Sql::new("SELECT id FROM users WHERE deleted_at IS NULL AND org_id = ");
    q.id(org).push(" AND email = ").arg(Val::Text(email.trim().to_lowercase()));
    ts::scalar(&gw.db, &q).await.ok().flatten()
}

/// `POST /ui/teams/{id}/{edit|delete|add-member|remove-member|set-admin|create-sa}`
pub async fn action(
    State(gw): State<Arc<Gateway>>,
    Extension(cfg): Extension<TenancySettings>,
    u: Ui,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    let back = format!("/ui/teams/{id}");
    let (st, a, p) = (State(gw.clone()), u.a.clone(), Path(id.clone()));
    let member_path = |uid: &str| Path((id.clone(), uid.to_string()));
    let result = match action.as_str() {
        "edit" => act(&gw, &u, "PATCH", &format!("/api/v1/teams/{id}"), t::patch_team(st, a, p, body(json!({"name": field(&f, "name"), "description": field(&f, "description"), "oidc_group": field(&f, "oidc_group")}))))
            .await
            .map(|_| "Team saved.".to_string()),
        "delete" => {
            return match act(&gw, &u, "DELETE", &format!("/api/v1/teams/{id}"), t::delete_team(st, a, p)).await {
                Ok(_) => u.done(&gw, "/ui/teams", Ok("Team deleted.".into())).await,
                Err(e) => u.done(&gw, &back, Err(e)).await,
            }
        }
        "add-member" => {
            let email = field(&f, "email");
            let org = t::visible_team(&gw, &a, &id).await.map(|t| t.org_id).ok();
            match match org {
                Some(o) => user_in_org_by_email(&gw, o, email).await,
                None => None,
            } {
                None => Err(format!("No user {email} in this team's org.")),
                Some(uid) => {
                    let mut b = json!({});
                    if field(&f, "team_admin") == "true" {
                        b["team_admin"] = true.into();
                    }
                    act(&gw, &u, "PUT", &format!("/api/v1/teams/{id}/members/{uid}"), t::put_member(st, a, member_path(&uid.to_string()), body(b)))
                        .await
                        .map(|_| format!("{email} added."))
                }
            }
        }
        "remove-member" => act(&gw, &u, "DELETE", &format!("/api/v1/teams/{id}/members/{}", field(&f, "user_id")), t::delete_member(st, a, member_path(field(&f, "user_id"))))
            .await
            .map(|_| "Member removed.".to_string()),
        "set-admin" => {
            let flag = field(&f, "team_admin") == "true";
            act(&gw, &u, "PUT", &format!("/api/v1/teams/{id}/members/{}", field(&f, "user_id")), t::put_member(st, a, member_path(field(&f, "user_id")), body(json!({"team_admin": flag}))))
                .await
                .map(|_| if flag { "Team-admin granted.".to_string() } else { "Team-admin withdrawn.".to_string() })
        }
        "create-sa" => {
            let mut b = json!({"name": field(&f, "name"), "description": field(&f, "description")});
            if !field(&f, "user_id").is_empty() {
                b["user_id"] = field(&f, "user_id").into();
            }
            return match act(&gw, &u, "POST", &format!("/api/v1/teams/{id}/service-accounts"), t::create_sa(st, Extension(cfg), a, p, body(b))).await {
                Ok(v) => secret_page(&gw, &u, format!("Service account {} created", s(&v, "name")), s(&v, "key"), &back).await,
                Err(e) => u.done(&gw, &back, Err(e)).await,
            };
        }
        _ => Err(format!("Unknown action '{action}'.")),
    };
    u.done(&gw, &back, result).await
}

/// `POST /ui/service-accounts/{id}/{transfer|regenerate|delete}`
pub async fn sa_action(
    State(gw): State<Arc<Gateway>>,
    u: Ui,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    let sa = match api(t::get_sa(State(gw.clone()), u.a.clone(), Path(id.clone())).await).await {
        Ok(v) => v,
        Err(e) => return error_page(StatusCode::NOT_FOUND, &e),
    };
    let back = format!("/ui/teams/{}", s(&sa, "team_id"));
    let (st, a, p) = (State(gw.clone()), u.a.clone(), Path(id.clone()));
    let result = match action.as_str() {
        "transfer" => act(
            &gw,
            &u,
            "POST",
            &format!("/api/v1/service-accounts/{id}/transfer"),
            t::transfer_sa(st, a, p, body(json!({"user_id": field(&f, "user_id")}))),
        )
        .await
        .map(|_| "Service account transferred.".to_string()),
        "delete" => act(&gw, &u, "DELETE", &format!("/api/v1/service-accounts/{id}"), t::delete_sa(st, a, p))
            .await
            .map(|_| "Service account deleted.".to_string()),
        "regenerate" => {
            let token = s(&sa, "token_id");
            return match act(
                &gw,
                &u,
                "POST",
                &format!("/api/v1/tokens/{}/regenerate", s(&sa, "token_id")),
                tokens::regenerate(st, a, Path(token)),
            )
            .await
            {
                Ok(v) => {
                    secret_page(&gw, &u, format!("Key of {} regenerated", s(&sa, "name")), s(&v, "key"), &back).await
                }
                Err(e) => u.done(&gw, &back, Err(e)).await,
            };
        }
        _ => Err(format!("Unknown action '{action}'.")),
    };
    u.done(&gw, &back, result).await
}
