//! The Responses API: `POST responses`, `GET responses/{id}` (also as a replayed stream),
//! `DELETE responses/{id}`, `POST responses/{id}/cancel`, `GET responses/{id}/input_items` and
//! `POST responses/input_tokens`.
//!
//! # Answers
//!
//! The answer is the chat endpoint's: `Hello from the fake upstream (model M). You said: S`, where
//! `S` is the text of the last `user` message of this request's `input` (a string `input` is one
//! user message; the text of a message with content parts is its parts' `text`s joined by a
//! space). The output is one `message` item with one `output_text` part.
//!
//! # Usage
//!
//! Tokens are whitespace-separated words, as everywhere in this crate, so tests can predict them:
//!
//! - `words(input)`: a string input's words; for a list of items, the words of each message's
//!   text (string `content`, or the `text` of each content part), of `output` (tool outputs) and
//!   of `arguments` (function calls) where those are strings; other items count 0.
//! - `input_tokens = max(1, carried(previous) + words(instructions) + words(input))`, where
//!   `carried(R) = carried(previous of R) + words(input of R) + output text words of R`: as at
//!   OpenAI, a previous response's input and output are input of the next one, and its
//!   `instructions` are not carried over. Chat counts its prompt the same way (a system message
//!   plays the part of `instructions`).
//! - `output_tokens = words(output text) + reasoning`, where `reasoning` is the
//!   `reasoning_tokens` control (also in `output_tokens_details.reasoning_tokens`).
//! - `total_tokens = input_tokens + output_tokens`; `cached_tokens` is always 0.
//!
//! `max_output_tokens` bounds output text and reasoning together, like at OpenAI: reasoning
//! takes `min(reasoning, max_output_tokens)` and the text is cut to the rest, in words; if
//! anything was cut the status is `incomplete` with `incomplete_details.reason =
//! "max_output_tokens"`. The `response_fail` control makes the response fail after half of its
//! text (rounded down, in words): status `failed`, `error.code = "server_error"`, and the usage
//! of what was produced. The `no_usage` control leaves `usage` null.
//!
//! # Streams
//!
//! `stream: true` answers with SSE events that each carry an `event:` line and a JSON `data:`
//! line with `type` and `sequence_number` (from 0); there is no `[DONE]`:
//! `response.created`, (`response.queued` for background responses), `response.in_progress`,
//! `response.output_item.added`, `response.content_part.added`, `response.output_text.delta` (at
//! most `chunks` of them: empty pieces are not sent), `response.output_text.done`,
//! `response.content_part.done`, `response.output_item.done`, and `response.completed` or
//! `response.incomplete`. A failing response stops after its deltas with `response.failed`.
//! `chunk_delay_ms` applies between events.
//!
//! # Storage and lifecycle
//!
//! Responses are kept in memory (the newest [`MAX_STORED_RESPONSES`](crate::MAX_STORED_RESPONSES);
//! older ones are forgotten) unless `store: false`. A streamed response is stored `in_progress`
//! and becomes final just before its last event is sent (or when the client goes away).
//! `background: true` answers at once with status `queued`; the response is `in_progress` after
//! half of the `background_ms` control (default
//! [`DEFAULT_BACKGROUND_MS`](crate::DEFAULT_BACKGROUND_MS)) and final after all of it. Cancelling
//! a background response that is not final makes it `cancelled` for good; cancelling a final one
//! returns it unchanged (as OpenAI does); cancelling a response created without `background`
//! is a 400. `GET responses/{id}?stream=true` waits until the response is final and replays its
//! events (`starting_after` skips the first ones).
//!
//! # Known differences from OpenAI
//!
//! - `max_output_tokens` has no lower bound (OpenAI requires at least 16), so tests can cut
//!   short answers.
//! - Only text answers: tools are echoed, never called; no reasoning items, refusals,
//!   annotations, logprobs, `obfuscation` fields or `error` events.
//! - A cursor (`after`/`before`) that names no item of the list is a 400.
//! - A background response cannot be streamed while it runs (`GET ...?stream=true` waits for
//!   its end), and cancelling a background *stream* does not cut the stream short.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::endpoints::{parse_json, reply_text, require_model, SseFrames};
use crate::util::{percent_decode, split_ranges, truncate_words, word_count};
use crate::{json_response, ApiError, Ctx, MAX_BACKGROUND_MS, MAX_STORED_RESPONSES};

