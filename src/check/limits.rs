//! Declarations that leave something unbounded: B001 an agent without
//! `max_steps`, B002 a flow without a budget, B003 a tool without a timeout,
//! B006 a model without `max_tokens`, B007 a flow budget that bounds no time
//! or no spend, B008 an agent with more tools than a model picks among well.

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{Program, StepKind};

/// Above this many tools an agent's model picks the wrong tool noticeably
/// more often (tool selection degrades past 15–20 tools); B008 warns.
pub(crate) const MAX_AGENT_TOOLS: usize = 15;

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
    for agent in &program.agents {
        if agent.tools.len() > MAX_AGENT_TOOLS {
            let extra = agent.tools.get(MAX_AGENT_TOOLS).map(|(_, s)| *s);
            let mut d = Diagnostic::new(
                Code::TooManyTools,
                agent.span,
                format!(
                    "agent `{}` chooses among {} tools, more than the {MAX_AGENT_TOOLS} a model picks from reliably",
                    agent.name,
                    agent.tools.len()
                ),
            )
            .label(format!("{} tools", agent.tools.len()))
            .help("split it into specialised agents of a few tools each (one to search, one to write, ...) and call them from the flow, or from a coordinating agent's flow");
            if let Some(s) = extra {
                d = d.with(
                    s,
                    format!("tool {} of {}", MAX_AGENT_TOOLS + 1, agent.tools.len()),
                );
            }
            out.push(d);
        }
    }
    // A judge's budget is its eval's (whose worst case cost.rs checks).
    for flow in program.flows.iter().filter(|f| !f.judge) {
        if let Some(b) = &flow.budget {
            let spend = b.tokens.is_some()
                || b.cost.is_some()
                || b.steps.is_some()
                || b.tool_calls.is_some();
            if !spend {
                out.push(
                    Diagnostic::new(Code::BudgetBoundsNothing, b.span, format!("the budget of flow `{}` bounds no spend", flow.name))
                        .label("only `wall`")
                        .help("add what the run may spend, such as `steps 50, tool_calls 100` (and `tokens 100k, cost $1.00` when it calls models): `wall` alone lets a run spend without limit until the clock runs out"),
                );
            } else if b.wall_seconds.is_none() {
                out.push(
                    Diagnostic::new(Code::BudgetBoundsNothing, b.span, format!("the budget of flow `{}` bounds no time", flow.name))
                        .label("no `wall`")
                        .help("add `wall 10m` (or what the run really needs): without it a run that waits on slow calls holds its budget and its place forever; time at approval gates does not count"),
                );
            }
        }
        // A judge without a budget: its eval has none, reported there.
        if flow.budget.is_none() && !flow.judge {
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
