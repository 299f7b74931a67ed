//! `flowc stats`: the production metrics across the runs of a store, as a
//! library function a server can call too ([`compute`]).
//!
//! Figures come from the store's run records (status, spend, times) and from
//! each run's JSON-lines trace (tool calls, validation, checks, gates,
//! fallbacks, the flow's budget). Every metric is defined in
//! `docs/observability.md`; the definitions are repeated on the fields.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::store::{ReviewRecord, RunRecord, Verdict};

/// Which runs count.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only runs of this flow.
    pub flow: Option<String>,
    /// Only runs created at or after this time (seconds since the epoch).
    pub since: Option<f64>,
    /// Only runs with this status.
    pub status: Option<String>,
}

impl Filter {
    pub fn admits(&self, r: &RunRecord) -> bool {
        self.flow.as_ref().is_none_or(|f| *f == r.flow)
            && self.since.is_none_or(|t| r.created_at >= t)
            && self.status.as_ref().is_none_or(|s| *s == r.status)
    }
}

/// `7d`, `12h`, `30m`, `45s` (or a plain number of seconds) as seconds.
pub fn parse_duration(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: f64 = number
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("`{text}` is not a duration like 7d, 12h, 30m or 45s"))?;
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 7.0 * 86400.0,
        _ => return Err(format!("`{text}`: the unit must be s, m, h, d or w")),
    };
    Ok(n * scale)
}

/// Statuses a run ends with; others (`queued`, `running`, `waiting`) are
/// unfinished.
fn finished(status: &str) -> bool {
    !matches!(status, "queued" | "running" | "waiting")
}

/// Nearest-rank summary of a list of numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Distribution {
    pub count: usize,
    /// The smallest value with at least half the values at or below it.
    pub p50: f64,
    /// The smallest value with at least 95% of the values at or below it.
    pub p95: f64,
    pub max: f64,
    pub total: f64,
}

impl Distribution {
    pub fn of(values: &[f64]) -> Distribution {
        if values.is_empty() {
            return Distribution::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Distribution {
            count: v.len(),
            p50: rank(0.5),
            p95: rank(0.95),
            max: v[v.len() - 1],
            total: v.iter().sum(),
        }
    }
}

/// One tool's calls (every attempt is a call).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ToolStats {
    pub calls: u64,
    pub ok: u64,
    pub failed: u64,
    /// ok ÷ calls.
    pub success_rate: f64,
    /// Failed calls by failure class (`timeout`, `server_error`, `invalid`, …).
    pub failures: BTreeMap<String, u64>,
}

/// Guardrail rejections: counts over the runs, and their sum per run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Guardrails {
    /// Tool results and model or agent outputs that failed validation.
    pub invalid_outputs: u64,
    /// Tool calls with invalid arguments, and calls by agents of a tool they
    /// do not have (unknown, or above the agent's `may`).
    pub invalid_tool_calls: u64,
    /// Effects a human stopped: gates rejected.
    pub blocked_effects: u64,
    /// Runs that ended because a budget ran out.
    pub budget_stops: u64,
    /// `check` blocks whose condition was false.
    pub failed_checks: u64,
    pub total: u64,
    /// total ÷ runs.
    pub per_run: f64,
}

/// The reliability score: successful ÷ finished × average budget adherence
/// × average latency adherence (averages over finished runs).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Reliability {
    pub finished: u64,
    pub successful: u64,
    /// Per run: 1 − used ÷ limit for the budget dimension it came closest
    /// to (tokens, cost, steps, tool calls), at least 0; 1 with no limits.
    pub budget_adherence: f64,
    /// Per run: 1 − active time ÷ the flow's wall limit, at least 0; 1 with
    /// no wall limit.
    pub latency_adherence: f64,
    pub score: f64,
}

