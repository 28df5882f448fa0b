//! Owner records: which caller made each stored response (`response_owners`).
//!
//! Records are written by usage ingestion, in the transaction that stores the create's event
//! ([`claims`], [`insert_claims`], [`claim_pg`]): the filter reports the new response's id with
//! the event, so there is no other write on the request path. Times are unix seconds.

use crate::auth::identity::Identity;
use crate::db::Db;
use crate::with_pool;
use aqueduct_policy::ledger::UsageEvent;
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Default days an owner record is kept (`--responses-ttl-days`).
pub const DEFAULT_TTL_DAYS: u32 = 30;

/// Seconds an owner record is kept after its create was ingested.
///
/// Process-wide because ingestion is handed only the store by the ingest endpoint; set once at
/// start ([`set_ttl_days`]) before any event is ingested.
static TTL_SECS: AtomicI64 = AtomicI64::new(DEFAULT_TTL_DAYS as i64 * 86_400);

/// Sets how many days new owner records are kept.
pub fn set_ttl_days(days: u32) {
    TTL_SECS.store(i64::from(days.max(1)) * 86_400, Ordering::Relaxed);
}

/// Seconds new owner records are kept.
pub fn ttl_secs() -> i64 {
    TTL_SECS.load(Ordering::Relaxed)
}

/// Who made a stored response, and with which model.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Owner {
    /// The provider's id (`resp_…`).
    pub response_id: String,
    /// The key's user (a service account's owner, for its key, when the response was made).
    pub owner_user_id: i64,
    /// The key's service account, when it was a service account's key.
    pub owner_service_account_id: Option<i64>,
    /// The key the create was made with.
    pub token_id: i64,
    /// The public model name (aliases resolved) that made it.
    pub model: String,
    /// When the create was made.
    pub created_at: i64,
    /// When the record stops counting.
    pub expires_at: i64,
}

impl Owner {
    /// Whether `who` owns this response: a service account's responses belong to the account
    /// (any of its keys, whoever owns it now); a user's to that user's personal keys. A user
    /// does not own what their service accounts made, nor an account what its owner made.
    pub fn owned_by(&self, who: &Identity) -> bool {
        match (self.owner_service_account_id, who.service_account_id) {
            (Some(owner), Some(caller)) => owner == caller,
            (None, None) => self.owner_user_id == who.user_id,
            _ => false,
        }
    }
}

/// The owner records the events of `events` make: one per successful create that reported a
/// well-formed response id, made with a known key and model (first occurrence of each id),
/// kept for `ttl_secs` from `now`.
pub fn claims(events: &[&UsageEvent], now: i64, ttl_secs: i64) -> Vec<Owner> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for e in events {
        let (Some(id), Some(token), Some(user), Some(model)) = (&e.response_id, e.token_id, e.user_id, &e.model) else {
            continue;
        };
        if !(200..300).contains(&e.status)
            || !aqueduct_policy::responses::valid_id(id)
            || model.is_empty()
            || !seen.insert(id.as_str())
        {
            continue;
        }
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        out.push(Owner {
            response_id: id.clone(),
            owner_user_id: n(user),
            owner_service_account_id: e.service_account_id.map(n),
            token_id: n(token),
            model: model.clone(),
            created_at: e.at_ms.div_euclid(1000),
            expires_at: now.saturating_add(ttl_secs),
        });
    }
    out
}

const CLAIM_INSERT: &str = "INSERT INTO response_owners (response_id, owner_user_id, owner_service_account_id, \
     token_id, model, created_at, expires_at) ";

/// A response id names one response, so a second claim on a live record can only be a replay or
/// a misbehaving provider: the first owner keeps it (handing a response to a later claimant would
/// give it someone else's conversation). Only an expired record is replaced.
const CLAIM_CONFLICT: &str = " ON CONFLICT (response_id) DO UPDATE SET owner_user_id = excluded.owner_user_id, \
     owner_service_account_id = excluded.owner_service_account_id, token_id = excluded.token_id, \
     model = excluded.model, created_at = excluded.created_at, expires_at = excluded.expires_at \
     WHERE response_owners.expires_at <= excluded.created_at";

