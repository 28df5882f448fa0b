//! Sign-in and sign-out: the local admin login, OIDC, and the session cookie.

use super::{error_page, field, render, Nav, UiSettings};
use crate::auth::{self, oidc, password, session};
use crate::gateway::{now, Gateway};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use std::collections::HashMap;
use std::sync::Arc;

/// Cookie holding the login form's CSRF token (double submit: there is no session yet).
const LOGIN_COOKIE: &str = "aqueduct_login";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Nav,
    oidc: bool,
    local: bool,
    login_csrf: String,
    email: String,
    error: Option<String>,
}

fn login_page(ui: &UiSettings, status: StatusCode, email: &str, error: Option<String>) -> Response {
    let token = auth::random_hex();
    let mut resp = render(
        status,
        &LoginPage {
            nav: Nav::anonymous(),
            oidc: ui.oidc.is_some(),
            // The local login is the bootstrap admin's way in; with OIDC it stays available so
            // an admin can still sign in when the provider is down.
            local: true,
            login_csrf: token.clone(),
            email: email.to_string(),
            error,
        },
    );
    let secure = if ui.secure() { "; Secure" } else { "" };
    if let Ok(v) =
        format!("{LOGIN_COOKIE}={token}; Path=/ui/login; HttpOnly; SameSite=Strict; Max-Age=3600{secure}").parse()
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /ui/login`
pub async fn page(Extension(ui): Extension<Arc<UiSettings>>) -> Response {
    login_page(&ui, StatusCode::OK, "", None)
}

async fn start_session(gw: &Gateway, ui: &UiSettings, user_id: i64) -> Response {
    match session::create(&gw.db, user_id, now(), ui.session_ttl).await {
        Ok(id) => {
            let mut resp = Redirect::to("/ui/keys").into_response();
            if let Ok(v) = session::set_cookie(&id, ui.session_ttl, ui.secure()).parse() {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store session");
            error_page(StatusCode::SERVICE_UNAVAILABLE, "The database is unavailable; try again.")
        }
    }
}

/// `POST /ui/login`: email and password of a user with a local password (the bootstrap admin).
pub async fn local(
    State(gw): State<Arc<Gateway>>,
    Extension(ui): Extension<Arc<UiSettings>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let expected = auth::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let sent = field(&f, auth::CSRF_FIELD);
    if expected.is_empty() || !auth::same_secret(expected, sent) {
        return login_page(&ui, StatusCode::FORBIDDEN, "", Some("The form expired; try again.".into()));
    }
    let email = field(&f, "email").to_lowercase();
    let pass = f.get("password").map(String::as_str).unwrap_or_default();
    match password::check(&gw.db, &email, pass).await {
        Ok(Some(user)) => {
            tracing::info!(user, "signed in (local)");
            start_session(&gw, &ui, user).await
        }
        Ok(None) => {
            tracing::info!(email = %email, "local sign-in refused");
            login_page(&ui, StatusCode::UNAUTHORIZED, &email, Some("Wrong email or password.".into()))
        }
        Err(e) => {
            tracing::error!(error = %e, "sign-in lookup failed");
            error_page(StatusCode::SERVICE_UNAVAILABLE, "The database is unavailable; try again.")
        }
    }
}

/// `GET /ui/login/oidc`: redirects to the provider.
pub async fn oidc_start(State(gw): State<Arc<Gateway>>, Extension(ui): Extension<Arc<UiSettings>>) -> Response {
    let Some(o) = &ui.oidc else {
        return error_page(StatusCode::NOT_FOUND, "Single sign-on is not configured.");
    };
    match o.start(&gw.db, now()).await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "OIDC login could not start");
            error_page(StatusCode::BAD_GATEWAY, "The sign-on provider cannot be reached; try again later.")
        }
    }
}

/// `GET /ui/auth/callback`: the provider's redirect back with `code` and `state` (or `error`).
pub async fn oidc_callback(
    State(gw): State<Arc<Gateway>>,
    Extension(ui): Extension<Arc<UiSettings>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(o) = &ui.oidc else {
        return error_page(StatusCode::NOT_FOUND, "Single sign-on is not configured.");
    };
    if let Some(err) = q.get("error") {
        let desc = q.get("error_description").map(String::as_str).unwrap_or_default();
        return login_page(
            &ui,
            StatusCode::UNAUTHORIZED,
            "",
            Some(format!("The provider refused the sign-in: {err} {desc}")),
        );
    }
    let (state, code) = (field(&q, "state"), field(&q, "code"));
    if state.is_empty() || code.is_empty() {
        return login_page(
            &ui,
            StatusCode::BAD_REQUEST,
            "",
            Some("The provider's answer has no code or state.".into()),
        );
    }
    let who = match o.finish(&gw.db, state, code, now()).await {
        Ok(who) => who,
        Err(e) => {
            tracing::warn!(error = %e, "OIDC login failed");
            return login_page(&ui, StatusCode::UNAUTHORIZED, "", Some(format!("Sign-in failed: {e}")));
        }
    };
    match oidc::provision(&gw.db, &who, o.settings(), now()).await {
        Ok(user) => {
            tracing::info!(user, email = %who.email, "signed in (OIDC)");
            gw.request_rebuild();
            start_session(&gw, &ui, user).await
        }
        Err(e) => login_page(&ui, StatusCode::FORBIDDEN, "", Some(e.to_string())),
    }
}

/// `POST /ui/logout`: ends the session (CSRF-checked, so another site cannot sign you out).
pub async fn logout(
    State(gw): State<Arc<Gateway>>,
    Extension(ui): Extension<Arc<UiSettings>>,
    u: super::Ui,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Some(r) = u.refuse_csrf(&f) {
        return r;
    }
    if let Err(e) = session::delete(&gw.db, &u.cookie).await {
        tracing::error!(error = %e, "cannot end session");
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    if let Ok(v) = session::clear_cookie(ui.secure()).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}
