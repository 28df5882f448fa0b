//! Teams and team detail: members and team-admins, service accounts (create, transfer,
//! regenerate, delete), and the team's own settings for admins and org-admins.

use super::keys::secret_page;
use super::{acted, error_page, field, one_page, render, unavailable, Nav, Ui};
use crate::domain::input::{Input, TenancySettings};
use crate::gateway::Gateway;
use crate::tenancy::input::{MemberChanges, NewServiceAccount, NewTeam, TeamChanges, Transfer};
use crate::tenancy::service::{self as svc, Team};
use crate::tenancy::store::{self as ts, Sql, Val};
use crate::tokens::service as keys;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use serde_json::json;
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

fn team_view(u: &Ui, t: &Team, orgs: &HashMap<String, String>) -> TeamView {
    let id: i64 = t.id.parse().unwrap_or(0);
    let my_role = if u.a.manages_org(t.org_id.parse().ok()) {
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
        name: t.name.clone(),
        org: orgs.get(&t.org_id).cloned().unwrap_or_else(|| t.org_id.clone()),
        description: t.description.clone(),
        oidc_group: t.oidc_group.clone(),
        my_role,
    }
}

/// `GET /ui/teams`
pub async fn list(State(gw): State<Arc<Gateway>>, u: Ui) -> Response {
    let rows = match svc::list_teams(&gw, &u.a, one_page()).await {
        Ok(l) => l.data,
        Err(e) => return unavailable(e.message()),
    };
    let names = org_names(&gw).await;
    let teams = rows.iter().map(|t| team_view(&u, t, &names)).collect();
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
    let r = svc::create_team(&gw, &u.a, NewTeam::parse(b)).await;
    match acted(&gw, &u, "POST", "/api/v1/teams", r).await {
        Ok(t) => u.done(&gw, &format!("/ui/teams/{}", t.id), Ok(format!("Team {} created.", t.name))).await,
        Err(e) => u.done(&gw, "/ui/teams", Err(e)).await,
    }
}

