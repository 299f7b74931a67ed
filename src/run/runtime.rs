//! What a run shares: the program, the world that answers calls, budgets,
//! the trace, the run store, the circuit breakers and per-model gates.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;

use super::breaker::{Admission, Breakers, Change, Dependency, Ticket};
use super::budget::{Exhausted, Ledger, Spend};
use super::error::FailureClass;
use super::error::{RunError, Stop};
use super::frame::{FlowCtx, GateDecision, PendingGate};
use super::plan::Plan;
use super::trace::Trace;
use super::validate::Validators;
use super::world::{Env, World};
use crate::exec::{CallTarget, FlowId, ModelId, Program};
use crate::fields;

/// Everything a run shares.
pub struct Runtime<'p> {
    pub program: &'p Program,
    pub world: RefCell<World>,
    pub gates: HashMap<String, GateDecision>,
    /// Who made the decisions in `gates` (recorded with each).
    pub decided_by: String,
    pub validators: Validators,
    pub trace: Arc<Trace>,
    pub http: super::http_client::HttpClients,
    /// MCP servers, started on first use and stopped when the run ends.
    pub mcp: crate::run::tools::McpServers,
    pub env: Env,
    pub permits: tokio::sync::Semaphore,
    /// The permits there are: fewer available means calls in flight.
    pub concurrency: usize,
    pub run_id: String,
    /// One circuit breaker per model and per tool.
    pub breakers: Breakers,
    pub completed: RefCell<super::completed::Completed>,
    pub waiting: RefCell<Vec<PendingGate>>,
    /// Calls made per tool, agent and flow (for tests' `expect … called`).
    pub calls: RefCell<HashMap<CallTarget, u64>>,
    pub stats: RefCell<Stats>,
    pub plans: RefCell<HashMap<FlowId, Rc<Plan>>>,
    /// Per model: its own concurrency limit and the earliest time its next
    /// call may start (`rpm`).
    pub model_gates: HashMap<ModelId, ModelGate>,
    /// The run store, for durable runs.
    pub durable: Option<Durable>,
    pub root_ledger: RefCell<Option<Arc<Ledger>>>,
    /// Spent by earlier processes of a resumed run.
    pub base_spend: Spend,
    /// The inbox's base URL, for the links gate notifications carry
    /// (`FLOWC_INBOX_URL`).
    pub inbox_url: String,
    /// Gate notifications in flight: the run waits for them before it
    /// ends, so none is cut off when the process exits.
    pub notices: RefCell<Vec<tokio::task::JoinHandle<()>>>,
}

/// A durable run's store and what it already holds.
pub struct Durable {
    pub store: super::lent_store::LentStore,
    /// The number of the last commit started (`LentStore::ended` says
    /// which have ended).
    pub started: Cell<u64>,
    pub run_id: String,
    /// This process's lease on the run: every write is fenced by it.
    pub lease: crate::store::Lease,
    /// Whether an earlier process drove this run, so the store may hold
    /// replies this process has not seen (a run this process started
    /// has none but its own, which it never asks for again).
    pub resumed: bool,
    /// Step instances completed by earlier processes of the run.
    pub done: RefCell<super::checkpoints::Checkpoints>,
    /// Results waiting for the next commit, from every region of the run.
    pub pending: RefCell<Vec<crate::store::StepRow>>,
    /// Model replies received since the last commit, each with the key of
    /// the step it belongs to. A reply whose step completes in that commit
    /// is not written (a resume never runs a completed step again, so never
    /// asks for its replies); the others go into it, and a step that fails
    /// or a run that stops keeps its replies in the run's last write. A
    /// reply lost to a crash before its step committed is asked for again:
    /// the spend written before its call counted it (`ceiling`).
    pub replies: RefCell<Vec<(String, crate::store::Reply)>>,
    /// The spend last written and the allowance for what comes ahead.
    pub ceiling: Cell<super::spend_ceiling::SpendCeiling>,
    /// When this process last wrote the run's row (which renews the
    /// lease): a commit writes it again once a third of the lease's
    /// lifetime has passed, so a run with no heartbeat keeps its lease.
    pub row_written: Cell<Option<Instant>>,
    /// The run's steps, tool calls and active time as the last commit
    /// recorded them on its step rows. A write of the run's row records
    /// these, never figures counted since: a step that started after the
    /// last commit runs again after a crash, and would count twice.
    pub counts: Cell<Spend>,
    /// Writes so far: commits (results pending now go into the next one)
    /// and writes of the spend alone before model calls.
    pub writes: Cell<super::store_writes::StoreWrites>,
    /// Why a write to the store failed; every later checkpoint fails with
    /// it, and the run ends with it.
    pub failed: RefCell<Option<crate::store::StoreError>>,
    /// Told when queued results wait for nobody (`Runtime::commit_soon`),
    /// for the committer.
    pub queued: tokio::sync::Notify,
}

