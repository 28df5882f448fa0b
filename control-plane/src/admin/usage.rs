//! The usage page: requests and tokens over a chosen range, by model, key, user and end user,
//! read through the usage service the usage API uses, so each role sees exactly what the API
//! shows it (a user: their keys and their teams' service accounts; an org-admin: the org; an
//! admin: all).

use super::chart::{self, Line};
use super::{render, unavailable, Nav, Ui};
use crate::domain::input::PageQuery;
use crate::gateway::Gateway;
use crate::usage::service::{self as usage, GroupRow, Summary, SummaryQuery, Sums};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The ranges offered: (query value, label, length in seconds, bucket of the series).
const RANGES: [(&str, &str, i64, &str); 4] = [
    ("1h", "Last hour", 3_600, "minute"),
    ("1d", "Last day", 86_400, "hour"),
    ("1w", "Last week", 7 * 86_400, "hour"),
    ("30d", "Last 30 days", 30 * 86_400, "day"),
];

/// One row of a table: who or what, and its sums.
struct Row {
    label: String,
    requests: i64,
    input_tokens: i64,
    output_tokens: i64,
    errors: i64,
}

/// A grouped table with the link to download it.
struct Table {
    heading: &'static str,
    column: &'static str,
    rows: Vec<Row>,
    csv: String,
}

struct RangeLink {
    value: &'static str,
    label: &'static str,
    current: bool,
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    nav: Nav,
    ranges: Vec<RangeLink>,
    range_label: &'static str,
    totals: Row,
    requests_chart: Option<String>,
    tokens_chart: Option<String>,
    models_chart: Option<String>,
    /// The series as a table (non-empty buckets), the charts' text alternative.
    series: Vec<Row>,
    tables: Vec<Table>,
    series_csv: String,
}

fn row(label: String, v: &Sums) -> Row {
    Row { label, requests: v.requests, input_tokens: v.input_tokens, output_tokens: v.output_tokens, errors: v.errors }
}

/// The text of dimension `dim` of a group ("" when none).
fn dim(g: &GroupRow, dim: &str) -> String {
    match g.dims.get(dim) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A bucket start as the page names it: time of day for short ranges, the date for long ones.
fn bucket_label(start: &str, bucket: &str, span: i64) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(start) else { return start.to_string() };
    let t = t.with_timezone(&chrono::Utc);
    match bucket {
        "day" => t.format("%Y-%m-%d").to_string(),
        _ if span > 86_400 => t.format("%m-%d %H:%M").to_string(),
        _ => t.format("%H:%M").to_string(),
    }
}

/// Names for ids the caller can see (keys and users through their own lists); an id the
/// caller cannot list (a teammate's service-account key, say) is shown by number.
async fn names(gw: &Arc<Gateway>, u: &Ui) -> (HashMap<String, String>, HashMap<String, String>) {
    let Ok(page) = PageQuery::largest().page() else { return Default::default() };
    let keys = crate::tokens::service::list(gw, &u.a, page)
        .await
        .map(|l| l.data.into_iter().map(|k| (k.id, k.name)).collect())
        .unwrap_or_default();
    let users = crate::tenancy::service::list_users(gw, &u.a, page)
        .await
        .map(|l| l.data.into_iter().map(|k| (k.id, k.email)).collect())
        .unwrap_or_default();
    (keys, users)
}

