//! B004: a worst case above the declared budget. B005: a loop that spends a
//! budgeted resource over a list with no maximum length, so no worst case
//! exists.
//!
//! The worst case of a region is the sum over its steps; a loop multiplies
//! its body by the iterable's maximum length; a branch takes its most
//! expensive arm. What counts:
//! - tokens and cost: each model call costs attempts × (prompt + max_tokens)
//!   for each model of its fallback chain; an agent costs max_steps turns.
//!   A prompt counts its fixed text (4 characters a token) and each value it
//!   quotes at that value's bound: a tool output at its `limit`, a model
//!   output at its `max_tokens`, anything else by its type (`string len ..N`,
//!   `[T] len ..N`, records, numbers). A value with no bound counts nothing:
//!   the runtime still reserves the real size before each call.
//! - steps: every tool call, model call, agent turn, approval and check.
//! - tool_calls: every tool call attempt, and every agent turn.
//!
//! Waiting at an approval gate does not count toward `wall`.

use std::collections::HashMap;

use petgraph::graph::NodeIndex;

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{
    Agent, Budget, CallTarget, Fallback, Flow, LlmCall, Program, RegionId, StepKind, Template,
    TemplatePart,
};
use crate::source::Span;
use crate::types::{Lit, Ty, TypeTable};

#[derive(Clone, Debug, Default)]
struct Worst {
    tokens: f64,
    cost: f64,
    steps: f64,
    tool_calls: f64,
    /// A model call whose model has no price: the cost has no bound.
    unpriced: Option<(Span, String)>,
    /// A loop with no bound; already reported as B005.
    unbounded: bool,
    terms: Vec<Term>,
}

/// Whether a pass writes down the arithmetic behind its totals (the
/// [`Term`]s a B004 help shows). Most budgets hold, and formatting a line for
/// every step of a 10,000-step flow was two fifths of the budget check, so
/// the check adds up the numbers alone, and adds them up again with the
/// words only for a budget they break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Terms {
    Skip,
    Build,
}

/// One line of the arithmetic shown in a B004 help.
#[derive(Clone, Debug)]
struct Term {
    span: Span,
    tokens_text: String,
    cost_text: String,
    steps_text: String,
    calls_text: String,
    tokens: f64,
    cost: f64,
    steps: f64,
    tool_calls: f64,
}

impl Worst {
    fn add(&mut self, other: Worst) {
        self.tokens += other.tokens;
        self.cost += other.cost;
        self.steps += other.steps;
        self.tool_calls += other.tool_calls;
        self.unpriced = self.unpriced.take().or(other.unpriced);
        self.unbounded |= other.unbounded;
        self.terms.extend(other.terms);
    }

    /// Adds a term when the pass builds them; `term` is not called otherwise.
    fn push_term(&mut self, terms: Terms, term: impl FnOnce() -> Term) {
        if terms == Terms::Build {
            self.terms.push(term());
        }
    }

    /// `label`: why `n` times, asked for only when there are terms.
    fn times(mut self, n: f64, label: impl FnOnce() -> String) -> Worst {
        self.tokens *= n;
        self.cost *= n;
        self.steps *= n;
        self.tool_calls *= n;
        if self.terms.is_empty() {
            return self;
        }
        let label = label();
        for t in &mut self.terms {
            t.tokens *= n;
            t.cost *= n;
            t.steps *= n;
            t.tool_calls *= n;
            t.tokens_text = format!("{label} × ({})", t.tokens_text);
            t.cost_text = format!("{label} × ({})", t.cost_text);
            t.steps_text = format!("{label} × ({})", t.steps_text);
            t.calls_text = format!("{label} × ({})", t.calls_text);
        }
        self
    }

    fn max(self, other: Worst) -> Worst {
        let pick_terms = if self.tokens + self.steps >= other.tokens + other.steps {
            self.terms
        } else {
            other.terms
        };
        Worst {
            tokens: self.tokens.max(other.tokens),
            cost: self.cost.max(other.cost),
            steps: self.steps.max(other.steps),
            tool_calls: self.tool_calls.max(other.tool_calls),
            unpriced: self.unpriced.or(other.unpriced),
            unbounded: self.unbounded || other.unbounded,
            terms: pick_terms,
        }
    }
}

