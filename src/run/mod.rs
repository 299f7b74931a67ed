//! `flowc run`: executes a checked program. Only a [`CheckedProgram`] can be
//! run: the scheduler relies on what the checker proved (acyclic graphs,
//! resolved names, bounded loops).
//!
//! - `eval`: expressions and templates over JSON values.
//! - `model`: model providers over HTTP (one attempt per call).
//! - `tool`: http, exec and builtin tools (one attempt per call).
//! - `validate`: JSON Schema validation of arguments, results and outputs.
//! - `error`: failure classes that retry policies name.
//!
//! [`CheckedProgram`]: crate::CheckedProgram

pub mod adjacency;
mod body_framing;
pub mod breaker;
pub mod budget;
mod call;
mod checkpoints;
mod chunked_body;
mod completed;
mod connections;
pub mod error;
pub mod eval;
pub mod fingerprint;
mod frame;
mod gate;
pub mod http;
mod http1_connection;
mod http1_error;
mod http1_stream;
pub mod http_client;
mod http_reply;
mod in_flight;
mod lent_store;
pub mod notify;
mod origin;
pub mod otel;
pub mod plan;
mod policy;
pub mod preflight;
pub mod providers;
mod region;
mod reply_head;
mod runtime;
mod secrets;
mod send_error;
mod spend_ceiling;
pub mod status;
mod step_path;
pub mod store_writes;
pub mod tools;
pub mod trace;
pub mod validate;
pub mod world;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::exec::{self, ExprKind, TemplatePart, ToolKind};
use crate::CheckedProgram;
use budget::{Exhausted, Spend};
pub use completed::Completed;
use error::Stop;
pub use error::{FailureClass, RecordingError, RunError, SetupError};
pub use frame::{GateDecision, PendingGate};
pub use runtime::Stats;
use status::RunStatus;
use step_path::FramePath;
pub use world::{Env, Script, Scripted, World};

/// How a run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Completed(Value),
    Failed(RunError),
    /// A budget ran out; the run stopped before the call that would overrun it.
    Exhausted(Exhausted),
    /// Gates wait for decisions and nothing else can proceed.
    Waiting(Vec<PendingGate>),
    /// A gate was rejected and the flow's result depended on it.
    Rejected,
    /// SIGINT or SIGTERM: in-flight calls were cancelled (their intents stay
    /// recorded); a durable run can be resumed.
    Interrupted,
    /// The run store failed, or another process took the run over.
    Store(crate::store::StoreError),
    /// The trace file could not be written: the run stopped (or, if the
    /// failure came at the last write, finished unaudited) and is not
    /// reported as anything else. A durable run can be resumed.
    TraceFailed {
        error: String,
        /// How the run stood when the trace failed (its status name).
        stood: RunStatus,
    },
}

impl Outcome {
    /// The status the run store and the trace record.
    pub fn status(&self) -> RunStatus {
        match self {
            Outcome::Completed(_) => RunStatus::Completed,
            Outcome::Failed(_) => RunStatus::Failed,
            Outcome::Exhausted(_) => RunStatus::BudgetExhausted,
            Outcome::Waiting(_) => RunStatus::Waiting,
            Outcome::Rejected => RunStatus::Rejected,
            Outcome::Interrupted => RunStatus::Interrupted,
            // The run is not over: whoever holds it (or the next resume) continues it.
            Outcome::Store(_) => RunStatus::Running,
            Outcome::TraceFailed { .. } => RunStatus::TraceFailed,
        }
    }

    /// The process exit status: 0 success, 1 failed or rejected, 3 a budget
    /// ran out, 4 waiting for approval, 5 another process holds the run, 6
    /// the run store failed, 7 the trace could not be written, 130
    /// interrupted.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Completed(_) => 0,
            Outcome::Failed(_) | Outcome::Rejected => 1,
            Outcome::Exhausted(_) => 3,
            Outcome::Waiting(_) => 4,
            Outcome::Store(crate::store::StoreError::LeaseLost(_)) => EXIT_LEASED,
            Outcome::Store(_) => EXIT_STORE,
            Outcome::Interrupted => EXIT_INTERRUPTED,
            Outcome::TraceFailed { .. } => EXIT_TRACE,
        }
    }
}

