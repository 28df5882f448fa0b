//! The root context's decisions: the policy it serves, its key-journal poll, and its part in
//! delivering usage batches — on its timer, when a call's answer comes back, and when Envoy
//! lets it go.
//!
//! Envoy makes a root context per VM and per policy push. The Wasm adapter keeps a
//! [`RootState`] in each and calls it from the matching Proxy-Wasm callbacks, with the VM's
//! [`Delivery`] (which outlives root contexts) and a [`ControlHost`] that carries out the calls.

use crate::host::ControlHost;
use crate::journal::Poller;
use crate::ledger::Delivery;
use crate::snapshot::Policy;
use std::rc::Rc;

/// One root context's state.
#[derive(Debug)]
pub struct RootState {
    /// The root context's id: answers to its calls come back to it, with tokens numbered per
    /// root context.
    id: u32,
    /// The policy requests that start now get (`None` until one arrives).
    policy: Option<Rc<Policy>>,
    /// Envoy is letting this root go: deliver what is queued, then say so.
    closing: bool,
    /// The long poll for key changes since this root's snapshot.
    journal: Poller,
}

impl RootState {
    /// The state of root context `id`, before its configuration.
    pub fn new(id: u32) -> Self {
        Self { id, policy: None, closing: false, journal: Poller::default() }
    }

    /// The policy for requests that start now: the configured one, with the key changes of
    /// the latest journal answer.
    pub fn policy(&self) -> Option<&Rc<Policy>> {
        self.policy.as_ref()
    }

    /// Whether Envoy is letting this root go.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// A configuration arrived: this root takes over usage delivery from the one it replaces,
    /// whether or not the configuration is accepted (the newest root context is the one Envoy
    /// keeps).
    pub fn adopt(&self, delivery: &mut Delivery) {
        delivery.adopt(self.id);
    }

    /// The configuration's policy (`None`: no policy yet, API requests fail closed); a poll of
    /// the key journal starts at once.
    pub fn set_policy(&mut self, host: &mut impl ControlHost, policy: Option<Policy>, now_ms: i64) {
        self.policy = policy.map(Rc::new);
        self.poll(host, now_ms);
    }

    /// The timer: sends the next usage batch if one is due, and keeps a journal poll open.
    pub fn on_tick(&mut self, host: &mut impl ControlHost, delivery: &mut Delivery, now_ms: i64) {
        if let Some(p) = &self.policy {
            delivery.flush(host, &p.settings.ledger, self.id, now_ms);
        }
        self.poll(host, now_ms);
    }

    /// The answer to call `token` (its body `body_size` bytes) came back. True when this root
    /// is closing and has nothing left to wait for: the adapter then tells Envoy it is done.
    pub fn on_call_response(
        &mut self,
        host: &mut impl ControlHost,
        delivery: &mut Delivery,
        token: u32,
        body_size: usize,
        now_ms: i64,
    ) -> bool {
        if self.journal.answers(token) {
            if let Some(p) = self.policy.clone() {
                if let Some(changed) = self.journal.on_response(host, &p, body_size, now_ms) {
                    self.policy = Some(Rc::new(changed));
                }
            }
            self.poll(host, now_ms);
            return false;
        }
        let acknowledged = delivery.on_response(host, token, self.id, now_ms);
        if !self.closing {
            return false;
        }
        // Keep handing over what is left while the control plane takes it, then let go.
        let sent = acknowledged && self.flush(host, delivery, now_ms);
        !sent && !delivery.awaiting(self.id)
    }

    /// Envoy is letting this root go (listener drained, Envoy stopping, or a newer policy took
    /// over). Without a successor it hands over the queued events first; with one, the
    /// successor sends them and this root sends nothing. True when it can go at once; false
    /// while a batch call of its own awaits its answer (deleting it then would lose the
    /// answer), until [`RootState::on_call_response`] says it is done.
    pub fn on_done(&mut self, host: &mut impl ControlHost, delivery: &mut Delivery, now_ms: i64) -> bool {
        self.closing = true;
        let sent = self.flush(host, delivery, now_ms);
        !(sent || delivery.awaiting(self.id))
    }

    fn flush(&self, host: &mut impl ControlHost, delivery: &mut Delivery, now_ms: i64) -> bool {
        self.policy.as_ref().is_some_and(|p| delivery.flush(host, &p.settings.ledger, self.id, now_ms))
    }

    /// Keeps one journal poll open while this root serves.
    fn poll(&mut self, host: &mut impl ControlHost, now_ms: i64) {
        if let (Some(p), false) = (&self.policy, self.closing) {
            self.journal.poll(host, p, now_ms);
        }
    }
}

#[cfg(test)]
mod tests;
