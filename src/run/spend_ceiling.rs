//! The spend a durable run records while it runs: never below what a crash
//! could leave billed (settled spend plus the reservations of calls in
//! flight), so that a resume never under-counts the budget.
//!
//! Writing the spend with every commit cost every commit a second page (the
//! run's row beside the step's), and writing it before every model call a
//! write of its own per call. Instead each write records the ledger's
//! committed spend plus an *allowance* for every counter: room for the
//! model calls that start, the steps and tool calls that are counted and the
//! active time that passes before the next write. A commit whose spend still
//! fits under the figure last written leaves the run's row alone; a model
//! call whose reservation fits goes out without a write. A crash therefore
//! leaves the run's recorded spend at most one allowance above what was
//! spent and reserved (the unused allowance counts as spent), and never
//! below it, except for the active time after the last write, which is
//! lost as it always was.
//!
//! No allowance reaches past more than half of the room a limit has left,
//! so that a run resumed after a crash near a limit still has room, and a
//! write is due again before the limit is reached.

use super::budget::Spend;
use crate::exec::Budget;

/// How many of the largest model call seen the allowance holds. A commit
/// writes the run's row when the room left would not hold one more such
/// call (so the next call need not write before it goes out), and a call
/// settles to what it used, usually well under its worst case: with eight,
/// a chain of model steps writes the row about once every ten or more
/// commits, and a crash counts at most eight calls' worst case unused.
const CALLS_AHEAD: f64 = 8.0;

/// Steps and tool calls counted ahead: a chain of quick steps writes the
/// run's row once per this many, and a crash counts at most this many that
/// never ran.
const COUNT_AHEAD: u64 = 64;

/// Active time counted ahead, in seconds: a run's row is written at least
/// this often while steps commit, and a crash counts at most this much
/// time that was not used.
const WALL_AHEAD: f64 = 1.0;

/// The figure last written and the allowance the next write adds.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpendCeiling {
    /// The spend last written to the run store (`None` before the first
    /// write of this process: nothing it recorded covers anything yet).
    written: Option<Spend>,
    /// `CALLS_AHEAD` times the largest worst case of one model call this
    /// process has reserved (tokens and cost; the other counters' allowance
    /// is fixed).
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

    /// Whether a crash now leaves the model calls' spend counted: the
    /// tokens and cost of `committed` (the root ledger's settled spend plus
    /// its outstanding reservations) are within the figure last written.
    pub fn covers_calls(&self, committed: &Spend) -> bool {
        self.written
            .is_some_and(|w| committed.tokens <= w.tokens && committed.cost <= w.cost + 1e-12)
    }

    /// Whether every counter of `committed` is within the figure last
    /// written, with room for one more model call as large as the largest
    /// seen, so a commit now need not write the run's row (and the next
    /// call need not write before it goes out).
    pub fn covers(&self, committed: &Spend) -> bool {
        let next_call = Spend {
            tokens: committed.tokens + (self.allowance.tokens as f64 / CALLS_AHEAD).ceil() as u64,
            cost: committed.cost + self.allowance.cost / CALLS_AHEAD,
            ..*committed
        };
        self.covers_calls(&next_call)
            && self.written.is_some_and(|w| {
                committed.steps <= w.steps
                    && committed.tool_calls <= w.tool_calls
                    && committed.wall <= w.wall
            })
    }

    /// The spend to write now: `committed` plus the allowance, each counter
    /// by at most half of what its limit in `limits` has left (never below
    /// `committed`, which may be past a limit: a provider that reported
    /// more than the worst case). Remembered as the figure written.
    pub fn raise(&mut self, committed: Spend, limits: &Budget) -> Spend {
        let a = &self.allowance;
        let written = Spend {
            tokens: ahead(committed.tokens, a.tokens, limits.tokens),
            cost: ahead_f(committed.cost, a.cost, limits.cost),
            steps: ahead(committed.steps, COUNT_AHEAD, limits.steps),
            tool_calls: ahead(committed.tool_calls, COUNT_AHEAD, limits.tool_calls),
            wall: ahead_f(
                committed.wall,
                WALL_AHEAD,
                limits.wall.map(|w| w.as_secs_f64()),
            ),
        };
        self.written = Some(written);
        written
    }
}

/// `used` plus `allowance`, the allowance at most half of what `limit`
/// leaves.
fn ahead(used: u64, allowance: u64, limit: Option<u64>) -> u64 {
    let room = limit.map_or(u64::MAX, |max| max.saturating_sub(used) / 2);
    used.saturating_add(allowance.min(room))
}

fn ahead_f(used: f64, allowance: f64, limit: Option<f64>) -> f64 {
    let room = limit.map_or(f64::INFINITY, |max| ((max - used) / 2.0).max(0.0));
    used + allowance.min(room)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        assert!(!c.covers_calls(&Spend::tokens(100, 0.01)));
        assert_eq!(
            c.raise(Spend::tokens(100, 0.01), &Budget::default()).tokens,
            900
        );
        // Its step commits with 40 spent: room for eight more like it.
        assert_eq!(
            c.raise(Spend::tokens(40, 0.004), &Budget::default()).tokens,
            840
        );
        assert!(c.covers_calls(&Spend::tokens(140, 0.014)));
        assert!(c.covers_calls(&Spend::tokens(840, 0.084)));
        assert!(!c.covers_calls(&Spend::tokens(841, 0.084)));
        assert!(!c.covers_calls(&Spend::tokens(200, 0.085)));
        // A commit leaves the row alone while one more call fits.
        let settled = |tokens: u64| Spend {
            wall: 0.0,
            ..Spend::tokens(tokens, tokens as f64 / 10_000.0)
        };
        assert!(c.covers(&settled(740)));
        assert!(!c.covers(&settled(741)));
    }

    #[test]
    fn the_allowance_takes_at_most_half_the_room_left_and_never_less_than_is_committed() {
        let mut c = SpendCeiling::default();
        c.widen(Spend::tokens(300, 0.0));
        assert_eq!(c.raise(Spend::tokens(800, 0.0), &limits(1000)).tokens, 900);
        assert_eq!(
            c.raise(Spend::tokens(800, 0.0), &limits(100_000)).tokens,
            3_200
        );
        assert_eq!(c.raise(Spend::tokens(999, 0.0), &limits(1000)).tokens, 999);
        // Settled past the limit (a provider reported more than reserved):
        // the whole of it is written.
        assert_eq!(
            c.raise(Spend::tokens(1200, 0.0), &limits(1000)).tokens,
            1200
        );
    }

    #[test]
    fn steps_tool_calls_and_active_time_are_counted_ahead_so_most_commits_write_nothing() {
        let mut c = SpendCeiling::default();
        let at = |steps: u64, wall: f64| Spend {
            steps,
            tool_calls: steps,
            wall,
            ..Spend::default()
        };
        assert!(!c.covers(&at(0, 0.0)), "nothing written yet");
        let written = c.raise(at(1, 0.01), &Budget::default());
        assert_eq!((written.steps, written.tool_calls), (65, 65));
        assert!((written.wall - 1.01).abs() < 1e-9);
        assert!(c.covers(&at(65, 1.0)));
        assert!(!c.covers(&at(66, 1.0)));
        assert!(!c.covers(&at(2, 1.02)));
        // Near a limit the allowance halves the room left.
        let tight = Budget {
            steps: Some(20),
            wall: Some(Duration::from_secs(3)),
            ..Budget::default()
        };
        let written = c.raise(at(10, 2.0), &tight);
        assert_eq!(written.steps, 15);
        assert!((written.wall - 2.5).abs() < 1e-9);
    }
}
