//! The usage ledger's control-plane side: ingestion of the filter's event batches, rollups,
//! queries for the usage API, Prometheus metrics and retention.
//!
//! Delivery is at least once (the filter resends a batch until it is acknowledged) and storage
//! exactly once (the insert is idempotent by request id, and only newly inserted events are
//! rolled up), so a retried batch never counts twice.

pub mod csv;
pub mod ingest;
pub mod mcp;
pub mod metrics;
pub mod query;
pub mod retention;
pub mod service;

use crate::db::Db;
use crate::with_pool;

/// Name of the ledger's ingestion secret in `gateway_secrets`.
const LEDGER_SECRET: &str = "ledger";

/// The deployment's ingestion secret, created on first use. Every control plane sharing the
/// database reads the same one, so any of them accepts batches from any Envoy.
pub async fn ledger_secret(db: &Db) -> Result<String, sqlx::Error> {
    let fresh = crate::tokens::generate_key();
    with_pool!(db, p => {
        sqlx::query("INSERT INTO gateway_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(LEDGER_SECRET)
            .bind(&fresh)
            .execute(p)
            .await?;
        sqlx::query_scalar::<_, String>("SELECT value FROM gateway_secrets WHERE name = $1")
            .bind(LEDGER_SECRET)
            .fetch_one(p)
            .await
    })
}
