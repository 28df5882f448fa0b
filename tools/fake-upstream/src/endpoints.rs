//! The OpenAI endpoints.
//!
//! Answers are deterministic functions of the request (apart from `id` counters and `created`
//! timestamps) so that tests can assert on them. Response bodies are serialized from borrowed
//! structs, and streams are rendered into one buffer that is then sliced into frames, to keep
//! per-request allocations low for benchmarks.

use std::borrow::Cow;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::util::{
    fake_embedding, first_chars, floats_to_base64, split_ranges, truncate_words, word_count, TINY_PNG_B64,
};
use crate::{json_response, ApiError, Ctx};

const SYSTEM_FINGERPRINT: &str = "fp_fake_upstream";
/// How much of the user's message is echoed back.
const MAX_SAID_CHARS: usize = 200;
/// Fixed `created` of the model list, so `GET /models` is byte-for-byte stable.
const MODELS_CREATED: u64 = 1_700_000_000;
/// Models advertised by `GET /models`. Any model name is accepted by the other endpoints.
const MODEL_IDS: &[&str] = &[
    "fake-model",
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "tts-1",
    "whisper-1",
    "gpt-image-1",
];
/// Embedding size when the request has no `dimensions`.
const DEFAULT_EMBEDDING_DIMS: usize = 8;
const MAX_EMBEDDING_DIMS: u32 = 4096;
const MAX_IMAGES: u32 = 10;

// ---------------------------------------------------------------------------------------------
// Shared request/response pieces
// ---------------------------------------------------------------------------------------------

/// Parses a JSON body; syntax errors and shape errors both become OpenAI-style 400s.
pub(crate) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_request(format!("Invalid request body: {e}")),
        _ => ApiError::bad_request(format!(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON.) Parser error: {e}"
        )),
    })
}

pub(crate) fn require_model(model: Option<String>) -> Result<String, ApiError> {
    match model {
        Some(m) if !m.is_empty() => Ok(m),
        _ => Err(ApiError::bad_request("you must provide a model parameter").param("model")),
    }
}

fn missing(param: &'static str) -> ApiError {
    ApiError::bad_request(format!("Missing required parameter: '{param}'."))
        .param(param)
        .code("missing_required_parameter")
}

/// The deterministic assistant answer for a prompt.
pub(crate) fn reply_text(model: &str, said: &str) -> String {
    let said = first_chars(said.trim(), MAX_SAID_CHARS);
    let mut text = format!("Hello from the fake upstream (model {model}). You said: {said}");
    // No trailing space when nothing was said: word counts and assertions stay simple.
    let trimmed = text.trim_end().len();
    text.truncate(trimmed);
    text
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl Usage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
    }
}

/// Chat usage carries the detail objects current OpenAI answers have, so gateways that read
/// e.g. `prompt_tokens_details.cached_tokens` find them.
#[derive(Serialize)]
struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

impl ChatUsage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        ChatUsage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails::default(),
            completion_tokens_details: CompletionTokensDetails::default(),
        }
    }

    /// Adds hidden reasoning tokens: output tokens that never appear in the text.
    fn with_reasoning(mut self, reasoning_tokens: u64) -> Self {
        self.completion_tokens += reasoning_tokens;
        self.total_tokens += reasoning_tokens;
        self.completion_tokens_details.reasoning_tokens = reasoning_tokens;
        self
    }
}

/// A chat answer's `logprobs` (`{"content": [...]}`), as padding of a chosen size.
#[derive(Serialize)]
struct Logprobs {
    content: Vec<TokenLogprob>,
}

#[derive(Serialize)]
struct TokenLogprob {
    token: &'static str,
    logprob: f64,
    bytes: [u8; 2],
    top_logprobs: [TopLogprob; 1],
}

#[derive(Serialize)]
struct TopLogprob {
    token: &'static str,
    logprob: f64,
    bytes: [u8; 2],
}

impl Logprobs {
    /// About `bytes` bytes of logprobs once serialized (each entry is about 100).
    fn padding(bytes: u64) -> Self {
        let entry = || TokenLogprob {
            token: "ab",
            logprob: -0.5,
            bytes: [97, 98],
            top_logprobs: [TopLogprob { token: "ac", logprob: -1.5, bytes: [97, 99] }],
        };
        Logprobs { content: (0..bytes.div_ceil(100)).map(|_| entry()).collect() }
    }
}

