//! A list of steps per step, all in one buffer (`Plan`'s `deps` and
//! `dependents`): `adjacency[n]` is step `n`'s slice. A `Vec` per step was
//! two allocations per step of a flow for every run and resume to make and
//! free, a twentieth of a 10,000-step resume.

use petgraph::graph::NodeIndex;

#[derive(Debug)]
pub struct Adjacency {
    /// Step `n`'s list is `items[starts[n]..starts[n + 1]]`.
    starts: Vec<usize>,
    items: Vec<NodeIndex>,
}

impl Adjacency {
    /// The lists of `steps` steps from `(step, listed)` pairs, each list in
    /// the order its pairs come.
    pub fn from_pairs(steps: usize, pairs: &[(NodeIndex, NodeIndex)]) -> Adjacency {
        let mut starts = vec![0; steps + 1];
        for (step, _) in pairs {
            starts[step.index() + 1] += 1;
        }
        for i in 0..steps {
            starts[i + 1] += starts[i];
        }
        let mut next = starts.clone();
        let mut items = vec![NodeIndex::new(0); pairs.len()];
        for &(step, listed) in pairs {
            items[next[step.index()]] = listed;
            next[step.index()] += 1;
        }
        Adjacency { starts, items }
    }
}

impl std::ops::Index<usize> for Adjacency {
    type Output = [NodeIndex];

    fn index(&self, step: usize) -> &[NodeIndex] {
        &self.items[self.starts[step]..self.starts[step + 1]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_lists_its_pairs_in_order() {
        let n = NodeIndex::new;
        let lists = Adjacency::from_pairs(4, &[(n(2), n(0)), (n(0), n(3)), (n(2), n(1))]);
        assert_eq!(&lists[0], &[n(3)]);
        assert!(lists[1].is_empty());
        assert_eq!(&lists[2], &[n(0), n(1)]);
        assert!(lists[3].is_empty());
    }
}
