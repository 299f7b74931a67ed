//! Running one step: tool, agent and sub-flow calls, model calls, with the
//! failure semantics built in: arguments validated before a call, results
//! and model outputs after; retries by failure class with exponential
//! backoff, jitter, a cap and `Retry-After`; a model's invalid output sent
//! back to it with the validation errors; every attempt's worst case
//! reserved on the budget first; a circuit breaker over consecutive failures.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use serde_json::{Map, Value};

use super::budget::{Ledger, Spend};
use super::error::{CallError, ErrorClass};
use super::model::{self, ChatRequest, Endpoint, Message, ToolSpec};
use super::plan::Plan;
use super::scheduler::{FlowCtx, Frame, GateDecision, PendingGate, RunError, Stop};
use super::tool::{self, ToolContext};
use super::trace::{SpanId, Trace};
use super::validate::Validators;
use crate::fields;
use crate::ir::{
    Agent, CallTarget, FlowId, LlmCall, ModelId, Program, RegionId, RetryPolicy, Tool,
};
use crate::types::Ty;

/// A scripted answer (test `given`s and recordings).
#[derive(Clone, Debug)]
pub enum Scripted {
    Returns(Value),
    Fails(String),
}

/// Who answers model and tool calls: the real world over HTTP and local
/// programs, or a script (tests and offline recordings).
pub enum World {
    Live,
    Scripted(Script),
}

/// Answers by name, consumed in order; the last answer repeats.
#[derive(Default, Debug)]
pub struct Script {
    pub tools: HashMap<String, VecDeque<Scripted>>,
    pub models: HashMap<String, VecDeque<Scripted>>,
    pub agents: HashMap<String, VecDeque<Scripted>>,
}

impl Script {
    fn next(queue: Option<&mut VecDeque<Scripted>>) -> Option<Scripted> {
        let q = queue?;
        if q.len() > 1 {
            q.pop_front()
        } else {
            q.front().cloned()
        }
    }
}

/// How a call (or any step that ran as a future) ended.
pub enum CallOutcome {
    Value(Value),
    /// A sub-flow whose result was skipped (a rejected gate).
    Skipped,
    /// A gate inside it (in a called flow, a loop iteration, a branch arm)
    /// waits for a decision: it has no value yet, so nothing that depends on
    /// it may start, and it is not checkpointed.
    Waiting,
}

/// Everything a run shares.
pub struct Runtime<'p> {
    pub program: &'p Program,
    pub world: RefCell<World>,
    pub gates: HashMap<String, GateDecision>,
    pub validators: Validators,
    pub trace: Arc<Trace>,
    pub http: reqwest::Client,
    pub env: super::Env,
    pub permits: tokio::sync::Semaphore,
    pub run_id: String,
    /// Consecutive failed attempts across the run, and the limit.
    pub failures: Cell<u32>,
    pub breaker: u32,
    pub completed: RefCell<Vec<String>>,
    pub waiting: RefCell<Vec<PendingGate>>,
    /// Calls made per tool, agent and flow name (for tests' `expect … called`).
    pub calls: RefCell<HashMap<String, u64>>,
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
}

/// A durable run's store and what it already holds.
pub struct Durable {
    pub store: RefCell<crate::store::Store>,
    pub run_id: String,
    /// This process's lease on the run: every write is fenced by it.
    pub lease: crate::store::Lease,
    /// Completed step instances: key → value (`None`: skipped).
    pub done: RefCell<HashMap<String, Option<Value>>>,
    /// Results waiting for the next commit, from every region of the run.
    pub pending: RefCell<Vec<(String, Option<Value>)>>,
    /// Commit transactions so far: results pending now go into the next one.
    pub commits: Cell<u64>,
    /// Why a write to the store failed; every later checkpoint fails with
    /// it, and the run ends with it.
    pub failed: RefCell<Option<crate::store::StoreError>>,
}

impl Durable {
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

impl<'p> Runtime<'p> {
    pub fn plan(&self, id: FlowId) -> Rc<Plan> {
        self.plans
            .borrow_mut()
            .entry(id)
            .or_insert_with(|| Rc::new(Plan::new(&self.program.flows[id.index()])))
            .clone()
    }

    /// A gate's decision: from the run store (an earlier process, `flowc
    /// approve`, a passed timeout), else from the command line or the test.
    /// A gate that stays undecided is recorded as pending.
    pub fn gate_decision(
        &self,
        key: &str,
        pending: &PendingGate,
        timeout_seconds: Option<f64>,
        on_timeout: crate::ast::Decision,
    ) -> Result<Option<GateDecision>, crate::store::StoreError> {
        let given = self.gates.get(&pending.gate).cloned();
        let Some(d) = &self.durable else {
            return Ok(given);
        };
        let store = d.store.borrow();
        let record = store.gate(&d.run_id, key)?;
        if let Some(r) = &record {
            match r.status.as_str() {
                "approved" => return Ok(Some(GateDecision::Approve(r.value.clone()))),
                "rejected" => {
                    return Ok(Some(GateDecision::Reject(
                        r.reason.clone().unwrap_or_default(),
                    )))
                }
                _ => {}
            }
            if r.timeout_at.is_some_and(|t| crate::store::now() >= t) {
                let approve = r.on_timeout == "approve";
                store.decide_gate(&d.run_id, key, approve, None, Some("timed out"))?;
                return Ok(Some(if approve {
                    GateDecision::Approve(None)
                } else {
                    GateDecision::Reject("timed out".into())
                }));
            }
        }
        if let Some(decision) = given {
            return Ok(Some(decision));
        }
        if record.is_none() {
            let created = crate::store::now();
            store.pending_gate(
                &d.lease,
                &crate::store::GateRecord {
                    run_id: d.run_id.clone(),
                    key: key.to_string(),
                    flow: pending.flow.clone(),
                    gate: pending.gate.clone(),
                    show: Value::Array(pending.show.clone()),
                    status: "pending".into(),
                    value: None,
                    reason: None,
                    created_at: created,
                    timeout_at: timeout_seconds.map(|t| created + t),
                    on_timeout: if on_timeout == crate::ast::Decision::Approve {
                        "approve"
                    } else {
                        "reject"
                    }
                    .into(),
                },
            )?;
        }
        Ok(None)
    }

