//! The usage service: totals, series and groups over a range, and the request log, each scoped
//! by the caller's role (an admin all, an org-admin their org, a service account's key its own
//! traffic, others their keys and their teams' service accounts). Read-only; the management
//! API and the admin UI both call it.

use crate::auth::Authed;
use crate::domain::input::bad;
use crate::domain::Error;
use crate::gateway::Gateway;
use crate::tenancy::model::Role;
use crate::usage::ingest::BUCKETS;
use crate::usage::query::{self, Cursor, Filters, Group, Point, RequestRow, Scope, Totals, DIMENSIONS};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;

/// Most points in one series.
const MAX_POINTS: usize = 10_000;
/// Most groups answered.
const MAX_GROUPS: i64 = 1_000;

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

/// Sums over some requests.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct Sums {
    /// Requests.
    pub requests: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Requests answered with a status of 400 or above.
    pub errors: i64,
}

impl From<&Totals> for Sums {
    fn from(t: &Totals) -> Self {
        Self { requests: t.requests, input_tokens: t.input_tokens, output_tokens: t.output_tokens, errors: t.errors }
    }
}

/// One bucket of a series.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// Start of the bucket, RFC 3339.
    pub start: String,
    /// Its sums.
    #[serde(flatten)]
    pub sums: Sums,
}

/// One group: the values of the dimensions grouped by (ids as strings), and its sums.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupRow {
    /// Dimension → value (`null` where the requests had none).
    #[serde(flatten)]
    pub dims: BTreeMap<String, Value>,
    /// Its sums.
    #[serde(flatten)]
    pub sums: Sums,
}

/// `GET /api/v1/usage`'s answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    /// Start of the range, RFC 3339.
    pub from: String,
    /// End of the range, RFC 3339.
    pub to: String,
    /// `minute`, `hour` or `day`.
    pub bucket: String,
    /// Sums over the range.
    pub totals: Sums,
    /// One point per bucket with traffic.
    pub series: Vec<SeriesPoint>,
    /// One row per combination of the `group_by` dimensions.
    pub groups: Vec<GroupRow>,
}

/// One logged request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequestEntry {
    /// The gateway's request id.
    pub request_id: String,
    /// RFC 3339.
    pub time: String,
    /// The key.
    pub token_id: Option<String>,
    /// The key's owner.
    pub user_id: Option<String>,
    /// The service account, for its key.
    pub service_account_id: Option<String>,
    /// The service account's team.
    pub team_id: Option<String>,
    /// The owner's org.
    pub org_id: Option<String>,
    /// The request's `user` field.
    pub end_user: Option<String>,
    /// The model asked for.
    pub model: Option<String>,
    /// Path.
    pub path: String,
    /// Method.
    pub method: String,
    /// Status answered.
    pub status: i32,
    /// `ok`, `error`, `refused`, `cut` ….
    pub outcome: String,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Input tokens served from the provider's cache.
    pub cached_tokens: i64,
    /// Output tokens spent reasoning.
    pub reasoning_tokens: i64,
    /// Whether the counts are the gateway's estimate (the provider reported none).
    pub estimated: bool,
    /// Milliseconds to the end of the answer.
    pub latency_ms: i64,
    /// Milliseconds to the first byte of the answer.
    pub ttfb_ms: Option<i64>,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// The client's address.
    pub client_ip: Option<String>,
    /// The client's User-Agent.
    pub user_agent: Option<String>,
    /// MCP server, for MCP traffic.
    pub mcp_server: Option<String>,
    /// MCP method.
    pub mcp_method: Option<String>,
    /// MCP tool called.
    pub mcp_tool: Option<String>,
    /// For a Responses API create: the id of the response it made.
    pub response_id: Option<String>,
}

fn id(v: Option<i64>) -> Option<String> {
    v.map(|i| i.to_string())
}

fn ms_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_default()
}

impl From<&RequestRow> for RequestEntry {
    fn from(r: &RequestRow) -> Self {
        Self {
            request_id: r.request_id.clone(),
            time: ms_rfc3339(r.at_ms),
            token_id: id(r.token_id),
            user_id: id(r.user_id),
            service_account_id: id(r.service_account_id),
            team_id: id(r.team_id),
            org_id: id(r.org_id),
            end_user: r.end_user.clone(),
            model: r.model.clone(),
            path: r.path.clone(),
            method: r.method.clone(),
            status: r.status,
            outcome: r.outcome.clone(),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_tokens: r.cached_tokens,
            reasoning_tokens: r.reasoning_tokens,
            estimated: r.estimated,
            latency_ms: r.latency_ms,
            ttfb_ms: r.ttfb_ms,
            streamed: r.streamed,
            client_ip: r.client_ip.clone(),
            user_agent: r.user_agent.clone(),
            mcp_server: r.mcp_server.clone(),
            mcp_method: r.mcp_method.clone(),
            mcp_tool: r.mcp_tool.clone(),
            response_id: r.response_id.clone(),
        }
    }
}

