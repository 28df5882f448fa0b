//! Browser sign-in for the admin UI: sessions in the store, CSRF tokens, the local admin's
//! password, and OIDC login.
//!
//! A session cookie is 256 random bits; the store keeps only its SHA-256, the user, a CSRF token
//! and an expiry. The management API accepts the cookie as an alternative to a key (see
//! [`Authed`]); every state-changing request made with it must carry the
//! session's CSRF token, so another site cannot make the browser act for the user.

pub mod caller;
pub mod identity;
pub mod oidc;
pub mod password;
pub mod session;
pub mod throttle;

pub use caller::{Authed, Via};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "aqueduct_session";
/// Header carrying the CSRF token on API calls made with the session cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Form field carrying the CSRF token on UI forms.
pub const CSRF_FIELD: &str = "csrf";

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// 256 random bits from the OS as hex: session ids, CSRF tokens, passwords.
pub fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether `s` is free of control characters (CR, LF, ESC, …): such a string cannot forge log
/// lines or terminal output. Emails with them are refused at sign-in.
pub fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Constant-time comparison of two secrets.
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "a=1; aqueduct_session=abc ; b=2".parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn session_cookie_flags() {
        let c = session::set_cookie("abc", 3600, true);
        assert_eq!(c, "aqueduct_session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600; Secure");
        assert!(!session::set_cookie("abc", 3600, false).contains("Secure"));
        assert!(
            session::clear_cookie(false).starts_with("aqueduct_session=; ")
                && session::clear_cookie(false).contains("Max-Age=0")
        );
    }

    #[test]
    fn control_characters_are_not_printable() {
        assert!(printable("ann@example.com"));
        assert!(!printable("ann@example.com\nINFO aqueduct: signed in (local) user=1"));
        assert!(!printable("a\rb"));
        assert!(!printable("a\u{1b}[2Jb"));
        // Logged with Debug formatting, a forged line stays on one line.
        let forged = "x@y\nINFO forged";
        assert!(!format!("{forged:?}").contains('\n'));
    }

    #[test]
    fn secrets_compare_exactly() {
        let s = random_hex();
        assert_eq!(s.len(), 64);
        assert!(same_secret(&s, &s.clone()));
        assert!(!same_secret(&s, &random_hex()));
        assert!(!same_secret(&s, &s[1..]));
    }
}
