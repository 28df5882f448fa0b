//! Whose a stored response is, and which model's provider serves calls on it.

use super::pending;
use super::store::{self, Owner};
use crate::auth::identity::Identity;
use crate::config::models::{ModelGroup, ModelsConfig};
use crate::db::Db;
use aqueduct_policy::{ApiError, Refusal};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Why a call on a stored response is not forwarded (or not answered by the provider).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request did not come through the filter (no or a wrong secret, no ids): 401.
    #[error("untrusted caller: {}", .0.message)]
    Untrusted(ApiError),
    /// Someone else's, unknown, expired or malformed: one 404 for all, so that a caller learns
    /// nothing about responses that are not theirs.
    #[error("response not found")]
    NotFound,
    /// The model that made the response is no longer in the models file: 404.
    #[error("model {0:?} is no longer served")]
    ModelGone(String),
    /// No deployment of the model could be reached: 502.
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    /// The provider did not answer within the model's timeout: 504.
    #[error("provider timed out")]
    Timeout,
    /// The store failed: 503.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl Error {
    /// The answer in OpenAI's shape.
    pub fn api(self) -> crate::domain::Error {
        let e = match self {
            Error::Untrusted(e) => e,
            // The same refusal the filter answers for a malformed id or a foreign
            // `previous_response_id`: every "not yours" looks alike.
            Error::NotFound => Refusal::ResponseNotFound { param: None }.into(),
            Error::ModelGone(model) => ApiError::new(
                404,
                format!("The model '{model}' that created this response is no longer served by this gateway."),
            )
            .code("model_not_found"),
            Error::Unreachable(_) => {
                ApiError::new(502, "The provider of this response could not be reached; try again.")
                    .code("upstream_unavailable")
            }
            Error::Timeout => {
                ApiError::new(504, "The provider of this response did not answer in time.").code("upstream_timeout")
            }
            Error::Db(e) => return e.into(),
        };
        e.into()
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.api().into_response()
    }
}

/// The record of `id` when `who` owns it. A miss waits up to `grace` for the record to be
/// ingested ([`pending`]) before it is [`Error::NotFound`].
pub async fn owned(db: &Db, id: &str, who: &Identity, grace: Duration) -> Result<Owner, Error> {
    // Ids that are never recorded (the filter refuses them too) need no wait.
    if !aqueduct_policy::responses::valid_id(id) {
        return Err(Error::NotFound);
    }
    // Only a missing record is waited for: one that is someone else's will not become the
    // caller's, so it is refused at once.
    let found = pending::wait_for(grace, move || async move {
        let now = chrono::Utc::now().timestamp();
        store::find(db, id, now).await
    })
    .await?;
    found.filter(|o| o.owned_by(who)).ok_or(Error::NotFound)
}

/// The models' group that made `owner`'s response (by its public name), which serves the calls on
/// it: its provider holds the response.
pub fn group(models: &ModelsConfig, owner: &Owner) -> Result<ModelGroup, Error> {
    models.resolve(&owner.model).cloned().ok_or_else(|| Error::ModelGone(owner.model.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing;
    use tokio::time::Instant;

    /// A wait long enough that ending before it shows no wait happened.
    const GRACE_FOR_TESTS: Duration = Duration::from_secs(5);

    fn record(id: &str, user: i64) -> Owner {
        Owner {
            response_id: id.into(),
            owner_user_id: user,
            owner_service_account_id: None,
            token_id: 1,
            model: "m".into(),
            created_at: chrono::Utc::now().timestamp(),
            expires_at: chrono::Utc::now().timestamp() + 60,
        }
    }

    async fn land(db: &Db, owner: Owner) {
        crate::with_pool!(db, p => {
            store::insert_claims(std::slice::from_ref(&owner)).build().execute(p).await.unwrap();
        });
        pending::signal();
    }

    #[tokio::test]
    async fn a_record_that_lands_during_the_wait_is_found() {
        for t in testing::all().await {
            let who = Identity { token_id: 1, user_id: 3, ..Default::default() };
            let started = Instant::now();
            let lookup = tokio::spawn({
                let (db, who) = (t.db.clone(), who.clone());
                async move { owned(&db, "resp_late", &who, Duration::from_secs(10)).await.map(|o| o.owner_user_id) }
            });
            tokio::time::sleep(Duration::from_millis(150)).await;
            land(&t.db, record("resp_late", 3)).await;
            assert_eq!(lookup.await.unwrap().unwrap(), 3);
            assert!(started.elapsed() < Duration::from_secs(5), "found when it landed, not at the end of the grace");
        }
    }

    #[tokio::test]
    async fn missing_responses_are_not_found_after_the_grace_and_foreign_ones_at_once() {
        for t in testing::all().await {
            let grace = Duration::from_millis(300);
            let who = Identity { token_id: 1, user_id: 3, ..Default::default() };
            land(&t.db, record("resp_theirs", 4)).await;
            let started = Instant::now();
            assert!(matches!(owned(&t.db, "resp_missing", &who, grace).await, Err(Error::NotFound)));
            assert!(started.elapsed() >= grace, "a missing record is waited for");
            let started = Instant::now();
            assert!(matches!(owned(&t.db, "resp_theirs", &who, GRACE_FOR_TESTS).await, Err(Error::NotFound)));
            assert!(started.elapsed() < GRACE_FOR_TESTS, "someone else's is refused at once");
            // An id that is never recorded needs no wait.
            let started = Instant::now();
            assert!(matches!(owned(&t.db, "resp/../x", &who, GRACE_FOR_TESTS).await, Err(Error::NotFound)));
            assert!(started.elapsed() < GRACE_FOR_TESTS);
        }
    }

    #[test]
    fn errors_render_in_openais_shape() {
        let body = |e: Error| {
            let e = e.api();
            (e.status(), serde_json::from_slice::<serde_json::Value>(&e.0.body()).unwrap())
        };
        let (status, b) = body(Error::NotFound);
        assert_eq!(status, 404);
        assert_eq!(b["error"]["message"], "Response not found");
        assert_eq!(b["error"]["param"], serde_json::Value::Null);
        let (status, b) = body(Error::ModelGone("old".into()));
        assert_eq!((status, b["error"]["code"].as_str()), (404, Some("model_not_found")));
        assert!(b["error"]["message"].as_str().unwrap().contains("'old'"));
        assert_eq!(body(Error::Unreachable("x".into())).0, 502);
        assert_eq!(body(Error::Timeout).0, 504);
    }
}