/// The statement storing `claims` (each id once; see [`claims`]), for either backend: the caller
/// runs it in the transaction that stores their events.
pub fn insert_claims<'a, DB>(claims: &'a [Owner]) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    DB::Arguments<'a>: Default,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut qb = sqlx::QueryBuilder::new(CLAIM_INSERT);
    qb.push_values(claims, |mut b, c| {
        b.push_bind(c.response_id.clone())
            .push_bind(c.owner_user_id)
            .push_bind(c.owner_service_account_id)
            .push_bind(c.token_id)
            .push_bind(c.model.clone())
            .push_bind(c.created_at)
            .push_bind(c.expires_at);
    });
    qb.push(CLAIM_CONFLICT);
    qb
}

/// Stores `claims` on PostgreSQL as whole columns (`UNNEST`), like the events they come with.
pub async fn claim_pg(conn: &mut sqlx::PgConnection, claims: &[Owner]) -> Result<(), sqlx::Error> {
    if claims.is_empty() {
        return Ok(());
    }
    let ints = |f: &dyn Fn(&Owner) -> i64| claims.iter().map(f).collect::<Vec<_>>();
    sqlx::query(&format!(
        "{CLAIM_INSERT}SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::text[], \
         $6::int8[], $7::int8[]){CLAIM_CONFLICT}"
    ))
    .bind(claims.iter().map(|c| c.response_id.clone()).collect::<Vec<_>>())
    .bind(ints(&|c| c.owner_user_id))
    .bind(claims.iter().map(|c| c.owner_service_account_id).collect::<Vec<_>>())
    .bind(ints(&|c| c.token_id))
    .bind(claims.iter().map(|c| c.model.clone()).collect::<Vec<_>>())
    .bind(ints(&|c| c.created_at))
    .bind(ints(&|c| c.expires_at))
    .execute(conn)
    .await?;
    Ok(())
}

