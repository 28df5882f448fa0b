//! Rate limits enforced by the filter through a real Envoy (two workers sharing the counts),
//! configured through the management API.

use crate::harness::{http, Harness, ADMIN_KEY};
use std::time::Duration;

fn models(base: &str) -> String {
    let entry = |name: &str, mult: f64| {
        format!(
            "  - model_name: {name}\n    litellm_params: {{ model: openai/{name}, api_base: \"{base}\" }}\n    model_info: {{ request_limit_multiplier: {mult} }}\n"
        )
    };
    format!("model_list:\n{}{}{}", entry("single", 1.0), entry("double", 2.0), entry("half", 0.5))
}

/// A key with `limits` set on the token itself (its aggregate caps), ready at the gateway.
async fn limited_key(h: &Harness, limits: serde_json::Value) -> String {
    let (id, key) = h.create_token("limited", None).await;
    let r =
        http().patch(h.url(&format!("/api/v1/tokens/{id}"))).bearer_auth(ADMIN_KEY).json(&limits).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    // Ready once the limit is in force: a request then carries x-ratelimit headers. (Generous:
    // a busy CI machine runs many gateways at once; the 1 s propagation is tested elsewhere.)
    h.eventually(Duration::from_secs(15), || async {
        let r = chat(h, &key, "single", None).await;
        r.status() == 200 && r.headers().keys().any(|k| k.as_str().starts_with("x-ratelimit-limit-"))
    })
    .await;
    key
}

