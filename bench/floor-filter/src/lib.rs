//! The bench's floor: a Proxy-Wasm HTTP filter that does nothing.
//!
//! Built with the same SDK, target and profile as the real filter, and loaded by Envoy the same
//! way (V8, one VM per worker), it still makes Envoy create a context for every request and
//! call into the VM at every stage the SDK exports (request headers and body, response headers
//! and body, log, done, delete). `make bench` measures it next to plain Envoy and the gateway,
//! so the filter's cost splits into what any Wasm filter pays and what Aqueduct's work adds.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Floor) });
}}

struct Floor;

impl Context for Floor {}

impl RootContext for Floor {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Pass))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Every callback keeps the SDK's default: continue.
struct Pass;

impl Context for Pass {}

impl HttpContext for Pass {}
