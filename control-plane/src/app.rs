//! Settings and start-up: opens the store, loads models, and runs the xDS server, the HTTP side
//! and (optionally) Envoy until a shutdown signal.

use crate::config::models::ModelsConfig;
use crate::db::Db;
use crate::envoy::{bootstrap_yaml_with, EnvoyProcess};
use crate::gateway::{now, Gateway};
use crate::supervisor::{Backoff, Stop, Supervisor};
use crate::tokens::{generate_key, hash_hex, preview, store};
use crate::xds::resources::Layout;
use crate::xds::server::XdsServer;
use anyhow::Context;
use aqueduct_policy::snapshot::DEFAULT_MAX_BODY_BYTES;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Default email of the bootstrap administrator (`AQUEDUCT_ADMIN_EMAIL`).
pub const BOOTSTRAP_ADMIN: &str = "admin@localhost";

/// Control-plane settings; each is a flag and an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// The gateway's one public address (Envoy's listener).
    #[arg(long, env = "AQUEDUCT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Models file in Aqueduct's (LiteLLM router) format; edits apply live.
    #[arg(long, env = "AQUEDUCT_MODELS", default_value = "examples/models.yaml")]
    pub models: PathBuf,
    /// Directory for the SQLite database, Envoy's bootstrap and log.
    #[arg(long, env = "AQUEDUCT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Bootstrap admin key; generated and printed once on first start if unset.
    #[arg(long, env = "AQUEDUCT_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// `postgres://…` or `sqlite://…`; default: SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where the xDS (gRPC) server listens; Envoy's bootstrap points here.
    #[arg(long, env = "AQUEDUCT_XDS_LISTEN", default_value = "127.0.0.1:18000")]
    pub xds_listen: SocketAddr,
    /// Where the control plane's HTTP side (management API, `/metrics`) listens; Envoy routes
    /// `/api` here.
    #[arg(long, env = "AQUEDUCT_HTTP_LISTEN", default_value = "127.0.0.1:18001")]
    pub http_listen: SocketAddr,
    /// The filter's `.wasm`. It must exist here (checked at start) and at the same path on
    /// Envoy's host.
    #[arg(long, env = "AQUEDUCT_WASM", default_value = "target/wasm32-wasip1/release/aqueduct_filter.wasm")]
    pub wasm: PathBuf,
    /// Largest accepted request body in bytes (413 above).
    #[arg(long, env = "AQUEDUCT_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES,
          value_parser = clap::value_parser!(u64).range(1..=4_000_000_000))]
    pub max_body_bytes: u64,
    /// Milliseconds a client has to send its request headers on the public listener; Envoy
    /// answers 408 and closes the connection after that (slow-header clients).
    #[arg(long, env = "AQUEDUCT_REQUEST_HEADERS_TIMEOUT_MS",
          default_value_t = crate::xds::resources::DEFAULT_REQUEST_HEADERS_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_headers_timeout_ms: u64,
    /// Seconds a stream on the public listener may go without activity before Envoy resets it.
    /// Model routes wait for their own timeout instead (a slow model is not cut) and MCP routes
    /// for an hour.
    #[arg(long, env = "AQUEDUCT_STREAM_IDLE_TIMEOUT_SECS",
          default_value_t = crate::xds::resources::DEFAULT_STREAM_IDLE_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stream_idle_timeout_secs: u64,
    /// Most connections the public listener holds open at once (all Envoy workers together);
    /// further ones are closed on arrival.
    #[arg(long, env = "AQUEDUCT_MAX_CONNECTIONS",
          default_value_t = crate::xds::resources::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Envoy binary to run and supervise; unset: run no Envoy (point your own at the xDS address).
    #[arg(long, env = "AQUEDUCT_ENVOY")]
    pub envoy: Option<PathBuf>,
    /// Admin address of the supervised Envoy.
    #[arg(long, env = "AQUEDUCT_ENVOY_ADMIN", default_value = "127.0.0.1:9901")]
    pub envoy_admin: SocketAddr,
    /// `--base-id` of the supervised Envoy (distinct per Envoy on one host).
    #[arg(long, env = "AQUEDUCT_ENVOY_BASE_ID", default_value_t = 0)]
    pub envoy_base_id: u32,
    /// Seconds a supervised Envoy outlives a control plane killed outright (SIGKILL, a crash),
    /// serving with its last configuration and holding its usage events for the next control
    /// plane on the same data directory, which drains it. After that it is drained and stopped.
    #[arg(long, env = "AQUEDUCT_ENVOY_ORPHAN_GRACE_SECS", default_value_t = 600)]
    pub envoy_orphan_grace_secs: u64,
    /// Worker threads of the supervised Envoy.
    #[arg(long, env = "AQUEDUCT_ENVOY_CONCURRENCY", default_value_t = 2)]
    pub envoy_concurrency: u32,
    /// How often the policy is rebuilt from the store even without a change notice, in seconds:
    /// picks up keys written by `aqueduct admin create-key` or another process.
    #[arg(long, env = "AQUEDUCT_RESYNC_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_secs: u64,
    /// Wait this many milliseconds after a change before rebuilding the snapshot, so a burst of
    /// changes (a script creating keys) costs Envoy one push. Key creation and revocation reach
    /// the filter through the key journal at once either way; other changes wait this long.
    #[arg(long, env = "AQUEDUCT_SNAPSHOT_DEBOUNCE_MS", default_value_t = 0)]
    pub snapshot_debounce_ms: u64,
    /// Models no key may use unless a level of its chain sets `merge_excluded_models: false`
    /// (comma-separated model names or aliases).
    #[arg(long, env = "AQUEDUCT_DEFAULT_EXCLUDED_MODELS", value_delimiter = ',', default_value = "")]
    pub default_excluded_models: Vec<String>,
    /// Per-key requests per minute for keys whose chain sets no `key_requests_per_minute`.
    #[arg(long, env = "AQUEDUCT_DEFAULT_KEY_REQUESTS_PER_MINUTE")]
    pub default_key_requests_per_minute: Option<u64>,
    /// Per-key input tokens per minute for keys whose chain sets none.
    #[arg(long, env = "AQUEDUCT_DEFAULT_KEY_INPUT_TOKENS_PER_MINUTE")]
    pub default_key_input_tokens_per_minute: Option<u64>,
    /// Per-key output tokens per minute for keys whose chain sets none.
    #[arg(long, env = "AQUEDUCT_DEFAULT_KEY_OUTPUT_TOKENS_PER_MINUTE")]
    pub default_key_output_tokens_per_minute: Option<u64>,
    /// Most output tokens reserved for one request at admission (`max_tokens` above it, or
    /// none given, reserves this); the reservation is settled with the real usage.
    #[arg(long, env = "AQUEDUCT_OUTPUT_RESERVATION", default_value_t = aqueduct_policy::snapshot::DEFAULT_OUTPUT_RESERVATION)]
    pub output_reservation: u64,
    /// How often the models file is checked for edits, in milliseconds.
    #[arg(long, env = "AQUEDUCT_MODELS_POLL_MS", default_value_t = 500)]
    pub models_poll_ms: u64,
    /// Most live service accounts one team may have (409 `quota_exceeded` above).
    #[arg(long, env = "AQUEDUCT_MAX_SERVICE_ACCOUNTS_PER_TEAM", default_value_t = 10,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub max_service_accounts_per_team: i64,
    /// Most live personal keys one user may have (409 `quota_exceeded` above).
    #[arg(long, env = "AQUEDUCT_MAX_KEYS_PER_USER", default_value_t = 10,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub max_keys_per_user: i64,
    /// MCP servers file in Aqueduct's `mcp.json` format (plus `headers`); edits apply live. A
    /// missing file means no servers from a file.
    #[arg(long, env = "AQUEDUCT_MCP_SERVERS", default_value = "examples/mcp.json")]
    pub mcp_servers: PathBuf,
    /// MCP servers no key may use unless a level of its chain sets
    /// `merge_excluded_mcp_servers: false` (comma-separated names).
    #[arg(long, env = "AQUEDUCT_DEFAULT_EXCLUDED_MCP_SERVERS", value_delimiter = ',', default_value = "")]
    pub default_excluded_mcp_servers: Vec<String>,
    /// Check `Host` and `Origin` of MCP requests against the allow-lists (DNS-rebinding
    /// protection).
    #[arg(long, env = "AQUEDUCT_MCP_DNS_REBINDING_PROTECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub mcp_dns_rebinding_protection: bool,
    /// `Host` values MCP requests may carry (comma-separated; `host:*` allows any port).
    #[arg(long, env = "AQUEDUCT_MCP_ALLOWED_HOSTS", value_delimiter = ',', default_value = crate::mcp::security::DEFAULT_HOSTS)]
    pub mcp_allowed_hosts: Vec<String>,
    /// `Origin` values MCP requests may carry when they send one (comma-separated;
    /// `scheme://host:*` allows any port).
    #[arg(long, env = "AQUEDUCT_MCP_ALLOWED_ORIGINS", value_delimiter = ',', default_value = crate::mcp::security::DEFAULT_ORIGINS)]
    pub mcp_allowed_origins: Vec<String>,
    /// Most seconds one upstream call made by the aggregated MCP endpoint may take.
    #[arg(long, env = "AQUEDUCT_MCP_CALL_TIMEOUT_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub mcp_call_timeout_secs: u64,
    /// MCP sessions unused for this many seconds are deleted.
    #[arg(long, env = "AQUEDUCT_MCP_SESSION_IDLE_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..))]
    pub mcp_session_idle_secs: u64,
    /// Days usage events and rollups are kept.
    #[arg(long, env = "AQUEDUCT_USAGE_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub usage_retention_days: u32,
    /// Days the gateway remembers who made each stored Responses API response; after that no one
    /// can retrieve, continue, cancel or delete it through the gateway (404). Keep it at most as
    /// long as the provider keeps responses (OpenAI: 30 days).
    #[arg(long, env = "AQUEDUCT_RESPONSES_TTL_DAYS", default_value_t = crate::responses::store::DEFAULT_TTL_DAYS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub responses_ttl_days: u32,
    /// Provider-native tools a Responses API create may use (comma-separated tool types such as
    /// `web_search`, `code_interpreter`, `image_generation`); empty: all of them. `function` and
    /// `custom` tools are always allowed; `mcp` and `file_search` tools follow their own rules.
    #[arg(long, env = "AQUEDUCT_RESPONSES_NATIVE_TOOLS", value_delimiter = ',', default_value = "")]
    pub responses_native_tools: Vec<String>,
    /// Proxies in front of Envoy whose `X-Forwarded-For` entries are trusted for the client
    /// address in the usage ledger (0: the address that connected to Envoy).
    #[arg(long, env = "AQUEDUCT_TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: u32,
    /// Whether every Envoy the filter runs in appends the address that connected to it to
    /// `X-Forwarded-For` (the HTTP connection manager's `use_remote_address: true`; the control
    /// plane's own listener and `envoy/existing-mesh.yaml` set it). The ledger's client address
    /// then comes from that header, saving a call into Envoy per request. Set false for an
    /// Envoy that does not append: the filter asks Envoy for the peer address instead.
    #[arg(long, env = "AQUEDUCT_ENVOY_APPENDS_PEER", default_value_t = true, action = clap::ArgAction::Set)]
    pub envoy_appends_peer: bool,
    /// Bytes of usage events each Envoy worker holds while the control plane is unreachable;
    /// beyond that new events are dropped and counted (`wasmcustom.aqueduct_usage_events_dropped`).
    #[arg(long, env = "AQUEDUCT_USAGE_QUEUE_BYTES", default_value_t = aqueduct_policy::snapshot::DEFAULT_QUEUE_BYTES)]
    pub usage_queue_bytes: u64,
    /// The gateway's public base URL as browsers and clients reach it (`https://gw.example.com`);
    /// the OIDC redirect URI is built from it and cookies get `Secure` when it is https.
    /// Default: `http://<listen>`.
    #[arg(long, env = "AQUEDUCT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Email of the bootstrap admin: the user the admin key belongs to and the admin UI's local
    /// login.
    #[arg(long, env = "AQUEDUCT_ADMIN_EMAIL", default_value = BOOTSTRAP_ADMIN)]
    pub admin_email: String,
    /// Password of the bootstrap admin's local login; generated and printed once on first start
    /// if unset.
    #[arg(long, env = "AQUEDUCT_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// How long an admin UI session lasts, in hours.
    #[arg(long, env = "AQUEDUCT_SESSION_HOURS", default_value_t = 12,
          value_parser = clap::value_parser!(i64).range(1..=720))]
    pub session_hours: i64,
    /// Users must accept the current Terms of Service in the admin UI before their keys work
    /// (service-account keys: their owner's acceptance; admins exempt). Admins publish the
    /// versions at `/ui/terms/versions`; nothing is refused until a first version exists.
    #[arg(long, env = "AQUEDUCT_TERMS_REQUIRED", default_value_t = false)]
    pub terms_required: bool,
    /// OIDC login (unset issuer: local login only).
    #[command(flatten)]
    pub oidc: crate::auth::oidc::OidcSettings,
}

