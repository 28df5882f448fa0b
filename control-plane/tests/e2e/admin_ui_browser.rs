//! The admin UI in a real browser: Debian's Chromium driven by `playwright-core`
//! (`admin-ui/tests/browser.mjs`), signing in through a real OpenID provider (`oidc-provider`,
//! `admin-ui/tests/oidc-provider.mjs`) to the real control plane behind Envoy. The browser
//! creates keys, makes traffic and reads it on the usage page; this side then uses them with an OpenAI client. Terms of Service are required
//! here: publishing a version blocks users' keys (403) until they accept it in the UI. Screenshots of each page land
//! in `target/admin-ui-screenshots/`. `make test` installs Chromium and the npm packages.

use crate::harness::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped, so a failing test leaves nothing behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../admin-ui/tests")
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

#[tokio::test]
async fn admin_ui_in_chromium_with_oidc_login() {
    let dir = tests_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists() && dir.join("node_modules/oidc-provider").exists(),
        "npm packages missing: run `make deps-browser` (or `npm ci` in admin-ui/tests)"
    );
    assert!(std::path::Path::new(&chromium()).exists(), "no Chromium: run `make deps-browser` or set CHROMIUM");

    let idp_port = free_port();
    let issuer = format!("http://127.0.0.1:{idp_port}");
    // Two MCP servers for the MCP page (listed only; nothing connects to them here).
    let mcp = serde_json::json!({"mcpServers": {
        "docs": {"type": "streamable-http", "url": "http://127.0.0.1:1/mcp", "description": "Search the docs",
                 "tags": ["docs", "read-only"]},
        "tickets": {"type": "streamable-http", "url": "http://127.0.0.1:1/mcp", "description": "The ticket tracker"},
    }});
    let h = Harness::start_mcp(
        &mcp.to_string(),
        &[
            ("AQUEDUCT_OIDC_ISSUER", issuer.as_str()),
            ("AQUEDUCT_OIDC_CLIENT_ID", "aqueduct"),
            ("AQUEDUCT_OIDC_CLIENT_SECRET", "aqueduct-test-secret"),
            ("AQUEDUCT_OIDC_SCOPES", "openid email groups"),
            ("AQUEDUCT_OIDC_GROUP_ORGS", "acme=Acme"),
            ("AQUEDUCT_OIDC_ADMIN_GROUP", "gw-admins"),
            ("AQUEDUCT_OIDC_TEAM_SYNC", "true"),
            ("AQUEDUCT_TERMS_REQUIRED", "true"),
        ],
    )
    .await;
    let redirect = format!("http://{}/ui/auth/callback", h.listen);
    let idp_log = std::fs::File::create(h.dir.path().join("oidc-provider.log")).unwrap();
    let _idp = Proc(
        Command::new("node")
            .arg(dir.join("oidc-provider.mjs"))
            .args([idp_port.to_string(), redirect])
            .stdin(Stdio::null())
            .stdout(idp_log.try_clone().unwrap())
            .stderr(idp_log)
            .spawn()
            .expect("start oidc-provider (is node installed?)"),
    );
    h.eventually(Duration::from_secs(20), || async {
        http().get(format!("{issuer}/.well-known/openid-configuration")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/admin-ui-screenshots");
    let out_path = h.dir.path().join("browser.out");
    let err_path = h.dir.path().join("browser.err");
    let mut browser = Proc(
        Command::new("node")
            .arg(dir.join("browser.mjs"))
            .env("GATEWAY", format!("http://{}", h.listen))
            .env("SCREENSHOTS", &shots)
            .env("CHROMIUM", chromium())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("start node"),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = browser.0.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(240) {
            h.dump_logs();
            panic!("browser flows did not finish in 240 s: {}", std::fs::read_to_string(&err_path).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !status.success() {
        h.dump_logs();
        eprintln!(
            "--- oidc-provider ---\n{}",
            std::fs::read_to_string(h.dir.path().join("oidc-provider.log")).unwrap_or_default()
        );
        panic!("browser flows failed ({status}):\n{out}\n{}", std::fs::read_to_string(&err_path).unwrap_or_default());
    }
    let result: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {out}"));

    // The keys made in the browser work with an OpenAI client: the user's own, and the service
    // account's (regenerated, so only the second secret).
    for k in ["alice_key", "sa_key"] {
        let key = result[k].as_str().unwrap().to_string();
        h.eventually(Duration::from_secs(10), || async { h.openai(&key).chat().create(chat_request()).await.is_ok() })
            .await;
    }
    // Admins are exempt from the terms: the bootstrap admin's key never stopped working.
    let r = http().get(h.url("/v1/models")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for page in [
        "login",
        "keys",
        "key-created",
        "teams",
        "team-detail-admin",
        "team-detail-team-admin",
        "org",
        "models",
        "orgs",
        "users",
        "limits",
        "refused-team-action",
        "refused-users-page",
        "keys-375px",
        "team-375px",
        "terms",
        "terms-versions",
        "usage",
        "usage-375px",
        "usage-dark",
        "mcp",
        "mcp-375px",
    ] {
        let p = shots.join(format!("{page}.png"));
        assert!(std::fs::metadata(&p).is_ok_and(|m| m.len() > 1000), "screenshot {}", p.display());
    }
}

fn chat_request() -> async_openai::types::CreateChatCompletionRequest {
    async_openai::types::CreateChatCompletionRequestArgs::default()
        .model("chat")
        .messages(vec![async_openai::types::ChatCompletionRequestUserMessageArgs::default()
            .content("hello from the browser's key")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}