#[derive(Serialize, Default)]
struct PromptTokensDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize, Default)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

/// Server-sent events rendered into one buffer; each event becomes a zero-copy slice of it.
pub(crate) struct SseFrames {
    buf: BytesMut,
    ends: Vec<usize>,
}

impl SseFrames {
    pub(crate) fn with_capacity(bytes: usize, frames: usize) -> Self {
        SseFrames { buf: BytesMut::with_capacity(bytes), ends: Vec::with_capacity(frames) }
    }

    /// Appends `data: <json>\n\n`.
    fn push_json<T: Serialize>(&mut self, value: &T) {
        self.buf.put_slice(b"data: ");
        // Writing our own plain structs into memory cannot fail; if it somehow did, the frame
        // would be visibly malformed in the test output rather than crash the server.
        let _ = serde_json::to_writer((&mut self.buf).writer(), value);
        self.buf.put_slice(b"\n\n");
        self.ends.push(self.buf.len());
    }

    /// Appends `event: <name>\ndata: <json>\n\n`: the Responses API names every event.
    pub(crate) fn push_event<T: Serialize>(&mut self, name: &str, value: &T) {
        self.buf.put_slice(b"event: ");
        self.buf.put_slice(name.as_bytes());
        self.buf.put_u8(b'\n');
        self.push_json(value);
    }

    /// Appends the `data: [DONE]` terminator of OpenAI streams.
    fn push_done(&mut self) {
        self.buf.put_slice(b"data: [DONE]\n\n");
        self.ends.push(self.buf.len());
    }

    pub(crate) fn into_frames(self) -> Vec<Bytes> {
        let all = self.buf.freeze();
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let frame = all.slice(start..end);
                start = end;
                frame
            })
            .collect()
    }
}

/// A response whose body is written frame by frame, with `delay` between frames, so clients
/// observe a real stream (first frame long before the last).
fn streamed(content_type: &'static str, frames: Vec<Bytes>, delay: Duration) -> Response {
    let stream = async_stream::stream! {
        for (i, frame) in frames.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            yield Ok::<Bytes, Infallible>(frame);
        }
    };
    let mut resp = Response::new(Body::from_stream(stream));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn sse(frames: SseFrames, delay: Duration) -> Response {
    streamed("text/event-stream", frames.into_frames(), delay)
}

// ---------------------------------------------------------------------------------------------
// POST chat/completions
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: Option<String>,
    content: Option<MessageContent>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A content part; only `text` parts matter here (images, audio, ... are ignored).
#[derive(Deserialize)]
struct ContentPart {
    text: Option<String>,
}

impl ChatMessage {
    fn words(&self) -> u64 {
        match &self.content {
            None => 0,
            Some(MessageContent::Text(s)) => word_count(s),
            Some(MessageContent::Parts(parts)) => parts.iter().filter_map(|p| p.text.as_deref()).map(word_count).sum(),
        }
    }

