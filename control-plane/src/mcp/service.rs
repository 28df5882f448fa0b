//! `/api/v1/mcp-servers`: MCP servers managed through the management API, stored in the
//! database next to the file's (an API entry may not reuse a file entry's name; the file is
//! edited as a file). Any caller may list them; only admins change them. Header values are
//! never shown: a literal may be a credential; `os.environ/VAR` references (file entries only)
//! are shown as written.
//!
//! An API entry may not use `os.environ/VAR`: the environment is the operator's (it holds the
//! admin key and password), and an API caller could otherwise send any variable to a URL of
//! its choosing, or learn from the answer which variables are set. Environment references are
//! for the operator's MCP servers file only.

use super::registry::{load_managed, Server, ServerEntry, ENV_PREFIX};
use crate::api::auth::Authed;
use crate::api::common::{bad, conflict, not_found, Fields};
use crate::api::error::Error;
use crate::gateway::{now, Gateway};
use crate::with_pool;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Map, Value};
use std::sync::Arc;

type Body = Result<Json<Value>, JsonRejection>;

const FIELDS: &[&str] = &["name", "type", "url", "description", "tags", "icon_url", "headers"];

fn view(s: &Server, source: &str, admin: bool) -> Value {
    let mut v = json!({
        "name": s.name,
        "type": s.entry.kind,
        "description": s.entry.description,
        "tags": s.entry.tags,
        "icon_url": s.entry.icon_url,
        "endpoint": format!("/mcp-servers/{}/mcp", s.name),
        "source": source,
    });
    if admin {
        v["url"] = json!(s.entry.url);
        let headers: Map<String, Value> = s
            .entry
            .headers
            .iter()
            .map(|(k, val)| {
                let shown = if val.starts_with("os.environ/") { val.clone() } else { "(set)".to_string() };
                (k.clone(), Value::String(shown))
            })
            .collect();
        v["headers"] = Value::Object(headers);
    }
    v
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

/// `GET /api/v1/mcp-servers`: every configured server (file and API), by name.
pub async fn list(State(gw): State<Arc<Gateway>>, a: Authed) -> Result<Json<Value>, Error> {
    let all = gw.mcp_registry.all();
    let data: Vec<Value> = gw
        .mcp_registry
        .names()
        .iter()
        .filter_map(|n| all.get(n))
        .map(|s| view(s, source(&gw, &s.name), a.is_admin()))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// `GET /api/v1/mcp-servers/{name}`.
pub async fn get_one(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, Error> {
    let s = gw.mcp_registry.get(&name).ok_or_else(|| not_found("MCP server", &name))?;
    Ok(Json(view(&s, source(&gw, &name), a.is_admin())))
}

/// Checks a body as a server entry. A header that refers to the environment is refused before
/// anything looks the variable up: the answer is the same whether or not it is set.
fn checked(name: &str, map: Map<String, Value>) -> Result<Server, Error> {
    let entry: ServerEntry =
        serde_json::from_value(Value::Object(map)).map_err(|e| bad("body", format!("Invalid MCP server: {e}.")))?;
    if let Some(header) = env_reference(&entry) {
        return Err(bad(
            &format!("headers.{header}"),
            format!(
                "Header '{header}' refers to the environment (os.environ/…); environment references are allowed \
                 only in the operator's MCP servers file, not through the API."
            ),
        ));
    }
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

/// The first header (by name) whose name or value uses an `os.environ/` reference, in any case
/// and with any surrounding space.
fn env_reference(entry: &ServerEntry) -> Option<&str> {
    let uses = |s: &str| s.trim().to_ascii_lowercase().contains(ENV_PREFIX);
    entry.headers.iter().find(|(k, v)| uses(k) || uses(v)).map(|(k, _)| k.as_str())
}

/// `POST /api/v1/mcp-servers` (admin): adds a server; it is served at once.
pub async fn create(State(gw): State<Arc<Gateway>>, a: Authed, body: Body) -> Result<impl IntoResponse, Error> {
    a.require_admin()?;
    let mut f = Fields::parse(body, FIELDS)?;
    let name = f.req_str("name", 64)?;
    let server = checked(&name, f.into_map())?;
    if gw.mcp_registry.get(&name).is_some() {
        return Err(conflict("name", format!("An MCP server named '{name}' exists.")));
    }
    let config = serde_json::to_string(&server.entry).map_err(|e| bad("body", e.to_string()))?;
    let now = now();
    let inserted = with_pool!(&gw.db, p => sqlx::query(
        "INSERT INTO mcp_servers (name, config, created_at, updated_at) VALUES ($1, $2, $3, $3)",
    )
    .bind(&name)
    .bind(&config)
    .bind(now)
    .execute(p)
    .await
    .map(|_| ()));
    inserted.map_err(|e| crate::api::common::unique_or(e, "name", "An MCP server with this name exists."))?;
    reload(&gw).await?;
    Ok((StatusCode::CREATED, Json(view(&server, "api", true))))
}

/// `PUT /api/v1/mcp-servers/{name}` (admin): replaces an API-managed server's entry.
pub async fn replace(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>, Error> {
    a.require_admin()?;
    managed_only(&gw, &name)?;
    let f = Fields::parse(body, &FIELDS[1..])?;
    let server = checked(&name, f.into_map())?;
    let config = serde_json::to_string(&server.entry).map_err(|e| bad("body", e.to_string()))?;
    let n = with_pool!(&gw.db, p => sqlx::query("UPDATE mcp_servers SET config = $2, updated_at = $3 WHERE name = $1")
        .bind(&name)
        .bind(&config)
        .bind(now())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(not_found("MCP server", &name));
    }
    reload(&gw).await?;
    Ok(Json(view(&server, "api", true)))
}

/// `DELETE /api/v1/mcp-servers/{name}` (admin): removes an API-managed server.
pub async fn delete(State(gw): State<Arc<Gateway>>, a: Authed, Path(name): Path<String>) -> Result<StatusCode, Error> {
    a.require_admin()?;
    managed_only(&gw, &name)?;
    let n = with_pool!(&gw.db, p => sqlx::query("DELETE FROM mcp_servers WHERE name = $1")
        .bind(&name)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(not_found("MCP server", &name));
    }
    reload(&gw).await?;
    Ok(StatusCode::NO_CONTENT)
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

    fn body(headers: Value) -> Map<String, Value> {
        match json!({"url": "http://127.0.0.1:1/mcp", "headers": headers}) {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    /// (status, param, message) of a refused body.
    fn refusal(headers: Value) -> (u16, Option<String>, String) {
        let e = checked("s", body(headers)).expect_err("refused");
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
        let s = checked("s", body(json!({"X-Team": "red"}))).unwrap();
        assert_eq!(s.headers, vec![("x-team".to_string(), "red".to_string())]);
    }
}
