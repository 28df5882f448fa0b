//! The JSON-RPC side of Streamable HTTP, as far as the gateway reads and writes it, on rmcp's
//! model types: what a POST body asks for, protocol-level error replies, and the reply to one
//! request among the messages of an answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rmcp::model::{
    ErrorCode, ErrorData, JsonObject, JsonRpcMessage, JsonRpcResponse, JsonRpcVersion2_0, Notification,
    ProtocolVersion, RequestId, RequestOptionalParam,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Server error the MCP SDKs answer transport-level refusals with (no session, bad session);
/// rmcp names no constant for it.
pub const SERVER_ERROR: ErrorCode = ErrorCode(-32000);
/// What the MCP SDKs answer for an unknown session.
pub const SESSION_NOT_FOUND: ErrorCode = ErrorCode(-32001);

/// A JSON-RPC message with its method and payloads left open.
///
/// The gateway forwards what it does not answer itself, so it does not read messages as rmcp's
/// typed `ClientJsonRpcMessage` or `ServerJsonRpcMessage`: a request whose params rmcp models
/// differently than its sender would pass for an unknown method, and typed results drop the
/// fields rmcp does not model (the reference server's tools carry `execution`, which rmcp's
/// `Tool` lacks).
pub type Message = JsonRpcMessage<RequestOptionalParam<String, JsonObject>, Value, Notification<String, JsonObject>>;

/// What a POST's message is, as far as routing and the ledger care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFacts {
    /// The method (requests and notifications), else `None` (a response).
    pub method: Option<String>,
    /// The request id, for requests.
    pub id: Option<RequestId>,
    /// `params.name` of a `tools/call`.
    pub tool: Option<String>,
}

impl From<&Message> for MessageFacts {
    fn from(message: &Message) -> Self {
        match message {
            JsonRpcMessage::Request(r) => {
                let method = r.request.method.clone();
                let tool = (method == "tools/call")
                    .then(|| r.request.params.as_ref()?.get("name")?.as_str().map(str::to_string))
                    .flatten();
                Self { method: Some(method), id: Some(r.id.clone()), tool }
            }
            JsonRpcMessage::Notification(n) => {
                Self { method: Some(n.notification.method.clone()), id: None, tool: None }
            }
            JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_) => Self { method: None, id: None, tool: None },
        }
    }
}

/// A protocol-level refusal: a JSON-RPC error answered with an HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// HTTP status.
    pub status: StatusCode,
    /// The error.
    pub error: ErrorData,
    /// The request id, when known.
    pub id: Option<RequestId>,
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        error_reply(self.status, self.error, self.id)
    }
}

