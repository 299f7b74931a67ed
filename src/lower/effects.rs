//! Each flow's strongest effect, through the flows it calls.
//!
//! A call of a flow has the effect of the strongest call the flow may make,
//! at any depth: a flow that calls a flow that sends an email is
//! irreversible. Computed once, after every flow is lowered, so the checks
//! read it instead of following calls again, and no chain of calls is too
//! deep for it (it used to be followed to a depth of 32, past which a call
//! counted as a read).

use petgraph::algo::kosaraju_scc;
use petgraph::graph::DiGraph;

use crate::ast::Effect;
use crate::ir::{CallTarget, Program};

/// Sets every flow's `effect`. Flows that call each other in a circle
/// (reported as G002) share the strongest effect of the circle.
pub(super) fn of_flows(program: &mut Program) {
    let flows = program.flows.len();
    let mut calls: DiGraph<(), ()> = DiGraph::with_capacity(flows, flows);
    let nodes: Vec<_> = (0..flows).map(|_| calls.add_node(())).collect();
    // Each flow's own calls of tools and agents.
    let mut effect = vec![Effect::Read; flows];
    for (i, flow) in program.flows.iter().enumerate() {
        for (_, target) in flow.calls() {
            match target {
                CallTarget::Flow(f) => {
                    calls.add_edge(nodes[i], nodes[f.index()], ());
                }
                CallTarget::Tool(t) => effect[i] = effect[i].max(program.tools[t.index()].effect),
                CallTarget::Agent(a) => {
                    effect[i] = effect[i].max(program.agents[a.index()].effect(&program.tools))
                }
            }
        }
    }
    // Kosaraju's components come callees first (reverse topological
    // order), so each callee outside a component is final when it is read.
    for component in kosaraju_scc(&calls) {
        let strongest = component
            .iter()
            .flat_map(|&n| std::iter::once(n).chain(calls.neighbors(n)))
            .map(|n| effect[n.index()])
            .max()
            .unwrap_or(Effect::Read);
        for n in component {
            effect[n.index()] = strongest;
        }
    }
    for (flow, effect) in program.flows.iter_mut().zip(effect) {
        flow.effect = effect;
    }
}
