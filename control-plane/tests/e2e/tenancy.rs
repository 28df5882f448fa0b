//! Tenancy management API end to end: the role matrix (allowed calls and refusals for admin,
//! org-admin, team-admin and user), bad input, pagination, caps, service-account keys through
//! the gateway, deleted users, and the OpenAPI document; on SQLite and on PostgreSQL.

use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A caller with a key.
struct Api<'a> {
    h: &'a Harness,
    key: String,
}

impl<'a> Api<'a> {
    fn new(h: &'a Harness, key: &str) -> Self {
        Self { h, key: key.to_string() }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.h.call(&self.key, method, &format!("/api/v1{path}"), body).await
    }

    /// Calls and asserts the status; returns the body.
    async fn expect(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
        let (s, v) = self.call(method, path, body.clone()).await;
        assert_eq!(s, status, "{method} {path} {body:?} -> {v}");
        if s >= 400 {
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        }
        v
    }

    /// Calls, asserts a 400/409 and that `param` names `field`.
    async fn expect_param(&self, method: &str, path: &str, body: Value, status: u16, field: &str) {
        let v = self.expect(method, path, Some(body), status).await;
        assert_eq!(v["error"]["param"], field, "{v}");
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("string id in {v}")).to_string()
}

async fn user_with_key(admin: &Api<'_>, email: &str, org: &str, role: &str) -> (String, String) {
    let u = admin.expect("POST", "/users", Some(json!({"email": email, "org_id": org, "role": role})), 201).await;
    let k = admin.expect("POST", "/tokens", Some(json!({"name": "k", "user_id": id(&u)})), 201).await;
    (id(&u), k["key"].as_str().unwrap().to_string())
}

