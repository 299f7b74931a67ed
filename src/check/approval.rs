//! A001: an irreversible call that can run without a human approval first.
//!
//! "Guarded" generalises dominance to a dataflow graph. A plain step starts
//! only when *all* its inputs are ready, so it is guarded as soon as *any*
//! input is (classic dominators would wrongly demand that every input path
//! pass the gate). A branch's join is reached through *one* arm, so it is
//! guarded only if its decision is, or *every* arm passes a gate. A loop's
//! result may come from zero iterations, so only what precedes the loop
//! guards it. A gate that approves itself on timeout (`on_timeout approve`)
//! guards nothing: no human may ever have looked. Neither does a gate whose
//! policy (`auto approve when …`) is always true: it approves every case
//! itself ([`always_true`] says which conditions are known to be).
//!
//! Across flows: a sub-flow whose result is released by its own gate is a
//! gate for its caller (a per-flow summary, computed callees first), and a
//! sub-flow's own irreversible calls are proven in the sub-flow. Element-wise:
//! a loop whose body's result passed a gate yields a list of approved
//! elements, so a loop over that list is guarded item by item (with no
//! elements, it runs nothing).

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::ast::{Decision, Effect};
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{CallTarget, Expr, ExprKind, Fallback, Flow, Program, StepKind};
use crate::types::Lit;

use super::effect_of;

/// Which gates guard each step, as a bitset over the flow's gates in node
/// order (a flow with more than 64 gates shares the last bit among the rest:
/// "guarded" stays exact, "by which gate" gets coarser). A call of a flow
/// whose result is released by its own gate counts as a gate too (bit of the
/// call step), so a sub-flow that returns an approved value guards its
/// caller's uses of it. `elements[n]`: for a loop, the gates every element
/// of its list passed (its body's result was guarded), so a later loop over
/// that list is guarded item by item. `None` if the graph has a cycle.
pub(super) struct Guards {
    pub(super) gates: Vec<NodeIndex>,
    pub(super) of: Vec<u64>,
}

impl Guards {
    fn bit(&self, n: NodeIndex) -> u64 {
        match self.gates.iter().position(|g| *g == n) {
            Some(i) => 1 << i.min(63),
            None => 0,
        }
    }

    /// The gate steps whose bits are in `set`.
    pub(super) fn gates_in(&self, set: u64) -> impl Iterator<Item = NodeIndex> + '_ {
        self.gates
            .iter()
            .enumerate()
            .filter(move |(i, _)| set & (1 << (*i).min(63)) != 0)
            .map(|(_, g)| *g)
    }
}

/// Whether a gate step means a person looked (or will) before its value is
/// released: not when it approves itself on timeout, nor when its policy
/// approves every case.
pub(super) fn reviewed(kind: &StepKind) -> bool {
    match kind {
        StepKind::Approve(a) => {
            a.on_timeout != Decision::Approve
                && !a.policy.as_ref().is_some_and(|p| always_true(&p.when))
        }
        _ => false,
    }
}

/// Whether a condition is true whatever the values it reads, as far as
/// folding it can tell: `true`; a comparison of two literals that holds;
/// `x == x`, `x <= x`, `x >= x` for the same path; `not` of an always-false
/// condition; `a or b` with either side always true; `a and b` with both.
/// (Always false: `false`, a literal comparison that fails, `x != x`,
/// `x < x`, `x > x`, and the same rules turned around.)
pub(super) fn always_true(e: &Expr) -> bool {
    fold(e) == Some(true)
}

