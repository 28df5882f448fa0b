//! The generated role matrix: every management route (read from the router's own list,
//! `aqueduct::api::MANAGEMENT_ROUTES`, so a new route cannot be missed) × every actor (admin,
//! org-admin, team-admin, user, a service account's key, an org-admin of another org) × every
//! target role (admin, org-admin, team-admin, user), against the real control plane behind the
//! real Envoy. Each case runs on fresh targets, so a case that deletes or changes something
//! cannot decide the next one. The expected outcome comes from [`allowed`], the rules of
//! docs/tenancy.md written out again here, independent of the control plane's code.
//!
//! Also the escalations that motivated the model, step by step: a team-admin turning an
//! org-admin's service account into an admin key, an org-admin minting or regenerating an
//! admin's key, a service account's key minting keys for its owner, lifting an admin's
//! exclusions with a merge flag, removing a manager's expiry, and the audit log naming the key
//! and its maker.

use crate::harness::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    Admin,
    OrgAdmin,
    TeamAdmin,
    User,
    ServiceAccount,
    OtherOrg,
}

const ACTORS: [Actor; 6] =
    [Actor::Admin, Actor::OrgAdmin, Actor::TeamAdmin, Actor::User, Actor::ServiceAccount, Actor::OtherOrg];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Admin,
    OrgAdmin,
    TeamAdmin,
    User,
}

const TARGETS: [Target; 4] = [Target::Admin, Target::OrgAdmin, Target::TeamAdmin, Target::User];

impl Target {
    fn role(self) -> &'static str {
        match self {
            Target::Admin => "admin",
            Target::OrgAdmin => "org-admin",
            Target::TeamAdmin | Target::User => "user",
        }
    }
}

/// Whether `actor` may call `method` `route` on `target` (docs/tenancy.md, "Who may do what").
fn allowed(method: &str, route: &str, actor: Actor, target: Target) -> bool {
    use Actor as A;
    use Target as T;
    let lower_than_org_admin = matches!(target, T::User | T::TeamAdmin);
    if actor == A::ServiceAccount {
        // A service account's key acts as the account: its own usage, nothing else.
        return method == "GET" && route.starts_with("/api/v1/usage");
    }
    match (method, route) {
        // Lists show each caller what it may see; nobody is refused them.
        ("GET", "/api/v1/orgs" | "/api/v1/teams" | "/api/v1/users" | "/api/v1/tokens" | "/api/v1/mcp-servers") => true,
        ("GET", "/api/v1/usage" | "/api/v1/usage/requests") => true,
        ("GET", "/api/v1/mcp-servers/{name}") => true,
        ("GET", "/api/v1/status") => actor == A::Admin,
        ("POST", "/api/v1/orgs") | ("PATCH" | "DELETE", "/api/v1/orgs/{id}") => actor == A::Admin,
        ("POST", "/api/v1/mcp-servers") | ("PUT" | "DELETE", "/api/v1/mcp-servers/{name}") => actor == A::Admin,
        // Org A: everyone who belongs to it.
        ("GET", "/api/v1/orgs/{id}") => actor != A::OtherOrg,
        ("POST", "/api/v1/teams") | ("PATCH" | "DELETE", "/api/v1/teams/{id}") => {
            matches!(actor, A::Admin | A::OrgAdmin)
        }
        ("GET", "/api/v1/teams/{id}" | "/api/v1/teams/{id}/service-accounts" | "/api/v1/service-accounts/{id}") => {
            actor != A::OtherOrg
        }
        ("PUT" | "DELETE", "/api/v1/teams/{id}/members/{user_id}") => match actor {
            A::Admin => true,
            A::OrgAdmin => target != T::Admin,
            A::TeamAdmin => target == T::User,
            _ => false,
        },
        ("POST", "/api/v1/teams/{id}/service-accounts")
        | ("PATCH" | "DELETE", "/api/v1/service-accounts/{id}")
        | ("POST", "/api/v1/service-accounts/{id}/transfer") => matches!(actor, A::Admin | A::OrgAdmin | A::TeamAdmin),
        // Creating a user with the target's role: never above the actor's own.
        ("POST", "/api/v1/users") => match actor {
            A::Admin => true,
            A::OrgAdmin => target != T::Admin,
            _ => false,
        },
        // The target is in org A and a member of a team the team-admin administers.
        ("GET", "/api/v1/users/{id}") => matches!(actor, A::Admin | A::OrgAdmin | A::TeamAdmin),
        ("PATCH" | "DELETE", "/api/v1/users/{id}") => match actor {
            A::Admin => true,
            A::OrgAdmin => lower_than_org_admin,
            _ => false,
        },
        // The target's personal key.
        ("GET", "/api/v1/tokens/{id}") => matches!(actor, A::Admin | A::OrgAdmin),
        ("POST", "/api/v1/tokens")
        | ("PATCH" | "DELETE", "/api/v1/tokens/{id}")
        | ("POST", "/api/v1/tokens/{id}/regenerate") => match actor {
            A::Admin => true,
            A::OrgAdmin => lower_than_org_admin,
            _ => false,
        },
        _ => panic!("no rule for {method} {route}: add it to docs/tenancy.md and to this table"),
    }
}

