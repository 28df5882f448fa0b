//! A small OpenAI-compatible upstream owned by the project.
//!
//! It stands in for a paid LLM provider in end-to-end tests (real Envoy and real OpenAI client
//! libraries), in benchmarks, and in the demo. Answers are deterministic functions of the
//! request, so tests can predict them exactly, and the behaviour can be steered per request
//! (`x-fake-*` headers) or server-wide ([`Controls`], `POST /_fake/controls`):
//!
//! | header                  | control          | effect                                           |
//! |-------------------------|------------------|--------------------------------------------------|
//! | `x-fake-latency-ms`     | `latency_ms`     | delay before the response headers                |
//! | `x-fake-chunk-delay-ms` | `chunk_delay_ms` | delay between streamed chunks (SSE and audio)    |
//! | `x-fake-chunks`         | `chunks`         | number of content chunks in a stream (default 5) |
//! | `x-fake-status`         | `status`         | answer with this status and an OpenAI error      |
//! | `x-fake-error-message`  | `error_message`  | message of that error                            |
//! | `x-fake-no-usage: 1`    | `no_usage`       | leave `usage` out of answers and streams         |
//! | `x-fake-reasoning-tokens` | `reasoning_tokens` | hidden reasoning tokens added to chat and responses usage (never in the text) |
//! | `x-fake-logprobs-bytes` | `logprobs_bytes` | pad chat answers (not streams) with about this many bytes of logprobs, before `usage` |
//! | `x-fake-response-fail: 1` | `response_fail` | responses: fail halfway (status `failed`; a stream ends with `response.failed`) |
//! | `x-fake-background-ms`  | `background_ms`  | responses: time a `background: true` response takes to finish (default 1000) |
//!
//! Endpoints (each with and without the `/v1` prefix): `POST chat/completions`,
//! `POST completions`, `POST embeddings`, `POST audio/speech`, `POST audio/transcriptions`,
//! `POST images/generations`, `GET models`, `GET models/{id}`, and the Responses API (stored
//! in memory; see the `responses` module source for usage counting and lifecycle):
//! `POST responses`, `GET responses/{id}` (`?stream=true` replays the events),
//! `DELETE responses/{id}`, `POST responses/{id}/cancel`, `GET responses/{id}/input_items`,
//! `POST responses/input_tokens`. Control API on the same server:
//! `GET|POST /_fake/controls`, `GET|DELETE /_fake/requests`, `GET /_fake/health`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let upstream = fake_upstream::FakeUpstream::start_local().await?;
//! let base_url = upstream.base_url(); // "http://127.0.0.1:PORT/v1"
//! // ... point a client at base_url ...
//! assert!(upstream.requests().len() <= 1000);
//! # Ok(()) }
//! ```

mod endpoints;
mod responses;
mod util;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};

/// Largest request body accepted (transcription uploads can be up to 25 MB at OpenAI).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// How many requests [`FakeUpstream::requests`] remembers; older ones are dropped first.
pub const MAX_RECORDED_REQUESTS: usize = 1000;

/// Upper bound for the `chunks` control, so a typo cannot make the server build a huge stream.
pub const MAX_CHUNKS: u32 = 10_000;

/// Number of content chunks in a stream when no `chunks` control is set.
pub const DEFAULT_CHUNKS: u32 = 5;

/// How many Responses API responses are kept for retrieval; the oldest are forgotten first.
pub const MAX_STORED_RESPONSES: usize = 5000;

/// How long a `background: true` response takes when no `background_ms` control is set.
pub const DEFAULT_BACKGROUND_MS: u64 = 1000;

/// Upper bound for the `background_ms` control (one hour).
pub const MAX_BACKGROUND_MS: u64 = 3_600_000;

