//! MCP requests into the usage ledger. The MCP proxy runs in the control plane, so its calls
//! are recorded here rather than by the filter: a bounded queue (recording never blocks the
//! proxy) drained by a task that stores batches, retrying while the database is away.

use super::ingest;
use crate::db::Db;
use crate::mcp::{McpCall, McpRecorder};
use aqueduct_policy::ledger::{Outcome, UsageEvent};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Calls held while the database is slow or away; beyond that they are dropped and counted.
pub const QUEUE: usize = 100_000;
/// Most events stored in one transaction.
const BATCH: usize = 1_000;

/// Records MCP calls in the ledger.
#[derive(Debug)]
pub struct LedgerRecorder {
    tx: mpsc::Sender<UsageEvent>,
    /// Calls dropped because the queue was full.
    pub dropped: AtomicU64,
}

fn outcome(status: u16) -> Outcome {
    match status {
        s if s < 400 => Outcome::Ok,
        401 => Outcome::Unauthorized,
        403 => Outcome::Forbidden,
        404 => Outcome::NotFound,
        429 => Outcome::RateLimited,
        s if s >= 500 => Outcome::UpstreamError,
        _ => Outcome::Invalid,
    }
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The ledger's event for one MCP call.
pub fn event(c: McpCall) -> UsageEvent {
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
    let path = match (&c.server, c.endpoint) {
        (_, "aggregate") => "/mcp".to_string(),
        (Some(s), _) => format!("/mcp-servers/{s}/mcp"),
        (None, _) => "/mcp".to_string(),
    };
    UsageEvent {
        request_id: hex::encode(id),
        at_ms: c.at_ms,
        token_id: Some(u(c.identity.token_id)),
        user_id: Some(u(c.identity.user_id)),
        service_account_id: c.identity.service_account_id.map(u),
        team_id: c.identity.team_id.map(u),
        org_id: c.identity.org_id.map(u),
        path,
        method: c.http_method.to_string(),
        status: c.status,
        outcome: Some(outcome(c.status)),
        latency_ms: c.latency_ms,
        mcp_server: c.server,
        mcp_method: c.method,
        mcp_tool: c.tool,
        ..UsageEvent::default()
    }
}

/// Sees each batch of newly stored events (for metrics).
type OnStored = Box<dyn Fn(&[UsageEvent]) + Send + Sync>;

/// The task that stores what a [`LedgerRecorder`] queues; a supervisor runs it (and runs it
/// again should it fail: the queue outlives any one run).
pub struct LedgerWriter {
    rx: tokio::sync::Mutex<mpsc::Receiver<UsageEvent>>,
    db: Db,
    on_stored: OnStored,
}

impl LedgerWriter {
    /// Stores queued calls in batches until every recorder is gone.
    pub async fn run(self: Arc<Self>) {
        let mut rx = self.rx.lock().await;
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            // Kept until stored: the insert is idempotent, so retrying is safe.
            loop {
                let now = chrono::Utc::now().timestamp_millis();
                match ingest::store(&self.db, &batch, now).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, events = batch.len(), "storing MCP usage failed; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            (self.on_stored)(&batch);
            batch.clear();
        }
    }
}

impl LedgerRecorder {
    /// A recorder storing into `db` and the writer task that stores (run it, e.g. under the
    /// supervisor); `on_stored` sees each batch of newly stored events (for metrics).
    pub fn new(db: Db, on_stored: impl Fn(&[UsageEvent]) + Send + Sync + 'static) -> (Arc<Self>, Arc<LedgerWriter>) {
        let (tx, rx) = mpsc::channel::<UsageEvent>(QUEUE);
        let writer = LedgerWriter { rx: tokio::sync::Mutex::new(rx), db, on_stored: Box::new(on_stored) };
        (Arc::new(Self { tx, dropped: AtomicU64::new(0) }), Arc::new(writer))
    }
}

impl McpRecorder for LedgerRecorder {
    fn record(&self, call: McpCall) {
        if self.tx.try_send(event(call)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