    fn text(&self) -> Cow<'_, str> {
        match &self.content {
            None => Cow::Borrowed(""),
            Some(MessageContent::Text(s)) => Cow::Borrowed(s),
            Some(MessageContent::Parts(parts)) => {
                Cow::Owned(parts.iter().filter_map(|p| p.text.as_deref()).collect::<Vec<_>>().join(" "))
            }
        }
    }
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: [ChatChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a ChatUsage>,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<Logprobs>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a ChatUsage>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

impl<'a> ChunkChoice<'a> {
    fn new(delta: Delta<'a>, finish_reason: Option<&'a str>) -> Self {
        ChunkChoice { index: 0, delta, logprobs: None, finish_reason }
    }
}

pub(crate) fn chat_completions(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let req: ChatRequest = parse_json(body)?;
    let model = require_model(req.model)?;
    let messages = req.messages.ok_or_else(|| missing("messages"))?;
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got \
             an empty array instead.",
        )
        .param("messages")
        .code("empty_array"));
    }
    let prompt_tokens = messages.iter().map(ChatMessage::words).sum::<u64>().max(1);
    let said =
        messages.iter().rev().find(|m| m.role.as_deref() == Some("user")).map(ChatMessage::text).unwrap_or_default();
    let full = reply_text(&model, &said);
    let (content, cut) = match req.max_completion_tokens.or(req.max_tokens) {
        Some(limit) => truncate_words(&full, limit),
        None => (full.as_str(), false),
    };
    // Like OpenAI: "length" when the token limit cut the answer short.
    let finish_reason = if cut { "length" } else { "stop" };
    let usage = ctx.controls.usage_enabled().then(|| {
        ChatUsage::new(prompt_tokens, word_count(content)).with_reasoning(ctx.controls.reasoning_tokens.unwrap_or(0))
    });
    let id = format!("chatcmpl-fake{:012}", ctx.request_id);

    if !req.stream.unwrap_or(false) {
        return Ok(json_response(
            StatusCode::OK,
            &ChatCompletion {
                id: &id,
                object: "chat.completion",
                created: ctx.created,
                model: &model,
                system_fingerprint: SYSTEM_FINGERPRINT,
                choices: [ChatChoice {
                    index: 0,
                    message: AssistantMessage { role: "assistant", content, refusal: None },
                    logprobs: ctx.controls.logprobs_bytes.map(Logprobs::padding),
                    finish_reason,
                }],
                usage: usage.as_ref(),
            },
        ));
    }

    // Streams carry usage only when asked for, exactly like OpenAI.
    let include_usage = req.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let usage = usage.filter(|_| include_usage);
    let ranges = split_ranges(content, ctx.controls.chunk_count());
    let mut frames =
        SseFrames::with_capacity(content.len() + (ranges.len() + 4) * (220 + id.len() + model.len()), ranges.len() + 4);
    let chunk = |choices: &[ChunkChoice<'_>], usage: Option<&ChatUsage>, out: &mut SseFrames| {
        out.push_json(&ChatChunk {
            id: &id,
            object: "chat.completion.chunk",
            created: ctx.created,
            model: &model,
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices,
            usage,
        });
    };
    let role = Delta { role: Some("assistant"), content: Some("") };
    chunk(&[ChunkChoice::new(role, None)], None, &mut frames);
    for range in ranges {
        let delta = Delta { role: None, content: Some(&content[range]) };
        chunk(&[ChunkChoice::new(delta, None)], None, &mut frames);
    }
    let stop = ChunkChoice::new(Delta::default(), Some(finish_reason));
    chunk(&[stop], None, &mut frames);
    if let Some(usage) = &usage {
        chunk(&[], Some(usage), &mut frames);
    }
    frames.push_done();
    Ok(sse(frames, ctx.controls.chunk_delay()))
}

// ---------------------------------------------------------------------------------------------
// POST completions (legacy)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct CompletionRequest {
    model: Option<String>,
    prompt: Option<Value>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [TextChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a Usage>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

impl<'a> TextChoice<'a> {
    fn new(text: &'a str, finish_reason: Option<&'a str>) -> Self {
        TextChoice { text, index: 0, logprobs: None, finish_reason }
    }
}

/// What the legacy `prompt` said (first prompt if several) and its token estimate.
fn legacy_prompt(prompt: Option<&Value>) -> Result<(Cow<'_, str>, u64), ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "Invalid 'prompt': expected a string, an array of strings, an array of tokens, or \
             an array of token arrays.",
        )
        .param("prompt")
    };
    let token_len = |tokens: &[Value]| -> Result<u64, ApiError> {
        if tokens.iter().all(Value::is_u64) {
            Ok(tokens.len() as u64)
        } else {
            Err(invalid())
        }
    };
    match prompt {
        None | Some(Value::Null) => Ok((Cow::Borrowed(""), 0)),
        Some(Value::String(s)) => Ok((Cow::Borrowed(s.as_str()), word_count(s))),
        Some(Value::Array(items)) => match items.first() {
            None => Ok((Cow::Borrowed(""), 0)),
            Some(Value::String(first)) => {
                let mut tokens = 0;
                for item in items {
                    tokens += word_count(item.as_str().ok_or_else(invalid)?);
                }
                Ok((Cow::Borrowed(first.as_str()), tokens))
            }
            Some(Value::Number(_)) => {
                let n = token_len(items)?;
                Ok((Cow::Owned(format!("[{n} tokens]")), n))
            }
            Some(Value::Array(_)) => {
                let mut n = 0;
                for item in items {
                    n += token_len(item.as_array().ok_or_else(invalid)?)?;
                }
                Ok((Cow::Owned(format!("[{n} tokens]")), n))
            }
            Some(_) => Err(invalid()),
        },
        Some(_) => Err(invalid()),
    }
}

