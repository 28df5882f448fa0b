//! The gateway's live state: models and tokens turned into xDS resources, rebuilt on change.
//!
//! Anything that changes what Envoy should enforce (a key created or revoked, the models file
//! edited) calls [`Gateway::request_rebuild`]; one task coalesces requests, reads the store and
//! publishes to the [`SnapshotCache`], and every connected Envoy gets the changed types.

use crate::config::models::ModelsConfig;
use crate::db::Db;
use crate::tenancy::policy::{
    entity_caps, excluded_mcp_servers, excluded_models, hierarchy, hierarchy_of, key_limits, live_key, Hierarchy,
    KeyCache, KeyRow,
};
use crate::tokens::journal::KeyJournal;
use crate::xds::cache::SnapshotCache;
use crate::xds::resources::{self, Layout};
use crate::xds::server::XdsMetrics;
use crate::xds::type_url;
use aqueduct_policy::journal::KeyChange;
use aqueduct_policy::snapshot::{
    CapSpec, LedgerSettings, ModelSpec, PolicySnapshot, PrincipalSpec, ResponsesSettings, Settings,
};
use aqueduct_policy::tokens::{TokenTable, HASH_LEN};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

/// Keys expired for less than this stay in the snapshot so the filter answers "expired"
/// rather than "invalid"; older ones are dropped to keep the table small.
pub const EXPIRED_GRACE_SECS: i64 = 7 * 24 * 3600;

/// Journaled key changes that no snapshot includes yet, beyond which a snapshot is built at once
/// rather than at the next resync (every VM keeps them in its overlay until then).
pub const COMPACT_AFTER: u64 = 1_000;

/// PostgreSQL channel on which control planes announce store changes to each other.
pub const CHANGES_CHANNEL: &str = "aqueduct_changes";

/// Unix seconds now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Shared state behind the xDS server and the management API.
#[derive(Debug)]
pub struct Gateway {
    /// The store.
    pub db: Db,
    /// Addresses and paths the resources refer to.
    pub layout: Layout,
    /// The models file, watched for changes.
    pub models_path: PathBuf,
    models: RwLock<Arc<ModelsConfig>>,
    models_loaded_at: AtomicU64,
    /// What streams serve.
    pub cache: Arc<SnapshotCache>,
    version: AtomicU64,
    dirty: Notify,
    /// Set when the pending rebuild was asked for by a change made here (tell the peers).
    local_change: std::sync::atomic::AtomicBool,
    /// Identifies this process in change notifications, so it can ignore its own.
    instance: String,
    /// Policy versions published, for `/api/v1/status`.
    pub published: AtomicU64,
    /// xDS counters, shared with the xDS server.
    pub xds_metrics: Arc<XdsMetrics>,
    /// The last published policy with its version zeroed: an unchanged policy keeps its version
    /// and is not pushed again (each push costs every Envoy VM a re-parse).
    last_policy: tokio::sync::Mutex<Option<(PolicySnapshot, Vec<u8>)>>,
    /// Per-key caps for keys whose chain sets none.
    pub default_key_limits: [Option<u64>; 3],
    /// Most output tokens reserved per request at admission.
    pub output_reservation: u64,
    /// Models every key is denied unless a level below sets its merge flag to false.
    default_excluded_models: RwLock<Vec<String>>,
    /// Configured MCP server names, sorted (the filter checks exclusions against them).
    mcp_servers: RwLock<Vec<String>>,
    /// MCP servers every key is denied unless a level below sets its merge flag to false.
    default_excluded_mcp_servers: RwLock<Vec<String>>,
    /// The deployment's identity secret, sent by the filter with identity headers.
    identity_secret: RwLock<String>,
    /// The MCP servers (file and management API); the MCP gateway and the API share it.
    pub mcp_registry: Arc<crate::mcp::registry::Registry>,
    /// Where the filter delivers usage events (pushed in the policy).
    pub ledger: LedgerSettings,
    /// The ledger's metrics.
    pub usage_metrics: crate::usage::metrics::UsageMetrics,
    /// SQLite has one writer: ingestion calls take turns rather than fail on a busy database.
    pub ingest_lock: tokio::sync::Mutex<()>,
    /// Whether users must accept the current Terms of Service before their keys work.
    pub terms_required: bool,
    /// The Responses API's tool policy (pushed in the policy).
    responses: ResponsesSettings,
    /// Key changes since this process started, long-polled by the filter between snapshots.
    pub journal: KeyJournal,
    /// Wait after a change before rebuilding (changes meanwhile join the same rebuild).
    snapshot_debounce: Duration,
    /// The live keys as of the last rebuild; the next one rereads only the keys changed since.
    keys: KeyCache,
}

