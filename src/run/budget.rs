//! Budgets are a contract with three parts:
//!
//! 1. Before a call, its worst case is *reserved*. A reservation that would
//!    take any limit past its value is refused, so the run stops before the
//!    call.
//! 2. After the call, the reservation is *settled* to what the provider
//!    reported. A provider may report more than the worst case (a prompt
//!    that tokenizes worse than estimated, or a provider that does not
//!    honour `max_tokens`); when settled spend passes a limit,
//!    [`Ledger::overrun`] says by how much and the caller stops the run.
//! 3. A reservation dropped without being settled (the call was cancelled,
//!    or it was abandoned at its timeout) is kept whole as spend: the
//!    provider may bill a call whose answer flowc never read.
//!
//! A step or agent with its own budget gets a child ledger: a reservation
//! must fit the child and every ledger above it.
//!
//! Wall time is the time a ledger has been active: since it was created,
//! plus what earlier processes of a resumed run were active
//! ([`Ledger::preload`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::exec::Budget;

/// An amount of everything a budget limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Spend {
    pub tokens: u64,
    pub cost: f64,
    pub steps: u64,
    pub tool_calls: u64,
    /// Seconds of active time (wall). Only [`Ledger::spent`] fills it in;
    /// reservations leave it 0.
    pub wall: f64,
}

impl Spend {
    pub fn tokens(tokens: u64, cost: f64) -> Spend {
        Spend {
            tokens,
            cost,
            ..Spend::default()
        }
    }
    pub fn step() -> Spend {
        Spend {
            steps: 1,
            ..Spend::default()
        }
    }
    pub fn tool_call() -> Spend {
        Spend {
            tool_calls: 1,
            ..Spend::default()
        }
    }
}

/// Which limit a refused reservation would have broken, or which one
/// settled spend went past.
#[derive(Clone, Debug, PartialEq)]
pub struct Exhausted {
    pub what: &'static str,
    pub limit: String,
    pub used: String,
    pub wanted: String,
    pub owner: String,
    /// Set when settled spend went past the limit (rather than a
    /// reservation being refused before a call).
    /// Boxed: a refusal is the common case, and `Stop` stays small.
    pub overrun: Option<Box<Overrun>>,
}

/// Settled spend past a limit: by how much, and the call that reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct Overrun {
    /// The amount past the limit, in the limit's unit (`8000`, `$0.0012`).
    pub by: String,
    /// The call whose settlement went past it (filled in by the caller).
    pub call: String,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.overrun {
            None => write!(
                f,
                "the {} budget of {} is exhausted: {} used or reserved, {} more needed ({})",
                self.what, self.limit, self.used, self.wanted, self.owner
            ),
            Some(o) => write!(
                f,
                "the {} budget of {} was overrun by {}: {} spent after {} ({})",
                self.what, self.limit, o.by, self.used, o.call, self.owner
            ),
        }
    }
}

#[derive(Debug)]
pub struct Ledger {
    owner: String,
    limits: Budget,
    started: Instant,
    /// Active time of earlier processes of this run (root ledger only).
    earlier: Mutex<Duration>,
    parent: Option<Arc<Ledger>>,
    state: Mutex<State>,
    /// Woken when a reservation settles (calls waiting for room).
    settled: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Settled plus outstanding reservations.
    committed: Spend,
    /// Settled only: what was really spent.
    spent: Spend,
    /// Reservations granted and not settled yet. A count, not a comparison
    /// of amounts: costs are floats, and rounding would leave committed and
    /// spent a hair apart forever.
    open: usize,
}

/// A granted reservation; settle it with [`Ledger::settle`]. Dropped
/// unsettled (its call cancelled mid-flight), it is kept whole as spend.
#[derive(Debug)]
#[must_use = "a reservation must be settled"]
pub struct Reservation {
    ledger: Arc<Ledger>,
    amount: Spend,
    settled: bool,
}

impl Reservation {
    /// What was reserved.
    pub fn amount(&self) -> Spend {
        self.amount
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.ledger.settle_amount(&self.amount, &self.amount);
        }
    }
}

impl Ledger {
    pub fn new(
        owner: impl Into<String>,
        limits: Budget,
        parent: Option<Arc<Ledger>>,
    ) -> Arc<Ledger> {
        Arc::new(Ledger {
            owner: owner.into(),
            limits,
            started: Instant::now(),
            earlier: Mutex::default(),
            parent,
            state: Mutex::default(),
            settled: tokio::sync::Notify::new(),
        })
    }

    /// Reserves `amount` on this ledger and every ledger above it, or on none.
    pub fn reserve(self: &Arc<Self>, amount: Spend) -> Result<Reservation, Exhausted> {
        self.reserve_up(&amount)?;
        Ok(Reservation {
            ledger: self.clone(),
            amount,
            settled: false,
        })
    }

