//! `/api/v1/usage` and `/api/v1/usage/requests` (parse, call [`crate::usage::service`],
//! render as JSON or CSV), and the ingestion endpoint the filter delivers event batches to.

use super::auth::Authed;
use super::error::Error;
use crate::gateway::Gateway;
use crate::usage::ingest;
use crate::usage::service::{self as svc, RequestsQuery, SummaryQuery, REQUEST_COLUMNS};
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

fn csv(columns: &[&str], rows: &[Value], name: &str) -> Response {
    let mut out = columns.join(",");
    out.push('\n');
    for r in rows {
        // Formula-neutralised: see [`crate::usage::csv`].
        let line: Vec<String> = columns.iter().map(|c| crate::usage::csv::field(&r[*c])).collect();
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

fn values<T: serde::Serialize>(rows: &[T]) -> Vec<Value> {
    rows.iter().filter_map(|r| serde_json::to_value(r).ok()).collect()
}

/// `GET /api/v1/usage`: totals, a series per `bucket`, and groups per `group_by`.
pub async fn summary(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let q = SummaryQuery::parse(&q)?;
    let s = svc::summary(&gw, &a, &q).await?;
    if q.params.csv {
        let sums = ["requests", "input_tokens", "output_tokens", "errors"];
        return Ok(if q.group_by.is_empty() {
            let cols: Vec<&str> = std::iter::once("start").chain(sums).collect();
            csv(&cols, &values(&s.series), "usage.csv")
        } else {
            let cols: Vec<&str> = q.group_by.iter().copied().chain(sums).collect();
            csv(&cols, &values(&s.groups), "usage.csv")
        });
    }
    Ok(Json(s).into_response())
}

/// `GET /api/v1/usage/requests`: the request log, newest first, `limit` per page, `after` the
/// previous page's `next`.
pub async fn requests(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let q = RequestsQuery::parse(&q)?;
    let page = svc::requests(&gw, &a, &q).await?;
    if q.params.csv {
        return Ok(csv(&REQUEST_COLUMNS, &values(&page.data), "requests.csv"));
    }
    Ok(Json(page).into_response())
}
