//! What the API and the pages show, gathered once for both: an inbox card
//! per pending gate, a run with its steps, gates, spend and trace, and a
//! decision. Every function takes the reviewer and refuses (403) what is
//! outside their flows and gates.

use std::sync::Arc;

use serde_json::{json, Value};

use super::auth::Reviewer;
use super::program::{GateInfo, RunProgram};
use super::state::{ApiError, App};
use crate::run::status::GateStatus;
use crate::store::{GateRecord, ReviewRecord, RunRecord, Store, Verdict as ReviewVerdict};

/// A pending gate with what a reviewer needs to decide it.
pub(super) struct Card {
    pub gate: GateRecord,
    pub run: RunRecord,
    /// The run's completed steps by key (`None`: skipped).
    pub steps: Vec<(String, Option<Value>)>,
    pub program: Arc<RunProgram>,
}

impl Card {
    /// The value the gate releases if approved as shown.
    pub fn shown(&self) -> &Value {
        self.gate
            .show
            .as_array()
            .and_then(|s| s.first())
            .unwrap_or(&Value::Null)
    }

    pub fn info(&self) -> Option<&GateInfo> {
        self.program.gate(&self.gate.flow, &self.gate.gate)
    }

    /// The card as `GET /api/inbox` lists it (docs/team.md).
    pub fn json(&self) -> Value {
        let info = self.info();
        let mut doc = gate_json(&self.gate);
        if let Value::Object(map) = &mut doc {
            map.insert("type".into(), json!(info.map(|i| i.ty_text.clone())));
            map.insert(
                "proposed".into(),
                Value::Array(info.map_or(Vec::new(), |i| {
                    i.proposed
                        .iter()
                        .map(|p| p.json(self.shown(), &self.run.input))
                        .collect()
                })),
            );
            map.insert("input".into(), self.run.input.clone());
            map.insert("steps".into(), steps_json(&self.steps));
            map.insert("program_error".into(), json!(self.program.error));
        }
        doc
    }
}

/// A gate as the API shows it: what was shown, what was released (the
/// edited value, or the shown one when approved as it was), who decided
/// and when.
pub(super) fn gate_json(g: &GateRecord) -> Value {
    let released = match GateStatus::from_name(&g.status) {
        Some(GateStatus::Approved) => g
            .value
            .clone()
            .or_else(|| g.show.as_array().and_then(|s| s.first().cloned())),
        _ => None,
    };
    json!({
        "run": g.run_id,
        "key": g.key,
        "flow": g.flow,
        "gate": g.gate,
        "status": g.status,
        "show": g.show,
        "edited": g.value.is_some(),
        "released": released,
        "reason": g.reason,
        "created_at": g.created_at,
        "timeout_at": g.timeout_at,
        "on_timeout": g.on_timeout,
        "decided_by": g.decided_by,
        "decided_at": g.decided_at,
        "source": g.source.map(|s| s.as_str()),
        "policy_read": g.policy_read,
    })
}

pub(super) fn steps_json(steps: &[(String, Option<Value>)]) -> Value {
    Value::Array(
        steps
            .iter()
            .map(|(key, value)| json!({"key": key, "skipped": value.is_none(), "value": value}))
            .collect(),
    )
}

fn sorted_steps(store: &Store, run: &str) -> Result<Vec<(String, Option<Value>)>, ApiError> {
    let mut steps: Vec<(String, Option<Value>)> = store.steps(run)?.into_iter().collect();
    steps.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(steps)
}

/// The pending gates the reviewer may decide, oldest first.
pub(super) fn inbox(app: &App, store: &Store, who: &Reviewer) -> Result<Vec<Card>, ApiError> {
    let mut cards = Vec::new();
    for gate in store.gates(None)? {
        if gate.status != GateStatus::Pending.as_str() || !who.decides(&gate.flow, &gate.gate) {
            continue;
        }
        let Some(run) = store.run(&gate.run_id)? else {
            continue;
        };
        let program = app.program(store, &run);
        let steps = sorted_steps(store, &run.id)?;
        cards.push(Card {
            gate,
            run,
            steps,
            program,
        });
    }
    Ok(cards)
}

/// A run the reviewer may see (404 when there is none, 403 outside their flows).
pub(super) fn visible_run(store: &Store, who: &Reviewer, id: &str) -> Result<RunRecord, ApiError> {
    let run = store
        .run(id)?
        .ok_or_else(|| ApiError::NotFound(format!("there is no run `{id}`")))?;
    if !who.sees(&run.flow) {
        return Err(ApiError::Forbidden(format!(
            "{} may not see runs of flow `{}`",
            who.name, run.flow
        )));
    }
    Ok(run)
}

/// Everything a run page shows.
pub(super) struct RunView {
    pub run: RunRecord,
    pub steps: Vec<(String, Option<Value>)>,
    pub gates: Vec<GateRecord>,
    pub program: Arc<RunProgram>,
}

