//! `GET /internal/v1/keys`: the key journal's long poll, answered to the filter (see
//! [`aqueduct_policy::journal`]).

use super::error::Error;
use crate::gateway::Gateway;
use aqueduct_policy::journal::{PollQuery, POLL_HOLD_MS};
use aqueduct_policy::ledger::SECRET_HEADER;
use aqueduct_policy::ApiError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Answers at once when the journal is past `known`, else holds the call until it is or
/// [`POLL_HOLD_MS`] pass (`204`). `409` when the journal cannot answer for the caller's snapshot
/// (another process's epoch, or changes since pruned): the caller waits for its next snapshot.
pub async fn poll(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    query: Result<Query<PollQuery>, QueryRejection>,
) -> Response {
    let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if gw.ledger.secret.is_empty() || !bool::from(given.ct_eq(gw.ledger.secret.as_bytes())) {
        return Error::from(ApiError::new(403, "The key journal needs the gateway's secret.").code("forbidden"))
            .into_response();
    }
    let Ok(Query(q)) = query else {
        return Error::from(
            ApiError::new(400, "The key journal needs 'epoch', 'since' and 'known' as unsigned integers.")
                .code("invalid_query"),
        )
        .into_response();
    };
    let stale = || {
        Error::from(
            ApiError::new(409, "The key journal cannot answer for this snapshot; a newer snapshot follows.")
                .code("stale_snapshot"),
        )
        .into_response()
    };
    if q.epoch != gw.journal.epoch() {
        return stale();
    }
    if gw.journal.mark().seq <= q.known && !gw.journal.wait_past(q.known, Duration::from_millis(POLL_HOLD_MS)).await {
        return StatusCode::NO_CONTENT.into_response();
    }
    match gw.journal.since(q.since) {
        Some(delta) => Json(delta).into_response(),
        None => stale(),
    }
}
