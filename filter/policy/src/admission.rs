//! Rate-limit admission across every cap that applies to a request, over shared state.
//!
//! Each cap is one [`Window`] in shared data, updated with compare-and-swap so all Envoy
//! workers count together. A request is admitted only if every cap has room; when a later cap
//! refuses, the charges already made on earlier caps are taken back.

use crate::host::Shared;
use crate::limits::{Denied, Dim, Dims, Window, REQUEST_SCALE, SLOT_MS, WINDOW_MS};
use std::collections::HashMap;
use std::sync::Arc;

/// Attempts of one compare-and-swap update before giving up (contention is brief: a worker
/// holds no lock between its read and its write).
const CAS_ATTEMPTS: usize = 64;

/// Prefix of the filter's rate-limit windows in shared data. It names the window format: a
/// release that changes the format changes the prefix, so while an old VM drains next to a new
/// one (an upgrade) neither reads the other's windows as empty and overwrites them.
pub const KEY_PREFIX: &str = "aqueduct.rl2.";

/// Shared-data key listing every window created, for the sweeper (shared data cannot be
/// enumerated).
pub const INDEX_KEY: &str = "aqueduct.rl2.index";

/// Shared-data key holding when the last sweep started (unix ms), so one VM sweeps at a time.
pub const SWEEP_KEY: &str = "aqueduct.rl2.swept";

/// How often idle windows are swept.
pub const SWEEP_EVERY_MS: i64 = 30_000;

/// One cap on a request: a window and its per-minute limits (requests in whole requests).
/// Names are shared, not copied: each request takes the caps of its principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    /// Shared-data key of the window.
    pub key: Arc<str>,
    /// What the cap belongs to, for messages (`org 3`, `key 17`).
    pub label: Arc<str>,
    /// Limits per dimension (requests in whole requests).
    pub limits: Dims<Option<u64>>,
}

impl Cap {
    /// The window's limits per limited dimension (requests in thousandths), without
    /// allocating: the first `n` entries of the array.
    fn window_limits(&self) -> ([(Dim, u64); 3], usize) {
        let mut out = [(Dim::Requests, 0); 3];
        let mut n = 0;
        for (d, limit) in self.limits {
            if let Some(l) = limit {
                out[n] = (d, if d == Dim::Requests { l.saturating_mul(REQUEST_SCALE) } else { l });
                n += 1;
            }
        }
        (out, n)
    }
}

/// A request refused because a cap is full (answered as
/// [`crate::error::Refusal::RateLimited`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// The cap that was full.
    pub label: Arc<str>,
    /// Its full dimension.
    pub dim: Dim,
    /// Its limit in that dimension (whole requests or tokens).
    pub limit: u64,
    /// Milliseconds until a retry can pass.
    pub retry_after_ms: i64,
}

/// Rate-limit state of one dimension for response headers (the tightest cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DimStatus {
    /// The limit (whole requests or tokens).
    pub limit: u64,
    /// What is left after this request.
    pub remaining: u64,
    /// Milliseconds until the full budget is back.
    pub reset_ms: i64,
}

/// An admitted request's charges, to reconcile when its usage is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// Keys charged, with their cap's limits: only the dimensions limited are charged (a
    /// window never carries a reservation it does not need, so it has nothing to reconcile).
    pub keys: Vec<(Arc<str>, Dims<Option<u64>>)>,
    /// Per entry of `keys`, whether the charge came out of the worker's lease on the window
    /// (already counted in shared data) rather than a write of its own.
    pub leased: Vec<bool>,
    /// When.
    pub at_ms: i64,
    /// What was charged per dimension (requests in thousandths).
    pub cost: Dims<u64>,
    /// Per dimension, the tightest cap after the charge (None where nothing is limited).
    pub status: Dims<Option<DimStatus>>,
}

/// A refund smaller than a cap's limit divided by this (0.1 %) is not written on its own: the
/// worker carries it to its next write to the window (see [`Worker`]).
pub const DEFER_REFUNDS_BELOW: u64 = 1_000;

/// A worker leases a window's budget in slices of its limit divided by this (0.1 %).
pub const LEASE_FRACTION: u64 = 1_000;

/// Leases stop once a window would hold more than its limit less this fraction (1 %): near the
/// limit every request is admitted against the window itself, one write each, so budget a
/// worker holds unspent never refuses another worker's request.
pub const LEASE_HEADROOM: u64 = 100;

/// The largest slice leased at once in a dimension (a window's per-slot counters are 32-bit;
/// with limits this high a larger slice would save nothing).
pub const MAX_LEASE: u64 = 1 << 24;

