//! The API keys page: the caller's personal keys with their effective limits and exclusions;
//! create (the key shown once), rename, set expiry, regenerate, revoke.

use super::{act, api, body, date_end, field, list_of, render, s, unavailable, when, Nav, Ui};
use crate::api::{tokens, TenancySettings};
use crate::gateway::Gateway;
use crate::tenancy::model::PolicyFields;
use crate::tenancy::policy::{self, Hierarchy, KeyRow};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// A key as the page shows it.
struct KeyRowView {
    id: String,
    name: String,
    preview: String,
    created: String,
    expires: Option<String>,
    expires_date: String,
    last_used: Option<String>,
    status: &'static str,
    live: bool,
    limits: String,
    excluded: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    nav: Nav,
    keys: Vec<KeyRowView>,
}

#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    nav: Nav,
    heading: String,
    secret: String,
    base_url: String,
    back: String,
}

fn fmt_limit(v: Option<u64>) -> String {
    v.map_or_else(|| "no cap".to_string(), |n| n.to_string())
}

/// Effective per-key caps, shared caps above the key, and excluded models of a key (as the
/// policy builder computes them for the filter).
fn effective(gw: &Gateway, h: &Hierarchy, k: &Value, global: &[String]) -> (String, String) {
    let fields: PolicyFields = serde_json::from_value(k.clone()).unwrap_or_default();
    let row = KeyRow {
        id: 0,
        key_hash: String::new(),
        expires_at: None,
        user_id: s(k, "user_id").parse().unwrap_or(0),
        service_account_id: s(k, "service_account_id").parse().ok(),
        fields,
    };
    let Some(chain) = h.chain(&row) else {
        return ("owner inactive: the key does not work".into(), String::new());
    };
    let [r, i, o] = policy::key_limits(&chain, gw.default_key_limits);
    let mut limits =
        format!("this key: {} requests, {} input tokens, {} output tokens", fmt_limit(r), fmt_limit(i), fmt_limit(o));
    for (_, label, [r, i, o]) in policy::entity_caps(&chain) {
        limits.push_str(&format!(
            "; shared by {label}: {} requests, {} input, {} output",
            fmt_limit(r),
            fmt_limit(i),
            fmt_limit(o)
        ));
    }
    let excluded: Vec<&str> = policy::excluded_models(&chain.levels, global).into_iter().collect();
    let excluded = if excluded.is_empty() { "none".to_string() } else { excluded.join(", ") };
    (limits, excluded)
}

/// The page's view of keys (any list of token JSON objects).
async fn views(gw: &Gateway, keys: &[Value]) -> Vec<KeyRowView> {
    let h = policy::hierarchy(&gw.db).await.unwrap_or_default();
    let global = gw.default_excluded_models();
    keys.iter()
        .map(|k| {
            let revoked = !k["revoked_at"].is_null();
            let expired = k["expires_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t.timestamp() <= crate::gateway::now());
            let (limits, excluded) = effective(gw, &h, k, &global);
            KeyRowView {
                id: s(k, "id"),
                name: s(k, "name"),
                preview: s(k, "preview"),
                created: when(k, "created_at").unwrap_or_default(),
                expires: when(k, "expires_at"),
                expires_date: when(k, "expires_at").map(|w| w[..10].to_string()).unwrap_or_default(),
                last_used: when(k, "last_used_at"),
                status: if revoked {
                    "revoked"
                } else if expired {
                    "expired"
                } else {
                    "active"
                },
                live: !revoked,
                limits,
                excluded,
            }
        })
        .collect()
}

/// `GET /ui/keys`
pub async fn page(State(gw): State<Arc<Gateway>>, u: Ui) -> Response {
    let all = match list_of(api(tokens::list(State(gw.clone()), u.a.clone(), Query(page_all())).await).await) {
        Ok(l) => l,
        Err(e) => return unavailable(&e),
    };
    let me = u.a.user_id.to_string();
    let mine: Vec<Value> =
        all.into_iter().filter(|k| s(k, "user_id") == me && k["service_account_id"].is_null()).collect();
    let keys = views(&gw, &mine).await;
    render(StatusCode::OK, &KeysPage { nav: u.nav(&gw, "keys").await, keys })
}

/// The largest page the API serves (the UI shows one page).
pub fn page_all() -> crate::api::common::PageQuery {
    crate::api::common::PageQuery::largest()
}

/// Renders the page that shows a new secret once.
pub async fn secret_page(gw: &Gateway, u: &Ui, heading: String, secret: String, back: &str) -> Response {
    render(
        StatusCode::CREATED,
        &SecretPage {
            nav: u.nav(gw, "keys").await,
            heading,
            secret,
            base_url: format!("{}/v1", u.settings.public_url),
            back: back.to_string(),
        },
    )
}

/// `POST /ui/keys`: creates a personal key and shows it once.
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    Extension(cfg): Extension<TenancySettings>,
    u: Ui,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    let mut b = json!({"name": field(&f, "name")});
    match date_end(field(&f, "expires")) {
        Ok(Some(t)) => b["expires_at"] = t.into(),
        Ok(None) => {}
        Err(e) => return u.done(&gw, "/ui/keys", Err(e)).await,
    }
    match act(
        &gw,
        &u,
        "POST",
        "/api/v1/tokens",
        tokens::create(State(gw.clone()), Extension(cfg), u.a.clone(), body(b)),
    )
    .await
    {
        Ok(v) => secret_page(&gw, &u, format!("Key {} created", s(&v, "name")), s(&v, "key"), "/ui/keys").await,
        Err(e) => u.done(&gw, "/ui/keys", Err(e)).await,
    }
}

/// `POST /ui/keys/{id}/{rename|expiry|regenerate|revoke}`; `back` in the form says where to go
/// afterwards (a team page for service-account keys).
pub async fn action(
    State(gw): State<Arc<Gateway>>,
    u: Ui,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    let back = match field(&f, "back") {
        b if b.starts_with("/ui/") && !b.contains("//") => b.to_string(),
        _ => "/ui/keys".to_string(),
    };
    let (st, a, p) = (State(gw.clone()), u.a.clone(), Path(id.clone()));
    let result = match action.as_str() {
        "rename" => act(
            &gw,
            &u,
            "PATCH",
            &format!("/api/v1/tokens/{id}"),
            tokens::patch(st, a, p, body(json!({"name": field(&f, "name")}))),
        )
        .await
        .map(|v| format!("Key renamed to {}.", s(&v, "name"))),
        "expiry" => match date_end(field(&f, "expires")) {
            Ok(t) => act(
                &gw,
                &u,
                "PATCH",
                &format!("/api/v1/tokens/{id}"),
                tokens::patch(st, a, p, body(json!({"expires_at": t}))),
            )
            .await
            .map(|v| {
                when(&v, "expires_at")
                    .map_or_else(|| "The key no longer expires.".to_string(), |w| format!("The key expires {w}."))
            }),
            Err(e) => Err(e),
        },
        "revoke" => act(&gw, &u, "DELETE", &format!("/api/v1/tokens/{id}"), tokens::revoke(st, a, p))
            .await
            .map(|_| "Key revoked.".to_string()),
        "regenerate" => {
            return match act(&gw, &u, "POST", &format!("/api/v1/tokens/{id}/regenerate"), tokens::regenerate(st, a, p))
                .await
            {
                Ok(v) => secret_page(&gw, &u, format!("Key {} regenerated", s(&v, "name")), s(&v, "key"), &back).await,
                Err(e) => u.done(&gw, &back, Err(e)).await,
            }
        }
        _ => Err(format!("Unknown action '{action}'.")),
    };
    u.done(&gw, &back, result).await
}
