//! The Responses API end to end: the official `openai` Python SDK against the real gateway
//! (Envoy, the `.wasm` filter, the control plane) with the fake upstream's Responses API behind
//! it. Every call works for the response's owner; other users' keys and other service
//! accounts' keys get 404 on every id-based call and on `previous_response_id`, without the
//! provider ever seeing the id. Creates are limited and metered with chat; on SQLite and on
//! PostgreSQL.

use crate::harness::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The venv's Python, with the pinned `openai` SDK (`make deps` installs it).
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("AQUEDUCT_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(venv.exists(), "no venv Python: run `make test` (it installs the openai SDK)");
    venv
}

/// Runs the SDK script's `args` as `key`; returns its JSON line, or panics with its stderr.
async fn sdk(h: &Harness, key: &str, args: &[&str]) -> (bool, Value) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/responses_sdk.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(args)
        .env("OPENAI_BASE_URL", h.url("/v1"))
        .env("OPENAI_API_KEY", key)
        .env("MODEL", "chat")
        .env_remove("OPENAI_ORG_ID")
        .env_remove("OPENAI_PROJECT_ID");
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let line = stdout.lines().last().unwrap_or_default();
    let v = serde_json::from_str(line)
        .unwrap_or_else(|_| panic!("{args:?}: no JSON line\nstdout {stdout}\nstderr {stderr}"));
    if !out.status.success() {
        eprintln!("{args:?} failed: {stderr}");
    }
    (out.status.success(), v)
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("string id in {v}")).to_string()
}

async fn api(h: &Harness, key: &str, method: &str, path: &str, body: Value, status: u16) -> Value {
    let (s, v) = h.call(key, method, &format!("/api/v1{path}"), Some(body)).await;
    assert_eq!(s, status, "{method} {path} -> {v}");
    v
}

/// Two users of one org (the first a team-admin), and two service accounts of its team.
struct People {
    user: (i64, String),
    other_user: String,
    sa: String,
    other_sa: String,
}

