//! Aqueduct's filter policy, free of any Proxy-Wasm dependency.
//!
//! Everything the filter decides lives here so it can be tested natively: the policy snapshot the
//! control plane pushes ([`snapshot`]), its compact token table ([`tokens`]), key changes between snapshots ([`journal`]), request
//! classification and body inspection ([`request`]), OpenAI-shaped errors ([`error`]) and the
//! per-request state machine ([`filter`]) that drives a [`Host`] — the thin boundary the Wasm
//! adapter implements over Envoy's hostcalls.
#![cfg_attr(not(test), deny(clippy::panic, clippy::unwrap_used, clippy::expect_used))]

pub mod admission;
pub mod dims;
pub mod error;
pub mod filter;
pub mod host;
pub mod journal;
pub mod ledger;
pub mod limits;
pub mod request;
pub mod responses;
pub mod root;
pub mod snapshot;
pub mod tokens;
pub mod usage;

pub use error::{ApiError, Refusal};
pub use filter::{Flow, RequestFilter};
pub use host::Host;
pub use snapshot::{Policy, PolicySnapshot, SnapshotError};
