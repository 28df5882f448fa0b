//! The MCP gateway: a Streamable HTTP proxy per configured server (`/mcp-servers/{name}/mcp`)
//! and one aggregated endpoint (`/mcp`) with the tools, prompts and resources of every server the
//! caller may use.
//!
//! The filter in Envoy has already checked the key and the caller's MCP exclusions; it replaced
//! the key by identity headers plus the deployment secret ([`crate::auth::identity`]). Here the
//! requests are checked against DNS rebinding ([`security`]), bound to sessions kept in the database
//! ([`sessions`], so they survive a restart), forwarded with the server's own credentials
//! ([`proxy`], [`aggregate`]), and each one is handed to a [`McpRecorder`].

pub mod aggregate;
pub mod jsonrpc;
pub mod proxy;
pub mod registry;
pub mod security;
pub mod service;
pub mod sessions;

use crate::db::Db;
use registry::Registry;
use security::HostPolicy;
use std::sync::Arc;
use std::time::Duration;

/// One MCP request as the usage ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpCall {
    /// Unix milliseconds when the request arrived.
    pub at_ms: i64,
    /// The upstream server; `None` for a request the aggregated endpoint answered itself
    /// (`initialize`, `ping`, lists gathered from several servers).
    pub server: Option<String>,
    /// Which endpoint: `server` (`/mcp-servers/{name}/mcp`) or `aggregate` (`/mcp`).
    pub endpoint: &'static str,
    /// HTTP method of the request (`POST`, `GET` for the server stream, `DELETE`).
    pub http_method: &'static str,
    /// JSON-RPC method (`tools/call`, `notifications/initialized`…); `None` for GET/DELETE and
    /// for JSON-RPC responses the client sent.
    pub method: Option<String>,
    /// The tool name (as the upstream knows it) for `tools/call`.
    pub tool: Option<String>,
    /// HTTP status answered.
    pub status: u16,
    /// From the request's arrival to the end of the answer (a streamed answer's last byte).
    pub latency_ms: u64,
    /// The gateway's session id, when there is one.
    pub session: Option<String>,
    /// Who called.
    pub identity: crate::auth::identity::Identity,
}

/// Where MCP calls go: the lead wires this into the usage ledger. Must not block (called on the
/// request path, including from a stream's drop).
pub trait McpRecorder: Send + Sync + std::fmt::Debug {
    /// Records one call.
    fn record(&self, call: McpCall);
}

/// MCP settings (from the control plane's settings).
#[derive(Debug, Clone)]
pub struct McpSettings {
    /// Host/Origin allow-lists (DNS-rebinding protection).
    pub hosts: HostPolicy,
    /// Timeout for connecting to an upstream.
    pub connect_timeout: Duration,
    /// Most time one upstream call may take on the aggregated endpoint (per-server requests
    /// stream and have no overall limit).
    pub call_timeout: Duration,
    /// Sessions unused this long are deleted.
    pub session_idle: Duration,
}

/// Largest JSON-RPC POST body accepted (tool arguments can be large; axum's default is 2 MiB).
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// Shared state of the MCP gateway.
#[derive(Debug)]
pub struct Mcp {
    /// The store (sessions).
    pub db: Db,
    /// Configured servers.
    pub registry: Arc<Registry>,
    /// Settings.
    pub settings: McpSettings,
    /// Where calls are recorded.
    pub recorder: Arc<dyn McpRecorder>,
    /// The secret the filter sends with identity headers.
    pub secret: String,
    /// Client for upstream requests.
    pub client: reqwest::Client,
}

impl Mcp {
    /// The gateway over a store, a registry and the deployment secret.
    pub fn new(
        db: Db,
        registry: Arc<Registry>,
        settings: McpSettings,
        recorder: Arc<dyn McpRecorder>,
        secret: String,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            // Small JSON-RPC writes must not wait for the upstream's delayed ACK.
            .tcp_nodelay(true)
            // Upstream redirects would carry the server's credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { db, registry, settings, recorder, secret, client })
    }

    /// Deletes idle sessions every minute; runs forever.
    pub async fn sweep_sessions(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let idle = i64::try_from(self.settings.session_idle.as_secs()).unwrap_or(i64::MAX);
            match sessions::delete_idle(&self.db, crate::gateway::now().saturating_sub(idle)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "idle MCP sessions deleted"),
                Err(e) => tracing::warn!(error = %e, "cannot sweep idle MCP sessions"),
            }
        }
    }
}

/// The MCP routes, mounted next to the management API.
pub fn router(mcp: Arc<Mcp>) -> axum::Router {
    use axum::routing::post;
    axum::Router::new()
        .route("/mcp-servers/{name}/mcp", post(proxy::post).get(proxy::get).delete(proxy::delete))
        .route("/mcp", post(aggregate::post).get(aggregate::get).delete(aggregate::delete))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .with_state(mcp)
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
