//! The pure parts of a run: when each request is due, and what is sent where.

use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use hyper::Uri;

/// How many requests `seconds` of load at `rate` requests per second is.
pub fn request_count(seconds: f64, rate: f64) -> u64 {
    (seconds * rate).round() as u64
}

/// When request `i` is due, counted from the start of the run.
///
/// Computed from `i` rather than by adding up intervals so rounding never accumulates into drift.
pub fn due_offset(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// Parses a `Name: value` header as given to `--header`.
pub fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s.split_once(':').ok_or_else(|| format!("header {s:?} has no ':'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| format!("bad header name in {s:?}"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| format!("bad header value in {s:?}"))?;
    Ok((name, value))
}

/// Where requests go: an `http://` URL split into what the socket and the request line need.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// Host to connect to.
    pub host: String,
    /// Port to connect to (80 when the URL has none).
    pub port: u16,
    /// The `Host` header: the URL's authority as written.
    pub authority: String,
    /// Path and query, the request target of an HTTP/1.1 request line.
    pub path: String,
}

/// Parses the `--url`. Only plain `http` is supported: TLS would add its own cost to every
/// measured latency, and the gateway's benchmarks run over loopback.
pub fn parse_url(s: &str) -> Result<Target, String> {
    let uri: Uri = s.parse().map_err(|e| format!("bad url {s:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("url {s:?} must start with http:// (https is not supported)"));
    }
    let authority = uri.authority().ok_or_else(|| format!("url {s:?} has no host"))?;
    Ok(Target {
        host: authority.host().trim_start_matches('[').trim_end_matches(']').to_string(),
        port: authority.port_u16().unwrap_or(80),
        authority: authority.as_str().to_string(),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_rounds_to_the_nearest_request() {
        assert_eq!(request_count(10.0, 1000.0), 10_000);
        assert_eq!(request_count(0.0, 1000.0), 0);
        assert_eq!(request_count(1.0, 33.3), 33);
        assert_eq!(request_count(0.5, 3.0), 2);
    }

    #[test]
    fn due_times_are_evenly_spaced_without_drift() {
        assert_eq!(due_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(due_offset(1, 1000.0), Duration::from_millis(1));
        assert_eq!(due_offset(250, 200.0), Duration::from_millis(1250));
        // A rate whose interval is not exact in binary: the millionth request is still on time.
        let late = due_offset(1_000_000, 3.0).as_secs_f64() - 1_000_000.0 / 3.0;
        assert!(late.abs() < 1e-6, "{late}");
    }

    #[test]
    fn headers_split_at_the_first_colon_and_trim() {
        let (n, v) = parse_header("Authorization:  Bearer a:b ").unwrap();
        assert_eq!(n, "authorization");
        assert_eq!(v, "Bearer a:b");
        let (n, v) = parse_header("x-empty:").unwrap();
        assert_eq!((n.as_str(), v.as_bytes()), ("x-empty", &b""[..]));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": value").is_err());
        assert!(parse_header("bad name: v").is_err());
        assert!(parse_header("x: line\nbreak").is_err());
    }

    #[test]
    fn urls_give_host_port_and_path() {
        let t = parse_url("http://127.0.0.1:8080/v1/chat/completions?x=1").unwrap();
        assert_eq!(
            t,
            Target {
                host: "127.0.0.1".into(),
                port: 8080,
                authority: "127.0.0.1:8080".into(),
                path: "/v1/chat/completions?x=1".into(),
            }
        );
        let t = parse_url("http://localhost").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        assert_eq!(parse_url("http://[::1]:9/").unwrap().host, "::1");
        assert!(parse_url("https://example.com/").is_err());
        assert!(parse_url("/just/a/path").is_err());
    }
}