/// `GET /api/v1/usage/requests`'s answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequestPage {
    /// Always `list`.
    pub object: String,
    /// Newest first.
    pub data: Vec<RequestEntry>,
    /// Whether older entries exist.
    pub has_more: bool,
    /// Pass as `after` for the next page.
    pub next: Option<String>,
}

/// Columns of the request log, in order (its CSV columns).
pub const REQUEST_COLUMNS: [&str; 27] = [
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
    "response_id",
];

/// The filters and format both queries take.
#[derive(Debug, Clone)]
pub struct Params {
    /// Range and dimension filters.
    pub filters: Filters,
    /// Whether CSV was asked for.
    pub csv: bool,
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

/// A summary query, checked strictly (unknown parameters are 400s naming them).
#[derive(Debug, Clone)]
pub struct SummaryQuery {
    /// Range, filters, format.
    pub params: Params,
    /// `minute`, `hour` or `day`.
    pub bucket: &'static str,
    /// Its width in milliseconds.
    pub width_ms: i64,
    /// Dimensions to group by.
    pub group_by: Vec<&'static str>,
}

impl SummaryQuery {
    /// From a query string's parameters.
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, Error> {
        let params = params(q, &["bucket", "group_by"])?;
        let (bucket, width_ms) = match q.get("bucket").map(String::as_str) {
            None => ("hour", 3_600_000),
            Some(b) => *BUCKETS
                .iter()
                .find(|(name, _)| *name == b)
                .ok_or_else(|| bad("bucket", "'bucket' must be minute, hour or day."))?,
        };
        let mut group_by: Vec<&'static str> = Vec::new();
        if let Some(g) = q.get("group_by").filter(|g| !g.is_empty()) {
            for d in g.split(',').map(str::trim) {
                let known = DIMENSIONS
                    .iter()
                    .map(|(n, _)| *n)
                    .find(|n| *n == d)
                    .ok_or_else(|| bad("group_by", format!("Unknown dimension '{d}' in 'group_by'.")))?;
                if !group_by.contains(&known) {
                    group_by.push(known);
                }
            }
        }
        Ok(Self { params, bucket, width_ms, group_by })
    }
}

fn group_row(g: &Group, dims: &[&str]) -> GroupRow {
    let dims = dims
        .iter()
        .map(|d| {
            let v = match *d {
                "org_id" => id(g.org_id).into(),
                "team_id" => id(g.team_id).into(),
                "user_id" => id(g.user_id).into(),
                "service_account_id" => id(g.service_account_id).into(),
                "token_id" => id(g.token_id).into(),
                "model" => g.model.clone().into(),
                "end_user" => g.end_user.clone().into(),
                _ => g.status.into(),
            };
            (d.to_string(), v)
        })
        .collect();
    GroupRow { dims, sums: Sums::from(&g.totals) }
}

/// Totals, a series per bucket and groups per dimension, in the caller's scope.
pub async fn summary(gw: &Gateway, a: &Authed, q: &SummaryQuery) -> Result<Summary, Error> {
    let scope = scope(a);
    let f = &q.params.filters;
    let (bucket, width) = (q.bucket, q.width_ms);
    let totals = query::totals(&gw.db, bucket, width, &scope, f).await?;
    let series = query::series(&gw.db, bucket, width, &scope, f, MAX_POINTS).await?;
    let groups = if q.group_by.is_empty() {
        Vec::new()
    } else {
        query::groups(&gw.db, bucket, width, &scope, f, &q.group_by, MAX_GROUPS).await?
    };
    let point = |pt: &Point| SeriesPoint { start: ms_rfc3339(pt.start_ms), sums: Sums::from(&pt.totals) };
    Ok(Summary {
        from: ms_rfc3339(f.from_ms),
        to: ms_rfc3339(f.to_ms),
        bucket: bucket.to_string(),
        totals: Sums::from(&totals),
        series: series.iter().map(point).collect(),
        groups: groups.iter().map(|g| group_row(g, &q.group_by)).collect(),
    })
}

/// A request-log query, checked strictly.
#[derive(Debug, Clone)]
pub struct RequestsQuery {
    /// Range, filters, format.
    pub params: Params,
    /// Entries per page (1 to 10000).
    pub limit: i64,
    /// Where the previous page ended.
    pub after: Option<Cursor>,
}

impl RequestsQuery {
    /// From a query string's parameters.
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, Error> {
        let params = params(q, &["limit", "after"])?;
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
                Cursor::decode(s)
                    .ok_or_else(|| bad("after", "'after' must be a 'next' value from a previous page."))?,
            ),
        };
        Ok(Self { params, limit, after })
    }
}

/// The request log, newest first, in the caller's scope.
pub async fn requests(gw: &Gateway, a: &Authed, q: &RequestsQuery) -> Result<RequestPage, Error> {
    let limit = q.limit;
    let mut rows = query::requests(&gw.db, &scope(a), &q.params.filters, q.after.as_ref(), limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(100));
    let next = if has_more {
        rows.last().map(|r| Cursor { at_ms: r.at_ms, request_id: r.request_id.clone() }.encode())
    } else {
        None
    };
    Ok(RequestPage { object: "list".into(), data: rows.iter().map(RequestEntry::from).collect(), has_more, next })
}
