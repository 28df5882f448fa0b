//! Terms of Service pages: read and accept the current version; admins publish versions.

use super::{error_page, field, render, Nav, Ui};
use crate::audit::{self, Action};
use crate::gateway::Gateway;
use crate::terms;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use std::collections::HashMap;
use std::sync::Arc;

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
    let result = match terms::service::accept_current(&gw, &u.a, field(&f, "version")).await {
        Ok(id) => Ok(format!("You accepted version {id} of the Terms of Service.")),
        Err(e) if e.status() == 404 => Err("No Terms of Service have been published.".into()),
        Err(e) => Err(e.message().to_string()),
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
    let list = match terms::service::versions_with_counts(&gw, &u.a).await {
        Ok(l) => l,
        Err(e) => return error_page(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN), e.message()),
    };
    let versions = list.into_iter().map(|(v, n)| (v.id, date(v.created_at), v.body, n)).collect();
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
    let result = match terms::service::publish_version(&gw, &u.a, field(&f, "body")).await {
        Ok(id) => Ok(format!("Version {id} published.")),
        Err(e) => {
            if e.status() < 500 {
                audit::refusal(&gw.db, &u.a, Action { method: "POST", path: "/ui/terms/versions", status: e.status() })
                    .await;
            }
            Err(e.message().to_string())
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
