//! Storing event batches: parse, insert each request id once, roll up what was new.
//!
//! Refusals of requests that carried no known key (anonymous 4xx: a missing or unknown key)
//! cost an attacker nothing to make, so they are not all kept as rows: each is counted in the
//! rollups (per minute, hour and day, without its end user) and in the metrics, and only a
//! sample becomes a ledger row — at most one per client address per minute, and at most
//! [`ANONYMOUS_ROWS_PER_MINUTE`] per minute in all (per control plane).
//!
//! The event of a successful Responses API create carries the new response's id: its owner
//! record ([`crate::responses::store`]) is written in the same transaction, and lookups waiting
//! for it are woken once it is committed ([`crate::responses::pending`]).

use crate::db::Db;
use crate::with_pool;
use aqueduct_policy::ledger::{Outcome, UsageEvent};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Most anonymous refusals kept as ledger rows per minute, over every client address.
pub const ANONYMOUS_ROWS_PER_MINUTE: usize = 60;
/// Ids of anonymous refusals counted without a row that are remembered, so that a batch the
/// filter sends again (its acknowledgement was lost) does not count them twice.
const REMEMBERED_IDS: usize = 100_000;

/// Whether `e` is a refusal of a request without a known key: a 4xx with no key id.
pub fn is_anonymous_refusal(e: &UsageEvent) -> bool {
    e.token_id.is_none() && (400..500).contains(&e.status)
}

/// Which anonymous refusals got a row, and which were counted without one.
#[derive(Debug, Default)]
struct Sampler {
    /// (minute, client address) pairs that have their row.
    kept: HashSet<(i64, String)>,
    /// Rows kept per minute.
    per_minute: HashMap<i64, usize>,
    /// Ids of anonymous refusals already counted (with or without a row), oldest first (and
    /// as a set).
    counted: VecDeque<String>,
    counted_set: HashSet<String>,
}

/// What to do with one batch: rows to insert and anonymous refusals counted only in the
/// rollups. Applied to the [`Sampler`] only once the batch is stored.
#[derive(Debug, Default)]
struct Plan {
    /// Indices of the events stored as rows (all of them in a batch without anonymous
    /// refusals: `None`).
    rows: Option<Vec<usize>>,
    /// Indices of the anonymous refusals counted without a row (ids new to this process).
    counted: Vec<usize>,
    /// (minute, client address) pairs that get their row with this batch.
    kept: Vec<(i64, String)>,
}

static SAMPLER: Mutex<Option<Sampler>> = Mutex::new(None);

fn minute(at_ms: i64) -> i64 {
    at_ms.div_euclid(60_000)
}

impl Sampler {
    fn plan(&self, events: &[UsageEvent]) -> Plan {
        if !events.iter().any(is_anonymous_refusal) {
            return Plan::default();
        }
        let mut plan = Plan { rows: Some(Vec::with_capacity(events.len())), ..Default::default() };
        let mut per_minute: HashMap<i64, usize> = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for (i, e) in events.iter().enumerate() {
            if !is_anonymous_refusal(e) {
                plan.rows.get_or_insert_default().push(i);
                continue;
            }
            if self.counted_set.contains(&e.request_id) || !seen.insert(e.request_id.as_str()) {
                continue; // counted before: a duplicate
            }
            let m = minute(e.at_ms);
            let key = (m, e.client_ip.clone().unwrap_or_default());
            let taken = self.per_minute.get(&m).copied().unwrap_or(0) + per_minute.get(&m).copied().unwrap_or(0);
            if !self.kept.contains(&key) && !plan.kept.contains(&key) && taken < ANONYMOUS_ROWS_PER_MINUTE {
                *per_minute.entry(m).or_default() += 1;
                plan.kept.push(key);
                plan.rows.get_or_insert_default().push(i);
            } else {
                plan.counted.push(i);
            }
        }
        plan
    }

