//! The per-request state machine: headers in, body in, a decision out.
//!
//! The Wasm adapter calls [`RequestFilter::on_request_headers`] and
//! [`RequestFilter::on_request_body`] from the matching Proxy-Wasm callbacks and maps [`Flow`]
//! to the SDK's `Action`. Time is a parameter so tests control expiry.

use crate::admission::{self, Admitted, Cap, Worker, KEY_PREFIX};
use crate::error::{self, Refusal};
use crate::host::{Host, ResponseHost, Shared};
use crate::ledger::{self, Outcome, UsageEvent};
use crate::limits::{request_cost, Dims};
use crate::request::{self, BodyFacts, BodyKind, Endpoint, RouteClass};
use crate::responses::{self, ToolScope};
use crate::snapshot::Policy;
use crate::usage::{self, JsonUsageScan, SseUsage};
use std::cell::RefCell;
use std::rc::Rc;

/// Largest JSON response kept whole to read its `usage`; a bigger one is scanned for it as it
/// streams past ([`JsonUsageScan`]), without being kept.
const MAX_METERED_JSON: usize = 4 << 20;

/// Request header the filter sets to pick a model's route; clients can never set it, because
/// every inbound `x-aqueduct-*` header is removed first.
pub const ROUTE_HEADER: &str = "x-aqueduct-route";

/// Prefix of the gateway's own headers, stripped from every inbound request.
pub const HEADER_PREFIX: &str = "x-aqueduct-";

/// Client headers that choose what the operator's provider key bills to (OpenAI's organization
/// and project), stripped from every inbound request: the provider key alone decides.
pub const PROVIDER_ACCOUNT_HEADERS: [&str; 2] = ["openai-organization", "openai-project"];

/// Header carrying the per-deployment secret with the identity headers on MCP routes; the
/// control plane trusts the identity headers only when it matches.
pub const SECRET_HEADER: &str = "x-aqueduct-secret";
/// Identity headers the filter adds on MCP routes (after stripping any the client sent): the
/// key's token id, its user, service account, team and org (absent when the key has none), and
/// the MCP servers the key may not use (comma-separated names, possibly empty).
pub const TOKEN_ID_HEADER: &str = "x-aqueduct-token-id";
/// See [`TOKEN_ID_HEADER`].
pub const USER_ID_HEADER: &str = "x-aqueduct-user-id";
/// See [`TOKEN_ID_HEADER`].
pub const SERVICE_ACCOUNT_ID_HEADER: &str = "x-aqueduct-service-account-id";
/// See [`TOKEN_ID_HEADER`].
pub const TEAM_ID_HEADER: &str = "x-aqueduct-team-id";
/// See [`TOKEN_ID_HEADER`].
pub const ORG_ID_HEADER: &str = "x-aqueduct-org-id";
/// See [`TOKEN_ID_HEADER`].
pub const MCP_EXCLUDED_HEADER: &str = "x-aqueduct-mcp-excluded";

/// What the proxy should do next with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Forward (the request may have been rewritten).
    Continue,
    /// Hold the request: wait for more body, or a local reply has been sent.
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing more to do for this request.
    Done,
    /// Authenticated as the principal with the token; the body decides the model.
    AwaitBody(Endpoint, u32, u64),
}

/// What is tracked of a routed request's response, to count its real usage.
#[derive(Debug)]
struct Metering {
    /// The rate-limit charges to settle, when any cap applied.
    admitted: Option<Admitted>,
    /// Input tokens estimated from the request (used when the provider reports none).
    reserved_input: u64,
    /// Output tokens reserved for the answer: what is charged when the provider's usage was
    /// never read (the client left before it, or it could not be found).
    reserved_output: u64,
    status: u16,
    sse: Option<SseUsage>,
    /// A JSON response so far, while it is small enough to keep.
    json: Vec<u8>,
    /// A JSON response too large to keep, scanned for its usage instead.
    scan: Option<JsonUsageScan>,
    /// The response is not JSON and too large to keep: its usage cannot be read.
    unreadable: bool,
    /// The response came to its end (not cut short by the client leaving).
    complete: bool,
    done: bool,
    /// A Responses API create: the response's id is read from the answer.
    responses: bool,
    /// The id of the response the provider made, once read.
    response_id: Option<String>,
}

