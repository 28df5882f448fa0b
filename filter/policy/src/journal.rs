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
//! Sans-IO: the Wasm adapter makes the calls; this module builds the query, reads the answer and
//! turns changes into an [`Overlay`].

use crate::snapshot::PrincipalSpec;
use crate::tokens::{TokenEntry, HASH_LEN};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Path of the control plane's journal endpoint (its own address only, like ingestion).
pub const JOURNAL_PATH: &str = "/internal/v1/keys";

/// How long the control plane holds a poll open when nothing changed.
pub const POLL_HOLD_MS: u64 = 20_000;

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
