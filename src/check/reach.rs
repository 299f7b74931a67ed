//! U003: an agent that lists a tool whose effect its `may` forbids.
//! U002: a declared tool that no flow, and no agent a flow calls, can reach.
//! (U001, an agent listing an undeclared tool, is found while resolving names.)

use std::collections::HashSet;

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{CallTarget, Program};

/// `discarded`: a syntax error made the parser skip text, whose calls are unknown.
pub(super) fn check(program: &Program, discarded: bool, out: &mut Vec<Diagnostic>) {
    for agent in &program.agents {
        for (tool, span) in &agent.tools {
            let t = &program.tools[tool.index()];
            if t.effect > agent.may {
                let mut d = Diagnostic::new(
                    Code::ForbiddenEffect,
                    *span,
                    format!("agent `{}` may {}, but `{}` is {}", agent.name, agent.may.as_str(), t.name, describe(t.effect)),
                )
                .label(match t.effect {
                    crate::ast::Effect::Irreversible => "an irreversible tool".to_string(),
                    e => format!("a {} tool", e.as_str()),
                })
                .help(format!(
                    "remove `{}` from the agent's tools, or widen it with `may {}` (an irreversible action still needs an approval gate before the agent runs)",
                    t.name,
                    t.effect.as_str()
                ));
                if let Some(es) = t.effect_span {
                    d = d.with(es, "effect declared here");
                }
                out.push(d);
            }
        }
    }

    if discarded {
        return;
    }
    let mut reached: HashSet<usize> = HashSet::new();
    for flow in &program.flows {
        for (_, target) in flow.calls() {
            match target {
                CallTarget::Tool(t) => {
                    reached.insert(t.index());
                }
                CallTarget::Agent(a) => {
                    let agent = &program.agents[a.index()];
                    // A tool `may` forbids is reported as U003 already.
                    reached.extend(agent.tools.iter().map(|(t, _)| t.index()));
                }
                CallTarget::Flow(_) => {}
            }
        }
    }
    // A file without flows is a library: its tools are for the files that import it.
    let files_with_flows: HashSet<_> = program.flows.iter().map(|f| f.span.file).collect();
    for (i, tool) in program.tools.iter().enumerate() {
        if reached.contains(&i) || tool.mentioned || !files_with_flows.contains(&tool.span.file) {
            continue;
        }
        out.push(
            Diagnostic::new(
                Code::UnusedTool,
                tool.span,
                format!("tool `{}` is never called", tool.name),
            )
            .label("no flow or agent can reach it")
            .help("call it from a flow, list it in an agent that a flow calls, or remove it"),
        );
    }
}

fn describe(effect: crate::ast::Effect) -> &'static str {
    match effect {
        crate::ast::Effect::Read => "read-only",
        crate::ast::Effect::Write => "a write",
        crate::ast::Effect::Irreversible => "irreversible",
    }
}
