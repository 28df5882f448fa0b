use super::*;
use crate::host::{MemHost, MemShared};
use crate::ledger::{Outcome, UsageEvent};
use crate::limits::Dim;
use crate::snapshot::CapSpec;
use crate::snapshot::{ModelSpec, PolicySnapshot, PrincipalSpec, Settings};
use crate::tokens::{hash_key, TokenTable};

/// The host the tests drive the filter over.
type TestHost = MemHost;

trait Replies {
    /// The local reply's status and JSON body (there must be exactly one).
    fn reply_json(&self) -> (u16, serde_json::Value);
}

impl Replies for TestHost {
    fn reply_json(&self) -> (u16, serde_json::Value) {
        assert_eq!(self.replies, 1, "one reply per request");
        let (status, _, body) = self.reply.as_ref().expect("a local reply");
        (*status, serde_json::from_slice(body).unwrap())
    }
}

const NOW: i64 = 1_800_000_000;

fn policy() -> Rc<Policy> {
    policy_with(Settings { max_body_bytes: 4096, identity_secret: "s3cret".into(), ..Default::default() })
}

fn policy_with(settings: Settings) -> Rc<Policy> {
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
        settings,
        models: vec![model("chat", &["demo"], Some("Bearer sk-provider")), model("whisper", &[], None)],
        principals: vec![
            PrincipalSpec { user_id: 1, ..Default::default() },
            PrincipalSpec {
                user_id: 2,
                excluded_models: vec![0],
                excluded_mcp_servers: vec![1],
                org_id: Some(8),
                ..Default::default()
            },
            PrincipalSpec {
                user_id: 3,
                key_limits: [Some(2), None, Some(100)],
                caps: vec![CapSpec { window: "o.9".into(), label: "org 9".into(), limits: [Some(3), None, None] }],
                ..Default::default()
            },
            PrincipalSpec { user_id: 4, terms_pending: true, ..Default::default() },
        ],
        tokens: TokenTable::build(vec![
            (hash_key("sk-terms"), 7, None, 3),
            (hash_key("sk-limited"), 4, None, 1),
            (hash_key("sk-capped-a"), 5, None, 2),
            (hash_key("sk-capped-b"), 6, None, 2),
            (hash_key("sk-good"), 1, None, 0),
            (hash_key("sk-expired"), 2, Some(NOW - 1), 0),
            (hash_key("sk-later"), 3, Some(NOW + 60), 0),
            (hash_key("sk-excluder"), 7, None, 1),
        ]),
        mcp_servers: vec!["everything".into(), "secret-tools".into()],
        journal: Some(crate::journal::JournalMark { epoch: 9, seq: 40 }),
    };
    Rc::new(Policy::from_snapshot(snap).unwrap())
}