impl Settings {
    /// The public base URL, without a trailing slash.
    pub fn public_url(&self) -> anyhow::Result<String> {
        let url = self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen));
        let parsed = url::Url::parse(&url).with_context(|| format!("AQUEDUCT_PUBLIC_URL {url:?} is not a URL"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some(),
            "AQUEDUCT_PUBLIC_URL {url:?} must be an http:// or https:// URL"
        );
        Ok(url.trim_end_matches('/').to_string())
    }

    /// The admin UI's settings (fails on a bad public URL or OIDC setting).
    pub fn ui(&self) -> anyhow::Result<crate::admin::UiSettings> {
        let public_url = self.public_url()?;
        let oidc = crate::auth::oidc::Oidc::new(&self.oidc, &public_url)?.map(Arc::new);
        Ok(crate::admin::UiSettings { public_url, session_ttl: self.session_hours * 3600, oidc })
    }

    /// The MCP gateway's settings.
    pub fn mcp(&self) -> crate::mcp::McpSettings {
        let clean = |v: &[String]| v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        crate::mcp::McpSettings {
            hosts: crate::mcp::security::HostPolicy {
                enabled: self.mcp_dns_rebinding_protection,
                hosts: clean(&self.mcp_allowed_hosts),
                origins: clean(&self.mcp_allowed_origins),
            },
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(self.mcp_call_timeout_secs),
            session_idle: Duration::from_secs(self.mcp_session_idle_secs),
        }
    }

    fn layout(&self) -> anyhow::Result<Layout> {
        let wasm = std::fs::canonicalize(&self.wasm)
            .with_context(|| format!("filter module {} not found (build it with `make wasm`)", self.wasm.display()))?;
        Ok(Layout {
            listen: self.listen,
            control_plane_http: self.http_listen,
            wasm_path: wasm,
            max_body_bytes: self.max_body_bytes,
            limits: crate::xds::resources::ListenerLimits {
                request_headers_timeout: Duration::from_millis(self.request_headers_timeout_ms),
                stream_idle_timeout: Duration::from_secs(self.stream_idle_timeout_secs),
                max_connections: self.max_connections,
            },
        })
    }
}

