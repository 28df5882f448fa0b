//! Org, models, and the pages for admins and org-admins: orgs, users and roles, and limits and
//! exclusions at every level.

use super::teams::org_names;
use super::{acted, error_page, field, one_page, render, unavailable, utc_minute, Nav, Ui};
use crate::domain::input::{Fields, Input, PolicyPatch, LIMIT_FIELDS};
use crate::domain::Error;
use crate::gateway::Gateway;
use crate::tenancy::input::{NewOrg, NewUser, OrgChanges, ServiceAccountChanges, TeamChanges, UserChanges};
use crate::tenancy::model::{NameList, PolicyFields, Role, POLICY_COLUMNS};
use crate::tenancy::policy::{self, KeyRow};
use crate::tenancy::service as svc;
use crate::tokens::service::{self as keys, TokenChanges};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The limits of `p` in the order of [`LIMIT_FIELDS`]: all traffic (requests, input tokens,
/// output tokens), then per key.
fn limits(p: &PolicyFields) -> [Option<i64>; 6] {
    [
        p.requests_per_minute,
        p.input_tokens_per_minute,
        p.output_tokens_per_minute,
        p.key_requests_per_minute,
        p.key_input_tokens_per_minute,
        p.key_output_tokens_per_minute,
    ]
}

fn limit_text(caps: &[Option<i64>]) -> String {
    let part = |v: Option<i64>, what: &str| match v {
        Some(n) => format!("{n} {what}"),
        None => format!("no cap on {what}"),
    };
    let get = |i: usize| caps.get(i).copied().flatten();
    format!("{}, {}, {}", part(get(0), "requests"), part(get(1), "input tokens"), part(get(2), "output tokens"))
}

fn names(l: &NameList) -> String {
    l.0.join(", ")
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
    let orgs = match svc::list_orgs(&gw, &u.a, one_page()).await {
        Ok(l) => l.data,
        Err(e) => return unavailable(e.message()),
    };
    let teams = match svc::list_teams(&gw, &u.a, one_page()).await {
        Ok(l) => l.data,
        Err(e) => return unavailable(e.message()),
    };
    let views = orgs
        .into_iter()
        .map(|o| {
            let excluded = names(&o.policy.excluded_models);
            let caps = limits(&o.policy);
            OrgView {
                name: o.name,
                limits: limit_text(&caps[..3]),
                key_limits: limit_text(&caps[3..]),
                excluded: if excluded.is_empty() { "none".into() } else { excluded },
                // Org-level policy is the admin's (the API's PATCH /orgs rule).
                manages: u.a.is_admin(),
                teams: teams.iter().filter(|t| t.org_id == o.id).map(|t| (t.id.clone(), t.name.clone())).collect(),
                id: o.id,
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
    let rows = match svc::list_orgs(&gw, &u.a, one_page()).await {
        Ok(l) => l.data,
        Err(e) => return unavailable(e.message()),
    };
    let orgs = rows
        .into_iter()
        .map(|o| {
            let created = utc_minute(Some(&o.created_at)).unwrap_or_default();
            (o.id, o.name, created)
        })
        .collect();
    render(StatusCode::OK, &OrgsPage { nav: u.nav(&gw, "orgs").await, orgs })
}

/// `POST /ui/orgs` (admin; the service refuses anyone else).
pub async fn create_org(State(gw): State<Arc<Gateway>>, u: Ui, Form(f): Form<HashMap<String, String>>) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    let r = svc::create_org(&gw, &u.a, NewOrg::parse(json!({"name": field(&f, "name")}))).await;
    let r = acted(&gw, &u, "POST", "/api/v1/orgs", r).await;
    u.done(&gw, "/ui/orgs", r.map(|o| format!("Org {} created.", o.name))).await
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
    let rows = match svc::list_users(&gw, &u.a, one_page()).await {
        Ok(l) => l.data,
        Err(e) => return unavailable(e.message()),
    };
    let names = org_names(&gw).await;
    let users = rows
        .into_iter()
        .map(|v| UserView {
            org: match v.org_id {
                Some(org) => names.get(&org).cloned().unwrap_or(org),
                None => "—".into(),
            },
            id: v.id,
            email: v.email,
            role: v.role.as_str().to_string(),
            active: v.active,
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

/// `POST /ui/users`: creates a user (the service decides who may).
pub async fn create_user(State(gw): State<Arc<Gateway>>, u: Ui, Form(f): Form<HashMap<String, String>>) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    let mut b = json!({"email": field(&f, "email").to_lowercase(), "role": field(&f, "role")});
    if !field(&f, "org_id").is_empty() {
        b["org_id"] = field(&f, "org_id").into();
    }
    let r = svc::create_user(&gw, &u.a, NewUser::parse(b)).await;
    let r = acted(&gw, &u, "POST", "/api/v1/users", r).await;
    u.done(&gw, "/ui/users", r.map(|v| format!("User {} created.", v.email))).await
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
    let path = format!("/api/v1/users/{id}");
    let active = |b: bool| Ok(UserChanges { active: Some(b), ..Default::default() });
    let r = match field(&f, "op") {
        "role" => {
            let r = svc::update_user(&gw, &u.a, &id, UserChanges::parse(json!({"role": field(&f, "role")}))).await;
            acted(&gw, &u, "PATCH", &path, r).await.map(|v| format!("{} is now {}.", v.email, v.role.as_str()))
        }
        "activate" => {
            let r = svc::update_user(&gw, &u.a, &id, active(true)).await;
            acted(&gw, &u, "PATCH", &path, r).await.map(|v| format!("{} activated.", v.email))
        }
        "deactivate" => {
            let r = svc::update_user(&gw, &u.a, &id, active(false)).await;
            acted(&gw, &u, "PATCH", &path, r).await.map(|v| format!("{} deactivated.", v.email))
        }
        "delete" => {
            let r = svc::delete_user(&gw, &u.a, &id).await;
            acted(&gw, &u, "DELETE", &path, r).await.map(|()| "User deleted.".to_string())
        }
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

/// Loads the policy of the entity behind `/ui/policy/{kind}/{id}` through its service (which
/// decides visibility), with the page's label and where "Back" leads.
async fn load_entity(gw: &Gateway, u: &Ui, kind: &str, id: &str) -> Result<(PolicyFields, String, String), String> {
    let a = &u.a;
    let msg = |e: Error| e.message().to_string();
    Ok(match kind {
        "org" => {
            let o = svc::get_org(gw, a, id).await.map_err(msg)?;
            (o.policy, format!("org {}", o.name), "/ui/org".into())
        }
        "team" => {
            let t = svc::get_team(gw, a, id).await.map_err(msg)?;
            (t.policy, format!("team {}", t.name), format!("/ui/teams/{id}"))
        }
        "user" => {
            let v = svc::get_user(gw, a, id).await.map_err(msg)?;
            (v.policy, format!("user {}", v.email), "/ui/users".into())
        }
        "service-account" => {
            let s = svc::get_sa(gw, a, id).await.map_err(msg)?;
            (s.policy, format!("service account {}", s.name), format!("/ui/teams/{}", s.team_id))
        }
        "token" => {
            let k = keys::get(gw, a, id).await.map_err(msg)?;
            (k.policy, format!("key {}", k.name), "/ui/keys".into())
        }
        _ => return Err(format!("Unknown kind '{kind}'.")),
    })
}

/// `GET /ui/policy/{kind}/{id}`: the limits and exclusions form of an org, team, user, service
/// account or key.
pub async fn policy_page(State(gw): State<Arc<Gateway>>, u: Ui, Path((kind, id)): Path<(String, String)>) -> Response {
    let (p, label, back) = match load_entity(&gw, &u, &kind, &id).await {
        Ok(x) => x,
        Err(e) => return error_page(StatusCode::NOT_FOUND, &e),
    };
    let limits = LIMIT_FIELDS
        .iter()
        .zip(LIMIT_LABELS)
        .zip(limits(&p))
        .map(|((k, l), v)| (*k, l, v.map(|n| n.to_string()).unwrap_or_default()))
        .collect();
    let page = PolicyPage {
        nav: u.nav(&gw, "").await,
        kind,
        id,
        label,
        back,
        excluded_models: names(&p.excluded_models),
        merge_excluded_models: p.merge_excluded_models,
        excluded_mcp_servers: names(&p.excluded_mcp_servers),
        merge_excluded_mcp_servers: p.merge_excluded_mcp_servers,
        limits,
    };
    render(StatusCode::OK, &page)
}

/// The form as the policy fields the API accepts; a limit that is not a whole number is
/// refused here with the field's name (before any service is asked).
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

/// `POST /ui/policy/{kind}/{id}`: saves through the entity's update (the API's PATCH).
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
    // Checked as the API checks these fields; the service judges them after its own checks.
    let policy: Result<PolicyPatch, Error> = Fields::parse(b, POLICY_COLUMNS).and_then(|mut f| f.policy());
    let a = &u.a;
    let (path, r) = match kind.as_str() {
        "org" => {
            let changes = policy.map(|policy| OrgChanges { name: None, policy });
            (format!("/api/v1/orgs/{id}"), svc::update_org(&gw, a, &id, changes).await.map(drop))
        }
        "team" => {
            let changes = policy.map(|policy| TeamChanges { policy, ..Default::default() });
            (format!("/api/v1/teams/{id}"), svc::update_team(&gw, a, &id, changes).await.map(drop))
        }
        "user" => {
            let changes = policy.map(|policy| UserChanges { policy, ..Default::default() });
            (format!("/api/v1/users/{id}"), svc::update_user(&gw, a, &id, changes).await.map(drop))
        }
        "service-account" => {
            let changes = policy.map(|policy| ServiceAccountChanges { policy, ..Default::default() });
            (format!("/api/v1/service-accounts/{id}"), svc::update_sa(&gw, a, &id, changes).await.map(drop))
        }
        "token" => {
            let changes = policy.map(|policy| TokenChanges { policy, ..Default::default() });
            (format!("/api/v1/tokens/{id}"), keys::update(&gw, a, &id, changes).await.map(drop))
        }
        _ => return u.done(&gw, &here, Err(format!("Unknown kind '{kind}'."))).await,
    };
    let r = acted(&gw, &u, "PATCH", &path, r).await.map(|()| "Limits and exclusions saved.".to_string());
    u.done(&gw, &here, r).await
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
