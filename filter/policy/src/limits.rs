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
//! The state is 886 bytes, one Proxy-Wasm shared-data value updated with compare-and-swap; an
//! update touches only the slots it changes and running totals, not the whole ring.

/// Slot width.
pub const SLOT_MS: i64 = 1_000;
/// The window.
pub const WINDOW_MS: i64 = 60_000;
/// Slots held: the 60 whole seconds plus the one whose last charge is not yet a minute old.
pub const SLOTS: usize = 61;
/// Requests are counted in thousandths so fractional costs (`1 / multiplier`) add up exactly.
pub const REQUEST_SCALE: u64 = 1_000;
/// Bytes of one slot in [`Window::as_bytes`]: three counters and the last-charge offset.
const SLOT_LEN: usize = 3 * 4 + 2;
/// Bytes before the slots in [`Window::as_bytes`]: the newest slot and three totals.
const HEADER_LEN: usize = 8 + 3 * 8;
/// Bytes of [`Window::as_bytes`].
pub const ENCODED_LEN: usize = HEADER_LEN + SLOTS * SLOT_LEN;

pub use crate::dims::{Dim, Dims};

/// A refusal: the dimension whose window is full, and when a retry can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// The full dimension.
    pub dim: Dim,
    /// Milliseconds until enough slides out of the window for a request to be admitted.
    pub retry_after_ms: i64,
}

/// One entity's window, kept in its shared-data encoding so that an update reads and writes
/// only the slots it touches: no decoding of the whole ring on the way in, no encoding on the
/// way out (the limiter does this once per cap per request, and again to settle tokens).
///
/// Layout (little-endian): the absolute index (ms / SLOT_MS) of the newest slot written (i64;
/// `i64::MIN` when nothing was), what the ring holds per dimension (3 × u64, kept as slots
/// change, so what is counted needs no pass over the ring), then [`SLOTS`] slots (absolute
/// index modulo SLOTS) of three u32 counters and the u16 offset of the latest charge.
#[derive(Clone, PartialEq, Eq)]
pub struct Window {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window").field("latest", &self.latest()).field("totals", &self.totals()).finish()
    }
}

