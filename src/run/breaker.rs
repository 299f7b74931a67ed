//! One circuit breaker per dependency: each model and each tool.
//!
//! A dependency's breaker counts its consecutive failed calls (no usable
//! answer: rate limited, timed out, a server error, a broken connection, a
//! refused request). At `threshold` it opens: for the cool-down no call is
//! made to it, and callers go straight to their fallback (the next model of
//! a fallback chain, a step's `fallback`). After the cool-down one call is
//! let through as a probe: an answer closes the breaker, a failure opens it
//! for another cool-down. A success anywhere in between resets the count.
//!
//! Once a dependency has failed, the calls in flight to it count against
//! what is left of the threshold (a caller beyond that waits for one of them
//! to end), so a dead dependency receives at most `threshold` requests
//! after its first failure plus those already in flight at that moment,
//! however wide the fan-out that calls it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::exec::{ModelId, ToolId};

/// What a breaker guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dependency {
    Model(ModelId),
    Tool(ToolId),
}

#[derive(Default)]
struct State {
    /// Consecutive failed calls.
    failures: u32,
    /// Calls started and not yet ended.
    in_flight: u32,
    /// Open until then; a probe may go once it has passed.
    open_until: Option<Instant>,
    /// A half-open probe is in flight.
    probing: bool,
}

/// The breakers of one run.
pub struct Breakers {
    /// Consecutive failures that open a breaker; 0 turns breakers off.
    threshold: u32,
    cooldown: Duration,
    states: RefCell<HashMap<Dependency, State>>,
    changed: tokio::sync::Notify,
}

/// How a breaker ended a call's turn to be admitted.
pub enum Admission<'b> {
    /// Make the call, then [`Ticket::resolve`] it.
    Go(Ticket<'b>),
    /// The breaker is open: make no call; the failures that opened it.
    Open { failures: u32 },
}

/// A call the breaker let through. Dropped unresolved (the call was
/// cancelled), it counts neither way.
pub struct Ticket<'b> {
    breakers: &'b Breakers,
    dependency: Dependency,
    probe: bool,
    resolved: bool,
}

/// What resolving a call did to its breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// The breaker opened (again) after this many consecutive failures.
    Opened(u32),
    /// A probe answered: the breaker closed.
    Closed,
}

impl Breakers {
    pub fn new(threshold: u32, cooldown: Duration) -> Breakers {
        Breakers {
            threshold,
            cooldown,
            states: RefCell::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
        }
    }

    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    /// Waits for the dependency's turn: a call may go, or its breaker is
    /// open.
    pub async fn admit(&self, dependency: Dependency) -> Admission<'_> {
        if self.threshold == 0 {
            return Admission::Go(self.ticket(dependency, false));
        }
        loop {
            // Registered before the check: a call ending between the check
            // and the wait still wakes this one.
            let changed = self.changed.notified();
            {
                let mut states = self.states.borrow_mut();
                let s = states.entry(dependency).or_default();
                match s.open_until {
                    Some(until) if Instant::now() < until || s.probing => {
                        return Admission::Open {
                            failures: s.failures,
                        };
                    }
                    Some(_) => {
                        s.probing = true;
                        s.in_flight += 1;
                        drop(states);
                        return Admission::Go(self.ticket(dependency, true));
                    }
                    None if s.failures == 0 || s.failures + s.in_flight < self.threshold => {
                        s.in_flight += 1;
                        drop(states);
                        return Admission::Go(self.ticket(dependency, false));
                    }
                    None => {}
                }
            }
            changed.await;
        }
    }

    fn ticket(&self, dependency: Dependency, probe: bool) -> Ticket<'_> {
        Ticket {
            breakers: self,
            dependency,
            probe,
            resolved: false,
        }
    }

    fn end(&self, ticket: &Ticket<'_>, outcome: Option<bool>) -> Change {
        if self.threshold == 0 {
            return Change::None;
        }
        let change = {
            let mut states = self.states.borrow_mut();
            let s = states.entry(ticket.dependency).or_default();
            s.in_flight = s.in_flight.saturating_sub(1);
            if ticket.probe {
                s.probing = false;
            }
            match outcome {
                None => Change::None,
                Some(true) => {
                    let was_open = s.open_until.is_some();
                    s.failures = 0;
                    s.open_until = None;
                    if was_open {
                        Change::Closed
                    } else {
                        Change::None
                    }
                }
                Some(false) => {
                    s.failures += 1;
                    let opens =
                        ticket.probe || (s.open_until.is_none() && s.failures >= self.threshold);
                    if opens {
                        s.open_until = Some(Instant::now() + self.cooldown);
                        Change::Opened(s.failures)
                    } else {
                        Change::None
                    }
                }
            }
        };
        self.changed.notify_waiters();
        change
    }
}