/// Largest `limit` of `GET responses/{id}/input_items`, and its default.
const MAX_LIST_LIMIT: usize = 100;
const DEFAULT_LIST_LIMIT: usize = 20;
/// How often a replayed stream looks whether the response it waits for is final.
const REPLAY_POLL: Duration = Duration::from_millis(20);
/// A replayed stream gives up waiting after this long (a background response is final after at
/// most [`MAX_BACKGROUND_MS`]; a running stream ends when its client goes away).
const REPLAY_MAX_WAIT: Duration = Duration::from_millis(MAX_BACKGROUND_MS + 60_000);

// ---------------------------------------------------------------------------------------------
// The response object
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Queued,
    InProgress,
    Completed,
    Failed,
    Incomplete,
    Cancelled,
}

impl Status {
    fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::InProgress)
    }
}

/// A `response` object. Request parameters that only matter to a real model are echoed as
/// given (with OpenAI's defaults when absent), since clients read them back.
#[derive(Clone, Debug, Serialize)]
struct ResponseObject {
    id: String,
    object: &'static str,
    created_at: u64,
    status: Status,
    background: bool,
    completed_at: Option<u64>,
    error: Option<ResponseError>,
    incomplete_details: Option<IncompleteDetails>,
    instructions: Value,
    max_output_tokens: Option<u64>,
    max_tool_calls: Value,
    model: String,
    output: Vec<OutputMessage>,
    parallel_tool_calls: bool,
    previous_response_id: Option<String>,
    prompt_cache_key: Value,
    reasoning: Value,
    safety_identifier: Value,
    service_tier: Value,
    store: bool,
    temperature: Value,
    text: Value,
    tool_choice: Value,
    tools: Value,
    top_logprobs: Value,
    top_p: Value,
    truncation: Value,
    usage: Option<ResponseUsage>,
    user: Value,
    metadata: Value,
}

#[derive(Clone, Debug, Serialize)]
struct ResponseError {
    code: &'static str,
    message: String,
}