/// `analyzable[i]`: flow `i` has an acyclic graph and is not recursive.
/// `callees_first`: every flow after the flows it calls
/// ([`super::graph::recursion`]).
pub(super) fn check(
    program: &Program,
    analyzable: &[bool],
    callees_first: &[usize],
    out: &mut Vec<Diagnostic>,
) {
    let mut memo: Vec<Option<Worst>> = vec![None; program.flows.len()];
    // Each flow's worst case after its callees': a call reads the callee's
    // from the memo, so no chain of flow calls, however long, recurses.
    for &i in callees_first {
        flow_worst(program, i, analyzable, &mut memo, out);
    }
    for (i, flow) in program.flows.iter().enumerate() {
        if !analyzable[i] {
            continue;
        }
        let worst = flow_worst(program, i, analyzable, &mut memo, out);
        if let Some(budget) = &flow.budget {
            let explain = || explained(program, i, analyzable, &mut memo);
            compare(
                &format!("flow `{}`", flow.name),
                budget,
                &worst,
                explain,
                out,
            );
        }
        for n in flow.graph.node_indices() {
            if let StepKind::Llm(l) = &flow.graph[n].kind {
                if let Some(b) = &l.budget {
                    let w = llm_worst(program, flow, n, l, Terms::Skip);
                    let explain = || llm_worst(program, flow, n, l, Terms::Build);
                    compare(
                        &format!("step {}", flow.graph[n].display()),
                        b,
                        &w,
                        explain,
                        out,
                    );
                }
            }
        }
    }
    // An eval's worst case: every row runs the flow and every judge once.
    for eval in &program.evals {
        let (Some(budget), Some(flow)) = (&eval.budget, eval.flow) else {
            continue;
        };
        let judges: Vec<usize> = eval
            .scorers
            .iter()
            .filter_map(|s| match s.kind {
                crate::ir::ScorerKind::Judge(f) => Some(f.index()),
                crate::ir::ScorerKind::Expr(_) => None,
            })
            .collect();
        if std::iter::once(flow.index())
            .chain(judges.iter().copied())
            .any(|i| !analyzable[i])
        {
            continue;
        }
        let rows = eval.rows.len();
        let eval_worst = |memo: &mut Vec<Option<Worst>>, out: &mut Vec<Diagnostic>, terms| {
            let one =
                |j: usize, memo: &mut Vec<Option<Worst>>, out: &mut Vec<Diagnostic>| match terms {
                    Terms::Skip => flow_worst(program, j, analyzable, memo, out),
                    Terms::Build => explained(program, j, analyzable, memo),
                };
            let mut row = one(flow.index(), memo, out);
            for &j in &judges {
                row.add(one(j, memo, out));
            }
            row.times(rows as f64, || format!("{rows} rows"))
        };
        let worst = eval_worst(&mut memo, out, Terms::Skip);
        let explain = || eval_worst(&mut memo, &mut Vec::new(), Terms::Build);
        compare(
            &format!("eval {:?}", eval.name),
            budget,
            &worst,
            explain,
            out,
        );
    }
    for agent in &program.agents {
        if let Some(b) = &agent.budget {
            let w = agent_worst(program, agent, agent.span, &agent.name, Terms::Skip);
            let explain = || agent_worst(program, agent, agent.span, &agent.name, Terms::Build);
            compare(&format!("agent `{}`", agent.name), b, &w, explain, out);
        }
    }
}

/// Flow `i`'s worst case computed again, with its terms, for a budget it
/// breaks: its callees' come from `memo` (a call is one term whatever the
/// callee's own terms), and its diagnostics are dropped (the first pass
/// reported them). `memo[i]` keeps the figures without the terms.
fn explained(
    program: &Program,
    i: usize,
    analyzable: &[bool],
    memo: &mut Vec<Option<Worst>>,
) -> Worst {
    if !analyzable[i] {
        return Worst::default();
    }
    flow_cost(program, i, analyzable, memo, &mut Vec::new(), Terms::Build)
}

/// Flow `i`'s worst case, its figures without their terms, from `memo` or
/// computed once into it.
fn flow_worst(
    program: &Program,
    i: usize,
    analyzable: &[bool],
    memo: &mut Vec<Option<Worst>>,
    out: &mut Vec<Diagnostic>,
) -> Worst {
    if let Some(w) = &memo[i] {
        return w.clone();
    }
    if !analyzable[i] {
        return Worst::default();
    }
    let w = flow_cost(program, i, analyzable, memo, out, Terms::Skip);
    memo[i] = Some(w.clone());
    w
}

