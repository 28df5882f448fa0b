use super::*;
use crate::snapshot::{ModelSpec, PolicySnapshot, PrincipalSpec, Settings};
use crate::tokens::{hash_key, TokenTableSpec};

/// A local reply: status, headers, body.
type Reply = (u16, Vec<(String, String)>, Vec<u8>);

/// A host over plain maps, recording what the filter did.
#[derive(Default)]
struct TestHost {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    reply: Option<Reply>,
    route_cleared: bool,
}

impl TestHost {
    fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Self {
        let mut h = vec![(":method".to_string(), method.to_string()), (":path".to_string(), path.to_string())];
        h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self { headers: h, body: body.to_vec(), ..Default::default() }
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn reply_json(&self) -> (u16, serde_json::Value) {
        let (status, _, body) = self.reply.as_ref().expect("a local reply");
        (*status, serde_json::from_slice(body).unwrap())
    }
}

impl Host for TestHost {
    fn request_header(&self, name: &str) -> Option<String> {
        self.header(name).map(str::to_string)
    }
    fn request_header_names(&self) -> Vec<String> {
        self.headers.iter().map(|(k, _)| k.clone()).collect()
    }
    fn set_request_header(&mut self, name: &str, value: &str) {
        self.remove_request_header(name);
        self.headers.push((name.into(), value.into()));
    }
    fn remove_request_header(&mut self, name: &str) {
        self.headers.retain(|(k, _)| k != name);
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        self.body.get(..size).map(<[u8]>::to_vec)
    }
    fn set_request_body(&mut self, body: &[u8]) {
        self.body = body.to_vec();
    }
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        assert!(self.reply.is_none(), "one reply per request");
        self.reply =
            Some((status, headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), body.to_vec()));
    }
    fn clear_route_cache(&mut self) {
        self.route_cleared = true;
    }
}

const NOW: i64 = 1_800_000_000;

fn policy() -> Rc<Policy> {
    let model = |name: &str, aliases: &[&str], auth: Option<&str>| ModelSpec {
        name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        provider_model: format!("provider-{name}"),
        authorization: auth.map(str::to_string),
        route: format!("route-{name}"),
        mode: None,
        request_limit_multiplier: 1.0,
    };
    let snap = PolicySnapshot {
        version: 3,
        created: 1_700_000_000,
        settings: Settings { max_body_bytes: 4096 },
        models: vec![model("chat", &["demo"], Some("Bearer sk-provider")), model("whisper", &[], None)],
        principals: vec![
            PrincipalSpec { user_id: 1, ..Default::default() },
            PrincipalSpec { user_id: 2, excluded_models: vec![0], ..Default::default() },
        ],
        tokens: TokenTableSpec::build(vec![
            (hash_key("sk-limited"), 4, None, 1),
            (hash_key("sk-good"), 1, None, 0),
            (hash_key("sk-expired"), 2, Some(NOW - 1), 0),
            (hash_key("sk-later"), 3, Some(NOW + 60), 0),
        ]),
    };
    Rc::new(Policy::from_snapshot(snap).unwrap())
}

/// Runs a whole request through the filter, delivering the body in one piece.
fn run(host: &mut TestHost, policy: Option<Rc<Policy>>) -> Flow {
    let mut f = RequestFilter::new(policy);
    let has_body = !host.body.is_empty();
    let flow = f.on_request_headers(host, !has_body, NOW);
    if host.reply.is_some() || !has_body {
        return flow;
    }
    assert_eq!(flow, Flow::Pause, "the body decides the route");
    let size = host.body.len();
    f.on_request_body(host, size, true)
}

const CHAT: &[u8] = br#"{"model":"demo","messages":[{"role":"user","content":"hi"}]}"#;

fn chat(key: &str) -> TestHost {
    TestHost::request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {key}")), ("content-type", "application/json")],
        CHAT,
    )
}

#[test]
fn routes_an_authenticated_request() {
    let mut h = chat("sk-good");
    h.headers.push(("x-aqueduct-route".into(), "route-forged".into()));
    h.headers.push(("X-Aqueduct-User".into(), "admin".into()));
    assert_eq!(run(&mut h, Some(policy())), Flow::Continue);
    assert!(h.reply.is_none());
    assert_eq!(h.header(ROUTE_HEADER), Some("route-chat"));
    assert_eq!(h.header("authorization"), Some("Bearer sk-provider"));
    assert!(h.header("X-Aqueduct-User").is_none(), "inbound identity headers stripped");
    assert!(h.route_cleared);
    let v: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
    assert_eq!(v["model"], "provider-chat");
    assert_eq!(h.header("content-length"), Some(h.body.len().to_string().as_str()));
}

#[test]
fn x_api_key_works_and_is_not_forwarded() {
    let mut h = TestHost::request(
        "POST",
        "/embeddings",
        &[("x-api-key", "sk-good"), ("content-type", "application/json")],
        br#"{"model":"chat","input":"x"}"#,
    );
    assert_eq!(run(&mut h, Some(policy())), Flow::Continue);
    assert!(h.header("x-api-key").is_none());
}

#[test]
fn model_without_provider_key_sends_no_authorization() {
    let mut h = chat("sk-good");
    h.body = br#"{"model":"whisper"}"#.to_vec();
    run(&mut h, Some(policy()));
    assert!(h.header("authorization").is_none());
}