    /// Commits completed steps (and the run's spend) before anything that
    /// depends on them starts. Group commit across the whole run: the
    /// results wait one turn of the event loop, so that every step of any
    /// region completing in that turn (a wide fan-out's calls answering
    /// together, each in its own loop iteration) joins them; the first of
    /// those to resume commits them all in one transaction, and the rest find
    /// their results committed. Nobody waits on anybody else, so a region
    /// blocked here never holds up the commit of the steps it contains.
    pub async fn persist(
        &self,
        cx: &FlowCtx<'_>,
        batch: Vec<(String, Option<Value>)>,
    ) -> Result<(), Stop> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let Some((first, _)) = batch.first() else {
            return Ok(());
        };
        let failed = |message: String, step: String| {
            Stop::Failed(RunError {
                flow: cx.flow.name.clone(),
                step,
                attempts: 0,
                class: None,
                message,
            })
        };
        let step = first.clone();
        let ticket = d.commits.get() + 1;
        d.pending.borrow_mut().extend(batch);
        tokio::task::yield_now().await;
        if d.commits.get() < ticket {
            let batch = std::mem::take(&mut *d.pending.borrow_mut());
            let result = d
                .store
                .borrow_mut()
                .commit_steps(&d.lease, &batch, self.total_spend());
            d.commits.set(d.commits.get() + 1);
            if let Err(e) = result {
                *d.failed.borrow_mut() = Some(e);
            }
        }
        match &*d.failed.borrow() {
            Some(e) => Err(failed(e.to_string(), step)),
            None => Ok(()),
        }
    }

    /// What the whole run has spent, earlier processes included.
    pub fn total_spend(&self) -> Spend {
        self.root_ledger
            .borrow()
            .as_ref()
            .map_or(Spend::default(), |l| l.spent())
    }

    fn count_call(&self, name: &str) {
        *self.calls.borrow_mut().entry(name.to_string()).or_insert(0) += 1;
    }

    /// Runs a flow with argument values, under `parent` budget and span.
    pub async fn run_flow(
        &self,
        id: FlowId,
        params: Vec<Value>,
        parent_ledger: Option<Arc<Ledger>>,
        parent_span: Option<SpanId>,
        path: String,
    ) -> Result<(Option<Value>, super::scheduler::RegionEnd), Stop> {
        let flow = &self.program.flows[id.index()];
        let span = self.trace.begin(parent_span, "flow", &flow.name);
        let is_root = parent_ledger.is_none();
        let ledger = Ledger::new(
            format!("flow `{}`", flow.name),
            flow.budget.clone().unwrap_or_default(),
            parent_ledger,
        );
        if is_root {
            // A resumed run starts with what its earlier processes spent.
            ledger.preload(self.base_spend);
            *self.root_ledger.borrow_mut() = Some(ledger.clone());
        }
        let cx = FlowCtx {
            id,
            flow,
            plan: self.plan(id),
            ledger: ledger.clone(),
            span: span.id,
        };
        let frame = Frame::root(&cx.plan, params, path);
        let run = self.run_region(&cx, RegionId(0), frame.clone());
        let result = match ledger.wall_left() {
            Some(left) => match tokio::time::timeout(left, run).await {
                Ok(r) => r,
                Err(_) => Err(Stop::Exhausted(super::budget::Exhausted {
                    what: "wall",
                    limit: format!(
                        "{}s",
                        flow.budget
                            .as_ref()
                            .and_then(|b| b.wall_seconds)
                            .unwrap_or(0.0)
                    ),
                    used: format!("{}s", left.as_secs_f64()),
                    wanted: "more time".into(),
                    owner: format!("flow `{}`", flow.name),
                })),
            },
            None => run.await,
        };
        let spent = ledger.spent();
        let status = match &result {
            Ok(_) => "ok",
            Err(Stop::Failed(_)) => "failed",
            Err(Stop::Exhausted(_)) => "budget_exhausted",
        };
        let mut data = fields! {"tokens": spent.tokens, "cost": spent.cost, "steps": spent.steps, "tool_calls": spent.tool_calls};
        if let Err(Stop::Failed(e)) = &result {
            data.insert("error".into(), Value::String(e.to_string()));
        }
        self.trace.end(span, status, data);
        let end = result?;
        let scope = super::scheduler::FrameScope {
            flow,
            plan: &cx.plan,
            frame: &frame,
        };
        let output = flow
            .output_step
            .and_then(|o| super::eval::Scope::step(&scope, o).cloned());
        Ok((output, end))
    }