async fn models_status(h: &Harness, key: &str) -> u16 {
    http().get(h.url("/v1/models")).bearer_auth(key).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// The role matrix and the key flows; runs on either backend.
async fn role_matrix(h: &Harness) {
    let admin = Api::new(h, ADMIN_KEY);
    // Orgs (admin only), uniqueness.
    let org_a = id(&admin.expect("POST", "/orgs", Some(json!({"name": "Org A"})), 201).await);
    let org_b = id(&admin.expect("POST", "/orgs", Some(json!({"name": "Org B"})), 201).await);
    admin.expect_param("POST", "/orgs", json!({"name": "Org A"}), 409, "name").await;

    let (oa_id, oa_key) = user_with_key(&admin, "oa@a.example", &org_a, "org-admin").await;
    let (_ob_id, ob_key) = user_with_key(&admin, "ob@b.example", &org_b, "org-admin").await;
    let (ta_id, ta_key) = user_with_key(&admin, "ta@a.example", &org_a, "user").await;
    let (u_id, u_key) = user_with_key(&admin, "u@a.example", &org_a, "user").await;
    let (u2_id, u2_key) = user_with_key(&admin, "u2@a.example", &org_a, "user").await;
    let (ub_id, _ub_key) = user_with_key(&admin, "ub@b.example", &org_b, "user").await;
    admin.expect_param("POST", "/users", json!({"email": "u@a.example", "org_id": org_a}), 409, "email").await;
    let (oa, ob, ta, u, u2) =
        (Api::new(h, &oa_key), Api::new(h, &ob_key), Api::new(h, &ta_key), Api::new(h, &u_key), Api::new(h, &u2_key));

    // Org-level: only admins create, change and delete orgs.
    oa.expect("POST", "/orgs", Some(json!({"name": "mine"})), 403).await;
    oa.expect("PATCH", &format!("/orgs/{org_a}"), Some(json!({"requests_per_minute": 5})), 403).await;
    oa.expect("GET", &format!("/orgs/{org_a}"), None, 200).await;
    oa.expect("GET", &format!("/orgs/{org_b}"), None, 404).await;
    let orgs = oa.expect("GET", "/orgs", None, 200).await;
    assert_eq!(orgs["data"].as_array().unwrap().len(), 1, "{orgs}");
    admin.expect("PATCH", &format!("/orgs/{org_a}"), Some(json!({"excluded_models": ["image"]})), 200).await;

    // Teams: org-admin in their org; cross-org 404; users refused.
    let team =
        oa.expect("POST", "/teams", Some(json!({"org_id": org_a, "name": "t1", "description": "first"})), 201).await;
    let t1 = id(&team);
    assert_eq!(team["org_id"], org_a.as_str());
    oa.expect_param("POST", "/teams", json!({"org_id": org_a, "name": "t1", "description": ""}), 409, "name").await;
    ob.expect("POST", "/teams", Some(json!({"org_id": org_a, "name": "intruder", "description": ""})), 404).await;
    u.expect("POST", "/teams", Some(json!({"org_id": org_a, "name": "nope", "description": ""})), 403).await;
    for (m, body) in [("GET", None), ("PATCH", Some(json!({"description": "x"}))), ("DELETE", None)] {
        ob.expect(m, &format!("/teams/{t1}"), body, 404).await;
    }
    oa.expect("PATCH", &format!("/teams/{t1}"), Some(json!({"key_requests_per_minute": 100})), 200).await;

    // Members: org-admin makes a team-admin; the team-admin adds same-org members only and
    // cannot grant team-admin.
    oa.expect("PUT", &format!("/teams/{t1}/members/{ta_id}"), Some(json!({"team_admin": true})), 201).await;
    ta.expect("PUT", &format!("/teams/{t1}/members/{u_id}"), Some(json!({"team_admin": false})), 201).await;
    ta.expect_param("PUT", &format!("/teams/{t1}/members/{ub_id}"), json!({"team_admin": false}), 400, "user_id").await;
    ta.expect_param("PUT", &format!("/teams/{t1}/members/{u2_id}"), json!({"team_admin": true}), 403, "team_admin")
        .await;
    u.expect("PUT", &format!("/teams/{t1}/members/{u2_id}"), Some(json!({"team_admin": false})), 403).await;
    ta.expect("PATCH", &format!("/teams/{t1}"), Some(json!({"description": "mine"})), 403).await;

    // A user reads their teams, nothing else.
    let teams = u.expect("GET", "/teams", None, 200).await;
    assert_eq!(teams["data"].as_array().unwrap().iter().map(id).collect::<Vec<_>>(), vec![t1.clone()]);
    u.expect("GET", &format!("/teams/{t1}"), None, 200).await;
    u2.expect("GET", &format!("/teams/{t1}"), None, 404).await;
    u.expect("GET", &format!("/orgs/{org_b}"), None, 404).await;
    u.expect("POST", "/users", Some(json!({"email": "x@a.example", "org_id": org_a, "role": "user"})), 403).await;
    u.expect("GET", &format!("/users/{u2_id}"), None, 404).await;

    // Service accounts: team-admin creates one; its key works through the gateway.
    let sa = ta
        .expect(
            "POST",
            &format!("/teams/{t1}/service-accounts"),
            Some(json!({"name": "bot", "description": "ci"})),
            201,
        )
        .await;
    let sa_id = id(&sa);
    let sa_key = sa["key"].as_str().unwrap().to_string();
    assert_eq!(sa["owner_user_id"], ta_id.as_str());
    ta.expect_param(
        "POST",
        &format!("/teams/{t1}/service-accounts"),
        json!({"name": "bot", "description": ""}),
        409,
        "name",
    )
    .await;
    u.expect("POST", &format!("/teams/{t1}/service-accounts"), Some(json!({"name": "mine", "description": ""})), 403)
        .await;
    ob.expect("GET", &format!("/service-accounts/{sa_id}"), None, 404).await;
    h.eventually(Duration::from_secs(5), || async { models_status(h, &sa_key).await == 200 }).await;
    // One key per account.
    ta.expect_param(
        "POST",
        "/tokens",
        json!({"name": "second", "service_account_id": sa_id}),
        409,
        "service_account_id",
    )
    .await;
    // Transfer: only to a member of the team.
    ta.expect_param("POST", &format!("/service-accounts/{sa_id}/transfer"), json!({"user_id": u2_id}), 400, "user_id")
        .await;
    let moved =
        ta.expect("POST", &format!("/service-accounts/{sa_id}/transfer"), Some(json!({"user_id": u_id})), 200).await;
    assert_eq!(moved["owner_user_id"], u_id.as_str());
    // The new owner cannot be removed from the team while owning it.
    ta.expect_param("DELETE", &format!("/teams/{t1}/members/{u_id}"), json!({}), 409, "user_id").await;
    // Team-admins may not set limits; org-admins may.
    ta.expect_param(
        "PATCH",
        &format!("/service-accounts/{sa_id}"),
        json!({"requests_per_minute": 1}),
        403,
        "requests_per_minute",
    )
    .await;
    oa.expect("PATCH", &format!("/service-accounts/{sa_id}"), Some(json!({"requests_per_minute": 60})), 200).await;

    // Keys: a user manages their own; another user's key is invisible (404), not just forbidden.
    let mine = u.expect("POST", "/tokens", Some(json!({"name": "mine"})), 201).await;
    let mine_id = id(&mine);
    assert!(mine["key"].as_str().unwrap().starts_with("sk-aq-"));
    assert!(mine["preview"].as_str().unwrap().starts_with("sk-…"));
    u2.expect("GET", &format!("/tokens/{mine_id}"), None, 404).await;
    u2.expect("DELETE", &format!("/tokens/{mine_id}"), None, 404).await;
    u2.expect("PATCH", &format!("/tokens/{mine_id}"), Some(json!({"name": "stolen"})), 404).await;
    u2.expect("POST", &format!("/tokens/{mine_id}/regenerate"), None, 404).await;
    ob.expect("GET", &format!("/tokens/{mine_id}"), None, 404).await;
    u.expect_param("POST", "/tokens", json!({"name": "x", "user_id": u2_id}), 403, "user_id").await;
    u.expect_param(
        "PATCH",
        &format!("/tokens/{mine_id}"),
        json!({"requests_per_minute": 5}),
        403,
        "requests_per_minute",
    )
    .await;
    u.expect("PATCH", &format!("/tokens/{mine_id}"), Some(json!({"name": "renamed"})), 200).await;
    let listed = u.expect("GET", "/tokens", None, 200).await;
    assert!(listed["data"].as_array().unwrap().iter().all(|t| t["user_id"] == u_id.as_str()), "{listed}");
    // Regenerate: the old secret stops, the new one works.
    let old = mine["key"].as_str().unwrap().to_string();
    let regen = u.expect("POST", &format!("/tokens/{mine_id}/regenerate"), None, 200).await;
    assert_eq!(id(&regen), mine_id);
    let new = regen["key"].as_str().unwrap().to_string();
    Api::new(h, &old).expect("GET", "/tokens", None, 401).await;
    Api::new(h, &new).expect("GET", "/tokens", None, 200).await;
    u.expect("DELETE", &format!("/tokens/{mine_id}"), None, 204).await;
    u.expect("DELETE", &format!("/tokens/{mine_id}"), None, 404).await;

    // Org-admin manages users of their org, not admins, not other orgs.
    oa.expect("PATCH", &format!("/users/{u_id}"), Some(json!({"requests_per_minute": 10})), 200).await;
    oa.expect_param(
        "POST",
        "/users",
        json!({"email": "boss@a.example", "org_id": org_a, "role": "admin"}),
        403,
        "role",
    )
    .await;
    ob.expect("PATCH", &format!("/users/{u_id}"), Some(json!({"active": false})), 404).await;
    ob.expect("DELETE", &format!("/users/{u_id}"), None, 404).await;
    u.expect("DELETE", &format!("/users/{u_id}"), None, 403).await;

    // A deleted user's keys stop: on the management API at once, at the gateway within 1 s.
    h.eventually(Duration::from_secs(5), || async { models_status(h, &u2_key).await == 200 }).await;
    oa.expect("DELETE", &format!("/users/{u2_id}"), None, 204).await;
    u2.expect("GET", "/teams", None, 401).await;
    let took = h.eventually(Duration::from_secs(1), || async { models_status(h, &u2_key).await == 401 }).await;
    eprintln!("deleted user's key refused by the gateway after {took:?}");
    admin.expect("GET", &format!("/users/{u2_id}"), None, 404).await;

    // Deleting a team revokes its service accounts' keys; cross-org deletion is 404.
    ob.expect("DELETE", &format!("/teams/{t1}"), None, 404).await;
    oa.expect("DELETE", &format!("/teams/{t1}"), None, 204).await;
    h.eventually(Duration::from_secs(2), || async { models_status(h, &sa_key).await == 401 }).await;
    admin.expect("GET", &format!("/service-accounts/{sa_id}"), None, 404).await;
    // The name is free again.
    oa.expect("POST", "/teams", Some(json!({"org_id": org_a, "name": "t1", "description": ""})), 201).await;
    let _ = oa_id;
}

#[tokio::test]
async fn tenancy_role_matrix_sqlite() {
    let h = Harness::start().await;
    role_matrix(&h).await;
}

#[tokio::test]
async fn tenancy_role_matrix_postgres() {
    let h = Harness::start_pg(&[]).await;
    let status: Value =
        http().get(h.url("/api/v1/status")).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["database"], "postgres");
    role_matrix(&h).await;
    bad_input(&h).await;
}