#[derive(Clone, Debug, Serialize)]
struct IncompleteDetails {
    reason: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum ItemStatus {
    InProgress,
    Completed,
    Incomplete,
}

#[derive(Clone, Debug, Serialize)]
struct OutputMessage {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    status: ItemStatus,
    content: Vec<OutputText>,
    role: &'static str,
}

#[derive(Clone, Debug, Serialize)]
struct OutputText {
    #[serde(rename = "type")]
    kind: &'static str,
    annotations: [(); 0],
    logprobs: [(); 0],
    text: String,
}

impl OutputText {
    fn new(text: String) -> Self {
        OutputText { kind: "output_text", annotations: [], logprobs: [], text }
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
struct ResponseUsage {
    input_tokens: u64,
    input_tokens_details: InputTokensDetails,
    output_tokens: u64,
    output_tokens_details: OutputTokensDetails,
    total_tokens: u64,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct InputTokensDetails {
    cached_tokens: u64,
    // Declared (and required) by the official SDK's types since 3.x.
    cache_write_tokens: u64,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct OutputTokensDetails {
    reasoning_tokens: u64,
}

impl ResponseUsage {
    fn new(input_tokens: u64, text_tokens: u64, reasoning_tokens: u64) -> Self {
        let output_tokens = text_tokens + reasoning_tokens;
        ResponseUsage {
            input_tokens,
            input_tokens_details: InputTokensDetails { cached_tokens: 0, cache_write_tokens: 0 },
            output_tokens,
            output_tokens_details: OutputTokensDetails { reasoning_tokens },
            total_tokens: input_tokens + output_tokens,
        }
    }
}

impl ResponseObject {
    /// The answer's text (empty when there is no output yet).
    fn output_text(&self) -> &str {
        self.output.first().and_then(|m| m.content.first()).map_or("", |t| t.text.as_str())
    }

    /// What the response looked like when it started: no output, no usage, no outcome.
    fn started(&self) -> ResponseObject {
        ResponseObject {
            status: if self.background { Status::Queued } else { Status::InProgress },
            completed_at: None,
            error: None,
            incomplete_details: None,
            output: Vec::new(),
            usage: None,
            ..self.clone()
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------------

/// The stored responses of one fake upstream: bounded, thread-safe, cheap to clone (an `Arc`).
#[derive(Clone)]
pub(crate) struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    /// Random per store, so ids differ between servers and runs (a gateway may remember ids
    /// across fake upstream restarts).
    seed: u64,
    next: AtomicU64,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Stored>,
    /// Insertion order for eviction. Deleted ids stay here until evicted or compacted: removing
    /// them at delete time would be a linear scan.
    order: VecDeque<String>,
}

struct Stored {
    response: ResponseObject,
    input_items: Vec<Value>,
    /// Tokens this response hands on as input to a response that names it as previous.
    carried_tokens: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            inner: Arc::new(StoreInner {
                seed: RandomState::new().hash_one(0x5eed_u32),
                next: AtomicU64::new(1),
                entries: Mutex::new(Entries::default()),
            }),
        }
    }
}

impl Store {
    fn new_id(&self, prefix: &str) -> String {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:016x}{n:016x}", self.inner.seed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, stored: Stored) {
        let mut guard = self.lock();
        let entries = &mut *guard;
        while entries.map.len() >= MAX_STORED_RESPONSES {
            match entries.order.pop_front() {
                Some(old) => {
                    entries.map.remove(&old);
                }
                None => break,
            }
        }
        entries.order.push_back(stored.response.id.clone());
        entries.map.insert(stored.response.id.clone(), stored);
        if entries.order.len() > 2 * MAX_STORED_RESPONSES {
            let map = &entries.map;
            entries.order.retain(|id| map.contains_key(id));
        }
    }

    fn response(&self, id: &str) -> Option<ResponseObject> {
        self.lock().map.get(id).map(|s| s.response.clone())
    }

    fn carried_tokens(&self, id: &str) -> Option<u64> {
        self.lock().map.get(id).map(|s| s.carried_tokens)
    }

    fn remove(&self, id: &str) -> bool {
        self.lock().map.remove(id).is_some()
    }

    /// Moves a queued response on to `in_progress` (a cancelled or deleted one stays as it is).
    fn start(&self, id: &str) {
        if let Some(s) = self.lock().map.get_mut(id) {
            if s.response.status == Status::Queued {
                s.response.status = Status::InProgress;
            }
        }
    }

    /// Stores the outcome of a response that is still running. A response that was cancelled
    /// (or deleted) meanwhile keeps that state: cancellation wins, as at OpenAI.
    fn finish(&self, mut outcome: ResponseObject) {
        let mut entries = self.lock();
        if let Some(s) = entries.map.get_mut(&outcome.id) {
            if !s.response.status.is_final() {
                if outcome.status == Status::Completed {
                    outcome.completed_at = Some(now_secs());
                }
                s.response = outcome;
            }
        }
    }

    /// Applies a cancel request: `None` when the id is unknown.
    fn cancel(&self, id: &str) -> Option<Result<ResponseObject, ApiError>> {
        let mut entries = self.lock();
        let s = entries.map.get_mut(id)?;
        if !s.response.background {
            return Some(Err(ApiError::bad_request("Only responses created with background=true can be cancelled.")));
        }
        if !s.response.status.is_final() {
            s.response.status = Status::Cancelled;
        }
        Some(Ok(s.response.clone()))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("Response with id '{id}' not found."))
}

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

/// A request's input, as stored for `input_items` and measured for usage.
struct Input {
    items: Vec<Value>,
    words: u64,
    /// Text of the last user message: what the answer echoes.
    said: String,
}

fn invalid_input(message: &'static str) -> ApiError {
    ApiError::bad_request(message).param("input").code("invalid_type")
}

/// The text of a message's `content` (a string, or parts whose `text`s are joined by a space).
fn content_text(content: Option<&Value>) -> Cow<'_, str> {
    match content {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Array(parts)) => {
            Cow::Owned(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" "))
        }
        _ => Cow::Borrowed(""),
    }
}

/// Words of one input item (see the module docs).
fn item_words(item: &Value) -> u64 {
    let mut words = 0;
    match item.get("content") {
        Some(Value::String(s)) => words += word_count(s),
        Some(Value::Array(parts)) => {
            words += parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).map(word_count).sum::<u64>()
        }
        _ => {}
    }
    for field in ["output", "arguments"] {
        if let Some(s) = item.get(field).and_then(Value::as_str) {
            words += word_count(s);
        }
    }
    words
}

fn is_message(item: &Map<String, Value>) -> bool {
    match item.get("type").and_then(Value::as_str) {
        Some(kind) => kind == "message",
        // "Easy" messages (`{"role": ..., "content": ...}`) have no type.
        None => item.contains_key("role"),
    }
}