#[test]
fn key_errors_are_401() {
    for (key, code) in [("sk-bad", "invalid_api_key"), ("sk-expired", "expired_api_key")] {
        let mut h = chat(key);
        run(&mut h, Some(policy()));
        let (status, v) = h.reply_json();
        assert_eq!(status, 401);
        assert_eq!(v["error"]["code"], code);
    }
    let mut h = chat("sk-later");
    assert_eq!(run(&mut h, Some(policy())), Flow::Continue, "not yet expired");
    let mut h = chat("x");
    h.headers.retain(|(k, _)| k != "authorization");
    run(&mut h, Some(policy()));
    assert_eq!(h.reply_json().1["error"]["code"], "missing_api_key");
    let mut h = chat("x");
    h.set_request_header("authorization", "Basic abc");
    run(&mut h, Some(policy()));
    assert_eq!(h.reply_json().0, 401);
}

#[test]
fn no_policy_fails_closed() {
    let mut h = chat("sk-good");
    run(&mut h, None);
    assert_eq!(h.reply_json().0, 503);
}

#[test]
fn unknown_model_is_404() {
    let mut h = chat("sk-good");
    h.body = br#"{"model":"provider-chat"}"#.to_vec();
    run(&mut h, Some(policy()));
    let (status, v) = h.reply_json();
    assert_eq!(status, 404);
    assert_eq!(v["error"]["type"], "not_found_error");
    assert!(h.header(ROUTE_HEADER).is_none());
}

#[test]
fn request_shape_errors() {
    let p = Some(policy());
    let mut h = chat("sk-good");
    h.body = b"{not json".to_vec();
    run(&mut h, p.clone());
    assert_eq!(h.reply_json().0, 400);

    let mut h = chat("sk-good");
    h.set_request_header("content-type", "text/plain");
    run(&mut h, p.clone());
    assert_eq!(h.reply_json().0, 415);

    let mut h = chat("sk-good");
    h.set_request_header(":method", "GET");
    run(&mut h, p.clone());
    let (status, _) = h.reply_json();
    assert_eq!(status, 405);
    assert!(h.reply.as_ref().unwrap().1.iter().any(|(k, v)| k == "allow" && v == "POST"));

    let mut h = chat("sk-good");
    h.set_request_header("content-length", "999999");
    run(&mut h, p.clone());
    assert_eq!(h.reply_json().0, 413);

    let mut h = TestHost::request("POST", "/v1/responses", &[], b"{}");
    run(&mut h, p);
    assert_eq!(h.reply_json().0, 404);
}

#[test]
fn streamed_body_over_limit_is_413_without_content_length() {
    let mut h = chat("sk-good");
    let mut f = RequestFilter::new(Some(policy()));
    assert_eq!(f.on_request_headers(&mut h, false, NOW), Flow::Pause);
    assert_eq!(f.on_request_body(&mut h, 4000, false), Flow::Pause);
    assert_eq!(f.on_request_body(&mut h, 5000, false), Flow::Pause);
    assert_eq!(h.reply_json().0, 413);
}

#[test]
fn models_list_is_answered_locally() {
    let mut h = TestHost::request("GET", "/v1/models", &[("authorization", "Bearer sk-good")], b"");
    run(&mut h, Some(policy()));
    let (status, v) = h.reply_json();
    assert_eq!(status, 200);
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["chat", "whisper"]);
    assert_eq!(v["object"], "list");
}

#[test]
fn management_health_and_ui_pass_without_key_but_lose_forged_headers() {
    for path in ["/api/v1/tokens", "/health", "/"] {
        let mut h = TestHost::request("GET", path, &[("x-aqueduct-user-id", "1")], b"");
        assert_eq!(run(&mut h, None), Flow::Continue);
        assert!(h.reply.is_none());
        assert!(h.header("x-aqueduct-user-id").is_none());
    }
}

#[test]
fn multipart_transcription_is_routed() {
    let body = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--b--\r\n";
    let mut h = TestHost::request(
        "POST",
        "/v1/audio/transcriptions",
        &[("authorization", "Bearer sk-good"), ("content-type", "multipart/form-data; boundary=b")],
        body,
    );
    assert_eq!(run(&mut h, Some(policy())), Flow::Continue);
    assert_eq!(h.header(ROUTE_HEADER), Some("route-whisper"));
    assert!(String::from_utf8_lossy(&h.body).contains("\r\n\r\nprovider-whisper\r\n--b--"));
}

#[test]
fn excluded_models_are_not_found_even_by_alias_and_not_listed() {
    for model in ["chat", "demo"] {
        let mut h = chat("sk-limited");
        h.body = format!(r#"{{"model":"{model}"}}"#).into_bytes();
        run(&mut h, Some(policy()));
        let (status, v) = h.reply_json();
        assert_eq!(status, 404, "{model}");
        assert_eq!(v["error"]["code"], "model_not_found");
    }
    let mut h = chat("sk-limited");
    h.body = br#"{"model":"whisper"}"#.to_vec();
    assert_eq!(run(&mut h, Some(policy())), Flow::Continue, "other models still allowed");

    let mut h = TestHost::request("GET", "/v1/models", &[("authorization", "Bearer sk-limited")], b"");
    run(&mut h, Some(policy()));
    let ids: Vec<String> =
        h.reply_json().1["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["whisper"]);
}
