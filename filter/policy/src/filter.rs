//! The per-request state machine: headers in, body in, a decision out.
//!
//! The Wasm adapter calls [`RequestFilter::on_request_headers`] and
//! [`RequestFilter::on_request_body`] from the matching Proxy-Wasm callbacks and maps [`Flow`]
//! to the SDK's `Action`. Time is a parameter so tests control expiry.

use crate::error::ApiError;
use crate::host::Host;
use crate::request::{self, BodyFacts, BodyKind, Endpoint, RouteClass};
use crate::snapshot::Policy;
use std::rc::Rc;

/// Request header the filter sets to pick a model's route; clients can never set it, because
/// every inbound `x-aqueduct-*` header is removed first.
pub const ROUTE_HEADER: &str = "x-aqueduct-route";

/// Prefix of the gateway's own headers, stripped from every inbound request.
pub const HEADER_PREFIX: &str = "x-aqueduct-";

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
    /// Authenticated as the principal; the body decides the model.
    AwaitBody(Endpoint, u32),
}

/// One request's filter.
#[derive(Debug)]
pub struct RequestFilter {
    policy: Option<Rc<Policy>>,
    state: State,
}

impl RequestFilter {
    /// A filter for one request under `policy` (`None` until the first snapshot arrives).
    pub fn new(policy: Option<Rc<Policy>>) -> Self {
        Self { policy, state: State::Done }
    }

    /// Decides on the request headers. `now` is unix seconds.
    pub fn on_request_headers(&mut self, host: &mut impl Host, end_of_stream: bool, now: i64) -> Flow {
        strip_own_headers(host);
        let path = host.request_header(":path").unwrap_or_default();
        let endpoint = match request::classify(&path) {
            RouteClass::Api(e) => e,
            RouteClass::UnknownApi => return reply_error(host, &ApiError::unknown_path(&path)),
            RouteClass::Management | RouteClass::Health | RouteClass::Other => return Flow::Continue,
        };
        match self.admit_headers(host, endpoint, end_of_stream, now) {
            Ok(flow) => flow,
            Err(e) => reply_error(host, &e),
        }
    }

    fn admit_headers(
        &mut self,
        host: &mut impl Host,
        endpoint: Endpoint,
        end_of_stream: bool,
        now: i64,
    ) -> Result<Flow, ApiError> {
        let method = host.request_header(":method").unwrap_or_default();
        if method != endpoint.method() {
            return Err(ApiError::method_not_allowed(&method, endpoint.method()));
        }
        let policy = self.policy.clone().ok_or_else(ApiError::no_policy)?;
        let principal = authenticate(&policy, host, now)?;
        // The client's key never leaves the gateway, whatever happens next.
        host.remove_request_header("authorization");
        host.remove_request_header("x-api-key");
        if endpoint == Endpoint::Models {
            let body = policy.models_list_body(principal);
            host.send_response(200, &[("content-type", "application/json")], &body);
            return Ok(Flow::Pause);
        }
        let kind = endpoint.body_kind();
        request::check_content_type(kind, host.request_header("content-type").as_deref())?;
        let max = policy.settings.max_body_bytes;
        if let Some(len) = host.request_header("content-length").and_then(|l| l.trim().parse::<u64>().ok()) {
            if len > max {
                return Err(ApiError::too_large(max));
            }
        }
        if end_of_stream {
            return Err(ApiError::bad_request("Request body is empty; expected a JSON object."));
        }
        self.state = State::AwaitBody(endpoint, principal);
        Ok(Flow::Pause)
    }

    /// Decides on the request body; `body_size` is the total buffered so far.
    pub fn on_request_body(&mut self, host: &mut impl Host, body_size: usize, end_of_stream: bool) -> Flow {
        let State::AwaitBody(endpoint, principal) = self.state else {
            return Flow::Continue;
        };
        let Some(policy) = self.policy.clone() else {
            return reply_error(host, &ApiError::no_policy());
        };
        let max = policy.settings.max_body_bytes;
        if body_size as u64 > max {
            self.state = State::Done;
            return reply_error(host, &ApiError::too_large(max));
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        self.state = State::Done;
        match route_body(&policy, host, endpoint, principal, body_size) {
            Ok(()) => Flow::Continue,
            Err(e) => reply_error(host, &e),
        }
    }
}

/// Removes every inbound `x-aqueduct-*` header: only the gateway may set them.
fn strip_own_headers(host: &mut impl Host) {
    for name in host.request_header_names() {
        if name.len() >= HEADER_PREFIX.len() && name[..HEADER_PREFIX.len()].eq_ignore_ascii_case(HEADER_PREFIX) {
            host.remove_request_header(&name);
        }
    }
}

/// The key from `Authorization: Bearer <key>` or `x-api-key`.
fn presented_key(host: &impl Host) -> Option<String> {
    if let Some(auth) = host.request_header("authorization") {
        let auth = auth.trim();
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            return Some(rest.trim().to_string());
        }
    }
    host.request_header("x-api-key").map(|k| k.trim().to_string()).filter(|k| !k.is_empty())
}

/// The principal behind the presented key.
fn authenticate(policy: &Policy, host: &impl Host, now: i64) -> Result<u32, ApiError> {
    let key = presented_key(host).ok_or_else(ApiError::missing_key)?;
    let entry = policy.tokens.find_key(&key).ok_or_else(ApiError::invalid_key)?;
    if entry.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::expired_key());
    }
    Ok(entry.principal)
}

fn route_body(
    policy: &Policy,
    host: &mut impl Host,
    endpoint: Endpoint,
    principal: u32,
    size: usize,
) -> Result<(), ApiError> {
    let body = host.request_body(size).unwrap_or_default();
    let multipart = endpoint.body_kind() == BodyKind::Multipart;
    let facts: BodyFacts = if multipart {
        request::inspect_multipart(&body, &host.request_header("content-type").unwrap_or_default())?
    } else {
        request::inspect_json(&body)?
    };
    // Unknown and excluded models look the same to the caller: both are "not found".
    let model = policy
        .model_index(&facts.model)
        .filter(|i| policy.allows(principal, *i))
        .and_then(|i| policy.models.get(i))
        .ok_or_else(|| ApiError::model_not_found(&facts.model))?;
    let rewritten = if multipart {
        request::rewrite_multipart_model(&body, facts.model_span, &model.provider_model)
    } else {
        request::rewrite_json_model(&body, facts.model_span, &model.provider_model)
    };
    host.set_request_body(&rewritten);
    // Headers are still held (we paused on them), so they can change with the body.
    host.set_request_header("content-length", &rewritten.len().to_string());
    match &model.authorization {
        Some(auth) => host.set_request_header("authorization", auth),
        None => host.remove_request_header("authorization"),
    }
    host.set_request_header(ROUTE_HEADER, &model.route);
    host.clear_route_cache();
    Ok(())
}

fn reply_error(host: &mut impl Host, e: &ApiError) -> Flow {
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    headers.extend(e.headers.iter().map(|(k, v)| (*k, v.as_str())));
    host.send_response(e.status, &headers, &e.body());
    Flow::Pause
}

#[cfg(test)]
mod tests;
