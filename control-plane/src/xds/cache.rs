//! The current xDS resources, versioned per type, with change notification.
//!
//! Each type's version only moves when its encoded resources change, so a token change pushes
//! the filter config alone and Envoy never re-applies an identical listener or route table.

use prost::Message;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// One named resource, already packed as `Any`.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Resource name (cluster name, listener name, ...).
    pub name: String,
    /// The packed resource.
    pub any: envoy_types::pb::google::protobuf::Any,
}

/// All resources of one type at one version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypeSnapshot {
    /// Version string sent as `version_info`.
    pub version: String,
    /// Resources in a stable order.
    pub resources: Vec<Resource>,
}

/// Every type's resources: what a stream serves.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Resources by type URL.
    pub types: BTreeMap<&'static str, TypeSnapshot>,
}

impl Snapshot {
    /// The version of a type, if we serve it.
    pub fn version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url).map(|t| t.version.as_str())
    }
}

/// Writer side: publishes new resource sets; readers subscribe with [`SnapshotCache::subscribe`].
#[derive(Debug)]
pub struct SnapshotCache {
    tx: watch::Sender<Arc<Snapshot>>,
    counter: AtomicU64,
}

impl Default for SnapshotCache {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotCache {
    /// An empty cache: streams that connect before the first publish get nothing until it comes.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(Arc::new(Snapshot::default()));
        Self { tx, counter: AtomicU64::new(0) }
    }

    /// Replaces the resources of the given types; each type whose content changed gets a new
    /// version. Returns the types that changed.
    pub fn publish(&self, update: BTreeMap<&'static str, Vec<Resource>>) -> Vec<&'static str> {
        let mut changed = Vec::new();
        self.tx.send_if_modified(|snap| {
            let mut next = (**snap).clone();
            for (type_url, resources) in update {
                let same = next.types.get(type_url).is_some_and(|t| same_resources(&t.resources, &resources));
                if !same {
                    let version = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
                    next.types.insert(type_url, TypeSnapshot { version: version.to_string(), resources });
                    changed.push(type_url);
                }
            }
            if changed.is_empty() {
                return false;
            }
            *snap = Arc::new(next);
            true
        });
        changed
    }

    /// The current resources.
    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// A receiver that wakes on every publish that changed something.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }
}

fn same_resources(a: &[Resource], b: &[Resource]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.any.type_url == y.any.type_url && x.any.value == y.any.value)
}

/// Packs a message as a named resource.
pub fn resource<M: Message + prost::Name>(name: impl Into<String>, msg: &M) -> Resource {
    Resource {
        name: name.into(),
        any: envoy_types::pb::google::protobuf::Any { type_url: M::type_url(), value: msg.encode_to_vec() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::type_url;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    fn cluster(name: &str) -> Resource {
        resource(name, &Cluster { name: name.into(), ..Default::default() })
    }

    #[test]
    fn versions_move_only_on_change() {
        let cache = SnapshotCache::new();
        let mut rx = cache.subscribe();
        let changed = cache.publish(BTreeMap::from([(type_url::CLUSTER, vec![cluster("a")])]));
        assert_eq!(changed, [type_url::CLUSTER]);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        let v1 = cache.current().version(type_url::CLUSTER).unwrap().to_string();
        assert!(cache.publish(BTreeMap::from([(type_url::CLUSTER, vec![cluster("a")])])).is_empty());
        assert!(!rx.has_changed().unwrap());
        cache.publish(BTreeMap::from([(type_url::CLUSTER, vec![cluster("a"), cluster("b")])]));
        let v2 = cache.current().version(type_url::CLUSTER).unwrap().to_string();
        assert_ne!(v1, v2);
        assert!(v2.parse::<u64>().unwrap() > v1.parse::<u64>().unwrap());
    }
}