/// Makes sure an admin and an admin key exist; returns a key to print if one was generated.
pub async fn bootstrap_admin(db: &Db, email: &str, admin_key: Option<&str>) -> anyhow::Result<Option<String>> {
    let now = now();
    let admin = store::ensure_user(db, email, "admin", now).await?;
    if let Some(key) = admin_key {
        let hash = hash_hex(key);
        if !store::hash_exists(db, &hash).await? {
            store::insert(db, admin, "bootstrap admin key", &hash, &preview(key), now, None).await?;
        }
        return Ok(None);
    }
    let has_key = store::live(db, now, 0).await?.iter().any(|t| t.user_id == admin);
    if has_key {
        return Ok(None);
    }
    let key = generate_key();
    store::insert(db, admin, "bootstrap admin key", &hash_hex(&key), &preview(&key), now, None).await?;
    Ok(Some(key))
}

/// `aqueduct admin bootstrap`: creates the org (unless it exists), an admin user in it and a key
/// for that user; returns the key (print it once). Fails if the email is taken.
pub async fn bootstrap_org_admin(settings: &Settings, org: &str, email: &str) -> anyhow::Result<String> {
    use crate::tenancy::store as tstore;
    let org = org.trim();
    let email = email.trim();
    anyhow::ensure!(!org.is_empty() && org.chars().count() <= 255, "--org must be 1 to 255 characters");
    anyhow::ensure!(
        email.len() <= 320 && email.split('@').count() == 2 && !email.starts_with('@') && !email.ends_with('@'),
        "--email must be an address with one '@'"
    );
    std::fs::create_dir_all(&settings.data_dir)?;
    let db = Db::open(settings.database_url.as_deref(), &settings.data_dir).await?;
    let now = now();
    let org_id = tstore::ensure_org(&db, org, now).await?;
    let user = tstore::insert_user(&db, email, Some(org_id), "admin", now)
        .await
        .with_context(|| format!("cannot create user {email} (does it exist already?)"))?;
    let key = generate_key();
    store::insert(&db, user, "admin key (bootstrap)", &hash_hex(&key), &preview(&key), now, None).await?;
    Ok(key)
}

