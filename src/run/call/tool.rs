//! A tool call: arguments validated, idempotency key, attempts with
//! retries, results validated.

use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use serde_json::{Map, Value};

use super::retry::retry_delay;
use crate::exec::{CallTarget, Effect, Tool};
use crate::fields;
use crate::run::breaker::Dependency;
use crate::run::budget::Spend;
use crate::run::error::{CallError, ErrorClass, FailureClass, Stop};
use crate::run::frame::FlowCtx;
use crate::run::runtime::Runtime;
use crate::run::step_path::StepPath;
use crate::run::tools::{self, ToolContext};
use crate::run::world::{Script, Scripted, World};

impl Runtime<'_> {
    /// A tool call: arguments validated, the idempotency key rendered and
    /// recorded, attempts with retries, the result validated.
    pub(crate) async fn tool_call(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        tool: &Tool,
        mut args: Map<String, Value>,
        path: &StepPath<'_>,
    ) -> Result<Value, Stop> {
        self.count_call(CallTarget::Tool(tool.id));
        let step_name = &cx.flow.graph[n].name;
        if let Err(errors) = self
            .validators
            .check_tool_args(&self.program.types, tool, &mut args)
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
                ErrorClass::Invalid.into(),
                format!(
                    "arguments of `{}` are invalid: {}",
                    tool.name,
                    errors.join("; ")
                ),
            ));
        }
        // Write and irreversible calls get a key that names the run, the step
        // instance and the declared key, so a retry never acts twice.
        // A declared key that cannot render fails the call before it is
        // made: an empty or partial key could let two effects share one.
        let idempotency_key = if tool.effect > Effect::Read {
            let declared = tools::idempotency_key(tool, &args, &*self.env)
                .map_err(|e| self.fail(cx, n, 0, FailureClass::Template, e.message))?
                .unwrap_or_default();
            Some(format!(
                "{}:{}:{declared}",
                self.run_id,
                path.idempotency_location()
            ))
        } else {
            None
        };
        // The intent is committed before the call: a crash between the call
        // and the step's commit resumes with the same key.
        if let (Some(d), Some(idem)) = (&self.durable, &idempotency_key) {
            d.store.returned().await;
            d.store
                .with(|store| store.intent(&d.lease, &path.to_string(), idem))
                .map_err(|e| self.fail(cx, n, 0, FailureClass::Store, d.store_failed(e)))?;
        }
        let policy = tool.retry.clone();
        let timeout = tool.timeout;
        let mut attempt = 0u32;
        let dependency = Dependency::Tool(tool.id);
        loop {
            attempt += 1;
            // An open breaker: no request; the step's fallback, if any, applies.
            let ticket = self
                .admit(cx, n, dependency)
                .await
                .map_err(|failures| self.breaker_open(cx, n, dependency, failures))?;
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
                self.invoke_tool(
                    tool,
                    &args,
                    idempotency_key.clone(),
                    timeout,
                    self.trace.traceparent(span.id),
                )
                .await
            };
            // The breaker judges whether the tool answered; an answer of the
            // wrong shape is the caller's `invalid`, not an outage.
            self.resolve(cx, n, ticket, result.is_ok());
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
                    self.stats.borrow_mut().tool_calls_ok += 1;
                    if self.trace.records() {
                        self.trace.end(span, "ok", fields! {"step": step_name, "attempt": attempt, "arguments": args, "result": v, "latency_ms": latency});
                    }
                    return Ok(v);
                }
                Err(err) => {
                    self.stats.borrow_mut().tool_calls_failed += 1;
                    if self.trace.records() {
                        self.trace.end(span, "error", fields! {"step": step_name, "attempt": attempt, "arguments": args, "error": err.to_string(), "class": err.class.as_str(), "latency_ms": latency});
                    }
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
                                err.class.into(),
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
            mcp: Some(&self.mcp),
        };
        tools::invoke(tool, args, &ctx).await
    }
}
