//! OpenAI-shaped error replies.
//!
//! Every error the gateway produces has the body `{"error":{"message","type","param","code"}}`
//! that OpenAI SDKs parse, with the status code OpenAI uses for that kind of failure, so clients
//! see the same exception classes they would see from the provider itself.
//!
//! The filter's refusals are a [`Refusal`]: one variant per reason, mapped to its status, code,
//! param, message and headers here and nowhere else. [`ApiError`] is the open form the control
//! plane builds its own errors with; both write the same body.

use crate::admission::Exceeded;
use crate::host::Host;
use serde::Serialize;
use std::borrow::Cow;

/// An error answered by the gateway itself, before any upstream is contacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// Human-readable message shown by SDKs.
    pub message: String,
    /// The request parameter at fault, if any (`model`, `messages`, ...).
    pub param: Option<&'static str>,
    /// A machine-readable code (`invalid_api_key`, `model_not_found`, ...).
    pub code: Option<&'static str>,
    /// Extra response headers (e.g. `allow` on 405).
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

/// The JSON body of an error: `{"error":{"message","type","param","code"}}`.
fn error_body(message: &str, status: u16, param: Option<&'static str>, code: Option<&'static str>) -> Vec<u8> {
    let body = Body { error: Inner { message, kind: error_type(status), param, code } };
    // Serializing a struct of strings cannot fail; fall back to a fixed body rather than panic.
    serde_json::to_vec(&body).unwrap_or_else(|_| {
        br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#.to_vec()
    })
}

impl ApiError {
    /// An error with the given status and message and no param or code.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None, code: None, headers: Vec::new() }
    }

    /// Sets the offending parameter.
    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// Sets the machine-readable code.
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The OpenAI error `type` for this status.
    pub fn kind(&self) -> &'static str {
        error_type(self.status)
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        error_body(&self.message, self.status, self.param, self.code)
    }

    // === the filter's refusals, for the control plane's answers that must look the same ===

    /// [`Refusal::NoPolicy`].
    pub fn no_policy() -> Self {
        Refusal::NoPolicy.into()
    }

    /// [`Refusal::MissingKey`].
    pub fn missing_key() -> Self {
        Refusal::MissingKey.into()
    }

    /// [`Refusal::InvalidKey`].
    pub fn invalid_key() -> Self {
        Refusal::InvalidKey.into()
    }

    /// [`Refusal::TermsNotAccepted`].
    pub fn terms_not_accepted() -> Self {
        Refusal::TermsNotAccepted.into()
    }

    /// [`Refusal::ExpiredKey`].
    pub fn expired_key() -> Self {
        Refusal::ExpiredKey.into()
    }

    /// [`Refusal::ModelNotFound`].
    pub fn model_not_found(model: &str) -> Self {
        Refusal::ModelNotFound(model.into()).into()
    }

    /// [`Refusal::McpServerNotFound`].
    pub fn mcp_server_not_found(name: &str) -> Self {
        Refusal::McpServerNotFound(name.into()).into()
    }

    /// [`Refusal::UnknownPath`].
    pub fn unknown_path(path: &str) -> Self {
        Refusal::UnknownPath(path.into()).into()
    }

    /// [`Refusal::MethodNotAllowed`].
    pub fn method_not_allowed(method: &str, allowed: &'static str) -> Self {
        Refusal::MethodNotAllowed { method: method.into(), allowed }.into()
    }

    /// [`Refusal::TooLarge`].
    pub fn too_large(limit: u64) -> Self {
        Refusal::TooLarge { limit }.into()
    }

    /// [`Refusal::UnsupportedMediaType`].
    pub fn unsupported_media_type(got: &str, expected: &'static str) -> Self {
        Refusal::UnsupportedMediaType { got: got.into(), expected }.into()
    }

    /// A body the endpoint cannot use (400, no code).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// [`Refusal::DuplicateParameter`].
    pub fn duplicate_parameter(param: &'static str) -> Self {
        Refusal::DuplicateParameter(param).into()
    }

    /// [`Refusal::AmbiguousParameter`].
    pub fn ambiguous_parameter(param: &'static str, detail: &str) -> Self {
        Refusal::AmbiguousParameter { param, detail: detail.into() }.into()
    }
}

