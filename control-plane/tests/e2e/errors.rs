//! Every error the gateway answers itself, in OpenAI's shape, and what upstream failures become.

use crate::harness::{expect_error, http, Harness, ADMIN_KEY};
use fake_upstream::Controls;
use std::time::Duration;

fn chat_body() -> serde_json::Value {
    serde_json::json!({"model":"chat","messages":[{"role":"user","content":"hi"}]})
}

#[tokio::test]
async fn key_errors_are_401() {
    let h = Harness::start().await;
    let c = http();
    let url = h.url("/v1/chat/completions");

    let e = expect_error(c.post(&url).json(&chat_body()).send().await.unwrap(), 401, "invalid_request_error").await;
    assert_eq!(e["code"], "missing_api_key");
    let e = expect_error(
        c.post(&url).bearer_auth("sk-aq-nope").json(&chat_body()).send().await.unwrap(),
        401,
        "invalid_request_error",
    )
    .await;
    assert_eq!(e["code"], "invalid_api_key");

    // Revoked.
    let (id, key) = h.create_token("to revoke", None).await;
    h.eventually(Duration::from_secs(5), || async {
        c.post(&url).bearer_auth(&key).json(&chat_body()).send().await.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
    h.revoke_token(id).await;
    h.eventually(Duration::from_secs(5), || async {
        c.post(&url).bearer_auth(&key).json(&chat_body()).send().await.map(|r| r.status() == 401).unwrap_or(false)
    })
    .await;
    let e = expect_error(
        c.post(&url).bearer_auth(&key).json(&chat_body()).send().await.unwrap(),
        401,
        "invalid_request_error",
    )
    .await;
    assert_eq!(e["code"], "invalid_api_key");
    // The management API refuses it too.
    let r = c.get(h.url("/api/v1/tokens")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Expired: valid for two seconds, then refused with its own code.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (_, key) = h.create_token("short-lived", Some(&soon)).await;
    h.eventually(Duration::from_secs(5), || async {
        c.get(h.url("/v1/models")).bearer_auth(&key).send().await.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = expect_error(
        c.post(&url).bearer_auth(&key).json(&chat_body()).send().await.unwrap(),
        401,
        "invalid_request_error",
    )
    .await;
    assert_eq!(e["code"], "expired_api_key");
}

#[tokio::test]
async fn request_errors_have_the_right_status() {
    let h = Harness::start().await;
    let c = http();
    let url = h.url("/v1/chat/completions");
    let post = |body: Vec<u8>, ct: &'static str| {
        c.post(&url).bearer_auth(ADMIN_KEY).header("content-type", ct).body(body).send()
    };

    let e = expect_error(
        post(br#"{"model":"gpt-nonexistent","messages":[]}"#.to_vec(), "application/json").await.unwrap(),
        404,
        "not_found_error",
    )
    .await;
    assert_eq!(e["param"], "model");
    expect_error(
        post(b"{\"model\": \"chat\", ".to_vec(), "application/json").await.unwrap(),
        400,
        "invalid_request_error",
    )
    .await;
    let e = expect_error(
        post(b"{\"model\":\"ch\xffat\"}".to_vec(), "application/json").await.unwrap(),
        400,
        "invalid_request_error",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("UTF-8"));
    let e = expect_error(
        post(br#"{"messages":[]}"#.to_vec(), "application/json").await.unwrap(),
        400,
        "invalid_request_error",
    )
    .await;
    assert_eq!(e["param"], "model");
    expect_error(
        post(b"model=chat".to_vec(), "application/x-www-form-urlencoded").await.unwrap(),
        415,
        "invalid_request_error",
    )
    .await;
    expect_error(
        c.post(h.url("/v1/audio/transcriptions"))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"model":"whisper"}))
            .send()
            .await
            .unwrap(),
        415,
        "invalid_request_error",
    )
    .await;

    // Over the 1 MiB limit the harness sets: with a content-length, and streamed without one.
    let big = format!(r#"{{"model":"chat","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(1_100_000));
    expect_error(post(big.clone().into_bytes(), "application/json").await.unwrap(), 413, "invalid_request_error").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.into_bytes().chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let r = c
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "invalid_request_error").await;

    let r = c.get(&url).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(r.headers().get("allow").unwrap(), "POST");
    expect_error(r, 405, "invalid_request_error").await;
    expect_error(
        c.post(h.url("/v1/models")).bearer_auth(ADMIN_KEY).send().await.unwrap(),
        405,
        "invalid_request_error",
    )
    .await;
    expect_error(
        c.post(h.url("/v1/no-such-endpoint")).bearer_auth(ADMIN_KEY).send().await.unwrap(),
        404,
        "not_found_error",
    )
    .await;
    assert!(h.upstream.requests().is_empty(), "no bad request reached the provider");
}

#[tokio::test]
async fn forged_identity_headers_are_stripped() {
    let h = Harness::start().await;
    let r = http()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(ADMIN_KEY)
        .header("x-aqueduct-route", "embed")
        .header("X-Aqueduct-User-Id", "1")
        .header("x-aqueduct-role", "admin")
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let up = &h.upstream.requests()[0];
    assert_eq!(up.json().unwrap()["model"], "provider-chat", "forged route header ignored");
    assert!(up.headers.iter().all(|(k, _)| !k.starts_with("x-aqueduct")));
}

#[tokio::test]
async fn upstream_failures_reach_the_client_in_openai_shape() {
    let h = Harness::start().await;
    let c = http();
    // The provider's own error passes through unchanged.
    h.upstream.set_defaults(Controls {
        status: Some(429),
        error_message: Some("slow down".into()),
        ..Default::default()
    });
    let r = c.post(h.url("/v1/chat/completions")).bearer_auth(ADMIN_KEY).json(&chat_body()).send().await.unwrap();
    let e = expect_error(r, 429, "rate_limit_error").await;
    assert_eq!(e["message"], "slow down");
    h.upstream.set_defaults(Controls { status: Some(500), ..Default::default() });
    let r = c
        .post(h.url("/v1/embeddings"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"model":"embed","input":"x"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 500, "server_error").await;
}

#[tokio::test]
async fn unreachable_provider_is_503_json() {
    let h = Harness::start_with(|_| {
        let dead = crate::harness::free_port();
        format!("model_list:\n  - model_name: gone\n    litellm_params: {{ model: openai/gone, api_base: \"http://127.0.0.1:{dead}/v1\" }}\n")
    })
    .await;
    let r = http()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"model":"gone","messages":[]}))
        .send()
        .await
        .unwrap();
    let e = expect_error(r, 503, "server_error").await;
    assert_eq!(e["code"], "upstream_unavailable");
}

#[tokio::test]
async fn management_api_requires_an_admin() {
    let h = Harness::start().await;
    let c = http();
    let r = c.get(h.url("/api/v1/tokens")).send().await.unwrap();
    expect_error(r, 401, "invalid_request_error").await;
    // A plain user manages only their own keys: the admin's key is invisible (404), and
    // admin-only routes are refused (403).
    let db =
        aqueduct::db::Db::open(Some(&format!("sqlite://{}", h.dir.path().join("aqueduct.db").display())), h.dir.path())
            .await
            .unwrap();
    let user = aqueduct::tokens::store::ensure_user(&db, "user@example.com", "user", 0).await.unwrap();
    let key = aqueduct::tokens::generate_key();
    aqueduct::tokens::store::insert(&db, user, "u", &aqueduct::tokens::hash_hex(&key), "p", 0, None).await.unwrap();
    let r = c.get(h.url("/api/v1/tokens")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let own: serde_json::Value = r.json().await.unwrap();
    assert!(
        own["data"].as_array().unwrap().iter().all(|t| t["user_id"].as_str() == Some(user.to_string().as_str())),
        "{own}"
    );
    let r = c
        .post(h.url("/api/v1/tokens"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"name":"mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c.delete(h.url("/api/v1/tokens/1")).bearer_auth(&key).send().await.unwrap();
    expect_error(r, 404, "not_found_error").await;
    let r = c.get(h.url("/api/v1/status")).bearer_auth(&key).send().await.unwrap();
    expect_error(r, 403, "permission_denied_error").await;
    let r = c
        .post(h.url("/api/v1/tokens"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"name":"x","user_id":999}))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "not_found_error").await;
    let r = c
        .post(h.url("/api/v1/tokens"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request_error").await;
    let r = c
        .post(h.url("/api/v1/tokens"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"name":"x","expires_at":"2001-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request_error").await;
    let r = c.delete(h.url("/api/v1/tokens/424242")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    expect_error(r, 404, "not_found_error").await;
}

#[tokio::test]
async fn header_values_that_are_not_utf8_do_not_trap_the_filter() {
    let h = Harness::start().await;
    let odd = reqwest::header::HeaderValue::from_bytes(b"agent \xff\xfe/1").unwrap();
    for _ in 0..3 {
        let r = http()
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(ADMIN_KEY)
            .header("user-agent", odd.clone())
            .header("x-custom", odd.clone())
            .json(&chat_body())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }
    let log = std::fs::read_to_string(h.dir.path().join("envoy.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "the filter never panicked");
}