/// Knobs that change how the fake upstream answers.
///
/// Server-wide defaults are set with [`FakeUpstream::set_defaults`] or `POST /_fake/controls`;
/// each field can be overridden per request by the matching `x-fake-*` header. `None` means
/// "not set here": a header that is absent leaves the default in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
// Unknown fields are rejected so that a typo in `POST /_fake/controls` fails loudly instead of
// silently doing nothing.
#[serde(deny_unknown_fields)]
pub struct Controls {
    /// Delay before the response headers are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Delay between streamed chunks: SSE events, transcription deltas and audio chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_delay_ms: Option<u64>,
    /// Number of content chunks in a stream (default [`DEFAULT_CHUNKS`], at most [`MAX_CHUNKS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
    /// Answer every endpoint with this HTTP status (400..=599) and an OpenAI-shaped error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Message of the error produced by `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Leave `usage` out of JSON answers and streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_usage: Option<bool>,
    /// Reasoning tokens a chat answer spends without showing them: counted in its usage
    /// (`completion_tokens` and `completion_tokens_details.reasoning_tokens`), never in its text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Pads chat answers (not streams) with about this many bytes of `logprobs`, which come
    /// before `usage` in the body (at most [`MAX_LOGPROBS_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs_bytes: Option<u64>,
    /// Responses API: the response fails after half of its text (status `failed`, an `error`,
    /// and the usage of what was produced; a stream ends with `response.failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_fail: Option<bool>,
    /// Responses API: milliseconds a `background: true` response takes to finish (default
    /// [`DEFAULT_BACKGROUND_MS`], at most [`MAX_BACKGROUND_MS`]); it is `in_progress` after half.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_ms: Option<u64>,
}

/// Upper bound for the `logprobs_bytes` control.
pub const MAX_LOGPROBS_BYTES: u64 = 256 << 20;

impl Controls {
    /// Copies every field that is set in `over` onto `self`.
    pub fn overlay(&mut self, over: Controls) {
        if over.latency_ms.is_some() {
            self.latency_ms = over.latency_ms;
        }
        if over.chunk_delay_ms.is_some() {
            self.chunk_delay_ms = over.chunk_delay_ms;
        }
        if over.chunks.is_some() {
            self.chunks = over.chunks;
        }
        if over.status.is_some() {
            self.status = over.status;
        }
        if over.error_message.is_some() {
            self.error_message = over.error_message;
        }
        if over.no_usage.is_some() {
            self.no_usage = over.no_usage;
        }
        if over.reasoning_tokens.is_some() {
            self.reasoning_tokens = over.reasoning_tokens;
        }
        if over.logprobs_bytes.is_some() {
            self.logprobs_bytes = over.logprobs_bytes;
        }
        if over.response_fail.is_some() {
            self.response_fail = over.response_fail;
        }
        if over.background_ms.is_some() {
            self.background_ms = over.background_ms;
        }
    }

    /// Checks the ranges that the server relies on (`status` is an error status, `chunks` is
    /// between 1 and [`MAX_CHUNKS`]).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = self.status {
            if !(400..=599).contains(&s) {
                return Err(format!("status must be between 400 and 599, got {s}"));
            }
        }
        if let Some(c) = self.chunks {
            if !(1..=MAX_CHUNKS).contains(&c) {
                return Err(format!("chunks must be between 1 and {MAX_CHUNKS}, got {c}"));
            }
        }
        if let Some(b) = self.logprobs_bytes {
            if b > MAX_LOGPROBS_BYTES {
                return Err(format!("logprobs_bytes must be at most {MAX_LOGPROBS_BYTES}, got {b}"));
            }
        }
        if let Some(ms) = self.background_ms {
            if ms > MAX_BACKGROUND_MS {
                return Err(format!("background_ms must be at most {MAX_BACKGROUND_MS}, got {ms}"));
            }
        }
        Ok(())
    }

    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.unwrap_or(DEFAULT_CHUNKS) as usize
    }

    pub(crate) fn chunk_delay(&self) -> Duration {
        Duration::from_millis(self.chunk_delay_ms.unwrap_or(0))
    }

    pub(crate) fn usage_enabled(&self) -> bool {
        !self.no_usage.unwrap_or(false)
    }

    pub(crate) fn background_delay(&self) -> Duration {
        Duration::from_millis(self.background_ms.unwrap_or(DEFAULT_BACKGROUND_MS))
    }

    /// Reads the `x-fake-*` headers of one request.
    fn from_headers(headers: &HeaderMap) -> Result<Controls, ApiError> {
        let c = Controls {
            latency_ms: parse_header(headers, "x-fake-latency-ms")?,
            chunk_delay_ms: parse_header(headers, "x-fake-chunk-delay-ms")?,
            chunks: parse_header(headers, "x-fake-chunks")?,
            status: parse_header(headers, "x-fake-status")?,
            error_message: headers
                .get("x-fake-error-message")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            no_usage: parse_bool_header(headers, "x-fake-no-usage")?,
            reasoning_tokens: parse_header(headers, "x-fake-reasoning-tokens")?,
            logprobs_bytes: parse_header(headers, "x-fake-logprobs-bytes")?,
            response_fail: parse_bool_header(headers, "x-fake-response-fail")?,
            background_ms: parse_header(headers, "x-fake-background-ms")?,
        };
        c.validate().map_err(|m| ApiError::bad_request(format!("x-fake-* header: {m}")))?;
        Ok(c)
    }
}

