//! The Responses API (`/v1/responses`): what the filter reads of a create's body, the tool
//! policy it applies there, and the id-based calls it hands to the control plane.
//!
//! A create goes to the provider on the same path as chat. Two things in it could reach what is
//! not the caller's, and both are settled here before anything is forwarded:
//! - `previous_response_id` continues a stored response: the filter asks the control plane
//!   whether it is the caller's ([`owner_check`]) and answers 404 when it is not;
//! - `tools` may make the provider act for the caller: an `mcp` tool must be one of this
//!   gateway's MCP endpoints the key may use, `file_search` may not name vector stores (the
//!   gateway has none to own), and provider-native tools can be limited to an allow-list.
//!
//! Id-based calls (`GET`/`DELETE /v1/responses/{id}`, `POST …/cancel`, `GET …/input_items`)
//! are authenticated here and served by the control plane, which checks the owner in its store
//! before it forwards anything ([`ItemCall`]).

use crate::error::Refusal;
use crate::host::Call;
use crate::request::{
    end_user_of, guarded_top, json_top, model_of, present, span_of, stream_flag, BodyFacts, KeyCheck,
};
use crate::snapshot::Policy;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Path of the control plane's ownership check, followed by the response id and `/owner`.
pub const OWNER_PATH: &str = "/internal/v1/responses/";

/// How long the filter waits for the ownership check before it answers 503.
pub const OWNER_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest response id accepted; real ones are some 50 characters.
pub const MAX_ID_LEN: usize = 256;

/// The top-level members of a create the filter decides on, each there at most once and
/// spelled exactly (see [`crate::request::inspect_json`] for why).
const DECIDED: [&str; 8] =
    ["model", "stream", "max_output_tokens", "previous_response_id", "tools", "conversation", "user", "user_id"];
/// [`KeyCheck::seen`]'s bit for `user_id`.
const USER_ID_SEEN: u16 = 1 << 7;

#[derive(Deserialize)]
struct CreateTop<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream: Option<&'a RawValue>,
    #[serde(default)]
    max_output_tokens: Option<serde_json::Value>,
    #[serde(borrow, default, deserialize_with = "present")]
    previous_response_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    conversation: Option<&'a RawValue>,
    #[serde(default)]
    user: Option<serde_json::Value>,
    #[serde(default)]
    user_id: Option<serde_json::Value>,
}

/// What the filter needs from a create's body beyond what chat needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateFacts {
    /// Model, stream flag, end user and `user_id` as for chat; `max_tokens` is
    /// `max_output_tokens`.
    pub body: BodyFacts,
    /// The stored response this one continues, when given.
    pub previous_response_id: Option<String>,
}

/// Who the tools are checked for.
#[derive(Debug, Clone, Copy)]
pub struct ToolScope<'a> {
    /// The policy in force.
    pub policy: &'a Policy,
    /// The caller's principal.
    pub principal: u32,
    /// The request's `:authority`: an `mcp` tool's `server_url` must be on this host.
    pub authority: &'a str,
}

/// Validates a create's JSON body, locates its `model` and applies the tool policy.
pub fn inspect_create(body: &[u8], scope: ToolScope<'_>) -> Result<CreateFacts, Refusal> {
    let (text, top, seen) = json_top::<CreateTop<'_>>(body, &DECIDED)?;
    let model = model_of(top.model)?;
    let raw = top.model.ok_or(Refusal::MissingModel)?;
    let stream = stream_flag(top.stream)?;
    if top.conversation.is_some_and(|c| c.get() != "null") {
        // A conversation is a stored object like a response, but the gateway does not serve
        // the Conversations API, so it cannot know whose one is: none is forwarded.
        return Err(Refusal::InvalidParameter {
            param: "conversation",
            message: "Conversations are not available through this gateway; chain responses with \
                      'previous_response_id' instead."
                .into(),
        });
    }
    let previous_response_id = match top.previous_response_id.map(RawValue::get) {
        None | Some("null") => None,
        Some(raw) => {
            let id: String = serde_json::from_str(raw).map_err(|_| Refusal::InvalidParameter {
                param: "previous_response_id",
                message: "'previous_response_id' must be a string.".into(),
            })?;
            // An id that cannot be a provider's is nobody's response: not found, never sent.
            if !valid_id(&id) {
                return Err(Refusal::ResponseNotFound { param: Some("previous_response_id") });
            }
            Some(id)
        }
    };
    if let Some(tools) = top.tools {
        check_tools(tools, scope)?;
    }
    let end_user = top.user_id.as_ref().and_then(end_user_of).or_else(|| top.user.as_ref().and_then(end_user_of));
    Ok(CreateFacts {
        body: BodyFacts {
            model,
            model_span: span_of(text, raw.get()),
            stream,
            max_tokens: top.max_output_tokens.and_then(|v| v.as_u64()),
            includes_usage: false,
            has_stream_options: false,
            end_user,
            json_user_id: seen & USER_ID_SEEN != 0,
            user_id_part: None,
        },
        previous_response_id,
    })
}

