//! Request classification and body inspection: which endpoint a path is, what it must look
//! like, and the `model` it names — found and rewritten in place, never re-serialized, so the
//! body the provider sees is byte-for-byte the client's apart from the model name.

use crate::error::ApiError;
use serde::Deserialize;
use serde_json::value::RawValue;

/// An OpenAI-compatible endpoint the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    AudioSpeech,
    AudioTranscriptions,
    ImagesGenerations,
    Models,
}

/// How an endpoint's request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (`GET /v1/models`).
    None,
    /// `application/json`.
    Json,
    /// `multipart/form-data` (audio uploads).
    Multipart,
}

impl Endpoint {
    /// The one method the endpoint accepts.
    pub fn method(self) -> &'static str {
        match self {
            Endpoint::Models => "GET",
            _ => "POST",
        }
    }

    /// The body encoding the endpoint accepts.
    pub fn body_kind(self) -> BodyKind {
        match self {
            Endpoint::Models => BodyKind::None,
            Endpoint::AudioTranscriptions => BodyKind::Multipart,
            _ => BodyKind::Json,
        }
    }

    fn from_tail(tail: &str) -> Option<Self> {
        Some(match tail {
            "chat/completions" => Endpoint::ChatCompletions,
            "completions" => Endpoint::Completions,
            "embeddings" => Endpoint::Embeddings,
            "audio/speech" => Endpoint::AudioSpeech,
            "audio/transcriptions" => Endpoint::AudioTranscriptions,
            "images/generations" => Endpoint::ImagesGenerations,
            "models" => Endpoint::Models,
            _ => return None,
        })
    }
}

/// What kind of traffic a request path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// A model API endpoint: needs a key, decided by the filter.
    Api(Endpoint),
    /// Under `/v1/` but not an endpoint the gateway serves.
    UnknownApi,
    /// The management API (`/api/...`): the control plane authorizes it.
    Management,
    /// `/health`: answered by Envoy, no key.
    Health,
    /// `/mcp-servers/...`: one MCP server's endpoint, proxied by the control plane; needs a key
    /// that may use the server named in the path (see [`mcp_server_name`]).
    McpServer,
    /// `/mcp`: the aggregated MCP endpoint, served by the control plane; needs a key.
    McpAggregate,
    /// Anything else (admin UI, static files): passed to the control plane.
    Other,
}

/// Classifies a request path (query string allowed). Every endpoint is also served without the
/// `/v1` prefix, as Aqueduct and LiteLLM do.
pub fn classify(path: &str) -> RouteClass {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path == "/health" || path == "/health/" {
        return RouteClass::Health;
    }
    if path == "/api" || path.starts_with("/api/") {
        return RouteClass::Management;
    }
    if path == "/mcp" || path == "/mcp/" {
        return RouteClass::McpAggregate;
    }
    if path == "/mcp-servers" || path.starts_with("/mcp-servers/") {
        return RouteClass::McpServer;
    }
    if let Some(tail) = path.strip_prefix("/v1/") {
        return Endpoint::from_tail(tail).map_or(RouteClass::UnknownApi, RouteClass::Api);
    }
    if path == "/v1" {
        return RouteClass::UnknownApi;
    }
    match path.strip_prefix('/').and_then(Endpoint::from_tail) {
        Some(e) => RouteClass::Api(e),
        None => RouteClass::Other,
    }
}

/// The server name in an MCP server path, `/mcp-servers/{name}/mcp` (query string allowed);
/// `None` for any other shape under `/mcp-servers`.
pub fn mcp_server_name(path: &str) -> Option<&str> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let name = path.strip_prefix("/mcp-servers/")?.strip_suffix("/mcp")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// The media type of a `content-type` value, lowercased, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Checks the content type against what the endpoint accepts.
pub fn check_content_type(kind: BodyKind, content_type: Option<&str>) -> Result<(), ApiError> {
    let got = content_type.unwrap_or_default();
    // Compared without case rather than lowercased: no copy on every request.
    let mt = got.split(';').next().unwrap_or_default().trim().as_bytes();
    let is = |expected: &str| mt.eq_ignore_ascii_case(expected.as_bytes());
    let json_suffix = mt.len() >= "application/+json".len()
        && mt[.."application/".len()].eq_ignore_ascii_case(b"application/")
        && mt[mt.len() - "+json".len()..].eq_ignore_ascii_case(b"+json");
    match kind {
        BodyKind::None => Ok(()),
        BodyKind::Json if is("application/json") || json_suffix => Ok(()),
        BodyKind::Json => Err(ApiError::unsupported_media_type(got, "application/json")),
        BodyKind::Multipart if is("multipart/form-data") => Ok(()),
        BodyKind::Multipart => Err(ApiError::unsupported_media_type(got, "multipart/form-data")),
    }
}