/// A boolean header: `1`/`true`/`yes` or `0`/`false`/`no`.
fn parse_bool_header(headers: &HeaderMap, name: &'static str) -> Result<Option<bool>, ApiError> {
    match headers.get(name).map(HeaderValue::as_bytes) {
        None => Ok(None),
        Some(b"1" | b"true" | b"yes") => Ok(Some(true)),
        Some(b"0" | b"false" | b"no") => Ok(Some(false)),
        Some(_) => Err(ApiError::bad_request(format!("invalid value for header {name} (use 1/true or 0/false)"))),
    }
}

fn parse_header<T: std::str::FromStr>(headers: &HeaderMap, name: &'static str) -> Result<Option<T>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("invalid value for header {name}")))
}

/// One request as the fake upstream received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `"POST"`.
    pub method: String,
    /// Path including the query string, e.g. `"/v1/chat/completions"`.
    pub path: String,
    /// All headers in arrival order; names are lowercase.
    pub headers: Vec<(String, String)>,
    /// The full request body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// What is kept per request on the hot path: cheap clones of what hyper already allocated
/// (`Bytes` and `Uri` are reference counted); the conversion to owned strings happens only when
/// a test asks for the records.
struct Record {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Record {
    fn to_public(&self) -> RecordedRequest {
        RecordedRequest {
            method: self.method.as_str().to_owned(),
            path: self.uri.path_and_query().map_or_else(|| self.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: self.body.to_vec(),
        }
    }
}

/// Shared state of one fake upstream: recorded requests, default controls, required API key.
///
/// Cloning is cheap (an `Arc`); every clone sees the same state. Use it with [`router`] to run
/// the fake in-process without a socket.
#[derive(Clone, Default)]
pub struct FakeState {
    inner: Arc<Inner>,
}

struct Inner {
    records: Mutex<VecDeque<Record>>,
    defaults: RwLock<Controls>,
    required_key: RwLock<Option<String>>,
    recording: AtomicBool,
    log_requests: AtomicBool,
    next_id: AtomicU64,
    responses: responses::Store,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            records: Mutex::new(VecDeque::with_capacity(64)),
            defaults: RwLock::new(Controls::default()),
            required_key: RwLock::new(None),
            recording: AtomicBool::new(true),
            log_requests: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            responses: responses::Store::default(),
        }
    }
}

impl std::fmt::Debug for FakeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeState").field("defaults", &self.defaults()).finish_non_exhaustive()
    }
}

impl FakeState {
    /// Fresh state: no records, no default controls, no required key.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last [`MAX_RECORDED_REQUESTS`] requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        let records = self.inner.records.lock().unwrap_or_else(PoisonError::into_inner);
        records.iter().map(Record::to_public).collect()
    }

    /// Forgets all recorded requests.
    pub fn clear_requests(&self) {
        self.inner.records.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Replaces the server-wide default controls.
    pub fn set_defaults(&self, c: Controls) {
        *self.inner.defaults.write().unwrap_or_else(PoisonError::into_inner) = c;
    }

    /// The current server-wide default controls.
    pub fn defaults(&self) -> Controls {
        self.inner.defaults.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// With `Some(key)`, API requests must carry `Authorization: Bearer <key>` or get a 401.
    /// The `/_fake/*` control API never requires it.
    pub fn set_required_key(&self, key: Option<String>) {
        *self.inner.required_key.write().unwrap_or_else(PoisonError::into_inner) = key;
    }

    /// Turns request recording on (the default) or off. Benchmarks may turn it off to save the
    /// per-request header copy and lock.
    pub fn set_recording(&self, enabled: bool) {
        self.inner.recording.store(enabled, Ordering::Relaxed);
    }

    /// Prints one line per request to stderr when enabled (off by default: benchmarks).
    pub fn set_log_requests(&self, enabled: bool) {
        self.inner.log_requests.store(enabled, Ordering::Relaxed);
    }

    fn record(&self, record: Record) {
        let mut records = self.inner.records.lock().unwrap_or_else(PoisonError::into_inner);
        if records.len() >= MAX_RECORDED_REQUESTS {
            records.pop_front();
        }
        records.push_back(record);
    }

    fn controls_for(&self, headers: &HeaderMap) -> Result<Controls, ApiError> {
        let over = Controls::from_headers(headers)?;
        let mut c = self.defaults();
        c.overlay(over);
        Ok(c)
    }

    fn check_auth(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let required = self.inner.required_key.read().unwrap_or_else(PoisonError::into_inner);
        let Some(key) = required.as_deref() else {
            return Ok(());
        };
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
            .code("invalid_api_key"));
        };
        let bytes = value.as_bytes();
        let given = (bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer ")).then(|| bytes[7..].trim_ascii());
        if given == Some(key.as_bytes()) {
            Ok(())
        } else {
            // The key is not echoed back: this server may run in shared demo environments.
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "Incorrect API key provided.").code("invalid_api_key"))
        }
    }
}

