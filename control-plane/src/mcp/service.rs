//! The MCP registry service: MCP servers managed through the management API, stored in the
//! database next to the file's (an API entry may not reuse a file entry's name; the file is
//! edited as a file). Anyone may list them; only admins change them. Header values are never
//! shown: a literal may be a credential; `os.environ/VAR` references (file entries only) are
//! shown as written.
//!
//! An API entry may not use `os.environ/VAR`: the environment is the operator's (it holds the
//! admin key and password), and an API caller could otherwise send any variable to a URL of
//! its choosing, or learn from the answer which variables are set. Environment references are
//! for the operator's MCP servers file only.

use super::registry::{load_managed, Server, ServerEntry, ENV_PREFIX};
use crate::audit::{self, Action};
use crate::auth::Authed;
use crate::domain::input::{bad, conflict, not_found, unique_or, Fields, Input, Parsed};
use crate::domain::{Error, List};
use crate::gateway::{now, Gateway};
use crate::tenancy::store::{Sql, Tx, Val};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// An MCP server as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct McpServer {
    /// Its name.
    pub name: String,
    /// Transport: `streamable-http`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Shown to users.
    pub description: Option<String>,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// Icon shown in the UI.
    pub icon_url: Option<String>,
    /// The gateway path an MCP client uses for this server alone.
    pub endpoint: String,
    /// `file` (the operator's MCP servers file) or `api`.
    pub source: String,
    /// The upstream's URL (admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Header names sent upstream, values hidden as `(set)` (admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

fn view(s: &Server, source: &str, admin: bool) -> McpServer {
    McpServer {
        name: s.name.clone(),
        kind: s.entry.kind.clone(),
        description: s.entry.description.clone(),
        tags: s.entry.tags.clone(),
        icon_url: s.entry.icon_url.clone(),
        endpoint: format!("/mcp-servers/{}/mcp", s.name),
        source: source.to_string(),
        url: admin.then(|| s.entry.url.clone()),
        headers: admin.then(|| {
            s.entry
                .headers
                .iter()
                .map(|(k, val)| {
                    let shown = if val.starts_with("os.environ/") { val.clone() } else { "(set)".to_string() };
                    (k.clone(), shown)
                })
                .collect()
        }),
    }
}

/// A new MCP server: its name and entry.
#[derive(Debug, Clone, ToSchema)]
pub struct NewMcpServer {
    /// 1 to 64 of A-Z a-z 0-9 _ . - (and no `__`).
    pub name: String,
    /// The entry.
    #[serde(flatten)]
    #[schema(inline)]
    pub entry: ServerEntry,
}

impl Input for NewMcpServer {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        let name = f.req_str("name", 64)?;
        let server = checked(&name, Value::Object(f.rest()))?;
        Ok(Self { name, entry: server.entry })
    }
}

/// An MCP server's new entry (its name is in the path).
#[derive(Debug, Clone, ToSchema)]
pub struct McpServerEntry {
    /// The entry.
    #[serde(flatten)]
    #[schema(inline)]
    pub entry: ServerEntry,
}

impl Input for McpServerEntry {
    fn take(f: &mut Fields) -> Result<Self, Error> {
        let map = f.rest();
        let entry: ServerEntry =
            serde_json::from_value(Value::Object(map)).map_err(|e| bad("body", format!("Invalid MCP server: {e}.")))?;
        if let Some(header) = env_reference(&entry) {
            return Err(env_refused(header));
        }
        Ok(Self { entry })
    }
}

fn source(gw: &Gateway, name: &str) -> &'static str {
    if gw.mcp_registry.in_file(name) {
        "file"
    } else {
        "api"
    }
}

/// Reads the API-managed servers again and applies them (and their names to the policy).
pub async fn reload(gw: &Gateway) -> Result<(), sqlx::Error> {
    let before = gw.mcp_registry.names();
    gw.mcp_registry.set_managed(load_managed(&gw.db).await?);
    let after = gw.mcp_registry.names();
    if after != before {
        gw.set_mcp_servers(after);
    }
    Ok(())
}

