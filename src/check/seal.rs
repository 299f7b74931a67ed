//! Sealing: the checked IR becomes the executable program ([`exec::Program`]).
//! This is the only place where what the checker proved turns into types:
//! proven `Option`s are unwrapped, strings of closed sets become enums,
//! templates get the scope they were typed in, and the defaults the
//! language leaves open are decided, once (`docs/reference.md` lists them).
//!
//! Sealing runs only after every pass succeeded, so a missing fact here is
//! a bug in flowc, reported as a diagnostic on the declaration (never a
//! panic, never a silent default).

use std::time::Duration;

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::exec::{self, ChainModel, ErrorClass, TemplateScope};
use crate::ir::{self, AgentId, FlowId, ModelFamily, ModelId, Program, ServerId, ToolId};
use crate::source::Span;

/// An `llm` step's timeout when it declares none.
pub const DEFAULT_LLM_TIMEOUT: Duration = Duration::from_secs(120);
/// One agent turn's model-call timeout when the agent declares none.
pub const DEFAULT_AGENT_TURN_TIMEOUT: Duration = Duration::from_secs(120);
/// Retries of one agent turn's model call when the agent declares no
/// `retry`: as many as the OpenAI and Anthropic SDKs make by default. The
/// cost check counts them (`check/cost.rs`).
pub const DEFAULT_AGENT_TURN_RETRIES: u32 = 2;

/// An agent turn's retry policy when the agent declares none: the
/// transient classes (a 429, a timeout, a 5xx such as a provider's 529
/// "overloaded", a broken connection), backing off 1 s then 2 s with
/// jitter, never less than a `Retry-After`.
fn default_agent_retry() -> exec::RetryPolicy {
    exec::RetryPolicy {
        retries: DEFAULT_AGENT_TURN_RETRIES,
        on: vec![
            ErrorClass::RateLimit,
            ErrorClass::Timeout,
            ErrorClass::ServerError,
            ErrorClass::Connection,
        ],
        base: Duration::from_secs(1),
        factor: 2.0,
        cap: Some(Duration::from_secs(30)),
        jitter: true,
    }
}

/// The sealed program, or the fact the checker should have proved.
pub(super) fn seal(program: &Program) -> Result<exec::Program, Diagnostic> {
    let providers = program
        .providers
        .iter()
        .map(|p| exec::Provider {
            name: p.name.clone(),
            protocol: p.protocol,
            base_url_env: p.base_url_env.clone(),
            base_url: p.base_url.clone(),
            api_key_env: p.api_key_env.clone(),
        })
        .collect();
    let models = program
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| exec::Model {
            id: ModelId(i as u32),
            name: m.name.clone(),
            provider: m.provider,
            model_id: m.model_id.clone(),
            family: program
                .providers
                .get(m.provider.index())
                .map_or(ModelFamily::Standard, |p| {
                    ModelFamily::of(p.protocol, &m.model_id)
                }),
            temperature: m.temperature,
            concurrency: m.concurrency,
            rpm: m.rpm,
            extra: m.extra.clone(),
            price: m.price.as_ref().map(|p| exec::Price {
                input: p.input,
                output: p.output,
            }),
        })
        .collect();
    let tools = program
        .tools
        .iter()
        .enumerate()
        .map(|(i, t)| tool(&program.types, ToolId(i as u32), t))
        .collect::<Result<_, _>>()?;
    let agents = program
        .agents
        .iter()
        .enumerate()
        .map(|(i, a)| agent(program, AgentId(i as u32), a))
        .collect::<Result<_, _>>()?;
    let flows = program
        .flows
        .iter()
        .enumerate()
        .map(|(i, f)| flow(program, FlowId(i as u32), f))
        .collect::<Result<_, _>>()?;
    let servers = program
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| server(ServerId(i as u32), s))
        .collect::<Result<_, _>>()?;
    Ok(exec::Program {
        types: program.types.clone(),
        providers,
        models,
        tools,
        agents,
        flows,
        servers,
    })
}

/// How long starting an MCP server and listing its tools may take, unless
/// its declaration says otherwise (`npx` may need a while on a cold cache).
const DEFAULT_MCP_START_TIMEOUT: Duration = Duration::from_secs(60);