/// A running fake upstream bound to a local socket.
///
/// Dropping the handle does *not* stop the server (so `FakeUpstream::start(..).await?.base_url()`
/// is safe); it stops with its tokio runtime or with [`FakeUpstream::shutdown`].
#[derive(Clone, Debug)]
pub struct FakeUpstream {
    state: FakeState,
    addr: SocketAddr,
    shutdown: Arc<ShutdownHandle>,
}

#[derive(Debug)]
struct ShutdownHandle {
    tx: tokio::sync::watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
}

impl FakeUpstream {
    /// Binds `addr` (use `127.0.0.1:0` for a free port), spawns the server on the current tokio
    /// runtime and returns a handle once the socket is listening.
    pub async fn start(addr: SocketAddr) -> std::io::Result<FakeUpstream> {
        Self::start_with_state(addr, FakeState::new()).await
    }

    /// [`FakeUpstream::start`] on `127.0.0.1:0`.
    pub async fn start_local() -> std::io::Result<FakeUpstream> {
        Self::start(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await
    }

    /// Like [`FakeUpstream::start`], serving an existing (possibly shared) state.
    pub async fn start_with_state(addr: SocketAddr, state: FakeState) -> std::io::Result<FakeUpstream> {
        use axum::serve::ListenerExt;

        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        // Streams are many small writes; without TCP_NODELAY Nagle + delayed ACK can hold a
        // chunk back for tens of milliseconds, which would distort TTFT measurements.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // If every handle is dropped the sender goes away: keep serving in that case
                    // (see the type's docs); only an explicit `shutdown()` stops the server.
                    if rx.wait_for(|stop| *stop).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                })
                .await
        });
        Ok(FakeUpstream { state, addr, shutdown: Arc::new(ShutdownHandle { tx, task: Mutex::new(Some(task)) }) })
    }

    /// The bound socket address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, e.g. `http://127.0.0.1:PORT/v1`. An unspecified bind address
    /// (`0.0.0.0`, `::`) is reported as loopback so the URL is usable by clients.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// The server root, e.g. `http://127.0.0.1:PORT` (the control API lives under `/_fake`).
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        format!("http://{addr}")
    }

    /// The shared state (for [`router`] or to hand to other code).
    pub fn state(&self) -> &FakeState {
        &self.state
    }

    /// The last [`MAX_RECORDED_REQUESTS`] requests received, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    /// Forgets all recorded requests.
    pub fn clear_requests(&self) {
        self.state.clear_requests();
    }

    /// Replaces the server-wide default controls (headers still override them per request).
    pub fn set_defaults(&self, c: Controls) {
        self.state.set_defaults(c);
    }

    /// With `Some(key)`, requests without `Authorization: Bearer <key>` get a 401 OpenAI error.
    pub fn set_required_key(&self, key: Option<String>) {
        self.state.set_required_key(key);
    }

    /// Stops accepting connections, lets in-flight requests finish, and waits for the server
    /// task. Other clones of this handle then point at a stopped server.
    pub async fn shutdown(self) {
        let _ = self.shutdown.tx.send(true);
        let task = self.shutdown.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The fake upstream as an axum router, usable in-process (e.g. with `tower::ServiceExt`) or
/// with your own `axum::serve`.
pub fn router(state: FakeState) -> Router {
    Router::new()
        .route("/_fake/controls", get(get_controls_handler).post(post_controls_handler))
        .route("/_fake/requests", get(get_requests_handler).delete(delete_requests_handler))
        .route("/_fake/health", get(|| async { "ok" }))
        // Everything else goes through one dispatcher so that recording, controls, latency and
        // auth apply uniformly, including to unknown paths.
        .fallback(dispatch)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn get_controls_handler(State(state): State<FakeState>) -> Response {
    json_response(StatusCode::OK, &state.defaults())
}

async fn post_controls_handler(State(state): State<FakeState>, body: Bytes) -> Response {
    let controls: Controls = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return ApiError::bad_request(format!("invalid controls: {e}")).into_response(),
    };
    if let Err(m) = controls.validate() {
        return ApiError::bad_request(format!("invalid controls: {m}")).into_response();
    }
    state.set_defaults(controls.clone());
    json_response(StatusCode::OK, &controls)
}

async fn get_requests_handler(State(state): State<FakeState>) -> Response {
    #[derive(Serialize)]
    struct Wire<'a> {
        method: &'a str,
        path: &'a str,
        headers: &'a [(String, String)],
        body: Cow<'a, str>,
    }
    let requests = state.requests();
    let wire: Vec<Wire<'_>> = requests
        .iter()
        .map(|r| Wire { method: &r.method, path: &r.path, headers: &r.headers, body: r.body_text() })
        .collect();
    json_response(StatusCode::OK, &wire)
}