/// What the filter needs from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyFacts {
    /// The model the client named.
    pub model: String,
    /// Byte range of the model value in the body, replaced when routing.
    pub model_span: (usize, usize),
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// `max_completion_tokens`, else `max_tokens`, when given.
    pub max_tokens: Option<u64>,
    /// Whether `stream_options` already asks for a usage chunk.
    pub includes_usage: bool,
    /// Whether the body has a `stream_options` member at all.
    pub has_stream_options: bool,
    /// The caller's end user: Aqueduct's `user_id` (number or string), else OpenAI's `user`.
    pub end_user: Option<String>,
    /// A JSON body has a `user_id` member (removed before forwarding).
    pub json_user_id: bool,
    /// A multipart body's `user_id` part, as a whole (removed before forwarding).
    pub user_id_part: Option<(usize, usize)>,
}

/// An end-user id from a JSON value: a string, or a number written as one.
fn end_user_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[derive(Deserialize)]
struct JsonTop<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    user: Option<serde_json::Value>,
    #[serde(default)]
    user_id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<serde_json::Value>,
}

/// Validates a JSON body and locates its `model`.
pub fn inspect_json(body: &[u8]) -> Result<BodyFacts, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(format!("Request body is not valid UTF-8 (at byte {}).", e.valid_up_to()))
    })?;
    if !text.trim_start().starts_with('{') {
        return Err(if text.trim().is_empty() {
            ApiError::bad_request("Request body is empty; expected a JSON object.")
        } else {
            ApiError::bad_request("Invalid JSON: the body must be a JSON object.")
        });
    }
    let top: JsonTop<'_> =
        serde_json::from_str(text).map_err(|e| ApiError::bad_request(format!("Invalid JSON: {e}.")))?;
    let raw = top.model.ok_or_else(missing_model)?;
    let model: String = serde_json::from_str(raw.get())
        .map_err(|_| ApiError::bad_request("'model' must be a string.").param("model"))?;
    if model.is_empty() {
        return Err(missing_model());
    }
    let stream = top.stream.is_some_and(|s| s.get() == "true");
    let max_tokens = top.max_completion_tokens.or(top.max_tokens).and_then(|v| v.as_u64());
    let includes_usage =
        top.stream_options.as_ref().is_some_and(|o| o.include_usage == Some(serde_json::Value::Bool(true)));
    let end_user = top.user_id.as_ref().and_then(end_user_of).or_else(|| top.user.as_ref().and_then(end_user_of));
    Ok(BodyFacts {
        model,
        model_span: span_of(text, raw.get()),
        stream,
        max_tokens,
        includes_usage,
        has_stream_options: top.stream_options.is_some(),
        end_user,
        json_user_id: top.user_id.is_some(),
        user_id_part: None,
    })
}

fn missing_model() -> ApiError {
    ApiError::bad_request("Missing required parameter: 'model'.").param("model").code("missing_required_parameter")
}

/// Byte range of `inner`, a sub-slice of `outer`.
fn span_of(outer: &str, inner: &str) -> (usize, usize) {
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    (start, start + inner.len())
}

/// Replaces the model in a JSON body with `provider_model` (as a JSON string).
pub fn rewrite_json_model(body: &[u8], span: (usize, usize), provider_model: &str) -> Vec<u8> {
    let quoted = serde_json::to_string(provider_model).unwrap_or_default();
    splice(body, span, quoted.as_bytes())
}

