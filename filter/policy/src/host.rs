//! The boundary between the policy and the proxy it runs in.
//!
//! The Wasm adapter implements [`Host`] over Proxy-Wasm hostcalls; tests implement it over plain
//! maps. Every method is infallible from the policy's point of view: the adapter turns a failed
//! hostcall into a logged no-op (or `None`), because a trap would kill the VM for every request.

/// What the request filter may ask of the proxy.
pub trait Host {
    /// All request headers (lowercase names), read once per request: one call into the proxy
    /// instead of one per header.
    fn request_headers(&self) -> Vec<(String, String)>;
    /// Sets (replaces) a request header.
    fn set_request_header(&mut self, name: &str, value: &str);
    /// Removes a request header.
    fn remove_request_header(&mut self, name: &str);
    /// The buffered request body, `size` bytes from the start.
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the whole buffered request body.
    fn set_request_body(&mut self, body: &[u8]);
    /// Answers the request locally; the upstream is never contacted.
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]);
    /// The downstream peer's address (`ip:port`), for the ledger's client address.
    fn peer_address(&self) -> Option<String>;
    /// Starts an HTTP call on this request's behalf (the request waits, paused); its answer
    /// comes back to this request ([`crate::RequestFilter::on_call_response`]). The call's
    /// token, or why the proxy would not make it.
    fn call_out(&mut self, call: Call<'_>) -> Result<u32, String>;
}

/// Response-side and shared-state access, used by rate limiting and metering.
pub trait ResponseHost {
    /// All response headers (lowercase names), in one call into the proxy.
    fn response_headers(&self) -> Vec<(String, String)>;
    /// Replaces all response headers with `headers`, in one call (only while response headers
    /// are being processed): adding the nine rate-limit headers one by one cost nine.
    fn replace_response_headers(&mut self, headers: &[(String, String)]);
    /// The current response body chunk (`size` bytes), as it streams past.
    fn response_body(&self, size: usize) -> Option<Vec<u8>>;
}

/// Process-wide shared state (Proxy-Wasm shared data): every worker sees the same values, and
/// updates are compare-and-swap.
pub trait Shared {
    /// A value and its CAS token, or `None` if the key does not exist.
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes a value if the CAS token still matches; false when another worker got there first.
    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> bool;
    /// Creates the key with `initial` unless it exists, atomically with respect to other
    /// workers (creating a key is not atomic in Proxy-Wasm itself).
    fn shared_create(&mut self, key: &str, initial: &[u8]);
}

/// An HTTP call to the control plane (Proxy-Wasm's `dispatch_http_call`), made from the root
/// context or for one request: its answer comes back later, by the token the dispatch returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call<'a> {
    /// The Envoy cluster to call.
    pub cluster: &'a str,
    /// Request headers, pseudo-headers (`:method`, `:path`, `:authority`) first.
    pub headers: Vec<(&'a str, &'a str)>,
    /// The request body, if any.
    pub body: Option<&'a [u8]>,
    /// How long Envoy waits for the answer before it answers the call with none.
    pub timeout: std::time::Duration,
}

/// Envoy stats counters the filter increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Usage events the control plane acknowledged.
    UsageDelivered,
    /// Usage events dropped because the queue was full.
    UsageDropped,
    /// Usage batch calls that failed (their events are sent again).
    UsageBatchesFailed,
}

impl Counter {
    /// Every counter.
    pub const ALL: [Counter; 3] = [Counter::UsageDelivered, Counter::UsageDropped, Counter::UsageBatchesFailed];

    /// The stat's name (Envoy shows it as `wasmcustom.<name>`).
    pub const fn name(self) -> &'static str {
        match self {
            Counter::UsageDelivered => "aqueduct_usage_events_delivered",
            Counter::UsageDropped => "aqueduct_usage_events_dropped",
            Counter::UsageBatchesFailed => "aqueduct_usage_batches_failed",
        }
    }
}

/// How much a log line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Worth knowing.
    Info,
    /// Something failed and is being retried or worked around.
    Warn,
}