/// The tenancy settings the management API enforces.
pub fn tenancy_settings(settings: &Settings) -> crate::api::TenancySettings {
    crate::api::TenancySettings {
        max_service_accounts_per_team: settings.max_service_accounts_per_team,
        max_keys_per_user: settings.max_keys_per_user,
    }
}

/// Creates a new admin key (for `aqueduct admin create-key`).
pub async fn create_admin_key(settings: &Settings) -> anyhow::Result<String> {
    std::fs::create_dir_all(&settings.data_dir)?;
    let db = Db::open(settings.database_url.as_deref(), &settings.data_dir).await?;
    let admin = store::ensure_user(&db, &settings.admin_email.trim().to_lowercase(), "admin", now()).await?;
    let key = generate_key();
    store::insert(&db, admin, "admin key (CLI)", &hash_hex(&key), &preview(&key), now(), None).await?;
    Ok(key)
}

/// The Envoy bootstrap for these settings.
pub fn bootstrap(settings: &Settings) -> String {
    bootstrap_yaml_with("aqueduct-envoy", settings.xds_listen, settings.envoy_admin, settings.max_connections)
}

/// How long a supervised Envoy has to stop: its keeper drains it (2.5 s), and
/// [`EnvoyProcess::supervise`] kills a keeper that has not stopped within 15 s.
const ENVOY_STOP_GRACE: Duration = Duration::from_secs(20);

