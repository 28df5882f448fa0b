//! `/mcp-servers/{name}/mcp`: one upstream server through the gateway (Streamable HTTP).
//!
//! The gateway keeps its own session ids, bound to the key that created them and stored with
//! the upstream's session id; everything else passes through. A POST is answered by the
//! upstream's own answer to that request (JSON, or an SSE stream carrying its progress
//! notifications and its reply, correlated by JSON-RPC id by the upstream session itself),
//! streamed as it arrives. Protocol versions are passed through, not filtered.

use super::jsonrpc::{self, MessageFacts};
use super::registry::Server;
use super::sessions::{self, Session};
use super::{now_ms, Mcp, McpCall};
use crate::auth::identity::Identity;
use aqueduct_policy::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rmcp::model::ErrorData;
use std::sync::Arc;
use std::time::Instant;

/// The session header (case-insensitive on the wire).
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The negotiated protocol version header.
pub const VERSION_HEADER: &str = "mcp-protocol-version";

/// Renders a gateway error in OpenAI's shape.
fn api_error(e: ApiError) -> Response {
    crate::api::error::Error::from(e).into_response()
}

fn db_error(e: sqlx::Error) -> Response {
    crate::api::error::Error::from(e).into_response()
}

/// Records the call when dropped: at the end of the answer's body, or when the client leaves.
pub struct CallGuard {
    mcp: Arc<Mcp>,
    started: Instant,
    call: Option<McpCall>,
    /// One record per message of a batch (they share status and latency).
    extra: Vec<MessageFacts>,
}

impl CallGuard {
    /// A record for a request that arrived `started`.
    pub fn new(mcp: Arc<Mcp>, started: Instant, call: McpCall) -> Self {
        Self { mcp, started, call: Some(call), extra: Vec::new() }
    }

    /// Sets the status answered.
    pub fn status(&mut self, status: StatusCode) {
        if let Some(c) = self.call.as_mut() {
            c.status = status.as_u16();
        }
    }

    /// The record, to fill in (until it is written).
    pub fn call_mut(&mut self) -> Option<&mut McpCall> {
        self.call.as_mut()
    }

