//! Request classification and body inspection: which endpoint a path is, what it must look
//! like, and the `model` it names — found and rewritten in place, never re-serialized, so the
//! body the provider sees is byte-for-byte the client's apart from the model name.

use crate::error::Refusal;
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
    /// `POST /v1/responses`: a Responses API create (see [`crate::responses`]).
    Responses,
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
            "responses" => Endpoint::Responses,
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
    /// `/v1/responses/{id}` and below: a stored response, served by the control plane for its
    /// owner only; needs a key (see [`crate::responses::ItemCall`]).
    ResponseItem,
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
        if tail.starts_with("responses/") {
            return RouteClass::ResponseItem;
        }
        return Endpoint::from_tail(tail).map_or(RouteClass::UnknownApi, RouteClass::Api);
    }
    if path == "/v1" {
        return RouteClass::UnknownApi;
    }
    if path.starts_with("/responses/") {
        return RouteClass::ResponseItem;
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
pub fn check_content_type(kind: BodyKind, content_type: Option<&str>) -> Result<(), Refusal> {
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
        BodyKind::Json => Err(Refusal::UnsupportedMediaType { got: got.to_string(), expected: "application/json" }),
        BodyKind::Multipart if is("multipart/form-data") => Ok(()),
        BodyKind::Multipart => {
            Err(Refusal::UnsupportedMediaType { got: got.to_string(), expected: "multipart/form-data" })
        }
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
pub(crate) fn end_user_of(v: &serde_json::Value) -> Option<String> {
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
    /// `Some` whenever the member is there, `null` included.
    #[serde(borrow, default, deserialize_with = "present")]
    stream: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
    /// `Some` whenever the member is there, `null` included.
    #[serde(borrow, default, deserialize_with = "present")]
    stream_options: Option<&'a RawValue>,
    #[serde(default)]
    user: Option<serde_json::Value>,
    #[serde(default)]
    user_id: Option<serde_json::Value>,
}

/// A member that is there, whatever its value: `Option`'s own rule would read `null` as absent,
/// and a `null` the provider sees is not absent to it.
pub(crate) fn present<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'a RawValue>, D::Error> {
    <&'a RawValue>::deserialize(d).map(Some)
}

/// Whether a `stream_options` value asks for the usage chunk (`{"include_usage": true, ...}`).
fn asks_for_usage(options: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct StreamOptions<'a> {
        #[serde(borrow, default)]
        include_usage: Option<&'a RawValue>,
    }
    // Only an object counts: serde would also read `[true]` as a struct. A second spelling
    // (`INCLUDE_USAGE`) that case-insensitive providers read as the same option makes it
    // ambiguous: then the filter writes the option itself.
    let one_spelling = || {
        serde_json::from_str::<std::collections::BTreeMap<String, serde::de::IgnoredAny>>(options.get())
            .is_ok_and(|keys| keys.keys().filter(|k| loosely_named(k, "include_usage")).count() == 1)
    };
    options.get().starts_with('{')
        && serde_json::from_str::<StreamOptions<'_>>(options.get())
            .is_ok_and(|o| o.include_usage.is_some_and(|v| v.get() == "true"))
        && one_spelling()
}

/// `stream` must be a boolean, as at OpenAI: anything else (`"true"`, `1`, `null`) would be read
/// one way here and maybe another by the provider, and an unseen stream is an unmetered one.
pub(crate) fn stream_flag(raw: Option<&RawValue>) -> Result<bool, Refusal> {
    let got = match raw.map(RawValue::get) {
        None | Some("false") => return Ok(false),
        Some("true") => return Ok(true),
        Some("null") => "null",
        Some(v) if v.starts_with('"') => "a string",
        Some(v) if v.starts_with('{') => "an object",
        Some(v) if v.starts_with('[') => "an array",
        Some(_) => "a number",
    };
    Err(Refusal::StreamNotBoolean { got })
}

