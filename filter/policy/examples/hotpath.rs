//! The filter's whole hot path, natively, for instruction counts: `cargo build --release -p
//! aqueduct-policy --example hotpath` then `valgrind --tool=callgrind
//! target/release/examples/hotpath [requests] [limits]`. Runs admitted 1 KB chat requests
//! through [`RequestFilter`] over an in-memory host (shared data in a map), with caps at key,
//! user and org level when `limits` is given — the bench's "limits" variant without Envoy.

use aqueduct_policy::admission::{self, Worker};
use aqueduct_policy::host::{MemControl, MemHost};
use aqueduct_policy::ledger::Delivery;
use aqueduct_policy::snapshot::{CapSpec, LedgerSettings, ModelSpec, PolicySnapshot, PrincipalSpec, Settings};
use aqueduct_policy::tokens::{hash_key, TokenTable};
use aqueduct_policy::{Flow, Policy, RequestFilter};
use std::cell::RefCell;
use std::rc::Rc;

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
        // A control plane to deliver usage batches to (calls recorded, each acknowledged).
        settings: Settings {
            ledger: LedgerSettings { cluster: "control-plane".into(), ..Default::default() },
            ..Default::default()
        },
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
    let mut host = MemHost::default();
    let mut delivery = Delivery::with_seed(7);
    let mut control = MemControl::default();
    let ledger = &policy.settings.ledger;
    let worker = Rc::new(RefCell::new(Worker::default()));
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
        host.response_chunk = response.to_vec();
        let mut f = RequestFilter::with_worker(Some(policy.clone()), worker.clone());
        if f.on_request_headers(&mut host, false, now) != Flow::Pause {
            eprintln!("headers did not pause");
            std::process::exit(1);
        }
        let size = host.body.len();
        f.on_request_body(&mut host, size, true, || now);
        if let Some((status, _, body)) = &host.reply {
            // Every request must take the whole path, or the counts measure something else.
            eprintln!("unexpected local reply {status}: {}", String::from_utf8_lossy(body));
            std::process::exit(1);
        }
        f.on_response_headers(&mut host, now + 1);
        let size = host.response_chunk.len();
        f.on_response_body(&host, size);
        if let Some(event) = f.on_done(&mut host, now + 2) {
            // Queued as the Wasm adapter does; batches leave every 200 ms there, about every
            // 100 requests at the rates measured.
            delivery.record(&mut control, event, ledger);
            if i % 100 == 99 {
                if delivery.flush(&mut control, ledger, 1, now) {
                    let token = control.calls.last().map_or(0, |c| c.token);
                    control.calls.clear();
                    control.answer(Some(200), b"");
                    delivery.on_response(&mut control, token, 1, now);
                }
                admission::flush(&mut host, &mut worker.borrow_mut(), now);
            }
        }
    }
    let events = delivery.stats().delivered + delivery.queued() as u64;
    println!("{n} requests, {events} usage events, limits: {limits}");
}
