use super::*;
use crate::host::MemControl;
use crate::journal::{JournalDelta, JournalMark, KeyChange, JOURNAL_PATH};
use crate::ledger::{UsageEvent, INGEST_PATH, MAX_BATCH_BYTES};
use crate::snapshot::{LedgerSettings, PolicySnapshot, PrincipalSpec, Settings};
use crate::tokens::{hash_key, TokenTable};

fn policy() -> Policy {
    let ledger = LedgerSettings {
        cluster: "cp".into(),
        authority: "cp.internal".into(),
        secret: "s".into(),
        ..Default::default()
    };
    Policy::from_snapshot(PolicySnapshot {
        version: 2,
        created: 0,
        settings: Settings { ledger, ..Default::default() },
        models: vec![],
        principals: vec![PrincipalSpec { user_id: 1, ..Default::default() }],
        tokens: TokenTable::build(vec![(hash_key("sk-old"), 1, None, 0)]),
        mcp_servers: vec![],
        journal: Some(JournalMark { epoch: 3, seq: 0 }),
    })
    .unwrap()
}

/// Whether call `i` went to the journal (else to ingestion).
fn is_poll(host: &MemControl, i: usize) -> bool {
    host.calls[i].header(":path").is_some_and(|p| p.starts_with(JOURNAL_PATH))
}

fn is_batch(host: &MemControl, i: usize) -> bool {
    host.calls[i].header(":path") == Some(INGEST_PATH)
}

/// A root configured with [`policy`], as the newest root context.
fn configured(host: &mut MemControl, delivery: &mut Delivery, id: u32) -> RootState {
    let mut root = RootState::new(id);
    root.adopt(delivery);
    root.set_policy(host, Some(policy()), 0);
    root
}

fn record(delivery: &mut Delivery, host: &mut MemControl, n: usize) {
    let settings = policy().settings.ledger;
    for i in 0..n {
        // A long user agent makes fewer events fill a batch.
        let e = UsageEvent { path: format!("/v1/{i}"), user_agent: Some("u".repeat(200)), ..Default::default() };
        delivery.record(host, e, &settings);
    }
}

/// Answers call `i` with `status` and `body`.
fn answer(
    root: &mut RootState,
    host: &mut MemControl,
    delivery: &mut Delivery,
    i: usize,
    status: u16,
    body: &[u8],
    now: i64,
) -> bool {
    host.answer(Some(status), body);
    let token = host.calls[i].token;
    root.on_call_response(host, delivery, token, body.len(), now)
}

#[test]
fn a_configured_root_keeps_a_poll_open_and_its_timer_sends_batches() {
    let (mut host, mut delivery) = (MemControl::default(), Delivery::default());
    let mut root = configured(&mut host, &mut delivery, 1);
    assert_eq!(host.calls.len(), 1);
    assert!(is_poll(&host, 0), "the poll starts with the policy");
    root.on_tick(&mut host, &mut delivery, 200);
    assert_eq!(host.calls.len(), 1, "no second poll, nothing queued to send");
    record(&mut delivery, &mut host, 3);
    root.on_tick(&mut host, &mut delivery, 400);
    assert_eq!(host.calls.len(), 2);
    assert!(is_batch(&host, 1));
    assert!(!answer(&mut root, &mut host, &mut delivery, 1, 200, b"", 450), "a serving root never lets go");
    assert_eq!(delivery.queued(), 0);
}

#[test]
fn a_journal_answer_becomes_the_policy_of_new_requests() {
    let (mut host, mut delivery) = (MemControl::default(), Delivery::default());
    let mut root = configured(&mut host, &mut delivery, 1);
    let before = Rc::clone(root.policy().unwrap());
    let delta = JournalDelta {
        epoch: 3,
        seq: 1,
        changes: vec![KeyChange::Live {
            id: 9,
            hash: hex::encode(hash_key("sk-new")),
            expires_at: None,
            principal: Box::new(PrincipalSpec { user_id: 1, ..Default::default() }),
        }],
    };
    let body = serde_json::to_vec(&delta).unwrap();
    assert!(!answer(&mut root, &mut host, &mut delivery, 0, 200, &body, 100));
    assert_eq!(root.policy().unwrap().find_key("sk-new").map(|e| e.id), Some(9));
    assert!(before.find_key("sk-new").is_none(), "requests under way keep the policy they started with");
    assert_eq!(host.calls.len(), 2, "the next poll went out at once");
    assert!(is_poll(&host, 1));
    assert!(host.calls[1].header(":path").unwrap().ends_with("known=1"));
    // A failed poll leaves the policy as it was and waits a second.
    assert!(!answer(&mut root, &mut host, &mut delivery, 1, 500, b"", 200));
    assert_eq!(root.policy().unwrap().find_key("sk-new").map(|e| e.id), Some(9));
    root.on_tick(&mut host, &mut delivery, 1_199);
    assert_eq!(host.calls.len(), 2);
    root.on_tick(&mut host, &mut delivery, 1_200);
    assert!(is_poll(&host, 2));
}

