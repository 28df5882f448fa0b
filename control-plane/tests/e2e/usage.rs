//! The usage ledger end to end: every API request through Envoy becomes one stored event
//! (refusals included), batches survive a control-plane outage and an Envoy restart, and the
//! usage API answers totals, series, groups and the request log under each role's scope.

use crate::harness::{http, Harness, ADMIN_KEY};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn get(h: &Harness, key: &str, path: &str) -> (u16, Value) {
    let r = http().get(h.url(path)).bearer_auth(key).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The admin's view of the request log (up to 10,000 rows).
async fn logged(h: &Harness) -> Vec<Value> {
    let (s, v) = get(h, ADMIN_KEY, "/api/v1/usage/requests?limit=10000").await;
    assert_eq!(s, 200, "{v}");
    v["data"].as_array().cloned().unwrap_or_default()
}

/// Waits until `key` works; returns how many probes were answered with 200 (each is an event
/// of that key).
async fn ready(h: &Harness, key: &str) -> u64 {
    let start = Instant::now();
    loop {
        if get(h, key, "/v1/models").await.0 == 200 {
            return 1;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "key never became usable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn chat(h: &Harness, key: &str, body: Value) -> u16 {
    let r = http().post(h.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
    let s = r.status().as_u16();
    let _ = r.bytes().await;
    s
}

#[tokio::test]
async fn every_api_request_is_recorded_within_two_seconds() {
    let h = Harness::start().await;
    let (token_id, key) = h.create_token("metered", None).await;
    ready(&h, &key).await;
    let ua = "usage-test/1.0";
    let c = http();
    let send = |body: Value, key: &str| {
        // A client's own X-Forwarded-For entry is not the client address: Envoy appends the
        // address that connected, and with no trusted hops that is what the ledger keeps.
        c.post(h.url("/v1/chat/completions"))
            .bearer_auth(key.to_string())
            .header("user-agent", ua)
            .header("x-forwarded-for", "6.6.6.6")
            .json(&body)
            .send()
    };
    let r = send(
        json!({"model": "chat", "user": "end-user-1", "messages": [{"role": "user", "content": "one two three"}]}),
        &key,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let usage: Value = r.json().await.unwrap();
    let r = send(
        json!({"model": "chat", "stream": true, "user_id": 4242, "messages": [{"role": "user", "content": "hi"}]}),
        &key,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    let sent = h.upstream.requests().last().unwrap().json().unwrap();
    assert!(sent.get("user_id").is_none(), "user_id is recorded, not forwarded: {sent}");
    assert_eq!(send(json!({"model": "chat", "messages": []}), "sk-aq-forged").await.unwrap().status(), 401);
    assert_eq!(send(json!({"model": "nope", "messages": []}), &key).await.unwrap().status(), 404);
    let last = Instant::now();

    let mine = || async { logged(&h).await.into_iter().filter(|r| r["user_agent"] == ua).count() };
    let took = h.eventually(Duration::from_secs(2), || async { mine().await >= 4 }).await;
    eprintln!("last of 4 events stored {:?} after its request (~{:?} after it was sent)", took, last.elapsed());
    let rows = logged(&h).await;
    let mine: Vec<&Value> = rows.iter().filter(|r| r["user_agent"] == ua).collect();
    assert_eq!(mine.len(), 4, "one event per request: {mine:#?}");
    let by_status = |s: u16, model: Option<&str>| {
        mine.iter()
            .find(|r| r["status"] == s && model.is_none_or(|m| r["model"] == m))
            .unwrap_or_else(|| panic!("no {s} event in {mine:#?}"))
    };
    let ok = mine.iter().find(|r| r["status"] == 200 && r["streamed"] == false).unwrap();
    assert_eq!(ok["outcome"], "ok");
    assert_eq!(ok["token_id"], token_id.to_string());
    assert_eq!(ok["model"], "chat");
    assert_eq!(ok["end_user"], "end-user-1");
    assert_eq!(ok["input_tokens"], usage["usage"]["prompt_tokens"]);
    assert_eq!(ok["output_tokens"], usage["usage"]["completion_tokens"]);
    assert_eq!(ok["estimated"], false);
    for r in &mine {
        // Envoy appends the address that connected; for a client on its own host (loopback)
        // that is the host's own address. Either way one this machine can bind.
        let ip: std::net::IpAddr =
            r["client_ip"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{r}"));
        assert!(
            std::net::TcpListener::bind((ip, 0)).is_ok(),
            "the address that connected, not the client's header entry: {r}"
        );
    }
    assert_eq!((ok["method"].as_str(), ok["path"].as_str()), (Some("POST"), Some("/v1/chat/completions")));
    assert!(ok["ttfb_ms"].as_i64().unwrap() <= ok["latency_ms"].as_i64().unwrap());
    let stream = mine.iter().find(|r| r["streamed"] == true).unwrap();
    assert_eq!(stream["end_user"], "4242");
    assert!(stream["output_tokens"].as_i64().unwrap() > 0, "counted from the usage chunk: {stream}");
    let refused = by_status(401, None);
    assert_eq!((refused["outcome"].as_str(), refused["token_id"].is_null()), (Some("unauthorized"), true));
    assert_eq!(refused["input_tokens"], 0);
    assert_eq!(by_status(404, None)["outcome"], "not_found");
    assert_eq!(by_status(404, None)["model"], Value::Null);

    // The key's last use is kept.
    let (_, t) = get(&h, ADMIN_KEY, &format!("/api/v1/tokens/{token_id}")).await;
    assert!(!t["last_used_at"].is_null(), "{t}");

    // Ingestion is not reachable through the public listener, nor without the secret.
    let r = http().post(h.url("/internal/v1/usage")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http().post(format!("http://{}/internal/v1/usage", h.http)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 403);

    // Metrics on the control plane's own address.
    let m = http().get(format!("http://{}/metrics", h.http)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("aqueduct_requests_total{model=\"chat\",status=\"200\"}"), "{m}");
    assert!(m.contains("aqueduct_usage_ingestion_lag_seconds_count"));
}

/// Concurrent request loops of a [`Load`].
const WORKERS: usize = 4;

/// Sends requests from `workers` loops until stopped; counts responses by class.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(h: &Harness, key: &str, workers: usize) -> Self {
        let (stop, ok, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let (url, key) = (h.url("/v1/chat/completions"), key.to_string());
                tokio::spawn(async move {
                    let c = http();
                    let body =
                        json!({"model": "chat", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]});
                    while !stop.load(Ordering::Relaxed) {
                        let answered = match c.post(&url).bearer_auth(&key).json(&body).send().await {
                            Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                            Err(_) => false,
                        };
                        if answered {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        Self { stop, ok, failed, tasks }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// Stored events for `token` and the rollups' request count for it: once `expect` are there
/// (and a little longer, for any straggling duplicate), or once the counts stop moving for
/// longer than the filter's own recovery takes. A batch whose answer was lost (its call timed
/// out, or the control plane died mid-request) is sent again only after the in-flight timeout,
/// so "stopped moving" must outlast it; a pause shorter than that is not a loss.
async fn stored_for(h: &Harness, token: i64, expect: u64) -> (u64, u64) {
    let patience =
        Duration::from_millis(u64::try_from(aqueduct_policy::ledger::IN_FLIGHT_TIMEOUT_MS).unwrap_or(10_000) + 2_000);
    let path = format!("/api/v1/usage/requests?limit=10000&token_id={token}");
    let total = format!("/api/v1/usage?token_id={token}");
    let read = || async {
        let (s1, rows) = get(h, ADMIN_KEY, &path).await;
        let (s2, sum) = get(h, ADMIN_KEY, &total).await;
        (s1 == 200 && s2 == 200).then(|| {
            (rows["data"].as_array().map_or(0, |a| a.len() as u64), sum["totals"]["requests"].as_u64().unwrap_or(0))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut last, mut since) = ((0, 0), Instant::now());
    while Instant::now() < deadline {
        if let Some(now) = read().await {
            if now.0 >= expect && now.1 >= expect {
                tokio::time::sleep(Duration::from_millis(600)).await;
                return read().await.unwrap_or(now);
            }
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() > patience {
                return now;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

#[tokio::test]
async fn a_control_plane_outage_loses_no_event_and_stores_each_once() {
    outage(Harness::start().await).await;
}

async fn outage(mut h: Harness) {
    let (token, key) = h.create_token("steady", None).await;
    let probes = ready(&h, &key).await;
    let load = Load::start(&h, &key, 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.stop_cp();
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.start_cp();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (answered, failed) = load.stop().await;
    assert_eq!(failed, 0, "Envoy served throughout the outage");
    let ok = answered + probes;
    let (rows, rolled) = stored_for(&h, token, ok).await;
    eprintln!("{ok} requests during a 10 s control-plane outage: {rows} events stored, rollups count {rolled}");
    assert_eq!((rows, rolled), (ok, ok), "every event stored exactly once");
}

#[tokio::test]
async fn an_envoy_restart_loses_only_requests_in_flight() {
    let mut h = Harness::start().await;
    let (token, key) = h.create_token("restart", None).await;
    let probes = ready(&h, &key).await;
    let load = Load::start(&h, &key, WORKERS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A graceful stop: listeners close, requests in flight finish, the queue is flushed.
    h.drain_envoy().await;
    h.stop_envoy();
    h.start_envoy();
    h.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (answered, failed) = load.stop().await;
    let ok = answered + probes;
    let (rows, rolled) = stored_for(&h, token, ok).await;
    // At the drain, at most one request per load worker was in flight: a request that was
    // still running when the filter handed over its last batch may be missing (its client may
    // still have got an answer), nothing else.
    let in_flight = WORKERS as u64;
    let missing = (ok + failed).saturating_sub(rows).min(ok.saturating_sub(rows));
    eprintln!(
        "Envoy restart under load: {ok} answered, {failed} failed, {rows} stored; {missing} missing of at most {in_flight} in flight"
    );
    assert_eq!(rows, rolled);
    assert!(missing <= in_flight, "only requests in flight may be missing: {missing} of {ok} answered");
    assert!(rows <= ok + failed, "nothing stored twice: {rows} > {ok} + {failed}");
}

#[tokio::test]
async fn policy_pushes_under_load_do_not_stall_delivery() {
    let h = Harness::start().await;
    let (token, key) = h.create_token("pushed", None).await;
    let probes = ready(&h, &key).await;
    let load = Load::start(&h, &key, WORKERS);
    // Each change to the admin's cap is a new snapshot: every VM gets a new root context while
    // requests that began under the old one are still in flight (and the old one still ticks).
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = http()
            .patch(h.url("/api/v1/users/1"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"requests_per_minute": 1_000_000 + i}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (answered, failed) = load.stop().await;
    assert_eq!(failed, 0, "pushes do not fail requests");
    let ok = answered + probes;
    let stored = || async {
        let (s, sum) = get(&h, ADMIN_KEY, &format!("/api/v1/usage?token_id={token}")).await;
        if s == 200 {
            sum["totals"]["requests"].as_u64().unwrap_or(0)
        } else {
            0
        }
    };
    // Well inside the 10 s after which a batch whose answer never came is sent again: losing an
    // answer across a push would show as that stall.
    let took = h.eventually(Duration::from_secs(6), || async { stored().await >= ok }).await;
    eprintln!("{ok} events across 8 pushes under load, all stored {took:?} after the load stopped");
    assert_eq!(stored().await, ok, "each once");
}

async fn org_user_key(admin: &str, h: &Harness, org: &str, email: &str, role: &str) -> (String, String) {
    let c = http();
    let u: Value = c
        .post(h.url("/api/v1/users"))
        .bearer_auth(admin)
        .json(&json!({"email": email, "org_id": org, "role": role}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uid = u["id"].as_str().unwrap().to_string();
    let k: Value = c
        .post(h.url("/api/v1/tokens"))
        .bearer_auth(admin)
        .json(&json!({"name": "k", "user_id": uid}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (uid, k["key"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn usage_api_on_sqlite() {
    usage_api_totals_series_groups_csv_and_scopes(&Harness::start().await).await;
}

#[tokio::test]
async fn usage_api_on_postgres() {
    usage_api_totals_series_groups_csv_and_scopes(&Harness::start_pg(&[]).await).await;
}

#[tokio::test]
async fn a_control_plane_outage_on_postgres_loses_no_event() {
    outage(Harness::start_pg(&[]).await).await;
}

async fn usage_api_totals_series_groups_csv_and_scopes(h: &Harness) {
    let c = http();
    let mut orgs = Vec::new();
    for name in ["a", "b"] {
        let o: Value = c
            .post(h.url("/api/v1/orgs"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        orgs.push(o["id"].as_str().unwrap().to_string());
    }
    let (ua, ka) = org_user_key(ADMIN_KEY, h, &orgs[0], "ua@a.example", "user").await;
    let (_ua2, ka2) = org_user_key(ADMIN_KEY, h, &orgs[0], "ua2@a.example", "user").await;
    let (_oa, koa) = org_user_key(ADMIN_KEY, h, &orgs[0], "oa@a.example", "org-admin").await;
    let (_ub, kb) = org_user_key(ADMIN_KEY, h, &orgs[1], "ub@b.example", "user").await;
    // The last key made is in the policy once it works, so the earlier ones are too; only
    // org B's key probes, leaving org A's counts exact.
    ready(h, &kb).await;
    let msg = json!([{"role": "user", "content": "a b c d"}]);
    for _ in 0..3 {
        assert_eq!(chat(h, &ka, json!({"model": "chat", "user": "alice", "messages": msg})).await, 200);
    }
    assert_eq!(chat(h, &ka, json!({"model": "embed-x", "messages": msg})).await, 404);
    assert_eq!(chat(h, &ka2, json!({"model": "chat", "messages": msg})).await, 200);
    assert_eq!(chat(h, &kb, json!({"model": "chat", "messages": msg})).await, 200);
    let org_a = format!("/api/v1/usage?org_id={}&bucket=minute", orgs[0]);
    h.eventually(Duration::from_secs(3), || async { get(h, ADMIN_KEY, &org_a).await.1["totals"]["requests"] == 5 })
        .await;

    let (_, v) = get(h, ADMIN_KEY, &format!("{org_a}&group_by=user_id,model")).await;
    assert_eq!(
        v["totals"],
        json!({"requests": 5, "input_tokens": 16, "output_tokens": v["totals"]["output_tokens"], "errors": 1})
    );
    assert!(v["series"].as_array().unwrap().len() >= 1440, "a day of minutes, empty ones included");
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(
        groups[0],
        json!({"user_id": ua, "model": "chat", "requests": 3, "input_tokens": 12,
        "output_tokens": groups[0]["output_tokens"], "errors": 0})
    );
    assert!(groups.iter().any(|g| g["model"].is_null() && g["errors"] == 1), "the refused request: {groups:?}");
    let (_, v) = get(h, ADMIN_KEY, "/api/v1/usage?group_by=end_user&end_user=alice").await;
    assert_eq!(
        v["groups"],
        json!([{"end_user": "alice", "requests": 3, "input_tokens": 12,
        "output_tokens": v["groups"][0]["output_tokens"], "errors": 0}])
    );

    // Scopes: a user sees their own keys, an org-admin the org, the other org nothing of it.
    assert_eq!(get(h, &ka, "/api/v1/usage").await.1["totals"]["requests"], 4);
    assert_eq!(get(h, &ka2, "/api/v1/usage").await.1["totals"]["requests"], 1);
    assert_eq!(get(h, &koa, "/api/v1/usage").await.1["totals"]["requests"], 5);
    assert_eq!(get(h, &kb, &format!("/api/v1/usage?org_id={}", orgs[0])).await.1["totals"]["requests"], 0);
    let (_, mine) = get(h, &ka2, "/api/v1/usage/requests").await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 1);

    // Pagination of the log.
    let (_, p1) = get(h, &ka, "/api/v1/usage/requests?limit=3").await;
    assert_eq!((p1["data"].as_array().unwrap().len(), p1["has_more"].as_bool()), (3, Some(true)));
    let next = p1["next"].as_str().unwrap();
    let (_, p2) = get(h, &ka, &format!("/api/v1/usage/requests?limit=3&after={next}")).await;
    assert_eq!((p2["data"].as_array().unwrap().len(), p2["has_more"].as_bool()), (1, Some(false)));

    // CSV.
    let r = c.get(h.url("/api/v1/usage/requests?format=csv")).bearer_auth(&ka).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = r.text().await.unwrap();
    assert!(text.starts_with("request_id,time,token_id,"), "{text}");
    assert_eq!(text.lines().count(), 5);
    let r = c.get(h.url("/api/v1/usage?format=csv&group_by=model")).bearer_auth(&ka).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(text.starts_with("model,requests,input_tokens,output_tokens,errors\nchat,3,12,"), "{text}");

    // Bad parameters name themselves.
    for (q, param) in [
        ("from=yesterday", "from"),
        ("bucket=week", "bucket"),
        ("group_by=colour", "group_by"),
        ("org_id=x", "org_id"),
        ("format=xml", "format"),
        ("colour=red", "colour"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ] {
        let (s, v) = get(h, ADMIN_KEY, &format!("/api/v1/usage?{q}")).await;
        assert_eq!((s, v["error"]["param"].as_str()), (400, Some(param)), "{q}: {v}");
    }
    let (s, v) = get(h, ADMIN_KEY, "/api/v1/usage/requests?after=garbage").await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("after")));
    let (s, _) = get(h, "sk-aq-nobody", "/api/v1/usage").await;
    assert_eq!(s, 401);
}

/// The store directly, on both backends: idempotent inserts (within and across batches),
/// rollups counting each event once, and retention.
async fn store_and_retention(db: aqueduct::db::Db) {
    use aqueduct::usage::{ingest, query, retention};
    use aqueduct_policy::ledger::{Outcome, UsageEvent};
    let day = 86_400_000;
    let now = 1_800_000_000_000;
    let ev = |id: &str, at_ms: i64| UsageEvent {
        request_id: id.into(),
        at_ms,
        org_id: Some(7),
        model: Some("chat".into()),
        path: "/v1/chat/completions".into(),
        method: "POST".into(),
        status: 200,
        outcome: Some(Outcome::Ok),
        input_tokens: 10,
        output_tokens: 5,
        ..Default::default()
    };
    let first = [ev("a", now - 100 * day), ev("b", now - 1000), ev("b", now - 1000)];
    let s = ingest::store(&db, &first, now).await.unwrap();
    assert_eq!((s.inserted, s.duplicates), (2, 1), "a repeated id within a batch counts once");
    let s = ingest::store(&db, &[ev("b", now - 1000), ev("c", now - 500)], now).await.unwrap();
    assert_eq!((s.inserted, s.duplicates), (1, 1), "and across batches");
    let f = query::Filters { from_ms: now - 200 * day, to_ms: now, ..Default::default() };
    let t = query::totals(&db, "day", day, &query::Scope::All, &f).await.unwrap();
    assert_eq!((t.requests, t.input_tokens, t.output_tokens), (3, 30, 15));
    let t = query::totals(&db, "minute", 60_000, &query::Scope::Org(7), &f).await.unwrap();
    assert_eq!(t.requests, 3);
    assert_eq!(query::totals(&db, "hour", 3_600_000, &query::Scope::Org(8), &f).await.unwrap().requests, 0);

    assert_eq!(retention::purge(&db, now, 90).await.unwrap(), 1, "only the 100-day-old event goes");
    let rows = query::requests(&db, &query::Scope::All, &f, None, 100).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(), ["c", "b"]);
    let t = query::totals(&db, "day", day, &query::Scope::All, &f).await.unwrap();
    assert_eq!(t.requests, 2, "its rollups went with it");

    // Batches stored concurrently while folds run (PostgreSQL stages rollup increments and
    // folds them in bulk): every event is in the rollups exactly once, and a read right after
    // the last store sees them all.
    let tasks: Vec<_> = (0..6)
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move {
                for b in 0..8 {
                    let batch: Vec<UsageEvent> =
                        (0..40).map(|i| ev(&format!("p{t}-{b}-{i}"), now - 2000 - i)).collect();
                    assert_eq!(ingest::store(&db, &batch, now).await.unwrap().inserted, 40);
                    if b % 3 == t % 3 {
                        ingest::fold(&db).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for (bucket, width) in [("minute", 60_000), ("hour", 3_600_000), ("day", day)] {
        let t = query::totals(&db, bucket, width, &query::Scope::All, &f).await.unwrap();
        assert_eq!((t.requests, t.input_tokens), (2 + 6 * 8 * 40, 10 * (2 + 6 * 8 * 40)), "{bucket}");
    }
    assert_eq!(ingest::fold(&db).await.unwrap(), 0, "nothing left staged");
}

#[tokio::test]
async fn store_and_retention_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    store_and_retention(aqueduct::db::Db::open(None, dir.path()).await.unwrap()).await;
}

#[tokio::test]
async fn store_and_retention_on_postgres() {
    let (server, name, url) = crate::harness::create_pg_database().await;
    store_and_retention(aqueduct::db::Db::open(Some(&url), std::path::Path::new(".")).await.unwrap()).await;
    crate::harness::drop_pg_database(server, name);
}

#[tokio::test]
async fn a_supervised_envoy_is_drained_on_shutdown_and_hands_over_its_events() {
    supervised_envoy_drained(false).await;
}

#[tokio::test]
async fn ctrl_c_drains_the_supervised_envoy_too() {
    // A terminal's Ctrl-C signals the whole foreground group; Envoy, in a group of its own,
    // still stops only when the control plane has drained it.
    supervised_envoy_drained(true).await;
}

/// The control plane runs Envoy itself (as `make run` does) and stops it with a drain, when
/// terminated alone or interrupted with its process group.
async fn supervised_envoy_drained(ctrl_c: bool) {
    let admin = crate::harness::free_port();
    let env = [
        ("AQUEDUCT_ENVOY", crate::harness::envoy_bin().display().to_string()),
        ("AQUEDUCT_ENVOY_ADMIN", format!("127.0.0.1:{admin}")),
        ("AQUEDUCT_ENVOY_BASE_ID", admin.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut h = Harness::start_supervised(&env).await;
    let (token, key) = h.create_token("supervised", None).await;
    let probes = ready(&h, &key).await;
    let load = Load::start(&h, &key, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = if ctrl_c { h.interrupt_cp_group() } else { h.terminate_cp() };
    let (answered, _failed) = load.stop().await;
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{admin}")).is_err(),
        "the supervised Envoy is gone with its control plane"
    );
    let rows = h.stored_requests(token).await;
    let ok = answered + probes;
    eprintln!("supervised Envoy stopped under load: {ok} answered, {} stored", rows.len());
    assert!(rows.len() as u64 >= ok, "every answered request was handed over: {} of {ok}", rows.len());
}
