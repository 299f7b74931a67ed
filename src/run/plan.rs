//! What the scheduler precomputes once per flow: which steps each region
//! holds directly, and which of them each step waits for.
//!
//! A loop or branch runs as a unit: it starts when everything its body reads
//! from the enclosing region is ready, then runs its body in a frame of its
//! own. The checker guarantees the only edges leaving a body go to its own
//! loop or branch, so a body never needs anything the enclosing region
//! produces later.

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::adjacency::Adjacency;
use crate::exec::{Flow, RegionId, RegionKind, StepKind};

#[derive(Debug)]
pub struct Plan {
    /// Per region: the steps directly in it, in graph order.
    pub members: Vec<Vec<NodeIndex>>,
    /// Per step: the steps of its own region it waits for (deduplicated).
    pub deps: Adjacency,
    /// Per step: the steps of its own region that wait for it.
    pub dependents: Adjacency,
    /// Per step: its position among its region's members (its slot in a frame).
    pub slot: Vec<usize>,
}

impl Plan {
    pub fn new(flow: &Flow) -> Plan {
        let g = &flow.graph;
        let n = g.node_count();
        let mut members = vec![Vec::new(); flow.regions.len()];
        for node in g.node_indices() {
            members[g[node].region.index()].push(node);
        }
        // (waiter, what it waits for), once per pair however many edges
        // join them. A loop item is set when its iteration starts: nothing
        // waits on it through the scheduler, and it waits for nothing.
        let item = |s: NodeIndex| matches!(g[s].kind, StepKind::LoopItem { .. });
        let mut waits = Vec::with_capacity(g.edge_count());
        for e in g.edge_references() {
            let (p, s) = (e.source(), e.target());
            let rp = g[p].region;
            let rs = g[s].region;
            let waiter = if rs == rp {
                Some(s)
            } else if flow.region_within(rs, rp) {
                // `s` sits inside a loop or branch of `p`'s region: that loop or
                // branch waits for `p` as a whole.
                enclosing_join(flow, rs, rp)
            } else {
                // An edge out of a body (to its own loop or branch, or from a
                // loop item): the region structure orders it.
                None
            };
            if let Some(w) = waiter {
                if w != p && !item(w) && !item(p) {
                    waits.push((w, p));
                }
            }
        }
        waits.sort_unstable();
        waits.dedup();
        let deps = Adjacency::from_pairs(n, &waits);
        // Each step's dependents in graph order (`waits` is sorted by waiter).
        let waited: Vec<_> = waits.iter().map(|&(w, p)| (p, w)).collect();
        let dependents = Adjacency::from_pairs(n, &waited);
        let mut slot = vec![0; n];
        for list in &members {
            for (i, node) in list.iter().enumerate() {
                slot[node.index()] = i;
            }
        }
        Plan {
            members,
            deps,
            dependents,
            slot,
        }
    }
}

/// The loop or branch step, directly in region `outer`, whose body contains
/// region `inner`.
fn enclosing_join(flow: &Flow, inner: RegionId, outer: RegionId) -> Option<NodeIndex> {
    let mut r = inner;
    loop {
        let region = &flow.regions[r.index()];
        let parent = region.parent?;
        if parent == outer {
            return match region.kind {
                RegionKind::Loop { node, .. } | RegionKind::Arm { node, .. } => Some(node),
                RegionKind::Root => None,
            };
        }
        r = parent;
    }
}