/// Exit status when another live process holds the run's lease.
pub const EXIT_LEASED: i32 = 5;
/// Exit status when the run store cannot be read or written.
pub const EXIT_STORE: i32 = 6;
/// Exit status when the trace could not be written.
pub const EXIT_TRACE: i32 = 7;
/// Exit status of a run stopped by SIGINT or SIGTERM (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

pub struct RunOptions {
    /// Steps in flight at once across the run.
    pub concurrency: usize,
    /// Keep every trace event in memory for `Report.events` (evals and
    /// tests read them); `flowc run`, `resume` and workers turn it off, as
    /// their trace goes to a file.
    pub keep_events: bool,
    /// Consecutive failed calls to one model or tool that open its circuit
    /// breaker (0: never).
    pub breaker: u32,
    /// How long an open breaker sends calls to their fallbacks before it
    /// lets one probe through.
    pub breaker_cooldown: std::time::Duration,
    /// Where to write the trace (JSON lines); `None` keeps it in memory.
    pub trace_path: Option<PathBuf>,
    pub gates: HashMap<String, GateDecision>,
    /// Who made the decisions in `gates` (`--by`; by default the OS user).
    pub decided_by: String,
    pub world: World,
    pub env: Env,
    pub run_id: Option<String>,
    /// Sees every trace event as it is written (the CLI's progress display).
    pub observer: Option<trace::Observer>,
    /// Record the run in a store (and resume it from there).
    pub durable: Option<DurableRun>,
    /// Stop gracefully on SIGINT and SIGTERM (the CLI's runs): the run ends
    /// `interrupted` instead of the process dying mid-step.
    pub interruptible: bool,
    /// Stop gracefully, as at a signal, once this turns `true` (`flowc
    /// worker`: one signal stops every run in flight, including one that
    /// started after the signal came).
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// After a store failure, keep the lease until it expires instead of
    /// releasing it (`flowc worker`): the run is tried again a lease's
    /// lifetime later, not claimed again at once in a loop while the store
    /// keeps failing.
    pub hold_lease_on_store_failure: bool,
    /// Export the trace over OTLP too (see [`otel`]).
    pub otlp: Option<otel::OtlpSettings>,
}

/// A run recorded in the run store.
pub struct DurableRun {
    pub store: crate::store::Store,
    /// The run's record; its id is the run id.
    pub record: crate::store::RunRecord,
    /// Continue a run the store already has, instead of starting it.
    pub resume: bool,
    /// This process's lease on the run (taken by `Store::acquire` for a
    /// resume; `Lease::new_run` for a new run).
    pub lease: crate::store::Lease,
    /// The run's completed steps, being read for a resume on another
    /// connection while the program was decoded and the run is set up
    /// (`store::Prefetch`), or `None` to read them from `store`.
    pub texts: Option<crate::store::PendingTexts>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            concurrency: 32,
            keep_events: true,
            breaker: 10,
            breaker_cooldown: std::time::Duration::from_secs(30),
            trace_path: None,
            gates: HashMap::new(),
            decided_by: os_user(),
            world: World::Live,
            env: Arc::new(|name: &str| std::env::var(name).ok()),
            run_id: None,
            observer: None,
            durable: None,
            interruptible: false,
            stop: None,
            hold_lease_on_store_failure: false,
            otlp: None,
        }
    }
}