impl Metering {
    fn new(admitted: Option<Admitted>, reserved_input: u64, reserved_output: u64, responses: bool) -> Self {
        Self {
            admitted,
            reserved_input,
            reserved_output,
            status: 0,
            sse: None,
            json: Vec::new(),
            scan: None,
            unreadable: false,
            complete: false,
            done: false,
            responses,
            response_id: None,
        }
    }
}

impl Metering {
    /// What is charged when the provider's report was not read: the reservation (the input
    /// estimate and the output reserved), or more when the text streamed says so.
    fn reserved(&self, streamed_estimate: u64) -> usage::Usage {
        usage::Usage {
            input_tokens: self.reserved_input,
            output_tokens: self.reserved_output.max(streamed_estimate),
            estimated: true,
            ..usage::Usage::default()
        }
    }
}

/// One request's filter.
#[derive(Debug)]
pub struct RequestFilter {
    policy: Option<Rc<Policy>>,
    state: State,
    metering: Option<Metering>,
    /// The ledger's event for an API request, filled in as the request goes.
    record: Option<UsageEvent>,
    /// Status of the reply the filter made itself, if it did.
    replied: Option<u16>,
    /// The request's `content-type` (the body phase needs it for multipart).
    content_type: Option<String>,
    /// What the worker holds of the shared windows (refunds that wait, leased budget), when
    /// it may hold anything (see [`Worker`]).
    worker: Option<Rc<RefCell<Worker>>>,
    /// A Responses create's `:authority` (its `mcp` tools must point at this host).
    authority: Option<String>,
    /// A create waiting for the control plane to say whose its `previous_response_id` is.
    pending: Option<Box<Pending>>,
    /// Status of an answer passed through unmetered (id-based Responses calls), for the ledger.
    passed: Option<u16>,
}

/// A request held while the ownership of its `previous_response_id` is checked.
#[derive(Debug)]
struct Pending {
    endpoint: Endpoint,
    who: Who,
    inspected: Inspected,
}

/// The request headers as read once at the start.
struct Headers(Vec<(String, String)>);

impl Headers {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl RequestFilter {
    /// A filter for one request under `policy` (`None` until the first snapshot arrives).
    pub fn new(policy: Option<Rc<Policy>>) -> Self {
        Self {
            policy,
            state: State::Done,
            metering: None,
            record: None,
            replied: None,
            content_type: None,
            worker: None,
            authority: None,
            pending: None,
            passed: None,
        }
    }

    /// [`RequestFilter::new`], sharing what the worker holds of the rate-limit windows: small
    /// token refunds wait there for the worker's next write to their window, and budget leased
    /// far from the limit admits requests without shared-data calls (the owner's timer ends
    /// past leases and writes what waits, [`admission::flush`]).
    pub fn with_worker(policy: Option<Rc<Policy>>, worker: Rc<RefCell<Worker>>) -> Self {
        Self { worker: Some(worker), ..Self::new(policy) }
    }

    /// Decides on the request headers. `now_ms` is unix milliseconds.
    pub fn on_request_headers(&mut self, host: &mut impl Host, end_of_stream: bool, now_ms: i64) -> Flow {
        let headers = Headers(host.request_headers());
        strip_own_headers(host, &headers);
        let path = headers.get(":path").unwrap_or_default();
        let class = request::classify(path);
        if matches!(class, RouteClass::Management | RouteClass::Health | RouteClass::Other) {
            return Flow::Continue;
        }
        self.start_record(host, &headers, path, now_ms);
        if class == RouteClass::ResponseItem {
            return match self.admit_item(host, &headers, path, now_ms.div_euclid(1000)) {
                Ok(()) => Flow::Continue,
                Err(e) => self.reject(host, &e),
            };
        }
        if matches!(class, RouteClass::McpServer | RouteClass::McpAggregate) {
            return match self.admit_mcp(host, &headers, class, path, now_ms.div_euclid(1000)) {
                // The control plane records what it serves (one record per JSON-RPC message,
                // with the MCP method and tool); the filter's ledger keeps the refusals it
                // answers itself, so each MCP request is recorded once.
                Ok(()) => {
                    self.record = None;
                    Flow::Continue
                }
                Err(e) => self.reject(host, &e),
            };
        }
        let endpoint = match class {
            RouteClass::Api(e) => e,
            _ => return self.reject(host, &Refusal::UnknownPath(path.to_string())),
        };
        self.content_type = headers.get("content-type").map(str::to_string);
        if endpoint == Endpoint::Responses {
            self.authority = headers.get(":authority").map(str::to_string);
        }
        match self.admit_headers(host, &headers, endpoint, end_of_stream, now_ms.div_euclid(1000)) {
            Ok(flow) => flow,
            Err(e) => self.reject(host, &e),
        }
    }

