//! `/api/v1/usage` and `/api/v1/usage/requests` (the usage API, scoped by role), and the
//! ingestion endpoint the filter delivers event batches to.

use super::auth::Authed;
use super::common::bad;
use super::error::Error;
use crate::gateway::Gateway;
use crate::tenancy::model::Role;
use crate::usage::ingest::{self, BUCKETS};
use crate::usage::query::{self, Cursor, Filters, Group, Point, RequestRow, Scope, Totals, DIMENSIONS};
use aqueduct_policy::ledger::SECRET_HEADER;
use aqueduct_policy::ApiError;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Most points in one series.
const MAX_POINTS: usize = 10_000;
/// Most groups answered.
const MAX_GROUPS: i64 = 1_000;

/// `POST /internal/v1/usage`: a batch of newline-delimited events from the filter. Only calls
/// carrying the deployment's secret are accepted (Envoy's public listener does not route here).
pub async fn ingest(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if gw.ledger.secret.is_empty() || !bool::from(given.ct_eq(gw.ledger.secret.as_bytes())) {
        return Error::from(ApiError::new(403, "Usage ingestion needs the gateway's secret.").code("forbidden"))
            .into_response();
    }
    let parsed = ingest::parse(&body);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let _turn = match gw.db {
        crate::db::Db::Sqlite(_) => Some(gw.ingest_lock.lock().await),
        crate::db::Db::Postgres(_) => None,
    };
    match ingest::store(&gw.db, &parsed.events, now_ms).await {
        Ok(stored) => {
            // Metrics count what is new, like the rollups.
            let mut seen = std::collections::HashSet::new();
            let fresh: Vec<_> = parsed.events.iter().filter(|e| seen.insert(e.request_id.as_str())).collect();
            let fresh = &fresh[fresh.len().saturating_sub(stored.inserted)..];
            gw.usage_metrics.observe(fresh, now_ms);
            gw.usage_metrics.batch(true, stored.inserted, stored.duplicates, parsed.invalid);
            Json(json!({"stored": stored.inserted, "duplicates": stored.duplicates, "invalid": parsed.invalid}))
                .into_response()
        }
        Err(e) => {
            // 503: the filter keeps the batch and sends it again.
            gw.usage_metrics.batch(false, 0, 0, parsed.invalid);
            Error::from(e).into_response()
        }
    }
}

/// The caller's scope: admin all, org-admin their org, a service account's key its own traffic,
/// others their own keys and their teams' service accounts.
fn scope(a: &Authed) -> Scope {
    if let Some((sa, _)) = a.service_account {
        return Scope::ServiceAccount(sa);
    }
    match (a.role, a.org_id) {
        (Role::Admin, _) => Scope::All,
        (Role::OrgAdmin, Some(o)) => Scope::Org(o),
        _ => Scope::Own { user_id: a.user_id, teams: a.teams.iter().map(|(t, _)| *t).collect() },
    }
}

/// Query parameters common to both endpoints, checked strictly (unknown ones are 400s).
struct Params {
    filters: Filters,
    csv: bool,
}

fn time(q: &HashMap<String, String>, k: &str) -> Result<Option<i64>, Error> {
    q.get(k)
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_millis())
                .map_err(|_| bad(k, format!("'{k}' must be an RFC 3339 time like 2026-01-31T12:00:00Z.")))
        })
        .transpose()
}

fn params(q: &HashMap<String, String>, extra: &[&str]) -> Result<Params, Error> {
    let known = ["from", "to", "format"];
    for k in q.keys() {
        let ok = known.contains(&k.as_str())
            || extra.contains(&k.as_str())
            || DIMENSIONS.iter().any(|(d, _)| *d == k.as_str());
        if !ok {
            return Err(bad(k, format!("Unknown query parameter '{k}'.")));
        }
    }
    let now = chrono::Utc::now().timestamp_millis();
    let to_ms = time(q, "to")?.unwrap_or(now);
    let from_ms = time(q, "from")?.unwrap_or(to_ms - 86_400_000);
    if from_ms >= to_ms {
        return Err(bad("from", "'from' must be before 'to'."));
    }
    let mut filters = Filters { from_ms, to_ms, ..Default::default() };
    for (dim, _) in DIMENSIONS {
        let Some(v) = q.get(dim) else { continue };
        match dim {
            "model" | "end_user" => filters.texts.push((dim, v.clone())),
            _ => {
                let n = v.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    bad(dim, format!("'{dim}' must be {}.", if dim == "status" { "an HTTP status" } else { "an id" }))
                })?;
                filters.ids.push((dim, n));
            }
        }
    }
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(bad("format", "'format' must be json or csv.")),
    };
    Ok(Params { filters, csv })
}

