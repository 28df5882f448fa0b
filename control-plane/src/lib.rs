//! Aqueduct's control plane: holds tenancy and keys, renders Envoy's configuration and the
//! filter's policy, and pushes them over xDS so changes apply live.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod envoy;
pub mod gateway;
pub mod mcp;
pub mod responses;
pub mod supervisor;
pub mod tenancy;
pub mod terms;
pub mod tokens;
pub mod usage;
pub mod xds;

#[cfg(test)]
mod module_graph;