async fn bad_input(h: &Harness) {
    let admin = Api::new(h, ADMIN_KEY);
    let org = id(&admin.expect("POST", "/orgs", Some(json!({"name": "Bad Input Org"})), 201).await);
    admin.expect_param("POST", "/orgs", json!({"name": "x", "colour": "red"}), 400, "colour").await;
    admin.expect_param("POST", "/orgs", json!({"name": 5}), 400, "name").await;
    admin.expect_param("POST", "/orgs", json!({"name": "n".repeat(256)}), 400, "name").await;
    admin.expect_param("POST", "/orgs", json!({}), 400, "name").await;
    admin
        .expect_param("PATCH", &format!("/orgs/{org}"), json!({"requests_per_minute": -1}), 400, "requests_per_minute")
        .await;
    admin
        .expect_param(
            "PATCH",
            &format!("/orgs/{org}"),
            json!({"key_output_tokens_per_minute": "10"}),
            400,
            "key_output_tokens_per_minute",
        )
        .await;
    admin
        .expect_param("PATCH", &format!("/orgs/{org}"), json!({"excluded_models": [""]}), 400, "excluded_models")
        .await;
    admin
        .expect_param(
            "PATCH",
            &format!("/orgs/{org}"),
            json!({"merge_excluded_models": "no"}),
            400,
            "merge_excluded_models",
        )
        .await;
    admin.expect_param("POST", "/users", json!({"email": "not-an-email", "org_id": org}), 400, "email").await;
    admin
        .expect_param("POST", "/users", json!({"email": "a@b.example", "org_id": org, "role": "king"}), 400, "role")
        .await;
    admin
        .expect_param("POST", "/teams", json!({"org_id": org, "name": "t", "description": 3}), 400, "description")
        .await;
    admin.expect_param("POST", "/tokens", json!({"name": "t", "expires_at": "tomorrow"}), 400, "expires_at").await;
    // 0 is a valid limit (nothing allowed); null unsets.
    let v = admin.expect("PATCH", &format!("/orgs/{org}"), Some(json!({"requests_per_minute": 0})), 200).await;
    assert_eq!(v["requests_per_minute"], 0);
    let v = admin.expect("PATCH", &format!("/orgs/{org}"), Some(json!({"requests_per_minute": null})), 200).await;
    assert!(v["requests_per_minute"].is_null());
    // Nothing half-written: a team create that fails on a bad field leaves no team.
    admin
        .expect_param(
            "POST",
            "/teams",
            json!({"org_id": org, "name": "half", "requests_per_minute": -5}),
            400,
            "requests_per_minute",
        )
        .await;
    let teams = admin.expect("GET", "/teams?limit=1000", None, 200).await;
    assert!(!teams["data"].as_array().unwrap().iter().any(|t| t["name"] == "half"));
    // An org with live members cannot be deleted.
    admin.expect("POST", "/users", Some(json!({"email": "member@bad.example", "org_id": org})), 201).await;
    admin.expect_param("DELETE", &format!("/orgs/{org}"), json!({}), 409, "id").await;
}

