//! Changes apply live, and either side can restart without the other losing its footing.

use crate::harness::{http, Harness, ADMIN_KEY};
use std::time::{Duration, Instant};

async fn status(h: &Harness, key: &str) -> u16 {
    http()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&serde_json::json!({"model":"chat","messages":[{"role":"user","content":"hi"}]}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn created_key_works_and_revoked_key_fails_within_a_second() {
    let h = Harness::start().await;
    let start = Instant::now();
    let (id, key) = h.create_token("live", None).await;
    let created = start.elapsed();
    let accepted = h.eventually(Duration::from_secs(1), || async { status(&h, &key).await == 200 }).await;
    let start = Instant::now();
    h.revoke_token(id).await;
    let revoked =
        start.elapsed() + h.eventually(Duration::from_secs(1), || async { status(&h, &key).await == 401 }).await;
    eprintln!("token API call {created:?}; accepted {accepted:?} after creation; refused {revoked:?} after revocation");
}

#[tokio::test]
async fn models_file_edits_apply_live_and_bad_edits_are_ignored() {
    let h = Harness::start().await;
    let base = h.upstream.base_url();
    let original = std::fs::read_to_string(&h.models_path).unwrap();
    let added = format!(
        "{original}  - model_name: fresh\n    litellm_params: {{ model: openai/fresh-provider, api_base: \"{base}\" }}\n    model_info: {{ aliases: [fresh-alias] }}\n"
    );
    std::fs::write(&h.models_path, &added).unwrap();
    let c = http();
    h.eventually(Duration::from_secs(5), || async {
        let r = c
            .post(h.url("/v1/embeddings"))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"model":"fresh-alias","input":"x"}))
            .send()
            .await;
        r.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
    assert_eq!(h.upstream.requests().last().unwrap().json().unwrap()["model"], "fresh-provider");
    assert!(h.upstream.requests().last().unwrap().header("authorization").is_none(), "no key configured, none sent");

    // An invalid edit (duplicate alias) keeps the previous models in force.
    std::fs::write(
        &h.models_path,
        format!("{added}  - model_name: chat-alias\n    litellm_params: {{ model: openai/x, api_base: \"{base}\" }}\n"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let models: serde_json::Value =
        c.get(h.url("/v1/models")).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"fresh") && !ids.contains(&"chat-alias"), "{ids:?}");

    // Removing the model removes its route.
    std::fs::write(&h.models_path, &original).unwrap();
    h.eventually(Duration::from_secs(5), || async {
        let r = c
            .post(h.url("/v1/embeddings"))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"model":"fresh","input":"x"}))
            .send()
            .await;
        r.map(|r| r.status() == 404).unwrap_or(false)
    })
    .await;
}

#[tokio::test]
async fn envoy_restart_gets_its_config_back() {
    let mut h = Harness::start().await;
    let (_, key) = h.create_token("before restart", None).await;
    h.eventually(Duration::from_secs(5), || async { status(&h, &key).await == 200 }).await;
    h.stop_envoy();
    h.start_envoy();
    let start = Instant::now();
    h.wait_ready().await;
    eprintln!("Envoy start to first 200: {:?}", start.elapsed());
    assert_eq!(status(&h, &key).await, 200);
}

#[tokio::test]
async fn control_plane_restart_keeps_traffic_flowing() {
    let mut h = Harness::start().await;
    let (_, key) = h.create_token("survivor", None).await;
    h.eventually(Duration::from_secs(5), || async { status(&h, &key).await == 200 }).await;
    h.stop_cp();
    // Envoy keeps enforcing the last policy with the control plane gone.
    for _ in 0..5 {
        assert_eq!(status(&h, &key).await, 200);
        assert_eq!(status(&h, "sk-aq-unknown").await, 401);
    }
    h.start_cp();
    // It reconnects and takes new changes again.
    let (_, fresh) = h.create_token_when_up().await;
    h.eventually(Duration::from_secs(10), || async { status(&h, &fresh).await == 200 }).await;
    assert_eq!(status(&h, &key).await, 200);
}

