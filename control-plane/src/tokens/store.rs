//! Token and user rows.

use crate::db::Db;
use crate::with_pool;
use serde::Serialize;

/// A user's role; later issues add teams and orgs around it.
pub type Role = String;

/// A key as lists show it (never the key itself).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, Eq)]
pub struct TokenRow {
    /// Token id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// Name given at creation.
    pub name: String,
    /// `sk-…abcd`.
    pub preview: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, if the key expires.
    pub expires_at: Option<i64>,
    /// Unix seconds of the last use, when known.
    pub last_used_at: Option<i64>,
    /// Unix seconds of revocation; a revoked key is refused everywhere.
    pub revoked_at: Option<i64>,
}

/// A live key as the policy snapshot needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveToken {
    /// Token id.
    pub id: i64,
    /// SHA-256 hex.
    pub key_hash: String,
    /// Unix seconds, if the key expires.
    pub expires_at: Option<i64>,
    /// Owner.
    pub user_id: i64,
}

/// Who presented a key to the management API.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Caller {
    /// The user.
    pub user_id: i64,
    /// Their email.
    pub email: String,
    /// Their role.
    pub role: Role,
    /// Their org (none for a bootstrap admin).
    pub org_id: Option<i64>,
    /// The key used.
    pub token_id: i64,
    /// Set for a service account's key: the account.
    pub service_account_id: Option<i64>,
    /// The service account's team.
    pub sa_team_id: Option<i64>,
    /// Who created the key (none for keys older than this column, and bootstrap keys).
    pub created_by: Option<i64>,
}

const TOKEN_COLUMNS: &str = "id, user_id, name, preview, created_at, expires_at, last_used_at, revoked_at";

/// Creates the user if missing (keeping an existing user's role) and returns its id.
pub async fn ensure_user(db: &Db, email: &str, role: &str, now: i64) -> Result<i64, sqlx::Error> {
    with_pool!(db, p => {
        sqlx::query("INSERT INTO users (email, role, created_at) VALUES ($1, $2, $3) ON CONFLICT (email) DO NOTHING")
            .bind(email).bind(role).bind(now).execute(p).await?;
        sqlx::query_scalar::<_, i64>("SELECT id FROM users WHERE email = $1").bind(email).fetch_one(p).await
    })
}

/// Stores a new key (by hash) and returns its row.
pub async fn insert(
    db: &Db,
    user_id: i64,
    name: &str,
    key_hash: &str,
    preview: &str,
    now: i64,
    expires_at: Option<i64>,
) -> Result<TokenRow, sqlx::Error> {
    let sql = format!(
        "INSERT INTO tokens (user_id, name, key_hash, preview, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TOKEN_COLUMNS}"
    );
    with_pool!(db, p => sqlx::query_as::<_, TokenRow>(&sql)
        .bind(user_id).bind(name).bind(key_hash).bind(preview).bind(now).bind(expires_at)
        .fetch_one(p).await)
}

/// Whether a key with this hash exists (revoked or not).
pub async fn hash_exists(db: &Db, key_hash: &str) -> Result<bool, sqlx::Error> {
    with_pool!(db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM tokens WHERE key_hash = $1").bind(key_hash).fetch_one(p).await)
        .map(|n| n > 0)
}

/// Keys the filter should know: not revoked, owner active, and not expired for more than
/// `expired_grace` seconds (recently expired keys stay so the filter can say "expired").
pub async fn live(db: &Db, now: i64, expired_grace: i64) -> Result<Vec<LiveToken>, sqlx::Error> {
    with_pool!(db, p => sqlx::query_as::<_, LiveToken>(
        "SELECT t.id, t.key_hash, t.expires_at, t.user_id FROM tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.revoked_at IS NULL AND t.deleted_at IS NULL AND u.active AND u.deleted_at IS NULL \
         AND (t.expires_at IS NULL OR t.expires_at > $1)")
        .bind(now - expired_grace).fetch_all(p).await)
}

/// The caller behind a key hash, if the key is live (not revoked, deleted or expired; user
/// active and not deleted).
pub async fn caller(db: &Db, key_hash: &str, now: i64) -> Result<Option<Caller>, sqlx::Error> {
    with_pool!(db, p => sqlx::query_as::<_, Caller>(
        "SELECT u.id AS user_id, u.email, u.role, u.org_id, t.id AS token_id, t.service_account_id, \
         s.team_id AS sa_team_id, t.created_by FROM tokens t JOIN users u ON u.id = t.user_id \
         LEFT JOIN service_accounts s ON s.id = t.service_account_id \
         WHERE t.key_hash = $1 AND t.revoked_at IS NULL AND t.deleted_at IS NULL AND u.active AND u.deleted_at IS NULL \
         AND (t.expires_at IS NULL OR t.expires_at > $2) \
         AND (t.service_account_id IS NULL OR s.deleted_at IS NULL)")
        .bind(key_hash).bind(now).fetch_optional(p).await)
}
