//! Errors of the management API, rendered like the gateway's own (OpenAI's shape).

use aqueduct_policy::ApiError;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

pub use crate::domain::Error;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = self.0.body();
        if let Some(param) = &self.1 {
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) {
                v["error"]["param"] = param.clone().into();
                body = serde_json::to_vec(&v).unwrap_or(body);
            }
        }
        let mut resp = (status, [("content-type", "application/json")], body).into_response();
        for (k, v) in &self.0.headers {
            if let Ok(v) = v.parse() {
                resp.headers_mut().insert(*k, v);
            }
        }
        resp
    }
}

/// Unknown routes.
pub async fn not_found(uri: Uri) -> Error {
    Error::from(ApiError::unknown_path(uri.path()))
}

/// Known routes called with the wrong method.
pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> Error {
    Error::from(
        ApiError::new(405, format!("Method {method} is not allowed on {}.", uri.path())).code("method_not_allowed"),
    )
}

/// Maps axum's JSON extractor rejections to OpenAI-shaped 400/415.
pub fn json_rejection(r: axum::extract::rejection::JsonRejection) -> Error {
    use axum::extract::rejection::JsonRejection as J;
    Error::from(match r {
        J::MissingJsonContentType(_) => ApiError::unsupported_media_type("", "application/json"),
        J::JsonSyntaxError(e) => ApiError::bad_request(format!("Invalid JSON: {}", e.body_text())),
        J::JsonDataError(e) => ApiError::bad_request(format!("Invalid request: {}", e.body_text())),
        other => ApiError::bad_request(other.body_text()),
    })
}
