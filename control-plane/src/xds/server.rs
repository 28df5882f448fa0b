//! tonic bindings: each gRPC stream runs a [`sotw::Stream`] fed by Envoy's requests and by
//! snapshot changes from the cache.

use super::cache::SnapshotCache;
use super::sotw::{self, Stream as SotwStream};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::{
    ExtensionConfigDiscoveryService, ExtensionConfigDiscoveryServiceServer,
};
use futures::Stream;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Counters about xDS traffic, exported as metrics.
#[derive(Debug, Default)]
pub struct XdsMetrics {
    /// Streams currently open.
    pub streams: AtomicU64,
    /// Responses sent.
    pub responses: AtomicU64,
    /// ACKs received.
    pub acks: AtomicU64,
    /// NACKs received: a config Envoy refused.
    pub nacks: AtomicU64,
    /// Responses, ACKs and NACKs per resource type, in the order of [`BY_TYPE`].
    by_type: [Family<ResourceType, Counter>; 3],
}

/// The per-type counters: event, and what happened to the responses it counts.
const BY_TYPE: [(&str, &str); 3] = [("responses", "sent"), ("acks", "acknowledged"), ("nacks", "rejected")];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResourceType {
    r#type: String,
}

impl XdsMetrics {
    /// Adds the xDS metrics to `registry`. The totals stay plain atomics because
    /// `/api/v1/status` reads them too; they go in as the values they have now, so `registry`
    /// is meant for one scrape.
    pub fn register(&self, registry: &mut Registry) {
        let now = |v: &AtomicU64| v.load(Ordering::Relaxed);
        registry.register("aqueduct_xds_streams", "xDS streams open", ConstGauge::new(now(&self.streams)));
        registry.register("aqueduct_xds_responses", "xDS responses sent", ConstCounter::new(now(&self.responses)));
        registry.register("aqueduct_xds_acks", "xDS ACKs received", ConstCounter::new(now(&self.acks)));
        registry.register("aqueduct_xds_nacks", "Configs Envoy rejected (NACKs)", ConstCounter::new(now(&self.nacks)));
        for ((event, help), family) in BY_TYPE.iter().zip(&self.by_type) {
            let help = format!("xDS responses {help}, by resource type");
            registry.register(format!("aqueduct_xds_type_{event}"), help, family.clone());
        }
    }

