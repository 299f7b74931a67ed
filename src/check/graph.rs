//! G001: steps that depend on each other in a circle. G002: flows that call
//! each other recursively. G003: chains of flow calls too deep to run.

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{CallTarget, Program};

/// Reports cycles; returns, per flow, its steps in topological order when
/// its graph is acyclic.
pub(super) fn cycles(program: &Program, out: &mut Vec<Diagnostic>) -> Vec<Option<Vec<NodeIndex>>> {
    let mut orders = Vec::with_capacity(program.flows.len());
    for flow in &program.flows {
        let order = topological_order(&flow.graph);
        if order.is_none() {
            report_cycles(flow, out);
        }
        orders.push(order);
    }
    orders
}

/// The steps of `graph` in topological order, or `None` when it has a
/// cycle: a depth-first search that keeps its path in a vector, not on the
/// call stack, so a chain of any length cannot overflow the stack (petgraph's
/// Tarjan recurses once per step, and a chain of 20,000 steps overflowed the
/// main thread's 8 MiB). The order is the reverse of the order in which the
/// search finishes the steps, starting from each step in index order.
fn topological_order<N, E>(graph: &DiGraph<N, E>) -> Option<Vec<NodeIndex>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; graph.node_count()];
    let mut finished = Vec::with_capacity(graph.node_count());
    let mut path = Vec::new();
    for root in graph.node_indices() {
        if mark[root.index()] != Mark::New {
            continue;
        }
        mark[root.index()] = Mark::OnPath;
        path.push((root, graph.neighbors(root)));
        while let Some((node, next)) = path.last_mut() {
            match next.next() {
                Some(w) => match mark[w.index()] {
                    // An edge back to a step on the path closes a circle.
                    Mark::OnPath => return None,
                    Mark::Done => {}
                    Mark::New => {
                        mark[w.index()] = Mark::OnPath;
                        path.push((w, graph.neighbors(w)));
                    }
                },
                None => {
                    mark[node.index()] = Mark::Done;
                    finished.push(*node);
                    path.pop();
                }
            }
        }
    }
    finished.reverse();
    Some(finished)
}

/// How many steps of a circle G001's message names; its labels point at
/// every one.
const NAMED_IN_MESSAGE: usize = 10;

/// One G001 per circle of a flow that has one. Kosaraju's search, unlike
/// Tarjan's in petgraph, keeps its stack on the heap.
fn report_cycles(flow: &crate::ir::Flow, out: &mut Vec<Diagnostic>) {
    for scc in kosaraju_scc(&flow.graph) {
        let self_loop = scc.len() == 1 && flow.graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        // Name the steps in source order, so the message is stable.
        let mut steps = scc;
        steps.sort_by_key(|n| flow.graph[*n].span);
        let named: Vec<NodeIndex> = steps
            .iter()
            .copied()
            .filter(|n| flow.graph[*n].named)
            .collect();
        let shown = if named.is_empty() { &steps } else { &named };
        let first = shown[0];
        let circle: Vec<String> = shown
            .iter()
            .take(NAMED_IN_MESSAGE)
            .map(|n| flow.graph[*n].display())
            .collect();
        let circle = match shown.len() - circle.len() {
            0 => and_list(&circle),
            more => format!("{}, … and {more} more steps", circle.join(", ")),
        };
        let mut d = Diagnostic::new(
            Code::Cycle,
            flow.graph[first].span,
            if shown.len() == 1 {
                format!("{} depends on its own value", flow.graph[first].display())
            } else {
                format!("{circle} depend on each other in a circle")
            },
        )
        .label("part of the cycle")
        .help("a flow is a graph without cycles: break the circle by computing one of these values from earlier steps");
        for n in shown.iter().skip(1) {
            d = d.with(flow.graph[*n].span, "also in the cycle");
        }
        out.push(d);
    }
}

