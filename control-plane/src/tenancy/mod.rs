//! Tenancy: orgs, teams, users, service accounts and their keys, with the policy fields
//! (exclusions, limits) every level carries.

pub mod authz;
pub mod model;
pub mod policy;
pub mod store;
