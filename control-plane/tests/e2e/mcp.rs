//! The MCP gateway end to end: a real MCP client (`rmcp`) and raw HTTP through the real Envoy
//! and `.wasm` filter to the control plane's proxy and the real reference server
//! (`@modelcontextprotocol/server-everything`).

use crate::harness::{expect_error, http, Harness, ADMIN_KEY};
use crate::mcp_server::Everything;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ClientRequest, GetPromptRequestParams, Implementation,
    NumberOrString, PingRequest, ProgressNotificationParam, ProgressToken, ProtocolVersion, ReadResourceRequestParams,
    RequestMetaObject, ServerResult,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An MCP client speaking one protocol version, counting progress notifications.
#[derive(Clone)]
struct TestClient {
    version: ProtocolVersion,
    progress: Arc<Mutex<Vec<f64>>>,
}

impl ClientHandler for TestClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("aqueduct-e2e", "0"))
            .with_protocol_version(self.version.clone())
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        self.progress.lock().unwrap().push(params.progress);
    }
}

type Client = RunningService<RoleClient, TestClient>;

async fn connect(url: String, key: &str, version: ProtocolVersion) -> (Client, Arc<Mutex<Vec<f64>>>) {
    let progress = Arc::new(Mutex::new(Vec::new()));
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(key.to_string());
    let transport = StreamableHttpClientTransport::from_config(config);
    let client = TestClient { version, progress: progress.clone() }.serve(transport).await.expect("MCP initialize");
    (client, progress)
}

fn servers_json(servers: &[(&str, String)]) -> String {
    let mut map = serde_json::Map::new();
    for (name, url) in servers {
        map.insert(
            name.to_string(),
            json!({"type": "streamable-http", "url": url, "description": "test", "tags": ["t"],
                   "headers": {"X-Upstream-Credential": "os.environ/TEST_MCP_CREDENTIAL"}}),
        );
    }
    json!({ "mcpServers": map }).to_string()
}

async fn start(servers: &[(&str, String)], env: &[(&str, &str)]) -> Harness {
    let mut e = vec![("TEST_MCP_CREDENTIAL", "upstream-secret")];
    e.extend_from_slice(env);
    Harness::start_mcp(&servers_json(servers), &e).await
}

async fn call_text(client: &Client, name: &str, args: Value) -> String {
    let params = CallToolRequestParams::new(name.to_string()).with_arguments(args.as_object().unwrap().clone());
    let r = client.call_tool(params).await.expect("tools/call");
    serde_json::to_value(&r.content).unwrap().to_string()
}

/// Every feature through one server's endpoint with one protocol version.
async fn exercise_server_endpoint(h: &Harness, version: ProtocolVersion) {
    let (client, progress) = connect(h.url("/mcp-servers/everything/mcp"), ADMIN_KEY, version.clone()).await;
    let info = client.peer_info().expect("server info");
    assert_eq!(info.protocol_version, version, "the version the client asked for is passed through");

    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    assert!(call_text(&client, "echo", json!({"message": "hi there"})).await.contains("hi there"));
    assert!(call_text(&client, "get-sum", json!({"a": 2, "b": 40})).await.contains("42"));

    // A long-running call streams its progress notifications (SSE) before the result.
    let mut params = CallToolRequestParams::new("trigger-long-running-operation")
        .with_arguments(json!({"duration": 1, "steps": 4}).as_object().unwrap().clone());
    params.meta = Some(RequestMetaObject::with_progress_token(ProgressToken(NumberOrString::String("p1".into()))));
    let r = client.call_tool(params).await.expect("long-running call");
    assert!(serde_json::to_string(&r.content).unwrap().contains("completed"));
    assert_eq!(*progress.lock().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);

    let resources = client.list_resources(None).await.unwrap().resources;
    let first = resources.first().expect("resources");
    let read = client.read_resource(ReadResourceRequestParams::new(first.uri.clone())).await.unwrap();
    assert!(!read.contents.is_empty());

    let prompts = client.list_prompts(None).await.unwrap().prompts;
    assert!(prompts.iter().any(|p| p.name == "simple-prompt"), "{prompts:?}");
    let prompt = client.get_prompt(GetPromptRequestParams::new("simple-prompt")).await.unwrap();
    assert!(!prompt.messages.is_empty());

    let pong = client.send_request(ClientRequest::PingRequest(PingRequest::default())).await.unwrap();
    assert!(matches!(pong, ServerResult::EmptyResult(_)), "{pong:?}");
    client.cancel().await.unwrap();
}