impl Durable {
    /// Counts one more write to the store (`Report::store_writes`).
    pub fn count_write(&self, count: impl FnOnce(&mut super::store_writes::StoreWrites)) {
        let mut writes = self.writes.get();
        count(&mut writes);
        self.writes.set(writes);
    }

    /// Remembers a failed write (the run ends with it) and says what failed.
    pub fn store_failed(&self, e: crate::store::StoreError) -> String {
        let message = e.to_string();
        self.failed.borrow_mut().get_or_insert(e);
        message
    }
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub model_calls: u64,
    pub tool_calls_ok: u64,
    pub tool_calls_failed: u64,
    pub validation_rejections: u64,
    pub retries: u64,
}

/// How late (a fraction of the spacing) a call may start after its `rpm`
/// turn before the turn is given up for a new one.
const LATE_TURN: f64 = 0.02;

impl<'p> Runtime<'p> {
    pub fn plan(&self, id: FlowId) -> Rc<Plan> {
        self.plans
            .borrow_mut()
            .entry(id)
            .or_insert_with(|| Rc::new(Plan::new(&self.program.flows[id.index()])))
            .clone()
    }

    /// Queues completed steps' rows (the run's spend goes with them) for
    /// the next commit, and says which commit that is: a step that may
    /// depend on them waits for it (`committed`) before it starts. Nothing
    /// waits here: a loop's iteration whose last step is queued ends at
    /// once, and its loop goes on. Whoever queued rows and will not wait
    /// for them soon asks the run's committer for them (`commit_soon`).
    /// `0`: nothing to wait for (no store, no rows).
    pub fn queue(&self, rows: Vec<crate::store::StepRow>) -> u64 {
        let Some(d) = &self.durable else {
            return 0;
        };
        if rows.is_empty() {
            return 0;
        }
        d.pending.borrow_mut().extend(rows);
        // Commits take every result pending when they start, and end in the
        // order they start: once the next to start has ended, so have these.
        d.started.get() + 1
    }

    /// Waits until commit `number` (from `queue`) has ended; fails with the
    /// store's failure if a commit failed. Group commit across the whole
    /// run: while calls are in flight, the first wait yields one turn of the
    /// event loop, so that every step of any region completing in that turn
    /// joins the commit; then the commit starts if nobody started it yet
    /// (here or `commit_queued`).
    ///
    /// Pipelined: while calls are in flight elsewhere in the run, the commit
    /// syncs on a blocking thread (`LentStore`), and this thread goes on
    /// finishing steps; those queue for the next commit, which starts when
    /// this one ends. With nothing else in flight, a thread would only add
    /// its hand-over to the step's latency, so the commit runs here.
    pub async fn committed(&self, number: u64) -> Result<(), crate::store::StoreError> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        // With no call in flight, little else could complete in that turn
        // (a timer's end, at most, which would only take a commit of its
        // own): a chain's step commits at once.
        if d.store.ended() < number && self.calls_in_flight() {
            tokio::task::yield_now().await;
        }
        while d.store.ended() < number {
            // Once the store is home every commit started has ended: if
            // ours has not, it has not started, and this call starts it.
            d.store.returned().await;
            if d.store.ended() < number {
                self.start_commit(d);
            }
        }
        if let Some(e) = d.store.failure() {
            d.failed.borrow_mut().get_or_insert(e);
        }
        match &*d.failed.borrow() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Whether some call holds one of the run's concurrency permits.
    fn calls_in_flight(&self) -> bool {
        self.permits.available_permits() < self.concurrency
    }

