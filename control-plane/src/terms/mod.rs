//! Terms of Service: versions (the newest is current) and who accepted which. While terms are
//! required, the policy marks the keys of every non-admin user who has not accepted the current
//! version, and the filter refuses them with 403.
//!
//! This module reads the store; [`service`] holds the actions (accept, publish), which decide
//! who may act and write the audit entry in the change's transaction.

pub mod service;

use crate::db::Db;
use crate::tenancy::store::{self as ts, Sql};
use std::collections::HashSet;

/// A version of the terms.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Version {
    /// Id (versions are numbered by it).
    pub id: i64,
    /// The text, shown as plain text.
    pub body: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Every version, newest first.
pub async fn versions(db: &Db) -> Result<Vec<Version>, sqlx::Error> {
    ts::fetch_all(db, &Sql::new("SELECT id, body, created_at FROM terms_versions ORDER BY id DESC")).await
}

/// The current (newest) version, if any.
pub async fn current(db: &Db) -> Result<Option<Version>, sqlx::Error> {
    ts::fetch_opt(db, &Sql::new("SELECT id, body, created_at FROM terms_versions ORDER BY id DESC LIMIT 1")).await
}

/// Whether `user` accepted `version`.
pub async fn accepted(db: &Db, version: i64, user: i64) -> Result<bool, sqlx::Error> {
    let mut q = Sql::new("SELECT COUNT(*) FROM terms_acceptances WHERE version_id = ");
    q.id(version).push(" AND user_id = ").id(user);
    Ok(ts::scalar(db, &q).await?.unwrap_or(0) > 0)
}

/// Live non-admin users who have not accepted the current version (empty when there is none).
pub async fn pending_users(db: &Db) -> Result<HashSet<i64>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Id {
        id: i64,
    }
    let q = Sql::new(
        "SELECT u.id FROM users u WHERE u.deleted_at IS NULL AND u.role <> 'admin' \
         AND EXISTS (SELECT 1 FROM terms_versions) \
         AND NOT EXISTS (SELECT 1 FROM terms_acceptances a WHERE a.user_id = u.id \
                         AND a.version_id = (SELECT MAX(id) FROM terms_versions))",
    );
    let rows: Vec<Id> = ts::fetch_all(db, &q).await?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}
