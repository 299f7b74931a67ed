//! Approval gates: where a gate's decision comes from.

use std::rc::Rc;
use std::time::Duration;

use petgraph::graph::NodeIndex;
use serde_json::Value;

use super::error::{FailureClass, Stop};
use super::eval::eval;
use super::frame::{step_path, FlowCtx, Frame, FrameScope, GateDecision, PendingGate};
use super::region::Prepared;
use super::runtime::Runtime;
use super::status::{decision_name, decision_named, GateStatus};
use super::step_path::StepPath;
use crate::exec::{Decision, Expr};
use crate::fields;

impl Runtime<'_> {
    /// An approval gate: its shown values, then its decision, or a wait.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn approve<'s>(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        frame: &Rc<Frame>,
        gate: &str,
        show: &[Expr],
        timeout: Option<Duration>,
        on_timeout: Decision,
    ) -> Result<Prepared<'s>, Stop> {
        let step = &cx.flow.graph[n];
        let scope = FrameScope {
            flow: cx.flow,
            plan: &cx.plan,
            frame,
        };
        let fail = |message: String| self.fail(cx, n, 1, FailureClass::Gate, message);
        let shown: Vec<Value> = show
            .iter()
            .map(|e| eval(e, &scope))
            .collect::<Result<_, _>>()
            .map_err(|e| fail(e.0))?;
        self.spend_step(cx, n)?;
        let value = shown.first().cloned().unwrap_or(Value::Null);
        let path = step_path(frame, cx, n);
        let pending = PendingGate {
            flow: cx.flow.name.clone(),
            gate: gate.to_string(),
            path: frame.path.to_string(),
            show: shown.clone(),
        };
        let decided = self
            .gate_decision(&path, &pending, timeout, on_timeout)
            .map_err(|e| {
                fail(match &self.durable {
                    Some(d) => d.store_failed(e),
                    None => e.to_string(),
                })
            })?;
        let Some(decided) = decided else {
            self.trace.event(
                Some(cx.span),
                "gate",
                gate,
                fields! {"decision": "waiting", "show": pending.show},
            );
            return Ok(Prepared::Wait(pending));
        };
        // The gate's event says what was shown, what it released (an
        // edited value, when the reviewer changed it), who decided and when.
        let mut data = fields! {
            "show": shown,
            "original": value,
            "decided_by": decided.by,
            "decided_at": decided.at,
        };
        match decided.decision {
            GateDecision::Approve(edited) => {
                let v = match edited {
                    Some(v) => {
                        if let Err(errors) =
                            self.validators.check(&self.program.types, &step.ty, &v)
                        {
                            return Err(fail(format!(
                                "the edited value for gate `{gate}` does not type-check: {}",
                                errors.join("; ")
                            )));
                        }
                        v
                    }
                    None => value.clone(),
                };
                data.insert("decision".into(), "approved".into());
                data.insert("edited".into(), Value::Bool(v != value));
                data.insert("value".into(), v.clone());
                self.trace.event(Some(cx.span), "gate", gate, data);
                Ok(Prepared::Done(v))
            }
            GateDecision::Reject(reason) => {
                data.insert("decision".into(), "rejected".into());
                data.insert("reason".into(), Value::String(reason));
                self.trace.event(Some(cx.span), "gate", gate, data);
                Ok(Prepared::Skip)
            }
        }
    }

    /// A gate's decision: from the run store (an earlier process, `flowc
    /// approve`, a passed timeout), else from the command line or the test
    /// (recorded in the store, with who gave it). A gate that stays undecided
    /// is recorded as pending.
    pub fn gate_decision(
        &self,
        path: &StepPath<'_>,
        pending: &PendingGate,
        timeout: Option<Duration>,
        on_timeout: Decision,
    ) -> Result<Option<Decided>, crate::store::StoreError> {
        let given = self
            .gates
            .get(&pending.gate)
            .cloned()
            .map(|decision| Decided {
                decision,
                by: self.decided_by.clone(),
                at: crate::store::now(),
            });
        let Some(d) = &self.durable else {
            return Ok(given);
        };
        let key = &path.to_string();
        let store = d.store.borrow();
        let record = store.gate(&d.run_id, key)?;
        if let Some(r) = &record {
            let stored = |decision| Decided {
                decision,
                by: r.decided_by.clone().unwrap_or_default(),
                at: r.decided_at.unwrap_or_default(),
            };
            match GateStatus::from_name(&r.status) {
                Some(GateStatus::Approved) => {
                    return Ok(Some(stored(GateDecision::Approve(r.value.clone()))))
                }
                Some(GateStatus::Rejected) => {
                    return Ok(Some(stored(GateDecision::Reject(
                        r.reason.clone().unwrap_or_default(),
                    ))))
                }
                Some(GateStatus::Pending) | None => {}
            }
            if r.timeout_at.is_some_and(|t| crate::store::now() >= t) {
                let approve = decision_named(&r.on_timeout) == Some(Decision::Approve);
                store.decide_gate(&d.run_id, key, approve, None, Some("timed out"), TIMEOUT)?;
                return Ok(Some(Decided {
                    decision: if approve {
                        GateDecision::Approve(None)
                    } else {
                        GateDecision::Reject("timed out".into())
                    },
                    by: TIMEOUT.into(),
                    at: crate::store::now(),
                }));
            }
        }
        let created = crate::store::now();
        if record.is_none() {
            store.pending_gate(
                &d.lease,
                &crate::store::GateRecord {
                    run_id: d.run_id.clone(),
                    key: key.to_string(),
                    flow: pending.flow.clone(),
                    gate: pending.gate.clone(),
                    show: Value::Array(pending.show.clone()),
                    status: GateStatus::Pending.as_str().into(),
                    value: None,
                    reason: None,
                    created_at: created,
                    timeout_at: timeout.map(|t| created + t.as_secs_f64()),
                    on_timeout: decision_name(on_timeout).into(),
                    decided_by: None,
                    decided_at: None,
                },
            )?;
        }
        if let Some(given) = given {
            // Recorded like a decision made with `flowc approve`, so the
            // store says who decided every gate.
            let (approve, value, reason) = match &given.decision {
                GateDecision::Approve(v) => (true, v.as_ref(), None),
                GateDecision::Reject(r) => (false, None, Some(r.as_str())),
            };
            store.decide_gate(&d.run_id, key, approve, value, reason, &given.by)?;
            return Ok(Some(given));
        }
        Ok(None)
    }
}

/// Who decides a gate whose timeout passed.
const TIMEOUT: &str = "timeout";

/// A gate's decision, who made it and when (seconds since the Unix epoch).
pub struct Decided {
    pub decision: GateDecision,
    pub by: String,
    pub at: f64,
}
