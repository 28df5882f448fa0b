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

#[tokio::test]
async fn mcp_server_endpoint_with_a_real_client_in_two_protocol_versions() {
    let everything = Everything::start().await;
    let h = start(&[("everything", everything.url())], &[]).await;
    exercise_server_endpoint(&h, ProtocolVersion::V_2025_06_18).await;
    exercise_server_endpoint(&h, ProtocolVersion::V_2025_03_26).await;

    // Every request was recorded in the usage ledger: server, method, tool, status, latency.
    let events = || async {
        let r = http().get(h.url("/api/v1/usage/requests?limit=1000")).bearer_auth(ADMIN_KEY).send().await.unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        v["data"].as_array().cloned().unwrap_or_default()
    };
    h.eventually(Duration::from_secs(5), || async {
        let e = events().await;
        e.iter().any(|r| r["mcp_method"] == "tools/call" && r["mcp_tool"] == "echo" && r["status"] == 200)
            && e.iter().any(|r| r["mcp_method"] == "initialize" && r["mcp_server"] == "everything")
            && e.iter().any(|r| r["method"] == "DELETE" && r["path"] == "/mcp-servers/everything/mcp")
    })
    .await;
    let e = events().await;
    let call = e.iter().find(|r| r["mcp_tool"] == "echo").unwrap();
    assert_eq!((call["outcome"].as_str(), call["token_id"].is_null()), (Some("ok"), false), "{call}");
    assert!(call["latency_ms"].as_i64().is_some());
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

    // Relayed answers are not held back: an upstream's SSE answer reaches the client in several
    // small writes, and without TCP_NODELAY on the control plane each tools/call waited ~40 ms
    // for Envoy's delayed ACK (measured: 48 ms median instead of 1 ms).
    // One keep-alive connection, each request in one write (as Python's http.client does), so
    // only the gateway's own writes can be held back.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(h.listen).await.unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"message": "quick"}}})
    .to_string();
    let mut took = Vec::new();
    for _ in 0..21 {
        let t = std::time::Instant::now();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {ADMIN_KEY}\r\ncontent-type: application/json\r\n\
             accept: application/json, text/event-stream\r\nmcp-session-id: {sid}\r\nmcp-protocol-version: 2025-06-18\r\n\
             content-length: {}\r\n\r\n",
            h.listen,
            body.len()
        );
        conn.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
        // The answer is chunked (streamed); it ends with the last chunk.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"0\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&got).contains("\"id\":7"));
        took.push(t.elapsed());
    }
    took.sort();
    assert!(took[10] < Duration::from_millis(25), "median tools/call through the gateway {:?}", took[10]);

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
    let h = start(&[("everything", everything.url())], &[]).await;
    survive_restart(h).await;
}

#[tokio::test]
async fn mcp_session_survives_a_control_plane_restart_on_postgres() {
    let everything = Everything::start().await;
    let servers = servers_json(&[("everything", everything.url())]);
    let h = Harness::start_mcp_pg(&servers, &[("TEST_MCP_CREDENTIAL", "upstream-secret")]).await;
    survive_restart(h).await;
}

/// A client's session (per-server and aggregated) goes on across a control-plane restart.
async fn survive_restart(mut h: Harness) {
    let (agg, _) = connect(h.url("/mcp"), ADMIN_KEY, ProtocolVersion::V_2025_06_18).await;
    assert!(call_text(&agg, "everything__echo", json!({"message": "agg before"})).await.contains("agg before"));
    let (client, _) = connect(h.url("/mcp-servers/everything/mcp"), ADMIN_KEY, ProtocolVersion::V_2025_06_18).await;
    assert!(call_text(&client, "echo", json!({"message": "before"})).await.contains("before"));
    h.stop_cp();
    h.start_cp();
    let cp = format!("http://{}/health", h.http);
    h.eventually(Duration::from_secs(20), || async { http().get(&cp).send().await.is_ok_and(|r| r.status() == 200) })
        .await;
    // Same client, same session: the gateway found it in the store.
    assert!(call_text(&client, "echo", json!({"message": "after"})).await.contains("after"));
    assert!(call_text(&agg, "everything__echo", json!({"message": "agg after"})).await.contains("agg after"));
    client.cancel().await.unwrap();
    agg.cancel().await.unwrap();
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
    // Refusals are recorded in the usage ledger too.
    h.eventually(Duration::from_secs(5), || async {
        let r = http().get(h.url("/api/v1/usage/requests?limit=1000")).bearer_auth(ADMIN_KEY).send().await.unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        let e = v["data"].as_array().cloned().unwrap_or_default();
        e.iter().any(|r| r["status"] == 421) && e.iter().any(|r| r["path"] == "/mcp" && r["status"] == 403)
    })
    .await;
}

