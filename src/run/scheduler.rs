//! The dataflow scheduler. A region (a flow body, one loop iteration, one
//! branch arm) runs as a loop over the steps whose inputs are ready: cheap
//! steps (values, checks, decisions) are evaluated at once, calls become
//! futures polled together, up to the run-wide concurrency limit. A step's
//! inputs are evaluated before its future starts, so in-flight calls own
//! their data; when a step fails, dropping the set of futures cancels every
//! call still in flight (HTTP requests are aborted, programs killed).
//!
//! A gate with no decision leaves its branch waiting while everything else
//! proceeds; when nothing else can, the run ends `waiting`. A rejected gate
//! skips what depends on it; an iteration whose result is skipped drops out
//! of its loop's list.

use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use futures_util::future::LocalBoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use petgraph::graph::NodeIndex;
use serde_json::Value;

use super::budget::{Exhausted, Ledger, Spend};
use super::eval::{eval, render, Scope};
use super::plan::Plan;
use super::step::{CallOutcome, Runtime};
use super::trace::SpanId;
use crate::fields;
use crate::ir::{Arm, Fallback, Flow, FlowId, RegionId, StepKind};
use crate::types::Lit;

/// Why a run stopped early.
#[derive(Debug, Clone)]
pub enum Stop {
    Failed(RunError),
    Exhausted(Exhausted),
}

/// A structured failure: which step, which attempt, what happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunError {
    pub flow: String,
    pub step: String,
    pub attempts: u32,
    pub class: Option<&'static str>,
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} of flow `{}` failed", self.step, self.flow)?;
        if self.attempts > 1 {
            write!(f, " after {} attempts", self.attempts)?;
        }
        if let Some(c) = self.class {
            write!(f, " ({c})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl RunError {
    /// The circuit breaker stopped the run: no fallback and no agent may
    /// absorb this failure.
    pub fn is_circuit_breaker(&self) -> bool {
        self.class == Some("circuit_breaker")
    }
}

/// A gate that is waiting for a decision.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PendingGate {
    pub flow: String,
    pub gate: String,
    pub path: String,
    pub show: Vec<Value>,
}

/// One instance of a region: the values of its steps.
pub struct Frame {
    region: RegionId,
    cells: Vec<OnceCell<Value>>,
    skipped: RefCell<HashSet<NodeIndex>>,
    parent: Option<Rc<Frame>>,
    params: Rc<Vec<Value>>,
    /// Where this instance is, for idempotency keys and traces: `posted[3]`.
    pub path: String,
}

impl Frame {
    pub fn root(plan: &Plan, params: Vec<Value>, path: String) -> Rc<Frame> {
        Rc::new(Frame {
            region: RegionId(0),
            cells: (0..plan.members[0].len())
                .map(|_| OnceCell::new())
                .collect(),
            skipped: RefCell::default(),
            parent: None,
            params: Rc::new(params),
            path,
        })
    }

    fn child(self: &Rc<Frame>, plan: &Plan, region: RegionId, path: String) -> Rc<Frame> {
        Rc::new(Frame {
            region,
            cells: (0..plan.members[region.index()].len())
                .map(|_| OnceCell::new())
                .collect(),
            skipped: RefCell::default(),
            parent: Some(self.clone()),
            params: self.params.clone(),
            path,
        })
    }

    fn set(&self, plan: &Plan, n: NodeIndex, value: Value) {
        let _ = self.cells[plan.slot[n.index()]].set(value);
    }

    fn get(&self, plan: &Plan, n: NodeIndex) -> Option<&Value> {
        self.cells[plan.slot[n.index()]].get()
    }
}

/// Expression scope over a frame chain.
pub struct FrameScope<'a> {
    pub flow: &'a Flow,
    pub plan: &'a Plan,
    pub frame: &'a Frame,
}

impl Scope for FrameScope<'_> {
    fn param(&self, index: usize) -> Option<&Value> {
        self.frame.params.get(index)
    }

    fn step(&self, node: NodeIndex) -> Option<&Value> {
        let region = self.flow.graph[node].region;
        let mut f = self.frame;
        loop {
            if f.region == region {
                return f.get(self.plan, node);
            }
            f = f.parent.as_deref()?;
        }
    }

    fn env(&self, _name: &str) -> Option<String> {
        // The checker keeps `env.` out of flows (K001).
        None
    }
}

