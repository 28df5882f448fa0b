//! The policy snapshot: everything the filter needs to decide a request, pushed by the control
//! plane as the Wasm plugin configuration (over ECDS) and parsed once per VM.
//!
//! The control plane builds a [`PolicySnapshot`] and serializes it; the filter parses the same
//! type, so what is pushed is exactly what is enforced. [`Policy`] is the checked, indexed form.
//!
//! Two wire forms: JSON (for hand-written configurations; the token table as hex) and the binary
//! form the control plane pushes ([`PolicySnapshot::encode`]): a header, the JSON of everything
//! but the tokens, then the token table's blocks verbatim. At 100,000 tokens the binary form is
//! 3.2 MB (7.4 MB as JSON with full digests), and a VM adopts the blocks without parsing them.

use crate::admission::Cap;
use crate::journal::{JournalDelta, JournalError, JournalMark, Overlay};
use crate::tokens::{
    hash_key, TokenEntry, TokenTable, TokenTableError, EXPIRES_LEN, ID_LEN, PREFIX_LEN, PRINCIPAL_LEN,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Default cap on a request body the filter buffers (32 MiB, enough for audio uploads).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;

/// The wire form of the filter's configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicySnapshot {
    /// Monotonically increasing version; a newer snapshot always has a larger one.
    pub version: u64,
    /// Unix seconds when the model list last changed; reported as each model's `created`.
    #[serde(default)]
    pub created: i64,
    /// Gateway-wide settings.
    #[serde(default)]
    pub settings: Settings,
    /// Models clients may name, with their aliases and upstream routing.
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    /// Who tokens belong to.
    #[serde(default)]
    pub principals: Vec<PrincipalSpec>,
    /// Every live key's hash (in the binary form, carried after the JSON instead).
    #[serde(default)]
    pub tokens: TokenTable,
    /// Names of the configured MCP servers (`/mcp-servers/{name}/mcp`); principals exclude them by
    /// index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<String>,
    /// The control plane's key journal position this snapshot includes: the filter polls the
    /// journal for key changes after it ([`crate::journal`]). None: no journal, snapshots only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalMark>,
}

/// Gateway-wide settings carried in the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Most output tokens reserved for one request at admission (`max_tokens` above this is
    /// reserved as this; a request without `max_tokens` reserves this).
    #[serde(default = "default_output_reservation")]
    pub output_reservation: u64,
    /// Per-deployment secret the filter sends (as [`crate::filter::SECRET_HEADER`]) with the
    /// identity headers it adds on routes to the control plane; the control plane trusts those
    /// headers only when the secret matches. Empty: no identity headers are sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity_secret: String,
    /// Where usage events go.
    #[serde(default)]
    pub ledger: LedgerSettings,
    /// The Responses API's tool policy.
    #[serde(default, skip_serializing_if = "ResponsesSettings::is_default")]
    pub responses: ResponsesSettings,
}

/// What a Responses API create may ask the provider to do on the caller's behalf.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResponsesSettings {
    /// Provider-native tool types a create may use (`web_search`, `code_interpreter`,
    /// `image_generation`, …); empty: all of them. `function` and `custom` tools are always
    /// allowed, `mcp` tools are checked against the gateway's MCP servers and `file_search` is
    /// refused while the gateway has no vector stores, whatever this says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub native_tools: Vec<String>,
}

impl ResponsesSettings {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Delivery of usage events to the control plane.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// Envoy cluster of the control plane; empty: events wait in the queue until one is set.
    #[serde(default)]
    pub cluster: String,
    /// `:authority` of the ingestion call.
    #[serde(default)]
    pub authority: String,
    /// Shared secret the control plane checks on ingestion (sent in
    /// [`crate::ledger::SECRET_HEADER`]).
    #[serde(default)]
    pub secret: String,
    /// Proxies in front of Envoy whose `X-Forwarded-For` entries are trusted (0: the peer
    /// address is the client).
    #[serde(default)]
    pub trusted_hops: u32,
    /// Envoy appends the address that connected to it to `X-Forwarded-For` before the filter
    /// runs (the HTTP connection manager's `use_remote_address: true`, as on the control
    /// plane's own listener). The client address then comes from that header alone, and the
    /// filter asks Envoy for the peer address only when the header is missing (which shows
    /// Envoy did not append). Off: the peer address is asked for on every API request.
    #[serde(default)]
    pub peer_in_xff: bool,
    /// Most bytes of events one Envoy worker holds while the control plane is away; beyond
    /// that new events are dropped and counted.
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: u64,
}