/// Every configured server (file and API), by name; URLs and headers for admins only.
pub async fn list(gw: &Gateway, a: &Authed) -> Result<List<McpServer>, Error> {
    let all = gw.mcp_registry.all();
    let data: Vec<McpServer> = gw
        .mcp_registry
        .names()
        .iter()
        .filter_map(|n| all.get(n))
        .map(|s| view(s, source(gw, &s.name), a.is_admin()))
        .collect();
    Ok(List { object: "list", data, has_more: false })
}

/// One server.
pub async fn get(gw: &Gateway, a: &Authed, name: &str) -> Result<McpServer, Error> {
    let s = gw.mcp_registry.get(name).ok_or_else(|| not_found("MCP server", name))?;
    Ok(view(&s, source(gw, name), a.is_admin()))
}

fn env_refused(header: &str) -> Error {
    bad(
        &format!("headers.{header}"),
        format!(
            "Header '{header}' refers to the environment (os.environ/…); environment references are allowed \
             only in the operator's MCP servers file, not through the API."
        ),
    )
}

/// Checks an entry under `name`; the 400 names the field at fault.
fn check(name: &str, entry: ServerEntry) -> Result<Server, Error> {
    Server::check(name, entry, &|_| None).map_err(|e| {
        use super::registry::RegistryError as R;
        let param = match &e {
            R::Name(_) => "name",
            R::Kind(..) => "type",
            R::Url(..) => "url",
            R::Header(..) | R::Env(..) => "headers",
            R::Read(..) | R::Json(_) => "body",
        };
        bad(param, e.to_string())
    })
}

/// Checks a body as a server entry. A header that refers to the environment is refused before
/// anything looks the variable up: the answer is the same whether or not it is set.
fn checked(name: &str, body: Value) -> Result<Server, Error> {
    let entry: ServerEntry =
        serde_json::from_value(body).map_err(|e| bad("body", format!("Invalid MCP server: {e}.")))?;
    if let Some(header) = env_reference(&entry) {
        return Err(env_refused(header));
    }
    check(name, entry)
}

/// The first header (by name) whose name or value uses an `os.environ/` reference, in any case
/// and with any surrounding space.
fn env_reference(entry: &ServerEntry) -> Option<&str> {
    let uses = |s: &str| s.trim().to_ascii_lowercase().contains(ENV_PREFIX);
    entry.headers.iter().find(|(k, v)| uses(k) || uses(v)).map(|(k, _)| k.as_str())
}

async fn commit(
    tx: Tx,
    a: &Authed,
    action: Action<'_>,
    before: Option<&McpServer>,
    after: Option<&McpServer>,
) -> Result<(), Error> {
    Ok(audit::commit(tx, a, action, before.and_then(audit::state), after.and_then(audit::state)).await?)
}

/// Adds a server (admin); it is served at once.
pub async fn create(gw: &Gateway, a: &Authed, input: Parsed<NewMcpServer>) -> Result<McpServer, Error> {
    a.require_admin()?;
    let NewMcpServer { name, entry } = input?;
    let server = check(&name, entry)?;
    if gw.mcp_registry.get(&name).is_some() {
        return Err(conflict("name", format!("An MCP server named '{name}' exists.")));
    }
    let config = serde_json::to_string(&server.entry).map_err(|e| bad("body", e.to_string()))?;
    let now = now();
    let mut tx = Tx::begin(&gw.db).await?;
    let mut q = Sql::new("INSERT INTO mcp_servers (name, config, created_at, updated_at) VALUES (");
    q.arg(Val::Text(name.clone()))
        .push(", ")
        .arg(Val::Text(config))
        .push(", ")
        .arg(Val::Int(Some(now)))
        .push(", ")
        .arg(Val::Int(Some(now)))
        .push(")");
    tx.execute(&q).await.map_err(|e| unique_or(e, "name", "An MCP server with this name exists."))?;
    let v = view(&server, "api", true);
    commit(tx, a, Action { method: "POST", path: "/api/v1/mcp-servers", status: 201 }, None, Some(&v)).await?;
    reload(gw).await?;
    Ok(v)
}