/// Whether the route acts on a user (so each target role is a case of its own).
fn has_target(route: &str, method: &str) -> bool {
    route.contains("/users")
        || route.contains("{user_id}")
        || route.contains("/tokens")
        || route.contains("/service-accounts")
        || (route == "/api/v1/users" && method == "POST")
}

struct World {
    org_a: String,
    keys: Vec<(Actor, String)>,
    ta_id: String,
    u_id: String,
    seq: AtomicUsize,
}

async fn call(h: &Harness, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    h.call(key, method, path, body).await
}

async fn admin(h: &Harness, method: &str, path: &str, body: Value) -> Value {
    let (s, v) = call(h, ADMIN_KEY, method, path, Some(body.clone())).await;
    assert!((200..300).contains(&s), "setup {method} {path} {body} -> {s} {v}");
    v
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("string id in {v}")).to_string()
}

async fn user_with_key(h: &Harness, email: &str, org: &str, role: &str) -> (String, String) {
    let u = admin(h, "POST", "/api/v1/users", json!({"email": email, "org_id": org, "role": role})).await;
    let k = admin(h, "POST", "/api/v1/tokens", json!({"name": "k", "user_id": id(&u)})).await;
    (id(&u), k["key"].as_str().unwrap().to_string())
}

async fn world(h: &Harness) -> World {
    let org_a = id(&admin(h, "POST", "/api/v1/orgs", json!({"name": "A"})).await);
    let org_b = id(&admin(h, "POST", "/api/v1/orgs", json!({"name": "B"})).await);
    let (_, oa) = user_with_key(h, "oa@a.example", &org_a, "org-admin").await;
    let (ta_id, ta) = user_with_key(h, "ta@a.example", &org_a, "user").await;
    let (u_id, u) = user_with_key(h, "u@a.example", &org_a, "user").await;
    let (_, ob) = user_with_key(h, "ob@b.example", &org_b, "org-admin").await;
    let team = id(&admin(h, "POST", "/api/v1/teams", json!({"org_id": org_a, "name": "home"})).await);
    admin(h, "PUT", &format!("/api/v1/teams/{team}/members/{ta_id}"), json!({"team_admin": true})).await;
    let sa =
        admin(h, "POST", &format!("/api/v1/teams/{team}/service-accounts"), json!({"name": "bot", "user_id": ta_id}))
            .await;
    let sa_key = sa["key"].as_str().unwrap().to_string();
    admin(
        h,
        "POST",
        "/api/v1/mcp-servers",
        json!({"name": "matrix", "type": "streamable-http", "url": "http://127.0.0.1:9/mcp"}),
    )
    .await;
    let keys = vec![
        (Actor::Admin, ADMIN_KEY.to_string()),
        (Actor::OrgAdmin, oa),
        (Actor::TeamAdmin, ta),
        (Actor::User, u),
        (Actor::ServiceAccount, sa_key),
        (Actor::OtherOrg, ob),
    ];
    World { org_a, keys, ta_id, u_id, seq: AtomicUsize::new(0) }
}