/// Whether `id` looks like a provider's response id: ASCII letters, digits, `_` and `-`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The members of a tool the filter decides on.
const TOOL_DECIDED: [&str; 5] = ["type", "server_label", "server_url", "connector_id", "vector_store_ids"];

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    server_label: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    server_url: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    connector_id: Option<&'a RawValue>,
    #[serde(default)]
    vector_store_ids: Option<Vec<serde::de::IgnoredAny>>,
}

fn invalid_tools(message: impl Into<String>) -> Refusal {
    Refusal::InvalidParameter { param: "tools", message: message.into() }
}

/// Applies the tool policy to a create's `tools`.
fn check_tools(tools: &RawValue, scope: ToolScope<'_>) -> Result<(), Refusal> {
    if tools.get() == "null" {
        return Ok(());
    }
    let list: Vec<&RawValue> =
        serde_json::from_str(tools.get()).map_err(|_| invalid_tools("'tools' must be an array of tool objects."))?;
    for raw in list {
        let text = raw.get();
        if !text.starts_with('{') {
            return Err(invalid_tools("Each tool must be an object with a 'type'."));
        }
        let mut check = KeyCheck::new(&TOOL_DECIDED);
        let tool: Tool<'_> = guarded_top(text, &mut check).map_err(|e| invalid_tools(format!("Invalid tool: {e}.")))?;
        if let Some(e) = check.conflict {
            return Err(e);
        }
        let Some(kind) = tool.kind.as_deref() else {
            return Err(invalid_tools("Each tool must be an object with a 'type'."));
        };
        match kind {
            "function" | "custom" => {}
            "mcp" => check_mcp_tool(&tool, scope)?,
            other => {
                if other == "file_search" && tool.vector_store_ids.as_ref().is_some_and(|ids| !ids.is_empty()) {
                    return Err(invalid_tools(
                        "Vector stores are not available through this gateway: a file_search tool may not name \
                         'vector_store_ids'.",
                    ));
                }
                let allowed = &scope.policy.settings.responses.native_tools;
                if !allowed.is_empty() && !allowed.iter().any(|a| a == other) {
                    return Err(invalid_tools(format!(
                        "Invalid tool type: '{other}'. This gateway allows {}.",
                        allowed.join(", ")
                    )));
                }
            }
        }
    }
    Ok(())
}

/// An `mcp` tool must point at one of this gateway's MCP endpoints on the host the request
/// came to (`/mcp-servers/{name}/mcp` for a server the key may use, or the aggregated `/mcp`):
/// then the provider's calls come back through the gateway with the caller's key, and every
/// MCP rule applies to them. Anything else (another host, a connector) is refused.
fn check_mcp_tool(tool: &Tool<'_>, scope: ToolScope<'_>) -> Result<(), Refusal> {
    let label = tool.server_label.as_deref().unwrap_or_default();
    let named = |fallback: &str| if label.is_empty() { fallback.to_string() } else { label.to_string() };
    let Some(url) = tool.server_url.as_deref() else {
        let what = if tool.connector_id.is_some() { "connector" } else { "unnamed server" };
        return Err(Refusal::McpToolNotAllowed(named(what)));
    };
    let not_allowed = || Refusal::McpToolNotAllowed(named(url));
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .or_else(|| {
            // Scheme without case, as URL parsers read it.
            let (scheme, rest) = url.split_once("://")?;
            (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")).then_some(rest)
        })
        .ok_or_else(not_allowed)?;
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if scope.authority.is_empty() || !authority.eq_ignore_ascii_case(scope.authority) || authority.contains('@') {
        return Err(not_allowed());
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path == "/mcp" || path == "/mcp/" {
        // The aggregated endpoint serves only the servers the key may use.
        return Ok(());
    }
    let name = crate::request::mcp_server_name(path).ok_or_else(not_allowed)?;
    match scope.policy.mcp_server_index(name) {
        Some(i) if scope.policy.allows_mcp(scope.principal, i) => Ok(()),
        _ => Err(Refusal::McpToolNotAllowed(named(name))),
    }
}

/// What an id-based call asks of a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOp {
    /// `GET /v1/responses/{id}`.
    Retrieve,
    /// `DELETE /v1/responses/{id}`.
    Delete,
    /// `POST /v1/responses/{id}/cancel`.
    Cancel,
    /// `GET /v1/responses/{id}/input_items`.
    InputItems,
}

/// An id-based call on a stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemCall<'a> {
    /// The response id.
    pub id: &'a str,
    /// What is asked.
    pub op: ItemOp,
}