/// Adds up flow `i`'s steps; a flow it calls is looked up, or computed, in
/// `memo`.
fn flow_cost(
    program: &Program,
    i: usize,
    analyzable: &[bool],
    memo: &mut Vec<Option<Worst>>,
    out: &mut Vec<Diagnostic>,
    terms: Terms,
) -> Worst {
    let flow = &program.flows[i];
    let mut members: Vec<Vec<NodeIndex>> = vec![Vec::new(); flow.regions.len()];
    for n in flow.graph.node_indices() {
        members[flow.graph[n].region.index()].push(n);
    }
    let mut cx = FlowCost {
        program,
        flow,
        members: &members,
        analyzable,
        memo,
        out,
        terms,
    };
    cx.region(RegionId(0))
}

struct FlowCost<'a, 'o> {
    program: &'a Program,
    flow: &'a Flow,
    members: &'a [Vec<NodeIndex>],
    analyzable: &'a [bool],
    memo: &'o mut Vec<Option<Worst>>,
    out: &'o mut Vec<Diagnostic>,
    terms: Terms,
}

impl FlowCost<'_, '_> {
    fn region(&mut self, region: RegionId) -> Worst {
        let mut total = Worst::default();
        for &n in &self.members[region.index()] {
            let w = self.step(n);
            total.add(w);
        }
        total
    }

    fn step(&mut self, n: NodeIndex) -> Worst {
        let (program, flow) = (self.program, self.flow);
        let step = &flow.graph[n];
        let mut w = Worst::default();
        match &step.kind {
            StepKind::Llm(l) => w.add(llm_worst(program, flow, n, l, self.terms)),
            StepKind::Call { target, .. } => {
                w.add(self.call(*target, step.span, || step.display()))
            }
            StepKind::Approve(_) | StepKind::Check { .. } => {
                let what = if matches!(step.kind, StepKind::Check { .. }) {
                    "check"
                } else {
                    "gate"
                };
                w.steps = 1.0;
                w.push_term(self.terms, || Term {
                    span: step.span,
                    tokens_text: String::new(),
                    cost_text: String::new(),
                    steps_text: format!("{what} {}: 1 step", step.display()),
                    calls_text: String::new(),
                    tokens: 0.0,
                    cost: 0.0,
                    steps: 1.0,
                    tool_calls: 0.0,
                });
            }
            StepKind::Loop { item, body, .. } => {
                let body_worst = self.region(*body);
                let iterable_ty = match &flow.graph[*item].kind {
                    StepKind::LoopItem { iterable } => iterable.ty.clone(),
                    _ => Ty::Error,
                };
                match program.types.max_len(&iterable_ty) {
                    Some(max) => {
                        let label = || {
                            format!(
                                "{} iterations of loop {}",
                                group(max as f64),
                                step.display()
                            )
                        };
                        w.add(body_worst.times(max as f64, label));
                    }
                    None => {
                        self.unbounded(n, &body_worst);
                        let mut b = body_worst;
                        b.unbounded = true;
                        w.add(b);
                    }
                }
            }
            StepKind::Branch { arms, .. } => {
                let mut worst: Option<Worst> = None;
                for arm in arms {
                    let a = self.region(arm.region);
                    worst = Some(match worst {
                        Some(prev) => prev.max(a),
                        None => a,
                    });
                }
                if let Some(a) = worst {
                    w.add(a);
                }
            }
            _ => {}
        }
        if let Some(Fallback::Call(target, _, span)) = step.fallback.as_deref() {
            let f = self.call(*target, *span, || {
                format!("the fallback of {}", step.display())
            });
            w.add(f);
        }
        w
    }