/// Failure to rebuild the snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("reading tokens: {0}")]
    Db(#[from] sqlx::Error),
    #[error("encoding policy: {0}")]
    Encode(#[from] aqueduct_policy::SnapshotError),
}

impl Gateway {
    /// State over a store and a loaded models file.
    pub fn new(db: Db, layout: Layout, models_path: PathBuf, models: ModelsConfig) -> Self {
        Self {
            db,
            layout,
            models_path,
            models: RwLock::new(Arc::new(models)),
            models_loaded_at: AtomicU64::new(u64::try_from(now()).unwrap_or(0)),
            cache: Arc::new(SnapshotCache::new()),
            version: AtomicU64::new(0),
            dirty: Notify::new(),
            local_change: std::sync::atomic::AtomicBool::new(false),
            instance: format!("{}-{}", std::process::id(), crate::tokens::generate_key()),
            published: AtomicU64::new(0),
            xds_metrics: Arc::new(XdsMetrics::default()),
            last_policy: tokio::sync::Mutex::new(None),
            default_excluded_models: RwLock::new(Vec::new()),
            mcp_servers: RwLock::new(Vec::new()),
            default_excluded_mcp_servers: RwLock::new(Vec::new()),
            identity_secret: RwLock::new(String::new()),
            mcp_registry: Arc::new(crate::mcp::registry::Registry::default()),
            default_key_limits: [None; 3],
            output_reservation: aqueduct_policy::snapshot::DEFAULT_OUTPUT_RESERVATION,
            ledger: LedgerSettings::default(),
            usage_metrics: crate::usage::metrics::UsageMetrics::default(),
            ingest_lock: tokio::sync::Mutex::new(()),
            terms_required: false,
            responses: ResponsesSettings::default(),
            journal: KeyJournal::new(),
            snapshot_debounce: Duration::ZERO,
            keys: KeyCache::default(),
        }
    }

    /// Waits `debounce` after a change before rebuilding (before the gateway is shared).
    pub fn with_snapshot_debounce(mut self, debounce: Duration) -> Self {
        self.snapshot_debounce = debounce;
        self
    }

    /// Limits the provider-native tools a Responses API create may use to `native_tools` (names
    /// trimmed, empty ones dropped; none: all allowed), before the gateway is shared.
    pub fn with_responses_native_tools(mut self, native_tools: Vec<String>) -> Self {
        self.responses.native_tools =
            native_tools.into_iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
        self
    }

    /// Sets where the filter sends usage events (before the gateway is shared).
    pub fn with_ledger(mut self, ledger: LedgerSettings) -> Self {
        self.ledger = ledger;
        self
    }

    /// The current models.
    pub fn models(&self) -> Arc<ModelsConfig> {
        self.models.read().map(|m| m.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Sets the global rate-limit defaults (before the gateway is shared).
    pub fn with_limits(mut self, default_key_limits: [Option<u64>; 3], output_reservation: u64) -> Self {
        self.default_key_limits = default_key_limits;
        self.output_reservation = output_reservation;
        self
    }

    /// Requires acceptance of the current Terms of Service (before the gateway is shared).
    pub fn with_terms_required(mut self, required: bool) -> Self {
        self.terms_required = required;
        self
    }

    /// Sets the global default model exclusions (from configuration) and rebuilds.
    pub fn set_default_excluded_models(&self, models: Vec<String>) {
        if let Ok(mut d) = self.default_excluded_models.write() {
            *d = models.into_iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
        }
        self.request_resync();
    }

    /// The global default model exclusions (for showing a key's effective exclusions).
    pub fn default_excluded_models(&self) -> Vec<String> {
        self.default_excluded_models.read().map(|d| d.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Sets the MCP servers the filter knows (names from the registry) and rebuilds.
    pub fn set_mcp_servers(&self, mut names: Vec<String>) {
        names.sort();
        names.dedup();
        if let Ok(mut m) = self.mcp_servers.write() {
            *m = names;
        }
        self.request_resync();
    }

    /// The global default MCP exclusions (for showing which servers a user may use).
    pub fn default_excluded_mcp_servers(&self) -> Vec<String> {
        self.default_excluded_mcp_servers.read().map(|d| d.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Sets the global default MCP exclusions (from configuration) and rebuilds.
    pub fn set_default_excluded_mcp_servers(&self, names: Vec<String>) {
        if let Ok(mut d) = self.default_excluded_mcp_servers.write() {
            *d = names.into_iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
        }
        self.request_resync();
    }

    /// Sets the identity secret the filter sends to the control plane (before the first build).
    pub fn set_identity_secret(&self, secret: String) {
        if let Ok(mut s) = self.identity_secret.write() {
            *s = secret;
        }
    }

    /// Asks the rebuild task for a new snapshot; many requests coalesce into one rebuild.
    pub fn request_rebuild(&self) {
        self.local_change.store(true, Ordering::Relaxed);
        self.dirty.notify_one();
    }

    /// A key was created, changed, regenerated or revoked (its row is committed): journals the
    /// change for the filter, which applies it within milliseconds; the next resync makes it part
    /// of a snapshot. Without a journal entry (the store failed here) a rebuild is asked for at
    /// once and the change arrives with that snapshot.
    pub async fn key_changed(&self, id: i64) {
        match self.key_change(id).await {
            Ok(change) => {
                self.journal.record(change);
                // The journal carries the change; a snapshot including it can wait for the next
                // resync, so key churn at 100,000 keys does not cost Envoy a 3 MB push per key.
                // A long overlay is compacted into a snapshot at once.
                if self.journal.pending() >= COMPACT_AFTER {
                    self.request_rebuild();
                } else {
                    // Other control planes do not see this journal: they rebuild now.
                    self.notify_peers().await;
                }
            }
            Err(e) => {
                tracing::warn!(token = id, error = %e, "key change not journaled; it applies with the next snapshot");
                self.request_rebuild();
            }
        }
    }

    /// What the filter must know about key `id` now: its hash and principal, or that it is gone.
    async fn key_change(&self, id: i64) -> Result<KeyChange, RebuildError> {
        let gone = KeyChange::Gone { id: self::id(id) };
        let Some(key) = live_key(&self.db, id, now(), EXPIRED_GRACE_SECS).await? else { return Ok(gone) };
        let hierarchy = hierarchy_of(&self.db, &key).await?;
        let context = self.policy_context().await?;
        let keys = [key];
        let inputs = context.inputs(&keys, &hierarchy);
        // The same code as a full snapshot, over this one key: the principal comes out exactly
        // as the next snapshot will have it.
        let one = build_snapshot(0, 0, &self.models(), inputs, Settings::default());
        let (false, Some(principal)) = (one.tokens.is_empty(), one.principals.first()) else {
            return Ok(gone); // the owner is gone or inactive
        };
        Ok(KeyChange::Live {
            id: self::id(keys[0].id),
            hash: keys[0].key_hash.to_ascii_lowercase(),
            expires_at: keys[0].expires_at,
            principal: Box::new(principal.clone()),
        })
    }

    /// What principals are built from besides keys and their entities: the global defaults,
    /// the configured MCP servers and who has Terms of Service pending.
    async fn policy_context(&self) -> Result<PolicyContext, sqlx::Error> {
        let read = |l: &RwLock<Vec<String>>| l.read().map(|d| d.clone()).unwrap_or_default();
        Ok(PolicyContext {
            default_excluded_models: read(&self.default_excluded_models),
            default_key_limits: self.default_key_limits,
            terms_pending: if self.terms_required {
                crate::terms::pending_users(&self.db).await?
            } else {
                Default::default()
            },
            mcp_servers: read(&self.mcp_servers),
            default_excluded_mcp_servers: read(&self.default_excluded_mcp_servers),
        })
    }

    /// Asks for a rebuild that other control planes need not hear about (a resync, or a change
    /// one of them made and announced).
    fn request_resync(&self) {
        self.dirty.notify_one();
    }

    /// A version larger than any before, also across restarts (it starts from the clock).
    fn next_version(&self) -> u64 {
        let clock = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let mut cur = self.version.load(Ordering::Relaxed);
        loop {
            let next = clock.max(cur + 1);
            match self.version.compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Reads the store and publishes every resource type.
    pub async fn rebuild(&self) -> Result<(), RebuildError> {
        let started = std::time::Instant::now();
        // Taken before the keys are read: a change journaled meanwhile may be in the snapshot
        // too, and the filter applying it twice is harmless; taken after, it could be lost.
        let mark = self.journal.mark();
        let (tokens, keys_read) = self.keys.live_keys(&self.db, now(), EXPIRED_GRACE_SECS).await?;
        let hierarchy = hierarchy(&self.db).await?;
        let context = self.policy_context().await?;
        let inputs = context.inputs(&tokens, &hierarchy);
        let models = self.models();
        let created = i64::try_from(self.models_loaded_at.load(Ordering::Relaxed)).unwrap_or(0);
        let settings = Settings {
            max_body_bytes: self.layout.max_body_bytes,
            output_reservation: self.output_reservation,
            identity_secret: self.identity_secret.read().map(|s| s.clone()).unwrap_or_default(),
            ledger: self.ledger.clone(),
            responses: self.responses.clone(),
        };
        let loaded = started.elapsed();
        let mut snapshot = build_snapshot(0, created, &models, inputs, settings);
        snapshot.journal = Some(mark);
        let built = started.elapsed();
        // Held until published, so concurrent rebuilds cannot publish out of order.
        let mut last = self.last_policy.lock().await;
        let policy = match last.as_ref() {
            Some((prev, encoded)) if *prev == snapshot => encoded.clone(),
            _ => {
                let unversioned = snapshot.clone();
                snapshot.version = self.next_version();
                let encoded = snapshot.encode()?;
                *last = Some((unversioned, encoded.clone()));
                encoded
            }
        };
        let changed = self.cache.publish(BTreeMap::from([
            (type_url::CLUSTER, resources::clusters(&self.layout, &models)),
            (type_url::LISTENER, resources::listeners(&self.layout)),
            (type_url::ROUTE, resources::routes(&models)),
            (type_url::EXTENSION, vec![resources::filter_config(&self.layout, policy)]),
        ]));
        drop(last);
        self.journal.prune(mark.seq);
        if !changed.is_empty() {
            self.published.fetch_add(1, Ordering::Relaxed);
            // The phases of a rebuild, for operators sizing large key tables.
            tracing::info!(
                tokens = tokens.len(),
                ?keys_read,
                models = models.groups.len(),
                ?changed,
                load_ms = loaded.as_millis(),
                build_ms = (built - loaded).as_millis(),
                total_ms = started.elapsed().as_millis(),
                "policy published"
            );
        }
        Ok(())
    }

    /// Rebuilds whenever asked; runs forever.
    pub async fn run_rebuilder(self: Arc<Self>) {
        loop {
            self.dirty.notified().await;
            if !self.snapshot_debounce.is_zero() {
                tokio::time::sleep(self.snapshot_debounce).await;
            }
            let local = self.local_change.swap(false, Ordering::Relaxed);
            match self.rebuild().await {
                Ok(()) if local => self.notify_peers().await,
                Ok(()) => {}
                Err(e) => {
                    // The store may be briefly unavailable; Envoy keeps the last policy meanwhile.
                    tracing::error!(error = %e, "policy rebuild failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if local {
                        self.local_change.store(true, Ordering::Relaxed);
                    }
                    self.request_resync();
                }
            }
        }
    }

    /// Tells the other control planes on the same PostgreSQL that the store changed.
    async fn notify_peers(&self) {
        if let Db::Postgres(pool) = &self.db {
            let sent =
                sqlx::query("SELECT pg_notify($1, $2)").bind(CHANGES_CHANNEL).bind(&self.instance).execute(pool).await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "could not notify other control planes; they will catch up at their next resync");
            }
        }
    }

    /// Rebuilds whenever another control plane on the same PostgreSQL announces a change.
    /// Without PostgreSQL there are no peers and this returns at once.
    pub async fn listen_for_peers(self: Arc<Self>) {
        let Db::Postgres(pool) = &self.db else { return };
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for peer changes; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANGES_CHANNEL).await {
                tracing::warn!(error = %e, "cannot listen for peer changes; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Changes missed while (re)connecting are picked up by this resync.
            self.request_resync();
            loop {
                match listener.recv().await {
                    Ok(n) if n.payload() != self.instance => self.request_resync(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "peer change listener lost; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    /// Asks for a rebuild every `every`; unchanged resources are not pushed again, so this only
    /// costs Envoy anything when the store changed behind our back.
    pub async fn rebuild_periodically(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.request_resync();
        }
    }

    /// Polls the models file and applies valid edits live; an invalid edit is logged and the
    /// previous models stay in force.
    pub async fn watch_models(self: Arc<Self>, every: Duration) {
        let mut last = std::fs::read(&self.models_path).ok();
        loop {
            tokio::time::sleep(every).await;
            let current = std::fs::read(&self.models_path).ok();
            if current == last {
                continue;
            }
            last = current;
            match ModelsConfig::load(&self.models_path) {
                Ok(models) => {
                    tracing::info!(path = %self.models_path.display(), models = models.groups.len(), "models file changed; applying");
                    if let Ok(mut m) = self.models.write() {
                        *m = Arc::new(models);
                    }
                    self.models_loaded_at.store(u64::try_from(now()).unwrap_or(0), Ordering::Relaxed);
                    self.request_resync();
                }
                Err(e) => {
                    tracing::error!(path = %self.models_path.display(), error = %e, "models file is invalid; keeping the previous models");
                }
            }
        }
    }
}

/// What a snapshot is built from, besides the models.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInputs<'a> {
    /// Live keys.
    pub keys: &'a [KeyRow],
    /// Every entity their chains pass through.
    pub hierarchy: &'a Hierarchy,
    /// The global default model exclusions.
    pub default_excluded_models: &'a [String],
    /// Per-key caps for keys whose chain sets none: requests, input, output tokens per minute.
    pub default_key_limits: [Option<u64>; 3],
    /// Users whose keys are refused until they accept the current Terms of Service.
    pub terms_pending: &'a std::collections::HashSet<i64>,
    /// Configured MCP server names, sorted.
    pub mcp_servers: &'a [String],
    /// The global default MCP server exclusions.
    pub default_excluded_mcp_servers: &'a [String],
}

/// The owned part of [`PolicyInputs`], read once per build.
#[derive(Debug, Clone, Default)]
struct PolicyContext {
    default_excluded_models: Vec<String>,
    default_key_limits: [Option<u64>; 3],
    terms_pending: std::collections::HashSet<i64>,
    mcp_servers: Vec<String>,
    default_excluded_mcp_servers: Vec<String>,
}

impl PolicyContext {
    fn inputs<'a>(&'a self, keys: &'a [KeyRow], hierarchy: &'a Hierarchy) -> PolicyInputs<'a> {
        PolicyInputs {
            keys,
            hierarchy,
            default_excluded_models: &self.default_excluded_models,
            default_key_limits: self.default_key_limits,
            terms_pending: &self.terms_pending,
            mcp_servers: &self.mcp_servers,
            default_excluded_mcp_servers: &self.default_excluded_mcp_servers,
        }
    }
}

fn id(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The filter's policy from models and live keys: each key points at a principal carrying its
/// chain's ids and merged exclusions; keys with the same chain and exclusions share one.
pub fn build_snapshot(
    version: u64,
    created: i64,
    models: &ModelsConfig,
    inputs: PolicyInputs<'_>,
    settings: Settings,
) -> PolicySnapshot {
    let specs: Vec<ModelSpec> = models
        .groups
        .iter()
        .map(|g| ModelSpec {
            name: g.name.clone(),
            aliases: g.aliases.clone(),
            provider_model: g.provider_model.clone(),
            authorization: g.api_key.as_ref().map(|k| format!("Bearer {k}")),
            route: resources::model_route_key(g),
            mode: g.mode.clone(),
            request_limit_multiplier: g.request_limit_multiplier,
        })
        .collect();
    // Exclusions may name a model or one of its aliases; the filter checks resolved models.
    let mut model_index: HashMap<&str, u32> = HashMap::new();
    for (i, g) in models.groups.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        model_index.insert(&g.name, i);
        for a in &g.aliases {
            model_index.insert(a, i);
        }
    }
    let mcp_index: HashMap<&str, u32> = inputs
        .mcp_servers
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    let mut principals = Vec::new();
    let mut index: HashMap<PrincipalSpec, u32> = HashMap::new();
    let mut entries = Vec::with_capacity(inputs.keys.len());
    // The principal is a function of the owner and the key's own fields; keys arrive grouped
    // by those, so a run of alike keys (100,000 keys of one user) resolves its chain once.
    let mut previous: Option<(&KeyRow, Option<u32>)> = None;
    for key in inputs.keys {
        let mut digest = [0u8; HASH_LEN];
        if hex::decode_to_slice(&key.key_hash, &mut digest).is_err() {
            tracing::error!(token = key.id, "stored key hash is not 64 hex digits; key left out of the policy");
            continue;
        }
        if let Some((prev, principal)) = previous {
            if prev.user_id == key.user_id
                && prev.service_account_id == key.service_account_id
                && prev.fields == key.fields
            {
                if let Some(p) = principal {
                    entries.push((digest, id(key.id), key.expires_at, p));
                }
                continue;
            }
        }
        previous = Some((key, None));
        // A key whose owner (user or service account) is gone or inactive is left out.
        let Some(chain) = inputs.hierarchy.chain(key) else { continue };
        let mut excluded: Vec<u32> = excluded_models(&chain.levels, inputs.default_excluded_models)
            .into_iter()
            .filter_map(|name| model_index.get(name).copied())
            .collect();
        excluded.sort_unstable();
        excluded.dedup();
        // Exclusions of servers that are not configured (yet) have nothing to exclude.
        let mut excluded_mcp: Vec<u32> = excluded_mcp_servers(&chain.levels, inputs.default_excluded_mcp_servers)
            .into_iter()
            .filter_map(|name| mcp_index.get(name).copied())
            .collect();
        excluded_mcp.sort_unstable();
        let spec = PrincipalSpec {
            user_id: id(chain.user_id),
            service_account_id: chain.service_account_id.map(id),
            team_id: chain.team_id.map(id),
            org_id: chain.org_id.map(id),
            excluded_models: excluded,
            excluded_mcp_servers: excluded_mcp,
            caps: entity_caps(&chain)
                .into_iter()
                .map(|(window, label, limits)| CapSpec { window, label, limits })
                .collect(),
            key_limits: key_limits(&chain, inputs.default_key_limits),
            terms_pending: inputs.terms_pending.contains(&chain.user_id),
        };
        let p = *index.entry(spec.clone()).or_insert_with(|| {
            principals.push(spec);
            u32::try_from(principals.len() - 1).unwrap_or(u32::MAX)
        });
        previous = Some((key, Some(p)));
        entries.push((digest, id(key.id), key.expires_at, p));
    }
    PolicySnapshot {
        version,
        created,
        settings,
        models: specs,
        principals,
        tokens: TokenTable::build(entries),
        mcp_servers: inputs.mcp_servers.to_vec(),
        journal: None,
    }
}