/// The top-level members the filter decides on. Each must be there at most once and spelled
/// exactly: providers keep the first of two members or the last (serde_json and Python the
/// last, others the first), and some match names without case (Go's `encoding/json` reads
/// `"Model"` or `"ſtream"` as the field), so any other body is refused rather than guessed.
const DECIDED: [&str; 7] =
    ["model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "user", "user_id"];
/// [`KeyCheck::seen`]'s bit for `user_id`.
const USER_ID_SEEN: u16 = 1 << 6;

/// Whether `key` is `name` to a parser that matches names without case: ASCII case, and the
/// non-ASCII letters whose case folds onto the ASCII ones (`ſ` s, Kelvin `K` k, `ı`/`İ` i).
pub(crate) fn loosely_named(key: &str, name: &str) -> bool {
    let fold = |c: char| match c {
        '\u{17f}' => 's',
        '\u{212a}' => 'k',
        '\u{130}' | '\u{131}' => 'i',
        c => c.to_ascii_lowercase(),
    };
    let mut k = key.chars();
    name.chars().all(|n| k.next().is_some_and(|c| fold(c) == n)) && k.next().is_none()
}

/// Notes a top-level key in `seen` (bit `i` for `DECIDED[i]`); `Err` when it makes the body
/// ambiguous: a second decided member (then ignored) or a loose spelling of one.
fn decided_key(key: &str, decided: &[&'static str], seen: &mut u16) -> Result<(), Refusal> {
    if let Some(i) = decided.iter().position(|d| *d == key) {
        if *seen & (1 << i) != 0 {
            return Err(Refusal::DuplicateParameter(decided[i]));
        }
        *seen |= 1 << i;
        return Ok(());
    }
    // A key of lowercase ASCII that is not exactly a decided name is no spelling of one.
    if key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Ok(());
    }
    match decided.iter().find(|d| loosely_named(key, d)) {
        Some(d) => Err(Refusal::AmbiguousParameter { param: d, detail: format!("{key:?}") }),
        None => Ok(()),
    }
}

/// What [`guarded_top`] saw of a body's top-level keys.
pub(crate) struct KeyCheck {
    /// The names decided on (at most 16).
    decided: &'static [&'static str],
    /// The decided members present (bit `i` for `decided[i]`), `null` ones included.
    pub(crate) seen: u16,
    /// The first duplicate or loose spelling of one.
    pub(crate) conflict: Option<Refusal>,
}

impl KeyCheck {
    /// A check of the members named in `decided`.
    pub(crate) fn new(decided: &'static [&'static str]) -> Self {
        Self { decided, seen: 0, conflict: None }
    }
}

/// `T` (the top-level members decided on) of a body, every top-level key checked by
/// [`decided_key`] on the way into `check` (the parse goes on after a conflict, so invalid JSON
/// still reads as such).
pub(crate) fn guarded_top<'a, T: Deserialize<'a>>(text: &'a str, check: &mut KeyCheck) -> Result<T, serde_json::Error> {
    use serde::de::{value, DeserializeSeed, MapAccess, Visitor};
    use std::borrow::Cow;

    /// A key as the JSON holds it: borrowed unless it has escapes.
    struct Key<'de>(Cow<'de, str>);
    impl<'de> Deserialize<'de> for Key<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a member name")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_owned())))
                }
            }
            d.deserialize_str(V)
        }
    }

    /// The object's members, handed to the derived [`JsonTop`] after their keys are checked.
    struct Guarded<'g, A> {
        map: A,
        check: &'g mut KeyCheck,
    }
    impl<'de, A: MapAccess<'de>> MapAccess<'de> for Guarded<'_, A> {
        type Error = A::Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
            let Some(Key(key)) = self.map.next_key::<Key<'de>>()? else { return Ok(None) };
            if let Err(e) = decided_key(&key, self.check.decided, &mut self.check.seen) {
                self.check.conflict.get_or_insert(e);
                // An unknown name: the derived parser skips the value.
                return seed.deserialize(value::BorrowedStrDeserializer::new("")).map(Some);
            }
            match key {
                Cow::Borrowed(k) => seed.deserialize(value::BorrowedStrDeserializer::new(k)).map(Some),
                Cow::Owned(k) => seed.deserialize(value::StringDeserializer::new(k)).map(Some),
            }
        }
        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
            self.map.next_value_seed(seed)
        }
    }

    struct Top<'g, T>(&'g mut KeyCheck, std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Top<'_, T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(value::MapAccessDeserializer::new(Guarded { map, check: self.0 }))
        }
    }

    let mut de = serde_json::Deserializer::from_str(text);
    let top = serde::Deserializer::deserialize_map(&mut de, Top(check, std::marker::PhantomData))?;
    de.end()?;
    Ok(top)
}

/// A JSON object body as text and its top-level members `T`, each of `decided` there at most
/// once and spelled exactly ([`guarded_top`]); also which of them were there (bit `i` for
/// `decided[i]`).
pub(crate) fn json_top<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    decided: &'static [&'static str],
) -> Result<(&'a str, T, u16), Refusal> {
    let text = std::str::from_utf8(body).map_err(|e| Refusal::NotUtf8 { valid_up_to: e.valid_up_to() })?;
    if !text.trim_start().starts_with('{') {
        return Err(if text.trim().is_empty() { Refusal::EmptyBody } else { Refusal::NotAnObject });
    }
    let mut check = KeyCheck::new(decided);
    let top: T = guarded_top(text, &mut check).map_err(|e| Refusal::InvalidJson(e.to_string()))?;
    match check.conflict {
        Some(e) => Err(e),
        None => Ok((text, top, check.seen)),
    }
}

/// The `model` a JSON body names: a non-empty string.
pub(crate) fn model_of(raw: Option<&RawValue>) -> Result<String, Refusal> {
    let Some(raw) = raw else { return Err(Refusal::MissingModel) };
    let model: String = serde_json::from_str(raw.get()).map_err(|_| Refusal::ModelNotString)?;
    if model.is_empty() {
        return Err(Refusal::MissingModel);
    }
    Ok(model)
}