/// Default [`LedgerSettings::queue_bytes`]: 64 MiB, some 150,000 events.
pub const DEFAULT_QUEUE_BYTES: u64 = 64 << 20;

fn default_queue_bytes() -> u64 {
    DEFAULT_QUEUE_BYTES
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            cluster: String::new(),
            authority: String::new(),
            secret: String::new(),
            trusted_hops: 0,
            peer_in_xff: false,
            queue_bytes: DEFAULT_QUEUE_BYTES,
        }
    }
}

/// Default [`Settings::output_reservation`].
pub const DEFAULT_OUTPUT_RESERVATION: u64 = 4096;

fn default_output_reservation() -> u64 {
    DEFAULT_OUTPUT_RESERVATION
}

fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            output_reservation: DEFAULT_OUTPUT_RESERVATION,
            identity_secret: String::new(),
            ledger: LedgerSettings::default(),
            responses: ResponsesSettings::default(),
        }
    }
}

/// One model as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The name clients send and `/v1/models` lists.
    pub name: String,
    /// Other names that resolve to this model; not listed by `/v1/models`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The model name the provider expects, written into the forwarded body.
    pub provider_model: String,
    /// Value of the `Authorization` header sent upstream (`Bearer <provider key>`); none is sent
    /// when absent. The client's own key is never forwarded.
    #[serde(default)]
    pub authorization: Option<String>,
    /// Value of the routing header that selects this model's route in Envoy.
    pub route: String,
    /// LiteLLM `mode` (`chat`, `embedding`, ...), informational.
    #[serde(default)]
    pub mode: Option<String>,
    /// A request costs `1 / request_limit_multiplier` of a request-per-minute limit.
    #[serde(default = "one")]
    pub request_limit_multiplier: f64,
}

fn one() -> f64 {
    1.0
}

/// Who a set of tokens acts for, and what they may not use. Tokens with the same chain and the
/// same effective exclusions share one principal.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSpec {
    /// The user the tokens belong to (for a service account's key, its owner).
    pub user_id: u64,
    /// The service account, for its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_id: Option<u64>,
    /// The service account's team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<u64>,
    /// The org of the user or team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<u64>,
    /// Indices into the snapshot's `models` this principal may not use (exclusions already
    /// merged down the chain and aliases resolved by the control plane), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_models: Vec<u32>,
    /// Indices into the snapshot's `mcp_servers` this principal may not use (merged down the
    /// chain by the control plane), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_mcp_servers: Vec<u32>,
    /// Aggregate caps of the entities above the key (user or service account, team, org).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<CapSpec>,
    /// Caps on each key of this principal: requests, input tokens, output tokens per minute
    /// (inherited along the chain and combined with the token's own caps).
    #[serde(default, skip_serializing_if = "no_limits")]
    pub key_limits: [Option<u64>; 3],
    /// The user (for a service-account key, its owner) has not accepted the current Terms of
    /// Service while they are required: every API call with these keys is refused (403).
    #[serde(default, skip_serializing_if = "is_false")]
    pub terms_pending: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn no_limits(l: &[Option<u64>; 3]) -> bool {
    l.iter().all(Option::is_none)
}

/// An aggregate cap: all traffic of one entity, counted in one shared window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct CapSpec {
    /// Window name, unique per entity (`o.3`, `t.7`, `u.12`, `s.4`).
    pub window: String,
    /// What the cap belongs to, for 429 messages (`org 3`).
    pub label: String,
    /// Requests, input tokens, output tokens per minute.
    pub limits: [Option<u64>; 3],
}