/// A message as OpenAI lists it: typed, with an id and a status, and content as parts.
fn normalize_message(mut item: Map<String, Value>, store: &Store) -> Result<Value, ApiError> {
    let role = item.get("role").and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request("Invalid input message: 'role' must be a string.").param("input").code("invalid_type")
    })?;
    // Assistant turns given back as context are output text; everything else is input text.
    let part_type = if role == "assistant" { "output_text" } else { "input_text" };
    if let Some(Value::String(text)) = item.get("content") {
        let part = if part_type == "output_text" {
            json!({"type": part_type, "text": text, "annotations": []})
        } else {
            json!({"type": part_type, "text": text})
        };
        item.insert("content".into(), Value::Array(vec![part]));
    }
    item.insert("type".into(), Value::from("message"));
    item.entry("id").or_insert_with(|| Value::from(store.new_id("msg_")));
    item.entry("status").or_insert_with(|| Value::from("completed"));
    Ok(Value::Object(item))
}

fn read_input(input: Option<Value>, store: &Store) -> Result<Input, ApiError> {
    match input {
        None | Some(Value::Null) => Ok(Input { items: Vec::new(), words: 0, said: String::new() }),
        Some(Value::String(text)) => Ok(Input {
            items: vec![json!({
                "type": "message",
                "id": store.new_id("msg_"),
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": text}],
            })],
            words: word_count(&text),
            said: text,
        }),
        Some(Value::Array(raw)) => {
            let mut items = Vec::with_capacity(raw.len());
            let mut words = 0;
            let mut said = None;
            for item in raw {
                let Value::Object(item) = item else {
                    return Err(invalid_input("Invalid 'input': every input item must be an object."));
                };
                words += item_words(&Value::Object(item.clone()));
                if is_message(&item) {
                    if item.get("role").and_then(Value::as_str) == Some("user") {
                        said = Some(content_text(item.get("content")).into_owned());
                    }
                    items.push(normalize_message(item, store)?);
                } else {
                    let mut item = item;
                    item.entry("id").or_insert_with(|| Value::from(store.new_id("item_")));
                    items.push(Value::Object(item));
                }
            }
            Ok(Input { items, words, said: said.unwrap_or_default() })
        }
        Some(_) => Err(invalid_input("Invalid type for 'input': expected a string or an array of input items.")),
    }
}

/// Words of `instructions`: a string, or a list of input items.
fn instructions_words(instructions: Option<&Value>) -> Result<u64, ApiError> {
    match instructions {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) => Ok(word_count(s)),
        Some(Value::Array(items)) => Ok(items.iter().map(item_words).sum()),
        Some(_) => Err(ApiError::bad_request("Invalid type for 'instructions': expected a string or an array.")
            .param("instructions")
            .code("invalid_type")),
    }
}

fn previous_not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("Previous response with id '{id}' not found."))
        .param("previous_response_id")
        .code("previous_response_not_found")
}

/// Tokens carried over from `previous_response_id` (0 without one).
fn carried_from(store: &Store, previous: Option<&str>) -> Result<u64, ApiError> {
    match previous {
        None => Ok(0),
        Some(id) => store.carried_tokens(id).ok_or_else(|| previous_not_found(id)),
    }
}

// ---------------------------------------------------------------------------------------------
// POST responses
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct CreateRequest {
    model: Option<String>,
    input: Option<Value>,
    instructions: Option<Value>,
    previous_response_id: Option<String>,
    stream: Option<bool>,
    background: Option<bool>,
    store: Option<bool>,
    max_output_tokens: Option<u64>,
    max_tool_calls: Option<Value>,
    metadata: Option<Value>,
    parallel_tool_calls: Option<bool>,
    prompt_cache_key: Option<Value>,
    reasoning: Option<Value>,
    safety_identifier: Option<Value>,
    service_tier: Option<Value>,
    temperature: Option<Value>,
    text: Option<Value>,
    tool_choice: Option<Value>,
    tools: Option<Value>,
    top_logprobs: Option<Value>,
    top_p: Option<Value>,
    truncation: Option<Value>,
    user: Option<Value>,
}

