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

use std::collections::VecDeque;
use std::rc::Rc;

use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use petgraph::graph::NodeIndex;
use serde_json::Value;

use super::error::FailureClass;
use super::error::Stop;
use super::eval::{eval, render_template, render_with, EvalError, Scope};
use super::frame::{step_path, CallOutcome, FlowCtx, Frame, FrameScope, PendingGate, RegionEnd};
use super::in_flight::InFlight;
use super::plan::Plan;
use super::runtime::Runtime;
use super::step_path::StepPath;
use crate::exec::{Arm, CallTarget, Fallback, RegionId, StepKind, Template};
use crate::fields;
use crate::store::StepRow;
use crate::types::Lit;

/// A step in flight: its node and, when it ends, how.
type Running<'a> = LocalBoxFuture<'a, (NodeIndex, Result<CallOutcome, Stop>)>;

pub(crate) enum Prepared<'a> {
    /// Completed in an earlier process of this run (`None`: skipped).
    Cached(super::checkpoints::Checkpoint),
    Done(Value),
    Skip,
    Wait(PendingGate),
    Future(LocalBoxFuture<'a, Result<CallOutcome, Stop>>),
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
            // Without a store nothing is committed, and no step row is made.
            let durable = self.durable.is_some();
            let members = &plan.members[region.index()];
            // Per member (by its slot): how many of its dependencies have
            // not ended yet; 0 once it is ready.
            let mut remaining = vec![0; members.len()];
            let mut ready = Vec::new();
            for &n in members {
                if matches!(cx.flow.graph[n].kind, StepKind::LoopItem { .. }) {
                    continue;
                }
                let deps = plan.deps[n.index()].len();
                if deps == 0 {
                    ready.push(n);
                } else {
                    remaining[plan.slot[n.index()]] = deps;
                }
            }
            // Deterministic start order: graph order.
            ready.reverse();
            let mut running: InFlight<Running<'s>> = InFlight::new();
            let mut end = RegionEnd::default();
            // The commit that takes the rows this region queued last, and
            // the step whose row began that wait: a step that acts or is
            // recorded (`is_durable`) starts only once what it may depend
            // on is in the store. Values and checks need not wait (a resume
            // computes them again), nor does the region's end: whatever
            // depends on it there waits, and the run's last write takes
            // what nothing waited for.
            let mut owed: Option<(u64, NodeIndex)> = None;
            loop {
                while let Some(n) = ready.pop() {
                    let skip = plan.deps[n.index()]
                        .iter()
                        .any(|d| frame.skipped.borrow().contains(d));
                    if let Some((number, queued)) = owed {
                        if !skip && cx.flow.graph[n].kind.is_durable() {
                            owed = None;
                            if let Err(e) = self.committed(number).await {
                                return Err(self.store_stop(cx, &frame, queued, e));
                            }
                        }
                    }
                    let prepared = if skip {
                        Prepared::Skip
                    } else {
                        self.prepare(cx, &frame, n)?
                    };
                    match prepared {
                        Prepared::Cached(Some(text)) => {
                            frame.keep(&plan, n, text);
                            self.finished(cx, n);
                            release(&plan, n, &mut remaining, &mut ready);
                        }
                        Prepared::Cached(None) => {
                            self.settle(cx, &frame, &plan, n, None, &mut remaining, &mut ready);
                        }
                        Prepared::Done(v) => {
                            if durable && cx.flow.graph[n].kind.is_durable() {
                                let row =
                                    StepRow::new(step_path(&frame, cx, n).to_string(), Some(&v));
                                owed = Some((self.queue(vec![row]), n));
                            }
                            frame.set(&plan, n, v);
                            self.finished(cx, n);
                            release(&plan, n, &mut remaining, &mut ready);
                        }
                        Prepared::Skip => {
                            if durable && cx.flow.graph[n].kind.is_durable() && !skip {
                                let row = StepRow::new(step_path(&frame, cx, n).to_string(), None);
                                owed = Some((self.queue(vec![row]), n));
                            }
                            frame.skipped.borrow_mut().insert(n);
                            release(&plan, n, &mut remaining, &mut ready);
                        }
                        Prepared::Wait(gate) => end.waiting.push(gate),
                        Prepared::Future(f) => running.push(Box::pin(async move { (n, f.await) })),
                    }
                }
                if let Some((number, _)) = owed {
                    self.commit_soon(number);
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
                let first_done = done[0].0;
                let mut batch = Vec::with_capacity(done.len());
                let mut finished = Vec::with_capacity(done.len());
                let mut failed = None;
                for (n, result) in done {
                    let value = match result {
                        Err(stop) => {
                            failed.get_or_insert(stop);
                            continue;
                        }
                        Ok(CallOutcome::Value(v)) => Some(v),
                        Ok(CallOutcome::Skipped) => None,
                        // Neither checkpointed nor released: what depends
                        // on it waits too.
                        Ok(CallOutcome::Waiting) => {
                            end.blocked = true;
                            continue;
                        }
                    };
                    if durable {
                        batch.push(StepRow::new(
                            step_path(&frame, cx, n).to_string(),
                            value.as_ref(),
                        ));
                    }
                    finished.push((n, value));
                }
                // The steps that completed beside a failed one are queued
                // too: the run's last write takes them.
                let number = self.queue(batch);
                if let Some(stop) = failed {
                    self.commit_soon(number);
                    return Err(stop);
                }
                if number > 0 {
                    owed = Some((number, first_done));
                }
                for (n, value) in finished {
                    self.settle(cx, &frame, &plan, n, value, &mut remaining, &mut ready);
                }
            }
            end.commit = owed.map_or(0, |(number, _)| number);
            Ok(end)
        })
    }

    /// A step's end: its value recorded (or the step marked skipped, for
    /// `None`), then its dependents released.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        cx: &FlowCtx<'_>,
        frame: &Frame,
        plan: &Plan,
        n: NodeIndex,
        value: Option<Value>,
        remaining: &mut [usize],
        ready: &mut Vec<NodeIndex>,
    ) {
        match value {
            Some(v) => {
                frame.set(plan, n, v);
                self.finished(cx, n);
            }
            None => {
                frame.skipped.borrow_mut().insert(n);
            }
        }
        release(plan, n, remaining, ready);
    }

    /// A failed commit of `queued`'s row (and those beside it), as the
    /// run's stop.
    fn store_stop(
        &self,
        cx: &FlowCtx<'_>,
        frame: &Frame,
        queued: NodeIndex,
        e: crate::store::StoreError,
    ) -> Stop {
        Stop::Failed(super::error::RunError {
            flow: cx.flow.name.clone(),
            step: step_path(frame, cx, queued).to_string(),
            attempts: 0,
            class: FailureClass::Store,
            message: e.to_string(),
        })
    }

    fn finished(&self, cx: &FlowCtx<'_>, n: NodeIndex) {
        let step = &cx.flow.graph[n];
        if step.named {
            self.completed.borrow_mut().push(&cx.flow.name, &step.name);
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
            store_failed: self.durable.as_ref().map(|d| &d.failed),
        };
        let fail = |message: String| self.fail(cx, n, 1, FailureClass::Value, message);
        if step.kind.is_durable() {
            if let Some(d) = &self.durable {
                if let Some(kept) = d.done.borrow_mut().get(&step_path(frame, cx, n)) {
                    return Ok(Prepared::Cached(kept));
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
            StepKind::Check { requires } => self.check(cx, n, requires, &scope),
            StepKind::Approve(gate) => self.approve(cx, n, frame, gate),
            StepKind::Call { target, args } => {
                let args = args
                    .get()
                    .iter()
                    .map(|(k, e)| eval(e, &scope).map(|v| (k.clone(), v)))
                    .collect::<Result<serde_json::Map<String, Value>, _>>()
                    .map_err(|e| fail(e.0))?;
                let fallback = match &step.fallback {
                    Some(Fallback::Value(e)) => Some(FallbackInput::Value(
                        eval(e, &scope).map_err(|e| fail(e.0))?,
                    )),
                    Some(Fallback::Call(t, fargs)) => {
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
                let path = step_path(frame, cx, n);
                Ok(Prepared::Future(Box::pin(async move {
                    // Calls hang under a span of their step.
                    let span = self
                        .trace
                        .begin(Some(cx.span), "step", &cx.flow.graph[n].name);
                    let scx = cx.in_span(span.id);
                    let cx = &scx;
                    let mut fell_back = false;
                    let result = match self.call(cx, n, target, args, &path).await {
                        Ok(outcome) => Ok(outcome),
                        Err(Stop::Failed(err)) if fallback.is_some() => {
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
                                    self.call(cx, n, t, a, &path.fallback()).await
                                }
                                None => Err(Stop::Failed(err)),
                            }
                        }
                        Err(e) => Err(e),
                    };
                    self.end_step(cx, span, &path, fell_back, &result);
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
                let path = step_path(frame, cx, n);
                Ok(Prepared::Future(Box::pin(async move {
                    let span = self
                        .trace
                        .begin(Some(cx.span), "step", &cx.flow.graph[n].name);
                    let scx = cx.in_span(span.id);
                    let cx = &scx;
                    let mut fell_back = false;
                    let result = match self.llm(cx, n, call.as_ref(), prompt, system, &path).await {
                        Ok(v) => Ok(CallOutcome::Value(v)),
                        Err(Stop::Failed(err)) if fallback.is_some() => {
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
                    self.end_step(cx, span, &path, fell_back, &result);
                    result
                })))
            }
            StepKind::Loop {
                item,
                body,
                result,
                parallel,
                tolerate,
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
                let shape = LoopShape {
                    item: *item,
                    body: *body,
                    result: *result,
                    parallel: *parallel,
                    tolerate: *tolerate,
                };
                Ok(Prepared::Future(Box::pin(async move {
                    self.run_loop(cx, n, &frame, items, shape).await
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
                        store_failed: self.durable.as_ref().map(|d| &d.failed),
                    };
                    Ok(scope
                        .step(result)
                        .cloned()
                        .map_or(CallOutcome::Skipped, CallOutcome::Value))
                })))
            }
        }
    }

    /// A `check`: every condition must hold, else the run fails with its
    /// message.
    fn check(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        requires: &[(crate::exec::Expr, Template)],
        scope: &FrameScope<'_>,
    ) -> Result<Prepared<'static>, Stop> {
        let step = &cx.flow.graph[n];
        let fail = |message: String| self.fail(cx, n, 1, FailureClass::Check, message);
        self.spend_step(cx, n)?;
        for (cond, message) in requires {
            let ok = eval(cond, scope).map_err(|e| fail(e.0))?;
            if ok != Value::Bool(true) {
                let text = render_template(message, scope).unwrap_or_else(|e| e.0);
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

    /// Runs a loop's iterations, `parallel` at a time. Without `tolerate`,
    /// the first failed iteration fails the loop (and the others in flight
    /// are cancelled); with it, up to that many failed iterations are
    /// listed in the loop's value, and one more fails the loop.
    async fn run_loop(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        frame: &Rc<Frame>,
        mut items: Vec<Value>,
        shape: LoopShape,
    ) -> Result<CallOutcome, Stop> {
        let LoopShape {
            item,
            body,
            result,
            parallel,
            tolerate,
        } = shape;
        let name = &cx.flow.graph[n].name;
        let count = items.len();
        let mut results: Vec<Option<Value>> = vec![None; count];
        let mut failed: Vec<(usize, Value)> = Vec::new();
        // An iteration waiting at a gate leaves the whole loop without a value.
        let mut waiting = false;
        let mut running = InFlight::new();
        let mut next = 0;
        let limit = parallel.max(1) as usize;
        // Iterations in flight at most: the first alone until the loop has
        // yielded once after its first poll (see below), then `limit`.
        let mut width = if limit > 1 && count > 1 { 1 } else { limit };
        // Ended iterations whose results are not committed yet, by the
        // commit that takes them (in the order they ended, so ascending).
        // Each holds its slot until then: iterations running or not yet
        // committed are never more than `parallel`, which is all a crash
        // can make a resume run again.
        let mut uncommitted: VecDeque<u64> = VecDeque::new();
        loop {
            while next < count {
                // The commits' end is read only while some iteration is
                // uncommitted; the deque is ascending, so the committed
                // ones are at its front. One out of order would only keep
                // its slot until the commit ahead of it ends: the bound on
                // iterations never loosens.
                if !uncommitted.is_empty() {
                    let ended = self.commits_ended();
                    while uncommitted.front().is_some_and(|&c| c <= ended) {
                        uncommitted.pop_front();
                    }
                }
                if running.len() >= width {
                    break;
                }
                if running.len() + uncommitted.len() >= width {
                    let Some(oldest) = uncommitted.pop_front() else {
                        break;
                    };
                    if let Err(e) = self.committed(oldest).await {
                        return Err(self.store_stop(cx, frame, n, e));
                    }
                    continue;
                }
                let i = next;
                next += 1;
                let child = frame.child(&cx.plan, body, frame.path.iteration(name, i));
                // Moved, not copied: a wide fan-out would otherwise hold
                // every item twice while its branches are in flight. A
                // tolerated failure reads its item back from the branch.
                child.set(&cx.plan, item, std::mem::take(&mut items[i]));
                running.push(Box::pin(async move {
                    let end = match self.run_region(cx, body, child.clone()).await {
                        Ok(end) => end,
                        Err(stop) => return (i, Err((stop, child))),
                    };
                    let waiting = end.is_waiting();
                    let commit = end.commit;
                    self.waiting.borrow_mut().extend(end.waiting);
                    let scope = FrameScope {
                        flow: cx.flow,
                        plan: &cx.plan,
                        frame: &child,
                        store_failed: self.durable.as_ref().map(|d| &d.failed),
                    };
                    (i, Ok((scope.step(result).cloned(), waiting, commit)))
                })
                    as LocalBoxFuture<
                        '_,
                        (usize, Result<(Option<Value>, bool, u64), (Stop, Rc<Frame>)>),
                    >);
            }
            let ended = if width < limit {
                width = limit;
                // One turn of the event loop after the first iteration's
                // first poll. Its call's timeout is then the driver's next
                // wake-up, and the later calls' timeouts, no earlier, wake
                // nothing: without the turn the driver had never slept, and
                // every call's timer woke it with a syscall (1,000 `eventfd`
                // writes in a 1,000-wide fan-out, 12% of its preparation).
                match running.next_now().await {
                    Some(ended) => ended,
                    None => {
                        tokio::task::yield_now().await;
                        continue;
                    }
                }
            } else {
                running.next().await
            };
            let Some((i, done)) = ended else {
                break;
            };
            match done {
                Ok((v, blocked, commit)) => {
                    results[i] = v;
                    waiting |= blocked;
                    if commit > 0 {
                        uncommitted.push_back(commit);
                    }
                }
                Err((Stop::Failed(e), child)) if tolerate.is_some() && e.class.is_tolerable() => {
                    let limit = tolerate.unwrap_or(0);
                    if failed.len() as u64 >= limit {
                        return Err(self.fail(
                            cx,
                            n,
                            e.attempts,
                            e.class,
                            format!(
                                "{} iterations of loop `{name}` failed, more than its `tolerate {limit}`; item {i}: {}",
                                limit + 1,
                                e.message
                            ),
                        ));
                    }
                    self.trace.event(
                        Some(cx.span),
                        "tolerated",
                        name,
                        fields! {"index": i, "class": e.class.label(), "error": e.message, "failed": failed.len() + 1, "tolerate": limit},
                    );
                    failed.push((
                        i,
                        serde_json::json!({
                            "item": child.get(&cx.plan, item).ok().flatten(),
                            "class": e.class.label(),
                            "message": e.to_string(),
                        }),
                    ));
                }
                Err((stop, _)) => return Err(stop),
            }
        }
        if waiting {
            return Ok(CallOutcome::Waiting);
        }
        let ok = Value::Array(results.into_iter().flatten().collect());
        if tolerate.is_none() {
            return Ok(CallOutcome::Value(ok));
        }
        // In input order, like the results.
        failed.sort_by_key(|(i, _)| *i);
        let failed = failed.into_iter().map(|(_, f)| f).collect();
        Ok(CallOutcome::Value(
            serde_json::json!({"ok": ok, "failed": Value::Array(failed)}),
        ))
    }

    /// Closes a call or `llm` step's span: its key, how it ended, and what
    /// is left of the flow's budget.
    fn end_step(
        &self,
        cx: &FlowCtx<'_>,
        span: super::trace::Span,
        path: &StepPath<'_>,
        fell_back: bool,
        result: &Result<CallOutcome, Stop>,
    ) {
        if !self.trace.records() {
            return;
        }
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
        let mut data = fields! {"path": path.to_string(), "fallback": fell_back};
        if !remaining.is_empty() {
            data.insert("budget_remaining".into(), Value::Object(remaining));
        }
        match result {
            Err(Stop::Failed(e)) => {
                data.insert("error".into(), Value::String(e.message.clone()));
                if let Some(class) = e.class.name() {
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

    /// Renders a prompt, cutting each quoted tool output to its `limit`.
    fn render_prompt(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        t: &Template,
        scope: &FrameScope<'_>,
    ) -> Result<String, EvalError> {
        let mut out = String::new();
        render_with(&t.parts, scope, |expr, text| {
            let Some(e) = expr else {
                out.push_str(&text);
                return Ok(());
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
            Ok(())
        })?;
        Ok(out)
    }
}

/// What a loop step declares about its iterations.
#[derive(Clone, Copy)]
struct LoopShape {
    item: NodeIndex,
    body: RegionId,
    result: NodeIndex,
    parallel: u64,
    tolerate: Option<u64>,
}

enum FallbackInput {
    Value(Value),
    Call(CallTarget, serde_json::Map<String, Value>),
}

fn choose_arm<'a>(arms: &'a [Arm], subject: &Value) -> Option<&'a Arm> {
    arms.iter().find(|arm| match &arm.pattern {
        None => true,
        Some(Lit::Bool(b)) => subject == &Value::Bool(*b),
        Some(Lit::Str(s)) => subject.as_str() == Some(s.as_str()),
        Some(Lit::Number(x)) => subject.as_f64() == Some(*x),
    })
}

fn release(plan: &Plan, n: NodeIndex, remaining: &mut [usize], ready: &mut Vec<NodeIndex>) {
    for d in &plan.dependents[n.index()] {
        let count = &mut remaining[plan.slot[d.index()]];
        if *count > 0 {
            *count -= 1;
            if *count == 0 {
                ready.push(*d);
            }
        }
    }
}
