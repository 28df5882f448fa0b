//! `/api/v1/mcp-servers`: parse, call [`crate::mcp::service`], render.

use super::auth::Authed;
use super::error::Error;
use super::{body, Body};
use crate::domain::List;
use crate::gateway::Gateway;
use crate::mcp::service::{self as svc, McpServer};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use std::sync::Arc;

/// `GET /api/v1/mcp-servers`: every configured server (file and API), by name.
pub async fn list(State(gw): State<Arc<Gateway>>, a: Authed) -> Result<Json<List<McpServer>>, Error> {
    Ok(Json(svc::list(&gw, &a).await?))
}

/// `GET /api/v1/mcp-servers/{name}`
pub async fn get_one(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(name): Path<String>,
) -> Result<Json<McpServer>, Error> {
    Ok(Json(svc::get(&gw, &a, &name).await?))
}

/// `POST /api/v1/mcp-servers` (admin): adds a server; it is served at once.
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    b: Body,
) -> Result<(StatusCode, Json<McpServer>), Error> {
    Ok((StatusCode::CREATED, Json(svc::create(&gw, &a, body(b)).await?)))
}

/// `PUT /api/v1/mcp-servers/{name}` (admin): replaces an API-managed server's entry.
pub async fn replace(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(name): Path<String>,
    b: Body,
) -> Result<Json<McpServer>, Error> {
    Ok(Json(svc::replace(&gw, &a, &name, body(b)).await?))
}

/// `DELETE /api/v1/mcp-servers/{name}` (admin): removes an API-managed server.
pub async fn delete(State(gw): State<Arc<Gateway>>, a: Authed, Path(name): Path<String>) -> Result<StatusCode, Error> {
    svc::delete(&gw, &a, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
