//! Sessions in the store: created at login, looked up by the hash of the cookie, ended at
//! logout or expiry.

use crate::db::Db;
use crate::tenancy::store::{self as ts, Sql, Val};
use crate::tokens::hash_hex;

/// A live session and its user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    /// The user.
    pub user_id: i64,
    /// Their email.
    pub email: String,
    /// Their role (stored text).
    pub role: String,
    /// Their org.
    pub org_id: Option<i64>,
    /// The CSRF token forms and API calls must carry.
    pub csrf: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Starts a session for `user_id` lasting `ttl_secs`; returns the cookie value (shown to the
/// browser only).
pub async fn create(db: &Db, user_id: i64, now: i64, ttl_secs: i64) -> Result<String, sqlx::Error> {
    let id = super::random_hex();
    let mut q = Sql::new("INSERT INTO ui_sessions (id_hash, user_id, csrf, created_at, expires_at) VALUES (");
    q.arg(Val::Text(hash_hex(&id)))
        .push(", ")
        .id(user_id)
        .push(", ")
        .arg(Val::Text(super::random_hex()))
        .push(", ")
        .arg(Val::Int(Some(now)))
        .push(", ")
        .arg(Val::Int(Some(now + ttl_secs)))
        .push(")");
    // Expired sessions are swept here rather than by a timer: logins are rare and this keeps
    // the table small without another task.
    let mut sweep = Sql::new("DELETE FROM ui_sessions WHERE expires_at <= ");
    sweep.arg(Val::Int(Some(now)));
    ts::execute_tx(db, &[sweep, q]).await?;
    Ok(id)
}

/// The live session behind a cookie value: not expired, user active and not deleted.
pub async fn lookup(db: &Db, cookie: &str, now: i64) -> Result<Option<Session>, sqlx::Error> {
    let mut q = Sql::new(
        "SELECT s.user_id, u.email, u.role, u.org_id, s.csrf, s.expires_at FROM ui_sessions s \
         JOIN users u ON u.id = s.user_id WHERE s.id_hash = ",
    );
    q.arg(Val::Text(hash_hex(cookie)))
        .push(" AND s.expires_at > ")
        .arg(Val::Int(Some(now)))
        .push(" AND u.active AND u.deleted_at IS NULL");
    ts::fetch_opt(db, &q).await
}

/// Ends the session behind a cookie value.
pub async fn delete(db: &Db, cookie: &str) -> Result<(), sqlx::Error> {
    let mut q = Sql::new("DELETE FROM ui_sessions WHERE id_hash = ");
    q.arg(Val::Text(hash_hex(cookie)));
    ts::execute_tx(db, &[q]).await.map(|_| ())
}

/// Stores a message for the next page this session sees.
pub async fn set_flash(db: &Db, cookie: &str, msg: &str) -> Result<(), sqlx::Error> {
    let mut q = Sql::new("UPDATE ui_sessions SET flash = ");
    q.arg(Val::Text(msg.to_string())).push(" WHERE id_hash = ").arg(Val::Text(hash_hex(cookie)));
    ts::execute_tx(db, &[q]).await.map(|_| ())
}

#[derive(sqlx::FromRow)]
struct Flash {
    flash: Option<String>,
}

/// Takes (reads and clears) the session's message.
pub async fn take_flash(db: &Db, cookie: &str) -> Result<Option<String>, sqlx::Error> {
    let mut q = Sql::new("SELECT flash FROM ui_sessions WHERE id_hash = ");
    q.arg(Val::Text(hash_hex(cookie)));
    let f: Option<Flash> = ts::fetch_opt(db, &q).await?;
    let msg = f.and_then(|f| f.flash);
    if msg.is_some() {
        let mut c = Sql::new("UPDATE ui_sessions SET flash = NULL WHERE id_hash = ");
        c.arg(Val::Text(hash_hex(cookie)));
        ts::execute_tx(db, &[c]).await?;
    }
    Ok(msg)
}

/// The `Set-Cookie` value that stores `value` for `ttl_secs` (HttpOnly, SameSite=Lax, Secure
/// when the UI is served over https).
pub fn set_cookie(value: &str, ttl_secs: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={ttl_secs}{secure}", super::SESSION_COOKIE)
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", 0, secure)
}
