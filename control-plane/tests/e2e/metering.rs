//! Output-token metering that a client cannot switch off: streams are recognised strictly and
//! always asked for their usage chunk, JSON answers of any size are counted from their usage,
//! and a client that hangs up before the answer pays its reservation.

use crate::harness::{expect_error, http, Harness, ADMIN_KEY};
use serde_json::{json, Value};
use std::time::Duration;

/// The admin's view of the request log, only the rows of end user `user`.
async fn events_of(h: &Harness, user: &str) -> Vec<Value> {
    let r = http().get(h.url("/api/v1/usage/requests?limit=10000")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["data"].as_array().cloned().unwrap_or_default().into_iter().filter(|r| r["end_user"] == user).collect()
}

/// Waits for `n` events of end user `user` and returns them.
async fn wait_events(h: &Harness, user: &str, n: usize) -> Vec<Value> {
    h.eventually(Duration::from_secs(5), || async { events_of(h, user).await.len() >= n }).await;
    events_of(h, user).await
}

/// A key limited to `output_tokens_per_minute`, ready at the gateway (its first request, a
/// probe answered with rate-limit headers, used a few output tokens).
async fn output_limited_key(h: &Harness, output_tokens_per_minute: u64) -> String {
    let (id, key) = h.create_token("metered", None).await;
    let r = http()
        .patch(h.url(&format!("/api/v1/tokens/{id}")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "output_tokens_per_minute": output_tokens_per_minute }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    h.eventually(Duration::from_secs(15), || async {
        let r =
            chat(h, &key, json!({"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
                .await;
        r.status() == 200 && r.headers().contains_key("x-ratelimit-limit-output-tokens")
    })
    .await;
    key
}

async fn chat(h: &Harness, key: &str, body: Value) -> reqwest::Response {
    http().post(h.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn stream_options_null_cannot_switch_off_stream_metering() {
    let h = Harness::start().await;
    let key = output_limited_key(&h, 2500).await;
    // Every answer now spends 1,000 hidden reasoning tokens: only the provider's usage report
    // shows them, never the streamed text.
    h.upstream.set_defaults(fake_upstream::Controls { reasoning_tokens: Some(1000), ..Default::default() });
    let body = json!({"model": "chat", "stream": true, "stream_options": null, "max_tokens": 5, "user": "opts-null",
        "messages": [{"role": "user", "content": "hi"}]});
    let mut passed = 0;
    for _ in 0..10 {
        let r = chat(&h, &key, body.clone()).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        if status == 429 {
            break;
        }
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"reasoning_tokens\":1000"), "the usage chunk was asked for: {text}");
        passed += 1;
        // The reservation settles when Envoy logs the stream, just after its last byte.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // The probe used a few tokens; then 1,005 per request: the third takes the key over 2,500.
    assert_eq!(passed, 3, "an output-token limit that admits 3");
    let sent = h.upstream.requests().into_iter().rev().find(|r| r.path.ends_with("/chat/completions")).unwrap();
    let raw = String::from_utf8(sent.body.clone()).unwrap();
    assert_eq!(raw.matches("stream_options").count(), 1, "one member, never two: {raw}");
    assert_eq!(sent.json().unwrap()["stream_options"], json!({"include_usage": true}));
    let events = wait_events(&h, "opts-null", 3).await;
    for e in events.iter().filter(|e| e["status"] == 200) {
        assert_eq!(e["estimated"], false, "{e}");
        assert!(e["output_tokens"].as_i64().unwrap() > 1000, "{e}");
        assert_eq!(e["reasoning_tokens"], 1000, "{e}");
    }
}

#[tokio::test]
async fn stream_must_be_a_boolean() {
    let h = Harness::start().await;
    let (_, key) = h.create_token("strict", None).await;
    h.eventually(Duration::from_secs(15), || async {
        http().get(h.url("/v1/models")).bearer_auth(&key).send().await.unwrap().status() == 200
    })
    .await;
    let before = h.upstream.requests().len();
    for stream in [json!("true"), json!(1), Value::Null, json!({"on": true})] {
        let r =
            chat(&h, &key, json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
                .await;
        let e = expect_error(r, 400, "invalid_request_error").await;
        assert_eq!(e["param"], "stream", "{stream}: {e}");
    }
    assert_eq!(h.upstream.requests().len(), before, "none of them reached the provider");
    // Booleans work as before.
    for stream in [true, false] {
        let r =
            chat(&h, &key, json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
                .await;
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn json_answers_over_four_mebibytes_are_metered_from_their_usage() {
    let h = Harness::start().await;
    let (_, key) = h.create_token("big", None).await;
    h.eventually(Duration::from_secs(15), || async {
        http().get(h.url("/v1/models")).bearer_auth(&key).send().await.unwrap().status() == 200
    })
    .await;
    // 6 MiB of logprobs before the usage report, and 700 hidden reasoning tokens.
    h.upstream.set_defaults(fake_upstream::Controls {
        logprobs_bytes: Some(6 << 20),
        reasoning_tokens: Some(700),
        ..Default::default()
    });
    let r = chat(
        &h,
        &key,
        json!({"model": "chat", "logprobs": true, "top_logprobs": 20, "user": "big-json",
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    assert!(bytes.len() > 5 << 20, "{} bytes", bytes.len());
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    let usage = &answer["usage"];
    assert!(usage["completion_tokens"].as_i64().unwrap() > 700);
    let events = wait_events(&h, "big-json", 1).await;
    let e = &events[0];
    assert_eq!(e["estimated"], false, "{e}");
    assert_eq!(e["output_tokens"], usage["completion_tokens"], "{e}");
    assert_eq!(e["input_tokens"], usage["prompt_tokens"], "{e}");
    assert_eq!(e["reasoning_tokens"], 700, "{e}");
}

#[tokio::test]
async fn a_client_that_hangs_up_before_the_answer_pays_the_reservation() {
    let h = Harness::start().await;
    let key = output_limited_key(&h, 1000).await;
    // The provider takes 2 s to answer; the client gives up after 300 ms.
    let client = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let r = client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-fake-latency-ms", "2000")
        .json(&json!({"model": "chat", "max_tokens": 700, "user": "hang-up",
            "messages": [{"role": "user", "content": "a question worth 700 tokens"}]}))
        .send()
        .await;
    assert!(r.is_err(), "the client hung up");
    let events = wait_events(&h, "hang-up", 1).await;
    let e = &events[0];
    assert_eq!(e["outcome"], "client_closed", "{e}");
    assert_eq!(e["estimated"], true, "{e}");
    assert_eq!(e["output_tokens"], 700, "the reservation: {e}");
    assert!(e["input_tokens"].as_i64().unwrap() > 0, "{e}");
    // The rate-limit window keeps the charge: 700 of 1,000 are gone (plus the probe's few).
    let r = chat(&h, &key, json!({"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 200);
    let remaining: u64 = r.headers()["x-ratelimit-remaining-output-tokens"].to_str().unwrap().parse().unwrap();
    assert!(remaining <= 1000 - 700 - 5, "remaining {remaining}: the reservation was released");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_pays_the_reservation() {
    use futures::StreamExt;
    let h = Harness::start().await;
    let key = output_limited_key(&h, 1000).await;
    // A slow stream; the client reads its first chunks and leaves before the usage chunk. What
    // it saw is a few words; what the provider spent (reasoning first) it never saw.
    h.upstream.set_defaults(fake_upstream::Controls {
        chunk_delay_ms: Some(200),
        chunks: Some(10),
        reasoning_tokens: Some(500),
        ..Default::default()
    });
    let r = chat(
        &h,
        &key,
        json!({"model": "chat", "stream": true, "max_tokens": 600, "user": "left-mid-stream",
        "messages": [{"role": "user", "content": "one two three four five six seven eight"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    for _ in 0..2 {
        assert!(body.next().await.is_some());
    }
    drop(body);
    let events = wait_events(&h, "left-mid-stream", 1).await;
    let e = &events[0];
    assert_eq!((e["status"].as_i64(), e["streamed"].as_bool()), (Some(200), Some(true)), "{e}");
    assert_eq!(e["estimated"], true, "{e}");
    assert_eq!(e["output_tokens"], 600, "the reservation, not the few words streamed: {e}");
    h.upstream.set_defaults(fake_upstream::Controls::default());
    let r = chat(&h, &key, json!({"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 200);
    let remaining: u64 = r.headers()["x-ratelimit-remaining-output-tokens"].to_str().unwrap().parse().unwrap();
    assert!(remaining <= 1000 - 600 - 5, "remaining {remaining}: the reservation was released");
}