pub(crate) fn create(store: &Store, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let req: CreateRequest = parse_json(body)?;
    let model = require_model(req.model)?;
    let input = read_input(req.input, store)?;
    let instruction_words = instructions_words(req.instructions.as_ref())?;
    let carried = carried_from(store, req.previous_response_id.as_deref())?;
    let background = req.background.unwrap_or(false);
    let keep = req.store.unwrap_or(true);
    if background && !keep {
        return Err(ApiError::bad_request("Background mode requires store=true.").param("background"));
    }
    let input_tokens = (carried + instruction_words + input.words).max(1);

    // What the model produces: reasoning first, then the text, within max_output_tokens.
    let full = reply_text(&model, &input.said);
    let wanted_reasoning = ctx.controls.reasoning_tokens.unwrap_or(0);
    let (reasoning, text_limit) = match req.max_output_tokens {
        Some(limit) => (wanted_reasoning.min(limit), Some(limit - wanted_reasoning.min(limit))),
        None => (wanted_reasoning, None),
    };
    let (text, cut) = match text_limit {
        Some(limit) => truncate_words(&full, limit),
        None => (full.as_str(), false),
    };
    let incomplete = cut || reasoning < wanted_reasoning;
    let failed = ctx.controls.response_fail.unwrap_or(false);
    let produced = if failed { truncate_words(text, word_count(text) / 2).0 } else { text };
    let text_tokens = word_count(produced);

    let id = store.new_id("resp_");
    let (status, item_status) = if failed {
        (Status::Failed, ItemStatus::Incomplete)
    } else if incomplete {
        (Status::Incomplete, ItemStatus::Incomplete)
    } else {
        (Status::Completed, ItemStatus::Completed)
    };
    let service_tier = match req.service_tier {
        None => Value::from("default"),
        Some(Value::String(t)) if t == "auto" => Value::from("default"),
        Some(other) => other,
    };
    let outcome = ResponseObject {
        id: id.clone(),
        object: "response",
        created_at: ctx.created,
        status,
        background,
        completed_at: (status == Status::Completed).then(now_secs),
        error: failed.then(|| ResponseError {
            code: "server_error",
            message: "The fake upstream was told to fail this response (x-fake-response-fail or controls).".to_owned(),
        }),
        incomplete_details: (incomplete && !failed).then_some(IncompleteDetails { reason: "max_output_tokens" }),
        instructions: req.instructions.unwrap_or(Value::Null),
        max_output_tokens: req.max_output_tokens,
        max_tool_calls: req.max_tool_calls.unwrap_or(Value::Null),
        model,
        output: vec![OutputMessage {
            id: store.new_id("msg_"),
            kind: "message",
            status: item_status,
            content: vec![OutputText::new(produced.to_owned())],
            role: "assistant",
        }],
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        previous_response_id: req.previous_response_id,
        prompt_cache_key: req.prompt_cache_key.unwrap_or(Value::Null),
        reasoning: req.reasoning.unwrap_or_else(|| json!({"effort": null, "summary": null})),
        safety_identifier: req.safety_identifier.unwrap_or(Value::Null),
        service_tier,
        store: keep,
        temperature: req.temperature.unwrap_or_else(|| Value::from(1.0)),
        text: req.text.unwrap_or_else(|| json!({"format": {"type": "text"}, "verbosity": "medium"})),
        tool_choice: req.tool_choice.unwrap_or_else(|| Value::from("auto")),
        tools: req.tools.unwrap_or_else(|| Value::Array(Vec::new())),
        top_logprobs: req.top_logprobs.unwrap_or_else(|| Value::from(0)),
        top_p: req.top_p.unwrap_or_else(|| Value::from(1.0)),
        truncation: req.truncation.unwrap_or_else(|| Value::from("disabled")),
        usage: ctx.controls.usage_enabled().then(|| ResponseUsage::new(input_tokens, text_tokens, reasoning)),
        user: req.user.unwrap_or(Value::Null),
        metadata: req.metadata.unwrap_or_else(|| Value::Object(Map::new())),
    };
    let started = outcome.started();
    let stored = |response: ResponseObject| Stored {
        response,
        input_items: input.items,
        carried_tokens: carried + input.words + text_tokens,
    };

    if req.stream.unwrap_or(false) {
        let frames = render_events(&started, &outcome, ctx.controls.chunk_count(), None);
        let finish = if keep {
            store.insert(stored(started));
            Finish { store: Some(store.clone()), outcome: Some(outcome) }
        } else {
            Finish { store: None, outcome: None }
        };
        return Ok(sse_with_finish(frames.into_frames(), ctx.controls.chunk_delay(), finish));
    }
    if background {
        store.insert(stored(started.clone()));
        let store = store.clone();
        let delay = ctx.controls.background_delay();
        tokio::spawn(async move {
            tokio::time::sleep(delay / 2).await;
            store.start(&id);
            tokio::time::sleep(delay - delay / 2).await;
            store.finish(outcome);
        });
        return Ok(json_response(StatusCode::OK, &started));
    }
    if keep {
        store.insert(stored(outcome.clone()));
    }
    Ok(json_response(StatusCode::OK, &outcome))
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// Writes named events, numbering them from 0; events numbered `<= starting_after` are
/// counted but not sent (stream resumption).
struct EventWriter {
    frames: SseFrames,
    seq: u64,
    starting_after: Option<u64>,
}

#[derive(Serialize)]
struct Event<'a, B: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    sequence_number: u64,
    #[serde(flatten)]
    body: B,
}