fn server(id: ServerId, s: &ir::McpServer) -> Result<exec::McpServer, Diagnostic> {
    let transport = match &s.transport {
        ir::McpTransport::Stdio { argv } => exec::McpTransport::Stdio { argv: argv.clone() },
        ir::McpTransport::Http { .. } | ir::McpTransport::Missing => {
            return Err(unproved(
                s.span,
                format!("server `{}` without a `command`", s.name),
            ))
        }
    };
    let locked_tools = match &s.lock {
        ir::McpLock::Locked(locked) => locked.tools.keys().cloned().collect(),
        _ => Vec::new(),
    };
    Ok(exec::McpServer {
        id,
        name: s.name.clone(),
        transport,
        env: s.env.clone(),
        start_timeout: s
            .timeout_seconds
            .map_or(DEFAULT_MCP_START_TIMEOUT, duration),
        locked_tools,
    })
}

/// What the checker should have proved and did not.
fn unproved(span: Span, what: String) -> Diagnostic {
    Diagnostic::new(
        Code::InvalidDeclaration,
        span,
        format!("internal error: {what} reached the runtime"),
    )
    .label("the checker let this through")
    .help("please report this as a bug in flowc")
}

/// Seconds as a duration; values too large for one saturate.
fn duration(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
}

fn params(params: &[ir::Param]) -> Vec<exec::Param> {
    params
        .iter()
        .map(|p| exec::Param {
            name: p.name.clone(),
            ty: p.ty.clone(),
            optional: p.optional,
        })
        .collect()
}

fn template(t: &ir::Template, scope: TemplateScope) -> exec::Template {
    exec::Template {
        scope,
        parts: t.parts.clone(),
        span: t.span,
    }
}

fn retry(r: &ir::RetryPolicy) -> exec::RetryPolicy {
    exec::RetryPolicy {
        retries: r.retries,
        // Lowering keeps only the names the grammar allows.
        on: r
            .on
            .iter()
            .filter_map(|c| ErrorClass::from_name(c))
            .collect(),
        base: duration(r.base_seconds),
        factor: r.factor,
        cap: r.cap_seconds.map(duration),
        jitter: r.jitter,
    }
}

fn budget(b: &ir::Budget) -> exec::Budget {
    exec::Budget {
        tokens: b.tokens,
        cost: b.cost,
        steps: b.steps,
        tool_calls: b.tool_calls,
        wall: b.wall_seconds.map(duration),
    }
}

fn tool(
    types: &crate::types::TypeTable,
    id: ToolId,
    t: &ir::Tool,
) -> Result<exec::Tool, Diagnostic> {
    let scope = TemplateScope::Tool(id);
    let kind = match &t.kind {
        Some(ir::ToolKind::Http {
            method,
            url,
            headers,
            query,
            body,
            format,
            raw,
        }) => exec::ToolKind::Http {
            method: exec::HttpMethod::from_name(method).ok_or_else(|| {
                unproved(
                    t.span,
                    format!("HTTP method `{method}` of tool `{}`", t.name),
                )
            })?,
            url: template(url, scope),
            headers: headers
                .iter()
                .map(|(name, value)| (name.clone(), template(value, scope)))
                .collect(),
            query: query.clone(),
            body: body.clone(),
            format: *format,
            raw: raw.clone(),
        },
        Some(ir::ToolKind::Exec { argv }) => exec::ToolKind::Exec {
            argv: argv.iter().map(|a| template(a, scope)).collect(),
        },
        Some(ir::ToolKind::Builtin { name }) => {
            exec::ToolKind::Builtin(exec::Builtin::from_name(name).ok_or_else(|| {
                unproved(t.span, format!("builtin `{name}` of tool `{}`", t.name))
            })?)
        }
        Some(ir::ToolKind::Mcp { server, name }) => exec::ToolKind::Mcp {
            server: *server,
            name: name.clone(),
            format: match types.resolve(&t.output) {
                crate::types::Ty::String(_) => exec::ResponseFormat::Text,
                _ => exec::ResponseFormat::Json,
            },
        },
        None => {
            return Err(unproved(
                t.span,
                format!("tool `{}` without an implementation", t.name),
            ))
        }
    };
    let timeout = t.timeout_seconds.map(duration).ok_or_else(|| {
        unproved(
            t.span,
            format!("tool `{}` without a timeout (B003)", t.name),
        )
    })?;
    Ok(exec::Tool {
        id,
        name: t.name.clone(),
        params: params(&t.params),
        output: t.output.clone(),
        kind,
        effect: t.effect,
        timeout,
        retry: t.retry.as_ref().map(retry),
        idempotency: t.idempotency.as_ref().map(|i| template(i, scope)),
        limit_tokens: t.limit_tokens,
    })
}