impl Default for Window {
    fn default() -> Self {
        let mut w = Self { bytes: vec![0; ENCODED_LEN] };
        w.set_latest(i64::MIN);
        w
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

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

impl Window {
    // Field access over the encoding (offsets are in range: `bytes` is always ENCODED_LEN).

    fn latest(&self) -> i64 {
        read_u64(&self.bytes, 0) as i64
    }

    fn set_latest(&mut self, abs: i64) {
        self.bytes[..8].copy_from_slice(&abs.to_le_bytes());
    }

    fn total(&self, dim: Dim) -> u64 {
        read_u64(&self.bytes, 8 + 8 * dim as usize)
    }

    fn set_total(&mut self, dim: Dim, v: u64) {
        let at = 8 + 8 * dim as usize;
        self.bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn totals(&self) -> Dims<u64> {
        Dims::from_fn(|d| self.total(d))
    }

    fn slot_at(p: usize) -> usize {
        HEADER_LEN + p * SLOT_LEN
    }

    fn count(&self, p: usize, dim: Dim) -> u32 {
        read_u32(&self.bytes, Self::slot_at(p) + 4 * dim as usize)
    }

    /// Sets a counter, keeping the dimension's total in step.
    fn set_count(&mut self, p: usize, dim: Dim, v: u32) {
        let old = self.count(p, dim);
        let at = Self::slot_at(p) + 4 * dim as usize;
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let total = self.total(dim);
        self.set_total(
            dim,
            if v >= old { total.saturating_add(u64::from(v - old)) } else { total.saturating_sub(u64::from(old - v)) },
        );
    }

    fn last_ms(&self, p: usize) -> u16 {
        let at = Self::slot_at(p) + 12;
        u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]).min((SLOT_MS - 1) as u16)
    }

    fn set_last_ms(&mut self, p: usize, ms: u16) {
        let at = Self::slot_at(p) + 12;
        self.bytes[at..at + 2].copy_from_slice(&ms.to_le_bytes());
    }

    fn clear_slot(&mut self, p: usize) {
        for d in Dim::ALL {
            if self.count(p, d) != 0 {
                self.set_count(p, d, 0);
            }
        }
        self.set_last_ms(p, 0);
    }

    /// Moves the window to `now_ms`, clearing slots that slid out; returns the current slot
    /// index and the time actually used. A clock that goes back is treated as standing still.
    /// Afterwards the ring holds exactly the slots `now - 60 ..= now`.
    fn advance(&mut self, now_ms: i64) -> (i64, i64) {
        let now = slot_of(now_ms);
        let latest = self.latest();
        if latest == i64::MIN || now.saturating_sub(latest) >= SLOTS as i64 {
            self.bytes[8..].fill(0);
        } else {
            for abs in (latest + 1)..=now {
                self.clear_slot(pos(abs));
            }
        }
        if now >= latest {
            self.set_latest(now);
            (now, now_ms)
        } else {
            // Standing still at the end of the latest slot seen.
            (latest, latest * SLOT_MS + SLOT_MS - 1)
        }
    }

    /// When slot `abs` stops counting.
    fn expiry(&self, abs: i64) -> i64 {
        abs * SLOT_MS + i64::from(self.last_ms(pos(abs))) + WINDOW_MS
    }

    /// What each dimension holds at `at` (after [`Window::advance`] to slot `now`). Every slot
    /// of the ring counts except, possibly, the oldest: a slot of the last 59 seconds expires
    /// at least a second from now, the oldest once its latest charge is a minute old.
    fn used_all(&self, now: i64, at: i64) -> Dims<u64> {
        let mut used = self.totals();
        let oldest = now - SLOTS as i64 + 1;
        if self.expiry(oldest) <= at {
            let p = pos(oldest);
            for (d, u) in used.iter_mut() {
                *u = u.saturating_sub(u64::from(self.count(p, d)));
            }
        }
        used
    }

    /// The newest counted slot holding something in `dim` (slots expire oldest first, so
    /// that one empties the window), given what the dimension holds.
    fn newest(&self, dim: Dim, used: u64, now: i64, at: i64) -> Option<i64> {
        if used == 0 {
            return None;
        }
        ((now - SLOTS as i64 + 1)..=now).rev().find(|abs| self.count(pos(*abs), dim) > 0 && self.expiry(*abs) > at)
    }

    /// What each dimension holds and the milliseconds until it is empty (the full budget is
    /// back): the figures of the `x-ratelimit-*` headers.
    pub fn status(&mut self, now_ms: i64) -> (Dims<u64>, Dims<i64>) {
        let (now, at) = self.advance(now_ms);
        let used = self.used_all(now, at);
        (used, used.map_with_dim(|d, u| self.newest(d, u, now, at).map_or(0, |abs| self.expiry(abs) - at)))
    }

    /// Adds `delta` (negative subtracts) to slot `abs`, as charged at `at_ms`.
    fn charge(&mut self, abs: i64, dim: Dim, delta: i64, at_ms: i64) {
        let p = pos(abs);
        let v = self.count(p, dim);
        let d = u32::try_from(delta.unsigned_abs()).unwrap_or(u32::MAX);
        self.set_count(p, dim, if delta < 0 { v.saturating_sub(d) } else { v.saturating_add(d) });
        if delta > 0 {
            let last = self.last_ms(p).max(offset_in_slot(at_ms));
            self.set_last_ms(p, last);
        }
    }

    /// What the window holds in `dim` at `now_ms`.
    pub fn used(&mut self, dim: Dim, now_ms: i64) -> u64 {
        let (now, at) = self.advance(now_ms);
        self.used_all(now, at)[dim]
    }

    /// Admits a request if every `(dim, limit)` has room, adding `cost` (per dimension) to the
    /// current slot; refuses without charging anything otherwise.
    pub fn admit(&mut self, limits: &[(Dim, u64)], cost: Dims<u64>, now_ms: i64) -> Result<(), Denied> {
        self.admit_with_status(limits, cost, now_ms).map(|_| ())
    }

    /// [`Window::admit`], returning what [`Window::status`] would after it (the limiter's
    /// hottest path: once per cap per request, touching only the current and oldest slots).
    pub fn admit_with_status(
        &mut self,
        limits: &[(Dim, u64)],
        cost: Dims<u64>,
        now_ms: i64,
    ) -> Result<(Dims<u64>, Dims<i64>), Denied> {
        let (now, at) = self.advance(now_ms);
        let mut used = self.used_all(now, at);
        for &(dim, limit) in limits {
            if used[dim] >= limit {
                return Err(Denied { dim, retry_after_ms: self.retry_after(dim, limit, now_ms) });
            }
        }
        for (d, c) in cost {
            let c = i64::try_from(c).unwrap_or(i64::MAX);
            if c > 0 {
                let before = self.count(pos(now), d);
                self.charge(now, d, c, at);
                used[d] += u64::from(self.count(pos(now), d) - before);
            }
        }
        // Computed after charging: the charge moves the current slot's expiry.
        let reset = used.zip(cost).map_with_dim(|d, (u, c)| {
            let newest = if c > 0 { Some(now) } else { self.newest(d, u, now, at) };
            newest.map_or(0, |abs| self.expiry(abs) - at)
        });
        Ok((used, reset))
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
        let mut used = self.used_all(now, at)[dim];
        if used < limit {
            return 0;
        }
        // Slots leave oldest first.
        for abs in (now - SLOTS as i64 + 1)..=now {
            if self.expiry(abs) <= at {
                continue;
            }
            used = used.saturating_sub(u64::from(self.count(pos(abs), dim)));
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
        self.used_all(now, at) == Dims::splat(0)
    }

    /// The state as bytes, for shared data.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes over a shared-data value; anything but a window's encoding reads as an empty
    /// window (a swept window's empty value, or another release's format).
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        if bytes.len() == ENCODED_LEN {
            Self { bytes }
        } else {
            Self::default()
        }
    }

    /// [`Window::from_vec`] over a borrowed value.
    pub fn from_bytes(b: &[u8]) -> Self {
        if b.len() == ENCODED_LEN {
            Self { bytes: b.to_vec() }
        } else {
            Self::default()
        }
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
        (0..100).take_while(|_| w.admit(&req(limit), Dims::new(request_cost(multiplier), 0, 0), at).is_ok()).count()
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
            let cost = Dims::new(
                REQUEST_SCALE,
                (seed >> 20) % 400,
                if seed.is_multiple_of(3) { 0 } else { (seed >> 40) % 300 },
            );
            let a = fast.admit_with_status(&limits, cost, t);
            // The reference reads each dimension separately, slot by slot.
            let b = slow
                .admit(&limits, cost, t)
                .map(|()| (Dims::from_fn(|d| slow.used(d, t)), Dims::from_fn(|d| slow.reset_ms(d, t))));
            assert_eq!(a, b, "at {t}");
            assert_eq!(fast, slow);
        }
    }