    /// `who`: the words for the caller in a term, asked for only when the
    /// pass builds terms.
    fn call(&mut self, target: CallTarget, span: Span, who: impl FnOnce() -> String) -> Worst {
        let program = self.program;
        let build = self.terms == Terms::Build;
        match target {
            CallTarget::Tool(t) => {
                let tool = &program.tools[t.index()];
                let attempts = 1.0 + tool.retry.as_ref().map_or(0.0, |r| r.retries as f64);
                let mut w = Worst {
                    steps: 1.0,
                    tool_calls: attempts,
                    ..Worst::default()
                };
                w.push_term(self.terms, || {
                    let who = who();
                    Term {
                        span,
                        tokens_text: String::new(),
                        cost_text: String::new(),
                        steps_text: format!("{who} calls `{}`: 1 step", tool.name),
                        calls_text: format!(
                            "{who} calls `{}`: {} attempt{}",
                            tool.name,
                            group(attempts),
                            plural(attempts)
                        ),
                        tokens: 0.0,
                        cost: 0.0,
                        steps: 1.0,
                        tool_calls: attempts,
                    }
                });
                w
            }
            CallTarget::Agent(a) => {
                let who = if build { who() } else { String::new() };
                agent_worst(program, &program.agents[a.index()], span, &who, self.terms)
            }
            CallTarget::Flow(f) => {
                // The callee's figures, without its terms (those stay in
                // its own B004): here the call is one term.
                let mut w = flow_worst(program, f.index(), self.analyzable, self.memo, self.out);
                let callee = &program.flows[f.index()].name;
                let (tokens, cost, steps, tool_calls) = (w.tokens, w.cost, w.steps, w.tool_calls);
                w.push_term(self.terms, || {
                    let who = who();
                    Term {
                        span,
                        tokens_text: format!(
                            "{who} runs flow `{callee}`: {} tokens",
                            group(tokens)
                        ),
                        cost_text: format!("{who} runs flow `{callee}`: {}", money(cost)),
                        steps_text: format!("{who} runs flow `{callee}`: {} steps", group(steps)),
                        calls_text: format!(
                            "{who} runs flow `{callee}`: {} tool calls",
                            group(tool_calls)
                        ),
                        tokens,
                        cost,
                        steps,
                        tool_calls,
                    }
                });
                w
            }
        }
    }

    fn unbounded(&mut self, n: NodeIndex, body: &Worst) {
        let flow = self.flow;
        let Some(budget) = &flow.budget else { return };
        let mut spends = Vec::new();
        if body.tokens > 0.0 && (budget.tokens.is_some() || budget.cost.is_some()) {
            spends.push("calls models");
        }
        if body.steps > 0.0 && budget.steps.is_some() {
            spends.push("counts toward `steps`");
        }
        if body.tool_calls > 0.0 && budget.tool_calls.is_some() {
            spends.push("counts toward `tool_calls`");
        }
        if spends.is_empty() {
            return;
        }
        let step = &flow.graph[n];
        let iterable_span = match &step.kind {
            StepKind::Loop { item, .. } => match &flow.graph[*item].kind {
                StepKind::LoopItem { iterable } => iterable.span,
                _ => step.span,
            },
            _ => step.span,
        };
        self.out.push(
            Diagnostic::new(
                Code::UnboundedIteration,
                step.span,
                format!("loop {} {} once per item, and its list has no maximum length", step.display(), spends.join(" and ")),
            )
            .label("unbounded loop")
            .with(iterable_span, "a list with no `len ..N`")
            .help("bound the list's type, as in `[Document] len ..50`: the bound is validated when the list arrives and makes the worst case provable"),
        );
    }
}