/// What one flow run needs: its graph, plan, budget and trace span.
pub struct FlowCtx<'a> {
    pub id: FlowId,
    pub flow: &'a Flow,
    pub plan: Rc<Plan>,
    pub ledger: Arc<Ledger>,
    pub span: SpanId,
}

impl<'a> FlowCtx<'a> {
    /// The same flow with calls hanging under span `span` (a step's, an
    /// agent's).
    pub fn in_span(&self, span: SpanId) -> FlowCtx<'a> {
        FlowCtx {
            id: self.id,
            flow: self.flow,
            plan: self.plan.clone(),
            ledger: self.ledger.clone(),
            span,
        }
    }
}

/// A step in flight: its node and, when it ends, how.
type Running<'a> = LocalBoxFuture<'a, (NodeIndex, Result<CallOutcome, Stop>)>;

enum Prepared<'a> {
    /// Completed in an earlier process of this run (`None`: skipped).
    Cached(Option<Value>),
    Done(Value),
    Skip,
    Wait(PendingGate),
    Future(LocalBoxFuture<'a, Result<CallOutcome, Stop>>),
}

/// How a region instance ended.
#[derive(Default)]
pub struct RegionEnd {
    /// The region's own gates that wait for a decision.
    pub waiting: Vec<PendingGate>,
    /// A step waits on a gate further in (a loop iteration, a branch arm, a
    /// called flow), whose gates are in the run's waiting list.
    pub blocked: bool,
}

impl RegionEnd {
    /// Some step of the region has no value because a gate waits.
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty() || self.blocked
    }
}