    /// Counts `event` (`responses`, `acks`, `nacks`) for the resource type `type_url`.
    pub fn count(&self, type_url: &str, event: &'static str) {
        let Some(i) = BY_TYPE.iter().position(|(e, _)| *e == event) else { return };
        // The short name (`Listener`, `Cluster`, …) keeps labels readable and bounded.
        let short = type_url.rsplit('.').next().unwrap_or(type_url).to_string();
        self.by_type[i].get_or_create(&ResourceType { r#type: short }).inc();
    }
}

/// The xDS gRPC server (ADS and ECDS).
#[derive(Clone, Debug)]
pub struct XdsServer {
    cache: Arc<SnapshotCache>,
    metrics: Arc<XdsMetrics>,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl XdsServer {
    /// A server over a cache.
    pub fn new(cache: Arc<SnapshotCache>, metrics: Arc<XdsMetrics>) -> Self {
        Self { cache, metrics }
    }

    /// The ADS service for tonic's router.
    pub fn ads(&self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(256 << 20)
    }

    /// The standalone ECDS service for tonic's router.
    pub fn ecds(&self) -> ExtensionConfigDiscoveryServiceServer<Self> {
        ExtensionConfigDiscoveryServiceServer::new(self.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(256 << 20)
    }

    fn run(
        &self,
        mut inbound: Streaming<DiscoveryRequest>,
        allowed: &'static [&'static str],
        peer: String,
    ) -> ResponseStream<DiscoveryResponse> {
        let (tx, rx) = mpsc::channel(16);
        let mut snapshots = self.cache.subscribe();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            metrics.streams.fetch_add(1, Ordering::Relaxed);
            let mut state = SotwStream::new(allowed);
            let mut node = String::new();
            loop {
                let responses = tokio::select! {
                    msg = inbound.next() => match msg {
                        Some(Ok(req)) => {
                            if node.is_empty() {
                                if let Some(n) = &req.node {
                                    node = n.id.clone();
                                    tracing::info!(node = %node, %peer, "xDS stream opened");
                                }
                            }
                            // Marking the snapshot seen here means its change notice will not
                            // fire, so every type it changed is sent below, not only this one.
                            let snap = snapshots.borrow_and_update().clone();
                            let mut out = state.on_request(req, &snap);
                            out.responses.extend(state.on_snapshot(&snap));
                            if let Some(n) = out.nack {
                                metrics.nacks.fetch_add(1, Ordering::Relaxed);
                                metrics.count(&n.type_url, "nacks");
                                tracing::warn!(node = %node, type_url = %n.type_url, version = %n.rejected_version,
                                    error = %n.message, "Envoy rejected (NACKed) a config; it keeps the last good one");
                            }
                            if let Some((t, v)) = out.acked {
                                metrics.acks.fetch_add(1, Ordering::Relaxed);
                                metrics.count(&t, "acks");
                                tracing::debug!(node = %node, type_url = %t, version = %v, "ACK");
                            }
                            out.responses
                        }
                        Some(Err(e)) => {
                            tracing::info!(node = %node, error = %e, "xDS stream ended with an error");
                            break;
                        }
                        None => break,
                    },
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let snap = snapshots.borrow_and_update().clone();
                        state.on_snapshot(&snap)
                    }
                };
                for r in responses {
                    tracing::debug!(node = %node, type_url = %r.type_url, version = %r.version_info, n = r.resources.len(), "push");
                    metrics.responses.fetch_add(1, Ordering::Relaxed);
                    metrics.count(&r.type_url, "responses");
                    if tx.send(Ok(r)).await.is_err() {
                        break;
                    }
                }
            }
            metrics.streams.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(node = %node, "xDS stream closed");
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

fn peer<T>(req: &Request<T>) -> String {
    req.remote_addr().map(|a| a.to_string()).unwrap_or_default()
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let peer = peer(&req);
        Ok(Response::new(self.run(req.into_inner(), sotw::ADS_TYPES, peer)))
    }

    async fn delta_aggregated_resources(
        &self,
        _req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("Aqueduct serves state-of-the-world xDS; set api_type: GRPC"))
    }
}

#[tonic::async_trait]
impl ExtensionConfigDiscoveryService for XdsServer {
    type StreamExtensionConfigsStream = ResponseStream<DiscoveryResponse>;
    type DeltaExtensionConfigsStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_extension_configs(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamExtensionConfigsStream>, Status> {
        let peer = peer(&req);
        Ok(Response::new(self.run(req.into_inner(), sotw::ECDS_TYPES, peer)))
    }

    async fn delta_extension_configs(
        &self,
        _req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaExtensionConfigsStream>, Status> {
        Err(Status::unimplemented("Aqueduct serves state-of-the-world xDS; set api_type: GRPC"))
    }

    async fn fetch_extension_configs(
        &self,
        req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let mut state = SotwStream::new(sotw::ECDS_TYPES);
        let mut req = req.into_inner();
        req.response_nonce.clear();
        let out = state.on_request(req, &self.cache.current());
        out.responses.into_iter().next().map(Response::new).ok_or_else(|| Status::unavailable("no filter config yet"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text;

    #[test]
    fn metrics_keep_their_names_and_types() {
        let m = XdsMetrics::default();
        m.streams.fetch_add(1, Ordering::Relaxed);
        m.acks.fetch_add(2, Ordering::Relaxed);
        m.count(super::super::type_url::LISTENER, "acks");
        m.count(super::super::type_url::CLUSTER, "nacks");
        m.count(super::super::type_url::CLUSTER, "unknown");
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).unwrap();
        for line in [
            "# HELP aqueduct_xds_streams xDS streams open.",
            "# TYPE aqueduct_xds_streams gauge",
            "aqueduct_xds_streams 1",
            "# TYPE aqueduct_xds_acks_total counter",
            "aqueduct_xds_acks_total 2",
            "aqueduct_xds_nacks_total 0",
            "# HELP aqueduct_xds_type_acks_total xDS responses acknowledged, by resource type.",
            "aqueduct_xds_type_acks_total{type=\"Listener\"} 1",
            "aqueduct_xds_type_nacks_total{type=\"Cluster\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in:\n{out}");
        }
        // A labelled family with no series yet is left out, help and type included.
        assert!(!out.contains("aqueduct_xds_type_responses_total"), "{out}");
    }
}
