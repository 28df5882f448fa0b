//! Liveness and readiness of the control plane's HTTP side.

use crate::gateway::Gateway;
use std::sync::Arc;
use std::time::Duration;

/// How long `/ready` waits for the database.
pub const READY_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /ready`: readiness, as opposed to `/health` (liveness, answered by Envoy itself). 200
/// `{"status":"ready"}` when the database answers a query within [`READY_DB_TIMEOUT`] and a
/// configuration for Envoy (listener, routes, clusters, filter) has been built; otherwise 503
/// with `"status":"not_ready"` and a field per missing dependency (`database`, `xds`).
pub async fn ready(
    axum::extract::State(gw): axum::extract::State<Arc<Gateway>>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    use crate::xds::type_url;
    let mut problems = serde_json::Map::new();
    // A real table, not `SELECT 1`: SQLite answers that without reading its file.
    let query = async {
        crate::with_pool!(&gw.db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM gateway_secrets")
            .fetch_one(p)
            .await
            .map(|_| ()))
    };
    match tokio::time::timeout(READY_DB_TIMEOUT, query).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            problems.insert("database".into(), format!("unreachable: {e}").into());
        }
        Err(_) => {
            problems.insert("database".into(), format!("unreachable: no answer within {READY_DB_TIMEOUT:?}").into());
        }
    }
    let snapshot = gw.cache.current();
    let missing: Vec<&str> = [
        ("listener", type_url::LISTENER),
        ("routes", type_url::ROUTE),
        ("clusters", type_url::CLUSTER),
        ("filter", type_url::EXTENSION),
    ]
    .into_iter()
    .filter(|(_, t)| snapshot.version(t).is_none())
    .map(|(name, _)| name)
    .collect();
    if !missing.is_empty() {
        problems.insert("xds".into(), format!("no configuration built yet: {}", missing.join(", ")).into());
    }
    if problems.is_empty() {
        (axum::http::StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"})))
    } else {
        problems.insert("status".into(), "not_ready".into());
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::Value::Object(problems)))
    }
}
