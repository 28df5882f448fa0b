//! The filter's whole hot path, natively, for instruction counts: `cargo build --release -p
//! aqueduct-policy --example hotpath` then `valgrind --tool=callgrind
//! target/release/examples/hotpath [requests] [limits]`. Runs admitted 1 KB chat requests
//! through [`RequestFilter`] over an in-memory host (shared data in a map), with caps at key,
//! user and org level when `limits` is given — the bench's "limits" variant without Envoy.

use aqueduct_policy::host::{MemShared, ResponseHost, Shared};
use aqueduct_policy::snapshot::{CapSpec, ModelSpec, PolicySnapshot, PrincipalSpec, Settings};
use aqueduct_policy::tokens::{hash_key, TokenTable};
use aqueduct_policy::{Flow, Host, Policy, RequestFilter};
use std::rc::Rc;

#[derive(Default)]
struct MapHost {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    response_headers: Vec<(String, String)>,
    response_body: Vec<u8>,
    shared: MemShared,
}

impl Host for MapHost {
    fn request_headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }
    fn set_request_header(&mut self, name: &str, value: &str) {
        self.remove_request_header(name);
        self.headers.push((name.into(), value.into()));
    }
    fn remove_request_header(&mut self, name: &str) {
        self.headers.retain(|(k, _)| k != name);
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        self.body.get(..size).map(<[u8]>::to_vec)
    }
    fn set_request_body(&mut self, body: &[u8]) {
        self.body = body.to_vec();
    }
    fn send_response(&mut self, status: u16, _headers: &[(&str, &str)], _body: &[u8]) {
        eprintln!("unexpected local reply {status}");
        std::process::exit(1);
    }
    fn clear_route_cache(&mut self) {}
    fn peer_address(&self) -> Option<String> {
        Some("127.0.0.1:40000".into())
    }
}

impl ResponseHost for MapHost {
    fn response_headers(&self) -> Vec<(String, String)> {
        self.response_headers.clone()
    }
    fn replace_response_headers(&mut self, headers: &[(String, String)]) {
        self.response_headers = headers.to_vec();
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        self.response_body.get(..size).map(<[u8]>::to_vec)
    }
}

impl Shared for MapHost {
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.shared.shared_get(key)
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        self.shared.shared_set(key, value, cas)
    }
    fn shared_create(&mut self, key: &str, initial: &[u8]) {
        self.shared.shared_create(key, initial)
    }
}

fn policy(limits: bool) -> Rc<Policy> {
    let high = [Some(1_000_000_000), Some(1_000_000_000_000), Some(1_000_000_000_000)];
    let principal = if limits {
        PrincipalSpec {
            user_id: 2,
            org_id: Some(1),
            key_limits: [Some(1_000_000_000), None, None],
            caps: vec![
                CapSpec { window: "u.2".into(), label: "user 2".into(), limits: high },
                CapSpec { window: "o.1".into(), label: "org 1".into(), limits: high },
            ],
            ..Default::default()
        }
    } else {
        PrincipalSpec { user_id: 1, ..Default::default() }
    };
    let snapshot = PolicySnapshot {
        version: 1,
        created: 0,
        settings: Settings::default(),
        models: vec![ModelSpec {
            name: "bench".into(),
            aliases: vec![],
            provider_model: "bench".into(),
            authorization: Some("Bearer sk-upstream".into()),
            route: "bench".into(),
            mode: None,
            request_limit_multiplier: 1.0,
        }],
        principals: vec![principal],
        tokens: TokenTable::build(vec![(hash_key("sk-bench-key-0000000000000000000000"), 1, None, 0)]),
        mcp_servers: vec![],
        journal: None,
    };
    match Policy::decode(&snapshot.encode().unwrap_or_default()) {
        Ok(p) => Rc::new(p),
        Err(e) => {
            eprintln!("policy: {e}");
            std::process::exit(1);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let limits = args.next().is_some_and(|a| a == "limits");
    let policy = policy(limits);
    let content = "x".repeat(900);
    let body = format!(r#"{{"model":"bench","messages":[{{"role":"user","content":"{content}"}}],"max_tokens":64}}"#);
    let response = br#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":250,"completion_tokens":2,"total_tokens":252}}"#;
    let mut host = MapHost::default();
    let mut events = 0usize;
    for i in 0..n {
        let now = 1_800_000_000_000 + i as i64;
        host.headers = vec![
            (":method".into(), "POST".into()),
            (":path".into(), "/v1/chat/completions".into()),
            (":authority".into(), "gateway".into()),
            ("authorization".into(), "Bearer sk-bench-key-0000000000000000000000".into()),
            ("content-type".into(), "application/json".into()),
            ("content-length".into(), body.len().to_string()),
            ("user-agent".into(), "bench".into()),
        ];
        host.body = body.as_bytes().to_vec();
        host.response_headers = vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/json".into()),
            ("content-length".into(), response.len().to_string()),
        ];
        host.response_body = response.to_vec();
        let mut f = RequestFilter::new(Some(policy.clone()));
        if f.on_request_headers(&mut host, false, now) != Flow::Pause {
            eprintln!("headers did not pause");
            std::process::exit(1);
        }
        let size = host.body.len();
        f.on_request_body(&mut host, size, true, now);
        f.on_response_headers(&mut host, now + 1);
        let size = host.response_body.len();
        f.on_response_body(&host, size);
        if let Some(event) = f.on_done(&mut host, now + 2) {
            events += serde_json::to_vec(&event).map_or(0, |_| 1);
        }
    }
    println!("{n} requests, {events} usage events, limits: {limits}");
}