async fn delete_requests_handler(State(state): State<FakeState>) -> StatusCode {
    state.clear_requests();
    StatusCode::NO_CONTENT
}

/// The OpenAI API surface, as recognised from method and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Speech,
    Transcriptions,
    ImageGenerations,
    Models,
    Model,
    CreateResponse,
    ResponseInputTokens,
    GetResponse,
    DeleteResponse,
    CancelResponse,
    ResponseInputItems,
}

/// What follows `/responses/` in a path that names one stored response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponsePath {
    Object,
    Cancel,
    InputItems,
}

/// The API path without its optional `/v1` prefix: `/v1/x` and `/x` are accepted, nothing else.
fn api_path(path: &str) -> &str {
    path.strip_prefix("/v1").filter(|r| r.starts_with('/')).unwrap_or(path)
}

/// `/responses/{id}`, `/responses/{id}/cancel` and `/responses/{id}/input_items`.
fn response_path(rest: &str) -> Option<(&str, ResponsePath)> {
    let tail = rest.strip_prefix("/responses/")?;
    let (id, sub) = match tail.split_once('/') {
        None => (tail, ResponsePath::Object),
        Some((id, "cancel")) => (id, ResponsePath::Cancel),
        Some((id, "input_items")) => (id, ResponsePath::InputItems),
        Some(_) => return None,
    };
    (!id.is_empty()).then_some((id, sub))
}

fn resolve(method: &Method, path: &str) -> Result<Endpoint, ApiError> {
    use Endpoint as E;
    let rest = api_path(path);
    // The methods a path accepts and what each one does.
    let routes: &[(&str, Endpoint)] = match rest {
        "/chat/completions" => &[("POST", E::ChatCompletions)],
        "/completions" => &[("POST", E::Completions)],
        "/embeddings" => &[("POST", E::Embeddings)],
        "/audio/speech" => &[("POST", E::Speech)],
        "/audio/transcriptions" => &[("POST", E::Transcriptions)],
        "/images/generations" => &[("POST", E::ImageGenerations)],
        "/models" => &[("GET", E::Models)],
        r if r.len() > "/models/".len() && r.starts_with("/models/") => &[("GET", E::Model)],
        "/responses" => &[("POST", E::CreateResponse)],
        "/responses/input_tokens" => &[("POST", E::ResponseInputTokens)],
        r => match response_path(r) {
            Some((_, ResponsePath::Object)) => &[("GET", E::GetResponse), ("DELETE", E::DeleteResponse)],
            Some((_, ResponsePath::Cancel)) => &[("POST", E::CancelResponse)],
            Some((_, ResponsePath::InputItems)) => &[("GET", E::ResponseInputItems)],
            None => {
                return Err(
                    ApiError::new(StatusCode::NOT_FOUND, format!("Invalid URL ({method} {path})")).code("unknown_url")
                )
            }
        },
    };
    match routes.iter().find(|(m, _)| *m == method.as_str()) {
        Some((_, endpoint)) => Ok(*endpoint),
        None => {
            let allowed: Vec<&str> = routes.iter().map(|(m, _)| *m).collect();
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("Invalid method for URL ({method} {path}); use {}", allowed.join(" or ")),
            ))
        }
    }
}

