//! Throttling of failed sign-ins: a fixed window per key (an account, a client address). After
//! `limit` failures within `window` seconds of the first one, the key is refused until the
//! window ends. Time is a parameter, so the logic is tested without waiting.
//!
//! The state is in memory (per replica) and bounded: at `max_keys` entries, finished windows
//! are dropped first, then the oldest windows.

use std::collections::HashMap;

/// Failures allowed per account in one window.
pub const ACCOUNT_LIMIT: u32 = 5;
/// Failures allowed per client address in one window (higher: many people may share one).
pub const ADDRESS_LIMIT: u32 = 20;
/// Window length in seconds.
pub const WINDOW_SECS: i64 = 60;
/// Keys tracked at most.
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    failures: u32,
}

/// Failure counts per key.
#[derive(Debug)]
pub struct Throttle {
    limit: u32,
    window: i64,
    max_keys: usize,
    keys: HashMap<String, Window>,
}

impl Throttle {
    /// `limit` failures per `window` seconds, tracking at most `max_keys` keys.
    pub fn new(limit: u32, window: i64, max_keys: usize) -> Self {
        Self { limit, window, max_keys: max_keys.max(1), keys: HashMap::new() }
    }

    /// Seconds until `key` may try again, when it is refused now.
    pub fn blocked(&self, key: &str, now: i64) -> Option<i64> {
        let w = self.keys.get(key)?;
        let end = w.start + self.window;
        (w.failures >= self.limit && now < end).then(|| (end - now).max(1))
    }

    /// Counts a failure of `key` at `now`.
    pub fn failed(&mut self, key: &str, now: i64) {
        if let Some(w) = self.keys.get_mut(key) {
            if now < w.start + self.window {
                w.failures = w.failures.saturating_add(1);
            } else {
                *w = Window { start: now, failures: 1 };
            }
            return;
        }
        if self.keys.len() >= self.max_keys {
            let window = self.window;
            self.keys.retain(|_, w| now < w.start + window);
        }
        while self.keys.len() >= self.max_keys {
            let Some(oldest) = self.keys.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| k.clone()) else {
                break;
            };
            self.keys.remove(&oldest);
        }
        self.keys.insert(key.to_string(), Window { start: now, failures: 1 });
    }

    /// Forgets `key` (after a successful sign-in of that account).
    pub fn clear(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_until_the_window_ends() {
        let mut t = Throttle::new(5, 60, 100);
        for i in 0..4 {
            t.failed("a", 1000 + i);
            assert_eq!(t.blocked("a", 1000 + i), None, "failure {}", i + 1);
        }
        t.failed("a", 1010);
        assert_eq!(t.blocked("a", 1010), Some(50));
        assert_eq!(t.blocked("a", 1059), Some(1));
        assert_eq!(t.blocked("b", 1010), None, "other keys are not affected");
        assert_eq!(t.blocked("a", 1060), None, "the window is over");
        // A failure after the window starts a new one.
        t.failed("a", 1061);
        assert_eq!(t.blocked("a", 1061), None);
        // Clearing forgets the failures.
        for i in 0..5 {
            t.failed("c", 2000 + i);
        }
        assert!(t.blocked("c", 2005).is_some());
        t.clear("c");
        assert_eq!(t.blocked("c", 2005), None);
    }

    #[test]
    fn state_is_bounded() {
        let mut t = Throttle::new(1, 60, 3);
        t.failed("old", 0);
        t.failed("k1", 100);
        t.failed("k2", 101);
        // "old" has finished its window: dropped first.
        t.failed("k3", 102);
        assert_eq!(t.len(), 3);
        assert_eq!(t.blocked("old", 102), None);
        // All live: the oldest window goes.
        t.failed("k4", 103);
        assert_eq!(t.len(), 3);
        assert_eq!(t.blocked("k1", 103), None);
        assert!(t.blocked("k4", 103).is_some());
        for i in 0..10_000 {
            t.failed(&format!("spray{i}"), 104);
        }
        assert_eq!(t.len(), 3);
    }
}