    fn apply(&mut self, plan: &Plan, events: &[UsageEvent], now_ms: i64) {
        for key in &plan.kept {
            *self.per_minute.entry(key.0).or_default() += 1;
            self.kept.insert(key.clone());
        }
        // Sampled rows are remembered as well: a resent batch must not count them again.
        let sampled = plan.rows.iter().flatten().filter(|&&i| is_anonymous_refusal(&events[i]));
        for &i in plan.counted.iter().chain(sampled) {
            let id = events[i].request_id.clone();
            if self.counted_set.insert(id.clone()) {
                self.counted.push_back(id);
            }
        }
        while self.counted.len() > REMEMBERED_IDS {
            if let Some(old) = self.counted.pop_front() {
                self.counted_set.remove(&old);
            }
        }
        // Events arrive within minutes of their request (longer only after an outage, when
        // a few more rows are harmless): forget minutes long past.
        let horizon = minute(now_ms) - 10;
        self.kept.retain(|(m, _)| *m >= horizon);
        self.per_minute.retain(|m, _| *m >= horizon);
    }
}

/// Rollup granularities and their widths in milliseconds.
pub const BUCKETS: [(&str, i64); 3] = [("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000)];

/// Rows per insert statement (28 columns; well under both backends' parameter limits).
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

/// The event's response id as the ledger keeps it: only a well-formed one (the provider chose
/// it; an odd value is not worth a row's space).
fn response_id(e: &UsageEvent) -> Option<String> {
    e.response_id.clone().filter(|id| aqueduct_policy::responses::valid_id(id))
}

/// The owner records `new` events make (see [`crate::responses::store::claims`]).
fn claims(new: &[&UsageEvent], received_at_ms: i64) -> Vec<crate::responses::store::Owner> {
    crate::responses::store::claims(new, received_at_ms.div_euclid(1000), crate::responses::store::ttl_secs())
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
                // An anonymous refusal's end user is whatever the caller wrote: not a dimension
                // worth a rollup row per value.
                end_user: if is_anonymous_refusal(e) { String::new() } else { e.end_user.clone().unwrap_or_default() },
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
///
/// Anonymous refusals are sampled (see the module's documentation): those without a row count
/// as inserted too, since they are new to the rollups.
pub async fn store(db: &Db, events: &[UsageEvent], received_at_ms: i64) -> Result<Stored, sqlx::Error> {
    if events.is_empty() {
        return Ok(Stored::default());
    }
    let plan = {
        let sampler = SAMPLER.lock().unwrap_or_else(|e| e.into_inner());
        sampler.as_ref().map_or_else(|| Sampler::default().plan(events), |s| s.plan(events))
    };
    let rows: Cow<'_, [UsageEvent]> = match &plan.rows {
        None => Cow::Borrowed(events),
        Some(rows) => Cow::Owned(rows.iter().map(|&i| events[i].clone()).collect()),
    };
    let counted: Vec<&UsageEvent> = plan.counted.iter().map(|&i| &events[i]).collect();
    let inserted = match db {
        Db::Postgres(p) => store_pg(p, &rows, &counted, received_at_ms).await?,
        Db::Sqlite(_) => store_rows(db, &rows, &counted, received_at_ms).await?,
    };
    if plan.rows.is_some() {
        let mut sampler = SAMPLER.lock().unwrap_or_else(|e| e.into_inner());
        sampler.get_or_insert_default().apply(&plan, events, received_at_ms);
    }
    Ok(Stored { inserted, duplicates: events.len() - inserted })
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

/// Stores `events` as rows and rolls up the new ones plus `counted`; returns how many were new.
/// PostgreSQL: whole columns as arrays (`UNNEST`), so a statement's size and parse cost do not
/// grow with the batch.
async fn store_pg(
    p: &sqlx::PgPool,
    events: &[UsageEvent],
    counted: &[&UsageEvent],
    received_at_ms: i64,
) -> Result<usize, sqlx::Error> {
    let mut tx = p.begin().await?;
    let col = |f: &dyn Fn(&UsageEvent) -> Option<i64>| events.iter().map(f).collect::<Vec<_>>();
    let text = |f: &dyn Fn(&UsageEvent) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO usage_events (request_id, at_ms, token_id, user_id, service_account_id, team_id, org_id, \
         end_user, model, path, method, status, outcome, input_tokens, output_tokens, cached_tokens, \
         reasoning_tokens, estimated, latency_ms, ttfb_ms, streamed, client_ip, user_agent, mcp_server, \
         mcp_method, mcp_tool, response_id, received_at_ms) \
         SELECT *, $28::int8 FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], \
         $7::int8[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int4[], $13::text[], $14::int8[], \
         $15::int8[], $16::int8[], $17::int8[], $18::bool[], $19::int8[], $20::int8[], $21::bool[], $22::text[], \
         $23::text[], $24::text[], $25::text[], $26::text[], $27::text[]) ON CONFLICT (request_id) DO NOTHING \
         RETURNING request_id",
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
    .bind(text(&response_id))
    .bind(received_at_ms)
    .fetch_all(&mut *tx)
    .await?;
    let inserted: BTreeSet<String> = inserted.into_iter().collect();
    let mut new = fresh(events, &inserted);
    new.extend_from_slice(counted);
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
    let claims = claims(&new, received_at_ms);
    crate::responses::store::claim_pg(&mut tx, &claims).await?;
    tx.commit().await?;
    if !groups.is_empty() {
        STAGED.store(true, Ordering::Release);
    }
    if !claims.is_empty() {
        crate::responses::pending::signal();
    }
    Ok(new.len())
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

/// The portable path (SQLite): multi-row `VALUES`; otherwise as [`store_pg`].
async fn store_rows(
    db: &Db,
    events: &[UsageEvent],
    counted: &[&UsageEvent],
    received_at_ms: i64,
) -> Result<usize, sqlx::Error> {
    with_pool!(db, p => {
        let mut tx = p.begin().await?;
        let mut inserted: BTreeSet<String> = BTreeSet::new();
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO usage_events (request_id, at_ms, token_id, user_id, service_account_id, team_id, \
                 org_id, end_user, model, path, method, status, outcome, input_tokens, output_tokens, \
                 cached_tokens, reasoning_tokens, estimated, latency_ms, ttfb_ms, streamed, client_ip, \
                 user_agent, mcp_server, mcp_method, mcp_tool, response_id, received_at_ms) ",
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
                    .push_bind(response_id(e))
                    .push_bind(received_at_ms);
            });
            qb.push(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
            let ids: Vec<String> = qb.build_query_scalar().fetch_all(&mut *tx).await?;
            inserted.extend(ids);
        }
        // A batch may repeat an id within itself: count each new id's first occurrence only.
        let mut new = fresh(events, &inserted);
        new.extend_from_slice(counted);
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
        let claims = claims(&new, received_at_ms);
        for chunk in claims.chunks(ROWS_PER_STATEMENT) {
            crate::responses::store::insert_claims(chunk).build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        if !claims.is_empty() {
            crate::responses::pending::signal();
        }
        Ok(new.len())
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

    fn anonymous(id: &str, at_ms: i64, ip: &str) -> UsageEvent {
        UsageEvent {
            request_id: id.into(),
            at_ms,
            status: 401,
            outcome: Some(Outcome::Unauthorized),
            client_ip: Some(ip.into()),
            end_user: Some(format!("chosen-by-caller-{id}")),
            ..Default::default()
        }
    }

    #[test]
    fn anonymous_refusals_get_one_row_per_address_and_minute() {
        let mut s = Sampler::default();
        let keyed = UsageEvent { request_id: "k".into(), token_id: Some(1), status: 401, ..Default::default() };
        let mut batch = vec![keyed];
        batch.extend((0..100).map(|i| anonymous(&format!("a{i}"), 1_000 + i, "1.1.1.1")));
        batch.push(anonymous("b", 2_000, "2.2.2.2"));
        batch.push(anonymous("next-minute", 61_000, "1.1.1.1"));
        batch.push(anonymous("a5", 1_005, "1.1.1.1")); // repeated within the batch
        let plan = s.plan(&batch);
        let rows: Vec<&str> = plan.rows.iter().flatten().map(|&i| batch[i].request_id.as_str()).collect();
        assert_eq!(rows, ["k", "a0", "b", "next-minute"], "keyed events always, one per address and minute");
        assert_eq!(plan.counted.len(), 99, "the rest are counted, each id once");
        s.apply(&plan, &batch, 61_000);
        // The same batch again (its acknowledgement was lost): nothing new is counted.
        let again = s.plan(&batch[1..]);
        assert!(again.counted.is_empty() && again.rows.as_ref().is_some_and(|r| r.is_empty()), "{again:?}");
        // A later request from the same address in the same minute: counted only.
        let later = s.plan(&[anonymous("late", 30_000, "1.1.1.1")]);
        assert_eq!((later.rows.map(|r| r.len()), later.counted.len()), (Some(0), 1));
        // Their rollups do not split by the end user the caller chose.
        let refs: Vec<&UsageEvent> = batch.iter().skip(1).take(100).collect();
        let r = rollups(&refs);
        assert_eq!(r.len(), 3, "one row per bucket: {r:?}");
        assert!(r.values().all(|s| s.requests == 100));
    }

    #[test]
    fn rows_per_minute_are_capped_over_all_addresses() {
        let s = Sampler::default();
        let batch: Vec<UsageEvent> =
            (0..1000).map(|i| anonymous(&format!("a{i}"), 1_000, &format!("10.0.{}.{}", i / 256, i % 256))).collect();
        let plan = s.plan(&batch);
        assert_eq!(plan.rows.map(|r| r.len()), Some(ANONYMOUS_ROWS_PER_MINUTE));
        assert_eq!(plan.counted.len(), 1000 - ANONYMOUS_ROWS_PER_MINUTE);
    }

    #[tokio::test]
    async fn a_create_with_a_response_id_records_its_owner() {
        for t in crate::db::testing::all().await {
            let db = &t.db;
            let create = UsageEvent {
                request_id: format!("create-{}", db.backend()),
                at_ms: 1_700_000_000_000,
                token_id: Some(11),
                user_id: Some(3),
                service_account_id: Some(7),
                model: Some("gpt-4o".into()),
                path: "/v1/responses".into(),
                method: "POST".into(),
                status: 200,
                outcome: Some(Outcome::Ok),
                response_id: Some("resp_abc123".into()),
                ..Default::default()
            };
            let failed = UsageEvent {
                request_id: format!("failed-{}", db.backend()),
                status: 500,
                response_id: Some("resp_failed".into()),
                ..create.clone()
            };
            let received_at_ms = 1_700_000_000_500;
            let stored = store(db, &[create.clone(), failed], received_at_ms).await.unwrap();
            assert_eq!(stored.inserted, 2);
            let now = received_at_ms / 1000;
            let owner = crate::responses::store::find(db, "resp_abc123", now).await.unwrap().unwrap();
            assert_eq!(
                (owner.owner_user_id, owner.owner_service_account_id, owner.token_id, owner.model.as_str()),
                (3, Some(7), 11, "gpt-4o")
            );
            assert_eq!(owner.expires_at, now + crate::responses::store::ttl_secs());
            assert_eq!(crate::responses::store::find(db, "resp_failed", now).await.unwrap(), None, "not a 2xx");
            // The ledger keeps the id with the request.
            let kept: Option<String> = with_pool!(db, p => sqlx::query_scalar(
                "SELECT response_id FROM usage_events WHERE request_id = $1",
            )
            .bind(&create.request_id)
            .fetch_one(p)
            .await
            .unwrap());
            assert_eq!(kept.as_deref(), Some("resp_abc123"));
            // A resent batch is a duplicate and changes nothing.
            assert_eq!(store(db, &[create], received_at_ms + 60_000).await.unwrap().duplicates, 1);
            let again = crate::responses::store::find(db, "resp_abc123", now).await.unwrap().unwrap();
            assert_eq!(again, owner);
        }
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
