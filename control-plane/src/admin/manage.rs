//! Org, models, and the pages for admins and org-admins: orgs, users and roles, and limits and
//! exclusions at every level.

use super::keys::page_all;
use super::teams::org_names;
use super::{act, api, body, error_page, field, list_of, render, s, unavailable, when, Nav, Ui};
use crate::api::common::LIMIT_FIELDS;
use crate::api::{tenancy as t, tokens};
use crate::gateway::Gateway;
use crate::tenancy::model::{PolicyFields, Role};
use crate::tenancy::policy::{self, KeyRow};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

fn limit_text(v: &Value, keys: [&str; 3]) -> String {
    let part = |k: &str, what: &str| match v[k].as_i64() {
        Some(n) => format!("{n} {what}"),
        None => format!("no cap on {what}"),
    };
    format!("{}, {}, {}", part(keys[0], "requests"), part(keys[1], "input tokens"), part(keys[2], "output tokens"))
}

fn names(v: &Value, k: &str) -> String {
    v[k].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

/// An org on the org page.
struct OrgView {
    id: String,
    name: String,
    limits: String,
    key_limits: String,
    excluded: String,
    manages: bool,
    teams: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "org.html")]
struct OrgPage {
    nav: Nav,
    orgs: Vec<OrgView>,
}

/// `GET /ui/org`: the caller's org (every org for an admin) with its teams and limits.
pub async fn org(State(gw): State<Arc<Gateway>>, u: Ui) -> Response {
    let orgs = match list_of(api(t::list_orgs(State(gw.clone()), u.a.clone(), Query(page_all())).await).await) {
        Ok(l) => l,
        Err(e) => return unavailable(&e),
    };
    let teams = match list_of(api(t::list_teams(State(gw.clone()), u.a.clone(), Query(page_all())).await).await) {
        Ok(l) => l,
        Err(e) => return unavailable(&e),
    };
    let views = orgs
        .iter()
        .map(|o| {
            let id = s(o, "id");
            let excluded = names(o, "excluded_models");
            OrgView {
                name: s(o, "name"),
                limits: limit_text(o, ["requests_per_minute", "input_tokens_per_minute", "output_tokens_per_minute"]),
                key_limits: limit_text(
                    o,
                    ["key_requests_per_minute", "key_input_tokens_per_minute", "key_output_tokens_per_minute"],
                ),
                excluded: if excluded.is_empty() { "none".into() } else { excluded },
                // Org-level policy is the admin's (the API's PATCH /orgs rule).
                manages: u.a.is_admin(),
                teams: teams.iter().filter(|t| s(t, "org_id") == id).map(|t| (s(t, "id"), s(t, "name"))).collect(),
                id,
            }
        })
        .collect();
    render(StatusCode::OK, &OrgPage { nav: u.nav(&gw, "org").await, orgs: views })
}

/// A model on the models page.
struct ModelView {
    name: String,
    aliases: String,
    mode: String,
    multiplier: String,
    allowed: bool,
}

#[derive(Template)]
#[template(path = "models.html")]
struct ModelsPage {
    nav: Nav,
    base_url: String,
    models: Vec<ModelView>,
}

/// `GET /ui/models`: the models file's groups, and whether the caller's personal keys may use
/// each (their chain's merged exclusions, as the filter applies them).
pub async fn models(State(gw): State<Arc<Gateway>>, u: Ui) -> Response {
    let h = policy::hierarchy(&gw.db).await.unwrap_or_default();
    let global = gw.default_excluded_models();
    let probe = KeyRow {
        id: 0,
        key_hash: String::new(),
        expires_at: None,
        user_id: u.a.user_id,
        service_account_id: None,
        fields: PolicyFields::default(),
    };
    let excluded: Vec<String> = h
        .chain(&probe)
        .map(|c| policy::excluded_models(&c.levels, &global).into_iter().map(str::to_string).collect())
        .unwrap_or_default();
    let cfg = gw.models();
    let models = cfg
        .groups
        .iter()
        .map(|g| ModelView {
            name: g.name.clone(),
            aliases: if g.aliases.is_empty() { "—".into() } else { g.aliases.join(", ") },
            mode: g.mode.clone().unwrap_or_else(|| "chat".into()),
            multiplier: format!("{}", g.request_limit_multiplier),
            allowed: !excluded.iter().any(|e| e == &g.name || g.aliases.contains(e)),
        })
        .collect();
    let base_url = format!("{}/v1", u.settings.public_url);
    render(StatusCode::OK, &ModelsPage { nav: u.nav(&gw, "models").await, base_url, models })
}

