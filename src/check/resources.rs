//! D001: a hidden dependency. Two steps that may run at the same time touch
//! the same resource and one of them writes it, so the outcome depends on
//! timing. Steps may run at the same time when no path orders them and they
//! are not in different arms of one branch; the iterations of a `parallel`
//! loop run at the same time as each other, so a step there that writes a
//! resource conflicts with its own other iterations.
//!
//! Per resource, the common case (every access ordered with every write) is
//! recognised in linear time from the writers' order; only a resource whose
//! accesses are not in one chain is searched pair by pair, with a bitset of
//! accessor ancestors per node.

use std::collections::{BTreeMap, HashSet};

use petgraph::graph::NodeIndex;
use petgraph::Direction;

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{AfterPoint, CallTarget, Flow, FlowId, Program, RegionId, RegionKind, ResourceId};

#[derive(Clone, Copy)]
struct Access {
    node: NodeIndex,
    resource: ResourceId,
    writes: bool,
}

/// `order` is the flow's steps in topological order (`graph::cycles`).
pub(super) fn check(program: &Program, id: FlowId, order: &[NodeIndex], out: &mut Vec<Diagnostic>) {
    let flow = &program.flows[id.index()];
    let accesses = accesses(program, flow);
    // Reads of a resource nothing writes cannot conflict; group the rest by
    // resource.
    let mut by_resource: BTreeMap<ResourceId, Vec<Access>> = BTreeMap::new();
    for a in &accesses {
        by_resource.entry(a.resource).or_default().push(*a);
    }
    by_resource.retain(|_, accs| accs.iter().any(|a| a.writes));
    if by_resource.is_empty() {
        return;
    }
    let mut position = vec![0usize; flow.graph.node_count()];
    for (i, n) in order.iter().enumerate() {
        position[n.index()] = i;
    }
    for accs in by_resource.values() {
        if totally_ordered(flow, order, &position, accs) {
            continue;
        }
        pairwise(program, flow, order, accs, out);
    }
}

/// The common case in linear time: every write of the resource is ordered
/// after the one before it, and every read sits between two consecutive
/// writes (after the one, before the other). Then no two accesses can run at
/// once, by transitivity. `latest[n]` is the topological position of the
/// latest writer among `n`'s ancestors, `earliest[n]` that of the earliest
/// writer among its descendants: a writer reaches the next one exactly when
/// it is the latest writer above it. Anything else (exclusive arms, parallel
/// loops, real conflicts) goes to the pairwise search.
fn totally_ordered(flow: &Flow, order: &[NodeIndex], position: &[usize], accs: &[Access]) -> bool {
    if accs
        .iter()
        .any(|a| in_parallel_loop(flow, flow.graph[a.node].region))
    {
        return false;
    }
    let mut writer = vec![false; flow.graph.node_count()];
    let mut writers: Vec<usize> = Vec::new();
    for a in accs.iter().filter(|a| a.writes) {
        if !writer[a.node.index()] {
            writer[a.node.index()] = true;
            writers.push(position[a.node.index()]);
        }
    }
    writers.sort_unstable();
    const NONE: usize = usize::MAX;
    let mut latest = vec![NONE; flow.graph.node_count()];
    for &n in order {
        let mut best = NONE;
        for p in flow.graph.neighbors_directed(n, Direction::Incoming) {
            for cand in [
                latest[p.index()],
                if writer[p.index()] {
                    position[p.index()]
                } else {
                    NONE
                },
            ] {
                if cand != NONE && (best == NONE || cand > best) {
                    best = cand;
                }
            }
        }
        latest[n.index()] = best;
    }
    let mut earliest = vec![NONE; flow.graph.node_count()];
    for &n in order.iter().rev() {
        let mut best = NONE;
        for c in flow.graph.neighbors_directed(n, Direction::Outgoing) {
            for cand in [
                earliest[c.index()],
                if writer[c.index()] {
                    position[c.index()]
                } else {
                    NONE
                },
            ] {
                best = best.min(cand);
            }
        }
        earliest[n.index()] = best;
    }
    let node_at = |pos: usize| order[pos];
    for pair in writers.windows(2) {
        if latest[node_at(pair[1]).index()] != pair[0] {
            return false;
        }
    }
    for a in accs.iter().filter(|a| !writer[a.node.index()]) {
        let p = position[a.node.index()];
        let i = writers.partition_point(|&w| w < p);
        if i > 0 && latest[a.node.index()] != writers[i - 1] {
            return false;
        }
        if i < writers.len() && earliest[a.node.index()] != writers[i] {
            return false;
        }
    }
    true
}

