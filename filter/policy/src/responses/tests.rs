use super::*;
use crate::snapshot::{ModelSpec, PolicySnapshot, PrincipalSpec, ResponsesSettings, Settings};
use crate::tokens::TokenTable;

fn policy(native_tools: &[&str]) -> Policy {
    let snap = PolicySnapshot {
        version: 1,
        created: 0,
        settings: Settings {
            responses: ResponsesSettings { native_tools: native_tools.iter().map(|t| t.to_string()).collect() },
            ..Default::default()
        },
        models: vec![ModelSpec {
            name: "demo".into(),
            aliases: vec![],
            provider_model: "demo".into(),
            authorization: None,
            route: "demo".into(),
            mode: None,
            request_limit_multiplier: 1.0,
        }],
        principals: vec![
            PrincipalSpec { user_id: 1, ..Default::default() },
            PrincipalSpec { user_id: 2, excluded_mcp_servers: vec![1], ..Default::default() },
        ],
        tokens: TokenTable::build(vec![]),
        mcp_servers: vec!["everything".into(), "secret-tools".into()],
        journal: None,
    };
    Policy::from_snapshot(snap).unwrap()
}

fn inspect(body: &str, policy: &Policy, principal: u32) -> Result<CreateFacts, Refusal> {
    inspect_create(body.as_bytes(), ToolScope { policy, principal, authority: "gw.example:8080" })
}

