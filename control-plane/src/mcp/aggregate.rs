//! `/mcp`: one MCP server made of every server the caller may use.
//!
//! The gateway answers `initialize`, `ping` and the list methods itself; lists are gathered
//! from each allowed upstream (concurrently, one failing upstream is left out) with names
//! prefixed `{server}__` and resource URIs wrapped as `aqueduct://{server}/{uri}`. Calls
//! (`tools/call`, `prompts/get`, `resources/read`, …) are routed by that prefix and the upstream's
//! answer, JSON or SSE with progress notifications, streams back unchanged. Each gateway session
//! opens its own session with an upstream on first use (kept in the store); an upstream that
//! lost its session gets a new one and the request is retried once.

use super::jsonrpc::{self, MessageFacts};
use super::proxy::{
    pass_headers, rejected, session_not_found, session_required, upstream_request, with_guard, CallGuard,
    SESSION_HEADER, VERSION_HEADER,
};
use super::registry::Server;
use super::sessions::{self, Session, Upstream};
use super::{now_ms, Mcp, McpCall};
use crate::auth::identity::Identity;
use aqueduct_policy::ApiError;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use rmcp::model::{
    ClientCapabilities, ClientNotification, ClientRequest, EmptyResult, ErrorCode, ErrorData, Implementation,
    InitializeRequest, InitializeRequestParams, InitializeResult, InitializedNotification, JsonRpcNotification,
    JsonRpcRequest, JsonRpcVersion2_0, ListPromptsRequest, ListResourceTemplatesRequest, ListResourcesRequest,
    ListToolsRequest, PaginatedRequestParams, PromptsCapability, ProtocolVersion, RequestId, ResourcesCapability,
    ServerCapabilities, ToolsCapability,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;

/// Separates the server from the tool or prompt name: `everything__echo`.
pub const SEPARATOR: &str = "__";
/// Resource URIs become `aqueduct://{server}/{original uri}`.
pub const URI_PREFIX: &str = "aqueduct://";
/// Protocol version offered to upstreams when the client sent none.
const DEFAULT_VERSION: ProtocolVersion = ProtocolVersion::V_2025_06_18;
/// Most pages read from one upstream for one list.
const MAX_PAGES: usize = 20;
/// What this endpoint tells a client about itself.
const INSTRUCTIONS: &str = "Tools, prompts and resources of several MCP servers. Names are prefixed with the \
                            server's name and \"__\"; resource URIs are aqueduct://{server}/{uri}.";

/// A list the gateway answers itself, gathered from every server the caller may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl List {
    const ALL: [List; 4] = [List::Tools, List::Prompts, List::Resources, List::ResourceTemplates];

    fn from_method(method: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.request(None).method() == method)
    }

    /// The key of the result's items.
    fn key(self) -> &'static str {
        match self {
            List::Tools => "tools",
            List::Prompts => "prompts",
            List::Resources => "resources",
            List::ResourceTemplates => "resourceTemplates",
        }
    }

    /// The request for one page.
    fn request(self, cursor: Option<String>) -> ClientRequest {
        let params = PaginatedRequestParams::default().with_cursor(cursor);
        match self {
            List::Tools => ListToolsRequest::with_param(params).into(),
            List::Prompts => ListPromptsRequest::with_param(params).into(),
            List::Resources => ListResourcesRequest::with_param(params).into(),
            List::ResourceTemplates => ListResourceTemplatesRequest::with_param(params).into(),
        }
    }
}

fn record(identity: &Identity, method: Option<String>) -> McpCall {
    McpCall {
        at_ms: now_ms(),
        server: None,
        endpoint: "aggregate",
        http_method: "POST",
        method,
        tool: None,
        status: 0,
        latency_ms: 0,
        session: None,
        identity: identity.clone(),
    }
}

fn checked(mcp: &Mcp, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let identity = Identity::from_headers(headers, &mcp.secret)?;
    mcp.settings.hosts.check(headers)?;
    Ok(identity)
}

/// A JSON answer in `session`, recorded with its status.
fn reply(status: StatusCode, body: impl Serialize, session: &str, guard: &mut CallGuard) -> Response {
    guard.status(status);
    let mut resp = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(session) {
        resp.headers_mut().insert(SESSION_HEADER, v);
    }
    resp
}