/// The live (unexpired at `now`) record of `id`, whoever owns it.
pub async fn find(db: &Db, id: &str, now: i64) -> Result<Option<Owner>, sqlx::Error> {
    with_pool!(db, p => sqlx::query_as::<_, Owner>(
        "SELECT response_id, owner_user_id, owner_service_account_id, token_id, model, created_at, expires_at \
         FROM response_owners WHERE response_id = $1 AND expires_at > $2",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(p)
    .await)
}

/// Forgets `id` (the response was deleted); whether there was a record.
pub async fn delete(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    with_pool!(db, p => {
        let done = sqlx::query("DELETE FROM response_owners WHERE response_id = $1").bind(id).execute(p).await?;
        Ok(done.rows_affected() > 0)
    })
}

/// Deletes the records expired at `now`; returns how many.
pub async fn purge_expired(db: &Db, now: i64) -> Result<u64, sqlx::Error> {
    with_pool!(db, p => {
        let done = sqlx::query("DELETE FROM response_owners WHERE expires_at <= $1").bind(now).execute(p).await?;
        Ok(done.rows_affected())
    })
}

/// Runs [`purge_expired`] now and then every `every`; forever. Expired records already count for
/// nothing; this only keeps the table from growing.
pub async fn run_expiry(db: Db, every: Duration) {
    loop {
        match purge_expired(&db, chrono::Utc::now().timestamp()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired Responses API owner records deleted"),
            Err(e) => tracing::warn!(error = %e, "deleting expired Responses API owner records failed; retrying later"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing;

    fn who(user_id: i64, service_account_id: Option<i64>) -> Identity {
        Identity { token_id: 1, user_id, service_account_id, ..Default::default() }
    }

    fn owner(id: &str, user: i64, sa: Option<i64>, expires_at: i64) -> Owner {
        Owner {
            response_id: id.into(),
            owner_user_id: user,
            owner_service_account_id: sa,
            token_id: 9,
            model: "gpt-4o".into(),
            created_at: 100,
            expires_at,
        }
    }

    /// Stores `claims` the way ingestion does on `db`'s backend, in a transaction.
    async fn claim(db: &Db, claims: &[Owner]) {
        match db {
            Db::Postgres(p) => {
                let mut tx = p.begin().await.unwrap();
                claim_pg(&mut tx, claims).await.unwrap();
                tx.commit().await.unwrap();
            }
            Db::Sqlite(p) => {
                let mut tx = p.begin().await.unwrap();
                insert_claims(claims).build().execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            }
        }
    }

    #[test]
    fn a_service_accounts_responses_are_the_accounts_a_users_the_users() {
        let personal = owner("resp_a", 3, None, 0);
        assert!(personal.owned_by(&who(3, None)), "the user's personal keys");
        assert!(!personal.owned_by(&who(4, None)), "another user");
        assert!(!personal.owned_by(&who(3, Some(7))), "not the user's service account");
        let account = owner("resp_b", 3, Some(7), 0);
        assert!(account.owned_by(&who(3, Some(7))), "the account");
        assert!(account.owned_by(&who(5, Some(7))), "the account after a transfer to another owner");
        assert!(!account.owned_by(&who(3, None)), "not its owner's personal keys");
        assert!(!account.owned_by(&who(3, Some(8))), "not another account of the same owner");
    }

    #[test]
    fn claims_come_from_successful_creates_with_a_valid_id() {
        let ok = UsageEvent {
            request_id: "r1".into(),
            at_ms: 5_500,
            token_id: Some(9),
            user_id: Some(3),
            service_account_id: Some(7),
            model: Some("gpt-4o".into()),
            status: 200,
            response_id: Some("resp_1".into()),
            ..Default::default()
        };
        let events = [
            ok.clone(),
            UsageEvent { request_id: "r2".into(), ..ok.clone() }, // the same id again: first one wins
            UsageEvent { request_id: "r3".into(), status: 500, response_id: Some("resp_3".into()), ..ok.clone() },
            UsageEvent { request_id: "r4".into(), response_id: Some("../etc".into()), ..ok.clone() },
            UsageEvent { request_id: "r5".into(), response_id: None, ..ok.clone() },
            UsageEvent { request_id: "r6".into(), token_id: None, response_id: Some("resp_6".into()), ..ok.clone() },
            UsageEvent { request_id: "r7".into(), model: None, response_id: Some("resp_7".into()), ..ok.clone() },
        ];
        let refs: Vec<&UsageEvent> = events.iter().collect();
        let c = claims(&refs, 1_000, 60);
        assert_eq!(c, [Owner { created_at: 5, expires_at: 1_060, ..owner("resp_1", 3, Some(7), 0) }]);
    }

    #[tokio::test]
    async fn records_round_trip_expire_and_keep_their_first_owner() {
        for t in testing::all().await {
            let db = &t.db;
            let now = 1_000;
            claim(db, &[owner("resp_a", 3, None, now + 60), owner("resp_b", 4, Some(7), now + 60)]).await;
            assert_eq!(find(db, "resp_a", now).await.unwrap(), Some(owner("resp_a", 3, None, now + 60)));
            assert_eq!(find(db, "resp_b", now).await.unwrap().map(|o| o.owner_service_account_id), Some(Some(7)));
            assert_eq!(find(db, "resp_c", now).await.unwrap(), None);
            // A second claim on a live record changes nothing.
            claim(db, &[Owner { created_at: now, ..owner("resp_a", 5, None, now + 90) }]).await;
            assert_eq!(find(db, "resp_a", now).await.unwrap().map(|o| o.owner_user_id), Some(3), "{}", db.backend());
            // Past its expiry a record counts for nothing, and a new claim replaces it.
            assert_eq!(find(db, "resp_a", now + 60).await.unwrap(), None, "expired");
            claim(db, &[Owner { created_at: now + 61, ..owner("resp_a", 5, None, now + 200) }]).await;
            assert_eq!(find(db, "resp_a", now + 61).await.unwrap().map(|o| o.owner_user_id), Some(5));
            // Expired records are purged; live ones stay.
            assert_eq!(purge_expired(db, now + 100).await.unwrap(), 1, "resp_b");
            assert_eq!(find(db, "resp_b", now).await.unwrap(), None);
            assert!(find(db, "resp_a", now + 100).await.unwrap().is_some());
            assert!(delete(db, "resp_a").await.unwrap());
            assert!(!delete(db, "resp_a").await.unwrap());
            assert_eq!(find(db, "resp_a", now + 100).await.unwrap(), None);
        }
    }
}
