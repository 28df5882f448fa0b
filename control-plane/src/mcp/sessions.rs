//! MCP sessions in the store, so a control-plane restart (or another replica on the same
//! PostgreSQL) continues them: the gateway's session id, the key it is bound to, and the
//! upstream session(s) behind it.

use crate::db::Db;
use crate::with_pool;

/// A gateway session.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    /// The id the client sends as `Mcp-Session-Id`.
    pub id: String,
    /// The key that created it.
    pub token_id: i64,
    /// The server (`None`: the aggregated endpoint).
    pub server: Option<String>,
    /// The upstream's session id, for a per-server session.
    pub upstream_session: Option<String>,
    /// Unix seconds of the last request.
    pub last_used_at: i64,
}

/// A new random session id: 128 bits from the OS generator, hex.
pub fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The deployment's identity secret: created once (random) and shared by every control plane on
/// the same store, so the filter's headers stay valid across restarts and replicas.
pub async fn identity_secret(db: &Db) -> Result<String, sqlx::Error> {
    let fresh = {
        use rand::RngCore;
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        hex::encode(b)
    };
    with_pool!(db, p => {
        sqlx::query("INSERT INTO gateway_secrets (name, value) VALUES ('identity', $1) ON CONFLICT (name) DO NOTHING")
            .bind(&fresh)
            .execute(p)
            .await?;
        sqlx::query_scalar::<_, String>("SELECT value FROM gateway_secrets WHERE name = 'identity'").fetch_one(p).await
    })
}

/// Stores a new session.
pub async fn insert(db: &Db, s: &Session) -> Result<(), sqlx::Error> {
    with_pool!(db, p => sqlx::query(
        "INSERT INTO mcp_sessions (id, token_id, server, upstream_session, created_at, last_used_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&s.id)
    .bind(s.token_id)
    .bind(&s.server)
    .bind(&s.upstream_session)
    .bind(s.last_used_at)
    .execute(p)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// The session `id` if it belongs to `token_id` and to `server` (`None`: aggregated). A session
/// of another key or endpoint is reported as absent, like an unknown one. Marks it used (at most
/// once a minute, to spare the store a write per request).
pub async fn find(
    db: &Db,
    id: &str,
    token_id: i64,
    server: Option<&str>,
    now: i64,
) -> Result<Option<Session>, sqlx::Error> {
    let row: Option<Session> = with_pool!(db, p => sqlx::query_as::<_, Session>(
        "SELECT id, token_id, server, upstream_session, last_used_at FROM mcp_sessions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(p)
    .await)?;
    let Some(s) = row.filter(|s| s.token_id == token_id && s.server.as_deref() == server) else {
        return Ok(None);
    };
    if s.last_used_at < now - 60 {
        with_pool!(db, p => sqlx::query("UPDATE mcp_sessions SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(p)
            .await
            .map(|_| ()))?;
    }
    Ok(Some(s))
}

/// Deletes a session (and, by cascade, its upstream sessions).
pub async fn delete(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    with_pool!(db, p => sqlx::query("DELETE FROM mcp_sessions WHERE id = $1").bind(id).execute(p).await.map(|_| ()))?;
    Ok(())
}

/// Deletes sessions last used before `before` (unix seconds); returns how many.
pub async fn delete_idle(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    let r = with_pool!(db, p => sqlx::query("DELETE FROM mcp_sessions WHERE last_used_at < $1")
        .bind(before)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(r)
}

/// An aggregated session's session with one upstream.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Upstream {
    /// The upstream's session id (`None` for a stateless upstream).
    pub upstream_session: Option<String>,
    /// The protocol version the upstream agreed to.
    pub protocol_version: String,
}

/// The upstream session of aggregated session `id` with `server`.
pub async fn upstream(db: &Db, id: &str, server: &str) -> Result<Option<Upstream>, sqlx::Error> {
    with_pool!(db, p => sqlx::query_as::<_, Upstream>(
        "SELECT upstream_session, protocol_version FROM mcp_upstream_sessions WHERE session_id = $1 AND server = $2",
    )
    .bind(id)
    .bind(server)
    .fetch_optional(p)
    .await)
}

/// Stores (or replaces) the upstream session of aggregated session `id` with `server`.
pub async fn set_upstream(db: &Db, id: &str, server: &str, u: &Upstream) -> Result<(), sqlx::Error> {
    with_pool!(db, p => sqlx::query(
        "INSERT INTO mcp_upstream_sessions (session_id, server, upstream_session, protocol_version) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (session_id, server) \
         DO UPDATE SET upstream_session = excluded.upstream_session, protocol_version = excluded.protocol_version",
    )
    .bind(id)
    .bind(server)
    .bind(&u.upstream_session)
    .bind(&u.protocol_version)
    .execute(p)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Forgets the upstream session of aggregated session `id` with `server` (it expired).
pub async fn clear_upstream(db: &Db, id: &str, server: &str) -> Result<(), sqlx::Error> {
    with_pool!(db, p => sqlx::query("DELETE FROM mcp_upstream_sessions WHERE session_id = $1 AND server = $2")
        .bind(id)
        .bind(server)
        .execute(p)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Every upstream session of aggregated session `id`: (server, session).
pub async fn upstreams(db: &Db, id: &str) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    with_pool!(db, p => sqlx::query_as::<_, (String, Option<String>)>(
        "SELECT server, upstream_session FROM mcp_upstream_sessions WHERE session_id = $1",
    )
    .bind(id)
    .fetch_all(p)
    .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_are_bound_to_key_and_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(None, dir.path()).await.unwrap();
        let secret = identity_secret(&db).await.unwrap();
        assert_eq!(secret.len(), 64);
        assert_eq!(identity_secret(&db).await.unwrap(), secret, "created once");
        let s = Session {
            id: new_id(),
            token_id: 5,
            server: Some("a".into()),
            upstream_session: Some("up".into()),
            last_used_at: 100,
        };
        insert(&db, &s).await.unwrap();
        assert_eq!(find(&db, &s.id, 5, Some("a"), 100).await.unwrap(), Some(s.clone()));
        assert_eq!(find(&db, &s.id, 6, Some("a"), 100).await.unwrap(), None, "another key");
        assert_eq!(find(&db, &s.id, 5, Some("b"), 100).await.unwrap(), None, "another server");
        assert_eq!(find(&db, &s.id, 5, None, 100).await.unwrap(), None, "the aggregated endpoint");
        let agg = Session { id: new_id(), server: None, upstream_session: None, ..s.clone() };
        insert(&db, &agg).await.unwrap();
        let u = Upstream { upstream_session: Some("x".into()), protocol_version: "2025-06-18".into() };
        set_upstream(&db, &agg.id, "a", &u).await.unwrap();
        set_upstream(&db, &agg.id, "a", &u).await.unwrap();
        assert_eq!(upstream(&db, &agg.id, "a").await.unwrap(), Some(u));
        assert_eq!(upstreams(&db, &agg.id).await.unwrap().len(), 1);
        assert_eq!(delete_idle(&db, 101).await.unwrap(), 2);
        assert_eq!(upstreams(&db, &agg.id).await.unwrap().len(), 0, "cascade");
    }
}