async fn post(h: &Harness, path: &str, key: &str, session: Option<&str>, body: Value) -> reqwest::Response {
    let mut req =
        http().post(h.url(path)).bearer_auth(key).header("accept", "application/json, text/event-stream").json(&body);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s).header("mcp-protocol-version", "2025-06-18");
    }
    req.send().await.unwrap()
}

fn initialize(version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}})
}

/// Initializes over raw HTTP; returns the gateway's session id.
async fn raw_session(h: &Harness, path: &str, key: &str) -> String {
    let r = post(h, path, key, None, initialize("2025-06-18")).await;
    assert_eq!(r.status(), 200);
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let _ = r.text().await;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(post(h, path, key, Some(&sid), note).await.status(), 202);
    sid
}

/// The JSON-RPC message answering a POST (JSON, or the reply event of an SSE stream).
async fn rpc_reply(r: reqwest::Response) -> Value {
    let sse = r.headers().get("content-type").is_some_and(|c| c.to_str().unwrap().starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    if !sse {
        return serde_json::from_str(&text).unwrap();
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|m| m.get("result").is_some() || m.get("error").is_some())
        .expect("a reply on the stream")
}

/// The control plane's logs, without terminal colour codes.
fn cp_log(h: &Harness) -> String {
    let mut all = String::new();
    for n in 1..=4 {
        all.push_str(&std::fs::read_to_string(h.dir.path().join(format!("cp-{n}.log"))).unwrap_or_default());
    }
    let mut out = String::with_capacity(all.len());
    let mut chars = all.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn mcp_server_endpoint_with_a_real_client_in_two_protocol_versions() {
    let everything = Everything::start().await;
    let h = start(&[("everything", everything.url())], &[]).await;
    exercise_server_endpoint(&h, ProtocolVersion::V_2025_06_18).await;
    exercise_server_endpoint(&h, ProtocolVersion::V_2025_03_26).await;

    // Every request was recorded: server, method, tool, status, latency.
    h.eventually(Duration::from_secs(5), || async {
        let log = cp_log(&h);
        log.contains("mcp call")
            && log
                .lines()
                .any(|l| l.contains("method=\"tools/call\"") && l.contains("tool=\"echo\"") && l.contains("status=200"))
            && log.lines().any(|l| l.contains("method=\"initialize\"") && l.contains("server=\"everything\""))
            && log.lines().any(|l| l.contains("http_method=\"DELETE\""))
    })
    .await;
}

#[tokio::test]
async fn mcp_sessions_are_bound_to_the_key_and_end_with_delete() {
    let everything = Everything::start().await;
    let h = start(&[("everything", everything.url())], &[]).await;
    let (_, other_key) = h.create_token("other", None).await;
    let path = "/mcp-servers/everything/mcp";
    let sid = raw_session(&h, path, ADMIN_KEY).await;
    let ping = json!({"jsonrpc": "2.0", "id": 7, "method": "ping"});
    let r = post(&h, path, ADMIN_KEY, Some(&sid), ping.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(rpc_reply(r).await["id"], 7, "the reply to this request, by id");

    // Another key cannot use the session, whatever it knows of it.
    let r = post(&h, path, &other_key, Some(&sid), ping.clone()).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32001);
    // No session header: 400; unknown session: 404.
    assert_eq!(post(&h, path, ADMIN_KEY, None, ping.clone()).await.status(), 400);
    assert_eq!(post(&h, path, ADMIN_KEY, Some("nope"), ping.clone()).await.status(), 404);
    // The key is checked by the filter: none, or a wrong one, is a 401 in OpenAI's shape.
    let r = http().post(h.url(path)).json(&ping).send().await.unwrap();
    expect_error(r, 401, "invalid_request_error").await;
    let r = http().post(h.url(path)).bearer_auth("sk-wrong").json(&ping).send().await.unwrap();
    expect_error(r, 401, "invalid_request_error").await;
    // Identity headers from the client are stripped, so they cannot impersonate another key.
    let r = http()
        .post(h.url(path))
        .header("x-aqueduct-secret", "guess")
        .header("x-aqueduct-token-id", "1")
        .header("mcp-session-id", &sid)
        .json(&ping)
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "invalid_request_error").await;
    // The control plane's own address refuses identity headers without the secret.
    let r = http()
        .post(format!("http://{}{path}", h.http))
        .header("x-aqueduct-token-id", "1")
        .header("x-aqueduct-user-id", "1")
        .header("mcp-session-id", &sid)
        .json(&ping)
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "invalid_request_error").await;
    // Bad input: not JSON (JSON-RPC parse error), wrong content type (415).
    let r = http()
        .post(h.url(path))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .header("mcp-session-id", &sid)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32700);
    let r = http().post(h.url(path)).bearer_auth(ADMIN_KEY).body("x").send().await.unwrap();
    expect_error(r, 415, "invalid_request_error").await;

    // DELETE ends it for good.
    let del = |key: &str| http().delete(h.url(path)).bearer_auth(key).header("mcp-session-id", &sid).send();
    assert_eq!(del(&other_key).await.unwrap().status(), 404);
    assert_eq!(del(ADMIN_KEY).await.unwrap().status(), 200);
    assert_eq!(post(&h, path, ADMIN_KEY, Some(&sid), ping).await.status(), 404);
}

