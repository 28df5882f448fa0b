//! A config Envoy refuses is NACKed: counted, logged, and Envoy keeps serving the last good one.
//! The xDS server runs in-process here so the test can publish a policy the filter rejects.

use crate::harness::{default_models, free_port, http, wasm_path};
use aqueduct::config::models::ModelsConfig;
use aqueduct::gateway::{build_snapshot, PolicyInputs};
use aqueduct::tenancy::policy::{Hierarchy, KeyRow};
use aqueduct::xds::cache::SnapshotCache;
use aqueduct::xds::resources::{self, Layout};
use aqueduct::xds::server::{XdsMetrics, XdsServer};
use aqueduct::xds::type_url;
use aqueduct_policy::snapshot::Settings;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "sk-aq-nack-test";

#[tokio::test]
async fn refused_policy_is_nacked_and_the_last_good_one_stays() {
    let upstream = fake_upstream::FakeUpstream::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let models = ModelsConfig::parse(&default_models(&upstream.base_url()), &|_| None).unwrap();
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let layout = Layout {
        listen,
        control_plane_http: ([127, 0, 0, 1], free_port()).into(),
        wasm_path: wasm_path(),
        max_body_bytes: 1 << 20,
        limits: Default::default(),
    };
    let key = KeyRow {
        id: 1,
        key_hash: aqueduct::tokens::hash_hex(KEY),
        expires_at: None,
        user_id: 1,
        service_account_id: None,
        fields: Default::default(),
    };
    let mut hierarchy = Hierarchy::default();
    hierarchy.users.insert(1, (None, Default::default()));
    let inputs = PolicyInputs {
        keys: &[key],
        hierarchy: &hierarchy,
        default_excluded_models: &[],
        default_key_limits: [None; 3],
        terms_pending: &Default::default(),
        mcp_servers: &[],
        default_excluded_mcp_servers: &[],
    };
    let policy = build_snapshot(1, 0, &models, inputs, Settings::default());
    let cache = Arc::new(SnapshotCache::new());
    let publish = |policy: Vec<u8>| {
        cache.publish(BTreeMap::from([
            (type_url::CLUSTER, resources::clusters(&layout, &models)),
            (type_url::LISTENER, resources::listeners(&layout)),
            (type_url::ROUTE, resources::routes(&models)),
            (type_url::EXTENSION, vec![resources::filter_config(&layout, policy)]),
        ]))
    };
    publish(policy.encode().unwrap());

    let metrics = Arc::new(XdsMetrics::default());
    let server = XdsServer::new(cache.clone(), metrics.clone());
    let xds = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds_addr = xds.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.ads())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(xds)),
    );

    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = dir.path().join("envoy.yaml");
    std::fs::write(&config, aqueduct::envoy::bootstrap_yaml("nack-test", xds_addr, admin)).unwrap();
    let envoy = std::env::var("ENVOY").unwrap_or_else(|_| format!("{}/../.venv/bin/envoy", env!("CARGO_MANIFEST_DIR")));
    let mut child = std::process::Command::new(envoy)
        .args(["--base-id", &admin.port().to_string(), "--concurrency", "1", "-c"])
        .arg(&config)
        .arg("--log-path")
        .arg(dir.path().join("envoy.log"))
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut child);

    let models_ok = || async {
        http()
            .get(format!("http://{listen}/v1/models"))
            .bearer_auth(KEY)
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    };
    let mut up = false;
    for _ in 0..400 {
        if models_ok().await {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "gateway up: {}", std::fs::read_to_string(dir.path().join("envoy.log")).unwrap_or_default());
    assert_eq!(metrics.nacks.load(Ordering::Relaxed), 0);

    // A policy the filter's on_configure refuses (unknown field): Envoy must NACK it.
    publish(br#"{"version":2,"not_a_field":true}"#.to_vec());
    for _ in 0..200 {
        if metrics.nacks.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(metrics.nacks.load(Ordering::Relaxed), 1, "one NACK counted");
    assert!(models_ok().await, "the last good policy still serves");
}
