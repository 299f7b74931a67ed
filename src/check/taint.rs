//! A002: untrusted content reaches a write or irreversible call that no
//! reviewer saw it go into. This is how a prompt injection in a fetched page
//! turns into an unreviewed email or payment.
//!
//! - Sources: a tool's result, an agent's answer, a model's output.
//! - Sanitizers: a type that cannot carry instructions (numbers, booleans,
//!   literals and unions of literals, strings with a `matching` pattern that
//!   the runtime validates, and lists or records of those); an approval
//!   gate's value (the reviewer saw it, unless the gate approves itself on
//!   timeout); and a value shown by a gate that guards the call.
//! - Sinks: the arguments of calls of `irreversible` tools and of agents
//!   that may use them; and of `write` calls that a gate guards (the author
//!   put the write up for review, so the review must cover what it writes).
//!   An unguarded write is not a sink: writes can be corrected, and flows
//!   write model output routinely.
//!
//! The search runs backwards from each sink argument through `let`s, loops,
//! branches and sub-flows. A per-flow summary says which parameters reach
//! the flow's result and which reach a sink inside it, so a value passed
//! through a sub-flow, or into one that sends it, is followed both ways.

use std::collections::{HashMap, HashSet, VecDeque};

use petgraph::graph::NodeIndex;

use crate::ast::Effect;
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{CallTarget, Expr, ExprKind, Fallback, Flow, Program, StepKind, TemplatePart};
use crate::source::Span;
use crate::types::{Ty, TypeTable};

use super::approval::{guards, Guards};
use super::effect_of;

/// One step of a path from a source to a sink, as a label.
type Hop = (Span, String);

#[derive(Clone, Debug)]
enum Origin {
    /// Untrusted content, with the path from where it entered, and what
    /// first produced it (a tool's result, a model's output), which a
    /// caller names with the flow that returned it.
    Source(Vec<Hop>, String),
    /// The flow's parameter, with the path from it.
    Param(usize, Vec<Hop>),
}

#[derive(Clone, Debug, Default)]
struct Summary {
    /// Where the flow's result comes from (untrusted sources, parameters).
    output: Vec<Origin>,
    /// Per parameter: the path from it to a sink inside the flow, if any.
    param_sinks: Vec<Option<Vec<Hop>>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Item {
    Node(NodeIndex),
    Param(usize),
}

/// How many hops of a path a report shows (the first ones, source first):
/// a path kept in a summary is cut to this, so a chain of sub-flows that
/// passes a value on does not make every caller's path longer than its
/// callee's.
const SHOWN_HOPS: usize = 8;

/// `callees_first`: every flow after the flows it calls
/// ([`super::graph::recursion`]), so each call site reads its callee's
/// summary, made already, and no chain of calls recurses.
pub(super) fn check(
    program: &Program,
    analyzable: &[bool],
    callees_first: &[usize],
    orders: &[Option<Vec<NodeIndex>>],
    output_gated: &[bool],
    out: &mut Vec<Diagnostic>,
) {
    let mut memo: Vec<Option<Summary>> = vec![None; program.flows.len()];
    let cx = Analysis {
        program,
        analyzable,
        orders,
        output_gated,
    };
    for &i in callees_first {
        let summary = analyze(&cx, i, &memo, out);
        memo[i] = Some(summary);
    }
}

/// What `analyze` reads for every flow.
struct Analysis<'a> {
    program: &'a Program,
    analyzable: &'a [bool],
    /// Per flow, its steps in topological order (`graph::cycles`).
    orders: &'a [Option<Vec<NodeIndex>>],
    output_gated: &'a [bool],
}

