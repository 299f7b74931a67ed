//! B004: a worst case above the declared budget. B005: a loop that spends a
//! budgeted resource over a list with no maximum length, so no worst case
//! exists.
//!
//! The worst case of a region is the sum over its steps; a loop multiplies
//! its body by the iterable's maximum length; a branch takes its most
//! expensive arm. A model call costs attempts × (prompt + max_tokens) for
//! each model in its fallback chain; the prompt counts its fixed text
//! (4 characters a token) plus the `limit` of any tool output it quotes.
//! Approval waits do not count toward `wall`.

use petgraph::graph::NodeIndex;

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{Budget, CallTarget, Fallback, Flow, LlmCall, ModelId, Program, RegionId, StepKind, Template, TemplatePart};
use crate::source::Span;

#[derive(Clone, Debug, Default)]
struct Worst {
    tokens: f64,
    cost: f64,
    steps: f64,
    tool_calls: f64,
    /// A model call whose model has no price: the cost has no bound.
    unpriced: Option<(Span, String)>,
    /// A loop that has no bound; already reported.
    unbounded: bool,
    terms: Vec<Term>,
}

#[derive(Clone, Debug)]
struct Term {
    span: Span,
    text: String,
    tokens: f64,
    cost: f64,
    steps: f64,
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

    fn times(mut self, n: f64, why: &str) -> Worst {
        self.tokens *= n;
        self.cost *= n;
        self.steps *= n;
        self.tool_calls *= n;
        for t in &mut self.terms {
            t.tokens *= n;
            t.cost *= n;
            t.steps *= n;
            t.text = format!("{} {why} × {}", group(n), t.text);
        }
        self
    }

    fn max(self, other: Worst) -> Worst {
        let tokens = self.tokens.max(other.tokens);
        let cost = self.cost.max(other.cost);
        let steps = self.steps.max(other.steps);
        let tool_calls = self.tool_calls.max(other.tool_calls);
        let unpriced = self.unpriced.clone().or(other.unpriced.clone());
        let unbounded = self.unbounded || other.unbounded;
        let mut terms = if self.tokens >= other.tokens { self.terms } else { other.terms };
        terms.iter_mut().for_each(|t| t.text = format!("(costliest arm) {}", t.text));
        Worst { tokens, cost, steps, tool_calls, unpriced, unbounded, terms }
    }
}

pub(super) fn check(program: &Program, acyclic: &[bool], out: &mut Vec<Diagnostic>) {
    let mut memo: Vec<Option<Worst>> = vec![None; program.flows.len()];
    for (i, flow) in program.flows.iter().enumerate() {
        if !acyclic[i] {
            continue;
        }
        let worst = flow_worst(program, i, acyclic, &mut memo, out, 0);
        if let Some(budget) = &flow.budget {
            compare(program, &format!("flow `{}`", flow.name), budget, &worst, out);
        }
        // A step's own budget.
        for n in flow.graph.node_indices() {
            if let StepKind::Llm(l) = &flow.graph[n].kind {
                if let Some(b) = &l.budget {
                    let w = llm_worst(program, flow, n, l);
                    compare(program, &format!("step `{}`", flow.graph[n].name), b, &w, out);
                }
            }
        }
    }
    for agent in &program.agents {
        if let Some(b) = &agent.budget {
            let w = agent_worst(program, agent, agent.span);
            compare(program, &format!("agent `{}`", agent.name), b, &w, out);
        }
    }
}

fn flow_worst(program: &Program, i: usize, acyclic: &[bool], memo: &mut Vec<Option<Worst>>, out: &mut Vec<Diagnostic>, depth: u32) -> Worst {
    if let Some(w) = &memo[i] {
        return w.clone();
    }
    if depth > 32 || !acyclic[i] {
        return Worst::default();
    }
    let flow = &program.flows[i];
    let mut members: Vec<Vec<NodeIndex>> = vec![Vec::new(); flow.regions.len()];
    for n in flow.graph.node_indices() {
        members[flow.graph[n].region.index()].push(n);
    }
    let mut cx = FlowCost { program, flow, members, acyclic, memo, out, depth };
    let w = cx.region(RegionId(0));
    cx.memo[i] = Some(w.clone());
    w
}

struct FlowCost<'a, 'o> {
    program: &'a Program,
    flow: &'a Flow,
    members: Vec<Vec<NodeIndex>>,
    acyclic: &'a [bool],
    memo: &'o mut Vec<Option<Worst>>,
    out: &'o mut Vec<Diagnostic>,
    depth: u32,
}