    /// The number of the last commit that ended (every commit, without a
    /// store).
    pub fn commits_ended(&self) -> u64 {
        self.durable.as_ref().map_or(u64::MAX, |d| d.store.ended())
    }

    /// Asks the run's committer to commit what is queued (`commit_queued`):
    /// a region that goes to wait for its calls, or ends, with rows that
    /// nothing has waited for. (A region about to wait for its rows itself
    /// does not ask: a chain's steps never wake the committer.)
    pub fn commit_soon(&self, number: u64) {
        if let Some(d) = &self.durable {
            // Not when a commit that took the rows has started already.
            if d.started.get() < number {
                d.queued.notify_one();
            }
        }
    }

    /// The run's committer, beside its flow: commits what is queued when
    /// no step waits for it (a fan-out's iterations, the steps a region
    /// ends with), one turn after it was queued and once the store is home,
    /// so a crash loses no more than the results of the last commit's
    /// sync. Ends only when a commit failed (the run ends with that).
    pub async fn commit_queued(&self) {
        let Some(d) = &self.durable else {
            return std::future::pending().await;
        };
        loop {
            d.queued.notified().await;
            tokio::task::yield_now().await;
            d.store.returned().await;
            if d.store.failure().is_some() || d.failed.borrow().is_some() {
                return;
            }
            if !d.pending.borrow().is_empty() {
                self.start_commit(d);
            }
        }
    }

    /// Starts the next commit with every result pending (the store is home).
    fn start_commit(&self, d: &Durable) {
        let number = d.started.get() + 1;
        d.started.set(number);
        let commit = self.next_commit(d);
        if self.calls_in_flight() {
            d.store.commit_away(number, commit);
        } else {
            d.store.commit_here(number, commit);
        }
    }

    /// The commit of every result pending and the replies kept, with the
    /// run's counts and, when due, its spend (counted as a write now).
    fn next_commit(&self, d: &Durable) -> super::lent_store::Commit {
        let (batch, replies, counted) = self.uncommitted(d);
        let spend = self.spend_due(d);
        d.count_write(|w| w.rows += u64::from(spend.is_some()));
        let lease = d.lease.clone();
        Box::new(move |store| store.commit_steps(&lease, &batch, &replies, counted, spend))
    }

    /// What the next commit takes: every result pending, the replies of
    /// steps not among them, and the run's counts (counted as a commit when
    /// there is anything to write).
    pub fn uncommitted(
        &self,
        d: &Durable,
    ) -> (Vec<crate::store::StepRow>, Vec<crate::store::Reply>, Spend) {
        let batch = std::mem::take(&mut *d.pending.borrow_mut());
        let replies = unfinished_replies(&batch, &mut d.replies.borrow_mut());
        let counted = self.committed_spend();
        d.counts.set(counted);
        if !batch.is_empty() || !replies.is_empty() {
            d.count_write(|w| w.commits += 1);
        }
        (batch, replies, counted)
    }