    /// Starts the ledger's event: what is known from the request line and headers.
    fn start_record(&mut self, host: &impl Host, headers: &Headers, path: &str, now_ms: i64) {
        let (hops, peer_in_xff) = self
            .policy
            .as_ref()
            .map_or((0, false), |p| (p.settings.ledger.trusted_hops, p.settings.ledger.peer_in_xff));
        let xff = headers.get("x-forwarded-for");
        // Asking Envoy for the peer address is a call into it and one back into the VM to
        // copy the answer (some 4 % of the filter's cost); when Envoy appends it to the header,
        // the header already holds it.
        let peer = if peer_in_xff && xff.is_some() { None } else { host.peer_address() };
        self.record = Some(UsageEvent {
            at_ms: now_ms,
            path: ledger::clip(path.split(['?', '#']).next().unwrap_or_default()),
            method: headers.get(":method").unwrap_or_default().to_string(),
            client_ip: ledger::client_ip(xff, peer.as_deref(), hops),
            user_agent: headers.get("user-agent").map(ledger::clip),
            ..UsageEvent::default()
        });
    }

    /// Notes who is asking in the ledger's event.
    fn note_caller(&mut self, policy: &Policy, principal: u32, token: u64) {
        if let (Some(r), Some(p)) = (self.record.as_mut(), policy.principal(principal)) {
            r.token_id = Some(token);
            r.user_id = Some(p.user_id);
            r.service_account_id = p.service_account_id;
            r.team_id = p.team_id;
            r.org_id = p.org_id;
        }
    }

    /// Answers with `refusal`, noting it for the ledger.
    fn reject(&mut self, host: &mut impl Host, refusal: &Refusal) -> Flow {
        self.replied = Some(refusal.status());
        refusal.send(host);
        Flow::Pause
    }

    /// An MCP request: a valid key that may use the server in the path; then the key is replaced
    /// by trusted identity headers for the control plane, which proxies the request. The body
    /// is not inspected here (the control plane parses the JSON-RPC messages).
    fn admit_mcp(
        &mut self,
        host: &mut impl Host,
        headers: &Headers,
        class: RouteClass,
        path: &str,
        now: i64,
    ) -> Result<(), Refusal> {
        let Some(policy) = self.policy.clone() else { return Err(Refusal::NoPolicy) };
        let (principal, token) = authenticate(&policy, headers, now)?;
        self.note_caller(&policy, principal, token);
        host.remove_request_header("authorization");
        host.remove_request_header("x-api-key");
        if class == RouteClass::McpServer {
            let name = request::mcp_server_name(path).ok_or_else(|| Refusal::UnknownPath(path.to_string()))?;
            // Unknown and excluded servers look the same to the caller: both are "not found".
            if !policy.mcp_server_index(name).is_some_and(|i| policy.allows_mcp(principal, i)) {
                return Err(Refusal::McpServerNotFound(name.to_string()));
            }
        }
        let p = vouch(host, &policy, principal, token)?;
        let excluded: Vec<&str> = p
            .excluded_mcp_servers
            .iter()
            .filter_map(|i| policy.mcp_servers.get(*i as usize))
            .map(String::as_str)
            .collect();
        host.set_request_header(MCP_EXCLUDED_HEADER, &excluded.join(","));
        Ok(())
    }

    /// An id-based Responses call: a valid key, then the key is replaced by trusted identity
    /// headers and the control plane serves it to the response's owner only. The ledger keeps
    /// the call (without tokens: nothing is generated).
    fn admit_item(&mut self, host: &mut impl Host, headers: &Headers, path: &str, now: i64) -> Result<(), Refusal> {
        let method = headers.get(":method").unwrap_or_default();
        responses::item_call(path, method)?;
        let Some(policy) = self.policy.clone() else { return Err(Refusal::NoPolicy) };
        let (principal, token) = authenticate(&policy, headers, now)?;
        self.note_caller(&policy, principal, token);
        host.remove_request_header("authorization");
        host.remove_request_header("x-api-key");
        vouch(host, &policy, principal, token)?;
        self.passed = Some(0);
        Ok(())
    }

