//! End-to-end tests: the real control plane, a real Envoy, the real `.wasm` filter and real
//! OpenAI clients, in front of the project's fake upstream.
#![allow(dead_code)]

mod harness;

mod admin_ui;
mod admin_ui_browser;
mod audit;
mod endpoints;
mod errors;
mod exclusions;
mod existing_mesh;
mod hardening;
mod limits;
mod live;
mod mcp;
mod mcp_server;
mod metering;
mod nack;
mod oidc_security;
mod replicas;
mod request_bodies;
mod responses;
mod role_matrix;
mod schema;
mod tenancy;
mod usage;
