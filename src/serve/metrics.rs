//! `GET /metrics`: the figures `flowc stats` computes, in the Prometheus
//! text format (OpenMetrics 1.0, encoded by the `prometheus-client` crate), and what the
//! stats page draws. Both are computed per request from the store by
//! `crate::stats` (the same functions as `flowc stats`), over the runs the
//! asking reviewer may see; nothing here does the arithmetic again.
//!
//! The per-run figures (cost, tokens, steps, gate waits) are nearest-rank
//! p50 / p95 / max over every stored run of a flow, as `flowc stats` gives
//! them, exposed as gauges with a `quantile` label (`0.5`, `0.95`, `1`):
//! the store already holds every run, so a Prometheus histogram's
//! fixed buckets would only lose precision. Counts over the stored runs are
//! counters (`_total`): they only grow while runs are kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::api;
use super::auth::Reviewer;
use super::state::{ApiError, App};
use crate::stats::{Distribution, Filter, Stats};
use crate::store::{RunRecord, Store};

/// What `/metrics` and the stats page show, over the runs a reviewer sees.
pub(super) struct Figures {
    pub stats: Stats,
    /// Pending gates by flow and gate.
    pub pending: BTreeMap<(String, String), u64>,
    /// The runs the figures are over, newest first (the page plots their cost).
    pub runs: Vec<RunRecord>,
}

/// Computes the figures the way `flowc stats` does, over `who`'s flows.
pub(super) fn figures(store: &Store, who: &Reviewer) -> Result<Figures, ApiError> {
    let runs: Vec<RunRecord> = store
        .runs()?
        .into_iter()
        .filter(|r| who.sees(&r.flow))
        .collect();
    let filter = Filter::default();
    let mut stats = crate::stats::compute(&runs, &filter, &crate::stats::trace_events);
    stats.reviews = crate::stats::review_stats(&store.reviews(None, false)?, &runs, &filter);
    let mut pending = BTreeMap::new();
    for g in store.gates(None)? {
        if g.status == "pending" && who.sees(&g.flow) {
            *pending.entry((g.flow, g.gate)).or_insert(0) += 1;
        }
    }
    Ok(Figures {
        stats,
        pending,
        runs,
    })
}

type Labels = Vec<(String, String)>;
type Gauges = Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>;
type Counters = Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A registry's families, registered as they are first used.
struct Exposition {
    registry: Registry,
    gauges: BTreeMap<&'static str, Gauges>,
    counters: BTreeMap<&'static str, Counters>,
}

impl Exposition {
    fn gauge(&mut self, name: &'static str, help: &str, l: &[(&str, &str)], v: f64) {
        let family = self.gauges.entry(name).or_insert_with(|| {
            let f = Gauges::default();
            self.registry.register(name, help, f.clone());
            f
        });
        family.get_or_create(&labels(l)).set(v);
    }

    /// `name` without `_total`: the encoder adds it.
    fn counter(&mut self, name: &'static str, help: &str, l: &[(&str, &str)], v: f64) {
        let family = self.counters.entry(name).or_insert_with(|| {
            let f = Counters::default();
            self.registry.register(name, help, f.clone());
            f
        });
        family.get_or_create(&labels(l)).inc_by(v);
    }

    fn quantiles(&mut self, name: &'static str, help: &str, flow: &str, d: &Distribution) {
        if d.count == 0 {
            return;
        }
        for (q, v) in [("0.5", d.p50), ("0.95", d.p95), ("1", d.max)] {
            self.gauge(name, help, &[("flow", flow), ("quantile", q)], v);
        }
    }
}