    fn admit_headers(
        &mut self,
        host: &mut impl Host,
        headers: &Headers,
        endpoint: Endpoint,
        end_of_stream: bool,
        now: i64,
    ) -> Result<Flow, Refusal> {
        let method = headers.get(":method").unwrap_or_default();
        if method != endpoint.method() {
            return Err(Refusal::MethodNotAllowed { method: method.to_string(), allowed: endpoint.method() });
        }
        let Some(policy) = self.policy.clone() else { return Err(Refusal::NoPolicy) };
        let (principal, token) = authenticate(&policy, headers, now)?;
        self.note_caller(&policy, principal, token);
        // The client's key never leaves the gateway: every API request Envoy forwards has passed
        // the body decision (trailers end the body too), which replaces `authorization` with the
        // provider's key or removes it; a refusal is a local reply. Removing it here as well
        // would be a call into Envoy per request for nothing. `x-api-key` is never rewritten
        // later, so it goes now.
        if headers.get("x-api-key").is_some() {
            host.remove_request_header("x-api-key");
        }
        if endpoint == Endpoint::Models {
            let body = policy.models_list_body(principal);
            host.send_response(200, &[("content-type", "application/json")], &body);
            self.replied = Some(200);
            return Ok(Flow::Pause);
        }
        let kind = endpoint.body_kind();
        request::check_content_type(kind, headers.get("content-type"))?;
        let max = policy.settings.max_body_bytes;
        if let Some(len) = headers.get("content-length").and_then(|l| l.trim().parse::<u64>().ok()) {
            if len > max {
                return Err(Refusal::TooLarge { limit: max });
            }
        }
        if end_of_stream {
            return Err(Refusal::EmptyBody);
        }
        self.state = State::AwaitBody(endpoint, principal, token);
        Ok(Flow::Pause)
    }

    /// Decides on the request body; `body_size` is the total buffered so far. `now_ms` reads
    /// the clock (unix milliseconds) for the rate-limit windows: it is called only when a cap
    /// applies, because in the proxy each reading is a call out of the VM.
    pub fn on_request_body(
        &mut self,
        host: &mut (impl Host + Shared),
        body_size: usize,
        end_of_stream: bool,
        now_ms: impl FnOnce() -> i64,
    ) -> Flow {
        if self.pending.is_some() {
            // Held for the ownership check: nothing goes on before its answer.
            return Flow::Pause;
        }
        let State::AwaitBody(endpoint, principal, token) = self.state else {
            return Flow::Continue;
        };
        let Some(policy) = self.policy.clone() else {
            return self.reject(host, &Refusal::NoPolicy);
        };
        let max = policy.settings.max_body_bytes;
        if body_size as u64 > max {
            self.state = State::Done;
            return self.reject(host, &Refusal::TooLarge { limit: max });
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        self.state = State::Done;
        let who = Who { principal, token };
        let content_type = self.content_type.take().unwrap_or_default();
        let scope = ToolScope { policy: &policy, principal, authority: self.authority.as_deref().unwrap_or_default() };
        let inspected = match inspect(&policy, host, endpoint, scope, body_size, &content_type, self.record.as_mut()) {
            Ok(i) => i,
            Err(e) => return self.reject(host, &e),
        };
        if let Some(previous) = inspected.previous_response_id.as_deref() {
            // Whose the response is, only the control plane knows: it is asked before anything
            // is admitted or forwarded, and the request waits here for the answer.
            let ledger = &policy.settings.ledger;
            let secret = &policy.settings.identity_secret;
            let Some(p) = policy.principal(principal) else { return self.reject(host, &Refusal::InvalidKey) };
            if ledger.cluster.is_empty() || secret.is_empty() {
                return self.reject(host, &Refusal::OwnershipUnavailable);
            }
            let caller =
                responses::Caller { token_id: token, user_id: p.user_id, service_account_id: p.service_account_id };
            let check = responses::owner_check(previous, caller);
            return match host.call_out(check.call(&ledger.cluster, &ledger.authority, secret)) {
                Ok(_) => {
                    self.pending = Some(Box::new(Pending { endpoint, who, inspected }));
                    Flow::Pause
                }
                Err(_) => self.reject(host, &Refusal::OwnershipUnavailable),
            };
        }
        self.forward(host, &policy, endpoint, who, inspected, now_ms)
    }

    /// The answer to the ownership check of a held create (`None`: no answer came). Returns
    /// [`Flow::Continue`] when the request goes on (the proxy resumes it), [`Flow::Pause`] when
    /// it was answered here.
    pub fn on_call_response(
        &mut self,
        host: &mut (impl Host + Shared),
        status: Option<u16>,
        now_ms: impl FnOnce() -> i64,
    ) -> Flow {
        let Some(pending) = self.pending.take() else { return Flow::Pause };
        let Some(policy) = self.policy.clone() else { return self.reject(host, &Refusal::NoPolicy) };
        if let Err(e) = responses::owner_answer(status) {
            return self.reject(host, &e);
        }
        let Pending { endpoint, who, inspected } = *pending;
        self.forward(host, &policy, endpoint, who, inspected, now_ms)
    }

    /// Admits an inspected request and sends it on to its model.
    fn forward(
        &mut self,
        host: &mut (impl Host + Shared),
        policy: &Policy,
        endpoint: Endpoint,
        who: Who,
        inspected: Inspected,
        now_ms: impl FnOnce() -> i64,
    ) -> Flow {
        let mut worker = self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok());
        let routed = route_body(policy, host, worker.as_deref_mut(), endpoint, who, now_ms, inspected);
        drop(worker);
        match routed {
            Ok((admitted, reserved_input, reserved_output)) => {
                self.metering =
                    Some(Metering::new(admitted, reserved_input, reserved_output, endpoint == Endpoint::Responses));
                Flow::Continue
            }
            Err(e) => self.reject(host, &e),
        }
    }