    /// Makes sure the run store's spend counts a model call about to start,
    /// whose worst case `worst` has just been reserved (durable runs), so a
    /// resume after a crash counts the call as spent. Usually the spend last
    /// written already does: each write adds an allowance for the calls
    /// ahead (`SpendCeiling`), and the call goes out without a write. When
    /// it does not, the spend is written (without waiting for the disk: a
    /// killed process cannot undo the write, and the next commit flushes
    /// it). Calls reserving in the same turn of the event loop share that
    /// write: each waits one turn, the first to resume writes (its figure
    /// holds every reservation made before it), and the rest find
    /// themselves covered. A failed write is remembered (the run ends with
    /// it).
    pub async fn record_reservation(&self, worst: Spend) -> Result<(), crate::store::StoreError> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let mut ceiling = d.ceiling.get();
        ceiling.widen(worst);
        d.ceiling.set(ceiling);
        if !d.ceiling.get().covers_calls(&self.committed_spend()) {
            tokio::task::yield_now().await;
            if !d.ceiling.get().covers_calls(&self.committed_spend()) && d.failed.borrow().is_none()
            {
                // After any commit away has ended: its spend was figured
                // before this one, and must not be written after it.
                d.store.returned().await;
                let spend = self.spend_to_write(d);
                let written = d.store.with(|store| store.record_spend(&d.lease, spend));
                d.count_write(|w| w.reservations += 1);
                if let Err(e) = written {
                    d.failed.borrow_mut().get_or_insert(e);
                }
            }
        }
        match &*d.failed.borrow() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// What the whole run has spent, earlier processes included.
    pub fn total_spend(&self) -> Spend {
        self.root_ledger
            .borrow()
            .as_ref()
            .map_or(self.base_spend, |l| l.spent())
    }

    /// Settled spend plus the reservations of calls in flight: what a
    /// crash now could leave billed.
    fn committed_spend(&self) -> Spend {
        self.root_ledger
            .borrow()
            .as_ref()
            .map_or(self.base_spend, |l| l.committed())
    }

    /// The spend a commit writes to the run's row, if the row needs
    /// writing: the figure last written would not hold one more model call
    /// (`SpendCeiling`), or the lease was last renewed by this process a
    /// third of its lifetime ago. `None`: the commit only checks the lease's epoch, and
    /// dirties no page but its steps'.
    pub fn spend_due(&self, d: &Durable) -> Option<Spend> {
        let renew = d
            .row_written
            .get()
            .is_none_or(|at| at.elapsed() >= d.lease.ttl / 3);
        if !renew && d.ceiling.get().covers(&self.committed_spend()) {
            return None;
        }
        Some(self.spend_to_write(d))
    }

    /// What the run store records as the run's spend while it runs: what a
    /// crash now could leave billed, its tokens and cost plus the allowance
    /// for the model calls that may start before the next write
    /// (`SpendCeiling`); its steps, tool calls and active time as the last
    /// commit recorded them (`Durable::counts`).
    pub fn spend_to_write(&self, d: &Durable) -> Spend {
        let counts = d.counts.get();
        let committed = Spend {
            steps: counts.steps,
            tool_calls: counts.tool_calls,
            wall: counts.wall,
            ..self.committed_spend()
        };
        let mut ceiling = d.ceiling.get();
        let written = match self.root_ledger.borrow().as_ref() {
            Some(l) => ceiling.raise(committed, l.limits()),
            None => ceiling.raise(committed, &crate::exec::Budget::default()),
        };
        d.ceiling.set(ceiling);
        d.row_written.set(Some(Instant::now()));
        written
    }

    pub(crate) fn count_call(&self, target: CallTarget) {
        *self.calls.borrow_mut().entry(target).or_insert(0) += 1;
    }

    /// Calls per callee name, for the report.
    pub fn calls_by_name(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for (target, n) in self.calls.borrow().iter() {
            *out.entry(target.name_in(self.program).to_string())
                .or_insert(0) += n;
        }
        out
    }

