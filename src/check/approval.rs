//! A001: an irreversible call that can run without a human approval first.
//!
//! "Guarded" generalises dominance to a dataflow graph. A plain step starts
//! only when *all* its inputs are ready, so it is guarded as soon as *any*
//! input is (classic dominators would wrongly demand that every input path
//! pass the gate). A branch's join is reached through *one* arm, so it is
//! guarded only if its decision is, or *every* arm passes a gate. A loop's
//! result may come from zero iterations, so only what precedes the loop
//! guards it. A gate that approves itself on timeout (`on_timeout approve`)
//! guards nothing: no human may ever have looked.

use petgraph::algo::toposort;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::ast::{Decision, Effect};
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{CallTarget, Fallback, Flow, Program, StepKind};

use super::effect_of;

pub(super) fn check(program: &Program, flow: &Flow, out: &mut Vec<Diagnostic>) {
    let Ok(order) = toposort(&flow.graph, None) else {
        return;
    };
    let g = &flow.graph;
    let mut guarded = vec![false; g.node_count()];
    // Whether some step directly in a region is guarded; an arm's steps all
    // come before its join in topological order.
    let mut region_guarded = vec![false; flow.regions.len()];
    for &n in &order {
        let preds = || g.edges_directed(n, Direction::Incoming).map(|e| e.source());
        guarded[n.index()] = match &g[n].kind {
            StepKind::Approve { on_timeout, .. } if *on_timeout != Decision::Approve => true,
            StepKind::Branch { decide, arms } => {
                guarded[decide.index()]
                    || (!arms.is_empty()
                        && arms
                            .iter()
                            .all(|arm| arm.result.is_some() && region_guarded[arm.region.index()]))
                    || preds()
                        .any(|p| g[p].region == g[n].region && p != *decide && guarded[p.index()])
            }
            StepKind::Loop { item, body, .. } => {
                guarded[item.index()]
                    || preds()
                        .any(|p| !flow.region_within(g[p].region, *body) && guarded[p.index()])
            }
            _ => preds().any(|p| guarded[p.index()]),
        };
        if guarded[n.index()] {
            region_guarded[g[n].region.index()] = true;
        }
    }
    let gates: Vec<_> = g
        .node_indices()
        .filter_map(|n| match &g[n].kind {
            StepKind::Approve {
                on_timeout: Decision::Approve,
                gate,
                ..
            } => Some((n, gate.clone())),
            _ => None,
        })
        .collect();
    for n in g.node_indices() {
        let step = &g[n];
        let mut targets = Vec::new();
        if let StepKind::Call { target, .. } = &step.kind {
            targets.push(*target);
        }
        if let Some(Fallback::Call(target, _, _)) = &step.fallback {
            targets.push(*target);
        }
        for target in targets {
            // A sub-flow gates its own irreversible calls: its own check proves it.
            if matches!(target, CallTarget::Flow(_)) {
                continue;
            }
            // A misspelled `after` (reported as N001) is the missing gate.
            if effect_of(program, target) != Effect::Irreversible
                || guarded[n.index()]
                || super::after_dropped(flow, n)
            {
                continue;
            }
            let name = target.name(program);
            let what = match target {
                CallTarget::Agent(_) => "which may call irreversible tools",
                _ => "which is irreversible",
            };
            let mut d = Diagnostic::new(
                Code::UngatedIrreversible,
                step.span,
                format!("{} calls `{name}`, {what}, and can run without an approval", step.display()),
            )
            .label("reachable without passing an approval gate")
            .help(format!(
                "make the call depend on an `approve` gate: pass the gate's value into it, or write `after <gate step>`; in `flow {}` every path that reaches this step must pass the gate",
                flow.name
            ));
            for (gate, gate_name) in &gates {
                d = d.with(
                    g[*gate].span,
                    format!("gate `{gate_name}` approves itself on timeout, so it does not count"),
                );
            }
            out.push(d);
        }
    }
}
