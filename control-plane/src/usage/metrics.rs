//! Prometheus metrics of the ledger: requests, tokens and latency by model and status, and the
//! ingestion pipeline's own health. Label values are bounded: models come from the models file
//! (and past ones are folded into `other` beyond [`MAX_MODELS`]), statuses are HTTP codes; no
//! per-user or per-key labels.

use aqueduct_policy::ledger::UsageEvent;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Distinct model labels kept before new ones are reported as `other`.
pub const MAX_MODELS: usize = 500;

/// Histogram bucket bounds in seconds (request latency and ingestion lag).
const BOUNDS: [f64; 13] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BOUNDS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BOUNDS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BOUNDS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    tokens: BTreeMap<(String, &'static str), u64>,
    latency: BTreeMap<(String, u16), Histogram>,
    /// Model labels seen, to bound them.
    models: std::collections::BTreeSet<String>,
    lag: Histogram,
    /// Refusals of requests without a known key, by status and outcome (most have no ledger
    /// row: see [`crate::usage::ingest`]).
    anonymous: BTreeMap<(u16, &'static str), u64>,
    batches_ok: u64,
    batches_failed: u64,
    inserted: u64,
    duplicates: u64,
    invalid: u64,
}

/// The ledger's counters.
#[derive(Debug, Default)]
pub struct UsageMetrics {
    inner: Mutex<Inner>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl UsageMetrics {
    /// Counts newly stored events, received at `now_ms`.
    pub fn observe(&self, events: &[&UsageEvent], now_ms: i64) {
        let Ok(mut m) = self.inner.lock() else { return };
        for e in events {
            let mut model = e.model.clone().unwrap_or_default();
            if !m.models.contains(&model) {
                if m.models.len() >= MAX_MODELS {
                    model = "other".into();
                }
                m.models.insert(model.clone());
            }
            *m.requests.entry((model.clone(), e.status)).or_default() += 1;
            *m.tokens.entry((model.clone(), "input")).or_default() += e.input_tokens;
            *m.tokens.entry((model.clone(), "output")).or_default() += e.output_tokens;
            m.latency.entry((model, e.status)).or_default().observe(e.latency_ms as f64 / 1000.0);
            if crate::usage::ingest::is_anonymous_refusal(e) {
                let outcome = e.outcome.map_or("unknown", |o| o.as_str());
                *m.anonymous.entry((e.status, outcome)).or_default() += 1;
            }
            let done_at = e.at_ms.saturating_add(i64::try_from(e.latency_ms).unwrap_or(0));
            m.lag.observe((now_ms - done_at).max(0) as f64 / 1000.0);
        }
    }

    /// Counts one ingestion call.
    pub fn batch(&self, ok: bool, inserted: usize, duplicates: usize, invalid: usize) {
        let Ok(mut m) = self.inner.lock() else { return };
        if ok {
            m.batches_ok += 1;
        } else {
            m.batches_failed += 1;
        }
        m.inserted += inserted as u64;
        m.duplicates += duplicates as u64;
        m.invalid += invalid as u64;
    }

    /// Appends the Prometheus text form.
    pub fn render(&self, out: &mut String) {
        let Ok(m) = self.inner.lock() else { return };
        let _ = writeln!(out, "# HELP aqueduct_requests_total API requests recorded, by model and status.");
        let _ = writeln!(out, "# TYPE aqueduct_requests_total counter");
        for ((model, status), v) in &m.requests {
            let _ = writeln!(out, "aqueduct_requests_total{{model=\"{}\",status=\"{status}\"}} {v}", escape(model));
        }
        let _ = writeln!(out, "# HELP aqueduct_tokens_total Tokens recorded, by model and direction.");
        let _ = writeln!(out, "# TYPE aqueduct_tokens_total counter");
        for ((model, kind), v) in &m.tokens {
            let _ = writeln!(out, "aqueduct_tokens_total{{model=\"{}\",type=\"{kind}\"}} {v}", escape(model));
        }
        let _ = writeln!(out, "# HELP aqueduct_request_duration_seconds Request latency, by model and status.");
        let _ = writeln!(out, "# TYPE aqueduct_request_duration_seconds histogram");
        for ((model, status), h) in &m.latency {
            let labels = format!("model=\"{}\",status=\"{status}\"", escape(model));
            h.render(out, "aqueduct_request_duration_seconds", &labels);
        }
        let _ = writeln!(
            out,
            "# HELP aqueduct_usage_ingestion_lag_seconds From a request's end to its event being stored."
        );
        let _ = writeln!(out, "# TYPE aqueduct_usage_ingestion_lag_seconds histogram");
        m.lag.render(out, "aqueduct_usage_ingestion_lag_seconds", "");
        let _ = writeln!(
            out,
            "# HELP aqueduct_anonymous_refusals_total Requests refused without a known key, by status and outcome."
        );
        let _ = writeln!(out, "# TYPE aqueduct_anonymous_refusals_total counter");
        for ((status, outcome), v) in &m.anonymous {
            let _ = writeln!(out, "aqueduct_anonymous_refusals_total{{status=\"{status}\",outcome=\"{outcome}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP aqueduct_usage_batches_total Event batches received from Envoy, by result.");
        let _ = writeln!(out, "# TYPE aqueduct_usage_batches_total counter");
        let _ = writeln!(out, "aqueduct_usage_batches_total{{result=\"ok\"}} {}", m.batches_ok);
        let _ = writeln!(out, "aqueduct_usage_batches_total{{result=\"error\"}} {}", m.batches_failed);
        let _ = writeln!(out, "# HELP aqueduct_usage_events_total Events received, by result.");
        let _ = writeln!(out, "# TYPE aqueduct_usage_events_total counter");
        let _ = writeln!(out, "aqueduct_usage_events_total{{result=\"stored\"}} {}", m.inserted);
        let _ = writeln!(out, "aqueduct_usage_events_total{{result=\"duplicate\"}} {}", m.duplicates);
        let _ = writeln!(out, "aqueduct_usage_events_total{{result=\"invalid\"}} {}", m.invalid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bounded_series() {
        let m = UsageMetrics::default();
        let e = UsageEvent {
            model: Some("chat\"x".into()),
            status: 200,
            input_tokens: 5,
            latency_ms: 30,
            at_ms: 1_000,
            ..Default::default()
        };
        m.observe(&[&e, &e], 2_030);
        m.batch(true, 2, 1, 0);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("aqueduct_requests_total{model=\"chat\\\"x\",status=\"200\"} 2"), "{out}");
        assert!(out.contains("aqueduct_tokens_total{model=\"chat\\\"x\",type=\"input\"} 10"));
        assert!(
            out.contains("aqueduct_request_duration_seconds_bucket{model=\"chat\\\"x\",status=\"200\",le=\"0.05\"} 2"),
            "{out}"
        );
        assert!(out.contains("aqueduct_usage_ingestion_lag_seconds_bucket{le=\"1\"} 2"));
        assert!(out.contains("aqueduct_usage_events_total{result=\"duplicate\"} 1"));
        assert!(!out.contains("aqueduct_anonymous_refusals_total{"), "{out}");
        let refused = UsageEvent {
            status: 401,
            outcome: Some(aqueduct_policy::ledger::Outcome::Unauthorized),
            ..Default::default()
        };
        m.observe(&[&refused, &refused, &refused], 2_000);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("aqueduct_anonymous_refusals_total{status=\"401\",outcome=\"unauthorized\"} 3"), "{out}");
    }
}
