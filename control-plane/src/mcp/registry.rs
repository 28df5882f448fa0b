//! The MCP server registry: Aqueduct's `mcp.json` (`{"mcpServers": {name: {...}}}`), plus
//! `headers` for upstream credentials (literal values or `os.environ/VAR`).
//!
//! The file is polled and valid edits apply live; an invalid edit is logged and the previous
//! servers stay in force, as with the models file.

use aqueduct_policy::snapshot::valid_mcp_name;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Prefix by which a header value refers to an environment variable, as in the models file.
/// Only the operator's file may use it; the management API refuses it.
pub const ENV_PREFIX: &str = "os.environ/";

/// The only transport Aqueduct (and this gateway) speaks to upstreams.
pub const STREAMABLE_HTTP: &str = "streamable-http";

/// One server entry as written in `mcp.json` (and accepted by the management API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    /// Transport; only `streamable-http`.
    #[serde(rename = "type", default = "streamable_http")]
    pub kind: String,
    /// The upstream's MCP endpoint (`http://…/mcp` or `https://…`).
    pub url: String,
    /// Shown to users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Icon shown in the UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
    /// Headers sent to the upstream with every request (credentials); a value
    /// `os.environ/NAME` is read from the environment when the file is loaded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

fn streamable_http() -> String {
    STREAMABLE_HTTP.to_string()
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct McpFile {
    #[serde(default)]
    mcp_servers: BTreeMap<String, ServerEntry>,
}

/// A checked server, headers resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its name: `/mcp-servers/{name}/mcp`.
    pub name: String,
    /// The entry as configured (header values as written, so secrets from the environment are
    /// never echoed by the API).
    pub entry: ServerEntry,
    /// Headers to send upstream, environment references resolved.
    pub headers: Vec<(String, String)>,
}

/// Why a registry was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("server name {0:?}: use 1 to 64 of A-Z a-z 0-9 _ . - (and no \"__\")")]
    Name(String),
    #[error("server {0:?}: type {1:?} is not supported (only \"streamable-http\")")]
    Kind(String, String),
    #[error("server {0:?}: url {1:?} must be an http:// or https:// URL")]
    Url(String, String),
    #[error("server {0:?}: header {1:?} is not a valid header name or value")]
    Header(String, String),
    #[error("server {0:?}: header {1:?} refers to environment variable {2:?}, which is not set")]
    Env(String, String, String),
}

impl Server {
    /// Checks an entry and resolves its headers with `env`.
    pub fn check(name: &str, entry: ServerEntry, env: &impl Fn(&str) -> Option<String>) -> Result<Self, RegistryError> {
        if !valid_mcp_name(name) {
            return Err(RegistryError::Name(name.to_string()));
        }
        if entry.kind != STREAMABLE_HTTP {
            return Err(RegistryError::Kind(name.to_string(), entry.kind.clone()));
        }
        let url_ok = ["http://", "https://"]
            .iter()
            .any(|s| entry.url.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s)) && entry.url.len() > s.len());
        if !url_ok || reqwest::Url::parse(&entry.url).is_err() {
            return Err(RegistryError::Url(name.to_string(), entry.url.clone()));
        }
        let mut headers = Vec::with_capacity(entry.headers.len());
        for (k, v) in &entry.headers {
            let value = match v.strip_prefix(ENV_PREFIX) {
                Some(var) => env(var).ok_or_else(|| RegistryError::Env(name.into(), k.clone(), var.into()))?,
                None => v.clone(),
            };
            let valid = reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_ok()
                && reqwest::header::HeaderValue::from_str(&value).is_ok();
            if !valid {
                return Err(RegistryError::Header(name.to_string(), k.clone()));
            }
            headers.push((k.to_ascii_lowercase(), value));
        }
        Ok(Self { name: name.to_string(), entry, headers })
    }
}

/// Parses `mcp.json` text; `env` supplies `os.environ/NAME` values.
pub fn parse(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<Vec<Server>, RegistryError> {
    let file: McpFile = serde_json::from_str(text).map_err(|e| RegistryError::Json(e.to_string()))?;
    file.mcp_servers.into_iter().map(|(name, entry)| Server::check(&name, entry, env)).collect()
}

/// Loads a file; a missing file is an empty registry (MCP is optional).
pub fn load(path: &Path) -> Result<Vec<Server>, RegistryError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &|v| std::env::var(v).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(RegistryError::Read(path.display().to_string(), e.to_string())),
    }
}

/// The live set of servers: the file's plus those managed through the management API. The API
/// refuses a name in use; if the file later gains a name the API already has, the API's entry
/// stays in force (it was there first and is the one an admin can see and change).
#[derive(Debug, Default)]
pub struct Registry {
    file: RwLock<Vec<Server>>,
    managed: RwLock<Vec<Server>>,
    merged: RwLock<Arc<HashMap<String, Arc<Server>>>>,
}

impl Registry {
    /// A registry over the file's servers.
    pub fn new(file: Vec<Server>) -> Self {
        let r = Self::default();
        r.set_file(file);
        r
    }

    /// Replaces the file's servers.
    pub fn set_file(&self, servers: Vec<Server>) {
        if let Ok(mut f) = self.file.write() {
            *f = servers;
        }
        self.remerge();
    }

    /// Replaces the API-managed servers.
    pub fn set_managed(&self, servers: Vec<Server>) {
        if let Ok(mut m) = self.managed.write() {
            *m = servers;
        }
        self.remerge();
    }