/// Why a snapshot was refused. A refused snapshot is NACKed and Envoy keeps the last good one.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("policy is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid token table: {0}")]
    Tokens(#[from] TokenTableError),
    #[error("model name or alias {0:?} is defined twice")]
    DuplicateName(String),
    #[error("model {0:?} has request_limit_multiplier {1}, which is not a positive number")]
    Multiplier(String, f64),
    #[error("max_body_bytes must be positive")]
    MaxBody,
    #[error("principal {0} excludes model index {1}, which does not exist")]
    ExcludedModel(usize, u32),
    #[error("principal {0} excludes MCP server index {1}, which does not exist")]
    ExcludedMcpServer(usize, u32),
    #[error("MCP server name {0:?} is empty, repeated or has characters other than A-Z a-z 0-9 _ . -")]
    McpServerName(String),
    #[error("binary policy is malformed: {0}")]
    Binary(&'static str),
}

/// First bytes of the binary form (never the start of JSON text).
pub const BINARY_MAGIC: [u8; 4] = *b"AQ\x00\x02";
/// Header of the binary form: magic, JSON length (u32 LE), token count (u32 LE).
pub const BINARY_HEADER_LEN: usize = 12;
/// Bytes per token in the binary form.
const TOKEN_LEN: usize = PREFIX_LEN + ID_LEN + EXPIRES_LEN + PRINCIPAL_LEN;

/// Everything of a snapshot but its tokens, borrowed, for the JSON part of the binary form.
#[derive(Serialize)]
struct Head<'a> {
    version: u64,
    created: i64,
    settings: &'a Settings,
    models: &'a [ModelSpec],
    principals: &'a [PrincipalSpec],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    mcp_servers: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    journal: Option<JournalMark>,
}

impl PolicySnapshot {
    /// The binary form: [`BINARY_MAGIC`], JSON length and token count (u32 LE each), the JSON of
    /// everything but the tokens, then the token blocks (digests, ids, expiries, principals).
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        let head = serde_json::to_vec(&Head {
            version: self.version,
            created: self.created,
            settings: &self.settings,
            models: &self.models,
            principals: &self.principals,
            mcp_servers: &self.mcp_servers,
            journal: self.journal,
        })?;
        let too_large = || SnapshotError::Binary("policy larger than 4 GiB");
        let json_len = u32::try_from(head.len()).map_err(|_| too_large())?;
        let count = u32::try_from(self.tokens.len()).map_err(|_| too_large())?;
        let blocks = self.tokens.blocks();
        let mut out = Vec::with_capacity(BINARY_HEADER_LEN + head.len() + self.tokens.len() * TOKEN_LEN);
        out.extend_from_slice(&BINARY_MAGIC);
        out.extend_from_slice(&json_len.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&head);
        for block in blocks {
            out.extend_from_slice(block);
        }
        Ok(out)
    }
}

/// A checked snapshot, indexed for lookups on the request path.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Snapshot version.
    pub version: u64,
    /// See [`PolicySnapshot::created`].
    pub created: i64,
    /// See [`Settings`].
    pub settings: Settings,
    /// Models in snapshot order.
    pub models: Vec<ModelSpec>,
    /// MCP server names in snapshot order.
    pub mcp_servers: Vec<String>,
    /// See [`PolicySnapshot::journal`].
    pub journal: Option<JournalMark>,
    /// Principals by index (the snapshot's; the overlay's are numbered after them). Shared:
    /// applying key changes makes a new `Policy` without copying the big parts.
    principals: Arc<Vec<PrincipalSpec>>,
    /// The token table.
    tokens: Arc<TokenTable>,
    by_name: HashMap<String, usize>,
    mcp_by_name: HashMap<String, usize>,
    models_list_body: Vec<u8>,
    /// Per principal, its entities' caps with their shared-data keys, built once here rather
    /// than formatted on every request.
    entity_caps: Arc<Vec<Vec<Cap>>>,
    /// Key changes since the snapshot, from the journal.
    overlay: Overlay,
    /// Entity caps of the overlay's principals.
    overlay_caps: Vec<Vec<Cap>>,
}

impl Policy {
    /// Parses and checks the plugin configuration bytes (JSON form).
    pub fn from_json(bytes: &[u8]) -> Result<Self, SnapshotError> {
        Self::from_snapshot(serde_json::from_slice(bytes)?)
    }

