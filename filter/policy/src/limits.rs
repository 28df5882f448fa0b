//! Rate-limit windows: requests, input tokens and output tokens per minute for one entity (a
//! key, user, service account, team or org), as a sliding window of one-second slots.
//!
//! Admission follows Aqueduct: a request is admitted while what the window holds is below the
//! limit (so a first request always passes), then its whole cost is added, which may take the
//! window past the limit — that excess is debt that keeps later requests out until it slides
//! away. Token costs are reservations at admission, reconciled with real usage later
//! ([`Window::adjust`]).
//!
//! Each slot also remembers when within its second it was last charged, and counts until that
//! moment is a minute old. So everything charged within the last 60 s is always counted (never
//! more than the limit is admitted in any 60-second span), a request alone in its slot stops
//! counting exactly 60 s after it was made, and one sharing a slot with later requests at most a
//! second after that. Time is a parameter (ms):
//! - limit 3 at cost ½ (multiplier 2.0): six pass, the seventh is refused;
//! - limit 3 at cost 2 (multiplier 0.5): two pass, the third is refused;
//! - limit 1: the second request within the minute is refused; one a minute later passes.
//!
//! The state is 862 bytes, one Proxy-Wasm shared-data value updated with compare-and-swap.

/// Slot width.
pub const SLOT_MS: i64 = 1_000;
/// The window.
pub const WINDOW_MS: i64 = 60_000;
/// Slots held: the 60 whole seconds plus the one whose last charge is not yet a minute old.
pub const SLOTS: usize = 61;
/// Requests are counted in thousandths so fractional costs (`1 / multiplier`) add up exactly.
pub const REQUEST_SCALE: u64 = 1_000;
/// Bytes of one slot in [`Window::to_bytes`]: three counters and the last-charge offset.
const SLOT_LEN: usize = 3 * 4 + 2;
/// Bytes of [`Window::to_bytes`].
pub const ENCODED_LEN: usize = 8 + SLOTS * SLOT_LEN;

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// Requests, in thousandths.
    Requests = 0,
    /// Input tokens.
    InputTokens = 1,
    /// Output tokens.
    OutputTokens = 2,
}

impl Dim {
    /// All dimensions.
    pub const ALL: [Dim; 3] = [Dim::Requests, Dim::InputTokens, Dim::OutputTokens];
}

/// A refusal: the dimension whose window is full, and when a retry can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// The full dimension.
    pub dim: Dim,
    /// Milliseconds until enough slides out of the window for a request to be admitted.
    pub retry_after_ms: i64,
}

/// One second of charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Slot {
    /// Per dimension.
    counts: [u32; 3],
    /// Milliseconds into the second of the latest charge: the slot counts until then + 60 s.
    last_ms: u16,
}

/// One entity's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Absolute index (ms / SLOT_MS) of the newest slot written.
    latest: i64,
    /// Per slot (absolute index modulo SLOTS).
    slots: [Slot; SLOTS],
}

impl Default for Window {
    fn default() -> Self {
        Self { latest: i64::MIN, slots: [Slot::default(); SLOTS] }
    }
}

fn slot_of(ms: i64) -> i64 {
    ms.div_euclid(SLOT_MS)
}

fn pos(abs: i64) -> usize {
    abs.rem_euclid(SLOTS as i64) as usize
}

fn offset_in_slot(ms: i64) -> u16 {
    ms.rem_euclid(SLOT_MS) as u16
}

impl Window {
    /// Moves the window to `now_ms`, clearing slots that slid out; returns the current slot
    /// index and the time actually used. A clock that goes back is treated as standing still.
    fn advance(&mut self, now_ms: i64) -> (i64, i64) {
        let now = slot_of(now_ms);
        if self.latest == i64::MIN || now - self.latest >= SLOTS as i64 {
            self.slots = [Slot::default(); SLOTS];
        } else {
            for abs in (self.latest + 1)..=now {
                self.slots[pos(abs)] = Slot::default();
            }
        }
        if now >= self.latest {
            self.latest = now;
            (now, now_ms)
        } else {
            // Standing still at the end of the latest slot seen.
            (self.latest, self.latest * SLOT_MS + SLOT_MS - 1)
        }
    }

