//! Who is calling, as the filter vouches for it: identity headers that count only when they
//! come with the deployment's secret.
//!
//! Routes the filter hands to the control plane (MCP, the Responses API's id-based calls and
//! its ownership check) carry no API key: the filter checked it, removed it, and added the key's
//! ids plus the secret. Anything without the secret did not come through the filter.

use aqueduct_policy::filter::{
    MCP_EXCLUDED_HEADER, ORG_ID_HEADER, SECRET_HEADER, SERVICE_ACCOUNT_ID_HEADER, TEAM_ID_HEADER, TOKEN_ID_HEADER,
    USER_ID_HEADER,
};
use aqueduct_policy::ApiError;
use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// The caller of a request the filter handed over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The key used; MCP sessions are bound to it.
    pub token_id: i64,
    /// The key's user (a service account's owner for its key).
    pub user_id: i64,
    /// The service account, for its key.
    pub service_account_id: Option<i64>,
    /// The service account's team.
    pub team_id: Option<i64>,
    /// The org.
    pub org_id: Option<i64>,
    /// MCP servers this key may not use (sent on MCP routes only).
    pub excluded: Vec<String>,
}

impl Identity {
    /// Reads the identity the filter added. The headers count only with the right secret
    /// (compared in constant time); anything else did not come through the filter.
    pub fn from_headers(headers: &HeaderMap, secret: &str) -> Result<Self, ApiError> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let untrusted = || {
            ApiError::new(401, "This endpoint must be called through the gateway's listener with an API key.")
                .code("missing_api_key")
        };
        let presented = get(SECRET_HEADER).ok_or_else(untrusted)?;
        if secret.is_empty() || !bool::from(presented.as_bytes().ct_eq(secret.as_bytes())) {
            return Err(untrusted());
        }
        let id = |name: &str| get(name).and_then(|v| v.parse::<i64>().ok());
        Ok(Self {
            token_id: id(TOKEN_ID_HEADER).ok_or_else(untrusted)?,
            user_id: id(USER_ID_HEADER).ok_or_else(untrusted)?,
            service_account_id: id(SERVICE_ACCOUNT_ID_HEADER),
            team_id: id(TEAM_ID_HEADER),
            org_id: id(ORG_ID_HEADER),
            excluded: get(MCP_EXCLUDED_HEADER)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// Whether this caller may use MCP server `server`.
    pub fn allows(&self, server: &str) -> bool {
        !self.excluded.iter().any(|e| e == server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn trusts_headers_only_with_the_secret() {
        let good = [(SECRET_HEADER, "s"), (TOKEN_ID_HEADER, "7"), (USER_ID_HEADER, "3"), (MCP_EXCLUDED_HEADER, "a,b")];
        let id = Identity::from_headers(&headers(&good), "s").unwrap();
        assert_eq!((id.token_id, id.user_id, id.org_id), (7, 3, None));
        assert!(!id.allows("a") && id.allows("c"));
        assert_eq!(Identity::from_headers(&headers(&good), "other").unwrap_err().status, 401);
        assert_eq!(Identity::from_headers(&headers(&good[1..]), "s").unwrap_err().status, 401);
        assert_eq!(Identity::from_headers(&headers(&good), "").unwrap_err().status, 401);
    }
}
