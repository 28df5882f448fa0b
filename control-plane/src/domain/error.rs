//! The one error every service returns: an OpenAI-shaped error (status, type, code, message)
//! and the offending field, so the API renders it as JSON and the UI shows its message.

use aqueduct_policy::ApiError;

/// An error answer; the second field, when set, is the `param` (a field name that may come from
/// the request, so not `'static`).
#[derive(Debug)]
pub struct Error(pub ApiError, pub Option<String>);

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Self(e, None)
    }
}

impl Error {
    /// This error with `param` naming the offending field.
    pub fn with_param(mut self, param: &str) -> Self {
        self.1 = Some(param.to_string());
        self
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> u16 {
        self.0.status
    }

    /// The message shown to people.
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        // The detail goes to the log, never to the client.
        tracing::error!(error = %e, "database error");
        Self::from(ApiError::new(503, "The database is unavailable; try again.").code("database_unavailable"))
    }
}