/// What one worker (one Wasm VM) holds of the shared windows: token refunds not written yet,
/// and budget leased for the current second.
///
/// **Refunds.** Settling a request costs a shared-data read and write per token-limited window,
/// as much as admitting it. Most refunds are tiny next to an org's or a user's limit (a prompt
/// estimated at 256 tokens that was 250), so those wait: the worker's next write to the window
/// carries them in the same compare-and-swap, and its timer ([`flush`]) writes the rest within
/// 200 ms. Only refunds wait, never debts, and only below [`DEFER_REFUNDS_BELOW`].
///
/// **Leases.** Under load, admitting every request with a read and a write of each window is
/// most of what rate limiting costs. When a window is far from its limit, the write that admits
/// a request also charges a slice of the limit ([`LEASE_FRACTION`]) to the worker, and the
/// worker's next requests in the same one-second slot are admitted from that slice without
/// touching shared data. The slice is charged to the slot at once, as if spent at the slot's
/// end, so it never counts for less time than the requests it admits; what is left when the
/// slot ends is given back like a refund. Near the limit ([`LEASE_HEADROOM`]) there are no
/// leases and admission is exact.
///
/// So other workers see at most 0.1 % of a window's limit per worker more in use than there
/// is (plus refunds that wait), for at most a second and 200 ms — never less.
#[derive(Debug, Default)]
pub struct Worker {
    by_window: HashMap<Arc<str>, Vec<Refund>>,
    leases: HashMap<Arc<str>, Lease>,
}

/// Budget of one window charged to the worker for one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    /// The slot (unix seconds) the budget was charged to, and the only one it is spent in.
    slot: i64,
    /// Per dimension, what is left to spend (window units: requests in thousandths).
    left: Dims<u64>,
    /// Per dimension, what was leased.
    granted: Dims<u64>,
    /// Per dimension, what the window held at the lease after its own request, without the
    /// lease: with `granted - left` it gives the headers' figures.
    base: Dims<u64>,
    /// The cap's limits when leased: a policy push that changes them ends the lease.
    limits: Dims<Option<u64>>,
}

impl Lease {
    fn covers(&self, cap: &Cap, slot: i64, charge: Dims<u64>) -> bool {
        self.slot == slot && self.limits == cap.limits && self.left.zip(charge).all(|(left, c)| left >= c)
    }

    /// The leftover, as refunds to the lease's slot (as charged: at its end).
    fn leftover(&self) -> impl Iterator<Item = Refund> {
        let charged_at_ms = self.slot * SLOT_MS + SLOT_MS - 1;
        self.left.into_iter().filter(|(_, left)| *left > 0).map(move |(dim, amount)| Refund {
            dim,
            charged_at_ms,
            amount,
        })
    }
}

/// Units to give back to the slot a request (or a lease) was charged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refund {
    dim: Dim,
    /// When the request was charged (its slot receives the refund while it still counts).
    charged_at_ms: i64,
    amount: u64,
}

impl Worker {
    /// Refunds waiting (per window, slot and dimension).
    pub fn len(&self) -> usize {
        self.by_window.values().map(Vec::len).sum()
    }

    /// Whether no refund waits.
    pub fn is_empty(&self) -> bool {
        self.by_window.is_empty()
    }

    /// Windows the worker holds a lease on.
    pub fn leases(&self) -> usize {
        self.leases.len()
    }

    fn add(&mut self, key: &Arc<str>, refund: Refund) {
        let list = self.by_window.entry(key.clone()).or_default();
        // Refunds to one slot add up: a refund never moves the slot's expiry.
        let slot = refund.charged_at_ms.div_euclid(SLOT_MS);
        match list.iter_mut().find(|r| r.dim == refund.dim && r.charged_at_ms.div_euclid(SLOT_MS) == slot) {
            Some(r) => r.amount = r.amount.saturating_add(refund.amount),
            None => list.push(refund),
        }
    }

    fn take(&mut self, key: &str) -> Vec<Refund> {
        if self.by_window.is_empty() {
            return Vec::new();
        }
        self.by_window.remove(key).unwrap_or_default()
    }

    fn put_back(&mut self, key: &Arc<str>, refunds: Vec<Refund>) {
        for r in refunds {
            self.add(key, r);
        }
    }

    /// Ends the lease on `key`, its leftover becoming refunds.
    fn release(&mut self, key: &Arc<str>) {
        if let Some(lease) = self.leases.remove(key) {
            for r in lease.leftover() {
                self.add(key, r);
            }
        }
    }

    /// Ends the leases of slots before `now_ms`'s (all of them with `all`).
    fn release_expired(&mut self, now_ms: i64, all: bool) {
        let slot = now_ms.div_euclid(SLOT_MS);
        let ended: Vec<Arc<str>> =
            self.leases.iter().filter(|(_, l)| all || l.slot != slot).map(|(k, _)| k.clone()).collect();
        for key in ended {
            self.release(&key);
        }
    }
}

/// Per dimension, the slice to lease with a request that leaves `used` in a window with these
/// limits, or `None` when leasing would not pay or the window is near its limit.
fn lease_slice(limits: &[(Dim, u64)], charge: Dims<u64>, used: Dims<u64>) -> Option<Dims<u64>> {
    let mut slice = Dims::splat(0);
    for &(d, limit) in limits {
        let s = (limit / LEASE_FRACTION).min(MAX_LEASE);
        // A slice must admit at least two more such requests, and leave the headroom free.
        if s < charge[d].saturating_mul(2) || used[d].saturating_add(s) > limit - limit / LEASE_HEADROOM {
            return None;
        }
        slice[d] = s;
    }
    Some(slice)
}

fn apply(w: &mut Window, refunds: &[Refund], now_ms: i64) {
    for r in refunds {
        w.adjust(r.dim, -i64::try_from(r.amount).unwrap_or(i64::MAX), r.charged_at_ms, now_ms);
    }
}