/// Why the filter answered a request itself. Every local error reply the filter sends is one
/// of these, and this is the one place that says what each looks like: its status, OpenAI
/// error `type` (from the status, [`error_type`]), `code`, `param`, message and extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No policy has arrived yet, or it cannot vouch for an MCP caller (no identity secret):
    /// fail closed (503).
    NoPolicy,
    /// No key in the request (401).
    MissingKey,
    /// A key that is unknown or revoked: the two are indistinguishable on purpose (401).
    InvalidKey,
    /// A key past its expiry (401).
    ExpiredKey,
    /// A key whose user has not accepted the current Terms of Service (403).
    TermsNotAccepted,
    /// A path the gateway does not serve (404).
    UnknownPath(String),
    /// An unknown MCP server, or one the caller may not use: the two look the same (404).
    McpServerNotFound(String),
    /// An unknown model, or one the caller may not use: the two look the same (404).
    ModelNotFound(String),
    /// Wrong method for a known path (405, with `allow`).
    MethodNotAllowed {
        /// The method the client used.
        method: String,
        /// The one the endpoint accepts.
        allowed: &'static str,
    },
    /// Body larger than the configured limit (413).
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Content type the endpoint does not accept (415).
    UnsupportedMediaType {
        /// The request's `content-type` (empty when it had none).
        got: String,
        /// The media type the endpoint accepts.
        expected: &'static str,
    },
    /// No body where the endpoint needs a JSON object (400).
    EmptyBody,
    /// A JSON body that is not UTF-8 (400).
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A JSON body that is not an object (400).
    NotAnObject,
    /// A body that is not valid JSON: the parser's account of why (400).
    InvalidJson(String),
    /// No `model`, or an empty one (400).
    MissingModel,
    /// A JSON `model` that is not a string (400).
    ModelNotString,
    /// A multipart `model` that is not UTF-8 text (400).
    ModelNotUtf8,
    /// `stream` given as something other than a boolean: what it was (400).
    StreamNotBoolean {
        /// What was given instead (`a string`, `null`, ...).
        got: &'static str,
    },
    /// A parameter the filter decides on, given more than once: providers differ on which
    /// value they read (the first, the last), so none is forwarded (400).
    DuplicateParameter(&'static str),
    /// A field spelled so that some providers would take it for `param` and others not
    /// (`"Model"`, `name*=` in a multipart header, ...): refused rather than guessed (400).
    AmbiguousParameter {
        /// The parameter it could be.
        param: &'static str,
        /// How it was spelled or sent.
        detail: String,
    },
    /// A body that cannot be written back without this member (a lone surrogate escape, an
    /// out-of-range number): refused rather than forwarded with it (400).
    NotRewritable(&'static str),
    /// A multipart `content-type` without exactly one valid boundary (400).
    MultipartBoundary,
    /// A multipart body whose framing is malformed (400).
    MalformedMultipart,
    /// Multipart part headers that are malformed or that parsers read differently (400).
    MalformedPartHeaders,
    /// A cap is full (429, with `retry-after` and the dimension's `x-ratelimit-*` headers).
    RateLimited(Exceeded),
    /// A stored response that is not the caller's, or does not exist: the two look the same
    /// (404); `param` is `previous_response_id` when a create named it.
    ResponseNotFound {
        /// The parameter that named it, if any.
        param: Option<&'static str>,
    },
    /// The control plane could not say whose a stored response is: fail closed (503).
    OwnershipUnavailable,
    /// An `mcp` tool that is not one of this gateway's MCP endpoints the key may use: its
    /// label, server name or URL (403).
    McpToolNotAllowed(String),
    /// A parameter with a value the gateway does not accept: the parameter and why (400).
    InvalidParameter {
        /// The parameter.
        param: &'static str,
        /// What is wrong, as the client should read it.
        message: String,
    },
}

impl Refusal {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NoPolicy | Refusal::OwnershipUnavailable => 503,
            Refusal::MissingKey | Refusal::InvalidKey | Refusal::ExpiredKey => 401,
            Refusal::TermsNotAccepted | Refusal::McpToolNotAllowed(_) => 403,
            Refusal::UnknownPath(_)
            | Refusal::McpServerNotFound(_)
            | Refusal::ModelNotFound(_)
            | Refusal::ResponseNotFound { .. } => 404,
            Refusal::MethodNotAllowed { .. } => 405,
            Refusal::TooLarge { .. } => 413,
            Refusal::UnsupportedMediaType { .. } => 415,
            Refusal::RateLimited(_) => 429,
            Refusal::EmptyBody
            | Refusal::NotUtf8 { .. }
            | Refusal::NotAnObject
            | Refusal::InvalidJson(_)
            | Refusal::MissingModel
            | Refusal::ModelNotString
            | Refusal::ModelNotUtf8
            | Refusal::StreamNotBoolean { .. }
            | Refusal::DuplicateParameter(_)
            | Refusal::AmbiguousParameter { .. }
            | Refusal::NotRewritable(_)
            | Refusal::MultipartBoundary
            | Refusal::MalformedMultipart
            | Refusal::MalformedPartHeaders
            | Refusal::InvalidParameter { .. } => 400,
        }
    }

    /// The OpenAI error `type`.
    pub fn kind(&self) -> &'static str {
        error_type(self.status())
    }

    /// The machine-readable `code`.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            Refusal::NoPolicy => "policy_unavailable",
            Refusal::MissingKey => "missing_api_key",
            Refusal::InvalidKey => "invalid_api_key",
            Refusal::ExpiredKey => "expired_api_key",
            Refusal::TermsNotAccepted => "terms_not_accepted",
            Refusal::UnknownPath(_) => "unknown_url",
            Refusal::McpServerNotFound(_) => "mcp_server_not_found",
            Refusal::ModelNotFound(_) => "model_not_found",
            Refusal::MethodNotAllowed { .. } => "method_not_allowed",
            Refusal::TooLarge { .. } => "request_too_large",
            Refusal::UnsupportedMediaType { .. } => "unsupported_media_type",
            Refusal::MissingModel => "missing_required_parameter",
            Refusal::StreamNotBoolean { .. } => "invalid_type",
            Refusal::DuplicateParameter(_) => "duplicate_parameter",
            Refusal::AmbiguousParameter { .. } => "ambiguous_parameter",
            Refusal::RateLimited(_) => "rate_limit_exceeded",
            Refusal::ResponseNotFound { .. } => "response_not_found",
            Refusal::OwnershipUnavailable => "ownership_unavailable",
            Refusal::McpToolNotAllowed(_) => "mcp_server_not_allowed",
            Refusal::InvalidParameter { .. } => "invalid_value",
            Refusal::EmptyBody
            | Refusal::NotUtf8 { .. }
            | Refusal::NotAnObject
            | Refusal::InvalidJson(_)
            | Refusal::ModelNotString
            | Refusal::ModelNotUtf8
            | Refusal::NotRewritable(_)
            | Refusal::MultipartBoundary
            | Refusal::MalformedMultipart
            | Refusal::MalformedPartHeaders => return None,
        })
    }

    /// The request parameter at fault.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            Refusal::ModelNotFound(_) | Refusal::MissingModel | Refusal::ModelNotString | Refusal::ModelNotUtf8 => {
                Some("model")
            }
            Refusal::StreamNotBoolean { .. } => Some("stream"),
            Refusal::DuplicateParameter(param)
            | Refusal::AmbiguousParameter { param, .. }
            | Refusal::NotRewritable(param)
            | Refusal::InvalidParameter { param, .. } => Some(param),
            Refusal::ResponseNotFound { param } => *param,
            Refusal::McpToolNotAllowed(_) => Some("tools"),
            _ => None,
        }
    }

    /// The message SDKs show.
    pub fn message(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Refusal::NoPolicy => "The gateway has no policy yet; try again shortly.",
            Refusal::MissingKey => {
                "Missing API key. Send it as 'Authorization: Bearer <key>' (or the 'x-api-key' header)."
            }
            Refusal::InvalidKey => "Invalid API key.",
            Refusal::ExpiredKey => "API key expired.",
            Refusal::TermsNotAccepted => {
                "Accept the current Terms of Service in the admin UI (/ui/terms) before using the API."
            }
            Refusal::EmptyBody => "Request body is empty; expected a JSON object.",
            Refusal::NotAnObject => "Invalid JSON: the body must be a JSON object.",
            Refusal::MissingModel => "Missing required parameter: 'model'.",
            Refusal::ModelNotString => "'model' must be a string.",
            Refusal::ModelNotUtf8 => "'model' must be UTF-8 text.",
            Refusal::MultipartBoundary => "multipart/form-data needs exactly one valid boundary parameter.",
            Refusal::MalformedMultipart => "Malformed multipart/form-data body.",
            Refusal::MalformedPartHeaders => "Malformed or ambiguous part headers in the multipart/form-data body.",
            Refusal::ResponseNotFound { .. } => "Response not found",
            Refusal::OwnershipUnavailable => {
                "The gateway could not check whose 'previous_response_id' is; try again shortly."
            }
            Refusal::McpToolNotAllowed(server) => return format!(
                "The MCP server '{server}' in 'tools' is not one of this gateway's MCP servers you may use; point \
                 'server_url' at this gateway's /mcp-servers/<name>/mcp."
            )
            .into(),
            Refusal::InvalidParameter { message, .. } => return message.clone().into(),
            Refusal::UnknownPath(path) => return format!("Unknown request URL: {path}.").into(),
            Refusal::McpServerNotFound(name) => {
                return format!("The MCP server '{name}' does not exist or you do not have access to it.").into()
            }
            Refusal::ModelNotFound(model) => {
                return format!("The model '{model}' does not exist or you do not have access to it.").into()
            }
            Refusal::MethodNotAllowed { method, allowed } => {
                return format!("Method {method} is not allowed here; use {allowed}.").into()
            }
            Refusal::TooLarge { limit } => return format!("Request body exceeds the limit of {limit} bytes.").into(),
            Refusal::UnsupportedMediaType { got, expected } => {
                let got = if got.is_empty() { "none" } else { got };
                return format!("Unsupported Content-Type: {got}; expected {expected}.").into();
            }
            Refusal::NotUtf8 { valid_up_to } => {
                return format!("Request body is not valid UTF-8 (at byte {valid_up_to}).").into()
            }
            Refusal::InvalidJson(why) => return format!("Invalid JSON: {why}.").into(),
            Refusal::StreamNotBoolean { got } => {
                return format!("Invalid type for 'stream': expected a boolean, but got {got} instead.").into()
            }
            Refusal::DuplicateParameter(param) => {
                return format!("Invalid request: duplicate parameter '{param}'; give it once.").into()
            }
            Refusal::AmbiguousParameter { param, detail } => {
                return format!("Invalid request: ambiguous field {detail}; name '{param}' exactly, once.").into()
            }
            Refusal::NotRewritable(name) => return format!(
                "The body could not be rewritten without '{name}' (it holds a lone surrogate escape or an out-of-range number); send it without '{name}'."
            )
            .into(),
            Refusal::RateLimited(e) => {
                return format!(
                    "Rate limit exceeded: {} allows {} {} per minute. Retry in {} s.",
                    e.label,
                    e.limit,
                    e.dim.words(),
                    retry_after_secs(e.retry_after_ms)
                )
                .into()
            }
        })
    }

    /// Response headers besides `content-type`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Refusal::MethodNotAllowed { allowed, .. } => vec![("allow", (*allowed).to_string())],
            Refusal::RateLimited(e) => vec![
                ("retry-after", retry_after_secs(e.retry_after_ms).to_string()),
                (e.dim.limit_header(), e.limit.to_string()),
                (e.dim.remaining_header(), "0".to_string()),
                (e.dim.reset_header(), reset_value(e.retry_after_ms)),
            ],
            _ => Vec::new(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        error_body(&self.message(), self.status(), self.param(), self.code())
    }

    /// Answers the request with this refusal: status, `content-type: application/json` and
    /// [`Refusal::headers`], and [`Refusal::body`].
    pub fn send(&self, host: &mut impl Host) {
        let extra = self.headers();
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(1 + extra.len());
        headers.push(("content-type", "application/json"));
        headers.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        host.send_response(self.status(), &headers, &self.body());
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError {
            status: r.status(),
            message: r.message().into_owned(),
            param: r.param(),
            code: r.code(),
            headers: r.headers(),
        }
    }
}

