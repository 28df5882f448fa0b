//! The bench's floor: a Proxy-Wasm HTTP filter that does nothing, or only the gateway's calls.
//!
//! Built with the same SDK, target and profile as the real filter, and loaded by Envoy the same
//! way (V8, one VM per worker), it still makes Envoy create a context for every request and
//! call into the VM at every stage the SDK exports (request headers and body, response headers
//! and body, log, done, delete). `make bench` measures it next to plain Envoy and the gateway,
//! so the filter's cost splits into what any Wasm filter pays and what Aqueduct's work adds.
//!
//! With the plugin configuration `calls` (the `calls` variant) it also makes the calls into
//! Envoy the gateway makes on an admitted chat request without rate limits, in the same order and
//! holding the request the same way, but decides nothing: what those calls cost Envoy (and the
//! VM to receive their answers) is then measured apart from the gateway's own logic.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Floor { calls: None }) });
}}

struct Floor {
    /// The gateway's calls to make (configuration `calls`, or some of them), or none.
    calls: Option<Calls>,
}

impl Context for Floor {}

impl RootContext for Floor {
    fn on_configure(&mut self, size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size).ok().flatten();
        self.calls = config.as_deref().and_then(|c| std::str::from_utf8(c).ok()).and_then(Calls::parse);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match self.calls {
            Some(calls) => Some(Box::new(calls)),
            None => Some(Box::new(Pass)),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Every callback keeps the SDK's default: continue.
struct Pass;

impl Context for Pass {}

impl HttpContext for Pass {}

/// The gateway's calls out, without its decisions (results are read and dropped). `calls`
/// makes those of an admitted chat request without rate limits; a comma-separated list of the
/// fields below (in kebab case) makes only those, to price each call (`BENCH_CALLS`).
#[derive(Clone, Copy, Default)]
struct Calls {
    /// Hold the request headers until the body ends (no buffer filter then).
    pause: bool,
    /// Read the clock at request headers, response headers and log.
    time: bool,
    /// Read the request headers, all at once.
    headers: bool,
    /// Read the eight request headers the gateway uses, one call each.
    values: bool,
    /// Ask for eight request headers that are absent (a call that returns nothing).
    missing: bool,
    /// Read the request body.
    body: bool,
    /// Set two request headers (the provider key and the route header).
    set: bool,
    /// Read the response headers, all at once, and the response body.
    response: bool,
    /// Read `:status` and `content-type` of the response, one call each, and its body.
    response_values: bool,
    /// Set two response headers (as the rate-limit headers are).
    response_set: bool,
}

impl Calls {
    fn parse(config: &str) -> Option<Self> {
        if config == "calls" {
            let base = Self::default();
            return Some(Self {
                pause: true,
                time: true,
                headers: true,
                body: true,
                set: true,
                response: true,
                ..base
            });
        }
        let mut calls = Self::default();
        for name in config.split(',') {
            match name.trim() {
                "pause" => calls.pause = true,
                "time" => calls.time = true,
                "headers" => calls.headers = true,
                "values" => calls.values = true,
                "missing" => calls.missing = true,
                "response-set" => calls.response_set = true,
                "response-values" => calls.response_values = true,
                "body" => calls.body = true,
                "set" => calls.set = true,
                "response" => calls.response = true,
                _ => return None,
            }
        }
        Some(calls)
    }

    fn time(&self) {
        if self.time {
            let _ = hostcalls::get_current_time();
        }
    }
}

/// The request headers the gateway reads, one by one (`values`).
const REQUEST_VALUES: [&str; 8] = [
    ":path",
    ":method",
    "authorization",
    "x-api-key",
    "content-type",
    "content-length",
    "x-forwarded-for",
    "user-agent",
];

/// Eight request headers no request carries (`missing`): calls that find nothing.
const ABSENT_VALUES: [&str; 8] = [
    "x-absent-path",
    "x-absent-method",
    "x-absent-authorization",
    "x-absent-api-key",
    "x-absent-content-type",
    "x-absent-content-length",
    "x-absent-forwarded-for",
    "x-absent-user-agent",
];

impl Context for Calls {}

impl HttpContext for Calls {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.time();
        if self.headers {
            let _ = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
        }
        if self.values {
            for name in REQUEST_VALUES {
                let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name);
            }
        }
        if self.missing {
            for name in ABSENT_VALUES {
                let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name);
            }
        }
        if self.pause && !end_of_stream {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return if self.pause { Action::Pause } else { Action::Continue };
        }
        if self.body {
            let _ = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size);
        }
        if self.set {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "authorization", Some("Bearer sk-upstream"));
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-aqueduct-route", Some("bench"));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.time();
        if self.response {
            let _ = hostcalls::get_map_bytes(MapType::HttpResponseHeaders);
        }
        if self.response_values {
            let _ = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status");
            let _ = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, "content-type");
        }
        if self.response_set {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "x-ratelimit-limit-requests", Some("1000"));
            let _ =
                hostcalls::set_map_value(MapType::HttpResponseHeaders, "x-ratelimit-remaining-requests", Some("999"));
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if (self.response || self.response_values) && body_size > 0 {
            let _ = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.time();
    }
}