fn in_parallel_loop(flow: &Flow, region: RegionId) -> bool {
    let mut r = Some(region);
    while let Some(id) = r {
        let reg = &flow.regions[id.index()];
        if let RegionKind::Loop { parallel, .. } = reg.kind {
            if parallel > 1 {
                return true;
            }
        }
        r = reg.parent;
    }
    false
}

/// Every conflicting pair of one resource's accesses. Reachability is a
/// bitset of accessor ancestors per node: O((V + E) · A / 64).
fn pairwise(
    program: &Program,
    flow: &Flow,
    order: &[NodeIndex],
    accesses: &[Access],
    out: &mut Vec<Diagnostic>,
) {
    let mut bit: BTreeMap<NodeIndex, usize> = BTreeMap::new();
    for a in accesses {
        let next = bit.len();
        bit.entry(a.node).or_insert(next);
    }
    let words = bit.len().div_ceil(64);
    let mut ancestors = vec![0u64; flow.graph.node_count() * words];
    for &n in order {
        let base = n.index() * words;
        for p in flow.graph.neighbors_directed(n, Direction::Incoming) {
            let pb = p.index() * words;
            for w in 0..words {
                let v = ancestors[pb + w];
                ancestors[base + w] |= v;
            }
            if let Some(&b) = bit.get(&p) {
                ancestors[base + b / 64] |= 1 << (b % 64);
            }
        }
    }
    let before = |a: NodeIndex, b: NodeIndex| -> bool {
        let i = bit[&a];
        ancestors[b.index() * words + i / 64] & (1 << (i % 64)) != 0
    };
    let dropped = |n: NodeIndex| super::after_dropped(flow, n);
    let mut reported: HashSet<(NodeIndex, NodeIndex)> = HashSet::new();
    // Only pairs with a write can conflict: pair each writer with every
    // access, instead of every access with every other.
    for w in accesses.iter().filter(|a| a.writes) {
        for other in accesses {
            let (x, y) = if flow.graph[w.node].span <= flow.graph[other.node].span {
                (w, other)
            } else {
                (other, w)
            };
            let key = (x.node, y.node);
            if reported.contains(&key) {
                continue;
            }
            let parallel_loop =
                shared_parallel_loop(flow, flow.graph[x.node].region, flow.graph[y.node].region);
            let concurrent = if x.node == y.node {
                parallel_loop.is_some()
            } else {
                parallel_loop.is_some()
                    || (!before(x.node, y.node)
                        && !before(y.node, x.node)
                        && !exclusive(flow, x.node, y.node))
            };
            if !concurrent || (parallel_loop.is_none() && (dropped(x.node) || dropped(y.node))) {
                continue;
            }
            reported.insert(key);
            out.push(report(program, flow, x, y, parallel_loop));
        }
    }
}

fn report(
    program: &Program,
    flow: &Flow,
    x: &Access,
    y: &Access,
    parallel_loop: Option<(NodeIndex, u64)>,
) -> Diagnostic {
    let resource = &program.resources[x.resource.index()].name;
    let verb = |a: &Access| if a.writes { "writes" } else { "reads" };
    let (sx, sy) = (&flow.graph[x.node], &flow.graph[y.node]);
    if x.node == y.node {
        let (lp, n) = parallel_loop.unwrap_or((x.node, 2));
        return Diagnostic::new(
            Code::HiddenDependency,
            sy.span,
            format!("{} writes `{resource}` in up to {n} iterations at once", sy.display()),
        )
        .label(format!("{} `{resource}` in every iteration", verb(y)))
        .with(flow.graph[lp].span, format!("loop runs `parallel {n}`"))
        .help("the iterations are not ordered, so the writes race: run the loop one item at a time (remove `parallel`), or declare separate resources for what each iteration touches");
    }
    let mut d = Diagnostic::new(
        Code::HiddenDependency,
        sy.span,
        format!(
            "{} {} `{resource}` while {} may {} it at the same time",
            sy.display(),
            verb(y),
            sx.display(),
            verb(x).trim_end_matches('s')
        ),
    )
    .label(format!("{} `{resource}`", verb(y)))
    .with(
        sx.span,
        format!("{} `{resource}`, with nothing ordering the two", verb(x)),
    );
    d = match parallel_loop {
        Some((lp, n)) => d
            .with(flow.graph[lp].span, format!("their iterations run `parallel {n}`"))
            .help("one iteration's step is not ordered with another's: run the loop one item at a time (remove `parallel`)"),
        None => match order_fix(flow, x.node, y.node) {
            Some(fix) => d
                .help(format!(
                    "order them: make one use the other's value, or write `after {}` on `{}`",
                    flow.graph[fix.before].name, flow.graph[fix.on].name
                ))
                .suggest(fix.at, fix.replacement),
            None => d.help("order them: make one use the other's value, or name one in an `after` clause of the other's `let`"),
        },
    };
    d
}