/// What a run did.
pub struct Report {
    pub run_id: String,
    pub outcome: Outcome,
    pub spent: Spend,
    pub stats: Stats,
    /// Steps that finished, as `flow.step`.
    pub completed: Completed,
    /// Calls per tool, agent and flow name (declarations that share a name
    /// add up).
    pub calls: HashMap<String, u64>,
    pub events: Vec<Value>,
    /// What OTLP export sent and dropped, when it was on.
    pub export: Option<otel::ExportSummary>,
    /// The writes a durable run made to its run store.
    pub store_writes: Option<store_writes::StoreWrites>,
}

/// A new run id: a UUIDv7 (48 bits of milliseconds, then 74 random bits),
/// so ids sort by start time and two runs started in the same millisecond,
/// on one machine or many, collide with negligible probability.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Runs flow `flow` of a checked program with `input` (an object of
/// parameter values). Only a checked program can be run. The run takes the
/// input: its values become the parameters as they are, not copies (a
/// fan-out over a long list would otherwise hold it twice).
pub fn run(
    checked: &CheckedProgram,
    flow: &str,
    input: Value,
    options: RunOptions,
) -> Result<Report, SetupError> {
    run_sealed(checked.sealed(), flow, input, options)
}

/// [`run`] of the sealed program alone: what `check` sealed, or the copy
/// of it the run store kept (`program_cache`, used only when every file it
/// was compiled from is unchanged and the same flowc compiled it).
pub fn run_sealed(
    program: &exec::Program,
    flow: &str,
    input: Value,
    options: RunOptions,
) -> Result<Report, SetupError> {
    let (f, values) = arguments(program, flow, input)?;
    let id = f.id;
    // Before anything is recorded or called: a run that cannot reach what
    // it needs says so now, listing everything, rather than after paid calls.
    if matches!(options.world, World::Live) {
        let missing = preflight::check(program, id, &*options.env);
        if !missing.is_empty() {
            return Err(SetupError::Preflight(missing));
        }
    }
    // Also before anything is recorded: a malformed `FLOWC_H2C` is a
    // configuration mistake, not a failed run.
    let http = http_client::HttpClients::new((options.env)(http_client::H2C_ENV).as_deref())
        .map_err(|e| SetupError::Start(e.to_string()))?;
    let mut options = options;
    let mut durable = options.durable.take();
    let run_id = match &durable {
        Some(d) => d.record.id.clone(),
        None => options.run_id.clone().unwrap_or_else(new_run_id),
    };
    // Started before the run is recorded: a collector URL that cannot be
    // used is a mistake to report before anything runs.
    let export = match &options.otlp {
        Some(settings) => Some(otel::Export::start(settings, otel::trace_id(&run_id))?),
        None => None,
    };
    let secrets = secret_values(program, &*options.env);
    let mut trace = trace::Trace::new(
        &run_id,
        options.trace_path.as_deref(),
        secrets,
        options.observer.take(),
        export,
    )
    .map_err(SetupError::Trace)?;
    if !options.keep_events {
        trace.discard_events();
    }
    // A resumed run's processes append to one trace file, and it stays one
    // tree: the root `run` span's id is chosen when the run starts and kept
    // with the run in the store, so a resume never reads the trace. Each
    // later process's `run` span hangs under the root, or is the root when
    // the process that should have written it was killed first.
    let span = match durable.as_mut() {
        None => trace.begin(None, "run", flow),
        Some(d) if !d.resume => {
            let span = trace.begin(None, "run", flow);
            d.record.root_span = Some(span.id);
            d.record.root_written = false;
            span
        }
        Some(d) => match (d.record.root_span, d.record.root_written) {
            (Some(root), true) => trace.begin(Some(root), "run", flow),
            (Some(root), false) => trace.begin_as(root, "run", flow),
            // Started by a flowc that did not record its root: only the
            // trace knows it.
            (None, _) => trace.begin(
                options.trace_path.as_deref().and_then(trace::root_span),
                "run",
                flow,
            ),
        },
    };
    // What `finish_run` records: this process wrote the root span (when the
    // trace file took it).
    let writes_root = span.parent.is_none() && options.trace_path.is_some();
    // Made before a resume waits for its completed steps, which another
    // thread reads meanwhile (`store::Prefetch`): neither needs them, and
    // a long flow's plan was a sixth of a 10,000-step resume's work after
    // that wait.
    let plan = std::rc::Rc::new(plan::Plan::new(&program.flows[id.index()]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SetupError::Start(format!("cannot start the runtime: {e}")))?;
    let (durable, base_spend) = match durable {
        Some(mut d) => {
            if !d.resume {
                d.store
                    .create_run(&d.record, &d.lease)
                    .map_err(|e| SetupError::Store(e.to_string()))?;
            }
            let texts = match d.texts.take() {
                Some(texts) => texts.wait(&d.store, &run_id),
                // Just created: nothing to read.
                None if !d.resume => Ok(crate::store::StepTexts::default()),
                None => d.store.step_texts(&run_id),
            }
            .map_err(|e| SetupError::Store(e.to_string()))?;
            let base = if d.resume {
                spend_ceiling::resumed_spend(d.record.spend, texts.counted())
            } else {
                Spend::default()
            };
            let done = checkpoints::Checkpoints::load(texts);
            (
                Some(runtime::Durable {
                    store: lent_store::LentStore::new(d.store),
                    started: Default::default(),
                    run_id: run_id.clone(),
                    lease: d.lease,
                    resumed: d.resume,
                    done: std::cell::RefCell::new(done),
                    pending: Default::default(),
                    replies: Default::default(),
                    ceiling: Default::default(),
                    row_written: Default::default(),
                    counts: std::cell::Cell::new(base),
                    writes: Default::default(),
                    failed: Default::default(),
                    queued: Default::default(),
                }),
                base,
            )
        }
        None => (None, Spend::default()),
    };
    let trace = Arc::new(trace);
    let validators = validate::Validators::default();
    let inbox_url = (options.env)("FLOWC_INBOX_URL")
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| notify::DEFAULT_INBOX_URL.to_string());
    let runtime = runtime::Runtime {
        program,
        world: std::cell::RefCell::new(options.world),
        gates: options.gates,
        decided_by: options.decided_by,
        validators,
        trace: trace.clone(),
        http,
        mcp: tools::McpServers::new(program),
        env: options.env,
        permits: tokio::sync::Semaphore::new(options.concurrency.max(1)),
        concurrency: options.concurrency.max(1),
        run_id: run_id.clone(),
        breakers: breaker::Breakers::new(options.breaker, options.breaker_cooldown),
        completed: Default::default(),
        waiting: Default::default(),
        calls: Default::default(),
        stats: Default::default(),
        plans: Default::default(),
        model_gates: program
            .models
            .iter()
            .filter(|m| m.concurrency.is_some() || m.rpm.is_some())
            .map(|m| (m.id, runtime::ModelGate::new(m)))
            .collect(),
        durable,
        root_ledger: Default::default(),
        base_spend,
        inbox_url,
        notices: Default::default(),
    };
    runtime.plans.borrow_mut().insert(id, plan);
    let interruptible = options.interruptible;
    let hold_lease = options.hold_lease_on_store_failure;
    let stop = options.stop.take();
    let result = rt.block_on(async {
        // Outside tokio's budget of 128 operations per poll of a task,
        // which is made for a task that is one line of work. This task is
        // every step of the run, scheduled by `InFlight`: a 1,000-wide
        // fan-out spent the budget eight times over in one pass, and each
        // call past it waited for a later turn of the event loop, the whole
        // fan-out polled again at every turn. The first 20 requests of an
        // HTTP/2 fan-out went out ~0.5 ms apart, each waiting its turn for
        // the connection's lock. What the budget guards against, a task
        // that never returns to the event loop, `InFlight` does too: the
        // run returns whenever none of its steps can go on, and when its
        // steps yield.
        let flow = tokio::task::unconstrained(runtime.run_flow(
            id,
            values,
            None,
            Some(span.id),
            FramePath::root(),
        ));
        let signal = async {
            if interruptible {
                stop_signal().await
            } else {
                std::future::pending().await
            }
        };
        let requested = async {
            let asked = match stop {
                Some(mut stop) => stop.wait_for(|s| *s).await.is_ok(),
                None => false,
            };
            // A sender gone without asking never asks.
            if !asked {
                std::future::pending::<()>().await;
            }
        };
        // Dropping the flow's future cancels every call in flight: at a
        // signal, and at a failed trace write (what runs after it could not
        // be audited).
        tokio::select! {
            r = flow => Some(r),
            // A failed commit that no step waited for: the run ends with it.
            () = runtime.commit_queued() => None,
            () = signal => None,
            () = requested => None,
            () = trace.failure() => None,
        }
    });
    // Notifications sent while the run went on are delivered (or given up
    // after their retries) before it ends.
    let notices = std::mem::take(&mut *runtime.notices.borrow_mut());
    rt.block_on(async {
        for notice in notices {
            let _ = notice.await;
        }
    });
    // Servers stop with the run; what they wrote to stderr goes in the trace.
    for server in rt.block_on(runtime.mcp.stop_all()) {
        trace.event(
            Some(span.id),
            "mcp_server",
            &server.name,
            crate::fields! {"starts": server.starts, "stderr": server.stderr},
        );
    }
    let mut waiting = runtime.waiting.borrow().clone();
    let store_failed = runtime.durable.as_ref().and_then(|d| {
        // A commit still away ends first: a failure of it that no step
        // waited for (they were cancelled) is the run's too.
        drop(d.store.get());
        d.failed.borrow_mut().take().or_else(|| d.store.failure())
    });
    // Nothing runs on the runtime any more, and no commit is away: its
    // idle blocking threads (the commits') exit on their own. Waiting for
    // them was 1.4 ms of every durable fan-out's end on this machine.
    rt.shutdown_background();
    let outcome = match (result, store_failed) {
        (_, Some(e)) => Outcome::Store(e),
        (None, None) => Outcome::Interrupted,
        (Some(result), None) => match result {
            Ok((Some(v), end)) if end.waiting.is_empty() && waiting.is_empty() => {
                Outcome::Completed(v)
            }
            Ok((_, end)) if !end.waiting.is_empty() || !waiting.is_empty() => {
                waiting.extend(end.waiting);
                Outcome::Waiting(waiting)
            }
            Ok((_, _)) => Outcome::Rejected,
            Err(Stop::Failed(e)) => Outcome::Failed(e),
            Err(Stop::Exhausted(e)) => Outcome::Exhausted(e),
        },
    };
    // A run whose settled spend is past a limit never ends `completed`,
    // whichever way it got there (every call settles and checks, and this
    // holds the line for spend an earlier process recorded too).
    let overrun = runtime
        .root_ledger
        .borrow()
        .as_ref()
        .and_then(|l| l.overrun());
    let outcome = match (outcome, overrun) {
        (Outcome::Completed(_), Some(mut e)) => {
            if let Some(o) = &mut e.overrun {
                o.call = "the spend this run recorded (an earlier process's calls included)".into();
            }
            trace.event(
                Some(span.id),
                "budget",
                flow,
                crate::fields! {"status": "overrun", "budget": e.what, "limit": e.limit, "used": e.used, "overshoot": e.overrun.as_ref().map(|o| o.by.clone()), "owner": e.owner},
            );
            Outcome::Exhausted(e)
        }
        (outcome, _) => outcome,
    };
    // Everything the run spent, earlier processes of a resumed run included.
    let spent = runtime.total_spend();
    let status = outcome.status();
    let stats = *runtime.stats.borrow();
    let mut data = crate::fields! {"tokens": spent.tokens, "cost": spent.cost, "steps": spent.steps, "tool_calls": spent.tool_calls, "stats": stats};
    // The flow's limits, so `flowc stats` can say how far under them a run stayed.
    let b = &f.budget;
    data.insert(
        "budget".into(),
        serde_json::json!({"tokens": b.tokens, "cost": b.cost, "steps": b.steps, "tool_calls": b.tool_calls, "wall_seconds": b.wall.map(|w| w.as_secs_f64())}),
    );
    trace.end(span, status.as_str(), data);
    trace.flush();
    let mut outcome = match (outcome, trace.failed()) {
        (outcome @ Outcome::Store(_), _) | (outcome, None) => outcome,
        (outcome, Some(error)) => Outcome::TraceFailed {
            error,
            // Stopped for the trace itself: still running as far as its
            // steps go.
            stood: match outcome {
                Outcome::Interrupted => RunStatus::Running,
                other => other.status(),
            },
        },
    };
    let status = outcome.status();
    let export = trace.finish_export();
    if let Some(d) = &runtime.durable {
        let (output, error) = match &outcome {
            Outcome::Completed(v) => (Some(v), None),
            Outcome::Failed(e) => (None, Some(e.to_string())),
            Outcome::Exhausted(e) => (None, Some(e.to_string())),
            Outcome::TraceFailed { error, stood } => {
                (None, Some(trace_failed_message(error, *stood)))
            }
            _ => (None, None),
        };
        let store = d.store.get();
        let finished = match &outcome {
            // A lost lease is no longer ours to release; a failing store
            // gets one try to let the run go.
            Outcome::Store(crate::store::StoreError::LeaseLost(_)) => Ok(()),
            Outcome::Store(_) if hold_lease => Ok(()),
            Outcome::Store(_) => store.release(&d.lease),
            _ => {
                // The run's last write takes the steps that completed
                // after the last commit (those nothing waited for, and
                // those beside a failure or a stop), and the replies of
                // steps that did not complete, so a resume reads them
                // instead of paying for them again.
                let (steps, replies, counted) = runtime.uncommitted(d);
                store.finish_run(
                    &d.lease,
                    &crate::store::RunEnd {
                        status: status.as_str(),
                        output,
                        error: error.as_deref(),
                        spend: spent,
                        root_written: writes_root && trace.failed().is_none(),
                        steps: &steps,
                        replies: &replies,
                        counted,
                    },
                )
            }
        };
        if let Err(e) = finished {
            if !matches!(outcome, Outcome::Store(_)) {
                outcome = Outcome::Store(e);
            }
        }
    }
    let completed = std::mem::take(&mut *runtime.completed.borrow_mut());
    let calls = runtime.calls_by_name();
    let store_writes = runtime.durable.as_ref().map(|d| d.writes.get());
    Ok(Report {
        run_id,
        outcome,
        spent,
        stats,
        completed,
        calls,
        events: trace.take_events(),
        export,
        store_writes,
    })
}