#[derive(Serialize)]
struct WithResponse<'a> {
    response: &'a ResponseObject,
}

#[derive(Serialize)]
struct WithItem<'a> {
    output_index: u32,
    item: &'a OutputMessage,
}

#[derive(Serialize)]
struct WithPart<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    part: &'a OutputText,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    delta: &'a str,
    logprobs: [(); 0],
}

#[derive(Serialize)]
struct TextDone<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    text: &'a str,
    logprobs: [(); 0],
}

impl EventWriter {
    fn push<B: Serialize>(&mut self, kind: &str, body: B) {
        let seq = self.seq;
        self.seq += 1;
        if self.starting_after.is_some_and(|after| seq <= after) {
            return;
        }
        self.frames.push_event(kind, &Event { kind, sequence_number: seq, body });
    }
}

/// The events of a response that went from `started` to `outcome` (which must be final, and not
/// cancelled: a cancelled response never streams).
fn render_events(
    started: &ResponseObject,
    outcome: &ResponseObject,
    chunks: usize,
    starting_after: Option<u64>,
) -> SseFrames {
    let text = outcome.output_text();
    let ranges: Vec<_> = split_ranges(text, chunks).into_iter().filter(|r| !r.is_empty()).collect();
    let response_bytes = serde_json::to_vec(outcome).map_or(2048, |v| v.len());
    let mut w = EventWriter {
        frames: SseFrames::with_capacity(
            4 * response_bytes + text.len() * 4 + ranges.len() * 200 + 1024,
            ranges.len() + 10,
        ),
        seq: 0,
        starting_after,
    };
    w.push("response.created", WithResponse { response: started });
    if started.status == Status::Queued {
        w.push("response.queued", WithResponse { response: started });
        let running = ResponseObject { status: Status::InProgress, ..started.clone() };
        w.push("response.in_progress", WithResponse { response: &running });
    } else {
        w.push("response.in_progress", WithResponse { response: started });
    }
    if let Some(message) = outcome.output.first() {
        let added = OutputMessage { status: ItemStatus::InProgress, content: Vec::new(), ..message.clone() };
        w.push("response.output_item.added", WithItem { output_index: 0, item: &added });
        let item_id = message.id.as_str();
        let empty = OutputText::new(String::new());
        w.push("response.content_part.added", WithPart { item_id, output_index: 0, content_index: 0, part: &empty });
        for range in ranges {
            let delta = TextDelta { item_id, output_index: 0, content_index: 0, delta: &text[range], logprobs: [] };
            w.push("response.output_text.delta", delta);
        }
        // A failure interrupts the generation: the text, part and item are never done.
        if outcome.status != Status::Failed {
            w.push(
                "response.output_text.done",
                TextDone { item_id, output_index: 0, content_index: 0, text, logprobs: [] },
            );
            if let Some(part) = message.content.first() {
                w.push("response.content_part.done", WithPart { item_id, output_index: 0, content_index: 0, part });
            }
            w.push("response.output_item.done", WithItem { output_index: 0, item: message });
        }
    }
    let last = match outcome.status {
        Status::Failed => "response.failed",
        Status::Incomplete => "response.incomplete",
        _ => "response.completed",
    };
    w.push(last, WithResponse { response: outcome });
    w.frames
}

/// Stores a streamed response's outcome once: just before the last event goes out (so a client
/// that reads `response.completed` and retrieves the response sees it final), or when the stream
/// is dropped because the client went away.
struct Finish {
    store: Option<Store>,
    outcome: Option<ResponseObject>,
}

impl Finish {
    fn run(&mut self) {
        if let (Some(store), Some(outcome)) = (&self.store, self.outcome.take()) {
            store.finish(outcome);
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.run();
    }
}

fn sse_with_finish(frames: Vec<Bytes>, delay: Duration, mut finish: Finish) -> Response {
    let last = frames.len().saturating_sub(1);
    let stream = async_stream::stream! {
        for (i, frame) in frames.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if i == last {
                finish.run();
            }
            yield Ok::<Bytes, Infallible>(frame);
        }
    };
    let mut resp = Response::new(Body::from_stream(stream));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

// ---------------------------------------------------------------------------------------------
// GET / DELETE responses/{id}, POST responses/{id}/cancel
// ---------------------------------------------------------------------------------------------

/// Query parameters, decoded (`+` is a space). Repeated keys keep every value.
fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| percent_decode(&s.replace('+', " ")).into_owned();
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn parse_bool(params: &[(String, String)], name: &'static str) -> Result<bool, ApiError> {
    match param(params, name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid value for '{name}': expected a boolean, but got '{other}' instead."
        ))
        .param(name)),
    }
}