impl Harness {
    /// Creates a key once the management API answers again (after a control-plane restart).
    async fn create_token_when_up(&self) -> (i64, String) {
        self.eventually(Duration::from_secs(10), || async {
            http()
                .get(self.url("/api/v1/tokens"))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        })
        .await;
        self.create_token("after restart", None).await
    }
}

#[tokio::test]
async fn several_deployments_are_balanced_and_a_dead_one_is_retried_around() {
    let second = fake_upstream::FakeUpstream::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let second_base = second.base_url();
    let dead = crate::harness::free_port();
    let h = Harness::start_with(|base| {
        let entry = |api_base: &str| {
            format!(
                "  - model_name: lb\n    litellm_params: {{ model: openai/lb-provider, api_base: \"{api_base}\" }}\n"
            )
        };
        format!("model_list:\n{}{}{}", entry(base), entry(&second_base), entry(&format!("http://127.0.0.1:{dead}/v1")))
    })
    .await;
    for i in 0..30 {
        let r = http()
            .post(h.url("/v1/embeddings"))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"model":"lb","input":"x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}: the dead endpoint must be retried around");
    }
    let (a, b) = (h.upstream.requests().len(), second.requests().len());
    assert_eq!(a + b, 30);
    assert!(a >= 5 && b >= 5, "both live deployments take traffic: {a} / {b}");
}

