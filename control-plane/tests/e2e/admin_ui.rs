//! The admin UI over HTTP through the gateway (real control plane, Envoy and filter): local
//! login, session cookie flags, CSRF on forms and on API calls made with the cookie, a key
//! created in the UI and used with an OpenAI client, revocation, the pages an admin sees, the
//! cached assets, and logout; on SQLite and on PostgreSQL.

use crate::harness::*;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const PASSWORD: &str = "ui-test-password-1";

/// A cookie-keeping client that does not follow redirects (the test checks them).
struct Browser<'a> {
    h: &'a Harness,
    client: reqwest::Client,
    cookies: HashMap<String, String>,
}

struct Page {
    status: u16,
    location: String,
    set_cookies: Vec<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + 19..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl<'a> Browser<'a> {
    fn new(h: &'a Harness) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self { h, client, cookies: HashMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn send(&mut self, r: reqwest::RequestBuilder) -> Page {
        let r = if self.cookies.is_empty() { r } else { r.header("cookie", self.cookie_header()) };
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let set_cookies: Vec<String> =
            headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
        for c in &set_cookies {
            let (k, v) = c.split(';').next().unwrap().split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        let location = headers.get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        Page { status, location, set_cookies, headers, body: resp.text().await.unwrap() }
    }

    async fn get(&mut self, path: &str) -> Page {
        let r = self.client.get(self.h.url(path));
        self.send(r).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self.client.post(self.h.url(path)).form(form);
        self.send(r).await
    }

    async fn login(&mut self, email: &str, password: &str) -> Page {
        let p = self.get("/ui/login").await;
        assert_eq!(p.status, 200, "{}", p.body);
        let csrf = p.csrf();
        self.post("/ui/login", &[("csrf", &csrf), ("email", email), ("password", password)]).await
    }
}

fn secret_in(body: &str) -> String {
    let at = body.find("<code id=\"secret\">").unwrap_or_else(|| panic!("no secret in {body}"));
    let rest = &body[at + 18..];
    rest[..rest.find('<').unwrap()].to_string()
}

async fn ui_flow(h: &Harness) {
    let mut b = Browser::new(h);
    // Signed out: every page sends you to the login page; `/` leads to the UI.
    assert_eq!(b.get("/").await.location, "/ui/keys");
    let p = b.get("/ui/keys").await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/login"));

    // The login form is CSRF-protected even before a session exists.
    let p = b.post("/ui/login", &[("csrf", "forged"), ("email", "admin@localhost"), ("password", PASSWORD)]).await;
    assert_eq!(p.status, 403, "{}", p.body);
    let p = b.login("admin@localhost", "wrong password").await;
    assert_eq!(p.status, 401);
    assert!(p.body.contains("Wrong email or password."), "{}", p.body);
    assert!(!b.cookies.contains_key("aqueduct_session"));

    let p = b.login("ADMIN@localhost", PASSWORD).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/keys"), "{}", p.body);
    let session = p.set_cookies.iter().find(|c| c.starts_with("aqueduct_session=")).expect("session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax") && session.contains("Max-Age=43200"));
    assert!(!session.contains("Secure"), "http public URL: no Secure flag");

    // The keys page, with its stylesheet cached for a year.
    let p = b.get("/ui/keys").await;
    assert_eq!(p.status, 200);
    assert_eq!(p.headers["cache-control"], "no-store");
    assert_eq!(p.headers["x-frame-options"], "DENY");
    let csp = p.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    let csrf = p.csrf();
    let css = p.body.split("href=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    assert!(css.starts_with("/ui/static/app.") && css.ends_with(".css"), "{css}");
    let a = b.get(&css).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["cache-control"], "public, max-age=31536000, immutable");
    assert!(a.headers["content-type"].to_str().unwrap().starts_with("text/css"));
    assert!(a.body.contains("prefers-color-scheme: dark"));
    assert_eq!(b.get("/ui/static/app.0000.css").await.status, 404);

    // A form without the session's CSRF token changes nothing.
    let p = b.post("/ui/keys", &[("csrf", "forged"), ("name", "evil")]).await;
    assert_eq!(p.status, 403);
    // Bad input is reported, not stored.
    let p = b.post("/ui/keys", &[("csrf", &csrf), ("name", "k"), ("expires", "31/12/2030")]).await;
    assert_eq!(p.status, 303);
    let p = b.get("/ui/keys").await;
    assert!(p.body.contains("is not a date (YYYY-MM-DD)"), "{}", p.body);
    let p = b.post("/ui/keys", &[("csrf", &csrf), ("name", "k"), ("expires", "2001-01-01")]).await;
    assert_eq!(p.status, 303);
    assert!(b.get("/ui/keys").await.body.contains("must be in the future"));

    // Create: the key is shown once, with a copy button, and works with an OpenAI client.
    let p = b.post("/ui/keys", &[("csrf", &csrf), ("name", "laptop"), ("expires", "2099-12-31")]).await;
    assert_eq!(p.status, 201, "{}", p.body);
    assert!(p.body.contains("data-copy=\"#secret\""));
    let key = secret_in(&p.body);
    assert!(key.starts_with("sk-aq-"), "{key}");
    h.eventually(Duration::from_secs(10), || async { h.openai(&key).chat().create(chat("chat")).await.is_ok() }).await;
    let p = b.get("/ui/keys").await;
    assert!(p.body.contains("laptop") && p.body.contains("expires 2099-12-31 23:59 UTC"), "{}", p.body);
    assert!(p.body.contains("this key: no cap requests"), "effective limits shown: {}", p.body);
    assert!(!p.body.contains(&key), "the key is never shown again");

    // The management API accepts the session cookie; writes need the CSRF header.
    let api = |method: reqwest::Method, path: &str| b.client.request(method, h.url(&format!("/api/v1{path}")));
    let list = api(reqwest::Method::GET, "/tokens").header("cookie", b.cookie_header()).send().await.unwrap();
    assert_eq!(list.status(), 200);
    let list: serde_json::Value = list.json().await.unwrap();
    let laptop = list["data"].as_array().unwrap().iter().find(|k| k["name"] == "laptop").unwrap().clone();
    let id = laptop["id"].as_str().unwrap().to_string();
    let r = api(reqwest::Method::POST, "/tokens")
        .header("cookie", b.cookie_header())
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    let e = expect_error(r, 403, "permission_denied_error").await;
    assert_eq!(e["code"], "csrf_failed");
    let r = api(reqwest::Method::POST, "/tokens")
        .header("cookie", b.cookie_header())
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "via-api"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Rename, set limits through the policy page, regenerate, revoke.
    let p = b.post(&format!("/ui/keys/{id}/rename"), &[("csrf", &csrf), ("name", "laptop-2")]).await;
    assert_eq!(p.status, 303);
    assert!(b.get("/ui/keys").await.body.contains("Key renamed to laptop-2."));
    assert!(
        b.get("/ui/keys").await.body.contains(&format!("href=\"/ui/policy/token/{id}\"")),
        "limits link for admins"
    );
    let p = b.get(&format!("/ui/policy/token/{id}")).await;
    assert_eq!(p.status, 200, "{}", p.body);
    let mut form = vec![("csrf", csrf.as_str()), ("excluded_models", "embed"), ("merge_excluded_models", "true")];
    form.push(("key_requests_per_minute", "7"));
    assert_eq!(b.post(&format!("/ui/policy/token/{id}"), &form).await.status, 303);
    let p = b.get("/ui/keys").await;
    assert!(p.body.contains("this key: 7 requests") && p.body.contains("<td>embed</td>"), "{}", p.body);
    let p = b.post(&format!("/ui/policy/token/{id}"), &[("csrf", &csrf), ("key_requests_per_minute", "many")]).await;
    assert_eq!(p.status, 303);
    assert!(b.get(&format!("/ui/policy/token/{id}")).await.body.contains("must be a whole number"));

    let p = b.post(&format!("/ui/keys/{id}/regenerate"), &[("csrf", &csrf)]).await;
    assert_eq!(p.status, 201);
    let new_key = secret_in(&p.body);
    assert_ne!(new_key, key);
    let p = b.post(&format!("/ui/keys/{id}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(p.status, 303);
    h.eventually(Duration::from_secs(10), || async {
        http().get(h.url("/v1/models")).bearer_auth(&new_key).send().await.unwrap().status() == 401
    })
    .await;

    // The pages an admin sees all render, with the menu entries for admins.
    for (path, needle) in [
        ("/ui/teams", "New team"),
        ("/ui/org", "<h1>Org</h1>"),
        ("/ui/models", "<code>chat</code>"),
        ("/ui/orgs", "Create org"),
        ("/ui/users", "admin@localhost"),
    ] {
        let p = b.get(path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        assert!(p.body.contains(needle), "{path} lacks {needle}: {}", p.body);
        assert!(p.body.contains("href=\"/ui/orgs\"") && p.body.contains("aria-current=\"page\""), "{path}");
    }

    // Org, user and team through the forms, then a service account whose key is shown once.
    assert_eq!(b.post("/ui/orgs", &[("csrf", &csrf), ("name", "Acme")]).await.status, 303);
    assert!(b.get("/ui/orgs").await.body.contains("Org Acme created."));
    let orgs: serde_json::Value =
        http().get(h.url("/api/v1/orgs")).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    let org = orgs["data"][0]["id"].as_str().unwrap().to_string();
    let p =
        b.post("/ui/users", &[("csrf", &csrf), ("email", "Dev@Acme.test"), ("org_id", &org), ("role", "user")]).await;
    assert_eq!(p.status, 303);
    assert!(b.get("/ui/users").await.body.contains("User dev@acme.test created."));
    let p =
        b.post("/ui/teams", &[("csrf", &csrf), ("org_id", &org), ("name", "Platform"), ("description", "infra")]).await;
    assert_eq!(p.status, 303);
    let team = p.location.clone();
    assert!(team.starts_with("/ui/teams/"), "{team}");
    let p = b.post(&format!("{team}/add-member"), &[("csrf", &csrf), ("email", "nobody@acme.test")]).await;
    assert_eq!(p.status, 303);
    assert!(b.get(&team).await.body.contains("No user nobody@acme.test in this team&#39;s org."));
    b.post(&format!("{team}/add-member"), &[("csrf", &csrf), ("email", "dev@acme.test"), ("team_admin", "true")]).await;
    let p = b.get(&team).await;
    assert!(
        p.body.contains("dev@acme.test added.") && p.body.contains("Withdraw team-admin from dev@acme.test"),
        "{}",
        p.body
    );
    let p = b.post(&format!("{team}/create-sa"), &[("csrf", &csrf), ("name", "ci"), ("description", "")]).await;
    assert_eq!(p.status, 201, "{}", p.body);
    let sa_key = secret_in(&p.body);
    h.eventually(Duration::from_secs(10), || async {
        http().get(h.url("/v1/models")).bearer_auth(&sa_key).send().await.unwrap().status() == 200
    })
    .await;

    // The audit log has each action with who, via what, and before/after; never a secret.
    let p = b.get("/ui/audit").await;
    assert_eq!(p.status, 200);
    let rename = format!("<code>PATCH /api/v1/tokens/{id}</code>");
    assert!(p.body.contains(&rename), "{}", p.body);
    assert!(
        p.body.contains("&#34;name&#34;: &#34;laptop&#34;") && p.body.contains("&#34;name&#34;: &#34;laptop-2&#34;"),
        "before and after: {}",
        p.body
    );
    assert!(
        p.body.contains("<td>api</td><td><code>POST /api/v1/tokens</code>"),
        "API call with the cookie: {}",
        p.body
    );
    assert!(p.body.contains("<code>POST /api/v1/teams/") && p.body.contains("/service-accounts</code>"));
    assert!(p.body.contains("<code>PUT /api/v1/teams/"), "membership change");
    assert!(p.body.contains("refused (400)"), "a refused action is logged too (expiry in the past)");
    for secret in [&key, &new_key, &sa_key] {
        assert!(!p.body.contains(secret.as_str()), "a key in the audit log");
    }
    let r = http()
        .post(h.url("/api/v1/orgs"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "Audited"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let p = b.get("/ui/audit").await;
    assert!(
        // The entry names the key the action was made with (the bootstrap admin's first key).
        p.body.contains(
            "<td>admin@localhost</td><td>api (key 1)</td><td><code>POST /api/v1/orgs</code></td><td>done</td>"
        ),
        "{}",
        p.body
    );
    assert!(p.body.contains("&#34;name&#34;: &#34;Audited&#34;"));

    // Logout ends the session for pages and for the API.
    let old = b.cookie_header();
    let p = b.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/login"));
    assert!(p.set_cookies.iter().any(|c| c.starts_with("aqueduct_session=;") && c.contains("Max-Age=0")));
    let r = http().get(h.url("/api/v1/tokens")).header("cookie", old).send().await.unwrap();
    let e = expect_error(r, 401, "invalid_request_error").await;
    assert_eq!(e["code"], "invalid_session");
    assert_eq!(b.get("/ui/keys").await.location, "/ui/login");
}

fn chat(model: &str) -> async_openai::types::CreateChatCompletionRequest {
    async_openai::types::CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages(vec![async_openai::types::ChatCompletionRequestUserMessageArgs::default()
            .content("hello")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

#[tokio::test]
async fn admin_ui_local_login_keys_and_pages_sqlite() {
    let h = Harness::start_env(&[("AQUEDUCT_ADMIN_PASSWORD", PASSWORD)]).await;
    ui_flow(&h).await;
}

#[tokio::test]
async fn admin_ui_local_login_keys_and_pages_postgres() {
    let h = Harness::start_pg(&[("AQUEDUCT_ADMIN_PASSWORD", PASSWORD)]).await;
    ui_flow(&h).await;
}

#[tokio::test]
async fn admin_password_is_generated_and_printed_once() {
    let mut h = Harness::start().await;
    let log = std::fs::read_to_string(h.dir.path().join("cp-1.log")).unwrap();
    let line = log.lines().find(|l| l.starts_with("Admin UI password for admin@localhost")).expect("password printed");
    let password = line.rsplit(' ').next().unwrap().to_string();
    let mut b = Browser::new(&h);
    assert_eq!(b.login("admin@localhost", &password).await.status, 303);
    // A restart keeps the password and does not print it again.
    h.stop_cp();
    h.start_cp();
    h.wait_ready().await;
    h.eventually(Duration::from_secs(10), || async {
        http().get(h.url("/ui/login")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let log = std::fs::read_to_string(h.dir.path().join("cp-2.log")).unwrap();
    assert!(!log.contains("Admin UI password"), "{log}");
    let mut b = Browser::new(&h);
    assert_eq!(b.login("admin@localhost", &password).await.status, 303);
}

#[tokio::test]
async fn bootstrap_admin_email_is_configurable() {
    let h =
        Harness::start_env(&[("AQUEDUCT_ADMIN_PASSWORD", PASSWORD), ("AQUEDUCT_ADMIN_EMAIL", "Ops@Example.com")]).await;
    let mut b = Browser::new(&h);
    assert_eq!(b.login("admin@localhost", PASSWORD).await.status, 401, "no local login for the default email");
    let p = b.login("ops@example.com", PASSWORD).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/keys"));
    let p = b.get("/ui/keys").await;
    assert!(p.body.contains("ops@example.com <span class=\"tag\">admin</span>"), "{}", p.body);
    // The configured admin owns the bootstrap key.
    let me: serde_json::Value =
        http().get(h.url("/api/v1/users")).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["data"][0]["email"], "ops@example.com", "{me}");
}

/// An admin-API POST answering JSON.
async fn admin_post(h: &Harness, path: &str, body: serde_json::Value) -> serde_json::Value {
    let r = http().post(h.url(path)).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// A user of `org` with `role`; returns their id.
async fn make_user(h: &Harness, org: &str, email: &str, role: &str) -> String {
    let u = admin_post(h, "/api/v1/users", json!({"email": email, "org_id": org, "role": role})).await;
    u["id"].as_str().unwrap().to_string()
}

/// Signs `b` in as `user_id`. Only the bootstrap admin has a password (others sign in with
/// OIDC, which the browser test drives), so the session is made the way the login makes it.
async fn sign_in_as(h: &Harness, b: &mut Browser<'_>, user_id: &str) {
    let db = aqueduct::db::Db::open(None, h.dir.path()).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let cookie = aqueduct::auth::session::create(&db, user_id.parse().unwrap(), now, 3_600).await.unwrap();
    b.cookies.insert("aqueduct_session".to_string(), cookie);
}

/// The `href` of the first link whose URL contains `needle`, unescaped (askama writes `&` as `&#38;`).
fn link_with(body: &str, needle: &str) -> String {
    body.split("href=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().replace("&#38;", "&"))
        .find(|h| h.contains(needle))
        .unwrap_or_else(|| panic!("no link with {needle} in {body}"))
}

#[tokio::test]
async fn admin_ui_usage_page_shows_each_role_its_own_traffic() {
    let h = Harness::start_env(&[("AQUEDUCT_ADMIN_PASSWORD", PASSWORD)]).await;
    let org = admin_post(&h, "/api/v1/orgs", json!({"name": "acme"})).await["id"].as_str().unwrap().to_string();
    let ann = make_user(&h, &org, "ann@acme.test", "user").await;
    let bob = make_user(&h, &org, "bob@acme.test", "user").await;
    let boss = make_user(&h, &org, "boss@acme.test", "org-admin").await;
    let idle = make_user(&h, &org, "idle@acme.test", "user").await;
    let key = |user: String, name: &'static str| {
        let h = &h;
        async move {
            let k = admin_post(h, "/api/v1/tokens", json!({"name": name, "user_id": user})).await;
            k["key"].as_str().unwrap().to_string()
        }
    };
    let (ka, kb) = (key(ann.clone(), "ann-laptop").await, key(bob.clone(), "bob-laptop").await);
    h.eventually(Duration::from_secs(10), || async {
        http().get(h.url("/v1/models")).bearer_auth(&kb).send().await.unwrap().status() == 200
    })
    .await;
    let chat_as = |key: &str, end_user: &str| {
        http().post(h.url("/v1/chat/completions")).bearer_auth(key).json(&json!({
            "model": "chat", "user": end_user, "messages": [{"role": "user", "content": "a b c"}]
        }))
    };
    for (k, end_user) in [(&ka, "ann-end"), (&ka, "ann-end"), (&kb, "bob-end")] {
        assert_eq!(chat_as(k, end_user).send().await.unwrap().status(), 200);
    }
    h.eventually(Duration::from_secs(10), || async {
        let v: serde_json::Value = http()
            .get(h.url("/api/v1/usage?group_by=end_user&from=2000-01-01T00:00:00Z"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["end_user"] == "ann-end" || g["end_user"] == "bob-end")
            .count()
            == 2
    })
    .await;

    // Each user sees their own keys, end users and charts, and nothing of the other's.
    for (user, mine, theirs) in [(&ann, "ann", "bob"), (&bob, "bob", "ann")] {
        let mut b = Browser::new(&h);
        sign_in_as(&h, &mut b, user).await;
        let p = b.get("/ui/usage?range=1h").await;
        assert_eq!(p.status, 200, "{}", p.body);
        for needle in [format!("{mine}-end"), format!("{mine}-laptop"), format!("{mine}@acme.test")] {
            assert!(p.body.contains(&needle), "{mine} lacks {needle}: {}", p.body);
        }
        assert!(!p.body.contains(&format!("{theirs}-end")) && !p.body.contains(&format!("{theirs}-laptop")));
        assert!(p.body.contains("<svg class=\"chart\"") && p.body.contains("<title id=\"chart-requests-t\">"));
        assert!(p.body.contains("<polyline class=\"line s0\""), "requests drawn: {}", p.body);
        assert!(p.body.contains("<rect class=\"bar\""), "models drawn");
        assert!(p.body.contains("href=\"/ui/usage\" aria-current=\"page\""), "menu entry");
        assert!(!p.body.contains("style="), "no inline styles under the CSP");

        // The CSV download is the usage API, reached with the session cookie.
        let csv = link_with(&p.body, "group_by=end_user");
        assert!(csv.starts_with("/api/v1/usage?") && csv.contains("format=csv"), "{csv}");
        let r = b.get(&csv).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/csv"), "{:?} {}", r.headers, r.body);
        assert!(r.body.starts_with("end_user,requests,"), "{}", r.body);
        assert!(r.body.contains(&format!("{mine}-end,")) && !r.body.contains(&format!("{theirs}-end")), "{}", r.body);
        let anonymous = http().get(h.url(&csv)).send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
    }
    let mut b = Browser::new(&h);
    sign_in_as(&h, &mut b, &ann).await;
    let p = b.get("/ui/usage?range=1h").await;
    assert!(p.body.contains("<th scope=\"row\">ann-end</th><td>2</td>"), "{}", p.body);

    // The org-admin sees the org; the admin sees everything.
    let mut b = Browser::new(&h);
    sign_in_as(&h, &mut b, &boss).await;
    let p = b.get("/ui/usage?range=1d").await;
    assert!(p.body.contains("ann-end") && p.body.contains("bob-end"), "{}", p.body);
    let mut b = Browser::new(&h);
    assert_eq!(b.login("admin@localhost", PASSWORD).await.status, 303);
    for range in ["1h", "1d", "1w", "30d", "bogus"] {
        let p = b.get(&format!("/ui/usage?range={range}")).await;
        assert_eq!(p.status, 200, "{range}: {}", p.body);
        assert!(p.body.contains("ann-end") && p.body.contains("bob-end") && p.body.contains("<svg"), "{range}");
    }
    assert!(b.get("/ui/usage?range=30d").await.body.contains("<a href=\"/ui/usage?range=30d\" aria-current=\"true\">"));

    // No traffic: a clear empty state and no empty charts.
    let mut b = Browser::new(&h);
    sign_in_as(&h, &mut b, &idle).await;
    let p = b.get("/ui/usage").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("No traffic in this range yet") && !p.body.contains("<svg"), "{}", p.body);
}

#[tokio::test]
async fn admin_ui_mcp_page_lists_the_servers_a_user_may_use() {
    let servers = json!({"mcpServers": {
        "docs": {"type": "streamable-http", "url": "http://127.0.0.1:1/upstream-mcp", "description": "Search <the> docs",
                 "tags": ["docs", "read-only"]},
        "payroll": {"type": "streamable-http", "url": "http://127.0.0.1:1/upstream-mcp", "description": "Salaries"},
    }});
    let h = Harness::start_mcp(&servers.to_string(), &[("AQUEDUCT_ADMIN_PASSWORD", PASSWORD)]).await;
    let org = admin_post(&h, "/api/v1/orgs", json!({"name": "acme"})).await["id"].as_str().unwrap().to_string();
    let dev = make_user(&h, &org, "dev@acme.test", "user").await;
    let r = http()
        .patch(h.url(&format!("/api/v1/users/{dev}")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"excluded_mcp_servers": ["payroll"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The admin may use both; each with its URL and a copy button, and the aggregated URL.
    let mut b = Browser::new(&h);
    assert_eq!(b.login("admin@localhost", PASSWORD).await.status, 303);
    let p = b.get("/ui/mcp").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("<h2>docs</h2>") && p.body.contains("<h2>payroll</h2>"), "{}", p.body);
    assert!(p.body.contains("Search &#60;the&#62; docs"), "{}", p.body);
    assert!(p.body.contains("<span class=\"tag\">read-only</span>"), "{}", p.body);
    assert!(p.body.contains("/mcp-servers/docs/mcp</code>") && p.body.contains("/mcp-servers/payroll/mcp</code>"));
    assert!(p.body.contains("<code id=\"url-all\">http://") && p.body.contains("data-copy=\"#url-all\""));
    assert!(p.body.contains("href=\"/ui/mcp\" aria-current=\"page\""));
    assert!(!p.body.contains("upstream-mcp"), "upstream URLs are not shown");

    // The user's exclusion hides payroll from their page.
    let mut b = Browser::new(&h);
    sign_in_as(&h, &mut b, &dev).await;
    let p = b.get("/ui/mcp").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("<h2>docs</h2>") && !p.body.contains("payroll"), "{}", p.body);
    assert!(p.body.contains("1 more configured server is excluded for you"), "{}", p.body);
}
