//! The audit log: every management action, made through the API or the admin UI, with who
//! made it (and with which key, and who created that key), when, the answer's status, and the
//! entity before and after (as the API shows it).
//!
//! A change is recorded by the domain service that makes it, in the same transaction
//! ([`write`]): a change never lands without its entry, and a change that fails leaves none.
//! A refused action (4xx) changes nothing; the transport records it with [`refusal`]. Secrets
//! (`key`) are removed before anything is stored.

use crate::auth::Authed;
use crate::db::Db;
use crate::gateway::{now, Gateway};
use crate::tenancy::store::{self as ts, Sql, Tx, Val};
use serde::Serialize;
use serde_json::Value;

/// One entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    /// Id (newest highest).
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Email of the caller.
    pub actor_email: String,
    /// The key the action was made with (none for the admin UI's session).
    pub token_id: Option<i64>,
    /// Who created that key, when it was someone other than the caller's own doing.
    pub key_created_by: Option<i64>,
    /// `api` or `ui`.
    pub via: String,
    /// HTTP method of the action (the API's, for UI actions too).
    pub method: String,
    /// API path of the action.
    pub path: String,
    /// Status of the answer (4xx: refused, nothing changed).
    pub status: i64,
    /// The entity before, as JSON text.
    pub before_json: Option<String>,
    /// The entity after, as JSON text.
    pub after_json: Option<String>,
}

/// The newest `limit` entries.
pub async fn recent(gw: &Gateway, limit: i64) -> Result<Vec<Entry>, sqlx::Error> {
    recent_db(&gw.db, limit).await
}

/// The newest `limit` entries of the log in `db`.
pub async fn recent_db(db: &crate::db::Db, limit: i64) -> Result<Vec<Entry>, sqlx::Error> {
    let mut q = Sql::new(
        "SELECT id, at, actor_email, token_id, key_created_by, via, method, path, status, before_json, after_json FROM audit_log ORDER BY id DESC LIMIT ",
    );
    q.arg(Val::Int(Some(limit)));
    ts::fetch_all(db, &q).await
}

fn scrub(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("key");
    }
    v
}

/// An entity as the audit log stores it (as the API shows it, never a secret).
pub fn state(v: &impl Serialize) -> Option<Value> {
    serde_json::to_value(v).ok().map(scrub)
}

/// One action: the API method and path it is (for UI actions too), the status it answered.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// API path of the entity acted on.
    pub path: &'a str,
    /// Status of the answer.
    pub status: u16,
}

fn insert(who: &Authed, action: &Action<'_>, before: Option<Value>, after: Option<Value>) -> Sql {
    let text = |v: Option<Value>| Val::Text(v.map(|v| v.to_string()).unwrap_or_default());
    let mut q = Sql::new(
        "INSERT INTO audit_log (at, actor_id, actor_email, token_id, key_created_by, via, method, path, status, \
         before_json, after_json) VALUES (",
    );
    q.arg(Val::Int(Some(now())))
        .push(", ")
        .id(who.user_id)
        .push(", ")
        .arg(Val::Text(who.email.clone()))
        .push(", ")
        .arg(Val::Int(who.token_id))
        .push(", ")
        .arg(Val::Int(who.key_created_by))
        .push(", ")
        .arg(Val::Text(who.via.as_str().into()))
        .push(", ")
        .arg(Val::Text(action.method.into()))
        .push(", ")
        .arg(Val::Text(action.path.into()))
        .push(", ")
        .arg(Val::Int(Some(i64::from(action.status))))
        .push(", NULLIF(")
        .arg(text(before))
        .push(", ''), NULLIF(")
        .arg(text(after))
        .push(", ''))");
    q
}

/// Records a change in `tx`, the transaction that makes it: the entry lands exactly when the
/// change does. `before` and `after` are the entity as the API shows it (see [`state`]).
pub async fn write(
    tx: &mut Tx,
    who: &Authed,
    action: Action<'_>,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<(), sqlx::Error> {
    tx.execute(&insert(who, &action, before, after)).await.map(|_| ())
}

/// Records a change in `tx` and commits it: the change and its entry land together.
pub async fn commit(
    mut tx: Tx,
    who: &Authed,
    action: Action<'_>,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<(), sqlx::Error> {
    write(&mut tx, who, action, before, after).await?;
    tx.commit().await
}

/// Records a refused action (a 4xx: nothing changed, so there is no transaction to join). A
/// failure to write is logged, never turned into a failed answer.
pub async fn refusal(db: &Db, who: &Authed, action: Action<'_>) {
    if let Err(e) = ts::execute_tx(db, &[insert(who, &action, None, None)]).await {
        tracing::error!(error = %e, path = action.path, "cannot write the audit log");
    }
}