#[tokio::test]
async fn metrics_count_xds_traffic_and_stay_off_the_public_listener() {
    let h = Harness::start().await;
    let metrics =
        || async { http().get(format!("http://{}/metrics", h.http)).send().await.unwrap().text().await.unwrap() };
    let acks = |text: &str| -> u64 {
        text.lines().find_map(|l| l.strip_prefix("aqueduct_xds_acks_total ")).unwrap().parse().unwrap()
    };
    // The gateway answers as soon as listener, routes and filter config are in; the ACKs of the
    // last types can arrive a moment later on a loaded machine.
    h.eventually(Duration::from_secs(10), || async { acks(&metrics().await) >= 4 }).await;
    let text = metrics().await;
    assert!(text.contains("aqueduct_xds_streams 1"), "{text}");
    assert!(text.contains("aqueduct_xds_nacks_total 0"), "{text}");
    assert!(acks(&text) >= 4, "Envoy acknowledged every type: {text}");
    for t in ["Listener", "Cluster", "RouteConfiguration", "TypedExtensionConfig"] {
        assert!(text.contains(&format!("aqueduct_xds_type_acks_total{{type=\"{t}\"}} ")), "{t} acknowledged: {text}");
    }
    let r = http().get(h.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn resync_picks_up_out_of_band_keys_and_does_not_repush_an_unchanged_policy() {
    let h = Harness::start().await;
    let before = snapshot_version(&h).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(snapshot_version(&h).await, before, "periodic resyncs of an unchanged store push nothing");

    // A key written straight to the store (as `aqueduct admin create-key` does) reaches the
    // filter at the next resync.
    let db_url = format!("sqlite://{}", h.dir.path().join("aqueduct.db").display());
    let db = aqueduct::db::Db::open(Some(&db_url), h.dir.path()).await.unwrap();
    let key = aqueduct::tokens::generate_key();
    aqueduct::tokens::store::insert(&db, 1, "cli", &aqueduct::tokens::hash_hex(&key), "p", 0, None).await.unwrap();
    h.eventually(Duration::from_secs(3), || async { status(&h, &key).await == 200 }).await;
    assert_ne!(snapshot_version(&h).await, before);
}

/// The extension config's xDS version: it changes with every snapshot pushed.
async fn snapshot_version(h: &Harness) -> String {
    let v: serde_json::Value =
        http().get(h.url("/api/v1/status")).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    v["xds_versions"]["type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn key_changes_apply_through_the_journal_before_any_snapshot() {
    // Snapshots wait 8 s after a change, so whatever applies sooner came through the journal.
    let h = Harness::start_env(&[("AQUEDUCT_SNAPSHOT_DEBOUNCE_MS", "8000")]).await;
    let before = snapshot_version(&h).await;
    let started = Instant::now();
    let (id, key) = h.create_token("journal", None).await;
    let accepted = h.eventually(Duration::from_secs(2), || async { status(&h, &key).await == 200 }).await;

    // A regenerated key answers only to its new secret.
    let r = http().post(h.url(&format!("/api/v1/tokens/{id}/regenerate"))).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let fresh = r.json::<serde_json::Value>().await.unwrap()["key"].as_str().unwrap().to_string();
    h.eventually(Duration::from_secs(2), || async { status(&h, &fresh).await == 200 }).await;
    assert_eq!(status(&h, &key).await, 401, "the old secret");

    // New limits give the key a principal the snapshot does not have: 1 request a minute.
    let r = http()
        .patch(h.url(&format!("/api/v1/tokens/{id}")))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"requests_per_minute": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    h.eventually(Duration::from_secs(2), || async { status(&h, &fresh).await == 429 }).await;

    h.revoke_token(id).await;
    h.eventually(Duration::from_secs(2), || async { status(&h, &fresh).await == 401 }).await;
    assert_eq!(
        snapshot_version(&h).await,
        before,
        "no snapshot was pushed: {:?} since the first change",
        started.elapsed()
    );
    eprintln!("key accepted {accepted:?} after creation, all changes applied {:?} after it", started.elapsed());

    // The snapshot that follows carries the same state, and the overlay starts again from it.
    h.eventually(Duration::from_secs(15), || async { snapshot_version(&h).await != before }).await;
    assert_eq!(status(&h, &fresh).await, 401);
    assert_eq!(status(&h, &key).await, 401);
    let (_, later) = h.create_token("after-snapshot", None).await;
    h.eventually(Duration::from_secs(2), || async { status(&h, &later).await == 200 }).await;
}

#[tokio::test]
async fn journal_endpoint_wants_the_secret_and_a_current_snapshot() {
    let h = Harness::start().await;
    let db_url = format!("sqlite://{}", h.dir.path().join("aqueduct.db").display());
    let db = aqueduct::db::Db::open(Some(&db_url), h.dir.path()).await.unwrap();
    let secret = aqueduct::usage::ledger_secret(&db).await.unwrap();
    let cp = |q: &str| format!("http://{}/internal/v1/keys{q}", h.http);
    let header = aqueduct_policy::ledger::SECRET_HEADER;

    let r = http().get(cp("?epoch=1&since=0&known=0")).send().await.unwrap();
    crate::harness::expect_error(r, 403, "permission_denied_error").await;
    let r = http().get(cp("?epoch=1&since=0&known=0")).header(header, "wrong").send().await.unwrap();
    crate::harness::expect_error(r, 403, "permission_denied_error").await;
    let r = http().get(cp("?epoch=x")).header(header, &secret).send().await.unwrap();
    crate::harness::expect_error(r, 400, "invalid_request_error").await;
    let r = http().get(cp("?epoch=1&since=0&known=0")).header(header, &secret).send().await.unwrap();
    crate::harness::expect_error(r, 409, "invalid_request_error").await; // another process's journal
                                                                         // The public listener does not route it at all.
    let r =
        http().get(h.url("/internal/v1/keys?epoch=1&since=0&known=0")).header(header, &secret).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Through the real journal: the status shows its epoch; a key change is journaled.
    let st: serde_json::Value =
        http().get(h.url("/api/v1/status")).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    let epoch = st["key_journal"]["epoch"].as_u64().unwrap();
    let position = st["key_journal"]["position"].as_u64().unwrap();
    let (id, _) = h.create_token("journaled", None).await;
    let get = |q: String| http().get(cp(&q)).header(header, secret.clone()).send();
    let r = get(format!("?epoch={epoch}&since={position}&known={position}")).await.unwrap();
    assert_eq!(r.status(), 200);
    let delta: aqueduct_policy::journal::JournalDelta = r.json().await.unwrap();
    assert_eq!((delta.epoch, delta.seq), (epoch, position + 1));
    assert!(
        matches!(&delta.changes[..], [aqueduct_policy::journal::KeyChange::Live { id: i, .. }] if *i == id as u64),
        "{delta:?}"
    );
    // Nothing after what the poller knows: held (the control plane answers 204 after 20 s).
    let held = tokio::spawn(get(format!("?epoch={epoch}&since={position}&known={}", position + 1)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "held while nothing changes");
    // A change releases it with everything since the poller's snapshot.
    h.revoke_token(id).await;
    let r = tokio::time::timeout(Duration::from_secs(2), held).await.expect("released").unwrap().unwrap();
    let delta: aqueduct_policy::journal::JournalDelta = r.json().await.unwrap();
    assert_eq!(delta.changes.len(), 2);
    assert_eq!(delta.changes[1], aqueduct_policy::journal::KeyChange::Gone { id: id as u64 });
    // A position this journal never reached.
    let r = get(format!("?epoch={epoch}&since={}&known=0", position + 50)).await.unwrap();
    assert_eq!(r.status(), 409);
}

/// A rebuild rereads only the keys stamped (by triggers) since its last read: usage
/// bookkeeping must not count as a change, and edits made straight in the database must.
async fn key_rows_are_reread_only_after_key_changes(h: Harness) {
    let db = aqueduct::db::Db::open(h.database_url.as_deref(), h.dir.path()).await.unwrap();
    let (id, key) = h.create_token("counted", None).await;
    h.eventually(Duration::from_secs(3), || async { status(&h, &key).await == 200 }).await;
    let before = aqueduct::tenancy::policy::tokens_changes(&db).await.unwrap().0;
    for _ in 0..3 {
        assert_eq!(status(&h, &key).await, 200);
    }
    // The ledger stores the requests and stamps the key's `last_used_at`.
    h.eventually(Duration::from_secs(5), || async {
        let used: Option<i64> = aqueduct::with_pool!(&db, p => sqlx::query_scalar("SELECT last_used_at FROM tokens WHERE id = $1")
            .bind(id)
            .fetch_one(p)
            .await
            .unwrap());
        used.is_some()
    })
    .await;
    assert_eq!(aqueduct::tenancy::policy::tokens_changes(&db).await.unwrap().0, before, "usage is not a key change");
    // Revoked straight in the database: the next periodic rebuild reads the keys again.
    aqueduct::with_pool!(&db, p => sqlx::query("UPDATE tokens SET revoked_at = 1 WHERE id = $1")
        .bind(id)
        .execute(p)
        .await
        .map(|r| r.rows_affected())
        .unwrap());
    assert!(aqueduct::tenancy::policy::tokens_changes(&db).await.unwrap().0 > before);
    h.eventually(Duration::from_secs(5), || async { status(&h, &key).await == 401 }).await;
    // Deleted outright (no row is left to read): every key is read again.
    let (other, other_key) = h.create_token("deleted", None).await;
    h.eventually(Duration::from_secs(3), || async { status(&h, &other_key).await == 200 }).await;
    aqueduct::with_pool!(&db, p => sqlx::query("DELETE FROM tokens WHERE id = $1")
        .bind(other)
        .execute(p)
        .await
        .map(|r| r.rows_affected())
        .unwrap());
    h.eventually(Duration::from_secs(5), || async { status(&h, &other_key).await == 401 }).await;
}

#[tokio::test]
async fn key_rows_are_reread_only_after_key_changes_sqlite() {
    key_rows_are_reread_only_after_key_changes(Harness::start().await).await;
}

#[tokio::test]
async fn key_rows_are_reread_only_after_key_changes_postgres() {
    key_rows_are_reread_only_after_key_changes(Harness::start_pg(&[]).await).await;
}
