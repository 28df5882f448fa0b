//! Aqueduct's Proxy-Wasm filter: a thin adapter binding [`aqueduct_policy`] to Envoy.
//!
//! The root context parses the policy snapshot from the plugin configuration (pushed over ECDS)
//! and hands its timer, its calls' answers and its end to a [`RootState`]; each HTTP context runs
//! a [`RequestFilter`]. Both work over hosts implemented with raw hostcalls ([`host`]), so a
//! failed hostcall becomes a logged no-op instead of a panic that traps the VM.
#![deny(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod host;

use aqueduct_policy::admission::Worker;
use aqueduct_policy::ledger::Delivery;
use aqueduct_policy::root::RootState;
use aqueduct_policy::snapshot::LedgerSettings;
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
    /// This VM's usage events on their way to the control plane: they outlive root contexts,
    /// which Envoy replaces on every policy push.
    static DELIVERY: RefCell<Delivery> = RefCell::new(Delivery::default());
}

/// Runs `f` with the VM's usage delivery.
fn with_delivery<R>(f: impl FnOnce(&mut Delivery) -> R) -> R {
    DELIVERY.with(|d| f(&mut d.borrow_mut()))
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
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root { state: RootState::new(id) }) });
}}

/// A root context. Envoy creates a new one for every config push, so its policy changes only
/// with key-journal answers; in-flight requests keep the `Rc` they started with.
struct Root {
    state: RootState,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body: usize, _trailers: usize) {
        let now = host::now_unix_ms();
        if with_delivery(|d| self.state.on_call_response(&mut WasmHost, d, token_id, body, now)) {
            self.done();
        }
    }

    fn on_done(&mut self) -> bool {
        // The plugin is going away or a newer config took over: this VM's leases go back now,
        // and the root stays (returns false) while it hands over queued usage events.
        let now = host::now_unix_ms();
        flush_worker(now, true);
        with_delivery(|d| self.state.on_done(&mut WasmHost, d, now))
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
        with_delivery(|d| self.state.on_tick(&mut WasmHost, d, now));
    }

    fn on_configure(&mut self, size: usize) -> bool {
        // Usage batches leave on this timer (events reach the database well within 2 s);
        // idle rate-limit windows are swept from it too, by one VM per 30 s period.
        self.set_tick_period(std::time::Duration::from_millis(200));
        with_delivery(|d| self.state.adopt(d));
        if size == 0 {
            // No policy yet (e.g. a static config awaiting pull mode): fail closed, 503 on API routes.
            log::warn!("aqueduct: no policy in the plugin configuration; API requests get 503");
            self.state.set_policy(&mut WasmHost, None, host::now_unix_ms());
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
                self.state.set_policy(&mut WasmHost, Some(policy), host::now_unix_ms());
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
        let policy = self.state.policy().cloned();
        Some(Box::new(Request { filter: RequestFilter::with_worker(policy.clone(), worker), policy, body_size: 0 }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    filter: RequestFilter,
    /// Where this request's usage event goes.
    policy: Option<Rc<Policy>>,
    /// Request body bytes buffered so far (for trailers, which end the body without a size).
    body_size: usize,
}

impl Context for Request {
    fn on_http_call_response(&mut self, _token_id: u32, _headers: usize, _body: usize, _trailers: usize) {
        // The ownership check of a held Responses create: go on, or it was answered here.
        let status = aqueduct_policy::host::ControlHost::call_status(&WasmHost);
        if self.filter.on_call_response(&mut WasmHost, status, host::now_unix_ms) == Flow::Continue {
            let _ = proxy_wasm::hostcalls::resume_http_request();
        }
    }
}

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
            with_delivery(|d| match &self.policy {
                Some(p) => d.record(&mut WasmHost, event, &p.settings.ledger),
                None => d.record(&mut WasmHost, event, &LedgerSettings::default()),
            });
        }
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}
