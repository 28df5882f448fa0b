//! The admin web UI: server-rendered pages (askama templates in `admin-ui/templates`) at `/ui`,
//! reached through the gateway's address (`/` redirects there).
//!
//! Pages call the domain services (`tenancy::service`, `tokens::service`, …) with typed input
//! and the signed-in user as the caller, exactly as the management API does, so the UI can do
//! what that user's role allows through the API, with the same errors; the services record
//! each change in the audit log, and [`acted`] records a refused one. Forms carry the session's
//! CSRF token; a form without it is refused.

mod assets;
mod chart;
mod keys;
mod login;
mod manage;
mod mcp;
mod teams;
mod terms;
mod usage;

use crate::auth::Authed;
use crate::auth::{self, session};
use crate::domain::input::{Page, PageQuery, TenancySettings};
use crate::domain::Error;
use crate::gateway::Gateway;
use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use std::collections::HashMap;
use std::sync::Arc;

/// Settings of the admin UI.
#[derive(Debug, Clone)]
pub struct UiSettings {
    /// The gateway's public base URL (`https://gw.example.com`), without a trailing slash.
    pub public_url: String,
    /// How long a session lasts, in seconds.
    pub session_ttl: i64,
    /// OIDC login, when configured.
    pub oidc: Option<Arc<auth::oidc::Oidc>>,
}

