//! `/api/v1/mcp-servers`: MCP servers managed through the management API, stored in the
//! database next to the file's (an API entry may not reuse a file entry's name; the file is
//! edited as a file). Any caller may list them; only admins change them. Header values are
//! never shown: a literal may be a credential; `os.environ/VAR` references are shown as written.

use super::registry::{load_managed, Server, ServerEntry};
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

/// Checks a body as a server entry, resolving `os.environ/VAR` in this process's environment.
fn checked(name: &str, map: Map<String, Value>) -> Result<Server, Error> {
    let entry: ServerEntry =
        serde_json::from_value(Value::Object(map)).map_err(|e| bad("body", format!("Invalid MCP server: {e}.")))?;
    Server::check(name, entry, &|v| std::env::var(v).ok()).map_err(|e| {
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