/// An `after` clause that orders two steps, written where it checks: on a
/// `let`, naming a step whose name is visible from that `let`.
struct OrderFix {
    on: NodeIndex,
    before: NodeIndex,
    at: crate::source::Span,
    replacement: String,
}

fn order_fix(flow: &Flow, x: NodeIndex, y: NodeIndex) -> Option<OrderFix> {
    let (ax, ay) = (let_of(flow, x)?, let_of(flow, y)?);
    if ax == ay {
        return None;
    }
    // A `let`'s name is visible in its own region and those nested in it.
    let visible = |name: NodeIndex, from: NodeIndex| {
        flow.region_within(flow.graph[from].region, flow.graph[name].region)
    };
    // Prefer ordering the later-reported step after the first one.
    let (on, before) = if visible(ax, ay) {
        (ay, ax)
    } else if visible(ay, ax) {
        (ax, ay)
    } else {
        return None;
    };
    let name = &flow.graph[before].name;
    let (at, replacement) = match flow.after_points.get(&on)? {
        AfterPoint::New(at) => (*at, format!(" after {name}")),
        AfterPoint::Extend(at) => (*at, format!(", {name}")),
    };
    Some(OrderFix {
        on,
        before,
        at,
        replacement,
    })
}

/// The `let` a step belongs to: itself, or the loop or branch whose body
/// holds it, outwards until one is bound by `let`.
fn let_of(flow: &Flow, mut node: NodeIndex) -> Option<NodeIndex> {
    for _ in 0..flow.regions.len() + 1 {
        if flow.after_points.contains_key(&node) {
            return Some(node);
        }
        node = match flow.regions[flow.graph[node].region.index()].kind {
            RegionKind::Root => return None,
            RegionKind::Loop { node, .. } | RegionKind::Arm { node, .. } => node,
        };
    }
    None
}

/// The resources each step reads and writes, through tools, agents and sub-flows.
fn accesses(program: &Program, flow: &Flow) -> Vec<Access> {
    let mut out: Vec<Access> = Vec::new();
    for (node, target) in flow.calls() {
        let mut rs = Vec::new();
        target_resources(program, target, &mut rs);
        // A node's own accesses are contiguous (a call and its fallback come
        // together): merge per resource, writing if any is a write.
        let start = out
            .iter()
            .rposition(|a| a.node != node)
            .map_or(0, |i| i + 1);
        for (resource, writes) in rs {
            match out[start..].iter_mut().find(|a| a.resource == resource) {
                Some(a) => a.writes |= writes,
                None => out.push(Access {
                    node,
                    resource,
                    writes,
                }),
            }
        }
    }
    out
}

/// The resources a call of `target` touches: a flow's through every flow it
/// calls (`Flow::resources`, made once in lowering).
fn target_resources(program: &Program, target: CallTarget, out: &mut Vec<(ResourceId, bool)>) {
    match target {
        CallTarget::Tool(t) => out.extend(program.tools[t.index()].resources()),
        CallTarget::Agent(a) => {
            let agent = &program.agents[a.index()];
            for tool in agent.allowed_tools(&program.tools) {
                out.extend(tool.resources());
            }
        }
        CallTarget::Flow(f) => out.extend(program.flows[f.index()].resources.iter().copied()),
    }
}

/// The innermost loop with `parallel` above 1 that encloses both regions.
fn shared_parallel_loop(flow: &Flow, a: RegionId, b: RegionId) -> Option<(NodeIndex, u64)> {
    let mut r = Some(a);
    while let Some(id) = r {
        let region = &flow.regions[id.index()];
        if let RegionKind::Loop { node, parallel } = region.kind {
            if parallel > 1 && flow.region_within(b, id) {
                return Some((node, parallel));
            }
        }
        r = region.parent;
    }
    None
}

/// Whether two steps sit in different arms of the same branch.
fn exclusive(flow: &Flow, a: NodeIndex, b: NodeIndex) -> bool {
    let arm_path = |n: NodeIndex| {
        let mut path = Vec::new();
        let mut r = Some(flow.graph[n].region);
        while let Some(id) = r {
            if let RegionKind::Arm { node, arm } = flow.regions[id.index()].kind {
                path.push((node, arm));
            }
            r = flow.regions[id.index()].parent;
        }
        path
    };
    let (pa, pb) = (arm_path(a), arm_path(b));
    pa.iter()
        .any(|(node, arm)| pb.iter().any(|(n2, arm2)| n2 == node && arm2 != arm))
}