    /// Waits for a dependency's breaker to let a call through; `None` when
    /// it is open (the caller goes to its fallback), with a `breaker` trace
    /// event saying so.
    pub(crate) async fn admit(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        dependency: Dependency,
    ) -> Result<Ticket<'_>, u32> {
        match self.breakers.admit(dependency).await {
            Admission::Go(ticket) => Ok(ticket),
            Admission::Open { failures } => {
                self.trace.event(
                    Some(cx.span),
                    "breaker",
                    &cx.flow.graph[n].name,
                    fields! {"status": "skipped", "dependency": self.dependency_name(dependency), "failures": failures},
                );
                Err(failures)
            }
        }
    }

    /// Ends a call the breaker let through; traces the breaker opening or
    /// closing.
    pub(crate) fn resolve(&self, cx: &FlowCtx<'_>, n: NodeIndex, ticket: Ticket<'_>, ok: bool) {
        let dependency = ticket.dependency();
        let (status, failures) = match ticket.resolve(ok) {
            Change::None => return,
            Change::Opened(f) => ("open", f),
            Change::Closed => ("closed", 0),
        };
        self.trace.event(
            Some(cx.span),
            "breaker",
            &cx.flow.graph[n].name,
            fields! {"status": status, "dependency": self.dependency_name(dependency), "failures": failures, "cooldown_ms": self.breakers.cooldown().as_millis() as u64},
        );
    }

    /// A dependency as messages and traces name it: `model fast`, `tool lookup`.
    pub fn dependency_name(&self, dependency: Dependency) -> String {
        match dependency {
            Dependency::Model(m) => format!("model `{}`", self.program.models[m.index()].name),
            Dependency::Tool(t) => format!("tool `{}`", self.program.tools[t.index()].name),
        }
    }

    /// The error of a call that found its dependency's breaker open and had
    /// no fallback left.
    pub(crate) fn breaker_open(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        dependency: Dependency,
        failures: u32,
    ) -> Stop {
        self.fail(
            cx,
            n,
            0,
            FailureClass::CircuitBreaker,
            format!(
                "the circuit breaker of {} is open after {failures} consecutive failed calls, and the call has no fallback left",
                self.dependency_name(dependency)
            ),
        )
    }

    pub(crate) fn spend_step(&self, cx: &FlowCtx<'_>, n: NodeIndex) -> Result<(), Stop> {
        let r = cx
            .ledger
            .reserve(Spend::step())
            .map_err(|e| self.exhausted(cx, n, e))?;
        cx.ledger.settle(r, Spend::step());
        Ok(())
    }

    pub fn exhausted(&self, cx: &FlowCtx<'_>, n: NodeIndex, e: Exhausted) -> Stop {
        self.trace.event(
            Some(cx.span),
            "budget",
            &cx.flow.graph[n].name,
            match &e.overrun {
                None => fields! {"status": "exhausted", "budget": e.what, "limit": e.limit, "used": e.used, "wanted": e.wanted, "owner": e.owner},
                Some(o) => fields! {"status": "overrun", "budget": e.what, "limit": e.limit, "used": e.used, "overshoot": o.by, "call": o.call, "owner": e.owner},
            },
        );
        Stop::Exhausted(e)
    }

    pub fn fail(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        attempts: u32,
        class: FailureClass,
        message: String,
    ) -> Stop {
        Stop::Failed(RunError {
            flow: cx.flow.name.clone(),
            step: cx.flow.graph[n].shown(),
            attempts,
            class,
            message,
        })
    }
}

/// A model's own limits: calls in flight and calls started per minute.
pub struct ModelGate {
    pub permits: Option<tokio::sync::Semaphore>,
    /// Minimum time between two call starts, and when the next may start.
    pub spacing: Option<Duration>,
    pub next: Cell<Option<Instant>>,
}

/// One of a model's `concurrency` slots shared through the run store, given
/// back when dropped (the call ended, or was cancelled).
pub struct SharedSlot<'a> {
    store: &'a super::lent_store::LentStore,
    key: String,
    slot: String,
}

