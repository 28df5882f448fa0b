//! The Responses API's stored responses: who made each one, and the calls on them by id.
//!
//! The gateway sends every caller's creates to a provider under the model's one provider key, so
//! the provider sees a single account and would hand any stored response to anyone who names its
//! id. The gateway therefore keeps the owner of each response and lets only the owner reach it:
//! - a create (`POST /v1/responses`) goes through the filter to the provider like chat; the filter
//!   reports the new response's id with the usage event, and ingestion records the owner
//!   ([`store`]) in the event's transaction;
//! - a create continuing a response (`previous_response_id`) is checked by the filter with
//!   `GET /internal/v1/responses/{id}/owner` ([`routes::owner`]) before anything is forwarded;
//! - the id-based calls (retrieve, delete, cancel, input items) are handed here by the filter
//!   with the caller's identity ([`crate::auth::identity`]); an owned response's call is
//!   forwarded to the provider of the model that made it ([`proxy`]), any other is a 404.
//!
//! Owner records arrive some hundreds of milliseconds after the client got its answer; lookups
//! wait for them briefly ([`pending`]).

pub mod pending;
pub mod proxy;
pub mod routes;
pub mod service;
pub mod store;

use crate::gateway::Gateway;
use std::sync::Arc;
use std::time::Duration;

/// Shared state of the Responses API's routes.
#[derive(Debug)]
pub struct Responses {
    /// The store and the current models.
    pub gw: Arc<Gateway>,
    /// The secret the filter sends with identity headers.
    pub secret: String,
    /// Client for provider calls.
    pub client: reqwest::Client,
    /// How long a lookup waits for an owner record still in flight ([`pending::GRACE`]).
    pub grace: Duration,
}

impl Responses {
    /// The routes' state over the gateway and the deployment's identity secret.
    pub fn new(gw: Arc<Gateway>, secret: String) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A redirect would carry the provider key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { gw, secret, client, grace: pending::GRACE })
    }
}

/// The Responses API's routes, mounted next to the management API: the id-based calls with and
/// without the `/v1` prefix, and the filter's ownership check.
pub fn router(state: Arc<Responses>) -> axum::Router {
    use axum::routing::{get, post};
    let mut r = axum::Router::new();
    for prefix in ["/v1/responses", "/responses"] {
        r = r
            .route(&format!("{prefix}/{{id}}"), get(routes::retrieve).delete(routes::delete))
            .route(&format!("{prefix}/{{id}}/cancel"), post(routes::cancel))
            .route(&format!("{prefix}/{{id}}/input_items"), get(routes::input_items));
    }
    r.route(&format!("{}{{id}}/owner", aqueduct_policy::responses::OWNER_PATH), get(routes::owner)).with_state(state)
}
