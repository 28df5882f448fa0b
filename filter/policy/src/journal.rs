//! Key changes between snapshots: the control plane's key journal and the overlay a filter VM
//! keeps on top of its snapshot.
//!
//! A snapshot carries every live key, so at 100,000 keys it is a 3 MB resource that costs Envoy
//! tens of milliseconds to take in whatever the control plane does. Creating or revoking one key should not
//! wait for that. The control plane therefore also appends each key change to a journal, and every
//! filter VM long-polls it ([`JOURNAL_PATH`]) from the journal position its snapshot was built at
//! ([`JournalMark`]). The answer ([`JournalDelta`]) holds every change after that position, so
//! each answer replaces the VM's overlay whole and a lost or repeated answer is harmless. The
//! next snapshot includes the changes and starts the overlay again from empty.
//!
//! Each root context keeps one poll open ([`Poller`]): it decides when to poll and what to ask,
//! and what an answer means; the Wasm adapter only dispatches the call through
//! [`ControlHost`] and hands the answer back. Changes become an [`Overlay`].

use crate::host::{Call, ControlHost, Level};
use crate::ledger::SECRET_HEADER;
use crate::snapshot::{Policy, PrincipalSpec};
use crate::tokens::{TokenEntry, HASH_LEN};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Path of the control plane's journal endpoint (its own address only, like ingestion).
pub const JOURNAL_PATH: &str = "/internal/v1/keys";

/// How long the control plane holds a poll open when nothing changed.
pub const POLL_HOLD_MS: u64 = 20_000;

/// How long a poll may take: longer than the control plane holds one, so an idle poll ends
/// with its 204 rather than a timeout.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(POLL_HOLD_MS + 10_000);

/// Wait after a failed poll before the next (the snapshot path still works meanwhile).
pub const RETRY_MS: i64 = 1_000;

/// Largest journal answer read; a larger one counts as a failed poll.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Where a snapshot stands in the control plane's key journal: it includes every change up to
/// `seq` of journal `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(deny_unknown_fields)]
pub struct JournalMark {
    /// The journal's identity: a new one starts with every control-plane process.
    pub epoch: u64,
    /// Position: the number of changes the journal recorded before the snapshot's keys were read.
    pub seq: u64,
}

/// One key change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyChange {
    /// The key with token id `id` now has this hash, expiry and principal: a new key, a new
    /// secret for an existing one (regenerated), or new settings. Any other hash the token had
    /// stops working.
    Live {
        /// Token id.
        id: u64,
        /// SHA-256 of the key, 64 hex digits.
        hash: String,
        /// Expiry as unix seconds, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<i64>,
        /// Who the key acts for, in full: a VM finds it among its snapshot's principals, or adds it.
        principal: Box<PrincipalSpec>,
    },
    /// The token stopped working: revoked, deleted or its owner gone.
    Gone {
        /// Token id.
        id: u64,
    },
}

/// The journal's answer to a poll: every change after the poller's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct JournalDelta {
    /// The journal's epoch.
    pub epoch: u64,
    /// The journal's position after these changes; the next poll waits for more than this.
    pub seq: u64,
    /// Changes in the order they happened, from the poller's snapshot mark on.
    pub changes: Vec<KeyChange>,
}

/// The query of a poll: changes after `since` (the snapshot's mark), answered at once when the
/// journal has moved past `known` (what the poller has already applied), else held.
pub fn poll_path(since: JournalMark, known: u64) -> String {
    format!("{JOURNAL_PATH}?epoch={}&since={}&known={known}", since.epoch, since.seq)
}

/// Parsed [`poll_path`] parameters, for the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PollQuery {
    /// Journal epoch of the poller's snapshot.
    pub epoch: u64,
    /// Journal position of the poller's snapshot.
    pub since: u64,
    /// The last position the poller applied.
    pub known: u64,
}

