//! K001: `env.NAME` outside a tool or provider. Tool templates are rendered
//! only at the moment of the call and redacted from traces; anywhere else an
//! environment value would become data: in a prompt, a step's value, a trace.

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{
    Expr, ExprKind, Fallback, GivenOutcome, Program, StepKind, Template, TemplatePart, TestGiven,
};

pub(super) fn check(program: &Program, out: &mut Vec<Diagnostic>) {
    let mut found: Vec<(&str, crate::source::Span)> = Vec::new();
    for flow in &program.flows {
        for step in flow.graph.node_weights() {
            match &step.kind {
                StepKind::Value(e)
                | StepKind::Output(e)
                | StepKind::Decide { subject: e }
                | StepKind::LoopItem { iterable: e } => expr(e, &mut found),
                StepKind::Call { args, .. } => args.iter().for_each(|(_, e)| expr(e, &mut found)),
                StepKind::Llm(l) => {
                    for t in l.prompt.iter().chain(&l.system) {
                        template(t, &mut found);
                    }
                }
                StepKind::Approve(a) => {
                    a.show.iter().for_each(|e| expr(e, &mut found));
                    if let Some(p) = &a.policy {
                        expr(&p.when, &mut found);
                    }
                }
                StepKind::Check { requires } => requires.iter().for_each(|(e, t)| {
                    expr(e, &mut found);
                    template(t, &mut found);
                }),
                StepKind::Loop { .. } | StepKind::Branch { .. } => {}
            }
            match step.fallback.as_deref() {
                Some(Fallback::Value(e)) => expr(e, &mut found),
                Some(Fallback::Call(_, args, _)) => {
                    args.iter().for_each(|(_, e)| expr(e, &mut found))
                }
                None => {}
            }
        }
    }
    for agent in &program.agents {
        if let Some(t) = &agent.instructions {
            template(t, &mut found);
        }
    }
    for test in &program.tests {
        test.args.iter().for_each(|(_, e)| expr(e, &mut found));
        test.expects.iter().for_each(|e| expr(e, &mut found));
        for g in &test.givens {
            match g {
                TestGiven::Tool {
                    outcome: GivenOutcome::Returns(e),
                    ..
                }
                | TestGiven::Model {
                    outcome: GivenOutcome::Returns(e),
                    ..
                }
                | TestGiven::Agent {
                    outcome: GivenOutcome::Returns(e),
                    ..
                } => expr(e, &mut found),
                TestGiven::Gate { with: Some(e), .. } => expr(e, &mut found),
                _ => {}
            }
        }
    }
    for (name, span) in found {
        out.push(
            Diagnostic::new(Code::SecretInPrompt, span, format!("`env.{name}` is read outside a tool"))
                .label("environment value used as data")
                .help("secrets reach only tools: use `env.` in a tool's `http`, `header` or `exec` template, where flowc keeps it out of prompts, traces and checkpoints"),
        );
    }
}

fn template<'a>(t: &'a Template, found: &mut Vec<(&'a str, crate::source::Span)>) {
    for part in &t.parts {
        if let TemplatePart::Expr(e) = part {
            expr(e, found);
        }
    }
}

fn expr<'a>(e: &'a Expr, found: &mut Vec<(&'a str, crate::source::Span)>) {
    match &e.kind {
        ExprKind::Env(name) => found.push((name, e.span)),
        ExprKind::Str(t) => template(t, found),
        ExprKind::Object(fields) => fields.iter().for_each(|(_, v)| expr(v, found)),
        ExprKind::List(items) => items.iter().for_each(|v| expr(v, found)),
        ExprKind::Member(a, _) | ExprKind::Len(a) | ExprKind::Not(a) => expr(a, found),
        ExprKind::Index(a, b)
        | ExprKind::And(a, b)
        | ExprKind::Or(a, b)
        | ExprKind::Compare(a, _, b) => {
            expr(a, found);
            expr(b, found);
        }
        _ => {}
    }
}