impl Drop for SharedSlot<'_> {
    fn drop(&mut self) {
        // A slot that cannot be given back frees itself at its expiry.
        self.store.free_slot(&self.key, &self.slot);
    }
}

impl Runtime<'_> {
    /// What a model's shared limits are kept under: its provider and the
    /// provider's name for it (what the provider's own limits apply to), so
    /// every program declaring that model shares them.
    fn limit_key(&self, model: ModelId) -> String {
        let m = &self.program.models[model.index()];
        format!(
            "{}/{}",
            self.program.providers[m.provider.index()].name,
            m.model_id
        )
    }

    /// Waits until this model may start another call under its `rpm`: for a
    /// durable run, counting every process on the run store (one store
    /// round trip per call); otherwise across this run.
    pub(crate) async fn wait_turn(&self, model: ModelId) -> Result<(), crate::store::StoreError> {
        let Some(gate) = self.model_gates.get(&model) else {
            return Ok(());
        };
        let (Some(d), Some(spacing)) = (&self.durable, gate.spacing) else {
            gate.wait_turn().await;
            return Ok(());
        };
        let spacing = spacing.as_secs_f64();
        loop {
            d.store.returned().await;
            let start = d
                .store
                .with(|store| store.rate_turn(&self.limit_key(model), spacing))?;
            let wait = start - crate::store::now();
            if wait > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            }
            // A turn this process woke up late for (a blocking store call
            // of another step held the thread, the machine was busy) is
            // given up, unused, and a new one taken: starting late would
            // crowd the next turn, which another process may take on time.
            if crate::store::now() - start <= spacing * LATE_TURN {
                return Ok(());
            }
        }
    }

    /// For a durable run, one of the model's `concurrency` slots across
    /// every process on the run store, waited for (looking every 20 ms);
    /// held until dropped, or until `hold` passes if this process dies.
    pub(crate) async fn shared_slot(
        &self,
        model: ModelId,
        hold: Duration,
    ) -> Result<Option<SharedSlot<'_>>, crate::store::StoreError> {
        let (Some(d), Some(limit)) = (
            &self.durable,
            self.program.models[model.index()].concurrency,
        ) else {
            return Ok(None);
        };
        let key = self.limit_key(model);
        loop {
            let until = crate::store::now() + hold.as_secs_f64();
            d.store.returned().await;
            let taken = d
                .store
                .with(|store| store.take_slot(&key, limit.max(1), until))?;
            if let Some(slot) = taken {
                return Ok(Some(SharedSlot {
                    store: &d.store,
                    key,
                    slot,
                }));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl ModelGate {
    pub fn new(model: &crate::exec::Model) -> ModelGate {
        ModelGate {
            permits: model
                .concurrency
                .map(|n| tokio::sync::Semaphore::new(n.max(1) as usize)),
            spacing: model
                .rpm
                .map(|r| Duration::from_secs_f64(60.0 / r.max(1) as f64)),
            next: Cell::new(None),
        }
    }

    /// Waits until this model may start another call under its `rpm`.
    pub(crate) async fn wait_turn(&self) {
        let Some(spacing) = self.spacing else { return };
        let now = Instant::now();
        let start = match self.next.get() {
            Some(t) if t > now => t,
            _ => now,
        };
        self.next.set(Some(start + spacing));
        if start > now {
            tokio::time::sleep_until(start.into()).await;
        }
    }
}

/// The replies to write with `batch`: those whose step is not in it. A
/// completed step is never run again, so its replies are never asked for.
fn unfinished_replies(
    batch: &[crate::store::StepRow],
    pending: &mut Vec<(String, crate::store::Reply)>,
) -> Vec<crate::store::Reply> {
    if pending.is_empty() {
        return Vec::new();
    }
    let done: std::collections::HashSet<&str> = batch.iter().map(|s| s.key.as_str()).collect();
    pending
        .drain(..)
        .filter(|(step, _)| !done.contains(step.as_str()))
        .map(|(_, reply)| reply)
        .collect()
}