/// Why a journal answer was not applied.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the snapshot has no journal mark")]
    NoJournal,
    #[error("journal answer is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("journal answer is for epoch {got}, the snapshot for epoch {want}")]
    Epoch { got: u64, want: u64 },
    #[error("key change for token {0} has a hash that is not 64 hex digits")]
    Hash(u64),
    #[error("key change for token {0} names a principal that does not fit this snapshot")]
    Principal(u64),
}

/// Key changes applied on top of a snapshot's token table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    /// Keys live since the snapshot, by hash.
    live: HashMap<[u8; HASH_LEN], TokenEntry>,
    /// Token ids whose snapshot entries no longer count (revoked, regenerated, changed).
    hidden: HashSet<u64>,
    /// Principals the snapshot does not have, numbered after its own.
    pub principals: Vec<PrincipalSpec>,
    /// The journal position applied.
    pub seq: u64,
}

/// What deciding a change needs from the snapshot under it.
pub trait Base {
    /// Index of a principal equal to `spec`, if the snapshot has one.
    fn find_principal(&self, spec: &PrincipalSpec) -> Option<u32>;
    /// Number of principals in the snapshot.
    fn principal_count(&self) -> usize;
    /// Whether `spec`'s model and MCP server indices exist in the snapshot.
    fn fits(&self, spec: &PrincipalSpec) -> bool;
}

impl Overlay {
    /// The overlay for `delta` over a snapshot marked `mark`. Changes apply in order, so a key
    /// created and then revoked is gone and a regenerated key answers only to its new secret.
    pub fn build(base: &impl Base, mark: JournalMark, delta: &JournalDelta) -> Result<Self, JournalError> {
        if delta.epoch != mark.epoch {
            return Err(JournalError::Epoch { got: delta.epoch, want: mark.epoch });
        }
        let mut o = Overlay { seq: delta.seq, ..Default::default() };
        for change in &delta.changes {
            match change {
                KeyChange::Live { id, hash, expires_at, principal } => {
                    let mut digest = [0u8; HASH_LEN];
                    hex::decode_to_slice(hash, &mut digest).map_err(|_| JournalError::Hash(*id))?;
                    let principal = o.principal_index(base, principal).ok_or(JournalError::Principal(*id))?;
                    o.live.retain(|_, e| e.id != *id);
                    o.live.insert(digest, TokenEntry { id: *id, expires_at: *expires_at, principal });
                    o.hidden.insert(*id);
                }
                KeyChange::Gone { id } => {
                    o.live.retain(|_, e| e.id != *id);
                    o.hidden.insert(*id);
                }
            }
        }
        Ok(o)
    }

    fn principal_index(&mut self, base: &impl Base, spec: &PrincipalSpec) -> Option<u32> {
        if let Some(i) = base.find_principal(spec) {
            return Some(i);
        }
        if !base.fits(spec) {
            return None;
        }
        let at = match self.principals.iter().position(|p| p == spec) {
            Some(i) => i,
            None => {
                self.principals.push(spec.clone());
                self.principals.len() - 1
            }
        };
        u32::try_from(base.principal_count() + at).ok()
    }

    /// True when no change is applied.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.hidden.is_empty()
    }

    /// A key made live since the snapshot.
    pub fn live(&self, digest: &[u8; HASH_LEN]) -> Option<TokenEntry> {
        self.live.get(digest).copied()
    }

    /// Whether the snapshot's entry for token `id` no longer counts.
    pub fn hides(&self, id: u64) -> bool {
        self.hidden.contains(&id)
    }

    /// Number of keys made live since the snapshot.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }
}

/// One root context's poll of the journal: at most one open, another as soon as it ends, one
/// a second ([`RETRY_MS`]) after a failure.
#[derive(Debug, Default)]
pub struct Poller {
    /// The poll in flight (its call's token).
    in_flight: Option<u32>,
    /// No poll before this, after a failure.
    not_before_ms: i64,
    /// Failures in a row, to log the first of a run only.
    failures: u32,
}

