//! The gateway's live state: models and tokens turned into xDS resources, rebuilt on change.
//!
//! Anything that changes what Envoy should enforce (a key created or revoked, the models file
//! edited) calls [`Gateway::request_rebuild`]; one task coalesces requests, reads the store and
//! publishes to the [`SnapshotCache`], and every connected Envoy gets the changed types.

use crate::config::models::ModelsConfig;
use crate::db::Db;
use crate::tokens::store::{self, LiveToken};
use crate::xds::cache::SnapshotCache;
use crate::xds::resources::{self, Layout};
use crate::xds::server::XdsMetrics;
use crate::xds::type_url;
use aqueduct_policy::snapshot::{ModelSpec, PolicySnapshot, PrincipalSpec, Settings};
use aqueduct_policy::tokens::{TokenTableSpec, HASH_LEN};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

/// Keys expired for less than this stay in the snapshot so the filter answers "expired"
/// rather than "invalid"; older ones are dropped to keep the table small.
pub const EXPIRED_GRACE_SECS: i64 = 7 * 24 * 3600;

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
    /// Policy versions published, for `/api/v1/status`.
    pub published: AtomicU64,
    /// xDS counters, shared with the xDS server.
    pub xds_metrics: Arc<XdsMetrics>,
    /// The last published policy with its version zeroed: an unchanged policy keeps its version
    /// and is not pushed again (each push costs every Envoy VM a re-parse).
    last_policy: tokio::sync::Mutex<Option<(PolicySnapshot, String)>>,
}

/// Failure to rebuild the snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("reading tokens: {0}")]
    Db(#[from] sqlx::Error),
    #[error("serializing policy: {0}")]
    Json(#[from] serde_json::Error),
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
            published: AtomicU64::new(0),
            xds_metrics: Arc::new(XdsMetrics::default()),
            last_policy: tokio::sync::Mutex::new(None),
        }
    }

    /// The current models.
    pub fn models(&self) -> Arc<ModelsConfig> {
        self.models
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Asks the rebuild task for a new snapshot; many requests coalesce into one rebuild.
    pub fn request_rebuild(&self) {
        self.dirty.notify_one();
    }

    /// A version larger than any before, also across restarts (it starts from the clock).
    fn next_version(&self) -> u64 {
        let clock = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let mut cur = self.version.load(Ordering::Relaxed);
        loop {
            let next = clock.max(cur + 1);
            match self
                .version
                .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Reads the store and publishes every resource type.
    pub async fn rebuild(&self) -> Result<(), RebuildError> {
        let tokens = store::live(&self.db, now(), EXPIRED_GRACE_SECS).await?;
        let models = self.models();
        let created = i64::try_from(self.models_loaded_at.load(Ordering::Relaxed)).unwrap_or(0);
        let settings = Settings {
            max_body_bytes: self.layout.max_body_bytes,
        };
        let mut snapshot = build_snapshot(0, created, &models, &tokens, settings);
        // Held until published, so concurrent rebuilds cannot publish out of order.
        let mut last = self.last_policy.lock().await;
        let policy_json = match last.as_ref() {
            Some((prev, json)) if *prev == snapshot => json.clone(),
            _ => {
                let unversioned = snapshot.clone();
                snapshot.version = self.next_version();
                let json = serde_json::to_string(&snapshot)?;
                *last = Some((unversioned, json.clone()));
                json
            }
        };
        let changed = self.cache.publish(BTreeMap::from([
            (
                type_url::CLUSTER,
                resources::clusters(&self.layout, &models),
            ),
            (type_url::LISTENER, resources::listeners(&self.layout)),
            (type_url::ROUTE, resources::routes(&models)),
            (
                type_url::EXTENSION,
                vec![resources::filter_config(&self.layout, policy_json)],
            ),
        ]));
        drop(last);
        if !changed.is_empty() {
            self.published.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                tokens = tokens.len(),
                models = models.groups.len(),
                ?changed,
                "policy published"
            );
        }
        Ok(())
    }

    /// Rebuilds whenever asked; runs forever.
    pub async fn run_rebuilder(self: Arc<Self>) {
        loop {
            self.dirty.notified().await;
            if let Err(e) = self.rebuild().await {
                // The store may be briefly unavailable; Envoy keeps the last policy meanwhile.
                tracing::error!(error = %e, "policy rebuild failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.request_rebuild();
            }
        }
    }

    /// Asks for a rebuild every `every`; unchanged resources are not pushed again, so this only
    /// costs Envoy anything when the store changed behind our back.
    pub async fn rebuild_periodically(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.request_rebuild();
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
                    self.models_loaded_at
                        .store(u64::try_from(now()).unwrap_or(0), Ordering::Relaxed);
                    self.request_rebuild();
                }
                Err(e) => {
                    tracing::error!(path = %self.models_path.display(), error = %e, "models file is invalid; keeping the previous models");
                }
            }
        }
    }
}

/// The filter's policy from models and live tokens.
pub fn build_snapshot(
    version: u64,
    created: i64,
    models: &ModelsConfig,
    tokens: &[LiveToken],
    settings: Settings,
) -> PolicySnapshot {
    let models = models
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
    let mut principals = Vec::new();
    let mut index: HashMap<i64, u32> = HashMap::new();
    let mut entries = Vec::with_capacity(tokens.len());
    for t in tokens {
        let mut digest = [0u8; HASH_LEN];
        if hex::decode_to_slice(&t.key_hash, &mut digest).is_err() {
            tracing::error!(
                token = t.id,
                "stored key hash is not 64 hex digits; key left out of the policy"
            );
            continue;
        }
        let p = *index.entry(t.user_id).or_insert_with(|| {
            principals.push(PrincipalSpec {
                user_id: u64::try_from(t.user_id).unwrap_or(0),
            });
            u32::try_from(principals.len() - 1).unwrap_or(u32::MAX)
        });
        entries.push((digest, u64::try_from(t.id).unwrap_or(0), t.expires_at, p));
    }
    PolicySnapshot {
        version,
        created,
        settings,
        models,
        principals,
        tokens: TokenTableSpec::build(entries),
    }
}