/// The metrics over one set of runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub runs: u64,
    pub by_status: BTreeMap<String, u64>,
    /// US dollars per run.
    pub cost: Distribution,
    /// Tokens per run.
    pub tokens: Distribution,
    /// Steps per run (as the budget counts them).
    pub steps: Distribution,
    /// Runs per step count: `{"3": 2}` is two runs of three steps.
    pub step_histogram: BTreeMap<u64, u64>,
    pub tools: BTreeMap<String, ToolStats>,
    pub guardrails: Guardrails,
    /// Retried attempts (model and tool calls).
    pub retries: u64,
    /// Steps that failed and used their fallback.
    pub fallbacks: u64,
    /// Seconds from a gate starting to wait to its decision.
    pub gate_wait_seconds: Distribution,
    /// Seconds each run was active (the sum of its processes' run spans).
    pub latency_seconds: Distribution,
    pub reliability: Reliability,
}

/// The metrics over every admitted run, per flow and per day (UTC).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    #[serde(flatten)]
    pub all: Summary,
    pub flows: BTreeMap<String, Summary>,
    /// Reliability per day the runs were created on (`YYYY-MM-DD`, UTC).
    pub days: BTreeMap<String, Reliability>,
    /// After-the-fact review of policy decisions (`sample …`): over every
    /// admitted run's sampled cases, and per gate (`FLOW.GATE`).
    pub reviews: ReviewStats,
}

/// How reviewers judged the sampled cases a policy decided.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReviewStats {
    /// Cases sampled for review.
    pub sampled: u64,
    /// Cases reviewed (agreed + disagreed).
    pub reviewed: u64,
    pub agreed: u64,
    pub disagreed: u64,
    /// Sampled, not reviewed yet.
    pub open: u64,
    /// agreed ÷ reviewed; `null` when nothing was reviewed.
    pub agreement_rate: Option<f64>,
    /// The same per gate, keyed `FLOW.GATE`.
    pub gates: BTreeMap<String, ReviewCounts>,
}

/// [`ReviewStats`] for one gate.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReviewCounts {
    pub sampled: u64,
    pub reviewed: u64,
    pub agreed: u64,
    pub disagreed: u64,
    pub open: u64,
    pub agreement_rate: Option<f64>,
}

impl ReviewCounts {
    fn add(&mut self, verdict: Option<Verdict>) {
        self.sampled += 1;
        match verdict {
            Some(Verdict::Agree) => self.agreed += 1,
            Some(Verdict::Disagree) => self.disagreed += 1,
            None => self.open += 1,
        }
        self.reviewed = self.agreed + self.disagreed;
        self.agreement_rate = match self.reviewed {
            0 => None,
            n => Some(self.agreed as f64 / n as f64),
        };
    }
}

/// The review figures over the sampled cases of the runs `filter` admits.
pub fn review_stats(items: &[ReviewRecord], runs: &[RunRecord], filter: &Filter) -> ReviewStats {
    let admitted: std::collections::BTreeSet<&str> = runs
        .iter()
        .filter(|r| filter.admits(r))
        .map(|r| r.id.as_str())
        .collect();
    let mut all = ReviewCounts::default();
    let mut gates: BTreeMap<String, ReviewCounts> = BTreeMap::new();
    for item in items
        .iter()
        .filter(|i| admitted.contains(i.run_id.as_str()))
    {
        all.add(item.verdict);
        gates
            .entry(format!("{}.{}", item.flow, item.gate))
            .or_default()
            .add(item.verdict);
    }
    ReviewStats {
        sampled: all.sampled,
        reviewed: all.reviewed,
        agreed: all.agreed,
        disagreed: all.disagreed,
        open: all.open,
        agreement_rate: all.agreement_rate,
        gates,
    }
}

/// What one run's trace says.
#[derive(Default)]
struct RunFacts {
    tools: BTreeMap<String, ToolStats>,
    invalid_outputs: u64,
    invalid_tool_calls: u64,
    blocked_effects: u64,
    failed_checks: u64,
    retries: u64,
    fallbacks: u64,
    gate_waits: Vec<f64>,
    active_seconds: f64,
    budget_adherence: f64,
    latency_adherence: f64,
}