    /// Parses and checks a configuration in either form.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        Self::decode_with(bytes.len(), |start, len| bytes.get(start..start.checked_add(len)?).map(<[u8]>::to_vec))
    }

    /// Parses and checks a configuration of `total` bytes in either form, reading it in pieces
    /// through `read(start, len)`: a Wasm VM copies each token block straight into the table it
    /// keeps, so loading needs no second copy of the configuration.
    pub fn decode_with(
        total: usize,
        mut read: impl FnMut(usize, usize) -> Option<Vec<u8>>,
    ) -> Result<Self, SnapshotError> {
        let truncated = SnapshotError::Binary("shorter than its header says");
        let mut exact = |start: usize, len: usize| match read(start, len) {
            // An empty table has empty blocks, which a proxy may not hand out at all.
            _ if len == 0 => Ok(Vec::new()),
            Some(v) if v.len() == len => Ok(v),
            _ => Err(SnapshotError::Binary("shorter than its header says")),
        };
        let head = if total >= BINARY_HEADER_LEN { exact(0, BINARY_HEADER_LEN)? } else { Vec::new() };
        if head.get(..4) != Some(BINARY_MAGIC.as_slice()) {
            return Self::from_json(&exact(0, total)?);
        }
        let u32_at = |i: usize| head.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
        let (Some(json_len), Some(count)) = (u32_at(4), u32_at(8)) else { return Err(truncated) };
        let (json_len, count) = (json_len as usize, count as usize);
        let expected = count
            .checked_mul(TOKEN_LEN)
            .and_then(|t| t.checked_add(json_len))
            .and_then(|t| t.checked_add(BINARY_HEADER_LEN));
        if expected != Some(total) {
            return Err(SnapshotError::Binary("length does not match its header"));
        }
        let mut snapshot: PolicySnapshot = serde_json::from_slice(&exact(BINARY_HEADER_LEN, json_len)?)?;
        if !snapshot.tokens.is_empty() {
            return Err(SnapshotError::Binary("tokens given twice"));
        }
        let mut at = BINARY_HEADER_LEN + json_len;
        let mut block = |width: usize| {
            let b = exact(at, count * width);
            at += count * width;
            b
        };
        let (hashes, ids, expires, principals) =
            (block(PREFIX_LEN)?, block(ID_LEN)?, block(EXPIRES_LEN)?, block(PRINCIPAL_LEN)?);
        snapshot.tokens = TokenTable::from_blocks(hashes, ids, expires, principals)?;
        Self::from_snapshot(snapshot)
    }

    /// Checks and indexes a snapshot.
    pub fn from_snapshot(s: PolicySnapshot) -> Result<Self, SnapshotError> {
        if s.settings.max_body_bytes == 0 {
            return Err(SnapshotError::MaxBody);
        }
        let mut by_name = HashMap::with_capacity(s.models.len() * 2);
        for (i, m) in s.models.iter().enumerate() {
            if !(m.request_limit_multiplier.is_finite() && m.request_limit_multiplier > 0.0) {
                return Err(SnapshotError::Multiplier(m.name.clone(), m.request_limit_multiplier));
            }
            for name in std::iter::once(&m.name).chain(m.aliases.iter()) {
                if by_name.insert(name.clone(), i).is_some() {
                    return Err(SnapshotError::DuplicateName(name.clone()));
                }
            }
        }
        for (i, p) in s.principals.iter().enumerate() {
            if let Some(m) = p.excluded_models.iter().find(|m| **m as usize >= s.models.len()) {
                return Err(SnapshotError::ExcludedModel(i, *m));
            }
        }
        let mut mcp_by_name = HashMap::with_capacity(s.mcp_servers.len());
        for (i, name) in s.mcp_servers.iter().enumerate() {
            if !valid_mcp_name(name) || mcp_by_name.insert(name.clone(), i).is_some() {
                return Err(SnapshotError::McpServerName(name.clone()));
            }
        }
        for (i, p) in s.principals.iter().enumerate() {
            if let Some(m) = p.excluded_mcp_servers.iter().find(|m| **m as usize >= s.mcp_servers.len()) {
                return Err(SnapshotError::ExcludedMcpServer(i, *m));
            }
        }
        s.tokens.check_principals(s.principals.len())?;
        let models_list_body = models_list(&s.models, s.created);
        let entity_caps = s.principals.iter().map(caps_of).collect();
        Ok(Self {
            version: s.version,
            created: s.created,
            settings: s.settings,
            models: s.models,
            mcp_servers: s.mcp_servers,
            journal: s.journal,
            principals: Arc::new(s.principals),
            tokens: Arc::new(s.tokens),
            by_name,
            mcp_by_name,
            models_list_body,
            entity_caps: Arc::new(entity_caps),
            overlay: Overlay::default(),
            overlay_caps: Vec::new(),
        })
    }

    /// This policy with the key changes of a journal answer (replacing any applied before).
    /// Refused when the answer is for another journal or does not fit the snapshot; the policy
    /// then stays as it was until the next snapshot.
    pub fn with_changes(&self, delta: &JournalDelta) -> Result<Self, JournalError> {
        let mark = self.journal.ok_or(JournalError::NoJournal)?;
        let overlay = Overlay::build(self, mark, delta)?;
        let overlay_caps = overlay.principals.iter().map(caps_of).collect();
        Ok(Self { overlay, overlay_caps, ..self.clone() })
    }

    /// The key changes applied.
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// The snapshot's token table (without the overlay's changes).
    pub fn token_table(&self) -> &TokenTable {
        &self.tokens
    }

    /// The token whose plaintext key is `key`: the overlay's changes first, then the snapshot's
    /// table, whose entries the overlay may have retired.
    pub fn find_key(&self, key: &str) -> Option<TokenEntry> {
        let digest = hash_key(key);
        if self.overlay.is_empty() {
            return self.tokens.find_hash(&digest);
        }
        if let Some(e) = self.overlay.live(&digest) {
            return Some(e);
        }
        self.tokens.find_hash(&digest).filter(|e| !self.overlay.hides(e.id))
    }

    /// The principal at `index` (the snapshot's, then the overlay's).
    pub fn principal(&self, index: u32) -> Option<&PrincipalSpec> {
        let i = index as usize;
        self.principals.get(i).or_else(|| self.overlay.principals.get(i - self.principals.len()))
    }

    /// The snapshot's principals.
    pub fn principals(&self) -> &[PrincipalSpec] {
        &self.principals
    }

    /// The caps of the entities above `principal`'s keys (user or service account, team, org).
    pub fn entity_caps(&self, principal: u32) -> &[Cap] {
        let i = principal as usize;
        self.entity_caps.get(i).or_else(|| self.overlay_caps.get(i - self.entity_caps.len())).map_or(&[], Vec::as_slice)
    }

    /// Index of an MCP server by name.
    pub fn mcp_server_index(&self, name: &str) -> Option<usize> {
        self.mcp_by_name.get(name).copied()
    }

    /// Whether `principal` may use the MCP server at `index`.
    pub fn allows_mcp(&self, principal: u32, index: usize) -> bool {
        self.principal(principal)
            .is_some_and(|p| u32::try_from(index).is_ok_and(|i| p.excluded_mcp_servers.binary_search(&i).is_err()))
    }

    /// Resolves a model name or alias.
    pub fn model(&self, name_or_alias: &str) -> Option<&ModelSpec> {
        self.model_index(name_or_alias).and_then(|i| self.models.get(i))
    }

    /// Index of a model by name or alias.
    pub fn model_index(&self, name_or_alias: &str) -> Option<usize> {
        self.by_name.get(name_or_alias).copied()
    }

    /// Whether `principal` may use the model at `index`.
    pub fn allows(&self, principal: u32, index: usize) -> bool {
        self.principal(principal)
            .is_some_and(|p| u32::try_from(index).is_ok_and(|i| p.excluded_models.binary_search(&i).is_err()))
    }

    /// The `GET /v1/models` body for `principal`: only the models it may use. Principals
    /// without exclusions share one body rendered with the snapshot.
    pub fn models_list_body(&self, principal: u32) -> std::borrow::Cow<'_, [u8]> {
        match self.principal(principal) {
            Some(p) if p.excluded_models.is_empty() => std::borrow::Cow::Borrowed(&self.models_list_body),
            Some(_) => {
                let allowed: Vec<ModelSpec> = (0..self.models.len())
                    .filter(|i| self.allows(principal, *i))
                    .filter_map(|i| self.models.get(i).cloned())
                    .collect();
                std::borrow::Cow::Owned(models_list(&allowed, self.created))
            }
            None => std::borrow::Cow::Owned(models_list(&[], self.created)),
        }
    }
}