#[derive(Template)]
#[template(path = "orgs.html")]
struct OrgsPage {
    nav: Nav,
    orgs: Vec<(String, String, String)>,
}

/// `GET /ui/orgs` (admin).
pub async fn orgs(State(gw): State<Arc<Gateway>>, u: Ui) -> Response {
    if !u.a.is_admin() {
        return error_page(StatusCode::FORBIDDEN, "This page needs the admin role.");
    }
    let rows = match list_of(api(t::list_orgs(State(gw.clone()), u.a.clone(), Query(page_all())).await).await) {
        Ok(l) => l,
        Err(e) => return unavailable(&e),
    };
    let orgs = rows.iter().map(|o| (s(o, "id"), s(o, "name"), when(o, "created_at").unwrap_or_default())).collect();
    render(StatusCode::OK, &OrgsPage { nav: u.nav(&gw, "orgs").await, orgs })
}

/// `POST /ui/orgs` (admin; the API refuses anyone else).
pub async fn create_org(State(gw): State<Arc<Gateway>>, u: Ui, Form(f): Form<HashMap<String, String>>) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    let r = act(
        &gw,
        &u,
        "POST",
        "/api/v1/orgs",
        t::create_org(State(gw.clone()), u.a.clone(), body(json!({"name": field(&f, "name")}))),
    )
    .await;
    u.done(&gw, "/ui/orgs", r.map(|v| format!("Org {} created.", s(&v, "name")))).await
}

/// A user on the users page.
struct UserView {
    id: String,
    email: String,
    org: String,
    role: String,
    active: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    nav: Nav,
    users: Vec<UserView>,
    orgs: Vec<(String, String)>,
    roles: Vec<&'static str>,
}

/// `GET /ui/users` (admin: everyone; org-admin: their org).
pub async fn users(State(gw): State<Arc<Gateway>>, u: Ui) -> Response {
    if !(u.a.is_admin() || u.a.role == Role::OrgAdmin) {
        return error_page(StatusCode::FORBIDDEN, "This page needs the admin or org-admin role.");
    }
    let rows = match list_of(api(t::list_users(State(gw.clone()), u.a.clone(), Query(page_all())).await).await) {
        Ok(l) => l,
        Err(e) => return unavailable(&e),
    };
    let names = org_names(&gw).await;
    let users = rows
        .iter()
        .map(|v| {
            let org = s(v, "org_id");
            UserView {
                id: s(v, "id"),
                email: s(v, "email"),
                org: names.get(&org).cloned().unwrap_or_else(|| if org.is_empty() { "—".into() } else { org }),
                role: s(v, "role"),
                active: v["active"].as_bool().unwrap_or(false),
            }
        })
        .collect();
    let mut orgs: Vec<(String, String)> = names
        .into_iter()
        .filter(|(id, _)| u.a.is_admin() || u.a.org_id.map(|o| o.to_string()).as_ref() == Some(id))
        .collect();
    orgs.sort_by(|a, b| a.1.cmp(&b.1));
    let roles = if u.a.is_admin() { vec!["user", "org-admin", "admin"] } else { vec!["user", "org-admin"] };
    render(StatusCode::OK, &UsersPage { nav: u.nav(&gw, "users").await, users, orgs, roles })
}

/// `POST /ui/users`: creates a user (the API decides who may).
pub async fn create_user(State(gw): State<Arc<Gateway>>, u: Ui, Form(f): Form<HashMap<String, String>>) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    let mut b = json!({"email": field(&f, "email").to_lowercase(), "role": field(&f, "role")});
    if !field(&f, "org_id").is_empty() {
        b["org_id"] = field(&f, "org_id").into();
    }
    let r = act(&gw, &u, "POST", "/api/v1/users", t::create_user(State(gw.clone()), u.a.clone(), body(b))).await;
    u.done(&gw, "/ui/users", r.map(|v| format!("User {} created.", s(&v, "email")))).await
}