/// This endpoint's answer to `initialize`.
fn initialize_result(version: ProtocolVersion) -> InitializeResult {
    let mut capabilities = ServerCapabilities::default();
    capabilities.tools = Some(ToolsCapability::default());
    capabilities.prompts = Some(PromptsCapability::default());
    capabilities.resources = Some(ResourcesCapability::default());
    InitializeResult::new(capabilities)
        .with_protocol_version(version)
        .with_server_info(Implementation::new("aqueduct", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
}

/// The servers this caller may use, by name.
fn allowed(mcp: &Mcp, identity: &Identity) -> Vec<Arc<Server>> {
    let mut v: Vec<Arc<Server>> = mcp.registry.all().values().filter(|s| identity.allows(&s.name)).cloned().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// `POST /mcp`.
pub async fn post(
    axum::extract::State(mcp): axum::extract::State<Arc<Mcp>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let identity = match checked(&mcp, &headers) {
        Ok(i) => i,
        Err(e) => return rejected(&mcp, started, &headers, None, "POST", e),
    };
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if aqueduct_policy::request::media_type(content_type) != "application/json" {
        let e = ApiError::unsupported_media_type(content_type, "application/json");
        return rejected(&mcp, started, &headers, None, "POST", e);
    }
    let mut guard = CallGuard::new(mcp.clone(), started, record(&identity, None));
    let (msg, messages) = match jsonrpc::parse_body(&body) {
        Ok(v) => v,
        Err(e) => {
            guard.status(e.status);
            return e.into_response();
        }
    };
    let [message] = messages.as_slice() else {
        guard.status(StatusCode::BAD_REQUEST);
        let text = "Invalid Request: the aggregated endpoint takes one message per request, not a batch";
        return jsonrpc::error_reply(StatusCode::BAD_REQUEST, ErrorData::invalid_request(text, None), None);
    };
    let f = MessageFacts::from(message);
    let method = f.method.clone().unwrap_or_default();
    if let Some(c) = guard.call_mut() {
        c.method = f.method.clone();
    }
    let session_header = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let now = chrono::Utc::now().timestamp();
    if let (Some(id), "initialize") = (&f.id, method.as_str()) {
        let s = Session {
            id: sessions::new_id(),
            token_id: identity.token_id,
            server: None,
            upstream_session: None,
            last_used_at: now,
        };
        if let Err(e) = sessions::insert(&mcp.db, &s).await {
            return crate::api::error::Error::from(e).into_response();
        }
        guard.session(&s.id);
        // Whatever version the client asks for is agreed: this endpoint's own answers are the
        // same in every version, and each upstream negotiates its own.
        let version = msg
            .pointer("/params/protocolVersion")
            .and_then(|v| ProtocolVersion::deserialize(v).ok())
            .unwrap_or(DEFAULT_VERSION);
        let body = jsonrpc::result_body(id.clone(), initialize_result(version));
        return reply(StatusCode::OK, body, &s.id, &mut guard);
    }
    let Some(sid) = session_header else {
        guard.status(StatusCode::BAD_REQUEST);
        return session_required();
    };
    guard.session(&sid);
    let session = match sessions::find(&mcp.db, &sid, identity.token_id, None, now).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            guard.status(StatusCode::NOT_FOUND);
            return session_not_found();
        }
        Err(e) => return crate::api::error::Error::from(e).into_response(),
    };
    let Some(id) = f.id.clone() else {
        // Notifications, and replies to server requests (which this endpoint never sends).
        guard.status(StatusCode::ACCEPTED);
        return StatusCode::ACCEPTED.into_response();
    };
    if method == "ping" || method == "logging/setLevel" {
        return reply(StatusCode::OK, jsonrpc::result_body(id, EmptyResult {}), &session.id, &mut guard);
    }
    if let Some(list) = List::from_method(&method) {
        let items = gather(&mcp, &session, &identity, &headers, list).await;
        // Items stay JSON: see `gather`.
        let body = jsonrpc::result_body(id, json!({ list.key(): items }));
        return reply(StatusCode::OK, body, &session.id, &mut guard);
    }
    let mut msg = msg;
    let Some(server) = route(&mut msg, &method) else {
        let (code, text) = if known_routed(&method) {
            (ErrorCode::INVALID_PARAMS, format!("Invalid params: no such {} on this gateway", what(&method)))
        } else {
            (ErrorCode::METHOD_NOT_FOUND, format!("Method not found: {method}"))
        };
        let body = jsonrpc::error_body(ErrorData::new(code, text, None), Some(id));
        return reply(StatusCode::OK, body, &session.id, &mut guard);
    };
    let Some(server) = mcp.registry.get(&server).filter(|s| identity.allows(&s.name)) else {
        let text = format!("Invalid params: no such {} on this gateway", what(&method));
        let body = jsonrpc::error_body(ErrorData::invalid_params(text, None), Some(id));
        return reply(StatusCode::OK, body, &session.id, &mut guard);
    };
    if let Some(c) = guard.call_mut() {
        c.server = Some(server.name.clone());
        c.tool = (method == "tools/call")
            .then(|| msg.pointer("/params/name").and_then(Value::as_str))
            .flatten()
            .map(str::to_string);
    }
    let resp = match forward(&mcp, &session, &server, &headers, &msg).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(server = %server.name, error = %e, "MCP upstream failed");
            let text = format!("The MCP server '{}' is unavailable: {e}", server.name);
            let body = jsonrpc::error_body(ErrorData::internal_error(text, None), Some(id));
            return reply(StatusCode::OK, body, &session.id, &mut guard);
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    guard.status(status);
    let mut out = pass_headers(resp.headers());
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        out.insert(SESSION_HEADER, v);
    }
    with_guard(status, out, resp, guard)
}

