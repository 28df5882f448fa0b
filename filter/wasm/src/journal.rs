//! The root context's long poll of the control plane's key journal ([`aqueduct_policy::journal`]).
//!
//! Each root context (one per VM and policy push) keeps one poll open; the answer holds every key
//! change since its snapshot and becomes a new [`Policy`] for requests that start after it.

use aqueduct_policy::journal::{poll_path, JournalDelta, POLL_HOLD_MS};
use aqueduct_policy::ledger::SECRET_HEADER;
use aqueduct_policy::Policy;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use std::time::Duration;

/// Wait after a failed poll before the next (the snapshot path still works meanwhile).
const RETRY_MS: i64 = 1_000;
/// Largest journal answer read.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// One root context's poll state.
#[derive(Debug, Default)]
pub struct Poller {
    /// The poll in flight (its hostcall token).
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

    /// Starts a poll unless one is open, the policy has no journal, or a retry is not yet due.
    pub fn poll(&mut self, policy: &Policy, now_ms: i64) {
        let Some(mark) = policy.journal else { return };
        let cp = &policy.settings.ledger;
        if self.in_flight.is_some() || now_ms < self.not_before_ms || cp.cluster.is_empty() {
            return;
        }
        let path = poll_path(mark, policy.overlay().seq.max(mark.seq));
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", cp.authority.as_str()),
            (SECRET_HEADER, cp.secret.as_str()),
        ];
        // Longer than the control plane holds a poll, so an idle poll ends with its 204.
        let timeout = Duration::from_millis(POLL_HOLD_MS + 10_000);
        match hostcalls::dispatch_http_call(&cp.cluster, headers, None, vec![], timeout) {
            Ok(token) => self.in_flight = Some(token),
            Err(s) => self.failed(now_ms, &format!("not sent: {s:?}")),
        }
    }

    /// Handles the answer to the poll; a new policy when it brought changes.
    pub fn on_response(&mut self, policy: &Policy, body_size: usize, now_ms: i64) -> Option<Policy> {
        self.in_flight = None;
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status").ok().flatten();
        match status.as_deref() {
            Some(b"200") => {}
            // Held for the whole period without a change: ask again.
            Some(b"204") => {
                self.failures = 0;
                return None;
            }
            // 409: the journal no longer reaches back to this snapshot (another control-plane
            // process, or pruned); a newer snapshot is on its way. Anything else is a failure.
            other => {
                let status = other.map(|s| String::from_utf8_lossy(s).into_owned());
                self.failed(now_ms, &format!("status {}", status.as_deref().unwrap_or("none (no answer)")));
                return None;
            }
        }
        if body_size > MAX_ANSWER_BYTES {
            self.failed(now_ms, &format!("answer of {body_size} bytes is too large"));
            return None;
        }
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten();
        let applied = serde_json::from_slice::<JournalDelta>(body.as_deref().unwrap_or_default())
            .map_err(aqueduct_policy::journal::JournalError::from)
            .and_then(|delta| policy.with_changes(&delta));
        match applied {
            Ok(changed) => {
                self.failures = 0;
                if changed.overlay().seq != policy.overlay().seq {
                    log::info!(
                        "aqueduct: key changes applied to policy version {} (journal position {}, {} keys added since the snapshot)",
                        policy.version,
                        changed.overlay().seq,
                        changed.overlay().live_count()
                    );
                }
                Some(changed)
            }
            Err(e) => {
                self.failed(now_ms, &e.to_string());
                None
            }
        }
    }

    fn failed(&mut self, now_ms: i64, why: &str) {
        self.failures += 1;
        self.not_before_ms = now_ms + RETRY_MS;
        if self.failures == 1 {
            log::warn!("aqueduct: key journal poll failed ({why}); key changes wait for the next snapshot, retrying every second");
        }
    }
}