pub(crate) async fn retrieve(store: &Store, ctx: &Ctx, id: &str, query: Option<&str>) -> Result<Response, ApiError> {
    let params = query_params(query);
    if !parse_bool(&params, "stream")? {
        let response = store.response(id).ok_or_else(|| not_found(id))?;
        return Ok(json_response(StatusCode::OK, &response));
    }
    let starting_after = match param(&params, "starting_after") {
        None => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("Invalid 'starting_after': expected an integer, but got '{s}' instead."))
                .param("starting_after")
        })?),
    };
    // Replay needs the whole story: wait for the outcome.
    let deadline = Instant::now() + REPLAY_MAX_WAIT;
    let outcome = loop {
        let response = store.response(id).ok_or_else(|| not_found(id))?;
        if response.status.is_final() {
            break response;
        }
        if Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("Response with id '{id}' did not finish in time to be streamed."),
            ));
        }
        tokio::time::sleep(REPLAY_POLL).await;
    };
    if outcome.status == Status::Cancelled {
        return Err(ApiError::bad_request(format!("Response with id '{id}' was cancelled and cannot be streamed.")));
    }
    let frames = render_events(&outcome.started(), &outcome, ctx.controls.chunk_count(), starting_after);
    Ok(sse_with_finish(frames.into_frames(), ctx.controls.chunk_delay(), Finish { store: None, outcome: None }))
}

pub(crate) fn delete(store: &Store, id: &str) -> Result<Response, ApiError> {
    if !store.remove(id) {
        return Err(not_found(id));
    }
    Ok(json_response(StatusCode::OK, &json!({"id": id, "object": "response", "deleted": true})))
}

pub(crate) fn cancel(store: &Store, id: &str) -> Result<Response, ApiError> {
    let response = store.cancel(id).ok_or_else(|| not_found(id))??;
    Ok(json_response(StatusCode::OK, &response))
}

// ---------------------------------------------------------------------------------------------
// GET responses/{id}/input_items
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ItemList<'a> {
    object: &'static str,
    data: &'a [Value],
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
    has_more: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct Page {
    /// Indexes into the stored items, in listing order.
    indexes: Vec<usize>,
    has_more: bool,
}

/// Cursor pagination over `ids` (in input order): `after`/`before` are exclusive bounds in
/// listing order (`desc` lists the newest, i.e. last, item first).
fn paginate(ids: &[Option<&str>], params: &[(String, String)]) -> Result<Page, ApiError> {
    let limit = match param(params, "limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Invalid 'limit': expected an integer between 1 and {MAX_LIST_LIMIT}, but got '{s}' instead."
                ))
                .param("limit"))
            }
        },
    };
    let desc = match param(params, "order") {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid 'order': expected one of 'asc' or 'desc', but got '{other}' instead."
            ))
            .param("order"))
        }
    };
    let mut order: Vec<usize> = (0..ids.len()).collect();
    if desc {
        order.reverse();
    }
    let position = |name: &'static str| -> Result<Option<usize>, ApiError> {
        let Some(cursor) = param(params, name) else {
            return Ok(None);
        };
        order.iter().position(|&i| ids[i] == Some(cursor)).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("Invalid '{name}': no input item with id '{cursor}' in this response."))
                .param(name)
        })
    };
    let start = position("after")?.map_or(0, |p| p + 1);
    let end = position("before")?.unwrap_or(order.len());
    let window = order.get(start..end).unwrap_or_default();
    Ok(Page { indexes: window.iter().take(limit).copied().collect(), has_more: window.len() > limit })
}

pub(crate) fn input_items(store: &Store, id: &str, query: Option<&str>) -> Result<Response, ApiError> {
    let params = query_params(query);
    let entries = store.lock();
    let stored = entries.map.get(id).ok_or_else(|| not_found(id))?;
    let ids: Vec<Option<&str>> = stored.input_items.iter().map(|i| i.get("id").and_then(Value::as_str)).collect();
    let page = paginate(&ids, &params)?;
    let data: Vec<Value> = page.indexes.iter().map(|&i| stored.input_items[i].clone()).collect();
    let first_id = page.indexes.first().and_then(|&i| ids[i]);
    let last_id = page.indexes.last().and_then(|&i| ids[i]);
    Ok(json_response(
        StatusCode::OK,
        &ItemList { object: "list", data: &data, first_id, last_id, has_more: page.has_more },
    ))
}