/// Per-request context handed to the endpoint implementations.
pub(crate) struct Ctx {
    pub(crate) controls: Controls,
    pub(crate) request_id: u64,
    pub(crate) created: u64,
}

async fn dispatch(State(state): State<FakeState>, req: Request) -> Response {
    let request_id = state.inner.next_id.fetch_add(1, Ordering::Relaxed);
    let mut resp = handle(&state, request_id, req).await.unwrap_or_else(IntoResponse::into_response);
    if let Ok(v) = HeaderValue::try_from(format!("req_fake_{request_id}")) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn handle(state: &FakeState, request_id: u64, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    if state.inner.log_requests.load(Ordering::Relaxed) {
        eprintln!("fake-upstream: {} {}", parts.method, parts.uri);
    }
    let body_result = axum::body::to_bytes(body, MAX_BODY_BYTES).await;
    // Record before anything can fail, so that error answers are visible to tests too.
    if state.inner.recording.load(Ordering::Relaxed) {
        state.record(Record {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body: body_result.as_ref().map(Bytes::clone).unwrap_or_default(),
        });
    }
    let body = body_result.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than {MAX_BODY_BYTES} bytes or could not be read."),
        )
    })?;
    let endpoint = resolve(&parts.method, parts.uri.path())?;
    let controls = state.controls_for(&parts.headers)?;
    if let Some(ms) = controls.latency_ms.filter(|ms| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    state.check_auth(&parts.headers)?;
    if let Some(status) = controls.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &controls.error_message {
            Some(m) => Cow::Owned(m.clone()),
            None => Cow::Owned(format!("The fake upstream was told to answer {status} (x-fake-status or controls).")),
        };
        return Err(ApiError::new(status, message).default_code());
    }
    let ctx =
        Ctx { controls, request_id, created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) };
    match endpoint {
        Endpoint::ChatCompletions => endpoints::chat_completions(&ctx, &body),
        Endpoint::Completions => endpoints::completions(&ctx, &body),
        Endpoint::Embeddings => endpoints::embeddings(&ctx, &body),
        Endpoint::Speech => endpoints::speech(&ctx, &body),
        Endpoint::Transcriptions => endpoints::transcriptions(&ctx, Request::from_parts(parts, Body::from(body))).await,
        Endpoint::ImageGenerations => endpoints::image_generations(&ctx, &body),
        Endpoint::Models => Ok(endpoints::models()),
        Endpoint::Model => {
            let path = parts.uri.path();
            let id = path.find("/models/").map_or("", |i| &path[i + 8..]);
            Ok(endpoints::model(&util::percent_decode(id)))
        }
        Endpoint::CreateResponse => responses::create(&state.inner.responses, &ctx, &body),
        Endpoint::ResponseInputTokens => responses::input_tokens(&state.inner.responses, &body),
        Endpoint::GetResponse | Endpoint::DeleteResponse | Endpoint::CancelResponse | Endpoint::ResponseInputItems => {
            let store = &state.inner.responses;
            let id = response_path(api_path(parts.uri.path())).map_or("", |(id, _)| id);
            let id = util::percent_decode(id);
            let query = parts.uri.query();
            match endpoint {
                Endpoint::GetResponse => responses::retrieve(store, &ctx, &id, query).await,
                Endpoint::DeleteResponse => responses::delete(store, &id),
                Endpoint::CancelResponse => responses::cancel(store, &id),
                _ => responses::input_items(store, &id, query),
            }
        }
    }
}

/// An OpenAI-shaped error answer: `{"error":{"message","type","param","code"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: Cow<'static, str>,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError { status, message: message.into(), param: None, code: None }
    }

    pub(crate) fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub(crate) fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The `code` OpenAI uses for the statuses whose clients look at it.
    fn default_code(self) -> Self {
        match self.status.as_u16() {
            401 => self.code("invalid_api_key"),
            429 => self.code("rate_limit_exceeded"),
            _ => self,
        }
    }
}

/// The OpenAI error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 401 | 422 => "invalid_request_error",
        403 => "permission_denied_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500 | 503 => "server_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: ErrorBody<'a>,
        }
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'static str,
            param: Option<&'static str>,
            code: Option<&'static str>,
        }
        json_response(
            self.status,
            &Envelope {
                error: ErrorBody {
                    message: &self.message,
                    kind: error_type(self.status.as_u16()),
                    param: self.param,
                    code: self.code,
                },
            },
        )
    }
}