    /// Adds rate-limit headers to a routed request's response and prepares metering.
    /// `now_ms` (unix milliseconds) times the first byte.
    pub fn on_response_headers(&mut self, host: &mut impl ResponseHost, now_ms: i64) {
        let Some(m) = self.metering.as_mut() else {
            if self.passed.is_some() {
                let status =
                    host.response_headers().iter().find(|(k, _)| k == ":status").and_then(|(_, v)| v.parse().ok());
                self.passed = Some(status.unwrap_or(0));
                if let Some(r) = self.record.as_mut() {
                    r.ttfb_ms = Some(u64::try_from(now_ms - r.at_ms).unwrap_or(0));
                }
            }
            return;
        };
        let mut headers = host.response_headers();
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        m.status = get(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        // An event stream is metered as one whatever the request said (a provider may stream
        // what the gateway did not see as a stream request).
        let streamed = get("content-type").is_some_and(is_event_stream);
        if streamed {
            m.sse = Some(SseUsage::new());
        }
        if let Some(r) = self.record.as_mut() {
            r.ttfb_ms = Some(u64::try_from(now_ms - r.at_ms).unwrap_or(0));
            r.streamed = streamed;
        }
        if let Some(a) = &m.admitted {
            let ours = ratelimit_headers(a);
            if !ours.is_empty() {
                // Ours replace any the provider sent under the same names.
                headers.retain(|(k, _)| !ours.iter().any(|(n, _)| n == k));
                headers.extend(ours);
                host.replace_response_headers(&headers);
            }
        }
    }

    /// Reads usage from the response as it streams past (nothing is held back).
    pub fn on_response_body(&mut self, host: &impl ResponseHost, size: usize) {
        let Some(m) = self.metering.as_mut() else { return };
        if size == 0 || m.status >= 400 {
            return;
        }
        if m.unreadable {
            return;
        }
        let Some(chunk) = host.response_body(size) else { return };
        match (m.sse.as_mut(), m.scan.as_mut()) {
            (Some(sse), _) => sse.feed(&chunk),
            (None, Some(scan)) => scan.feed(&chunk),
            // Most JSON responses come in one chunk: keep it rather than copy it.
            (None, None) if m.json.is_empty() && chunk.len() <= MAX_METERED_JSON => m.json = chunk,
            (None, None) if m.json.len() + chunk.len() <= MAX_METERED_JSON => m.json.extend_from_slice(&chunk),
            (None, None) => {
                // Too large to keep: its usage is found as it streams past. Bodies that are not
                // JSON (audio) are not worth scanning; their reservation is charged.
                let json = std::mem::take(&mut m.json);
                if json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                    let mut scan = JsonUsageScan::new();
                    scan.feed(&json);
                    scan.feed(&chunk);
                    m.scan = Some(scan);
                } else {
                    m.unreadable = true;
                }
            }
        }
    }

