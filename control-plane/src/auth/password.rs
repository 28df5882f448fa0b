//! The local login's password: argon2id hashes in PHC format, and the bootstrap admin's
//! password set from configuration or generated once.
//!
//! Verifying a hash takes tens of milliseconds of CPU on purpose. Logins run it on tokio's
//! blocking pool, at most [`MAX_CONCURRENT_HASHES`] at a time, so a burst of sign-ins queues
//! behind the semaphore instead of stalling the runtime every other request runs on.

use crate::db::Db;
use crate::tenancy::store::{self as ts, Sql, Val};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;

/// How many password hashes are verified at once; further logins wait their turn.
pub const MAX_CONCURRENT_HASHES: usize = 2;

static HASHING: Semaphore = Semaphore::const_new(MAX_CONCURRENT_HASHES);

/// Runs `f` on the blocking pool once `sem` gives a permit (held until `f` returns).
async fn bounded<T: Send + 'static>(sem: &'static Semaphore, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _permit = sem.acquire().await.ok()?;
    tokio::task::spawn_blocking(f).await.ok()
}

/// [`verify`] off the async runtime, bounded by [`MAX_CONCURRENT_HASHES`].
pub async fn verify_bounded(password: &str, stored: &str) -> bool {
    let (password, stored) = (password.to_string(), stored.to_string());
    bounded(&HASHING, move || verify(&password, &stored)).await.unwrap_or(false)
}

/// Hashes `password` with argon2id and a random salt.
pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash password: {e}"))
}

/// Whether `password` matches the PHC string `stored` (false for a malformed one).
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

#[derive(sqlx::FromRow)]
struct Login {
    id: i64,
    password_hash: Option<String>,
}

async fn login_row(db: &Db, email: &str) -> Result<Option<Login>, sqlx::Error> {
    let mut q = Sql::new("SELECT id, password_hash FROM users WHERE deleted_at IS NULL AND active AND email = ");
    q.arg(Val::Text(email.to_string()));
    ts::fetch_opt(db, &q).await
}

/// The user id if `email` has a local password and `password` matches it.
pub async fn check(db: &Db, email: &str, password: &str) -> Result<Option<i64>, sqlx::Error> {
    let row = login_row(db, email).await?;
    // Hash even when there is no such user, so the answer takes as long either way.
    let stored = row.as_ref().and_then(|r| r.password_hash.clone());
    let ok = verify_bounded(password, stored.as_deref().unwrap_or(DUMMY_HASH)).await;
    Ok(row.filter(|r| ok && r.password_hash.is_some()).map(|r| r.id))
}

/// A valid argon2id hash of a random string: verified against when the user does not exist.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0uaFZfOzYKcr0zfkHRNFQ3lo6KQqBoN4y3rM0kCp4iM";

/// Gives the bootstrap admin (`email`) a local password: `configured` if given (replacing a
/// different stored one), else a generated one on first start. Returns a generated password to
/// print once.
pub async fn bootstrap(db: &Db, email: &str, configured: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(row) = login_row(db, email).await? else {
        anyhow::bail!("bootstrap admin {email} not found");
    };
    let set = |hash: String| {
        let mut q = Sql::new("UPDATE users SET password_hash = ");
        q.arg(Val::Text(hash)).push(" WHERE id = ").id(row.id);
        q
    };
    match (configured, &row.password_hash) {
        (Some(p), Some(stored)) if verify(p, stored) => Ok(None),
        (Some(p), _) => {
            anyhow::ensure!(p.chars().count() >= 8, "AQUEDUCT_ADMIN_PASSWORD must be at least 8 characters");
            ts::execute_tx(db, &[set(hash(p)?)]).await?;
            Ok(None)
        }
        (None, Some(_)) => Ok(None),
        (None, None) => {
            // 128 bits is plenty for a password typed once and then changed by configuration.
            let generated = super::random_hex()[..32].to_string();
            ts::execute_tx(db, &[set(hash(&generated)?)]).await?;
            Ok(Some(generated))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password() {
        let h = hash("correct horse").unwrap_or_default();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(!verify("correct horse", "not a hash"));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_concurrency_is_bounded() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        static SEM: Semaphore = Semaphore::const_new(MAX_CONCURRENT_HASHES);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..8)
            .map(|_| {
                let (running, peak) = (running.clone(), peak.clone());
                tokio::spawn(bounded(&SEM, move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for j in jobs {
            assert!(j.await.unwrap_or_default().is_some());
        }
        assert_eq!(peak.load(Ordering::SeqCst), MAX_CONCURRENT_HASHES);
        // The real verifier goes the same way and still answers correctly.
        let h = hash("correct horse").unwrap_or_default();
        assert!(verify_bounded("correct horse", &h).await);
        assert!(!verify_bounded("wrong", &h).await);
    }
}
