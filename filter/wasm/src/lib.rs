//! Aqueduct's Proxy-Wasm filter: a thin adapter binding [`aqueduct_policy`] to Envoy.
//!
//! The root context parses the policy snapshot from the plugin configuration (pushed over ECDS);
//! each HTTP context runs a [`RequestFilter`] over a [`Host`] implemented with raw hostcalls, so
//! a failed hostcall becomes a logged no-op instead of a panic that traps the VM.
#![deny(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod host;
mod journal;
mod ledger;

use aqueduct_policy::admission::Worker;
use aqueduct_policy::{Flow, Policy, RequestFilter};
use host::WasmHost;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;

thread_local! {
    /// What this VM (this worker) holds of the rate-limit windows: token refunds waiting for its
    /// next write to their window, and budget it leased for the current second. Any root
    /// context's timer ends past leases and writes what waits, so both outlive policy pushes.
    static WORKER: Rc<RefCell<Worker>> = Rc::new(RefCell::new(Worker::default()));
}

/// Ends this VM's leases of past seconds (all of them with `all`) and writes the refunds
/// waiting in it.
fn flush_worker(now_ms: i64, all: bool) {
    WORKER.with(|w| {
        if let Ok(mut w) = w.try_borrow_mut() {
            if w.is_empty() && w.leases() == 0 {
                return;
            }
            if all {
                aqueduct_policy::admission::release_all(&mut WasmHost, &mut w, now_ms);
            } else {
                aqueduct_policy::admission::flush(&mut WasmHost, &mut w, now_ms);
            }
        }
    });
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // With panic=abort a panic traps the VM; at least say why before it does.
    std::panic::set_hook(Box::new(|info| {
        log::error!("aqueduct filter panicked: {info}");
    }));
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root { id, policy: None, closing: false, journal: journal::Poller::default() }) });
}}

/// Holds the parsed policy. Envoy creates a new root context for every config push, so this
/// never changes after `on_configure`; in-flight requests keep the `Rc` they started with.
struct Root {
    /// This root context's id (answers to its HTTP calls come back to it).
    id: u32,
    policy: Option<Rc<Policy>>,
    /// `on_done` came: deliver what is queued, then signal `done()`.
    closing: bool,
    /// The long poll for key changes since this root's snapshot.
    journal: journal::Poller,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body: usize, _trailers: usize) {
        if self.journal.answers(token_id) {
            let now = host::now_unix_ms();
            if let Some(p) = &self.policy {
                if let Some(changed) = self.journal.on_response(p, body, now) {
                    self.policy = Some(Rc::new(changed));
                }
            }
            self.poll(now);
            return;
        }
        let acknowledged = ledger::on_response(token_id, self.id, host::now_unix_ms());
        if self.closing {
            // Keep handing over what is left while the control plane takes it, then let go.
            let sent = acknowledged
                && self
                    .policy
                    .as_ref()
                    .is_some_and(|p| ledger::flush(&p.settings.ledger, self.id, host::now_unix_ms()));
            if !sent && !ledger::awaiting(self.id) {
                self.done();
            }
        }
    }

    fn on_done(&mut self) -> bool {
        // The plugin is going away (listener drained, Envoy stopping) or a newer config took
        // over. Without a successor, hand over the queued events first (Envoy keeps this context
        // until `done()`); with one, the successor sends them and this root sends nothing.
        self.closing = true;
        flush_worker(host::now_unix_ms(), true);
        let sent =
            self.policy.as_ref().is_some_and(|p| ledger::flush(&p.settings.ledger, self.id, host::now_unix_ms()));
        // Also wait for a call this root made earlier (an old root keeps ticking while requests
        // that began under it finish): deleting it now would lose that call's answer.
        !(sent || ledger::awaiting(self.id))
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        // Runs again for every config push: only creates what is missing.
        host::ensure_lock();
        true
    }

    fn on_tick(&mut self) {
        let now = host::now_unix_ms();
        flush_worker(now, false);
        let swept = aqueduct_policy::admission::sweep(&mut WasmHost, now);
        if swept > 0 {
            log::debug!("aqueduct: emptied {swept} idle rate-limit windows");
        }
        if let Some(p) = &self.policy {
            ledger::flush(&p.settings.ledger, self.id, now);
        }
        self.poll(now);
    }

    fn on_configure(&mut self, size: usize) -> bool {
        // Usage batches leave on this timer (events reach the database well within 2 s);
        // idle rate-limit windows are swept from it too, by one VM per 30 s period.
        self.set_tick_period(std::time::Duration::from_millis(200));
        ledger::adopt(self.id);
        if size == 0 {
            // No policy yet (e.g. a static config awaiting pull mode): fail closed, 503 on API routes.
            log::warn!("aqueduct: no policy in the plugin configuration; API requests get 503");
            self.policy = None;
            return true;
        }
        let started = host::now_unix_ms();
        // Read in pieces: each token block lands directly in the table the VM keeps.
        let read = |start: usize, len: usize| {
            proxy_wasm::hostcalls::get_buffer(BufferType::PluginConfiguration, start, len).ok().flatten()
        };
        match Policy::decode_with(size, read) {
            Ok(policy) => {
                log::info!(
                    "aqueduct: policy version {} loaded ({} models, {} tokens, {} bytes parsed in {} ms)",
                    policy.version,
                    policy.models.len(),
                    policy.token_table().len(),
                    size,
                    host::now_unix_ms() - started
                );
                self.policy = Some(Rc::new(policy));
                self.poll(host::now_unix_ms());
                true
            }
            Err(e) => {
                // Returning false makes Envoy NACK the update and keep the last good policy.
                log::error!("aqueduct: policy refused: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = WORKER.with(Rc::clone);
        Some(Box::new(Request {
            filter: RequestFilter::with_worker(self.policy.clone(), worker),
            policy: self.policy.clone(),
            body_size: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Root {
    /// Keeps one journal poll open while this root serves.
    fn poll(&mut self, now_ms: i64) {
        if let (Some(p), false) = (&self.policy, self.closing) {
            self.journal.poll(p, now_ms);
        }
    }
}

struct Request {
    filter: RequestFilter,
    /// Where this request's usage event goes.
    policy: Option<Rc<Policy>>,
    /// Request body bytes buffered so far (for trailers, which end the body without a size).
    body_size: usize,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.filter.on_request_headers(&mut WasmHost, end_of_stream, host::now_unix_ms()))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.body_size = body_size;
        action(self.filter.on_request_body(&mut WasmHost, body_size, end_of_stream, host::now_unix_ms))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers (HTTP/2) end the request without a last body call: the body is complete
        // now. Continuing by default would forward it unrouted and unmetered.
        action(self.filter.on_request_body(&mut WasmHost, self.body_size, true, host::now_unix_ms))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.filter.on_response_headers(&mut WasmHost, host::now_unix_ms());
        if end_of_stream {
            self.filter.on_response_end();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // Continue: each chunk goes to the client as it arrives; we only read it.
        self.filter.on_response_body(&WasmHost, body_size);
        if end_of_stream {
            // The answer was delivered whole; one cut short by the client is charged its
            // reservation when the provider's usage was not read (see `on_done`).
            self.filter.on_response_end();
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.filter.on_response_end();
        Action::Continue
    }

    fn on_log(&mut self) {
        // Called once per request, also when the client went away mid-stream.
        if let Some(event) = self.filter.on_done(&mut WasmHost, host::now_unix_ms()) {
            match &self.policy {
                Some(p) => ledger::record(event, &p.settings.ledger),
                None => ledger::record(event, &aqueduct_policy::snapshot::LedgerSettings::default()),
            }
        }
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}