#[test]
fn a_create_is_read_like_chat_with_its_own_members() {
    let p = policy(&[]);
    let f = inspect(
        r#"{"input":"hi","model":"demo","stream":true,"max_output_tokens":77,"previous_response_id":"resp_a-1","user":"u9"}"#,
        &p,
        0,
    )
    .unwrap();
    assert_eq!(f.body.model, "demo");
    assert!(f.body.stream);
    assert_eq!(f.body.max_tokens, Some(77));
    assert_eq!(f.previous_response_id.as_deref(), Some("resp_a-1"));
    assert_eq!(f.body.end_user.as_deref(), Some("u9"));
    let text = r#"{"input":"hi","model":"demo","stream":true}"#;
    let f = inspect(text, &p, 0).unwrap();
    assert_eq!(&text[f.body.model_span.0..f.body.model_span.1], "\"demo\"");
    assert_eq!((f.body.max_tokens, f.previous_response_id), (None, None));
    let f = inspect(r#"{"model":"demo","previous_response_id":null,"user_id":5}"#, &p, 0).unwrap();
    assert_eq!(f.previous_response_id, None);
    assert!(f.body.json_user_id);
}

#[test]
fn bad_creates_are_refused_before_anything_is_forwarded() {
    let p = policy(&[]);
    let refused = |body: &str| inspect(body, &p, 0).unwrap_err();
    assert_eq!(refused(r#"{"input":"hi"}"#), Refusal::MissingModel);
    assert_eq!(refused(r#"{"model":"demo","stream":"yes"}"#), Refusal::StreamNotBoolean { got: "a string" });
    assert_eq!(
        refused(r#"{"model":"demo","previous_response_id":"resp_1","previous_response_id":"resp_2"}"#),
        Refusal::DuplicateParameter("previous_response_id")
    );
    assert!(matches!(
        refused(r#"{"model":"demo","Previous_Response_Id":"resp_2"}"#),
        Refusal::AmbiguousParameter { param: "previous_response_id", .. }
    ));
    assert!(matches!(
        refused(r#"{"model":"demo","previous_response_id":5}"#),
        Refusal::InvalidParameter { param: "previous_response_id", .. }
    ));
    // An id that cannot be a provider's is nobody's: not found, like a foreign one.
    assert_eq!(
        refused(r#"{"model":"demo","previous_response_id":"../../files"}"#),
        Refusal::ResponseNotFound { param: Some("previous_response_id") }
    );
    assert!(matches!(
        refused(r#"{"model":"demo","conversation":"conv_1"}"#),
        Refusal::InvalidParameter { param: "conversation", .. }
    ));
    assert!(inspect(r#"{"model":"demo","conversation":null}"#, &p, 0).is_ok());
}

#[test]
fn mcp_tools_must_be_this_gateways_servers_the_key_may_use() {
    let p = policy(&[]);
    let tools = |t: &str| format!(r#"{{"model":"demo","tools":[{t}]}}"#);
    let ok = |t: &str, principal| inspect(&tools(t), &p, principal).map(|_| ());
    let mcp =
        |url: &str| format!(r#"{{"type":"mcp","server_label":"x","server_url":"{url}","require_approval":"never"}}"#);
    assert_eq!(ok(&mcp("http://gw.example:8080/mcp-servers/everything/mcp"), 0), Ok(()));
    assert_eq!(ok(&mcp("HTTPS://GW.example:8080/mcp-servers/everything/mcp?x=1"), 0), Ok(()));
    assert_eq!(ok(&mcp("http://gw.example:8080/mcp"), 1), Ok(()), "the aggregate serves only allowed servers");
    assert_eq!(ok(&mcp("http://gw.example:8080/mcp-servers/secret-tools/mcp"), 0), Ok(()));
    // Excluded for this key, unknown here, on another host, or no gateway URL at all: 403.
    for (url, principal) in [
        ("http://gw.example:8080/mcp-servers/secret-tools/mcp", 1),
        ("http://gw.example:8080/mcp-servers/nope/mcp", 0),
        ("https://mcp.deepwiki.com/mcp", 0),
        ("http://gw.example:8080@evil.example/mcp", 0),
        ("http://gw.example:8080/mcp-servers/everything/mcp/../../x", 0),
        ("ftp://gw.example:8080/mcp", 0),
    ] {
        assert_eq!(ok(&mcp(url), principal), Err(Refusal::McpToolNotAllowed("x".into())), "{url}");
    }
    assert!(matches!(
        ok(r#"{"type":"mcp","server_label":"gmail","connector_id":"connector_gmail"}"#, 0),
        Err(Refusal::McpToolNotAllowed(l)) if l == "gmail"
    ));
    // A second spelling of server_url could be read by the provider instead of ours.
    assert!(matches!(
        ok(r#"{"type":"mcp","server_url":"http://gw.example:8080/mcp","Server_URL":"https://evil.example/mcp"}"#, 0),
        Err(Refusal::AmbiguousParameter { param: "server_url", .. })
    ));
    assert!(matches!(
        ok(r#"{"type":"mcp","server_url":"http://gw.example:8080/mcp","server_url":"https://evil.example/mcp"}"#, 0),
        Err(Refusal::DuplicateParameter("server_url")) | Err(Refusal::InvalidParameter { param: "tools", .. })
    ));
}

#[test]
fn native_tools_follow_the_allow_list_and_vector_stores_are_refused() {
    let open = policy(&[]);
    let listed = policy(&["web_search", "file_search"]);
    let check = |p: &Policy, t: &str| inspect(&format!(r#"{{"model":"demo","tools":[{t}]}}"#), p, 0).map(|_| ());
    assert_eq!(check(&open, r#"{"type":"web_search"}"#), Ok(()), "empty list: all allowed");
    assert_eq!(check(&open, r#"{"type":"code_interpreter","container":{"type":"auto"}}"#), Ok(()));
    assert_eq!(check(&listed, r#"{"type":"web_search"}"#), Ok(()));
    let refused = check(&listed, r#"{"type":"code_interpreter"}"#).unwrap_err();
    assert_eq!((refused.status(), refused.param()), (400, Some("tools")));
    assert!(refused.message().contains("code_interpreter"), "{}", refused.message());
    // Functions and custom tools are the caller's own code: always allowed.
    assert_eq!(check(&listed, r#"{"type":"function","name":"f","parameters":{}}"#), Ok(()));
    assert_eq!(check(&listed, r#"{"type":"custom","name":"c"}"#), Ok(()));
    let refused = check(&open, r#"{"type":"file_search","vector_store_ids":["vs_1"]}"#).unwrap_err();
    assert_eq!((refused.status(), refused.param()), (400, Some("tools")));
    assert_eq!(check(&listed, r#"{"type":"file_search","vector_store_ids":[]}"#), Ok(()));
    for bad in [r#""web_search""#, r#"{"name":"f"}"#] {
        assert_eq!(check(&open, bad).unwrap_err().param(), Some("tools"), "{bad}");
    }
    let not_a_list = inspect(r#"{"model":"demo","tools":{"type":"web_search"}}"#, &open, 0).unwrap_err();
    assert_eq!(not_a_list.param(), Some("tools"));
    assert!(inspect(r#"{"model":"demo","tools":null}"#, &open, 0).is_ok());
}

#[test]
fn id_based_calls_are_read_from_path_and_method() {
    let call = |path, method| item_call(path, method);
    assert_eq!(call("/v1/responses/resp_1", "GET"), Ok(ItemCall { id: "resp_1", op: ItemOp::Retrieve }));
    assert_eq!(call("/responses/resp_1?stream=true", "GET"), Ok(ItemCall { id: "resp_1", op: ItemOp::Retrieve }));
    assert_eq!(call("/v1/responses/resp_1", "DELETE"), Ok(ItemCall { id: "resp_1", op: ItemOp::Delete }));
    assert_eq!(call("/v1/responses/resp_1/cancel", "POST"), Ok(ItemCall { id: "resp_1", op: ItemOp::Cancel }));
    assert_eq!(
        call("/v1/responses/resp_1/input_items?limit=2&after=msg_1", "GET"),
        Ok(ItemCall { id: "resp_1", op: ItemOp::InputItems })
    );
    assert_eq!(
        call("/v1/responses/resp_1", "POST"),
        Err(Refusal::MethodNotAllowed { method: "POST".into(), allowed: "GET, DELETE" })
    );
    assert_eq!(
        call("/v1/responses/resp_1/cancel", "GET"),
        Err(Refusal::MethodNotAllowed { method: "GET".into(), allowed: "POST" })
    );
    assert_eq!(
        call("/v1/responses/resp_1/other", "GET"),
        Err(Refusal::UnknownPath("/v1/responses/resp_1/other".into()))
    );
    assert_eq!(call("/v1/responses/", "GET"), Err(Refusal::UnknownPath("/v1/responses/".into())));
    assert_eq!(call("/v1/responses/a%2F..", "GET"), Err(Refusal::ResponseNotFound { param: None }));
}

#[test]
fn the_ownership_check_carries_the_callers_identity() {
    let check = owner_check("resp_9", Caller { token_id: 4, user_id: 7, service_account_id: Some(3) });
    let call = check.call("cp", "control-plane", "s3cret");
    assert_eq!(call.cluster, "cp");
    let get = |name: &str| call.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    assert_eq!(get(":path"), Some("/internal/v1/responses/resp_9/owner"));
    assert_eq!(get(":method"), Some("GET"));
    assert_eq!(get(":authority"), Some("control-plane"));
    assert_eq!(get("x-aqueduct-secret"), Some("s3cret"));
    assert_eq!(get("x-aqueduct-token-id"), Some("4"));
    assert_eq!(get("x-aqueduct-user-id"), Some("7"));
    assert_eq!(get("x-aqueduct-service-account-id"), Some("3"));
    let check = owner_check("resp_9", Caller { token_id: 4, user_id: 7, service_account_id: None });
    assert!(!check.call("cp", "a", "s").headers.iter().any(|(k, _)| *k == "x-aqueduct-service-account-id"));
    assert_eq!(owner_answer(Some(204)), Ok(()));
    assert_eq!(owner_answer(Some(404)), Err(Refusal::ResponseNotFound { param: Some("previous_response_id") }));
    for failed in [None, Some(401), Some(500), Some(503)] {
        assert_eq!(owner_answer(failed), Err(Refusal::OwnershipUnavailable), "{failed:?}");
    }
}