/// Fresh targets for one case: a team of org A (the team-admin actor administers it, the user
/// actor is a member), the target user of `target`'s role in it, the target's personal key and
/// a service account the target owns.
struct Case {
    team: String,
    target: String,
    token: String,
    sa: String,
    org: String,
    n: usize,
}

async fn case(h: &Harness, w: &World, target: Target, needs: &str) -> Case {
    let n = w.seq.fetch_add(1, Ordering::Relaxed);
    let team = id(&admin(h, "POST", "/api/v1/teams", json!({"org_id": w.org_a, "name": format!("t{n}")})).await);
    admin(h, "PUT", &format!("/api/v1/teams/{team}/members/{}", w.ta_id), json!({"team_admin": true})).await;
    admin(h, "PUT", &format!("/api/v1/teams/{team}/members/{}", w.u_id), json!({})).await;
    let user = admin(
        h,
        "POST",
        "/api/v1/users",
        json!({"email": format!("target{n}@a.example"), "org_id": w.org_a, "role": target.role()}),
    )
    .await;
    let target_id = id(&user);
    admin(
        h,
        "PUT",
        &format!("/api/v1/teams/{team}/members/{target_id}"),
        json!({"team_admin": target == Target::TeamAdmin}),
    )
    .await;
    let token = id(&admin(h, "POST", "/api/v1/tokens", json!({"name": "t", "user_id": target_id})).await);
    // A service account only where the route needs one: it keeps its owner in the team.
    let sa = if needs.contains("/service-accounts/") {
        id(&admin(
            h,
            "POST",
            &format!("/api/v1/teams/{team}/service-accounts"),
            json!({"name": format!("sa{n}"), "user_id": target_id}),
        )
        .await)
    } else {
        String::new()
    };
    // An empty org only deleting an org needs.
    let org = if needs == "/api/v1/orgs/{id}" {
        id(&admin(h, "POST", "/api/v1/orgs", json!({"name": format!("empty{n}")})).await)
    } else {
        w.org_a.clone()
    };
    Case { team, target: target_id, token, sa, org, n }
}

fn request(method: &str, route: &str, w: &World, c: &Case, target: Target) -> (String, Option<Value>) {
    // Deleting an org needs an empty one; every other org route acts on org A.
    let org = if method == "DELETE" { &c.org } else { &w.org_a };
    let path = route
        .replace("/orgs/{id}", &format!("/orgs/{org}"))
        .replace("/teams/{id}", &format!("/teams/{}", c.team))
        .replace("{user_id}", &c.target)
        .replace("/users/{id}", &format!("/users/{}", c.target))
        .replace("/service-accounts/{id}", &format!("/service-accounts/{}", c.sa))
        .replace("/tokens/{id}", &format!("/tokens/{}", c.token))
        .replace("{name}", "matrix");
    let n = c.n;
    let body = match (method, route) {
        ("POST", "/api/v1/orgs") => Some(json!({"name": format!("new{n}")})),
        ("PATCH", "/api/v1/orgs/{id}") => Some(json!({"key_requests_per_minute": null})),
        ("POST", "/api/v1/teams") => Some(json!({"org_id": w.org_a, "name": format!("new{n}")})),
        ("PATCH", "/api/v1/teams/{id}") | ("PATCH", "/api/v1/service-accounts/{id}") => {
            Some(json!({"description": "changed"}))
        }
        ("PUT", "/api/v1/teams/{id}/members/{user_id}") => Some(json!({})),
        ("POST", "/api/v1/teams/{id}/service-accounts") => {
            Some(json!({"name": format!("new{n}"), "user_id": c.target}))
        }
        ("POST", "/api/v1/service-accounts/{id}/transfer") => Some(json!({"user_id": c.target})),
        ("POST", "/api/v1/users") => {
            Some(json!({"email": format!("new{n}@a.example"), "org_id": w.org_a, "role": target.role()}))
        }
        ("PATCH", "/api/v1/users/{id}") => Some(json!({"active": true})),
        ("POST", "/api/v1/tokens") => Some(json!({"name": "minted", "user_id": c.target})),
        ("PATCH", "/api/v1/tokens/{id}") => Some(json!({"name": "renamed"})),
        ("POST", "/api/v1/mcp-servers") => {
            Some(json!({"name": format!("new{n}"), "type": "streamable-http", "url": "http://127.0.0.1:9/mcp"}))
        }
        ("PUT", "/api/v1/mcp-servers/{name}") => {
            Some(json!({"type": "streamable-http", "url": "http://127.0.0.1:9/mcp"}))
        }
        _ => None,
    };
    (path, body)
}