async fn people(h: &Harness) -> People {
    let org = id(&api(h, ADMIN_KEY, "POST", "/orgs", json!({"name": "acme"}), 201).await);
    let mut users = Vec::new();
    for email in ["ann@acme.test", "bob@acme.test"] {
        let u = api(h, ADMIN_KEY, "POST", "/users", json!({"email": email, "org_id": org, "role": "user"}), 201).await;
        let k = api(h, ADMIN_KEY, "POST", "/tokens", json!({"name": "k", "user_id": id(&u)}), 201).await;
        users.push((id(&u), k));
    }
    let team =
        id(&api(h, ADMIN_KEY, "POST", "/teams", json!({"org_id": org, "name": "t", "description": ""}), 201).await);
    api(h, ADMIN_KEY, "PUT", &format!("/teams/{team}/members/{}", users[0].0), json!({"team_admin": true}), 201).await;
    let ann = users[0].1["key"].as_str().unwrap().to_string();
    let mut sas = Vec::new();
    for name in ["bot", "other-bot"] {
        let sa = api(
            h,
            &ann,
            "POST",
            &format!("/teams/{team}/service-accounts"),
            json!({"name": name, "description": ""}),
            201,
        )
        .await;
        sas.push(sa["key"].as_str().unwrap().to_string());
    }
    let token = |k: &Value| (k["id"].as_str().unwrap().parse().unwrap(), k["key"].as_str().unwrap().to_string());
    let p = People {
        user: token(&users[0].1),
        other_user: users[1].1["key"].as_str().unwrap().to_string(),
        sa: sas[0].clone(),
        other_sa: sas[1].clone(),
    };
    // Every key reached the filter.
    for key in [&p.user.1, &p.other_user, &p.sa, &p.other_sa] {
        h.eventually(Duration::from_secs(15), || async {
            http().get(h.url("/v1/models")).bearer_auth(key).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
    }
    p
}

/// The owner's whole flow with the SDK, then every id-based call and `previous_response_id` as
/// keys that do not own the ids: 404, and the provider saw none of those calls.
async fn owners_only(h: &Harness) {
    let p = people(h).await;
    for (owner, strangers) in
        [(&p.user.1, vec![&p.other_user, &p.sa, &p.other_sa]), (&p.sa, vec![&p.user.1, &p.other_sa, &p.other_user])]
    {
        let (ok, out) = sdk(h, owner, &["owner"]).await;
        assert!(ok, "the owner's flow: {out}");
        let ids: Vec<String> = out["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect();
        assert!(ids.len() >= 5, "{out}");
        let seen_before = h.upstream.requests().len();
        for stranger in strangers {
            let mut args = vec!["foreign"];
            args.extend(ids.iter().map(String::as_str));
            let (ok, v) = sdk(h, stranger, &args).await;
            assert!(ok, "every foreign call is 404: {v}");
        }
        let reached: Vec<String> =
            h.upstream.requests()[seen_before..].iter().map(|r| format!("{} {}", r.method, r.path)).collect();
        assert!(reached.is_empty(), "foreign calls reached the provider: {reached:?}");
    }

    // The ledger has one event per create, with its id and tokens, in the usage API: the tokens
    // the SDK saw reported are what the filter counted.
    let (ok, out) = sdk(h, &p.user.1, &["owner"]).await;
    assert!(ok, "{out}");
    let token = p.user.0;
    let reported = |k: &str| out["usage"][k].as_i64().unwrap();
    let rows = format!("/api/v1/usage/requests?limit=10000&token_id={token}");
    h.eventually(Duration::from_secs(20), || async {
        let (_, v) = h.call(ADMIN_KEY, "GET", &rows, None).await;
        let metered: Vec<&Value> = v["data"]
            .as_array()
            .map(|a| a.iter().filter(|r| r["path"] == "/v1/responses" && r["response_id"].is_string()).collect())
            .unwrap_or_default();
        // Two runs of the flow with this key; the second's creates are the newest rows.
        let exact: Vec<&&Value> = metered.iter().filter(|r| r["estimated"] == false).collect();
        metered.len() as i64 >= 2 * reported("responses") && exact.len() as i64 >= 2 * reported("responses")
    })
    .await;
    let (_, sum) = h.call(ADMIN_KEY, "GET", &format!("/api/v1/usage?token_id={token}"), None).await;
    assert!(sum["totals"]["input_tokens"].as_i64().unwrap() >= 2 * reported("input_tokens"), "{sum} {out}");
    assert!(sum["totals"]["output_tokens"].as_i64().unwrap() >= 2 * reported("output_tokens"), "{sum} {out}");
}

#[tokio::test]
async fn responses_are_served_to_their_owner_only_on_sqlite() {
    let h = Harness::start().await;
    owners_only(&h).await;
}

#[tokio::test]
async fn responses_are_served_to_their_owner_only_on_postgres() {
    let h = Harness::start_pg(&[]).await;
    owners_only(&h).await;
}

async fn create(h: &Harness, key: &str, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = http().post(h.url("/v1/responses")).bearer_auth(key).json(&body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn remaining(r: &reqwest::Response, dim: &str) -> i64 {
    r.headers()[format!("x-ratelimit-remaining-{dim}").as_str()].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn creates_are_limited_and_metered_with_chat_and_their_tools_checked() {
    let servers = r#"{"mcpServers": {"everything": {"type": "streamable-http", "url": "http://127.0.0.1:9/mcp"},
                                     "secret-tools": {"type": "streamable-http", "url": "http://127.0.0.1:9/mcp"}}}"#;
    let h = Harness::start_mcp(servers, &[("AQUEDUCT_RESPONSES_NATIVE_TOOLS", "web_search, file_search")]).await;
    let (token, key) = h.create_token("limited", None).await;
    let r = http()
        .patch(h.url(&format!("/api/v1/tokens/{token}")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"requests_per_minute": 6, "input_tokens_per_minute": 100000, "output_tokens_per_minute": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let hi = |extra: Value| {
        let mut b = json!({"model": "chat", "input": "hello there", "max_output_tokens": 100});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    h.eventually(Duration::from_secs(15), || async {
        let r = create(&h, &key, hi(json!({})), &[]).await;
        r.status() == 200 && r.headers().contains_key("x-ratelimit-limit-requests")
    })
    .await;

    // Settled at what the provider reported: 100 reserved, the answer's tokens charged.
    let r = create(&h, &key, hi(json!({})), &[]).await;
    assert_eq!(r.status(), 200);
    let after_responses = remaining(&r, "output-tokens");
    let v: Value = r.json().await.unwrap();
    let used = v["usage"]["output_tokens"].as_i64().unwrap();
    let input = v["usage"]["input_tokens"].as_i64().unwrap();
    assert!(used > 0 && used < 100 && input > 0, "{v}");
    assert_eq!(v["model"], "provider-chat", "the provider's model name went upstream");
    // A chat call sees the responses calls' charges in both token dimensions: they count against
    // the same key's windows.
    let chat = json!({"model": "chat", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
    let chat_input = i64::try_from(serde_json::to_vec(&chat).unwrap().len().div_ceil(4)).unwrap();
    let r = http().post(h.url("/v1/chat/completions")).bearer_auth(&key).json(&chat).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(remaining(&r, "output-tokens") <= after_responses + 100 - used - 50, "reserved then settled");
    // Two creates (the readiness probe's and the one above) each charged at least their input.
    assert!(remaining(&r, "input-tokens") <= 100_000 - 2 * input - chat_input, "{:?}", r.headers());
    assert_eq!(remaining(&r, "requests"), 3, "6 a minute: two creates and a chat call before this one's count");

    // A provider error refunds the reservation: the next call sees it back.
    let before = {
        let r = create(&h, &key, hi(json!({})), &[]).await;
        remaining(&r, "output-tokens") + 100
    };
    let r = create(&h, &key, hi(json!({})), &[("x-fake-status", "500")]).await;
    assert_eq!(r.status(), 500);
    let r = create(&h, &key, hi(json!({"max_output_tokens": 1})), &[]).await;
    assert_eq!(r.status(), 200);
    assert!(remaining(&r, "output-tokens") >= before - 1 - 2 * 10, "the failed call's 100 came back: {before}");
    // Requests: the sixth of the minute passed, the seventh is refused like chat.
    let r = create(&h, &key, hi(json!({})), &[]).await;
    assert_eq!(r.status(), 429);
    let e = expect_error(r, 429, "rate_limit_error").await;
    assert!(e["message"].as_str().unwrap().contains("requests per minute"), "{e}");

    // Exclusions and tools, with a key that may not use one model and one MCP server.
    let (token, key) = h.create_token("tools", None).await;
    let r = http()
        .patch(h.url(&format!("/api/v1/tokens/{token}")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"excluded_models": ["embed"], "excluded_mcp_servers": ["secret-tools"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let excluded = || async {
        create(&h, &key, json!({"model": "embed", "input": "x"}), &[]).await.status() == 404
            && create(&h, &key, hi(json!({})), &[]).await.status() == 200
    };
    h.eventually(Duration::from_secs(15), excluded).await;
    let tool = |t: Value| hi(json!({"tools": [t]}));
    let gw = |path: &str| format!("http://{}{path}", h.listen);
    for (body, status, kind) in [
        (json!({"input": "x"}), 400, "invalid_request_error"),
        (json!({"model": "nope", "input": "x"}), 404, "not_found_error"),
        (
            tool(json!({"type": "mcp", "server_label": "deepwiki", "server_url": "https://mcp.deepwiki.com/mcp"})),
            403,
            "permission_denied_error",
        ),
        (
            tool(json!({"type": "mcp", "server_label": "x", "server_url": gw("/mcp-servers/nope/mcp")})),
            403,
            "permission_denied_error",
        ),
        (
            tool(json!({"type": "mcp", "server_label": "s", "server_url": gw("/mcp-servers/secret-tools/mcp")})),
            403,
            "permission_denied_error",
        ),
        (tool(json!({"type": "file_search", "vector_store_ids": ["vs_1"]})), 400, "invalid_request_error"),
        (tool(json!({"type": "code_interpreter", "container": {"type": "auto"}})), 400, "invalid_request_error"),
        (hi(json!({"conversation": "conv_1"})), 400, "invalid_request_error"),
    ] {
        let sent = h.upstream.requests().len();
        let r = create(&h, &key, body.clone(), &[]).await;
        let e = expect_error(r, status, kind).await;
        assert_eq!(h.upstream.requests().len(), sent, "{body} was refused before the provider");
        if status != 404 {
            assert!(e["param"].is_string(), "{e}");
        }
    }
    for t in [
        json!({"type": "mcp", "server_label": "e", "server_url": gw("/mcp-servers/everything/mcp"), "require_approval": "never"}),
        json!({"type": "mcp", "server_label": "all", "server_url": gw("/mcp")}),
        json!({"type": "web_search"}),
        json!({"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}),
    ] {
        let r = create(&h, &key, tool(t.clone()), &[]).await;
        assert_eq!(r.status(), 200, "{t}: {}", r.text().await.unwrap_or_default());
    }
}

const PASSWORD: &str = "responses-ui-password";

/// Signs in to the admin UI as the bootstrap admin; returns the session's cookie header.
async fn admin_session(h: &Harness) -> String {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookies = |r: &reqwest::Response| -> Vec<String> {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
            .collect()
    };
    let r = client.get(h.url("/ui/login")).send().await.unwrap();
    let jar = cookies(&r).join("; ");
    let body = r.text().await.unwrap();
    let at = body.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    let csrf = &body[at..at + body[at..].find('"').unwrap()];
    let r = client
        .post(h.url("/ui/login"))
        .header("cookie", &jar)
        .form(&[("csrf", csrf), ("email", "admin@localhost"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "signed in");
    cookies(&r).join("; ")
}

#[tokio::test]
async fn an_abandoned_stream_is_charged_and_the_usage_page_shows_responses_calls() {
    let mut h = Harness::start_env(&[("AQUEDUCT_ADMIN_PASSWORD", PASSWORD)]).await;
    let (token, key) = h.create_token("responses-key", None).await;
    h.eventually(Duration::from_secs(15), || async {
        http().get(h.url("/v1/models")).bearer_auth(&key).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let r = create(&h, &key, json!({"model": "chat", "input": "count the usage", "max_output_tokens": 300}), &[]).await;
    assert_eq!(r.status(), 200);
    let answered: Value = r.json().await.unwrap();

    // A stream the client leaves after its first events: the provider may go on generating,
    // so the reservation is charged (or the text streamed, were it more), as for chat.
    let mut r = create(
        &h,
        &key,
        json!({"model": "chat", "input": "stream slowly", "stream": true, "max_output_tokens": 60}),
        &[("x-fake-chunks", "50"), ("x-fake-chunk-delay-ms", "100")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut seen = String::new();
    while !seen.contains("response.output_text.delta") {
        seen.push_str(&String::from_utf8_lossy(&r.chunk().await.unwrap().expect("more of the stream")));
    }
    assert!(seen.contains("event: response.created\ndata: {"), "typed events pass unchanged: {seen}");
    drop(r);

    let rows = format!("/api/v1/usage/requests?limit=100&token_id={token}");
    h.eventually(Duration::from_secs(20), || async {
        let (_, v) = h.call(ADMIN_KEY, "GET", &rows, None).await;
        v["data"].as_array().is_some_and(|a| a.iter().filter(|r| r["path"] == "/v1/responses").count() == 2)
    })
    .await;
    let (_, listed) = h.call(ADMIN_KEY, "GET", &rows, None).await;
    let data = listed["data"].as_array().unwrap();
    let streamed = data.iter().find(|r| r["streamed"] == true).expect("the stream's event");
    assert_eq!(streamed["estimated"], true, "{streamed}");
    assert_eq!(streamed["output_tokens"], 60, "the reservation: {streamed}");
    assert!(streamed["response_id"].as_str().is_some_and(|id| id.starts_with("resp_")), "{streamed}");
    let json_row = data.iter().find(|r| r["streamed"] == false).unwrap();
    assert_eq!(json_row["response_id"], answered["id"]);
    assert_eq!(json_row["input_tokens"], answered["usage"]["input_tokens"]);
    assert_eq!(json_row["output_tokens"], answered["usage"]["output_tokens"]);

    // The admin UI's usage page counts both, with their tokens, under the key.
    let input: i64 = data.iter().map(|r| r["input_tokens"].as_i64().unwrap()).sum();
    let output: i64 = data.iter().map(|r| r["output_tokens"].as_i64().unwrap()).sum();
    // (The key's requests also count the readiness probe on /v1/models, which has no tokens.)
    let requests = data.len();
    let row = format!("<th scope=\"row\">responses-key</th><td>{requests}</td><td>{input}</td><td>{output}</td>");
    // The page reads the rollups, which ingestion folds in shortly after the events.
    let session = admin_session(&h).await;
    h.eventually(Duration::from_secs(20), || async {
        let page = http().get(h.url("/ui/usage?range=1h")).header("cookie", &session).send().await.unwrap();
        page.status() == 200 && page.text().await.unwrap().contains(&row)
    })
    .await;

    // With the control plane gone, creates still work (nothing on their path needs it), but a
    // continuation cannot be vouched for: it fails closed.
    h.stop_cp();
    let r = create(&h, &key, json!({"model": "chat", "input": "still here"}), &[]).await;
    assert_eq!(r.status(), 200);
    let sent = h.upstream.requests().len();
    let r =
        create(&h, &key, json!({"model": "chat", "input": "more", "previous_response_id": answered["id"]}), &[]).await;
    let e = expect_error(r, 503, "server_error").await;
    assert_eq!(e["code"], "ownership_unavailable", "{e}");
    assert_eq!(h.upstream.requests().len(), sent, "nothing reached the provider");
}