/// Makes a streaming JSON request ask for the final usage chunk (`stream_options.include_usage`),
/// so streamed tokens are counted from the provider's own report.
pub fn request_stream_usage(body: &[u8], facts: &BodyFacts) -> Vec<u8> {
    if facts.includes_usage {
        return body.to_vec();
    }
    if !facts.has_stream_options {
        // Insert the member right after the opening brace: no re-serialization.
        if let Some(open) = body.iter().position(|b| *b == b'{') {
            let member: &[u8] = br#""stream_options":{"include_usage":true}"#;
            let empty = body[open + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            let mut out = Vec::with_capacity(body.len() + member.len() + 1);
            out.extend_from_slice(&body[..=open]);
            out.extend_from_slice(member);
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(&body[open + 1..]);
            return out;
        }
        return body.to_vec();
    }
    // stream_options is there without include_usage: rare enough to re-serialize.
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut v) => {
            if let Some(o) = v.get_mut("stream_options").and_then(|o| o.as_object_mut()) {
                o.insert("include_usage".into(), serde_json::Value::Bool(true));
            } else if let Some(top) = v.as_object_mut() {
                top.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
            }
            serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec())
        }
        Err(_) => body.to_vec(),
    }
}

/// Replaces the model in a multipart body with `provider_model` (raw bytes), and removes the
/// part `remove` (a whole part, as [`BodyFacts::user_id_part`]) when given.
pub fn rewrite_multipart_model(
    body: &[u8],
    span: (usize, usize),
    provider_model: &str,
    remove: Option<(usize, usize)>,
) -> Vec<u8> {
    match remove {
        // Later range first, so the earlier one's offsets still hold.
        Some(part) if part.0 >= span.1 => splice(&splice(body, part, b""), span, provider_model.as_bytes()),
        Some(part) if part.1 <= span.0 => splice(&splice(body, span, provider_model.as_bytes()), part, b""),
        _ => splice(body, span, provider_model.as_bytes()),
    }
}

/// Removes a top-level member from a JSON object body (re-serialized: only bodies that carry
/// the member pay for it).
pub fn remove_json_member(body: &[u8], name: &str) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        Ok(mut map) => {
            if map.remove(name).is_none() {
                return body.to_vec();
            }
            serde_json::to_vec(&map).unwrap_or_else(|_| body.to_vec())
        }
        Err(_) => body.to_vec(),
    }
}

fn splice(body: &[u8], (start, end): (usize, usize), with: &[u8]) -> Vec<u8> {
    let (start, end) = (start.min(body.len()), end.min(body.len()));
    let mut out = Vec::with_capacity(body.len() - (end - start) + with.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(with);
    out.extend_from_slice(&body[end..]);
    out
}

/// Validates a `multipart/form-data` body and locates its `model` and `stream` fields.
pub fn inspect_multipart(body: &[u8], content_type: &str) -> Result<BodyFacts, ApiError> {
    let boundary = boundary(content_type)
        .ok_or_else(|| ApiError::bad_request("multipart/form-data without a boundary parameter."))?;
    let mut model = None;
    let mut stream = false;
    let mut user = None;
    let mut user_id = None;
    let text_of = |v: (usize, usize)| {
        std::str::from_utf8(body.get(v.0..v.1).unwrap_or_default()).ok().map(|t| t.trim().to_string())
    };
    for part in parts(body, boundary.as_bytes())? {
        match part.name.as_deref() {
            Some("model") => {
                let value = body.get(part.value.0..part.value.1).unwrap_or_default();
                let text = std::str::from_utf8(value)
                    .map_err(|_| ApiError::bad_request("'model' must be UTF-8 text.").param("model"))?;
                model = Some((text.trim().to_string(), part.value));
            }
            Some("stream") => {
                stream = body.get(part.value.0..part.value.1).is_some_and(|v| v.eq_ignore_ascii_case(b"true"));
            }
            Some("user") => user = text_of(part.value),
            Some("user_id") => user_id = Some((text_of(part.value), part.whole)),
            _ => {}
        }
    }
    let user_id_part = user_id.as_ref().map(|(_, whole)| *whole);
    let end_user = user_id.and_then(|(t, _)| t).or(user).filter(|u| !u.is_empty());
    match model {
        Some((m, span)) if !m.is_empty() => Ok(BodyFacts {
            model: m,
            model_span: span,
            stream,
            max_tokens: None,
            includes_usage: false,
            has_stream_options: false,
            end_user,
            json_user_id: false,
            user_id_part,
        }),
        _ => Err(missing_model()),
    }
}

/// The `boundary` parameter of a multipart content type.
fn boundary(content_type: &str) -> Option<String> {
    content_type
        .split(';')
        .skip(1)
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim().eq_ignore_ascii_case("boundary")).then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty() && b.len() <= 200)
}

