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
    /// Responses, ACKs and NACKs per resource type: (type, event) → count.
    by_type: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
}

impl XdsMetrics {
    /// Prometheus text exposition of the counters.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let mut metric = |name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", v.load(Ordering::Relaxed));
        };
        metric("aqueduct_xds_streams", "gauge", "xDS streams open.", &self.streams);
        metric("aqueduct_xds_responses_total", "counter", "xDS responses sent.", &self.responses);
        metric("aqueduct_xds_acks_total", "counter", "xDS ACKs received.", &self.acks);
        metric("aqueduct_xds_nacks_total", "counter", "Configs Envoy rejected (NACKs).", &self.nacks);
        let Ok(by_type) = self.by_type.lock() else { return };
        for (event, help) in [("responses", "sent"), ("acks", "acknowledged"), ("nacks", "rejected")] {
            let name = format!("aqueduct_xds_type_{event}_total");
            let _ = writeln!(out, "# HELP {name} xDS responses {help}, by resource type.\n# TYPE {name} counter");
            for ((t, e), v) in by_type.iter() {
                if *e == event {
                    let _ = writeln!(out, "{name}{{type=\"{t}\"}} {v}");
                }
            }
        }
    }

    /// Counts `event` (`responses`, `acks`, `nacks`) for the resource type `type_url`.
    pub fn count(&self, type_url: &str, event: &'static str) {
        // The short name (`Listener`, `Cluster`, …) keeps labels readable and bounded.
        let short = type_url.rsplit('.').next().unwrap_or(type_url).to_string();
        if let Ok(mut m) = self.by_type.lock() {
            *m.entry((short, event)).or_default() += 1;
        }
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