#[tokio::test]
async fn tenancy_bad_input_pagination_caps_openapi() {
    let h = Harness::start_env(&[("AQUEDUCT_MAX_SERVICE_ACCOUNTS_PER_TEAM", "2"), ("AQUEDUCT_MAX_KEYS_PER_USER", "2")])
        .await;
    bad_input(&h).await;
    let admin = Api::new(&h, ADMIN_KEY);

    // Pagination: ascending ids, limit and after, has_more.
    for i in 0..5 {
        admin.expect("POST", "/orgs", Some(json!({"name": format!("page {i}")})), 201).await;
    }
    let all = admin.expect("GET", "/orgs?limit=1000", None, 200).await;
    let all: Vec<String> = all["data"].as_array().unwrap().iter().map(id).collect();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("/orgs?limit=2&after={a}"),
            None => "/orgs?limit=2".into(),
        };
        let page = admin.expect("GET", &q, None, 200).await;
        assert_eq!(page["object"], "list");
        let data: Vec<String> = page["data"].as_array().unwrap().iter().map(id).collect();
        assert!(data.len() <= 2);
        seen.extend(data.clone());
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        after = data.last().cloned();
    }
    assert_eq!(seen, all);
    let nums: Vec<i64> = seen.iter().map(|s| s.parse().unwrap()).collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]), "{nums:?}");
    admin.expect_param("GET", "/orgs?limit=0", json!(null), 400, "limit").await;
    admin.expect_param("GET", "/orgs?limit=1001", json!(null), 400, "limit").await;

    // Caps: 2 service accounts per team, 2 personal keys per user → 409 quota_exceeded.
    let org = id(&admin.expect("POST", "/orgs", Some(json!({"name": "caps"})), 201).await);
    let team =
        id(&admin.expect("POST", "/teams", Some(json!({"org_id": org, "name": "t", "description": ""})), 201).await);
    for n in ["a", "b"] {
        admin
            .expect(
                "POST",
                &format!("/teams/{team}/service-accounts"),
                Some(json!({"name": n, "description": ""})),
                201,
            )
            .await;
    }
    let v = admin
        .expect("POST", &format!("/teams/{team}/service-accounts"), Some(json!({"name": "c", "description": ""})), 409)
        .await;
    assert_eq!(v["error"]["code"], "quota_exceeded");
    let (_uid, ukey) = user_with_key(&admin, "capped@caps.example", &org, "user").await;
    let u = Api::new(&h, &ukey);
    u.expect("POST", "/tokens", Some(json!({"name": "second"})), 201).await;
    let v = u.expect("POST", "/tokens", Some(json!({"name": "third"})), 409).await;
    assert_eq!(v["error"]["code"], "quota_exceeded");

    // OpenAPI: served without a key; every route the router serves is in it, with exactly its
    // methods (any other method answers 405).
    let doc: Value = http().get(h.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/orgs",
        "/api/v1/orgs/{id}",
        "/api/v1/teams",
        "/api/v1/teams/{id}",
        "/api/v1/teams/{id}/members/{user_id}",
        "/api/v1/teams/{id}/service-accounts",
        "/api/v1/users",
        "/api/v1/users/{id}",
        "/api/v1/service-accounts/{id}",
        "/api/v1/service-accounts/{id}/transfer",
        "/api/v1/tokens",
        "/api/v1/tokens/{id}",
        "/api/v1/tokens/{id}/regenerate",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the OpenAPI document");
    }
    let c = http();
    for (path, ops) in paths {
        let url = h.url(&path.replace("{id}", "999999").replace("{user_id}", "999998"));
        for m in ["get", "post", "put", "patch", "delete"] {
            let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let r = c.request(method, &url).bearer_auth("sk-aq-not-a-key").send().await.unwrap();
            let documented = ops.get(m).is_some();
            assert_eq!(r.status() == 405, !documented, "{m} {path}: {}", r.status());
            let v: Value = r.json().await.unwrap_or(Value::Null);
            assert_ne!(v["error"]["code"], "unknown_url", "{m} {path} is documented but not routed");
        }
    }
}