// ---------------------------------------------------------------------------------------------
// POST responses/input_tokens
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct InputTokensRequest {
    input: Option<Value>,
    instructions: Option<Value>,
    previous_response_id: Option<String>,
}

/// The `input_tokens` a `POST responses` with the same input would report.
pub(crate) fn input_tokens(store: &Store, body: &[u8]) -> Result<Response, ApiError> {
    let req: InputTokensRequest = parse_json(body)?;
    let input = read_input(req.input, store)?;
    let instruction_words = instructions_words(req.instructions.as_ref())?;
    let carried = carried_from(store, req.previous_response_id.as_deref())?;
    let tokens = (carried + instruction_words + input.words).max(1);
    Ok(json_response(StatusCode::OK, &json!({"object": "response.input_tokens", "input_tokens": tokens})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Vec<(String, String)> {
        query_params(Some(q))
    }

    fn page(ids: &[&str], q: &str) -> Result<(Vec<usize>, bool), String> {
        let ids: Vec<Option<&str>> = ids.iter().map(|s| Some(*s)).collect();
        paginate(&ids, &params(q)).map(|p| (p.indexes, p.has_more)).map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn pagination_follows_cursors_in_both_orders() -> Result<(), String> {
        let ids = ["a", "b", "c", "d", "e"];
        assert_eq!(page(&ids, "")?, (vec![4, 3, 2, 1, 0], false));
        assert_eq!(page(&ids, "order=asc&limit=2")?, (vec![0, 1], true));
        assert_eq!(page(&ids, "order=asc&limit=2&after=b")?, (vec![2, 3], true));
        assert_eq!(page(&ids, "order=asc&limit=2&after=d")?, (vec![4], false));
        assert_eq!(page(&ids, "order=asc&after=e")?, (vec![], false));
        assert_eq!(page(&ids, "limit=2&after=d")?, (vec![2, 1], true));
        assert_eq!(page(&ids, "order=asc&before=c")?, (vec![0, 1], false));
        assert_eq!(page(&ids, "order=asc&after=a&before=e&limit=2")?, (vec![1, 2], true));
        assert_eq!(page(&ids, "order=asc&after=d&before=b")?, (vec![], false));
        assert!(page(&ids, "limit=0").is_err());
        assert!(page(&ids, "limit=101").is_err());
        assert!(page(&ids, "order=up").is_err());
        assert!(page(&ids, "after=zz").is_err());
        Ok(())
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            params("a=1&b=x%20y+z&include[]=q&flag"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("include[]".into(), "q".into()),
                ("flag".into(), String::new())
            ]
        );
    }

    #[test]
    fn input_forms_are_normalized_and_counted() -> Result<(), String> {
        let store = Store::default();
        let err = |e: ApiError| format!("{e:?}");
        let text = read_input(Some(json!("two words")), &store).map_err(err)?;
        assert_eq!((text.words, text.said.as_str()), (2, "two words"));
        assert_eq!(text.items[0]["content"][0], json!({"type": "input_text", "text": "two words"}));
        assert!(text.items[0]["id"].as_str().is_some_and(|id| id.starts_with("msg_")));

        let list = json!([
            {"role": "developer", "content": "be nice"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a b"}, {"type": "input_image", "image_url": "x"}]},
            {"role": "assistant", "content": "c d e", "id": "msg_given"},
            {"type": "function_call_output", "call_id": "call_1", "output": "f g"},
            {"role": "user", "content": "last one"}
        ]);
        let list = read_input(Some(list), &store).map_err(err)?;
        assert_eq!(list.words, 2 + 2 + 3 + 2 + 2);
        assert_eq!(list.said, "last one");
        assert_eq!(list.items.len(), 5);
        assert_eq!(list.items[2]["id"], "msg_given");
        assert_eq!(list.items[2]["content"][0]["type"], "output_text");
        assert!(list.items[3]["id"].as_str().is_some_and(|id| id.starts_with("item_")));
        assert!(list.items.iter().all(|i| i["id"].is_string()));
        assert!(read_input(Some(json!(5)), &store).is_err());
        assert!(read_input(Some(json!(["x"])), &store).is_err());
        Ok(())
    }

    #[test]
    fn ids_are_unique_and_prefixed() {
        let store = Store::default();
        let a = store.new_id("resp_");
        let b = store.new_id("resp_");
        assert!(a.starts_with("resp_") && a != b);
        assert_ne!(a, Store::default().new_id("resp_"));
    }
}
