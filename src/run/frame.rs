//! One instance of a region (the flow body, a loop iteration, a branch arm)
//! and what a flow run carries: its plan, ledger and span.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use petgraph::graph::NodeIndex;
use serde_json::Value;

use super::budget::Ledger;
use super::checkpoints::Kept;
use super::eval::Scope;
use super::plan::Plan;
use super::step_path::{FramePath, StepPath};
use super::trace::SpanId;
use crate::exec::{Flow, RegionId};
use crate::store::StoreError;

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
    cells: Vec<StepValue>,
    pub skipped: RefCell<HashSet<NodeIndex>>,
    parent: Option<Rc<Frame>>,
    params: Rc<Vec<Value>>,
    /// Which instance of its region this is: `posted[3]`.
    pub path: FramePath,
}

impl Frame {
    pub fn root(plan: &Plan, params: Vec<Value>, path: FramePath) -> Rc<Frame> {
        Rc::new(Frame {
            region: RegionId(0),
            cells: (0..plan.members[0].len())
                .map(|_| StepValue::default())
                .collect(),
            skipped: RefCell::default(),
            parent: None,
            params: Rc::new(params),
            path,
        })
    }

    pub fn child(self: &Rc<Frame>, plan: &Plan, region: RegionId, path: FramePath) -> Rc<Frame> {
        Rc::new(Frame {
            region,
            cells: (0..plan.members[region.index()].len())
                .map(|_| StepValue::default())
                .collect(),
            skipped: RefCell::default(),
            parent: Some(self.clone()),
            params: self.params.clone(),
            path,
        })
    }

    pub fn set(&self, plan: &Plan, n: NodeIndex, value: Value) {
        let _ = self.cells[plan.slot[n.index()]].value.set(value);
    }

    /// Step `n`'s value as an earlier process checkpointed it: JSON text,
    /// parsed when a step first reads it.
    pub fn keep(&self, plan: &Plan, n: NodeIndex, kept: Kept) {
        self.cells[plan.slot[n.index()]].kept.set(Some(kept));
    }

    /// Step `n`'s value, if it has one; `Err` when it is a checkpoint whose
    /// text is not JSON (the store failure to stop the run with).
    pub fn get(&self, plan: &Plan, n: NodeIndex) -> Result<Option<&Value>, StoreError> {
        let cell = &self.cells[plan.slot[n.index()]];
        if let Some(kept) = cell.kept.take() {
            let _ = cell.value.set(kept.parse()?);
        }
        Ok(cell.value.get())
    }
}

/// A step's value in a frame: computed by this process, or checkpointed by
/// an earlier one and kept as text until read (most replayed values never
/// are: see `Checkpoints`).
#[derive(Default)]
struct StepValue {
    value: OnceCell<Value>,
    kept: Cell<Option<Kept>>,
}

/// Expression scope over a frame chain.
pub struct FrameScope<'a> {
    pub flow: &'a Flow,
    pub plan: &'a Plan,
    pub frame: &'a Frame,
    /// A durable run's store failure: where reading a damaged checkpoint
    /// records it (the run then stops as at a failed write).
    pub store_failed: Option<&'a RefCell<Option<StoreError>>>,
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
                return match f.get(self.plan, node) {
                    Ok(value) => value,
                    Err(damaged) => {
                        if let Some(failed) = self.store_failed {
                            failed.borrow_mut().get_or_insert(damaged);
                        }
                        None
                    }
                };
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
            flow: self.flow,
            plan: self.plan.clone(),
            ledger: self.ledger.clone(),
            span,
        }
    }
}

/// How a call (or any step that ran as a future) ended.
pub enum CallOutcome {
    Value(Value),
    /// A sub-flow whose result was skipped (a rejected gate).
    Skipped,
    /// A gate inside it (in a called flow, a loop iteration, a branch arm)
    /// waits for a decision: it has no value yet, so nothing that depends on
    /// it may start, and it is not checkpointed.
    Waiting,
}

/// How a region instance ended.
#[derive(Default)]
pub struct RegionEnd {
    /// The region's own gates that wait for a decision.
    pub waiting: Vec<PendingGate>,
    /// A step waits on a gate further in (a loop iteration, a branch arm, a
    /// called flow), whose gates are in the run's waiting list.
    pub blocked: bool,
    /// The commit that takes the last rows the region queued and nothing
    /// in it waited for (`Runtime::queue`); 0 when there are none.
    pub commit: u64,
}

impl RegionEnd {
    /// Some step of the region has no value because a gate waits.
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty() || self.blocked
    }
}

/// A gate's decision, from a test's `given`, a recording or the command line.
#[derive(Clone, Debug)]
pub enum GateDecision {
    Approve(Option<Value>),
    Reject(String),
}

/// Step `n` of this flow in `frame`, e.g. `posted[3]/reconcile.posted.result`.
pub fn step_path<'a>(frame: &Frame, cx: &FlowCtx<'a>, n: NodeIndex) -> StepPath<'a> {
    frame.path.step(&cx.flow.name, &cx.flow.graph[n].name)
}
