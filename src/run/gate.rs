//! Approval gates: where a gate's decision comes from (the run store, the
//! command line or a test, the gate's policy, its timeout), and who is told
//! that it waits (`notify`, and its escalation's target).

use std::rc::Rc;

use petgraph::graph::NodeIndex;
use serde_json::Value;

use super::error::{FailureClass, Stop};
use super::eval::eval;
use super::frame::{step_path, FlowCtx, Frame, FrameScope, GateDecision, PendingGate};
use super::notify::{GateNotice, Notice};
use super::policy::{in_sample, judge, PolicyVerdict};
use super::region::Prepared;
use super::runtime::Runtime;
use super::status::{decision_name, GateStatus};
use super::step_path::StepPath;
use super::trace::SpanId;
use crate::exec::{Decision, Gate, Notify};
use crate::fields;
use crate::store::{DecisionSource, GateRecord, NoticeStage, ReviewRecord, Store, StoreError};

impl Runtime<'_> {
    /// An approval gate: its shown values, then its decision, or a wait.
    pub(crate) fn approve<'s>(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        frame: &Rc<Frame>,
        spec: &Gate,
    ) -> Result<Prepared<'s>, Stop> {
        let gate = spec.name.as_str();
        let step = &cx.flow.graph[n];
        let scope = FrameScope {
            flow: cx.flow,
            plan: &cx.plan,
            frame,
            store_failed: self.durable.as_ref().map(|d| &d.failed),
        };
        let fail = |message: String| self.fail(cx, n, 1, FailureClass::Gate, message);
        let shown: Vec<Value> = spec
            .show
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
        let verdict = spec.policy.as_ref().map(|p| judge(p, &scope));
        let decided = self
            .gate_decision(&path, &pending, spec, verdict.as_ref(), cx.span)
            .map_err(|e| {
                fail(match &self.durable {
                    Some(d) => d.store_failed(e),
                    None => e.to_string(),
                })
            })?;
        let Some(decided) = decided else {
            let mut data = fields! {"decision": "waiting", "show": pending.show};
            if let Some(v) = &verdict {
                data.insert("policy".into(), policy_data(v));
            }
            self.trace.event(Some(cx.span), "gate", gate, data);
            return Ok(Prepared::Wait(pending));
        };
        // The gate's event says what was shown, what it released (an
        // edited value, when the reviewer changed it), who or what decided
        // and when, and what a policy read.
        let mut data = fields! {
            "show": shown,
            "original": value,
            "decided_by": decided.by,
            "decided_at": decided.at,
            "source": decided.source.as_str(),
        };
        if let Some(v) = &verdict {
            data.insert("policy".into(), policy_data(v));
        }
        if decided.source == DecisionSource::Policy {
            data.insert("sampled".into(), Value::Bool(decided.sampled));
        }
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
    /// approve`, a passed timeout), else from the gate's policy, else from
    /// the command line or the test (recorded in the store, with who or
    /// what decided). A gate that stays undecided is recorded as pending and
    /// announced; one whose timeout passed escalates once if it says so,
    /// then takes its `on_timeout` outcome.
    pub fn gate_decision(
        &self,
        path: &StepPath<'_>,
        pending: &PendingGate,
        spec: &Gate,
        verdict: Option<&PolicyVerdict>,
        span: SpanId,
    ) -> Result<Option<Decided>, StoreError> {
        let now = crate::store::now();
        let given = self
            .gates
            .get(&pending.gate)
            .cloned()
            .map(|decision| Decided {
                decision,
                by: self.decided_by.clone(),
                at: now,
                source: DecisionSource::Person,
                sampled: false,
            });
        let by_policy = verdict.filter(|v| v.approves).map(|_| Decided {
            decision: GateDecision::Approve(None),
            by: DecisionSource::Policy.as_str().into(),
            at: now,
            source: DecisionSource::Policy,
            sampled: false,
        });
        let Some(d) = &self.durable else {
            // The program's rule comes before a decision given for the run.
            return Ok(by_policy.or(given));
        };
        let key = &path.to_string();
        let store = d.store.get();
        let record = store.gate(&d.run_id, key)?;
        if let Some(r) = &record {
            let stored = |decision| Decided {
                decision,
                by: r.decided_by.clone().unwrap_or_default(),
                at: r.decided_at.unwrap_or_default(),
                source: r.source.unwrap_or(DecisionSource::Person),
                sampled: false,
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
            // A pending gate the policy approves was left by a process that
            // stopped between recording it and recording the policy's
            // decision: the policy decides it below, not the timeout.
            if by_policy.is_none() && r.timeout_at.is_some_and(|t| now >= t) {
                match (&spec.escalation, r.escalated_at) {
                    (Some(esc), None) => {
                        let until = now + esc.timeout.as_secs_f64();
                        if store.escalate_gate(&d.run_id, key, until)? {
                            self.trace.event(
                                Some(span),
                                "gate",
                                &pending.gate,
                                fields! {"decision": "escalated", "timeout_at": until},
                            );
                            self.announce(
                                &store,
                                &esc.notify,
                                NoticeStage::Escalated,
                                pending,
                                key,
                                Some(until),
                                span,
                            )?;
                        }
                    }
                    _ => {
                        let approve = spec.on_timeout == Decision::Approve;
                        store.decide_gate_on_timeout(&d.run_id, key, approve)?;
                        return Ok(Some(Decided {
                            decision: if approve {
                                GateDecision::Approve(None)
                            } else {
                                GateDecision::Reject("timed out".into())
                            },
                            by: DecisionSource::Timeout.as_str().into(),
                            at: now,
                            source: DecisionSource::Timeout,
                            sampled: false,
                        }));
                    }
                }
            }
        }
        if record.is_none() {
            let on_timeout = match spec.escalation {
                Some(_) => "escalate",
                None => decision_name(spec.on_timeout),
            };
            let mut waiting = GateRecord::pending(
                &d.run_id,
                key,
                &pending.flow,
                &pending.gate,
                Value::Array(pending.show.clone()),
                None,
                on_timeout,
            );
            // The deadline counts from the moment the gate is recorded.
            waiting.timeout_at = spec.timeout.map(|t| waiting.created_at + t.as_secs_f64());
            store.pending_gate(&d.lease, &waiting)?;
        }
        if let (Some(v), Some(mut decided)) = (verdict, by_policy) {
            if !store.decide_gate_by_policy(&d.run_id, key, &v.read)? {
                // Decided elsewhere in the meantime: that decision stands.
                drop(store);
                return self.gate_decision(path, pending, spec, None, span);
            }
            let sampling = spec.policy.as_ref().and_then(|p| p.sample.as_ref());
            if let Some(s) = sampling {
                if in_sample(s, &d.run_id, key) {
                    let item = ReviewRecord::sampled(&d.run_id, key, &pending.flow, &pending.gate);
                    decided.sampled = store.sample_review(&item, s.per_day)?;
                }
            }
            return Ok(Some(decided));
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
        if let Some(notify) = &spec.notify {
            self.announce(
                &store,
                notify,
                NoticeStage::Pending,
                pending,
                key,
                None,
                span,
            )?;
        }
        Ok(None)
    }

    /// Sends a gate's announcement `stage` if no process sent it before:
    /// the claim is taken in the store first, so it goes out at most once.
    #[allow(clippy::too_many_arguments)]
    fn announce(
        &self,
        store: &Store,
        notify: &Notify,
        stage: NoticeStage,
        pending: &PendingGate,
        key: &str,
        deadline: Option<f64>,
        span: SpanId,
    ) -> Result<(), StoreError> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        if !store.claim_notice(&d.run_id, key, stage)? {
            return Ok(());
        }
        let about = GateNotice {
            run_id: &d.run_id,
            flow: &pending.flow,
            gate: &pending.gate,
            key,
            inbox: &self.inbox_url,
            deadline,
        };
        match Notice::new(notify, stage, &about, &*self.env) {
            Ok(notice) => {
                let task = tokio::spawn(super::notify::send(
                    self.http.clone(),
                    notice,
                    self.trace.clone(),
                    span,
                ));
                self.notices.borrow_mut().push(task);
            }
            Err(why) => {
                let target = super::notify::describe(&notify.target);
                eprintln!(
                    "flowc: the notification for gate `{}` ({} {target}) was not sent: {why}; the run goes on",
                    pending.gate,
                    notify.kind.as_str()
                );
                self.trace.event(
                    Some(span),
                    "notify",
                    &pending.gate,
                    fields! {
                        "channel": notify.kind.as_str(),
                        "target": target,
                        "stage": super::notify::stage_name(stage),
                        "attempts": 0,
                        "status": "failed",
                        "error": why.to_string(),
                    },
                );
            }
        }
        Ok(())
    }
}

/// What a policy said, for the trace.
fn policy_data(v: &PolicyVerdict) -> Value {
    let mut out = serde_json::json!({ "approves": v.approves, "read": v.read });
    if let Some(e) = &v.error {
        out["error"] = Value::String(e.clone());
    }
    out
}

/// A gate's decision, who or what made it and when (seconds since the Unix
/// epoch), and, for a policy's, whether the case went to review.
pub struct Decided {
    pub decision: GateDecision,
    pub by: String,
    pub at: f64,
    pub source: DecisionSource,
    pub sampled: bool,
}