/// Runs a whole request through the filter, delivering the body in one piece.
fn run(host: &mut TestHost, policy: Option<Rc<Policy>>) -> Flow {
    let mut f = RequestFilter::new(policy);
    let has_body = !host.body.is_empty();
    let flow = f.on_request_headers(host, !has_body, NOW * 1000);
    if host.reply.is_some() || !has_body {
        return flow;
    }
    assert_eq!(flow, Flow::Pause, "the body decides the route");
    let size = host.body.len();
    let flow = f.on_request_body(host, size, true, || NOW * 1000);
    assert!(host.replies <= 1, "one reply per request");
    flow
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
fn journal_changes_take_effect_on_the_request_path() {
    use crate::journal::{JournalDelta, KeyChange};
    let base = policy();
    let live = |id: u64, key: &str, principal: PrincipalSpec| KeyChange::Live {
        id,
        hash: hex::encode(hash_key(key)),
        expires_at: None,
        principal: Box::new(principal),
    };
    // A key for an existing principal, one for a user the snapshot has never seen (with an org
    // cap of 1 request a minute), a revoked key and a regenerated one.
    let newcomer = PrincipalSpec {
        user_id: 50,
        excluded_models: vec![1],
        caps: vec![CapSpec { window: "o.50".into(), label: "org 50".into(), limits: [Some(1), None, None] }],
        ..Default::default()
    };
    let delta = JournalDelta {
        epoch: 9,
        seq: 44,
        changes: vec![
            live(20, "sk-fresh", base.principals()[0].clone()),
            live(21, "sk-newcomer", newcomer),
            KeyChange::Gone { id: 1 },
            live(3, "sk-later-regenerated", base.principals()[0].clone()),
        ],
    };
    let p = Rc::new(base.with_changes(&delta).unwrap());
    assert_eq!(p.overlay().seq, 44);
    let status = |key: &str, policy: &Rc<Policy>| {
        let mut h = chat(key);
        run(&mut h, Some(policy.clone()));
        h.reply.as_ref().map_or(200, |r| r.0)
    };
    assert_eq!(status("sk-fresh", &p), 200);
    assert_eq!(status("sk-fresh", &base), 401, "the snapshot alone does not know it");
    assert_eq!(status("sk-good", &p), 401, "revoked");
    assert_eq!(status("sk-good", &base), 200, "requests under the old policy are unaffected");
    assert_eq!(status("sk-later", &p), 401, "the old secret of a regenerated key");
    assert_eq!(status("sk-later-regenerated", &p), 200);
    assert_eq!(status("sk-capped-b", &p), 200, "other keys are untouched");
    // The newcomer's principal carries its exclusions and its org cap.
    let mut h = chat("sk-newcomer");
    h.body = br#"{"model":"whisper"}"#.to_vec();
    run(&mut h, Some(p.clone()));
    assert_eq!(h.reply_json().0, 404, "excluded model");
    let mut shared = MemShared::default();
    let (first, _) = run_shared_with(&p, &mut shared, "sk-newcomer", CHAT, NOW * 1000);
    assert!(first.reply.is_none());
    let (second, _) = run_shared_with(&p, &mut shared, "sk-newcomer", CHAT, NOW * 1000 + 10);
    assert_eq!(second.reply_json().0, 429, "the org cap of a principal only the overlay has");
    // An answer from another journal is refused and changes nothing.
    assert!(base.with_changes(&JournalDelta { epoch: 8, ..delta }).is_err());
}

#[test]
fn keys_of_users_without_accepted_terms_are_403_on_every_endpoint() {
    let mut h = chat("sk-terms");
    run(&mut h, Some(policy()));
    let (status, v) = h.reply_json();
    assert_eq!(status, 403);
    assert_eq!(v["error"]["type"], "permission_denied_error");
    assert_eq!(v["error"]["code"], "terms_not_accepted");
    let mut h = TestHost::request("GET", "/v1/models", &[("authorization", "Bearer sk-terms")], b"");
    run(&mut h, Some(policy()));
    assert_eq!(h.reply_json().0, 403, "listing models is refused too");
    let mut h = chat("sk-good");
    assert_eq!(run(&mut h, Some(policy())), Flow::Continue, "other principals are unaffected");
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

    let mut h = TestHost::request("POST", "/v1/assistants", &[], b"{}");
    run(&mut h, p);
    assert_eq!(h.reply_json().0, 404);
}

#[test]
fn streamed_body_over_limit_is_413_without_content_length() {
    let mut h = chat("sk-good");
    let mut f = RequestFilter::new(Some(policy()));
    assert_eq!(f.on_request_headers(&mut h, false, NOW * 1000), Flow::Pause);
    assert_eq!(f.on_request_body(&mut h, 4000, false, || 0), Flow::Pause);
    assert_eq!(f.on_request_body(&mut h, 5000, false, || 0), Flow::Pause);
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

/// Runs a request through headers and body with a shared store carried across requests.
fn run_shared(shared: &mut MemShared, key: &str, body: &[u8], now_ms: i64) -> (TestHost, RequestFilter) {
    run_shared_with(&policy(), shared, key, body, now_ms)
}

fn run_shared_with(
    policy: &Rc<Policy>,
    shared: &mut MemShared,
    key: &str,
    body: &[u8],
    now_ms: i64,
) -> (TestHost, RequestFilter) {
    let mut h = chat(key);
    h.body = body.to_vec();
    std::mem::swap(&mut h.shared, shared);
    let mut f = RequestFilter::new(Some(policy.clone()));
    if f.on_request_headers(&mut h, false, now_ms) == Flow::Pause && h.reply.is_none() {
        let size = h.body.len();
        f.on_request_body(&mut h, size, true, || now_ms);
    }
    std::mem::swap(&mut h.shared, shared);
    (h, f)
}

/// A chat request reserving 10 output tokens.
const SMALL: &[u8] = br#"{"model":"chat","max_tokens":10,"messages":[]}"#;

#[test]
fn per_key_and_aggregate_caps_limit_requests() {
    let mut shared = MemShared::default();
    let t0 = NOW * 1000;
    // Key cap 2/min: the third request of key a is refused, naming the key.
    for _ in 0..2 {
        let (h, _) = run_shared(&mut shared, "sk-capped-a", SMALL, t0);
        assert!(h.reply.is_none());
    }
    let (h, _) = run_shared(&mut shared, "sk-capped-a", SMALL, t0);
    let (status, v) = h.reply_json();
    assert_eq!(status, 429);
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("key 5"), "{v}");
    let headers = &h.reply.as_ref().unwrap().1;
    assert!(headers.iter().any(|(k, v)| k == "retry-after" && v == "60"), "{headers:?}");
    assert!(headers.iter().any(|(k, v)| k == "x-ratelimit-remaining-requests" && v == "0"));
    // The org's cap (3/min) is shared by key b: one more request, then the org is full.
    let (h, _) = run_shared(&mut shared, "sk-capped-b", SMALL, t0);
    assert!(h.reply.is_none());
    let (h, _) = run_shared(&mut shared, "sk-capped-b", SMALL, t0);
    assert!(h.reply_json().1["error"]["message"].as_str().unwrap().contains("org 9"));
    // A minute later both pass again.
    let (h, _) = run_shared(&mut shared, "sk-capped-b", SMALL, t0 + 59_999);
    assert_eq!(h.reply_json().0, 429);
    let (h, _) = run_shared(&mut shared, "sk-capped-b", SMALL, t0 + 60_000);
    assert!(h.reply.is_none());
    // Keys without caps are never counted.
    let (h, _) = run_shared(&mut shared, "sk-good", SMALL, t0);
    assert!(h.reply.is_none());
}

#[test]
fn streams_ask_for_usage_and_reservations_settle_with_it() {
    let mut shared = MemShared::default();
    let t0 = NOW * 1000;
    let body = br#"{"model":"chat","stream":true,"max_tokens":80,"messages":[]}"#;
    let (mut h, mut f) = run_shared(&mut shared, "sk-capped-a", body, t0);
    assert!(h.reply.is_none());
    let sent: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);

    // The response: headers carry the tightest caps; the final chunk reports 30 output tokens.
    h.response_headers = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    f.on_response_headers(&mut h, t0 + 5);
    assert_eq!(h.response_header("x-ratelimit-limit-output-tokens").as_deref(), Some("100"));
    assert_eq!(h.response_header("x-ratelimit-remaining-output-tokens").as_deref(), Some("20"));
    assert_eq!(h.response_header("x-ratelimit-remaining-requests").as_deref(), Some("1"));
    h.response_chunk =
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":30}}\n\ndata: [DONE]\n\n".to_vec();
    let n = h.response_chunk.len();
    f.on_response_body(&h, n);
    let used = f.on_done(&mut shared, t0 + 500).unwrap();
    assert_eq!((used.input_tokens, used.output_tokens, used.estimated), (3, 30, false));
    let w = crate::limits::Window::from_bytes(&shared.data["aqueduct.rl2.k.5"].0).used(Dim::OutputTokens, t0 + 500);
    assert_eq!(w, 30, "80 reserved, 30 used: 50 refunded");
    assert!(f.on_done(&mut shared, t0 + 600).is_none(), "settled once");
}