#[tokio::test]
async fn mcp_session_survives_a_control_plane_restart() {
    let everything = Everything::start().await;
    let mut h = start(&[("everything", everything.url())], &[]).await;
    let (client, _) = connect(h.url("/mcp-servers/everything/mcp"), ADMIN_KEY, ProtocolVersion::V_2025_06_18).await;
    assert!(call_text(&client, "echo", json!({"message": "before"})).await.contains("before"));
    h.stop_cp();
    h.start_cp();
    let cp = format!("http://{}/health", h.http);
    h.eventually(Duration::from_secs(20), || async { http().get(&cp).send().await.is_ok_and(|r| r.status() == 200) })
        .await;
    // Same client, same session: the gateway found it in the store.
    assert!(call_text(&client, "echo", json!({"message": "after"})).await.contains("after"));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn mcp_host_and_origin_checks() {
    let everything = Everything::start().await;
    let h = start(&[("everything", everything.url())], &[("AQUEDUCT_MCP_ALLOWED_HOSTS", "127.0.0.1:*,gw.example.com")])
        .await;
    let send = |host: Option<&str>, origin: Option<&str>| {
        let mut req = http()
            .post(h.url("/mcp-servers/everything/mcp"))
            .bearer_auth(ADMIN_KEY)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize("2025-06-18"));
        if let Some(v) = host {
            req = req.header("host", v);
        }
        if let Some(v) = origin {
            req = req.header("origin", v);
        }
        req.send()
    };
    assert_eq!(send(None, None).await.unwrap().status(), 200);
    assert_eq!(send(Some("gw.example.com"), None).await.unwrap().status(), 200);
    expect_error(send(Some("gw.example.com:8080"), None).await.unwrap(), 421, "invalid_request_error").await;
    expect_error(send(Some("localhost:80"), None).await.unwrap(), 421, "invalid_request_error").await;
    expect_error(send(None, Some("http://evil.example")).await.unwrap(), 403, "permission_denied_error").await;
    assert_eq!(send(None, Some("http://localhost:3000")).await.unwrap().status(), 200);
    let r = http().post(h.url("/mcp")).bearer_auth(ADMIN_KEY).header("origin", "null").json(&initialize("2025-06-18"));
    expect_error(r.send().await.unwrap(), 403, "permission_denied_error").await;
}