fn llm_worst(program: &Program, flow: &Flow, n: NodeIndex, l: &LlmCall, terms: Terms) -> Worst {
    let step = &flow.graph[n];
    let mut w = Worst {
        steps: 1.0,
        ..Worst::default()
    };
    if l.model.index() >= program.models.len() {
        return w;
    }
    let attempts = l.attempts();
    let prompt = prompt_tokens(program, Some(flow), l.prompt.as_ref())
        + prompt_tokens(program, Some(flow), l.system.as_ref());
    for model in program.model_chain(l.model) {
        let m = &program.models[model.index()];
        let Some(max_out) = l.max_tokens.or(m.max_tokens) else {
            continue;
        };
        let a = attempts as f64;
        let out = max_out as f64;
        let tokens = a * (prompt + out);
        // The one model-cost formula: the runtime reserves and settles by it.
        let cost = m
            .price
            .as_ref()
            .map_or(0.0, |p| a * unit_price(p).cost(prompt, out));
        if m.price.is_none() {
            w.unpriced = Some((step.span, format!("model `{}` ({:?})", m.name, m.model_id)));
        }
        w.tokens += tokens;
        w.cost += cost;
        w.push_term(terms, || {
            let via = if model == l.model {
                String::new()
            } else {
                format!(" on fallback `{}`", m.name)
            };
            let who = if step.named {
                format!("llm {}{via}", step.display())
            } else {
                format!("the llm call in {}{via}", step.display())
            };
            let times = match &l.retry {
                Some(_) => format!("{attempts} attempt{}", plural(a)),
                // Without `retry`, invalid output is retried (`RetryPolicy::llm_default`).
                None => format!(
                    "{attempts} attempt{} (invalid output is retried by default)",
                    plural(a)
                ),
            };
            let cost_text = match &m.price {
                Some(p) => format!(
                    "{who}: {times} × ({} in × ${}/M + {} out × ${}/M) = {}",
                    group(prompt),
                    price(p.input),
                    group(out),
                    price(p.output),
                    money(cost)
                ),
                None => format!("{who}: unpriced"),
            };
            Term {
                span: step.span,
                tokens_text: format!(
                    "{who}: {times} × ({} max_tokens + {} prompt) = {} tokens",
                    group(out),
                    group(prompt),
                    group(tokens)
                ),
                cost_text,
                steps_text: format!("{who}: 1 step"),
                calls_text: String::new(),
                tokens,
                cost,
                steps: 0.0,
                tool_calls: 0.0,
            }
        });
    }
    if let Some(first) = w.terms.first_mut() {
        first.steps = 1.0;
    }
    w
}

fn agent_worst(program: &Program, agent: &Agent, span: Span, who: &str, terms: Terms) -> Worst {
    let steps = agent.max_steps.unwrap_or(0) as f64;
    let mut w = Worst {
        steps,
        tool_calls: steps,
        ..Worst::default()
    };
    let count_text = format!("{who} runs agent `{}`: {} turns", agent.name, group(steps));
    let Some(model) = agent.model else { return w };
    let instructions = prompt_tokens(program, None, agent.instructions.as_ref());
    let result = agent_tool_result(program, agent);
    // Every turn's model call is retried like an `llm` step's (the
    // agent's `retry`, else the default the sealed program uses).
    let attempts = 1.0
        + agent
            .retry
            .as_ref()
            .map_or(super::seal::DEFAULT_AGENT_TURN_RETRIES, |r| r.retries) as f64;
    let chain = program.model_chain(model);
    // A turn may go to any model of the chain, so an earlier answer is as
    // long as the longest any of them may give.
    let longest = chain
        .iter()
        .filter_map(|id| program.models[id.index()].max_tokens)
        .max()
        .unwrap_or(0) as f64;
    for id in chain {
        let m = &program.models[id.index()];
        let Some(max_out) = m.max_tokens else {
            continue;
        };
        let out = max_out as f64;
        // Every turn re-reads the conversation so far: turn k's prompt is
        // the instructions plus k - 1 earlier answers and tool results.
        let pairs = steps * (steps - 1.0).max(0.0) / 2.0;
        let input = steps * instructions + pairs * (longest + result);
        let tokens = attempts * (input + steps * out);
        let (cost, cost_text) = match &m.price {
            Some(p) => {
                let cost = attempts * unit_price(p).cost(input, steps * out);
                let text = format!(
                    "agent `{}`: {} attempt{} × (({} turns × {} instructions + {} × ({} out + {} tool result)) in × ${}/M + {} max_steps × {} out × ${}/M) = {}",
                    agent.name,
                    group(attempts),
                    plural(attempts),
                    group(steps),
                    group(instructions),
                    group(pairs),
                    group(longest),
                    group(result),
                    price(p.input),
                    group(steps),
                    group(out),
                    price(p.output),
                    money(cost)
                );
                (cost, text)
            }
            None => {
                w.unpriced = Some((span, format!("model `{}` ({:?})", m.name, m.model_id)));
                (0.0, format!("agent `{}`: unpriced", agent.name))
            }
        };
        w.tokens += tokens;
        w.cost += cost;
        w.push_term(terms, || Term {
            span,
            tokens_text: format!(
                "agent `{}`: {} attempt{} × ({} max_steps × ({} max_tokens + {} instructions) + {} earlier turns re-read × ({} max_tokens + {} tool result)) = {} tokens",
                agent.name,
                group(attempts),
                plural(attempts),
                group(steps),
                group(out),
                group(instructions),
                group(pairs),
                group(longest),
                group(result),
                group(tokens)
            ),
            cost_text,
            steps_text: count_text.clone(),
            calls_text: count_text.clone(),
            tokens,
            cost,
            steps: 0.0,
            tool_calls: 0.0,
        });
    }
    match w.terms.first_mut() {
        Some(first) => {
            first.steps = steps;
            first.tool_calls = steps;
        }
        None => w.push_term(terms, || Term {
            span,
            tokens_text: String::new(),
            cost_text: String::new(),
            steps_text: count_text.clone(),
            calls_text: count_text,
            tokens: 0.0,
            cost: 0.0,
            steps,
            tool_calls: steps,
        }),
    }
    w
}