/// "`a`", "`a` and `b`", "`a`, `b` and `c`".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// How many flows deep a chain of flow calls may go, the flow that starts it
/// included. A run holds a called flow's steps in flight inside its
/// caller's, one level of the run's stack per flow: a chain of 2,000 flows
/// overflowed it (release build, 8 MiB), and a worker's or the approval
/// service's threads have 2 MiB. Real flows nest a few deep; 32 keeps a
/// run well inside the smallest stack.
pub const MAX_CALL_DEPTH: usize = 32;

/// G003: a flow that starts a chain of flow calls more than
/// [`MAX_CALL_DEPTH`] flows deep, reported once at the top of each chain
/// (not again at each flow below it that is also too deep). Flows in a
/// recursive circle are G002's.
pub(super) fn call_depth(
    program: &Program,
    recursive: &[bool],
    callees_first: &[usize],
    out: &mut Vec<Diagnostic>,
) {
    let flows = program.flows.len();
    let callees = |f: usize| {
        program.flows[f]
            .calls()
            .filter_map(move |(step, target)| match target {
                CallTarget::Flow(c) if !recursive[c.index()] => Some((step, c.index())),
                _ => None,
            })
    };
    // Per flow: how many flows its deepest chain holds, itself included,
    // and the call that continues it.
    let mut depth = vec![1usize; flows];
    let mut next: Vec<Option<(NodeIndex, usize)>> = vec![None; flows];
    for &f in callees_first {
        if recursive[f] {
            continue;
        }
        for (step, c) in callees(f) {
            if depth[c] + 1 > depth[f] {
                depth[f] = depth[c] + 1;
                next[f] = Some((step, c));
            }
        }
    }
    let mut below_a_deep_flow = vec![false; flows];
    for f in (0..flows).filter(|&f| depth[f] > MAX_CALL_DEPTH) {
        for (_, c) in callees(f) {
            below_a_deep_flow[c] = true;
        }
    }
    for f in 0..flows {
        if depth[f] <= MAX_CALL_DEPTH || below_a_deep_flow[f] {
            continue;
        }
        let flow = &program.flows[f];
        let mut d = Diagnostic::new(
            Code::CallsTooDeep,
            flow.span,
            format!(
                "flow `{}` starts a chain of flow calls {} flows deep; flowc runs at most {MAX_CALL_DEPTH}",
                flow.name, depth[f]
            ),
        )
        .label("the chain starts here")
        .help("flatten the chain: call the deeper flows' steps from a flow higher up, or fold small flows into their callers");
        // The first calls of the chain, each in the flow that makes it.
        let mut at = f;
        while let Some((step, c)) = next[at].filter(|_| d.labels.len() < 3) {
            d = d.with(
                program.flows[at].graph[step].span,
                format!("calls `{}`", program.flows[c].name),
            );
            at = c;
        }
        out.push(d);
    }
}