    /// A tool, agent or sub-flow call, with retries and budgets.
    pub async fn call(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        target: CallTarget,
        args: Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Result<CallOutcome, Stop> {
        match target {
            CallTarget::Tool(t) => self
                .tool_call(cx, n, &self.program.tools[t.index()], args, path, key)
                .await
                .map(CallOutcome::Value),
            CallTarget::Agent(a) => {
                let agent = &self.program.agents[a.index()];
                // The agent's model and tool calls hang under its span.
                let span = self.trace.begin(Some(cx.span), "agent", &agent.name);
                let acx = cx.in_span(span.id);
                let cx = &acx;
                let turns = self.agent_call(cx, n, agent, args);
                // An agent's `timeout` bounds its whole loop, tool calls
                // included; what is still in flight is cancelled.
                let result = match agent.timeout_seconds {
                    Some(secs) => tokio::time::timeout(Duration::from_secs_f64(secs), turns)
                        .await
                        .unwrap_or_else(|_| {
                            Err(self.fail(
                                cx,
                                n,
                                1,
                                Some("timeout"),
                                format!(
                                    "agent `{}` did not finish within its timeout of {secs}s",
                                    agent.name
                                ),
                            ))
                        }),
                    None => turns.await,
                };
                let mut data = fields! {"step": cx.flow.graph[n].name};
                if let Some(model) = agent.model.map(|m| &self.program.models[m.index()]) {
                    data.insert("model".into(), Value::String(model.model_id.clone()));
                    data.insert(
                        "provider".into(),
                        Value::String(self.program.providers[model.provider.index()].name.clone()),
                    );
                }
                let status = match &result {
                    Ok(_) => "ok",
                    Err(Stop::Failed(e)) => {
                        data.insert("error".into(), Value::String(e.message.clone()));
                        if let Some(class) = e.class {
                            data.insert("class".into(), Value::String(class.into()));
                        }
                        "failed"
                    }
                    Err(Stop::Exhausted(_)) => "budget_exhausted",
                };
                self.trace.end(span, status, data);
                result.map(CallOutcome::Value)
            }
            CallTarget::Flow(f) => {
                let callee = &self.program.flows[f.index()];
                self.count_call(&callee.name);
                let params: Vec<Value> = callee
                    .params
                    .iter()
                    .map(|p| args.get(&p.name).cloned().unwrap_or(Value::Null))
                    .collect();
                let (out, end) = Box::pin(self.run_flow(
                    f,
                    params,
                    Some(cx.ledger.clone()),
                    Some(cx.span),
                    format!(
                        "{}{}>{}",
                        if path.is_empty() {
                            String::new()
                        } else {
                            format!("{path}/")
                        },
                        cx.flow.graph[n].name,
                        callee.name
                    ),
                ))
                .await?;
                let waiting = end.is_waiting();
                self.waiting.borrow_mut().extend(end.waiting);
                if waiting {
                    return Ok(CallOutcome::Waiting);
                }
                Ok(out.map_or(CallOutcome::Skipped, CallOutcome::Value))
            }
        }
    }

    async fn tool_call(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        tool: &Tool,
        args: Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Result<Value, Stop> {
        self.count_call(&tool.name);
        let step_name = cx.flow.graph[n].name.clone();
        if let Err(errors) = self
            .validators
            .check_tool_args(&self.program.types, tool, &args)
        {
            self.stats.borrow_mut().validation_rejections += 1;
            self.trace.event(
                Some(cx.span),
                "validation",
                &tool.name,
                fields! {"what": "arguments", "errors": errors},
            );
            return Err(self.fail(
                cx,
                n,
                0,
                Some("invalid"),
                format!(
                    "arguments of `{}` are invalid: {}",
                    tool.name,
                    errors.join("; ")
                ),
            ));
        }
        // Write and irreversible calls get a key that names the run, the step
        // instance and the declared key, so a retry never acts twice.
        let idempotency_key = if tool.effect > crate::ast::Effect::Read {
            let declared = match &tool.idempotency {
                Some(t) => {
                    let scope = ToolArgsScope { tool, args: &args };
                    super::eval::render(t, &scope).unwrap_or_default()
                }
                None => String::new(),
            };
            Some(format!("{}:{path}/{step_name}:{declared}", self.run_id))
        } else {
            None
        };
        // The intent is committed before the call: a crash between the call
        // and the step's commit resumes with the same key.
        if let (Some(d), Some(idem)) = (&self.durable, &idempotency_key) {
            d.store
                .borrow()
                .intent(&d.lease, key, idem)
                .map_err(|e| self.fail(cx, n, 0, None, d.store_failed(e)))?;
        }
        let policy = tool.retry.clone();
        let timeout = Duration::from_secs_f64(tool.timeout_seconds.unwrap_or(30.0));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let reservation = cx
                .ledger
                .reserve(Spend {
                    tool_calls: 1,
                    steps: u64::from(attempt == 1),
                    ..Spend::default()
                })
                .map_err(|e| self.exhausted(cx, n, e))?;
            cx.ledger.settle(
                reservation,
                Spend {
                    tool_calls: 1,
                    steps: u64::from(attempt == 1),
                    ..Spend::default()
                },
            );
            let span = self.trace.begin(Some(cx.span), "tool_call", &tool.name);
            let started = Instant::now();
            let result = {
                let _permit = self.permits.acquire().await;
                let traceparent = self.trace.traceparent(span.id);
                self.invoke_tool(tool, &args, idempotency_key.clone(), timeout, traceparent)
                    .await
            };
            let result = result.and_then(|v| {
                match self
                    .validators
                    .accept_tool_result(&self.program.types, tool, v)
                {
                    Ok(v) => Ok(v),
                    Err(errors) => {
                        self.stats.borrow_mut().validation_rejections += 1;
                        self.trace.event(
                            Some(span.id),
                            "validation",
                            &tool.name,
                            fields! {"what": "result", "errors": errors},
                        );
                        Err(CallError::new(
                            ErrorClass::Invalid,
                            format!(
                                "the result does not match `{}`: {}",
                                self.program.types.display(&tool.output),
                                errors.join("; ")
                            ),
                        ))
                    }
                }
            });
            let latency = started.elapsed().as_secs_f64() * 1e3;
            match result {
                Ok(v) => {
                    self.failures.set(0);
                    self.stats.borrow_mut().tool_calls_ok += 1;
                    self.trace.end(span, "ok", fields! {"step": step_name, "attempt": attempt, "arguments": args, "result": v, "latency_ms": latency});
                    return Ok(v);
                }
                Err(err) => {
                    self.stats.borrow_mut().tool_calls_failed += 1;
                    self.trace.end(span, "error", fields! {"step": step_name, "attempt": attempt, "arguments": args, "error": err.to_string(), "class": err.class.as_str(), "latency_ms": latency});
                    self.trip_breaker(cx, n)?;
                    match retry_delay(policy.as_ref(), attempt, &err) {
                        Some(delay) => {
                            self.stats.borrow_mut().retries += 1;
                            tokio::time::sleep(delay).await;
                        }
                        None => {
                            return Err(self.fail(
                                cx,
                                n,
                                attempt,
                                Some(err.class.as_str()),
                                format!("`{}`: {}", tool.name, err.message),
                            ))
                        }
                    }
                }
            }
        }
    }

    async fn invoke_tool(
        &self,
        tool: &Tool,
        args: &Map<String, Value>,
        idempotency_key: Option<String>,
        timeout: Duration,
        traceparent: String,
    ) -> Result<Value, CallError> {
        if let World::Scripted(script) = &mut *self.world.borrow_mut() {
            return match Script::next(script.tools.get_mut(&tool.name)) {
                Some(Scripted::Returns(v)) => Ok(v),
                Some(Scripted::Fails(msg)) => Err(CallError::new(ErrorClass::Failed, msg)),
                None => Err(CallError::new(
                    ErrorClass::Client,
                    format!(
                        "no given result for tool `{}` (scripted runs make no calls)",
                        tool.name
                    ),
                )),
            };
        }
        let env = self.env.clone();
        let env_fn = move |name: &str| env(name);
        let ctx = ToolContext {
            http: &self.http,
            env: &env_fn,
            idempotency_key,
            timeout,
            traceparent: Some(traceparent),
        };
        tool::invoke(tool, args, &ctx).await
    }

    fn trip_breaker(&self, cx: &FlowCtx<'_>, n: NodeIndex) -> Result<(), Stop> {
        let f = self.failures.get() + 1;
        self.failures.set(f);
        if self.breaker > 0 && f >= self.breaker {
            return Err(self.fail(
                cx,
                n,
                1,
                Some("circuit_breaker"),
                format!("{f} consecutive failed calls: the circuit breaker stopped the run"),
            ));
        }
        Ok(())
    }

    /// An `llm` step: attempts with the validation errors fed back, then the
    /// model's fallbacks.
    pub async fn llm(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        call: &LlmCall,
        prompt: String,
        system: Option<String>,
        key: &str,
    ) -> Result<Value, Stop> {
        let step = &cx.flow.graph[n];
        let reservation = cx
            .ledger
            .reserve(Spend::step())
            .map_err(|e| self.exhausted(cx, n, e))?;
        cx.ledger.settle(reservation, Spend::step());
        let ledger = match &call.budget {
            Some(b) => Ledger::new(
                format!("step `{}`", step.name),
                b.clone(),
                Some(cx.ledger.clone()),
            ),
            None => cx.ledger.clone(),
        };
        let schema = match self.program.types.resolve(&call.output) {
            Ty::String(_) => None,
            _ => Some(crate::schema::document(
                &self.program.types,
                &call.output,
                crate::types::Boundary::Outgoing,
            )),
        };
        let mut last_error = None;
        for model_id in self.program.model_chain(call.model) {
            let model = &self.program.models[model_id.index()];
            let max_tokens = call.max_tokens.or(model.max_tokens).unwrap_or(1024);
            let mut messages = vec![Message::User(prompt.clone())];
            let attempts = 1 + call.retry.as_ref().map_or(0, |r| r.retries);
            let mut attempt = 0;
            while attempt < attempts {
                attempt += 1;
                let request = ChatRequest {
                    model: model.model_id.clone(),
                    system: system.clone(),
                    messages: messages.clone(),
                    max_tokens,
                    temperature: model.temperature,
                    response_schema: schema.clone(),
                    tools: Vec::new(),
                    extra: model.extra.clone(),
                };
                // A reply an earlier process of this run received is not paid for twice.
                let reply_key = format!("{key}@{}", model.name);
                let recorded = match &self.durable {
                    Some(d) => d
                        .store
                        .borrow()
                        .reply(&d.run_id, &reply_key, attempt)
                        .map_err(|e| self.fail(cx, n, attempt, None, e.to_string()))?,
                    None => None,
                };
                let reply = match recorded {
                    Some((text, _, _)) => Ok(text),
                    None => {
                        let reply = self
                            .chat(
                                cx,
                                n,
                                &ledger,
                                model_id,
                                &request,
                                Duration::from_secs_f64(call.timeout_seconds.unwrap_or(120.0)),
                                attempt,
                            )
                            .await?;
                        if let (Some(d), Ok(text)) = (&self.durable, &reply) {
                            let spend = self.total_spend();
                            d.store
                                .borrow_mut()
                                .record_reply(&d.lease, &reply_key, attempt, text, 0, 0, spend)
                                .map_err(|e| self.fail(cx, n, attempt, None, d.store_failed(e)))?;
                        }
                        reply
                    }
                };
                let err = match reply {
                    Ok(text) => match parse_output(
                        &text,
                        &call.output,
                        &self.program.types,
                        &self.validators,
                    ) {
                        Ok(v) => {
                            self.failures.set(0);
                            return Ok(v);
                        }
                        Err(errors) => {
                            self.stats.borrow_mut().validation_rejections += 1;
                            self.trace.event(Some(cx.span), "validation", &step.name, fields! {"what": "model output", "attempt": attempt, "errors": errors});
                            // The next attempt sees its reply and what was wrong with it.
                            messages.push(Message::Assistant {
                                text: Some(text),
                                tool_calls: Vec::new(),
                            });
                            messages.push(Message::User(format!(
                                "Your reply was not valid. It must be JSON matching the schema. Errors:\n- {}\nReply again with only the corrected JSON.",
                                errors.join("\n- ")
                            )));
                            CallError::new(ErrorClass::Invalid, errors.join("; "))
                        }
                    },
                    Err(e) => e,
                };
                self.trip_breaker(cx, n)?;
                let retryable = call
                    .retry
                    .as_ref()
                    .is_some_and(|r| r.on.iter().any(|c| c == err.class.as_str()));
                last_error = Some((attempt, err.clone()));
                if !retryable || attempt >= attempts {
                    break;
                }
                self.stats.borrow_mut().retries += 1;
                if err.class != ErrorClass::Invalid {
                    if let Some(delay) = retry_delay(call.retry.as_ref(), attempt, &err) {
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
        let (attempts, err) =
            last_error.unwrap_or((0, CallError::new(ErrorClass::Client, "no model to call")));
        Err(self.fail(cx, n, attempts, Some(err.class.as_str()), err.message))
    }

    /// One model call: reserve the worst case, call, settle to the usage.
    /// `Ok(Err(_))` is a failed attempt the caller may retry.
    #[allow(clippy::too_many_arguments)]
    async fn chat(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        ledger: &Arc<Ledger>,
        model_id: ModelId,
        request: &ChatRequest,
        timeout: Duration,
        attempt: u32,
    ) -> Result<Result<String, CallError>, Stop> {
        let text = self
            .chat_raw(cx, n, ledger, model_id, request, timeout, attempt)
            .await?;
        Ok(text.map(|r| r.text.unwrap_or_default()))
    }

    #[allow(clippy::too_many_arguments)]
    async fn chat_raw(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        ledger: &Arc<Ledger>,
        model_id: ModelId,
        request: &ChatRequest,
        timeout: Duration,
        attempt: u32,
    ) -> Result<Result<model::ChatResponse, CallError>, Stop> {
        let model = &self.program.models[model_id.index()];
        let prompt_chars: usize = request.system.as_ref().map_or(0, |s| s.len())
            + request
                .messages
                .iter()
                .map(|m| match m {
                    Message::User(s) => s.len(),
                    Message::Assistant { text, tool_calls } => {
                        text.as_ref().map_or(0, |t| t.len())
                            + tool_calls
                                .iter()
                                .map(|c| c.arguments.to_string().len() + c.name.len())
                                .sum::<usize>()
                    }
                    Message::ToolResult { content, .. } => content.len(),
                })
                .sum::<usize>()
            + request
                .tools
                .iter()
                .map(|t| t.parameters.to_string().len() + t.description.len())
                .sum::<usize>()
            + request
                .response_schema
                .as_ref()
                .map_or(0, |s| s.to_string().len());
        // The prompt is reserved at one token per two bytes, twice what common
        // tokenizers produce for prose, so a reservation holds the real cost.
        let prompt_tokens = (prompt_chars as u64).div_ceil(2) + 16;
        let worst = Spend::tokens(
            prompt_tokens + request.max_tokens,
            cost(model, prompt_tokens, request.max_tokens),
        );
        let reservation = ledger
            .reserve_waiting(worst)
            .await
            .map_err(|e| self.exhausted(cx, n, e))?;
        let span = self.trace.begin(Some(cx.span), "model_call", &model.name);
        let started = Instant::now();
        self.stats.borrow_mut().model_calls += 1;
        let result = {
            let gate = self.model_gates.get(&model_id);
            let _model_permit = match gate.and_then(|g| g.permits.as_ref()) {
                Some(p) => Some(p.acquire().await),
                None => None,
            };
            if let Some(g) = gate {
                g.wait_turn().await;
            }
            let _permit = self.permits.acquire().await;
            let traceparent = self.trace.traceparent(span.id);
            self.answer(model_id, request, timeout, traceparent).await
        };
        let latency = started.elapsed().as_secs_f64() * 1e3;
        let usage = match &result {
            Ok(r) => r.usage,
            // A failed call may still have been billed; assume the prompt was.
            Err(_) => model::Usage {
                input_tokens: 0,
                output_tokens: 0,
            },
        };
        let spent = Spend::tokens(
            usage.input_tokens + usage.output_tokens,
            cost(model, usage.input_tokens, usage.output_tokens),
        );
        ledger.settle(reservation, spent);
        let step = &cx.flow.graph[n];
        let mut data = fields! {
            "step": step.name,
            "model": model.model_id,
            "provider": self.program.providers[model.provider.index()].name,
            "attempt": attempt,
            "parameters": serde_json::json!({"max_tokens": request.max_tokens, "temperature": request.temperature}),
            "prompt": request.messages.iter().map(message_json).collect::<Vec<_>>(),
            "system": request.system,
            "tokens": usage.input_tokens + usage.output_tokens,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cost": spent.cost,
            "latency_ms": latency,
        };
        match &result {
            Ok(r) => {
                if let Some(m) = &r.model {
                    data.insert("response_model".into(), Value::String(m.clone()));
                }
                if !r.finish_reasons.is_empty() {
                    data.insert("finish_reasons".into(), serde_json::json!(r.finish_reasons));
                }
                data.insert("response".into(), serde_json::json!({"text": r.text, "tool_calls": r.tool_calls.iter().map(|c| serde_json::json!({"name": c.name, "arguments": c.arguments})).collect::<Vec<_>>()}));
                self.trace.end(span, "ok", data);
            }
            Err(e) => {
                data.insert("error".into(), Value::String(e.to_string()));
                data.insert("class".into(), Value::String(e.class.as_str().into()));
                self.trace.end(span, "error", data);
            }
        }
        Ok(result)
    }

    async fn answer(
        &self,
        model_id: ModelId,
        request: &ChatRequest,
        timeout: Duration,
        traceparent: String,
    ) -> Result<model::ChatResponse, CallError> {
        let model = &self.program.models[model_id.index()];
        if let World::Scripted(script) = &mut *self.world.borrow_mut() {
            let usage = model::Usage {
                input_tokens: (request
                    .messages
                    .iter()
                    .map(|m| message_json(m).to_string().len())
                    .sum::<usize>()
                    / 4) as u64,
                output_tokens: 0,
            };
            return match Script::next(script.models.get_mut(&model.name)) {
                Some(Scripted::Returns(v)) => {
                    let text = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let output_tokens = (text.len() as u64).div_ceil(4).min(request.max_tokens);
                    Ok(model::ChatResponse {
                        text: Some(text),
                        tool_calls: Vec::new(),
                        model: None,
                        finish_reasons: Vec::new(),
                        usage: model::Usage {
                            output_tokens,
                            ..usage
                        },
                    })
                }
                Some(Scripted::Fails(msg)) => Err(CallError::new(ErrorClass::ServerError, msg)),
                None => Err(CallError::new(
                    ErrorClass::Client,
                    format!(
                        "no given reply for model `{}` (scripted runs make no calls)",
                        model.name
                    ),
                )),
            };
        }
        let endpoint = self.endpoint(model_id)?;
        model::complete_traced(&self.http, &endpoint, request, timeout, Some(&traceparent)).await
    }

    fn endpoint(&self, model_id: ModelId) -> Result<Endpoint, CallError> {
        let model = &self.program.models[model_id.index()];
        let provider = &self.program.providers[model.provider.index()];
        let base_url = provider
            .base_url_env
            .as_deref()
            .and_then(|e| (self.env)(e))
            .or_else(|| provider.base_url.clone())
            .ok_or_else(|| {
                CallError::new(
                    ErrorClass::Client,
                    format!("provider `{}` has no base URL", provider.name),
                )
            })?;
        let api_key = match &provider.api_key_env {
            Some(var) => match (self.env)(var) {
                Some(k) => Some(model::Secret::new(k)),
                None => {
                    return Err(CallError::new(
                        ErrorClass::Client,
                        format!(
                            "the environment variable {var} is not set (model `{}`)",
                            model.name
                        ),
                    ))
                }
            },
            None => None,
        };
        Ok(Endpoint {
            protocol: provider.protocol,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
        })
    }

    /// An agent: the model chooses among the agent's tools only, within
    /// `max_steps` turns; a call to any other tool, or with invalid
    /// arguments, goes back to the model as an error listing its tools.
    async fn agent_call(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        agent: &Agent,
        args: Map<String, Value>,
    ) -> Result<Value, Stop> {
        self.count_call(&agent.name);
        if let World::Scripted(script) = &mut *self.world.borrow_mut() {
            if let Some(given) = Script::next(script.agents.get_mut(&agent.name)) {
                return match given {
                    Scripted::Returns(v) => Ok(v),
                    Scripted::Fails(msg) => Err(self.fail(
                        cx,
                        n,
                        1,
                        Some("failed"),
                        format!("agent `{}`: {msg}", agent.name),
                    )),
                };
            }
        }
        let Some(model_id) = agent.model else {
            return Err(self.fail(
                cx,
                n,
                0,
                None,
                format!("agent `{}` has no model", agent.name),
            ));
        };
        let model = &self.program.models[model_id.index()];
        let ledger = match &agent.budget {
            Some(b) => Ledger::new(
                format!("agent `{}`", agent.name),
                b.clone(),
                Some(cx.ledger.clone()),
            ),
            None => cx.ledger.clone(),
        };
        let tools: Vec<&Tool> = agent
            .tools
            .iter()
            .map(|(t, _)| &self.program.tools[t.index()])
            .filter(|t| t.effect <= agent.may)
            .collect();
        let specs: Vec<ToolSpec> = tools
            .iter()
            .map(|t| {
                let params: Vec<(String, Ty, bool)> = crate::ir::signature(&t.params);
                ToolSpec {
                    name: t.name.clone(),
                    description: format!(
                        "{} tool; returns {}",
                        t.effect.as_str(),
                        self.program.types.display(&t.output)
                    ),
                    parameters: crate::schema::params_document(&self.program.types, &params),
                }
            })
            .collect();
        let params: Vec<Value> = agent
            .params
            .iter()
            .map(|p| args.get(&p.name).cloned().unwrap_or(Value::Null))
            .collect();
        let instructions = match &agent.instructions {
            Some(t) => super::eval::render(t, &ParamsScope(&params))
                .map_err(|e| self.fail(cx, n, 0, None, e.0))?,
            None => String::new(),
        };
        let output_schema = crate::schema::document(
            &self.program.types,
            &agent.output,
            crate::types::Boundary::Outgoing,
        );
        let mut messages = vec![Message::User(format!(
            "{instructions}\n\nWhen you are done, reply with only JSON matching this schema:\n{output_schema}"
        ))];
        let max_steps = agent.max_steps.unwrap_or(1);
        let max_repeat = agent.max_repeat.unwrap_or(0);
        let mut last_call: Option<(String, Value)> = None;
        let mut repeats = 0;
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        for turn in 1..=max_steps {
            let r = cx
                .ledger
                .reserve(Spend {
                    steps: 1,
                    tool_calls: 0,
                    ..Spend::default()
                })
                .map_err(|e| self.exhausted(cx, n, e))?;
            cx.ledger.settle(r, Spend::step());
            let request = ChatRequest {
                model: model.model_id.clone(),
                system: None,
                messages: messages.clone(),
                max_tokens: model.max_tokens.unwrap_or(1024),
                temperature: model.temperature,
                response_schema: None,
                tools: specs.clone(),
                extra: model.extra.clone(),
            };
            let timeout = Duration::from_secs_f64(agent.timeout_seconds.unwrap_or(120.0));
            let reply = self
                .chat_raw(cx, n, &ledger, model_id, &request, timeout, turn as u32)
                .await?;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    self.trip_breaker(cx, n)?;
                    return Err(self.fail(
                        cx,
                        n,
                        turn as u32,
                        Some(e.class.as_str()),
                        format!("agent `{}`: {}", agent.name, e.message),
                    ));
                }
            };
            if reply.tool_calls.is_empty() {
                let text = reply.text.clone().unwrap_or_default();
                match parse_output(&text, &agent.output, &self.program.types, &self.validators) {
                    Ok(v) => return Ok(v),
                    Err(errors) => {
                        self.stats.borrow_mut().validation_rejections += 1;
                        messages.push(Message::Assistant {
                            text: Some(text),
                            tool_calls: Vec::new(),
                        });
                        messages.push(Message::User(format!(
                            "That answer is not valid: {}. Reply with only the corrected JSON.",
                            errors.join("; ")
                        )));
                        continue;
                    }
                }
            }
            messages.push(Message::Assistant {
                text: reply.text.clone(),
                tool_calls: reply.tool_calls.clone(),
            });
            for call in &reply.tool_calls {
                let same = last_call
                    .as_ref()
                    .is_some_and(|(name, a)| *name == call.name && *a == call.arguments);
                repeats = if same { repeats + 1 } else { 1 };
                last_call = Some((call.name.clone(), call.arguments.clone()));
                if max_repeat > 0 && repeats >= max_repeat {
                    return Err(self.fail(cx, n, turn as u32, Some("max_repeat"), format!("agent `{}` called `{}` with the same arguments {repeats} times in a row", agent.name, call.name)));
                }
                let content = match tools.iter().find(|t| t.name == call.name) {
                    None => {
                        self.trace.event(Some(cx.span), "agent_error", &agent.name, fields! {"tool": call.name, "error": "unknown tool"});
                        serde_json::json!({"error": format!("there is no tool named `{}`", call.name), "available_tools": names}).to_string()
                    }
                    Some(tool) => match call.arguments.as_object() {
                        None => serde_json::json!({"error": "the arguments must be a JSON object", "available_tools": names}).to_string(),
                        Some(a) => match Box::pin(self.tool_call(cx, n, tool, a.clone(), &format!("{}#{turn}", agent.name), &format!("{}#{turn}:{}", agent.name, call.id))).await {
                            Ok(v) => cut(&v.to_string(), tool.limit_tokens),
                            Err(Stop::Failed(e)) if !e.is_circuit_breaker() => serde_json::json!({"error": e.message, "available_tools": names}).to_string(),
                            Err(stop) => return Err(stop),
                        },
                    },
                };
                messages.push(Message::ToolResult {
                    call_id: call.id.clone(),
                    content,
                });
            }
        }
        Err(self.fail(
            cx,
            n,
            max_steps as u32,
            Some("max_steps"),
            format!(
                "agent `{}` did not finish within {max_steps} steps",
                agent.name
            ),
        ))
    }
}

/// A model's own limits: calls in flight and calls started per minute.
pub struct ModelGate {
    pub permits: Option<tokio::sync::Semaphore>,
    /// Minimum time between two call starts, and when the next may start.
    pub spacing: Option<Duration>,
    pub next: Cell<Option<Instant>>,
}

impl ModelGate {
    pub fn new(model: &crate::ir::Model) -> ModelGate {
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
    async fn wait_turn(&self) {
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

/// Tool templates read the tool's own arguments.
struct ToolArgsScope<'a> {
    tool: &'a Tool,
    args: &'a Map<String, Value>,
}

impl super::eval::Scope for ToolArgsScope<'_> {
    fn param(&self, index: usize) -> Option<&Value> {
        self.args.get(&self.tool.params.get(index)?.name)
    }
    fn step(&self, _node: NodeIndex) -> Option<&Value> {
        None
    }
    fn env(&self, _name: &str) -> Option<String> {
        None
    }
}

struct ParamsScope<'a>(&'a [Value]);

impl super::eval::Scope for ParamsScope<'_> {
    fn param(&self, index: usize) -> Option<&Value> {
        self.0.get(index)
    }
    fn step(&self, _node: NodeIndex) -> Option<&Value> {
        None
    }
    fn env(&self, _name: &str) -> Option<String> {
        None
    }
}

fn message_json(m: &Message) -> Value {
    match m {
        Message::User(s) => serde_json::json!({"role": "user", "content": s}),
        Message::Assistant { text, tool_calls } => {
            serde_json::json!({"role": "assistant", "content": text, "tool_calls": tool_calls.iter().map(|c| serde_json::json!({"name": c.name, "arguments": c.arguments})).collect::<Vec<_>>()})
        }
        Message::ToolResult { call_id, content } => {
            serde_json::json!({"role": "tool", "call_id": call_id, "content": content})
        }
    }
}

/// Cuts text that reaches a prompt to a token limit (4 characters a token).
fn cut(text: &str, limit: Option<u64>) -> String {
    match limit {
        Some(tokens) if text.chars().count() as u64 > tokens * 4 => {
            text.chars().take((tokens * 4) as usize).collect()
        }
        _ => text.to_string(),
    }
}

fn cost(model: &crate::ir::Model, input: u64, output: u64) -> f64 {
    model.price.as_ref().map_or(0.0, |p| {
        (input as f64 * p.input + output as f64 * p.output) / 1e6
    })
}

/// A model's reply as a value of its declared type: text for `string`,
/// otherwise JSON (a ```json fence around it is tolerated), validated.
pub fn parse_output(
    text: &str,
    ty: &Ty,
    types: &crate::types::TypeTable,
    validators: &Validators,
) -> Result<Value, Vec<String>> {
    let value = match types.resolve(ty) {
        Ty::String(_) => Value::String(text.to_string()),
        _ => {
            let trimmed = text.trim();
            let body = trimmed
                .strip_prefix("```json")
                .or_else(|| trimmed.strip_prefix("```"))
                .and_then(|s| s.strip_suffix("```"))
                .unwrap_or(trimmed)
                .trim();
            serde_json::from_str(body).map_err(|e| vec![format!("the reply is not JSON: {e}")])?
        }
    };
    validators.accept(types, ty, value)
}

/// How long to wait before the next attempt, or `None` to stop retrying.
/// Exponential backoff from the policy, jittered down by up to half, capped;
/// a server's `Retry-After` is always honoured.
pub fn retry_delay(
    policy: Option<&RetryPolicy>,
    attempt: u32,
    err: &CallError,
) -> Option<Duration> {
    let policy = policy?;
    if attempt > policy.retries || !policy.on.iter().any(|c| c == err.class.as_str()) {
        return None;
    }
    let mut secs = policy.base_seconds * policy.factor.powi(attempt.saturating_sub(1) as i32);
    if let Some(cap) = policy.cap_seconds {
        secs = secs.min(cap);
    }
    if policy.jitter {
        secs *= 0.5 + fastrand::f64() * 0.5;
    }
    let mut delay = Duration::from_secs_f64(secs.clamp(0.0, 86_400.0));
    if let Some(after) = err.retry_after {
        delay = delay.max(after);
    }
    Some(delay)
}

/// Outside runs waiting for a decision.
pub fn pending_names(pending: &[PendingGate]) -> Vec<String> {
    pending
        .iter()
        .map(|p| format!("{}.{}", p.flow, p.gate))
        .collect()
}

#[allow(dead_code)]
fn _assert_error_type(_: RunError) {}
