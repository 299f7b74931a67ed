//! An agent: a model choosing among its tools, within `max_steps` turns.

use std::sync::Arc;

use petgraph::graph::NodeIndex;
use serde_json::{Map, Value};

use super::output::{cut, parse_output};
use super::retry::retry_delay;
use crate::exec::{Agent, CallTarget, ErrorClass, Tool};
use crate::fields;
use crate::run::breaker::Dependency;
use crate::run::budget::{Ledger, Spend};
use crate::run::error::{CallError, FailureClass, Stop};
use crate::run::eval::{render_template, ParamsScope};
use crate::run::frame::FlowCtx;
use crate::run::providers::{ChatRequest, ChatResponse, Message, ToolSpec};
use crate::run::runtime::Runtime;
use crate::run::step_path::StepPath;
use crate::run::world::{Script, Scripted, World};

impl Runtime<'_> {
    /// An agent call. Its `timeout` bounds the whole loop, tool calls
    /// included; what is still in flight is cancelled.
    pub(crate) async fn agent(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        agent: &Agent,
        args: Map<String, Value>,
        path: &StepPath<'_>,
    ) -> Result<Value, Stop> {
        // The agent's model and tool calls hang under its span.
        let span = self.trace.begin(Some(cx.span), "agent", &agent.name);
        let acx = cx.in_span(span.id);
        let cx = &acx;
        let turns = self.agent_call(cx, n, agent, args, path);
        let result = match agent.timeout {
            None => turns.await,
            Some(limit) => tokio::time::timeout(limit, turns)
                .await
                .unwrap_or_else(|_| {
                    Err(self.fail(
                        cx,
                        n,
                        1,
                        ErrorClass::Timeout.into(),
                        format!(
                            "agent `{}` did not finish within its timeout of {}s",
                            agent.name,
                            limit.as_secs_f64()
                        ),
                    ))
                }),
        };
        let model = &self.program.models[agent.chain[0].model.index()];
        let mut data = fields! {"step": cx.flow.graph[n].name};
        data.insert("model".into(), Value::String(model.model_id.clone()));
        data.insert(
            "provider".into(),
            Value::String(self.program.providers[model.provider.index()].name.clone()),
        );
        let status = match &result {
            Ok(_) => "ok",
            Err(Stop::Failed(e)) => {
                data.insert("error".into(), Value::String(e.message.clone()));
                if let Some(class) = e.class.name() {
                    data.insert("class".into(), Value::String(class.into()));
                }
                "failed"
            }
            Err(Stop::Exhausted(_)) => "budget_exhausted",
        };
        self.trace.end(span, status, data);
        result
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
        path: &StepPath<'_>,
    ) -> Result<Value, Stop> {
        self.count_call(CallTarget::Agent(agent.id));
        if let World::Scripted(script) = &mut *self.world.borrow_mut() {
            if let Some(given) = Script::next(script.agents.get_mut(&agent.name)) {
                return match given {
                    Scripted::Returns(v) => Ok(v),
                    Scripted::Fails(msg) => Err(self.fail(
                        cx,
                        n,
                        1,
                        ErrorClass::Failed.into(),
                        format!("agent `{}`: {msg}", agent.name),
                    )),
                };
            }
        }
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
            .map(|t| &self.program.tools[t.index()])
            .collect();
        let specs: Vec<ToolSpec> = tools.iter().map(|t| self.tool_spec(t)).collect();
        let params: Vec<Value> = agent
            .params
            .iter()
            .map(|p| args.get(&p.name).cloned().unwrap_or(Value::Null))
            .collect();
        let instructions = match &agent.instructions {
            Some(t) => render_template(t, &ParamsScope(&params)).map_err(|e| {
                self.fail(
                    cx,
                    n,
                    0,
                    FailureClass::Template,
                    format!(
                        "agent `{}`: cannot render its instructions: {e}",
                        agent.name
                    ),
                )
            })?,
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
        let max_steps = agent.max_steps;
        let mut last_call: Option<(String, Value)> = None;
        let mut repeats = 0;
        // The model of the chain turns start at: the last one that answered.
        let mut link = 0;
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
            let reply = self
                .agent_turn(cx, n, agent, &ledger, &messages, &specs, &mut link, turn)
                .await?;
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
                if agent.max_repeat.is_some_and(|max| repeats >= max) {
                    return Err(self.fail(cx, n, turn as u32, FailureClass::MaxRepeat, format!("agent `{}` called `{}` with the same arguments {repeats} times in a row", agent.name, call.name)));
                }
                let content = match tools.iter().find(|t| t.name == call.name) {
                    None => {
                        self.trace.event(Some(cx.span), "agent_error", &agent.name, fields! {"tool": call.name, "error": "unknown tool"});
                        serde_json::json!({"error": format!("there is no tool named `{}`", call.name), "available_tools": names}).to_string()
                    }
                    Some(tool) => match call.arguments.as_object() {
                        None => serde_json::json!({"error": "the arguments must be a JSON object", "available_tools": names}).to_string(),
                        Some(a) => match Box::pin(self.tool_call(cx, n, tool, a.clone(), &path.agent_call(&agent.name, turn, &call.id))).await {
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
            FailureClass::MaxSteps,
            format!(
                "agent `{}` did not finish within {max_steps} steps",
                agent.name
            ),
        ))
    }
}

impl Runtime<'_> {
    /// One turn's model call: each model of the agent's chain from `link`
    /// on, each with the agent's retry policy, skipping a model whose
    /// breaker is open. `link` moves to the model that answered, so later
    /// turns start there. A failure names the turn and the attempt apart.
    #[allow(clippy::too_many_arguments)]
    async fn agent_turn(
        &self,
        cx: &FlowCtx<'_>,
        n: NodeIndex,
        agent: &Agent,
        ledger: &Arc<Ledger>,
        messages: &[Message],
        specs: &[ToolSpec],
        link: &mut usize,
        turn: u64,
    ) -> Result<ChatResponse, Stop> {
        let attempts = 1 + agent.retry.retries;
        let mut last = None;
        for (i, chain_model) in agent.chain.iter().enumerate().skip(*link) {
            let model = &self.program.models[chain_model.model.index()];
            let dependency = Dependency::Model(chain_model.model);
            for attempt in 1..=attempts {
                let ticket = match self.admit(cx, n, dependency).await {
                    Ok(ticket) => ticket,
                    Err(failures) => {
                        last = Some(TurnEnd::Open(dependency, failures));
                        break;
                    }
                };
                let request = ChatRequest {
                    model: model.model_id.clone(),
                    family: model.family,
                    system: None,
                    messages: messages.to_vec(),
                    max_tokens: chain_model.max_tokens,
                    temperature: model.temperature,
                    response_schema: None,
                    tools: specs.to_vec(),
                    extra: model.extra.clone(),
                };
                let reply = self
                    .chat_raw(
                        cx,
                        n,
                        ledger,
                        chain_model.model,
                        &request,
                        agent.turn_timeout,
                        attempt,
                        ticket,
                    )
                    .await?;
                match reply {
                    Ok(reply) => {
                        *link = i;
                        return Ok(reply);
                    }
                    Err(err) => {
                        let delay = retry_delay(Some(&agent.retry), attempt, &err);
                        last = Some(TurnEnd::Failed(i, attempt, err));
                        match delay {
                            Some(delay) => {
                                self.stats.borrow_mut().retries += 1;
                                tokio::time::sleep(delay).await;
                            }
                            None => break,
                        }
                    }
                }
            }
        }
        Err(match last {
            Some(TurnEnd::Failed(i, attempt, err)) => self.fail(
                cx,
                n,
                attempt,
                err.class.into(),
                format!(
                    "agent `{}`, turn {turn} (model `{}`, attempt {attempt} of {attempts}): {}",
                    agent.name,
                    self.program.models[agent.chain[i].model.index()].name,
                    err.message
                ),
            ),
            Some(TurnEnd::Open(dependency, failures)) => {
                self.breaker_open(cx, n, dependency, failures)
            }
            None => self.fail(
                cx,
                n,
                0,
                ErrorClass::Client.into(),
                format!("agent `{}` has no model to call", agent.name),
            ),
        })
    }

    /// How a tool is offered to an agent's model.
    fn tool_spec(&self, t: &Tool) -> ToolSpec {
        ToolSpec {
            name: t.name.clone(),
            description: format!(
                "{} tool; returns {}",
                t.effect.as_str(),
                self.program.types.display(&t.output)
            ),
            parameters: crate::schema::params_document(
                &self.program.types,
                &crate::exec::signature(&t.params),
            ),
        }
    }
}

/// How the last model a turn tried ended.
enum TurnEnd {
    /// The chain's model `.0` failed its last attempt `.1` so.
    Failed(usize, u32, CallError),
    /// Its breaker was open after this many failures: no request was made.
    Open(Dependency, u32),
}
