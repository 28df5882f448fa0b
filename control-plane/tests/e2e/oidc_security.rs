//! Sign-in security against the real control plane behind Envoy and a real OpenID provider
//! (`oidc-provider`, `admin-ui/tests/oidc-provider.mjs`), driven over HTTP by a cookie-keeping
//! client: keys planted before a promotion, unverified emails and subject binding, org changes,
//! login CSRF on the callback, throttling of the local login and its effect on other requests,
//! and log lines forged through the email. On SQLite and PostgreSQL where the store is involved.

use crate::harness::*;
use aqueduct::db::Db;
use aqueduct::tenancy::store::{self as ts, Sql, Val};
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "oidc-security-password-1";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The gateway with OIDC login against a running provider.
struct Setup {
    h: Harness,
    issuer: String,
    _idp: Proc,
}

impl std::ops::Deref for Setup {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

async fn setup(pg: bool) -> Setup {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../admin-ui/tests");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "npm packages missing: run `make deps-browser` (or `npm ci` in admin-ui/tests)"
    );
    let idp_port = free_port();
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let env = [
        ("AQUEDUCT_OIDC_ISSUER", issuer.as_str()),
        ("AQUEDUCT_OIDC_CLIENT_ID", "aqueduct"),
        ("AQUEDUCT_OIDC_CLIENT_SECRET", "aqueduct-test-secret"),
        ("AQUEDUCT_OIDC_SCOPES", "openid email groups"),
        ("AQUEDUCT_OIDC_GROUP_ORGS", "acme=Acme,beta=Beta"),
        ("AQUEDUCT_OIDC_ADMIN_GROUP", "gw-admins"),
        ("AQUEDUCT_ADMIN_PASSWORD", PASSWORD),
    ];
    let h = if pg { Harness::start_pg(&env).await } else { Harness::start_env(&env).await };
    let redirect = format!("http://{}/ui/auth/callback", h.listen);
    let log = std::fs::File::create(h.dir.path().join("oidc-provider.log")).unwrap();
    let idp = Proc(
        Command::new("node")
            .arg(dir.join("oidc-provider.mjs"))
            .args([idp_port.to_string(), redirect])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start oidc-provider (is node installed?)"),
    );
    h.eventually(Duration::from_secs(20), || async {
        http().get(format!("{issuer}/.well-known/openid-configuration")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    Setup { h, issuer, _idp: idp }
}

/// Sets the claims the provider gives `login` (`verified`: `email_verified`, null for none),
/// then signs in as `login` in a new browser; returns the callback's answer.
async fn sign_in(s: &Setup, login: &str, email: &str, verified: serde_json::Value, groups: &[&str]) -> Page {
    let claims = json!({"login": login, "email": email, "email_verified": verified, "groups": groups});
    let r = http().post(format!("{}/test/claims", s.issuer)).json(&claims).send().await.unwrap();
    assert_eq!(r.status(), 204);
    Browser::new().oidc_login(s, login).await
}

/// An answer: status, `Location`, `Set-Cookie` lines, body.
#[derive(Debug)]
struct Page {
    status: u16,
    location: String,
    set_cookies: Vec<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

/// A browser: cookies per `host:port` (paths ignored), redirects not followed.
struct Browser {
    client: reqwest::Client,
    jar: HashMap<String, HashMap<String, String>>,
}

fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or_default().to_string()
}

/// `location` made absolute against `base`.
fn absolute(base: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_string()
    } else {
        format!("http://{}{location}", authority(base))
    }
}

impl Browser {
    fn new() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self { client, jar: HashMap::new() }
    }

    fn cookie(&self, url: &str, name: &str) -> Option<String> {
        self.jar.get(&authority(url)).and_then(|c| c.get(name)).cloned()
    }

    async fn send(&mut self, url: &str, r: reqwest::RequestBuilder) -> Page {
        let host = authority(url);
        let cookies = self.jar.entry(host).or_default();
        let r = if cookies.is_empty() {
            r
        } else {
            r.header("cookie", cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
        };
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let set_cookies: Vec<String> =
            headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
        for c in &set_cookies {
            let (k, v) = c.split(';').next().unwrap().split_once('=').unwrap();
            let expired = v.is_empty() || c.to_ascii_lowercase().contains("max-age=0");
            if expired {
                cookies.remove(k.trim());
            } else {
                cookies.insert(k.trim().to_string(), v.to_string());
            }
        }
        let location = headers.get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        Page { status, location, set_cookies, headers, body: resp.text().await.unwrap() }
    }

    async fn get(&mut self, url: &str) -> Page {
        let r = self.client.get(url);
        self.send(url, r).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let r = self.client.post(url).form(form);
        self.send(url, r).await
    }

    /// Starts an OIDC login at the gateway and goes through the provider's login (as `name`)
    /// and consent screens; returns the callback URL the provider sends the browser back to,
    /// not yet visited.
    async fn until_callback(&mut self, h: &Harness, name: &str) -> String {
        let start = self.get(&h.url("/ui/login/oidc")).await;
        assert_eq!(start.status, 303, "{start:?}");
        let mut url = start.location.clone();
        for _ in 0..20 {
            if url.starts_with(&h.url("/ui/auth/callback")) {
                return url;
            }
            let p = self.get(&url).await;
            if (300..400).contains(&p.status) {
                url = absolute(&url, &p.location);
                continue;
            }
            assert_eq!(p.status, 200, "{url}: {p:?}");
            let action = p.body.split("action=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or_default();
            let action = absolute(&url, &action.replace("&#x2F;", "/").replace("&#47;", "/"));
            let p = if p.body.contains("name=\"login\"") {
                self.post(&action, &[("prompt", "login"), ("login", name), ("password", "any")]).await
            } else {
                self.post(&action, &[("prompt", "consent")]).await
            };
            assert!((300..400).contains(&p.status), "{action}: {p:?}");
            url = absolute(&action, &p.location);
        }
        panic!("the provider never sent the browser back");
    }

    /// A whole OIDC login as `name`; returns the callback's answer.
    async fn oidc_login(&mut self, h: &Harness, name: &str) -> Page {
        let cb = self.until_callback(h, name).await;
        self.get(&cb).await
    }
}

/// The store the control plane uses, opened from the test.
async fn store(h: &Harness) -> Db {
    Db::open(h.database_url.as_deref(), h.dir.path()).await.unwrap()
}

async fn scalar(db: &Db, text: &str, args: &[Val]) -> Option<i64> {
    let mut q = Sql::new("");
    for (i, part) in text.split('?').enumerate() {
        if i > 0 {
            q.arg(args[i - 1].clone());
        }
        q.push(part);
    }
    ts::scalar(db, &q).await.unwrap()
}

#[derive(sqlx::FromRow, Debug, PartialEq)]
struct UserRow {
    id: i64,
    role: String,
    org: Option<String>,
}

async fn user(db: &Db, email: &str) -> Option<UserRow> {
    let mut q = Sql::new(
        "SELECT u.id, u.role, o.name AS org FROM users u LEFT JOIN orgs o ON o.id = u.org_id \
         WHERE u.deleted_at IS NULL AND u.email = ",
    );
    q.arg(Val::Text(email.into()));
    ts::fetch_opt(db, &q).await.unwrap()
}

/// A management-API call with `key`; asserts a success and returns the JSON answer.
async fn api(h: &Harness, key: &str, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let r = http().request(m, h.url(path)).bearer_auth(key).json(&body).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

async fn status_with(h: &Harness, key: &str, path: &str) -> u16 {
    http().get(h.url(path)).bearer_auth(key).send().await.unwrap().status().as_u16()
}

fn id(v: &serde_json::Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

// (4) A key an org-admin planted for someone's account does not become an admin key when that
// person signs in through the admin group; nor does a key minted before a later promotion.
async fn planted_keys_do_not_carry_promotions(s: &Setup) {
    let acme = id(&api(s, ADMIN_KEY, "POST", "/api/v1/orgs", json!({"name": "Acme"})).await);
    let mallory = api(
        s,
        ADMIN_KEY,
        "POST",
        "/api/v1/users",
        json!({"email": "mallory@acme.test", "org_id": acme, "role": "org-admin"}),
    )
    .await;
    let mallory_key = api(s, ADMIN_KEY, "POST", "/api/v1/tokens", json!({"name": "m", "user_id": id(&mallory)})).await
        ["key"]
        .as_str()
        .unwrap()
        .to_string();
    // The org-admin pre-creates the boss's account and mints a personal key for it.
    let boss = api(s, &mallory_key, "POST", "/api/v1/users", json!({"email": "boss@acme.test", "role": "user"})).await;
    let planted =
        api(s, &mallory_key, "POST", "/api/v1/tokens", json!({"name": "planted", "user_id": id(&boss)})).await;
    let planted_key = planted["key"].as_str().unwrap().to_string();
    s.eventually(Duration::from_secs(10), || async { status_with(s, &planted_key, "/v1/models").await == 200 }).await;

    // The boss signs in through the admin group: promoted, and the planted key is revoked.
    let p = sign_in(s, "boss", "boss@acme.test", json!(true), &["acme", "gw-admins"]).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/keys"), "{}", p.body);
    let db = store(s).await;
    assert_eq!(user(&db, "boss@acme.test").await.unwrap().role, "admin");
    let live = "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL AND user_id = ?";
    let boss_id = Val::Int(Some(id(&boss).parse().unwrap()));
    assert_eq!(scalar(&db, live, std::slice::from_ref(&boss_id)).await, Some(0), "the planted key is revoked");
    assert_eq!(status_with(s, &planted_key, "/api/v1/orgs").await, 401, "the planted key is no admin key");
    s.eventually(Duration::from_secs(10), || async { status_with(s, &planted_key, "/v1/models").await == 401 }).await;

    // Later promotions too: a plain user (bound, signed in before) gets a key, then the admin
    // group; the key minted before the promotion is revoked, a key minted after works.
    let p = sign_in(s, "carl", "carl@acme.test", json!(true), &["acme"]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let carl = user(&db, "carl@acme.test").await.unwrap();
    assert_eq!(carl.role, "user");
    let before =
        api(s, ADMIN_KEY, "POST", "/api/v1/tokens", json!({"name": "before", "user_id": carl.id.to_string()})).await;
    let p = sign_in(s, "carl", "carl@acme.test", json!(true), &["acme"]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let carl_id = Val::Int(Some(carl.id));
    assert_eq!(scalar(&db, live, std::slice::from_ref(&carl_id)).await, Some(1), "no promotion: the key stays");
    let p = sign_in(s, "carl", "carl@acme.test", json!(true), &["acme", "gw-admins"]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(user(&db, "carl@acme.test").await.unwrap().role, "admin");
    assert_eq!(scalar(&db, live, std::slice::from_ref(&carl_id)).await, Some(0), "promoted: the older key is revoked");
    let before_key = before["key"].as_str().unwrap().to_string();
    assert_eq!(status_with(s, &before_key, "/api/v1/orgs").await, 401);
    let after =
        api(s, ADMIN_KEY, "POST", "/api/v1/tokens", json!({"name": "after", "user_id": carl.id.to_string()})).await;
    let after_key = after["key"].as_str().unwrap().to_string();
    s.eventually(Duration::from_secs(10), || async { status_with(s, &after_key, "/api/v1/orgs").await == 200 }).await;
}

#[tokio::test]
async fn oidc_promotion_revokes_planted_keys_sqlite() {
    planted_keys_do_not_carry_promotions(&setup(false).await).await;
}

#[tokio::test]
async fn oidc_promotion_revokes_planted_keys_postgres() {
    planted_keys_do_not_carry_promotions(&setup(true).await).await;
}

// (5) Unverified emails are refused; accounts are bound to the provider's subject.
async fn emails_must_be_verified_and_accounts_bound(s: &Setup) {
    let db = store(s).await;
    let admin_before = user(&db, "admin@localhost").await.unwrap();
    assert_eq!(admin_before.role, "admin");
    for (name, verified) in [("evil", json!(false)), ("evil2", serde_json::Value::Null)] {
        let p = sign_in(s, name, "admin@localhost", verified, &["acme"]).await;
        assert_eq!(p.status, 401, "{name}: {}", p.body);
        assert!(p.body.contains("verified"), "{name}: {}", p.body);
        assert!(!p.set_cookies.iter().any(|c| c.starts_with("aqueduct_session=") && !c.contains("Max-Age=0")));
    }
    assert_eq!(user(&db, "admin@localhost").await.unwrap(), admin_before, "the bootstrap admin is untouched");
    assert_eq!(status_with(s, ADMIN_KEY, "/api/v1/orgs").await, 200);

    // First sign-in binds the account to its subject; another subject with the same email is
    // refused, the bound one signs in again.
    let p = sign_in(s, "s1", "dana@acme.test", json!(true), &["acme"]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let dana = user(&db, "dana@acme.test").await.unwrap();
    let p = sign_in(s, "s2", "dana@acme.test", json!(true), &["acme", "gw-admins"]).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("another single sign-on identity"), "{}", p.body);
    assert_eq!(user(&db, "dana@acme.test").await.unwrap(), dana, "not taken over, not promoted");
    let p = sign_in(s, "s1", "dana@acme.test", json!(true), &["acme"]).await;
    assert_eq!(p.status, 303, "{}", p.body);

    // A verified email adopts the bootstrap admin once; then it is bound like any account.
    let p = sign_in(s, "ops", "admin@localhost", json!(true), &["acme", "gw-admins"]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let p = sign_in(s, "evil", "admin@localhost", json!(true), &["acme"]).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert_eq!(user(&db, "admin@localhost").await.unwrap().role, "admin", "not demoted by another subject");
    // The bootstrap admin has a local password: its key was its own, and stays.
    assert_eq!(status_with(s, ADMIN_KEY, "/api/v1/orgs").await, 200);
}

#[tokio::test]
async fn oidc_refuses_unverified_email_and_binds_subject_sqlite() {
    emails_must_be_verified_and_accounts_bound(&setup(false).await).await;
}

#[tokio::test]
async fn oidc_refuses_unverified_email_and_binds_subject_postgres() {
    emails_must_be_verified_and_accounts_bound(&setup(true).await).await;
}

// (6) Moving org at sign-in resets the role and leaves the old org's teams.
async fn org_change_resets_role_and_teams(s: &Setup) {
    let p = sign_in(s, "erin", "erin@acme.test", json!(true), &["acme"]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let db = store(s).await;
    let erin = user(&db, "erin@acme.test").await.unwrap();
    assert_eq!(erin.org.as_deref(), Some("Acme"));
    api(s, ADMIN_KEY, "PATCH", &format!("/api/v1/users/{}", erin.id), json!({"role": "org-admin"})).await;
    let acme = scalar(&db, "SELECT id FROM orgs WHERE name = ?", &[Val::Text("Acme".into())]).await.unwrap();
    let team =
        id(&api(s, ADMIN_KEY, "POST", "/api/v1/teams", json!({"org_id": acme.to_string(), "name": "Platform"})).await);
    api(s, ADMIN_KEY, "PUT", &format!("/api/v1/teams/{team}/members/{}", erin.id), json!({"team_admin": true})).await;
    // Same org: the hand-set org-admin stays.
    let p = sign_in(s, "erin", "erin@acme.test", json!(true), &["acme"]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(user(&db, "erin@acme.test").await.unwrap().role, "org-admin");

    let p = sign_in(s, "erin", "erin@acme.test", json!(true), &["beta"]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let moved = user(&db, "erin@acme.test").await.unwrap();
    assert_eq!((moved.role.as_str(), moved.org.as_deref()), ("user", Some("Beta")));
    let members = "SELECT COUNT(*) FROM team_members WHERE user_id = ?";
    assert_eq!(scalar(&db, members, &[Val::Int(Some(erin.id))]).await, Some(0), "left the old org's teams");
}

#[tokio::test]
async fn oidc_org_change_resets_role_and_teams_sqlite() {
    org_change_resets_role_and_teams(&setup(false).await).await;
}

#[tokio::test]
async fn oidc_org_change_resets_role_and_teams_postgres() {
    org_change_resets_role_and_teams(&setup(true).await).await;
}

// (7) Login CSRF: the callback only finishes a login this browser started.
#[tokio::test]
async fn oidc_callback_requires_the_browser_that_started_the_login() {
    let s = setup(false).await;
    let mut attacker = Browser::new();
    let cb = attacker.until_callback(&s, "attacker").await;
    let bound = attacker.cookie(&s.url("/"), "aqueduct_oidc").expect("the login start set the binding cookie");
    assert!(cb.contains(&format!("state={bound}")), "{cb}");

    // The victim's browser, without the cookie, and with a cookie of its own login.
    let mut victim = Browser::new();
    let p = victim.get(&cb).await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(p.body.contains("not started in this browser"), "{}", p.body);
    assert!(!p.set_cookies.iter().any(|c| c.starts_with("aqueduct_session=") && !c.contains("Max-Age=0")));
    let own = victim.get(&s.url("/ui/login/oidc")).await;
    let set = own.set_cookies.iter().find(|c| c.starts_with("aqueduct_oidc=")).expect("binding cookie");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/ui/auth", "Max-Age=600"] {
        assert!(set.contains(flag), "{set}");
    }
    let p = victim.get(&cb).await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(p.set_cookies.iter().any(|c| c.starts_with("aqueduct_oidc=;") && c.contains("Max-Age=0")), "cleared");
    assert!(user(&store(&s).await, "attacker@acme.test").await.is_none(), "nobody signed in");

    // The browser that started it finishes it, once.
    let p = attacker.get(&cb).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/keys"), "{}", p.body);
    assert!(p.set_cookies.iter().any(|c| c.starts_with("aqueduct_oidc=;") && c.contains("Max-Age=0")), "cleared");
    assert!(attacker.cookie(&s.url("/"), "aqueduct_session").is_some());
}

/// The login form's CSRF field, from `GET /ui/login`.
async fn login_form(b: &mut Browser, h: &Harness) -> String {
    let p = b.get(&h.url("/ui/login")).await;
    assert_eq!(p.status, 200);
    let at = p.body.find("name=\"csrf\" value=\"").expect("csrf field");
    let rest = &p.body[at + 19..];
    rest[..rest.find('"').unwrap()].to_string()
}

async fn local_login(b: &mut Browser, h: &Harness, email: &str, password: &str) -> Page {
    let csrf = login_form(b, h).await;
    b.post(&h.url("/ui/login"), &[("csrf", &csrf), ("email", email), ("password", password)]).await
}

// (14) Failed local logins are throttled; hashing stays off the async runtime.
async fn local_login_is_throttled(h: &Harness) {
    let mut b = Browser::new();
    for i in 0..5 {
        let p = local_login(&mut b, h, "admin@localhost", "wrong-password").await;
        assert_eq!(p.status, 401, "attempt {}", i + 1);
    }
    let p = local_login(&mut b, h, "admin@localhost", "wrong-password").await;
    assert_eq!(p.status, 429, "{}", p.body);
    let retry: u64 = p.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Locked: even the right password waits.
    let p = local_login(&mut b, h, "admin@localhost", PASSWORD).await;
    assert_eq!(p.status, 429);
    tokio::time::sleep(Duration::from_secs(retry + 1)).await;
    let p = local_login(&mut b, h, "admin@localhost", PASSWORD).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/keys"), "{}", p.body);
}

#[tokio::test]
async fn local_login_is_throttled_sqlite() {
    let h = Harness::start_env(&[("AQUEDUCT_ADMIN_PASSWORD", PASSWORD)]).await;
    local_login_is_throttled(&h).await;
}

#[tokio::test]
async fn local_login_is_throttled_postgres() {
    let h = Harness::start_pg(&[("AQUEDUCT_ADMIN_PASSWORD", PASSWORD)]).await;
    local_login_is_throttled(&h).await;
}

#[tokio::test]
async fn other_requests_stay_fast_while_logins_hash() {
    let h = Harness::start_env(&[("AQUEDUCT_ADMIN_PASSWORD", PASSWORD)]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let logins = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Six clients signing in (correctly: successes are not throttled) as fast as they can.
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (stop, logins, url) = (stop.clone(), logins.clone(), h.url(""));
            tokio::spawn(async move {
                let mut b = Browser::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let csrf = {
                        let p = b.get(&format!("{url}/ui/login")).await;
                        let at = p.body.find("name=\"csrf\" value=\"").unwrap();
                        p.body[at + 19..].split('"').next().unwrap().to_string()
                    };
                    let p = b
                        .post(
                            &format!("{url}/ui/login"),
                            &[("csrf", &csrf), ("email", "admin@localhost"), ("password", PASSWORD)],
                        )
                        .await;
                    assert_eq!(p.status, 303);
                    logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = http();
    let mut times = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        let r = client.get(format!("http://{}/health", h.http)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        times.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    times.sort();
    let p50 = times[times.len() / 2];
    eprintln!(
        "health p50 {p50:?}, max {:?}, logins {}",
        times[times.len() - 1],
        logins.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(logins.load(std::sync::atomic::Ordering::Relaxed) >= 6, "the logins ran");
    assert!(p50 < Duration::from_millis(50), "p50 {p50:?} while logins hash: {times:?}");
}

// (20) An email with CR/LF cannot forge log lines.
#[tokio::test]
async fn login_email_cannot_forge_log_lines() {
    let h = Harness::start_env(&[("AQUEDUCT_ADMIN_PASSWORD", PASSWORD)]).await;
    let mut b = Browser::new();
    let forged = "x@y.test\n2026-01-01T00:00:00Z  INFO aqueduct: signed in (local) user=1 FORGED";
    let p = local_login(&mut b, &h, forged, "whatever").await;
    assert_eq!(p.status, 401);
    let log = std::fs::read_to_string(h.dir.path().join("cp-1.log")).unwrap();
    assert!(log.contains("local sign-in refused"), "{log}");
    // (The login lowercases emails, so the forged line would start `2026-01-01t…`.)
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01")), "a forged line: {log}");
    assert!(log.contains(r"x@y.test\n2026-01-01"), "escaped: {log}");
}