/// The most one tool result can add to an agent's conversation: the largest
/// `limit` (or type bound) among the tools it may call. A tool with neither
/// counts nothing here (C002 reports it).
pub(super) fn agent_tool_result(program: &Program, agent: &Agent) -> f64 {
    agent
        .tools
        .iter()
        .map(|(t, _)| &program.tools[t.index()])
        .filter(|t| t.effect <= agent.may)
        .filter_map(|t| {
            t.limit_tokens
                .map(|l| l as f64)
                .or_else(|| type_tokens(&program.types, &t.output, 0))
        })
        .fold(0.0, f64::max)
}

/// Tokens a prompt template can reach: its text, and each quoted value at
/// its bound. The quotes of one step together never count more than what
/// that step can produce (a tool's `limit`, a model's `max_tokens`).
pub(super) fn prompt_tokens(program: &Program, flow: Option<&Flow>, t: Option<&Template>) -> f64 {
    prompt_parts(program, flow, t).total()
}

/// A prompt's worst case, part by part (for the arithmetic in messages).
#[derive(Default)]
pub(super) struct PromptParts {
    /// Fixed text, four characters a token.
    pub(super) fixed: f64,
    /// Each interpolated value: where, its bound in tokens, and how it reads.
    pub(super) values: Vec<(Span, f64, String)>,
    /// Values with no bound at all: where, and the tool whose result it
    /// quotes when it is a tool result with no `limit`.
    pub(super) unbounded: Vec<(Span, Option<crate::ir::ToolId>)>,
}

impl PromptParts {
    pub(super) fn total(&self) -> f64 {
        self.fixed + self.values.iter().map(|(_, t, _)| t).sum::<f64>()
    }
}

pub(super) fn prompt_parts(
    program: &Program,
    flow: Option<&Flow>,
    t: Option<&Template>,
) -> PromptParts {
    let mut parts = PromptParts::default();
    let Some(t) = t else { return parts };
    parts.fixed = (t.text_len() as f64 / 4.0).ceil();
    let mut charged: HashMap<NodeIndex, f64> = HashMap::new();
    for part in &t.parts {
        let TemplatePart::Expr(e) = part else {
            continue;
        };
        let own = type_tokens(&program.types, &e.ty, 0);
        let mut steps = Vec::new();
        e.steps(&mut steps);
        let cap = |s: NodeIndex| flow.and_then(|f| step_cap(program, f, s));
        let label = expr_label(flow, e);
        match (own, steps.as_slice()) {
            (Some(bound), [only]) => {
                let limit = cap(*only).unwrap_or(f64::INFINITY);
                let used = charged.entry(*only).or_insert(0.0);
                let add = bound.min((limit - *used).max(0.0));
                *used += add;
                parts.values.push((e.span, add, label));
            }
            (Some(bound), _) => parts.values.push((e.span, bound, label)),
            (None, _) => {
                let mut any = false;
                for s in &steps {
                    if let Some(limit) = cap(*s) {
                        any = true;
                        let used = charged.entry(*s).or_insert(0.0);
                        parts
                            .values
                            .push((e.span, (limit - *used).max(0.0), label.clone()));
                        *used = limit;
                    }
                }
                if !any {
                    // A parameter, `json`, or a tool result without `limit`:
                    // counted by the runtime only.
                    let tool = flow.and_then(|f| {
                        steps.iter().find_map(|s| match &f.graph[*s].kind {
                            StepKind::Call {
                                target: CallTarget::Tool(t),
                                ..
                            } => Some(*t),
                            _ => None,
                        })
                    });
                    parts.unbounded.push((e.span, tool));
                }
            }
        }
    }
    parts
}