/// Checks that `flow` exists and `input` fits its parameters, without
/// running anything (`flowc submit` refuses a run no worker could start).
pub fn check_input(checked: &CheckedProgram, flow: &str, input: &Value) -> Result<(), SetupError> {
    checked_input(checked.sealed(), flow, input).map(|_| ())
}

/// The flow named `flow` and its parameter values, taken from `input`
/// once it is checked against the flow's parameter types.
fn arguments<'p>(
    program: &'p exec::Program,
    flow: &str,
    input: Value,
) -> Result<(&'p exec::Flow, Vec<Value>), SetupError> {
    let f = checked_input(program, flow, &input)?;
    let mut input = match input {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let values = f
        .params
        .iter()
        .map(|p| input.remove(&p.name).unwrap_or(Value::Null))
        .collect();
    Ok((f, values))
}

/// The flow named `flow`, once `input` is found to fit its parameters.
fn checked_input<'p>(
    program: &'p exec::Program,
    flow: &str,
    input: &Value,
) -> Result<&'p exec::Flow, SetupError> {
    let f = program
        .flow_named(flow)
        .ok_or_else(|| SetupError::NoSuchFlow(flow.to_string()))?;
    let empty = Value::Object(Map::new());
    let input = match input {
        Value::Object(_) => input,
        Value::Null => &empty,
        other => {
            return Err(SetupError::Input(format!(
                "the input must be a JSON object of parameters, not {}",
                eval::kind(other)
            )))
        }
    };
    let validators = validate::Validators::default();
    let params = exec::signature(&f.params);
    validators
        .check_args(&program.types, &params, input)
        .map_err(|errors| {
            SetupError::Input(format!(
                "the input does not fit flow `{flow}`: {}",
                errors.join("; ")
            ))
        })?;
    Ok(f)
}

