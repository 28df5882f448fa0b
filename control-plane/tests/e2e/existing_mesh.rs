//! The example for a platform team's own Envoy (envoy/existing-mesh.yaml): validated, then run
//! with the filter fetched by ECDS from the control plane. And a filter with no policy fails closed.

use crate::harness::{expect_error, free_port, http, wasm_path, Harness, ADMIN_KEY, PROVIDER_KEY};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn envoy() -> String {
    std::env::var("ENVOY").unwrap_or_else(|_| format!("{}/../.venv/bin/envoy", env!("CARGO_MANIFEST_DIR")))
}

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../envoy/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn validate(config: &Path, base_id: u16) {
    let out = Command::new(envoy())
        .args(["--mode", "validate", "--base-id", &base_id.to_string(), "-c"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "validate failed: {}", String::from_utf8_lossy(&out.stderr));
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_envoy(config: &Path, base_id: u16, log: &Path) -> Killed {
    Killed(
        Command::new(envoy())
            .args(["--base-id", &base_id.to_string(), "--concurrency", "1", "-c"])
            .arg(config)
            .arg("--log-path")
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test]
async fn platform_envoy_gets_the_filter_by_ecds() {
    let h = Harness::start().await;
    let (listen, admin) = (free_port(), free_port());
    let config = example("existing-mesh.yaml")
        .replace("port_value: 10000", &format!("port_value: {listen}"))
        .replace("port_value: 9902", &format!("port_value: {admin}"))
        .replace("port_value: 18000", &format!("port_value: {}", h.xds.port()))
        .replace("port_value: 18001", &format!("port_value: {}", h.http.port()))
        .replace("port_value: 18090", &format!("port_value: {}", h.upstream.addr().port()));
    let path = h.dir.path().join("platform.yaml");
    std::fs::write(&path, config).unwrap();
    validate(&path, admin);

    let _envoy = run_envoy(&path, admin, &h.dir.path().join("platform-envoy.log"));
    let url = format!("http://127.0.0.1:{listen}/v1/chat/completions");
    let body = serde_json::json!({"model":"chat-alias","messages":[{"role":"user","content":"hi"}]});
    h.eventually(Duration::from_secs(20), || async {
        http().post(&url).bearer_auth(ADMIN_KEY).json(&body).send().await.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
    let up = h.upstream.requests().into_iter().last().unwrap();
    assert_eq!(up.json().unwrap()["model"], "provider-chat");
    assert_eq!(up.header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    assert_eq!(up.path, "/v1/chat/completions");
    // The bare form of the path reaches the provider under its base path too.
    let bare = format!("http://127.0.0.1:{listen}/chat/completions");
    let r = http().post(&bare).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.upstream.requests().into_iter().last().unwrap().path, "/v1/chat/completions");
    // The platform's own routes still work, and the filter guards the API.
    let r = http().get(format!("http://127.0.0.1:{listen}/elsewhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http().post(&url).json(&body).send().await.unwrap();
    expect_error(r, 401, "invalid_request_error").await;
    // A new key works and a revoked one stops, here too (key journal over aqueduct_control_plane).
    let (id, key) = h.create_token("platform", None).await;
    let ok = || async {
        http().post(&url).bearer_auth(&key).json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    };
    h.eventually(Duration::from_secs(2), || async { ok().await == 200 }).await;
    h.revoke_token(id).await;
    h.eventually(Duration::from_secs(2), || async { ok().await == 401 }).await;
}

#[tokio::test]
async fn filter_without_policy_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_port(), free_port());
    let config = example("no-policy.yaml")
        .replace("WASM_PATH", &wasm_path().display().to_string())
        .replace("port_value: 10001", &format!("port_value: {listen}"))
        .replace("port_value: 9903", &format!("port_value: {admin}"));
    let path = dir.path().join("no-policy.yaml");
    std::fs::write(&path, config).unwrap();
    validate(&path, admin);
    let _envoy = run_envoy(&path, admin, &dir.path().join("envoy.log"));
    let url = format!("http://127.0.0.1:{listen}/v1/chat/completions");
    let mut last = None;
    for _ in 0..200 {
        if let Ok(r) = http().post(&url).bearer_auth("sk-anything").json(&serde_json::json!({"model":"x"})).send().await
        {
            last = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = expect_error(last.expect("envoy up"), 503, "server_error").await;
    assert_eq!(e["code"], "policy_unavailable");
}