/// Replaces an API-managed server's entry (admin).
pub async fn replace(gw: &Gateway, a: &Authed, name: &str, input: Parsed<McpServerEntry>) -> Result<McpServer, Error> {
    a.require_admin()?;
    managed_only(gw, name)?;
    let McpServerEntry { entry } = input?;
    let server = check(name, entry)?;
    let config = serde_json::to_string(&server.entry).map_err(|e| bad("body", e.to_string()))?;
    let before = gw.mcp_registry.get(name).map(|s| view(&s, "api", true));
    let mut tx = Tx::begin(&gw.db).await?;
    let mut q = Sql::new("UPDATE mcp_servers SET config = ");
    q.arg(Val::Text(config))
        .push(", updated_at = ")
        .arg(Val::Int(Some(now())))
        .push(" WHERE name = ")
        .arg(Val::Text(name.to_string()));
    if tx.execute(&q).await? == 0 {
        return Err(not_found("MCP server", name));
    }
    let v = view(&server, "api", true);
    let path = format!("/api/v1/mcp-servers/{name}");
    commit(tx, a, Action { method: "PUT", path: &path, status: 200 }, before.as_ref(), Some(&v)).await?;
    reload(gw).await?;
    Ok(v)
}

/// Removes an API-managed server (admin).
pub async fn delete(gw: &Gateway, a: &Authed, name: &str) -> Result<(), Error> {
    a.require_admin()?;
    managed_only(gw, name)?;
    let before = gw.mcp_registry.get(name).map(|s| view(&s, "api", true));
    let mut tx = Tx::begin(&gw.db).await?;
    let mut q = Sql::new("DELETE FROM mcp_servers WHERE name = ");
    q.arg(Val::Text(name.to_string()));
    if tx.execute(&q).await? == 0 {
        return Err(not_found("MCP server", name));
    }
    let path = format!("/api/v1/mcp-servers/{name}");
    commit(tx, a, Action { method: "DELETE", path: &path, status: 204 }, before.as_ref(), None).await?;
    reload(gw).await?;
    Ok(())
}

fn managed_only(gw: &Gateway, name: &str) -> Result<(), Error> {
    if gw.mcp_registry.in_file(name) {
        return Err(conflict(
            "name",
            format!("The MCP server '{name}' is defined in the MCP servers file; edit the file."),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn body(headers: Value) -> Map<String, Value> {
        match json!({"url": "http://127.0.0.1:1/mcp", "headers": headers}) {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    /// (status, param, message) of a refused body.
    fn refusal(headers: Value) -> (u16, Option<String>, String) {
        let e = checked("s", Value::Object(body(headers))).expect_err("refused");
        (e.0.status, e.1, e.0.message)
    }

    #[test]
    fn environment_references_are_refused_alike_whether_set_or_not() {
        // PATH is set in every test process; the other is set nowhere.
        let set = refusal(json!({"Authorization": "os.environ/PATH"}));
        let unset = refusal(json!({"Authorization": "os.environ/AQUEDUCT_SURELY_UNSET_VARIABLE"}));
        assert_eq!((set.0, set.1.as_deref()), (400, Some("headers.Authorization")), "{set:?}");
        assert_eq!(set, unset, "no oracle for which variables are set");
        for sneaky in [" os.environ/PATH", "OS.ENVIRON/PATH", "Bearer os.environ/PATH"] {
            assert_eq!(refusal(json!({"X-A": sneaky})).1.as_deref(), Some("headers.X-A"), "{sneaky}");
        }
    }

    #[test]
    fn literal_headers_are_kept() {
        let s = checked("s", Value::Object(body(json!({"X-Team": "red"})))).unwrap();
        assert_eq!(s.headers, vec![("x-team".to_string(), "red".to_string())]);
    }
}