/// `POST /ui/users/{id}` with `op` = `role` (and `role`), `activate`, `deactivate` or `delete`.
pub async fn update_user(
    State(gw): State<Arc<Gateway>>,
    u: Ui,
    Path(id): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    let (st, a, p) = (State(gw.clone()), u.a.clone(), Path(id.clone()));
    let r = match field(&f, "op") {
        "role" => act(
            &gw,
            &u,
            "PATCH",
            &format!("/api/v1/users/{id}"),
            t::patch_user(st, a, p, body(json!({"role": field(&f, "role")}))),
        )
        .await
        .map(|v| format!("{} is now {}.", s(&v, "email"), s(&v, "role"))),
        "activate" => act(
            &gw,
            &u,
            "PATCH",
            &format!("/api/v1/users/{id}"),
            t::patch_user(st, a, p, body(json!({"active": true}))),
        )
        .await
        .map(|v| format!("{} activated.", s(&v, "email"))),
        "deactivate" => act(
            &gw,
            &u,
            "PATCH",
            &format!("/api/v1/users/{id}"),
            t::patch_user(st, a, p, body(json!({"active": false}))),
        )
        .await
        .map(|v| format!("{} deactivated.", s(&v, "email"))),
        "delete" => act(&gw, &u, "DELETE", &format!("/api/v1/users/{id}"), t::delete_user(st, a, p))
            .await
            .map(|_| "User deleted.".to_string()),
        other => Err(format!("Unknown operation '{other}'.")),
    };
    u.done(&gw, "/ui/users", r).await
}

#[derive(Template)]
#[template(path = "policy.html")]
struct PolicyPage {
    nav: Nav,
    kind: String,
    id: String,
    label: String,
    back: String,
    excluded_models: String,
    merge_excluded_models: bool,
    excluded_mcp_servers: String,
    merge_excluded_mcp_servers: bool,
    limits: Vec<(&'static str, &'static str, String)>,
}

const LIMIT_LABELS: [&str; 6] = [
    "Requests per minute (all traffic at this level)",
    "Input tokens per minute (all traffic at this level)",
    "Output tokens per minute (all traffic at this level)",
    "Requests per minute, per key below",
    "Input tokens per minute, per key below",
    "Output tokens per minute, per key below",
];

/// Loads the entity behind `/ui/policy/{kind}/{id}` through the API (which decides visibility).
async fn load_entity(gw: &Arc<Gateway>, u: &Ui, kind: &str, id: &str) -> Result<(Value, String, String), String> {
    let (st, a, p) = (State(gw.clone()), u.a.clone(), Path(id.to_string()));
    Ok(match kind {
        "org" => {
            let v = api(t::get_org(st, a, p).await).await?;
            let l = format!("org {}", s(&v, "name"));
            (v, l, "/ui/org".into())
        }
        "team" => {
            let v = api(t::get_team(st, a, p).await).await?;
            let l = format!("team {}", s(&v, "name"));
            (v, l, format!("/ui/teams/{id}"))
        }
        "user" => {
            let v = api(t::get_user(st, a, p).await).await?;
            let l = format!("user {}", s(&v, "email"));
            (v, l, "/ui/users".into())
        }
        "service-account" => {
            let v = api(t::get_sa(st, a, p).await).await?;
            let l = format!("service account {}", s(&v, "name"));
            let back = format!("/ui/teams/{}", s(&v, "team_id"));
            (v, l, back)
        }
        "token" => {
            let v = api(tokens::get_one(st, a, p).await).await?;
            let l = format!("key {}", s(&v, "name"));
            (v, l, "/ui/keys".into())
        }
        _ => return Err(format!("Unknown kind '{kind}'.")),
    })
}

/// `GET /ui/policy/{kind}/{id}`: the limits and exclusions form of an org, team, user, service
/// account or key.
pub async fn policy_page(State(gw): State<Arc<Gateway>>, u: Ui, Path((kind, id)): Path<(String, String)>) -> Response {
    let (v, label, back) = match load_entity(&gw, &u, &kind, &id).await {
        Ok(x) => x,
        Err(e) => return error_page(StatusCode::NOT_FOUND, &e),
    };
    let limits = LIMIT_FIELDS
        .iter()
        .zip(LIMIT_LABELS)
        .map(|(k, l)| (*k, l, v[*k].as_i64().map(|n| n.to_string()).unwrap_or_default()))
        .collect();
    let page = PolicyPage {
        nav: u.nav(&gw, "").await,
        kind,
        id,
        label,
        back,
        excluded_models: names(&v, "excluded_models"),
        merge_excluded_models: v["merge_excluded_models"].as_bool().unwrap_or(true),
        excluded_mcp_servers: names(&v, "excluded_mcp_servers"),
        merge_excluded_mcp_servers: v["merge_excluded_mcp_servers"].as_bool().unwrap_or(true),
        limits,
    };
    render(StatusCode::OK, &page)
}