/// What talking to the control plane needs from the proxy: outbound HTTP calls, the answer to
/// the call being delivered, stats counters and the log. The policy decides when to call, what
/// to send and what an answer means ([`crate::journal::Poller`], [`crate::ledger::Delivery`]);
/// the adapter only carries the calls out.
pub trait ControlHost {
    /// Starts a call; its token, or why the proxy would not make it.
    fn dispatch(&mut self, call: Call<'_>) -> Result<u32, String>;
    /// The `:status` of the answer being delivered; `None` when the call got no answer (a
    /// timeout, a refused connection, a reset) or an unreadable one.
    fn call_status(&self) -> Option<u16>;
    /// The first `size` bytes of the answer's body being delivered.
    fn call_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Adds `by` to a stats counter.
    fn count(&mut self, counter: Counter, by: u64);
    /// Writes a line to the proxy's log.
    fn log(&mut self, level: Level, message: &str);
}

/// A call as [`MemControl`] recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCall {
    /// The token the call got.
    pub token: u32,
    /// The cluster called.
    pub cluster: String,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Option<Vec<u8>>,
    /// Its timeout.
    pub timeout: std::time::Duration,
}

impl SentCall {
    /// The call as made, with its token.
    fn new(token: u32, call: &Call<'_>) -> Self {
        SentCall {
            token,
            cluster: call.cluster.to_string(),
            headers: call.headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: call.body.map(<[u8]>::to_vec),
            timeout: call.timeout,
        }
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A [`ControlHost`] that records the calls made and answers as told: for tests and for
/// profiling natively.
#[derive(Debug, Default)]
pub struct MemControl {
    /// Calls made, oldest first.
    pub calls: Vec<SentCall>,
    /// While set, dispatching fails with this reason.
    pub refuse: Option<String>,
    /// The status of the answer being delivered.
    pub status: Option<u16>,
    /// The body of the answer being delivered.
    pub body: Vec<u8>,
    /// How often the answer's body was read.
    pub body_reads: std::cell::Cell<usize>,
    /// Counter totals.
    pub counters: std::collections::HashMap<Counter, u64>,
    /// Log lines written.
    pub logs: Vec<(Level, String)>,
}

impl MemControl {
    /// The newest call made.
    pub fn last_call(&self) -> Option<&SentCall> {
        self.calls.last()
    }

    /// Sets the answer the next callback delivers.
    pub fn answer(&mut self, status: Option<u16>, body: &[u8]) {
        self.status = status;
        self.body = body.to_vec();
    }

    /// A counter's total.
    pub fn counter(&self, counter: Counter) -> u64 {
        self.counters.get(&counter).copied().unwrap_or(0)
    }

    /// Warnings logged.
    pub fn warnings(&self) -> usize {
        self.logs.iter().filter(|(l, _)| *l == Level::Warn).count()
    }
}

impl ControlHost for MemControl {
    fn dispatch(&mut self, call: Call<'_>) -> Result<u32, String> {
        if let Some(why) = &self.refuse {
            return Err(why.clone());
        }
        // Tokens start at 1 and never repeat, as Envoy's do within one root context.
        let token = u32::try_from(self.calls.len() + 1).unwrap_or(u32::MAX);
        self.calls.push(SentCall::new(token, &call));
        Ok(token)
    }

    fn call_status(&self) -> Option<u16> {
        self.status
    }

    fn call_body(&self, size: usize) -> Option<Vec<u8>> {
        self.body_reads.set(self.body_reads.get() + 1);
        self.body.get(..size).map(<[u8]>::to_vec)
    }

    fn count(&mut self, counter: Counter, by: u64) {
        *self.counters.entry(counter).or_default() += by;
    }

    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_string()));
    }
}

/// Shared data in a map, with compare-and-swap tokens like Envoy's: for tests and for profiling
/// the policy natively (`examples/hotpath.rs`).
#[derive(Debug, Default)]
pub struct MemShared {
    /// Values and their CAS tokens by key.
    pub data: std::collections::HashMap<String, (Vec<u8>, u32)>,
    /// Makes the next N writes fail as if another worker wrote first.
    pub conflicts: usize,
}