#[test]
fn failed_or_abandoned_responses_refund() {
    let mut shared = MemShared::default();
    let t0 = NOW * 1000;
    let body = br#"{"model":"chat","max_tokens":60,"messages":[]}"#;
    let (mut h, mut f) = run_shared(&mut shared, "sk-capped-a", body, t0);
    h.response_headers = vec![(":status".into(), "503".into())];
    f.on_response_headers(&mut h, t0 + 5);
    f.on_done(&mut shared, t0 + 10);
    let w = crate::limits::Window::from_bytes(&shared.data["aqueduct.rl2.k.5"].0).used(Dim::OutputTokens, t0 + 10);
    assert_eq!(w, 0);
    // A client that leaves mid-stream, before the provider's report: what was streamed shows
    // little of what the answer cost (reasoning, the rest of it), so the reservation is charged.
    let (mut h, mut f) =
        run_shared(&mut shared, "sk-capped-a", br#"{"model":"chat","stream":true,"max_tokens":90}"#, t0);
    h.response_headers = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    f.on_response_headers(&mut h, t0 + 5);
    h.response_chunk = b"data: {\"choices\":[{\"delta\":{\"content\":\"12345678\"}}]}\n\n".to_vec();
    let n = h.response_chunk.len();
    f.on_response_body(&h, n);
    let u = f.on_done(&mut shared, t0 + 20).unwrap();
    assert!(u.estimated);
    assert_eq!(u.output_tokens, 90);
    let w = crate::limits::Window::from_bytes(&shared.data["aqueduct.rl2.k.5"].0).used(Dim::OutputTokens, t0 + 20);
    assert_eq!(w, 90);
    // A stream that ended without a report (no `[DONE]` either) is estimated from its text.
    let mut shared = MemShared::default();
    let (mut h, mut f) =
        run_shared(&mut shared, "sk-capped-a", br#"{"model":"chat","stream":true,"max_tokens":90}"#, t0);
    h.response_headers = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    f.on_response_headers(&mut h, t0 + 5);
    h.response_chunk = b"data: {\"choices\":[{\"delta\":{\"content\":\"12345678\"}}]}\n\n".to_vec();
    let n = h.response_chunk.len();
    f.on_response_body(&h, n);
    f.on_response_end();
    let u = f.on_done(&mut shared, t0 + 20).unwrap();
    assert_eq!((u.output_tokens, u.estimated), (2, true));
}

/// A capped key's output tokens counted in its window at `now_ms`.
fn output_used(shared: &MemShared, now_ms: i64) -> u64 {
    crate::limits::Window::from_bytes(&shared.data["aqueduct.rl2.k.5"].0).used(Dim::OutputTokens, now_ms)
}

#[test]
fn a_client_that_leaves_before_the_answer_pays_the_reservation() {
    // The request was forwarded; the client hung up before any response header came back.
    // The provider generates the answer all the same: the reservation is charged and kept in
    // the rate-limit window, and the event says it is an estimate.
    let mut shared = MemShared::default();
    let t0 = NOW * 1000;
    let body = br#"{"model":"chat","max_tokens":70,"messages":[{"role":"user","content":"a long question"}]}"#;
    let (_, mut f) = run_shared(&mut shared, "sk-capped-a", body, t0);
    assert_eq!(output_used(&shared, t0), 70, "reserved at admission");
    let e = f.on_done(&mut shared, t0 + 3_000).unwrap();
    assert_eq!(e.outcome, Some(Outcome::ClientClosed));
    assert_eq!((e.input_tokens, e.output_tokens, e.estimated), (usage::estimate_tokens(body.len() as u64), 70, true));
    assert_eq!(output_used(&shared, t0 + 3_000), 70, "settled with the charge, not released");
    // Without max_tokens the configured reservation is the charge, with or without caps.
    let mut h = chat("sk-good");
    h.body = br#"{"model":"chat","messages":[]}"#.to_vec();
    let e = event_of(h, None);
    assert_eq!((e.output_tokens, e.estimated), (crate::snapshot::DEFAULT_OUTPUT_RESERVATION, true));
    // The provider's report still wins when it came before the client left.
    let mut shared = MemShared::default();
    let (mut h, mut f) = run_shared(&mut shared, "sk-capped-a", body, t0);
    h.response_headers = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
    f.on_response_headers(&mut h, t0 + 5);
    h.response_chunk = br#"{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":9}}"#.to_vec();
    f.on_response_body(&h, h.response_chunk.len());
    let e = f.on_done(&mut shared, t0 + 10).unwrap();
    assert_eq!((e.input_tokens, e.output_tokens, e.estimated), (4, 9, false));
    // A JSON answer cut short (the client left mid-body) is charged the reservation too.
    let mut shared = MemShared::default();
    let (mut h, mut f) = run_shared(&mut shared, "sk-capped-a", body, t0);
    h.response_headers = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
    f.on_response_headers(&mut h, t0 + 5);
    h.response_chunk = br#"{"choices":[{"message":{"content":"abcd"#.to_vec();
    f.on_response_body(&h, h.response_chunk.len());
    let e = f.on_done(&mut shared, t0 + 10).unwrap();
    assert_eq!((e.output_tokens, e.estimated), (70, true));
}

#[test]
fn json_responses_over_the_kept_size_are_still_metered() {
    // Large answers (thousands of top_logprobs, many choices) are not kept whole; their usage
    // report is found as they stream past.
    let mut shared = MemShared::default();
    let t0 = NOW * 1000;
    let (mut h, mut f) = run_shared(&mut shared, "sk-capped-a", SMALL, t0);
    h.response_headers = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
    f.on_response_headers(&mut h, t0 + 5);
    let mut body = br#"{"choices":[{"message":{"content":"hi"},"logprobs":{"content":["#.to_vec();
    while body.len() <= MAX_METERED_JSON + (1 << 20) {
        body.extend_from_slice(br#"{"token":"hi","logprob":-0.5,"top_logprobs":[{"token":"ho","logprob":-2}]},"#);
    }
    body.extend_from_slice(br#"{"token":"!","logprob":0}]}}],"usage":{"prompt_tokens":11,"completion_tokens":8,"completion_tokens_details":{"reasoning_tokens":5}}}"#);
    for chunk in body.chunks(1 << 20) {
        h.response_chunk = chunk.to_vec();
        f.on_response_body(&h, chunk.len());
    }
    f.on_response_end();
    let e = f.on_done(&mut shared, t0 + 10).unwrap();
    assert_eq!((e.input_tokens, e.output_tokens, e.reasoning_tokens, e.estimated), (11, 8, 5, false));
    assert_eq!(output_used(&shared, t0 + 10), 8);
    // Without a report, a large answer costs its reservation (never nothing).
    let (mut h, mut f) = run_shared(&mut shared, "sk-capped-a", SMALL, t0);
    h.response_headers = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
    f.on_response_headers(&mut h, t0 + 5);
    let cut = body.len() - 200;
    for chunk in body[..cut].chunks(1 << 20) {
        h.response_chunk = chunk.to_vec();
        f.on_response_body(&h, chunk.len());
    }
    f.on_response_end();
    let e = f.on_done(&mut shared, t0 + 20).unwrap();
    assert_eq!((e.output_tokens, e.estimated), (10, true), "SMALL reserves 10");
}

#[test]
fn an_event_stream_is_metered_as_one_whatever_the_request_said() {
    let mut shared = MemShared::default();
    let t0 = NOW * 1000;
    let (mut h, mut f) = run_shared(&mut shared, "sk-capped-a", SMALL, t0);
    h.response_headers =
        vec![(":status".into(), "200".into()), ("content-type".into(), "Text/Event-Stream; charset=utf-8".into())];
    f.on_response_headers(&mut h, t0 + 5);
    h.response_chunk =
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":6}}\n\ndata: [DONE]\n\n".to_vec();
    f.on_response_body(&h, h.response_chunk.len());
    f.on_response_end();
    let e = f.on_done(&mut shared, t0 + 10).unwrap();
    assert!(e.streamed);
    assert_eq!((e.input_tokens, e.output_tokens, e.estimated), (3, 6, false));
}

#[test]
fn stream_options_null_and_non_boolean_streams_cannot_dodge_metering() {
    // `null` options are replaced by ones asking for usage: one member, never two.
    let mut h = chat("sk-good");
    h.body = br#"{"model":"chat","stream":true,"stream_options":null,"messages":[]}"#.to_vec();
    assert_eq!(run(&mut h, Some(policy())), Flow::Continue);
    let sent = String::from_utf8(h.body.clone()).unwrap();
    assert_eq!(sent.matches("stream_options").count(), 1, "{sent}");
    let v: serde_json::Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(v["stream_options"], serde_json::json!({"include_usage": true}));
    assert_eq!(h.header("content-length"), Some(sent.len().to_string().as_str()));
    // `stream` is a boolean or the request is refused before it goes anywhere.
    for stream in [r#""true""#, "1", "null"] {
        let mut h = chat("sk-good");
        h.body = format!(r#"{{"model":"chat","stream":{stream},"messages":[]}}"#).into_bytes();
        run(&mut h, Some(policy()));
        let (status, v) = h.reply_json();
        assert_eq!(status, 400, "{stream}");
        assert_eq!(v["error"]["param"], "stream");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(h.header(ROUTE_HEADER).is_none(), "not routed");
    }
}

fn mcp(path: &str, key: Option<&str>, extra: &[(&str, &str)]) -> TestHost {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = auth.as_deref() {
        headers.push(("authorization", a));
    }
    let mut h = TestHost::request("POST", path, &headers, b"");
    let mut f = RequestFilter::new(Some(policy()));
    // MCP bodies are not inspected: the decision is taken on the headers.
    let flow = f.on_request_headers(&mut h, false, NOW * 1000);
    assert_eq!(flow == Flow::Continue, h.reply.is_none());
    h
}

#[test]
fn mcp_routes_need_a_key_and_get_identity_headers_instead() {
    let h = mcp("/mcp-servers/everything/mcp", Some("sk-good"), &[("x-aqueduct-token-id", "999")]);
    assert!(h.reply.is_none());
    assert_eq!(h.header(SECRET_HEADER), Some("s3cret"));
    assert_eq!(h.header(TOKEN_ID_HEADER), Some("1"), "the client's own identity header is replaced");
    assert_eq!(h.header(USER_ID_HEADER), Some("1"));
    assert_eq!(h.header(ORG_ID_HEADER), None);
    assert_eq!(h.header(MCP_EXCLUDED_HEADER), Some(""));
    assert_eq!(h.header("authorization"), None, "the key never reaches the control plane's proxy");

    let h = mcp("/mcp", Some("sk-excluder"), &[]);
    assert!(h.reply.is_none());
    assert_eq!(h.header(MCP_EXCLUDED_HEADER), Some("secret-tools"));
    assert_eq!(h.header(ORG_ID_HEADER), Some("8"));

    for key in [None, Some("sk-wrong"), Some("sk-expired")] {
        let h = mcp("/mcp", key, &[]);
        assert_eq!(h.reply_json().0, 401);
        assert_eq!(h.header(SECRET_HEADER), None);
    }
}

#[test]
fn mcp_unknown_and_excluded_servers_are_not_found() {
    for (path, key) in [
        ("/mcp-servers/secret-tools/mcp", "sk-excluder"),
        ("/mcp-servers/nope/mcp", "sk-good"),
        ("/mcp-servers/everything/other", "sk-good"),
    ] {
        let h = mcp(path, Some(key), &[]);
        let (status, body) = h.reply_json();
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["type"], "not_found_error");
        assert_eq!(h.header(SECRET_HEADER), None);
    }
    assert!(mcp("/mcp-servers/secret-tools/mcp", Some("sk-good"), &[]).reply.is_none());
}

#[test]
fn mcp_without_policy_fails_closed() {
    let mut h = TestHost::request("POST", "/mcp", &[("authorization", "Bearer sk-good")], b"");
    let mut f = RequestFilter::new(None);
    assert_eq!(f.on_request_headers(&mut h, false, NOW * 1000), Flow::Pause);
    assert_eq!(h.reply_json().0, 503);
}

#[test]
fn client_address_is_read_from_the_header_envoy_appends_to() {
    use crate::snapshot::LedgerSettings;
    // (Envoy appends the peer, trusted hops, X-Forwarded-For) -> (client address, peer asked).
    let cases = [
        (true, 0, Some("6.6.6.6, 192.0.2.9"), "192.0.2.9", 0),
        (true, 1, Some("6.6.6.6, 198.51.100.4, 192.0.2.9"), "198.51.100.4", 0),
        // No header at all: this Envoy did not append, so it is asked.
        (true, 0, None, "192.0.2.7", 1),
        (false, 0, Some("6.6.6.6"), "192.0.2.7", 1),
        (false, 1, Some("6.6.6.6, 198.51.100.4"), "198.51.100.4", 1),
    ];
    for (peer_in_xff, trusted_hops, xff, want, reads) in cases {
        let ledger = LedgerSettings { trusted_hops, peer_in_xff, ..Default::default() };
        let mut f = RequestFilter::new(Some(policy_with(Settings { ledger, ..Default::default() })));
        let mut h = chat("sk-nope");
        if let Some(x) = xff {
            h.headers.push(("x-forwarded-for".into(), x.into()));
        }
        f.on_request_headers(&mut h, false, NOW * 1000);
        let e = f.on_done(&mut MemShared::default(), NOW * 1000).expect("an event");
        assert_eq!(e.client_ip.as_deref(), Some(want), "{peer_in_xff} {trusted_hops} {xff:?}");
        assert_eq!(h.peer_reads.get(), reads, "{peer_in_xff} {trusted_hops} {xff:?}");
    }
}

/// Runs `host` through the whole exchange and returns the ledger's event.
fn event_of(mut h: TestHost, status: Option<(&str, &[u8])>) -> UsageEvent {
    let mut shared = MemShared::default();
    let t0 = NOW * 1000;
    let mut f = RequestFilter::new(Some(policy()));
    let has_body = !h.body.is_empty();
    if f.on_request_headers(&mut h, !has_body, t0) == Flow::Pause && h.reply.is_none() {
        let size = h.body.len();
        std::mem::swap(&mut h.shared, &mut shared);
        f.on_request_body(&mut h, size, true, || t0 + 1);
        std::mem::swap(&mut h.shared, &mut shared);
    }
    if let Some((code, body)) = status {
        h.response_headers = vec![(":status".into(), code.into()), ("content-type".into(), "application/json".into())];
        f.on_response_headers(&mut h, t0 + 40);
        h.response_chunk = body.to_vec();
        f.on_response_body(&h, body.len());
    }
    f.on_done(&mut shared, t0 + 100).expect("an event for every API request")
}

#[test]
fn every_api_request_makes_one_event() {
    let usage = br#"{"usage":{"prompt_tokens":12,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":2}}}"#;
    let mut h = chat("sk-capped-a");
    h.body = br#"{"model":"chat","user":"end-1","messages":[]}"#.to_vec();
    h.headers.push(("user-agent".into(), "openai-python/1.0".into()));
    h.headers.push(("x-forwarded-for".into(), "203.0.113.9".into()));
    let e = event_of(h, Some(("200", usage)));
    assert_eq!((e.status, e.outcome), (200, Some(Outcome::Ok)));
    assert_eq!((e.token_id, e.user_id, e.org_id), (Some(5), Some(3), None), "as the policy has it");
    assert_eq!(e.model.as_deref(), Some("chat"));
    assert_eq!(e.end_user.as_deref(), Some("end-1"));
    assert_eq!((e.input_tokens, e.output_tokens, e.cached_tokens, e.estimated), (12, 7, 2, false));
    assert_eq!((e.at_ms, e.ttfb_ms, e.latency_ms), (NOW * 1000, Some(40), 100));
    assert_eq!((e.path.as_str(), e.method.as_str()), ("/v1/chat/completions", "POST"));
    assert_eq!(e.client_ip.as_deref(), Some("192.0.2.7"), "no trusted hops: the peer, not the header");
    assert_eq!(e.user_agent.as_deref(), Some("openai-python/1.0"));
    assert!(e.request_id.is_empty(), "the adapter assigns ids");

    // Refusals: recorded with their outcome and no tokens.
    let e = event_of(chat("sk-nope"), None);
    assert_eq!((e.status, e.outcome, e.token_id, e.input_tokens), (401, Some(Outcome::Unauthorized), None, 0));
    let mut h = chat("sk-good");
    h.body = br#"{"model":"nope","messages":[]}"#.to_vec();
    let e = event_of(h, None);
    assert_eq!((e.status, e.outcome, e.token_id, e.model), (404, Some(Outcome::NotFound), Some(1), None));
    let e = event_of(TestHost::request("GET", "/v1/models", &[("authorization", "Bearer sk-good")], b""), None);
    assert_eq!((e.status, e.outcome), (200, Some(Outcome::Ok)));
    let e = event_of(TestHost::request("POST", "/v1/assistants?x=1", &[], b"{}"), None);
    assert_eq!((e.status, e.outcome, e.path.as_str()), (404, Some(Outcome::NotFound), "/v1/assistants"));

    // The provider failed; the client left before any answer.
    let e = event_of(chat("sk-good"), Some(("502", b"")));
    assert_eq!((e.status, e.outcome), (502, Some(Outcome::UpstreamError)));
    let e = event_of(chat("sk-good"), None);
    assert_eq!((e.status, e.outcome), (0, Some(Outcome::ClientClosed)));

    // A rate-limited request.
    let mut shared = MemShared::default();
    for _ in 0..2 {
        run_shared(&mut shared, "sk-capped-a", SMALL, NOW * 1000);
    }
    let (mut h, mut f) = run_shared(&mut shared, "sk-capped-a", SMALL, NOW * 1000);
    assert_eq!(h.reply_json().0, 429);
    let e = f.on_done(&mut h.shared, NOW * 1000).unwrap();
    assert_eq!((e.status, e.outcome, e.token_id), (429, Some(Outcome::RateLimited), Some(5)));
}

#[test]
fn aqueducts_user_id_is_recorded_and_not_forwarded() {
    let mut h = chat("sk-good");
    h.body = br#"{"model":"chat","user_id":1234,"messages":[]}"#.to_vec();
    let mut f = RequestFilter::new(Some(policy()));
    assert_eq!(f.on_request_headers(&mut h, false, NOW * 1000), Flow::Pause);
    let size = h.body.len();
    assert_eq!(f.on_request_body(&mut h, size, true, || NOW * 1000), Flow::Continue);
    let sent: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
    assert!(sent.get("user_id").is_none(), "{sent}");
    assert_eq!(sent["model"], "provider-chat");
    assert_eq!(h.header("content-length"), Some(h.body.len().to_string().as_str()));
    let e = f.on_done(&mut MemShared::default(), NOW * 1000 + 5).unwrap();
    assert_eq!(e.end_user.as_deref(), Some("1234"));
}

#[test]
fn a_body_the_gateway_would_not_change_is_left_as_envoy_holds_it() {
    let snap = PolicySnapshot {
        version: 1,
        created: 1_700_000_000,
        settings: Settings { max_body_bytes: 4096, ..Default::default() },
        models: vec![ModelSpec {
            name: "same".into(),
            aliases: vec![],
            provider_model: "same".into(),
            authorization: None,
            route: "route-same".into(),
            mode: None,
            request_limit_multiplier: 1.0,
        }],
        principals: vec![PrincipalSpec { user_id: 1, ..Default::default() }],
        tokens: TokenTable::build(vec![(hash_key("sk-same"), 1, None, 0)]),
        mcp_servers: vec![],
        journal: None,
    };
    let policy = Rc::new(Policy::from_snapshot(snap).unwrap());
    // The provider's model name is the client's: routed, body untouched, no new length.
    let body = br#"{"model":"same","messages":[{"role":"user","content":"hi"}]}"#;
    let mut h = chat("sk-same");
    h.body = body.to_vec();
    assert_eq!(run(&mut h, Some(policy.clone())), Flow::Continue);
    assert_eq!(h.header(ROUTE_HEADER), Some("route-same"));
    assert_eq!(h.body, body);
    assert_eq!(h.header("content-length"), None);
    // A stream still gets the usage option added, with the new length.
    let mut h = chat("sk-same");
    h.body = br#"{"model":"same","stream":true,"messages":[]}"#.to_vec();
    assert_eq!(run(&mut h, Some(policy.clone())), Flow::Continue);
    let sent: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
    assert_eq!(sent["model"], "same");
    assert_eq!(h.header("content-length"), Some(h.body.len().to_string().as_str()));
    // ... and one that already asks for usage is left alone again.
    let mut h = chat("sk-same");
    let asks = br#"{"model":"same","stream":true,"stream_options":{"include_usage":true}}"#;
    h.body = asks.to_vec();
    assert_eq!(run(&mut h, Some(policy)), Flow::Continue);
    assert_eq!(h.body, asks);
    assert_eq!(h.header("content-length"), None);
}

#[test]
fn the_body_phase_reads_the_clock_only_when_a_cap_applies() {
    // In the proxy every clock reading is a call out of the VM: a key without caps never
    // needs one in the body phase.
    let reads = std::cell::Cell::new(0);
    let clock = || {
        reads.set(reads.get() + 1);
        NOW * 1000
    };
    let mut h = chat("sk-good");
    let mut f = RequestFilter::new(Some(policy()));
    assert_eq!(f.on_request_headers(&mut h, false, NOW * 1000), Flow::Pause);
    let size = h.body.len();
    assert_eq!(f.on_request_body(&mut h, size, true, clock), Flow::Continue);
    assert_eq!(reads.get(), 0);
    // A capped key is charged to the current second's window.
    let mut h = chat("sk-capped-a");
    h.body = SMALL.to_vec();
    let mut f = RequestFilter::new(Some(policy()));
    assert_eq!(f.on_request_headers(&mut h, false, NOW * 1000), Flow::Pause);
    let size = h.body.len();
    assert_eq!(f.on_request_body(&mut h, size, true, clock), Flow::Continue);
    assert_eq!(reads.get(), 1);
    assert!(h.shared.data.keys().any(|k| k.starts_with(KEY_PREFIX)), "{:?}", h.shared.data.keys());
}

#[test]
fn mcp_refusals_go_to_the_ledger_and_served_requests_to_the_control_plane() {
    // Served: the control plane records it (with the MCP method), so the filter does not.
    let mut h = TestHost::request("POST", "/mcp", &[("authorization", "Bearer sk-good")], b"");
    let mut f = RequestFilter::new(Some(policy()));
    assert_eq!(f.on_request_headers(&mut h, false, NOW * 1000), Flow::Continue);
    assert!(f.on_done(&mut MemShared::default(), NOW * 1000 + 3).is_none());
    // Refused by the filter: one event, with the key's identity when it is known.
    let h = TestHost::request("POST", "/mcp-servers/secret-tools/mcp", &[("authorization", "Bearer sk-excluder")], b"");
    let e = event_of(h, None);
    assert_eq!((e.status, e.outcome, e.token_id), (404, Some(Outcome::NotFound), Some(7)));
    assert_eq!(e.path, "/mcp-servers/secret-tools/mcp");
    let e = event_of(TestHost::request("POST", "/mcp", &[], b""), None);
    assert_eq!((e.status, e.outcome), (401, Some(Outcome::Unauthorized)));
}

#[test]
fn provider_account_headers_are_stripped_only_when_sent() {
    // Counts the calls into the proxy that remove a header.
    struct Counting(TestHost, usize);
    impl Host for Counting {
        fn request_headers(&self) -> Vec<(String, String)> {
            self.0.request_headers()
        }
        fn set_request_header(&mut self, name: &str, value: &str) {
            self.0.set_request_header(name, value)
        }
        fn remove_request_header(&mut self, name: &str) {
            self.1 += 1;
            self.0.remove_request_header(name)
        }
        fn request_body(&self, size: usize) -> Option<Vec<u8>> {
            self.0.request_body(size)
        }
        fn set_request_body(&mut self, body: &[u8]) {
            self.0.set_request_body(body)
        }
        fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
            self.0.send_response(status, headers, body)
        }
        fn peer_address(&self) -> Option<String> {
            self.0.peer_address()
        }
        fn call_out(&mut self, call: crate::host::Call<'_>) -> Result<u32, String> {
            self.0.call_out(call)
        }
    }
    let mut h = chat("sk-good");
    h.headers.push(("openai-organization".into(), "org-someone-else".into()));
    h.headers.push(("OpenAI-Project".into(), "proj_x".into()));
    h.headers.push(("openai-beta".into(), "assistants=v2".into()));
    assert_eq!(run(&mut h, Some(policy())), Flow::Continue);
    assert!(h.reply.is_none());
    assert!(h.header("openai-organization").is_none() && h.header("OpenAI-Project").is_none());
    assert_eq!(h.header("openai-beta"), Some("assistants=v2"), "other headers pass");
    // Without them, the header phase asks the proxy to remove nothing.
    let mut c = Counting(chat("sk-good"), 0);
    assert_eq!(RequestFilter::new(Some(policy())).on_request_headers(&mut c, false, NOW * 1000), Flow::Pause);
    assert_eq!(c.1, 0);
    c.0.headers.push(("openai-project".into(), "p".into()));
    assert_eq!(RequestFilter::new(Some(policy())).on_request_headers(&mut c, false, NOW * 1000), Flow::Pause);
    assert_eq!(c.1, 1);
}

fn create(key: &str, body: &[u8]) -> TestHost {
    TestHost::request(
        "POST",
        "/v1/responses",
        &[("authorization", &format!("Bearer {key}")), ("content-type", "application/json"), (":authority", "gw.test")],
        body,
    )
}

/// The ledger settings a policy needs to ask the control plane anything.
fn policy_with_control_plane() -> Rc<Policy> {
    policy_with(Settings {
        max_body_bytes: 4096,
        identity_secret: "s3cret".into(),
        ledger: crate::snapshot::LedgerSettings {
            cluster: "cp".into(),
            authority: "control-plane".into(),
            ..Default::default()
        },
        ..Default::default()
    })
}

#[test]
fn a_responses_create_is_routed_like_chat() {
    let mut h = create("sk-good", br#"{"model":"demo","input":"hi","max_output_tokens":12}"#);
    assert_eq!(run(&mut h, Some(policy())), Flow::Continue);
    assert!(h.reply.is_none());
    assert_eq!(h.header(ROUTE_HEADER), Some("route-chat"));
    assert_eq!(h.header("authorization"), Some("Bearer sk-provider"));
    let v: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
    assert_eq!(v["model"], "provider-chat");
    assert!(v.get("stream_options").is_none(), "Responses streams always report usage");
    assert!(h.calls.is_empty(), "no call to the control plane without previous_response_id");
    // Exclusions and a missing model as for chat.
    let mut h = create("sk-excluder", br#"{"model":"demo","input":"hi"}"#);
    run(&mut h, Some(policy()));
    assert_eq!(h.reply_json().0, 404);
    let mut h = create("sk-good", br#"{"input":"hi"}"#);
    run(&mut h, Some(policy()));
    let (status, v) = h.reply_json();
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("model")));
}

#[test]
fn a_continuation_waits_for_the_control_plane_to_vouch_for_its_previous_response() {
    let body = br#"{"model":"demo","input":"more","previous_response_id":"resp_1","max_output_tokens":10}"#;
    let start = |shared: &mut MemShared| {
        let mut h = create("sk-capped-a", body);
        std::mem::swap(&mut h.shared, shared);
        let mut f = RequestFilter::new(Some(policy_with_control_plane()));
        assert_eq!(f.on_request_headers(&mut h, false, NOW * 1000), Flow::Pause);
        let size = h.body.len();
        assert_eq!(f.on_request_body(&mut h, size, true, || NOW * 1000), Flow::Pause, "held for the check");
        std::mem::swap(&mut h.shared, shared);
        (h, f)
    };
    let mut shared = MemShared::default();
    let (mut h, mut f) = start(&mut shared);
    assert!(h.reply.is_none() && h.header(ROUTE_HEADER).is_none(), "nothing decided yet");
    assert!(shared.data.is_empty(), "nothing admitted before the answer");
    let call = h.calls.last().expect("the ownership check");
    assert_eq!(call.cluster, "cp");
    assert_eq!(call.header(":path"), Some("/internal/v1/responses/resp_1/owner"));
    assert_eq!(call.header("x-aqueduct-user-id"), Some("3"));
    assert_eq!(call.header("x-aqueduct-token-id"), Some("5"));
    // The body phase again (trailers) changes nothing while the check is out.
    assert_eq!(f.on_request_body(&mut h, body.len(), true, || NOW * 1000), Flow::Pause);
    std::mem::swap(&mut h.shared, &mut shared);
    assert_eq!(f.on_call_response(&mut h, Some(204), || NOW * 1000), Flow::Continue);
    std::mem::swap(&mut h.shared, &mut shared);
    assert_eq!(h.header(ROUTE_HEADER), Some("route-chat"));
    assert_eq!(output_used(&shared, NOW * 1000), 10, "admitted once vouched for");

    // Not the caller's: 404 naming the parameter, nothing admitted or forwarded.
    let mut shared = MemShared::default();
    let (mut h, mut f) = start(&mut shared);
    assert_eq!(f.on_call_response(&mut h, Some(404), || NOW * 1000), Flow::Pause);
    let (status, v) = h.reply_json();
    assert_eq!((status, v["error"]["param"].as_str()), (404, Some("previous_response_id")));
    assert!(h.header(ROUTE_HEADER).is_none() && shared.data.is_empty());
    let e = f.on_done(&mut shared, NOW * 1000 + 5).unwrap();
    assert_eq!((e.status, e.outcome), (404, Some(Outcome::NotFound)));
    // No answer (control plane away): fail closed.
    let mut shared = MemShared::default();
    let (mut h, mut f) = start(&mut shared);
    assert_eq!(f.on_call_response(&mut h, None, || NOW * 1000), Flow::Pause);
    assert_eq!(h.reply_json().0, 503);
    // Without a control plane to ask, the same.
    let mut h = create("sk-good", body);
    run(&mut h, Some(policy()));
    assert_eq!(h.reply_json().0, 503);
}

/// A capped key's streaming create (50 output tokens reserved), routed at `t0`.
fn streamed_create(shared: &mut MemShared, t0: i64) -> (TestHost, RequestFilter) {
    let mut h = create("sk-capped-a", br#"{"model":"demo","input":"hi","stream":true,"max_output_tokens":50}"#);
    std::mem::swap(&mut h.shared, shared);
    let mut f = RequestFilter::new(Some(policy()));
    f.on_request_headers(&mut h, false, t0);
    let size = h.body.len();
    assert_eq!(f.on_request_body(&mut h, size, true, || t0), Flow::Continue);
    std::mem::swap(&mut h.shared, shared);
    (h, f)
}

#[test]
fn a_responses_answer_gives_its_id_and_usage_to_the_ledger() {
    let t0 = NOW * 1000;
    let json = br#"{"id":"resp_abc","object":"response","status":"completed","output":[],"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":2},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":3},"total_tokens":12}}"#;
    let e = event_of(create("sk-good", br#"{"model":"demo","input":"hi"}"#), Some(("200", json)));
    assert_eq!(e.response_id.as_deref(), Some("resp_abc"));
    assert_eq!((e.input_tokens, e.output_tokens, e.cached_tokens, e.reasoning_tokens), (5, 7, 2, 3));
    // A provider error records no id.
    let e = event_of(create("sk-good", br#"{"model":"demo","input":"hi"}"#), Some(("400", br#"{"id":"resp_x"}"#)));
    assert_eq!(e.response_id, None);
    // A stream: the id from `response.created`, the usage from `response.completed`.
    let mut shared = MemShared::default();
    let (mut h, mut f) = streamed_create(&mut shared, t0);
    h.response_headers = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    f.on_response_headers(&mut h, t0 + 5);
    let stream = concat!(
        "event: response.created\n",
        "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_s1\",\"status\":\"in_progress\",\"usage\":null}}\n\n",
        "event: response.output_text.delta\n",
        "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"Hello there\"}\n\n",
        "event: response.output_text.done\n",
        "data: {\"type\":\"response.output_text.done\",\"sequence_number\":2,\"text\":\"Hello there\"}\n\n",
        "event: response.completed\n",
        "data: {\"type\":\"response.completed\",\"sequence_number\":3,\"response\":{\"id\":\"resp_s1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":4,\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":0}}}}\n\n",
    );
    // Cut anywhere: the chunks pass unchanged, only read.
    for piece in stream.as_bytes().chunks(17) {
        h.response_chunk = piece.to_vec();
        f.on_response_body(&h, piece.len());
    }
    f.on_response_end();
    let e = f.on_done(&mut shared, t0 + 50).unwrap();
    assert_eq!(e.response_id.as_deref(), Some("resp_s1"));
    assert_eq!((e.input_tokens, e.output_tokens, e.estimated, e.streamed), (4, 2, false, true));
    assert_eq!(output_used(&shared, t0 + 50), 2, "50 reserved, 2 used");

    // Abandoned after some text: the reservation (or the text, when more) is charged, and the
    // id already known is recorded.
    let mut shared = MemShared::default();
    let (mut h, mut f) = streamed_create(&mut shared, t0);
    h.response_headers = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    f.on_response_headers(&mut h, t0 + 5);
    let cut = stream.find("event: response.output_text.done").unwrap();
    h.response_chunk = stream.as_bytes()[..cut].to_vec();
    f.on_response_body(&h, cut);
    let e = f.on_done(&mut shared, t0 + 50).unwrap();
    assert_eq!(e.response_id.as_deref(), Some("resp_s1"));
    assert_eq!((e.output_tokens, e.estimated, e.outcome), (50, true, Some(Outcome::Ok)));
    assert_eq!(output_used(&shared, t0 + 50), 50);
}

#[test]
fn id_based_response_calls_go_to_the_control_plane_with_the_callers_identity() {
    let item = |method: &str, path: &str, key: &str| {
        TestHost::request(
            method,
            path,
            &[("authorization", &format!("Bearer {key}")), ("x-aqueduct-user-id", "1")],
            b"",
        )
    };
    let mut h = item("GET", "/v1/responses/resp_1/input_items?limit=2", "sk-capped-a");
    let mut f = RequestFilter::new(Some(policy()));
    assert_eq!(f.on_request_headers(&mut h, true, NOW * 1000), Flow::Continue);
    assert!(h.reply.is_none());
    assert!(h.header("authorization").is_none(), "the key stays here");
    assert_eq!(h.header(SECRET_HEADER), Some("s3cret"));
    assert_eq!(h.header(USER_ID_HEADER), Some("3"), "forged identity replaced");
    assert_eq!(h.header(TOKEN_ID_HEADER), Some("5"));
    assert!(h.header(ROUTE_HEADER).is_none(), "not a model route");
    h.response_headers = vec![(":status".into(), "404".into())];
    f.on_response_headers(&mut h, NOW * 1000 + 3);
    let e = f.on_done(&mut MemShared::default(), NOW * 1000 + 9).unwrap();
    assert_eq!((e.status, e.outcome, e.token_id), (404, Some(Outcome::UpstreamError), Some(5)));
    assert_eq!((e.input_tokens, e.output_tokens), (0, 0));
    // Refused here: no key, a wrong method, an id that cannot be anyone's.
    for (method, path, key, status) in [
        ("GET", "/v1/responses/resp_1", "sk-nope", 401),
        ("PUT", "/v1/responses/resp_1", "sk-good", 405),
        ("GET", "/v1/responses/resp_1/cancel", "sk-good", 405),
        ("GET", "/responses/r%2e%2e", "sk-good", 404),
        ("GET", "/v1/responses/resp_1/steps", "sk-good", 404),
    ] {
        let mut h = item(method, path, key);
        run(&mut h, Some(policy()));
        assert_eq!(h.reply_json().0, status, "{method} {path}");
    }
    let mut h = item("DELETE", "/responses/resp_1", "sk-good");
    assert_eq!(run(&mut h, None), Flow::Pause);
    assert_eq!(h.reply_json().0, 503, "no policy: fail closed");
}
