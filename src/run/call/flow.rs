//! A sub-flow call, and a flow run under its parent's budget and span.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::exec::{CallTarget, FlowId, RegionId};
use crate::fields;
use crate::run::budget::Ledger;
use crate::run::error::Stop;
use crate::run::frame::{CallOutcome, FlowCtx, Frame, FrameScope, RegionEnd};
use crate::run::runtime::Runtime;
use crate::run::step_path::{FramePath, StepPath};
use crate::run::trace::SpanId;

impl Runtime<'_> {
    /// Runs a flow with argument values, under `parent` budget and span.
    pub async fn run_flow(
        &self,
        id: FlowId,
        params: Vec<Value>,
        parent_ledger: Option<Arc<Ledger>>,
        parent_span: Option<SpanId>,
        path: FramePath,
    ) -> Result<(Option<Value>, RegionEnd), Stop> {
        let flow = &self.program.flows[id.index()];
        let span = self.trace.begin(parent_span, "flow", &flow.name);
        let is_root = parent_ledger.is_none();
        let ledger = Ledger::new(
            format!("flow `{}`", flow.name),
            flow.budget.clone(),
            parent_ledger,
        );
        if is_root {
            // A resumed run starts with what its earlier processes spent.
            ledger.preload(self.base_spend);
            *self.root_ledger.borrow_mut() = Some(ledger.clone());
        }
        let cx = FlowCtx {
            flow,
            plan: self.plan(id),
            ledger: ledger.clone(),
            span: span.id,
        };
        let frame = Frame::root(&cx.plan, params, path);
        let run = self.run_region(&cx, RegionId(0), frame.clone());
        // The wall clock left counts what earlier processes of a resumed
        // run were active (the root ledger was preloaded with it).
        let result = match ledger.wall_left() {
            Some(left) => match tokio::time::timeout(left, run).await {
                Ok(r) => r,
                Err(_) => {
                    let e = crate::run::budget::Exhausted {
                        what: "wall",
                        limit: format!(
                            "{}s",
                            flow.budget
                                .wall
                                .map(|w| w.as_secs_f64())
                                .unwrap_or_default()
                        ),
                        used: format!("{:.1}s", ledger.active().as_secs_f64()),
                        wanted: "more time".into(),
                        owner: format!("flow `{}`", flow.name),
                        overrun: None,
                    };
                    self.trace.event(
                        Some(span.id),
                        "budget",
                        &flow.name,
                        fields! {"status": "exhausted", "budget": e.what, "limit": e.limit, "used": e.used, "wanted": e.wanted, "owner": e.owner},
                    );
                    Err(Stop::Exhausted(e))
                }
            },
            None => run.await,
        };
        let spent = ledger.spent();
        let status = match &result {
            Ok(_) => "ok",
            Err(Stop::Failed(_)) => "failed",
            Err(Stop::Exhausted(_)) => "budget_exhausted",
        };
        let mut data = fields! {"tokens": spent.tokens, "cost": spent.cost, "steps": spent.steps, "tool_calls": spent.tool_calls};
        if let Err(Stop::Failed(e)) = &result {
            data.insert("error".into(), Value::String(e.to_string()));
        }
        self.trace.end(span, status, data);
        let end = result?;
        let scope = FrameScope {
            flow,
            plan: &cx.plan,
            frame: &frame,
            store_failed: self.durable.as_ref().map(|d| &d.failed),
        };
        let output = crate::run::eval::Scope::step(&scope, flow.output_step).cloned();
        Ok((output, end))
    }

    /// A sub-flow call: the callee runs under this flow's budget and span.
    pub(crate) async fn flow_call(
        &self,
        cx: &FlowCtx<'_>,
        f: FlowId,
        args: Map<String, Value>,
        path: &StepPath<'_>,
    ) -> Result<CallOutcome, Stop> {
        let callee = &self.program.flows[f.index()];
        self.count_call(CallTarget::Flow(f));
        let params: Vec<Value> = callee
            .params
            .iter()
            .map(|p| args.get(&p.name).cloned().unwrap_or(Value::Null))
            .collect();
        let (out, end) = Box::pin(self.run_flow(
            f,
            params,
            Some(cx.ledger.clone()),
            Some(cx.span),
            path.frame().call(path.step_name(), &callee.name),
        ))
        .await?;
        let waiting = end.is_waiting();
        self.waiting.borrow_mut().extend(end.waiting);
        if waiting {
            return Ok(CallOutcome::Waiting);
        }
        Ok(out.map_or(CallOutcome::Skipped, CallOutcome::Value))
    }
}