/// Validates a JSON body and locates its `model`.
pub fn inspect_json(body: &[u8]) -> Result<BodyFacts, Refusal> {
    let (text, top, seen) = json_top::<JsonTop<'_>>(body, &DECIDED)?;
    let model = model_of(top.model)?;
    let raw = top.model.ok_or(Refusal::MissingModel)?;
    let stream = stream_flag(top.stream)?;
    let max_tokens = top.max_completion_tokens.or(top.max_tokens).and_then(|v| v.as_u64());
    let includes_usage = top.stream_options.is_some_and(asks_for_usage);
    let end_user = top.user_id.as_ref().and_then(end_user_of).or_else(|| top.user.as_ref().and_then(end_user_of));
    Ok(BodyFacts {
        model,
        model_span: span_of(text, raw.get()),
        stream,
        max_tokens,
        includes_usage,
        has_stream_options: top.stream_options.is_some(),
        end_user,
        // There, even as `null`: removed all the same.
        json_user_id: seen & USER_ID_SEEN != 0,
        user_id_part: None,
    })
}

/// Byte range of `inner`, a sub-slice of `outer`.
pub(crate) fn span_of(outer: &str, inner: &str) -> (usize, usize) {
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    (start, start + inner.len())
}

/// Replaces the model in a JSON body with `provider_model` (as a JSON string).
pub fn rewrite_json_model(body: &[u8], span: (usize, usize), provider_model: &str) -> Vec<u8> {
    let quoted = serde_json::to_string(provider_model).unwrap_or_default();
    splice(body, span, quoted.as_bytes())
}