#[tokio::test]
async fn admin_bootstrap_cli_creates_org_admin_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(["admin", "bootstrap", "--org", "Acme", "--email", "root@acme.example"])
        .env("AQUEDUCT_DATA_DIR", dir.path())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("sk-aq-") && key.len() == 6 + aqueduct::tokens::KEY_CHARS, "{key}");
    let db = aqueduct::db::Db::open(None, dir.path()).await.unwrap();
    let caller = aqueduct::tokens::store::caller(&db, &aqueduct::tokens::hash_hex(&key), 0).await.unwrap().unwrap();
    assert_eq!(caller.role, "admin");
    assert!(caller.org_id.is_some());
    // A second bootstrap with the same email fails instead of minting a duplicate admin.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(["admin", "bootstrap", "--org", "Acme", "--email", "root@acme.example"])
        .env("AQUEDUCT_DATA_DIR", dir.path())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!again.status.success());
}

/// Every kind of change made through the API reaches Envoy within a second, as a real OpenAI
/// client sees it: exclusions at org level, a user opting out of inheritance, a limit.
#[tokio::test]
async fn tenancy_changes_reach_envoy_within_a_second_for_an_openai_client() {
    use async_openai::types::CreateEmbeddingRequestArgs;
    let h = Harness::start().await;
    let admin = Api::new(&h, ADMIN_KEY);
    let org = admin.expect("POST", "/orgs", Some(json!({"name": "acme"})), 201).await;
    let (user, key) = user_with_key(&admin, "dev@acme.example", &id(&org), "user").await;
    let client = h.openai(&key);
    let listed = || async {
        client.models().list().await.map(|l| l.data.into_iter().map(|m| m.id).collect::<Vec<_>>()).unwrap_or_default()
    };
    h.eventually(Duration::from_secs(1), || async { listed().await.len() == 5 }).await;

    admin
        .expect("PATCH", &format!("/orgs/{}", id(&org)), Some(json!({"excluded_models": ["embed", "tts"]})), 200)
        .await;
    let took = h.eventually(Duration::from_secs(1), || async { listed().await == ["chat", "whisper", "image"] }).await;
    eprintln!("org exclusion visible to the client after {took:?}");
    let req = CreateEmbeddingRequestArgs::default().model("embed").input("x").build().unwrap();
    match client.embeddings().create(req.clone()).await {
        Err(async_openai::error::OpenAIError::ApiError(e)) => assert_eq!(e.r#type.as_deref(), Some("not_found_error")),
        other => panic!("expected a not-found error, got {other:?}"),
    }

    admin.expect("PATCH", &format!("/users/{user}"), Some(json!({"merge_excluded_models": false})), 200).await;
    h.eventually(Duration::from_secs(1), || async { listed().await.len() == 5 }).await;
    assert!(client.embeddings().create(req).await.is_ok());

    admin.expect("PATCH", &format!("/users/{user}"), Some(json!({"key_requests_per_minute": 0})), 200).await;
    h.eventually(Duration::from_secs(1), || async {
        let req = CreateEmbeddingRequestArgs::default().model("embed").input("x").build().unwrap();
        matches!(client.embeddings().create(req).await, Err(async_openai::error::OpenAIError::ApiError(e)) if e.r#type.as_deref() == Some("rate_limit_error"))
    })
    .await;
}

/// Refusals the role table implies, one by one (issue §4), beyond the main flow above.
#[tokio::test]
async fn role_refusals_case_by_case() {
    let h = Harness::start().await;
    let admin = Api::new(&h, ADMIN_KEY);
    let org_a = id(&admin.expect("POST", "/orgs", Some(json!({"name": "A"})), 201).await);
    let org_b = id(&admin.expect("POST", "/orgs", Some(json!({"name": "B"})), 201).await);
    let (_oa_id, oa_key) = user_with_key(&admin, "oa@a.example", &org_a, "org-admin").await;
    let (ta_id, ta_key) = user_with_key(&admin, "ta@a.example", &org_a, "user").await;
    let (u_id, u_key) = user_with_key(&admin, "u@a.example", &org_a, "user").await;
    let (v_id, _v_key) = user_with_key(&admin, "v@a.example", &org_a, "user").await;
    let (b_id, _b_key) = user_with_key(&admin, "b@b.example", &org_b, "user").await;
    let (oa, ta, u) = (Api::new(&h, &oa_key), Api::new(&h, &ta_key), Api::new(&h, &u_key));
    let t1 =
        id(&admin.expect("POST", "/teams", Some(json!({"org_id": org_a, "name": "t1", "description": ""})), 201).await);
    let t2 =
        id(&admin.expect("POST", "/teams", Some(json!({"org_id": org_a, "name": "t2", "description": ""})), 201).await);
    admin.expect("PUT", &format!("/teams/{t1}/members/{ta_id}"), Some(json!({"team_admin": true})), 201).await;
    admin.expect("PUT", &format!("/teams/{t1}/members/{u_id}"), Some(json!({"team_admin": false})), 201).await;
    let sa = ta
        .expect("POST", &format!("/teams/{t1}/service-accounts"), Some(json!({"name": "bot", "description": ""})), 201)
        .await;
    let sa_id = id(&sa);
    let sa2 = admin
        .expect(
            "POST",
            &format!("/teams/{t2}/service-accounts"),
            Some(json!({"name": "other", "description": ""})),
            201,
        )
        .await;
    let sa2_id = id(&sa2);

    // Team-admin: no limits or exclusions, on the team or its service accounts.
    ta.expect_param(
        "PATCH",
        &format!("/service-accounts/{sa_id}"),
        json!({"requests_per_minute": 5}),
        403,
        "requests_per_minute",
    )
    .await;
    ta.expect("PATCH", &format!("/teams/{t1}"), Some(json!({"excluded_models": ["chat"]})), 403).await;
    ta.expect("PATCH", &format!("/service-accounts/{sa_id}"), Some(json!({"description": "renamed"})), 200).await;
    // ... and nothing on another team of the same org, which they cannot even see.
    ta.expect("PUT", &format!("/teams/{t2}/members/{v_id}"), Some(json!({"team_admin": false})), 404).await;
    ta.expect("POST", &format!("/teams/{t2}/service-accounts"), Some(json!({"name": "x", "description": ""})), 404)
        .await;
    ta.expect("PATCH", &format!("/service-accounts/{sa2_id}"), Some(json!({"description": "mine now"})), 404).await;

    // User: keys only for themselves; not for another user, nor a service account they do not own.
    u.expect("POST", "/tokens", Some(json!({"name": "k", "user_id": v_id})), 403).await;
    u.expect("POST", "/tokens", Some(json!({"name": "k", "service_account_id": sa_id})), 403).await;
    u.expect("PATCH", &format!("/users/{u_id}"), Some(json!({"role": "admin"})), 403).await;
    u.expect("PATCH", &format!("/users/{u_id}"), Some(json!({"key_requests_per_minute": 1000})), 403).await;
    u.expect("GET", &format!("/teams/{t2}/service-accounts"), None, 404).await;
    u.expect("GET", &format!("/service-accounts/{sa2_id}"), None, 404).await;

    // Org-admin: their org only, and never the admin role.
    oa.expect("POST", "/users", Some(json!({"email": "n@b.example", "org_id": org_b, "role": "user"})), 404).await;
    oa.expect("PATCH", &format!("/users/{b_id}"), Some(json!({"requests_per_minute": 1})), 404).await;
    oa.expect_param("PATCH", &format!("/users/{u_id}"), json!({"role": "admin"}), 403, "role").await;
    oa.expect("POST", "/tokens", Some(json!({"name": "k", "user_id": b_id})), 404).await;
    oa.expect("PATCH", &format!("/users/{u_id}"), Some(json!({"role": "org-admin"})), 200).await;

    // An expired key is refused on the management API as on the model API.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let expiring =
        admin.expect("POST", "/tokens", Some(json!({"name": "old", "user_id": v_id, "expires_at": soon})), 201).await;
    let e = Api::new(&h, expiring["key"].as_str().unwrap());
    e.expect("GET", "/tokens", None, 200).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let v = e.expect("GET", "/tokens", None, 401).await;
    assert!(v["error"]["message"].as_str().unwrap().to_lowercase().contains("key"), "{v}");
}

/// The live keys the policy is built from, read from a real database: keys without policy
/// fields of their own come folded into one string, the others as rows; both must arrive
/// complete, with their owners and fields, and nothing revoked, deleted or long expired.
async fn live_keys_read_every_kind_of_key(db: aqueduct::db::Db) {
    use aqueduct::tenancy::policy::live_keys;
    let now = 1_800_000_000;
    let statements = [
        "INSERT INTO orgs (id, name, created_at) VALUES (1, 'o', 0)",
        "INSERT INTO teams (id, org_id, name, created_at) VALUES (1, 1, 't', 0)",
        "INSERT INTO users (id, email, created_at, org_id) VALUES (1, 'a@x', 0, 1)",
        "INSERT INTO users (id, email, created_at) VALUES (2, 'b@x', 0)",
        "INSERT INTO service_accounts (id, team_id, owner_user_id, name, created_at) VALUES (1, 1, 1, 's', 0)",
    ]
    .map(str::to_string);
    let hash = |i: i64| format!("{:064x}", i);
    let mut tokens = Vec::new();
    // 1-3: plain keys of two users; 4: a service account's; 5: own exclusions; 6: own limit;
    // 7: expires later; 8: revoked; 9: deleted; 10: expired long ago; 11: merge switched off.
    for (id, user, sa, extra_cols, extra_vals) in [
        (1, 1, "NULL", "", ""),
        (2, 1, "NULL", "", ""),
        (3, 2, "NULL", "", ""),
        (4, 1, "1", "", ""),
        (5, 1, "NULL", ", excluded_models", ", '[\"m\"]'"),
        (6, 2, "NULL", ", requests_per_minute", ", 5"),
        (7, 2, "NULL", ", expires_at", ", 1800000100"),
        (8, 1, "NULL", ", revoked_at", ", 1"),
        (9, 1, "NULL", ", deleted_at", ", 1"),
        (10, 1, "NULL", ", expires_at", ", 1"),
        (11, 2, "NULL", ", merge_excluded_models", ", FALSE"),
    ] {
        tokens.push(format!(
            "INSERT INTO tokens (id, user_id, service_account_id, name, key_hash, preview, created_at{extra_cols}) \
             VALUES ({id}, {user}, {sa}, 'k{id}', '{}', 'sk-…', 0{extra_vals})",
            hash(id)
        ));
    }
    for sql in statements.iter().chain(tokens.iter()) {
        aqueduct::with_pool!(&db, p => sqlx::query(sql).execute(p).await.map(|_| ())).unwrap();
    }
    let keys = live_keys(&db, now, 7 * 86_400).await.unwrap();
    let mut ids: Vec<i64> = keys.iter().map(|k| k.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7, 11], "revoked, deleted and long-expired keys are left out");
    let key = |id: i64| keys.iter().find(|k| k.id == id).unwrap();
    assert_eq!((key(1).user_id, key(1).service_account_id, key(1).key_hash.clone()), (1, None, hash(1)));
    assert_eq!((key(4).user_id, key(4).service_account_id), (1, Some(1)));
    assert_eq!(key(5).fields.excluded_models.0, ["m"]);
    assert_eq!(key(6).fields.requests_per_minute, Some(5));
    assert_eq!(key(7).expires_at, Some(1_800_000_100));
    assert_eq!(key(1).expires_at, None);
    assert!(!key(11).fields.merge_excluded_models);
    assert_eq!(key(3).fields, Default::default());
    // Alike keys are adjacent, so the policy resolves each owner once.
    let owners: Vec<(i64, Option<i64>)> = keys.iter().map(|k| (k.user_id, k.service_account_id)).collect();
    let mut sorted = owners.clone();
    sorted.sort_unstable();
    assert_eq!(owners, sorted);
}

#[tokio::test]
async fn live_keys_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    live_keys_read_every_kind_of_key(aqueduct::db::Db::open(None, dir.path()).await.unwrap()).await;
}

#[tokio::test]
async fn live_keys_on_postgres() {
    let (server, name, url) = crate::harness::create_pg_database().await;
    live_keys_read_every_kind_of_key(aqueduct::db::Db::open(Some(&url), std::path::Path::new(".")).await.unwrap())
        .await;
    crate::harness::drop_pg_database(server, name);
}
