//! Storing event batches: parse, insert each request id once, roll up what was new.

use crate::db::Db;
use crate::with_pool;
use aqueduct_policy::ledger::{Outcome, UsageEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Rollup granularities and their widths in milliseconds.
pub const BUCKETS: [(&str, i64); 3] = [("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000)];

/// Rows per insert statement (27 columns; well under both backends' parameter limits).
const ROWS_PER_STATEMENT: usize = 500;

/// A parsed batch.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Valid events.
    pub events: Vec<UsageEvent>,
    /// Lines that were not events (skipped: retrying would not make them valid).
    pub invalid: usize,
}

/// Parses newline-delimited JSON events.
pub fn parse(body: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    for line in body.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<UsageEvent>(line) {
            Ok(e) if !e.request_id.is_empty() && e.request_id.len() <= 128 => out.events.push(e),
            _ => out.invalid += 1,
        }
    }
    out
}

/// What a store call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Events new to the ledger.
    pub inserted: usize,
    /// Events already stored (a resent batch).
    pub duplicates: usize,
}

/// One rollup group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    bucket: &'static str,
    start_ms: i64,
    org_id: i64,
    team_id: i64,
    user_id: i64,
    service_account_id: i64,
    token_id: i64,
    model: String,
    end_user: String,
    status: i32,
}

#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    requests: i64,
    input: i64,
    output: i64,
    cached: i64,
    reasoning: i64,
    latency: i64,
}

fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn id(v: Option<u64>) -> Option<i64> {
    v.map(n)
}

fn outcome(e: &UsageEvent) -> &'static str {
    e.outcome.unwrap_or(Outcome::ClientClosed).as_str()
}

/// Rollup increments for `events`, sorted so concurrent writers lock rows in one order.
fn rollups(events: &[&UsageEvent]) -> BTreeMap<GroupKey, Sums> {
    let mut out: BTreeMap<GroupKey, Sums> = BTreeMap::new();
    for e in events {
        for (bucket, width) in BUCKETS {
            let key = GroupKey {
                bucket,
                start_ms: e.at_ms.div_euclid(width) * width,
                org_id: id(e.org_id).unwrap_or(0),
                team_id: id(e.team_id).unwrap_or(0),
                user_id: id(e.user_id).unwrap_or(0),
                service_account_id: id(e.service_account_id).unwrap_or(0),
                token_id: id(e.token_id).unwrap_or(0),
                model: e.model.clone().unwrap_or_default(),
                end_user: e.end_user.clone().unwrap_or_default(),
                status: i32::from(e.status),
            };
            let s = out.entry(key).or_default();
            s.requests += 1;
            s.input += n(e.input_tokens);
            s.output += n(e.output_tokens);
            s.cached += n(e.cached_tokens);
            s.reasoning += n(e.reasoning_tokens);
            s.latency += n(e.latency_ms);
        }
    }
    out
}

/// Stores `events` in one transaction: each request id once, rollups for the new ones, and the
/// keys' `last_used_at`.
pub async fn store(db: &Db, events: &[UsageEvent], received_at_ms: i64) -> Result<Stored, sqlx::Error> {
    if events.is_empty() {
        return Ok(Stored::default());
    }
    match db {
        Db::Postgres(p) => store_pg(p, events, received_at_ms).await,
        Db::Sqlite(_) => store_rows(db, events, received_at_ms).await,
    }
}

/// The events of `events` whose ids are in `inserted`, each id once.
fn fresh<'a>(events: &'a [UsageEvent], inserted: &BTreeSet<String>) -> Vec<&'a UsageEvent> {
    let mut seen = BTreeSet::new();
    events.iter().filter(|e| inserted.contains(&e.request_id) && seen.insert(e.request_id.as_str())).collect()
}

/// Each key's latest use among `events`, in seconds like the rest of the tokens table.
fn last_used(events: &[&UsageEvent]) -> BTreeMap<i64, i64> {
    let mut out: BTreeMap<i64, i64> = BTreeMap::new();
    for e in events {
        if let Some(t) = id(e.token_id) {
            let at = e.at_ms.div_euclid(1000);
            let v = out.entry(t).or_insert(at);
            *v = (*v).max(at);
        }
    }
    out
}

const ROLLUP_CONFLICT: &str =
    " ON CONFLICT (bucket, start_ms, org_id, team_id, user_id, service_account_id, token_id, \
     model, end_user, status) DO UPDATE SET requests = usage_rollups.requests + excluded.requests, \
     input_tokens = usage_rollups.input_tokens + excluded.input_tokens, \
     output_tokens = usage_rollups.output_tokens + excluded.output_tokens, \
     cached_tokens = usage_rollups.cached_tokens + excluded.cached_tokens, \
     reasoning_tokens = usage_rollups.reasoning_tokens + excluded.reasoning_tokens, \
     latency_ms_sum = usage_rollups.latency_ms_sum + excluded.latency_ms_sum";

