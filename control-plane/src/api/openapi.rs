//! The OpenAPI 3.0 document of the management API, served at `GET /api/v1/openapi.json`.

use serde_json::{json, Map, Value};

/// (path, method, summary, request schema, success status, response schema).
pub type Route = (&'static str, &'static str, &'static str, Option<&'static str>, u16, Option<&'static str>);

/// Every route: (path under `/api/v1`, method, summary, request schema, success status, response
/// schema). The router in `api/mod.rs` serves exactly these; a test keeps the two in step.
pub const ROUTES: &[Route] = &[
    ("/orgs", "post", "Create an org (admin)", Some("OrgCreate"), 201, Some("Org")),
    ("/orgs", "get", "List orgs (admin: all; others: their own)", None, 200, Some("List")),
    ("/orgs/{id}", "get", "Read an org", None, 200, Some("Org")),
    ("/orgs/{id}", "patch", "Change an org's name and policy (admin)", Some("OrgPatch"), 200, Some("Org")),
    ("/orgs/{id}", "delete", "Delete an empty org (admin)", None, 204, None),
    ("/teams", "post", "Create a team (admin, org-admin)", Some("TeamCreate"), 201, Some("Team")),
    ("/teams", "get", "List visible teams", None, 200, Some("List")),
    ("/teams/{id}", "get", "Read a team", None, 200, Some("Team")),
    ("/teams/{id}", "patch", "Change a team (admin, org-admin)", Some("TeamPatch"), 200, Some("Team")),
    (
        "/teams/{id}",
        "delete",
        "Delete a team, its memberships and service accounts (admin, org-admin)",
        None,
        204,
        None,
    ),
    (
        "/teams/{id}/members/{user_id}",
        "put",
        "Add or update a member (admin, org-admin, team-admin)",
        Some("Membership"),
        201,
        Some("Member"),
    ),
    ("/teams/{id}/members/{user_id}", "delete", "Remove a member (admin, org-admin, team-admin)", None, 204, None),
    (
        "/teams/{id}/service-accounts",
        "post",
        "Create a service account and its key (admin, org-admin, team-admin)",
        Some("ServiceAccountCreate"),
        201,
        Some("ServiceAccountWithKey"),
    ),
    ("/teams/{id}/service-accounts", "get", "List a team's service accounts", None, 200, Some("List")),
    ("/users", "post", "Create a user (admin, org-admin)", Some("UserCreate"), 201, Some("User")),
    ("/users", "get", "List visible users", None, 200, Some("List")),
    ("/users/{id}", "get", "Read a user", None, 200, Some("User")),
    ("/users/{id}", "patch", "Change a user (admin, org-admin)", Some("UserPatch"), 200, Some("User")),
    (
        "/users/{id}",
        "delete",
        "Delete a user; its keys stop working, history stays (admin, org-admin)",
        None,
        204,
        None,
    ),
    ("/service-accounts/{id}", "get", "Read a service account", None, 200, Some("ServiceAccount")),
    (
        "/service-accounts/{id}",
        "patch",
        "Change a service account (admin, org-admin, team-admin)",
        Some("ServiceAccountPatch"),
        200,
        Some("ServiceAccount"),
    ),
    ("/service-accounts/{id}", "delete", "Delete a service account and revoke its key", None, 204, None),
    (
        "/service-accounts/{id}/transfer",
        "post",
        "Transfer ownership to another team member",
        Some("Transfer"),
        200,
        Some("ServiceAccount"),
    ),
    ("/tokens", "post", "Create a key (shown once)", Some("TokenCreate"), 201, Some("TokenWithKey")),
    ("/tokens", "get", "List visible keys", None, 200, Some("List")),
    ("/tokens/{id}", "get", "Read a key (never the secret)", None, 200, Some("Token")),
    (
        "/tokens/{id}",
        "patch",
        "Change a key's name, expiry and (admin, org-admin) policy",
        Some("TokenPatch"),
        200,
        Some("Token"),
    ),
    ("/tokens/{id}", "delete", "Revoke a key", None, 204, None),
    ("/tokens/{id}/regenerate", "post", "Replace a key's secret (shown once)", None, 200, Some("TokenWithKey")),
    ("/mcp-servers", "get", "List MCP servers (url and headers for admins only)", None, 200, Some("List")),
    ("/mcp-servers", "post", "Add an MCP server (admin)", Some("McpServerCreate"), 201, Some("McpServer")),
    ("/mcp-servers/{name}", "get", "Read an MCP server", None, 200, Some("McpServer")),
    (
        "/mcp-servers/{name}",
        "put",
        "Replace an API-managed MCP server (admin; file entries: 409)",
        Some("McpServerEntry"),
        200,
        Some("McpServer"),
    ),
    ("/mcp-servers/{name}", "delete", "Remove an API-managed MCP server (admin; file entries: 409)", None, 204, None),
    ("/status", "get", "What the control plane serves (admin)", None, 200, None),
    (
        "/usage",
        "get",
        "Usage totals, a series per bucket and groups (admin: all; org-admin: the org; others: own keys and their teams' service accounts)",
        None,
        200,
        Some("Usage"),
    ),
    ("/usage/requests", "get", "The request log, newest first, same scope and filters", None, 200, Some("UsageRequests")),
    ("/openapi.json", "get", "This document (no key needed)", None, 200, None),
];

fn s(t: &str) -> Value {
    json!({"type": t})
}

fn obj(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": props, "required": required})
}

fn merged(a: Value, b: &Value) -> Value {
    let mut a = a;
    if let (Some(pa), Some(pb)) = (a["properties"].as_object_mut(), b["properties"].as_object()) {
        pa.extend(pb.clone());
    }
    a
}

fn schemas() -> Value {
    let limit = json!({"type": "integer", "minimum": 0, "nullable": true,
        "description": "Per minute; 0 allows nothing, null unsets."});
    let names = json!({"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 256}});
    let policy = obj(
        json!({
            "excluded_models": names, "merge_excluded_models": s("boolean"),
            "excluded_mcp_servers": names, "merge_excluded_mcp_servers": s("boolean"),
            "requests_per_minute": limit, "input_tokens_per_minute": limit, "output_tokens_per_minute": limit,
            "key_requests_per_minute": limit, "key_input_tokens_per_minute": limit, "key_output_tokens_per_minute": limit,
        }),
        &[],
    );
    let name = json!({"type": "string", "minLength": 1, "maxLength": 255});
    let id = json!({"type": "string", "pattern": "^[0-9]+$"});
    let time = json!({"type": "string", "format": "date-time", "nullable": true});
    let text = json!({"type": "string", "maxLength": 4096});
    let role = json!({"type": "string", "enum": ["user", "org-admin", "admin"]});
    let with_policy = |v: Value| merged(v, &policy);
    let token = with_policy(obj(
        json!({"object": s("string"), "id": id, "user_id": id, "service_account_id": {"type": "string", "nullable": true},
               "name": name, "preview": s("string"), "created_at": time, "expires_at": time, "last_used_at": time, "revoked_at": time}),
        &[],
    ));
    let mut token_with_key = token.clone();
    token_with_key["properties"]["key"] = json!({"type": "string", "description": "The key; shown only here."});
    let sa = with_policy(obj(
        json!({"object": s("string"), "id": id, "team_id": id, "owner_user_id": id, "name": name, "description": text,
               "token_id": {"type": "string", "nullable": true}, "created_at": time}),
        &[],
    ));
    let mut sa_with_key = sa.clone();
    sa_with_key["properties"]["key"] = json!({"type": "string", "description": "The account's key; shown only here."});
    sa_with_key["properties"]["token"] = json!({"$ref": "#/components/schemas/Token"});
    let mcp_name = json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$",
        "description": "Letters, digits, '_', '.', '-'; no \"__\" (the aggregated endpoint's separator)."});
    let mcp_entry = json!({
        "type": {"type": "string", "enum": ["streamable-http"], "default": "streamable-http"},
        "url": {"type": "string", "format": "uri"}, "description": s("string"),
        "tags": {"type": "array", "items": s("string")}, "icon_url": s("string"),
        "headers": {"type": "object", "additionalProperties": s("string"),
                    "description": "Sent upstream as given. Environment references (os.environ/NAME) are refused here (400, param headers.<name>); only the operator's MCP servers file may use them."},
    });
    let mut mcp_create = obj(mcp_entry.clone(), &["name", "url"]);
    mcp_create["properties"]["name"] = mcp_name.clone();
    let mcp_server = obj(
        json!({"name": mcp_name, "type": s("string"), "url": s("string"), "description": s("string"),
               "tags": {"type": "array", "items": s("string")}, "icon_url": s("string"),
               "headers": {"type": "object", "additionalProperties": s("string"),
                           "description": "Names; literal values shown as \"(set)\", environment references as written."},
               "endpoint": s("string"), "source": {"type": "string", "enum": ["file", "api"]}}),
        &[],
    );
    json!({
        "McpServerEntry": obj(mcp_entry, &["url"]),
        "McpServerCreate": mcp_create,
        "McpServer": mcp_server,
        "PolicyFields": policy,
        "Org": with_policy(obj(json!({"object": s("string"), "id": id, "name": name, "created_at": time}), &[])),
        "OrgCreate": with_policy(obj(json!({"name": name}), &["name"])),
        "OrgPatch": with_policy(obj(json!({"name": name}), &[])),
        "Team": with_policy(obj(json!({"object": s("string"), "id": id, "org_id": id, "name": name, "description": text,
                                       "oidc_group": s("string"), "created_at": time}), &[])),
        "TeamCreate": with_policy(obj(json!({"org_id": id, "name": name, "description": text, "oidc_group": name}), &["name"])),
        "TeamPatch": with_policy(obj(json!({"name": name, "description": text, "oidc_group": name}), &[])),
        "Membership": obj(json!({"team_admin": s("boolean")}), &[]),
        "Member": obj(json!({"object": s("string"), "team_id": id, "user_id": id, "team_admin": s("boolean"), "added_at": time}), &[]),
        "User": with_policy(obj(json!({"object": s("string"), "id": id, "email": s("string"), "org_id": {"type": "string", "nullable": true},
                                       "role": role, "active": s("boolean"), "oidc_bound": s("boolean"), "created_at": time}), &[])),
        "UserCreate": with_policy(obj(json!({"email": {"type": "string", "maxLength": 320}, "org_id": id, "role": role}), &["email"])),
        "UserPatch": with_policy(obj(json!({"email": {"type": "string", "maxLength": 320}, "role": role, "active": s("boolean"),
            "oidc_bound": {"type": "boolean", "enum": [false], "description": "false clears the account's OIDC binding (admin only)."}}), &[])),
        "ServiceAccount": sa,
        "ServiceAccountWithKey": sa_with_key,
        "ServiceAccountCreate": with_policy(obj(json!({"name": name, "description": text, "user_id": id}), &["name"])),
        "ServiceAccountPatch": with_policy(obj(json!({"name": name, "description": text}), &[])),
        "Transfer": obj(json!({"user_id": id}), &["user_id"]),
        "Token": token,
        "TokenWithKey": token_with_key,
        "TokenCreate": with_policy(obj(json!({"name": name, "expires_at": time, "user_id": id, "service_account_id": id}), &["name"])),
        "TokenPatch": with_policy(obj(json!({"name": name, "expires_at": time}), &[])),
        "List": {"type": "object", "properties": {"object": {"type": "string", "enum": ["list"]},
                  "data": {"type": "array", "items": {"type": "object"}}, "has_more": s("boolean")}},
        "UsageTotals": obj(json!({"requests": s("integer"), "input_tokens": s("integer"), "output_tokens": s("integer"),
                                  "errors": {"type": "integer", "description": "Requests answered with status >= 400"}}), &[]),
        "Usage": {"type": "object", "properties": {
            "from": s("string"), "to": s("string"), "bucket": s("string"),
            "totals": {"$ref": "#/components/schemas/UsageTotals"},
            "series": {"type": "array", "items": {"type": "object", "description": "`start` (RFC 3339) and the totals of one bucket"}},
            "groups": {"type": "array", "items": {"type": "object", "description": "The `group_by` dimensions and their totals"}}}},
        "UsageRequests": {"type": "object", "properties": {
            "object": s("string"), "has_more": s("boolean"),
            "next": {"type": "string", "nullable": true, "description": "Pass as `after` for the next page"},
            "data": {"type": "array", "items": {"type": "object", "description": "request_id, time, token_id, user_id, service_account_id, team_id, org_id, end_user, model, path, method, status, outcome, input/output/cached/reasoning_tokens, estimated, latency_ms, ttfb_ms, streamed, client_ip, user_agent"}}}},
        "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
            "message": s("string"), "type": s("string"),
            "param": {"type": "string", "nullable": true}, "code": {"type": "string", "nullable": true}}}}},
    })
}