/// Ends leases of past slots and writes every waiting refund (the adapter's timer calls this);
/// returns how many windows were written. A window that will not settle keeps its refunds for
/// the next call.
pub fn flush<S: Shared>(store: &mut S, refunds: &mut Worker, now_ms: i64) -> usize {
    refunds.release_expired(now_ms, false);
    let pending: Vec<(Arc<str>, Vec<Refund>)> = refunds.by_window.drain().collect();
    let mut written = 0;
    for (key, list) in pending {
        if update(store, &key, |w| apply(w, &list, now_ms)).is_some() {
            written += 1;
        } else {
            refunds.put_back(&key, list);
        }
    }
    written
}

fn update<S: Shared, T>(store: &mut S, key: &str, mut f: impl FnMut(&mut Window) -> T) -> Option<T> {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = match store.shared_get(key) {
            Some(v) => v,
            None => {
                store.shared_create(key, Window::default().as_bytes());
                register(store, key);
                continue;
            }
        };
        if bytes.is_empty() {
            // Swept earlier and in use again: back in the index.
            register(store, key);
        }
        let mut w = Window::from_vec(bytes);
        let out = f(&mut w);
        if store.shared_set(key, w.as_bytes(), cas) {
            return Some(out);
        }
    }
    None
}

/// Adds a window to the index (duplicates are harmless: the sweeper drops them).
fn register<S: Shared>(store: &mut S, key: &str) {
    for _ in 0..CAS_ATTEMPTS {
        let Some((mut index, cas)) = store.shared_get(INDEX_KEY) else {
            store.shared_create(INDEX_KEY, b"");
            continue;
        };
        index.extend_from_slice(key.as_bytes());
        index.push(b'\n');
        if store.shared_set(INDEX_KEY, &index, cas) {
            return;
        }
    }
}