fn known_routed(method: &str) -> bool {
    matches!(
        method,
        "tools/call"
            | "prompts/get"
            | "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe"
            | "completion/complete"
    )
}

fn what(method: &str) -> &'static str {
    match method {
        "tools/call" => "tool",
        "prompts/get" => "prompt",
        "completion/complete" => "prompt or resource",
        _ => "resource",
    }
}

/// Splits `server__name`.
fn split_name(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR).filter(|(s, n)| !s.is_empty() && !n.is_empty())
}

/// Splits `aqueduct://server/uri`.
fn split_uri(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix(URI_PREFIX)?.split_once('/').filter(|(s, u)| !s.is_empty() && !u.is_empty())
}

/// Rewrites a routed request for its upstream; returns the server it goes to. The request is
/// forwarded as the client wrote it apart from the one field, so it stays JSON: rmcp's typed
/// params would drop what rmcp does not model.
fn route(msg: &mut Value, method: &str) -> Option<String> {
    let params = msg.get_mut("params")?.as_object_mut()?;
    let rewrite = |obj: &mut Map<String, Value>, field: &str, split: fn(&str) -> Option<(&str, &str)>| {
        let value = obj.get(field)?.as_str()?;
        let (server, rest) = split(value)?;
        let (server, rest) = (server.to_string(), rest.to_string());
        obj.insert(field.to_string(), Value::String(rest));
        Some(server)
    };
    match method {
        "tools/call" | "prompts/get" => rewrite(params, "name", split_name),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => rewrite(params, "uri", split_uri),
        "completion/complete" => {
            let r = params.get_mut("ref")?.as_object_mut()?;
            match r.get("type").and_then(Value::as_str)? {
                "ref/prompt" => rewrite(r, "name", split_name),
                "ref/resource" => rewrite(r, "uri", split_uri),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Prefixes one listed item with its server.
fn prefix_item(server: &str, key: &str, item: &mut Value) {
    let Some(obj) = item.as_object_mut() else { return };
    let field = match key {
        "resources" => "uri",
        "resourceTemplates" => "uriTemplate",
        _ => "name",
    };
    if let Some(v) = obj.get(field).and_then(Value::as_str) {
        let new = if field == "name" { format!("{server}{SEPARATOR}{v}") } else { format!("{URI_PREFIX}{server}/{v}") };
        obj.insert(field.to_string(), Value::String(new));
    }
    if field != "name" {
        if let Some(v) = obj.get("name").and_then(Value::as_str) {
            let new = format!("{server}{SEPARATOR}{v}");
            obj.insert("name".to_string(), Value::String(new));
        }
    }
}

/// Every allowed server's items of one list, prefixed; failing servers are left out.
///
/// The items stay JSON rather than rmcp's `Tool`, `Prompt`, `Resource` and `ResourceTemplate`:
/// each is passed on as its server wrote it apart from the prefixed name, and the typed forms
/// drop what rmcp does not model (the reference server's tools carry `execution`, from the
/// 2025-11-25 revision, which rmcp's `Tool` lacks).
async fn gather(mcp: &Mcp, session: &Session, identity: &Identity, headers: &HeaderMap, list: List) -> Vec<Value> {
    let key = list.key();
    let servers = allowed(mcp, identity);
    let lists = futures::future::join_all(servers.iter().map(|server| async move {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 0..MAX_PAGES {
            let msg = JsonRpcRequest::new(RequestId::String(format!("aqueduct-{page}").into()), list.request(cursor));
            match call(mcp, session, server, headers, &msg).await {
                Ok(mut result) => {
                    if let Some(Value::Array(list)) = result.get_mut(key).map(Value::take) {
                        items.extend(list.into_iter().map(|mut it| {
                            prefix_item(&server.name, key, &mut it);
                            it
                        }));
                    }
                    cursor = result.get("nextCursor").and_then(Value::as_str).map(str::to_string);
                    if cursor.is_none() {
                        break;
                    }
                }
                Err(e) => {
                    // One server down must not hide the others' tools.
                    let method = msg.request.method();
                    tracing::warn!(server = %server.name, method, error = %e, "MCP upstream left out of the list");
                    break;
                }
            }
        }
        items
    }))
    .await;
    lists.into_iter().flatten().collect()
}

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("unreachable: {0}")]
    Http(#[from] reqwest::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answered with a JSON-RPC error: {0}")]
    Rpc(ErrorData),
    #[error("sent an unreadable event stream: {0}")]
    Sse(#[from] sse_stream::Error),
    #[error("did not answer the request")]
    NoReply,
    #[error("timed out")]
    Timeout,
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
}

/// This session's session with `server`: the stored one, or a new one (`initialize` and
/// `notifications/initialized`).
async fn upstream_session(
    mcp: &Mcp,
    session: &Session,
    server: &Server,
    headers: &HeaderMap,
) -> Result<Upstream, UpstreamError> {
    if let Some(u) = sessions::upstream(&mcp.db, &session.id, &server.name).await? {
        return Ok(u);
    }
    let offered =
        headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()).map_or(DEFAULT_VERSION, jsonrpc::protocol_version);
    let init = initialize_request(offered.clone());
    let resp = send(mcp, server, None, None, &init).await?;
    let up_session = resp.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let result = read_reply(mcp, resp, &init.id).await?;
    // Only the agreed version is kept, so only it is read: the whole `InitializeResult` would
    // refuse a server over fields the gateway never looks at.
    let version = result.get("protocolVersion").and_then(|v| ProtocolVersion::deserialize(v).ok()).unwrap_or(offered);
    let u = Upstream { upstream_session: up_session, protocol_version: version.to_string() };
    let r = send(mcp, server, u.upstream_session.as_deref(), Some(&u.protocol_version), &initialized()).await?;
    if !r.status().is_success() {
        return Err(UpstreamError::Status(r.status().as_u16()));
    }
    sessions::set_upstream(&mcp.db, &session.id, &server.name, &u).await?;
    Ok(u)
}

/// The gateway's `initialize` to an upstream, offering `version`.
fn initialize_request(version: ProtocolVersion) -> JsonRpcRequest<ClientRequest> {
    let client = Implementation::new("aqueduct-gateway", env!("CARGO_PKG_VERSION"));
    let params = InitializeRequestParams::new(ClientCapabilities::default(), client).with_protocol_version(version);
    JsonRpcRequest::new(RequestId::String("aqueduct-init".into()), InitializeRequest::new(params).into())
}

/// `notifications/initialized`, which ends an upstream's initialization.
fn initialized() -> JsonRpcNotification<ClientNotification> {
    JsonRpcNotification { jsonrpc: JsonRpcVersion2_0, notification: InitializedNotification::default().into() }
}

async fn send(
    mcp: &Mcp,
    server: &Server,
    session: Option<&str>,
    version: Option<&str>,
    msg: &impl Serialize,
) -> Result<reqwest::Response, UpstreamError> {
    let mut req = upstream_request(mcp, server, reqwest::Method::POST, &HeaderMap::new(), session)
        .header("accept", "application/json, text/event-stream")
        .json(msg);
    if let Some(v) = version {
        req = req.header(VERSION_HEADER, v);
    }
    Ok(req.send().await?)
}

/// Sends `msg` in this session's session with `server`, re-initialising once if the upstream
/// lost it (404).
async fn forward(
    mcp: &Mcp,
    session: &Session,
    server: &Server,
    headers: &HeaderMap,
    msg: &impl Serialize,
) -> Result<reqwest::Response, UpstreamError> {
    for attempt in 0..2 {
        let u = upstream_session(mcp, session, server, headers).await?;
        let resp = send(mcp, server, u.upstream_session.as_deref(), Some(&u.protocol_version), msg).await?;
        // The protocol answers 404 for an unknown session; the reference server (and others
        // built on the TypeScript SDK's examples) answer 400. Either way a fresh session is
        // tried once; a request that is really bad fails again and that answer is returned.
        let lost = matches!(resp.status(), reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::BAD_REQUEST);
        if lost && u.upstream_session.is_some() && attempt == 0 {
            tracing::info!(server = %server.name, session = %session.id, "MCP upstream session expired; re-initialising");
            sessions::clear_upstream(&mcp.db, &session.id, &server.name).await?;
            continue;
        }
        return Ok(resp);
    }
    Err(UpstreamError::Status(404))
}

/// A request the gateway makes for itself: forwards and reads the reply's `result`.
async fn call(
    mcp: &Mcp,
    session: &Session,
    server: &Server,
    headers: &HeaderMap,
    msg: &JsonRpcRequest<ClientRequest>,
) -> Result<Value, UpstreamError> {
    let resp = forward(mcp, session, server, headers, msg).await?;
    read_reply(mcp, resp, &msg.id).await
}

/// The `result` of the reply to request `id` in a JSON or SSE answer (other messages on the
/// stream, such as notifications, are skipped).
async fn read_reply(mcp: &Mcp, resp: reqwest::Response, id: &RequestId) -> Result<Value, UpstreamError> {
    if !resp.status().is_success() {
        return Err(UpstreamError::Status(resp.status().as_u16()));
    }
    let sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
    let read = async {
        let reply = if sse {
            // Events that are not JSON-RPC (the priming event's empty data, say) are skipped.
            let mut events = sse_stream::SseStream::from_bytes_stream(resp.bytes_stream());
            let mut found = None;
            while let Some(event) = events.next().await {
                let data = event?.data.unwrap_or_default();
                found = serde_json::from_str::<jsonrpc::Message>(&data).ok().and_then(|m| jsonrpc::reply_to(m, id));
                if found.is_some() {
                    break;
                }
            }
            found
        } else {
            jsonrpc::messages(&resp.bytes().await?).into_iter().find_map(|m| jsonrpc::reply_to(m, id))
        };
        reply.ok_or(UpstreamError::NoReply)?.map_err(UpstreamError::Rpc)
    };
    tokio::time::timeout(mcp.settings.call_timeout, read).await.map_err(|_| UpstreamError::Timeout)?
}

/// `GET /mcp`: this endpoint sends no messages of its own, so it offers no stream (405, as the
/// protocol allows).
pub async fn get(axum::extract::State(mcp): axum::extract::State<Arc<Mcp>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    if let Err(e) = checked(&mcp, &headers) {
        return rejected(&mcp, started, &headers, None, "GET", e);
    }
    let e =
        ApiError::new(405, "The aggregated MCP endpoint offers no server stream; use POST.").code("method_not_allowed");
    let mut resp = rejected(&mcp, started, &headers, None, "GET", e);
    resp.headers_mut().insert("allow", HeaderValue::from_static("POST, DELETE"));
    resp
}

/// `DELETE /mcp`: ends the session and its upstream sessions.
pub async fn delete(axum::extract::State(mcp): axum::extract::State<Arc<Mcp>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let identity = match checked(&mcp, &headers) {
        Ok(i) => i,
        Err(e) => return rejected(&mcp, started, &headers, None, "DELETE", e),
    };
    let mut guard = CallGuard::new(mcp.clone(), started, McpCall { http_method: "DELETE", ..record(&identity, None) });
    let Some(sid) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        guard.status(StatusCode::BAD_REQUEST);
        return session_required();
    };
    guard.session(sid);
    let now = chrono::Utc::now().timestamp();
    let session = match sessions::find(&mcp.db, sid, identity.token_id, None, now).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            guard.status(StatusCode::NOT_FOUND);
            return session_not_found();
        }
        Err(e) => return crate::api::error::Error::from(e).into_response(),
    };
    let ups = sessions::upstreams(&mcp.db, &session.id).await.unwrap_or_default();
    futures::future::join_all(ups.iter().filter_map(|(name, up)| {
        let server = mcp.registry.get(name)?;
        let up = up.clone()?;
        let mcp = &mcp;
        Some(async move {
            let sent =
                upstream_request(mcp, &server, reqwest::Method::DELETE, &HeaderMap::new(), Some(&up)).send().await;
            if let Err(e) = sent {
                tracing::warn!(server = %server.name, error = %e, "could not end the upstream MCP session");
            }
        })
    }))
    .await;
    if let Err(e) = sessions::delete(&mcp.db, &session.id).await {
        return crate::api::error::Error::from(e).into_response();
    }
    guard.status(StatusCode::OK);
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_prefix_and_rewrites() {
        let mut m = json!({"params": {"name": "everything__get-sum", "arguments": {}}});
        assert_eq!(route(&mut m, "tools/call").as_deref(), Some("everything"));
        assert_eq!(m["params"]["name"], "get-sum");
        let mut m = json!({"params": {"uri": "aqueduct://everything/demo://resource/static/document/a.md"}});
        assert_eq!(route(&mut m, "resources/read").as_deref(), Some("everything"));
        assert_eq!(m["params"]["uri"], "demo://resource/static/document/a.md");
        let mut m = json!({"params": {"ref": {"type": "ref/prompt", "name": "s__p"}}});
        assert_eq!(route(&mut m, "completion/complete").as_deref(), Some("s"));
        assert_eq!(route(&mut json!({"params": {"name": "plain"}}), "tools/call"), None);
        assert_eq!(route(&mut json!({"params": {"name": "__x"}}), "tools/call"), None);
        assert_eq!(route(&mut json!({"params": {"uri": "file:///x"}}), "resources/read"), None);
    }

    #[test]
    fn own_messages_have_the_protocol_shape() {
        fn v(m: impl Serialize) -> Value {
            serde_json::to_value(m).unwrap()
        }
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            v(jsonrpc::result_body(RequestId::Number(1), initialize_result(ProtocolVersion::V_2025_03_26))),
            json!({"jsonrpc": "2.0", "id": 1, "result": {
                "protocolVersion": "2025-03-26",
                "capabilities": {"tools": {}, "prompts": {}, "resources": {}},
                "serverInfo": {"name": "aqueduct", "version": version},
                "instructions": INSTRUCTIONS,
            }})
        );
        assert_eq!(
            v(initialize_request(jsonrpc::protocol_version("2025-06-18"))),
            json!({"jsonrpc": "2.0", "id": "aqueduct-init", "method": "initialize", "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "aqueduct-gateway", "version": version},
            }})
        );
        assert_eq!(v(initialized()), json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        let page = |cursor: Option<&str>| {
            let request = List::ResourceTemplates.request(cursor.map(str::to_string));
            v(JsonRpcRequest::new(RequestId::String("aqueduct-0".into()), request))
        };
        assert_eq!(
            page(None),
            json!({"jsonrpc": "2.0", "id": "aqueduct-0", "method": "resources/templates/list", "params": {}})
        );
        assert_eq!(page(Some("c"))["params"], json!({"cursor": "c"}));
        assert_eq!(
            v(jsonrpc::result_body(RequestId::Number(2), EmptyResult {})),
            json!({"jsonrpc": "2.0", "id": 2, "result": {}})
        );
        let lists: Vec<_> = ["tools/list", "prompts/list", "resources/list", "resources/templates/list", "tools/call"]
            .into_iter()
            .map(List::from_method)
            .collect();
        assert_eq!(
            lists,
            [Some(List::Tools), Some(List::Prompts), Some(List::Resources), Some(List::ResourceTemplates), None]
        );
    }

    #[test]
    fn prefixes_listed_items() {
        let mut t = json!({"name": "echo"});
        prefix_item("s", "tools", &mut t);
        assert_eq!(t["name"], "s__echo");
        let mut r = json!({"name": "doc", "uri": "demo://x"});
        prefix_item("s", "resources", &mut r);
        assert_eq!((r["name"].as_str(), r["uri"].as_str()), (Some("s__doc"), Some("aqueduct://s/demo://x")));
        let mut r = json!({"name": "t", "uriTemplate": "demo://x/{id}"});
        prefix_item("s", "resourceTemplates", &mut r);
        assert_eq!(r["uriTemplate"], "aqueduct://s/demo://x/{id}");
        // A prefixed name routes back to the original.
        let mut m = json!({"params": {"uri": r["uriTemplate"].as_str().unwrap().replace("{id}", "7")}});
        assert_eq!(route(&mut m, "resources/read").as_deref(), Some("s"));
        assert_eq!(m["params"]["uri"], "demo://x/7");
    }
}
