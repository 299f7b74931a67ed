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

use petgraph::graph::NodeIndex;
use rustc_hash::FxHashMap;

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
/// `program` stays as it was: its steps are copied into the sealed graphs.
pub(super) fn seal(program: &Program) -> Result<exec::Program, Diagnostic> {
    seal_flows(program, |i, f| {
        flow(program, FlowId(i as u32), f, Steps::Copied(&f.graph))
    })
}

/// [`seal`] of a program nobody reads afterwards: its steps move into the
/// sealed graphs instead of being copied, which on a large flow is most of
/// what sealing costs.
pub(super) fn seal_owned(mut program: Program) -> Result<exec::Program, Diagnostic> {
    let mut graphs: Vec<_> = program
        .flows
        .iter_mut()
        .map(|f| std::mem::take(&mut f.graph))
        .collect();
    let program = &program;
    seal_flows(program, |i, f| {
        let graph = std::mem::take(&mut graphs[i]);
        flow(program, FlowId(i as u32), f, Steps::Moved(graph))
    })
}

/// Where a flow's sealed steps come from.
enum Steps<'a> {
    Copied(&'a petgraph::graph::DiGraph<ir::Step, ir::Dep>),
    Moved(petgraph::graph::DiGraph<ir::Step, ir::Dep>),
}

/// Seals everything but the flows' steps, which `flow` seals: in the order
/// the first missing fact is looked for (tools, agents, flows, servers).
fn seal_flows(
    program: &Program,
    mut flow: impl FnMut(usize, &ir::Flow) -> Result<exec::Flow, Diagnostic>,
) -> Result<exec::Program, Diagnostic> {
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
        .map(|(i, f)| flow(i, f))
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

fn template(t: ir::Template, scope: TemplateScope) -> exec::Template {
    exec::Template {
        scope,
        parts: t.parts,
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
            url: template(url.clone(), scope),
            headers: headers
                .iter()
                .map(|(name, value)| (name.clone(), template(value.clone(), scope)))
                .collect(),
            query: query.clone(),
            body: body.clone(),
            format: *format,
            raw: raw.clone(),
        },
        Some(ir::ToolKind::Exec { argv }) => exec::ToolKind::Exec {
            argv: argv.iter().map(|a| template(a.clone(), scope)).collect(),
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
        idempotency: t.idempotency.as_ref().map(|i| template(i.clone(), scope)),
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
            .map(|t| template(t.clone(), TemplateScope::Agent(id))),
        budget: a.budget.as_ref().map(budget),
        timeout: a.timeout_seconds.map(duration),
        turn_timeout: a
            .timeout_seconds
            .map_or(DEFAULT_AGENT_TURN_TIMEOUT, duration),
    })
}

