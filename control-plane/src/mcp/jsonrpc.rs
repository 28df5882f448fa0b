//! The little of JSON-RPC 2.0 and Streamable HTTP the gateway needs to read: what a POST body
//! asks for, protocol-level error replies, and the reply to one request id out of a JSON or SSE
//! response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// JSON-RPC parse error.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC invalid request.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC method not found.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC invalid params.
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// Server error used by the MCP SDKs for transport-level refusals (no session, bad session).
pub const SERVER_ERROR: i64 = -32000;
/// Used by the MCP SDKs for "session not found".
pub const SESSION_NOT_FOUND: i64 = -32001;

/// What a POST body holds, as far as routing and the ledger care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFacts {
    /// The method (requests and notifications), else `None` (a response).
    pub method: Option<String>,
    /// The request id, for requests.
    pub id: Option<Value>,
    /// `params.name` of a `tools/call`.
    pub tool: Option<String>,
}

/// A protocol-level refusal: a JSON-RPC error answered with an HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON-RPC error code.
    pub code: i64,
    /// Message.
    pub message: String,
    /// The request id, when known.
    pub id: Value,
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        error_reply(self.status, self.code, &self.message, self.id)
    }
}

fn bad(code: i64, message: impl Into<String>, id: Value) -> RpcError {
    RpcError { status: StatusCode::BAD_REQUEST, code, message: message.into(), id }
}

/// Reads a POST body: one message, or a batch (protocol 2025-03-26). Returns the parsed value
/// and the facts of each message, or a JSON-RPC error.
pub fn parse_body(body: &[u8]) -> Result<(Value, Vec<MessageFacts>), RpcError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(PARSE_ERROR, format!("Parse error: {e}"), Value::Null))?;
    let messages: Vec<&Value> = match &v {
        Value::Array(items) if !items.is_empty() => items.iter().collect(),
        Value::Object(_) => vec![&v],
        _ => {
            return Err(bad(
                INVALID_REQUEST,
                "Invalid Request: expected a JSON-RPC message object (or a non-empty batch)",
                Value::Null,
            ))
        }
    };
    let mut facts = Vec::with_capacity(messages.len());
    for m in messages {
        if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(bad(
                INVALID_REQUEST,
                "Invalid Request: \"jsonrpc\" must be \"2.0\"",
                m.get("id").cloned().unwrap_or(Value::Null),
            ));
        }
        let method = m.get("method").and_then(Value::as_str).map(str::to_string);
        let tool = (method.as_deref() == Some("tools/call"))
            .then(|| m.pointer("/params/name").and_then(Value::as_str).map(str::to_string))
            .flatten();
        let id = method.as_ref().and_then(|_| m.get("id").cloned()).filter(|i| !i.is_null());
        facts.push(MessageFacts { method, id, tool });
    }
    Ok((v, facts))
}

/// A JSON-RPC error object as a reply with `status`.
pub fn error_reply(status: StatusCode, code: i64, message: &str, id: Value) -> Response {
    (status, [("content-type", "application/json")], error_body(code, message, id).to_string()).into_response()
}

/// A JSON-RPC error message.
pub fn error_body(code: i64, message: &str, id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A JSON-RPC result message.
pub fn result_body(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// Incremental parser of `text/event-stream`: feed bytes, take complete events' data.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:` field.
    pub id: Option<String>,
    /// `event:` field.
    pub event: Option<String>,
    /// `data:` lines joined by `\n`.
    pub data: String,
}

impl SseParser {
    /// Adds bytes; returns the events completed by them.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        // Events end at a blank line (\n\n, \r\n\r\n or \r\r). Only whole events are decoded, so a
        // UTF-8 character split across chunks is never damaged.
        while let Some((end, sep)) = blank_line(&self.buf) {
            let block = String::from_utf8_lossy(&self.buf[..end]).replace("\r\n", "\n").replace('\r', "\n");
            self.buf.drain(..end + sep);
            let mut ev = SseEvent::default();
            let mut data = Vec::new();
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "data" => data.push(value.to_string()),
                    "id" => ev.id = Some(value.to_string()),
                    "event" => ev.event = Some(value.to_string()),
                    _ => {}
                }
            }
            if !data.is_empty() {
                ev.data = data.join("\n");
                out.push(ev);
            }
        }
        out
    }
}

/// The first blank line in `buf`: (where the event ends, length of the separator).
fn blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        let rest = &buf[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else if rest.starts_with(b"\n\n") || rest.starts_with(b"\r\r") {
            Some((i, 2))
        } else {
            None
        }
    })
}

/// Whether `msg` is the reply (result or error) to request `id`.
pub fn is_reply_to(msg: &Value, id: &Value) -> bool {
    msg.get("method").is_none()
        && msg.get("id") == Some(id)
        && (msg.get("result").is_some() || msg.get("error").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_single_and_batch_messages() {
        let (_, f) = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#).unwrap();
        assert_eq!(
            f[0],
            MessageFacts { method: Some("tools/call".into()), id: Some(json!(1)), tool: Some("echo".into()) }
        );
        let (_, f) = parse_body(
            br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"a","result":{}}]"#,
        )
        .unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].id, None);
        assert_eq!(f[1].method, None);
        for bad in [&b"nope"[..], b"[]", b"3", br#"{"id":1,"method":"x"}"#] {
            assert_eq!(parse_body(bad).unwrap_err().status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn parses_sse_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.feed(b"event: message\r\nid: 7\r\ndata: {\"a\":").is_empty());
        let ev = p.feed(b"1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\n");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0], SseEvent { id: Some("7".into()), event: Some("message".into()), data: "{\"a\":1}".into() });
        assert_eq!(ev[1].data, "x\ny");
        // A character split between chunks survives.
        let text = "data: {\"t\":\"é\"}\n\n".as_bytes();
        let cut = text.iter().position(|b| *b >= 0x80).unwrap() + 1;
        assert!(p.feed(&text[..cut]).is_empty());
        assert_eq!(p.feed(&text[cut..])[0].data, "{\"t\":\"é\"}");
    }

    #[test]
    fn replies_by_id() {
        assert!(is_reply_to(&json!({"jsonrpc":"2.0","id":3,"result":{}}), &json!(3)));
        assert!(!is_reply_to(&json!({"jsonrpc":"2.0","id":3,"method":"x"}), &json!(3)));
        assert!(!is_reply_to(&json!({"jsonrpc":"2.0","id":"3","result":{}}), &json!(3)));
    }
}