impl FlowCost<'_, '_> {
    fn region(&mut self, region: RegionId) -> Worst {
        let mut total = Worst::default();
        for n in self.members[region.index()].clone() {
            let w = self.step(n);
            total.add(w);
        }
        total
    }

    fn step(&mut self, n: NodeIndex) -> Worst {
        let (program, flow) = (self.program, self.flow);
        let step = &flow.graph[n];
        let mut w = Worst::default();
        let counts_as_step = step.named && !matches!(step.kind, StepKind::LoopItem { .. });
        if counts_as_step {
            w.steps = 1.0;
        }
        match &step.kind {
            StepKind::Llm(l) => w.add(llm_worst(program, flow, n, l)),
            StepKind::Call { target, .. } => w.add(self.call(*target, step.span, &step.name)),
            StepKind::Loop { item, body, .. } => {
                let body_worst = self.region(*body);
                let iterable_ty = match &flow.graph[*item].kind {
                    StepKind::LoopItem { iterable } => iterable.ty.clone(),
                    _ => crate::types::Ty::Error,
                };
                match program.types.max_len(&iterable_ty) {
                    Some(max) => w.add(body_worst.times(max as f64, "iterations")),
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
        if let Some(Fallback::Call(target, _, span)) = &step.fallback {
            let f = self.call(*target, *span, &format!("{} (fallback)", step.name));
            w.add(f);
        }
        w
    }

    fn call(&mut self, target: CallTarget, span: Span, name: &str) -> Worst {
        let program = self.program;
        match target {
            CallTarget::Tool(t) => {
                let tool = &program.tools[t.index()];
                let attempts = 1.0 + tool.retry.as_ref().map_or(0.0, |r| r.retries as f64);
                Worst { tool_calls: attempts, ..Worst::default() }
            }
            CallTarget::Agent(a) => agent_worst(program, &program.agents[a.index()], span),
            CallTarget::Flow(f) => {
                let mut w = flow_worst(program, f.index(), self.acyclic, self.memo, self.out, self.depth + 1);
                let callee = &program.flows[f.index()].name;
                w.terms = vec![Term {
                    span,
                    text: format!("`{name}` calls flow `{callee}`: {} tokens", group(w.tokens)),
                    tokens: w.tokens,
                    cost: w.cost,
                    steps: w.steps,
                }];
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
                format!("loop `{}` {} once per item, and its list has no maximum length", step.name, spends.join(" and ")),
            )
            .label("unbounded loop")
            .with(iterable_span, "a list with no `len ..N`")
            .help("bound the list's type, as in `[Document] len ..50`: the bound is validated when the list arrives and makes the worst case provable"),
        );
    }
}

fn llm_worst(program: &Program, flow: &Flow, n: NodeIndex, l: &LlmCall) -> Worst {
    let step = &flow.graph[n];
    let mut w = Worst::default();
    if l.model.index() >= program.models.len() {
        return w;
    }
    let attempts = 1 + l.retry.as_ref().map_or(0, |r| r.retries);
    let prompt = prompt_tokens(program, flow, l.prompt.as_ref()) + prompt_tokens(program, flow, l.system.as_ref());
    for model in chain(program, l.model) {
        let m = &program.models[model.index()];
        let Some(max_out) = l.max_tokens.or(m.max_tokens) else { continue };
        let tokens = attempts as f64 * (prompt + max_out as f64);
        let cost = match &m.price {
            Some(p) => attempts as f64 * (prompt * p.input + max_out as f64 * p.output) / 1e6,
            None => {
                w.unpriced = Some((step.span, format!("model `{}` ({:?})", m.name, m.model_id)));
                0.0
            }
        };
        w.tokens += tokens;
        w.cost += cost;
        let via = if model == l.model { String::new() } else { format!(" on fallback `{}`", m.name) };
        w.terms.push(Term {
            span: step.span,
            text: format!(
                "llm `{}`{via}: {attempts} attempt{} × ({} max_tokens + {} prompt) = {} tokens",
                step.name,
                if attempts == 1 { "" } else { "s" },
                group(max_out as f64),
                group(prompt),
                group(tokens)
            ),
            tokens,
            cost,
            steps: 0.0,
        });
    }
    w
}

fn agent_worst(program: &Program, agent: &crate::ir::Agent, span: Span) -> Worst {
    let mut w = Worst::default();
    let steps = agent.max_steps.unwrap_or(0) as f64;
    w.steps = steps;
    w.tool_calls = steps;
    let Some(model) = agent.model else { return w };
    let prompt = agent.instructions.as_ref().map_or(0.0, |t| (t.text_len() as f64 / 4.0).ceil());
    for id in chain(program, model) {
        let m = &program.models[id.index()];
        let Some(max_out) = m.max_tokens else { continue };
        let tokens = steps * (prompt + max_out as f64);
        w.tokens += tokens;
        match &m.price {
            Some(p) => w.cost += steps * (prompt * p.input + max_out as f64 * p.output) / 1e6,
            None => w.unpriced = Some((span, format!("model `{}` ({:?})", m.name, m.model_id))),
        }
        w.terms.push(Term {
            span,
            text: format!(
                "agent `{}`: {} max_steps × ({} max_tokens + {} prompt) = {} tokens",
                agent.name,
                group(steps),
                group(max_out as f64),
                group(prompt),
                group(tokens)
            ),
            tokens,
            cost: w.cost,
            steps,
        });
    }
    w
}

/// The model and its fallbacks, each once.
fn chain(program: &Program, first: ModelId) -> Vec<ModelId> {
    let mut out = vec![first];
    let mut m = first;
    while let Some(f) = program.models[m.index()].fallback {
        if out.contains(&f) {
            break;
        }
        out.push(f);
        m = f;
    }
    out
}

fn prompt_tokens(program: &Program, flow: &Flow, t: Option<&Template>) -> f64 {
    let Some(t) = t else { return 0.0 };
    let mut tokens = (t.text_len() as f64 / 4.0).ceil();
    for part in &t.parts {
        if let TemplatePart::Expr(e) = part {
            let mut steps = Vec::new();
            e.steps(&mut steps);
            for s in steps {
                if let StepKind::Call { target: CallTarget::Tool(tool), .. } = &flow.graph[s].kind {
                    tokens += program.tools[tool.index()].limit_tokens.unwrap_or(0) as f64;
                }
            }
        }
    }
    tokens
}

fn compare(program: &Program, owner: &str, budget: &Budget, worst: &Worst, out: &mut Vec<Diagnostic>) {
    let _ = program;
    if worst.unbounded {
        return;
    }
    let mut over = Vec::new();
    if let Some(limit) = budget.tokens {
        if worst.tokens > limit as f64 {
            over.push(("tokens", group(worst.tokens), group(limit as f64), Metric::Tokens));
        }
    }
    if let Some(limit) = budget.cost {
        if let Some((span, model)) = &worst.unpriced {
            out.push(
                Diagnostic::new(Code::BudgetExceeded, *span, format!("the cost of {owner} has no bound: {model} has no price"))
                    .label("unpriced model call")
                    .with(budget.span, format!("budget of {}", money(limit)))
                    .help("use a model the provider prices (see `std.models`), or add a `price` for it to the provider"),
            );
        } else if worst.cost > limit + 1e-9 {
            over.push(("cost", money(worst.cost), money(limit), Metric::Cost));
        }
    }
    if let Some(limit) = budget.steps {
        if worst.steps > limit as f64 {
            over.push(("steps", group(worst.steps), group(limit as f64), Metric::Steps));
        }
    }
    if let Some(limit) = budget.tool_calls {
        if worst.tool_calls > limit as f64 {
            over.push(("tool_calls", group(worst.tool_calls), group(limit as f64), Metric::ToolCalls));
        }
    }
    for (what, found, limit, metric) in over {
        let mut terms: Vec<&Term> = worst.terms.iter().filter(|t| metric.of(t) > 0.0).collect();
        terms.sort_by(|a, b| metric.of(b).total_cmp(&metric.of(a)).then(a.span.cmp(&b.span)));
        let mut help = format!("worst case {found} {what}");
        match metric {
            Metric::Tokens | Metric::Cost => {
                let lines: Vec<String> = terms.iter().take(4).map(|t| t.text.clone()).collect();
                if !lines.is_empty() {
                    help = format!("{help} = {}", lines.join(" + "));
                    if terms.len() > 4 {
                        help.push_str(&format!(" + {} more", terms.len() - 4));
                    }
                }
            }
            Metric::Steps | Metric::ToolCalls => {}
        }
        help.push_str(&format!(
            "; raise the budget to at least {found}, or lower max_tokens, retries or the lists' maximum lengths"
        ));
        let mut d = Diagnostic::new(Code::BudgetExceeded, budget.span, format!("{owner} can spend {found} {what}, over its budget of {limit}"))
            .label(format!("budget of {limit} {what}"))
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
            Metric::ToolCalls => 0.0,
        }
    }
}

/// 12345.0 → "12,345".
fn group(n: f64) -> String {
    let n = n.ceil() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn money(n: f64) -> String {
    if n >= 1.0 {
        format!("${n:.2}")
    } else {
        format!("${n:.4}")
    }
}
