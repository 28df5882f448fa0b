//! OpenAI-shaped error replies.
//!
//! Every error the gateway produces has the body `{"error":{"message","type","param","code"}}`
//! that OpenAI SDKs parse, with the status code OpenAI uses for that kind of failure, so clients
//! see the same exception classes they would see from the provider itself.

use serde::Serialize;

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
        let body =
            Body { error: Inner { message: &self.message, kind: self.kind(), param: self.param, code: self.code } };
        // Serializing a struct of strings cannot fail; fall back to a fixed body rather than panic.
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#.to_vec()
        })
    }

    // === constructors for the errors the filter produces ===

    /// No policy has arrived yet: fail closed.
    pub fn no_policy() -> Self {
        Self::new(503, "The gateway has no policy yet; try again shortly.").code("policy_unavailable")
    }

    /// No key in the request.
    pub fn missing_key() -> Self {
        Self::new(401, "Missing API key. Send it as 'Authorization: Bearer <key>' (or the 'x-api-key' header).")
            .code("missing_api_key")
    }

    /// A key that is unknown or revoked. The two are indistinguishable on purpose.
    pub fn invalid_key() -> Self {
        Self::new(401, "Invalid API key.").code("invalid_api_key")
    }

    /// A key whose user has not accepted the current Terms of Service.
    pub fn terms_not_accepted() -> Self {
        Self::new(403, "Accept the current Terms of Service in the admin UI (/ui/terms) before using the API.")
            .code("terms_not_accepted")
    }

    /// A key past its expiry.
    pub fn expired_key() -> Self {
        Self::new(401, "API key expired.").code("expired_api_key")
    }

    /// An unknown model, or one the caller may not use: the two look the same.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(404, format!("The model '{model}' does not exist or you do not have access to it."))
            .param("model")
            .code("model_not_found")
    }

    /// An unknown MCP server, or one the caller may not use: the two look the same.
    pub fn mcp_server_not_found(name: &str) -> Self {
        Self::new(404, format!("The MCP server '{name}' does not exist or you do not have access to it."))
            .code("mcp_server_not_found")
    }

    /// A path the gateway does not serve.
    pub fn unknown_path(path: &str) -> Self {
        Self::new(404, format!("Unknown request URL: {path}.")).code("unknown_url")
    }

    /// Wrong method for a known path.
    pub fn method_not_allowed(method: &str, allowed: &'static str) -> Self {
        Self::new(405, format!("Method {method} is not allowed here; use {allowed}."))
            .code("method_not_allowed")
            .header("allow", allowed)
    }

    /// Body larger than the configured limit.
    pub fn too_large(limit: u64) -> Self {
        Self::new(413, format!("Request body exceeds the limit of {limit} bytes.")).code("request_too_large")
    }

    /// Content type the endpoint does not accept.
    pub fn unsupported_media_type(got: &str, expected: &'static str) -> Self {
        let got = if got.is_empty() { "none" } else { got };
        Self::new(415, format!("Unsupported Content-Type: {got}; expected {expected}.")).code("unsupported_media_type")
    }

    /// A body the endpoint cannot use.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// A parameter the filter decides on, given more than once: providers differ on which
    /// value they read (the first, the last), so none is forwarded.
    pub fn duplicate_parameter(param: &'static str) -> Self {
        Self::new(400, format!("Invalid request: duplicate parameter '{param}'; give it once."))
            .param(param)
            .code("duplicate_parameter")
    }

    /// A field spelled so that some providers would take it for `param` and others not
    /// (`"Model"`, `name*=` in a multipart header, ...): refused rather than guessed.
    pub fn ambiguous_parameter(param: &'static str, detail: &str) -> Self {
        Self::new(400, format!("Invalid request: ambiguous field {detail}; name '{param}' exactly, once."))
            .param(param)
            .code("ambiguous_parameter")
    }
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
