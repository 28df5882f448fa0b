//! Terms of Service pages: read and accept the current version; admins publish versions.

use super::{error_page, field, render, Nav, Ui};
use crate::gateway::{now, Gateway};
use crate::tenancy::store::{self as ts, Sql};
use crate::terms;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use std::collections::HashMap;
use std::sync::Arc;

/// Longest text of one version.
const MAX_TERMS: usize = 100_000;

#[derive(Template)]
#[template(path = "terms.html")]
struct TermsPage {
    nav: Nav,
    current: Option<terms::Version>,
    published: String,
    accepted: bool,
    required: bool,
}

fn date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default()
}

/// `GET /ui/terms`
pub async fn page(State(gw): State<Arc<Gateway>>, u: Ui) -> Response {
    let current = match terms::current(&gw.db).await {
        Ok(c) => c,
        Err(_) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "The database is unavailable; try again."),
    };
    let accepted = match &current {
        Some(v) => terms::accepted(&gw.db, v.id, u.a.user_id).await.unwrap_or(false),
        None => false,
    };
    let published = current.as_ref().map(|v| date(v.created_at)).unwrap_or_default();
    let page = TermsPage { nav: u.nav(&gw, "terms").await, current, published, accepted, required: gw.terms_required };
    render(StatusCode::OK, &page)
}

/// `POST /ui/terms/accept` with the version shown, so an accept of a page published before a
/// newer version does not count for the newer one.
pub async fn accept(State(gw): State<Arc<Gateway>>, u: Ui, Form(f): Form<HashMap<String, String>>) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    let result = match terms::current(&gw.db).await {
        Ok(Some(v)) if field(&f, "version") == v.id.to_string() => {
            match terms::accept(&gw.db, v.id, u.a.user_id, now()).await {
                Ok(()) => {
                    tracing::info!(user = u.a.user_id, version = v.id, "terms accepted");
                    let after = serde_json::json!({"object": "terms_acceptance", "version_id": v.id.to_string()});
                    crate::audit::record(&gw, &u.a, "ui", "POST", "/ui/terms/accept", 200, None, Some(after)).await;
                    gw.request_rebuild();
                    Ok(format!("You accepted version {} of the Terms of Service.", v.id))
                }
                Err(_) => Err("The database is unavailable; try again.".to_string()),
            }
        }
        Ok(Some(_)) => Err("A newer version was published meanwhile; read it and accept again.".into()),
        Ok(None) => Err("No Terms of Service have been published.".into()),
        Err(_) => Err("The database is unavailable; try again.".into()),
    };
    u.done(&gw, "/ui/terms", result).await
}

#[derive(Template)]
#[template(path = "terms_versions.html")]
struct VersionsPage {
    nav: Nav,
    required: bool,
    /// (id, published, text, acceptances)
    versions: Vec<(i64, String, String, i64)>,
}

/// `GET /ui/terms/versions` (admin).
pub async fn versions(State(gw): State<Arc<Gateway>>, u: Ui) -> Response {
    if !u.a.is_admin() {
        return error_page(StatusCode::FORBIDDEN, "Managing the Terms of Service needs the admin role.");
    }
    let Ok(list) = terms::versions(&gw.db).await else {
        return error_page(StatusCode::SERVICE_UNAVAILABLE, "The database is unavailable; try again.");
    };
    let mut versions = Vec::with_capacity(list.len());
    for v in list {
        let mut q = Sql::new("SELECT COUNT(*) FROM terms_acceptances WHERE version_id = ");
        q.id(v.id);
        let n = ts::scalar(&gw.db, &q).await.ok().flatten().unwrap_or(0);
        versions.push((v.id, date(v.created_at), v.body, n));
    }
    render(StatusCode::OK, &VersionsPage { nav: u.nav(&gw, "terms").await, required: gw.terms_required, versions })
}

/// `POST /ui/terms/versions` (admin): publishes a new current version.
pub async fn publish(State(gw): State<Arc<Gateway>>, u: Ui, Form(f): Form<HashMap<String, String>>) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    if !u.a.is_admin() {
        return error_page(StatusCode::FORBIDDEN, "Managing the Terms of Service needs the admin role.");
    }
    let body = field(&f, "body");
    let result = if body.is_empty() || body.chars().count() > MAX_TERMS {
        Err(format!("The text must be 1 to {MAX_TERMS} characters."))
    } else {
        match terms::publish(&gw.db, body, u.a.user_id, now()).await {
            Ok(id) => {
                tracing::info!(version = id, by = u.a.user_id, "terms published");
                let after = serde_json::json!({"object": "terms_version", "id": id.to_string(), "body": body});
                crate::audit::record(&gw, &u.a, "ui", "POST", "/ui/terms/versions", 200, None, Some(after)).await;
                gw.request_rebuild();
                Ok(format!("Version {id} published."))
            }
            Err(_) => Err("The database is unavailable; try again.".into()),
        }
    };
    u.done(&gw, "/ui/terms/versions", result).await
}

/// Whether the caller still has to accept the current version (for the banner).
pub async fn pending(gw: &Gateway, u: &Ui) -> bool {
    if !gw.terms_required || u.a.is_admin() {
        return false;
    }
    match terms::current(&gw.db).await {
        Ok(Some(v)) => !terms::accepted(&gw.db, v.id, u.a.user_id).await.unwrap_or(true),
        _ => false,
    }
}
