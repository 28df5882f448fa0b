//! Reading the ledger: totals, time series and groups from the rollups (dashboards never scan
//! raw events), and the raw request log, both under the caller's scope.

use crate::db::Db;
use crate::tenancy::store::{fetch_all, Sql, Val};

/// Dimensions the usage API filters and groups by: (name, SQL type for an absent value).
pub const DIMENSIONS: [(&str, &str); 8] = [
    ("org_id", "BIGINT"),
    ("team_id", "BIGINT"),
    ("user_id", "BIGINT"),
    ("service_account_id", "BIGINT"),
    ("token_id", "BIGINT"),
    ("model", "TEXT"),
    ("end_user", "TEXT"),
    ("status", "INTEGER"),
];

/// What the caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything (admin).
    All,
    /// One org's traffic (org-admin).
    Org(i64),
    /// One service account's traffic (its own key reading its usage).
    ServiceAccount(i64),
    /// A user's own personal keys, and the service accounts of their teams.
    Own {
        /// The user.
        user_id: i64,
        /// Their teams.
        teams: Vec<i64>,
    },
}

/// Filters shared by both endpoints. Ids and statuses are exact matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// From (inclusive), unix ms.
    pub from_ms: i64,
    /// To (exclusive), unix ms.
    pub to_ms: i64,
    /// Exact matches on dimensions: (dimension, value).
    pub ids: Vec<(&'static str, i64)>,
    /// Exact matches on text dimensions.
    pub texts: Vec<(&'static str, String)>,
}

/// Sums over a set of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Totals {
    /// Requests.
    pub requests: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Requests answered with a status of 400 or more.
    pub errors: i64,
}

/// One bucket of a series.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Point {
    /// Bucket start, unix ms.
    pub start_ms: i64,
    /// Sums.
    #[sqlx(flatten)]
    pub totals: Totals,
}

/// One group: its dimension values (absent where not grouped, or where "none").
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Group {
    /// Org.
    pub org_id: Option<i64>,
    /// Team.
    pub team_id: Option<i64>,
    /// User.
    pub user_id: Option<i64>,
    /// Service account.
    pub service_account_id: Option<i64>,
    /// Key.
    pub token_id: Option<i64>,
    /// Model.
    pub model: Option<String>,
    /// End user.
    pub end_user: Option<String>,
    /// Status.
    pub status: Option<i32>,
    /// Sums.
    #[sqlx(flatten)]
    pub totals: Totals,
}

const SUMS: &str = "CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS requests, \
     CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
     CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
     CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN requests ELSE 0 END), 0) AS BIGINT) AS errors";

/// Appends the scope and filters as `AND …` conditions. `rollup` selects the rollups' "none"
/// encoding (0) over the events' NULL.
fn conditions(sql: &mut Sql, scope: &Scope, f: &Filters, rollup: bool) {
    let (no_sa, some_sa) = if rollup {
        ("service_account_id = 0", "service_account_id <> 0")
    } else {
        ("service_account_id IS NULL", "service_account_id IS NOT NULL")
    };
    match scope {
        Scope::All => {}
        Scope::Org(o) => {
            sql.push(" AND org_id = ").id(*o);
        }
        Scope::ServiceAccount(sa) => {
            sql.push(" AND service_account_id = ").id(*sa);
        }
        Scope::Own { user_id, teams } => {
            sql.push(&format!(" AND (({no_sa} AND user_id = ")).id(*user_id).push(")");
            if !teams.is_empty() {
                sql.push(&format!(" OR ({some_sa} AND team_id IN ("));
                for (i, t) in teams.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.id(*t);
                }
                sql.push("))");
            }
            sql.push(")");
        }
    }
    for (dim, v) in &f.ids {
        sql.push(&format!(" AND {dim} = ")).id(*v);
    }
    for (dim, v) in &f.texts {
        sql.push(&format!(" AND {dim} = ")).arg(Val::Text(v.clone()));
    }
}

fn rollup_base(select: &str, bucket: &str, width_ms: i64, scope: &Scope, f: &Filters) -> Sql {
    let mut sql = Sql::new(format!("SELECT {select} FROM usage_rollups WHERE bucket = "));
    sql.arg(Val::Text(bucket.to_string()));
    // Buckets that overlap [from, to).
    sql.push(" AND start_ms >= ").arg(Val::Int(Some(f.from_ms.div_euclid(width_ms) * width_ms)));
    sql.push(" AND start_ms < ").arg(Val::Int(Some(f.to_ms)));
    conditions(&mut sql, scope, f, true);
    sql
}

/// Totals over the range.
pub async fn totals(db: &Db, bucket: &str, width_ms: i64, scope: &Scope, f: &Filters) -> Result<Totals, sqlx::Error> {
    super::ingest::fold(db).await?;
    let sql = rollup_base(SUMS, bucket, width_ms, scope, f);
    Ok(fetch_all::<Totals>(db, &sql).await?.into_iter().next().unwrap_or_default())
}

