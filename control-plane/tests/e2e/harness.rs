//! Test harness: the real control plane binary, a real Envoy and the real `.wasm`, in front of
//! the project's fake upstream, each on free loopback ports with its own temporary directory.
//! Dropping a [`Harness`] kills every process it started; a failing test prints their logs.

use async_openai::config::OpenAIConfig;
use fake_upstream::FakeUpstream;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The provider key the default models carry; the upstream must see this, never a client key.
pub const PROVIDER_KEY: &str = "sk-provider-secret";
/// The admin key every harness bootstraps with.
pub const ADMIN_KEY: &str = "sk-test-admin-0123456789abcdef";

/// A free loopback port (bound, then released).
///
/// Ports come from below the kernel's ephemeral range (32768 and up): a port the OS hands out
/// with `bind(:0)` can be taken again by any outgoing connection (tests make thousands) before
/// Envoy binds it. Below that range only explicit binds compete, and this process never hands
/// out the same port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..20_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(104_729)) % 12_000) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.push(port);
        return port;
    }
    panic!("no free port below the ephemeral range")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The default models: one per endpoint kind, all on the fake upstream.
pub fn default_models(base: &str) -> String {
    format!(
        r#"model_list:
  - model_name: chat
    litellm_params: {{ model: openai/provider-chat, api_base: "{base}", api_key: {PROVIDER_KEY}, timeout: 30 }}
    model_info: {{ mode: chat, aliases: [chat-alias] }}
  - model_name: embed
    litellm_params: {{ model: openai/provider-embed, api_base: "{base}", api_key: {PROVIDER_KEY} }}
    model_info: {{ mode: embedding }}
  - model_name: tts
    litellm_params: {{ model: openai/provider-tts, api_base: "{base}", api_key: {PROVIDER_KEY} }}
    model_info: {{ mode: audio_speech }}
  - model_name: whisper
    litellm_params: {{ model: openai/provider-whisper, api_base: "{base}", api_key: {PROVIDER_KEY} }}
    model_info: {{ mode: audio_transcription }}
  - model_name: image
    litellm_params: {{ model: openai/provider-image, api_base: "{base}", api_key: {PROVIDER_KEY} }}
    model_info: {{ mode: image_generation }}
"#
    )
}

pub fn envoy_bin() -> PathBuf {
    if let Ok(e) = std::env::var("ENVOY") {
        return PathBuf::from(e);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/envoy");
    assert!(venv.exists(), "no Envoy: run `make test` (it installs one) or set ENVOY");
    venv
}

/// The filter module built by `make wasm`.
pub fn wasm_path() -> PathBuf {
    let p = std::env::var("AQUEDUCT_WASM").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip1/release/aqueduct_filter.wasm")
    });
    assert!(p.exists(), "no filter module at {}: run `make wasm`", p.display());
    p
}

/// A running gateway.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub upstream: FakeUpstream,
    pub listen: SocketAddr,
    pub xds: SocketAddr,
    pub http: SocketAddr,
    pub envoy_admin: SocketAddr,
    pub models_path: PathBuf,
    cp: Option<Child>,
    envoy: Option<Child>,
    cp_runs: u32,
    /// `DATABASE_URL` given to the control plane (None: SQLite in `dir`).
    pub database_url: Option<String>,
    /// Extra environment for the control plane.
    pub extra_env: Vec<(String, String)>,
    /// A PostgreSQL database this harness created and drops when dropped: (server URL, name).
    pg_created: Option<(String, String)>,
}

/// The PostgreSQL server tests use: `AQUEDUCT_TEST_PG`, else a `postgres://` `DATABASE_URL`, else
/// the local server with trust auth.
pub fn pg_server_url() -> String {
    std::env::var("AQUEDUCT_TEST_PG")
        .ok()
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| u.starts_with("postgres")))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

async fn pg_admin(server: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(server).await.expect("connect to PostgreSQL")
}

