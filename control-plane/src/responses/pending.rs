//! Owner records still in flight.
//!
//! The filter reports a response's id with the create's usage event, and events reach the
//! control plane in batches some hundreds of milliseconds after the client got its answer. A
//! client that continues or reads its response at once (`previous_response_id` in the next
//! turn, a retrieve right after a background create) can get here first. So a lookup that finds
//! nothing waits for ingestion before it answers "not found": ingestion [`signal`]s after it
//! commits events carrying response ids, and the lookup looks again on each signal, and at least
//! every [`RECHECK`] (another control plane sharing PostgreSQL may have ingested the batch),
//! until [`GRACE`] has passed.
//!
//! Only a missing record is waited for: a response that is someone else's is refused at once.
//! That tells a caller holding a foreign id that it exists, which it knew: ids are long random
//! strings a caller only learns by being given one. An unknown id takes up to [`GRACE`] to 404.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a lookup that finds no record of the caller's waits for one to be ingested: several
/// times the filter's delivery interval (200 ms) and a batch's commit, short of the filter's
/// timeout for its ownership check (5 s).
pub const GRACE: Duration = Duration::from_secs(2);

// The filter gives up on its ownership check (503) after its timeout: the wait must end first.
const _: () = assert!(GRACE.as_millis() < aqueduct_policy::responses::OWNER_CHECK_TIMEOUT.as_millis());

/// Longest wait between two looks without a signal.
pub const RECHECK: Duration = Duration::from_millis(250);

/// Woken after each commit of events that carried response ids. Process-wide: ingestion is
/// handed only the store by the ingest endpoint.
static INGESTED: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Wakes every lookup waiting for an owner record (called after a commit that stored some).
pub fn signal() {
    INGESTED.notify_waiters();
}

/// Runs `lookup` until it finds something or `grace` has passed (looking once more at the
/// end), again after each [`signal`] and at least every [`RECHECK`]. Errors end the wait.
pub async fn wait_for<T, E, F, Fut>(grace: Duration, mut lookup: F) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let deadline = Instant::now() + grace;
    loop {
        // Registered before the lookup: a signal sent while it runs wakes the wait below
        // instead of being lost.
        let ingested = INGESTED.notified();
        tokio::pin!(ingested);
        ingested.as_mut().enable();
        if let Some(found) = lookup().await? {
            return Ok(Some(found));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let _ = tokio::time::timeout((deadline - now).min(RECHECK), ingested).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_signal_during_the_wait_is_looked_at() {
        let found = Arc::new(AtomicU32::new(0));
        let looks = Arc::new(AtomicU32::new(0));
        let started = Instant::now();
        let waiter = tokio::spawn({
            let (found, looks) = (found.clone(), looks.clone());
            wait_for::<u32, (), _, _>(Duration::from_secs(10), move || {
                let (found, looks) = (found.clone(), looks.clone());
                async move {
                    looks.fetch_add(1, Ordering::SeqCst);
                    Ok(Some(found.load(Ordering::SeqCst)).filter(|v| *v != 0))
                }
            })
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        found.store(7, Ordering::SeqCst);
        signal();
        assert_eq!(waiter.await.unwrap(), Ok(Some(7)));
        assert!(started.elapsed() < Duration::from_secs(5), "found on the signal, not at the deadline");
        assert!(looks.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test]
    async fn nothing_found_ends_at_the_grace() {
        let started = Instant::now();
        let r = wait_for::<u32, (), _, _>(Duration::from_millis(300), || async { Ok(None) }).await;
        assert_eq!(r, Ok(None));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");
        // A lookup error ends the wait at once.
        let r = wait_for::<u32, &str, _, _>(GRACE, || async { Err("down") }).await;
        assert_eq!(r, Err("down"));
    }
}