/// The Prometheus text exposition of `f`.
pub(super) fn exposition(f: &Figures) -> String {
    let mut e = Exposition {
        registry: Registry::with_prefix("flowc"),
        gauges: BTreeMap::new(),
        counters: BTreeMap::new(),
    };
    for (flow, s) in &f.stats.flows {
        let flow = flow.as_str();
        for (status, n) in &s.by_status {
            e.counter(
                "runs",
                "Stored runs by flow and status",
                &[("flow", flow), ("status", status)],
                *n as f64,
            );
        }
        e.counter(
            "cost_dollars",
            "US dollars spent by the flow's stored runs",
            &[("flow", flow)],
            s.cost.total,
        );
        e.counter(
            "tokens",
            "Tokens used by the flow's stored runs",
            &[("flow", flow)],
            s.tokens.total,
        );
        e.quantiles(
            "run_cost_dollars",
            "Cost per run: nearest-rank p50, p95 and max (quantile 1) over the flow's stored runs",
            flow,
            &s.cost,
        );
        e.quantiles(
            "run_tokens",
            "Tokens per run: nearest-rank p50, p95 and max (quantile 1)",
            flow,
            &s.tokens,
        );
        e.quantiles(
            "run_steps",
            "Steps per run: nearest-rank p50, p95 and max (quantile 1)",
            flow,
            &s.steps,
        );
        for (steps, n) in &s.step_histogram {
            e.gauge(
                "runs_by_steps",
                "Stored runs of the flow with exactly `steps` steps",
                &[("flow", flow), ("steps", &steps.to_string())],
                *n as f64,
            );
        }
        for (tool, t) in &s.tools {
            for (outcome, n) in [("ok", t.ok), ("failed", t.failed)] {
                e.counter(
                    "tool_calls",
                    "Tool call attempts by tool and outcome",
                    &[("flow", flow), ("tool", tool), ("outcome", outcome)],
                    n as f64,
                );
            }
            for (class, n) in &t.failures {
                e.counter(
                    "tool_failures",
                    "Failed tool calls by failure class",
                    &[("flow", flow), ("tool", tool), ("class", class)],
                    *n as f64,
                );
            }
            e.gauge(
                "tool_success_ratio",
                "Successful tool calls / calls",
                &[("flow", flow), ("tool", tool)],
                t.success_rate,
            );
        }
        let g = &s.guardrails;
        for (kind, n) in [
            ("invalid_output", g.invalid_outputs),
            ("invalid_tool_call", g.invalid_tool_calls),
            ("blocked_effect", g.blocked_effects),
            ("budget_stop", g.budget_stops),
            ("failed_check", g.failed_checks),
        ] {
            e.counter(
                "guardrail_rejections",
                "Guardrail rejections by kind",
                &[("flow", flow), ("kind", kind)],
                n as f64,
            );
        }
        e.counter(
            "retries",
            "Retried model and tool call attempts",
            &[("flow", flow)],
            s.retries as f64,
        );
        e.counter(
            "fallbacks",
            "Steps that failed and used their fallback",
            &[("flow", flow)],
            s.fallbacks as f64,
        );
        e.quantiles(
            "gate_wait_seconds",
            "Seconds from a gate starting to wait to its decision: nearest-rank p50, p95 and max (quantile 1)",
            flow,
            &s.gate_wait_seconds,
        );
        if s.reliability.finished > 0 {
            e.gauge(
                "reliability_score",
                "Successful / finished × budget adherence × latency adherence",
                &[("flow", flow)],
                s.reliability.score,
            );
        }
    }
    for ((flow, gate), n) in &f.pending {
        e.gauge(
            "gates_pending",
            "Gates waiting for a decision",
            &[("flow", flow), ("gate", gate)],
            *n as f64,
        );
    }
    for (key, r) in &f.stats.reviews.gates {
        // Keyed `FLOW.GATE`; both are identifiers, so the first dot splits.
        let (flow, gate) = key.split_once('.').unwrap_or(("", key));
        for (verdict, n) in [
            ("agree", r.agreed),
            ("disagree", r.disagreed),
            ("open", r.open),
        ] {
            e.counter(
                "review_cases",
                "Policy decisions sampled for review, by verdict (open: not reviewed yet)",
                &[("flow", flow), ("gate", gate), ("verdict", verdict)],
                n as f64,
            );
        }
        if let Some(rate) = r.agreement_rate {
            e.gauge(
                "review_agreement_ratio",
                "Reviewed sampled cases the reviewer agreed with / reviewed",
                &[("flow", flow), ("gate", gate)],
                rate,
            );
        }
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &e.registry);
    out
}

/// `GET /metrics`: bearer token as the API (none needed when serve has no
/// tokens); the figures over the token's flows.
pub(super) async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let who = match api::who(&app, &headers) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    match app
        .blocking(move |_, store| figures(store, &who).map(|f| exposition(&f)))
        .await
    {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
