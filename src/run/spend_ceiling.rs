//! The spend a durable run records while it runs: never below what a crash
//! could leave billed (settled spend plus the reservations of calls in
//! flight), so that a resume never under-counts the budget.
//!
//! Steps, tool calls and active time need no figure ahead: every commit
//! carries the run's count of them on its step rows (`Backend::commit_steps`),
//! so a resume reads them exactly as they stood at the last commit. Tokens
//! and cost are different: a model call may be billed whether or not its
//! reply ever reaches the store, so a crash must find it counted, and
//! writing the spend before every call would cost every call a write of its
//! own. Instead each write of the run's row records the ledger's committed
//! spend plus an *allowance* for the model calls that may start before the
//! next write. A call whose reservation fits under the figure last written
//! goes out without a write; a commit leaves the run's row alone while one
//! more call fits. After a crash nothing says which of those calls went
//! out, so the unused part of the allowance counts as spent: the price of
//! not writing before every call.
//!
//! An allowance is granted only when it leaves at least as much room under
//! the limit as it takes; nearer the limit there is none, and every call
//! writes its reservation before it goes out. However often a run is
//! killed, what crashes counted that was never spent therefore never leaves
//! it less room than one allowance (eight of its largest calls), and once
//! it is that near its limit a crash counts nothing it did not reserve.

use super::budget::Spend;
use crate::exec::Budget;

/// How many of the largest model call seen the allowance holds. A commit
/// writes the run's row when the room left would not hold one more such
/// call (so the next call need not write before it goes out), and a call
/// settles to what it used, usually well under its worst case: with eight,
/// a chain of model steps writes the row about once every ten or more
/// commits, and a crash counts at most eight calls' worst case unused.
const CALLS_AHEAD: f64 = 8.0;

/// The figure last written and the allowance the next write adds.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpendCeiling {
    /// The spend last written to the run store (`None` before the first
    /// write of this process: nothing it recorded covers anything yet).
    written: Option<Spend>,
    /// `CALLS_AHEAD` times the largest worst case of one model call this
    /// process has reserved (tokens and cost; the other counters get none).
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

    /// Whether a commit now may leave the run's row alone: the figure last
    /// written holds `committed` and one more model call as large as the
    /// largest seen (so the next call need not write before it goes out).
    /// Steps, tool calls and active time do not matter here: the commit's
    /// step rows carry them.
    pub fn covers(&self, committed: &Spend) -> bool {
        let next_call = Spend {
            tokens: committed.tokens + (self.allowance.tokens as f64 / CALLS_AHEAD).ceil() as u64,
            cost: committed.cost + self.allowance.cost / CALLS_AHEAD,
            ..*committed
        };
        self.covers_calls(&next_call)
    }

    /// The spend to write now: `committed`, its tokens and cost plus the
    /// allowance where the allowance leaves at least as much room under the
    /// limit in `limits` as it takes (never below `committed`, which may be
    /// past a limit: a provider that reported more than the worst case).
    /// Remembered as the figure written.
    pub fn raise(&mut self, committed: Spend, limits: &Budget) -> Spend {
        let a = &self.allowance;
        let written = Spend {
            tokens: ahead(committed.tokens, a.tokens, limits.tokens),
            cost: ahead_f(committed.cost, a.cost, limits.cost),
            ..committed
        };
        self.written = Some(written);
        written
    }
}

/// What a resumed run counts as spent by its earlier processes: the run's
/// row (`recorded`: tokens and cost as last written, allowance included,
/// which covers every model call that could have been in flight), with
/// steps, tool calls and active time as its last commit carried them
/// (`counted`) where that is later than the row's last write. Each of
/// those only grows, so the larger figure is the later one. A process that
/// ended without a crash wrote its exact spend to the row last.
pub fn resumed_spend(recorded: Spend, counted: Option<Spend>) -> Spend {
    let Some(c) = counted else {
        return recorded;
    };
    Spend {
        steps: recorded.steps.max(c.steps),
        tool_calls: recorded.tool_calls.max(c.tool_calls),
        wall: recorded.wall.max(c.wall),
        ..recorded
    }
}

/// `used` plus `allowance` if that leaves at least `allowance` under
/// `limit`, else `used`.
fn ahead(used: u64, allowance: u64, limit: Option<u64>) -> u64 {
    let fits = limit.is_none_or(|max| max.saturating_sub(used) / 2 >= allowance);
    if fits {
        used.saturating_add(allowance)
    } else {
        used
    }
}

fn ahead_f(used: f64, allowance: f64, limit: Option<f64>) -> f64 {
    let fits = limit.is_none_or(|max| (max - used) / 2.0 >= allowance);
    if fits {
        used + allowance
    } else {
        used
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
    fn an_allowance_is_granted_only_where_it_leaves_as_much_room_as_it_takes() {
        let mut c = SpendCeiling::default();
        c.widen(Spend::tokens(300, 0.0));
        assert_eq!(
            c.raise(Spend::tokens(800, 0.0), &limits(100_000)).tokens,
            3_200
        );
        assert_eq!(
            c.raise(Spend::tokens(800, 0.0), &limits(5_600)).tokens,
            3_200
        );
        // Nearer the limit: no allowance, every call writes before it goes
        // out.
        assert_eq!(c.raise(Spend::tokens(800, 0.0), &limits(5_599)).tokens, 800);
        assert_eq!(c.raise(Spend::tokens(999, 0.0), &limits(1000)).tokens, 999);
        // Settled past the limit (a provider reported more than reserved):
        // the whole of it is written.
        assert_eq!(
            c.raise(Spend::tokens(1200, 0.0), &limits(1000)).tokens,
            1200
        );
    }

    #[test]
    fn however_often_a_run_is_killed_its_crashes_leave_it_room_for_eight_calls() {
        // Each process reserves one call and is killed with it in flight;
        // its resume counts the figure written, allowance included.
        let limit = 100_000;
        let (mut counted, mut calls, mut exact_tail) = (0, 0, 0);
        while counted + 1_000 <= limit {
            let mut c = SpendCeiling::default();
            c.widen(Spend::tokens(1_000, 0.0));
            let committed = counted + 1_000;
            counted = c
                .raise(Spend::tokens(committed, 0.0), &limits(limit))
                .tokens;
            calls += 1;
            exact_tail = if counted == committed {
                exact_tail + 1
            } else {
                0
            };
        }
        // The last crash that counted an allowance left room for eight
        // calls, and each of those crashes counted only what it reserved.
        assert!(exact_tail >= 8, "{exact_tail} of {calls} calls");
        assert!(counted <= limit);
    }

    #[test]
    fn steps_tool_calls_and_active_time_are_written_as_they_stand() {
        let mut c = SpendCeiling::default();
        let at = |steps: u64, wall: f64| Spend {
            steps,
            tool_calls: steps,
            wall,
            ..Spend::default()
        };
        assert!(!c.covers(&at(0, 0.0)), "nothing written yet");
        let written = c.raise(at(1, 0.01), &Budget::default());
        assert_eq!((written.steps, written.tool_calls), (1, 1));
        assert!((written.wall - 0.01).abs() < 1e-9);
        // The commit's step rows carry them: a commit need not write the
        // run's row for them.
        assert!(c.covers(&at(1_000, 60.0)));
    }
}