/// Query parameters of the usage API.
fn usage_params(log: bool) -> Vec<Value> {
    let q = |name: &str, schema: Value, desc: &str| json!({"name": name, "in": "query", "schema": schema, "description": desc});
    let mut out = vec![
        q("from", json!({"type": "string", "format": "date-time"}), "Start (inclusive); default 24 h before `to`"),
        q("to", json!({"type": "string", "format": "date-time"}), "End (exclusive); default now"),
        q("format", json!({"type": "string", "enum": ["json", "csv"]}), "csv: a CSV file instead of JSON"),
    ];
    for d in ["org_id", "team_id", "user_id", "service_account_id", "token_id", "model", "end_user"] {
        out.push(q(d, s("string"), "Exact match"));
    }
    out.push(q("status", s("integer"), "Exact HTTP status"));
    if log {
        out.push(q(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}),
            "Rows per page",
        ));
        out.push(q("after", s("string"), "`next` of the previous page"));
    } else {
        out.push(q(
            "bucket",
            json!({"type": "string", "enum": ["minute", "hour", "day"], "default": "hour"}),
            "Series granularity",
        ));
        out.push(q(
            "group_by",
            s("string"),
            "Comma list of org_id, team_id, user_id, service_account_id, token_id, model, end_user, status",
        ));
    }
    out
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (path, method, summary, req, ok, resp) in ROUTES {
        let mut op = json!({"summary": summary, "responses": {}});
        let mut params = Vec::new();
        for p in ["id", "user_id", "name"] {
            if path.contains(&format!("{{{p}}}")) {
                params.push(json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}));
            }
        }
        let paginated = !path.ends_with("status") && !path.starts_with("/mcp-servers");
        if path.starts_with("/usage") {
            params.extend(usage_params(path.ends_with("/requests")));
        } else if *method == "get" && (path.ends_with('s') || path.ends_with("service-accounts")) && paginated {
            params.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}));
            params.push(json!({"name": "after", "in": "query", "schema": {"type": "string"}, "description": "Only ids above this one."}));
        }
        if !params.is_empty() {
            op["parameters"] = params.into();
        }
        if *path != "/openapi.json" {
            op["security"] = json!([{"bearer": []}, {"session": []}]);
        }
        if let Some(r) = req {
            op["requestBody"] = json!({"required": !path.contains("/members/"),
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{r}")}}}});
        }
        let mut ok_resp = json!({"description": "Success"});
        if let Some(r) = resp {
            ok_resp["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{r}")}}});
        }
        op["responses"][ok.to_string()] = ok_resp;
        if *method == "put" && path.contains("/members/") {
            op["responses"]["200"] = json!({"description": "Membership updated",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Member"}}}});
        }
        let err = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        for (code, desc) in [
            ("400", "Bad input; `param` names the field"),
            ("401", "Missing, invalid, revoked or expired key"),
            ("403", "The caller's role does not allow this"),
            ("404", "Not found, or not visible to the caller"),
            ("409", "Uniqueness violation, a cap reached, or a state conflict"),
        ] {
            let mut e = err.clone();
            e["description"] = desc.into();
            op["responses"][code] = e;
        }
        let entry = paths.entry(format!("/api/v1{path}")).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Aqueduct management API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": crate::auth::SESSION_COOKIE,
                    "description": "The admin UI's session; requests other than GET also need the session's CSRF token in the x-csrf-token header."}
            },
        },
    })
}
