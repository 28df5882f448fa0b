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
    /// Makes the proxy pick the route again after headers changed.
    fn clear_route_cache(&mut self);
    /// The downstream peer's address (`ip:port`), for the ledger's client address.
    fn peer_address(&self) -> Option<String>;
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