    /// The response came to its end (its last body chunk, trailers, or headers without a
    /// body): an answer cut short by the client leaving never gets here.
    pub fn on_response_end(&mut self) {
        if let Some(m) = self.metering.as_mut() {
            m.complete = true;
        }
    }

    /// At the end of the exchange (complete, failed or abandoned by the client): settles the
    /// token reservations with what was really used, and returns the ledger's event for an API
    /// request (its `request_id` is left to the caller, which owns the id source).
    pub fn on_done(&mut self, store: &mut impl Shared, now_ms: i64) -> Option<UsageEvent> {
        let counted = self.settle(store, now_ms);
        let mut r = self.record.take()?;
        r.latency_ms = u64::try_from(now_ms - r.at_ms).unwrap_or(0);
        match (self.replied, &self.metering) {
            (Some(status), _) => {
                r.status = status;
                r.outcome = Some(if status == 200 { Outcome::Ok } else { Outcome::of_local_reply(status) });
            }
            (None, Some(m)) if m.status != 0 => {
                r.status = m.status;
                r.outcome = Some(if m.status < 400 { Outcome::Ok } else { Outcome::UpstreamError });
                if m.status < 400 {
                    r.response_id = m.response_id.clone().filter(|id| responses::valid_id(id));
                }
            }
            (None, None) if self.passed.is_some_and(|s| s != 0) => {
                let status = self.passed.unwrap_or_default();
                r.status = status;
                r.outcome = Some(if status < 400 { Outcome::Ok } else { Outcome::UpstreamError });
            }
            _ => r.outcome = Some(Outcome::ClientClosed),
        }
        if let Some(u) = counted {
            r.input_tokens = u.input_tokens;
            r.output_tokens = u.output_tokens;
            r.cached_tokens = u.cached_tokens;
            r.reasoning_tokens = u.reasoning_tokens;
            r.estimated = u.estimated;
        }
        Some(r)
    }

    /// Counts what a routed request used and settles its rate-limit reservation (once).
    fn settle(&mut self, store: &mut impl Shared, now_ms: i64) -> Option<usage::Usage> {
        let m = self.metering.as_mut()?;
        if m.done {
            return None;
        }
        m.done = true;
        if m.responses && m.status < 400 {
            // A JSON answer kept whole gives its id with its usage, below.
            m.response_id = match (&m.sse, &m.scan) {
                (Some(sse), _) => sse.response_id().map(str::to_string),
                (None, Some(scan)) => scan.id().map(str::to_string),
                (None, None) => None,
            };
        }
        let counted = if m.status >= 400 {
            // The provider refused: nothing to pay for.
            usage::Usage::default()
        } else if m.status == 0 {
            // The client left before the answer began; the provider got the request and may
            // well be generating it: the reservation is what it costs.
            m.reserved(0)
        } else {
            let mut u = match (&m.sse, &m.scan) {
                (Some(sse), _) => {
                    let u = sse.usage();
                    // Without the provider's report, a stream that ended is estimated from its
                    // text; one the client left may have cost more than it showed (reasoning,
                    // the rest of the answer): the reservation, or the text if that is more.
                    if u.estimated && !m.complete && !sse.saw_done() {
                        m.reserved(u.output_tokens)
                    } else {
                        u
                    }
                }
                (None, Some(scan)) => scan.usage().unwrap_or_else(|| m.reserved(0)),
                (None, None) if m.unreadable => m.reserved(0),
                // A whole JSON body without a report is estimated from its text; one that is
                // not JSON, or cut short, costs the reservation.
                (None, None) if m.responses => {
                    let (u, id) = usage::from_json_response(&m.json);
                    m.response_id = id;
                    u.unwrap_or_else(|| m.reserved(0))
                }
                (None, None) => usage::from_json(&m.json).unwrap_or_else(|| m.reserved(0)),
            };
            if u.estimated {
                u.input_tokens = m.reserved_input;
            }
            u
        };
        if let Some(a) = &m.admitted {
            let mut worker = self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok());
            admission::reconcile(store, worker.as_deref_mut(), a, counted.input_tokens, counted.output_tokens, now_ms);
        }
        Some(counted)
    }
}