    /// Reserves `amount`, waiting while other calls' reservations are
    /// outstanding: they usually settle below their worst case, and calls in
    /// parallel should not fail for room a finished call would free. Fails
    /// only when nothing outstanding could free any.
    pub async fn reserve_waiting(
        self: &Arc<Self>,
        amount: Spend,
    ) -> Result<Reservation, Exhausted> {
        loop {
            match self.reserve(amount) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let Some(busy) = self.chain().into_iter().find(|l| l.outstanding()) else {
                        return Err(e);
                    };
                    let settled = busy.settled.notified();
                    if !busy.outstanding() {
                        continue;
                    }
                    settled.await;
                }
            }
        }
    }

    fn chain(&self) -> Vec<&Ledger> {
        let mut chain: Vec<&Ledger> = vec![self];
        let mut p = self.parent.as_deref();
        while let Some(l) = p {
            chain.push(l);
            p = l.parent.as_deref();
        }
        chain
    }

    /// Whether some reservation on this ledger has not settled yet.
    fn outstanding(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).open > 0
    }

    /// Replaces a reservation by what was really spent (on the ledger it
    /// was made on and every ledger above). Spending more than was reserved
    /// is recorded as it happened; [`Ledger::overrun`] then reports it.
    pub fn settle(&self, mut reservation: Reservation, actual: Spend) {
        reservation.settled = true;
        reservation
            .ledger
            .settle_amount(&reservation.amount, &actual);
    }

    fn settle_amount(&self, reserved: &Spend, actual: &Spend) {
        let mut l: Option<&Ledger> = Some(self);
        while let Some(ledger) = l {
            let mut g = ledger.state.lock().unwrap_or_else(|e| e.into_inner());
            sub(&mut g.committed, reserved);
            add(&mut g.committed, actual);
            add(&mut g.spent, actual);
            g.open = g.open.saturating_sub(1);
            drop(g);
            ledger.settled.notify_waiters();
            l = ledger.parent.as_deref();
        }
    }

    /// The first limit, on this ledger or one above it, that settled spend
    /// has gone past. Reservations can only be refused, so this happens only
    /// when a provider reports more than the reserved worst case.
    pub fn overrun(&self) -> Option<Exhausted> {
        self.chain().into_iter().find_map(|l| {
            let spent = l.state.lock().unwrap_or_else(|e| e.into_inner()).spent;
            l.over(&spent)
        })
    }

    fn over(&self, spent: &Spend) -> Option<Exhausted> {
        let over = |what: &'static str, limit: String, used: String, by: String| Exhausted {
            what,
            limit,
            used,
            wanted: "nothing more".into(),
            owner: self.owner.clone(),
            overrun: Some(Box::new(Overrun {
                by,
                call: String::new(),
            })),
        };
        let l = &self.limits;
        if let Some(max) = l.tokens.filter(|&m| spent.tokens > m) {
            return Some(over(
                "tokens",
                max.to_string(),
                spent.tokens.to_string(),
                (spent.tokens - max).to_string(),
            ));
        }
        if let Some(max) = l.cost.filter(|&m| spent.cost > m + 1e-12) {
            return Some(over(
                "cost",
                format!("${max:.4}"),
                format!("${:.4}", spent.cost),
                format!("${:.4}", spent.cost - max),
            ));
        }
        None
    }

    /// Counts spending from before this process (a resumed run): its
    /// settled spend and its active time.
    pub fn preload(&self, spent: Spend) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        add(&mut g.committed, &spent);
        add(&mut g.spent, &spent);
        *self.earlier.lock().unwrap_or_else(|e| e.into_inner()) =
            Duration::try_from_secs_f64(spent.wall).unwrap_or_default();
    }

    /// What was really spent so far, and the active time.
    pub fn spent(&self) -> Spend {
        Spend {
            wall: self.active().as_secs_f64(),
            ..self.state.lock().unwrap_or_else(|e| e.into_inner()).spent
        }
    }

    /// Settled spend plus outstanding reservations, and the active time:
    /// what a crash now could leave billed.
    pub fn committed(&self) -> Spend {
        Spend {
            wall: self.active().as_secs_f64(),
            ..self
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .committed
        }
    }

    /// Active time: this process's since the ledger was made, plus earlier
    /// processes'.
    pub fn active(&self) -> Duration {
        *self.earlier.lock().unwrap_or_else(|e| e.into_inner()) + self.started.elapsed()
    }

    pub fn limits(&self) -> &Budget {
        &self.limits
    }

    /// Time left on the wall clock, if the budget limits it.
    pub fn wall_left(&self) -> Option<Duration> {
        self.limits.wall.map(|w| w.saturating_sub(self.active()))
    }

    /// Reserves `amount` here and on every ledger above, or on none. The
    /// locks are taken in a fixed order, child to root, and each ledger is
    /// checked before any above it; all are held until every one has
    /// checked, so nothing changes unless everything fits. Recursive, not a
    /// list of guards: every tool call reserves, and the chain is as deep
    /// as the flows' calls.
    fn reserve_up(&self, amount: &Spend) -> Result<(), Exhausted> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.fits(&state.committed, amount)?;
        if let Some(parent) = &self.parent {
            parent.reserve_up(amount)?;
        }
        add(&mut state.committed, amount);
        state.open += 1;
        Ok(())
    }

    fn fits(&self, committed: &Spend, amount: &Spend) -> Result<(), Exhausted> {
        let over = |what: &'static str, limit: String, used: String, wanted: String| Exhausted {
            what,
            limit,
            used,
            wanted,
            owner: self.owner.clone(),
            overrun: None,
        };
        let l = &self.limits;
        if let Some(max) = l.tokens {
            if committed.tokens + amount.tokens > max {
                return Err(over(
                    "tokens",
                    max.to_string(),
                    committed.tokens.to_string(),
                    amount.tokens.to_string(),
                ));
            }
        }
        if let Some(max) = l.cost {
            if committed.cost + amount.cost > max + 1e-12 {
                return Err(over(
                    "cost",
                    crate::exec::dollars(max),
                    crate::exec::dollars(committed.cost),
                    crate::exec::dollars(amount.cost),
                ));
            }
        }
        if let Some(max) = l.steps {
            if committed.steps + amount.steps > max {
                return Err(over(
                    "steps",
                    max.to_string(),
                    committed.steps.to_string(),
                    amount.steps.to_string(),
                ));
            }
        }
        if let Some(max) = l.tool_calls {
            if committed.tool_calls + amount.tool_calls > max {
                return Err(over(
                    "tool_calls",
                    max.to_string(),
                    committed.tool_calls.to_string(),
                    amount.tool_calls.to_string(),
                ));
            }
        }
        if let Some(left) = self.wall_left() {
            if left.is_zero() {
                let wall = l.wall.map(|w| w.as_secs_f64()).unwrap_or_default();
                return Err(over(
                    "wall",
                    format!("{wall}s"),
                    format!("{:.1}s", self.active().as_secs_f64()),
                    "more time".into(),
                ));
            }
        }
        Ok(())
    }
}