fn agent(program: &Program, id: AgentId, a: &ir::Agent) -> Result<exec::Agent, Diagnostic> {
    let model = a
        .model
        .ok_or_else(|| unproved(a.span, format!("agent `{}` without a model", a.name)))?;
    let chain = program
        .model_chain(model)
        .into_iter()
        .map(|m| {
            let max_tokens = program.models[m.index()].max_tokens.ok_or_else(|| {
                unproved(
                    a.span,
                    format!("a model of agent `{}` without `max_tokens` (B006)", a.name),
                )
            })?;
            Ok(ChainModel {
                model: m,
                max_tokens,
            })
        })
        .collect::<Result<_, Diagnostic>>()?;
    let max_steps = a.max_steps.ok_or_else(|| {
        unproved(
            a.span,
            format!("agent `{}` without `max_steps` (B001)", a.name),
        )
    })?;
    Ok(exec::Agent {
        id,
        name: a.name.clone(),
        params: params(&a.params),
        output: a.output.clone(),
        chain,
        retry: a.retry.as_ref().map_or_else(default_agent_retry, retry),
        tools: a
            .tools
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| program.tools[t.index()].effect <= a.may)
            .collect(),
        max_steps,
        max_repeat: a.max_repeat.filter(|r| *r > 0),
        instructions: a
            .instructions
            .as_ref()
            .map(|t| template(t, TemplateScope::Agent(id))),
        budget: a.budget.as_ref().map(budget),
        timeout: a.timeout_seconds.map(duration),
        turn_timeout: a
            .timeout_seconds
            .map_or(DEFAULT_AGENT_TURN_TIMEOUT, duration),
    })
}

fn flow(program: &Program, id: FlowId, f: &ir::Flow) -> Result<exec::Flow, Diagnostic> {
    let budget =
        f.budget.as_ref().map(budget).ok_or_else(|| {
            unproved(f.span, format!("flow `{}` without a budget (B002)", f.name))
        })?;
    let output_step = f
        .output_step
        .ok_or_else(|| unproved(f.span, format!("flow `{}` without a `return`", f.name)))?;
    let scope = TemplateScope::Flow(id);
    let mut missing: Option<Diagnostic> = None;
    let graph = f.graph.map(
        |_, s| {
            step(program, f, s, scope).unwrap_or_else(|d| {
                missing.get_or_insert(d);
                // Never run: the error above is returned instead.
                exec::Step {
                    name: s.name.clone(),
                    shown: s.display(),
                    region: s.region,
                    kind: exec::StepKind::Value(null(s.span)),
                    ty: s.ty.clone(),
                    fallback: None,
                    named: s.named,
                }
            })
        },
        |_, d| *d,
    );
    if let Some(d) = missing {
        return Err(d);
    }
    Ok(exec::Flow {
        id,
        name: f.name.clone(),
        params: params(&f.params),
        output: f.output.clone(),
        budget,
        graph,
        regions: f.regions.clone(),
        output_step,
    })
}

fn null(span: Span) -> ir::Expr {
    ir::Expr {
        kind: ir::ExprKind::Null,
        ty: crate::types::Ty::Null,
        span,
    }
}

fn step(
    program: &Program,
    flow: &ir::Flow,
    s: &ir::Step,
    scope: TemplateScope,
) -> Result<exec::Step, Diagnostic> {
    use exec::StepKind as K;
    let kind = match &s.kind {
        ir::StepKind::Value(e) => K::Value(e.clone()),
        ir::StepKind::Call { target, args } => K::Call {
            target: *target,
            args: args.clone(),
        },
        ir::StepKind::Llm(l) => K::Llm(Box::new(llm(program, s, l, scope)?)),
        ir::StepKind::Approve(a) => K::Approve(Box::new(exec::Gate {
            name: a.gate.clone(),
            show: a.show.clone(),
            timeout: a.timeout_seconds.map(duration),
            on_timeout: a.on_timeout,
            escalation: a.escalation.as_ref().map(|e| exec::Escalation {
                notify: e.notify.clone(),
                timeout: duration(e.timeout_seconds),
            }),
            policy: a.policy.as_ref().map(|p| exec::Policy {
                when: p.when.clone(),
                reads: policy_reads(&p.when, flow),
                sample: p.sample,
            }),
            notify: a.notify.clone(),
        })),
        ir::StepKind::LoopItem { iterable } => K::LoopItem {
            iterable: iterable.clone(),
        },
        ir::StepKind::Loop {
            item,
            body,
            result,
            parallel,
            tolerate,
        } => K::Loop {
            item: *item,
            body: *body,
            result: *result,
            parallel: (*parallel).max(1),
            tolerate: *tolerate,
        },
        ir::StepKind::Decide { subject } => K::Decide {
            subject: subject.clone(),
        },
        ir::StepKind::Branch { decide, arms } => K::Branch {
            decide: *decide,
            arms: arms
                .iter()
                .map(|a| exec::Arm {
                    pattern: a.pattern.clone(),
                    region: a.region,
                    result: a.result,
                })
                .collect(),
        },
        ir::StepKind::Check { requires } => K::Check {
            requires: requires
                .iter()
                .map(|(cond, message)| (cond.clone(), template(message, scope)))
                .collect(),
        },
        ir::StepKind::Output(e) => K::Output(e.clone()),
    };
    Ok(exec::Step {
        name: s.name.clone(),
        shown: s.display(),
        region: s.region,
        kind,
        ty: s.ty.clone(),
        fallback: s.fallback.as_deref().map(|f| match f {
            ir::Fallback::Value(e) => exec::Fallback::Value(e.clone()),
            ir::Fallback::Call(target, args, _) => exec::Fallback::Call(*target, args.clone()),
        }),
        named: s.named,
    })
}