async fn chat(h: &Harness, key: &str, model: &str, max_tokens: Option<u64>) -> reqwest::Response {
    let mut body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    if let Some(m) = max_tokens {
        body["max_tokens"] = m.into();
    }
    http().post(h.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap()
}

async fn count_passes(h: &Harness, key: &str, model: &str) -> usize {
    let mut n = 0;
    for _ in 0..20 {
        let r = chat(h, key, model, Some(5)).await;
        if r.status() != 200 {
            assert_eq!(r.status(), 429);
            break;
        }
        n += 1;
    }
    n
}

#[tokio::test]
async fn multipliers_hold_exactly() {
    let h = Harness::start_with(models).await;
    // Each key spends one request on "single" while waiting for its limit to arrive.
    let key = limited_key(&h, serde_json::json!({"requests_per_minute": 4})).await;
    assert_eq!(count_passes(&h, &key, "double").await, 6, "3 left of 4, at half a request each");
    let key = limited_key(&h, serde_json::json!({"requests_per_minute": 4})).await;
    assert_eq!(count_passes(&h, &key, "half").await, 2, "3 left of 4, at two requests each");
    let key = limited_key(&h, serde_json::json!({"requests_per_minute": 2})).await;
    let r = chat(&h, &key, "single", Some(5)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
    let r = chat(&h, &key, "single", Some(5)).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((55..=61).contains(&retry), "retry-after {retry}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("requests per minute"), "{v}");
}

#[tokio::test]
async fn a_burst_across_workers_admits_exactly_the_limit() {
    let h = Harness::start_with(models).await;
    let key = limited_key(&h, serde_json::json!({"requests_per_minute": 101})).await;
    let client = http();
    let url = h.url("/v1/chat/completions");
    let body = serde_json::json!({"model": "single", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let (c, u, b, k) = (client.clone(), url.clone(), body.clone(), key.clone());
            tokio::spawn(async move { c.post(u).bearer_auth(k).json(&b).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!((ok, limited), (100, 200), "one of 101 was spent while waiting for the limit");
}

#[tokio::test]
async fn leased_budget_still_admits_exactly_the_limit() {
    // 2,000 a minute: far from the limit each worker leases two requests at a time (0.1 %),
    // in the last 1 % every request is admitted against the window itself. Whatever the two
    // workers hold when the window fills goes back within a second, so once the burst is over
    // exactly the limit has been admitted.
    let h = Harness::start_with(models).await;
    let key = limited_key(&h, serde_json::json!({"requests_per_minute": 2000})).await;
    let client = http();
    let url = h.url("/v1/chat/completions");
    let body = serde_json::json!({"model": "single", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let send = |n: usize| {
        let (c, u, b, k) = (client.clone(), url.clone(), body.clone(), key.clone());
        async move {
            let mut counts = (0usize, 0usize);
            for _ in 0..n {
                match c.post(&u).bearer_auth(&k).json(&b).send().await.unwrap().status().as_u16() {
                    200 => counts.0 += 1,
                    429 => counts.1 += 1,
                    s => panic!("unexpected status {s}"),
                }
            }
            counts
        }
    };
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..32).map(|_| tokio::spawn(send(70))).collect();
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (o, l) = t.await.unwrap();
        ok += o;
        limited += l;
    }
    // Unspent leases go back at the end of their second (the filter's 200 ms tick).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (o, l) = send(40).await;
    assert!(started.elapsed() < Duration::from_secs(55), "the burst must fit in one window");
    assert_eq!((ok + o, limited + l), (1999, 2280 - 1999), "one of 2,000 was spent while waiting for the limit");
}

#[tokio::test]
async fn output_tokens_are_reserved_then_settled_with_real_usage() {
    let h = Harness::start_with(models).await;
    let key = limited_key(&h, serde_json::json!({"output_tokens_per_minute": 1000})).await;
    // A huge max_tokens reserves the configured cap (4096), which exceeds the budget: the
    // request is admitted (budget above zero)...
    let r = chat(&h, &key, "single", Some(1_000_000)).await;
    assert_eq!(r.status(), 200);
    // ...and once its real (small) usage settles, the reservation is refunded.
    h.eventually(Duration::from_secs(2), || async { chat(&h, &key, "single", Some(5)).await.status() == 200 }).await;
    // Streams are counted from the usage chunk the gateway asks for.
    let r = http()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model":"single","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-ratelimit-remaining-output-tokens"), "headers on streams too");
    let text = r.text().await.unwrap();
    assert!(text.contains("\"usage\""), "usage chunk requested upstream: {text}");
    let sent = h.upstream.requests().last().unwrap().json().unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn counts_survive_policy_pushes_and_changed_limits_apply_at_once() {
    let h = Harness::start_with(models).await;
    let (id, key) = h.create_token("limited", None).await;
    let patch = |limits: serde_json::Value| {
        let url = h.url(&format!("/api/v1/tokens/{id}"));
        async move {
            let r = http().patch(url).bearer_auth(ADMIN_KEY).json(&limits).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    patch(serde_json::json!({"requests_per_minute": 3})).await;
    h.eventually(Duration::from_secs(5), || async {
        chat(&h, &key, "single", Some(5)).await.headers().contains_key("x-ratelimit-limit-requests")
    })
    .await;
    // One request was spent seeing the limit arrive; spend one more.
    assert_eq!(chat(&h, &key, "single", Some(5)).await.status(), 200);
    // A policy push (another key created) rebuilds every VM's root context: counts stay.
    let (_, other) = h.create_token("other", None).await;
    h.eventually(Duration::from_secs(5), || async { chat(&h, &other, "single", Some(5)).await.status() == 200 }).await;
    assert_eq!(chat(&h, &key, "single", Some(5)).await.status(), 200, "third of three");
    assert_eq!(chat(&h, &key, "single", Some(5)).await.status(), 429, "the count survived the push");
    // Raising the limit applies from the next request, with the window's count kept.
    patch(serde_json::json!({"requests_per_minute": 5})).await;
    h.eventually(Duration::from_secs(2), || async { chat(&h, &key, "single", Some(5)).await.status() == 200 }).await;
    // Lowering it below what was used refuses at once.
    patch(serde_json::json!({"requests_per_minute": 1})).await;
    h.eventually(Duration::from_secs(2), || async { chat(&h, &key, "single", Some(5)).await.status() == 429 }).await;
}

/// Streams the response, reading only `chunks` SSE events before dropping the connection.
async fn stream_and_leave(h: &Harness, key: &str, max_tokens: u64, chunks: usize) {
    use futures::StreamExt;
    let r = http()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&serde_json::json!({"model":"single","stream":true,"max_tokens":max_tokens,
            "messages":[{"role":"user","content":"one two three four five six seven eight"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    for _ in 0..chunks {
        if body.next().await.is_none() {
            break;
        }
    }
}

#[tokio::test]
async fn streams_without_usage_settle_and_abandoned_streams_pay_their_reservation() {
    let h = Harness::start_with(models).await;
    let key = limited_key(&h, serde_json::json!({"output_tokens_per_minute": 500})).await;
    // The provider sends no usage: output is estimated from the streamed text, and the rest of
    // the 900-token reservation comes back. Unsettled, 900 of 500 would refuse the next request.
    h.upstream.set_defaults(fake_upstream::Controls { no_usage: Some(true), ..Default::default() });
    stream_and_leave(&h, &key, 900, usize::MAX).await;
    h.eventually(Duration::from_secs(2), || async { chat(&h, &key, "single", Some(900)).await.status() == 200 }).await;

    // A client that leaves mid-stream pays its reservation (the provider goes on generating):
    // settled, not released, when Envoy ends the stream. Released, the next request would pass
    // within a second or so (as it did before hang-ups were charged); charged, the 900 of 500
    // keeps refusing for the rest of the window.
    let key = limited_key(&h, serde_json::json!({"output_tokens_per_minute": 500})).await;
    h.upstream.set_defaults(fake_upstream::Controls {
        chunk_delay_ms: Some(200),
        chunks: Some(10),
        ..Default::default()
    });
    stream_and_leave(&h, &key, 900, 2).await;
    h.upstream.set_defaults(fake_upstream::Controls::default());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(chat(&h, &key, "single", Some(900)).await.status(), 429, "the hang-up paid its reservation");
}

/// Creates `path` as the admin and returns its id.
async fn create(h: &Harness, path: &str, body: serde_json::Value) -> serde_json::Value {
    let r = http().post(h.url(&format!("/api/v1{path}"))).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "POST {path} {body}");
    r.json().await.unwrap()
}

fn sid(v: &serde_json::Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// Asserts `r` is a 429 naming `who` and the dimension.
async fn refused_by(r: reqwest::Response, who: &str, what: &str) {
    assert_eq!(r.status(), 429);
    let v: serde_json::Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(who) && msg.contains(what), "expected {who} / {what}: {msg}");
}

#[tokio::test]
async fn caps_at_every_level_inherit_override_and_aggregate() {
    let h = Harness::start_with(models).await;
    // Org: 2 requests/min per key by default, 3000 input tokens/min for all its traffic.
    let org = create(&h, "/orgs", serde_json::json!({"name": "acme"})).await;
    let org_id = sid(&org);
    let r = http()
        .patch(h.url(&format!("/api/v1/orgs/{org_id}")))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"key_requests_per_minute": 2, "input_tokens_per_minute": 3000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A user overriding the per-key default with 3; another inheriting the org's 2.
    let u = create(&h, "/users", serde_json::json!({"email": "u@acme.example", "org_id": org_id})).await;
    let u2 = create(&h, "/users", serde_json::json!({"email": "v@acme.example", "org_id": org_id})).await;
    let r = http()
        .patch(h.url(&format!("/api/v1/users/{}", sid(&u))))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"key_requests_per_minute": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A team capped at 3 requests/min in all, with two service accounts.
    let team = create(&h, "/teams", serde_json::json!({"org_id": org_id, "name": "t", "description": ""})).await;
    let team_id = sid(&team);
    let r = http()
        .patch(h.url(&format!("/api/v1/teams/{team_id}")))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"requests_per_minute": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http()
        .put(h.url(&format!("/api/v1/teams/{team_id}/members/{}", sid(&u))))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"team_admin": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sa_path = format!("/teams/{team_id}/service-accounts");
    let sa1 = create(&h, &sa_path, serde_json::json!({"name": "a", "description": "", "user_id": sid(&u)})).await;
    let sa2 = create(&h, &sa_path, serde_json::json!({"name": "b", "description": "", "user_id": sid(&u)})).await;
    let key = |v: &serde_json::Value| v["key"].as_str().unwrap().to_string();
    let (s1, s2) = (key(&sa1), key(&sa2));
    // Keys made last: once they work, the limits above are in the same snapshot.
    let k1 = key(&create(&h, "/tokens", serde_json::json!({"name": "k1", "user_id": sid(&u)})).await);
    let k2 = key(&create(&h, "/tokens", serde_json::json!({"name": "k2", "user_id": sid(&u)})).await);
    let v1 = key(&create(&h, "/tokens", serde_json::json!({"name": "v1", "user_id": sid(&u2)})).await);
    h.eventually(Duration::from_secs(15), || async {
        let r = http().get(h.url("/v1/models")).bearer_auth(&v1).send().await.unwrap();
        r.status() == 200
    })
    .await;

    // Per-key caps: the user's override (3) for each of their keys, not shared between them.
    for k in [&k1, &k2] {
        for _ in 0..3 {
            assert_eq!(chat(&h, k, "single", Some(5)).await.status(), 200);
        }
        refused_by(chat(&h, k, "single", Some(5)).await, "key ", "requests per minute").await;
    }
    // Service-account keys inherit the org's 2 per key, and share the team's 3.
    for _ in 0..2 {
        assert_eq!(chat(&h, &s1, "single", Some(5)).await.status(), 200);
    }
    refused_by(chat(&h, &s1, "single", Some(5)).await, "key ", "requests per minute").await;
    // Through a real OpenAI client: the team's last request, then its refusal.
    let req = async_openai::types::CreateChatCompletionRequestArgs::default()
        .model("single")
        .max_tokens(5u32)
        .messages([async_openai::types::ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    let client = h.openai(&s2);
    assert!(client.chat().create(req.clone()).await.is_ok());
    match client.chat().create(req).await {
        Err(async_openai::error::OpenAIError::ApiError(e)) => {
            assert_eq!(e.r#type.as_deref(), Some("rate_limit_error"));
            assert!(e.message.contains(&format!("team {team_id}")), "{}", e.message);
        }
        other => panic!("expected a rate-limit error, got {other:?}"),
    }

    // Input tokens, aggregated over the org: 3,200 words (the fake upstream's tokens) in one
    // request is admitted while the budget is above zero, then the org is in debt for every key.
    let big = "word ".repeat(3_200);
    let r = http()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(&v1)
        .json(&serde_json::json!({"model": "single", "max_tokens": 5, "messages": [{"role": "user", "content": big}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit-input-tokens"], "3000");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 3_200);
    let r = chat(&h, &v1, "single", Some(5)).await;
    refused_by(r, &format!("org {org_id}"), "input tokens per minute").await;
    // Also for the other user's fresh key, whose own per-key cap has room.
    let k3 = key(&create(&h, "/tokens", serde_json::json!({"name": "k3", "user_id": sid(&u)})).await);
    h.eventually(Duration::from_secs(15), || async {
        http().get(h.url("/v1/models")).bearer_auth(&k3).send().await.unwrap().status() == 200
    })
    .await;
    refused_by(chat(&h, &k3, "single", Some(5)).await, &format!("org {org_id}"), "input tokens per minute").await;
}