/// PostgreSQL: whole columns as arrays (`UNNEST`), so a statement's size and parse cost do not
/// grow with the batch.
async fn store_pg(p: &sqlx::PgPool, events: &[UsageEvent], received_at_ms: i64) -> Result<Stored, sqlx::Error> {
    let mut tx = p.begin().await?;
    let col = |f: &dyn Fn(&UsageEvent) -> Option<i64>| events.iter().map(f).collect::<Vec<_>>();
    let text = |f: &dyn Fn(&UsageEvent) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO usage_events (request_id, at_ms, token_id, user_id, service_account_id, team_id, org_id, \
         end_user, model, path, method, status, outcome, input_tokens, output_tokens, cached_tokens, \
         reasoning_tokens, estimated, latency_ms, ttfb_ms, streamed, client_ip, user_agent, mcp_server, \
         mcp_method, mcp_tool, received_at_ms) \
         SELECT *, $27::int8 FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], \
         $7::int8[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int4[], $13::text[], $14::int8[], \
         $15::int8[], $16::int8[], $17::int8[], $18::bool[], $19::int8[], $20::int8[], $21::bool[], $22::text[], \
         $23::text[], $24::text[], $25::text[], $26::text[]) ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
    )
    .bind(events.iter().map(|e| e.request_id.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.at_ms).collect::<Vec<_>>())
    .bind(col(&|e| id(e.token_id)))
    .bind(col(&|e| id(e.user_id)))
    .bind(col(&|e| id(e.service_account_id)))
    .bind(col(&|e| id(e.team_id)))
    .bind(col(&|e| id(e.org_id)))
    .bind(text(&|e| e.end_user.clone()))
    .bind(text(&|e| e.model.clone()))
    .bind(events.iter().map(|e| e.path.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.method.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| i32::from(e.status)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| outcome(e).to_string()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| n(e.input_tokens)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| n(e.output_tokens)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| n(e.cached_tokens)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| n(e.reasoning_tokens)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.estimated).collect::<Vec<_>>())
    .bind(events.iter().map(|e| n(e.latency_ms)).collect::<Vec<_>>())
    .bind(col(&|e| e.ttfb_ms.map(n)))
    .bind(events.iter().map(|e| e.streamed).collect::<Vec<_>>())
    .bind(text(&|e| e.client_ip.clone()))
    .bind(text(&|e| e.user_agent.clone()))
    .bind(text(&|e| e.mcp_server.clone()))
    .bind(text(&|e| e.mcp_method.clone()))
    .bind(text(&|e| e.mcp_tool.clone()))
    .bind(received_at_ms)
    .fetch_all(&mut *tx)
    .await?;
    let inserted: BTreeSet<String> = inserted.into_iter().collect();
    let new = fresh(events, &inserted);
    let groups: Vec<(GroupKey, Sums)> = rollups(&new).into_iter().collect();
    if !groups.is_empty() {
        // Staged, not upserted: `fold` moves them into the rollups in bulk.
        let g = |f: &dyn Fn(&(GroupKey, Sums)) -> i64| groups.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO usage_rollups_pending (bucket, start_ms, org_id, team_id, user_id, service_account_id, \
             token_id, model, end_user, status, requests, input_tokens, output_tokens, cached_tokens, \
             reasoning_tokens, latency_ms_sum) SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], \
             $5::int8[], $6::int8[], $7::int8[], $8::text[], $9::text[], $10::int4[], $11::int8[], $12::int8[], \
             $13::int8[], $14::int8[], $15::int8[], $16::int8[])",
        )
        .bind(groups.iter().map(|(k, _)| k.bucket.to_string()).collect::<Vec<_>>())
        .bind(g(&|(k, _)| k.start_ms))
        .bind(g(&|(k, _)| k.org_id))
        .bind(g(&|(k, _)| k.team_id))
        .bind(g(&|(k, _)| k.user_id))
        .bind(g(&|(k, _)| k.service_account_id))
        .bind(g(&|(k, _)| k.token_id))
        .bind(groups.iter().map(|(k, _)| k.model.clone()).collect::<Vec<_>>())
        .bind(groups.iter().map(|(k, _)| k.end_user.clone()).collect::<Vec<_>>())
        .bind(groups.iter().map(|(k, _)| k.status).collect::<Vec<_>>())
        .bind(g(&|(_, s)| s.requests))
        .bind(g(&|(_, s)| s.input))
        .bind(g(&|(_, s)| s.output))
        .bind(g(&|(_, s)| s.cached))
        .bind(g(&|(_, s)| s.reasoning))
        .bind(g(&|(_, s)| s.latency))
        .execute(&mut *tx)
        .await?;
    }
    let used = last_used(&new);
    if !used.is_empty() {
        sqlx::query(
            "UPDATE tokens t SET last_used_at = u.at FROM UNNEST($1::int8[], $2::int8[]) AS u(id, at) \
             WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)",
        )
        .bind(used.keys().copied().collect::<Vec<_>>())
        .bind(used.values().copied().collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if !groups.is_empty() {
        STAGED.store(true, Ordering::Release);
    }
    Ok(Stored { inserted: new.len(), duplicates: events.len() - new.len() })
}

/// This process staged rollup increments since its last fold.
static STAGED: AtomicBool = AtomicBool::new(false);

/// Advisory lock held by a fold, so folds (of every replica) run one at a time: two folds
/// updating the same rollup rows in different orders could deadlock.
const FOLD_LOCK: i64 = 0x4171_7565_6475_6374; // "Aqueduct"

/// Moves every staged rollup increment into `usage_rollups`, summed per group first; returns
/// the rollup rows written. The usage queries fold first, so what was stored is always what is
/// read. SQLite writes its rollups as it stores (one writer at a time; nothing is staged): a
/// no-op there.
///
/// Batches never wait for a fold: the fold deletes the rows it read (`DELETE … RETURNING`), and
/// rows staged meanwhile stay for the next one. Deleted rows would stay in the table's pages
/// until autovacuum came by (a minute apart by default), and every fold in between, a read's
/// too, would scan them again (measured: a read after 600,000 staged rows took 90 ms instead of
/// 1), so a fold that moved rows vacuums the table after it commits.
pub async fn fold(db: &Db) -> Result<u64, sqlx::Error> {
    let Db::Postgres(p) = db else { return Ok(0) };
    // Every usage query folds first, most often with nothing staged: one look, instead of a
    // transaction and the lock. What a batch staged and committed before is seen here.
    let staged: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM usage_rollups_pending)").fetch_one(p).await?;
    if !staged {
        return Ok(0);
    }
    let mut tx = p.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(FOLD_LOCK).execute(&mut *tx).await?;
    const DIMS: &str =
        "bucket, start_ms, org_id, team_id, user_id, service_account_id, token_id, model, end_user, status";
    let done = sqlx::query(&format!(
        "WITH moved AS (DELETE FROM usage_rollups_pending RETURNING *) \
         INSERT INTO usage_rollups ({DIMS}, requests, input_tokens, output_tokens, cached_tokens, \
         reasoning_tokens, latency_ms_sum) SELECT {DIMS}, SUM(requests)::int8, SUM(input_tokens)::int8, \
         SUM(output_tokens)::int8, SUM(cached_tokens)::int8, SUM(reasoning_tokens)::int8, \
         SUM(latency_ms_sum)::int8 FROM moved GROUP BY {DIMS}{ROLLUP_CONFLICT}"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let moved = done.rows_affected();
    if moved > 0 {
        // Outside the transaction (VACUUM cannot run in one). Failing it loses nothing.
        if let Err(e) = sqlx::query("VACUUM usage_rollups_pending").execute(p).await {
            tracing::debug!(error = %e, "vacuuming the staged rollups failed");
        }
    }
    Ok(moved)
}

/// How often [`run_folder`] folds after this process staged increments.
pub const FOLD_EVERY: Duration = Duration::from_millis(250);

/// Folds what this process staged every [`FOLD_EVERY`], and whatever is staged (by another
/// replica, or before a restart) every few seconds. Runs until the process ends.
pub async fn run_folder(db: Db) {
    let mut round: u32 = 0;
    loop {
        tokio::time::sleep(FOLD_EVERY).await;
        round = round.wrapping_add(1);
        if !(STAGED.swap(false, Ordering::AcqRel) || round.is_multiple_of(20)) {
            continue;
        }
        if let Err(e) = fold(&db).await {
            // Nothing is lost: the increments stay staged for the next fold.
            tracing::warn!(error = %e, "folding usage rollups failed; retrying");
            STAGED.store(true, Ordering::Release);
        }
    }
}

/// The portable path (SQLite): multi-row `VALUES`.
async fn store_rows(db: &Db, events: &[UsageEvent], received_at_ms: i64) -> Result<Stored, sqlx::Error> {
    with_pool!(db, p => {
        let mut tx = p.begin().await?;
        let mut inserted: BTreeSet<String> = BTreeSet::new();
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO usage_events (request_id, at_ms, token_id, user_id, service_account_id, team_id, \
                 org_id, end_user, model, path, method, status, outcome, input_tokens, output_tokens, \
                 cached_tokens, reasoning_tokens, estimated, latency_ms, ttfb_ms, streamed, client_ip, \
                 user_agent, mcp_server, mcp_method, mcp_tool, received_at_ms) ",
            );
            qb.push_values(chunk, |mut b, e| {
                b.push_bind(e.request_id.clone())
                    .push_bind(e.at_ms)
                    .push_bind(id(e.token_id))
                    .push_bind(id(e.user_id))
                    .push_bind(id(e.service_account_id))
                    .push_bind(id(e.team_id))
                    .push_bind(id(e.org_id))
                    .push_bind(e.end_user.clone())
                    .push_bind(e.model.clone())
                    .push_bind(e.path.clone())
                    .push_bind(e.method.clone())
                    .push_bind(i32::from(e.status))
                    .push_bind(outcome(e))
                    .push_bind(n(e.input_tokens))
                    .push_bind(n(e.output_tokens))
                    .push_bind(n(e.cached_tokens))
                    .push_bind(n(e.reasoning_tokens))
                    .push_bind(e.estimated)
                    .push_bind(n(e.latency_ms))
                    .push_bind(e.ttfb_ms.map(n))
                    .push_bind(e.streamed)
                    .push_bind(e.client_ip.clone())
                    .push_bind(e.user_agent.clone())
                    .push_bind(e.mcp_server.clone())
                    .push_bind(e.mcp_method.clone())
                    .push_bind(e.mcp_tool.clone())
                    .push_bind(received_at_ms);
            });
            qb.push(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
            let ids: Vec<String> = qb.build_query_scalar().fetch_all(&mut *tx).await?;
            inserted.extend(ids);
        }
        // A batch may repeat an id within itself: count each new id's first occurrence only.
        let new = fresh(events, &inserted);
        let groups: Vec<(GroupKey, Sums)> = rollups(&new).into_iter().collect();
        for chunk in groups.chunks(ROWS_PER_STATEMENT) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO usage_rollups (bucket, start_ms, org_id, team_id, user_id, service_account_id, \
                 token_id, model, end_user, status, requests, input_tokens, output_tokens, cached_tokens, \
                 reasoning_tokens, latency_ms_sum) ",
            );
            qb.push_values(chunk, |mut b, (k, s)| {
                b.push_bind(k.bucket)
                    .push_bind(k.start_ms)
                    .push_bind(k.org_id)
                    .push_bind(k.team_id)
                    .push_bind(k.user_id)
                    .push_bind(k.service_account_id)
                    .push_bind(k.token_id)
                    .push_bind(k.model.clone())
                    .push_bind(k.end_user.clone())
                    .push_bind(k.status)
                    .push_bind(s.requests)
                    .push_bind(s.input)
                    .push_bind(s.output)
                    .push_bind(s.cached)
                    .push_bind(s.reasoning)
                    .push_bind(s.latency);
            });
            qb.push(ROLLUP_CONFLICT);
            qb.build().execute(&mut *tx).await?;
        }
        for (token, at) in last_used(&new) {
            sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)")
                .bind(at)
                .bind(token)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Stored { inserted: new.len(), duplicates: events.len() - new.len() })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_counts_garbage() {
        let body = b"{\"request_id\":\"a\",\"at_ms\":1,\"path\":\"/v1/x\",\"method\":\"POST\",\"status\":200,\"outcome\":\"ok\"}\n\nnot json\n{\"request_id\":\"\",\"at_ms\":1,\"path\":\"p\",\"method\":\"m\",\"status\":1,\"outcome\":null}\n";
        let p = parse(body);
        assert_eq!((p.events.len(), p.invalid), (1, 2));
        assert_eq!(p.events[0].outcome, Some(Outcome::Ok));
    }

    #[test]
    fn rollups_group_by_bucket_and_dimensions() {
        let e = |at_ms, model: &str, out| UsageEvent {
            request_id: format!("{at_ms}"),
            at_ms,
            org_id: Some(3),
            model: Some(model.into()),
            status: 200,
            output_tokens: out,
            ..Default::default()
        };
        let events = [e(0, "a", 1), e(59_999, "a", 2), e(60_000, "a", 4), e(60_001, "b", 8)];
        let refs: Vec<&UsageEvent> = events.iter().collect();
        let r = rollups(&refs);
        let get = |bucket, start_ms, model: &str| {
            r.iter()
                .find(|(k, _)| k.bucket == bucket && k.start_ms == start_ms && k.model == model)
                .map(|(_, s)| (s.requests, s.output))
        };
        assert_eq!(get("minute", 0, "a"), Some((2, 3)));
        assert_eq!(get("minute", 60_000, "a"), Some((1, 4)));
        assert_eq!(get("hour", 0, "a"), Some((3, 7)));
        assert_eq!(get("day", 0, "b"), Some((1, 8)));
        assert_eq!(r.len(), 3 + 2 + 2);
    }
}
