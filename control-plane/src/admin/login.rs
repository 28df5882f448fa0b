//! Sign-in and sign-out: the local admin login, OIDC, and the session cookie.

use super::{error_page, field, render, Nav, UiSettings};
use crate::auth::throttle::{self, Throttle};
use crate::auth::{self, oidc, password, session};
use crate::gateway::{now, Gateway};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

/// Cookie holding the login form's CSRF token (double submit: there is no session yet).
const LOGIN_COOKIE: &str = "aqueduct_login";
/// Cookie binding an OIDC login to the browser that started it: it holds the login's `state`,
/// and the callback accepts only the `state` this browser's cookie names.
pub const OIDC_COOKIE: &str = "aqueduct_oidc";

/// Failed local sign-ins per account and per client address (this replica's memory).
struct Throttles {
    accounts: Throttle,
    addresses: Throttle,
}

static THROTTLES: LazyLock<Mutex<Throttles>> = LazyLock::new(|| {
    Mutex::new(Throttles {
        accounts: Throttle::new(throttle::ACCOUNT_LIMIT, throttle::WINDOW_SECS, throttle::MAX_KEYS),
        addresses: Throttle::new(throttle::ADDRESS_LIMIT, throttle::WINDOW_SECS, throttle::MAX_KEYS),
    })
});

fn throttles() -> std::sync::MutexGuard<'static, Throttles> {
    THROTTLES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The client's address from `X-Forwarded-For`: the gateway's Envoy appends the address that
/// connected to it (`use_remote_address`), so the last entry is that address and cannot be
/// forged; with `trusted_hops` proxies in front of Envoy (`AQUEDUCT_TRUSTED_PROXY_HOPS`, as for
/// the usage ledger) the entry that many places further left. `-` without the header.
fn client_address(headers: &HeaderMap, trusted_hops: u32) -> String {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let i = entries.len().saturating_sub(1).saturating_sub(trusted_hops as usize);
    entries.get(i).copied().unwrap_or("-").to_string()
}

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
    let email = field(&f, "email").trim().to_lowercase();
    let pass = f.get("password").map(String::as_str).unwrap_or_default();
    let address = client_address(&headers, gw.ledger.trusted_hops);
    let shown = if auth::printable(&email) { email.as_str() } else { "" };
    let (account_key, address_key) = (format!("account:{email}"), format!("address:{address}"));
    let wait = {
        let t = throttles();
        let at = now();
        t.accounts.blocked(&account_key, at).max(t.addresses.blocked(&address_key, at))
    };
    if let Some(secs) = wait {
        // Debug formatting escapes control characters: the email cannot forge log lines.
        tracing::warn!(email = ?email, address = ?address, retry_after = secs, "local sign-in throttled");
        let mut resp = login_page(
            &ui,
            StatusCode::TOO_MANY_REQUESTS,
            shown,
            Some(format!("Too many failed sign-ins; try again in {secs} seconds.")),
        );
        resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
        return resp;
    }
    // An email with control characters names no account (and would forge log lines).
    let found = if auth::printable(&email) { password::check(&gw.db, &email, pass).await } else { Ok(None) };
    match found {
        Ok(Some(user)) => {
            throttles().accounts.clear(&account_key);
            tracing::info!(user, "signed in (local)");
            start_session(&gw, &ui, user).await
        }
        Ok(None) => {
            {
                let mut t = throttles();
                let at = now();
                t.accounts.failed(&account_key, at);
                t.addresses.failed(&address_key, at);
            }
            tracing::info!(email = ?email, address = ?address, "local sign-in refused");
            login_page(&ui, StatusCode::UNAUTHORIZED, shown, Some("Wrong email or password.".into()))
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
        Ok((url, state)) => {
            let mut resp = Redirect::to(&url).into_response();
            if let Ok(v) = oidc_cookie(&state, oidc::LOGIN_TTL_SECS, ui.secure()).parse() {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "OIDC login could not start");
            error_page(StatusCode::BAD_GATEWAY, "The sign-on provider cannot be reached; try again later.")
        }
    }
}

