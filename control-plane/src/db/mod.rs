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

/// `url` with any credentials replaced by `***`: the user info before `@` (whatever the
/// scheme, even a misspelt one) and `password=` query parameters. For every message or log
/// line that shows a database URL.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.find(['?', '#']) {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let start = match head.find("://") {
        Some(i) => i + 3,
        None => head.find(':').map_or(0, |i| i + 1),
    };
    let head = match head.rfind('@') {
        Some(at) if at >= start => format!("{}***{}", &head[..start], &head[at..]),
        _ => head.to_string(),
    };
    let query: Vec<String> = query
        .split_inclusive(['?', '&', '#'])
        .map(|part| {
            let (kv, sep) = match part.char_indices().last() {
                Some((i, c)) if "?&#".contains(c) => part.split_at(i),
                _ => (part, ""),
            };
            match kv.split_once('=') {
                Some((k, _)) if ["password", "pass", "pwd"].iter().any(|p| k.eq_ignore_ascii_case(p)) => {
                    format!("{k}=***{sep}")
                }
                _ => part.to_string(),
            }
        })
        .collect();
    format!("{head}{}", query.concat())
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
            Some(u) => return Err(DbError::Scheme(redact_url(u))),
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

    /// Closes the pool (every clone of it): new queries fail at once; resolves when the
    /// connections in use have been given back and every connection is closed (SQLite then
    /// checkpoints its write-ahead log into the database file).
    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
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

/// Migrated stores for unit tests: SQLite always, and PostgreSQL when `AQUEDUCT_TEST_PG` names a
/// server (`postgres://postgres@127.0.0.1:5432/postgres`), on a fresh database dropped after.
#[cfg(test)]
pub mod testing {
    use super::Db;

    /// A store for one test; its files or database go with it.
    pub struct TestDb {
        /// The store.
        pub db: Db,
        _dir: tempfile::TempDir,
        /// (server URL, database name) of a PostgreSQL database to drop.
        pg: Option<(String, String)>,
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let Some((server, name)) = self.pg.take() else { return };
            // Its own runtime: a drop cannot await, and may run inside the test's runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async {
                    let admin = sqlx::PgPool::connect(&server).await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await?;
                    admin.close().await;
                    Ok::<_, sqlx::Error>(())
                })
                .map_err(std::io::Error::other)
            })
            .join();
        }
    }

    /// Every backend to test on.
    pub async fn all() -> Vec<TestDb> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = Db::open(None, dir.path()).await.unwrap_or_else(|e| panic!("{e}"));
        let mut out = vec![TestDb { db, _dir: dir, pg: None }];
        if let Ok(server) = std::env::var("AQUEDUCT_TEST_PG") {
            let name = format!("aq_unit_{:016x}", rand::random::<u64>());
            let admin = sqlx::PgPool::connect(&server).await.unwrap_or_else(|e| panic!("AQUEDUCT_TEST_PG: {e}"));
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap_or_else(|e| panic!("{e}"));
            admin.close().await;
            let (base, query) = server.split_once('?').map_or((server.as_str(), None), |(b, q)| (b, Some(q)));
            let host_end = base.find("://").map_or(0, |i| i + 3);
            let base = base[host_end..].find('/').map_or(base, |i| &base[..host_end + i]);
            let url = format!("{base}/{name}{}", query.map(|q| format!("?{q}")).unwrap_or_default());
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            // Made before the migrations run, so the database is dropped even if they fail.
            let mut pg = TestDb { db: out[0].db.clone(), _dir: dir, pg: Some((server.clone(), name)) };
            pg.db = Db::open(Some(&url), pg._dir.path()).await.unwrap_or_else(|e| panic!("migrations/postgres: {e}"));
            out.push(pg);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_messages() {
        for (url, want) in [
            ("postgress://aq:s3cret@db.example:5432/aq", "postgress://***@db.example:5432/aq"),
            ("postgres:/aq:s3cret@db/aq", "postgres:***@db/aq"),
            ("aq:s3cret@db/aq", "aq:***@db/aq"),
            ("mysql://a:p@ss@h/db?sslmode=require", "mysql://***@h/db?sslmode=require"),
            ("pg://h/db?user=a&password=s3cret&x=1", "pg://h/db?user=a&password=***&x=1"),
            ("sqlite:///tmp/a.db", "sqlite:///tmp/a.db"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
        let e = DbError::Scheme(redact_url("postgress://aq:s3cret@db/aq")).to_string();
        assert!(!e.contains("s3cret") && e.contains("postgress://"), "{e}");
    }

    #[tokio::test]
    async fn a_misspelt_scheme_does_not_print_the_password() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let e = Db::open(Some("postgress://aq:s3cret@127.0.0.1/aq"), dir.path()).await.err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("unsupported DATABASE_URL scheme") && !e.contains("s3cret"), "{e}");
    }
}