impl Ticket<'_> {
    /// The call ended: `ok` when the dependency answered.
    pub fn resolve(mut self, ok: bool) -> Change {
        self.resolved = true;
        self.breakers.end(&self, Some(ok))
    }

    pub fn dependency(&self) -> Dependency {
        self.dependency
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.resolved {
            self.breakers.end(self, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn go(a: Admission<'_>) -> Ticket<'_> {
        match a {
            Admission::Go(t) => t,
            Admission::Open { .. } => panic!("expected the call to go"),
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn opens_at_the_threshold_then_lets_one_probe_through_after_the_cooldown() {
        block_on(async {
            let b = Breakers::new(2, Duration::from_millis(50));
            let m = Dependency::Model(ModelId(0));
            assert_eq!(go(b.admit(m).await).resolve(false), Change::None);
            assert_eq!(go(b.admit(m).await).resolve(false), Change::Opened(2));
            assert!(matches!(b.admit(m).await, Admission::Open { failures: 2 }));
            // Another dependency is unaffected.
            go(b.admit(Dependency::Tool(ToolId(0))).await).resolve(true);
            tokio::time::sleep(Duration::from_millis(60)).await;
            let probe = go(b.admit(m).await);
            // While the probe is out, everyone else still falls back.
            assert!(matches!(b.admit(m).await, Admission::Open { .. }));
            assert_eq!(probe.resolve(false), Change::Opened(3));
            assert!(matches!(b.admit(m).await, Admission::Open { .. }));
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert_eq!(go(b.admit(m).await).resolve(true), Change::Closed);
            go(b.admit(m).await).resolve(true);
        });
    }

    #[test]
    fn after_a_failure_calls_in_flight_count_against_the_threshold() {
        block_on(async {
            let b = Breakers::new(3, Duration::from_secs(60));
            let m = Dependency::Model(ModelId(0));
            go(b.admit(m).await).resolve(false);
            let first = go(b.admit(m).await);
            let second = go(b.admit(m).await);
            // 1 failure + 2 in flight: a fourth call waits for one to end.
            let waiting = b.admit(m);
            tokio::pin!(waiting);
            assert!(waiting.as_mut().now_or_never().is_none());
            first.resolve(false);
            // 2 failures + 1 in flight: still full.
            assert!(waiting.as_mut().now_or_never().is_none());
            assert_eq!(second.resolve(false), Change::Opened(3));
            assert!(matches!(waiting.await, Admission::Open { failures: 3 }));
        });
    }

    #[test]
    fn a_cancelled_call_counts_neither_way_and_off_means_always_go() {
        block_on(async {
            let b = Breakers::new(1, Duration::from_secs(60));
            let m = Dependency::Tool(ToolId(1));
            drop(go(b.admit(m).await));
            go(b.admit(m).await).resolve(true);
            let off = Breakers::new(0, Duration::from_secs(60));
            for _ in 0..5 {
                go(off.admit(m).await).resolve(false);
            }
            go(off.admit(m).await);
        });
    }
}
