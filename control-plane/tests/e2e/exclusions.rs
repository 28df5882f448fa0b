//! Model exclusions merged down a key's chain, enforced by the filter through a real Envoy.
//! Entities are written straight to the store here; the management API tests cover the routes.

use crate::harness::{http, Harness};
use std::time::Duration;

async fn sql(h: &Harness, statements: &[&str]) {
    let db_url = format!("sqlite://{}", h.dir.path().join("aqueduct.db").display());
    let pool = sqlx::SqlitePool::connect(&db_url).await.unwrap();
    for s in statements {
        sqlx::query(s).execute(&pool).await.unwrap();
    }
}

async fn models(h: &Harness, key: &str) -> Vec<String> {
    let r = http().get(h.url("/v1/models")).bearer_auth(key).send().await.unwrap();
    if r.status() != 200 {
        return vec![format!("status {}", r.status())];
    }
    let v: serde_json::Value = r.json().await.unwrap();
    v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

async fn status(h: &Harness, key: &str, model: &str) -> u16 {
    http()
        .post(h.url("/v1/embeddings"))
        .bearer_auth(key)
        .json(&serde_json::json!({"model": model, "input": "x"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn key_row(id: i64, user: i64, sa: &str, key: &str, excluded: &str, merge: bool) -> String {
    format!(
        "INSERT INTO tokens (id, user_id, service_account_id, name, key_hash, preview, created_at, excluded_models, merge_excluded_models) \
         VALUES ({id}, {user}, {sa}, 'k{id}', '{}', 'p', 0, '{excluded}', {merge})",
        aqueduct::tokens::hash_hex(key)
    )
}

#[tokio::test]
async fn exclusions_follow_the_chain_and_merge_flags() {
    let h = Harness::start().await;
    let stmts = [
        "INSERT INTO orgs (id, name, created_at, excluded_models) VALUES (10, 'acme', 0, '[\"tts\"]')".to_string(),
        "INSERT INTO users (id, email, role, created_at, org_id, excluded_models) VALUES (20, 'u@acme', 'user', 0, 10, '[\"image\"]')".to_string(),
        "INSERT INTO users (id, email, role, created_at, org_id, merge_excluded_models) VALUES (21, 'free@acme', 'user', 0, 10, FALSE)".to_string(),
        "INSERT INTO teams (id, org_id, name, created_at, excluded_models) VALUES (30, 10, 'red', 0, '[\"whisper\"]')".to_string(),
        "INSERT INTO service_accounts (id, team_id, owner_user_id, name, created_at, excluded_models) VALUES (40, 30, 20, 'bot', 0, '[]')".to_string(),
        // Personal key: token(chat-alias → chat) ∪ user(image) ∪ org(tts).
        key_row(100, 20, "NULL", "sk-aq-personal", "[\"chat-alias\"]", true),
        // Personal key of a user who does not merge: only the token's own list.
        key_row(101, 21, "NULL", "sk-aq-free", "[]", true),
        // Service-account key: token ∪ SA ∪ team(whisper) ∪ org(tts); the owner's list does not apply.
        key_row(102, 20, "40", "sk-aq-bot", "[]", true),
        // A token that stops inheritance.
        key_row(103, 20, "NULL", "sk-aq-solo", "[\"embed\"]", false),
    ];
    let refs: Vec<&str> = stmts.iter().map(String::as_str).collect();
    sql(&h, &refs).await;
    // The next resync (1 s in tests) publishes them.
    h.eventually(Duration::from_secs(5), || async { models(&h, "sk-aq-solo").await.len() == 4 }).await;

    assert_eq!(models(&h, "sk-aq-personal").await, ["embed", "whisper"]);
    assert_eq!(models(&h, "sk-aq-free").await, ["chat", "embed", "tts", "whisper", "image"]);
    assert_eq!(models(&h, "sk-aq-bot").await, ["chat", "embed", "image"]);
    assert_eq!(models(&h, "sk-aq-solo").await, ["chat", "tts", "whisper", "image"]);

    // Excluded → 404 not_found_error, whether named directly or by alias.
    assert_eq!(status(&h, "sk-aq-personal", "chat").await, 404);
    assert_eq!(status(&h, "sk-aq-personal", "chat-alias").await, 404);
    assert_eq!(status(&h, "sk-aq-personal", "embed").await, 200);
    assert_eq!(status(&h, "sk-aq-solo", "embed").await, 404);
    assert_eq!(status(&h, "sk-aq-bot", "embed").await, 200);

    // Deleting the service account, or the user, takes their keys out of the policy.
    sql(
        &h,
        &["UPDATE service_accounts SET deleted_at = 1 WHERE id = 40", "UPDATE users SET deleted_at = 1 WHERE id = 21"],
    )
    .await;
    h.eventually(Duration::from_secs(5), || async {
        models(&h, "sk-aq-bot").await == ["status 401 Unauthorized"]
            && models(&h, "sk-aq-free").await == ["status 401 Unauthorized"]
    })
    .await;
}