fn fold(e: &Expr) -> Option<bool> {
    match &e.kind {
        ExprKind::Bool(b) => Some(*b),
        ExprKind::Not(x) => fold(x).map(|b| !b),
        ExprKind::And(a, b) => match (fold(a), fold(b)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        ExprKind::Or(a, b) => match (fold(a), fold(b)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        ExprKind::Compare(a, op, b) => {
            use crate::ast::CompareOp as Op;
            if same_path(a, b) {
                return Some(matches!(op, Op::Eq | Op::Le | Op::Ge));
            }
            let ordering = match (literal(a)?, literal(b)?) {
                (Lit::Number(x), Lit::Number(y)) => x.partial_cmp(&y)?,
                (Lit::Str(x), Lit::Str(y)) => x.cmp(&y),
                (x, y) => {
                    return match op {
                        Op::Eq => Some(x == y),
                        Op::Ne => Some(x != y),
                        _ => None,
                    }
                }
            };
            Some(match op {
                Op::Eq => ordering.is_eq(),
                Op::Ne => ordering.is_ne(),
                Op::Lt => ordering.is_lt(),
                Op::Le => ordering.is_le(),
                Op::Gt => ordering.is_gt(),
                Op::Ge => ordering.is_ge(),
            })
        }
        _ => None,
    }
}

fn literal(e: &Expr) -> Option<Lit> {
    match &e.kind {
        ExprKind::Number(n) => Some(Lit::Number(*n)),
        ExprKind::Bool(b) => Some(Lit::Bool(*b)),
        ExprKind::Str(t) => t
            .parts
            .iter()
            .map(|p| match p {
                crate::ir::TemplatePart::Text(s) => Some(s.as_str()),
                crate::ir::TemplatePart::Expr(_) => None,
            })
            .collect::<Option<String>>()
            .map(Lit::Str),
        _ => None,
    }
}

/// Two reads of the same value: the same step or parameter, the same
/// fields, the same literal indexes.
fn same_path(a: &Expr, b: &Expr) -> bool {
    match (&a.kind, &b.kind) {
        (ExprKind::Step(x), ExprKind::Step(y)) => x == y,
        (ExprKind::Param(x), ExprKind::Param(y)) => x == y,
        (ExprKind::Member(x, f), ExprKind::Member(y, g)) => f == g && same_path(x, y),
        (ExprKind::Len(x), ExprKind::Len(y)) => same_path(x, y),
        (ExprKind::Index(x, i), ExprKind::Index(y, j)) => {
            same_path(x, y) && literal(i).is_some() && literal(i) == literal(j)
        }
        _ => false,
    }
}

/// `order` is the flow's steps in topological order (`graph::cycles`).
pub(super) fn guards(flow: &Flow, order: &[NodeIndex], output_gated: &[bool]) -> Guards {
    let g = &flow.graph;
    let gates: Vec<NodeIndex> = g
        .node_indices()
        .filter(|&n| match &g[n].kind {
            kind @ StepKind::Approve(_) => reviewed(kind),
            StepKind::Call {
                target: CallTarget::Flow(f),
                ..
            } => output_gated.get(f.index()).copied().unwrap_or(false),
            _ => false,
        })
        .collect();
    let mut guards = Guards {
        gates,
        of: vec![0; g.node_count()],
    };
    let mut elements = vec![0u64; g.node_count()];
    // The gates some step directly in a region passed; an arm's steps all
    // come before its join in topological order.
    let mut region_gates = vec![0u64; flow.regions.len()];
    for &n in order {
        let preds = || g.edges_directed(n, Direction::Incoming).map(|e| e.source());
        let own = guards.bit(n);
        let of = &guards.of;
        let set = own
            | match &g[n].kind {
                StepKind::Branch { decide, arms } => {
                    let all_arms = if arms.is_empty() || arms.iter().any(|a| a.result.is_none()) {
                        0
                    } else {
                        arms.iter()
                            .map(|a| region_gates[a.region.index()])
                            .fold(u64::MAX, |acc, x| acc & x)
                    };
                    of[decide.index()]
                        | all_arms
                        | preds()
                            .filter(|p| g[*p].region == g[n].region && p != decide)
                            .fold(0, |acc, p| acc | of[p.index()])
                }
                StepKind::Loop {
                    item, body, result, ..
                } => {
                    elements[n.index()] = of[result.index()];
                    of[item.index()]
                        | preds()
                            .filter(|p| !flow.region_within(g[*p].region, *body))
                            .fold(0, |acc, p| acc | of[p.index()])
                }
                StepKind::LoopItem { iterable } => {
                    let from_elements = match iterable.kind {
                        ExprKind::Step(list) => elements[list.index()],
                        _ => 0,
                    };
                    from_elements | preds().fold(0, |acc, p| acc | of[p.index()])
                }
                StepKind::Value(e) => {
                    // `let approved = drafts_loop` keeps the per-element guard.
                    if let ExprKind::Step(m) = e.kind {
                        elements[n.index()] = elements[m.index()];
                    }
                    preds().fold(0, |acc, p| acc | of[p.index()])
                }
                _ => preds().fold(0, |acc, p| acc | of[p.index()]),
            };
        guards.of[n.index()] = set;
        region_gates[g[n].region.index()] |= set;
    }
    guards
}

/// Per flow, whether its result is released by one of its own gates (or a
/// sub-flow's): then a call of it guards what its caller does with it.
pub(super) fn gated_outputs(
    program: &Program,
    orders: &[Option<Vec<NodeIndex>>],
    callees_first: &[usize],
) -> Vec<bool> {
    // Callees first: a call site reads its callee's answer, already made.
    // A flow in a recursive circle (G002) or with a cycle (G001) is not
    // gated, and neither is one it calls before its answer is made.
    let mut gated = vec![false; program.flows.len()];
    for &i in callees_first {
        let flow = &program.flows[i];
        gated[i] = match (&orders[i], flow.output_step) {
            (Some(order), Some(out)) => guards(flow, order, &gated).of[out.index()] != 0,
            _ => false,
        };
    }
    gated
}

pub(super) fn check(
    program: &Program,
    flow: &Flow,
    order: &[NodeIndex],
    output_gated: &[bool],
    out: &mut Vec<Diagnostic>,
) {
    let guards = guards(flow, order, output_gated);
    let g = &flow.graph;
    let guarded: Vec<bool> = guards.of.iter().map(|s| *s != 0).collect();
    let gates: Vec<_> = g
        .node_indices()
        .filter_map(|n| match &g[n].kind {
            StepKind::Approve(a) if a.on_timeout == Decision::Approve => Some((
                g[n].span,
                format!(
                    "gate `{}` approves itself on timeout, so it does not count",
                    a.gate
                ),
            )),
            _ => None,
        })
        .collect();
    // A policy that is always true is reported once, at the policy; the
    // calls behind it are then not reported again.
    let mut self_approving = Vec::new();
    for n in g.node_indices() {
        if let StepKind::Approve(a) = &g[n].kind {
            let (gate, Some(policy)) = (&a.gate, &a.policy) else {
                continue;
            };
            if always_true(&policy.when) {
                self_approving.push(n);
                out.push(
                    Diagnostic::new(
                        Code::UngatedIrreversible,
                        policy.span,
                        format!("the policy of gate `{gate}` is always true, so the gate approves every case without a person"),
                    )
                    .label("always true")
                    .help("a gate with such a policy guards nothing: write the condition over the values the gate shows (`auto approve when r.amount <= 50`), or remove `auto approve when …` so a person decides"),
                );
            }
        }
    }
    for n in g.node_indices() {
        let step = &g[n];
        let mut targets = Vec::new();
        if let StepKind::Call { target, .. } = &step.kind {
            targets.push(*target);
        }
        if let Some(Fallback::Call(target, _, _)) = step.fallback.as_deref() {
            targets.push(*target);
        }
        for target in targets {
            // A sub-flow gates its own irreversible calls: its own check proves it.
            if matches!(target, CallTarget::Flow(_)) {
                continue;
            }
            // A misspelled `after` (reported as N001) is the missing gate;
            // an always-true policy was reported at the policy.
            if effect_of(program, target) != Effect::Irreversible
                || guarded[n.index()]
                || super::after_dropped(flow, n)
                || behind_any(flow, &self_approving, n)
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
            for (span, why) in &gates {
                d = d.with(*span, why.clone());
            }
            out.push(d);
        }
    }
}

/// Whether `n` depends on one of `gates` (through data or `after`, any path).
fn behind_any(flow: &Flow, gates: &[NodeIndex], n: NodeIndex) -> bool {
    if gates.is_empty() {
        return false;
    }
    let mut seen = vec![false; flow.graph.node_count()];
    let mut stack = vec![n];
    while let Some(m) = stack.pop() {
        if std::mem::replace(&mut seen[m.index()], true) {
            continue;
        }
        if gates.contains(&m) {
            return true;
        }
        stack.extend(
            flow.graph
                .edges_directed(m, Direction::Incoming)
                .map(|e| e.source()),
        );
    }
    false
}