impl UiSettings {
    /// Whether cookies get `Secure` (the UI is served over https).
    pub fn secure(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

/// The UI's routes, to merge with the management API's.
pub fn router(gw: Arc<Gateway>, ui: UiSettings, tenancy: TenancySettings) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/keys") }))
        .route("/ui", get(|| async { Redirect::to("/ui/keys") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/keys") }))
        .route("/ui/static/{file}", get(assets::serve))
        // Browsers ask for it on every site; an empty answer keeps their consoles clean.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/ui/login", get(login::page).post(login::local))
        .route("/ui/login/oidc", get(login::oidc_start))
        .route("/ui/auth/callback", get(login::oidc_callback))
        .route("/ui/logout", post(login::logout))
        .route("/ui/keys", get(keys::page).post(keys::create))
        .route("/ui/keys/{id}/{action}", post(keys::action))
        .route("/ui/teams", get(teams::list).post(teams::create))
        .route("/ui/teams/{id}", get(teams::detail))
        .route("/ui/teams/{id}/{action}", post(teams::action))
        .route("/ui/service-accounts/{id}/{action}", post(teams::sa_action))
        .route("/ui/org", get(manage::org))
        .route("/ui/models", get(manage::models))
        .route("/ui/usage", get(usage::page))
        .route("/ui/mcp", get(mcp::page))
        .route("/ui/orgs", get(manage::orgs).post(manage::create_org))
        .route("/ui/users", get(manage::users).post(manage::create_user))
        .route("/ui/users/{id}", post(manage::update_user))
        .route("/ui/policy/{kind}/{id}", get(manage::policy_page).post(manage::policy_save))
        .route("/ui/audit", get(manage::audit))
        .route("/ui/terms", get(terms::page))
        .route("/ui/terms/accept", post(terms::accept))
        .route("/ui/terms/versions", get(terms::versions).post(terms::publish))
        .layer(Extension(Arc::new(ui)))
        .layer(Extension(tenancy))
        .with_state(gw)
}

/// A message shown once at the top of the next page.
#[derive(Debug, Clone)]
pub struct Flash {
    /// The text.
    pub text: String,
    /// Whether it reports a failure.
    pub error: bool,
}

impl Flash {
    fn encode(&self) -> String {
        format!("{}{}", if self.error { "e:" } else { "o:" }, self.text)
    }

    fn decode(s: &str) -> Self {
        match s.split_once(':') {
            Some(("e", t)) => Self { text: t.into(), error: true },
            Some((_, t)) => Self { text: t.into(), error: false },
            None => Self { text: s.into(), error: false },
        }
    }
}

/// What the page frame needs: who is signed in, the CSRF token, the message to show.
#[derive(Debug, Clone)]
pub struct Nav {
    /// Whether someone is signed in (the login page has no menu).
    pub signed_in: bool,
    /// Their email.
    pub email: String,
    /// Their role.
    pub role: &'static str,
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    /// Whether the Orgs page is shown.
    pub is_admin: bool,
    /// Whether the Users page is shown (admin, org-admin).
    pub manages_users: bool,
    /// Which menu entry is current.
    pub current: &'static str,
    /// Message from the last form.
    pub flash: Option<Flash>,
    /// The user must still accept the current Terms of Service (their keys are refused).
    pub terms_pending: bool,
    /// Stylesheet URL (content-hashed, cached for a year).
    pub css_url: &'static str,
    /// Script URL (content-hashed).
    pub js_url: &'static str,
}

impl Nav {
    /// The frame for a page nobody is signed in to.
    pub fn anonymous() -> Self {
        Self {
            signed_in: false,
            email: String::new(),
            role: "",
            csrf: String::new(),
            is_admin: false,
            manages_users: false,
            current: "",
            flash: None,
            terms_pending: false,
            css_url: assets::css_url(),
            js_url: assets::js_url(),
        }
    }
}

/// The signed-in user of a UI request; without a live session the request is redirected to
/// the login page.
pub struct Ui {
    /// The caller, exactly as the management API sees them.
    pub a: Authed,
    /// The session cookie's value.
    pub cookie: String,
    /// The UI's settings.
    pub settings: Arc<UiSettings>,
}

impl FromRequestParts<Arc<Gateway>> for Ui {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, Self::Rejection> {
        let to_login = || Redirect::to("/ui/login").into_response();
        let Some(settings) = parts.extensions.get::<Arc<UiSettings>>().cloned() else {
            return Err(error_page(StatusCode::INTERNAL_SERVER_ERROR, "The UI is not configured."));
        };
        let Some(cookie) = auth::cookie(&parts.headers, auth::SESSION_COOKIE).map(str::to_string) else {
            return Err(to_login());
        };
        match Authed::from_session(&gw.db, &cookie, crate::gateway::now(), crate::auth::Via::Ui).await {
            Ok(Some(a)) => Ok(Ui { a, cookie, settings }),
            Ok(None) => Err(to_login()),
            Err(e) => Err(error_page(StatusCode::SERVICE_UNAVAILABLE, &e.0.message)),
        }
    }
}

impl Ui {
    /// The page frame, taking the pending message.
    pub async fn nav(&self, gw: &Gateway, current: &'static str) -> Nav {
        let flash = session::take_flash(&gw.db, &self.cookie).await.ok().flatten().map(|f| Flash::decode(&f));
        Nav {
            signed_in: true,
            email: self.a.email.clone(),
            role: self.a.role.as_str(),
            csrf: self.a.csrf.clone().unwrap_or_default(),
            is_admin: self.a.is_admin(),
            manages_users: self.a.is_admin() || self.a.role == crate::tenancy::model::Role::OrgAdmin,
            current,
            flash,
            terms_pending: terms::pending(gw, self).await,
            css_url: assets::css_url(),
            js_url: assets::js_url(),
        }
    }

    /// The refusal of a form without this session's CSRF token; `None` when the token is right.
    pub fn refuse_csrf(&self, form: &HashMap<String, String>) -> Option<Response> {
        let sent = form.get(auth::CSRF_FIELD).map(String::as_str).unwrap_or_default();
        if self.a.csrf.as_deref().is_some_and(|c| auth::same_secret(c, sent)) {
            None
        } else {
            Some(error_page(
                StatusCode::FORBIDDEN,
                "The form has expired or did not come from this site; reload the page and try again.",
            ))
        }
    }

    /// Stores `result` as the next page's message and redirects to `to` (303, so a reload does
    /// not repeat the action).
    pub async fn done(&self, gw: &Gateway, to: &str, result: Result<String, String>) -> Response {
        let flash = match result {
            Ok(text) => Flash { text, error: false },
            Err(text) => Flash { text, error: true },
        };
        if let Err(e) = session::set_flash(&gw.db, &self.cookie, &flash.encode()).await {
            tracing::warn!(error = %e, "cannot store the UI message");
        }
        Redirect::to(to).into_response()
    }
}

/// Headers of every page: never cached (pages show secrets once), never framed (no
/// clickjacking of the forms), only our own script and stylesheet, forms only to us, and no
/// referrer leaving the site (OIDC callbacks carry a code in the URL).
const PAGE_HEADERS: [(header::HeaderName, &str); 5] = [
    (header::CACHE_CONTROL, "no-store"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "same-origin"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

/// Renders a template as a page with `status`.
pub fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, PAGE_HEADERS, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be rendered.").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Nav,
    message: String,
}

/// A plain error page.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    render(status, &ErrorPage { nav: Nav::anonymous(), message: message.to_string() })
}

/// The outcome of a service call made for the signed-in user as the action `method path` (the
/// API's method and path of the entity acted on): its value, or the error's message. The
/// service records a change in the audit log itself, in the change's transaction; a refused
/// action (4xx) changes nothing, so it is recorded here.
pub async fn acted<T>(gw: &Gateway, u: &Ui, method: &str, path: &str, r: Result<T, Error>) -> Result<T, String> {
    match r {
        Ok(v) => Ok(v),
        Err(e) => {
            let status = e.status();
            if (400..500).contains(&status) {
                crate::audit::refusal(&gw.db, &u.a, crate::audit::Action { method, path, status }).await;
            }
            Err(e.message().to_string())
        }
    }
}

/// The one large page (1000 rows) the UI's lists show.
pub fn one_page() -> Page {
    PageQuery::largest().page().unwrap_or(Page { limit: 1000, after: 0 })
}

/// The page shown when a list cannot be read.
pub fn unavailable(msg: &str) -> Response {
    error_page(StatusCode::SERVICE_UNAVAILABLE, msg)
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM UTC` (none if absent or unreadable).
pub fn utc_minute(t: Option<&str>) -> Option<String> {
    t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M UTC").to_string())
}

/// A `YYYY-MM-DD` date from a form as the end of that day (UTC) in RFC 3339; empty: `None`.
pub fn date_end(s: &str) -> Result<Option<String>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let d =
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("'{s}' is not a date (YYYY-MM-DD)."))?;
    let t = d.and_hms_opt(23, 59, 59).ok_or("That date has no end of day.")?.and_utc();
    Ok(Some(t.to_rfc3339()))
}

/// The form field `k`, trimmed ("" if absent).
pub fn field<'a>(f: &'a HashMap<String, String>, k: &str) -> &'a str {
    f.get(k).map(|v| v.trim()).unwrap_or_default()
}