/// Reads a POST body: one message, or a batch (protocol 2025-03-26). Returns the body as JSON
/// (what is forwarded) and its messages, or a JSON-RPC error.
pub fn parse_body(body: &[u8]) -> Result<(Value, Vec<Message>), RpcError> {
    let bad = |error, id| RpcError { status: StatusCode::BAD_REQUEST, error, id };
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| bad(ErrorData::parse_error(format!("Parse error: {e}"), None), None))?;
    let items = match &json {
        Value::Array(items) if !items.is_empty() => items.as_slice(),
        Value::Object(_) => std::slice::from_ref(&json),
        _ => {
            let text = "Invalid Request: expected a JSON-RPC message object (or a non-empty batch)";
            return Err(bad(ErrorData::invalid_request(text, None), None));
        }
    };
    let messages = items
        .iter()
        .map(|m| {
            Message::deserialize(m).map_err(|e| {
                let id = m.get("id").and_then(|id| RequestId::deserialize(id).ok());
                bad(ErrorData::invalid_request(format!("Invalid Request: not a JSON-RPC 2.0 message ({e})"), None), id)
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((json, messages))
}

/// The messages of a JSON answer (one, or a batch), leaving out what is not a JSON-RPC message.
pub fn messages(body: &[u8]) -> Vec<Message> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => items.iter().filter_map(|m| Message::deserialize(m).ok()).collect(),
        Ok(m) => Message::deserialize(&m).ok().into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

/// The reply to request `id` (its result, or its error), if `message` is it.
pub fn reply_to(message: Message, id: &RequestId) -> Option<Result<Value, ErrorData>> {
    match message {
        JsonRpcMessage::Response(r) if r.id == *id => Some(Ok(r.result)),
        JsonRpcMessage::Error(e) if e.id.as_ref() == Some(id) => Some(Err(e.error)),
        _ => None,
    }
}

/// rmcp's `JsonRpcError` with its `id` always written. JSON-RPC 2.0, and MCP before 2026-07-28,
/// answer `"id": null` when the request's id is unknown; rmcp leaves the id out (2026-07-28),
/// which clients of the earlier revisions may refuse.
#[derive(Serialize)]
struct ErrorMessage {
    jsonrpc: JsonRpcVersion2_0,
    id: Option<RequestId>,
    error: ErrorData,
}

/// A JSON-RPC error message.
pub fn error_body(error: ErrorData, id: Option<RequestId>) -> impl Serialize {
    ErrorMessage { jsonrpc: JsonRpcVersion2_0, id, error }
}

/// A JSON-RPC error as a reply with `status`.
pub fn error_reply(status: StatusCode, error: ErrorData, id: Option<RequestId>) -> Response {
    (status, Json(error_body(error, id))).into_response()
}

/// A JSON-RPC result message.
pub fn result_body<R: Serialize>(id: RequestId, result: R) -> JsonRpcResponse<R> {
    JsonRpcResponse { jsonrpc: JsonRpcVersion2_0, id, result }
}

/// A protocol version as written, known to rmcp or not (rmcp builds unknown ones only by
/// deserializing them).
pub fn protocol_version(version: &str) -> ProtocolVersion {
    use serde::de::IntoDeserializer;
    let version: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = version.into_deserializer();
    ProtocolVersion::deserialize(version).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(body: &[u8]) -> Vec<MessageFacts> {
        parse_body(body).unwrap().1.iter().map(MessageFacts::from).collect()
    }

    #[test]
    fn reads_single_and_batch_messages() {
        let f = facts(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#);
        assert_eq!(
            f[0],
            MessageFacts {
                method: Some("tools/call".into()),
                id: Some(RequestId::Number(1)),
                tool: Some("echo".into())
            }
        );
        let f = facts(
            br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"a","result":{}}]"#,
        );
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].id, None);
        assert_eq!(f[1].method, None);
        assert_eq!(facts(br#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#)[0].id, Some(RequestId::String("p".into())));
        for bad in [&b"nope"[..], b"[]", b"3", br#"{"id":1,"method":"x"}"#, br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#]
        {
            assert_eq!(parse_body(bad).unwrap_err().status, StatusCode::BAD_REQUEST);
        }
        assert_eq!(parse_body(b"{").unwrap_err().error.code, ErrorCode::PARSE_ERROR);
        let e = parse_body(br#"{"jsonrpc":"1.0","id":4,"method":"x"}"#).unwrap_err();
        assert_eq!((e.error.code, e.id), (ErrorCode::INVALID_REQUEST, Some(RequestId::Number(4))));
    }

    #[test]
    fn errors_name_an_unknown_id_as_null() {
        let e = serde_json::to_value(error_body(ErrorData::new(SERVER_ERROR, "no", None), None)).unwrap();
        assert_eq!(e, json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "no"}}));
        let e = serde_json::to_value(error_body(ErrorData::invalid_params("x", None), Some(RequestId::Number(3))));
        assert_eq!(e.unwrap()["id"], 3);
    }

    #[test]
    fn replies_by_id() {
        let reply = |v: Value, id: RequestId| reply_to(Message::deserialize(&v).unwrap(), &id);
        assert_eq!(
            reply(json!({"jsonrpc":"2.0","id":3,"result":{"a":1}}), RequestId::Number(3)),
            Some(Ok(json!({"a":1})))
        );
        let e = reply(json!({"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"m"}}), RequestId::Number(3));
        assert_eq!(e.unwrap().unwrap_err().message, "m");
        assert_eq!(reply(json!({"jsonrpc":"2.0","id":3,"method":"x"}), RequestId::Number(3)), None);
        assert_eq!(reply(json!({"jsonrpc":"2.0","id":"3","result":{}}), RequestId::Number(3)), None);
        let batch = br#"[{"jsonrpc":"2.0","method":"notifications/progress","params":{}},{"jsonrpc":"2.0","id":1,"result":{}}]"#;
        assert_eq!(messages(batch).len(), 2);
        assert!(messages(b"not json").is_empty());
    }

    #[test]
    fn keeps_unknown_protocol_versions() {
        assert_eq!(protocol_version("2025-06-18"), ProtocolVersion::V_2025_06_18);
        assert_eq!(protocol_version("2099-01-01").as_str(), "2099-01-01");
    }
}
