//! DNS-rebinding protection: a web page on another origin that resolves its own name to the
//! gateway's address must not reach MCP servers through a browser. The `Host` must be allowed
//! (else 421) and an `Origin`, when sent, too (else 403). Patterns may end in `:*` (any port).

use aqueduct_policy::ApiError;
use axum::http::HeaderMap;

/// The allow-lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    /// Off: no Host/Origin checks (behind a proxy that does them).
    pub enabled: bool,
    /// Allowed `Host` values (`host:port`, or `host:*`).
    pub hosts: Vec<String>,
    /// Allowed `Origin` values (`scheme://host:port`, or `scheme://host:*`).
    pub origins: Vec<String>,
}

/// Default `Host` allow-list: loopback names on any port.
pub const DEFAULT_HOSTS: &str = "localhost:*,127.0.0.1:*,[::1]:*";
/// Default `Origin` allow-list: loopback origins on any port.
pub const DEFAULT_ORIGINS: &str = "http://localhost:*,http://127.0.0.1:*,http://[::1]:*";

/// Whether `value` matches `pattern` (exactly, or `prefix:*` with any port, or no port).
fn matches(pattern: &str, value: &str) -> bool {
    if pattern.eq_ignore_ascii_case(value) {
        return true;
    }
    match pattern.strip_suffix(":*") {
        Some(base) => {
            let head = value.get(..base.len());
            head.is_some_and(|h| h.eq_ignore_ascii_case(base)) && {
                let rest = &value[base.len()..];
                rest.is_empty()
                    || rest.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            }
        }
        None => false,
    }
}

impl HostPolicy {
    /// Checks a request's `Host` and `Origin`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if host.is_empty() || !self.hosts.iter().any(|p| matches(p, host)) {
            return Err(ApiError::new(421, format!("Invalid Host header: {host:?} is not an allowed host."))
                .code("invalid_host"));
        }
        if let Some(origin) = headers.get("origin") {
            let origin = origin.to_str().unwrap_or("(not text)");
            if !self.origins.iter().any(|p| matches(p, origin)) {
                return Err(ApiError::new(403, format!("Invalid Origin header: {origin:?} is not an allowed origin."))
                    .code("invalid_origin"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_ports() {
        assert!(matches("localhost:*", "localhost:8080"));
        assert!(matches("localhost:*", "LOCALHOST"));
        assert!(!matches("localhost:*", "localhost.evil.com:80"));
        assert!(!matches("localhost:*", "localhost:"));
        assert!(!matches("localhost:*", "localhost:80x"));
        assert!(matches("gw.example.com:443", "gw.example.com:443"));
        assert!(!matches("gw.example.com:443", "gw.example.com:444"));
        assert!(matches("http://localhost:*", "http://localhost:3000"));
        assert!(!matches("http://localhost:*", "https://localhost:3000"));
    }

    #[test]
    fn statuses() {
        let p =
            HostPolicy { enabled: true, hosts: vec!["localhost:*".into()], origins: vec!["http://localhost:*".into()] };
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        assert!(p.check(&h(&[("host", "localhost:8080")])).is_ok());
        assert_eq!(p.check(&h(&[("host", "evil.com")])).unwrap_err().status, 421);
        assert_eq!(p.check(&h(&[])).unwrap_err().status, 421);
        assert_eq!(p.check(&h(&[("host", "localhost:1"), ("origin", "http://evil.com")])).unwrap_err().status, 403);
        assert!(p.check(&h(&[("host", "localhost:1"), ("origin", "http://localhost:3000")])).is_ok());
        assert!(HostPolicy { enabled: false, ..p }.check(&h(&[("host", "evil.com")])).is_ok());
    }
}