/// Makes a streaming JSON request ask for the final usage chunk (`stream_options.include_usage`),
/// so streamed tokens are counted from the provider's own report. A `stream_options` member
/// already there (`null`, an object without `include_usage` or with it false, anything else)
/// is replaced in place, keeping an object's other options: the body never carries the member
/// twice, which providers would read each their own way.
pub fn request_stream_usage(body: &[u8], facts: &BodyFacts) -> Vec<u8> {
    const OPTION: &[u8] = br#"{"include_usage":true}"#;
    if facts.includes_usage {
        return body.to_vec();
    }
    if !facts.has_stream_options {
        // Insert the member right after the opening brace: no re-serialization.
        if let Some(open) = body.iter().position(|b| *b == b'{') {
            let member: &[u8] = br#""stream_options":"#;
            let empty = body[open + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            let mut out = Vec::with_capacity(body.len() + member.len() + OPTION.len() + 1);
            out.extend_from_slice(&body[..=open]);
            out.extend_from_slice(member);
            out.extend_from_slice(OPTION);
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(&body[open + 1..]);
            return out;
        }
        return body.to_vec();
    }
    // The member is there without asking for usage (rare): its value is found again (the body
    // may have been rewritten since it was inspected) and replaced.
    let Ok(text) = std::str::from_utf8(body) else { return body.to_vec() };
    let Some(raw) = serde_json::from_str::<JsonTop<'_>>(text).ok().and_then(|t| t.stream_options) else {
        return body.to_vec();
    };
    // An object keeps its other options; anything else becomes the option alone.
    let mut options = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw.get()).unwrap_or_default();
    options.retain(|k, _| !loosely_named(k, "include_usage"));
    options.insert("include_usage".into(), serde_json::Value::Bool(true));
    let value = serde_json::to_vec(&options).unwrap_or_else(|_| OPTION.to_vec());
    splice(body, span_of(text, raw.get()), &value)
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
pub fn remove_json_member(body: &[u8], name: &'static str) -> Result<Vec<u8>, Refusal> {
    // A body `serde_json::Value` cannot hold (a lone surrogate escape, a number such as
    // `1e400`) cannot be written back without the member: refused rather than forwarded with it.
    let cannot = || Refusal::NotRewritable(name);
    let mut map = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body).map_err(|_| cannot())?;
    if map.remove(name).is_none() {
        return Ok(body.to_vec());
    }
    serde_json::to_vec(&map).map_err(|_| cannot())
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
///
/// The body must read the same to every provider: it starts with its first delimiter, each
/// part's headers are well formed, and a field the filter decides on (`model`, `stream`,
/// `user`, `user_id`) is a plain field named exactly, once. Anything a provider could read
/// another way (a second `model` part, `name*=`, `NAME=Model`, two `Content-Disposition`
/// headers, a preamble) is refused with 400 rather than guessed.
pub fn inspect_multipart(body: &[u8], content_type: &str) -> Result<BodyFacts, Refusal> {
    let Some(boundary) = boundary(content_type) else { return Err(Refusal::MultipartBoundary) };
    let mut model = None;
    let mut stream = false;
    let mut user = None;
    let mut user_id = None;
    let mut seen = 0u8;
    let text_of = |v: (usize, usize)| {
        std::str::from_utf8(body.get(v.0..v.1).unwrap_or_default()).ok().map(|t| t.trim().to_string())
    };
    for part in parts(body, boundary.as_bytes())? {
        let Some(name) = part.name else { continue };
        let Some(field) = MULTIPART_DECIDED.iter().position(|d| *d == name) else {
            // Also a name that is one with spaces around: some parsers trim them.
            if let Some(d) = MULTIPART_DECIDED.iter().find(|d| loosely_named(name.trim(), d)) {
                return Err(Refusal::AmbiguousParameter { param: d, detail: format!("name {name:?}") });
            }
            continue;
        };
        let param = MULTIPART_DECIDED[field];
        if seen & (1 << field) != 0 {
            return Err(Refusal::DuplicateParameter(param));
        }
        seen |= 1 << field;
        if !part.plain {
            // A file or an encoded value is not the text the filter reads.
            return Err(Refusal::AmbiguousParameter { param, detail: format!("'{param}' sent as a file or encoded") });
        }
        match param {
            "model" => {
                let value = body.get(part.value.0..part.value.1).unwrap_or_default();
                let text = std::str::from_utf8(value).map_err(|_| Refusal::ModelNotUtf8)?;
                model = Some((text.trim().to_string(), part.value));
            }
            "stream" => {
                stream = body.get(part.value.0..part.value.1).is_some_and(|v| v.eq_ignore_ascii_case(b"true"));
            }
            "user" => user = text_of(part.value),
            _ => user_id = Some((text_of(part.value), part.whole)),
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
        _ => Err(Refusal::MissingModel),
    }
}

/// The multipart fields the filter decides on (see [`inspect_multipart`]).
const MULTIPART_DECIDED: [&str; 4] = ["model", "stream", "user", "user_id"];

/// The one `boundary` parameter of a multipart content type, when it is valid (RFC 2046
/// characters, at most 200 of them).
fn boundary(content_type: &str) -> Option<&str> {
    let (_, params) = header_params(content_type)?;
    let mut found = None;
    for (k, v) in params {
        if k.eq_ignore_ascii_case("boundary") {
            if found.replace(v).is_some() {
                return None;
            }
        } else if starts_with_ignore_case(k, "boundary*") {
            return None;
        }
    }
    let bchar = |b: u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b);
    found.filter(|b| !b.is_empty() && b.len() <= 200 && b.bytes().all(bchar) && !b.ends_with(' '))
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// An RFC 9110 token character.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header value `type *(";" name "=" value)` (Content-Type, Content-Disposition), parsed
/// strictly: the type, then each parameter's name and value (a token, or a quoted string
/// without escapes, unquoted). `None` for anything else, which parsers read differently.
fn header_params(value: &str) -> Option<(&str, Vec<(&str, &str)>)> {
    let b = value.as_bytes();
    let ows = |mut i: usize| {
        while matches!(b.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        i
    };
    let token = |mut i: usize, slash: bool| {
        while b.get(i).is_some_and(|c| is_tchar(*c) || (slash && *c == b'/')) {
            i += 1;
        }
        i
    };
    let start = ows(0);
    let end = token(start, true);
    if end == start {
        return None;
    }
    let kind = value.get(start..end)?;
    let mut params = Vec::new();
    let mut i = ows(end);
    while i < b.len() {
        if b[i] != b';' {
            return None;
        }
        i = ows(i + 1);
        if i == b.len() {
            break; // a trailing `;`
        }
        let key_end = token(i, false);
        if key_end == i {
            return None;
        }
        let key = value.get(i..key_end)?;
        i = ows(key_end);
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i = ows(i + 1);
        let v = if b.get(i) == Some(&b'"') {
            let close = i + 1 + b.get(i + 1..)?.iter().position(|c| *c == b'"')?;
            let inner = value.get(i + 1..close)?;
            if inner.bytes().any(|c| c == b'\\' || (c < 0x20 && c != b'\t') || c == 0x7f) {
                return None;
            }
            i = close + 1;
            inner
        } else {
            let e = token(i, false);
            if e == i {
                return None;
            }
            let v = value.get(i..e)?;
            i = e;
            v
        };
        params.push((key, v));
        i = ows(i);
    }
    Some((kind, params))
}

struct Part<'a> {
    name: Option<&'a str>,
    /// Neither a file (`filename`) nor transfer-encoded: its value is the field's text.
    plain: bool,
    value: (usize, usize),
    /// The whole part: from its delimiter up to the next one.
    whole: (usize, usize),
}

/// Splits a multipart body (RFC 7578) into parts: each part's field name and value range.
/// Strict where parsers differ: the body starts with its first delimiter (no preamble), every
/// delimiter is followed by CRLF or `--`, and the headers are well formed ([`part_head`]).
fn parts<'a>(body: &'a [u8], boundary: &[u8]) -> Result<Vec<Part<'a>>, Refusal> {
    let malformed = || Refusal::MalformedMultipart;
    let mut delim = Vec::with_capacity(boundary.len() + 4);
    delim.extend_from_slice(b"--");
    delim.extend_from_slice(boundary);
    if !body.starts_with(&delim) {
        return Err(malformed());
    }
    let mut pos = delim.len();
    // Each later delimiter is preceded by CRLF, which belongs to the delimiter, not the value.
    let mut next_delim = Vec::with_capacity(delim.len() + 2);
    next_delim.extend_from_slice(b"\r\n");
    next_delim.extend_from_slice(&delim);
    let mut out = Vec::new();
    let mut part_start = 0;
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            return Ok(out);
        }
        if body.get(pos..pos + 2) != Some(b"\r\n") {
            return Err(malformed());
        }
        let head_start = pos + 2;
        // No headers at all: the blank line comes at once.
        let head_end = if body.get(head_start..head_start + 2) == Some(b"\r\n") {
            head_start
        } else {
            find(body, b"\r\n\r\n", head_start).ok_or_else(malformed)?
        };
        let head = &body[head_start..head_end];
        if find(head, &next_delim, 0).is_some() {
            return Err(malformed());
        }
        let headers = std::str::from_utf8(head).map_err(|_| malformed())?;
        let (name, plain) = part_head(headers)?;
        let value_start = if head_end == head_start { head_start + 2 } else { head_end + 4 };
        // The value ends at the next delimiter. Some parsers (PHP's) also end it at an LF
        // without the CR: the first `LF--boundary` must have its CR, inside this value.
        let lf = find(body, &next_delim[1..], value_start).ok_or_else(malformed)?;
        if lf == value_start || body[lf - 1] != b'\r' {
            return Err(malformed());
        }
        let value_end = lf - 1;
        // The next part starts after this one's trailing CRLF.
        out.push(Part { name, plain, value: (value_start, value_end), whole: (part_start, value_end + 2) });
        part_start = value_end + 2;
        pos = value_end + next_delim.len();
    }
}