/// Removes every inbound `x-aqueduct-*` header (only the gateway may set them) and the
/// [`PROVIDER_ACCOUNT_HEADERS`]: a call into the proxy only for a header that is there.
fn strip_own_headers(host: &mut impl Host, headers: &Headers) {
    for (name, _) in &headers.0 {
        let ours = name.len() >= HEADER_PREFIX.len() && name[..HEADER_PREFIX.len()].eq_ignore_ascii_case(HEADER_PREFIX);
        if ours || PROVIDER_ACCOUNT_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            host.remove_request_header(name);
        }
    }
}

/// The key from `Authorization: Bearer <key>` or `x-api-key`.
fn presented_key(headers: &Headers) -> Option<&str> {
    if let Some(auth) = headers.get("authorization") {
        let auth = auth.trim();
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            return Some(rest.trim());
        }
    }
    headers.get("x-api-key").map(str::trim).filter(|k| !k.is_empty())
}

/// The principal and token id behind the presented key.
fn authenticate(policy: &Policy, headers: &Headers, now: i64) -> Result<(u32, u64), Refusal> {
    let Some(key) = presented_key(headers) else { return Err(Refusal::MissingKey) };
    let Some(entry) = policy.find_key(key) else { return Err(Refusal::InvalidKey) };
    if entry.expires_at.is_some_and(|at| at <= now) {
        return Err(Refusal::ExpiredKey);
    }
    if policy.principal(entry.principal).is_some_and(|p| p.terms_pending) {
        return Err(Refusal::TermsNotAccepted);
    }
    Ok((entry.principal, entry.id))
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
struct Who {
    principal: u32,
    token: u64,
}

/// The caps on a request of this principal and token: the key's own, then its entities'.
fn caps(policy: &Policy, who: Who) -> Vec<Cap> {
    let Some(p) = policy.principal(who.principal) else { return Vec::new() };
    let entity = policy.entity_caps(who.principal);
    let keyed = p.key_limits.iter().any(Option::is_some);
    if !keyed && entity.is_empty() {
        return Vec::new();
    }
    let mut caps = Vec::with_capacity(entity.len() + 1);
    if keyed {
        caps.push(Cap {
            key: format!("{KEY_PREFIX}k.{}", who.token).into(),
            label: format!("key {}", who.token).into(),
            limits: p.key_limits.into(),
        });
    }
    caps.extend(entity.iter().cloned());
    caps
}

/// `x-ratelimit-*` headers for the tightest cap of each limited dimension.
fn ratelimit_headers(a: &Admitted) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (dim, s) in a.status {
        if let Some(s) = s {
            out.push((dim.limit_header().to_string(), s.limit.to_string()));
            out.push((dim.remaining_header().to_string(), s.remaining.to_string()));
            out.push((dim.reset_header().to_string(), error::reset_value(s.reset_ms)));
        }
    }
    out
}

/// A request body read and checked, its model known: all that is decided before admission.
#[derive(Debug)]
struct Inspected {
    body: Vec<u8>,
    facts: BodyFacts,
    /// The model's index in the policy.
    model: usize,
    /// A Responses create's `previous_response_id`.
    previous_response_id: Option<String>,
}

/// Reads and checks the request body and finds its model (the caller may use it).
fn inspect(
    policy: &Policy,
    host: &impl Host,
    endpoint: Endpoint,
    scope: ToolScope<'_>,
    size: usize,
    content_type: &str,
    record: Option<&mut UsageEvent>,
) -> Result<Inspected, Refusal> {
    let body = host.request_body(size).unwrap_or_default();
    let (facts, previous_response_id) = match endpoint.body_kind() {
        BodyKind::Multipart => (request::inspect_multipart(&body, content_type)?, None),
        _ if endpoint == Endpoint::Responses => {
            let create = responses::inspect_create(&body, scope)?;
            (create.body, create.previous_response_id)
        }
        _ => (request::inspect_json(&body)?, None),
    };
    // Unknown and excluded models look the same to the caller: both are "not found".
    let model = policy
        .model_index(&facts.model)
        .filter(|i| policy.allows(scope.principal, *i))
        .ok_or_else(|| Refusal::ModelNotFound(facts.model.clone()))?;
    if let (Some(r), Some(m)) = (record, policy.models.get(model)) {
        r.model = Some(m.name.clone());
        r.end_user = facts.end_user.as_deref().map(ledger::clip);
    }
    Ok(Inspected { body, facts, model, previous_response_id })
}