impl Poller {
    /// Whether `token` is this poller's call.
    pub fn answers(&self, token: u32) -> bool {
        self.in_flight == Some(token)
    }

    /// Whether a poll is open.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Starts a poll unless one is open, the policy has no journal or no control-plane cluster,
    /// or a retry is not yet due; true if a call went out.
    pub fn poll(&mut self, host: &mut impl ControlHost, policy: &Policy, now_ms: i64) -> bool {
        let Some(mark) = policy.journal else { return false };
        let cp = &policy.settings.ledger;
        if self.in_flight.is_some() || now_ms < self.not_before_ms || cp.cluster.is_empty() {
            return false;
        }
        // Everything after the snapshot, answered at once if there is more than was applied.
        let path = poll_path(mark, policy.overlay().seq.max(mark.seq));
        let call = Call {
            cluster: &cp.cluster,
            headers: vec![
                (":method", "GET"),
                (":path", path.as_str()),
                (":authority", cp.authority.as_str()),
                (SECRET_HEADER, cp.secret.as_str()),
            ],
            body: None,
            timeout: POLL_TIMEOUT,
        };
        match host.dispatch(call) {
            Ok(token) => {
                self.in_flight = Some(token);
                true
            }
            Err(why) => {
                self.failed(host, now_ms, &format!("not sent: {why}"));
                false
            }
        }
    }

    /// Handles the answer to the poll (its status and body are the host's call answer, the body
    /// `body_size` bytes long): the policy with the changes applied when it brought any.
    pub fn on_response(
        &mut self,
        host: &mut impl ControlHost,
        policy: &Policy,
        body_size: usize,
        now_ms: i64,
    ) -> Option<Policy> {
        self.in_flight = None;
        match host.call_status() {
            Some(200) => {}
            // Held for the whole period without a change: ask again.
            Some(204) => {
                self.failures = 0;
                return None;
            }
            // 409: the journal no longer reaches back to this snapshot (another control-plane
            // process, or pruned); a newer snapshot is on its way. Anything else is a failure,
            // and so is no answer at all (a timeout, a refused connection).
            other => {
                let status = other.map_or_else(|| "none (no answer)".to_string(), |s| s.to_string());
                self.failed(host, now_ms, &format!("status {status}"));
                return None;
            }
        }
        if body_size > MAX_ANSWER_BYTES {
            self.failed(host, now_ms, &format!("answer of {body_size} bytes is too large"));
            return None;
        }
        let body = host.call_body(body_size).unwrap_or_default();
        let applied = serde_json::from_slice::<JournalDelta>(&body)
            .map_err(JournalError::from)
            .and_then(|delta| policy.with_changes(&delta));
        match applied {
            Ok(changed) => {
                self.failures = 0;
                if changed.overlay().seq != policy.overlay().seq {
                    host.log(
                        Level::Info,
                        &format!(
                            "key changes applied to policy version {} (journal position {}, {} keys added since the snapshot)",
                            policy.version,
                            changed.overlay().seq,
                            changed.overlay().live_count()
                        ),
                    );
                }
                Some(changed)
            }
            Err(e) => {
                self.failed(host, now_ms, &e.to_string());
                None
            }
        }
    }

