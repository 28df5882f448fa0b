//! State-of-the-world xDS, one stream at a time, without I/O.
//!
//! Rules (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol):
//! - every response carries a fresh nonce and the type's `version_info`;
//! - a request whose `response_nonce` is not the last one we sent for that type is stale and
//!   ignored (Envoy will follow up with a current one);
//! - an ACK (current nonce, no `error_detail`) is never answered, or the stream would loop —
//!   unless it also changes the subscribed names, which is a new subscription;
//! - a NACK (current nonce, `error_detail`) is recorded and not answered: Envoy keeps its last
//!   good config, and the next changed snapshot is sent as usual;
//! - an empty nonce opens (or, after a reconnect, re-opens) a subscription: always answered.

use super::cache::{Snapshot, TypeSnapshot};
use super::type_url;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::HashMap;

/// A rejected update, as Envoy reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// Resource type.
    pub type_url: String,
    /// The version Envoy refused.
    pub rejected_version: String,
    /// Envoy's reason.
    pub message: String,
}

/// What one request produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Responses to send, in order.
    pub responses: Vec<DiscoveryResponse>,
    /// Set when the request was a NACK.
    pub nack: Option<Nack>,
    /// Set when the request acknowledged a version.
    pub acked: Option<(String, String)>,
}

#[derive(Debug, Default)]
struct Subscription {
    /// Subscribed names; empty means "all" for wildcard types (LDS, CDS).
    names: Vec<String>,
    /// Nonce of the last response on this type.
    nonce: Option<String>,
    /// Version of the last response on this type.
    sent_version: Option<String>,
}

/// One ADS (or single-type) stream's protocol state.
#[derive(Debug)]
pub struct Stream {
    subs: HashMap<String, Subscription>,
    nonces: u64,
    /// Types this stream may serve (ECDS-only streams serve one).
    allowed: &'static [&'static str],
}

/// All types served over ADS.
pub const ADS_TYPES: &[&str] = &[type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE, type_url::EXTENSION];
/// The one type served by the standalone ECDS service.
pub const ECDS_TYPES: &[&str] = &[type_url::EXTENSION];

fn is_wildcard_type(type_url: &str) -> bool {
    type_url == type_url::CLUSTER || type_url == type_url::LISTENER
}