pub(crate) fn completions(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse_json(body)?;
    let model = require_model(req.model)?;
    let (said, prompt_tokens) = legacy_prompt(req.prompt.as_ref())?;
    let full = reply_text(&model, &said);
    let (text, cut) = match req.max_tokens {
        Some(limit) => truncate_words(&full, limit),
        None => (full.as_str(), false),
    };
    let finish_reason = if cut { "length" } else { "stop" };
    let usage = ctx.controls.usage_enabled().then(|| Usage::new(prompt_tokens.max(1), word_count(text)));
    let id = format!("cmpl-fake{:012}", ctx.request_id);
    if !req.stream.unwrap_or(false) {
        return Ok(json_response(
            StatusCode::OK,
            &TextCompletion {
                id: &id,
                object: "text_completion",
                created: ctx.created,
                model: &model,
                system_fingerprint: SYSTEM_FINGERPRINT,
                choices: &[TextChoice::new(text, Some(finish_reason))],
                usage: usage.as_ref(),
            },
        ));
    }

    let include_usage = req.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let usage = usage.filter(|_| include_usage);
    let ranges = split_ranges(text, ctx.controls.chunk_count());
    let mut frames =
        SseFrames::with_capacity(text.len() + (ranges.len() + 3) * (160 + id.len() + model.len()), ranges.len() + 3);
    let mut chunk = |choices: &[TextChoice<'_>], usage: Option<&Usage>| {
        frames.push_json(&TextCompletion {
            id: &id,
            object: "text_completion",
            created: ctx.created,
            model: &model,
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices,
            usage,
        });
    };
    for range in ranges {
        chunk(&[TextChoice::new(&text[range], None)], None);
    }
    chunk(&[TextChoice::new("", Some(finish_reason))], None);
    if let Some(usage) = &usage {
        chunk(&[], Some(usage));
    }
    frames.push_done();
    Ok(sse(frames, ctx.controls.chunk_delay()))
}

// ---------------------------------------------------------------------------------------------
// POST embeddings
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct EmbeddingsRequest {
    model: Option<String>,
    input: Option<Value>,
    encoding_format: Option<String>,
    dimensions: Option<u32>,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<EmbeddingUsage>,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EmbeddingValue,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingValue {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// One embedding input: text, or a token array (hashed via its little-endian token ids).
enum EmbeddingInput<'a> {
    Text(&'a str),
    Tokens(&'a [Value]),
}

impl EmbeddingInput<'_> {
    fn tokens(&self) -> u64 {
        match self {
            EmbeddingInput::Text(s) => word_count(s),
            EmbeddingInput::Tokens(t) => t.len() as u64,
        }
    }

    fn vector(&self, dims: usize) -> Vec<f32> {
        match self {
            EmbeddingInput::Text(s) => fake_embedding(s.as_bytes(), dims),
            EmbeddingInput::Tokens(t) => {
                let seed: Vec<u8> = t.iter().flat_map(|v| v.as_u64().unwrap_or(0).to_le_bytes()).collect();
                fake_embedding(&seed, dims)
            }
        }
    }
}

fn embedding_inputs(input: &Value) -> Result<Vec<EmbeddingInput<'_>>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "Invalid 'input': expected a string, an array of strings, an array of tokens, or an \
             array of token arrays.",
        )
        .param("input")
    };
    let tokens = |t: &[Value]| t.iter().all(Value::is_u64) && !t.is_empty();
    match input {
        Value::String(s) => Ok(vec![EmbeddingInput::Text(s)]),
        Value::Array(items) if items.is_empty() => Err(invalid()),
        Value::Array(items) if items.iter().all(Value::is_u64) => Ok(vec![EmbeddingInput::Tokens(items)]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(EmbeddingInput::Text(s)),
                Value::Array(t) if tokens(t) => Ok(EmbeddingInput::Tokens(t)),
                _ => Err(invalid()),
            })
            .collect(),
        _ => Err(invalid()),
    }
}

