//! The key journal: every key change since this process started, in order, for filter VMs to
//! long-poll between snapshots (see [`aqueduct_policy::journal`] for the protocol).
//!
//! Each snapshot records the journal position it was read at ([`KeyJournal::mark`], taken before
//! the keys are read), so a VM asks only for what its snapshot may lack. A change journaled while
//! a snapshot is read may be in both; applying it again is harmless. Entries go once a published
//! snapshot includes them and a minute has passed (VMs still on an older snapshot get `409`
//! and wait for the new one, which is at most a snapshot push away).

use aqueduct_policy::journal::{JournalDelta, JournalMark, KeyChange};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a change stays after a published snapshot includes it.
const KEEP: Duration = Duration::from_secs(60);
/// Most changes kept (older ones go first; pollers that needed them wait for a snapshot).
const MAX_ENTRIES: usize = 100_000;

/// The journal of one control-plane process.
#[derive(Debug)]
pub struct KeyJournal {
    epoch: u64,
    entries: Mutex<Entries>,
    position: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Entries {
    /// (position, when recorded, change), oldest first.
    list: VecDeque<(u64, Instant, KeyChange)>,
    /// Position of the newest change.
    seq: u64,
    /// Every change at or before this position has been pruned.
    pruned: u64,
    /// The newest position a published snapshot includes.
    covered: u64,
}

impl Default for KeyJournal {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyJournal {
    /// An empty journal with a fresh epoch.
    pub fn new() -> Self {
        // Any value a previous process is unlikely to have had; 53 bits keep it exact in JSON
        // readers that use doubles.
        let epoch = rand::random::<u64>() >> 11;
        Self { epoch, entries: Mutex::new(Entries::default()), position: watch::channel(0).0 }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This journal's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The current position, for a snapshot about to read the keys.
    pub fn mark(&self) -> JournalMark {
        JournalMark { epoch: self.epoch, seq: self.lock().seq }
    }

    /// Appends a change and wakes the pollers.
    pub fn record(&self, change: KeyChange) {
        let seq = {
            let mut e = self.lock();
            e.seq += 1;
            let seq = e.seq;
            e.list.push_back((seq, Instant::now(), change));
            if e.list.len() > MAX_ENTRIES {
                if let Some((s, ..)) = e.list.pop_front() {
                    e.pruned = s;
                }
            }
            seq
        };
        self.position.send_replace(seq);
    }

    /// Every change after position `since`, or `None` when the journal no longer reaches back
    /// that far (or `since` is ahead of it: a poller of another process with the same epoch).
    pub fn since(&self, since: u64) -> Option<JournalDelta> {
        let e = self.lock();
        if since < e.pruned || since > e.seq {
            return None;
        }
        let changes = e.list.iter().filter(|(s, ..)| *s > since).map(|(.., c)| c.clone()).collect();
        Some(JournalDelta { epoch: self.epoch, seq: e.seq, changes })
    }

    /// Waits up to `hold` for the journal to move past `known`; true if it did.
    pub async fn wait_past(&self, known: u64, hold: Duration) -> bool {
        let mut rx = self.position.subscribe();
        tokio::time::timeout(hold, rx.wait_for(|seq| *seq > known)).await.is_ok_and(|r| r.is_ok())
    }

    /// Drops changes a published snapshot includes (at or before `covered`) once they are
    /// [`KEEP`] old.
    pub fn prune(&self, covered: u64) {
        let mut e = self.lock();
        e.covered = e.covered.max(covered);
        while let Some((s, at, _)) = e.list.front() {
            if *s > covered || at.elapsed() < KEEP {
                break;
            }
            e.pruned = *s;
            e.list.pop_front();
        }
    }

    /// Changes no published snapshot includes yet (what every VM's overlay holds).
    pub fn pending(&self) -> u64 {
        let e = self.lock();
        e.seq - e.covered.min(e.seq)
    }

    /// Number of changes held.
    pub fn len(&self) -> usize {
        self.lock().list.len()
    }

    /// True when no change is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_every_change_after_a_position() {
        let j = KeyJournal::new();
        assert_eq!(j.mark().seq, 0);
        assert_eq!(j.since(0).unwrap().changes, vec![]);
        for id in 1..=3 {
            j.record(KeyChange::Gone { id });
        }
        let d = j.since(1).unwrap();
        assert_eq!((d.epoch, d.seq), (j.epoch(), 3));
        assert_eq!(d.changes, vec![KeyChange::Gone { id: 2 }, KeyChange::Gone { id: 3 }]);
        assert!(j.since(4).is_none(), "a position this journal never had");
        assert_eq!(j.pending(), 3);
        // Young entries stay even when a snapshot covers them.
        j.prune(2);
        assert_eq!(j.len(), 3);
        assert_eq!(j.pending(), 1);
    }

    #[test]
    fn pruned_positions_are_refused() {
        let j = KeyJournal::new();
        {
            let mut e = j.lock();
            for id in 1..=3 {
                e.seq += 1;
                let seq = e.seq;
                e.list.push_back((seq, Instant::now() - KEEP * 2, KeyChange::Gone { id }));
            }
        }
        j.prune(2);
        assert_eq!(j.len(), 1);
        assert!(j.since(1).is_none(), "change 2 is gone");
        assert_eq!(j.since(2).unwrap().changes, vec![KeyChange::Gone { id: 3 }]);
    }

    #[tokio::test]
    async fn pollers_wake_on_a_change() {
        let j = std::sync::Arc::new(KeyJournal::new());
        assert!(!j.wait_past(0, Duration::from_millis(20)).await, "nothing happens");
        let waiter = {
            let j = j.clone();
            tokio::spawn(async move { j.wait_past(0, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        j.record(KeyChange::Gone { id: 9 });
        assert!(waiter.await.unwrap());
        assert!(j.wait_past(0, Duration::from_millis(1)).await, "already past");
    }
}
