//! Two control planes on one PostgreSQL, each feeding its own Envoy: a change made through
//! either reaches both Envoys within a second (LISTEN/NOTIFY, not the periodic resync).

use crate::harness::{default_models, http, Harness};
use std::time::{Duration, Instant};

async fn accepted(h: &Harness, key: &str) -> bool {
    http().get(h.url("/v1/models")).bearer_auth(key).send().await.map(|r| r.status() == 200).unwrap_or(false)
}

#[tokio::test]
async fn a_change_through_either_replica_reaches_both_envoys() {
    // An hour between resyncs: only the peer notification can carry the change in time.
    let slow = [("AQUEDUCT_RESYNC_SECS", "3600")];
    let a = Harness::start_pg(&slow).await;
    let env = slow.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let b = Harness::start_full(default_models, a.database_url.clone(), env).await;

    for (through, other) in [(&a, &b), (&b, &a)] {
        let start = Instant::now();
        let (_, key) = through.create_token("replicated", None).await;
        through.eventually(Duration::from_secs(1), || accepted(through, &key)).await;
        other.eventually(Duration::from_secs(1), || accepted(other, &key)).await;
        eprintln!("key created on one replica accepted by both Envoys in {:?}", start.elapsed());
    }
}
