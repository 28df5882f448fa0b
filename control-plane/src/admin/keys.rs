//! The API keys page: the caller's personal keys with their effective limits and exclusions;
//! create (the key shown once), rename, set expiry, regenerate, revoke.

use super::{acted, date_end, field, one_page, render, unavailable, utc_minute, Nav, Ui};
use crate::domain::input::{Input, TenancySettings};
use crate::gateway::Gateway;
use crate::tenancy::policy::{self, Hierarchy, KeyRow};
use crate::tokens::service::{self as keys, NewToken, Token, TokenChanges};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use serde_json::json;
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
fn effective(gw: &Gateway, h: &Hierarchy, k: &Token, global: &[String]) -> (String, String) {
    let row = KeyRow {
        id: 0,
        key_hash: String::new(),
        expires_at: None,
        user_id: k.user_id.parse().unwrap_or(0),
        service_account_id: k.service_account_id.as_deref().and_then(|s| s.parse().ok()),
        fields: k.policy.clone(),
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

/// The page's view of keys.
async fn views(gw: &Gateway, keys: &[Token]) -> Vec<KeyRowView> {
    let h = policy::hierarchy(&gw.db).await.unwrap_or_default();
    let global = gw.default_excluded_models();
    keys.iter()
        .map(|k| {
            let revoked = k.revoked_at.is_some();
            let expired = k
                .expires_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t.timestamp() <= crate::gateway::now());
            let (limits, excluded) = effective(gw, &h, k, &global);
            let expires = utc_minute(k.expires_at.as_deref());
            KeyRowView {
                id: k.id.clone(),
                name: k.name.clone(),
                preview: k.preview.clone(),
                created: utc_minute(Some(&k.created_at)).unwrap_or_default(),
                expires_date: expires.as_ref().map(|w| w[..10].to_string()).unwrap_or_default(),
                expires,
                last_used: utc_minute(k.last_used_at.as_deref()),
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
    let all = match keys::list(&gw, &u.a, one_page()).await {
        Ok(l) => l.data,
        Err(e) => return unavailable(e.message()),
    };
    let me = u.a.user_id.to_string();
    let mine: Vec<Token> = all.into_iter().filter(|k| k.user_id == me && k.service_account_id.is_none()).collect();
    let keys = views(&gw, &mine).await;
    render(StatusCode::OK, &KeysPage { nav: u.nav(&gw, "keys").await, keys })
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
    let r = keys::create(&gw, cfg, &u.a, NewToken::parse(b)).await;
    match acted(&gw, &u, "POST", "/api/v1/tokens", r).await {
        Ok(k) => {
            let heading = format!("Key {} created", k.name);
            secret_page(&gw, &u, heading, k.key.unwrap_or_default(), "/ui/keys").await
        }
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
    let path = format!("/api/v1/tokens/{id}");
    let result = match action.as_str() {
        "rename" => {
            let r = keys::update(&gw, &u.a, &id, TokenChanges::parse(json!({"name": field(&f, "name")}))).await;
            acted(&gw, &u, "PATCH", &path, r).await.map(|k| format!("Key renamed to {}.", k.name))
        }
        "expiry" => match date_end(field(&f, "expires")) {
            Ok(t) => {
                let r = keys::update(&gw, &u.a, &id, TokenChanges::parse(json!({"expires_at": t}))).await;
                acted(&gw, &u, "PATCH", &path, r).await.map(|k| {
                    utc_minute(k.expires_at.as_deref())
                        .map_or_else(|| "The key no longer expires.".to_string(), |w| format!("The key expires {w}."))
                })
            }
            Err(e) => Err(e),
        },
        "revoke" => {
            let r = keys::revoke(&gw, &u.a, &id).await;
            acted(&gw, &u, "DELETE", &path, r).await.map(|()| "Key revoked.".to_string())
        }
        "regenerate" => {
            let r = keys::regenerate(&gw, &u.a, &id).await;
            return match acted(&gw, &u, "POST", &format!("{path}/regenerate"), r).await {
                Ok(k) => {
                    let heading = format!("Key {} regenerated", k.name);
                    secret_page(&gw, &u, heading, k.key.unwrap_or_default(), &back).await
                }
                Err(e) => u.done(&gw, &back, Err(e)).await,
            };
        }
        _ => Err(format!("Unknown action '{action}'.")),
    };
    u.done(&gw, &back, result).await
}
