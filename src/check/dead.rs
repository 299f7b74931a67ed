//! X001: a step whose value nothing reads and that changes nothing: it can
//! only cost time and money. (X002, an unreachable `match` arm, is found
//! while lowering the `match`.)

use petgraph::Direction;

use crate::ast::Effect;
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{Dep, Flow, Program, RegionId, StepKind};

use super::effect_of;

pub(super) fn check(program: &Program, out: &mut Vec<Diagnostic>) {
    for flow in &program.flows {
        if flow.unresolved {
            continue;
        }
        let effectful = effectful_regions(program, flow);
        for n in flow.graph.node_indices() {
            let step = &flow.graph[n];
            if !step.named
                || matches!(
                    step.kind,
                    StepKind::LoopItem { .. } | StepKind::Check { .. }
                )
            {
                continue;
            }
            let used = flow
                .graph
                .edges_directed(n, Direction::Outgoing)
                .any(|e| matches!(e.weight(), Dep::Data | Dep::After | Dep::Guard));
            let effect = match &step.kind {
                StepKind::Call { target, .. } => effect_of(program, *target) > Effect::Read,
                StepKind::Loop { body, .. } => effectful[body.index()],
                StepKind::Branch { arms, .. } => arms.iter().any(|a| effectful[a.region.index()]),
                _ => false,
            };
            if used || effect {
                continue;
            }
            let what = match step.kind {
                StepKind::Llm(_) => "a model call",
                StepKind::Approve(_) => "an approval no step waits for",
                StepKind::Call { .. } => "a read-only call",
                _ => "a value",
            };
            out.push(
                Diagnostic::new(Code::DeadStep, step.span, format!("the value of `{}` is never used", step.name))
                    .label(match step.kind {
                        StepKind::Approve(_) => what.to_string(),
                        _ => format!("{what} whose result goes nowhere"),
                    })
                    .help(format!("use `{}` in a later step or the `return`, order a step with `after {}`, or remove it", step.name, step.name)),
            );
        }
    }
}

/// Per region: whether a step in it, or in a region nested in it, has an
/// effect (a write, a check that can fail the run, or a gate).
fn effectful_regions(program: &Program, flow: &Flow) -> Vec<bool> {
    let mut effectful = vec![false; flow.regions.len()];
    for step in flow.graph.node_weights() {
        let intrinsic = match &step.kind {
            StepKind::Call { target, .. } => effect_of(program, *target) > Effect::Read,
            // A check can fail the run; a gate with nothing after it guards nothing.
            StepKind::Check { .. } => true,
            _ => false,
        };
        if !intrinsic {
            continue;
        }
        let mut r: Option<RegionId> = Some(step.region);
        while let Some(id) = r {
            if effectful[id.index()] {
                break;
            }
            effectful[id.index()] = true;
            r = flow.regions[id.index()].parent;
        }
    }
    effectful
}
