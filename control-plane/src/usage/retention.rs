//! Retention: raw events and rollups older than the configured number of days are deleted by
//! a background job (at start, then hourly).

use crate::db::Db;
use crate::with_pool;
use std::time::Duration;

/// Deletes events and rollups that started before `now_ms - days`; returns the events deleted.
pub async fn purge(db: &Db, now_ms: i64, days: u32) -> Result<u64, sqlx::Error> {
    let cutoff = now_ms - i64::from(days) * 86_400_000;
    with_pool!(db, p => {
        let events = sqlx::query("DELETE FROM usage_events WHERE at_ms < $1").bind(cutoff).execute(p).await?;
        sqlx::query("DELETE FROM usage_rollups WHERE start_ms < $1").bind(cutoff).execute(p).await?;
        Ok(events.rows_affected())
    })
}

/// Runs [`purge`] now and then every `every`; forever.
pub async fn run(db: Db, days: u32, every: Duration) {
    loop {
        match purge(&db, chrono::Utc::now().timestamp_millis(), days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, days, "usage retention"),
            Err(e) => tracing::warn!(error = %e, "usage retention failed; retrying later"),
        }
        tokio::time::sleep(every).await;
    }
}
