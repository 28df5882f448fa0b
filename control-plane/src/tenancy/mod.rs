//! Tenancy: orgs, teams, users, service accounts and their keys, with the policy fields
//! (exclusions, limits) every level carries.
//!
//! Layers, each using only those below it: `model` (shared types), `store` (rows, queries,
//! transactions), `authz` (who may do what), `input` (what actions accept), `service` (the
//! actions), `policy` (what the filter is sent).

pub mod authz;
pub mod input;
pub mod model;
pub mod policy;
pub mod service;
pub mod store;