#[test]
fn a_closing_root_hands_over_the_queue_while_it_is_taken_then_lets_go() {
    let (mut host, mut delivery) = (MemControl::default(), Delivery::default());
    let mut root = configured(&mut host, &mut delivery, 1);
    // More than two batches' worth.
    let per_event = 300;
    record(&mut delivery, &mut host, 2 * MAX_BATCH_BYTES / per_event + 10);
    assert!(!root.on_done(&mut host, &mut delivery, 1_000), "a batch went out: wait for its answer");
    assert!(root.closing());
    assert!(is_batch(&host, 1));
    // A closing root polls no more, whatever answers.
    assert!(!answer(&mut root, &mut host, &mut delivery, 0, 204, b"", 1_001));
    root.on_tick(&mut host, &mut delivery, 1_100);
    assert!((1..host.calls.len()).all(|i| is_batch(&host, i)), "no poll after closing");
    let mut calls = host.calls.len();
    let mut done = false;
    while !done {
        done = answer(&mut root, &mut host, &mut delivery, calls - 1, 200, b"", 1_200);
        if !done {
            assert_eq!(host.calls.len(), calls + 1, "acknowledged: the next batch goes at once");
            calls += 1;
        }
    }
    assert_eq!(delivery.queued(), 0, "everything handed over before letting go");
    assert!(calls >= 4, "{calls} calls");
}

#[test]
fn a_closing_root_lets_go_when_the_control_plane_refuses_and_keeps_the_events() {
    let (mut host, mut delivery) = (MemControl::default(), Delivery::default());
    let mut root = configured(&mut host, &mut delivery, 1);
    record(&mut delivery, &mut host, 5);
    assert!(!root.on_done(&mut host, &mut delivery, 0));
    assert!(answer(&mut root, &mut host, &mut delivery, 1, 503, b"", 1), "no retries from a closing root");
    assert_eq!(delivery.queued(), 5, "the events stay in the VM for its next root context");
    // That root sends them once the back-off has passed.
    let mut next = configured(&mut host, &mut delivery, 2);
    next.on_tick(&mut host, &mut delivery, 501);
    let last = host.calls.len() - 1;
    assert!(is_batch(&host, last));
    assert!(!answer(&mut next, &mut host, &mut delivery, last, 200, b"", 502));
    assert_eq!(delivery.queued(), 0);
}

#[test]
fn a_root_with_nothing_to_send_goes_at_once() {
    let (mut host, mut delivery) = (MemControl::default(), Delivery::default());
    let mut root = configured(&mut host, &mut delivery, 1);
    assert!(root.on_done(&mut host, &mut delivery, 0));
    // Nor does one without a policy wait: it has no control plane to send to.
    let mut bare = RootState::new(2);
    bare.adopt(&mut delivery);
    bare.set_policy(&mut host, None, 0);
    record(&mut delivery, &mut host, 1);
    assert!(bare.on_done(&mut host, &mut delivery, 0));
    assert_eq!(host.calls.len(), 1, "only the first root's poll");
}

#[test]
fn a_root_waits_for_the_answer_to_its_own_call() {
    let (mut host, mut delivery) = (MemControl::default(), Delivery::default());
    let mut root = configured(&mut host, &mut delivery, 1);
    record(&mut delivery, &mut host, 1);
    root.on_tick(&mut host, &mut delivery, 0);
    assert!(delivery.awaiting(1));
    // Envoy stops: the batch is still out, so the root stays for its answer.
    assert!(!root.on_done(&mut host, &mut delivery, 10));
    assert_eq!(host.calls.len(), 2, "nothing more to send meanwhile");
    assert!(answer(&mut root, &mut host, &mut delivery, 1, 200, b"", 20));
    assert_eq!(delivery.queued(), 0);
}

#[test]
fn a_replaced_root_sends_nothing_more() {
    let (mut host, mut delivery) = (MemControl::default(), Delivery::default());
    let mut old = configured(&mut host, &mut delivery, 1);
    let _new = configured(&mut host, &mut delivery, 2);
    record(&mut delivery, &mut host, 1);
    let calls = host.calls.len();
    old.on_tick(&mut host, &mut delivery, 0);
    assert!(old.on_done(&mut host, &mut delivery, 0), "its successor delivers: it goes at once");
    assert!((calls..host.calls.len()).all(|i| !is_batch(&host, i)), "no batch from the replaced root");
    assert_eq!(delivery.queued(), 1);
}

#[test]
fn a_late_answer_to_an_earlier_call_does_not_end_the_wait_for_the_latest() {
    use crate::ledger::IN_FLIGHT_TIMEOUT_MS;
    let (mut host, mut delivery) = (MemControl::default(), Delivery::default());
    let mut root = configured(&mut host, &mut delivery, 1);
    record(&mut delivery, &mut host, 1);
    root.on_tick(&mut host, &mut delivery, 0);
    // Unanswered for too long: the batch goes again (call 2), then Envoy lets the root go.
    root.on_tick(&mut host, &mut delivery, IN_FLIGHT_TIMEOUT_MS);
    assert_eq!(host.calls.len(), 3);
    assert!(!root.on_done(&mut host, &mut delivery, IN_FLIGHT_TIMEOUT_MS + 1));
    // The first call's answer turns up after all: the root still waits for the second's.
    assert!(!answer(&mut root, &mut host, &mut delivery, 1, 200, b"", IN_FLIGHT_TIMEOUT_MS + 2));
    assert!(answer(&mut root, &mut host, &mut delivery, 2, 200, b"", IN_FLIGHT_TIMEOUT_MS + 3));
    assert_eq!(delivery.queued(), 0);
}