/// Who is deciding a gate when nobody said (`--by`): the OS user, from the
/// environment's `USER` (or `LOGNAME`, `USERNAME`).
pub fn os_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// What a run whose trace could not be written says (stderr, the store).
pub fn trace_failed_message(error: &str, stood: RunStatus) -> String {
    format!(
        "the trace could not be written ({error}); the run stopped there, {} at that point",
        stood.as_str()
    )
}

/// Installs the SIGINT and SIGTERM handlers now (inside a tokio runtime)
/// and returns what resolves at the first of them: a process that says it
/// is ready after calling this never dies of a signal it meant to handle.
#[cfg(unix)]
pub fn stop_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

#[cfg(not(unix))]
pub fn stop_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(stop_signal())
}

/// Resolves at the first SIGINT or SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The values of every environment variable the program reads: API keys,
/// base URLs, tools' `env.` values (templates, `query` and `body`) and MCP
/// servers' commands and environments. None may reach a trace.
pub fn secret_values(program: &exec::Program, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in &program.providers {
        names.extend(p.api_key_env.iter().cloned());
    }
    let mut parts: Vec<&[TemplatePart]> = Vec::new();
    for t in &program.tools {
        match &t.kind {
            ToolKind::Http {
                url,
                headers,
                query,
                body,
                ..
            } => {
                parts.push(&url.parts);
                parts.extend(headers.iter().map(|(_, v)| v.parts.as_slice()));
                for (_, e) in query {
                    env_names(e, &mut names);
                }
                if let exec::HttpBody::Value(_, e) = body {
                    env_names(e, &mut names);
                }
            }
            ToolKind::Exec { argv } => parts.extend(argv.iter().map(|t| t.parts.as_slice())),
            ToolKind::Builtin(_) | ToolKind::Mcp { .. } => {}
        }
        parts.extend(t.idempotency.iter().map(|t| t.parts.as_slice()));
    }
    // A webhook's address is a secret, written out or read from the
    // environment.
    let mut literal = Vec::new();
    for f in &program.flows {
        for step in f.graph.node_weights() {
            if let exec::StepKind::Approve(gate) = &step.kind {
                for notify in gate
                    .notify
                    .iter()
                    .chain(gate.escalation.iter().map(|e| &e.notify))
                {
                    match &notify.target {
                        exec::NotifyTarget::Env(name) => names.push(name.clone()),
                        exec::NotifyTarget::Url(url) => literal.push(url.clone()),
                    }
                }
            }
        }
    }
    for s in &program.servers {
        let exec::McpTransport::Stdio { argv } = &s.transport;
        parts.extend(argv.iter().map(|t| t.parts.as_slice()));
        parts.extend(s.env.iter().map(|(_, t)| t.parts.as_slice()));
    }
    for list in parts {
        for part in list {
            if let TemplatePart::Expr(e) = part {
                env_names(e, &mut names);
            }
        }
    }
    names.sort();
    names.dedup();
    names.iter().filter_map(|n| env(n)).chain(literal).collect()
}

