//! Declarations that leave something unbounded: B001 an agent without
//! `max_steps`, B002 a flow without a budget, B003 a tool without a timeout,
//! B006 a model without `max_tokens`.

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{Program, StepKind};

pub(super) fn check(program: &Program, out: &mut Vec<Diagnostic>) {
    for agent in &program.agents {
        if agent.max_steps.is_none() {
            out.push(
                Diagnostic::new(Code::AgentWithoutMaxSteps, agent.span, format!("agent `{}` has no step limit", agent.name))
                    .label("may loop forever")
                    .help("add `max_steps N`: the agent stops after N model turns, so its cost has a bound"),
            );
        }
    }
    for flow in &program.flows {
        if flow.budget.is_none() {
            out.push(
                Diagnostic::new(Code::FlowWithoutBudget, flow.span, format!("flow `{}` has no budget", flow.name))
                    .label("no `budget`")
                    .help("add `budget { tokens 100k, cost $1.00, steps 50, wall 10m }`: the run stops cleanly when one runs out"),
            );
        }
    }
    for tool in &program.tools {
        if tool.timeout_seconds.is_none() {
            out.push(
                Diagnostic::new(
                    Code::ToolWithoutTimeout,
                    tool.span,
                    format!("tool `{}` has no timeout", tool.name),
                )
                .label("a hung call would wait forever")
                .help("add `timeout 30s` (or what the service really needs)"),
            );
        }
    }
    for (id, model) in program.models.iter().enumerate() {
        if model.max_tokens.is_some() {
            continue;
        }
        // Only a model that some call relies on for its bound is a problem.
        let unbounded_use = program.agents.iter().any(|a| a.model.map(|m| m.index()) == Some(id))
            || program.flows.iter().any(|f| {
                f.graph.node_weights().any(|s| matches!(&s.kind, StepKind::Llm(l) if l.model.index() == id && l.max_tokens.is_none()))
            })
            || program.models.iter().any(|m| m.fallback.map(|f| f.index()) == Some(id));
        if unbounded_use || program.flows.is_empty() {
            out.push(
                Diagnostic::new(Code::ModelWithoutMaxTokens, model.span, format!("model `{}` has no `max_tokens`", model.name))
                    .label("its replies have no length limit")
                    .help("add `max_tokens: 800` to the model's parameters (or `max_tokens` to each `llm` step): cost bounds start from it"),
            );
        }
    }
}
