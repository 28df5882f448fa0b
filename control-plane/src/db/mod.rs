//! The store: SQLite (the embedded default) or PostgreSQL, chosen by URL.
//!
//! Schema lives only in `migrations/{sqlite,postgres}`, applied at start. Queries are written
//! once where both dialects agree (`$N` placeholders, `RETURNING`) and run through
//! [`with_pool!`], which expands the same code for each backend.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// A connection pool to one of the supported databases.
#[derive(Clone, Debug)]
pub enum Db {
    /// SQLite file (or memory) database.
    Sqlite(SqlitePool),
    /// PostgreSQL server.
    Postgres(PgPool),
}

/// Failure to open or migrate the store.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported DATABASE_URL scheme in {0:?}: use sqlite:// or postgres://")]
    Scheme(String),
    #[error("cannot open database: {0}")]
    Open(#[source] sqlx::Error),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

impl Db {
    /// Opens `url` (`postgres://…` or `sqlite://…`), or the SQLite file `aqueduct.db` in
    /// `data_dir` when no URL is given, and applies migrations.
    pub async fn open(url: Option<&str>, data_dir: &Path) -> Result<Self, DbError> {
        let db = match url {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(u)
                    .await
                    .map_err(DbError::Open)?;
                Db::Postgres(pool)
            }
            Some(u) if u.starts_with("sqlite:") => {
                Db::Sqlite(sqlite(SqliteConnectOptions::from_str(u).map_err(DbError::Open)?).await?)
            }
            Some(u) => return Err(DbError::Scheme(u.to_string())),
            None => Db::Sqlite(sqlite(SqliteConnectOptions::new().filename(data_dir.join("aqueduct.db"))).await?),
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(p) => sqlx::migrate!("../migrations/sqlite").run(p).await?,
            Db::Postgres(p) => sqlx::migrate!("../migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    /// Which backend this is, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }
}

async fn sqlite(opts: SqliteConnectOptions) -> Result<SqlitePool, DbError> {
    let opts = opts
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    SqlitePoolOptions::new().max_connections(8).connect_with(opts).await.map_err(DbError::Open)
}
