//! Each flow's strongest effect and the resources it touches, through the
//! flows it calls.
//!
//! A call of a flow has the effect of the strongest call the flow may make,
//! at any depth: a flow that calls a flow that sends an email is
//! irreversible; and it touches every resource those calls touch. Computed
//! once, after every flow is lowered, so the checks read them instead of
//! following calls again: followed at every call, a chain of calls made
//! the effect wrong past a depth of 32 (a call counted as a read), and a
//! flow that calls the next one twice, 30 deep, took minutes to check.

use petgraph::algo::kosaraju_scc;
use petgraph::graph::DiGraph;

use crate::ast::Effect;
use crate::ir::{CallTarget, Program, ResourceId};

/// Sets every flow's `effect` and `resources`. Flows that call each other
/// in a circle (reported as G002) share the circle's.
pub(super) fn of_flows(program: &mut Program) {
    let flows = program.flows.len();
    let mut calls: DiGraph<(), ()> = DiGraph::with_capacity(flows, flows);
    let nodes: Vec<_> = (0..flows).map(|_| calls.add_node(())).collect();
    // Each flow's own calls of tools and agents.
    let mut effect = vec![Effect::Read; flows];
    let mut resources: Vec<Vec<(ResourceId, bool)>> = vec![Vec::new(); flows];
    for (i, flow) in program.flows.iter().enumerate() {
        for (_, target) in flow.calls() {
            match target {
                CallTarget::Flow(f) => {
                    calls.add_edge(nodes[i], nodes[f.index()], ());
                }
                CallTarget::Tool(t) => {
                    let tool = &program.tools[t.index()];
                    effect[i] = effect[i].max(tool.effect);
                    touch(&mut resources[i], tool.resources());
                }
                CallTarget::Agent(a) => {
                    let agent = &program.agents[a.index()];
                    effect[i] = effect[i].max(agent.effect(&program.tools));
                    for tool in agent.allowed_tools(&program.tools) {
                        touch(&mut resources[i], tool.resources());
                    }
                }
            }
        }
    }
    // Kosaraju's components come callees first (reverse topological
    // order), so each callee outside a component is final when it is read.
    for component in kosaraju_scc(&calls) {
        // The component's flows and the flows they call.
        let reached: Vec<_> = component
            .iter()
            .flat_map(|&n| std::iter::once(n).chain(calls.neighbors(n)))
            .collect();
        let strongest = reached
            .iter()
            .map(|n| effect[n.index()])
            .max()
            .unwrap_or(Effect::Read);
        let mut touched = Vec::new();
        for n in &reached {
            touch(&mut touched, resources[n.index()].iter().copied());
        }
        for n in component {
            effect[n.index()] = strongest;
            resources[n.index()] = touched.clone();
        }
    }
    for ((flow, effect), resources) in program.flows.iter_mut().zip(effect).zip(resources) {
        flow.effect = effect;
        flow.resources = resources;
    }
}

/// Adds what `more` touches to `touched`: each resource once, written if
/// any access writes it. A flow touches a few resources, so a scan beats a
/// map.
fn touch(touched: &mut Vec<(ResourceId, bool)>, more: impl Iterator<Item = (ResourceId, bool)>) {
    for (resource, writes) in more {
        match touched.iter_mut().find(|(r, _)| *r == resource) {
            Some((_, w)) => *w |= writes,
            None => touched.push((resource, writes)),
        }
    }
}