/// Empties windows that count nothing any more, and forgets them. Shared data cannot delete a
/// key, but an empty value costs only its name; a window in use again is recreated from empty.
/// Runs at most once per [`SWEEP_EVERY_MS`] across all VMs; returns how many were emptied.
pub fn sweep<S: Shared>(store: &mut S, now_ms: i64) -> usize {
    let Some((last, cas)) = store.shared_get(SWEEP_KEY) else {
        store.shared_create(SWEEP_KEY, &now_ms.to_le_bytes());
        return 0;
    };
    let last = last.get(..8).and_then(|b| b.try_into().ok()).map_or(0, i64::from_le_bytes);
    if now_ms - last < SWEEP_EVERY_MS || !store.shared_set(SWEEP_KEY, &now_ms.to_le_bytes(), cas) {
        return 0;
    }
    let Some((index, _)) = store.shared_get(INDEX_KEY) else { return 0 };
    let mut keys: Vec<&[u8]> = index.split(|b| *b == b'\n').filter(|k| !k.is_empty()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut emptied = Vec::new();
    let mut keep = Vec::new();
    for key in keys {
        let Ok(name) = std::str::from_utf8(key) else { continue };
        match store.shared_get(name) {
            Some((v, cas)) if !v.is_empty() && Window::from_bytes(&v).is_idle(now_ms) => {
                if store.shared_set(name, b"", cas) {
                    emptied.push(name.to_string());
                } else {
                    keep.push(name.to_string());
                }
            }
            Some((v, _)) if v.is_empty() => {}
            Some(_) => keep.push(name.to_string()),
            None => {}
        }
    }
    // Drop the emptied names from the index, keeping any added meanwhile.
    for _ in 0..CAS_ATTEMPTS {
        let Some((current, cas)) = store.shared_get(INDEX_KEY) else { break };
        let mut next = Vec::with_capacity(current.len());
        for k in current.split(|b| *b == b'\n').filter(|k| !k.is_empty()) {
            if !emptied.iter().any(|e| e.as_bytes() == k) {
                next.extend_from_slice(k);
                next.push(b'\n');
            }
        }
        if store.shared_set(INDEX_KEY, &next, cas) {
            break;
        }
    }
    emptied.len()
}

/// Ends every lease (their leftovers become refunds) and writes what waits: for a VM that
/// stops serving, so its unspent budget goes back now rather than when its windows expire.
pub fn release_all<S: Shared>(store: &mut S, worker: &mut Worker, now_ms: i64) -> usize {
    worker.release_expired(now_ms, true);
    flush(store, worker, now_ms)
}

/// Admits a request costing `cost` against every cap, or refuses it charging nothing. With a
/// [`Worker`], refunds waiting for a window are written with the admission's own update of it,
/// and far from the limit budget is leased and spent without shared-data calls.
pub fn admit<S: Shared>(
    store: &mut S,
    mut worker: Option<&mut Worker>,
    caps: &[Cap],
    cost: Dims<u64>,
    now_ms: i64,
) -> Result<Admitted, Exceeded> {
    let mut admitted =
        Admitted { keys: Vec::new(), leased: Vec::new(), at_ms: now_ms, cost, status: Dims::splat(None) };
    let slot = now_ms.div_euclid(SLOT_MS);
    for cap in caps {
        let (limits, n) = cap.window_limits();
        let limits = &limits[..n];
        if limits.is_empty() {
            continue;
        }
        let charge = cap.limits.zip(cost).map(|(limit, c)| if limit.is_some() { c } else { 0 });
        if let Some(lease) = worker.as_deref_mut().and_then(|w| w.leases.get_mut(&cap.key)) {
            if lease.covers(cap, slot, charge) {
                for (d, c) in charge {
                    lease.left[d] -= c;
                }
                let lease = *lease;
                admitted.keys.push((cap.key.clone(), cap.limits));
                admitted.leased.push(true);
                let reset = lease.slot * SLOT_MS + SLOT_MS - 1 + WINDOW_MS - now_ms;
                for &(d, window_limit) in limits {
                    let used = lease.base[d].saturating_add(lease.granted[d].saturating_sub(lease.left[d]));
                    record_status(&mut admitted, cap, d, window_limit, used, reset);
                }
                continue;
            }
        }
        // A lease that cannot cover this request (or is from an earlier second) ends here: its
        // leftover goes back in the same write.
        let mut carried = Vec::new();
        if let Some(w) = worker.as_deref_mut() {
            w.release(&cap.key);
            carried = w.take(&cap.key);
        }
        let leasing = worker.is_some();
        let outcome = update(store, &cap.key, |w| {
            apply(w, &carried, now_ms);
            let (used, reset) = w.admit_with_status(limits, charge, now_ms)?;
            let slice = if leasing { lease_slice(limits, charge, used) } else { None };
            if let Some(slice) = slice {
                // Charged as at the slot's end: the lease counts at least as long as any
                // request it admits.
                for (d, s) in slice.into_iter().filter(|(_, s)| *s > 0) {
                    w.adjust(d, i64::try_from(s).unwrap_or(i64::MAX), slot * SLOT_MS + SLOT_MS - 1, now_ms);
                }
            }
            Ok((used, reset, slice))
        });
        if outcome.is_none() {
            if let Some(w) = worker.as_deref_mut() {
                w.put_back(&cap.key, carried);
            }
        }
        match outcome {
            Some(Ok((used, reset, slice))) => {
                admitted.keys.push((cap.key.clone(), cap.limits));
                admitted.leased.push(false);
                if let (Some(granted), Some(w)) = (slice, worker.as_deref_mut()) {
                    w.leases.insert(
                        cap.key.clone(),
                        Lease { slot, left: granted, granted, base: used, limits: cap.limits },
                    );
                }
                for &(d, window_limit) in limits {
                    record_status(&mut admitted, cap, d, window_limit, used[d], reset[d]);
                }
            }
            Some(Err(Denied { dim, retry_after_ms })) => {
                rollback(store, worker, &admitted);
                return Err(Exceeded {
                    label: cap.label.clone(),
                    dim,
                    limit: cap.limits[dim].unwrap_or(0),
                    retry_after_ms,
                });
            }
            // Shared data would not settle: count the request as admitted rather than fail
            // closed on contention; the other caps still hold.
            None => {}
        }
    }
    Ok(admitted)
}

/// Keeps the cap's figures for `d` in the headers if it is the tightest so far.
fn record_status(admitted: &mut Admitted, cap: &Cap, d: Dim, window_limit: u64, used: u64, reset_ms: i64) {
    let scale = if d == Dim::Requests { REQUEST_SCALE } else { 1 };
    let remaining = window_limit.saturating_sub(used);
    let s = DimStatus {
        limit: cap.limits[d].unwrap_or(0),
        remaining: remaining / scale,
        reset_ms: reset_ms.clamp(0, WINDOW_MS),
    };
    let slot = &mut admitted.status[d];
    if slot.is_none_or(|cur| s.remaining < cur.remaining) {
        *slot = Some(s);
    }
}

/// Takes back a refused request's charges on the caps that admitted it: into the lease it was
/// spent from, or written back to the window.
fn rollback<S: Shared>(store: &mut S, mut worker: Option<&mut Worker>, admitted: &Admitted) {
    for ((key, limits), leased) in admitted.keys.iter().zip(&admitted.leased) {
        let charged = limits.zip(admitted.cost).map(|(limit, c)| if limit.is_some() { c } else { 0 });
        if *leased {
            if let Some(lease) = worker.as_deref_mut().and_then(|w| w.leases.get_mut(key)) {
                // Never more than was leased: were the lease renewed meanwhile (the same
                // window twice in one request), the charge stays counted, which is safe.
                for (d, c) in charged {
                    lease.left[d] = lease.left[d].saturating_add(c).min(lease.granted[d]);
                }
            }
            continue;
        }
        update(store, key, |w| {
            for (d, c) in charged.into_iter().filter(|(d, _)| limits[*d].is_some()) {
                w.adjust(d, -i64::try_from(c).unwrap_or(i64::MAX), admitted.at_ms, admitted.at_ms);
            }
        });
    }
}

/// Reconciles an admitted request's token reservations with its real usage.
///
/// Written at once, except refunds below 0.1 % of the cap's limit when `refunds` is given (see
/// [`Worker`]): the next request may land on another Envoy worker, and a refund it did not
/// see would refuse it for nothing (a key with 1,000 output tokens a minute and a default
/// reservation of 4,096 would be refused right after a request that used ten).
pub fn reconcile<S: Shared>(
    store: &mut S,
    mut refunds: Option<&mut Worker>,
    admitted: &Admitted,
    input: u64,
    output: u64,
    now_ms: i64,
) {
    let delta = |actual: u64, reserved: u64| {
        i64::try_from(actual).unwrap_or(i64::MAX) - i64::try_from(reserved).unwrap_or(i64::MAX)
    };
    let din = delta(input, admitted.cost[Dim::InputTokens]);
    let dout = delta(output, admitted.cost[Dim::OutputTokens]);
    if din == 0 && dout == 0 {
        return;
    }
    // Windows that limit no token dimension hold no reservation: nothing to do there (for
    // the common requests-only cap this saves a shared-data round trip per request).
    for (key, limits) in
        admitted.keys.iter().filter(|(_, l)| l[Dim::InputTokens].is_some() || l[Dim::OutputTokens].is_some())
    {
        let changes = [(Dim::InputTokens, din), (Dim::OutputTokens, dout)]
            .map(|(d, delta)| (d, if limits[d].is_some() { delta } else { 0 }));
        if let Some(r) = refunds.as_deref_mut() {
            let small = |(d, delta): (Dim, i64)| {
                delta == 0
                    || (delta < 0 && delta.unsigned_abs().saturating_mul(DEFER_REFUNDS_BELOW) < limits[d].unwrap_or(0))
            };
            if changes.iter().all(|c| small(*c)) {
                for (dim, delta) in changes.into_iter().filter(|(_, delta)| *delta < 0) {
                    r.add(key, Refund { dim, charged_at_ms: admitted.at_ms, amount: delta.unsigned_abs() });
                }
                continue;
            }
        }
        let carried = refunds.as_deref_mut().map(|r| r.take(key)).unwrap_or_default();
        let written = update(store, key, |w| {
            apply(w, &carried, now_ms);
            for (d, delta) in changes.into_iter().filter(|(_, delta)| *delta != 0) {
                w.adjust(d, delta, admitted.at_ms, now_ms);
            }
        });
        if written.is_none() {
            if let Some(r) = refunds.as_deref_mut() {
                r.put_back(key, carried);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::host::MemShared;

    fn cap(key: &str, rpm: Option<u64>, itpm: Option<u64>) -> Cap {
        Cap { key: key.into(), label: key.into(), limits: Dims::new(rpm, itpm, None) }
    }

    #[test]
    fn every_cap_must_have_room_and_refusals_roll_back() {
        let mut s = MemShared::default();
        let caps = [cap("key", Some(10), None), cap("org", Some(2), None)];
        let one = Dims::new(REQUEST_SCALE, 0, 0);
        assert!(admit(&mut s, None, &caps, one, 0).is_ok());
        assert!(admit(&mut s, None, &caps, one, 0).is_ok());
        let r = admit(&mut s, None, &caps, one, 0).unwrap_err();
        assert_eq!((&*r.label, r.dim, r.limit), ("org", Dim::Requests, 2));
        let key = Window::from_bytes(&s.data["key"].0).used(Dim::Requests, 0);
        assert_eq!(key, 2 * REQUEST_SCALE, "the key's charge for the refused request was taken back");
    }

    #[test]
    fn headers_report_the_tightest_cap() {
        let mut s = MemShared::default();
        let caps = [cap("key", Some(10), Some(1000)), cap("org", Some(5), Some(100_000))];
        let a = admit(&mut s, None, &caps, Dims::new(REQUEST_SCALE, 100, 0), 0).unwrap();
        assert_eq!(a.status[Dim::Requests], Some(DimStatus { limit: 5, remaining: 4, reset_ms: 60_000 }));
        assert_eq!(a.status[Dim::InputTokens].unwrap().limit, 1000);
        assert_eq!(a.status[Dim::InputTokens].unwrap().remaining, 900);
        assert!(a.status[Dim::OutputTokens].is_none());
    }

    #[test]
    fn survives_contention_and_reconciles() {
        let mut s = MemShared { conflicts: 10, ..Default::default() };
        let caps = [cap("key", None, Some(1000))];
        let a = admit(&mut s, None, &caps, Dims::new(0, 800, 0), 0).unwrap();
        assert_eq!(Window::from_bytes(&s.data["key"].0).used(Dim::InputTokens, 0), 800);
        reconcile(&mut s, None, &a, 50, 0, 1_000);
        assert_eq!(Window::from_bytes(&s.data["key"].0).used(Dim::InputTokens, 1_000), 50);
        assert!(admit(&mut s, None, &caps, Dims::new(0, 10, 0), 1_000).is_ok());
    }

    #[test]
    fn idle_windows_are_swept_and_come_back_empty() {
        let mut s = MemShared::default();
        let caps = [cap("aqueduct.rl2.k.1", Some(1), None), cap("aqueduct.rl2.k.2", Some(1), None)];
        admit(&mut s, None, &caps[..1], Dims::new(REQUEST_SCALE, 0, 0), 0).unwrap();
        admit(&mut s, None, &caps[1..], Dims::new(REQUEST_SCALE, 0, 0), 50_000).unwrap();
        assert_eq!(sweep(&mut s, 0), 0, "the first call only starts the clock");
        assert_eq!(sweep(&mut s, 10_000), 0, "not yet time");
        // At 70 s the first window is idle, the second still counts.
        assert_eq!(sweep(&mut s, 70_000), 1);
        assert!(s.data["aqueduct.rl2.k.1"].0.is_empty());
        assert_eq!(s.data[INDEX_KEY].0, b"aqueduct.rl2.k.2\n");
        assert!(
            admit(&mut s, None, &caps[1..], Dims::new(REQUEST_SCALE, 0, 0), 70_000).is_err(),
            "live counts untouched"
        );
        // An emptied window works again from zero.
        assert!(admit(&mut s, None, &caps[..1], Dims::new(REQUEST_SCALE, 0, 0), 71_000).is_ok());
        assert!(admit(&mut s, None, &caps[..1], Dims::new(REQUEST_SCALE, 0, 0), 71_000).is_err());
        assert!(String::from_utf8_lossy(&s.data[INDEX_KEY].0).contains("aqueduct.rl2.k.1"), "re-registered");
    }

    #[test]
    fn windows_carry_only_the_dimensions_their_cap_limits() {
        let mut s = MemShared::default();
        let caps = [cap("reqs", Some(10), None), cap("toks", None, Some(1_000))];
        let a = admit(&mut s, None, &caps, Dims::new(REQUEST_SCALE, 300, 0), 0).unwrap();
        let mut reqs = Window::from_bytes(&s.data["reqs"].0);
        assert_eq!((reqs.used(Dim::Requests, 0), reqs.used(Dim::InputTokens, 0)), (REQUEST_SCALE, 0));
        let before = s.data["reqs"].1;
        reconcile(&mut s, None, &a, 20, 0, 10);
        assert_eq!(s.data["reqs"].1, before, "a requests-only window is not touched by settlement");
        assert_eq!(Window::from_bytes(&s.data["toks"].0).used(Dim::InputTokens, 10), 20);
    }

    #[test]
    fn small_refunds_ride_on_the_next_admission_and_large_ones_are_written_at_once() {
        let mut s = MemShared::default();
        let mut r = Worker::default();
        // 0.1 % of 1,000,000 is 1,000: a refund of 999 waits, one of 1,000 does not.
        let caps = [cap("org", None, Some(1_000_000))];
        let a = admit(&mut s, Some(&mut r), &caps, Dims::new(0, 2_000, 0), 500).unwrap();
        let version = s.data["org"].1;
        reconcile(&mut s, Some(&mut r), &a, 1_001, 0, 900);
        assert_eq!(s.data["org"].1, version, "a small refund is not written on its own");
        assert_eq!(r.len(), 1);
        let used = |s: &MemShared, at| Window::from_bytes(&s.data["org"].0).used(Dim::InputTokens, at);
        assert_eq!(used(&s, 900), 2_000, "until it is carried, other workers see the reservation");
        // The next admission on the window carries it, in the same write.
        admit(&mut s, Some(&mut r), &caps, Dims::new(0, 10, 0), 1_200).unwrap();
        assert_eq!(s.data["org"].1, version + 1, "one write for admission and refund");
        assert!(r.is_empty());
        // (Far from the limit, that write also leased a slice of 1,000 tokens.)
        assert_eq!(used(&s, 1_200), 1_001 + 10 + 1_000);
        // A refund of 0.1 % or more, and any debt, is written at once.
        let b = admit(&mut s, Some(&mut r), &caps, Dims::new(0, 5_000, 0), 2_000).unwrap();
        reconcile(&mut s, Some(&mut r), &b, 4_000, 0, 2_100);
        assert!(r.is_empty());
        assert_eq!(used(&s, 2_100), 1_011 + 4_000, "the lease of the second before went back");
        let c = admit(&mut s, Some(&mut r), &caps, Dims::new(0, 100, 0), 3_000).unwrap();
        reconcile(&mut s, Some(&mut r), &c, 150, 0, 3_100);
        assert!(r.is_empty(), "a debt never waits");
        assert_eq!(used(&s, 3_100), 5_011 + 150 + 1_000);
    }

    #[test]
    fn waiting_refunds_are_flushed_and_survive_contention() {
        let mut s = MemShared::default();
        let mut r = Worker::default();
        let caps = [cap("user", Some(1_000), Some(1_000_000)), cap("org", None, Some(1_000_000))];
        let mut admitted = Vec::new();
        for i in 0..3 {
            admitted.push(admit(&mut s, Some(&mut r), &caps, Dims::new(REQUEST_SCALE, 300, 0), 1_000 + i).unwrap());
        }
        for (i, a) in admitted.iter().enumerate() {
            reconcile(&mut s, Some(&mut r), a, 200, 0, 1_500 + i as i64);
        }
        assert_eq!(r.len(), 2, "refunds to one slot add up, per window");
        // The shared data will not take a write: the refunds stay for the next flush.
        s.conflicts = usize::MAX;
        assert_eq!(flush(&mut s, &mut r, 2_000), 0);
        assert_eq!(r.len(), 2);
        s.conflicts = 0;
        assert_eq!(flush(&mut s, &mut r, 2_000), 2);
        assert!(r.is_empty());
        for key in ["user", "org"] {
            assert_eq!(Window::from_bytes(&s.data[key].0).used(Dim::InputTokens, 2_000), 600, "{key}");
        }
        // A requests-only window never holds a reservation, so nothing waits for it.
        let caps = [cap("key", Some(5), None)];
        let a = admit(&mut s, Some(&mut r), &caps, Dims::new(REQUEST_SCALE, 300, 0), 3_000).unwrap();
        reconcile(&mut s, Some(&mut r), &a, 1, 0, 3_100);
        assert!(r.is_empty());
    }

    #[test]
    fn caps_without_limits_are_skipped() {
        let mut s = MemShared::default();
        let a = admit(&mut s, None, &[cap("none", None, None)], Dims::new(REQUEST_SCALE, 1, 1), 0).unwrap();
        assert!(a.keys.is_empty() && s.data.is_empty());
    }
    fn used(s: &MemShared, key: &str, dim: Dim, at: i64) -> u64 {
        Window::from_bytes(&s.data[key].0).used(dim, at)
    }

    #[test]
    fn far_from_the_limit_a_lease_admits_without_shared_data_calls() {
        let mut s = MemShared::default();
        let mut w = Worker::default();
        // 1,000,000 requests a minute: slices of 1,000 requests; a billion tokens: of 1,000,000.
        let caps = [cap("org", Some(1_000_000), Some(1_000_000_000))];
        let cost = Dims::new(REQUEST_SCALE, 300, 0);
        let first = admit(&mut s, Some(&mut w), &caps, cost, 500).unwrap();
        assert_eq!(first.leased, [false]);
        assert_eq!(first.status[Dim::Requests].unwrap().remaining, 999_999);
        let version = s.data["org"].1;
        assert_eq!(used(&s, "org", Dim::Requests, 500), 1_001 * REQUEST_SCALE, "the slice is charged at once");
        assert_eq!(used(&s, "org", Dim::InputTokens, 500), 1_000_300);
        for i in 1..=10 {
            let a = admit(&mut s, Some(&mut w), &caps, cost, 500 + i).unwrap();
            assert_eq!(a.leased, [true]);
            assert_eq!(a.status[Dim::Requests].unwrap().remaining, 999_999 - i as u64, "headers count each request");
            assert_eq!(a.status[Dim::InputTokens].unwrap().remaining, 1_000_000_000 - 300 * (i as u64 + 1));
        }
        assert_eq!(s.data["org"].1, version, "no shared-data write while the lease lasts");
        // New limits (a policy push) end the lease: the next request is admitted against them.
        let lowered = [cap("org", Some(5), Some(1_000_000_000))];
        assert!(admit(&mut s, Some(&mut w), &lowered, cost, 600).is_err(), "11 of 5 in use");
        assert_eq!(w.leases(), 0);
        assert_eq!(used(&s, "org", Dim::Requests, 600), 11 * REQUEST_SCALE, "the leftover went back");
        let version = s.data["org"].1;
        // The next second needs a new lease; the old one's leftover goes back in the same write.
        let a = admit(&mut s, Some(&mut w), &caps, cost, 1_200).unwrap();
        assert_eq!(a.leased, [false]);
        assert_eq!(s.data["org"].1, version + 1);
        assert_eq!(used(&s, "org", Dim::Requests, 1_200), (12 + 1_000) * REQUEST_SCALE);
        assert_eq!(used(&s, "org", Dim::InputTokens, 1_200), 12 * 300 + 1_000_000);
        // The lease counts as long as the requests it admitted: to the end of their slot.
        assert_eq!(used(&s, "org", Dim::Requests, 60_998), (12 + 1_000) * REQUEST_SCALE);
        assert_eq!(used(&s, "org", Dim::Requests, 61_000), (1 + 1_000) * REQUEST_SCALE);
    }

    #[test]
    fn flush_ends_past_leases_and_release_all_ends_every_lease() {
        let mut s = MemShared::default();
        let mut w = Worker::default();
        let caps = [cap("org", Some(1_000_000), None)];
        admit(&mut s, Some(&mut w), &caps, Dims::new(REQUEST_SCALE, 0, 0), 500).unwrap();
        admit(&mut s, Some(&mut w), &caps, Dims::new(REQUEST_SCALE, 0, 0), 600).unwrap();
        assert_eq!(flush(&mut s, &mut w, 900), 0, "a lease of the current second stays");
        assert_eq!(w.leases(), 1);
        assert_eq!(flush(&mut s, &mut w, 1_100), 1);
        assert_eq!((w.leases(), w.len()), (0, 0));
        assert_eq!(used(&s, "org", Dim::Requests, 1_100), 2 * REQUEST_SCALE);
        admit(&mut s, Some(&mut w), &caps, Dims::new(REQUEST_SCALE, 0, 0), 1_500).unwrap();
        assert_eq!(release_all(&mut s, &mut w, 1_600), 1);
        assert_eq!(used(&s, "org", Dim::Requests, 1_600), 3 * REQUEST_SCALE);
        // A write that does not settle keeps the leftover for the next flush.
        admit(&mut s, Some(&mut w), &caps, Dims::new(REQUEST_SCALE, 0, 0), 2_500).unwrap();
        s.conflicts = usize::MAX;
        assert_eq!(flush(&mut s, &mut w, 3_000), 0);
        assert_eq!((w.leases(), w.len()), (0, 1));
        s.conflicts = 0;
        assert_eq!(flush(&mut s, &mut w, 3_000), 1);
        assert_eq!(used(&s, "org", Dim::Requests, 3_000), 4 * REQUEST_SCALE);
    }

    #[test]
    fn a_refused_request_gives_its_charge_back_to_the_lease() {
        let mut s = MemShared::default();
        let mut w = Worker::default();
        let caps = [cap("org", Some(1_000_000), None), cap("key", Some(1), None)];
        admit(&mut s, Some(&mut w), &caps, Dims::new(REQUEST_SCALE, 0, 0), 0).unwrap();
        let r = admit(&mut s, Some(&mut w), &caps, Dims::new(REQUEST_SCALE, 0, 0), 10).unwrap_err();
        assert_eq!(&*r.label, "key");
        assert_eq!(w.leases["org"].left[Dim::Requests], 1_000 * REQUEST_SCALE, "the org's lease is whole again");
        release_all(&mut s, &mut w, 20);
        assert_eq!(used(&s, "org", Dim::Requests, 20), REQUEST_SCALE);
    }

    #[test]
    fn one_window_twice_in_a_request_keeps_the_lease_consistent() {
        let mut s = MemShared::default();
        let mut w = Worker::default();
        let org = cap("org", Some(1_000_000), None);
        admit(&mut s, Some(&mut w), std::slice::from_ref(&org), Dims::new(REQUEST_SCALE, 0, 0), 0).unwrap();
        // The second time the lease is spent out, the window is written and the lease renewed;
        // then a full cap refuses and both charges are taken back.
        w.leases.get_mut("org").unwrap().left[Dim::Requests] = REQUEST_SCALE;
        let caps = [org.clone(), org, cap("key", Some(1), None), cap("key", Some(1), None)];
        assert!(admit(&mut s, Some(&mut w), &caps, Dims::new(REQUEST_SCALE, 0, 0), 10).is_err());
        let lease = w.leases["org"];
        assert!(lease.left[Dim::Requests] <= lease.granted[Dim::Requests]);
        let a = admit(&mut s, Some(&mut w), &caps[..1], Dims::new(REQUEST_SCALE, 0, 0), 20).unwrap();
        assert!(a.status[Dim::Requests].unwrap().remaining < 1_000_000);
        release_all(&mut s, &mut w, 30);
        // Taking back the renewed lease's charge only up to its size leaves it counted: never
        // less than used.
        assert!(used(&s, "org", Dim::Requests, 30) >= 3 * REQUEST_SCALE);
    }

    #[test]
    fn no_lease_when_it_would_not_pay_or_the_window_is_near_its_limit() {
        let mut s = MemShared::default();
        let mut w = Worker::default();
        // A slice of 0.1 % of 1,000 requests is one request: not worth a lease.
        admit(&mut s, Some(&mut w), &[cap("small", Some(1_000), None)], Dims::new(REQUEST_SCALE, 0, 0), 0).unwrap();
        // Nor when a request costs more than half a slice (1,000 of 1,000,000 tokens).
        admit(
            &mut s,
            Some(&mut w),
            &[cap("toks", Some(1_000_000), Some(1_000_000))],
            Dims::new(REQUEST_SCALE, 600, 0),
            0,
        )
        .unwrap();
        assert_eq!(w.leases(), 0);
        // Past 99 % in use less a slice, admission is exact.
        let caps = [cap("big", Some(100_000), None)];
        admit(&mut s, None, &caps, Dims::new(98_900 * REQUEST_SCALE, 0, 0), 0).unwrap();
        admit(&mut s, Some(&mut w), &caps, Dims::new(REQUEST_SCALE, 0, 0), 0).unwrap();
        assert_eq!(w.leases(), 0);
        assert_eq!(used(&s, "big", Dim::Requests, 0), 98_901 * REQUEST_SCALE);
    }

    #[test]
    fn workers_with_leases_admit_exactly_the_limit() {
        // Three workers share windows of 20,000 requests and 5,000,000 input tokens a minute;
        // requests of 1 to 2,000 tokens arrive at random workers within one second. Leases
        // must neither let more through nor refuse any while there is room.
        let mut s = MemShared::default();
        let mut workers: Vec<Worker> = (0..3).map(|_| Worker::default()).collect();
        let caps = [cap("user", Some(20_000), Some(5_000_000)), cap("org", Some(1_000_000), None)];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut requests, mut tokens, mut leased, mut refusals_in_a_row) = (0u64, 0u64, 0usize, 0);
        while refusals_in_a_row < 50 {
            let w = &mut workers[(next() % 3) as usize];
            let input = 1 + next() % 2_000;
            let now = (next() % 1_000) as i64;
            match admit(&mut s, Some(w), &caps, Dims::new(REQUEST_SCALE, input, 0), now) {
                Ok(a) => {
                    requests += 1;
                    tokens += input;
                    leased += usize::from(a.leased[0]);
                    refusals_in_a_row = 0;
                }
                Err(_) => refusals_in_a_row += 1,
            }
        }
        assert!(leased > 1_000, "most requests came out of leases ({leased})");
        // The window admits while it holds less than the limit: the last request may pass it.
        let full = requests >= 20_000 || tokens >= 5_000_000;
        assert!(full, "refused with room left: {requests} requests, {tokens} tokens");
        assert!(requests <= 20_000 && tokens < 5_000_000 + 2_000, "{requests} requests, {tokens} tokens");
        for w in &mut workers {
            release_all(&mut s, w, 999);
        }
        assert_eq!(used(&s, "user", Dim::InputTokens, 999), tokens, "every lease given back");
        assert_eq!(used(&s, "org", Dim::Requests, 999), requests * REQUEST_SCALE);
    }
}
