//! Forwarding an owned response's call to the provider of the model that made it.
//!
//! The request goes out with the model's provider key (never the client's key, which the filter
//! removed, nor the gateway's identity headers) and the client's method, query string and the
//! few headers the API reads; the answer comes back as the provider gave it, streamed (a
//! retrieve with `?stream=true` is an SSE stream).

use super::service::Error;
use crate::config::models::{ModelGroup, Upstream};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::time::Duration;

/// How long a provider call may take when the model sets no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Request headers passed to the provider.
const REQUEST_HEADERS: [&str; 3] = ["accept", "content-type", "openai-beta"];

/// Answer headers passed back to the client.
const ANSWER_HEADERS: [&str; 5] =
    ["content-type", "cache-control", "x-request-id", "openai-processing-ms", "openai-version"];

/// A call on a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /v1/responses/{id}`.
    Retrieve,
    /// `DELETE /v1/responses/{id}`.
    Delete,
    /// `POST /v1/responses/{id}/cancel`.
    Cancel,
    /// `GET /v1/responses/{id}/input_items`.
    InputItems,
}

impl Op {
    /// The HTTP method.
    pub fn method(self) -> reqwest::Method {
        match self {
            Op::Retrieve | Op::InputItems => reqwest::Method::GET,
            Op::Delete => reqwest::Method::DELETE,
            Op::Cancel => reqwest::Method::POST,
        }
    }

    /// What follows the id in the path.
    fn suffix(self) -> &'static str {
        match self {
            Op::Retrieve | Op::Delete => "",
            Op::Cancel => "/cancel",
            Op::InputItems => "/input_items",
        }
    }
}

/// The URLs of `id`'s call at each deployment of `upstream`, in the models file's order, with
/// the client's query string as it came. `id` must be a valid id (letters, digits, `_`, `-`:
/// nothing to escape).
pub fn upstream_urls(upstream: &Upstream, id: &str, op: Op, query: Option<&str>) -> Vec<String> {
    let scheme = if upstream.tls { "https" } else { "http" };
    let query = query.filter(|q| !q.is_empty()).map(|q| format!("?{q}")).unwrap_or_default();
    upstream
        .endpoints
        .iter()
        .map(|e| format!("{scheme}://{e}{}/responses/{id}{}{query}", upstream.base_path, op.suffix()))
        .collect()
}

/// Sends `id`'s call to `group`'s provider. A response lives on the deployment that made it, so
/// the deployments are tried in order until one answers anything but 404; when all answer 404
/// that answer is returned. When none answers 404 for sure (one could not be reached), the call
/// fails: the response may be on the one that did not answer.
pub async fn forward(
    client: &reqwest::Client,
    group: &ModelGroup,
    id: &str,
    op: Op,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<reqwest::Response, Error> {
    let timeout = group.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let mut not_found = None;
    let mut failed = None;
    for url in upstream_urls(&group.upstream, id, op, query) {
        let mut req = client.request(op.method(), &url).timeout(timeout);
        if let Some(key) = &group.api_key {
            req = req.bearer_auth(key);
        }
        for name in REQUEST_HEADERS {
            if let Some(v) = headers.get(name) {
                req = req.header(name, v.as_bytes());
            }
        }
        if op == Op::Cancel {
            // Sent even when empty: a POST without a length may be refused (411).
            req = req.body(body.clone());
        }
        match req.send().await {
            Ok(r) if r.status() == StatusCode::NOT_FOUND => not_found = Some(r),
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::warn!(model = %group.name, %url, error = %e, "Responses API provider call failed");
                failed = Some(if e.is_timeout() { Error::Timeout } else { Error::Unreachable(e.to_string()) });
            }
        }
    }
    match (failed, not_found) {
        (Some(e), _) => Err(e),
        (None, Some(r)) => Ok(r),
        (None, None) => Err(Error::Unreachable(format!("model {} has no deployments", group.name))),
    }
}

/// The provider's answer for the client: status, the headers a client reads (content type,
/// caching, the provider's request id and timing), and the body streamed as it arrives.
pub fn relay(answer: reqwest::Response) -> Response {
    let mut headers = HeaderMap::new();
    for name in ANSWER_HEADERS {
        if let Some(v) = answer.headers().get(name) {
            headers.insert(name, v.clone());
        }
    }
    let status = answer.status();
    let mut resp = Response::new(Body::from_stream(answer.bytes_stream()));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::models::Endpoint;

    fn upstream(tls: bool, base_path: &str, hosts: &[(&str, u16)]) -> Upstream {
        Upstream {
            tls,
            base_path: base_path.into(),
            endpoints: hosts.iter().map(|(h, p)| Endpoint { host: (*h).into(), port: *p }).collect(),
        }
    }

    #[test]
    fn urls_follow_the_deployments_and_keep_the_query() {
        let up = upstream(false, "/v1", &[("vllm-a", 8000), ("10.0.0.2", 8001), ("::1", 9000)]);
        let q = "limit=20&order=asc&after=msg_1&include%5B%5D=message.input_image.image_url";
        assert_eq!(
            upstream_urls(&up, "resp_abc", Op::InputItems, Some(q)),
            [
                format!("http://vllm-a:8000/v1/responses/resp_abc/input_items?{q}"),
                format!("http://10.0.0.2:8001/v1/responses/resp_abc/input_items?{q}"),
                format!("http://[::1]:9000/v1/responses/resp_abc/input_items?{q}"),
            ]
        );
        let openai = upstream(true, "/v1", &[("api.openai.com", 443)]);
        assert_eq!(
            upstream_urls(&openai, "resp_1", Op::Retrieve, Some("stream=true&starting_after=3")),
            ["https://api.openai.com:443/v1/responses/resp_1?stream=true&starting_after=3"]
        );
        assert_eq!(
            upstream_urls(&openai, "resp_1", Op::Cancel, None),
            ["https://api.openai.com:443/v1/responses/resp_1/cancel"]
        );
        let bare = upstream(false, "", &[("h", 80)]);
        assert_eq!(upstream_urls(&bare, "resp_1", Op::Delete, Some("")), ["http://h:80/responses/resp_1"]);
    }

    #[test]
    fn methods_are_the_clients() {
        assert_eq!(
            [Op::Retrieve, Op::Delete, Op::Cancel, Op::InputItems].map(Op::method),
            [reqwest::Method::GET, reqwest::Method::DELETE, reqwest::Method::POST, reqwest::Method::GET]
        );
    }
}