/// Creates a fresh database `aq_<random>` on the test server; returns (server URL, name, URL).
pub async fn create_pg_database() -> (String, String, String) {
    let server = pg_server_url();
    // Lowercase: PostgreSQL folds the unquoted name in CREATE DATABASE, but not in the URL.
    let name = format!("aq_{}", aqueduct::tokens::generate_key()[6..22].to_ascii_lowercase());
    let pool = pg_admin(&server).await;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create database");
    pool.close().await;
    let url = with_database(&server, &name);
    (server, name, url)
}

/// Drops a database made by [`create_pg_database`] (from any context: uses its own runtime).
pub fn drop_pg_database(server: String, name: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let pool = pg_admin(&server).await;
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&pool).await;
            pool.close().await;
        });
    })
    .join();
}

impl Harness {
    /// Everything up with the default models, ready to serve.
    pub async fn start() -> Self {
        Self::start_with(default_models).await
    }

    /// Everything up with models rendered from the fake upstream's base URL.
    pub async fn start_with(models: impl Fn(&str) -> String) -> Self {
        Self::start_full(models, None, Vec::new()).await
    }

    /// Everything up on a fresh PostgreSQL database (dropped with the harness), with `env` added
    /// to the control plane's environment.
    pub async fn start_pg(env: &[(&str, &str)]) -> Self {
        let (server, name, url) = create_pg_database().await;
        let mut h = Self::start_full_lazy(default_models, Some(url), env).await;
        h.pg_created = Some((server, name));
        h.start_cp();
        h.start_envoy();
        h.wait_ready().await;
        h
    }

    /// Everything up on SQLite with `mcp_json` as the MCP servers file and `env` added to the
    /// control plane's environment.
    pub async fn start_mcp(mcp_json: &str, env: &[(&str, &str)]) -> Self {
        let mut h = Self::start_full_lazy(default_models, None, env).await;
        std::fs::write(h.dir.path().join("mcp.json"), mcp_json).expect("mcp.json");
        h.start_cp();
        h.start_envoy();
        h.wait_ready().await;
        h
    }

    /// Like [`Harness::start_mcp`] on a fresh PostgreSQL database (dropped with the harness).
    pub async fn start_mcp_pg(mcp_json: &str, env: &[(&str, &str)]) -> Self {
        let (server, name, url) = create_pg_database().await;
        let mut h = Self::start_full_lazy(default_models, Some(url), env).await;
        h.pg_created = Some((server, name));
        std::fs::write(h.dir.path().join("mcp.json"), mcp_json).expect("mcp.json");
        h.start_cp();
        h.start_envoy();
        h.wait_ready().await;
        h
    }

    /// The control plane on SQLite with `env` (which names an Envoy for it to supervise), and no
    /// Envoy of the harness's own.
    pub async fn start_supervised(env: &[(&str, &str)]) -> Self {
        let mut h = Self::start_full_lazy(default_models, None, env).await;
        h.start_cp();
        h.wait_ready().await;
        h
    }

    /// Everything up on SQLite with `env` added to the control plane's environment.
    pub async fn start_env(env: &[(&str, &str)]) -> Self {
        let e = env.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        Self::start_full(default_models, None, e).await
    }

    pub async fn start_full(
        models: impl Fn(&str) -> String,
        database_url: Option<String>,
        extra_env: Vec<(String, String)>,
    ) -> Self {
        let e: Vec<(&str, &str)> = extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut h = Self::start_full_lazy(models, database_url, &e).await;
        h.start_cp();
        h.start_envoy();
        h.wait_ready().await;
        h
    }

    async fn start_full_lazy(
        models: impl Fn(&str) -> String,
        database_url: Option<String>,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let upstream = FakeUpstream::start(addr(0)).await.expect("fake upstream");
        let dir = tempfile::tempdir().expect("tempdir");
        let models_path = dir.path().join("models.yaml");
        std::fs::write(&models_path, models(&upstream.base_url())).expect("models file");
        Harness {
            dir,
            upstream,
            listen: addr(free_port()),
            xds: addr(free_port()),
            http: addr(free_port()),
            envoy_admin: addr(free_port()),
            models_path,
            cp: None,
            envoy: None,
            cp_runs: 0,
            database_url,
            extra_env: extra_env.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(),
            pg_created: None,
        }
    }