fn totals_json(t: &Totals) -> Value {
    json!({"requests": t.requests, "input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "errors": t.errors})
}

fn ms_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_default()
}

fn id_json(v: Option<i64>) -> Value {
    v.map_or(Value::Null, |i| Value::String(i.to_string()))
}

fn group_json(g: &Group, dims: &[&str]) -> Value {
    let mut v = totals_json(&g.totals);
    for d in dims {
        v[*d] = match *d {
            "org_id" => id_json(g.org_id),
            "team_id" => id_json(g.team_id),
            "user_id" => id_json(g.user_id),
            "service_account_id" => id_json(g.service_account_id),
            "token_id" => id_json(g.token_id),
            "model" => g.model.clone().into(),
            "end_user" => g.end_user.clone().into(),
            _ => g.status.into(),
        };
    }
    v
}

/// One CSV field (formula-neutralised: see [`crate::usage::csv`]).
fn csv_field(v: &Value) -> String {
    crate::usage::csv::field(v)
}

fn csv(columns: &[&str], rows: &[Value], name: &str) -> Response {
    let mut out = columns.join(",");
    out.push('\n');
    for r in rows {
        let line: Vec<String> = columns.iter().map(|c| csv_field(&r[*c])).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    (
        [
            ("content-type", "text/csv; charset=utf-8"),
            ("content-disposition", &format!("attachment; filename=\"{name}\"")),
        ],
        out,
    )
        .into_response()
}

/// `GET /api/v1/usage`: totals, a series per `bucket`, and groups per `group_by`.
pub async fn summary(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let p = params(&q, &["bucket", "group_by"])?;
    let (bucket, width) = match q.get("bucket").map(String::as_str) {
        None => ("hour", 3_600_000),
        Some(b) => *BUCKETS
            .iter()
            .find(|(name, _)| *name == b)
            .ok_or_else(|| bad("bucket", "'bucket' must be minute, hour or day."))?,
    };
    let mut dims: Vec<&str> = Vec::new();
    if let Some(g) = q.get("group_by").filter(|g| !g.is_empty()) {
        for d in g.split(',').map(str::trim) {
            let known = DIMENSIONS
                .iter()
                .map(|(n, _)| *n)
                .find(|n| *n == d)
                .ok_or_else(|| bad("group_by", format!("Unknown dimension '{d}' in 'group_by'.")))?;
            if !dims.contains(&known) {
                dims.push(known);
            }
        }
    }
    let scope = scope(&a);
    let f = &p.filters;
    let totals = query::totals(&gw.db, bucket, width, &scope, f).await?;
    let series = query::series(&gw.db, bucket, width, &scope, f, MAX_POINTS).await?;
    let groups = if dims.is_empty() {
        Vec::new()
    } else {
        query::groups(&gw.db, bucket, width, &scope, f, &dims, MAX_GROUPS).await?
    };
    let point = |pt: &Point| {
        let mut v = totals_json(&pt.totals);
        v["start"] = ms_rfc3339(pt.start_ms).into();
        v
    };
    let series: Vec<Value> = series.iter().map(point).collect();
    let groups: Vec<Value> = groups.iter().map(|g| group_json(g, &dims)).collect();
    if p.csv {
        let sums = ["requests", "input_tokens", "output_tokens", "errors"];
        return Ok(if dims.is_empty() {
            let cols: Vec<&str> = std::iter::once("start").chain(sums).collect();
            csv(&cols, &series, "usage.csv")
        } else {
            let cols: Vec<&str> = dims.iter().copied().chain(sums).collect();
            csv(&cols, &groups, "usage.csv")
        });
    }
    Ok(Json(json!({
        "from": ms_rfc3339(f.from_ms),
        "to": ms_rfc3339(f.to_ms),
        "bucket": bucket,
        "totals": totals_json(&totals),
        "series": series,
        "groups": groups,
    }))
    .into_response())
}

/// Columns of the request log, in order.
const REQUEST_COLUMNS: [&str; 26] = [
    "request_id",
    "time",
    "token_id",
    "user_id",
    "service_account_id",
    "team_id",
    "org_id",
    "end_user",
    "model",
    "path",
    "method",
    "status",
    "outcome",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated",
    "latency_ms",
    "ttfb_ms",
    "streamed",
    "client_ip",
    "user_agent",
    "mcp_server",
    "mcp_method",
    "mcp_tool",
];

fn request_json(r: &RequestRow) -> Value {
    json!({
        "request_id": r.request_id, "time": ms_rfc3339(r.at_ms), "token_id": id_json(r.token_id),
        "user_id": id_json(r.user_id), "service_account_id": id_json(r.service_account_id),
        "team_id": id_json(r.team_id), "org_id": id_json(r.org_id), "end_user": r.end_user, "model": r.model,
        "path": r.path, "method": r.method, "status": r.status, "outcome": r.outcome,
        "input_tokens": r.input_tokens, "output_tokens": r.output_tokens, "cached_tokens": r.cached_tokens,
        "reasoning_tokens": r.reasoning_tokens, "estimated": r.estimated, "latency_ms": r.latency_ms,
        "ttfb_ms": r.ttfb_ms, "streamed": r.streamed, "client_ip": r.client_ip, "user_agent": r.user_agent,
        "mcp_server": r.mcp_server, "mcp_method": r.mcp_method, "mcp_tool": r.mcp_tool,
    })
}

/// `GET /api/v1/usage/requests`: the request log, newest first, `limit` per page, `after` the
/// previous page's `next`.
pub async fn requests(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let p = params(&q, &["limit", "after"])?;
    let limit = match q.get("limit") {
        None => 100,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=10_000).contains(l))
            .ok_or_else(|| bad("limit", "'limit' must be 1 to 10000."))?,
    };
    let after = match q.get("after") {
        None => None,
        Some(s) => Some(
            Cursor::decode(s).ok_or_else(|| bad("after", "'after' must be a 'next' value from a previous page."))?,
        ),
    };
    let mut rows = query::requests(&gw.db, &scope(&a), &p.filters, after.as_ref(), limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(100));
    let data: Vec<Value> = rows.iter().map(request_json).collect();
    if p.csv {
        return Ok(csv(&REQUEST_COLUMNS, &data, "requests.csv"));
    }
    let next = if has_more {
        rows.last().map(|r| Cursor { at_ms: r.at_ms, request_id: r.request_id.clone() }.encode())
    } else {
        None
    };
    Ok(Json(json!({"object": "list", "data": data, "has_more": has_more, "next": next})).into_response())
}