/// Flows calling flows must form a tree: recursion has no bound. Returns,
/// per flow, whether it is part of a recursive circle; and every flow, each
/// after the flows it calls (the flows of a circle together, in no set
/// order). The passes that summarize flows (cost, taint, gated results)
/// compute each flow's summary in that order, reading its callees' from a
/// table instead of recursing into them, which on a chain of thousands of
/// flows overflowed the stack.
pub(super) fn recursion(program: &Program, out: &mut Vec<Diagnostic>) -> (Vec<bool>, Vec<usize>) {
    let mut recursive = vec![false; program.flows.len()];
    let mut g: DiGraph<usize, petgraph::graph::NodeIndex> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..program.flows.len()).map(|i| g.add_node(i)).collect();
    for (i, flow) in program.flows.iter().enumerate() {
        for (step, target) in flow.calls() {
            if let CallTarget::Flow(f) = target {
                g.add_edge(nodes[i], nodes[f.index()], step);
            }
        }
    }
    // Kosaraju's components come in reverse topological order: callees
    // first.
    let components = kosaraju_scc(&g);
    let callees_first = components.iter().flatten().map(|n| g[*n]).collect();
    for scc in components {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let mut flows: Vec<usize> = scc.iter().map(|n| g[*n]).collect();
        for f in &flows {
            recursive[*f] = true;
        }
        flows.sort_by_key(|f| program.flows[*f].span);
        // Point at each call that closes the circle.
        let first = flows[0];
        let names: Vec<String> = flows
            .iter()
            .map(|f| format!("`{}`", program.flows[*f].name))
            .collect();
        let names = and_list(&names);
        let mut d = Diagnostic::new(
            Code::RecursiveFlow,
            program.flows[first].span,
            if flows.len() == 1 {
                format!("flow `{}` calls itself", program.flows[first].name)
            } else {
                format!("flows {names} call each other in a circle")
            },
        )
        .label("recursive flow")
        .help("recursion has no bound on its depth or cost; write the repetition as a `for` loop over a list with a maximum length");
        for f in &flows {
            let flow = &program.flows[*f];
            for (step, target) in flow.calls() {
                if let CallTarget::Flow(callee) = target {
                    if flows.contains(&callee.index()) {
                        d = d.with(
                            flow.graph[step].span,
                            format!("calls `{}`", program.flows[callee.index()].name),
                        );
                    }
                }
            }
        }
        out.push(d);
    }
    (recursive, callees_first)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::loader::Loader;

    fn lowered(path: &Path) -> Program {
        let mut loader = Loader::new();
        loader.load_path(path).expect("readable");
        crate::lower::lower(&loader.finish(), &mut Vec::new())
    }

    /// The later passes read each flow's steps in this order and need every
    /// step after the steps it depends on.
    #[test]
    fn an_acyclic_flows_order_puts_each_step_after_its_dependencies() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut flows = 0;
        for entry in std::fs::read_dir(root.join("examples")).expect("examples") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "flow") {
                continue;
            }
            let program = lowered(&path);
            let orders = cycles(&program, &mut Vec::new());
            for (flow, order) in program.flows.iter().zip(&orders) {
                let order = order.as_ref().expect("examples have no cycles");
                let g = &flow.graph;
                assert_eq!(order.len(), g.node_count(), "{}", flow.name);
                let mut position = vec![usize::MAX; g.node_count()];
                for (i, n) in order.iter().enumerate() {
                    position[n.index()] = i;
                }
                for e in g.edge_indices() {
                    let (from, to) = g.edge_endpoints(e).expect("an edge");
                    assert!(
                        position[from.index()] < position[to.index()],
                        "{}: {} comes after {}",
                        flow.name,
                        g[from].display(),
                        g[to].display()
                    );
                }
                flows += 1;
            }
        }
        assert!(flows >= 10, "only {flows} flows");
        let cyclic = lowered(&root.join("tests/golden/g001_cycle.flow"));
        let mut found = Vec::new();
        assert!(cycles(&cyclic, &mut found).iter().any(Option::is_none));
        assert!(!found.is_empty());
    }

    /// A test thread's stack is 2 MiB: a search that recursed once per
    /// step would overflow it long before the end of these chains.
    #[test]
    fn a_chain_of_any_length_is_ordered_and_its_cycle_found_without_recursion() {
        let mut g: DiGraph<(), ()> = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..200_000).map(|_| g.add_node(())).collect();
        // Edges from each step to the one before it: the search starts at
        // the last step to be run and walks the whole chain in one path.
        for w in nodes.windows(2) {
            g.add_edge(w[1], w[0], ());
        }
        let order = topological_order(&g).expect("a chain is acyclic");
        assert_eq!(order.first(), Some(&nodes[199_999]));
        assert_eq!(order.last(), Some(&nodes[0]));
        g.add_edge(nodes[0], nodes[199_999], ());
        assert_eq!(topological_order(&g), None);
    }
}