    /// A poll failed: the next waits [`RETRY_MS`]; the first failure of a run is logged.
    fn failed(&mut self, host: &mut impl ControlHost, now_ms: i64, why: &str) {
        self.failures = self.failures.saturating_add(1);
        self.not_before_ms = now_ms + RETRY_MS;
        if self.failures == 1 {
            host.log(
                Level::Warn,
                &format!(
                    "key journal poll failed ({why}); key changes wait for the next snapshot, retrying every second"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Snap(Vec<PrincipalSpec>);

    impl Base for Snap {
        fn find_principal(&self, spec: &PrincipalSpec) -> Option<u32> {
            self.0.iter().position(|p| p == spec).map(|i| i as u32)
        }
        fn principal_count(&self) -> usize {
            self.0.len()
        }
        fn fits(&self, spec: &PrincipalSpec) -> bool {
            spec.excluded_models.iter().all(|m| *m < 2)
        }
    }

    fn user(id: u64) -> PrincipalSpec {
        PrincipalSpec { user_id: id, ..Default::default() }
    }

    fn live(id: u64, key: &str, principal: PrincipalSpec) -> KeyChange {
        KeyChange::Live {
            id,
            hash: hex::encode(crate::tokens::hash_key(key)),
            expires_at: None,
            principal: Box::new(principal),
        }
    }

    const MARK: JournalMark = JournalMark { epoch: 7, seq: 10 };

    fn delta(changes: Vec<KeyChange>) -> JournalDelta {
        JournalDelta { epoch: 7, seq: 10 + changes.len() as u64, changes }
    }

    #[test]
    fn changes_apply_in_order() {
        let base = Snap(vec![user(1)]);
        let d = delta(vec![
            live(5, "sk-new", user(1)),
            live(6, "sk-new-user", user(2)),
            live(7, "sk-short-lived", user(1)),
            KeyChange::Gone { id: 7 },
            KeyChange::Gone { id: 3 },
            // Regenerated: the old secret goes, the new one answers with the same id.
            live(4, "sk-regenerated", user(1)),
        ]);
        let o = Overlay::build(&base, MARK, &d).unwrap();
        let find = |k: &str| o.live(&crate::tokens::hash_key(k));
        assert_eq!(find("sk-new").unwrap().principal, 0, "an existing principal is reused");
        assert_eq!(find("sk-new-user").unwrap().principal, 1, "a new one is numbered after the snapshot's");
        assert_eq!(o.principals, vec![user(2)]);
        assert!(find("sk-short-lived").is_none());
        assert_eq!(find("sk-regenerated").unwrap().id, 4);
        for id in [3, 4, 7] {
            assert!(o.hides(id), "token {id}");
        }
        assert!(!o.hides(1));
        assert_eq!(o.seq, 16);
        assert_eq!(o.live_count(), 3);
    }

    #[test]
    fn refuses_answers_that_do_not_fit() {
        let base = Snap(vec![user(1)]);
        let other_epoch = JournalDelta { epoch: 8, ..delta(vec![]) };
        assert!(matches!(Overlay::build(&base, MARK, &other_epoch), Err(JournalError::Epoch { got: 8, want: 7 })));
        let bad_hash =
            delta(vec![KeyChange::Live { id: 1, hash: "zz".into(), expires_at: None, principal: Box::new(user(1)) }]);
        assert!(matches!(Overlay::build(&base, MARK, &bad_hash), Err(JournalError::Hash(1))));
        let missing_model = PrincipalSpec { excluded_models: vec![5], ..user(2) };
        let d = delta(vec![live(1, "k", missing_model)]);
        assert!(matches!(Overlay::build(&base, MARK, &d), Err(JournalError::Principal(1))));
    }

    #[test]
    fn wire_form_round_trips() {
        let d = delta(vec![live(5, "k", user(1)), KeyChange::Gone { id: 2 }]);
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains(r#""op":"live""#) && json.contains(r#""op":"gone""#), "{json}");
        assert_eq!(serde_json::from_str::<JournalDelta>(&json).unwrap(), d);
        assert_eq!(poll_path(MARK, 12), "/internal/v1/keys?epoch=7&since=10&known=12");
    }
}

/// [`Poller`]'s decisions: when a poll goes out, what it asks, and what each answer does.
#[cfg(test)]
mod poll_tests {
    use super::*;
    use crate::host::{Level, MemControl};
    use crate::snapshot::{LedgerSettings, PolicySnapshot, Settings};
    use crate::tokens::{hash_key, TokenTable};

    const MARK: JournalMark = JournalMark { epoch: 7, seq: 10 };

    fn policy(journal: Option<JournalMark>, cluster: &str) -> Policy {
        let ledger = LedgerSettings {
            cluster: cluster.into(),
            authority: "cp.internal".into(),
            secret: "s3cret".into(),
            ..Default::default()
        };
        Policy::from_snapshot(PolicySnapshot {
            version: 4,
            created: 0,
            settings: Settings { ledger, ..Default::default() },
            models: vec![],
            principals: vec![PrincipalSpec { user_id: 1, ..Default::default() }],
            tokens: TokenTable::build(vec![(hash_key("sk-old"), 1, None, 0)]),
            mcp_servers: vec![],
            journal,
        })
        .unwrap()
    }

    /// A journal answer: `changes` after [`MARK`], the journal at `seq`.
    fn answer(seq: u64, changes: Vec<KeyChange>) -> Vec<u8> {
        serde_json::to_vec(&JournalDelta { epoch: MARK.epoch, seq, changes }).unwrap()
    }

    fn new_key(id: u64, key: &str) -> KeyChange {
        KeyChange::Live {
            id,
            hash: hex::encode(hash_key(key)),
            expires_at: None,
            principal: Box::new(PrincipalSpec { user_id: 1, ..Default::default() }),
        }
    }

    /// Delivers `status` and `body` as the answer to the open poll.
    fn respond(
        poller: &mut Poller,
        host: &mut MemControl,
        p: &Policy,
        status: Option<u16>,
        body: &[u8],
        now: i64,
    ) -> Option<Policy> {
        assert!(poller.in_flight(), "an answer needs a poll");
        host.answer(status, body);
        poller.on_response(host, p, body.len(), now)
    }

    #[test]
    fn one_poll_is_open_at_a_time_and_asks_from_the_snapshot_mark() {
        let p = policy(Some(MARK), "control-plane");
        let mut host = MemControl::default();
        let mut poller = Poller::default();
        assert!(poller.poll(&mut host, &p, 0));
        let call = host.last_call().unwrap().clone();
        assert_eq!(call.cluster, "control-plane");
        assert_eq!(call.header(":method"), Some("GET"));
        assert_eq!(call.header(":path"), Some("/internal/v1/keys?epoch=7&since=10&known=10"));
        assert_eq!(call.header(":authority"), Some("cp.internal"));
        assert_eq!(call.header(SECRET_HEADER), Some("s3cret"));
        assert_eq!(call.body, None);
        assert!(call.timeout.as_millis() > u128::from(POLL_HOLD_MS), "outlasts the hold: an idle poll ends in 204");
        assert!(!poller.poll(&mut host, &p, 5_000), "one open at a time");
        assert_eq!(host.calls.len(), 1);
        assert!(poller.answers(call.token));
        assert!(!poller.answers(call.token + 1));
    }

    #[test]
    fn no_journal_or_no_cluster_means_no_poll() {
        let mut host = MemControl::default();
        let mut poller = Poller::default();
        assert!(!poller.poll(&mut host, &policy(None, "control-plane"), 0));
        assert!(!poller.poll(&mut host, &policy(Some(MARK), ""), 0));
        assert!(host.calls.is_empty());
        assert!(!poller.in_flight());
    }

    #[test]
    fn an_answer_applies_its_changes_and_the_next_poll_asks_past_them() {
        let p = policy(Some(MARK), "cp");
        let mut host = MemControl::default();
        let mut poller = Poller::default();
        poller.poll(&mut host, &p, 0);
        let changed = respond(
            &mut poller,
            &mut host,
            &p,
            Some(200),
            &answer(12, vec![new_key(5, "sk-new"), KeyChange::Gone { id: 1 }]),
            10,
        )
        .expect("changes applied");
        assert_eq!(changed.find_key("sk-new").map(|e| e.id), Some(5));
        assert!(changed.find_key("sk-old").is_none(), "revoked through the journal");
        assert!(p.find_key("sk-old").is_some(), "the policy it started from is not touched");
        assert_eq!(host.logs.iter().filter(|(l, _)| *l == Level::Info).count(), 1);
        assert!(!poller.in_flight());
        // At once, and from the same snapshot mark: only `known` moves.
        assert!(poller.poll(&mut host, &changed, 10));
        assert_eq!(host.last_call().unwrap().header(":path"), Some("/internal/v1/keys?epoch=7&since=10&known=12"));
        // Held without a change (204): asked again at once, nothing applied, nothing logged.
        assert!(respond(&mut poller, &mut host, &changed, Some(204), b"", 20_010).is_none());
        assert!(poller.poll(&mut host, &changed, 20_010));
        assert_eq!(host.warnings(), 0);
    }

    #[test]
    fn failures_back_off_a_second_and_are_logged_once_per_run() {
        let p = policy(Some(MARK), "cp");
        let mut host = MemControl::default();
        let mut poller = Poller::default();
        let other_epoch = serde_json::to_vec(&JournalDelta { epoch: 8, seq: 11, changes: vec![] }).unwrap();
        let bad_hash =
            answer(11, vec![KeyChange::Live { id: 3, hash: "zz".into(), expires_at: None, principal: Box::default() }]);
        let failures: [(Option<u16>, &[u8]); 7] = [
            // The journal no longer reaches back to this snapshot: a new one is on its way.
            (Some(409), b""),
            (Some(500), b"oops"),
            // No answer: a timeout or a refused connection.
            (None, b""),
            (Some(200), b"not json"),
            (Some(200), b""),
            (Some(200), &other_epoch),
            (Some(200), &bad_hash),
        ];
        let mut now = 0;
        for (status, body) in failures {
            assert!(poller.poll(&mut host, &p, now), "{status:?}: the retry is due");
            assert!(respond(&mut poller, &mut host, &p, status, body, now).is_none(), "{status:?}");
            assert!(!poller.poll(&mut host, &p, now + RETRY_MS - 1), "{status:?}: backing off");
            now += RETRY_MS;
        }
        assert_eq!(host.calls.len(), failures.len());
        assert_eq!(host.warnings(), 1, "one line for the whole run: {:?}", host.logs);
        assert!(host.logs[0].1.contains("status 409"), "{:?}", host.logs);
        // A good answer ends the run; the next failure is logged again.
        assert!(poller.poll(&mut host, &p, now));
        assert!(respond(&mut poller, &mut host, &p, Some(204), b"", now).is_none());
        assert!(poller.poll(&mut host, &p, now));
        respond(&mut poller, &mut host, &p, None, b"", now);
        assert_eq!(host.warnings(), 2);
        assert!(host.logs[1].1.contains("none (no answer)"), "{:?}", host.logs);
    }

    #[test]
    fn an_answer_too_large_is_not_read() {
        let p = policy(Some(MARK), "cp");
        let mut host = MemControl::default();
        let mut poller = Poller::default();
        poller.poll(&mut host, &p, 0);
        host.answer(Some(200), &answer(11, vec![new_key(5, "sk-new")]));
        assert!(poller.on_response(&mut host, &p, MAX_ANSWER_BYTES + 1, 0).is_none());
        assert_eq!(host.body_reads.get(), 0, "its body is never copied into the VM");
        assert!(!poller.poll(&mut host, &p, RETRY_MS - 1));
        assert!(poller.poll(&mut host, &p, RETRY_MS));
    }

    #[test]
    fn a_poll_the_proxy_will_not_send_is_retried_a_second_later() {
        let p = policy(Some(MARK), "cp");
        let mut host = MemControl { refuse: Some("BadArgument".into()), ..Default::default() };
        let mut poller = Poller::default();
        assert!(!poller.poll(&mut host, &p, 0));
        assert!(!poller.in_flight());
        assert!(host.logs[0].1.contains("not sent: BadArgument"), "{:?}", host.logs);
        host.refuse = None;
        assert!(!poller.poll(&mut host, &p, RETRY_MS - 1));
        assert!(poller.poll(&mut host, &p, RETRY_MS));
    }
}