/// Reads an id-based call from its path (under `/v1/responses/` or `/responses/`, query
/// string allowed) and method.
pub fn item_call<'a>(path: &'a str, method: &str) -> Result<ItemCall<'a>, Refusal> {
    let clean = path.split(['?', '#']).next().unwrap_or_default();
    let unknown = || Refusal::UnknownPath(clean.to_string());
    let tail =
        clean.strip_prefix("/v1/responses/").or_else(|| clean.strip_prefix("/responses/")).ok_or_else(unknown)?;
    let (id, action) = match tail.split_once('/') {
        Some((id, action)) => (id, Some(action)),
        None => (tail, None),
    };
    let (op, allowed) = match (action, method) {
        (None, "GET") => (ItemOp::Retrieve, ""),
        (None, "DELETE") => (ItemOp::Delete, ""),
        (None, _) => (ItemOp::Retrieve, "GET, DELETE"),
        (Some("cancel"), "POST") => (ItemOp::Cancel, ""),
        (Some("cancel"), _) => (ItemOp::Cancel, "POST"),
        (Some("input_items"), "GET") => (ItemOp::InputItems, ""),
        (Some("input_items"), _) => (ItemOp::InputItems, "GET"),
        (Some(_), _) => return Err(unknown()),
    };
    if id.is_empty() {
        return Err(unknown());
    }
    if !allowed.is_empty() {
        return Err(Refusal::MethodNotAllowed { method: method.to_string(), allowed });
    }
    if !valid_id(id) {
        return Err(Refusal::ResponseNotFound { param: None });
    }
    Ok(ItemCall { id, op })
}

/// The identity of a caller as the control plane reads it from the filter's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The key's token id.
    pub token_id: u64,
    /// The key's user (a service account's owner for its key).
    pub user_id: u64,
    /// The key's service account.
    pub service_account_id: Option<u64>,
}

/// Owned strings for an ownership call, kept while the call is built.
pub struct OwnerCheck {
    path: String,
    token: String,
    user: String,
    service_account: Option<String>,
}

/// The call asking the control plane whether `id` is the caller's (204: yes; 404: no).
pub fn owner_check(id: &str, caller: Caller) -> OwnerCheck {
    OwnerCheck {
        path: format!("{OWNER_PATH}{id}/owner"),
        token: caller.token_id.to_string(),
        user: caller.user_id.to_string(),
        service_account: caller.service_account_id.map(|s| s.to_string()),
    }
}

impl OwnerCheck {
    /// The call, to the control plane's `cluster` at `authority`, vouched for by `secret`.
    pub fn call<'a>(&'a self, cluster: &'a str, authority: &'a str, secret: &'a str) -> Call<'a> {
        use crate::filter::{SECRET_HEADER, SERVICE_ACCOUNT_ID_HEADER, TOKEN_ID_HEADER, USER_ID_HEADER};
        let mut headers = vec![
            (":method", "GET"),
            (":path", self.path.as_str()),
            (":authority", authority),
            (SECRET_HEADER, secret),
            (TOKEN_ID_HEADER, self.token.as_str()),
            (USER_ID_HEADER, self.user.as_str()),
        ];
        if let Some(sa) = &self.service_account {
            headers.push((SERVICE_ACCOUNT_ID_HEADER, sa.as_str()));
        }
        Call { cluster, headers, body: None, timeout: OWNER_CHECK_TIMEOUT }
    }
}

/// What the ownership check's answer means: `Ok` to go on, or the refusal to send.
pub fn owner_answer(status: Option<u16>) -> Result<(), Refusal> {
    match status {
        Some(200..=299) => Ok(()),
        Some(404) => Err(Refusal::ResponseNotFound { param: Some("previous_response_id") }),
        _ => Err(Refusal::OwnershipUnavailable),
    }
}

#[cfg(test)]
mod tests;