/// An interpolated value as written, roughly: `page.text`.
fn expr_label(flow: Option<&Flow>, e: &crate::ir::Expr) -> String {
    use crate::ir::ExprKind;
    match &e.kind {
        ExprKind::Step(n) => flow.map_or("value".into(), |f| {
            let name = &f.graph[*n].name;
            name.rsplit_once('.')
                .map_or(name.clone(), |(owner, _)| owner.to_string())
        }),
        ExprKind::Param(i) => flow
            .and_then(|f| f.params.get(*i))
            .map_or("a parameter".into(), |p| p.name.clone()),
        ExprKind::Member(b, field) => format!("{}.{field}", expr_label(flow, b)),
        ExprKind::Len(b) => format!("{}.len", expr_label(flow, b)),
        ExprKind::Index(b, _) => format!("{}[…]", expr_label(flow, b)),
        _ => "value".into(),
    }
}

/// What a step can put into a prompt at most, if it says.
fn step_cap(program: &Program, flow: &Flow, s: NodeIndex) -> Option<f64> {
    match &flow.graph[s].kind {
        StepKind::Call {
            target: CallTarget::Tool(t),
            ..
        } => program.tools[t.index()].limit_tokens.map(|l| l as f64),
        StepKind::Llm(l) => {
            let m = program.models.get(l.model.index())?;
            l.max_tokens.or(m.max_tokens).map(|t| t as f64)
        }
        _ => None,
    }
}

/// Tokens a value of this type takes in a prompt (as JSON), if bounded.
pub(super) fn type_tokens(types: &TypeTable, ty: &Ty, depth: u32) -> Option<f64> {
    if depth > 16 {
        return None;
    }
    match ty {
        Ty::Named(_) => type_tokens(types, types.resolve(ty), depth + 1),
        Ty::String(c) => c.max_len.map(|n| (n as f64 / 4.0).ceil() + 1.0),
        Ty::Literal(Lit::Str(s)) => Some((s.len() as f64 / 4.0).ceil() + 1.0),
        Ty::Union(ls) => Some(
            ls.iter()
                .map(|l| (l.to_string().len() as f64 / 4.0).ceil() + 1.0)
                .fold(0.0, f64::max),
        ),
        Ty::Number(_) | Ty::Int(_) | Ty::Bool | Ty::Null | Ty::Literal(_) => Some(3.0),
        Ty::Optional(inner) => type_tokens(types, inner, depth + 1),
        Ty::List(inner, c) => {
            let n = c.max_len? as f64;
            Some(n * (type_tokens(types, inner, depth + 1)? + 1.0) + 1.0)
        }
        Ty::Record(fields, _) => {
            let mut total = 2.0;
            for f in fields {
                total += (f.name.len() as f64 / 4.0).ceil()
                    + 2.0
                    + type_tokens(types, &f.ty, depth + 1)?;
            }
            Some(total)
        }
        Ty::Error | Ty::Json | Ty::Schema(_) => None,
    }
}

