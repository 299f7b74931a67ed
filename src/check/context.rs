//! C001: a prompt whose worst case does not fit the model's context window.
//! C002: a prompt that quotes a tool result with no `limit` (and no bounded
//! type), so no window can be proven to hold it.
//!
//! Context exhaustion is one of the failure modes behind most incidents: the
//! provider rejects the request, or silently drops the start of the prompt
//! (often the instructions). An `llm` step's request holds its prompt and
//! system text (each value at its bound, as for budgets) plus `max_tokens` of
//! output; an agent's last turn holds its instructions, every earlier answer
//! and tool result, and its output. Windows come from the model's
//! `context_window` parameter or its provider's price table (`std.models`).

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{Agent, Flow, LlmCall, Program, StepKind, ToolId};
use crate::source::Span;

use super::cost::{agent_tool_result, prompt_parts, type_tokens};

pub(super) fn check(program: &Program, out: &mut Vec<Diagnostic>) {
    for flow in &program.flows {
        for n in flow.graph.node_indices() {
            if let StepKind::Llm(l) = &flow.graph[n].kind {
                llm_step(
                    program,
                    flow,
                    &flow.graph[n].display(),
                    flow.graph[n].span,
                    l,
                    out,
                );
            }
        }
    }
    for agent in &program.agents {
        agent_turns(program, agent, out);
    }
}

fn llm_step(
    program: &Program,
    flow: &Flow,
    who: &str,
    span: Span,
    l: &LlmCall,
    out: &mut Vec<Diagnostic>,
) {
    if l.model.index() >= program.models.len() {
        return;
    }
    let prompt = prompt_parts(program, Some(flow), l.prompt.as_ref());
    let system = prompt_parts(program, Some(flow), l.system.as_ref());
    let fixed = prompt.fixed + system.fixed;
    let values: Vec<&(Span, f64, String)> = prompt.values.iter().chain(&system.values).collect();
    let total = fixed + values.iter().map(|(_, t, _)| t).sum::<f64>();
    let unbounded: Vec<(Span, ToolId)> = prompt
        .unbounded
        .iter()
        .chain(&system.unbounded)
        .filter_map(|(s, t)| t.map(|t| (*s, t)))
        .collect();
    let mut reported_unbounded = false;
    for id in program.model_chain(l.model) {
        let m = &program.models[id.index()];
        let Some(window) = m.context_window else {
            continue;
        };
        let output = l.max_tokens.or(m.max_tokens).unwrap_or(0) as f64;
        let arithmetic = format!(
            "{} fixed text{} + {} max_tokens = {} tokens",
            group(fixed),
            values
                .iter()
                .map(|(_, t, label)| format!(" + {} for `{label}`", group(*t)))
                .collect::<String>(),
            group(output),
            group(total + output)
        );
        if let (Some((at, tool)), false) = (unbounded.first(), reported_unbounded) {
            reported_unbounded = true;
            let tool = &program.tools[tool.index()];
            let d = Diagnostic::new(
                Code::UnboundedPromptValue,
                *at,
                format!(
                    "the prompt of {who} quotes a result of tool `{}`, which has no `limit`, so it may not fit the {} tokens of model `{}`",
                    tool.name,
                    group(window as f64),
                    m.name
                ),
            )
            .label("no bound on its size")
            .with(tool.span, "no `limit … tokens`")
            .with(span, format!("everything else: {arithmetic}"))
            .help(format!(
                "add `limit N tokens` to tool `{}` (its result is cut to N tokens before it reaches a prompt); the room left is {} tokens",
                tool.name,
                group((window as f64 - total - output).max(0.0))
            ));
            out.push(d);
        }
        if total + output > window as f64 {
            out.push(
                Diagnostic::new(
                    Code::ContextWindowExceeded,
                    span,
                    format!(
                        "the request of {who} can reach {} tokens, more than the {} tokens model `{}` holds",
                        group(total + output),
                        group(window as f64),
                        m.name
                    ),
                )
                .label(format!("up to {} tokens", group(total + output)))
                .with(m.span, format!("context window {}", group(window as f64)))
                .help(format!(
                    "worst case {arithmetic}; lower the tools' `limit`s, the lists' maximum lengths or `max_tokens`, or use a model with a larger window"
                )),
            );
        }
    }
}

fn agent_turns(program: &Program, agent: &Agent, out: &mut Vec<Diagnostic>) {
    let Some(model) = agent.model else { return };
    let steps = agent.max_steps.unwrap_or(0) as f64;
    let instructions = super::cost::prompt_tokens(program, None, agent.instructions.as_ref());
    let result = agent_tool_result(program, agent);
    let unlimited: Vec<(&crate::ir::Tool, Span)> = agent
        .tools
        .iter()
        .map(|(t, s)| (&program.tools[t.index()], *s))
        .filter(|(t, _)| t.effect <= agent.may)
        .filter(|(t, _)| {
            t.limit_tokens.is_none() && type_tokens(&program.types, &t.output, 0).is_none()
        })
        .collect();
    let mut reported_unbounded = false;
    for id in program.model_chain(model) {
        let m = &program.models[id.index()];
        let Some(window) = m.context_window else {
            continue;
        };
        let output = m.max_tokens.unwrap_or(0) as f64;
        let earlier = (steps - 1.0).max(0.0);
        let last = instructions + earlier * (output + result) + output;
        let arithmetic = format!(
            "{} instructions + {} earlier turns × ({} max_tokens + {} largest tool result) + {} max_tokens = {} tokens",
            group(instructions),
            group(earlier),
            group(output),
            group(result),
            group(output),
            group(last)
        );
        if let (Some((tool, at)), false) = (unlimited.first(), reported_unbounded) {
            reported_unbounded = true;
            out.push(
                Diagnostic::new(
                    Code::UnboundedPromptValue,
                    *at,
                    format!(
                        "agent `{}` reads results of tool `{}`, which has no `limit`, so its turns may not fit the {} tokens of model `{}`",
                        agent.name,
                        tool.name,
                        group(window as f64),
                        m.name
                    ),
                )
                .label("no bound on its size")
                .with(tool.span, "no `limit … tokens`")
                .help(format!(
                    "add `limit N tokens` to tool `{}`; without it the last turn holds {arithmetic} plus its results",
                    tool.name
                )),
            );
        }
        if last > window as f64 {
            out.push(
                Diagnostic::new(
                    Code::ContextWindowExceeded,
                    agent.span,
                    format!(
                        "the last turn of agent `{}` can reach {} tokens, more than the {} tokens model `{}` holds",
                        agent.name,
                        group(last),
                        group(window as f64),
                        m.name
                    ),
                )
                .label(format!("up to {} tokens by turn {}", group(last), group(steps)))
                .with(m.span, format!("context window {}", group(window as f64)))
                .help(format!(
                    "worst case {arithmetic}; lower `max_steps`, the tools' `limit`s or `max_tokens`, or use a model with a larger window"
                )),
            );
        }
    }
}

/// 12345.0 → "12,345".
fn group(n: f64) -> String {
    let n = n.ceil() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