fn flow(
    program: &Program,
    id: FlowId,
    f: &ir::Flow,
    steps: Steps<'_>,
) -> Result<exec::Flow, Diagnostic> {
    let budget =
        f.budget.as_ref().map(budget).ok_or_else(|| {
            unproved(f.span, format!("flow `{}` without a budget (B002)", f.name))
        })?;
    let output_step = f
        .output_step
        .ok_or_else(|| unproved(f.span, format!("flow `{}` without a `return`", f.name)))?;
    let scope = TemplateScope::Flow(id);
    let mut reads = match &steps {
        Steps::Copied(g) => policies_reads(g, &f.params),
        Steps::Moved(g) => policies_reads(g, &f.params),
    };
    let mut missing: Option<Diagnostic> = None;
    let mut seal_step = |n: NodeIndex, s: ir::Step| {
        let (region, span) = (s.region, s.span);
        step(program, s, reads.remove(&n), scope).unwrap_or_else(|d| {
            missing.get_or_insert(d);
            // Never run: the error above is returned instead.
            exec::Step {
                name: crate::step_name::StepName::new(""),
                region,
                kind: exec::StepKind::Value(null(span)),
                ty: crate::types::Ty::Null,
                fallback: None,
                named: false,
            }
        })
    };
    let graph = match steps {
        Steps::Copied(g) => g.map(|n, s| seal_step(n, s.clone()), |_, d| *d),
        Steps::Moved(g) => g.map_owned(&mut seal_step, |_, d| d),
    };
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

/// What the policy of each gate with one reads ([`policy_reads`]), by node:
/// looked up before the steps move, since the reads are named by other
/// steps' names.
fn policies_reads(
    graph: &petgraph::graph::DiGraph<ir::Step, ir::Dep>,
    params: &[ir::Param],
) -> FxHashMap<NodeIndex, Vec<(String, ir::Expr)>> {
    graph
        .node_indices()
        .filter_map(|n| match &graph[n].kind {
            ir::StepKind::Approve(a) => a
                .policy
                .as_ref()
                .map(|p| (n, policy_reads(&p.when, graph, params))),
            _ => None,
        })
        .collect()
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
    s: ir::Step,
    reads: Option<Vec<(String, ir::Expr)>>,
    scope: TemplateScope,
) -> Result<exec::Step, Diagnostic> {
    use exec::StepKind as K;
    let kind = match s.kind {
        ir::StepKind::Value(e) => K::Value(e),
        ir::StepKind::Call { target, args } => K::Call {
            target,
            args: crate::deferred::Deferred::new(args),
        },
        ir::StepKind::Llm(l) => {
            let shown = ir::describe_step_name(&s.name);
            K::Llm(Box::new(llm(program, s.span, &shown, *l, scope)?))
        }
        ir::StepKind::Approve(a) => K::Approve(Box::new(exec::Gate {
            name: a.gate,
            show: a.show,
            timeout: a.timeout_seconds.map(duration),
            on_timeout: a.on_timeout,
            escalation: a.escalation.map(|e| exec::Escalation {
                notify: e.notify,
                timeout: duration(e.timeout_seconds),
            }),
            policy: a.policy.map(|p| exec::Policy {
                when: p.when,
                reads: reads.unwrap_or_default(),
                sample: p.sample,
            }),
            notify: a.notify,
        })),
        ir::StepKind::LoopItem { iterable } => K::LoopItem { iterable },
        ir::StepKind::Loop {
            item,
            body,
            result,
            parallel,
            tolerate,
        } => K::Loop {
            item,
            body,
            result,
            parallel: parallel.max(1),
            tolerate,
        },
        ir::StepKind::Decide { subject } => K::Decide { subject },
        ir::StepKind::Branch { decide, arms } => K::Branch {
            decide,
            arms: arms
                .into_iter()
                .map(|a| exec::Arm {
                    pattern: a.pattern,
                    region: a.region,
                    result: a.result,
                })
                .collect(),
        },
        ir::StepKind::Check { requires } => K::Check {
            requires: requires
                .into_iter()
                .map(|(cond, message)| (cond, template(message, scope)))
                .collect(),
        },
        ir::StepKind::Output(e) => K::Output(e),
    };
    Ok(exec::Step {
        name: crate::step_name::StepName::new(&s.name),
        region: s.region,
        kind,
        ty: s.ty,
        fallback: s.fallback.map(|f| match *f {
            ir::Fallback::Value(e) => exec::Fallback::Value(e),
            ir::Fallback::Call(target, args, _) => exec::Fallback::Call(target, args),
        }),
        named: s.named,
    })
}

fn llm(
    program: &Program,
    span: Span,
    shown: &str,
    l: ir::LlmCall,
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
                        span,
                        format!("a model call without `max_tokens` in {shown} (B006)"),
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
        output: l.output,
        prompt: l.prompt.map(|t| template(t, scope)),
        system: l.system.map(|t| template(t, scope)),
        retry: match &l.retry {
            Some(r) => retry(r),
            None => retry(&ir::RetryPolicy::llm_default(span)),
        },
        timeout: l.timeout_seconds.map_or(DEFAULT_LLM_TIMEOUT, duration),
        budget: l.budget.as_ref().map(budget),
    })
}

/// The values a policy reads, outermost first: each maximal path from a
/// step or parameter (`r.amount`, `items.len`, `limit`), once, named as
/// written. Literals are not reads.
fn policy_reads(
    when: &ir::Expr,
    graph: &petgraph::graph::DiGraph<ir::Step, ir::Dep>,
    params: &[ir::Param],
) -> Vec<(String, ir::Expr)> {
    /// A flow's names: its steps' and its parameters'.
    type Names<'a> = (
        &'a petgraph::graph::DiGraph<ir::Step, ir::Dep>,
        &'a [ir::Param],
    );
    fn path(e: &ir::Expr, names: Names<'_>) -> Option<String> {
        match &e.kind {
            ir::ExprKind::Step(n) => Some(names.0[*n].name.clone()),
            ir::ExprKind::Param(i) => names.1.get(*i).map(|p| p.name.clone()),
            ir::ExprKind::Member(inner, field) => Some(format!("{}.{field}", path(inner, names)?)),
            ir::ExprKind::Len(inner) => Some(format!("{}.len", path(inner, names)?)),
            ir::ExprKind::Index(inner, i) => match &i.kind {
                ir::ExprKind::Number(n) => Some(format!("{}[{n}]", path(inner, names)?)),
                _ => None,
            },
            _ => None,
        }
    }
    fn walk(e: &ir::Expr, names: Names<'_>, out: &mut Vec<(String, ir::Expr)>) {
        if let Some(name) = path(e, names) {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, e.clone()));
            }
            return;
        }
        match &e.kind {
            ir::ExprKind::Not(x) | ir::ExprKind::Len(x) | ir::ExprKind::Member(x, _) => {
                walk(x, names, out)
            }
            ir::ExprKind::And(a, b)
            | ir::ExprKind::Or(a, b)
            | ir::ExprKind::Compare(a, _, b)
            | ir::ExprKind::Index(a, b) => {
                walk(a, names, out);
                walk(b, names, out);
            }
            ir::ExprKind::List(items) => items.iter().for_each(|x| walk(x, names, out)),
            ir::ExprKind::Object(fields) => fields.iter().for_each(|(_, x)| walk(x, names, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(when, (graph, params), &mut out);
    out
}