fn facts(r: &RunRecord, events: &[Value]) -> RunFacts {
    let mut f = RunFacts::default();
    let mut gate_started: BTreeMap<String, f64> = BTreeMap::new();
    let mut budget = Value::Null;
    for e in events {
        let name = e["name"].as_str().unwrap_or("").to_string();
        match e["kind"].as_str().unwrap_or("") {
            "run" => {
                if let (Some(s), Some(t)) = (e["start_ms"].as_f64(), e["end_ms"].as_f64()) {
                    f.active_seconds += (t - s).max(0.0) / 1e3;
                }
                f.retries += e["stats"]["retries"].as_u64().unwrap_or(0);
                if !e["budget"].is_null() {
                    budget = e["budget"].clone();
                }
            }
            "tool_call" => {
                let t = f.tools.entry(name).or_default();
                t.calls += 1;
                if e["status"] == "ok" {
                    t.ok += 1;
                } else {
                    t.failed += 1;
                    let class = e["class"].as_str().unwrap_or("failed").to_string();
                    *t.failures.entry(class).or_default() += 1;
                }
            }
            "validation" => match e["what"].as_str() {
                Some("arguments") => f.invalid_tool_calls += 1,
                _ => f.invalid_outputs += 1,
            },
            "agent_error" => f.invalid_tool_calls += 1,
            "check" if e["status"] == "failed" => f.failed_checks += 1,
            "fallback" => f.fallbacks += 1,
            "gate" => {
                let at = e["at_ms"].as_f64().unwrap_or(0.0);
                match e["decision"].as_str() {
                    Some("waiting") => {
                        gate_started.entry(name).or_insert(at);
                    }
                    // Still waiting, for a second target.
                    Some("escalated") => {}
                    Some(decision) => {
                        if decision == "rejected" {
                            f.blocked_effects += 1;
                        }
                        if let Some(start) = gate_started.remove(&name) {
                            f.gate_waits.push((at - start).max(0.0) / 1e3);
                        }
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }
    // Budget adherence: the tightest of the limited dimensions.
    let used = [
        ("tokens", r.spend.tokens as f64),
        ("cost", r.spend.cost),
        ("steps", r.spend.steps as f64),
        ("tool_calls", r.spend.tool_calls as f64),
    ];
    f.budget_adherence = used
        .iter()
        .filter_map(|(k, u)| {
            let limit = budget[*k].as_f64()?;
            Some(if limit > 0.0 {
                (1.0 - u / limit).max(0.0)
            } else {
                0.0
            })
        })
        .fold(1.0, f64::min);
    f.latency_adherence = match budget["wall_seconds"].as_f64() {
        Some(limit) if limit > 0.0 => (1.0 - f.active_seconds / limit).max(0.0),
        Some(_) => 0.0,
        None => 1.0,
    };
    f
}

fn summarize(runs: &[(&RunRecord, &RunFacts)]) -> Summary {
    let mut s = Summary {
        runs: runs.len() as u64,
        ..Summary::default()
    };
    let mut gate_waits = Vec::new();
    for (r, f) in runs {
        *s.by_status.entry(r.status.clone()).or_default() += 1;
        *s.step_histogram.entry(r.spend.steps).or_default() += 1;
        for (name, t) in &f.tools {
            let all = s.tools.entry(name.clone()).or_default();
            all.calls += t.calls;
            all.ok += t.ok;
            all.failed += t.failed;
            for (class, n) in &t.failures {
                *all.failures.entry(class.clone()).or_default() += n;
            }
        }
        let g = &mut s.guardrails;
        g.invalid_outputs += f.invalid_outputs;
        g.invalid_tool_calls += f.invalid_tool_calls;
        g.blocked_effects += f.blocked_effects;
        g.failed_checks += f.failed_checks;
        g.budget_stops += u64::from(r.status == "budget_exhausted");
        s.retries += f.retries;
        s.fallbacks += f.fallbacks;
        gate_waits.extend(f.gate_waits.iter().copied());
    }
    for t in s.tools.values_mut() {
        t.success_rate = if t.calls == 0 {
            0.0
        } else {
            t.ok as f64 / t.calls as f64
        };
    }
    let g = &mut s.guardrails;
    g.total = g.invalid_outputs
        + g.invalid_tool_calls
        + g.blocked_effects
        + g.budget_stops
        + g.failed_checks;
    g.per_run = if s.runs == 0 {
        0.0
    } else {
        g.total as f64 / s.runs as f64
    };
    let values = |f: &dyn Fn(&RunRecord, &RunFacts) -> f64| -> Vec<f64> {
        runs.iter().map(|(r, x)| f(r, x)).collect()
    };
    s.cost = Distribution::of(&values(&|r, _| r.spend.cost));
    s.tokens = Distribution::of(&values(&|r, _| r.spend.tokens as f64));
    s.steps = Distribution::of(&values(&|r, _| r.spend.steps as f64));
    s.latency_seconds = Distribution::of(&values(&|_, f| f.active_seconds));
    s.gate_wait_seconds = Distribution::of(&gate_waits);
    s.reliability = reliability(runs);
    s
}

fn reliability(runs: &[(&RunRecord, &RunFacts)]) -> Reliability {
    let done: Vec<&(&RunRecord, &RunFacts)> =
        runs.iter().filter(|(r, _)| finished(&r.status)).collect();
    if done.is_empty() {
        return Reliability::default();
    }
    let n = done.len() as f64;
    let successful = done.iter().filter(|(r, _)| r.status == "completed").count();
    let budget = done.iter().map(|(_, f)| f.budget_adherence).sum::<f64>() / n;
    let latency = done.iter().map(|(_, f)| f.latency_adherence).sum::<f64>() / n;
    Reliability {
        finished: done.len() as u64,
        successful: successful as u64,
        budget_adherence: budget,
        latency_adherence: latency,
        score: successful as f64 / n * budget * latency,
    }
}

/// `YYYY-MM-DD` (UTC) of a time in seconds since the epoch.
fn day(at: f64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = (at / 86400.0).floor() as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The metrics over the admitted runs; `events` reads a run's trace events
/// (an empty list when its trace is gone).
pub fn compute(
    runs: &[RunRecord],
    filter: &Filter,
    events: &dyn Fn(&RunRecord) -> Vec<Value>,
) -> Stats {
    let admitted: Vec<&RunRecord> = runs.iter().filter(|r| filter.admits(r)).collect();
    let facts: Vec<RunFacts> = admitted.iter().map(|r| facts(r, &events(r))).collect();
    let pairs: Vec<(&RunRecord, &RunFacts)> = admitted.iter().copied().zip(facts.iter()).collect();
    let mut flows: BTreeMap<String, Vec<(&RunRecord, &RunFacts)>> = BTreeMap::new();
    let mut days: BTreeMap<String, Vec<(&RunRecord, &RunFacts)>> = BTreeMap::new();
    for p in &pairs {
        flows.entry(p.0.flow.clone()).or_default().push(*p);
        days.entry(day(p.0.created_at)).or_default().push(*p);
    }
    Stats {
        all: summarize(&pairs),
        flows: flows.into_iter().map(|(k, v)| (k, summarize(&v))).collect(),
        days: days
            .into_iter()
            .map(|(k, v)| (k, reliability(&v)))
            .collect(),
        reviews: ReviewStats::default(),
    }
}

/// A run's trace events from its JSON-lines file (unreadable lines skipped).
pub fn trace_events(r: &RunRecord) -> Vec<Value> {
    std::fs::read_to_string(&r.trace)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let d = Distribution::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((d.p50, d.p95, d.max, d.total), (3.0, 5.0, 5.0, 15.0));
        assert_eq!(Distribution::of(&[]).count, 0);
    }

    #[test]
    fn durations_and_days() {
        assert_eq!(parse_duration("7d"), Ok(604_800.0));
        assert_eq!(parse_duration("90"), Ok(90.0));
        assert!(parse_duration("soon").is_err());
        assert_eq!(day(0.0), "1970-01-01");
        assert_eq!(day(1_709_251_200.0), "2024-03-01");
    }
}