struct Part {
    name: Option<String>,
    value: (usize, usize),
    /// The whole part: from its delimiter up to the next one.
    whole: (usize, usize),
}

/// Splits a multipart body (RFC 7578) into parts: each part's field name and value range.
fn parts(body: &[u8], boundary: &[u8]) -> Result<Vec<Part>, ApiError> {
    let malformed = || ApiError::bad_request("Malformed multipart/form-data body.");
    let mut delim = Vec::with_capacity(boundary.len() + 4);
    delim.extend_from_slice(b"--");
    delim.extend_from_slice(boundary);
    let first = find(body, &delim, 0).ok_or_else(malformed)?;
    let mut pos = first + delim.len();
    // Each later delimiter is preceded by CRLF, which belongs to the delimiter, not the value.
    let mut next_delim = Vec::with_capacity(delim.len() + 2);
    next_delim.extend_from_slice(b"\r\n");
    next_delim.extend_from_slice(&delim);
    let mut out = Vec::new();
    let mut part_start = first;
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            return Ok(out);
        }
        if body.get(pos..pos + 2) != Some(b"\r\n") {
            return Err(malformed());
        }
        let head_start = pos + 2;
        let head_end = find(body, b"\r\n\r\n", head_start).ok_or_else(malformed)?;
        let headers = std::str::from_utf8(&body[head_start..head_end]).map_err(|_| malformed())?;
        let value_start = head_end + 4;
        let value_end = find(body, &next_delim, value_start).ok_or_else(malformed)?;
        // The next part starts after this one's trailing CRLF.
        out.push(Part {
            name: field_name(headers),
            value: (value_start, value_end),
            whole: (part_start, value_end + 2),
        });
        part_start = value_end + 2;
        pos = value_end + next_delim.len();
    }
}