impl RunView {
    /// `GET /api/runs/RUN` (docs/team.md).
    pub fn json(&self) -> Value {
        json!({
            "run": run_json(&self.run),
            "spend": spend_json(&self.run, &self.program),
            "gates": self.gates.iter().map(gate_json).collect::<Vec<_>>(),
            "steps": steps_json(&self.steps),
        })
    }
}

pub(super) fn run_view(
    app: &App,
    store: &Store,
    who: &Reviewer,
    id: &str,
) -> Result<RunView, ApiError> {
    let run = visible_run(store, who, id)?;
    let program = app.program(store, &run);
    Ok(RunView {
        steps: sorted_steps(store, id)?,
        gates: store.gates(Some(id))?,
        program,
        run,
    })
}

/// A run as the API lists it.
pub(super) fn run_json(r: &RunRecord) -> Value {
    json!({
        "id": r.id,
        "flow": r.flow,
        "status": r.status,
        "input": r.input,
        "output": r.output,
        "error": r.error,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "spend": r.spend,
    })
}

/// The run's spend against its flow's budget: each measure with its limit
/// (`null`: none declared).
pub(super) fn spend_json(r: &RunRecord, program: &RunProgram) -> Value {
    let b = program.budgets.get(&r.flow).copied().unwrap_or_default();
    let s = &r.spend;
    json!({
        "tokens": {"spent": s.tokens, "limit": b.tokens},
        "cost": {"spent": s.cost, "limit": b.cost},
        "steps": {"spent": s.steps, "limit": b.steps},
        "tool_calls": {"spent": s.tool_calls, "limit": b.tool_calls},
        "wall_seconds": {"spent": s.wall, "limit": b.wall_seconds},
    })
}

/// The run's trace events, if serve can read its trace file (a worker on
/// another machine wrote it there): scrubbed of secrets when written.
pub(super) fn trace(run: &RunRecord) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(&run.trace)
        .map_err(|e| format!("the trace {} cannot be read here: {e}", run.trace))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// A decision from a reviewer.
pub(super) enum Verdict {
    Approve,
    /// Approve with this value instead of the shown one.
    Edit(Value),
    Reject(String),
}

