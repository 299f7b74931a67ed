//! The spend a durable run records while it runs: never below what a crash
//! could leave billed (settled spend plus the reservations of calls in
//! flight), so that a resume never under-counts the budget.
//!
//! Writing the spend before every model call cost a write of its own per
//! call. Instead each write records the ledger's committed spend plus an
//! *allowance*: room for the model calls that start before the next write.
//! A call whose reservation still fits under the figure last written goes
//! out without a write; one that does not fit writes a new figure first. A
//! crash therefore leaves the run's recorded spend at most one allowance
//! above what was spent and reserved, never below it.

use super::budget::Spend;
use crate::exec::Budget;

/// How many of the largest model call seen the allowance holds: two, so
/// that the next call fits even when its prompt is longer than any before
/// (a chain whose steps read the last one's output).
const CALLS_AHEAD: f64 = 2.0;

/// The figure last written and the allowance the next write adds.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpendCeiling {
    /// The spend last written to the run store (`tokens` and `cost` are
    /// what matters: the other fields are counted, not reserved, by calls
    /// that a crash could leave billed).
    written: Spend,
    /// `CALLS_AHEAD` times the largest worst case of one model call this
    /// process has reserved.
    allowance: Spend,
}

impl SpendCeiling {
    /// Makes room in the next write for a call as large as `worst`.
    pub fn widen(&mut self, worst: Spend) {
        let a = &mut self.allowance;
        a.tokens = a
            .tokens
            .max((worst.tokens as f64 * CALLS_AHEAD).ceil() as u64);
        a.cost = a.cost.max(worst.cost * CALLS_AHEAD);
    }

    /// Whether `committed` (the root ledger's settled spend plus its
    /// outstanding reservations) is within the figure last written, so a
    /// crash now is already counted.
    pub fn covers(&self, committed: &Spend) -> bool {
        committed.tokens <= self.written.tokens && committed.cost <= self.written.cost + 1e-12
    }

    /// The spend to write now: `committed` plus the allowance, but never
    /// past a limit of `limits` that `committed` is within (a resume would
    /// otherwise start a run with room left as out of budget). Remembered
    /// as the figure written.
    pub fn raise(&mut self, committed: Spend, limits: &Budget) -> Spend {
        let tokens = committed.tokens + self.allowance.tokens;
        let cost = committed.cost + self.allowance.cost;
        let written = Spend {
            tokens: limits
                .tokens
                .map_or(tokens, |max| tokens.min(max).max(committed.tokens)),
            cost: limits
                .cost
                .map_or(cost, |max| cost.min(max).max(committed.cost)),
            ..committed
        };
        self.written = written;
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(tokens: u64) -> Budget {
        Budget {
            tokens: Some(tokens),
            ..Budget::default()
        }
    }

    #[test]
    fn a_call_no_larger_than_the_largest_before_needs_no_write_of_its_own() {
        let mut c = SpendCeiling::default();
        // The first call: nothing written covers it.
        c.widen(Spend::tokens(100, 0.01));
        assert!(!c.covers(&Spend::tokens(100, 0.01)));
        assert_eq!(
            c.raise(Spend::tokens(100, 0.01), &Budget::default()).tokens,
            300
        );
        // Its step commits with 40 spent: room for two more like it.
        assert_eq!(
            c.raise(Spend::tokens(40, 0.004), &Budget::default()).tokens,
            240
        );
        assert!(c.covers(&Spend::tokens(140, 0.014)));
        assert!(c.covers(&Spend::tokens(240, 0.024)));
        assert!(!c.covers(&Spend::tokens(241, 0.024)));
        assert!(!c.covers(&Spend::tokens(200, 0.025)));
    }

    #[test]
    fn the_allowance_stops_at_the_limit_but_never_below_what_is_committed() {
        let mut c = SpendCeiling::default();
        c.widen(Spend::tokens(300, 0.0));
        assert_eq!(c.raise(Spend::tokens(800, 0.0), &limits(1000)).tokens, 1000);
        // Settled past the limit (a provider reported more than reserved):
        // the whole of it is written.
        assert_eq!(
            c.raise(Spend::tokens(1200, 0.0), &limits(1000)).tokens,
            1200
        );
    }
}
