//! The MCP servers page: the servers the signed-in user may use, with the URLs to give an MCP
//! client (one server's endpoint, or the aggregated `/mcp` endpoint).
//!
//! The list is the MCP registry service's (as `GET /api/v1/mcp-servers` shows it) minus the user's exclusions,
//! merged the way the policy builder merges them for a personal key (user, org, global
//! defaults), so the page shows what the gateway will actually serve.

use super::{render, unavailable, Nav, Ui};
use crate::gateway::Gateway;
use crate::tenancy::model::PolicyFields;
use crate::tenancy::policy::{self, KeyRow};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::BTreeSet;
use std::sync::Arc;

/// A server as the page shows it.
struct ServerView {
    name: String,
    description: String,
    tags: Vec<String>,
    url: String,
}

#[derive(Template)]
#[template(path = "mcp.html")]
struct McpPage {
    nav: Nav,
    servers: Vec<ServerView>,
    aggregated_url: String,
    /// How many configured servers are excluded for this user (they are not listed).
    excluded: usize,
}

/// The MCP servers a new personal key of `user_id` may not use: the user's, their org's and the
/// global exclusions, merged down the chain; `None` when the user cannot have working keys.
async fn excluded_for(gw: &Gateway, user_id: i64) -> Option<BTreeSet<String>> {
    let h = policy::hierarchy(&gw.db).await.ok()?;
    let global = gw.default_excluded_mcp_servers();
    let key = KeyRow {
        id: 0,
        key_hash: String::new(),
        expires_at: None,
        user_id,
        service_account_id: None,
        fields: PolicyFields::default(),
    };
    let chain = h.chain(&key)?;
    Some(policy::excluded_mcp_servers(&chain.levels, &global).into_iter().map(str::to_string).collect())
}

/// `GET /ui/mcp`
pub async fn page(State(gw): State<Arc<Gateway>>, u: Ui) -> Response {
    let all = match crate::mcp::service::list(&gw, &u.a).await {
        Ok(l) => l.data,
        Err(e) => return unavailable(e.message()),
    };
    let excluded = match excluded_for(&gw, u.a.user_id).await {
        Some(e) => e,
        None => return unavailable("Your account cannot use MCP servers right now (it is inactive or being set up)."),
    };
    let base = &u.settings.public_url;
    let total = all.len();
    let servers: Vec<ServerView> = all
        .iter()
        .filter(|v| !excluded.contains(&v.name))
        .map(|v| ServerView {
            name: v.name.clone(),
            description: v.description.clone().unwrap_or_default(),
            tags: v.tags.clone(),
            url: format!("{base}{}", v.endpoint),
        })
        .collect();
    render(
        StatusCode::OK,
        &McpPage {
            nav: u.nav(&gw, "mcp").await,
            excluded: total - servers.len(),
            servers,
            aggregated_url: format!("{base}/mcp"),
        },
    )
}
