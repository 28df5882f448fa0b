//! Policy and route delivery to Envoy over xDS (state-of-the-world ADS, plus standalone ECDS for
//! Envoys whose listeners belong to someone else).
//!
//! - [`resources`] renders listeners, routes, clusters and the filter config from our state;
//! - [`cache`] holds the current versioned resources and notifies streams of changes;
//! - [`sotw`] is the per-stream protocol state machine (no I/O);
//! - [`server`] binds the state machine to tonic streams.

pub mod cache;
pub mod resources;
pub mod server;
pub mod sotw;

/// Type URLs of the resources we serve.
pub mod type_url {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const EXTENSION: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
}