fn route_body(
    policy: &Policy,
    host: &mut (impl Host + Shared),
    worker: Option<&mut Worker>,
    endpoint: Endpoint,
    who: Who,
    now_ms: impl FnOnce() -> i64,
    inspected: Inspected,
) -> Result<(Option<Admitted>, u64, u64), Refusal> {
    let Inspected { body, facts, model, .. } = inspected;
    let model = policy.models.get(model).ok_or_else(|| Refusal::ModelNotFound(facts.model.clone()))?;
    let multipart = endpoint.body_kind() == BodyKind::Multipart;
    let input = if multipart { 0 } else { usage::estimate_tokens(body.len() as u64) };
    let reservation = policy.settings.output_reservation;
    let output = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Responses => {
            facts.max_tokens.unwrap_or(reservation).min(reservation)
        }
        _ => 0,
    };
    // The common case changes nothing (the provider's model name is the client's, no stream
    // option to add, no `user_id`): the body then stays as Envoy holds it, neither copied nor
    // compared, and no call into the proxy replaces it.
    let mut rewritten = if multipart {
        Some(request::rewrite_multipart_model(&body, facts.model_span, &model.provider_model, facts.user_id_part))
    } else if facts.model != model.provider_model {
        Some(request::rewrite_json_model(&body, facts.model_span, &model.provider_model))
    } else {
        None
    };
    if facts.stream && !facts.includes_usage && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions) {
        // Streams are metered from the provider's final usage chunk.
        rewritten = Some(request::request_stream_usage(rewritten.as_deref().unwrap_or(&body), &facts));
    }
    if facts.json_user_id {
        // Aqueduct's own end-user field is recorded, never forwarded.
        rewritten = Some(request::remove_json_member(rewritten.as_deref().unwrap_or(&body), "user_id")?);
    }
    // Admitted only once the body is known to be forwardable: a refusal above holds nothing.
    let caps = caps(policy, who);
    let admitted = if caps.is_empty() {
        None
    } else {
        let cost = Dims::new(request_cost(model.request_limit_multiplier), input, output);
        Some(admission::admit(host, worker, &caps, cost, now_ms()).map_err(Refusal::RateLimited)?)
    };
    if let Some(new) = rewritten.filter(|new| *new != body) {
        host.set_request_body(&new);
        // Headers are still held (we paused on them), so they can change with the body.
        host.set_request_header("content-length", &new.len().to_string());
    }
    match &model.authorization {
        Some(auth) => host.set_request_header("authorization", auth),
        None => host.remove_request_header("authorization"),
    }
    // Envoy picks the route again after a filter changes a request header (it clears the
    // route cache on every mutation), so this is all it takes to route by model.
    host.set_request_header(ROUTE_HEADER, &model.route);
    Ok((admitted, input, output))
}

/// Sets the trusted identity headers for the control plane (after the key's removal): the
/// deployment's secret, the key's token id, its user, and its service account, team and org
/// when it has them. Fails closed without a secret, which the control plane would refuse.
fn vouch<'p>(
    host: &mut impl Host,
    policy: &'p Policy,
    principal: u32,
    token: u64,
) -> Result<&'p crate::snapshot::PrincipalSpec, Refusal> {
    let Some(p) = policy.principal(principal) else {
        return Err(Refusal::InvalidKey);
    };
    let secret = &policy.settings.identity_secret;
    if secret.is_empty() {
        return Err(Refusal::NoPolicy);
    }
    host.set_request_header(SECRET_HEADER, secret);
    host.set_request_header(TOKEN_ID_HEADER, &token.to_string());
    host.set_request_header(USER_ID_HEADER, &p.user_id.to_string());
    let optional =
        [(SERVICE_ACCOUNT_ID_HEADER, p.service_account_id), (TEAM_ID_HEADER, p.team_id), (ORG_ID_HEADER, p.org_id)];
    for (name, value) in optional {
        if let Some(v) = value {
            host.set_request_header(name, &v.to_string());
        }
    }
    Ok(p)
}

/// Whether a `content-type` is `text/event-stream` (any case, any parameters).
fn is_event_stream(content_type: &str) -> bool {
    const SSE: &[u8] = b"text/event-stream";
    let ct = content_type.trim_start().as_bytes();
    ct.get(..SSE.len()).is_some_and(|p| p.eq_ignore_ascii_case(SSE))
}

#[cfg(test)]
mod tests;