/// The `Set-Cookie` value binding a login's `state` to this browser: HttpOnly, SameSite=Lax (the
/// provider's redirect back is a top-level navigation from another site), only sent to the
/// callback, and gone when the login expires.
fn oidc_cookie(state: &str, ttl_secs: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{OIDC_COOKIE}={state}; Path=/ui/auth; HttpOnly; SameSite=Lax; Max-Age={ttl_secs}{secure}")
}

/// `GET /ui/auth/callback`: the provider's redirect back with `code` and `state` (or `error`).
/// The binding cookie is cleared whatever the outcome.
pub async fn oidc_callback(
    gw: State<Arc<Gateway>>,
    Extension(ui): Extension<Arc<UiSettings>>,
    headers: HeaderMap,
    q: Query<HashMap<String, String>>,
) -> Response {
    let mut resp = oidc_callback_inner(gw, &ui, &headers, q).await;
    if let Ok(v) = oidc_cookie("", 0, ui.secure()).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

async fn oidc_callback_inner(
    State(gw): State<Arc<Gateway>>,
    ui: &UiSettings,
    headers: &HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(o) = &ui.oidc else {
        return error_page(StatusCode::NOT_FOUND, "Single sign-on is not configured.");
    };
    if let Some(err) = q.get("error") {
        let desc = q.get("error_description").map(String::as_str).unwrap_or_default();
        return login_page(
            ui,
            StatusCode::UNAUTHORIZED,
            "",
            Some(format!("The provider refused the sign-in: {err} {desc}")),
        );
    }
    let (state, code) = (field(&q, "state"), field(&q, "code"));
    if state.is_empty() || code.is_empty() {
        return login_page(ui, StatusCode::BAD_REQUEST, "", Some("The provider's answer has no code or state.".into()));
    }
    // Login CSRF: only the browser that started this login may finish it.
    let bound = auth::cookie(headers, OIDC_COOKIE).unwrap_or_default();
    if bound.is_empty() || !auth::same_secret(bound, state) {
        tracing::warn!("OIDC callback refused: its state was not started by this browser");
        return login_page(
            ui,
            StatusCode::BAD_REQUEST,
            "",
            Some("This sign-in was not started in this browser; start again.".into()),
        );
    }
    let who = match o.finish(&gw.db, state, code, now()).await {
        Ok(who) => who,
        Err(e) => {
            tracing::warn!(error = %e, "OIDC login failed");
            return login_page(ui, StatusCode::UNAUTHORIZED, "", Some(format!("Sign-in failed: {e}")));
        }
    };
    match oidc::provision(&gw.db, &who, o.settings(), now()).await {
        Ok(user) => {
            tracing::info!(user, email = ?who.email, "signed in (OIDC)");
            gw.request_rebuild();
            start_session(&gw, ui, user).await
        }
        Err(e) => {
            tracing::warn!(email = ?who.email, error = %e, "OIDC sign-in refused");
            login_page(ui, StatusCode::FORBIDDEN, "", Some(e.to_string()))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_address_is_the_entry_envoy_appended() {
        let mut h = HeaderMap::new();
        assert_eq!(client_address(&h, 0), "-");
        h.append("x-forwarded-for", "6.6.6.6, 10.0.0.1".parse().unwrap_or_else(|_| unreachable!()));
        h.append("x-forwarded-for", "192.0.2.7".parse().unwrap_or_else(|_| unreachable!()));
        // A client's own entries (6.6.6.6) are left of the one Envoy appends.
        assert_eq!(client_address(&h, 0), "192.0.2.7");
        assert_eq!(client_address(&h, 1), "10.0.0.1");
        assert_eq!(client_address(&h, 9), "6.6.6.6");
    }

    #[test]
    fn oidc_cookie_is_short_lived_and_http_only() {
        let c = oidc_cookie("st", oidc::LOGIN_TTL_SECS, true);
        assert_eq!(c, "aqueduct_oidc=st; Path=/ui/auth; HttpOnly; SameSite=Lax; Max-Age=600; Secure");
    }
}
