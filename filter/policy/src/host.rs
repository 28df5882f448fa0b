//! The boundary between the policy and the proxy it runs in.
//!
//! The Wasm adapter implements [`Host`] over Proxy-Wasm hostcalls; tests implement it over plain
//! maps. Every method is infallible from the policy's point of view: the adapter turns a failed
//! hostcall into a logged no-op (or `None`), because a trap would kill the VM for every request.

/// What the request filter may ask of the proxy.
pub trait Host {
    /// A request header by lowercase name.
    fn request_header(&self, name: &str) -> Option<String>;
    /// Lowercase names of all request headers.
    fn request_header_names(&self) -> Vec<String>;
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
}