#[tokio::test]
async fn mcp_aggregated_endpoint_routes_filters_and_survives_a_failing_upstream() {
    let first = Everything::start().await;
    let mut second = Everything::start().await;
    let dead = format!("http://127.0.0.1:{}/mcp", crate::harness::free_port());
    let h = start(&[("everything", first.url()), ("second", second.url()), ("broken", dead)], &[]).await;
    let (client, progress) = connect(h.url("/mcp"), ADMIN_KEY, ProtocolVersion::V_2025_06_18).await;
    assert_eq!(client.peer_info().unwrap().server_info.as_ref().unwrap().name, "aqueduct");

    // Both live servers' tools, prefixed; the unreachable one is left out, not an error.
    let tools: Vec<String> = client.list_all_tools().await.unwrap().iter().map(|t| t.name.to_string()).collect();
    assert!(tools.contains(&"everything__echo".to_string()), "{tools:?}");
    assert!(tools.contains(&"second__get-sum".to_string()), "{tools:?}");
    assert!(!tools.iter().any(|t| t.starts_with("broken__")), "{tools:?}");
    assert!(call_text(&client, "second__get-sum", json!({"a": 1, "b": 2})).await.contains('3'));

    // Routed calls stream their progress notifications too.
    let mut params = CallToolRequestParams::new("everything__trigger-long-running-operation")
        .with_arguments(json!({"duration": 1, "steps": 2}).as_object().unwrap().clone());
    params.meta = Some(RequestMetaObject::with_progress_token(ProgressToken(NumberOrString::Number(9))));
    client.call_tool(params).await.expect("long-running call");
    assert_eq!(*progress.lock().unwrap(), vec![1.0, 2.0]);

    let resources = client.list_resources(None).await.unwrap().resources;
    let r = resources.iter().find(|r| r.uri.starts_with("aqueduct://second/")).expect("second's resources");
    let read = client.read_resource(ReadResourceRequestParams::new(r.uri.clone())).await.unwrap();
    assert!(!read.contents.is_empty());
    let prompt = client.get_prompt(GetPromptRequestParams::new("everything__simple-prompt")).await.unwrap();
    assert!(!prompt.messages.is_empty());
    let pong = client.send_request(ClientRequest::PingRequest(PingRequest::default())).await.unwrap();
    assert!(matches!(pong, ServerResult::EmptyResult(_)));

    // The second server restarts and forgets its sessions: the gateway opens a new one for us.
    let port = second.port;
    second.stop();
    let _second = Everything::start_on(port).await;
    assert!(call_text(&client, "second__echo", json!({"message": "again"})).await.contains("again"));
    assert!(call_text(&client, "everything__echo", json!({"message": "still"})).await.contains("still"));
    client.cancel().await.unwrap();

    // Lists are per caller: a key that may not use `second` neither sees nor calls its tools.
    let r = http()
        .post(h.url("/api/v1/tokens"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "no-second", "excluded_mcp_servers": ["second"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string();
    h.eventually(Duration::from_secs(5), || async {
        post(&h, "/mcp-servers/second/mcp", &key, None, initialize("2025-06-18")).await.status() == 404
    })
    .await;
    let sid = raw_session(&h, "/mcp", &key).await;
    let list = post(&h, "/mcp", &key, Some(&sid), json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).await;
    let names: Vec<String> = rpc_reply(list).await["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("everything__")) && !names.is_empty(), "{names:?}");
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                      "params": {"name": "second__echo", "arguments": {"message": "x"}}});
    let reply = rpc_reply(post(&h, "/mcp", &key, Some(&sid), call).await).await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    // Another key cannot use this aggregated session either.
    let r = post(&h, "/mcp", ADMIN_KEY, Some(&sid), json!({"jsonrpc": "2.0", "id": 4, "method": "ping"})).await;
    assert_eq!(r.status(), 404);
    let r = http().delete(h.url("/mcp")).bearer_auth(&key).header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn sql(h: &Harness, statements: &[String]) {
    let db_url = format!("sqlite://{}", h.dir.path().join("aqueduct.db").display());
    let pool = sqlx::SqlitePool::connect(&db_url).await.unwrap();
    for s in statements {
        sqlx::query(s).execute(&pool).await.unwrap();
    }
}

fn key_row(id: i64, user: i64, sa: &str, key: &str, excluded: &str, merge: bool) -> String {
    format!(
        "INSERT INTO tokens (id, user_id, service_account_id, name, key_hash, preview, created_at, excluded_mcp_servers, merge_excluded_mcp_servers) \
         VALUES ({id}, {user}, {sa}, 'k{id}', '{}', 'p', 0, '{excluded}', {merge})",
        aqueduct::tokens::hash_hex(key)
    )
}

/// Which of `servers` a key may initialize a session with (the rest answer 404); a key the
/// filter does not know yet gives `401`.
async fn usable(h: &Harness, key: &str, servers: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for s in servers {
        let r = post(h, &format!("/mcp-servers/{s}/mcp"), key, None, initialize("2025-03-26")).await;
        match r.status().as_u16() {
            200 => out.push(s.to_string()),
            404 => {}
            401 => return vec!["401".to_string()],
            other => panic!("{s}: status {other}"),
        }
    }
    out
}

#[tokio::test]
async fn mcp_exclusions_follow_the_chain_and_the_file_reloads_live() {
    let everything = Everything::start().await;
    let names = ["s1", "s2", "s3", "s4", "s5", "s6"];
    let servers: Vec<(&str, String)> = names.iter().map(|n| (*n, everything.url())).collect();
    let h = start(&servers, &[("AQUEDUCT_DEFAULT_EXCLUDED_MCP_SERVERS", "s6")]).await;
    let stmts = vec![
        "INSERT INTO orgs (id, name, created_at, excluded_mcp_servers) VALUES (10, 'acme', 0, '[\"s1\"]')".to_string(),
        "INSERT INTO users (id, email, role, created_at, org_id, excluded_mcp_servers) VALUES (20, 'u@acme', 'user', 0, 10, '[\"s2\"]')".to_string(),
        "INSERT INTO users (id, email, role, created_at, org_id, merge_excluded_mcp_servers) VALUES (21, 'free@acme', 'user', 0, 10, FALSE)".to_string(),
        "INSERT INTO teams (id, org_id, name, created_at, excluded_mcp_servers) VALUES (30, 10, 'red', 0, '[\"s3\"]')".to_string(),
        "INSERT INTO service_accounts (id, team_id, owner_user_id, name, created_at, excluded_mcp_servers) VALUES (40, 30, 20, 'bot', 0, '[\"s4\"]')".to_string(),
        // Personal key: token(s5) ∪ user(s2) ∪ org(s1) ∪ global(s6).
        key_row(100, 20, "NULL", "sk-aq-mcp-personal", "[\"s5\"]", true),
        // A user who does not merge: nothing from the org or the global list.
        key_row(101, 21, "NULL", "sk-aq-mcp-free", "[]", true),
        // Service-account key: SA(s4) ∪ team(s3) ∪ org(s1) ∪ global(s6); the owner's s2 does not apply.
        key_row(102, 20, "40", "sk-aq-mcp-bot", "[]", true),
        // A token that stops inheritance.
        key_row(103, 20, "NULL", "sk-aq-mcp-solo", "[\"s3\"]", false),
    ];
    sql(&h, &stmts).await;
    h.eventually(Duration::from_secs(5), || async { usable(&h, "sk-aq-mcp-solo", &names).await.len() == 5 }).await;
    assert_eq!(usable(&h, "sk-aq-mcp-personal", &names).await, ["s3", "s4"]);
    assert_eq!(usable(&h, "sk-aq-mcp-free", &names).await, names);
    assert_eq!(usable(&h, "sk-aq-mcp-bot", &names).await, ["s2", "s5"]);
    assert_eq!(usable(&h, "sk-aq-mcp-solo", &names).await, ["s1", "s2", "s4", "s5", "s6"]);
    // Excluded and unknown servers answer alike, in OpenAI's shape.
    let r = post(&h, "/mcp-servers/s1/mcp", "sk-aq-mcp-personal", None, initialize("2025-06-18")).await;
    let e = expect_error(r, 404, "not_found_error").await;
    assert_eq!(e["code"], "mcp_server_not_found");
    let r = post(&h, "/mcp-servers/nope/mcp", "sk-aq-mcp-personal", None, initialize("2025-06-18")).await;
    expect_error(r, 404, "not_found_error").await;

    // The aggregated endpoint lists only what the key may use.
    let sid = raw_session(&h, "/mcp", "sk-aq-mcp-bot").await;
    let list =
        post(&h, "/mcp", "sk-aq-mcp-bot", Some(&sid), json!({"jsonrpc": "2.0", "id": 2, "method": "prompts/list"}))
            .await;
    let mut prefixes: Vec<String> = rpc_reply(list).await["result"]["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().split("__").next().unwrap().to_string())
        .collect();
    prefixes.dedup();
    assert_eq!(prefixes, ["s2", "s5"]);

    // A server added to the file is served without a restart.
    let mut more = servers.clone();
    more.push(("s7", everything.url()));
    std::fs::write(h.dir.path().join("mcp.json"), servers_json(&more)).unwrap();
    h.eventually(Duration::from_secs(5), || async { usable(&h, "sk-aq-mcp-free", &["s7"]).await == ["s7"] }).await;
}

#[tokio::test]
async fn mcp_servers_are_managed_through_the_api_by_admins() {
    let everything = Everything::start().await;
    let h = start(&[("from-file", everything.url())], &[]).await;
    let api = |method: reqwest::Method, path: &str, key: &str| {
        http().request(method, h.url(&format!("/api/v1/mcp-servers{path}"))).bearer_auth(key)
    };
    // A plain user's key.
    let r = http().post(h.url("/api/v1/orgs")).bearer_auth(ADMIN_KEY).json(&json!({"name": "acme"})).send().await;
    let org = r.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let r = http()
        .post(h.url("/api/v1/users"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"email": "user@example.com", "role": "user", "org_id": org}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let uid = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let r = http()
        .post(h.url("/api/v1/tokens"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "u", "user_id": uid}))
        .send()
        .await
        .unwrap();
    let user_key = r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string();

    // Environment references are for the operator's file only (hardening.rs): literals here.
    let entry = json!({"name": "added", "type": "streamable-http", "url": everything.url(), "tags": ["x"],
                       "headers": {"Authorization": "Bearer upstream-secret", "X-Literal": "hidden"}});
    let r = api(reqwest::Method::POST, "", &user_key).json(&entry).send().await.unwrap();
    expect_error(r, 403, "permission_denied_error").await;
    let r = api(reqwest::Method::POST, "", ADMIN_KEY).json(&entry).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["X-Literal"], "(set)", "literal header values are never echoed");
    assert_eq!(v["headers"]["Authorization"], "(set)");
    let r = api(reqwest::Method::POST, "", ADMIN_KEY).json(&entry).send().await.unwrap();
    expect_error(r, 409, "invalid_request_error").await;
    for (bad, param) in [
        (json!({"name": "a__b", "url": "http://x"}), "name"),
        (json!({"name": "ok", "url": "ftp://x"}), "url"),
        (json!({"name": "ok", "url": "http://x", "type": "stdio"}), "type"),
        (json!({"name": "ok", "url": "http://x", "headers": {"A": "os.environ/NOT_SET_ANYWHERE"}}), "headers.A"),
        (json!({"name": "ok", "url": "http://x", "headers": {"A B": "v"}}), "headers"),
    ] {
        let r = api(reqwest::Method::POST, "", ADMIN_KEY).json(&bad).send().await.unwrap();
        assert_eq!(expect_error(r, 400, "invalid_request_error").await["param"], param);
    }

    // Served at once, to any key allowed to use it.
    h.eventually(Duration::from_secs(5), || async {
        post(&h, "/mcp-servers/added/mcp", &user_key, None, initialize("2025-06-18")).await.status() == 200
    })
    .await;
    let list: Value = api(reqwest::Method::GET, "", &user_key).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list["data"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["added", "from-file"]);
    assert!(list["data"][0].get("url").is_none(), "only admins see upstream URLs");
    let one: Value = api(reqwest::Method::GET, "/from-file", ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!((one["source"].as_str(), one["url"].as_str()), (Some("file"), Some(everything.url().as_str())));

    // File entries are edited in the file.
    let r = api(reqwest::Method::DELETE, "/from-file", ADMIN_KEY).send().await.unwrap();
    expect_error(r, 409, "invalid_request_error").await;
    let r = api(reqwest::Method::PUT, "/added", ADMIN_KEY)
        .json(&json!({"url": everything.url(), "description": "changed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = api(reqwest::Method::DELETE, "/added", &user_key).send().await.unwrap();
    expect_error(r, 403, "permission_denied_error").await;
    assert_eq!(api(reqwest::Method::DELETE, "/added", ADMIN_KEY).send().await.unwrap().status(), 204);
    let r = api(reqwest::Method::GET, "/added", ADMIN_KEY).send().await.unwrap();
    expect_error(r, 404, "not_found_error").await;
    h.eventually(Duration::from_secs(5), || async {
        post(&h, "/mcp-servers/added/mcp", &user_key, None, initialize("2025-06-18")).await.status() == 404
    })
    .await;
    // The document describes the routes.
    let doc: Value = http().get(h.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/api/v1/mcp-servers/{name}"]["put"].is_object());
}