fn field_name(headers: &str) -> Option<String> {
    let disposition =
        headers.split("\r\n").find(|h| h.get(..20).is_some_and(|p| p.eq_ignore_ascii_case("content-disposition:")))?;
    disposition.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        // Jump to the next candidate first byte; cheap on large binary uploads.
        let off = hay.get(i..)?.iter().position(|b| *b == first)?;
        i += off;
        if hay.get(i..i + needle.len())? == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths_with_and_without_v1() {
        assert_eq!(classify("/v1/chat/completions"), RouteClass::Api(Endpoint::ChatCompletions));
        assert_eq!(classify("/chat/completions"), RouteClass::Api(Endpoint::ChatCompletions));
        assert_eq!(classify("/v1/models?x=1"), RouteClass::Api(Endpoint::Models));
        assert_eq!(classify("/audio/transcriptions"), RouteClass::Api(Endpoint::AudioTranscriptions));
        assert_eq!(classify("/v1/responses"), RouteClass::UnknownApi);
        assert_eq!(classify("/v1"), RouteClass::UnknownApi);
        assert_eq!(classify("/api/v1/tokens"), RouteClass::Management);
        assert_eq!(classify("/apix"), RouteClass::Other);
        assert_eq!(classify("/health"), RouteClass::Health);
        assert_eq!(classify("/"), RouteClass::Other);
        assert_eq!(classify("/mcp"), RouteClass::McpAggregate);
        assert_eq!(classify("/mcp?x"), RouteClass::McpAggregate);
        assert_eq!(classify("/mcpx"), RouteClass::Other);
        assert_eq!(classify("/mcp-servers/a/mcp"), RouteClass::McpServer);
        assert_eq!(classify("/mcp-servers/a/other"), RouteClass::McpServer);
    }

    #[test]
    fn mcp_server_names() {
        assert_eq!(mcp_server_name("/mcp-servers/everything/mcp"), Some("everything"));
        assert_eq!(mcp_server_name("/mcp-servers/everything/mcp?x=1"), Some("everything"));
        assert_eq!(mcp_server_name("/mcp-servers//mcp"), None);
        assert_eq!(mcp_server_name("/mcp-servers/a/b/mcp"), None);
        assert_eq!(mcp_server_name("/mcp-servers/a/mcp/x"), None);
        assert_eq!(mcp_server_name("/mcp-servers/a"), None);
    }

    #[test]
    fn content_types() {
        assert!(check_content_type(BodyKind::Json, Some("application/json; charset=utf-8")).is_ok());
        assert!(check_content_type(BodyKind::Json, Some("Application/JSON")).is_ok());
        assert!(check_content_type(BodyKind::Json, Some("application/vnd.api+json")).is_ok());
        assert!(check_content_type(BodyKind::Json, Some(" APPLICATION/X+JSON ; charset=utf-8")).is_ok());
        assert_eq!(check_content_type(BodyKind::Json, Some("application/json5")).unwrap_err().status, 415);
        assert_eq!(check_content_type(BodyKind::Json, Some("text/x+json")).unwrap_err().status, 415);
        assert_eq!(check_content_type(BodyKind::Json, Some("é+json")).unwrap_err().status, 415);
        assert_eq!(check_content_type(BodyKind::Json, Some("text/plain")).unwrap_err().status, 415);
        assert_eq!(check_content_type(BodyKind::Json, None).unwrap_err().status, 415);
        assert!(check_content_type(BodyKind::Multipart, Some("multipart/form-data; boundary=x")).is_ok());
        assert_eq!(check_content_type(BodyKind::Multipart, Some("application/json")).unwrap_err().status, 415);
    }

    #[test]
    fn finds_and_rewrites_model_in_place() {
        let body = br#"{ "messages": [{"role":"user","content":"hi \"model\""}], "model" : "alias", "stream": true }"#;
        let f = inspect_json(body).unwrap();
        assert_eq!(f.model, "alias");
        assert!(f.stream);
        let out = rewrite_json_model(body, f.model_span, "real-\"model\"");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "real-\"model\"");
        assert_eq!(v["messages"][0]["content"], "hi \"model\"");
        assert_eq!(v["stream"], true);
    }

    #[test]
    fn escaped_model_names_resolve() {
        let f = inspect_json(br#"{"model":"a\u0062c"}"#).unwrap();
        assert_eq!(f.model, "abc");
        assert!(!f.stream);
    }

    #[test]
    fn bad_bodies_are_400_with_reasons() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"   ", "empty"),
            (b"[1,2]", "JSON object"),
            (b"{\"model\":", "Invalid JSON"),
            (b"{\"model\":\"a\",}", "Invalid JSON"),
            (b"{\"model\":\"a\",\"model\":\"b\"}", "duplicate"),
            (b"{\"messages\":[]}", "model"),
            (b"{\"model\":5}", "string"),
            (b"{\"model\":\"\"}", "model"),
            (b"{\"model\":\"\xff\"}", "UTF-8"),
        ];
        for (body, needle) in cases {
            let e = inspect_json(body).unwrap_err();
            assert_eq!(e.status, 400, "{body:?}");
            assert!(e.message.contains(needle), "{body:?}: {}", e.message);
        }
    }

    fn multipart(fields: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (name, value) in fields {
            b.extend_from_slice(b"--XyZ\r\n");
            if *name == "file" {
                b.extend_from_slice(b"Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n");
            } else {
                b.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes());
            }
            b.extend_from_slice(value);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"--XyZ--\r\n");
        b
    }

    #[test]
    fn multipart_model_found_and_rewritten() {
        let audio: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let body = multipart(&[("file", &audio), ("model", b"whisper"), ("stream", b"true")]);
        let ct = "multipart/form-data; boundary=XyZ";
        let f = inspect_multipart(&body, ct).unwrap();
        assert_eq!(f.model, "whisper");
        assert!(f.stream);
        let out = rewrite_multipart_model(&body, f.model_span, "whisper-1-provider", None);
        let f2 = inspect_multipart(&out, ct).unwrap();
        assert_eq!(f2.model, "whisper-1-provider");
        assert!(find(&out, &audio, 0).is_some(), "file bytes intact");
    }

    #[test]
    fn multipart_errors() {
        let ct = "multipart/form-data; boundary=XyZ";
        assert_eq!(inspect_multipart(&multipart(&[("file", b"x")]), ct).unwrap_err().param, Some("model"));
        assert_eq!(inspect_multipart(b"garbage", ct).unwrap_err().status, 400);
        assert_eq!(inspect_multipart(&multipart(&[("model", b"m")]), "multipart/form-data").unwrap_err().status, 400);
        let truncated = &multipart(&[("model", b"m")])[..20];
        assert_eq!(inspect_multipart(truncated, ct).unwrap_err().status, 400);
    }
}