/// Serializes `value` as the JSON body of a response with `status`.
pub(crate) fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = status;
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        // Our response types are plain structs of strings and numbers; this cannot happen, but
        // it must not take the server down if it ever does.
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("fake-upstream: failed to serialize response: {e}"))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_both_path_forms() {
        let post = Method::POST;
        assert_eq!(resolve(&post, "/v1/chat/completions").ok(), Some(Endpoint::ChatCompletions));
        assert_eq!(resolve(&post, "/chat/completions").ok(), Some(Endpoint::ChatCompletions));
        assert!(resolve(&post, "/v2/chat/completions").is_err());
        assert!(resolve(&post, "/v1/v1/chat/completions").is_err());
        assert!(resolve(&post, "/v1chat/completions").is_err());
        assert_eq!(resolve(&Method::GET, "/v1/models/a/b").ok(), Some(Endpoint::Model));
        assert!(resolve(&Method::GET, "/v1/models/").is_err());
        let err = resolve(&Method::GET, "/v1/embeddings").err();
        assert_eq!(err.map(|e| e.status), Some(StatusCode::METHOD_NOT_ALLOWED));
    }

    #[test]
    fn resolves_responses_paths() {
        let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
        assert_eq!(resolve(&post, "/v1/responses").ok(), Some(Endpoint::CreateResponse));
        assert_eq!(resolve(&post, "/responses").ok(), Some(Endpoint::CreateResponse));
        assert_eq!(resolve(&post, "/v1/responses/input_tokens").ok(), Some(Endpoint::ResponseInputTokens));
        assert_eq!(resolve(&get, "/v1/responses/resp_1").ok(), Some(Endpoint::GetResponse));
        assert_eq!(resolve(&delete, "/responses/resp_1").ok(), Some(Endpoint::DeleteResponse));
        assert_eq!(resolve(&post, "/v1/responses/resp_1/cancel").ok(), Some(Endpoint::CancelResponse));
        assert_eq!(resolve(&get, "/v1/responses/resp_1/input_items").ok(), Some(Endpoint::ResponseInputItems));
        assert!(resolve(&get, "/v1/responses/").is_err());
        assert!(resolve(&get, "/v1/responses//input_items").is_err());
        assert!(resolve(&get, "/v1/responses/resp_1/other").is_err());
        let err = resolve(&post, "/v1/responses/resp_1").err();
        assert_eq!(err.as_ref().map(|e| e.status), Some(StatusCode::METHOD_NOT_ALLOWED));
        assert!(err.is_some_and(|e| e.message.contains("GET or DELETE")));
        assert_eq!(response_path("/responses/a%2Fb/cancel"), Some(("a%2Fb", ResponsePath::Cancel)));
    }

    #[test]
    fn error_types_follow_openai() {
        assert_eq!(error_type(401), "invalid_request_error");
        assert_eq!(error_type(403), "permission_denied_error");
        assert_eq!(error_type(404), "not_found_error");
        assert_eq!(error_type(429), "rate_limit_error");
        assert_eq!(error_type(503), "server_error");
        assert_eq!(error_type(504), "timeout_error");
        assert_eq!(error_type(418), "invalid_request_error");
        assert_eq!(error_type(502), "server_error");
    }

    #[test]
    fn controls_overlay_and_validate() {
        let mut c = Controls { latency_ms: Some(5), chunks: Some(3), ..Controls::default() };
        c.overlay(Controls { chunks: Some(7), no_usage: Some(true), reasoning_tokens: Some(9), ..Controls::default() });
        c.overlay(Controls { response_fail: Some(true), background_ms: Some(50), ..Controls::default() });
        assert_eq!((c.response_fail, c.background_ms), (Some(true), Some(50)));
        assert_eq!(c.reasoning_tokens, Some(9));
        assert_eq!(c.latency_ms, Some(5));
        assert_eq!(c.chunks, Some(7));
        assert_eq!(c.no_usage, Some(true));
        assert!(c.validate().is_ok());
        c.status = Some(200);
        assert!(c.validate().is_err());
        c.status = None;
        c.background_ms = Some(MAX_BACKGROUND_MS + 1);
        assert!(c.validate().is_err());
        assert!(serde_json::from_str::<Controls>(r#"{"latency":1}"#).is_err());
    }
}
