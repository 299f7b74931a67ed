//! An `llm` step: attempts with the validation errors fed back, the model's
//! fallbacks, and one model call (reserve the worst case, call, settle).

use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use serde_json::Value;

use super::output::reply_value;
use super::retry::retry_delay;
use crate::exec::{LlmCall, ModelId};
use crate::fields;
use crate::run::breaker::{Dependency, Ticket};
use crate::run::budget::{Ledger, Spend};
use crate::run::error::{CallError, ErrorClass, FailureClass, Stop};
use crate::run::frame::FlowCtx;
use crate::run::providers::{self, ChatRequest, Endpoint, Message};
use crate::run::runtime::Runtime;
use crate::run::step_path::StepPath;
use crate::run::world::{Script, Scripted, World};
use crate::store::Reply;

impl Runtime<'_> {
    /// An `llm` step: attempts with the validation errors fed back, then the
    /// model's fallbacks.
    pub async fn llm(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        call: &LlmCall,
        prompt: String,
        system: Option<String>,
        path: &StepPath<'_>,
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
        let output = self
            .validators
            .llm_output(&self.program.types, (cx.flow.id, n), &call.output);
        // How the last model tried ended: a failed attempt, or its breaker
        // open (no request made).
        let mut last: Option<Ended> = None;
        for link in &call.chain {
            let (model_id, max_tokens) = (link.model, link.max_tokens);
            let model = &self.program.models[model_id.index()];
            let mut messages = vec![Message::User(prompt.clone())];
            let attempts = 1 + call.retry.retries;
            let mut attempt = 0;
            while attempt < attempts {
                attempt += 1;
                let request = ChatRequest {
                    model: model.model_id.clone(),
                    family: model.family,
                    system: system.clone(),
                    messages: messages.clone(),
                    max_tokens,
                    temperature: model.temperature,
                    response_schema: output.request.clone(),
                    tools: Vec::new(),
                    extra: model.extra.clone(),
                };
                // A reply an earlier process of this run received is not paid for twice.
                let recorded = match &self.durable {
                    Some(d) if d.resumed => {
                        let reply_key = path.reply(&model.name).to_string();
                        d.store.returned().await;
                        d.store
                            .with(|store| store.reply(&d.run_id, &reply_key, attempt))
                            .map_err(|e| {
                                self.fail(cx, n, attempt, FailureClass::Store, e.to_string())
                            })?
                    }
                    _ => None,
                };
                let reply = match recorded {
                    Some((text, _, _)) => Ok(text),
                    None => {
                        let dependency = Dependency::Model(model_id);
                        let ticket = match self.admit(cx, n, dependency).await {
                            Ok(ticket) => ticket,
                            // Straight to the next model of the chain.
                            Err(failures) => {
                                last = Some(Ended::Open(dependency, failures));
                                break;
                            }
                        };
                        self.chat(
                            cx,
                            n,
                            &ledger,
                            model_id,
                            &request,
                            call.timeout,
                            attempt,
                            ticket,
                        )
                        .await?
                    }
                };
                let err = match reply {
                    Ok(text) => match reply_value(&text, &call.output, &self.program.types)
                        .and_then(|v| output.accept(&self.program.types, &call.output, v))
                    {
                        Ok(v) => {
                            return Ok(v);
                        }
                        Err(errors) => {
                            // Kept for the run's next write, so a resume
                            // that retries this step reads it instead of
                            // paying for it again. A reply that completes
                            // its step needs no keeping: the step's row,
                            // which every commit and the run's last write
                            // take, holds its value.
                            if let Some(d) = &self.durable {
                                d.replies.borrow_mut().push((
                                    path.to_string(),
                                    Reply {
                                        key: path.reply(&model.name).to_string(),
                                        attempt,
                                        text: text.clone(),
                                        input_tokens: 0,
                                        output_tokens: 0,
                                    },
                                ));
                            }
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
                let retryable = call.retry.retries_on(err.class);
                last = Some(Ended::Failed(attempt, err.clone()));
                if !retryable || attempt >= attempts {
                    break;
                }
                self.stats.borrow_mut().retries += 1;
                if err.class != ErrorClass::Invalid {
                    if let Some(delay) = retry_delay(Some(&call.retry), attempt, &err) {
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
        match last {
            Some(Ended::Failed(attempts, err)) => {
                Err(self.fail(cx, n, attempts, err.class.into(), err.message))
            }
            Some(Ended::Open(dependency, failures)) => {
                Err(self.breaker_open(cx, n, dependency, failures))
            }
            None => Err(self.fail(
                cx,
                n,
                0,
                ErrorClass::Client.into(),
                "no model to call".into(),
            )),
        }
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
        ticket: Ticket<'_>,
    ) -> Result<Result<String, CallError>, Stop> {
        let text = self
            .chat_raw(cx, n, ledger, model_id, request, timeout, attempt, ticket)
            .await?;
        Ok(text.map(|r| r.text.unwrap_or_default()))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn chat_raw(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        ledger: &Arc<Ledger>,
        model_id: ModelId,
        request: &ChatRequest,
        timeout: Duration,
        attempt: u32,
        ticket: Ticket<'_>,
    ) -> Result<Result<providers::ChatResponse, CallError>, Stop> {
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
            + request.response_schema.as_ref().map_or(0, |s| s.chars);
        // The prompt is reserved at one token per two bytes, twice what common
        // tokenizers produce for prose, so a reservation holds the real cost.
        let prompt_tokens = (prompt_chars as u64).div_ceil(2) + 16;
        let worst = Spend::tokens(
            prompt_tokens + request.max_tokens,
            model.cost(prompt_tokens, request.max_tokens),
        );
        let reservation = ledger
            .reserve_waiting(worst)
            .await
            .map_err(|e| self.exhausted(cx, n, e))?;
        // A durable run's recorded spend counts the reservation before the
        // call: if this process dies mid-call, a resume counts it as spent.
        if let Err(e) = self.record_reservation(worst).await {
            return Err(self.fail(cx, n, attempt, FailureClass::Store, e.to_string()));
        }
        let span = self.trace.begin(Some(cx.span), "model_call", &model.name);
        let started = Instant::now();
        self.stats.borrow_mut().model_calls += 1;
        let result = {
            let gate = self.model_gates.get(&model_id);
            let _model_permit = match gate.and_then(|g| g.permits.as_ref()) {
                Some(p) => Some(p.acquire().await),
                None => None,
            };
            let store_failed = |e| match &self.durable {
                Some(d) => self.fail(cx, n, attempt, FailureClass::Store, d.store_failed(e)),
                None => self.fail(cx, n, attempt, FailureClass::Store, e.to_string()),
            };
            // Held past the call's timeout only if this process dies.
            let _shared = self
                .shared_slot(model_id, timeout + Duration::from_secs(5))
                .await
                .map_err(store_failed)?;
            self.wait_turn(model_id).await.map_err(store_failed)?;
            let _permit = self.permits.acquire().await;
            let traceparent = self.trace.traceparent(span.id);
            self.answer(model_id, request, timeout, traceparent).await
        };
        let latency = started.elapsed().as_secs_f64() * 1e3;
        self.resolve(cx, n, ticket, result.is_ok());
        let usage = match &result {
            Ok(r) => r.usage,
            Err(_) => providers::Usage {
                input_tokens: 0,
                output_tokens: 0,
            },
        };
        let spent = match &result {
            Ok(_) => Spend::tokens(
                usage.input_tokens + usage.output_tokens,
                model.cost(usage.input_tokens, usage.output_tokens),
            ),
            // Abandoned (timed out, connection lost, a 2xx reply that could
            // not be read): the provider may have billed it and reported
            // nothing, so the whole reservation stays spent.
            Err(e) if abandoned(e) => reservation.amount(),
            // The provider answered with an error status: nothing billed.
            Err(_) => Spend::default(),
        };
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
            "tokens": spent.tokens,
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
                // Counted at its reservation: see `abandoned`.
                data.insert("abandoned".into(), Value::Bool(abandoned(e)));
                self.trace.end(span, "error", data);
            }
        }
        if let Some(mut e) = ledger.overrun() {
            if let Some(o) = &mut e.overrun {
                o.call = format!(
                    "the call to model `{}` in step `{}` (attempt {attempt}), which reported {} tokens, ${:.4}",
                    model.name, step.name, spent.tokens, spent.cost
                );
            }
            return Err(self.exhausted(cx, n, e));
        }
        Ok(result)
    }

    async fn answer(
        &self,
        model_id: ModelId,
        request: &ChatRequest,
        timeout: Duration,
        traceparent: String,
    ) -> Result<providers::ChatResponse, CallError> {
        let model = &self.program.models[model_id.index()];
        if let World::Scripted(script) = &mut *self.world.borrow_mut() {
            let usage = providers::Usage {
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
                    Ok(providers::ChatResponse {
                        text: Some(text),
                        tool_calls: Vec::new(),
                        model: None,
                        finish_reasons: Vec::new(),
                        usage: providers::Usage {
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
        providers::complete_traced(&self.http, &endpoint, request, timeout, Some(&traceparent))
            .await
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
                Some(k) => Some(providers::Secret::new(k)),
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
}

/// Whether a failed call may have been billed without its usage reaching
/// flowc: no HTTP status came back (a provider refusing a request answers
/// with one and bills nothing), and the failure is one where the request
/// may have been received: a timeout, a lost connection, an unreadable
/// reply.
fn abandoned(e: &CallError) -> bool {
    e.status.is_none()
        && matches!(
            e.class,
            ErrorClass::Timeout | ErrorClass::Connection | ErrorClass::Invalid
        )
}

/// How the last model of a chain that was tried ended.
enum Ended {
    /// Its last attempt (numbered) failed so.
    Failed(u32, CallError),
    /// Its breaker was open after this many failures: no request was made.
    Open(Dependency, u32),
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