/// Every `env.NAME` an expression reads, nested ones included.
fn env_names(e: &exec::Expr, out: &mut Vec<String>) {
    match &e.kind {
        ExprKind::Env(name) => out.push(name.clone()),
        ExprKind::Str(t) => t.parts.iter().for_each(|p| {
            if let TemplatePart::Expr(e) = p {
                env_names(e, out);
            }
        }),
        ExprKind::Object(fields) => fields.iter().for_each(|(_, e)| env_names(e, out)),
        ExprKind::List(items) => items.iter().for_each(|e| env_names(e, out)),
        ExprKind::Member(e, _) | ExprKind::Len(e) | ExprKind::Not(e) => env_names(e, out),
        ExprKind::Index(a, b)
        | ExprKind::And(a, b)
        | ExprKind::Or(a, b)
        | ExprKind::Compare(a, _, b) => {
            env_names(a, out);
            env_names(b, out);
        }
        _ => {}
    }
}

/// A recording: what the outside world answered, so a run can be replayed
/// with no network and no key.
///
/// ```json
/// {"flow": "name", "input": {...}, "tools": {"search": [result, ...]}, "models": {"analyst": [reply, ...]},
///  "agents": {"researcher": [result]}, "gates": {"fix": "approve" | "reject" | {"approve": value}}}
/// ```
/// Answers are used in order; the last one repeats. `{"$fails": "message"}`
/// in a list makes that call fail.
pub struct Recording {
    /// The flow the recording is of, when the file has several.
    pub flow: Option<String>,
    pub input: Value,
    pub script: Script,
    pub gates: HashMap<String, GateDecision>,
}

