//! Prometheus metrics of the ledger: requests, tokens and latency by model and status, and the
//! ingestion pipeline's own health. Label values are bounded: models come from the models file
//! (and past ones are folded into `other` beyond [`MAX_MODELS`]), statuses are HTTP codes; no
//! per-user or per-key labels.

use aqueduct_policy::ledger::UsageEvent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// Distinct model labels kept before new ones are reported as `other`.
pub const MAX_MODELS: usize = 500;

/// Histogram bucket bounds in seconds (request latency and ingestion lag).
const BOUNDS: [f64; 13] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

fn seconds_histogram() -> Histogram {
    Histogram::new(BOUNDS)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelStatus {
    model: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelDirection {
    model: String,
    r#type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusOutcome {
    status: u16,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ByResult {
    result: &'static str,
}

/// The ledger's counters. Clones of the metrics share their values, so [`UsageMetrics::register`]
/// can hand them to a registry built for one scrape.
#[derive(Debug)]
pub struct UsageMetrics {
    requests: Family<ModelStatus, Counter>,
    tokens: Family<ModelDirection, Counter>,
    latency: Family<ModelStatus, Histogram, fn() -> Histogram>,
    lag: Histogram,
    /// Refusals of requests without a known key, by status and outcome (most have no ledger
    /// row: see [`crate::usage::ingest`]).
    anonymous: Family<StatusOutcome, Counter>,
    batches: Family<ByResult, Counter>,
    events: Family<ByResult, Counter>,
    /// Model labels seen, to bound them.
    models: Mutex<BTreeSet<String>>,
}

impl Default for UsageMetrics {
    fn default() -> Self {
        let m = Self {
            requests: Family::default(),
            tokens: Family::default(),
            latency: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
            lag: seconds_histogram(),
            anonymous: Family::default(),
            batches: Family::default(),
            events: Family::default(),
            models: Mutex::default(),
        };
        // Every result is exposed from the start, at zero, so that a rate sees its first change.
        for result in ["ok", "error"] {
            let _ = m.batches.get_or_create(&ByResult { result });
        }
        for result in ["stored", "duplicate", "invalid"] {
            let _ = m.events.get_or_create(&ByResult { result });
        }
        m
    }
}

impl UsageMetrics {
    /// Counts newly stored events, received at `now_ms`.
    pub fn observe(&self, events: &[&UsageEvent], now_ms: i64) {
        let Ok(mut models) = self.models.lock() else { return };
        for e in events {
            let mut model = e.model.clone().unwrap_or_default();
            if !models.contains(&model) {
                if models.len() >= MAX_MODELS {
                    model = "other".into();
                }
                models.insert(model.clone());
            }
            let by_status = ModelStatus { model: model.clone(), status: e.status };
            self.requests.get_or_create(&by_status).inc();
            self.tokens.get_or_create(&ModelDirection { model: model.clone(), r#type: "input" }).inc_by(e.input_tokens);
            self.tokens.get_or_create(&ModelDirection { model, r#type: "output" }).inc_by(e.output_tokens);
            self.latency.get_or_create(&by_status).observe(e.latency_ms as f64 / 1000.0);
            if crate::usage::ingest::is_anonymous_refusal(e) {
                let outcome = e.outcome.map_or("unknown", |o| o.as_str());
                self.anonymous.get_or_create(&StatusOutcome { status: e.status, outcome }).inc();
            }
            let done_at = e.at_ms.saturating_add(i64::try_from(e.latency_ms).unwrap_or(0));
            self.lag.observe((now_ms - done_at).max(0) as f64 / 1000.0);
        }
    }

    /// Counts one ingestion call.
    pub fn batch(&self, ok: bool, inserted: usize, duplicates: usize, invalid: usize) {
        self.batches.get_or_create(&ByResult { result: if ok { "ok" } else { "error" } }).inc();
        for (result, n) in [("stored", inserted), ("duplicate", duplicates), ("invalid", invalid)] {
            self.events.get_or_create(&ByResult { result }).inc_by(n as u64);
        }
    }

    /// Adds the ledger's metrics to `registry` (counter names get their `_total` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("aqueduct_requests", "API requests recorded, by model and status", self.requests.clone());
        registry.register("aqueduct_tokens", "Tokens recorded, by model and direction", self.tokens.clone());
        registry.register(
            "aqueduct_request_duration_seconds",
            "Request latency, by model and status",
            self.latency.clone(),
        );
        registry.register(
            "aqueduct_usage_ingestion_lag_seconds",
            "From a request's end to its event being stored",
            self.lag.clone(),
        );
        registry.register(
            "aqueduct_anonymous_refusals",
            "Requests refused without a known key, by status and outcome",
            self.anonymous.clone(),
        );
        registry.register(
            "aqueduct_usage_batches",
            "Event batches received from Envoy, by result",
            self.batches.clone(),
        );
        registry.register("aqueduct_usage_events", "Events received, by result", self.events.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text;

    fn render(m: &UsageMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }

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
        let out = render(&m);
        assert!(out.contains("# TYPE aqueduct_requests_total counter\n"), "{out}");
        assert!(out.contains("aqueduct_requests_total{model=\"chat\\\"x\",status=\"200\"} 2\n"), "{out}");
        assert!(out.contains("aqueduct_tokens_total{model=\"chat\\\"x\",type=\"input\"} 10\n"));
        assert!(out.contains("# TYPE aqueduct_request_duration_seconds histogram\n"), "{out}");
        assert!(
            out.contains(
                "aqueduct_request_duration_seconds_bucket{model=\"chat\\\"x\",status=\"200\",le=\"0.05\"} 2\n"
            ),
            "{out}"
        );
        assert!(out.contains("aqueduct_usage_ingestion_lag_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("aqueduct_usage_ingestion_lag_seconds_count 2\n"), "{out}");
        assert!(out.contains("aqueduct_usage_events_total{result=\"duplicate\"} 1\n"));
        assert!(out.contains("aqueduct_usage_batches_total{result=\"error\"} 0\n"), "present before it happens");
        assert!(!out.contains("aqueduct_anonymous_refusals_total{"), "{out}");
        let refused = UsageEvent {
            status: 401,
            outcome: Some(aqueduct_policy::ledger::Outcome::Unauthorized),
            ..Default::default()
        };
        m.observe(&[&refused, &refused, &refused], 2_000);
        let out = render(&m);
        assert!(
            out.contains("aqueduct_anonymous_refusals_total{status=\"401\",outcome=\"unauthorized\"} 3\n"),
            "{out}"
        );
    }

    #[test]
    fn folds_models_beyond_the_bound() {
        let m = UsageMetrics::default();
        let events: Vec<UsageEvent> = (0..=MAX_MODELS)
            .map(|i| UsageEvent { model: Some(format!("m{i}")), status: 200, ..Default::default() })
            .collect();
        m.observe(&events.iter().collect::<Vec<_>>(), 0);
        let out = render(&m);
        assert!(out.contains("aqueduct_requests_total{model=\"other\",status=\"200\"} 1\n"), "{out}");
        assert!(!out.contains(&format!("model=\"m{MAX_MODELS}\"")));
    }
}