/// Whole seconds until a retry can pass, as `retry-after` says it (at least 1).
fn retry_after_secs(retry_after_ms: i64) -> u64 {
    (retry_after_ms.max(1) as u64).div_ceil(1000)
}

/// An `x-ratelimit-reset-*` value: whole seconds, rounded up, with the unit (`12s`).
pub fn reset_value(ms: i64) -> String {
    format!("{}s", (ms.max(0) as u64).div_ceil(1000))
}

/// The OpenAI error `type` used for a status code.
pub fn error_type(status: u16) -> &'static str {
    match status {
        403 => "permission_denied_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        504 => "timeout_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemHost;
    use crate::limits::Dim;
    use std::sync::Arc;

    /// Every refusal's status and body, byte for byte as the filter answered before refusals
    /// were typed (clients and the end-to-end tests read them).
    #[test]
    fn refusals_keep_their_wire_form() {
        let exceeded = |label: &str, dim, limit, retry_after_ms| {
            Refusal::RateLimited(Exceeded { label: Arc::from(label), dim, limit, retry_after_ms })
        };
        let cases: Vec<(Refusal, u16, &str)> = vec![
            (
                Refusal::NoPolicy,
                503,
                r#"{"error":{"message":"The gateway has no policy yet; try again shortly.","type":"server_error","param":null,"code":"policy_unavailable"}}"#,
            ),
            (
                Refusal::MissingKey,
                401,
                r#"{"error":{"message":"Missing API key. Send it as 'Authorization: Bearer <key>' (or the 'x-api-key' header).","type":"invalid_request_error","param":null,"code":"missing_api_key"}}"#,
            ),
            (
                Refusal::InvalidKey,
                401,
                r#"{"error":{"message":"Invalid API key.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
            ),
            (
                Refusal::TermsNotAccepted,
                403,
                r#"{"error":{"message":"Accept the current Terms of Service in the admin UI (/ui/terms) before using the API.","type":"permission_denied_error","param":null,"code":"terms_not_accepted"}}"#,
            ),
            (
                Refusal::ExpiredKey,
                401,
                r#"{"error":{"message":"API key expired.","type":"invalid_request_error","param":null,"code":"expired_api_key"}}"#,
            ),
            (
                Refusal::ModelNotFound("gpt-\"x\"\u{1}é".into()),
                404,
                r#"{"error":{"message":"The model 'gpt-\"x\"\u0001é' does not exist or you do not have access to it.","type":"not_found_error","param":"model","code":"model_not_found"}}"#,
            ),
            (
                Refusal::McpServerNotFound("srv".into()),
                404,
                r#"{"error":{"message":"The MCP server 'srv' does not exist or you do not have access to it.","type":"not_found_error","param":null,"code":"mcp_server_not_found"}}"#,
            ),
            (
                Refusal::UnknownPath("/v1/nope?x=1".into()),
                404,
                r#"{"error":{"message":"Unknown request URL: /v1/nope?x=1.","type":"not_found_error","param":null,"code":"unknown_url"}}"#,
            ),
            (
                Refusal::MethodNotAllowed { method: "DELETE".into(), allowed: "POST" },
                405,
                r#"{"error":{"message":"Method DELETE is not allowed here; use POST.","type":"invalid_request_error","param":null,"code":"method_not_allowed"}}"#,
            ),
            (
                Refusal::TooLarge { limit: 1234 },
                413,
                r#"{"error":{"message":"Request body exceeds the limit of 1234 bytes.","type":"invalid_request_error","param":null,"code":"request_too_large"}}"#,
            ),
            (
                Refusal::UnsupportedMediaType { got: String::new(), expected: "application/json" },
                415,
                r#"{"error":{"message":"Unsupported Content-Type: none; expected application/json.","type":"invalid_request_error","param":null,"code":"unsupported_media_type"}}"#,
            ),
            (
                Refusal::UnsupportedMediaType { got: "text/html; x".into(), expected: "multipart/form-data" },
                415,
                r#"{"error":{"message":"Unsupported Content-Type: text/html; x; expected multipart/form-data.","type":"invalid_request_error","param":null,"code":"unsupported_media_type"}}"#,
            ),
            (
                Refusal::EmptyBody,
                400,
                r#"{"error":{"message":"Request body is empty; expected a JSON object.","type":"invalid_request_error","param":null,"code":null}}"#,
            ),
            (
                Refusal::NotUtf8 { valid_up_to: 0 },
                400,
                r#"{"error":{"message":"Request body is not valid UTF-8 (at byte 0).","type":"invalid_request_error","param":null,"code":null}}"#,
            ),
            (
                Refusal::NotAnObject,
                400,
                r#"{"error":{"message":"Invalid JSON: the body must be a JSON object.","type":"invalid_request_error","param":null,"code":null}}"#,
            ),
            (
                Refusal::InvalidJson("EOF while parsing a value at line 1 column 13".into()),
                400,
                r#"{"error":{"message":"Invalid JSON: EOF while parsing a value at line 1 column 13.","type":"invalid_request_error","param":null,"code":null}}"#,
            ),
            (
                Refusal::MissingModel,
                400,
                r#"{"error":{"message":"Missing required parameter: 'model'.","type":"invalid_request_error","param":"model","code":"missing_required_parameter"}}"#,
            ),
            (
                Refusal::ModelNotString,
                400,
                r#"{"error":{"message":"'model' must be a string.","type":"invalid_request_error","param":"model","code":null}}"#,
            ),
            (
                Refusal::ModelNotUtf8,
                400,
                r#"{"error":{"message":"'model' must be UTF-8 text.","type":"invalid_request_error","param":"model","code":null}}"#,
            ),
            (
                Refusal::StreamNotBoolean { got: "a number" },
                400,
                r#"{"error":{"message":"Invalid type for 'stream': expected a boolean, but got a number instead.","type":"invalid_request_error","param":"stream","code":"invalid_type"}}"#,
            ),
            (
                Refusal::DuplicateParameter("model"),
                400,
                r#"{"error":{"message":"Invalid request: duplicate parameter 'model'; give it once.","type":"invalid_request_error","param":"model","code":"duplicate_parameter"}}"#,
            ),
            (
                Refusal::AmbiguousParameter { param: "model", detail: "\"Model\"".into() },
                400,
                r#"{"error":{"message":"Invalid request: ambiguous field \"Model\"; name 'model' exactly, once.","type":"invalid_request_error","param":"model","code":"ambiguous_parameter"}}"#,
            ),
            (
                Refusal::NotRewritable("user_id"),
                400,
                r#"{"error":{"message":"The body could not be rewritten without 'user_id' (it holds a lone surrogate escape or an out-of-range number); send it without 'user_id'.","type":"invalid_request_error","param":"user_id","code":null}}"#,
            ),
            (
                Refusal::MultipartBoundary,
                400,
                r#"{"error":{"message":"multipart/form-data needs exactly one valid boundary parameter.","type":"invalid_request_error","param":null,"code":null}}"#,
            ),
            (
                Refusal::MalformedMultipart,
                400,
                r#"{"error":{"message":"Malformed multipart/form-data body.","type":"invalid_request_error","param":null,"code":null}}"#,
            ),
            (
                Refusal::MalformedPartHeaders,
                400,
                r#"{"error":{"message":"Malformed or ambiguous part headers in the multipart/form-data body.","type":"invalid_request_error","param":null,"code":null}}"#,
            ),
            (
                exceeded("key 9", Dim::Requests, 1, 58_766),
                429,
                r#"{"error":{"message":"Rate limit exceeded: key 9 allows 1 requests per minute. Retry in 59 s.","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}"#,
            ),
            (
                exceeded("org \"1\"", Dim::OutputTokens, 3, 57_532),
                429,
                r#"{"error":{"message":"Rate limit exceeded: org \"1\" allows 3 output tokens per minute. Retry in 58 s.","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}"#,
            ),
            (
                Refusal::ResponseNotFound { param: None },
                404,
                r#"{"error":{"message":"Response not found","type":"not_found_error","param":null,"code":"response_not_found"}}"#,
            ),
            (
                Refusal::ResponseNotFound { param: Some("previous_response_id") },
                404,
                r#"{"error":{"message":"Response not found","type":"not_found_error","param":"previous_response_id","code":"response_not_found"}}"#,
            ),
            (
                Refusal::OwnershipUnavailable,
                503,
                r#"{"error":{"message":"The gateway could not check whose 'previous_response_id' is; try again shortly.","type":"server_error","param":null,"code":"ownership_unavailable"}}"#,
            ),
            (
                Refusal::McpToolNotAllowed("deepwiki".into()),
                403,
                r#"{"error":{"message":"The MCP server 'deepwiki' in 'tools' is not one of this gateway's MCP servers you may use; point 'server_url' at this gateway's /mcp-servers/<name>/mcp.","type":"permission_denied_error","param":"tools","code":"mcp_server_not_allowed"}}"#,
            ),
            (
                Refusal::InvalidParameter { param: "tools", message: "Invalid tool type: 'web_search'.".into() },
                400,
                r#"{"error":{"message":"Invalid tool type: 'web_search'.","type":"invalid_request_error","param":"tools","code":"invalid_value"}}"#,
            ),
        ];
        for (refusal, status, body) in cases {
            assert_eq!(refusal.status(), status, "{refusal:?}");
            assert_eq!(String::from_utf8(refusal.body()).unwrap(), body, "{refusal:?}");
            // The control plane's answers built from the same refusal are the same bytes.
            let api = ApiError::from(refusal.clone());
            assert_eq!((api.status, api.body()), (status, refusal.body()));
        }
    }

    #[test]
    fn a_refusal_is_sent_with_its_headers_after_the_content_type() {
        let mut host = MemHost::default();
        Refusal::MethodNotAllowed { method: "GET".into(), allowed: "POST" }.send(&mut host);
        let (status, headers, _) = host.reply.take().unwrap();
        assert_eq!(status, 405);
        assert_eq!(headers, [("content-type".into(), "application/json".into()), ("allow".into(), "POST".into())]);
        let exceeded = Exceeded { label: Arc::from("key 9"), dim: Dim::InputTokens, limit: 5, retry_after_ms: 58_001 };
        Refusal::RateLimited(exceeded).send(&mut host);
        let (status, headers, _) = host.reply.take().unwrap();
        assert_eq!(status, 429);
        let expected: Vec<(String, String)> = [
            ("content-type", "application/json"),
            ("retry-after", "59"),
            ("x-ratelimit-limit-input-tokens", "5"),
            ("x-ratelimit-remaining-input-tokens", "0"),
            ("x-ratelimit-reset-input-tokens", "59s"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(headers, expected);
        // Nothing else carries extra headers.
        assert!(Refusal::NoPolicy.headers().is_empty());
    }

    #[test]
    fn the_control_planes_constructors_are_the_filters_refusals() {
        assert_eq!(ApiError::missing_key(), Refusal::MissingKey.into());
        assert_eq!(ApiError::invalid_key(), Refusal::InvalidKey.into());
        assert_eq!(ApiError::unknown_path("/x"), Refusal::UnknownPath("/x".into()).into());
        assert_eq!(ApiError::mcp_server_not_found("s"), Refusal::McpServerNotFound("s".into()).into());
        let e = ApiError::unsupported_media_type("", "application/json");
        assert_eq!((e.status, e.code), (415, Some("unsupported_media_type")));
        assert_eq!(ApiError::method_not_allowed("GET", "POST").headers, [("allow", "POST".to_string())]);
    }

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::model_not_found("gpt-x");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "not_found_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-x"));
    }

    #[test]
    fn types_per_status() {
        assert_eq!(error_type(400), "invalid_request_error");
        assert_eq!(error_type(401), "invalid_request_error");
        assert_eq!(error_type(413), "invalid_request_error");
        assert_eq!(error_type(429), "rate_limit_error");
        assert_eq!(error_type(503), "server_error");
        assert_eq!(error_type(504), "timeout_error");
    }

    #[test]
    fn message_with_quotes_is_escaped() {
        let e = ApiError::model_not_found("a\"b");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("a\"b"));
    }
}