impl Stream {
    /// A new stream that serves `allowed` types.
    pub fn new(allowed: &'static [&'static str]) -> Self {
        Self { subs: HashMap::new(), nonces: 0, allowed }
    }

    /// Handles one request from Envoy against the current resources.
    pub fn on_request(&mut self, req: DiscoveryRequest, snap: &Snapshot) -> Outcome {
        let mut out = Outcome::default();
        if !self.allowed.contains(&req.type_url.as_str()) {
            return out;
        }
        let sub = self.subs.entry(req.type_url.clone()).or_default();
        if !req.response_nonce.is_empty() {
            if sub.nonce.as_deref() != Some(req.response_nonce.as_str()) {
                return out; // stale
            }
            if let Some(err) = req.error_detail {
                out.nack = Some(Nack {
                    type_url: req.type_url,
                    rejected_version: sub.sent_version.clone().unwrap_or_default(),
                    message: err.message,
                });
                return out;
            }
            out.acked = Some((req.type_url.clone(), req.version_info.clone()));
            // An ACK is answered only when something newer is waiting: a snapshot published
            // while the acknowledged one was in flight must not be lost.
            let newer = snap.version(&req.type_url).is_some_and(|v| sub.sent_version.as_deref() != Some(v));
            if sub.names == req.resource_names && !newer {
                return out;
            }
        }
        sub.names = req.resource_names;
        if let Some(resp) = self.respond(&req.type_url, snap) {
            out.responses.push(resp);
        }
        out
    }

    /// Sends every subscribed type whose version moved since we last sent it.
    pub fn on_snapshot(&mut self, snap: &Snapshot) -> Vec<DiscoveryResponse> {
        let stale: Vec<String> = self
            .subs
            .iter()
            .filter(|(t, s)| snap.version(t).is_some() && snap.version(t) != s.sent_version.as_deref())
            .map(|(t, _)| t.clone())
            .collect();
        stale.iter().filter_map(|t| self.respond(t, snap)).collect()
    }

    fn respond(&mut self, type_url: &str, snap: &Snapshot) -> Option<DiscoveryResponse> {
        let TypeSnapshot { version, resources } = snap.types.get(type_url)?;
        let sub = self.subs.get_mut(type_url)?;
        let wildcard = is_wildcard_type(type_url) && (sub.names.is_empty() || sub.names.iter().any(|n| n == "*"));
        if !wildcard && sub.names.is_empty() {
            return None; // nothing subscribed
        }
        let resources =
            resources.iter().filter(|r| wildcard || sub.names.contains(&r.name)).map(|r| r.any.clone()).collect();
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        sub.nonce = Some(nonce.clone());
        sub.sent_version = Some(version.clone());
        Some(DiscoveryResponse {
            version_info: version.clone(),
            resources,
            type_url: type_url.to_string(),
            nonce,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::cache::{resource, SnapshotCache};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
    use envoy_types::pb::google::rpc::Status;
    use std::collections::BTreeMap;

    fn cache_with(clusters: &[&str], ext: &str) -> SnapshotCache {
        let cache = SnapshotCache::new();
        publish(&cache, clusters, ext);
        cache
    }

    fn publish(cache: &SnapshotCache, clusters: &[&str], ext: &str) {
        let cl =
            clusters.iter().map(|n| resource(*n, &Cluster { name: n.to_string(), ..Default::default() })).collect();
        let ex = vec![resource(
            "aqueduct",
            &TypedExtensionConfig { name: "aqueduct".into(), typed_config: Some(Default::default()) },
        )];
        let _ = ext;
        cache.publish(BTreeMap::from([(type_url::CLUSTER, cl), (type_url::EXTENSION, ex)]));
    }

    fn req(type_url: &str, version: &str, nonce: &str, names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.into(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn initial_request_answered_ack_not_answered() {
        let cache = cache_with(&["a", "b"], "x");
        let mut s = Stream::new(ADS_TYPES);
        let out = s.on_request(req(type_url::CLUSTER, "", "", &[]), &cache.current());
        assert_eq!(out.responses.len(), 1);
        let r = &out.responses[0];
        assert_eq!(r.resources.len(), 2, "wildcard gets all clusters");
        let out = s.on_request(req(type_url::CLUSTER, &r.version_info, &r.nonce, &[]), &cache.current());
        assert!(out.responses.is_empty(), "ACK must not be answered");
        assert_eq!(out.acked.unwrap().1, r.version_info);
    }

    #[test]
    fn a_version_published_while_the_previous_was_in_flight_is_sent_on_its_ack() {
        let cache = cache_with(&["a"], "x");
        let mut s = Stream::new(ADS_TYPES);
        let r = s.on_request(req(type_url::CLUSTER, "", "", &[]), &cache.current()).responses.remove(0);
        publish(&cache, &["a", "b"], "x");
        // The stream saw the new snapshot before Envoy's ACK of the old one arrived.
        let out = s.on_request(req(type_url::CLUSTER, &r.version_info, &r.nonce, &[]), &cache.current());
        assert_eq!(out.responses.len(), 1, "the newer version goes out with the ACK handled");
        assert_eq!(out.responses[0].resources.len(), 2);
        assert!(s.on_snapshot(&cache.current()).is_empty(), "and only once");
    }

    #[test]
    fn named_subscription_filters_and_name_change_is_answered() {
        let cache = cache_with(&["a"], "x");
        let mut s = Stream::new(ADS_TYPES);
        let out = s.on_request(req(type_url::EXTENSION, "", "", &["other"]), &cache.current());
        assert_eq!(out.responses[0].resources.len(), 0);
        let r = out.responses[0].clone();
        let out = s.on_request(req(type_url::EXTENSION, &r.version_info, &r.nonce, &["aqueduct"]), &cache.current());
        assert_eq!(out.responses[0].resources.len(), 1);
        assert_ne!(out.responses[0].nonce, r.nonce, "fresh nonce");
    }

    #[test]
    fn stale_nonce_ignored_and_nack_recorded() {
        let cache = cache_with(&["a"], "x");
        let mut s = Stream::new(ADS_TYPES);
        let r = s.on_request(req(type_url::CLUSTER, "", "", &[]), &cache.current()).responses.remove(0);
        let out = s.on_request(req(type_url::CLUSTER, "", "bogus", &[]), &cache.current());
        assert!(out.responses.is_empty() && out.nack.is_none() && out.acked.is_none());
        let mut nack = req(type_url::CLUSTER, "", &r.nonce, &[]);
        nack.error_detail = Some(Status { code: 3, message: "bad cluster".into(), details: vec![] });
        let out = s.on_request(nack, &cache.current());
        assert!(out.responses.is_empty());
        let n = out.nack.unwrap();
        assert_eq!(n.message, "bad cluster");
        assert_eq!(n.rejected_version, r.version_info);
        // The NACKed version is not resent; the next change is.
        assert!(s.on_snapshot(&cache.current()).is_empty());
        publish(&cache, &["a", "b"], "x");
        let pushed = s.on_snapshot(&cache.current());
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0].resources.len(), 2);
    }

    #[test]
    fn snapshot_pushes_only_changed_subscribed_types() {
        let cache = cache_with(&["a"], "x");
        let mut s = Stream::new(ADS_TYPES);
        s.on_request(req(type_url::CLUSTER, "", "", &[]), &cache.current());
        assert!(s.on_snapshot(&cache.current()).is_empty());
        publish(&cache, &["a"], "x");
        assert!(s.on_snapshot(&cache.current()).is_empty(), "same content, same version");
        publish(&cache, &["b"], "x");
        assert_eq!(s.on_snapshot(&cache.current()).len(), 1);
    }

    #[test]
    fn reconnect_with_known_version_is_answered() {
        let cache = cache_with(&["a"], "x");
        let version = cache.current().version(type_url::CLUSTER).unwrap().to_string();
        let mut s = Stream::new(ADS_TYPES);
        let out = s.on_request(req(type_url::CLUSTER, &version, "", &[]), &cache.current());
        assert_eq!(out.responses.len(), 1);
    }

    #[test]
    fn ecds_stream_serves_only_extensions() {
        let cache = cache_with(&["a"], "x");
        let mut s = Stream::new(ECDS_TYPES);
        assert!(s.on_request(req(type_url::CLUSTER, "", "", &[]), &cache.current()).responses.is_empty());
        assert_eq!(s.on_request(req(type_url::EXTENSION, "", "", &["aqueduct"]), &cache.current()).responses.len(), 1);
    }
}