/// How long closing the database may wait for connections still in use at shutdown.
const DB_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A tokio listener on the same socket as `listener`, for one run of a server task: the socket
/// stays bound between runs, so a restarted server cannot lose its port to another process.
fn reuse(listener: &std::net::TcpListener) -> std::io::Result<tokio::net::TcpListener> {
    let listener = listener.try_clone()?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// Reloads the API-managed MCP servers every `every`; forever.
async fn reload_mcp_servers(gw: Arc<Gateway>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = crate::mcp::service::reload(&gw).await {
            tracing::warn!(error = %e, "cannot reload the API-managed MCP servers");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// Runs the control plane until SIGINT/SIGTERM.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data directory {}", settings.data_dir.display()))?;
    let layout = settings.layout()?;
    let ui = settings.ui()?;
    let models =
        ModelsConfig::load(&settings.models).with_context(|| format!("models file {}", settings.models.display()))?;
    let db = Db::open(settings.database_url.as_deref(), &settings.data_dir).await?;
    let email = settings.admin_email.trim().to_lowercase();
    anyhow::ensure!(
        email.split('@').count() == 2 && !email.starts_with('@') && !email.ends_with('@'),
        "AQUEDUCT_ADMIN_EMAIL must be an address with one '@'"
    );
    if let Some(key) = bootstrap_admin(&db, &email, settings.admin_key.as_deref()).await? {
        println!("Admin key (shown once; keep it): {key}");
    }
    if let Some(p) = crate::auth::password::bootstrap(&db, &email, settings.admin_password.as_deref()).await? {
        println!("Admin UI password for {email} (shown once; keep it): {p}");
    }
    let defaults = [
        settings.default_key_requests_per_minute,
        settings.default_key_input_tokens_per_minute,
        settings.default_key_output_tokens_per_minute,
    ];
    let ledger = aqueduct_policy::snapshot::LedgerSettings {
        cluster: crate::xds::resources::CONTROL_PLANE_CLUSTER.to_string(),
        authority: settings.http_listen.to_string(),
        secret: crate::usage::ledger_secret(&db).await.context("reading the ledger secret")?,
        trusted_hops: settings.trusted_proxy_hops,
        peer_in_xff: settings.envoy_appends_peer,
        queue_bytes: settings.usage_queue_bytes,
    };
    // Every background task runs under the supervisor: restarted when it fails, stopped in
    // order. Envoy stops first, drained, while this control plane still takes its last usage
    // batches; then the servers and loops; then the usage staged so far is folded into the
    // rollups; the pool closes last.
    let mut tasks = Supervisor::new(Backoff::default());
    let ingress = tasks.stage("ingress", ENVOY_STOP_GRACE);
    // Streams from Envoy never end on their own; don't let them hold the exit.
    let serving = tasks.stage("serving", Duration::from_secs(2));
    let flush = tasks.stage("usage", Duration::from_secs(5));
    tasks.spawn_graceful(flush, "usage-folder", {
        let db = db.clone();
        move |stop: Stop| {
            let db = db.clone();
            async move {
                tokio::select! {
                    () = crate::usage::ingest::run_folder(db.clone()) => {}
                    () = stop.wait() => {}
                }
                crate::usage::ingest::fold(&db).await.map(drop)
            }
        }
    });
    tasks.spawn(serving, "usage-retention", {
        let db = db.clone();
        let days = settings.usage_retention_days;
        move || crate::usage::retention::run(db.clone(), days, Duration::from_secs(3600))
    });
    crate::responses::store::set_ttl_days(settings.responses_ttl_days);
    tasks.spawn(serving, "responses-expiry", {
        let db = db.clone();
        move || crate::responses::store::run_expiry(db.clone(), Duration::from_secs(3600))
    });
    let gw = Arc::new(
        Gateway::new(db, layout, settings.models.clone(), models)
            .with_limits(defaults, settings.output_reservation)
            .with_ledger(ledger)
            .with_terms_required(settings.terms_required)
            .with_responses_native_tools(settings.responses_native_tools.clone())
            .with_snapshot_debounce(Duration::from_millis(settings.snapshot_debounce_ms)),
    );
    gw.set_default_excluded_models(settings.default_excluded_models.clone());
    let registry = gw.mcp_registry.clone();
    registry.set_file(
        crate::mcp::registry::load(&settings.mcp_servers)
            .with_context(|| format!("MCP servers file {}", settings.mcp_servers.display()))?,
    );
    registry.set_managed(crate::mcp::registry::load_managed(&gw.db).await?);
    let secret = crate::mcp::sessions::identity_secret(&gw.db).await.context("identity secret")?;
    gw.set_identity_secret(secret.clone());
    gw.set_mcp_servers(registry.names());
    gw.set_default_excluded_mcp_servers(settings.default_excluded_mcp_servers.clone());
    // MCP calls go to the usage ledger (the filter records only its own refusals on MCP paths).
    let (recorder, writer) = crate::usage::mcp::LedgerRecorder::new(gw.db.clone(), {
        let gw = gw.clone();
        move |events| {
            let refs: Vec<&aqueduct_policy::ledger::UsageEvent> = events.iter().collect();
            gw.usage_metrics.observe(&refs, chrono::Utc::now().timestamp_millis());
        }
    });
    let recorder: Arc<dyn crate::mcp::McpRecorder> = recorder;
    tasks.spawn(serving, "mcp-usage-writer", move || writer.clone().run());
    let mcp =
        Arc::new(crate::mcp::Mcp::new(gw.db.clone(), registry.clone(), settings.mcp(), recorder, secret.clone())?);
    let responses = Arc::new(crate::responses::Responses::new(gw.clone(), secret)?);
    gw.rebuild().await?;
    tasks.spawn(serving, "rebuilder", {
        let gw = gw.clone();
        move || gw.clone().run_rebuilder()
    });
    tasks.spawn(serving, "peer-listener", {
        let gw = gw.clone();
        move || gw.clone().listen_for_peers()
    });
    tasks.spawn(serving, "resync", {
        let gw = gw.clone();
        let every = Duration::from_secs(settings.resync_secs);
        move || gw.clone().rebuild_periodically(every)
    });
    tasks.spawn(serving, "models-watch", {
        let gw = gw.clone();
        let every = Duration::from_millis(settings.models_poll_ms);
        move || gw.clone().watch_models(every)
    });
    tasks.spawn(serving, "mcp-servers-watch", {
        let gw = gw.clone();
        let path = settings.mcp_servers.clone();
        let every = Duration::from_millis(settings.models_poll_ms);
        move || {
            let gw = gw.clone();
            crate::mcp::registry::watch(registry.clone(), path.clone(), every, move |names| gw.set_mcp_servers(names))
        }
    });
    tasks.spawn(serving, "mcp-session-sweep", {
        let mcp = mcp.clone();
        move || mcp.clone().sweep_sessions()
    });
    // Servers another control plane added through its API arrive with the periodic resync.
    tasks.spawn(serving, "mcp-servers-reload", {
        let gw = gw.clone();
        let every = Duration::from_secs(settings.resync_secs);
        move || reload_mcp_servers(gw.clone(), every)
    });

    // Bound once, here, so a port in use stops the start; a restarted server reuses the socket.
    let xds_listener = tokio::net::TcpListener::bind(settings.xds_listen)
        .await
        .and_then(tokio::net::TcpListener::into_std)
        .with_context(|| format!("cannot listen for xDS on {}", settings.xds_listen))?;
    let http_listener = tokio::net::TcpListener::bind(settings.http_listen)
        .await
        .and_then(tokio::net::TcpListener::into_std)
        .with_context(|| format!("cannot listen for HTTP on {}", settings.http_listen))?;

    tasks.spawn_graceful(serving, "xds-server", {
        let xds = XdsServer::new(gw.cache.clone(), gw.xds_metrics.clone());
        move |stop: Stop| {
            let xds = xds.clone();
            let listener = reuse(&xds_listener);
            async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener?);
                tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(Duration::from_secs(30)))
                    .add_service(xds.ads())
                    .add_service(xds.ecds())
                    .serve_with_incoming_shutdown(incoming, stop.wait())
                    .await?;
                anyhow::Ok(())
            }
        }
    });
    tasks.spawn_graceful(serving, "http-server", {
        let app = crate::api::router(gw.clone(), tenancy_settings(&settings))
            .layer(axum::Extension(tasks.stats()))
            .merge(crate::admin::router(gw.clone(), ui.clone(), tenancy_settings(&settings)))
            .merge(crate::mcp::router(mcp.clone()))
            .merge(crate::responses::router(responses.clone()));
        move |stop: Stop| {
            let app = app.clone();
            let listener = reuse(&http_listener);
            async move {
                // Streamed answers (MCP's SSE relayed as it arrives) go out in several small
                // writes; with Nagle's algorithm the later ones waited for Envoy's delayed ACK:
                // ~45 ms per MCP tools/call instead of ~1 ms.
                let listener = axum::serve::ListenerExt::tap_io(listener?, |tcp: &mut tokio::net::TcpStream| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                });
                axum::serve(listener, app).with_graceful_shutdown(stop.wait()).await
            }
        }
    });
    if let Some(binary) = settings.envoy.clone() {
        let proc = EnvoyProcess {
            binary,
            data_dir: settings.data_dir.clone(),
            base_id: settings.envoy_base_id,
            concurrency: settings.envoy_concurrency,
            bootstrap: bootstrap(&settings),
            admin: settings.envoy_admin,
            orphan_grace: Duration::from_secs(settings.envoy_orphan_grace_secs),
        };
        tasks.spawn_graceful(ingress, "envoy", move |stop: Stop| {
            let proc = proc.clone();
            async move {
                proc.supervise(stop.wait()).await;
                // Before a stop, `supervise` returns only when it cannot start Envoy (logged).
                anyhow::ensure!(stop.is_stopped(), "Envoy could not be started");
                Ok(())
            }
        });
    }
    tracing::info!(xds = %settings.xds_listen, http = %settings.http_listen, database = gw.db.backend(), "control plane ready");
    println!(
        "Aqueduct gateway: http://{}/v1  (management API: http://{}/api/v1, admin UI: {}/)",
        settings.listen, settings.listen, ui.public_url
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    tasks.shutdown().await;
    if tokio::time::timeout(DB_CLOSE_GRACE, gw.db.close()).await.is_err() {
        tracing::warn!(grace_ms = DB_CLOSE_GRACE.as_millis(), "database connections still in use; exiting anyway");
    }
    Ok(())
}