/// Flow `i`'s summary, reporting what reaches a sink inside it; the
/// summaries of the flows it calls are in `memo` (a recursive flow's is
/// empty: it is not analyzed).
fn analyze(
    cx: &Analysis<'_>,
    i: usize,
    memo: &[Option<Summary>],
    out: &mut Vec<Diagnostic>,
) -> Summary {
    let program = cx.program;
    let flow = &program.flows[i];
    let order = match &cx.orders[i] {
        Some(order) if cx.analyzable[i] => order,
        _ => return Summary::default(),
    };
    let guards = guards(flow, order, cx.output_gated);
    let cx = FlowTaint {
        program,
        flow,
        guards: &guards,
        memo,
    };
    let mut summary = Summary {
        output: Vec::new(),
        param_sinks: vec![None; flow.params.len()],
    };
    if let Some(o) = flow.output_step {
        if let StepKind::Output(e) = &flow.graph[o].kind {
            summary.output = cx.trace(e, o);
        }
    }
    let mut found = Vec::new();
    for n in flow.graph.node_indices() {
        for (target, args, call_span) in call_sites(flow, n) {
            for (name, arg) in args {
                let (into, what) = match target {
                    CallTarget::Flow(f) => {
                        let callee = &program.flows[f.index()];
                        let Some(p) = callee.params.iter().position(|p| p.name == *name) else {
                            continue;
                        };
                        match cx.memo[f.index()]
                            .as_ref()
                            .and_then(|s| s.param_sinks.get(p).cloned().flatten())
                        {
                            Some(path) => (path, format!("flow `{}`", callee.name)),
                            None => continue,
                        }
                    }
                    _ => {
                        let effect = effect_of(program, target);
                        // Writes are correctable, and flows write model
                        // output routinely (notes, drafts); a write that a
                        // gate guards was put up for review, and the review
                        // must cover what it writes.
                        let reviewed = guards.of[n.index()] != 0;
                        if effect < Effect::Write || (effect == Effect::Write && !reviewed) {
                            continue;
                        }
                        let name_of = target.name(program);
                        let what = match (target, effect) {
                            (CallTarget::Agent(_), _) => {
                                format!("agent `{name_of}`, which may {}", effect.as_str())
                            }
                            (_, Effect::Irreversible) => {
                                format!("`{name_of}`, which is irreversible")
                            }
                            _ => format!("`{name_of}`, which writes"),
                        };
                        (
                            vec![(call_span, format!("argument `{name}` of `{name_of}`"))],
                            what,
                        )
                    }
                };
                for origin in cx.trace(arg, n) {
                    match origin {
                        Origin::Source(mut path, _) => {
                            path.extend(into.iter().cloned());
                            found.push((arg.span, name.clone(), what.clone(), path, n));
                        }
                        Origin::Param(p, mut path) => {
                            if summary.param_sinks[p].is_none() {
                                path.extend(into.iter().cloned());
                                path.truncate(SHOWN_HOPS);
                                summary.param_sinks[p] = Some(path);
                            }
                        }
                    }
                }
            }
        }
    }
    for (span, arg, what, path, n) in found {
        let mut d = report(flow, span, &arg, &what, &path, n);
        for gate in guards.gates_in(guards.of[n.index()]) {
            if let StepKind::Approve(a) = &flow.graph[gate].kind {
                let name = &a.gate;
                d = d.with(
                    flow.graph[gate].span,
                    format!("gate `{name}` guards the call but shows something else"),
                );
            }
        }
        out.push(d);
    }
    summary
}

fn report(
    flow: &Flow,
    span: Span,
    arg: &str,
    what: &str,
    path: &[Hop],
    n: NodeIndex,
) -> Diagnostic {
    let source = path.first().map(|(_, t)| t.clone()).unwrap_or_default();
    let mut d = Diagnostic::new(
        Code::UntrustedToEffect,
        span,
        format!(
            "untrusted content reaches argument `{arg}` of {what}, and no gate before it shows that content"
        ),
    )
    .label(format!("carries {source}"));
    // The path, source first; the last hops are the argument itself.
    let mut seen: HashSet<Span> = HashSet::from([span]);
    for (s, text) in path.iter().take(SHOWN_HOPS) {
        if seen.insert(*s) {
            d = d.with(*s, text.clone());
        }
    }
    d.help(format!(
        "a reviewer must see what {} acts on: show this value at the approval gate that guards the call (`approve … {{ show value }}`) and pass the gate's value, or give it a type that cannot carry instructions (a union of literals, a number, a string `matching` a pattern); in `flow {}`",
        flow.graph[n].display(),
        flow.name
    ))
}

/// The calls a step makes (its call and its fallback call), with arguments.
/// A call a step makes: its target, its arguments and where it is written.
type CallSite<'a> = (CallTarget, &'a [(String, Expr)], Span);

fn call_sites(flow: &Flow, n: NodeIndex) -> Vec<CallSite<'_>> {
    let step = &flow.graph[n];
    let mut out = Vec::new();
    if let StepKind::Call { target, args } = &step.kind {
        out.push((*target, args.as_slice(), step.span));
    }
    if let Some(Fallback::Call(target, args, span)) = step.fallback.as_deref() {
        out.push((*target, args.as_slice(), *span));
    }
    out
}

