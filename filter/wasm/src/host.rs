//! [`Host`] over raw Proxy-Wasm hostcalls.
//!
//! The SDK's convenience getters unwrap the host status and would trap the VM on an unexpected
//! one; the raw hostcalls return it, and we log and carry on.

use aqueduct_policy::host::{Call, ControlHost, Counter, Level, ResponseHost, Shared};
use aqueduct_policy::Host;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType};
use std::cell::Cell;

/// The current request's view of Envoy.
pub struct WasmHost;

/// Envoy's clock as unix milliseconds (0 if the host cannot tell).
pub fn now_unix_ms() -> i64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A header value as text: UTF-8 values (nearly all) keep their buffer; others are read lossily.
fn text(value: Vec<u8>) -> String {
    String::from_utf8(value).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Shared-data key serializing key creation across workers (creating a key is not atomic).
const LOCK: &str = "aqueduct.rl.lock";
/// Bounded spin on the creation lock; after it, creation goes ahead unlocked (a rare double
/// creation only loses one request's count, a hung worker would lose everything).
const LOCK_SPINS: usize = 10_000;

/// Creates the creation lock if it does not exist yet.
pub fn ensure_lock() {
    if let Ok((None, _)) = hostcalls::get_shared_data(LOCK) {
        let _ = hostcalls::set_shared_data(LOCK, Some(&[0]), None);
    }
}

impl Shared for WasmHost {
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(v), Some(cas))) => Some((v, cas)),
            _ => None,
        }
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        hostcalls::set_shared_data(key, Some(value), Some(cas)).is_ok()
    }

    fn shared_create(&mut self, key: &str, initial: &[u8]) {
        let mut locked = false;
        for _ in 0..LOCK_SPINS {
            match hostcalls::get_shared_data(LOCK) {
                Ok((Some(v), Some(cas)))
                    if v.as_slice() == [0] && hostcalls::set_shared_data(LOCK, Some(&[1]), Some(cas)).is_ok() =>
                {
                    locked = true;
                    break;
                }
                Ok((None, _)) => ensure_lock(),
                _ => {}
            }
        }
        if let Ok((None, _)) = hostcalls::get_shared_data(key) {
            let _ = hostcalls::set_shared_data(key, Some(initial), None);
        }
        if locked {
            let _ = hostcalls::set_shared_data(LOCK, Some(&[0]), None);
        }
    }
}

impl ResponseHost for WasmHost {
    fn response_headers(&self) -> Vec<(String, String)> {
        // Values as bytes: the SDK's string form unwraps UTF-8 and would trap the VM on a
        // provider's header value that is not.
        hostcalls::get_map_bytes(MapType::HttpResponseHeaders)
            .map(|m| m.into_iter().map(|(k, v)| (k, text(v))).collect())
            .unwrap_or_default()
    }

    fn replace_response_headers(&mut self, headers: &[(String, String)]) {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Err(s) = hostcalls::set_map(MapType::HttpResponseHeaders, pairs) {
            log::debug!("aqueduct: setting response headers failed: {s:?}");
        }
    }

    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size).ok().flatten()
    }
}

impl Host for WasmHost {
    fn request_headers(&self) -> Vec<(String, String)> {
        // Values as bytes: a client may send any octets in a header value, and the SDK's string
        // form would trap the VM on one that is not UTF-8. (Names are tokens, checked by Envoy.)
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
            .map(|m| m.into_iter().map(|(k, v)| (k, text(v))).collect())
            .unwrap_or_default()
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        if let Err(s) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)) {
            log::warn!("aqueduct: setting request header {name} failed: {s:?}");
        }
    }

    fn remove_request_header(&mut self, name: &str) {
        if let Err(s) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None) {
            log::warn!("aqueduct: removing request header {name} failed: {s:?}");
        }
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten()
    }

    fn set_request_body(&mut self, body: &[u8]) {
        // Replace the whole buffered body: start 0, length "everything".
        if let Err(s) = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, usize::MAX, body) {
            log::warn!("aqueduct: replacing request body failed: {s:?}");
        }
    }

    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let headers: Vec<(&str, &str)> = headers.to_vec();
        if let Err(s) = hostcalls::send_http_response(u32::from(status), headers, Some(body)) {
            log::warn!("aqueduct: local reply {status} failed: {s:?}");
        }
    }

    fn peer_address(&self) -> Option<String> {
        let bytes = hostcalls::get_property(vec!["source", "address"]).ok().flatten()?;
        String::from_utf8(bytes).ok()
    }

    fn call_out(&mut self, call: Call<'_>) -> Result<u32, String> {
        // The SDK delivers the answer to the context that is current now: this request's.
        hostcalls::dispatch_http_call(call.cluster, call.headers, call.body, vec![], call.timeout)
            .map_err(|s| format!("{s:?}"))
    }
}

thread_local! {
    /// Envoy's ids of the stats counters, by [`Counter`]: defined on first use (`u32::MAX`
    /// when Envoy refused one: that counter is then skipped).
    static METRICS: Cell<Option<[u32; 3]>> = const { Cell::new(None) };
}

impl ControlHost for WasmHost {
    fn dispatch(&mut self, call: Call<'_>) -> Result<u32, String> {
        hostcalls::dispatch_http_call(call.cluster, call.headers, call.body, vec![], call.timeout)
            .map_err(|s| format!("{s:?}"))
    }

    fn call_status(&self) -> Option<u16> {
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status").ok().flatten()?;
        std::str::from_utf8(&status).ok()?.parse().ok()
    }

    fn call_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size).ok().flatten()
    }

    fn count(&mut self, counter: Counter, by: u64) {
        let ids = METRICS.with(|m| {
            m.get().unwrap_or_else(|| {
                let ids =
                    Counter::ALL.map(|c| hostcalls::define_metric(MetricType::Counter, c.name()).unwrap_or(u32::MAX));
                m.set(Some(ids));
                ids
            })
        });
        let Some(&id) = Counter::ALL.iter().position(|c| *c == counter).and_then(|i| ids.get(i)) else { return };
        if id != u32::MAX {
            let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    fn log(&mut self, level: Level, message: &str) {
        match level {
            Level::Info => log::info!("aqueduct: {message}"),
            Level::Warn => log::warn!("aqueduct: {message}"),
        }
    }
}