pub(crate) fn embeddings(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let req: EmbeddingsRequest = parse_json(body)?;
    let model = require_model(req.model)?;
    let input = req.input.as_ref().ok_or_else(|| missing("input"))?;
    let inputs = embedding_inputs(input)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid 'encoding_format': '{other}'. Expected 'float' or 'base64'."
            ))
            .param("encoding_format"))
        }
    };
    let dims = match req.dimensions {
        None => DEFAULT_EMBEDDING_DIMS,
        Some(d) if (1..=MAX_EMBEDDING_DIMS).contains(&d) => d as usize,
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "Invalid 'dimensions': {d}. Expected a value between 1 and {MAX_EMBEDDING_DIMS}."
            ))
            .param("dimensions"))
        }
    };
    let prompt_tokens = inputs.iter().map(EmbeddingInput::tokens).sum::<u64>().max(1);
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let v = input.vector(dims);
            EmbeddingItem {
                object: "embedding",
                index,
                embedding: if base64 {
                    EmbeddingValue::Base64(floats_to_base64(&v))
                } else {
                    EmbeddingValue::Floats(v)
                },
            }
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &EmbeddingList {
            object: "list",
            data,
            model: &model,
            usage: ctx
                .controls
                .usage_enabled()
                .then_some(EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens }),
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// POST audio/speech
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct SpeechRequest {
    model: Option<String>,
    input: Option<String>,
    response_format: Option<String>,
}

/// How often the input text is repeated in the fake audio payload.
const SPEECH_REPEATS: usize = 4;

pub(crate) fn speech(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let req: SpeechRequest = parse_json(body)?;
    let model = require_model(req.model)?;
    let input = req.input.ok_or_else(|| missing("input"))?;
    if input.is_empty() {
        return Err(ApiError::bad_request("Invalid 'input': empty string.").param("input"));
    }
    let format = req.response_format.as_deref().unwrap_or("mp3");
    let content_type = match format {
        "mp3" => "audio/mpeg",
        "opus" => "audio/opus",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pcm" => "audio/pcm",
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid 'response_format': '{other}'. Expected one of mp3, opus, aac, flac, \
                 wav, pcm."
            ))
            .param("response_format"))
        }
    };
    let audio = fake_audio(format, &model, input.as_bytes());
    Ok(streamed(content_type, split_bytes(audio, ctx.controls.chunk_count()), ctx.controls.chunk_delay()))
}

/// Deterministic "audio": a header (a real RIFF/WAVE header for `wav`, a marker line for the
/// other container formats, none for raw `pcm`) followed by the input bytes repeated.
fn fake_audio(format: &str, model: &str, input: &[u8]) -> Bytes {
    // 16-bit samples come in pairs of bytes; pad so a WAV reader sees whole samples.
    let data_len = (input.len() * SPEECH_REPEATS).next_multiple_of(2);
    let mut buf = BytesMut::with_capacity(64 + model.len() + data_len);
    match format {
        "wav" => {
            let data_len32 = u32::try_from(data_len).unwrap_or(u32::MAX);
            buf.put_slice(b"RIFF");
            buf.put_u32_le(data_len32.saturating_add(36));
            buf.put_slice(b"WAVEfmt ");
            buf.put_u32_le(16); // fmt chunk size
            buf.put_u16_le(1); // PCM
            buf.put_u16_le(1); // mono
            buf.put_u32_le(24_000); // sample rate, like OpenAI's pcm output
            buf.put_u32_le(48_000); // byte rate
            buf.put_u16_le(2); // block align
            buf.put_u16_le(16); // bits per sample
            buf.put_slice(b"data");
            buf.put_u32_le(data_len32);
        }
        "pcm" => {}
        other => {
            buf.put_slice(b"FAKE-AUDIO ");
            buf.put_slice(other.as_bytes());
            buf.put_u8(b' ');
            buf.put_slice(model.as_bytes());
            buf.put_u8(b'\n');
        }
    }
    for _ in 0..SPEECH_REPEATS {
        buf.put_slice(input);
    }
    if buf.len() % 2 == 1 && format == "wav" {
        buf.put_u8(0);
    }
    buf.freeze()
}