impl Runtime<'_> {
    /// Runs one region instance to the end: every step done, skipped or
    /// waiting.
    pub fn run_region<'s>(
        &'s self,
        cx: &'s FlowCtx<'s>,
        region: RegionId,
        frame: Rc<Frame>,
    ) -> LocalBoxFuture<'s, Result<RegionEnd, Stop>> {
        Box::pin(async move {
            let plan = cx.plan.clone();
            let members = &plan.members[region.index()];
            let mut remaining: HashMap<NodeIndex, usize> = HashMap::with_capacity(members.len());
            let mut ready = Vec::new();
            for &n in members {
                if matches!(cx.flow.graph[n].kind, StepKind::LoopItem { .. }) {
                    continue;
                }
                let deps = plan.deps[n.index()].len();
                if deps == 0 {
                    ready.push(n);
                } else {
                    remaining.insert(n, deps);
                }
            }
            // Deterministic start order: graph order.
            ready.reverse();
            let mut running: FuturesUnordered<Running<'s>> = FuturesUnordered::new();
            let mut end = RegionEnd::default();
            loop {
                while let Some(n) = ready.pop() {
                    let skip = plan.deps[n.index()]
                        .iter()
                        .any(|d| frame.skipped.borrow().contains(d));
                    let prepared = if skip {
                        Prepared::Skip
                    } else {
                        self.prepare(cx, &frame, n)?
                    };
                    match prepared {
                        Prepared::Cached(v) => {
                            match v {
                                Some(v) => {
                                    frame.set(&plan, n, v);
                                    self.finished(cx, n);
                                }
                                None => {
                                    frame.skipped.borrow_mut().insert(n);
                                }
                            }
                            release(&plan, n, &mut remaining, &mut ready);
                        }
                        Prepared::Done(v) => {
                            if durable_kind(&cx.flow.graph[n].kind) {
                                self.persist(
                                    cx,
                                    vec![(step_key(&frame.path, cx, n), Some(v.clone()))],
                                )
                                .await?;
                            }
                            frame.set(&plan, n, v);
                            self.finished(cx, n);
                            release(&plan, n, &mut remaining, &mut ready);
                        }
                        Prepared::Skip => {
                            if durable_kind(&cx.flow.graph[n].kind) && !skip {
                                self.persist(cx, vec![(step_key(&frame.path, cx, n), None)])
                                    .await?;
                            }
                            frame.skipped.borrow_mut().insert(n);
                            release(&plan, n, &mut remaining, &mut ready);
                        }
                        Prepared::Wait(gate) => end.waiting.push(gate),
                        Prepared::Future(f) => running.push(Box::pin(async move { (n, f.await) })),
                    }
                }
                let Some(first) = running.next().await else {
                    break;
                };
                // Steps that completed together commit together, before any
                // step that depends on them starts.
                let mut done = vec![first];
                while let Some(Some(more)) = running.next().now_or_never() {
                    done.push(more);
                }
                let mut batch = Vec::with_capacity(done.len());
                let mut finished = Vec::with_capacity(done.len());
                for (n, result) in done {
                    let value = match result? {
                        CallOutcome::Value(v) => Some(v),
                        CallOutcome::Skipped => None,
                        // Neither checkpointed nor released: what depends
                        // on it waits too.
                        CallOutcome::Waiting => {
                            end.blocked = true;
                            continue;
                        }
                    };
                    batch.push((step_key(&frame.path, cx, n), value.clone()));
                    finished.push((n, value));
                }
                self.persist(cx, batch).await?;
                for (n, value) in finished {
                    match value {
                        Some(v) => {
                            frame.set(&plan, n, v);
                            self.finished(cx, n);
                        }
                        None => {
                            frame.skipped.borrow_mut().insert(n);
                        }
                    }
                    release(&plan, n, &mut remaining, &mut ready);
                }
            }
            Ok(end)
        })
    }

    fn finished(&self, cx: &FlowCtx<'_>, n: NodeIndex) {
        let step = &cx.flow.graph[n];
        if step.named {
            self.completed
                .borrow_mut()
                .push(format!("{}.{}", cx.flow.name, step.name));
        }
    }

    /// Evaluates a ready step's inputs; cheap steps finish here.
    fn prepare<'s>(
        &'s self,
        cx: &'s FlowCtx<'s>,
        frame: &Rc<Frame>,
        n: NodeIndex,
    ) -> Result<Prepared<'s>, Stop> {
        let step = &cx.flow.graph[n];
        let scope = FrameScope {
            flow: cx.flow,
            plan: &cx.plan,
            frame,
        };
        let fail = |message: String| self.fail(cx, n, 1, None, message);
        if durable_kind(&step.kind) {
            if let Some(d) = &self.durable {
                if let Some(v) = d.done.borrow().get(&step_key(&frame.path, cx, n)) {
                    return Ok(Prepared::Cached(v.clone()));
                }
            }
        }
        match &step.kind {
            StepKind::Value(e) | StepKind::Output(e) | StepKind::Decide { subject: e } => {
                eval(e, &scope)
                    .map(Prepared::Done)
                    .map_err(|err| fail(err.0))
            }
            StepKind::LoopItem { .. } => Ok(Prepared::Skip),
            StepKind::Check { requires } => {
                self.spend_step(cx, n)?;
                for (cond, message) in requires {
                    let ok = eval(cond, &scope).map_err(|e| fail(e.0))?;
                    if ok != Value::Bool(true) {
                        let text = render(message, &scope).unwrap_or_else(|e| e.0);
                        self.trace.event(
                            Some(cx.span),
                            "check",
                            &step.name,
                            fields! {"status": "failed", "message": text},
                        );
                        return Err(fail(format!("check `{}` failed: {text}", step.name)));
                    }
                }
                self.trace.event(
                    Some(cx.span),
                    "check",
                    &step.name,
                    fields! {"status": "passed"},
                );
                Ok(Prepared::Done(Value::Bool(true)))
            }
            StepKind::Approve {
                gate,
                show,
                on_timeout,
                timeout_seconds,
            } => {
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
                    gate: gate.clone(),
                    path: frame.path.clone(),
                    show: shown.clone(),
                };
                let decision = self
                    .gate_decision(&key, &pending, *timeout_seconds, *on_timeout)
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
                                    return Err(fail(format!("the edited value for gate `{gate}` does not type-check: {}", errors.join("; "))));
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
            StepKind::Call { target, args } => {
                let args = args
                    .iter()
                    .map(|(k, e)| eval(e, &scope).map(|v| (k.clone(), v)))
                    .collect::<Result<serde_json::Map<String, Value>, _>>()
                    .map_err(|e| fail(e.0))?;
                let fallback = match &step.fallback {
                    Some(Fallback::Value(e)) => Some(FallbackInput::Value(
                        eval(e, &scope).map_err(|e| fail(e.0))?,
                    )),
                    Some(Fallback::Call(t, fargs, _)) => {
                        let fargs = fargs
                            .iter()
                            .map(|(k, e)| eval(e, &scope).map(|v| (k.clone(), v)))
                            .collect::<Result<serde_json::Map<String, Value>, _>>()
                            .map_err(|e| fail(e.0))?;
                        Some(FallbackInput::Call(*t, fargs))
                    }
                    None => None,
                };
                let target = *target;
                let path = frame.path.clone();
                let key = step_key(&frame.path, cx, n);
                Ok(Prepared::Future(Box::pin(async move {
                    // Calls hang under a span of their step.
                    let span = self
                        .trace
                        .begin(Some(cx.span), "step", &cx.flow.graph[n].name);
                    let scx = cx.in_span(span.id);
                    let cx = &scx;
                    let mut fell_back = false;
                    let result = match self.call(cx, n, target, args, &path, &key).await {
                        Ok(outcome) => Ok(outcome),
                        Err(Stop::Failed(err))
                            if fallback.is_some() && !err.is_circuit_breaker() =>
                        {
                            fell_back = true;
                            self.trace.event(
                                Some(cx.span),
                                "fallback",
                                &cx.flow.graph[n].name,
                                fields! {"error": err.message},
                            );
                            match fallback {
                                Some(FallbackInput::Value(v)) => Ok(CallOutcome::Value(v)),
                                Some(FallbackInput::Call(t, a)) => {
                                    self.call(cx, n, t, a, &path, &format!("{key}#fallback"))
                                        .await
                                }
                                None => Err(Stop::Failed(err)),
                            }
                        }
                        Err(e) => Err(e),
                    };
                    self.end_step(cx, span, &key, fell_back, &result);
                    result
                })))
            }
            StepKind::Llm(call) => {
                let prompt = match &call.prompt {
                    Some(t) => self
                        .render_prompt(cx, n, t, &scope)
                        .map_err(|e| fail(e.0))?,
                    None => String::new(),
                };
                let system = match &call.system {
                    Some(t) => Some(
                        self.render_prompt(cx, n, t, &scope)
                            .map_err(|e| fail(e.0))?,
                    ),
                    None => None,
                };
                let fallback = match &step.fallback {
                    Some(Fallback::Value(e)) => Some(eval(e, &scope).map_err(|e| fail(e.0))?),
                    _ => None,
                };
                let key = step_key(&frame.path, cx, n);
                Ok(Prepared::Future(Box::pin(async move {
                    let span = self
                        .trace
                        .begin(Some(cx.span), "step", &cx.flow.graph[n].name);
                    let scx = cx.in_span(span.id);
                    let cx = &scx;
                    let mut fell_back = false;
                    let result = match self.llm(cx, n, call, prompt, system, &key).await {
                        Ok(v) => Ok(CallOutcome::Value(v)),
                        Err(Stop::Failed(err))
                            if fallback.is_some() && !err.is_circuit_breaker() =>
                        {
                            fell_back = true;
                            self.trace.event(
                                Some(cx.span),
                                "fallback",
                                &cx.flow.graph[n].name,
                                fields! {"error": err.message},
                            );
                            Ok(fallback.map_or(CallOutcome::Skipped, CallOutcome::Value))
                        }
                        Err(e) => Err(e),
                    };
                    self.end_step(cx, span, &key, fell_back, &result);
                    result
                })))
            }
            StepKind::Loop {
                item,
                body,
                result,
                parallel,
            } => {
                let iterable = match &cx.flow.graph[*item].kind {
                    StepKind::LoopItem { iterable } => {
                        eval(iterable, &scope).map_err(|e| fail(e.0))?
                    }
                    _ => Value::Null,
                };
                let items = match iterable {
                    Value::Array(items) => items,
                    Value::Null => Vec::new(),
                    other => {
                        return Err(fail(format!(
                            "a loop goes over a list, and this is {}",
                            super::eval::kind(&other)
                        )))
                    }
                };
                let frame = frame.clone();
                let (item, body, result, parallel) = (*item, *body, *result, *parallel);
                Ok(Prepared::Future(Box::pin(async move {
                    self.run_loop(cx, n, &frame, items, item, body, result, parallel)
                        .await
                })))
            }
            StepKind::Branch { decide, arms } => {
                let subject = scope.step(*decide).cloned().unwrap_or(Value::Null);
                let chosen = choose_arm(arms, &subject);
                let frame = frame.clone();
                Ok(Prepared::Future(Box::pin(async move {
                    let Some(arm) = chosen else {
                        return Ok(CallOutcome::Value(Value::Null));
                    };
                    let Some(result) = arm.result else {
                        return Ok(CallOutcome::Value(Value::Null));
                    };
                    let child = frame.child(&cx.plan, arm.region, frame.path.clone());
                    let end = self.run_region(cx, arm.region, child.clone()).await?;
                    let waiting = end.is_waiting();
                    self.waiting.borrow_mut().extend(end.waiting);
                    if waiting {
                        return Ok(CallOutcome::Waiting);
                    }
                    let scope = FrameScope {
                        flow: cx.flow,
                        plan: &cx.plan,
                        frame: &child,
                    };
                    Ok(scope
                        .step(result)
                        .cloned()
                        .map_or(CallOutcome::Skipped, CallOutcome::Value))
                })))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_loop(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        frame: &Rc<Frame>,
        items: Vec<Value>,
        item: NodeIndex,
        body: RegionId,
        result: NodeIndex,
        parallel: u64,
    ) -> Result<CallOutcome, Stop> {
        let name = &cx.flow.graph[n].name;
        let count = items.len();
        let mut results: Vec<Option<Value>> = vec![None; count];
        // An iteration waiting at a gate leaves the whole loop without a value.
        let mut waiting = false;
        let mut running = FuturesUnordered::new();
        let mut next = 0;
        let limit = parallel.max(1) as usize;
        loop {
            while running.len() < limit && next < count {
                let i = next;
                next += 1;
                let child = frame.child(
                    &cx.plan,
                    body,
                    format!("{}{name}[{i}]", prefix(&frame.path)),
                );
                child.set(&cx.plan, item, items[i].clone());
                running.push(Box::pin(async move {
                    let end = self.run_region(cx, body, child.clone()).await?;
                    let waiting = end.is_waiting();
                    self.waiting.borrow_mut().extend(end.waiting);
                    let scope = FrameScope {
                        flow: cx.flow,
                        plan: &cx.plan,
                        frame: &child,
                    };
                    Ok::<_, Stop>((i, scope.step(result).cloned(), waiting))
                })
                    as LocalBoxFuture<'_, Result<(usize, Option<Value>, bool), Stop>>);
            }
            let Some(done) = running.next().await else {
                break;
            };
            let (i, v, blocked) = done?;
            results[i] = v;
            waiting |= blocked;
        }
        if waiting {
            return Ok(CallOutcome::Waiting);
        }
        Ok(CallOutcome::Value(Value::Array(
            results.into_iter().flatten().collect(),
        )))
    }

    fn spend_step(&self, cx: &FlowCtx<'_>, n: NodeIndex) -> Result<(), Stop> {
        let r = cx
            .ledger
            .reserve(Spend::step())
            .map_err(|e| self.exhausted(cx, n, e))?;
        cx.ledger.settle(r, Spend::step());
        Ok(())
    }

    /// Closes a call or `llm` step's span: its key, how it ended, and what
    /// is left of the flow's budget.
    fn end_step(
        &self,
        cx: &FlowCtx<'_>,
        span: super::trace::Span,
        key: &str,
        fell_back: bool,
        result: &Result<CallOutcome, Stop>,
    ) {
        let status = match result {
            Ok(CallOutcome::Value(_)) => "ok",
            Ok(CallOutcome::Skipped) => "skipped",
            Ok(CallOutcome::Waiting) => "waiting",
            Err(Stop::Failed(_)) => "failed",
            Err(Stop::Exhausted(_)) => "budget_exhausted",
        };
        let limits = cx.ledger.limits();
        let spent = cx.ledger.spent();
        let mut remaining = serde_json::Map::new();
        if let Some(cost) = limits.cost {
            remaining.insert(
                "cost".into(),
                serde_json::json!((cost - spent.cost).max(0.0)),
            );
        }
        if let Some(t) = limits.tokens {
            remaining.insert(
                "tokens".into(),
                serde_json::json!(t.saturating_sub(spent.tokens)),
            );
        }
        if let Some(t) = limits.steps {
            remaining.insert(
                "steps".into(),
                serde_json::json!(t.saturating_sub(spent.steps)),
            );
        }
        if let Some(t) = limits.tool_calls {
            remaining.insert(
                "tool_calls".into(),
                serde_json::json!(t.saturating_sub(spent.tool_calls)),
            );
        }
        // The step's key in the run store: unique in the run, stable across
        // its processes.
        let mut data = fields! {"path": key, "fallback": fell_back};
        if !remaining.is_empty() {
            data.insert("budget_remaining".into(), Value::Object(remaining));
        }
        match result {
            Err(Stop::Failed(e)) => {
                data.insert("error".into(), Value::String(e.message.clone()));
                if let Some(class) = e.class {
                    data.insert("class".into(), Value::String(class.into()));
                }
            }
            Err(Stop::Exhausted(e)) => {
                data.insert("error".into(), Value::String(e.to_string()));
            }
            Ok(_) => {}
        }
        self.trace.end(span, status, data);
    }

    pub fn exhausted(&self, cx: &FlowCtx<'_>, n: NodeIndex, e: Exhausted) -> Stop {
        self.trace.event(
            Some(cx.span),
            "budget",
            &cx.flow.graph[n].name,
            fields! {"status": "exhausted", "budget": e.what, "limit": e.limit, "used": e.used, "wanted": e.wanted},
        );
        Stop::Exhausted(e)
    }

    pub fn fail(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        attempts: u32,
        class: Option<&'static str>,
        message: String,
    ) -> Stop {
        Stop::Failed(RunError {
            flow: cx.flow.name.clone(),
            step: cx.flow.graph[n].display(),
            attempts,
            class,
            message,
        })
    }

    /// Renders a prompt, cutting each quoted tool output to its `limit`.
    fn render_prompt(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        t: &crate::ir::Template,
        scope: &FrameScope<'_>,
    ) -> Result<String, super::eval::EvalError> {
        use crate::ir::{CallTarget, TemplatePart};
        let mut out = String::new();
        for part in &t.parts {
            match part {
                TemplatePart::Text(s) => out.push_str(s),
                TemplatePart::Expr(e) => {
                    let text = match eval(e, scope)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let mut steps = Vec::new();
                    e.steps(&mut steps);
                    let limit = steps
                        .iter()
                        .filter_map(|s| match &cx.flow.graph[*s].kind {
                            StepKind::Call {
                                target: CallTarget::Tool(tool),
                                ..
                            } => self.program.tools[tool.index()].limit_tokens,
                            _ => None,
                        })
                        .min();
                    match limit {
                        Some(tokens) if text.chars().count() as u64 > tokens * 4 => {
                            let cut: String = text.chars().take((tokens * 4) as usize).collect();
                            self.trace.event(
                                Some(cx.span),
                                "cut",
                                &cx.flow.graph[n].name,
                                fields! {"limit_tokens": tokens, "chars_before": text.chars().count(), "chars_after": cut.chars().count()},
                            );
                            out.push_str(&cut);
                        }
                        _ => out.push_str(&text),
                    }
                }
            }
        }
        Ok(out)
    }
}

enum FallbackInput {
    Value(Value),
    Call(crate::ir::CallTarget, serde_json::Map<String, Value>),
}

/// A gate's decision, from a test's `given`, a recording or the command line.
#[derive(Clone, Debug)]
pub enum GateDecision {
    Approve(Option<Value>),
    Reject(String),
}

/// Steps whose results are checkpointed: calls, model calls, gates, loops
/// and branches. The rest are cheap and deterministic: recomputed on resume.
fn durable_kind(kind: &StepKind) -> bool {
    matches!(
        kind,
        StepKind::Call { .. }
            | StepKind::Llm(_)
            | StepKind::Approve { .. }
            | StepKind::Loop { .. }
            | StepKind::Branch { .. }
    )
}

/// A step instance's name in the run store: `posted[3]/reconcile.posted.result`.
pub fn step_key(path: &str, cx: &FlowCtx<'_>, n: NodeIndex) -> String {
    format!("{}{}.{}", prefix(path), cx.flow.name, cx.flow.graph[n].name)
}

fn choose_arm<'a>(arms: &'a [Arm], subject: &Value) -> Option<&'a Arm> {
    arms.iter().find(|arm| match &arm.pattern {
        None => true,
        Some(Lit::Bool(b)) => subject == &Value::Bool(*b),
        Some(Lit::Str(s)) => subject.as_str() == Some(s.as_str()),
        Some(Lit::Number(x)) => subject.as_f64() == Some(*x),
    })
}

fn prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    }
}

fn release(
    plan: &Plan,
    n: NodeIndex,
    remaining: &mut HashMap<NodeIndex, usize>,
    ready: &mut Vec<NodeIndex>,
) {
    for d in &plan.dependents[n.index()] {
        if let Some(count) = remaining.get_mut(d) {
            *count -= 1;
            if *count == 0 {
                remaining.remove(d);
                ready.push(*d);
            }
        }
    }
}