/// The form as the API's policy fields; a limit that is not a whole number is refused here with
/// the field's name.
fn policy_body(f: &HashMap<String, String>) -> Result<Value, String> {
    let mut m = Map::new();
    for k in ["excluded_models", "excluded_mcp_servers"] {
        let list: Vec<Value> =
            field(f, k).split(',').map(str::trim).filter(|n| !n.is_empty()).map(|n| Value::String(n.into())).collect();
        m.insert(k.into(), Value::Array(list));
    }
    for k in ["merge_excluded_models", "merge_excluded_mcp_servers"] {
        m.insert(k.into(), Value::Bool(field(f, k) == "true"));
    }
    for k in LIMIT_FIELDS {
        let raw = field(f, k);
        let v = if raw.is_empty() {
            Value::Null
        } else {
            raw.parse::<u64>()
                .map(Value::from)
                .map_err(|_| format!("'{k}' must be a whole number ≥ 0, or empty for no cap."))?
        };
        m.insert((*k).into(), v);
    }
    Ok(Value::Object(m))
}

/// `POST /ui/policy/{kind}/{id}`: saves through the entity's PATCH route.
pub async fn policy_save(
    State(gw): State<Arc<Gateway>>,
    u: Ui,
    Path((kind, id)): Path<(String, String)>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    let here = format!("/ui/policy/{kind}/{id}");
    let b = match policy_body(&f) {
        Ok(b) => b,
        Err(e) => return u.done(&gw, &here, Err(e)).await,
    };
    let (st, a, p) = (State(gw.clone()), u.a.clone(), Path(id.clone()));
    let r = match kind.as_str() {
        "org" => act(&gw, &u, "PATCH", &format!("/api/v1/orgs/{id}"), t::patch_org(st, a, p, body(b))).await,
        "team" => act(&gw, &u, "PATCH", &format!("/api/v1/teams/{id}"), t::patch_team(st, a, p, body(b))).await,
        "user" => act(&gw, &u, "PATCH", &format!("/api/v1/users/{id}"), t::patch_user(st, a, p, body(b))).await,
        "service-account" => {
            act(&gw, &u, "PATCH", &format!("/api/v1/service-accounts/{id}"), t::patch_sa(st, a, p, body(b))).await
        }
        "token" => act(&gw, &u, "PATCH", &format!("/api/v1/tokens/{id}"), tokens::patch(st, a, p, body(b))).await,
        _ => Err(format!("Unknown kind '{kind}'.")),
    };
    u.done(&gw, &here, r.map(|_| "Limits and exclusions saved.".to_string())).await
}

/// An audit entry as the page shows it.
struct AuditView {
    when: String,
    who: String,
    via: String,
    action: String,
    outcome: String,
    before: String,
    after: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    entries: Vec<AuditView>,
}

fn pretty(j: &Option<String>) -> String {
    j.as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_default()
}

/// `GET /ui/audit` (admin): the newest 500 management actions.
pub async fn audit(State(gw): State<Arc<Gateway>>, u: Ui) -> Response {
    if !u.a.is_admin() {
        return error_page(StatusCode::FORBIDDEN, "The audit log needs the admin role.");
    }
    let Ok(rows) = crate::audit::recent(&gw, 500).await else {
        return unavailable("The database is unavailable; try again.");
    };
    let entries = rows
        .iter()
        .map(|e| AuditView {
            when: chrono::DateTime::from_timestamp(e.at, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default(),
            who: e.actor_email.clone(),
            via: match (e.token_id, e.key_created_by) {
                (Some(k), Some(by)) => format!("{} (key {k}, created by user {by})", e.via),
                (Some(k), None) => format!("{} (key {k})", e.via),
                _ => e.via.clone(),
            },
            action: format!("{} {}", e.method, e.path),
            outcome: if e.status < 400 { "done".into() } else { format!("refused ({})", e.status) },
            before: pretty(&e.before_json),
            after: pretty(&e.after_json),
        })
        .collect();
    render(StatusCode::OK, &AuditPage { nav: u.nav(&gw, "audit").await, entries })
}