/// Splits `bytes` into at most `n` non-empty, zero-copy pieces of near-equal size.
fn split_bytes(bytes: Bytes, n: usize) -> Vec<Bytes> {
    let n = n.clamp(1, bytes.len().max(1));
    let size = bytes.len().div_ceil(n).max(1);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < bytes.len() {
        let end = (start + size).min(bytes.len());
        out.push(bytes.slice(start..end));
        start = end;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// POST audio/transcriptions
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct TranscriptionUsage {
    #[serde(rename = "type")]
    kind: &'static str,
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct TranscriptionJson<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a TranscriptionUsage>,
}

#[derive(Serialize)]
struct TranscriptionVerbose<'a> {
    task: &'static str,
    language: &'a str,
    duration: f64,
    text: &'a str,
    segments: [(); 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<DurationUsage>,
}

#[derive(Serialize)]
struct DurationUsage {
    #[serde(rename = "type")]
    kind: &'static str,
    seconds: u64,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum TranscriptEvent<'a> {
    #[serde(rename = "transcript.text.delta")]
    Delta { delta: &'a str },
    #[serde(rename = "transcript.text.done")]
    Done {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<&'a TranscriptionUsage>,
    },
}

/// Pretend bit rate used to turn an upload size into an audio duration.
const FAKE_AUDIO_BYTES_PER_SECOND: f64 = 16_000.0;

#[derive(Default)]
struct TranscriptionForm {
    file_len: Option<usize>,
    model: Option<String>,
    response_format: Option<String>,
    language: Option<String>,
    stream: bool,
}

async fn read_transcription_form(req: Request) -> Result<TranscriptionForm, ApiError> {
    let content_type =
        req.headers().get(CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
    let is_multipart =
        content_type.trim_start().get(..19).is_some_and(|p| p.eq_ignore_ascii_case("multipart/form-data"));
    if !is_multipart {
        return Err(ApiError::bad_request(format!(
            "Invalid Content-Type header ({content_type}), expected multipart/form-data."
        )));
    }
    let invalid = |e: String| ApiError::bad_request(format!("Invalid multipart body: {e}"));
    let mut multipart = Multipart::from_request(req, &()).await.map_err(|e| invalid(e.body_text()))?;
    let mut form = TranscriptionForm::default();
    while let Some(field) = multipart.next_field().await.map_err(|e| invalid(e.body_text()))? {
        // Match the name before consuming the field (the name borrows from it).
        enum Kind {
            File,
            Model,
            Format,
            Language,
            Stream,
            Other,
        }
        let kind = match field.name() {
            Some("file") => Kind::File,
            Some("model") => Kind::Model,
            Some("response_format") => Kind::Format,
            Some("language") => Kind::Language,
            Some("stream") => Kind::Stream,
            _ => Kind::Other,
        };
        match kind {
            Kind::File => {
                let bytes = field.bytes().await.map_err(|e| invalid(e.body_text()))?;
                form.file_len = Some(bytes.len());
            }
            Kind::Other => {
                // Drain unknown fields (prompt, temperature, ...) so parsing can continue.
                field.bytes().await.map_err(|e| invalid(e.body_text()))?;
            }
            kind => {
                let text = field.text().await.map_err(|e| invalid(e.body_text()))?;
                match kind {
                    Kind::Model => form.model = Some(text),
                    Kind::Format => form.response_format = Some(text),
                    Kind::Language => form.language = Some(text),
                    _ => form.stream = text.trim().eq_ignore_ascii_case("true"),
                }
            }
        }
    }
    Ok(form)
}

pub(crate) async fn transcriptions(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let form = read_transcription_form(req).await?;
    let file_len = form.file_len.ok_or_else(|| missing("file"))?;
    let model = require_model(form.model)?;
    let text = format!("fake transcription of {file_len} bytes with model {model}");
    let usage = ctx.controls.usage_enabled().then(|| {
        let input_tokens = (file_len as u64).div_ceil(100).max(1);
        let output_tokens = word_count(&text);
        TranscriptionUsage { kind: "tokens", input_tokens, output_tokens, total_tokens: input_tokens + output_tokens }
    });

    if form.stream {
        let ranges = split_ranges(&text, ctx.controls.chunk_count());
        let mut frames = SseFrames::with_capacity(text.len() * 2 + (ranges.len() + 1) * 96, ranges.len() + 1);
        for range in ranges {
            frames.push_json(&TranscriptEvent::Delta { delta: &text[range] });
        }
        frames.push_json(&TranscriptEvent::Done { text: &text, usage: usage.as_ref() });
        return Ok(sse(frames, ctx.controls.chunk_delay()));
    }

    let duration = file_len as f64 / FAKE_AUDIO_BYTES_PER_SECOND;
    let plain = |content_type: &'static str, body: String| {
        let mut resp = Response::new(Body::from(body));
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp
    };
    match form.response_format.as_deref().unwrap_or("json") {
        "json" => Ok(json_response(StatusCode::OK, &TranscriptionJson { text: &text, usage: usage.as_ref() })),
        "text" => Ok(plain("text/plain; charset=utf-8", text)),
        "verbose_json" => Ok(json_response(
            StatusCode::OK,
            &TranscriptionVerbose {
                task: "transcribe",
                language: form.language.as_deref().unwrap_or("english"),
                duration,
                text: &text,
                segments: [],
                usage: ctx
                    .controls
                    .usage_enabled()
                    .then(|| DurationUsage { kind: "duration", seconds: duration.ceil() as u64 }),
            },
        )),
        "srt" => {
            Ok(plain("application/x-subrip; charset=utf-8", format!("1\n00:00:00,000 --> 00:00:01,000\n{text}\n\n")))
        }
        "vtt" => Ok(plain("text/vtt; charset=utf-8", format!("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n\n"))),
        other => Err(ApiError::bad_request(format!(
            "Invalid 'response_format': '{other}'. Expected one of json, text, srt, \
             verbose_json, vtt."
        ))
        .param("response_format")),
    }
}

// ---------------------------------------------------------------------------------------------
// POST images/generations
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ImageRequest {
    prompt: Option<String>,
    n: Option<u32>,
    response_format: Option<String>,
}

#[derive(Serialize)]
struct ImagesResponse {
    created: u64,
    data: Vec<ImageItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<ImageUsage>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ImageItem {
    B64 { b64_json: &'static str },
    Url { url: String },
}

#[derive(Serialize)]
struct ImageUsage {
    total_tokens: u64,
    input_tokens: u64,
    output_tokens: u64,
    input_tokens_details: ImageInputDetails,
}

#[derive(Serialize)]
struct ImageInputDetails {
    text_tokens: u64,
    image_tokens: u64,
}

pub(crate) fn image_generations(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let req: ImageRequest = parse_json(body)?;
    let prompt = req.prompt.ok_or_else(|| missing("prompt"))?;
    let n = req.n.unwrap_or(1);
    if !(1..=MAX_IMAGES).contains(&n) {
        return Err(
            ApiError::bad_request(format!("Invalid 'n': {n}. Expected a value between 1 and {MAX_IMAGES}.")).param("n")
        );
    }
    let as_url = match req.response_format.as_deref() {
        None | Some("b64_json") => false,
        Some("url") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid 'response_format': '{other}'. Expected 'url' or 'b64_json'."
            ))
            .param("response_format"))
        }
    };
    let data = (0..n)
        .map(|_| {
            if as_url {
                // A data: URL keeps the answer self-contained (nothing to host or fetch).
                ImageItem::Url { url: format!("data:image/png;base64,{TINY_PNG_B64}") }
            } else {
                ImageItem::B64 { b64_json: TINY_PNG_B64 }
            }
        })
        .collect();
    let text_tokens = word_count(&prompt).max(1);
    // One "output token" per image: arbitrary but deterministic.
    let output_tokens = u64::from(n);
    Ok(json_response(
        StatusCode::OK,
        &ImagesResponse {
            created: ctx.created,
            data,
            usage: ctx.controls.usage_enabled().then_some(ImageUsage {
                total_tokens: text_tokens + output_tokens,
                input_tokens: text_tokens,
                output_tokens,
                input_tokens_details: ImageInputDetails { text_tokens, image_tokens: 0 },
            }),
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// GET models, GET models/{id}
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

impl<'a> ModelObject<'a> {
    fn new(id: &'a str) -> Self {
        ModelObject { id, object: "model", created: MODELS_CREATED, owned_by: "fake-upstream" }
    }
}

pub(crate) fn models() -> Response {
    #[derive(Serialize)]
    struct ModelList<'a> {
        object: &'static str,
        data: Vec<ModelObject<'a>>,
    }
    json_response(
        StatusCode::OK,
        &ModelList { object: "list", data: MODEL_IDS.iter().map(|id| ModelObject::new(id)).collect() },
    )
}

/// Any model id "exists": gateways may route on model names the fake does not list.
pub(crate) fn model(id: &str) -> Response {
    json_response(StatusCode::OK, &ModelObject::new(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_deterministic_and_trimmed() {
        assert_eq!(reply_text("m", "  hi there "), "Hello from the fake upstream (model m). You said: hi there");
        assert_eq!(reply_text("m", ""), "Hello from the fake upstream (model m). You said:");
        let long = "x".repeat(500);
        assert!(reply_text("m", &long).ends_with(&"x".repeat(200)));
        assert!(!reply_text("m", &long).ends_with(&"x".repeat(201)));
    }

    #[test]
    fn legacy_prompt_forms() -> Result<(), String> {
        let check = |v: Value| {
            legacy_prompt(Some(&v)).map(|(said, tokens)| (said.into_owned(), tokens)).map_err(|e| format!("{e:?}"))
        };
        assert_eq!(check(Value::from("a b"))?, ("a b".to_owned(), 2));
        assert_eq!(check(serde_json::json!(["a b", "c"]))?, ("a b".to_owned(), 3));
        assert_eq!(check(serde_json::json!([1, 2, 3]))?.1, 3);
        assert_eq!(check(serde_json::json!([[1, 2], [3]]))?.1, 3);
        assert!(check(serde_json::json!([{"a": 1}])).is_err());
        assert!(check(serde_json::json!(["a", 1])).is_err());
        Ok(())
    }

    #[test]
    fn embedding_input_forms() {
        let ok = |v: Value| embedding_inputs(&v).map(|i| i.len()).ok();
        assert_eq!(ok(serde_json::json!("x")), Some(1));
        assert_eq!(ok(serde_json::json!(["x", "y"])), Some(2));
        assert_eq!(ok(serde_json::json!([1, 2, 3])), Some(1));
        assert_eq!(ok(serde_json::json!([[1], [2, 3]])), Some(2));
        assert_eq!(ok(serde_json::json!([])), None);
        assert_eq!(ok(serde_json::json!(42)), None);
        assert_eq!(ok(serde_json::json!([[]])), None);
    }

    #[test]
    fn wav_header_is_consistent() {
        let audio = fake_audio("wav", "tts-1", b"abc");
        assert_eq!(&audio[..4], b"RIFF");
        assert_eq!(&audio[8..16], b"WAVEfmt ");
        let riff = u32::from_le_bytes([audio[4], audio[5], audio[6], audio[7]]) as usize;
        assert_eq!(riff + 8, audio.len());
        let data = u32::from_le_bytes([audio[40], audio[41], audio[42], audio[43]]) as usize;
        assert_eq!(data + 44, audio.len());
    }

    #[test]
    fn split_bytes_covers_everything() {
        let b = Bytes::from_static(b"0123456789");
        for n in 1..15 {
            let parts = split_bytes(b.clone(), n);
            assert!(parts.len() <= n && !parts.is_empty());
            assert_eq!(parts.concat(), b"0123456789");
        }
        assert!(split_bytes(Bytes::new(), 3).is_empty());
    }
}