fn llm(
    program: &Program,
    s: &ir::Step,
    l: &ir::LlmCall,
    scope: TemplateScope,
) -> Result<exec::LlmCall, Diagnostic> {
    let chain = program
        .model_chain(l.model)
        .into_iter()
        .map(|m| {
            let max_tokens = l
                .max_tokens
                .or(program.models[m.index()].max_tokens)
                .ok_or_else(|| {
                    unproved(
                        s.span,
                        format!(
                            "a model call without `max_tokens` in {} (B006)",
                            s.display()
                        ),
                    )
                })?;
            Ok(ChainModel {
                model: m,
                max_tokens,
            })
        })
        .collect::<Result<_, Diagnostic>>()?;
    Ok(exec::LlmCall {
        chain,
        output: l.output.clone(),
        prompt: l.prompt.as_ref().map(|t| template(t, scope)),
        system: l.system.as_ref().map(|t| template(t, scope)),
        retry: match &l.retry {
            Some(r) => retry(r),
            None => retry(&ir::RetryPolicy::llm_default(s.span)),
        },
        timeout: l.timeout_seconds.map_or(DEFAULT_LLM_TIMEOUT, duration),
        budget: l.budget.as_ref().map(budget),
    })
}

/// The values a policy reads, outermost first: each maximal path from a
/// step or parameter (`r.amount`, `items.len`, `limit`), once, named as
/// written. Literals are not reads.
fn policy_reads(when: &ir::Expr, flow: &ir::Flow) -> Vec<(String, ir::Expr)> {
    fn path(e: &ir::Expr, flow: &ir::Flow) -> Option<String> {
        match &e.kind {
            ir::ExprKind::Step(n) => Some(flow.graph[*n].name.clone()),
            ir::ExprKind::Param(i) => flow.params.get(*i).map(|p| p.name.clone()),
            ir::ExprKind::Member(inner, field) => Some(format!("{}.{field}", path(inner, flow)?)),
            ir::ExprKind::Len(inner) => Some(format!("{}.len", path(inner, flow)?)),
            ir::ExprKind::Index(inner, i) => match &i.kind {
                ir::ExprKind::Number(n) => Some(format!("{}[{n}]", path(inner, flow)?)),
                _ => None,
            },
            _ => None,
        }
    }
    fn walk(e: &ir::Expr, flow: &ir::Flow, out: &mut Vec<(String, ir::Expr)>) {
        if let Some(name) = path(e, flow) {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, e.clone()));
            }
            return;
        }
        match &e.kind {
            ir::ExprKind::Not(x) | ir::ExprKind::Len(x) | ir::ExprKind::Member(x, _) => {
                walk(x, flow, out)
            }
            ir::ExprKind::And(a, b)
            | ir::ExprKind::Or(a, b)
            | ir::ExprKind::Compare(a, _, b)
            | ir::ExprKind::Index(a, b) => {
                walk(a, flow, out);
                walk(b, flow, out);
            }
            ir::ExprKind::List(items) => items.iter().for_each(|x| walk(x, flow, out)),
            ir::ExprKind::Object(fields) => fields.iter().for_each(|(_, x)| walk(x, flow, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(when, flow, &mut out);
    out
}
