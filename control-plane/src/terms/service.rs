//! The Terms of Service actions: accept the current version, publish a new one, list versions
//! with their acceptances. The admin UI calls them.

use super::{versions, Version};
use crate::audit::{self, Action};
use crate::auth::Authed;
use crate::domain::input::{bad, conflict, forbidden, not_found};
use crate::domain::Error;
use crate::gateway::{now, Gateway};
use crate::tenancy::store::{self as ts, Sql, Tx, Val};

/// Longest text of one version.
pub const MAX_TERMS: usize = 100_000;

/// Records that the caller accepted the current version, which must be the one they were shown
/// (`shown`, its id): an accept of a page published before a newer version does not count for
/// the newer one. Returns the version accepted.
pub async fn accept_current(gw: &Gateway, a: &Authed, shown: &str) -> Result<i64, Error> {
    let mut tx = Tx::begin(&gw.db).await?;
    let q = Sql::new("SELECT id, body, created_at FROM terms_versions ORDER BY id DESC LIMIT 1");
    let v: Version = tx.fetch_opt(&q).await?.ok_or_else(|| not_found("Terms of Service", "version"))?;
    if shown != v.id.to_string() {
        return Err(conflict("version", "A newer version was published meanwhile; read it and accept again."));
    }
    let mut q = Sql::new("INSERT INTO terms_acceptances (version_id, user_id, accepted_at) VALUES (");
    q.id(v.id)
        .push(", ")
        .id(a.user_id)
        .push(", ")
        .arg(Val::Int(Some(now())))
        .push(") ON CONFLICT (version_id, user_id) DO NOTHING");
    tx.execute(&q).await?;
    let after = serde_json::json!({"object": "terms_acceptance", "version_id": v.id.to_string()});
    let action = Action { method: "POST", path: "/ui/terms/accept", status: 200 };
    audit::commit(tx, a, action, None, Some(after)).await?;
    tracing::info!(user = a.user_id, version = v.id, "terms accepted");
    gw.request_rebuild();
    Ok(v.id)
}

/// Publishes a new current version (admin); returns its id.
pub async fn publish_version(gw: &Gateway, a: &Authed, body: &str) -> Result<i64, Error> {
    if !a.is_admin() {
        return Err(forbidden("Managing the Terms of Service needs the admin role."));
    }
    if body.is_empty() || body.chars().count() > MAX_TERMS {
        return Err(bad("body", format!("The text must be 1 to {MAX_TERMS} characters.")));
    }
    let mut tx = Tx::begin(&gw.db).await?;
    let mut q = Sql::new("INSERT INTO terms_versions (body, created_at, created_by) VALUES (");
    q.arg(Val::Text(body.to_string()))
        .push(", ")
        .arg(Val::Int(Some(now())))
        .push(", ")
        .id(a.user_id)
        .push(") RETURNING id");
    let id = tx.insert(&q).await?;
    let after = serde_json::json!({"object": "terms_version", "id": id.to_string(), "body": body});
    let action = Action { method: "POST", path: "/ui/terms/versions", status: 200 };
    audit::commit(tx, a, action, None, Some(after)).await?;
    tracing::info!(version = id, by = a.user_id, "terms published");
    gw.request_rebuild();
    Ok(id)
}

/// Every version, newest first, with how many users accepted it (admin).
pub async fn versions_with_counts(gw: &Gateway, a: &Authed) -> Result<Vec<(Version, i64)>, Error> {
    if !a.is_admin() {
        return Err(forbidden("Managing the Terms of Service needs the admin role."));
    }
    let list = versions(&gw.db).await?;
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        let mut q = Sql::new("SELECT COUNT(*) FROM terms_acceptances WHERE version_id = ");
        q.id(v.id);
        let n = ts::scalar(&gw.db, &q).await?.unwrap_or(0);
        out.push((v, n));
    }
    Ok(out)
}