fn add(a: &mut Spend, b: &Spend) {
    a.tokens += b.tokens;
    a.cost += b.cost;
    a.steps += b.steps;
    a.tool_calls += b.tool_calls;
}

fn sub(a: &mut Spend, b: &Spend) {
    a.tokens = a.tokens.saturating_sub(b.tokens);
    a.cost = (a.cost - b.cost).max(0.0);
    a.steps = a.steps.saturating_sub(b.steps);
    a.tool_calls = a.tool_calls.saturating_sub(b.tool_calls);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(tokens: u64) -> Budget {
        Budget {
            tokens: Some(tokens),
            ..Budget::default()
        }
    }

    #[test]
    fn reservations_never_exceed_the_limit() {
        let l = Ledger::new("flow", budget(100), None);
        let a = l.reserve(Spend::tokens(60, 0.0)).expect("fits");
        assert!(l.reserve(Spend::tokens(50, 0.0)).is_err(), "60 + 50 > 100");
        l.settle(a, Spend::tokens(20, 0.0));
        let b = l.reserve(Spend::tokens(50, 0.0)).expect("20 + 50 fits");
        l.settle(b, Spend::tokens(50, 0.0));
        assert_eq!(l.spent().tokens, 70);
    }

    #[test]
    fn a_child_reservation_must_fit_every_ledger_above() {
        let root = Ledger::new("flow", budget(100), None);
        let child = Ledger::new("agent", budget(1000), Some(root.clone()));
        assert!(child.reserve(Spend::tokens(150, 0.0)).is_err());
        let r = child.reserve(Spend::tokens(80, 0.0)).expect("fits both");
        child.settle(r, Spend::tokens(80, 0.0));
        assert_eq!(root.spent().tokens, 80);
        assert!(root.reserve(Spend::tokens(30, 0.0)).is_err());
    }

    #[test]
    fn a_waiting_reservation_gets_the_room_a_settled_one_frees() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let l = Ledger::new("flow", budget(100), None);
            let first = l.reserve(Spend::tokens(80, 0.0003)).expect("fits");
            let waiting = l.reserve_waiting(Spend::tokens(50, 0.0));
            let settle = async {
                tokio::task::yield_now().await;
                l.settle(first, Spend::tokens(30, 0.0001));
            };
            let (second, ()) = tokio::join!(waiting, settle);
            let second = second.expect("room was freed");
            l.settle(second, Spend::tokens(50, 0.0));
            // Nothing outstanding: a reservation that cannot fit fails at once,
            // float costs notwithstanding.
            assert!(l.reserve_waiting(Spend::tokens(30, 0.0)).await.is_err());
        });
    }
}