struct FlowTaint<'a> {
    program: &'a Program,
    flow: &'a Flow,
    guards: &'a Guards,
    memo: &'a [Option<Summary>],
}

impl FlowTaint<'_> {
    /// Where the content of `e`, read by step `at`, can come from. Values
    /// shown by the gates that guard `at` were seen by a reviewer: the search
    /// stops there.
    fn trace(&self, e: &Expr, at: NodeIndex) -> Vec<Origin> {
        let g = &self.flow.graph;
        let mut shown: HashSet<NodeIndex> = HashSet::new();
        for gate in self.guards.gates_in(self.guards.of[at.index()]) {
            shown.insert(gate);
            if let StepKind::Approve(a) = &g[gate].kind {
                let show = &a.show;
                let mut steps = Vec::new();
                for s in show {
                    s.steps(&mut steps);
                }
                shown.extend(steps);
            }
        }
        // Breadth first, so each origin comes with a shortest path; `next`
        // points one hop closer to the sink.
        let mut next: HashMap<Item, (Option<Item>, Span, String)> = HashMap::new();
        let mut queue: VecDeque<Item> = VecDeque::new();
        let mut origins = Vec::new();
        let mut start = Vec::new();
        reads(&self.program.types, e, &mut start);
        for (item, span) in start {
            if let std::collections::hash_map::Entry::Vacant(v) = next.entry(item) {
                v.insert((None, span, String::new()));
                queue.push_back(item);
            }
        }
        while let Some(item) = queue.pop_front() {
            let n = match item {
                Item::Param(p) => {
                    origins.push(Origin::Param(p, self.path(&next, item, None)));
                    continue;
                }
                Item::Node(n) => n,
            };
            if shown.contains(&n) || inert(&self.program.types, &g[n].ty) {
                continue;
            }
            let step = &g[n];
            let mut more: Vec<(Item, Span)> = Vec::new();
            // What the content is called here, and what produced it.
            let mut source: Option<(String, String)> = None;
            let produced = |what: String| Some((what.clone(), what));
            let mut via = format!("flows into {}", step.display());
            let mut calls: Vec<CallSite<'_>> = Vec::new();
            match &step.kind {
                StepKind::Call { .. } => calls = call_sites(self.flow, n),
                StepKind::Llm(l) => {
                    source = produced(format!(
                        "the output of model `{}`",
                        self.program
                            .models
                            .get(l.model.index())
                            .map_or("?", |m| m.name.as_str())
                    ))
                }
                StepKind::Value(e) | StepKind::Output(e) => {
                    reads(&self.program.types, e, &mut more)
                }
                kind @ StepKind::Approve(a) => {
                    let show = &a.show;
                    // A gate's value was reviewed, unless nobody had to look.
                    if !super::approval::reviewed(kind) {
                        for s in show.iter().take(1) {
                            reads(&self.program.types, s, &mut more);
                        }
                    }
                }
                StepKind::LoopItem { iterable } => {
                    via = format!("is {}", step.display());
                    reads(&self.program.types, iterable, &mut more)
                }
                StepKind::Loop {
                    result,
                    item,
                    tolerate,
                    ..
                } => {
                    more.push((Item::Node(*result), step.span));
                    // A tolerant loop's `failed` list quotes the items and
                    // the errors, whatever the iterations produced.
                    if tolerate.is_some() {
                        more.push((Item::Node(*item), step.span));
                    }
                }
                StepKind::Branch { arms, .. } => more.extend(
                    arms.iter()
                        .filter_map(|a| a.result)
                        .map(|r| (Item::Node(r), step.span)),
                ),
                StepKind::Decide { .. } | StepKind::Check { .. } => {}
            }
            if let Some(Fallback::Value(e)) = step.fallback.as_deref() {
                reads(&self.program.types, e, &mut more);
            }
            if !matches!(step.kind, StepKind::Call { .. }) {
                if let Some(Fallback::Call(..)) = step.fallback.as_deref() {
                    calls = call_sites(self.flow, n);
                }
            }
            for (target, args, _) in calls {
                match target {
                    CallTarget::Tool(t) => {
                        source = produced(format!(
                            "the result of tool `{}`",
                            self.program.tools[t.index()].name
                        ))
                    }
                    CallTarget::Agent(a) => {
                        source = produced(format!(
                            "the answer of agent `{}`",
                            self.program.agents[a.index()].name
                        ))
                    }
                    CallTarget::Flow(f) => {
                        let callee = &self.program.flows[f.index()];
                        let Some(summary) = &self.memo[f.index()] else {
                            continue;
                        };
                        for o in &summary.output {
                            match o {
                                // Named by what produced it and the flow
                                // that returned it here: through a chain
                                // of flows the words stay this long.
                                Origin::Source(_, produced) => {
                                    source = Some((
                                        format!("{produced}, returned by flow `{}`", callee.name),
                                        produced.clone(),
                                    ));
                                }
                                Origin::Param(p, _) => {
                                    let Some(param) = callee.params.get(*p) else {
                                        continue;
                                    };
                                    if let Some((_, a)) =
                                        args.iter().find(|(name, _)| *name == param.name)
                                    {
                                        via = format!(
                                            "goes through flow `{}` into {}",
                                            callee.name,
                                            step.display()
                                        );
                                        reads(&self.program.types, a, &mut more);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if let Some((what, produced)) = source {
                next.entry(item).and_modify(|e| e.2 = what);
                origins.push(Origin::Source(
                    self.path(&next, item, Some(step.span)),
                    produced,
                ));
                continue;
            }
            if let Some(e) = next.get_mut(&item) {
                e.2 = via;
            }
            for (m, span) in more {
                if let std::collections::hash_map::Entry::Vacant(v) = next.entry(m) {
                    v.insert((Some(item), span, String::new()));
                    queue.push_back(m);
                }
            }
        }
        origins
    }

    /// The hops from `item` to the sink, source first.
    fn path(
        &self,
        next: &HashMap<Item, (Option<Item>, Span, String)>,
        item: Item,
        at: Option<Span>,
    ) -> Vec<Hop> {
        let mut hops = Vec::new();
        let mut cur = Some(item);
        let mut first = true;
        while let Some(i) = cur {
            let Some((up, span, text)) = next.get(&i) else {
                break;
            };
            let label_span = match (first, at, i) {
                (true, Some(s), _) => s,
                (_, _, Item::Node(n)) => self.flow.graph[n].span,
                _ => *span,
            };
            let text = match i {
                Item::Param(p) => format!(
                    "parameter `{}`",
                    self.flow.params.get(p).map_or("?", |p| p.name.as_str())
                ),
                _ => text.clone(),
            };
            if !text.is_empty() {
                hops.push((label_span, text));
            }
            first = false;
            cur = *up;
        }
        hops
    }
}

/// The steps and parameters whose content `e` carries, with where it reads
/// them; parts whose type cannot carry instructions are left out.
fn reads(types: &TypeTable, e: &Expr, out: &mut Vec<(Item, Span)>) {
    if inert(types, &e.ty) {
        return;
    }
    match &e.kind {
        ExprKind::Step(n) => out.push((Item::Node(*n), e.span)),
        ExprKind::Param(p) => out.push((Item::Param(*p), e.span)),
        ExprKind::Str(t) => {
            for part in &t.parts {
                if let TemplatePart::Expr(x) = part {
                    reads(types, x, out);
                }
            }
        }
        ExprKind::Object(fields) => fields.iter().for_each(|(_, x)| reads(types, x, out)),
        ExprKind::List(items) => items.iter().for_each(|x| reads(types, x, out)),
        ExprKind::Member(base, _) | ExprKind::Index(base, _) => reads(types, base, out),
        _ => {}
    }
}

/// Whether a value of this type cannot carry instructions: its every
/// possible value is fixed by the type, or checked against a pattern.
fn inert(types: &TypeTable, ty: &Ty) -> bool {
    inert_at(types, ty, 0)
}

fn inert_at(types: &TypeTable, ty: &Ty, depth: u32) -> bool {
    if depth > 16 {
        return false;
    }
    match ty {
        Ty::Named(_) => inert_at(types, types.resolve(ty), depth + 1),
        Ty::Number(_) | Ty::Int(_) | Ty::Bool | Ty::Null | Ty::Literal(_) | Ty::Union(_) => true,
        Ty::String(c) => c.pattern.is_some(),
        Ty::Optional(inner) | Ty::List(inner, _) => inert_at(types, inner, depth + 1),
        Ty::Record(fields, _) => fields.iter().all(|f| inert_at(types, &f.ty, depth + 1)),
        // Already reported where it came from.
        Ty::Error => true,
        Ty::Json | Ty::Schema(_) => false,
    }
}