/// `GET /ui/teams/{id}`
pub async fn detail(State(gw): State<Arc<Gateway>>, u: Ui, Path(id): Path<String>) -> Response {
    let team = match svc::get_team(&gw, &u.a, &id).await {
        Ok(t) => t,
        Err(e) => return error_page(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::NOT_FOUND), e.message()),
    };
    let (team_id, org_id): (i64, i64) = (team.id.parse().unwrap_or(0), team.org_id.parse().unwrap_or(0));
    let names = org_names(&gw).await;
    let tv = team_view(&u, &team, &names);
    let mut members: Vec<MemberView> = match svc::members(&gw, &u.a, &team.id).await {
        Ok(m) => m
            .into_iter()
            .map(|(m, email)| MemberView { user_id: m.user_id.parse().unwrap_or(0), email, team_admin: m.team_admin })
            .collect(),
        Err(e) => return unavailable(e.message()),
    };
    members.sort_by(|a, b| a.email.cmp(&b.email));
    let manages = u.a.manages_team(team_id, org_id);
    let accounts = match svc::list_sas(&gw, &u.a, &id, one_page()).await {
        Ok(l) => l.data,
        Err(e) => return unavailable(e.message()),
    };
    let mut sas = Vec::new();
    for sa in accounts {
        let owner_id: i64 = sa.owner_user_id.parse().unwrap_or(0);
        let owner = members
            .iter()
            .find(|m| m.user_id == owner_id)
            .map_or_else(|| format!("user {owner_id}"), |m| m.email.clone());
        // Key details are shown to those who may manage the key (as the keys service decides).
        let key = match &sa.token_id {
            None => "none".to_string(),
            Some(token) => match keys::get(&gw, &u.a, token).await {
                Ok(k) => k.preview,
                Err(_) => "set".to_string(),
            },
        };
        sas.push(SaView {
            has_key: sa.token_id.is_some(),
            id: sa.id,
            name: sa.name,
            description: sa.description,
            owner,
            owner_id,
            key,
        });
    }
    let manages_org = u.a.manages_org(Some(org_id));
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
    let member_path = |uid: &str| format!("/api/v1/teams/{id}/members/{uid}");
    let result = match action.as_str() {
        "edit" => {
            let changes = TeamChanges::parse(
                json!({"name": field(&f, "name"), "description": field(&f, "description"), "oidc_group": field(&f, "oidc_group")}),
            );
            let r = svc::update_team(&gw, &u.a, &id, changes).await;
            acted(&gw, &u, "PATCH", &format!("/api/v1/teams/{id}"), r).await.map(|_| "Team saved.".to_string())
        }
        "delete" => {
            let r = svc::delete_team(&gw, &u.a, &id).await;
            return match acted(&gw, &u, "DELETE", &format!("/api/v1/teams/{id}"), r).await {
                Ok(()) => u.done(&gw, "/ui/teams", Ok("Team deleted.".into())).await,
                Err(e) => u.done(&gw, &back, Err(e)).await,
            };
        }
        "add-member" => {
            let email = field(&f, "email");
            let org = svc::get_team(&gw, &u.a, &id).await.ok().and_then(|t| t.org_id.parse().ok());
            match match org {
                Some(o) => user_in_org_by_email(&gw, o, email).await,
                None => None,
            } {
                None => Err(format!("No user {email} in this team's org.")),
                Some(uid) => {
                    let uid = uid.to_string();
                    let changes = MemberChanges { team_admin: (field(&f, "team_admin") == "true").then_some(true) };
                    let r = svc::put_member(&gw, &u.a, &id, &uid, Ok(changes)).await;
                    acted(&gw, &u, "PUT", &member_path(&uid), r).await.map(|_| format!("{email} added."))
                }
            }
        }
        "remove-member" => {
            let uid = field(&f, "user_id");
            let r = svc::delete_member(&gw, &u.a, &id, uid).await;
            acted(&gw, &u, "DELETE", &member_path(uid), r).await.map(|()| "Member removed.".to_string())
        }
        "set-admin" => {
            let (uid, flag) = (field(&f, "user_id"), field(&f, "team_admin") == "true");
            let r = svc::put_member(&gw, &u.a, &id, uid, Ok(MemberChanges { team_admin: Some(flag) })).await;
            acted(&gw, &u, "PUT", &member_path(uid), r).await.map(|_| {
                if flag {
                    "Team-admin granted.".to_string()
                } else {
                    "Team-admin withdrawn.".to_string()
                }
            })
        }
        "create-sa" => {
            let mut b = json!({"name": field(&f, "name"), "description": field(&f, "description")});
            if !field(&f, "user_id").is_empty() {
                b["user_id"] = field(&f, "user_id").into();
            }
            let r = svc::create_sa(&gw, cfg, &u.a, &id, NewServiceAccount::parse(b)).await;
            return match acted(&gw, &u, "POST", &format!("/api/v1/teams/{id}/service-accounts"), r).await {
                Ok(sa) => {
                    let heading = format!("Service account {} created", sa.name);
                    secret_page(&gw, &u, heading, sa.key.unwrap_or_default(), &back).await
                }
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
    let sa = match svc::get_sa(&gw, &u.a, &id).await {
        Ok(sa) => sa,
        Err(e) => return error_page(StatusCode::NOT_FOUND, e.message()),
    };
    let back = format!("/ui/teams/{}", sa.team_id);
    let result = match action.as_str() {
        "transfer" => {
            let r = svc::transfer_sa(&gw, &u.a, &id, Transfer::parse(json!({"user_id": field(&f, "user_id")}))).await;
            acted(&gw, &u, "POST", &format!("/api/v1/service-accounts/{id}/transfer"), r)
                .await
                .map(|_| "Service account transferred.".to_string())
        }
        "delete" => {
            let r = svc::delete_sa(&gw, &u.a, &id).await;
            acted(&gw, &u, "DELETE", &format!("/api/v1/service-accounts/{id}"), r)
                .await
                .map(|()| "Service account deleted.".to_string())
        }
        "regenerate" => {
            let token = sa.token_id.unwrap_or_default();
            let r = keys::regenerate(&gw, &u.a, &token).await;
            return match acted(&gw, &u, "POST", &format!("/api/v1/tokens/{token}/regenerate"), r).await {
                Ok(k) => {
                    let heading = format!("Key of {} regenerated", sa.name);
                    secret_page(&gw, &u, heading, k.key.unwrap_or_default(), &back).await
                }
                Err(e) => u.done(&gw, &back, Err(e)).await,
            };
        }
        _ => Err(format!("Unknown action '{action}'.")),
    };
    u.done(&gw, &back, result).await
}