impl Recording {
    pub fn parse(text: &str) -> Result<Recording, RecordingError> {
        let fail = |m: String| RecordingError(m);
        let doc: Value = serde_json::from_str(text).map_err(|e| fail(format!("not JSON: {e}")))?;
        let obj = doc
            .as_object()
            .ok_or_else(|| fail("a recording is a JSON object".into()))?;
        let answers = |key: &str| -> Result<
            HashMap<String, std::collections::VecDeque<Scripted>>,
            RecordingError,
        > {
            let mut out = HashMap::new();
            if let Some(section) = obj.get(key) {
                let section = section
                    .as_object()
                    .ok_or_else(|| fail(format!("`{key}` must be an object of lists")))?;
                for (name, list) in section {
                    let list = list
                        .as_array()
                        .ok_or_else(|| fail(format!("`{key}.{name}` must be a list of answers")))?;
                    let q = list
                        .iter()
                        .map(|v| match v.get("$fails").and_then(Value::as_str) {
                            Some(msg) => Scripted::Fails(msg.to_string()),
                            None => Scripted::Returns(v.clone()),
                        })
                        .collect();
                    out.insert(name.clone(), q);
                }
            }
            Ok(out)
        };
        let mut gates = HashMap::new();
        if let Some(section) = obj.get("gates").and_then(Value::as_object) {
            for (gate, decision) in section {
                let named = decision.as_str().and_then(status::decision_named);
                let approve = status::decision_name(exec::Decision::Approve);
                let reject = status::decision_name(exec::Decision::Reject);
                let d = match decision {
                    _ if named == Some(exec::Decision::Approve) => GateDecision::Approve(None),
                    _ if named == Some(exec::Decision::Reject) => GateDecision::Reject("rejected in the recording".into()),
                    Value::Object(m) if m.contains_key(approve) => GateDecision::Approve(m.get(approve).cloned()),
                    Value::Object(m) if m.contains_key(reject) => {
                        GateDecision::Reject(m[reject].as_str().unwrap_or("rejected").to_string())
                    }
                    other => return Err(fail(format!("gate `{gate}`: expected \"approve\", \"reject\" or {{\"approve\": value}}, found {other}"))),
                };
                gates.insert(gate.clone(), d);
            }
        }
        Ok(Recording {
            flow: obj.get("flow").and_then(Value::as_str).map(str::to_string),
            input: obj.get("input").cloned().unwrap_or(Value::Null),
            script: Script {
                tools: answers("tools")?,
                models: answers("models")?,
                agents: answers("agents")?,
            },
            gates,
        })
    }
}
