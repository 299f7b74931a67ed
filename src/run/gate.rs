//! Approval gates: where a gate's decision comes from.

use std::rc::Rc;
use std::time::Duration;

use petgraph::graph::NodeIndex;
use serde_json::Value;

use super::error::{FailureClass, Stop};
use super::eval::eval;
use super::frame::{step_key, FlowCtx, Frame, FrameScope, GateDecision, PendingGate};
use super::region::Prepared;
use super::runtime::Runtime;
use super::status::{decision_name, decision_named, GateStatus};
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
        let key = step_key(&frame.path, cx, n);
        let pending = PendingGate {
            flow: cx.flow.name.clone(),
            gate: gate.to_string(),
            path: frame.path.clone(),
            show: shown.clone(),
        };
        let decision = self
            .gate_decision(&key, &pending, timeout, on_timeout)
            .map_err(|e| {
                fail(match &self.durable {
                    Some(d) => d.store_failed(e),
                    None => e.to_string(),
                })
            })?;
        match decision {
            Some(GateDecision::Approve(edited)) => {
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
                    None => value,
                };
                self.trace.event(
                    Some(cx.span),
                    "gate",
                    gate,
                    fields! {"decision": "approved", "show": shown},
                );
                Ok(Prepared::Done(v))
            }
            Some(GateDecision::Reject(reason)) => {
                self.trace.event(
                    Some(cx.span),
                    "gate",
                    gate,
                    fields! {"decision": "rejected", "reason": reason, "show": shown},
                );
                Ok(Prepared::Skip)
            }
            None => {
                self.trace.event(
                    Some(cx.span),
                    "gate",
                    gate,
                    fields! {"decision": "waiting", "show": pending.show},
                );
                Ok(Prepared::Wait(pending))
            }
        }
    }

    /// A gate's decision: from the run store (an earlier process, `flowc
    /// approve`, a passed timeout), else from the command line or the test.
    /// A gate that stays undecided is recorded as pending.
    pub fn gate_decision(
        &self,
        key: &str,
        pending: &PendingGate,
        timeout: Option<Duration>,
        on_timeout: Decision,
    ) -> Result<Option<GateDecision>, crate::store::StoreError> {
        let given = self.gates.get(&pending.gate).cloned();
        let Some(d) = &self.durable else {
            return Ok(given);
        };
        let store = d.store.borrow();
        let record = store.gate(&d.run_id, key)?;
        if let Some(r) = &record {
            match GateStatus::from_name(&r.status) {
                Some(GateStatus::Approved) => {
                    return Ok(Some(GateDecision::Approve(r.value.clone())))
                }
                Some(GateStatus::Rejected) => {
                    return Ok(Some(GateDecision::Reject(
                        r.reason.clone().unwrap_or_default(),
                    )))
                }
                Some(GateStatus::Pending) | None => {}
            }
            if r.timeout_at.is_some_and(|t| crate::store::now() >= t) {
                let approve = decision_named(&r.on_timeout) == Some(Decision::Approve);
                store.decide_gate(&d.run_id, key, approve, None, Some("timed out"))?;
                return Ok(Some(if approve {
                    GateDecision::Approve(None)
                } else {
                    GateDecision::Reject("timed out".into())
                }));
            }
        }
        if let Some(decision) = given {
            return Ok(Some(decision));
        }
        if record.is_none() {
            let created = crate::store::now();
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
                },
            )?;
        }
        Ok(None)
    }
}