    /// Starts the control plane process.
    pub fn start_cp(&mut self) {
        self.cp_runs += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("cp-{}.log", self.cp_runs))).expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aqueduct"));
        cmd.arg("serve");
        cmd.env("AQUEDUCT_LISTEN", self.listen.to_string())
            .env("AQUEDUCT_XDS_LISTEN", self.xds.to_string())
            .env("AQUEDUCT_HTTP_LISTEN", self.http.to_string())
            .env("AQUEDUCT_MODELS", &self.models_path)
            .env("AQUEDUCT_MCP_SERVERS", self.dir.path().join("mcp.json"))
            .env("AQUEDUCT_DATA_DIR", self.dir.path())
            .env("AQUEDUCT_ADMIN_KEY", ADMIN_KEY)
            .env("AQUEDUCT_WASM", wasm_path())
            .env("AQUEDUCT_MAX_BODY_BYTES", (1024 * 1024).to_string())
            .env("AQUEDUCT_MODELS_POLL_MS", "100")
            .env("AQUEDUCT_RESYNC_SECS", "1")
            .env_remove("AQUEDUCT_ENVOY")
            .env("AQUEDUCT_ENVOY_ADMIN", self.envoy_admin.to_string())
            .env_remove("DATABASE_URL")
            .envs(self.database_url.iter().map(|u| ("DATABASE_URL", u.as_str())))
            .env("AQUEDUCT_LOG", "info,aqueduct=debug");
        // Extra settings come last so a test can override any default above.
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        // Leader of its own process group, as a shell starts a job: `interrupt_cp_group` signals
        // that group the way Ctrl-C in a terminal does.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start control plane");
        self.cp = Some(child);
    }

    /// Sends SIGINT to the control plane's whole process group, as Ctrl-C in a terminal does
    /// to the foreground job, and waits for the control plane to exit.
    pub fn interrupt_cp_group(&mut self) -> std::process::ExitStatus {
        let mut c = self.cp.take().expect("a running control plane");
        let _ = Command::new("kill").args(["-INT", "--", &format!("-{}", c.id())]).status();
        c.wait().expect("control plane exit")
    }

    /// Stops the control plane as an operator would (SIGTERM) and waits for it to exit.
    pub fn terminate_cp(&mut self) -> std::process::ExitStatus {
        let mut c = self.cp.take().expect("a running control plane");
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        c.wait().expect("control plane exit")
    }

    /// Kills the control plane process.
    pub fn stop_cp(&mut self) {
        if let Some(mut c) = self.cp.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts Envoy with the standalone bootstrap (everything else over ADS).
    pub fn start_envoy(&mut self) {
        let bootstrap = aqueduct::envoy::bootstrap_yaml("test-envoy", self.xds, self.envoy_admin);
        let config = self.dir.path().join("envoy.yaml");
        std::fs::write(&config, bootstrap).expect("bootstrap");
        let log = self.dir.path().join("envoy.log");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            // The admin port is unique while this harness lives, so it makes a unique base id.
            .args(["--base-id", &self.envoy_admin.port().to_string(), "--concurrency", "2"])
            // An orderly stop (`drain_envoy`) closes connections over one second.
            .args(["--drain-time-s", "1", "--drain-strategy", "immediate"])
            .arg("--log-path")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start envoy");
        self.envoy = Some(child);
    }

    /// Drains Envoy as an orderly shutdown does: connections are closed as their requests
    /// finish, then the listeners stop (after the 1 s drain time) and the filter hands over its
    /// queued usage events.
    pub async fn drain_envoy(&self) {
        let r = http().post(format!("http://{}/drain_listeners?graceful", self.envoy_admin)).send().await;
        assert!(r.is_ok_and(|r| r.status().is_success()), "drain_listeners");
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }

    /// Kills Envoy.
    pub fn stop_envoy(&mut self) {
        if let Some(mut c) = self.envoy.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the gateway answers `/v1/models` for the admin key (listener, routes and
    /// policy all delivered).
    pub async fn wait_ready(&self) {
        let start = Instant::now();
        let client = http();
        loop {
            let ok = client
                .get(self.url("/v1/models"))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false);
            if ok {
                return;
            }
            if start.elapsed() > Duration::from_secs(30) {
                self.dump_logs();
                panic!("gateway not ready after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A URL on the gateway's public address.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }

    /// An OpenAI client (async-openai) using `key` against the gateway.
    pub fn openai(&self, key: &str) -> async_openai::Client<OpenAIConfig> {
        async_openai::Client::with_config(OpenAIConfig::new().with_api_base(self.url("/v1")).with_api_key(key))
            .with_backoff(backoff::ExponentialBackoffBuilder::new().with_max_elapsed_time(Some(Duration::ZERO)).build())
    }

    /// Creates a key through the management API (through the gateway); returns (id, key).
    pub async fn create_token(&self, name: &str, expires_at: Option<&str>) -> (i64, String) {
        let mut body = serde_json::json!({ "name": name });
        if let Some(e) = expires_at {
            body["expires_at"] = e.into();
        }
        let resp = http()
            .post(self.url("/api/v1/tokens"))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .expect("create token");
        assert_eq!(resp.status(), 201, "create token");
        let v: serde_json::Value = resp.json().await.expect("json");
        (
            v["id"].as_str().and_then(|s| s.parse().ok()).expect("id is a string of digits"),
            v["key"].as_str().expect("key").to_string(),
        )
    }

    /// Revokes a key through the management API.
    pub async fn revoke_token(&self, id: i64) {
        let resp = http()
            .delete(self.url(&format!("/api/v1/tokens/{id}")))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("revoke");
        assert_eq!(resp.status(), 204);
    }

    /// Calls `method` `path` (an absolute path on the gateway) with `key` and an optional JSON
    /// body; returns the status and the JSON answer (`null` when the answer is not JSON).
    pub async fn call(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = http().request(m, self.url(path)).bearer_auth(key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// Every usage event the SQLite ledger of this harness stores for key `token` (read from the
    /// database directly, so it works while no control plane runs).
    pub async fn stored_requests(&self, token: i64) -> Vec<aqueduct::usage::query::RequestRow> {
        let db = aqueduct::db::Db::open(None, self.dir.path()).await.expect("ledger");
        let f = aqueduct::usage::query::Filters {
            from_ms: 0,
            to_ms: i64::MAX / 2,
            ids: vec![("token_id", token)],
            ..Default::default()
        };
        aqueduct::usage::query::requests(&db, &aqueduct::usage::query::Scope::All, &f, None, 100_000)
            .await
            .expect("usage rows")
    }

    /// Polls until `f` returns true or `limit` passes; returns the time it took.
    pub async fn eventually<F, Fut>(&self, limit: Duration, mut f: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if f().await {
                return start.elapsed();
            }
            if start.elapsed() > limit {
                self.dump_logs();
                panic!("condition not met within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Prints the tails of every log this harness wrote.
    pub fn dump_logs(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                eprintln!("----- {} (last 40 lines) -----\n{tail}", p.display());
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        self.stop_envoy();
        self.stop_cp();
        if let Some((server, name)) = self.pg_created.take() {
            drop_pg_database(server, name);
        }
    }
}

/// A plain HTTP client for raw requests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// Asserts an OpenAI-shaped error with `status` and `type`; returns the error object.
pub async fn expect_error(resp: reqwest::Response, status: u16, kind: &str) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let v: serde_json::Value = resp.json().await.expect("json error body");
    let e = &v["error"];
    assert_eq!(e["type"], kind, "{v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    e.clone()
}