    /// When slot `abs` stops counting.
    fn expiry(&self, abs: i64) -> i64 {
        abs * SLOT_MS + i64::from(self.slots[pos(abs)].last_ms) + WINDOW_MS
    }

    /// Slots still counted at `now_ms` (after [`Window::advance`]), oldest first.
    fn alive(&self, now: i64, now_ms: i64) -> impl Iterator<Item = i64> + '_ {
        ((now - SLOTS as i64 + 1)..=now).filter(move |abs| self.expiry(*abs) > now_ms)
    }

    fn sum(&self, dim: Dim, now: i64, now_ms: i64) -> u64 {
        self.alive(now, now_ms).map(|abs| u64::from(self.slots[pos(abs)].counts[dim as usize])).sum()
    }

    /// What each dimension holds and the milliseconds until it is empty (the full budget is
    /// back), in one pass: the figures of the `x-ratelimit-*` headers.
    pub fn status(&mut self, now_ms: i64) -> ([u64; 3], [i64; 3]) {
        let (now, at) = self.advance(now_ms);
        let (used, newest) = self.scan(now, at);
        (used, newest.map(|abs| abs.map_or(0, |abs| self.expiry(abs) - at)))
    }

    /// Adds `delta` (negative subtracts) to slot `abs`, as charged at `at_ms`.
    fn charge(&mut self, abs: i64, dim: Dim, delta: i64, at_ms: i64) {
        let slot = &mut self.slots[pos(abs)];
        let v = &mut slot.counts[dim as usize];
        let d = u32::try_from(delta.unsigned_abs()).unwrap_or(u32::MAX);
        *v = if delta < 0 { v.saturating_sub(d) } else { v.saturating_add(d) };
        if delta > 0 {
            slot.last_ms = slot.last_ms.max(offset_in_slot(at_ms));
        }
    }

    /// What the window holds in `dim` at `now_ms`.
    pub fn used(&mut self, dim: Dim, now_ms: i64) -> u64 {
        let (now, now_ms) = self.advance(now_ms);
        self.sum(dim, now, now_ms)
    }

    /// Admits a request if every `(dim, limit)` has room, adding `cost` (per dimension) to the
    /// current slot; refuses without charging anything otherwise.
    pub fn admit(&mut self, limits: &[(Dim, u64)], cost: [u64; 3], now_ms: i64) -> Result<(), Denied> {
        self.admit_with_status(limits, cost, now_ms).map(|_| ())
    }

    /// [`Window::admit`], returning what [`Window::status`] would after it, from the same
    /// single pass over the slots (the limiter's hottest loop: once per cap per request).
    pub fn admit_with_status(
        &mut self,
        limits: &[(Dim, u64)],
        cost: [u64; 3],
        now_ms: i64,
    ) -> Result<([u64; 3], [i64; 3]), Denied> {
        let (now, at) = self.advance(now_ms);
        let (mut used, mut newest) = self.scan(now, at);
        for &(dim, limit) in limits {
            if used[dim as usize] >= limit {
                return Err(Denied { dim, retry_after_ms: self.retry_after(dim, limit, now_ms) });
            }
        }
        for d in Dim::ALL {
            let c = i64::try_from(cost[d as usize]).unwrap_or(i64::MAX);
            if c > 0 {
                let before = self.slots[pos(now)].counts[d as usize];
                self.charge(now, d, c, at);
                used[d as usize] += u64::from(self.slots[pos(now)].counts[d as usize] - before);
                newest[d as usize] = Some(now);
            }
        }
        // Computed after charging: the charge moves the current slot's expiry.
        let reset = newest.map(|abs| abs.map_or(0, |abs| self.expiry(abs) - at));
        Ok((used, reset))
    }

    /// In one pass over the ring: what each dimension holds at `at` and the newest slot
    /// holding something in it (slots expire oldest first, so that one empties the window).
    fn scan(&self, now: i64, at: i64) -> ([u64; 3], [Option<i64>; 3]) {
        let mut used = [0u64; 3];
        let mut newest = [None; 3];
        let first = now - SLOTS as i64 + 1;
        let mut p = pos(first);
        for abs in first..=now {
            let slot = &self.slots[p];
            p = if p + 1 == SLOTS { 0 } else { p + 1 };
            if slot.counts == [0; 3] || abs * SLOT_MS + i64::from(slot.last_ms) + WINDOW_MS <= at {
                continue;
            }
            for d in 0..3 {
                if slot.counts[d] > 0 {
                    used[d] += u64::from(slot.counts[d]);
                    newest[d] = Some(abs);
                }
            }
        }
        (used, newest)
    }

    /// Reconciles a reservation made at `charged_at_ms` by `delta` units (negative refunds).
    /// While the charged slot still counts the change lands there, so a refund or a debt counts
    /// exactly as long as the request does; after that, debt lands now and a refund has
    /// nothing left to return.
    pub fn adjust(&mut self, dim: Dim, delta: i64, charged_at_ms: i64, now_ms: i64) {
        let (now, at) = self.advance(now_ms);
        let charged = slot_of(charged_at_ms);
        let counted = charged <= now && now - charged < SLOTS as i64 && self.expiry(charged) > at;
        if counted {
            // Debt counts from the request's own time, like the reservation it corrects.
            self.charge(charged, dim, delta, charged_at_ms);
        } else if delta > 0 {
            self.charge(now, dim, delta, at);
        }
    }

    /// Milliseconds until the window in `dim` holds less than `limit` (0 if it already does).
    pub fn retry_after(&mut self, dim: Dim, limit: u64, now_ms: i64) -> i64 {
        let (now, at) = self.advance(now_ms);
        let mut used = self.sum(dim, now, at);
        if used < limit {
            return 0;
        }
        // Slots leave oldest first.
        for abs in self.alive(now, at).collect::<Vec<_>>() {
            used -= u64::from(self.slots[pos(abs)].counts[dim as usize]);
            if used < limit {
                return (self.expiry(abs) - at).max(1);
            }
        }
        i64::MAX // a limit of 0
    }

    /// Milliseconds until the window is empty in `dim` (the full budget is back).
    pub fn reset_ms(&mut self, dim: Dim, now_ms: i64) -> i64 {
        self.retry_after(dim, 1, now_ms).min(WINDOW_MS)
    }

    /// Whether nothing is counted any more at `now_ms` (the window can be dropped).
    pub fn is_idle(&mut self, now_ms: i64) -> bool {
        let (now, at) = self.advance(now_ms);
        Dim::ALL.iter().all(|d| self.sum(*d, now, at) == 0)
    }

    /// The state as bytes, for shared data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; ENCODED_LEN];
        b[..8].copy_from_slice(&self.latest.to_le_bytes());
        for (s, out) in self.slots.iter().zip(b[8..].chunks_exact_mut(SLOT_LEN)) {
            out[0..4].copy_from_slice(&s.counts[0].to_le_bytes());
            out[4..8].copy_from_slice(&s.counts[1].to_le_bytes());
            out[8..12].copy_from_slice(&s.counts[2].to_le_bytes());
            out[12..14].copy_from_slice(&s.last_ms.to_le_bytes());
        }
        b
    }

    /// Parses [`Window::to_bytes`]; anything else reads as an empty window.
    pub fn from_bytes(b: &[u8]) -> Self {
        if b.len() != ENCODED_LEN {
            return Self::default();
        }
        let mut w =
            Self { latest: i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]), ..Self::default() };
        for (i, chunk) in b[8..].chunks_exact(SLOT_LEN).enumerate() {
            let s = &mut w.slots[i];
            for (d, v) in s.counts.iter_mut().enumerate() {
                *v = u32::from_le_bytes([chunk[d * 4], chunk[d * 4 + 1], chunk[d * 4 + 2], chunk[d * 4 + 3]]);
            }
            s.last_ms = u16::from_le_bytes([chunk[12], chunk[13]]).min((SLOT_MS - 1) as u16);
        }
        w
    }
}

