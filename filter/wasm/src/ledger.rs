//! The VM's usage-event outbox and its delivery to the control plane.
//!
//! The outbox lives in VM-global state, not in the root context: Envoy replaces the root
//! context on every policy push, and queued events must survive that. HTTP contexts push from
//! `on_log`; the root context's timer sends one batch at a time with `dispatch_http_call`.

use aqueduct_policy::ledger::{IdSource, Outbox, OutboxStats, UsageEvent, INGEST_PATH, SECRET_HEADER};
use aqueduct_policy::snapshot::LedgerSettings;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, MetricType};
use std::cell::RefCell;
use std::time::Duration;

/// Largest batch body sent in one call.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// How long one ingestion call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

struct State {
    outbox: Outbox,
    ids: IdSource,
    /// The call in flight: (hostcall token, batch id, root context that made it).
    call: Option<(u32, u64, u32)>,
    /// Stats already reported to Envoy, to increment by the difference.
    reported: OutboxStats,
    metrics: Option<Metrics>,
}

#[derive(Clone, Copy)]
struct Metrics {
    delivered: u32,
    dropped: u32,
    failed: u32,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
    /// The newest root context: only it sends. An older one may live on while requests that
    /// began under it finish, but a call it made could lose its answer when it goes.
    static CURRENT: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

fn with<R>(queue_bytes: u64, f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let st = s.get_or_insert_with(|| State {
            outbox: Outbox::new(usize::try_from(queue_bytes).unwrap_or(usize::MAX), MAX_BATCH_BYTES),
            ids: IdSource::new(IdSource::random_seed()),
            call: None,
            reported: OutboxStats::default(),
            metrics: None,
        });
        f(st)
    })
}

/// Gives the event its id and queues it.
pub fn record(mut event: UsageEvent, settings: &LedgerSettings) {
    with(settings.queue_bytes, |st| {
        event.request_id = st.ids.next_id();
        if !st.outbox.push(&event) {
            report(st);
        }
    });
}

/// A new root context `root` took over (a policy push): from now on only it sends, and a batch
/// still in flight from the one it replaced is sent again (that answer may never arrive: the
/// old context can be gone by then).
pub fn adopt(root: u32) {
    CURRENT.with(|c| c.set(Some(root)));
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(st) = s.as_mut() else { return };
        if st.call.is_some_and(|(_, _, r)| r != root) {
            st.call = None;
            st.outbox.abandon_in_flight();
        }
    });
}

/// Whether a batch call made by root context `root` awaits its answer: that root must live until
/// it comes. (An old root keeps ticking, and sending, while requests that started under it are in
/// flight; deleted with a call open, its answer would be lost and delivery would stall until
/// [`aqueduct_policy::ledger::IN_FLIGHT_TIMEOUT_MS`].)
pub fn awaiting(root: u32) -> bool {
    STATE.with(|s| s.borrow().as_ref().is_some_and(|st| st.call.is_some_and(|(_, _, r)| r == root)))
}

/// Sends the next batch if one is due (from root context `root`); true if a call went out.
pub fn flush(settings: &LedgerSettings, root: u32, now_ms: i64) -> bool {
    if settings.cluster.is_empty() || CURRENT.with(|c| c.get()).is_some_and(|r| r != root) {
        return false;
    }
    with(settings.queue_bytes, |st| {
        let Some(batch) = st.outbox.next_batch(now_ms) else { return false };
        let headers = vec![
            (":method", "POST"),
            (":path", INGEST_PATH),
            (":authority", settings.authority.as_str()),
            ("content-type", "application/x-ndjson"),
            (SECRET_HEADER, settings.secret.as_str()),
        ];
        match hostcalls::dispatch_http_call(&settings.cluster, headers, Some(&batch.body), vec![], CALL_TIMEOUT) {
            Ok(token) => {
                st.call = Some((token, batch.id, root));
                true
            }
            Err(s) => {
                log::warn!("aqueduct: usage batch not sent: {s:?}");
                st.outbox.settle(batch.id, false, now_ms);
                report(st);
                false
            }
        }
    })
}

/// Settles the batch whose call `token` answered (from root context `root`'s callback); true
/// if it was acknowledged. Tokens are numbered per root context, so the root must match too.
pub fn on_response(token: u32, root: u32, now_ms: i64) -> bool {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(st) = s.as_mut() else { return false };
        let Some((t, batch, r)) = st.call else { return false };
        if t != token || r != root {
            return false;
        }
        st.call = None;
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        let ok = status.as_deref().is_some_and(|s| s.starts_with('2'));
        if !ok {
            log::warn!("aqueduct: usage batch refused by the control plane (status {status:?}); will retry");
        }
        st.outbox.settle(batch, ok, now_ms);
        report(st);
        ok
    })
}

/// Moves the outbox's counters into Envoy stats (`wasmcustom.aqueduct_usage_*`).
fn report(st: &mut State) {
    let m = *st.metrics.get_or_insert_with(|| {
        let def = |n: &str| hostcalls::define_metric(MetricType::Counter, n).unwrap_or(u32::MAX);
        Metrics {
            delivered: def("aqueduct_usage_events_delivered"),
            dropped: def("aqueduct_usage_events_dropped"),
            failed: def("aqueduct_usage_batches_failed"),
        }
    });
    let now = st.outbox.stats();
    let inc = |id: u32, new: u64, old: u64| {
        if id != u32::MAX && new > old {
            let _ = hostcalls::increment_metric(id, i64::try_from(new - old).unwrap_or(i64::MAX));
        }
    };
    inc(m.delivered, now.delivered, st.reported.delivered);
    inc(m.dropped, now.dropped, st.reported.dropped);
    inc(m.failed, now.failed_batches, st.reported.failed_batches);
    st.reported = now;
}