/// A part's field name (`None` without a `Content-Disposition` name) and whether it is plain
/// (see [`Part::plain`]). Headers that parsers could read differently are an error: a line
/// that is not `token ":" value` (folded, bare CR or LF, controls), two `Content-Disposition`
/// headers, a disposition other than `form-data`, two `name` parameters or an RFC 2231 `name*`.
fn part_head(headers: &str) -> Result<(Option<&str>, bool), Refusal> {
    let bad = || Refusal::MalformedPartHeaders;
    let mut disposition = None;
    let mut encoded = false;
    for line in headers.split("\r\n").filter(|_| !headers.is_empty()) {
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        if name.is_empty()
            || !name.bytes().all(is_tchar)
            || value.bytes().any(|c| (c < 0x20 && c != b'\t') || c == 0x7f)
        {
            return Err(bad());
        }
        if name.eq_ignore_ascii_case("content-disposition") {
            if disposition.replace(value).is_some() {
                return Err(bad());
            }
        } else if name.eq_ignore_ascii_case("content-transfer-encoding") {
            encoded = true;
        }
    }
    let Some(disposition) = disposition else { return Ok((None, !encoded)) };
    let (kind, params) = header_params(disposition).ok_or_else(bad)?;
    if !kind.eq_ignore_ascii_case("form-data") {
        return Err(bad());
    }
    let (mut name, mut file) = (None, false);
    for (k, v) in params {
        if k.eq_ignore_ascii_case("name") {
            if name.replace(v).is_some() {
                return Err(bad());
            }
        } else if starts_with_ignore_case(k, "name*") {
            return Err(bad());
        } else if starts_with_ignore_case(k, "filename") {
            file = true;
        }
    }
    Ok((name, !file && !encoded))
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
        assert_eq!(classify("/v1/responses"), RouteClass::Api(Endpoint::Responses));
        assert_eq!(classify("/responses?x=1"), RouteClass::Api(Endpoint::Responses));
        assert_eq!(classify("/v1/responses/resp_1"), RouteClass::ResponseItem);
        assert_eq!(classify("/responses/resp_1/cancel"), RouteClass::ResponseItem);
        assert_eq!(classify("/v1/assistants"), RouteClass::UnknownApi);
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
        assert_eq!(check_content_type(BodyKind::Json, Some("application/json5")).unwrap_err().status(), 415);
        assert_eq!(check_content_type(BodyKind::Json, Some("text/x+json")).unwrap_err().status(), 415);
        assert_eq!(check_content_type(BodyKind::Json, Some("é+json")).unwrap_err().status(), 415);
        assert_eq!(check_content_type(BodyKind::Json, Some("text/plain")).unwrap_err().status(), 415);
        assert_eq!(check_content_type(BodyKind::Json, None).unwrap_err().status(), 415);
        assert!(check_content_type(BodyKind::Multipart, Some("multipart/form-data; boundary=x")).is_ok());
        assert_eq!(check_content_type(BodyKind::Multipart, Some("application/json")).unwrap_err().status(), 415);
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
            assert_eq!(e.status(), 400, "{body:?}");
            assert!(e.message().contains(needle), "{body:?}: {}", e.message());
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
        assert_eq!(inspect_multipart(&multipart(&[("file", b"x")]), ct).unwrap_err().param(), Some("model"));
        assert_eq!(inspect_multipart(b"garbage", ct).unwrap_err().status(), 400);
        assert_eq!(inspect_multipart(&multipart(&[("model", b"m")]), "multipart/form-data").unwrap_err().status(), 400);
        let truncated = &multipart(&[("model", b"m")])[..20];
        assert_eq!(inspect_multipart(truncated, ct).unwrap_err().status(), 400);
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
        let v: serde_json::Value = serde_json::from_slice(&remove_json_member(body, "user_id").unwrap()).unwrap();
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
    fn include_usage_in_two_spellings_is_written_again() {
        // A case-insensitive provider reads `INCLUDE_USAGE` as the same option.
        let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true,"INCLUDE_USAGE":false,"x":1}}"#;
        assert!(!inspect_json(body.as_bytes()).unwrap().includes_usage);
        let v = injected(body);
        assert_eq!(v["stream_options"], serde_json::json!({"include_usage": true, "x": 1}));
    }

    #[test]
    fn a_body_that_cannot_be_written_without_user_id_is_refused() {
        for body in [r#"{"":1e400,"user_id":"u","model":"m"}"#, r#"{"messages":"\ud800","user_id":"u","model":"m"}"#] {
            let e = remove_json_member(body.as_bytes(), "user_id").unwrap_err();
            assert_eq!((e.status(), e.param()), (400, Some("user_id")), "{body}");
        }
        assert_eq!(remove_json_member(br#"{"model":"m"}"#, "user_id").unwrap(), br#"{"model":"m"}"#.to_vec());
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
    fn stream_options_already_there_are_replaced_never_duplicated() {
        for options in
            ["null", "{}", r#"{"include_usage":false}"#, r#"{"include_usage":null}"#, r#""yes""#, "[true]", "7"]
        {
            let body = format!(r#"{{"model":"m","stream":true,"stream_options":{options},"messages":[]}}"#);
            let facts = inspect_json(body.as_bytes()).unwrap();
            assert!(!facts.includes_usage, "{options}");
            let out = request_stream_usage(body.as_bytes(), &facts);
            let text = String::from_utf8(out.clone()).unwrap();
            assert_eq!(text.matches("stream_options").count(), 1, "{text}");
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["stream_options"]["include_usage"], true, "{text}");
            assert_eq!(v["messages"], serde_json::json!([]));
            // What the gateway sends is what it then reads: a stream asking for usage.
            assert!(inspect_json(&out).unwrap().includes_usage, "{text}");
        }
        // Other options stay, and the rest of the body is untouched.
        let body =
            br#"{"model":"m", "stream":true, "stream_options": {"include_obfuscation":false,"include_usage":false} }"#;
        let out = request_stream_usage(body, &inspect_json(body).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"model":"m", "stream":true, "stream_options": {"include_obfuscation":false,"include_usage":true} }"#
        );
    }

    #[test]
    fn stream_must_be_a_boolean() {
        for (stream, expected) in [("true", Some(true)), ("false", Some(false)), (" true ", Some(true))] {
            let f = inspect_json(format!(r#"{{"model":"m","stream":{stream}}}"#).as_bytes()).unwrap();
            assert_eq!(Some(f.stream), expected);
        }
        assert!(!inspect_json(br#"{"model":"m"}"#).unwrap().stream);
        for (stream, kind) in [
            (r#""true""#, "a string"),
            ("1", "a number"),
            ("null", "null"),
            ("{}", "an object"),
            ("[true]", "an array"),
        ] {
            let e = inspect_json(format!(r#"{{"model":"m","stream":{stream}}}"#).as_bytes()).unwrap_err();
            assert_eq!((e.status(), e.param(), e.code()), (400, Some("stream"), Some("invalid_type")), "{stream}");
            assert!(e.message().contains(kind), "{stream}: {}", e.message());
            let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(body["error"]["type"], "invalid_request_error");
            assert_eq!(body["error"]["param"], "stream");
        }
    }

    #[test]
    fn max_tokens_prefers_max_completion_tokens() {
        let f = inspect_json(br#"{"model":"m","max_tokens":5,"max_completion_tokens":9}"#).unwrap();
        assert_eq!(f.max_tokens, Some(9));
        assert_eq!(inspect_json(br#"{"model":"m","max_tokens":-1}"#).unwrap().max_tokens, None);
    }
}

/// Bodies a provider could read another way than the filter: refused, never guessed.
#[cfg(test)]
mod ambiguity_tests {
    use super::*;

    fn refused(e: Refusal, param: &str, code: &str) {
        assert_eq!((e.status(), e.param(), e.code()), (400, Some(param), Some(code)), "{}", e.message());
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], param);
    }

    #[test]
    fn json_duplicate_decided_members_are_400() {
        let cases: &[(&str, &str)] = &[
            (r#"{"model":"cheap","model":"expensive"}"#, "model"),
            (r#"{"model":"cheap","messages":[],"mod\u0065l":"expensive"}"#, "model"),
            (r#"{"model":"m","stream":false,"stream":true}"#, "stream"),
            (r#"{"model":"m","stream_options":{"include_usage":true},"stream_options":null}"#, "stream_options"),
            (r#"{"model":"m","max_tokens":1,"max_tokens":100000}"#, "max_tokens"),
            (r#"{"model":"m","max_completion_tokens":1,"max_completion_tokens":9}"#, "max_completion_tokens"),
            (r#"{"model":"m","user":"a","user":"b"}"#, "user"),
            (r#"{"model":"m","user_id":1,"user_id":2}"#, "user_id"),
        ];
        for (body, param) in cases {
            refused(inspect_json(body.as_bytes()).unwrap_err(), param, "duplicate_parameter");
        }
        // Invalid JSON after the duplicate still reads as invalid JSON (400 either way).
        assert_eq!(inspect_json(br#"{"model":"a","model":"b","#).unwrap_err().status(), 400);
    }

    #[test]
    fn json_loose_spellings_of_decided_members_are_400() {
        let cases: &[(&str, &str)] = &[
            (r#"{"model":"cheap","Model":"expensive"}"#, "model"),
            (r#"{"MODEL":"expensive","model":"cheap"}"#, "model"),
            (r#"{"model":"m","\u004dodel":"x"}"#, "model"),
            (r#"{"model":"m","ſtream":true}"#, "stream"),
            (r#"{"model":"m","max_to\u212aens":5}"#, "max_tokens"),
            (r#"{"model":"m","max_completıon_tokens":5}"#, "max_completion_tokens"),
            (r#"{"model":"m","User_Id":"u"}"#, "user_id"),
            (r#"{"model":"m","Stream_Options":{}}"#, "stream_options"),
        ];
        for (body, param) in cases {
            refused(inspect_json(body.as_bytes()).unwrap_err(), param, "ambiguous_parameter");
        }
    }

    #[test]
    fn json_escaped_keys_are_the_member_they_spell() {
        let f = inspect_json(br#"{"mod\u0065l":"m","\u0073tream":true,"Temperature":1,"messages":[]}"#).unwrap();
        assert_eq!((f.model.as_str(), f.stream), ("m", true));
        let out = rewrite_json_model(br#"{"mod\u0065l":"m"}"#, f.model_span, "p");
        assert_eq!(out, br#"{"mod\u0065l":"p"}"#);
        // Nested members and other top-level keys are free.
        assert!(inspect_json(br#"{"model":"m","metadata":{"model":"x","Model":"y"},"models":[]}"#).is_ok());
    }

    const CT: &str = "multipart/form-data; boundary=B";

    /// A multipart body from raw part headers and values.
    fn body(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut b = String::new();
        for (headers, value) in parts {
            b += &format!("--B\r\n{headers}\r\n\r\n{value}\r\n");
        }
        b += "--B--\r\n";
        b.into_bytes()
    }

    fn field(name: &str) -> String {
        format!("Content-Disposition: form-data; name=\"{name}\"")
    }

    #[test]
    fn multipart_duplicate_fields_are_400() {
        let file = "Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav";
        let b = body(&[(&field("model"), "whisper"), (file, "RIFF"), (&field("model"), "gpt-4o-transcribe")]);
        refused(inspect_multipart(&b, CT).unwrap_err(), "model", "duplicate_parameter");
        let b = body(&[(&field("model"), "whisper"), (&field("stream"), "false"), (&field("stream"), "true")]);
        refused(inspect_multipart(&b, CT).unwrap_err(), "stream", "duplicate_parameter");
        let b = body(&[(&field("model"), "whisper"), (&field("user_id"), "1"), (&field("user_id"), "2")]);
        refused(inspect_multipart(&b, CT).unwrap_err(), "user_id", "duplicate_parameter");
        // Spelled differently, still the same field to a provider.
        let b = body(&[(&field("model"), "whisper"), ("content-disposition: form-data; NAME=model", "other")]);
        refused(inspect_multipart(&b, CT).unwrap_err(), "model", "duplicate_parameter");
    }

    #[test]
    fn multipart_names_read_the_way_providers_read_them() {
        for headers in [
            "Content-Disposition: form-data; name=model",
            "content-disposition: form-data; name=\"model\"",
            "CONTENT-DISPOSITION:form-data;NAME = \"model\" ;",
            "Content-Disposition: Form-Data; name=\"model\"\r\nContent-Type: text/plain; charset=utf-8",
        ] {
            let b = body(&[(headers, "whisper")]);
            assert_eq!(inspect_multipart(&b, CT).unwrap().model, "whisper", "{headers}");
        }
        // A file part may use RFC 2231 for its file name.
        let file = "Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC.wav";
        assert!(inspect_multipart(&body(&[(file, "RIFF"), (&field("model"), "w")]), CT).is_ok());
        // Quoted boundaries, parameters in any case.
        assert!(inspect_multipart(&body(&[(&field("model"), "w")]), "multipart/form-data; BOUNDARY=\"B\"").is_ok());
    }

    #[test]
    fn multipart_ambiguous_parts_are_400() {
        let ambiguous = [
            // RFC 2231 names: Python and Go decode them, simpler parsers do not.
            "Content-Disposition: form-data; name*=utf-8''model",
            "Content-Disposition: form-data; name=\"x\"; name*0=mo; name*1=del",
            // Two names: Python keeps the last, Go refuses, others keep the first.
            "Content-Disposition: form-data; name=\"x\"; name=\"model\"",
            // Two dispositions: which one counts depends on the parser.
            "Content-Disposition: form-data; name=\"x\"\r\nContent-Disposition: form-data; name=\"model\"",
            // Go ignores a part that is not form-data; Python does not look.
            "Content-Disposition: attachment; name=\"model\"",
            // Escapes inside quotes: Python keeps `\d`, Go drops the backslash.
            "Content-Disposition: form-data; name=\"mo\\del\"",
            // A folded header line, and a bare LF.
            "Content-Disposition: form-data;\r\n name=\"model\"",
            "X-A: 1\nContent-Disposition: form-data; name=\"model\"",
            "Content-Disposition : form-data; name=\"model\"",
            "Content-Disposition: form-data; name=mo del",
        ];
        for headers in ambiguous {
            let b = body(&[(&field("model"), "whisper"), (headers, "other")]);
            let e = inspect_multipart(&b, CT).unwrap_err();
            assert_eq!(e.status(), 400, "{headers:?}");
        }
        for (headers, param) in [
            ("Content-Disposition: form-data; name=\"Model\"", "model"),
            ("Content-Disposition: form-data; name=\"ſtream\"", "stream"),
            ("Content-Disposition: form-data; name=\" model\"", "model"),
            ("Content-Disposition: form-data; name=\"model\"; filename=\"m.txt\"", "model"),
            ("Content-Disposition: form-data; name=\"model\"\r\nContent-Transfer-Encoding: base64", "model"),
        ] {
            let b = body(&[(headers, "d2hpc3Blcg==")]);
            refused(inspect_multipart(&b, CT).unwrap_err(), param, "ambiguous_parameter");
        }
    }

    #[test]
    fn multipart_framing_that_parsers_disagree_on_is_400() {
        let good = body(&[(&field("model"), "whisper")]);
        // A preamble: Go skips to the first delimiter line, python-multipart refuses.
        let mut preamble = b"xx--B\r\n".to_vec();
        preamble.extend_from_slice(&good);
        assert_eq!(inspect_multipart(&preamble, CT).unwrap_err().status(), 400);
        // Padding after a delimiter, and LF-only framing (Go accepts both).
        let padded = String::from_utf8(good.clone()).unwrap().replacen("--B\r\n", "--B \r\n", 1);
        assert_eq!(inspect_multipart(padded.as_bytes(), CT).unwrap_err().status(), 400);
        let lf = String::from_utf8(good.clone()).unwrap().replace("\r\n", "\n");
        assert_eq!(inspect_multipart(lf.as_bytes(), CT).unwrap_err().status(), 400);
        // Boundaries: exactly one, valid.
        for ct in [
            "multipart/form-data; boundary=B; boundary=C",
            "multipart/form-data; boundary=B; boundary*=C",
            "multipart/form-data; boundary=\"B;C\"x",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\"a\\b\"",
        ] {
            assert_eq!(inspect_multipart(&good, ct).unwrap_err().status(), 400, "{ct}");
        }
        // A part with no headers at all is nobody's field.
        let bare = b"--B\r\n\r\nx\r\n--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nw\r\n--B--\r\n";
        assert_eq!(inspect_multipart(bare, CT).unwrap().model, "w");
    }
}

/// Inputs the fuzzer (`tests/fuzz.rs`) found.
#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    #[test]
    fn a_delimiter_after_a_bare_lf_is_refused() {
        // `\n--B` without its CR ends a value for PHP's parser, not for Python's or Go's: here
        // the third part (a folded `NAME="model"`) would be a second model to one of them.
        let body = b"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n\
            --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\x0e\n\
            --B\r\nContent-Disposition: form-data;\r\n NAME=\"model\"\r\n\r\nother\r\n--B--\r\n";
        assert_eq!(inspect_multipart(body, "multipart/form-data; boundary=B").unwrap_err().status(), 400);
        // A CR that belongs to the header block does not count.
        let body = b"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n\n--B--\r\n";
        assert_eq!(inspect_multipart(body, "multipart/form-data; boundary=B").unwrap_err().status(), 400);
    }

    #[test]
    fn a_null_user_id_is_removed_too() {
        let body = br#"{"user_id":null,"messages":"chat","model":"chat"}"#;
        let f = inspect_json(body).unwrap();
        assert!(f.json_user_id);
        let v: serde_json::Value = serde_json::from_slice(&remove_json_member(body, "user_id").unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"messages":"chat","model":"chat"}));
    }
}
