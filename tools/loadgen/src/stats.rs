//! Turning the recorded requests into the JSON report.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One measured (post-warm-up) request.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// When the schedule said it should be sent.
    pub due: Instant,
    /// When it was actually handed to a connection.
    pub start: Instant,
    /// When its response body had been read (or it failed).
    pub end: Instant,
    /// 2xx and read in full.
    pub ok: bool,
}

/// A send more than this after its due time counts as late: the generator (or the pool of
/// connections) could not keep the schedule, so the offered load was lower than asked.
const LATE: Duration = Duration::from_millis(1);

/// The nearest-rank percentile `p` (0–100) of `sorted`, which must be in ascending order; 0 when empty.
///
/// Exact rather than from a histogram: at these request counts sorting is cheap.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The tolerance keeps e.g. 99.9 % of 1000 at rank 999: in binary it comes out a hair above.
    let rank = (p / 100.0 * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Requests per second actually sent: the measured requests over the time between the first and
/// the last send, so it shows whether the schedule was kept (it equals `rate` when it was).
pub fn achieved_rps(records: &[Record]) -> f64 {
    let first = records.iter().map(|r| r.start).min();
    let last = records.iter().map(|r| r.start).max();
    match (first, last) {
        (Some(first), Some(last)) if last > first => (records.len() - 1) as f64 / (last - first).as_secs_f64(),
        _ => 0.0,
    }
}

/// The report printed on stdout. Latency is from each request's due time to the end of its
/// response, so time spent waiting for a free connection counts; failed requests are included,
/// since they also took that long to come back.
pub fn report(rate: f64, records: &[Record]) -> Value {
    let mut latencies: Vec<u64> =
        records.iter().map(|r| r.end.saturating_duration_since(r.due).as_micros() as u64).collect();
    latencies.sort_unstable();
    let errors = records.iter().filter(|r| !r.ok).count();
    let mut lags: Vec<u64> =
        records.iter().map(|r| r.start.saturating_duration_since(r.due).as_micros() as u64).collect();
    lags.sort_unstable();
    let late_sends = records.iter().filter(|r| r.start.saturating_duration_since(r.due) > LATE).count();
    json!({
        "rate": rate,
        "achieved_rps": (achieved_rps(records) * 10.0).round() / 10.0,
        "requests": records.len(),
        "errors": errors,
        "p50_us": percentile(&latencies, 50.0),
        "p90_us": percentile(&latencies, 90.0),
        "p99_us": percentile(&latencies, 99.0),
        "p999_us": percentile(&latencies, 99.9),
        "max_us": latencies.last().copied().unwrap_or(0),
        "late_sends": late_sends,
        // How far behind schedule sends were: the generator's own pacing error (plus any wait for
        // a free connection), to tell its overhead apart from the server's.
        "send_lag_p50_us": percentile(&lags, 50.0),
        "send_lag_p99_us": percentile(&lags, 99.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 99.9), 100);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        // 1000 values: p99.9 is the 999th, not the maximum.
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 99.9), 999);
    }

    #[test]
    fn report_counts_errors_late_sends_and_latency_from_due() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let records = [
            Record { due: t0, start: t0, end: t0 + ms(2), ok: true },
            // Waited 5 ms for a connection: late, and the wait is part of its latency.
            Record { due: t0 + ms(10), start: t0 + ms(15), end: t0 + ms(17), ok: true },
            Record { due: t0 + ms(20), start: t0 + ms(20), end: t0 + ms(21), ok: false },
        ];
        let r = report(100.0, &records);
        assert_eq!(r["requests"], 3);
        assert_eq!(r["errors"], 1);
        assert_eq!(r["late_sends"], 1);
        assert_eq!(r["p50_us"], 2000);
        assert_eq!(r["max_us"], 7000);
        assert_eq!(r["achieved_rps"], 100.0);
        assert_eq!(r["send_lag_p99_us"], 5000);
    }

    #[test]
    fn empty_report_is_zeros() {
        let r = report(10.0, &[]);
        assert_eq!((r["requests"].as_u64(), r["p99_us"].as_u64()), (Some(0), Some(0)));
        assert_eq!(r["achieved_rps"], 0.0);
    }
}
