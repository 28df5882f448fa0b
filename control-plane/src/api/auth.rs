//! The management API's caller: a key (`Authorization: Bearer` or `x-api-key`) or the admin
//! UI's session cookie, read from the request into [`Authed`].

use super::error::Error;
use crate::gateway::{now, Gateway};
use aqueduct_policy::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::sync::Arc;

pub use crate::auth::caller::{service_account_refused, Authed, Via};

/// The caller of a management route. With a session cookie, state-changing requests must
/// carry the session's CSRF token in `x-csrf-token`.
impl FromRequestParts<Arc<Gateway>> for Authed {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let has_key = header("authorization").is_some() || header("x-api-key").is_some();
        if !has_key {
            if let Some(cookie) = crate::auth::cookie(&parts.headers, crate::auth::SESSION_COOKIE) {
                let a = Authed::from_session(&gw.db, cookie, now(), Via::Api).await?.ok_or_else(session_expired)?;
                // Reads are safe; anything else made with a cookie must prove it comes from our
                // own pages (SameSite=Lax alone leaves top-level POSTs from old browsers).
                if !parts.method.is_safe() {
                    let sent = header(crate::auth::CSRF_HEADER).unwrap_or_default();
                    if !a.csrf.as_deref().is_some_and(|c| crate::auth::same_secret(c, sent)) {
                        return Err(csrf_failed());
                    }
                }
                return Ok(a);
            }
        }
        // Same credentials as the model API: `Authorization: Bearer` or `x-api-key`.
        let key = header("authorization")
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k.trim().to_string())
            .or_else(|| header("x-api-key").map(|k| k.trim().to_string()))
            .filter(|k| !k.is_empty())
            .ok_or_else(ApiError::missing_key)?;
        Authed::from_key(&gw.db, &key, parts.method.as_str(), parts.uri.path(), now())
            .await?
            .ok_or_else(|| ApiError::invalid_key().into())
    }
}

/// 401 for a session cookie that is unknown, expired or whose user is gone.
pub fn session_expired() -> Error {
    ApiError::new(401, "Your session has ended; sign in again.").code("invalid_session").into()
}

/// 403 for a state-changing request made with the session cookie but without its CSRF token.
pub fn csrf_failed() -> Error {
    ApiError::new(403, "Missing or wrong CSRF token; reload the page and try again.").code("csrf_failed").into()
}