/// Decides gate `gate` (its name or key) of run `run` as `who`: 404 for an
/// unknown run or gate, 403 outside the reviewer's scope, 409 when it was
/// decided already (by anyone, through any path), 422 for a rejection
/// without a reason or an edited value that does not type-check. Returns
/// the gate as decided.
pub(super) fn decide(
    app: &App,
    store: &Store,
    who: &Reviewer,
    run_id: &str,
    gate: &str,
    verdict: Verdict,
) -> Result<GateRecord, ApiError> {
    let run = visible_run(store, who, run_id)?;
    let gates = store.gates(Some(run_id))?;
    let matching: Vec<&GateRecord> = gates
        .iter()
        .filter(|g| g.key == gate || g.gate == gate)
        .collect();
    let pending: Vec<&&GateRecord> = matching
        .iter()
        .filter(|g| g.status == GateStatus::Pending.as_str())
        .collect();
    let g = match (pending.as_slice(), matching.as_slice()) {
        ([one], _) => (**one).clone(),
        ([], []) => {
            return Err(ApiError::NotFound(format!(
                "run {run_id} has no gate `{gate}`"
            )))
        }
        ([], decided) => return Err(conflict(decided[0])),
        (many, _) => {
            return Err(ApiError::BadRequest(format!(
                "`{gate}` waits at {} places; name one by its key: {}",
                many.len(),
                many.iter()
                    .map(|g| g.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    if !who.decides(&g.flow, &g.gate) {
        return Err(ApiError::Forbidden(format!(
            "{} may not decide gate `{}` of flow `{}`",
            who.name, g.gate, g.flow
        )));
    }
    let (approve, value, reason) = match verdict {
        Verdict::Approve => (true, None, None),
        Verdict::Reject(reason) if reason.trim().is_empty() => {
            return Err(ApiError::Unprocessable(
                json!({"error": "a rejection needs a reason", "field": "reason"}),
            ))
        }
        Verdict::Reject(reason) => (false, None, Some(reason)),
        Verdict::Edit(value) => {
            let program = app.program(store, &run);
            let Some(info) = program.gate(&g.flow, &g.gate) else {
                return Err(ApiError::Unprocessable(json!({
                    "error": program.error.clone().unwrap_or_else(|| format!("the run's program has no gate `{}`", g.gate)),
                })));
            };
            if let Err(e) = crate::decision::check_value(&program.types, &info.ty, &value) {
                let errors = match &e {
                    crate::decision::EditError::Invalid { errors, .. } => errors.clone(),
                    crate::decision::EditError::NoGate { .. } => Vec::new(),
                };
                return Err(ApiError::Unprocessable(json!({
                    "error": format!("the edited value does not type-check against `{}`", info.ty_text),
                    "type": info.ty_text,
                    "errors": errors,
                })));
            }
            (true, Some(value), None)
        }
    };
    if !store.decide_gate(
        run_id,
        &g.key,
        approve,
        value.as_ref(),
        reason.as_deref(),
        &who.name,
    )? {
        let now = store.gate(run_id, &g.key)?.unwrap_or(g);
        return Err(conflict(&now));
    }
    Ok(store.gate(run_id, &g.key)?.unwrap_or(g))
}

/// 409: the gate is no longer pending; the body says who decided and how.
fn conflict(g: &GateRecord) -> ApiError {
    ApiError::Conflict(json!({
        "error": format!(
            "gate {} of run {} was already {} by {}",
            g.key,
            g.run_id,
            g.status,
            g.decided_by.as_deref().unwrap_or("someone")
        ),
        "gate": gate_json(g),
    }))
}

/// A policy's decision sampled for review after the fact, with its gate.
pub(super) struct ReviewCard {
    pub review: ReviewRecord,
    pub gate: GateRecord,
    pub run: RunRecord,
    pub program: Arc<RunProgram>,
}

impl ReviewCard {
    /// As `GET /api/reviews` lists it (docs/team.md).
    pub fn json(&self) -> Value {
        json!({
            "run": self.review.run_id,
            "key": self.review.key,
            "flow": self.review.flow,
            "gate": self.review.gate,
            "sampled_at": self.review.sampled_at,
            "decision": gate_json(&self.gate),
            "input": self.run.input,
        })
    }
}

/// A review item as the API answers a verdict.
pub(super) fn review_json(r: &ReviewRecord) -> Value {
    json!({
        "run": r.run_id,
        "key": r.key,
        "flow": r.flow,
        "gate": r.gate,
        "sampled_at": r.sampled_at,
        "verdict": r.verdict.map(|v| v.as_str()),
        "reviewed_by": r.reviewed_by,
        "reviewed_at": r.reviewed_at,
        "note": r.note,
    })
}

/// The sampled policy decisions not reviewed yet that the reviewer may
/// review (those of gates they may decide), oldest first.
pub(super) fn reviews(
    app: &App,
    store: &Store,
    who: &Reviewer,
) -> Result<Vec<ReviewCard>, ApiError> {
    let mut cards = Vec::new();
    for review in store.reviews(None, true)? {
        if !who.decides(&review.flow, &review.gate) {
            continue;
        }
        let (Some(run), Some(gate)) = (
            store.run(&review.run_id)?,
            store.gate(&review.run_id, &review.key)?,
        ) else {
            continue;
        };
        let program = app.program(store, &run);
        cards.push(ReviewCard {
            review,
            gate,
            run,
            program,
        });
    }
    Ok(cards)
}

/// Marks a sampled case of gate `gate` (its name or key) of run `run`
/// agreed or not, as `who`: 404 when the run has no such case, 403 outside
/// the reviewer's gates, 409 when it was reviewed already.
pub(super) fn review(
    store: &Store,
    who: &Reviewer,
    run_id: &str,
    gate: &str,
    verdict: ReviewVerdict,
    note: Option<&str>,
) -> Result<ReviewRecord, ApiError> {
    visible_run(store, who, run_id)?;
    let items: Vec<ReviewRecord> = store
        .reviews(Some(run_id), false)?
        .into_iter()
        .filter(|r| r.key == gate || r.gate == gate)
        .collect();
    let open: Vec<&ReviewRecord> = items.iter().filter(|r| r.verdict.is_none()).collect();
    let item = match (open.as_slice(), items.as_slice()) {
        ([one], _) => (*one).clone(),
        ([], []) => {
            return Err(ApiError::NotFound(format!(
                "run {run_id} has no sampled decision of `{gate}` to review"
            )))
        }
        ([], [done, ..]) => return Err(reviewed(done)),
        (many, _) => {
            return Err(ApiError::BadRequest(format!(
                "`{gate}` has {} open reviews in run {run_id}; name one by its key: {}",
                many.len(),
                many.iter()
                    .map(|r| r.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    if !who.decides(&item.flow, &item.gate) {
        return Err(ApiError::Forbidden(format!(
            "{} may not review gate `{}` of flow `{}`",
            who.name, item.gate, item.flow
        )));
    }
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    if !store.record_review(run_id, &item.key, verdict, &who.name, note)? {
        let now = store
            .reviews(Some(run_id), false)?
            .into_iter()
            .find(|r| r.key == item.key)
            .unwrap_or(item);
        return Err(reviewed(&now));
    }
    store
        .reviews(Some(run_id), false)?
        .into_iter()
        .find(|r| r.key == item.key)
        .ok_or_else(|| ApiError::Internal("the review was recorded but cannot be read back".into()))
}

/// 409: the case was reviewed already.
fn reviewed(r: &ReviewRecord) -> ApiError {
    ApiError::Conflict(json!({
        "error": format!(
            "the sampled decision of {} in run {} was already reviewed by {}",
            r.key,
            r.run_id,
            r.reviewed_by.as_deref().unwrap_or("someone")
        ),
        "review": review_json(r),
    }))
}