#[cfg(test)]
mod end_user_tests {
    use super::*;

    #[test]
    fn json_end_user_recorded_and_user_id_removed() {
        let f = inspect_json(br#"{"model":"m","user":"alice"}"#).unwrap();
        assert_eq!((f.end_user.as_deref(), f.json_user_id), (Some("alice"), false));
        let body = br#"{"model":"m","user":"alice","user_id":42,"messages":[]}"#;
        let f = inspect_json(body).unwrap();
        assert_eq!((f.end_user.as_deref(), f.json_user_id), (Some("42"), true));
        let v: serde_json::Value = serde_json::from_slice(&remove_json_member(body, "user_id")).unwrap();
        assert_eq!(v, serde_json::json!({"model":"m","user":"alice","messages":[]}));
        assert_eq!(inspect_json(br#"{"model":"m","user_id":"u-7"}"#).unwrap().end_user.as_deref(), Some("u-7"));
        assert_eq!(inspect_json(br#"{"model":"m","user_id":null}"#).unwrap().end_user, None);
    }

    #[test]
    fn multipart_user_id_part_is_removed_either_side_of_the_model() {
        let ct = "multipart/form-data; boundary=B";
        let part = |n: &str, v: &str| format!("--B\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n");
        for order in [["user_id", "model", "file"], ["model", "file", "user_id"]] {
            let mut body = String::new();
            for name in order {
                body += &part(
                    name,
                    match name {
                        "user_id" => "77",
                        "model" => "whisper",
                        _ => "RIFF....",
                    },
                );
            }
            body += "--B--\r\n";
            let f = inspect_multipart(body.as_bytes(), ct).unwrap();
            assert_eq!(f.end_user.as_deref(), Some("77"));
            let out = rewrite_multipart_model(body.as_bytes(), f.model_span, "provider-w", f.user_id_part);
            let g = inspect_multipart(&out, ct).unwrap();
            assert_eq!(g.model, "provider-w");
            assert_eq!(g.end_user, None, "{}", String::from_utf8_lossy(&out));
            assert!(find(&out, b"RIFF....", 0).is_some());
        }
    }
}

#[cfg(test)]
mod stream_usage_tests {
    use super::*;

    fn injected(body: &str) -> serde_json::Value {
        let facts = inspect_json(body.as_bytes()).unwrap();
        serde_json::from_slice(&request_stream_usage(body.as_bytes(), &facts)).unwrap()
    }

    #[test]
    fn include_usage_is_added_once() {
        let v = injected(r#"{"model":"m","stream":true,"max_tokens":7}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["max_tokens"], 7);
        let v = injected(r#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false}}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["include_obfuscation"], false);
        let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        let facts = inspect_json(body.as_bytes()).unwrap();
        assert_eq!(request_stream_usage(body.as_bytes(), &facts), body.as_bytes());
    }

    #[test]
    fn max_tokens_prefers_max_completion_tokens() {
        let f = inspect_json(br#"{"model":"m","max_tokens":5,"max_completion_tokens":9}"#).unwrap();
        assert_eq!(f.max_tokens, Some(9));
        assert_eq!(inspect_json(br#"{"model":"m","max_tokens":-1}"#).unwrap().max_tokens, None);
    }
}