impl crate::journal::Base for Policy {
    fn find_principal(&self, spec: &PrincipalSpec) -> Option<u32> {
        // Linear, but only when a journal answer arrives, not per request.
        self.principals.iter().position(|p| p == spec).and_then(|i| u32::try_from(i).ok())
    }

    fn principal_count(&self) -> usize {
        self.principals.len()
    }

    fn fits(&self, spec: &PrincipalSpec) -> bool {
        spec.excluded_models.iter().all(|m| (*m as usize) < self.models.len())
            && spec.excluded_mcp_servers.iter().all(|m| (*m as usize) < self.mcp_servers.len())
    }
}

/// A principal's entity caps with their shared-data keys.
fn caps_of(p: &PrincipalSpec) -> Vec<Cap> {
    p.caps
        .iter()
        .map(|c| Cap {
            key: format!("{}{}", crate::admission::KEY_PREFIX, c.window).into(),
            label: c.label.as_str().into(),
            limits: c.limits.into(),
        })
        .collect()
}

/// Whether `name` may name an MCP server: it appears in paths, in the comma-separated
/// exclusion header and, on the aggregated endpoint, in `{server}__{tool}` names.
pub fn valid_mcp_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.contains("__")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    owned_by: &'static str,
}

fn models_list(models: &[ModelSpec], created: i64) -> Vec<u8> {
    let list = ModelList {
        object: "list",
        data: models
            .iter()
            .map(|m| ModelObject { id: &m.name, object: "model", created, owned_by: "aqueduct" })
            .collect(),
    };
    serde_json::to_vec(&list).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::hash_key;

    pub(crate) fn model(name: &str, aliases: &[&str]) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            provider_model: format!("p-{name}"),
            authorization: Some("Bearer provider".into()),
            route: name.into(),
            mode: None,
            request_limit_multiplier: 1.0,
        }
    }

    fn snapshot(models: Vec<ModelSpec>) -> PolicySnapshot {
        PolicySnapshot {
            version: 1,
            created: 1_700_000_000,
            settings: Settings::default(),
            models,
            principals: vec![PrincipalSpec { user_id: 1, ..Default::default() }],
            tokens: TokenTable::build(vec![(hash_key("sk-a"), 1, None, 0)]),
            mcp_servers: vec![],
            journal: None,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let s = snapshot(vec![model("m", &["alias"])]);
        let json = serde_json::to_vec(&s).unwrap();
        let p = Policy::from_json(&json).unwrap();
        assert_eq!(p.model("alias").unwrap().name, "m");
        assert_eq!(p.model("m").unwrap().provider_model, "p-m");
        assert!(p.model("p-m").is_none());
        assert_eq!(p.find_key("sk-a").unwrap().id, 1);
        let list: serde_json::Value = serde_json::from_slice(&p.models_list_body(0)).unwrap();
        assert_eq!(list["data"][0]["id"], "m");
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn refuses_duplicate_names_and_bad_multipliers() {
        let s = snapshot(vec![model("m", &[]), model("n", &["m"])]);
        assert!(matches!(Policy::from_snapshot(s), Err(SnapshotError::DuplicateName(n)) if n == "m"));
        let mut bad = model("m", &[]);
        bad.request_limit_multiplier = 0.0;
        assert!(matches!(Policy::from_snapshot(snapshot(vec![bad])), Err(SnapshotError::Multiplier(..))));
    }

    #[test]
    fn binary_form_round_trips_and_reads_in_pieces() {
        let mut s = snapshot(vec![model("m", &["alias"])]);
        s.tokens = TokenTable::build((0..50).map(|i| (hash_key(&format!("sk-{i}")), i, Some(i as i64), 0)).collect());
        let bin = s.encode().unwrap();
        assert_eq!(bin[..4], BINARY_MAGIC);
        let p = Policy::decode(&bin).unwrap();
        assert_eq!(*p.token_table(), s.tokens);
        assert_eq!(p.find_key("sk-7").unwrap().expires_at, Some(7));
        assert_eq!(p.model("alias").unwrap().name, "m");
        // Read as a VM does, piece by piece: header, JSON, then each block once.
        let mut reads = Vec::new();
        let q = Policy::decode_with(bin.len(), |start, len| {
            reads.push((start, len));
            bin.get(start..start + len).map(<[u8]>::to_vec)
        })
        .unwrap();
        assert_eq!(*q.token_table(), s.tokens);
        assert_eq!(reads.len(), 6, "{reads:?}");
        // The JSON form still loads, through the same entry point.
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(*Policy::decode(&json).unwrap().token_table(), s.tokens);
    }

    #[test]
    fn refuses_malformed_binary_forms() {
        let mut s = snapshot(vec![model("m", &[])]);
        s.tokens = TokenTable::build(vec![(hash_key("a"), 1, None, 0), (hash_key("b"), 2, None, 0)]);
        let bin = s.encode().unwrap();
        let binary_err = |b: &[u8]| matches!(Policy::decode(b), Err(SnapshotError::Binary(_)));
        assert!(binary_err(&bin[..bin.len() - 1]), "truncated");
        assert!(binary_err(&[bin.as_slice(), b"x"].concat()), "trailing bytes");
        // A header that claims more tokens than follow.
        let mut lying = bin.clone();
        lying[8] = 3;
        assert!(binary_err(&lying));
        // A token naming a principal that does not exist.
        let mut bad = bin.clone();
        let last = bad.len() - 4;
        bad[last] = 9;
        assert!(matches!(Policy::decode(&bad), Err(SnapshotError::Tokens(TokenTableError::Principal(1, 9)))));
        // Tokens in the JSON part as well as after it.
        let json = serde_json::to_vec(&s).unwrap();
        let mut twice = BINARY_MAGIC.to_vec();
        twice.extend_from_slice(&u32::try_from(json.len()).unwrap().to_le_bytes());
        twice.extend_from_slice(&0u32.to_le_bytes());
        twice.extend_from_slice(&json);
        assert!(binary_err(&twice));
        // Unsorted digests.
        let h = BINARY_HEADER_LEN + u32::from_le_bytes(bin[4..8].try_into().unwrap()) as usize;
        let mut unsorted = bin.clone();
        unsorted[h..h + 2 * PREFIX_LEN].rotate_left(PREFIX_LEN);
        assert!(matches!(Policy::decode(&unsorted), Err(SnapshotError::Tokens(TokenTableError::Unsorted(1)))));
        assert!(Policy::decode(b"").is_err());
    }

    #[test]
    fn refuses_unknown_fields_and_garbage() {
        assert!(Policy::from_json(br#"{"version":1,"surprise":true}"#).is_err());
        assert!(Policy::from_json(b"not json").is_err());
        assert!(Policy::from_json(br#"{"version":1}"#).is_ok());
    }
}

#[cfg(test)]
mod exclusion_tests {
    use super::*;

    #[test]
    fn refuses_exclusions_of_missing_models() {
        let s = PolicySnapshot {
            version: 1,
            created: 0,
            settings: Settings::default(),
            models: vec![],
            principals: vec![PrincipalSpec { user_id: 1, excluded_models: vec![3], ..Default::default() }],
            tokens: TokenTable::default(),
            mcp_servers: vec![],
            journal: None,
        };
        assert!(matches!(Policy::from_snapshot(s), Err(SnapshotError::ExcludedModel(0, 3))));
    }
}

#[cfg(test)]
mod mcp_tests {
    use super::*;

    fn snapshot(servers: &[&str], excluded: Vec<u32>) -> PolicySnapshot {
        PolicySnapshot {
            version: 1,
            created: 0,
            settings: Settings::default(),
            models: vec![],
            principals: vec![PrincipalSpec { user_id: 1, excluded_mcp_servers: excluded, ..Default::default() }],
            tokens: TokenTable::default(),
            mcp_servers: servers.iter().map(|s| s.to_string()).collect(),
            journal: None,
        }
    }

    #[test]
    fn indexes_mcp_servers_and_exclusions() {
        let p = Policy::from_snapshot(snapshot(&["a", "b-2"], vec![1])).unwrap();
        assert_eq!(p.mcp_server_index("b-2"), Some(1));
        assert_eq!(p.mcp_server_index("c"), None);
        assert!(p.allows_mcp(0, 0));
        assert!(!p.allows_mcp(0, 1));
        assert!(!p.allows_mcp(7, 0));
    }

    #[test]
    fn refuses_bad_mcp_names_and_exclusions() {
        for bad in ["", "a,b", "a__b", "a/b", "a b"] {
            assert!(matches!(Policy::from_snapshot(snapshot(&[bad], vec![])), Err(SnapshotError::McpServerName(_))));
        }
        assert!(matches!(Policy::from_snapshot(snapshot(&["a", "a"], vec![])), Err(SnapshotError::McpServerName(_))));
        assert!(matches!(
            Policy::from_snapshot(snapshot(&["a"], vec![1])),
            Err(SnapshotError::ExcludedMcpServer(0, 1))
        ));
    }
}