/// `explain`: the same worst case with its terms, asked for only when the
/// budget is broken.
fn compare(
    owner: &str,
    budget: &Budget,
    worst: &Worst,
    explain: impl FnOnce() -> Worst,
    out: &mut Vec<Diagnostic>,
) {
    if worst.unbounded {
        return;
    }
    if let (Some(limit), Some((span, model))) = (budget.cost, &worst.unpriced) {
        out.push(
            Diagnostic::new(Code::BudgetExceeded, *span, format!("the cost of {owner} has no bound: {model} has no price"))
                .label("unpriced model call")
                .with(budget.span, format!("budget of {}", money(limit)))
                .help("use a model the provider prices (see `std.models`), or add a `price` for it to the provider"),
        );
    }
    let checks: [(Metric, Option<f64>); 4] = [
        (Metric::Tokens, budget.tokens.map(|t| t as f64)),
        (
            Metric::Cost,
            if worst.unpriced.is_some() {
                None
            } else {
                budget.cost
            },
        ),
        (Metric::Steps, budget.steps.map(|t| t as f64)),
        (Metric::ToolCalls, budget.tool_calls.map(|t| t as f64)),
    ];
    let broken: Vec<(Metric, f64, f64)> = checks
        .into_iter()
        .filter_map(|(metric, limit)| Some((metric, limit?, metric.total(worst))))
        .filter(|&(_, limit, found)| found > limit + 1e-9)
        .collect();
    if broken.is_empty() {
        return;
    }
    let explained = explain();
    for (metric, limit, found) in broken {
        let mut terms: Vec<&Term> = explained
            .terms
            .iter()
            .filter(|t| metric.of(t) > 0.0)
            .collect();
        terms.sort_by(|a, b| {
            metric
                .of(b)
                .total_cmp(&metric.of(a))
                .then(a.span.cmp(&b.span))
        });
        let lines: Vec<String> = terms
            .iter()
            .take(4)
            .map(|t| metric.text(t).to_string())
            .collect();
        let mut help = format!("worst case {}", metric.show(found));
        if !lines.is_empty() {
            help.push_str(&format!(" = {}", lines.join(" + ")));
            if terms.len() > 4 {
                help.push_str(&format!(" + {} more", terms.len() - 4));
            }
        }
        help.push_str(&format!(
            "; raise the budget to at least {}, or {}",
            metric.show(found),
            metric.lower()
        ));
        let mut d = Diagnostic::new(
            Code::BudgetExceeded,
            budget.span,
            format!(
                "{owner} can spend {}, over its budget of {}",
                metric.show(found),
                metric.show(limit)
            ),
        )
        .label(format!("budget of {}", metric.show(limit)))
        .help(help);
        for t in terms.iter().take(3) {
            d = d.with(t.span, "spends from this budget");
        }
        out.push(d);
    }
}

#[derive(Clone, Copy)]
enum Metric {
    Tokens,
    Cost,
    Steps,
    ToolCalls,
}

impl Metric {
    fn of(self, t: &Term) -> f64 {
        match self {
            Metric::Tokens => t.tokens,
            Metric::Cost => t.cost,
            Metric::Steps => t.steps,
            Metric::ToolCalls => t.tool_calls,
        }
    }

    fn total(self, w: &Worst) -> f64 {
        match self {
            Metric::Tokens => w.tokens,
            Metric::Cost => w.cost,
            Metric::Steps => w.steps,
            Metric::ToolCalls => w.tool_calls,
        }
    }

    fn text(self, t: &Term) -> &str {
        match self {
            Metric::Tokens => &t.tokens_text,
            Metric::Cost => &t.cost_text,
            Metric::Steps => &t.steps_text,
            Metric::ToolCalls => &t.calls_text,
        }
    }

    fn show(self, n: f64) -> String {
        match self {
            Metric::Tokens => format!("{} tokens", group(n)),
            Metric::Cost => money(n),
            Metric::Steps => format!("{} steps", group(n)),
            Metric::ToolCalls => format!("{} tool calls", group(n)),
        }
    }

    fn lower(self) -> &'static str {
        match self {
            Metric::Tokens | Metric::Cost => {
                "lower max_tokens, retries or the lists' maximum lengths"
            }
            Metric::Steps => "lower the lists' maximum lengths or the agents' max_steps",
            Metric::ToolCalls => {
                "lower retries, the lists' maximum lengths or the agents' max_steps"
            }
        }
    }
}

/// 12345.0 → "12,345".
fn group(n: f64) -> String {
    let n = n.ceil() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn plural(n: f64) -> &'static str {
    if n == 1.0 {
        ""
    } else {
        "s"
    }
}

/// Money as written in budgets: cents when whole, more digits when small.
fn money(n: f64) -> String {
    if n >= 1.0 || n == 0.0 || (n * 100.0).fract() == 0.0 {
        format!("${n:.2}")
    } else {
        format!("${n:.4}")
    }
}

fn price(n: f64) -> String {
    let s = format!("{n:.2}");
    s
}

/// A provider's price as the sealed program holds it, for its one formula.
fn unit_price(p: &crate::ir::Price) -> crate::exec::Price {
    crate::exec::Price {
        input: p.input,
        output: p.output,
    }
}