    /// Sets the session.
    pub fn session(&mut self, id: &str) {
        if let Some(c) = self.call.as_mut() {
            c.session = Some(id.to_string());
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let Some(mut call) = self.call.take() else { return };
        call.latency_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        for f in self.extra.drain(..) {
            self.mcp.recorder.record(McpCall { method: f.method, tool: f.tool, ..call.clone() });
        }
        self.mcp.recorder.record(call);
    }
}

/// A response whose body keeps `guard` alive until the body ends (or is dropped).
pub fn with_guard(status: StatusCode, headers: HeaderMap, body: reqwest::Response, guard: CallGuard) -> Response {
    let stream = body.bytes_stream().map(move |chunk| {
        let _ = &guard;
        chunk
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// Copies the headers a client needs from an upstream answer.
pub fn pass_headers(up: &reqwest::header::HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in ["content-type", "cache-control", VERSION_HEADER] {
        if let Some(v) = up.get(name).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
            out.insert(name, v);
        }
    }
    out
}

/// What every per-server request needs checked first: who, from where, which server.
struct Checked {
    identity: Identity,
    server: Arc<Server>,
    session_header: Option<String>,
}

fn check(mcp: &Mcp, name: &str, headers: &HeaderMap) -> Result<Checked, ApiError> {
    let identity = Identity::from_headers(headers, &mcp.secret)?;
    mcp.settings.hosts.check(headers)?;
    // The filter checked the exclusions already; the server may have been removed since.
    let server =
        mcp.registry.get(name).filter(|_| identity.allows(name)).ok_or_else(|| ApiError::mcp_server_not_found(name))?;
    let session_header = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok(Checked { identity, server, session_header })
}

/// Answers a refusal from the control plane (Host/Origin, content type, a server that went
/// away), recording it when the caller's identity is known: a request without a trusted identity
/// did not come through the filter and belongs to no one.
pub fn rejected(
    mcp: &Arc<Mcp>,
    started: Instant,
    headers: &HeaderMap,
    server: Option<&str>,
    http_method: &'static str,
    e: ApiError,
) -> Response {
    if let Ok(identity) = Identity::from_headers(headers, &mcp.secret) {
        let mut c = call(&identity, server.unwrap_or_default(), http_method, None);
        c.server = server.map(str::to_string);
        c.endpoint = if server.is_some() { "server" } else { "aggregate" };
        let mut guard = CallGuard::new(mcp.clone(), started, c);
        guard.status(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST));
    }
    api_error(e)
}

/// A request that needs a session came without one.
pub fn session_required() -> Response {
    let error = ErrorData::new(jsonrpc::SERVER_ERROR, "Bad Request: Mcp-Session-Id header is required", None);
    jsonrpc::error_reply(StatusCode::BAD_REQUEST, error, None)
}

/// Unknown, expired, another key's or another server's session: all the same 404, after
/// which an MCP client starts a new session.
pub fn session_not_found() -> Response {
    let error = ErrorData::new(jsonrpc::SESSION_NOT_FOUND, "Session not found", None);
    jsonrpc::error_reply(StatusCode::NOT_FOUND, error, None)
}

fn upstream_unavailable(server: &str, e: &reqwest::Error) -> Response {
    tracing::warn!(server, error = %e, "MCP upstream unreachable");
    api_error(
        ApiError::new(502, format!("The MCP server '{server}' could not be reached.")).code("mcp_upstream_unavailable"),
    )
}

/// An upstream request with the server's credentials and the client's protocol headers.
pub fn upstream_request(
    mcp: &Mcp,
    server: &Server,
    method: reqwest::Method,
    client_headers: &HeaderMap,
    upstream_session: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut req = mcp.client.request(method, &server.entry.url);
    for (k, v) in &server.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    for name in [VERSION_HEADER, "last-event-id"] {
        if let Some(v) = client_headers.get(name) {
            req = req.header(name, v.as_bytes());
        }
    }
    if let Some(s) = upstream_session {
        req = req.header(SESSION_HEADER, s);
    }
    req
}

fn call(identity: &Identity, server: &str, http_method: &'static str, facts: Option<&MessageFacts>) -> McpCall {
    McpCall {
        at_ms: now_ms(),
        server: Some(server.to_string()),
        endpoint: "server",
        http_method,
        method: facts.and_then(|f| f.method.clone()),
        tool: facts.and_then(|f| f.tool.clone()),
        status: 0,
        latency_ms: 0,
        session: None,
        identity: identity.clone(),
    }
}

/// `POST /mcp-servers/{name}/mcp`: JSON-RPC message(s) to the server.
pub async fn post(State(mcp): State<Arc<Mcp>>, Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let c = match check(&mcp, &name, &headers) {
        Ok(c) => c,
        Err(e) => return rejected(&mcp, started, &headers, Some(&name), "POST", e),
    };
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if aqueduct_policy::request::media_type(content_type) != "application/json" {
        let e = ApiError::unsupported_media_type(content_type, "application/json");
        return rejected(&mcp, started, &headers, Some(&name), "POST", e);
    }
    let mut guard = CallGuard::new(mcp.clone(), started, call(&c.identity, &name, "POST", None));
    let facts: Vec<MessageFacts> = match jsonrpc::parse_body(&body) {
        Ok((_, messages)) => messages.iter().map(MessageFacts::from).collect(),
        Err(e) => {
            guard.status(e.status);
            return e.into_response();
        }
    };
    if let Some(c) = guard.call.as_mut() {
        c.method = facts.first().and_then(|f| f.method.clone());
        c.tool = facts.first().and_then(|f| f.tool.clone());
    }
    guard.extra = facts.iter().skip(1).cloned().collect();
    let initialize = facts.len() == 1 && facts[0].method.as_deref() == Some("initialize");
    let session = match (&c.session_header, initialize) {
        (None, false) => {
            let r = session_required();
            guard.status(r.status());
            return r;
        }
        (None, true) => None,
        (Some(id), _) => {
            guard.session(id);
            match sessions::find(&mcp.db, id, c.identity.token_id, Some(&name), chrono::Utc::now().timestamp()).await {
                Ok(Some(s)) => Some(s),
                Ok(None) => {
                    guard.status(StatusCode::NOT_FOUND);
                    return session_not_found();
                }
                Err(e) => return db_error(e),
            }
        }
    };
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json, text/event-stream")
        .to_string();
    let upstream_session = session.as_ref().and_then(|s| s.upstream_session.as_deref());
    let sent = upstream_request(&mcp, &c.server, reqwest::Method::POST, &headers, upstream_session)
        .header("content-type", "application/json")
        .header("accept", accept)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            guard.status(StatusCode::BAD_GATEWAY);
            return upstream_unavailable(&name, &e);
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    guard.status(status);
    if let Some(s) = &session {
        if status == StatusCode::NOT_FOUND && s.upstream_session.is_some() {
            // The upstream forgot its session (restarted, expired): end ours too, so the
            // client starts a new one, as the protocol prescribes for a 404.
            tracing::info!(server = %name, session = %s.id, "MCP upstream session expired");
            if let Err(e) = sessions::delete(&mcp.db, &s.id).await {
                return db_error(e);
            }
            return session_not_found();
        }
    }
    let mut out_headers = pass_headers(resp.headers());
    match &session {
        Some(s) => {
            if let Ok(v) = HeaderValue::from_str(&s.id) {
                out_headers.insert(SESSION_HEADER, v);
            }
        }
        None if status.is_success() => {
            let upstream_session = resp.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
            let s = Session {
                id: sessions::new_id(),
                token_id: c.identity.token_id,
                server: Some(name.clone()),
                upstream_session,
                last_used_at: chrono::Utc::now().timestamp(),
            };
            if let Err(e) = sessions::insert(&mcp.db, &s).await {
                return db_error(e);
            }
            guard.session(&s.id);
            if let Ok(v) = HeaderValue::from_str(&s.id) {
                out_headers.insert(SESSION_HEADER, v);
            }
        }
        None => {}
    }
    with_guard(status, out_headers, resp, guard)
}

/// What GET and DELETE start with: the caller checked (a refusal is recorded), the call's
/// record begun, and the session the request names.
async fn open(
    mcp: &Arc<Mcp>,
    name: &str,
    headers: &HeaderMap,
    method: &'static str,
) -> Result<(Checked, CallGuard, Session), Response> {
    let started = Instant::now();
    let c = check(mcp, name, headers).map_err(|e| rejected(mcp, started, headers, Some(name), method, e))?;
    let mut guard = CallGuard::new(mcp.clone(), started, call(&c.identity, name, method, None));
    let s = session(mcp, &c, name, &mut guard).await?;
    Ok((c, guard, s))
}

/// `GET /mcp-servers/{name}/mcp`: the server's stream of its own messages.
pub async fn get(State(mcp): State<Arc<Mcp>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let (c, mut guard, s) = match open(&mcp, &name, &headers, "GET").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let sent = upstream_request(&mcp, &c.server, reqwest::Method::GET, &headers, s.upstream_session.as_deref())
        .header("accept", "text/event-stream")
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            guard.status(StatusCode::BAD_GATEWAY);
            return upstream_unavailable(&name, &e);
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    guard.status(status);
    if status == StatusCode::NOT_FOUND && s.upstream_session.is_some() {
        if let Err(e) = sessions::delete(&mcp.db, &s.id).await {
            return db_error(e);
        }
        return session_not_found();
    }
    let mut out_headers = pass_headers(resp.headers());
    if let Ok(v) = HeaderValue::from_str(&s.id) {
        out_headers.insert(SESSION_HEADER, v);
    }
    with_guard(status, out_headers, resp, guard)
}

/// `DELETE /mcp-servers/{name}/mcp`: ends the session here and upstream.
pub async fn delete(State(mcp): State<Arc<Mcp>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let (c, mut guard, s) = match open(&mcp, &name, &headers, "DELETE").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Some(up) = s.upstream_session.as_deref() {
        // Best effort: an upstream that does not allow termination (405) or forgot the session
        // still leaves ours ended.
        let sent = upstream_request(&mcp, &c.server, reqwest::Method::DELETE, &headers, Some(up)).send().await;
        if let Err(e) = sent {
            tracing::warn!(server = %name, error = %e, "could not end the upstream MCP session");
        }
    }
    if let Err(e) = sessions::delete(&mcp.db, &s.id).await {
        return db_error(e);
    }
    guard.status(StatusCode::OK);
    StatusCode::OK.into_response()
}

async fn session(mcp: &Mcp, c: &Checked, name: &str, guard: &mut CallGuard) -> Result<Session, Response> {
    let Some(id) = c.session_header.as_deref() else {
        guard.status(StatusCode::BAD_REQUEST);
        return Err(session_required());
    };
    guard.session(id);
    match sessions::find(&mcp.db, id, c.identity.token_id, Some(name), chrono::Utc::now().timestamp()).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => {
            guard.status(StatusCode::NOT_FOUND);
            Err(session_not_found())
        }
        Err(e) => Err(db_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::registry::Registry;
    use crate::mcp::security::HostPolicy;
    use crate::mcp::{McpRecorder, McpSettings};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Collects records, as the usage ledger will.
    #[derive(Debug, Default)]
    struct Collect(Mutex<Vec<McpCall>>);

    impl McpRecorder for Collect {
        fn record(&self, call: McpCall) {
            self.0.lock().unwrap().push(call);
        }
    }

    #[tokio::test]
    async fn one_record_per_message_when_the_answer_ends() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::Db::open(None, dir.path()).await.unwrap();
        let collect = Arc::new(Collect::default());
        let settings = McpSettings {
            hosts: HostPolicy { enabled: false, hosts: vec![], origins: vec![] },
            connect_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(1),
            session_idle: Duration::from_secs(60),
        };
        let mcp = Arc::new(Mcp::new(db, Arc::new(Registry::default()), settings, collect.clone(), "s".into()).unwrap());
        let identity = Identity { token_id: 4, user_id: 2, ..Default::default() };
        let (_, messages) = jsonrpc::parse_body(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}},{"jsonrpc":"2.0","method":"notifications/cancelled"}]"#,
        )
        .unwrap();
        let facts: Vec<MessageFacts> = messages.iter().map(MessageFacts::from).collect();
        let mut guard = CallGuard::new(mcp, Instant::now(), call(&identity, "everything", "POST", facts.first()));
        guard.extra = facts[1..].to_vec();
        guard.status(StatusCode::OK);
        guard.session("abc");
        assert!(collect.0.lock().unwrap().is_empty(), "nothing before the answer ends");
        drop(guard);
        let calls = collect.0.lock().unwrap().clone();
        assert_eq!(calls.len(), 2);
        let echo = calls.iter().find(|c| c.tool.as_deref() == Some("echo")).unwrap();
        assert_eq!(
            (echo.server.as_deref(), echo.method.as_deref(), echo.status, echo.session.as_deref()),
            (Some("everything"), Some("tools/call"), 200, Some("abc"))
        );
        assert_eq!(echo.identity.token_id, 4);
        assert!(calls.iter().any(|c| c.method.as_deref() == Some("notifications/cancelled") && c.tool.is_none()));
    }
}