    fn remerge(&self) {
        let mut all = HashMap::new();
        for source in [&self.file, &self.managed] {
            let list = source.read().map(|l| l.clone()).unwrap_or_else(|e| e.into_inner().clone());
            for s in list {
                all.insert(s.name.clone(), Arc::new(s));
            }
        }
        if let Ok(mut m) = self.merged.write() {
            *m = Arc::new(all);
        }
    }

    /// A server by name.
    pub fn get(&self, name: &str) -> Option<Arc<Server>> {
        self.all().get(name).cloned()
    }

    /// Every server, by name.
    pub fn all(&self) -> Arc<HashMap<String, Arc<Server>>> {
        self.merged.read().map(|m| m.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Every server name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.all().keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether `name` comes from the file (not the API).
    pub fn in_file(&self, name: &str) -> bool {
        self.file.read().map(|f| f.iter().any(|s| s.name == name)).unwrap_or(false)
    }
}

/// The servers managed through the management API. A stored entry that does not check is left
/// out and logged, never fatal; environment references are never resolved for these (an entry
/// stored before the API refused them is left out too).
pub async fn load_managed(db: &crate::db::Db) -> Result<Vec<Server>, sqlx::Error> {
    let rows: Vec<(String, String)> = crate::with_pool!(db, p => sqlx::query_as::<_, (String, String)>(
        "SELECT name, config FROM mcp_servers ORDER BY name",
    )
    .fetch_all(p)
    .await)?;
    let mut out = Vec::with_capacity(rows.len());
    for (name, config) in rows {
        let checked = serde_json::from_str::<ServerEntry>(&config)
            .map_err(|e| RegistryError::Json(e.to_string()))
            .and_then(|entry| Server::check(&name, entry, &|_| None));
        match checked {
            Ok(s) => out.push(s),
            Err(e) => tracing::error!(server = %name, error = %e, "stored MCP server left out"),
        }
    }
    Ok(out)
}

/// Polls `path` and applies valid edits to `registry` live, calling `changed` with the new
/// server names; an invalid edit is logged and the previous servers stay. Runs forever.
pub async fn watch(
    registry: Arc<Registry>,
    path: std::path::PathBuf,
    every: std::time::Duration,
    changed: impl Fn(Vec<String>),
) {
    let mut last = std::fs::read(&path).ok();
    loop {
        tokio::time::sleep(every).await;
        let current = std::fs::read(&path).ok();
        if current == last {
            continue;
        }
        last = current;
        match load(&path) {
            Ok(servers) => {
                tracing::info!(path = %path.display(), servers = servers.len(), "MCP servers file changed; applying");
                registry.set_file(servers);
                changed(registry.names());
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "MCP servers file is invalid; keeping the previous servers");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &str) -> Option<String> {
        (v == "TOKEN").then(|| "secret".to_string())
    }

    #[test]
    fn parses_aqueduct_format_with_headers() {
        let text = r#"{"mcpServers": {
            "everything": {"type": "streamable-http", "url": "http://127.0.0.1:3001/mcp",
                           "description": "demo", "tags": ["a"], "icon_url": "https://x/i.svg",
                           "headers": {"Authorization": "os.environ/TOKEN", "X-Team": "red"}},
            "plain": {"url": "https://mcp.example.com/mcp"}
        }}"#;
        let servers = parse(text, &env).unwrap();
        assert_eq!(servers.len(), 2);
        let e = &servers[0];
        assert_eq!(e.name, "everything");
        assert_eq!(e.headers, vec![("authorization".into(), "secret".into()), ("x-team".into(), "red".into())]);
        assert_eq!(e.entry.headers["Authorization"], "os.environ/TOKEN", "the reference is kept, not the secret");
        assert_eq!(servers[1].entry.kind, STREAMABLE_HTTP);
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        let one = |entry: &str| parse(&format!(r#"{{"mcpServers": {{"s": {entry}}}}}"#), &env).unwrap_err();
        assert!(matches!(one(r#"{"type": "stdio", "url": "http://x/mcp"}"#), RegistryError::Kind(..)));
        assert!(matches!(one(r#"{"url": "ftp://x/mcp"}"#), RegistryError::Url(..)));
        assert!(matches!(one(r#"{"url": "http://"}"#), RegistryError::Url(..)));
        assert!(matches!(one(r#"{"url": "http://x", "headers": {"A": "os.environ/NOPE"}}"#), RegistryError::Env(..)));
        assert!(matches!(one(r#"{"url": "http://x", "headers": {"A B": "v"}}"#), RegistryError::Header(..)));
        assert!(matches!(one(r#"{"url": "http://x", "surprise": 1}"#), RegistryError::Json(..)));
        let bad_name = parse(r#"{"mcpServers": {"a__b": {"url": "http://x"}}}"#, &env).unwrap_err();
        assert!(matches!(bad_name, RegistryError::Name(..)));
    }

    #[test]
    fn api_servers_override_file_servers() {
        let s = |name: &str, url: &str| {
            Server::check(name, ServerEntry { url: url.into(), ..parse_entry() }, &env).unwrap()
        };
        let r = Registry::new(vec![s("a", "http://file/mcp"), s("b", "http://file/mcp")]);
        r.set_managed(vec![s("a", "http://api/mcp")]);
        assert_eq!(r.get("a").unwrap().entry.url, "http://api/mcp");
        assert_eq!(r.names(), ["a", "b"]);
        assert!(r.in_file("b"));
    }

    fn parse_entry() -> ServerEntry {
        serde_json::from_str(r#"{"url": "http://x"}"#).unwrap()
    }

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mcp.json");
        let text = std::fs::read_to_string(path).unwrap();
        let servers = parse(&text, &|_| Some("from-env".to_string())).unwrap();
        assert!(!servers.is_empty());
    }
}