impl Shared for MemShared {
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.data.get(key).cloned()
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        if self.conflicts > 0 {
            self.conflicts -= 1;
            if let Some(e) = self.data.get_mut(key) {
                e.1 += 1;
            }
            return false;
        }
        match self.data.get_mut(key) {
            Some(e) if e.1 == cas => {
                *e = (value.to_vec(), cas + 1);
                true
            }
            _ => false,
        }
    }

    fn shared_create(&mut self, key: &str, initial: &[u8]) {
        self.data.entry(key.to_string()).or_insert_with(|| (initial.to_vec(), 1));
    }
}

/// A local reply: status, headers, body.
pub type Reply = (u16, Vec<(String, String)>, Vec<u8>);

/// A proxy over plain maps that records what the filter did: for tests and for profiling the
/// policy natively (`examples/hotpath.rs`).
#[derive(Debug, Default)]
pub struct MemHost {
    /// Request headers, as the filter leaves them.
    pub headers: Vec<(String, String)>,
    /// The buffered request body, as the filter leaves it.
    pub body: Vec<u8>,
    /// The first local reply the filter sent, if any.
    pub reply: Option<Reply>,
    /// Local replies sent (a filter sends at most one per request).
    pub replies: usize,
    /// Shared data.
    pub shared: MemShared,
    /// Response headers, as the filter leaves them.
    pub response_headers: Vec<(String, String)>,
    /// The response body chunk being streamed.
    pub response_chunk: Vec<u8>,
    /// How often the filter asked for the peer address (a call into Envoy in the proxy).
    pub peer_reads: std::cell::Cell<usize>,
    /// Calls made for the request, oldest first.
    pub calls: Vec<SentCall>,
}

impl MemHost {
    /// A request with `:method`, `:path`, further headers and a body.
    pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Self {
        let mut h = vec![(":method".to_string(), method.to_string()), (":path".to_string(), path.to_string())];
        h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self { headers: h, body: body.to_vec(), ..Default::default() }
    }

    /// A request header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A response header's value.
    pub fn response_header(&self, name: &str) -> Option<String> {
        self.response_headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}

impl Shared for MemHost {
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.shared.shared_get(key)
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        self.shared.shared_set(key, value, cas)
    }
    fn shared_create(&mut self, key: &str, initial: &[u8]) {
        self.shared.shared_create(key, initial)
    }
}

impl ResponseHost for MemHost {
    fn response_headers(&self) -> Vec<(String, String)> {
        self.response_headers.clone()
    }
    fn replace_response_headers(&mut self, headers: &[(String, String)]) {
        self.response_headers = headers.to_vec();
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        self.response_chunk.get(..size).map(<[u8]>::to_vec)
    }
}

impl Host for MemHost {
    fn request_headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }
    fn set_request_header(&mut self, name: &str, value: &str) {
        self.remove_request_header(name);
        self.headers.push((name.into(), value.into()));
    }
    fn remove_request_header(&mut self, name: &str) {
        self.headers.retain(|(k, _)| k != name);
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        self.body.get(..size).map(<[u8]>::to_vec)
    }
    fn set_request_body(&mut self, body: &[u8]) {
        self.body = body.to_vec();
    }
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        // A second reply would be a filter bug: counted, and the first (the client's) kept.
        self.replies += 1;
        if self.reply.is_none() {
            self.reply =
                Some((status, headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), body.to_vec()));
        }
    }
    fn peer_address(&self) -> Option<String> {
        self.peer_reads.set(self.peer_reads.get() + 1);
        Some("192.0.2.7:40000".into())
    }
    fn call_out(&mut self, call: Call<'_>) -> Result<u32, String> {
        let token = u32::try_from(self.calls.len() + 1).unwrap_or(u32::MAX);
        self.calls.push(SentCall::new(token, &call));
        Ok(token)
    }
}