    /// What the window holds and when each dimension empties, by definition: every slot whose
    /// latest charge is less than a minute old, read one by one.
    fn by_definition(w: &Window, now_ms: i64) -> (Dims<u64>, Dims<i64>) {
        let mut w = w.clone();
        let (now, at) = w.advance(now_ms);
        let mut used = Dims::splat(0u64);
        let mut newest = Dims::splat(None);
        for abs in (now - SLOTS as i64 + 1)..=now {
            if w.expiry(abs) > at {
                for d in Dim::ALL {
                    let c = w.count(pos(abs), d);
                    used[d] += u64::from(c);
                    if c > 0 {
                        newest[d] = Some(abs);
                    }
                }
            }
        }
        (used, newest.map(|n| n.map_or(0, |abs| w.expiry(abs) - at)))
    }

    #[test]
    fn running_totals_agree_with_reading_every_slot() {
        // Charges, refunds, debts, idle gaps and a clock that steps back, against the definition.
        let mut w = Window::default();
        let limits = [(Dim::Requests, 30 * REQUEST_SCALE), (Dim::InputTokens, 4_000)];
        let mut seed: u64 = 11;
        let mut t = 5_000_000;
        let mut charged = Vec::new();
        for i in 0..20_000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            t += (seed >> 35) as i64 % 2_500 + if seed.is_multiple_of(89) { 61_000 } else { 0 };
            let t_now = if seed.is_multiple_of(53) { t - 1_500 } else { t };
            match i % 3 {
                0 | 1 => {
                    let cost = Dims::new(REQUEST_SCALE, (seed >> 20) % 300, (seed >> 40) % 200);
                    let expected_ok = {
                        let (used, _) = by_definition(&w, t_now);
                        limits.iter().all(|(d, l)| used[*d] < *l)
                    };
                    let got = w.admit_with_status(&limits, cost, t_now);
                    assert_eq!(got.is_ok(), expected_ok, "at {t_now}");
                    if let Ok(status) = got {
                        assert_eq!(status, by_definition(&w, t_now), "status after admission at {t_now}");
                        charged.push(t_now);
                    }
                }
                _ => {
                    if let Some(at) = charged.pop() {
                        let delta = (seed >> 30) as i64 % 400 - 200;
                        w.adjust(Dim::InputTokens, delta, at, t_now);
                    }
                }
            }
            assert_eq!(w.status(t_now), by_definition(&w, t_now), "at {t_now}");
            let all: Vec<u64> = Dim::ALL.iter().map(|d| (0..SLOTS).map(|p| u64::from(w.count(p, *d))).sum()).collect();
            assert_eq!(all, w.totals().into_array().to_vec(), "totals are the ring's sums");
        }
    }

    #[test]
    fn limit_one_per_minute() {
        let mut w = Window::default();
        let one = Dims::new(REQUEST_SCALE, 0, 0);
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
            if w.admit(&req(10), Dims::new(REQUEST_SCALE, 0, 0), t).is_ok() {
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
        let one = Dims::new(REQUEST_SCALE, 0, 0);
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
        w.admit(&req(10), Dims::new(REQUEST_SCALE, 40, 0), 1_300).unwrap();
        w.admit(&req(10), Dims::new(REQUEST_SCALE, 0, 0), 20_900).unwrap();
        let (used, reset) = w.status(30_000);
        for d in Dim::ALL {
            assert_eq!(used[d], w.used(d, 30_000));
            assert_eq!(reset[d], w.reset_ms(d, 30_000), "{d:?}");
        }
        assert_eq!(reset, Dims::new(50_900, 31_300, 0));
    }

    #[test]
    fn first_token_request_passes_and_overshoot_is_debt() {
        let mut w = Window::default();
        let lim = [(Dim::InputTokens, 1_000)];
        assert!(w.admit(&lim, Dims::new(0, 5_000, 0), 0).is_ok(), "budget above zero: admitted");
        assert!(w.admit(&lim, Dims::new(0, 1, 0), 30_000).is_err(), "debt keeps others out");
        assert!(w.admit(&lim, Dims::new(0, 1, 0), 59_999).is_err());
        assert!(w.admit(&lim, Dims::new(0, 1, 0), 60_000).is_ok(), "until it slides away");
    }

    #[test]
    fn reservations_reconcile() {
        let mut w = Window::default();
        let lim = [(Dim::OutputTokens, 100)];
        assert!(w.admit(&lim, Dims::new(0, 0, 90), 1_000).is_ok());
        assert!(w.admit(&lim, Dims::new(0, 0, 1), 2_000).is_ok());
        assert!(w.admit(&lim, Dims::new(0, 0, 50), 2_000).is_ok(), "91 of 100 leaves room, whatever the new estimate");
        assert!(w.admit(&lim, Dims::new(0, 0, 1), 2_000).is_err(), "141 of 100: full");
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
        assert!(w.admit(&limits, Dims::new(REQUEST_SCALE, 150, 10), 0).is_ok());
        let d = w.admit(&limits, Dims::new(REQUEST_SCALE, 1, 1), 0).unwrap_err();
        assert_eq!(d.dim, Dim::InputTokens);
        assert_eq!(w.used(Dim::Requests, 0), REQUEST_SCALE, "a refusal charges nothing");
    }

    #[test]
    fn zero_limit_clock_jumps_and_long_idle() {
        let mut w = Window::default();
        let d = w.admit(&req(0), Dims::new(REQUEST_SCALE, 0, 0), 0).unwrap_err();
        assert_eq!(d.retry_after_ms, i64::MAX);
        assert!(w.admit(&req(2), Dims::new(REQUEST_SCALE, 0, 0), 100_000).is_ok());
        assert!(w.admit(&req(2), Dims::new(REQUEST_SCALE, 0, 0), 50_000).is_ok(), "an earlier clock counts as now");
        assert!(w.admit(&req(2), Dims::new(REQUEST_SCALE, 0, 0), 50_000).is_err());
        assert_eq!(w.used(Dim::Requests, 10_000_000), 0, "a long idle empties the window");
    }

    #[test]
    fn bytes_round_trip_and_garbage_is_empty() {
        let mut w = Window::default();
        w.admit(&req(5), Dims::new(REQUEST_SCALE, 7, 9), 1_234_567).unwrap();
        let back = Window::from_vec(w.as_bytes().to_vec());
        assert_eq!(back, w);
        assert_eq!(w.as_bytes().len(), ENCODED_LEN);
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