async fn matrix(h: &Harness) {
    let w = world(h).await;
    let routes = aqueduct::api::MANAGEMENT_ROUTES;
    assert!(routes.len() >= 30, "the router lists its routes: {routes:?}");
    let mut failures = Vec::new();
    let mut cases = 0;
    // Writes last, so reads see the world first; deletes of the shared MCP server last of all.
    let mut ordered: Vec<&(&str, &str)> = routes.iter().collect();
    ordered.sort_by_key(|(m, r)| (*m != "GET", *m == "DELETE" && r.contains("mcp-servers")));
    for &&(method, route) in &ordered {
        let targets: &[Target] = if has_target(route, method) { &TARGETS } else { &TARGETS[3..] };
        for &target in targets {
            for (actor, key) in &w.keys {
                let c = case(h, &w, target, route).await;
                let (path, body) = request(method, route, &w, &c, target);
                let (status, v) = call(h, key, method, &path, body.clone()).await;
                cases += 1;
                let want = allowed(method, route, *actor, target);
                let ok = if want { (200..300).contains(&status) } else { status == 403 || status == 404 };
                if !ok {
                    failures.push(format!(
                        "{actor:?} {method} {route} on {target:?}: want {}, got {status} {v}",
                        if want { "2xx" } else { "403/404" }
                    ));
                }
                if !want && status >= 400 {
                    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "OpenAI error: {v}");
                }
                if method == "DELETE" && route.contains("mcp-servers") && (200..300).contains(&status) {
                    // Put the shared server back for the next actor.
                    admin(
                        h,
                        "POST",
                        "/api/v1/mcp-servers",
                        json!({"name": "matrix", "type": "streamable-http", "url": "http://127.0.0.1:9/mcp"}),
                    )
                    .await;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {cases} cases wrong:\n{}", failures.len(), failures.join("\n"));
    assert!(cases > 400, "{cases} cases");
}

#[tokio::test(flavor = "multi_thread")]
async fn role_matrix_every_route_actor_and_target_sqlite() {
    let h = Harness::start().await;
    matrix(&h).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn role_matrix_every_route_actor_and_target_postgres() {
    let h = Harness::start_pg(&[]).await;
    matrix(&h).await;
}

/// Items 1 and 13 of the security review: a team-admin adds an org-admin to its team (refused
/// now), or an org-admin adds itself... the service account's key, whoever owns it, has no
/// management rights and mints nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_account_key_never_acts_as_its_owner() {
    let h = Harness::start().await;
    let org = id(&admin(&h, "POST", "/api/v1/orgs", json!({"name": "A"})).await);
    let (oa_id, _) = user_with_key(&h, "oa@a.example", &org, "org-admin").await;
    let (ta_id, ta) = user_with_key(&h, "ta@a.example", &org, "user").await;
    let team = id(&admin(&h, "POST", "/api/v1/teams", json!({"org_id": org, "name": "t"})).await);
    admin(&h, "PUT", &format!("/api/v1/teams/{team}/members/{ta_id}"), json!({"team_admin": true})).await;
    // The team-admin may not add its org-admin to its team.
    let (s, _) = call(&h, &ta, "PUT", &format!("/api/v1/teams/{team}/members/{oa_id}"), Some(json!({}))).await;
    assert_eq!(s, 403);
    // An org-admin joins anyway (an admin adds them); the team-admin makes an account they own.
    admin(&h, "PUT", &format!("/api/v1/teams/{team}/members/{oa_id}"), json!({})).await;
    let (s, sa) = call(
        &h,
        &ta,
        "POST",
        &format!("/api/v1/teams/{team}/service-accounts"),
        Some(json!({"name": "bot", "user_id": oa_id})),
    )
    .await;
    assert_eq!(s, 201, "{sa}");
    let (s, regen) =
        call(&h, &ta, "POST", &format!("/api/v1/tokens/{}/regenerate", sa["token_id"].as_str().unwrap()), None).await;
    assert_eq!(s, 200, "{regen}");
    let key = regen["key"].as_str().unwrap();
    for (m, p, b) in [
        ("GET", "/api/v1/users".to_string(), None),
        (
            "POST",
            "/api/v1/users".to_string(),
            Some(json!({"email": "x@a.example", "org_id": org, "role": "org-admin"})),
        ),
        ("PATCH", format!("/api/v1/users/{ta_id}"), Some(json!({"role": "org-admin"}))),
        ("POST", "/api/v1/tokens".to_string(), Some(json!({"name": "personal"}))),
        ("POST", "/api/v1/orgs".to_string(), Some(json!({"name": "mine"}))),
        ("GET", "/api/v1/tokens".to_string(), None),
    ] {
        let (s, v) = call(&h, key, m, &p, b).await;
        assert_eq!(s, 403, "{m} {p} with a service account's key: {v}");
        assert_eq!(v["error"]["code"], "forbidden", "{v}");
    }
    // It still reads its own usage, and calls models.
    let (s, _) = call(&h, key, "GET", "/api/v1/usage", None).await;
    assert_eq!(s, 200);
    h.eventually(std::time::Duration::from_secs(5), || async {
        http().get(h.url("/v1/models")).bearer_auth(key).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// Item 2: an org-admin neither mints nor regenerates a key of an admin of its org.
#[tokio::test(flavor = "multi_thread")]
async fn an_org_admin_gets_no_key_of_an_admin_of_its_org() {
    let h = Harness::start().await;
    let org = id(&admin(&h, "POST", "/api/v1/orgs", json!({"name": "A"})).await);
    let (_, oa) = user_with_key(&h, "oa@a.example", &org, "org-admin").await;
    let (admin_id, _) = user_with_key(&h, "boss@a.example", &org, "admin").await;
    let (s, v) = call(&h, &oa, "POST", "/api/v1/tokens", Some(json!({"name": "x", "user_id": admin_id}))).await;
    assert_eq!(s, 403, "{v}");
    let listed = call(&h, &oa, "GET", "/api/v1/tokens", None).await.1;
    let admins_key = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["user_id"] == admin_id.as_str())
        .map(id)
        .expect("the org-admin sees the keys of its org");
    for (m, p) in [
        ("POST", format!("/api/v1/tokens/{admins_key}/regenerate")),
        ("DELETE", format!("/api/v1/tokens/{admins_key}")),
    ] {
        let (s, v) = call(&h, &oa, m, &p, None).await;
        assert_eq!(s, 403, "{m} {p}: {v}");
    }
    let (s, _) = call(&h, &oa, "PATCH", &format!("/api/v1/users/{admin_id}"), Some(json!({"active": false}))).await;
    assert_eq!(s, 403);
}

/// Item 8: only an admin turns a merge flag off (it drops the org's and the global exclusions).
#[tokio::test(flavor = "multi_thread")]
async fn only_an_admin_stops_a_level_inheriting_exclusions() {
    let h = Harness::start().await;
    let org = id(&admin(&h, "POST", "/api/v1/orgs", json!({"name": "A", "excluded_models": ["demo"]})).await);
    let (_, oa) = user_with_key(&h, "oa@a.example", &org, "org-admin").await;
    let (u_id, u) = user_with_key(&h, "u@a.example", &org, "user").await;
    let team = id(&admin(&h, "POST", "/api/v1/teams", json!({"org_id": org, "name": "t"})).await);
    let tokens = call(&h, &u, "GET", "/api/v1/tokens", None).await.1;
    let key_id = id(&tokens["data"][0]);
    for field in ["merge_excluded_models", "merge_excluded_mcp_servers"] {
        for path in
            [format!("/api/v1/teams/{team}"), format!("/api/v1/users/{u_id}"), format!("/api/v1/tokens/{key_id}")]
        {
            let (s, v) = call(&h, &oa, "PATCH", &path, Some(json!({ field: false }))).await;
            assert_eq!(s, 403, "{path} {field}: {v}");
            assert_eq!(v["error"]["param"], field);
            // Turning it back on, and other policy, stays the org-admin's.
            let (s, v) = call(&h, &oa, "PATCH", &path, Some(json!({ field: true }))).await;
            assert_eq!(s, 200, "{path} {field}: {v}");
        }
        let (s, _) = call(
            &h,
            &oa,
            "POST",
            "/api/v1/teams",
            Some(json!({"org_id": org, "name": format!("n{field}"), field: false})),
        )
        .await;
        assert_eq!(s, 403);
        let (s, _) =
            call(&h, ADMIN_KEY, "PATCH", &format!("/api/v1/teams/{team}"), Some(json!({ field: false }))).await;
        assert_eq!(s, 200);
    }
    // The user still may not use the model the admin excluded on the org.
    let r = http()
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(&u)
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// Item 21: an expiry set by a manager binds the key's holder, who may bring it forward only.
#[tokio::test(flavor = "multi_thread")]
async fn a_holder_cannot_lift_an_expiry_a_manager_set() {
    let h = Harness::start().await;
    let org = id(&admin(&h, "POST", "/api/v1/orgs", json!({"name": "A"})).await);
    let (_, oa) = user_with_key(&h, "oa@a.example", &org, "org-admin").await;
    let (u_id, u) = user_with_key(&h, "u@a.example", &org, "user").await;
    let set = call(
        &h,
        &oa,
        "POST",
        "/api/v1/tokens",
        Some(json!({"name": "bound", "user_id": u_id, "expires_at": "2099-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(set.0, 201, "{}", set.1);
    let k = id(&set.1);
    for e in [Value::Null, json!("2100-01-01T00:00:00Z")] {
        let (s, v) = call(&h, &u, "PATCH", &format!("/api/v1/tokens/{k}"), Some(json!({"expires_at": e}))).await;
        assert_eq!(s, 403, "{v}");
        assert_eq!(v["error"]["param"], "expires_at");
    }
    let (s, v) =
        call(&h, &u, "PATCH", &format!("/api/v1/tokens/{k}"), Some(json!({"expires_at": "2098-01-01T00:00:00Z"})))
            .await;
    assert_eq!(s, 200, "{v}");
    // Bringing it forward does not lift the bond: the manager's date stays the latest.
    let (s, _) =
        call(&h, &u, "PATCH", &format!("/api/v1/tokens/{k}"), Some(json!({"expires_at": "2099-01-01T00:00:00Z"})))
            .await;
    assert_eq!(s, 200);
    let (s, _) =
        call(&h, &u, "PATCH", &format!("/api/v1/tokens/{k}"), Some(json!({"expires_at": "2099-06-01T00:00:00Z"})))
            .await;
    assert_eq!(s, 403);
    // The manager lifts it.
    let (s, _) = call(&h, &oa, "PATCH", &format!("/api/v1/tokens/{k}"), Some(json!({"expires_at": null}))).await;
    assert_eq!(s, 200);
    let (s, _) = call(&h, &u, "PATCH", &format!("/api/v1/tokens/{k}"), Some(json!({"expires_at": null}))).await;
    assert_eq!(s, 200);
    // A key the user made themselves is theirs to change.
    let own =
        call(&h, &u, "POST", "/api/v1/tokens", Some(json!({"name": "own", "expires_at": "2099-01-01T00:00:00Z"})))
            .await;
    let (s, _) =
        call(&h, &u, "PATCH", &format!("/api/v1/tokens/{}", id(&own.1)), Some(json!({"expires_at": null}))).await;
    assert_eq!(s, 200);
}

/// Item 3: the audit log names the key an action was made with, and who created that key.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_names_the_key_and_its_maker() {
    let h = Harness::start().await;
    let org = id(&admin(&h, "POST", "/api/v1/orgs", json!({"name": "A"})).await);
    let (oa_id, oa) = user_with_key(&h, "oa@a.example", &org, "org-admin").await;
    let (u_id, _) = user_with_key(&h, "u@a.example", &org, "user").await;
    let minted = call(&h, &oa, "POST", "/api/v1/tokens", Some(json!({"name": "for-u", "user_id": u_id}))).await.1;
    let key = minted["key"].as_str().unwrap();
    let (s, _) = call(&h, key, "POST", "/api/v1/tokens", Some(json!({"name": "by-u"}))).await;
    assert_eq!(s, 201);
    let db = aqueduct::db::Db::open(None, h.dir.path()).await.unwrap();
    let rows = aqueduct::audit::recent_db(&db, 10).await.unwrap();
    let e = rows.iter().find(|e| e.path == "/api/v1/tokens" && e.actor_email == "u@a.example").expect("audit row");
    assert_eq!(e.token_id, Some(id(&minted).parse().unwrap()));
    assert_eq!(e.key_created_by, Some(oa_id.parse().unwrap()), "the key's maker is named");
}

/// An OIDC binding (issuer and subject) is what keeps an account from being taken over by
/// another identity with the same email; clearing it hands the account to the next sign-in, so
/// only an admin may.
#[tokio::test(flavor = "multi_thread")]
async fn only_an_admin_clears_an_oidc_binding() {
    let h = Harness::start().await;
    let org = id(&admin(&h, "POST", "/api/v1/orgs", json!({"name": "A"})).await);
    let (_, oa) = user_with_key(&h, "oa@a.example", &org, "org-admin").await;
    let (u_id, u) = user_with_key(&h, "u@a.example", &org, "user").await;
    let db = aqueduct::db::Db::open(None, h.dir.path()).await.unwrap();
    let mut bind = aqueduct::tenancy::store::Sql::new(
        "UPDATE users SET oidc_issuer = 'https://idp.example', oidc_subject = 'sub-1' WHERE id = ",
    );
    bind.id(u_id.parse().unwrap());
    aqueduct::tenancy::store::execute_tx(&db, &[bind]).await.unwrap();
    let (_, v) = call(&h, ADMIN_KEY, "GET", &format!("/api/v1/users/{u_id}"), None).await;
    assert_eq!(v["oidc_bound"], true, "{v}");
    for key in [&oa, &u] {
        let (s, v) = call(&h, key, "PATCH", &format!("/api/v1/users/{u_id}"), Some(json!({"oidc_bound": false}))).await;
        assert_eq!(s, 403, "{v}");
    }
    let (s, v) =
        call(&h, ADMIN_KEY, "PATCH", &format!("/api/v1/users/{u_id}"), Some(json!({"oidc_bound": true}))).await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("oidc_bound")), "{v}");
    let (s, v) =
        call(&h, ADMIN_KEY, "PATCH", &format!("/api/v1/users/{u_id}"), Some(json!({"oidc_bound": false}))).await;
    assert_eq!((s, &v["oidc_bound"]), (200, &json!(false)), "{v}");
}