/// One point per bucket in the range, empty buckets included (at most `max_points`).
pub async fn series(
    db: &Db,
    bucket: &str,
    width_ms: i64,
    scope: &Scope,
    f: &Filters,
    max_points: usize,
) -> Result<Vec<Point>, sqlx::Error> {
    super::ingest::fold(db).await?;
    let mut sql = rollup_base(&format!("start_ms, {SUMS}"), bucket, width_ms, scope, f);
    sql.push(" GROUP BY start_ms ORDER BY start_ms");
    let rows = fetch_all::<Point>(db, &sql).await?;
    let first = f.from_ms.div_euclid(width_ms) * width_ms;
    let mut out = Vec::new();
    let mut rows = rows.into_iter().peekable();
    let mut t = first;
    while t < f.to_ms && out.len() < max_points {
        match rows.peek() {
            Some(p) if p.start_ms == t => out.extend(rows.next()),
            _ => out.push(Point { start_ms: t, totals: Totals::default() }),
        }
        t += width_ms;
    }
    Ok(out)
}

/// Sums grouped by `dims` (names from [`DIMENSIONS`]), largest request count first.
pub async fn groups(
    db: &Db,
    bucket: &str,
    width_ms: i64,
    scope: &Scope,
    f: &Filters,
    dims: &[&str],
    limit: i64,
) -> Result<Vec<Group>, sqlx::Error> {
    super::ingest::fold(db).await?;
    let cols: Vec<String> = DIMENSIONS
        .iter()
        .map(|(d, ty)| if dims.contains(d) { (*d).to_string() } else { format!("CAST(NULL AS {ty}) AS {d}") })
        .collect();
    let mut sql = rollup_base(&format!("{}, {SUMS}", cols.join(", ")), bucket, width_ms, scope, f);
    if !dims.is_empty() {
        sql.push(&format!(" GROUP BY {}", dims.join(", ")));
    }
    sql.push(" ORDER BY requests DESC LIMIT ").arg(Val::Int(Some(limit)));
    let mut rows = fetch_all::<Group>(db, &sql).await?;
    // The rollups' "none" (0, '') reads as absent.
    for g in &mut rows {
        for v in [&mut g.org_id, &mut g.team_id, &mut g.user_id, &mut g.service_account_id, &mut g.token_id] {
            if *v == Some(0) {
                *v = None;
            }
        }
        for v in [&mut g.model, &mut g.end_user] {
            if v.as_deref() == Some("") {
                *v = None;
            }
        }
    }
    Ok(rows)
}

/// One stored request.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct RequestRow {
    pub request_id: String,
    pub at_ms: i64,
    pub token_id: Option<i64>,
    pub user_id: Option<i64>,
    pub service_account_id: Option<i64>,
    pub team_id: Option<i64>,
    pub org_id: Option<i64>,
    pub end_user: Option<String>,
    pub model: Option<String>,
    pub path: String,
    pub method: String,
    pub status: i32,
    pub outcome: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub estimated: bool,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    pub streamed: bool,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub mcp_server: Option<String>,
    pub mcp_method: Option<String>,
    pub mcp_tool: Option<String>,
    pub response_id: Option<String>,
}

/// A position in the request log (newest first): the last row's time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Time of the last row seen.
    pub at_ms: i64,
    /// Its request id.
    pub request_id: String,
}

impl Cursor {
    /// `1700000000000.abcd…`
    pub fn encode(&self) -> String {
        format!("{}.{}", self.at_ms, self.request_id)
    }

    /// Parses [`Cursor::encode`].
    pub fn decode(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('.')?;
        Some(Self { at_ms: ms.parse().ok()?, request_id: id.to_string() }).filter(|c| !c.request_id.is_empty())
    }
}

/// Up to `limit` requests in the range, newest first, after `after`.
pub async fn requests(
    db: &Db,
    scope: &Scope,
    f: &Filters,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<RequestRow>, sqlx::Error> {
    let mut sql = Sql::new(
        "SELECT request_id, at_ms, token_id, user_id, service_account_id, team_id, org_id, end_user, model, path, \
         method, status, outcome, input_tokens, output_tokens, cached_tokens, reasoning_tokens, estimated, \
         latency_ms, ttfb_ms, streamed, client_ip, user_agent, mcp_server, mcp_method, mcp_tool, response_id \
         FROM usage_events WHERE at_ms >= ",
    );
    sql.arg(Val::Int(Some(f.from_ms))).push(" AND at_ms < ").arg(Val::Int(Some(f.to_ms)));
    conditions(&mut sql, scope, f, false);
    if let Some(c) = after {
        sql.push(" AND (at_ms < ").arg(Val::Int(Some(c.at_ms)));
        sql.push(" OR (at_ms = ").arg(Val::Int(Some(c.at_ms)));
        sql.push(" AND request_id < ").arg(Val::Text(c.request_id.clone())).push("))");
    }
    sql.push(" ORDER BY at_ms DESC, request_id DESC LIMIT ").arg(Val::Int(Some(limit)));
    fetch_all::<RequestRow>(db, &sql).await
}
