//! Running one step: tool, agent and sub-flow calls, model calls, with the
//! failure semantics built in: arguments validated before a call, results
//! and model outputs after; retries by failure class with exponential
//! backoff, jitter, a cap and `Retry-After`; a model's invalid output sent
//! back to it with the validation errors; every attempt's worst case
//! reserved on the budget first; a circuit breaker per model and per tool
//! that sends calls to their fallbacks while it is open.
//!
//! One file per kind of call: `tool`, `llm`, `agent`, `flow`; `retry` holds
//! the backoff every kind shares.

mod agent;
mod flow;
mod llm;
pub mod output;
pub mod retry;
mod tool;

use petgraph::graph::NodeIndex;
use serde_json::{Map, Value};

use super::error::Stop;
use super::frame::{CallOutcome, FlowCtx};
use super::runtime::Runtime;
use super::step_path::StepPath;
use crate::exec::CallTarget;

impl Runtime<'_> {
    /// A tool, agent or sub-flow call, with retries and budgets.
    pub async fn call(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        target: CallTarget,
        args: Map<String, Value>,
        path: &StepPath<'_>,
    ) -> Result<CallOutcome, Stop> {
        match target {
            CallTarget::Tool(t) => self
                .tool_call(cx, n, &self.program.tools[t.index()], args, path)
                .await
                .map(CallOutcome::Value),
            // Boxed: an agent's future (its model calls, its tools) is many
            // times a tool call's, and inline it would size every call
            // step's future, the ones of a wide fan-out of tool calls too.
            CallTarget::Agent(a) => {
                Box::pin(self.agent(cx, n, &self.program.agents[a.index()], args, path))
                    .await
                    .map(CallOutcome::Value)
            }
            CallTarget::Flow(f) => self.flow_call(cx, f, args, path).await,
        }
    }
}