/// The cost of one request, in thousandths, under a model's `request_limit_multiplier`.
pub fn request_cost(multiplier: f64) -> u64 {
    if multiplier.is_finite() && multiplier > 0.0 {
        // Rounded up so that n requests at multiplier n never exceed one request's budget.
        ((REQUEST_SCALE as f64) / multiplier).ceil().max(1.0) as u64
    } else {
        REQUEST_SCALE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(limit: u64) -> [(Dim, u64); 1] {
        [(Dim::Requests, limit * REQUEST_SCALE)]
    }

    fn passes(limit: u64, multiplier: f64, at: i64) -> usize {
        let mut w = Window::default();
        (0..100).take_while(|_| w.admit(&req(limit), [request_cost(multiplier), 0, 0], at).is_ok()).count()
    }

    #[test]
    fn aqueduct_multiplier_semantics() {
        assert_eq!(passes(3, 2.0, 5_000), 6);
        assert_eq!(passes(3, 0.5, 5_000), 2);
        assert_eq!(passes(3, 1.0, 5_000), 3);
        assert_eq!(passes(3, 3.0, 5_000), 9, "thirds add up exactly in thousandths");
    }

    #[test]
    fn admit_with_status_agrees_with_admit_then_status() {
        // A pseudo-random walk over time and costs, including idle gaps and refusals.
        let (mut fast, mut slow) = (Window::default(), Window::default());
        let limits = [(Dim::Requests, 40 * REQUEST_SCALE), (Dim::InputTokens, 5_000), (Dim::OutputTokens, 3_000)];
        let mut seed: u64 = 7;
        let mut t = 1_000_000;
        for _ in 0..5_000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            t += (seed >> 33) as i64 % 3_000 + if seed.is_multiple_of(97) { 70_000 } else { 0 };
            let cost = [REQUEST_SCALE, (seed >> 20) % 400, if seed.is_multiple_of(3) { 0 } else { (seed >> 40) % 300 }];
            let a = fast.admit_with_status(&limits, cost, t);
            // The reference reads each dimension separately, slot by slot.
            let b = slow
                .admit(&limits, cost, t)
                .map(|()| (Dim::ALL.map(|d| slow.used(d, t)), Dim::ALL.map(|d| slow.reset_ms(d, t))));
            assert_eq!(a, b, "at {t}");
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn limit_one_per_minute() {
        let mut w = Window::default();
        let one = [REQUEST_SCALE, 0, 0];
        assert!(w.admit(&req(1), one, 10_250).is_ok());
        for t in [10_251, 40_000, 70_249] {
            let d = w.admit(&req(1), one, t).unwrap_err();
            assert_eq!(d.dim, Dim::Requests);
            assert_eq!(d.retry_after_ms, 70_250 - t, "at {t}");
        }
        assert!(w.admit(&req(1), one, 70_250).is_ok(), "exactly a minute later it passes");
        assert!(w.admit(&req(1), one, 70_251).is_err(), "and counts for the next minute");
    }

    #[test]
    fn never_more_than_the_limit_in_any_minute() {
        // One request per 100 ms against 10/min for five minutes: count admissions in every
        // 60-second span.
        let mut w = Window::default();
        let mut admitted = Vec::new();
        for t in (0..300_000).step_by(100) {
            if w.admit(&req(10), [REQUEST_SCALE, 0, 0], t).is_ok() {
                admitted.push(t);
            }
        }
        for (i, t) in admitted.iter().enumerate() {
            let in_span = admitted[i..].iter().take_while(|u| **u < t + WINDOW_MS).count();
            assert!(in_span <= 10, "{in_span} admitted within a minute from {t}");
        }
        assert!(admitted.len() >= 45, "the limit is used, not starved: {}", admitted.len());
    }

    #[test]
    fn a_shared_slot_counts_until_its_last_request_is_a_minute_old() {
        let mut w = Window::default();
        let one = [REQUEST_SCALE, 0, 0];
        assert!(w.admit(&req(2), one, 5_100).is_ok());
        assert!(w.admit(&req(2), one, 5_900).is_ok());
        assert_eq!(w.used(Dim::Requests, 65_899), 2 * REQUEST_SCALE, "never released early");
        assert_eq!(w.retry_after(Dim::Requests, 2 * REQUEST_SCALE, 65_000), 900);
        assert_eq!(w.used(Dim::Requests, 65_900), 0);
        assert!(w.is_idle(65_900));
    }

    #[test]
    fn status_matches_the_per_dimension_answers() {
        let mut w = Window::default();
        w.admit(&req(10), [REQUEST_SCALE, 40, 0], 1_300).unwrap();
        w.admit(&req(10), [REQUEST_SCALE, 0, 0], 20_900).unwrap();
        let (used, reset) = w.status(30_000);
        for d in Dim::ALL {
            assert_eq!(used[d as usize], w.used(d, 30_000));
            assert_eq!(reset[d as usize], w.reset_ms(d, 30_000), "{d:?}");
        }
        assert_eq!(reset, [50_900, 31_300, 0]);
    }

    #[test]
    fn first_token_request_passes_and_overshoot_is_debt() {
        let mut w = Window::default();
        let lim = [(Dim::InputTokens, 1_000)];
        assert!(w.admit(&lim, [0, 5_000, 0], 0).is_ok(), "budget above zero: admitted");
        assert!(w.admit(&lim, [0, 1, 0], 30_000).is_err(), "debt keeps others out");
        assert!(w.admit(&lim, [0, 1, 0], 59_999).is_err());
        assert!(w.admit(&lim, [0, 1, 0], 60_000).is_ok(), "until it slides away");
    }

    #[test]
    fn reservations_reconcile() {
        let mut w = Window::default();
        let lim = [(Dim::OutputTokens, 100)];
        assert!(w.admit(&lim, [0, 0, 90], 1_000).is_ok());
        assert!(w.admit(&lim, [0, 0, 1], 2_000).is_ok());
        assert!(w.admit(&lim, [0, 0, 50], 2_000).is_ok(), "91 of 100 leaves room, whatever the new estimate");
        assert!(w.admit(&lim, [0, 0, 1], 2_000).is_err(), "141 of 100: full");
        // Actually used 10 of the 90 reserved: refund 80 to the slot it was charged in.
        w.adjust(Dim::OutputTokens, -80, 1_000, 3_000);
        assert_eq!(w.used(Dim::OutputTokens, 3_000), 61);
        w.adjust(Dim::OutputTokens, -50, 2_000, 3_000);
        // A long stream finished after its slot slid away: its debt lands now.
        w.adjust(Dim::OutputTokens, 500, 1_000, 70_000);
        assert_eq!(w.used(Dim::OutputTokens, 70_000), 500);
        // A refund for a slot gone: nothing to return.
        w.adjust(Dim::OutputTokens, -10, 1_000, 70_000);
        assert_eq!(w.used(Dim::OutputTokens, 70_000), 500);
    }

    #[test]
    fn every_dimension_must_have_room() {
        let mut w = Window::default();
        let limits = [(Dim::Requests, 10 * REQUEST_SCALE), (Dim::InputTokens, 100), (Dim::OutputTokens, 100)];
        assert!(w.admit(&limits, [REQUEST_SCALE, 150, 10], 0).is_ok());
        let d = w.admit(&limits, [REQUEST_SCALE, 1, 1], 0).unwrap_err();
        assert_eq!(d.dim, Dim::InputTokens);
        assert_eq!(w.used(Dim::Requests, 0), REQUEST_SCALE, "a refusal charges nothing");
    }

    #[test]
    fn zero_limit_clock_jumps_and_long_idle() {
        let mut w = Window::default();
        let d = w.admit(&req(0), [REQUEST_SCALE, 0, 0], 0).unwrap_err();
        assert_eq!(d.retry_after_ms, i64::MAX);
        assert!(w.admit(&req(2), [REQUEST_SCALE, 0, 0], 100_000).is_ok());
        assert!(w.admit(&req(2), [REQUEST_SCALE, 0, 0], 50_000).is_ok(), "an earlier clock counts as now");
        assert!(w.admit(&req(2), [REQUEST_SCALE, 0, 0], 50_000).is_err());
        assert_eq!(w.used(Dim::Requests, 10_000_000), 0, "a long idle empties the window");
    }

    #[test]
    fn bytes_round_trip_and_garbage_is_empty() {
        let mut w = Window::default();
        w.admit(&req(5), [REQUEST_SCALE, 7, 9], 1_234_567).unwrap();
        let back = Window::from_bytes(&w.to_bytes());
        assert_eq!(back, w);
        assert_eq!(w.to_bytes().len(), ENCODED_LEN);
        assert_eq!(Window::from_bytes(b"short"), Window::default());
    }

    #[test]
    fn costs() {
        assert_eq!(request_cost(1.0), 1_000);
        assert_eq!(request_cost(2.0), 500);
        assert_eq!(request_cost(0.5), 2_000);
        assert_eq!(request_cost(f64::NAN), 1_000);
        assert_eq!(request_cost(1e9), 1, "never free");
    }
}