/// `GET /ui/usage?range=1h|1d|1w|30d` (default a day).
pub async fn page(State(gw): State<Arc<Gateway>>, u: Ui, Query(q): Query<HashMap<String, String>>) -> Response {
    let wanted = q.get("range").map(String::as_str).unwrap_or("1d");
    let &(range, range_label, span, bucket) = RANGES.iter().find(|r| r.0 == wanted).unwrap_or(&RANGES[1]);
    let to = chrono::Utc::now();
    let from = to - chrono::Duration::seconds(span);
    let base: Vec<(String, String)> = vec![
        ("from".into(), from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ("to".into(), to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ("bucket".into(), bucket.into()),
    ];
    let query = |group_by: Option<&str>| {
        let mut m: HashMap<String, String> = base.iter().cloned().collect();
        if let Some(g) = group_by {
            m.insert("group_by".into(), g.into());
        }
        m
    };
    // The download links are the usage API itself: a GET with the session cookie is allowed.
    let csv = |group_by: Option<&str>| {
        let mut pairs = base.clone();
        if let Some(g) = group_by {
            pairs.push(("group_by".into(), g.into()));
        }
        pairs.push(("format".into(), "csv".into()));
        format!("/api/v1/usage?{}", url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish())
    };
    let fetch = |g: Option<&'static str>| {
        let (gw, a, q) = (gw.clone(), u.a.clone(), query(g));
        async move {
            let q = SummaryQuery::parse(&q).map_err(|e| e.message().to_string())?;
            usage::summary(&gw, &a, &q).await.map_err(|e| e.message().to_string())
        }
    };
    let by_model = match fetch(Some("model")).await {
        Ok(v) => v,
        Err(e) => return unavailable(&e),
    };
    let (by_key, by_user, by_end_user) =
        match (fetch(Some("token_id")).await, fetch(Some("user_id")).await, fetch(Some("end_user")).await) {
            (Ok(k), Ok(us), Ok(e)) => (k, us, e),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return unavailable(&e),
        };
    let (key_names, user_names) = names(&gw, &u).await;

    let points = &by_model.series;
    let labels: Vec<String> = points.iter().map(|p| bucket_label(&p.start, bucket, span)).collect();
    let col = |f: fn(&Sums) -> i64| points.iter().map(|p| f(&p.sums)).collect::<Vec<_>>();
    let first_last = match (labels.first(), labels.last()) {
        (Some(a), Some(b)) => format!("from {a} to {b} UTC"),
        _ => String::new(),
    };
    let requests_chart = chart::lines(
        "chart-requests",
        &format!("Requests per {bucket}"),
        &format!("Requests per {bucket}, {first_last}; the table below lists the same numbers."),
        &labels,
        &[Line { class: "s0", values: col(|s| s.requests) }],
    );
    let tokens_chart = chart::lines(
        "chart-tokens",
        &format!("Tokens per {bucket}"),
        &format!("Input and output tokens per {bucket}, {first_last}; the table below lists the same numbers."),
        &labels,
        &[
            Line { class: "s0", values: col(|s| s.input_tokens) },
            Line { class: "s1", values: col(|s| s.output_tokens) },
        ],
    );
    let model_rows: Vec<Row> = by_model
        .groups
        .iter()
        .map(|g| row(Some(dim(g, "model")).filter(|m| !m.is_empty()).unwrap_or_else(|| "(no model)".into()), &g.sums))
        .collect();
    let models_chart = chart::bars(
        "chart-models",
        "Requests by model",
        "Requests per model over the range; the table below lists the same numbers.",
        &model_rows.iter().take(12).map(|r| (r.label.clone(), r.requests)).collect::<Vec<_>>(),
    );
    let named = |v: &Summary, d: &str, names: &HashMap<String, String>, what: &str, none: &str| -> Vec<Row> {
        v.groups
            .iter()
            .map(|g| {
                let id = dim(g, d);
                let label = if id.is_empty() {
                    none.to_string()
                } else {
                    names.get(&id).cloned().unwrap_or_else(|| format!("{what} #{id}"))
                };
                row(label, &g.sums)
            })
            .collect()
    };
    let tables = vec![
        Table { heading: "By model", column: "Model", rows: model_rows, csv: csv(Some("model")) },
        Table {
            heading: "By key",
            column: "Key",
            rows: named(&by_key, "token_id", &key_names, "key", "(no key)"),
            csv: csv(Some("token_id")),
        },
        Table {
            heading: "By user",
            column: "User",
            rows: named(&by_user, "user_id", &user_names, "user", "(no user)"),
            csv: csv(Some("user_id")),
        },
        Table {
            heading: "By end user",
            column: "End user (the request's user field)",
            rows: by_end_user
                .groups
                .iter()
                .map(|g| {
                    let e = Some(dim(g, "end_user")).filter(|e| !e.is_empty());
                    row(e.unwrap_or_else(|| "(not given)".into()), &g.sums)
                })
                .collect(),
            csv: csv(Some("end_user")),
        },
    ];
    let series =
        points.iter().zip(&labels).filter(|(p, _)| p.sums.requests > 0).map(|(p, l)| row(l.clone(), &p.sums)).collect();
    let ranges = RANGES.iter().map(|r| RangeLink { value: r.0, label: r.1, current: r.0 == range }).collect();
    render(
        StatusCode::OK,
        &UsagePage {
            nav: u.nav(&gw, "usage").await,
            ranges,
            range_label,
            totals: row(String::new(), &by_model.totals),
            requests_chart,
            tokens_chart,
            models_chart,
            series,
            tables,
            series_csv: csv(None),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_labelled_for_their_range() {
        let t = "2026-03-04T05:06:00+00:00";
        assert_eq!(bucket_label(t, "minute", 3_600), "05:06");
        assert_eq!(bucket_label(t, "hour", 7 * 86_400), "03-04 05:06");
        assert_eq!(bucket_label(t, "day", 30 * 86_400), "2026-03-04");
        assert_eq!(bucket_label("garbage", "day", 0), "garbage");
    }
}
