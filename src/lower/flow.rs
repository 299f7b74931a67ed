//! Flow bodies → step graphs, and `test` blocks.
//!
//! A flow body is a set of bindings, not a sequence: a step may use a value
//! written below it. So bindings are declared first and each is defined on
//! demand, the first time its value (and so its type) is needed. A binding
//! reached again while it is being defined is a cycle; the edge is kept and
//! `check` reports it with the whole loop.

use rustc_hash::{FxHashMap as HashMap, FxHashSet};

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::ast::{self, Decision, Stmt};
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::*;
use crate::source::Span;
use crate::suggest::did_you_mean;
use crate::types::{Constraints, Lit, Ty};

use super::expr::{lower_expr, lower_template, mismatch};
use super::narrow::{self, Subject};
use super::{lit, Lowerer, Symbol};

/// A call's target, its typed arguments, and its result type.
type ResolvedCall = (CallTarget, Vec<(String, Expr)>, Ty);

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    InProgress,
    Done,
}

#[derive(Clone, Copy)]
enum Pending<'a> {
    Let(&'a ast::Let),
    Check(&'a ast::Check),
}

struct FlowBuilder<'a> {
    m: usize,
    name: String,
    params: Vec<(String, Ty)>,
    graph: petgraph::graph::DiGraph<Step, Dep>,
    regions: Vec<Region>,
    region_nodes: Vec<Vec<NodeIndex>>,
    /// Names borrow the syntax tree: a large flow binds thousands.
    scopes: Vec<HashMap<&'a str, NodeIndex>>,
    /// Every binding of the flow by name, with its region: a name is bound
    /// once per flow, except in exclusive arms of one branch.
    names: HashMap<&'a str, Vec<(Span, RegionId)>>,
    gates: HashMap<String, Span>,
    /// Per node (by index): a binding's declaration, its region, the scope
    /// depth it was declared at, and how far its definition has got; `None`
    /// for the nodes that are not bindings.
    bindings: Vec<Option<(Pending<'a>, RegionId, usize, State)>>,
    /// Loops being lowered, with their body region (for D002).
    open_loops: Vec<(NodeIndex, RegionId)>,
    region: RegionId,
    checks: Vec<NodeIndex>,
    unresolved: bool,
    dropped_after: Vec<NodeIndex>,
    /// Names whose type is narrowed inside an arm, by the arm's region
    /// (see `narrow.rs`).
    narrowed: Vec<(RegionId, Subject, Ty)>,
    after_points: std::collections::BTreeMap<NodeIndex, AfterPoint>,
    /// The steps an expression reads, for `connect`: one buffer for every
    /// expression of the flow.
    reads: Vec<NodeIndex>,
}

/// The stack [`FlowBuilder::define`] keeps free for one level of its
/// recursion (a definition, its expressions and the calls in them), with a
/// wide margin.
const DEFINE_RED_ZONE: usize = 128 << 10;

/// The size of each stack segment [`FlowBuilder::define`] adds when less
/// than [`DEFINE_RED_ZONE`] is left.
const DEFINE_STACK_SEGMENT: usize = 4 << 20;

/// An empty table with room for `capacity` entries.
fn map_with_capacity<K, V>(capacity: usize) -> HashMap<K, V> {
    HashMap::with_capacity_and_hasher(capacity, Default::default())
}

pub(crate) fn lower_flow(cx: &mut Lowerer<'_, '_>, m: usize, id: FlowId, decl: &ast::FlowDecl) {
    let params: Vec<(String, Ty)> = cx.program.flows[id.index()]
        .params
        .iter()
        .map(|p| (p.name.clone(), p.ty.clone()))
        .collect();
    // Sized once: a step is a few hundred bytes, and growing by doubling
    // copies them all each time.
    let steps = steps_in(&decl.body);
    let mut b = FlowBuilder {
        m,
        name: decl.name.name.clone(),
        params,
        graph: petgraph::graph::DiGraph::with_capacity(steps, 2 * steps),
        regions: vec![Region {
            parent: None,
            kind: RegionKind::Root,
        }],
        region_nodes: vec![Vec::new()],
        scopes: Vec::new(),
        // Sized once, as the graph: rehashing tables of every step's name
        // was a fifth of lowering a big flow.
        names: map_with_capacity(steps),
        gates: HashMap::default(),
        bindings: Vec::with_capacity(steps),
        open_loops: Vec::new(),
        region: RegionId(0),
        checks: Vec::new(),
        unresolved: false,
        dropped_after: Vec::new(),
        narrowed: Vec::new(),
        after_points: Default::default(),
        reads: Vec::new(),
    };
    let root = RegionId(0);
    b.scopes.push(map_with_capacity(steps));
    let declared = b.declare(cx, &decl.body, root);
    for node in declared {
        b.define(cx, node);
    }
    let mut budget: Option<Budget> = None;
    let mut output: Option<NodeIndex> = None;
    for stmt in &decl.body {
        match stmt {
            // A second `budget` is reported by the parser (T007).
            Stmt::Budget(bd) if budget.is_none() => budget = Some(cx.budget(bd)),
            Stmt::Budget(_) => {}
            Stmt::Return(e, span) => {
                if let Some(prev) = output {
                    let prev_span: Span = b.graph[prev].span;
                    let d = Diagnostic::new(
                        Code::BadReturn,
                        *span,
                        format!("flow `{}` returns twice", decl.name.name),
                    )
                    .label("second `return`")
                    .with(prev_span, "first `return`")
                    .help("a flow has exactly one `return`: it is the flow's value, not a jump");
                    cx.report(d);
                    continue;
                }
                let value = b.expr(cx, e);
                let flow_output = cx.program.flows[id.index()].output.clone();
                if !cx.program.types.assignable(&value.ty, &flow_output) {
                    mismatch(
                        cx,
                        value.span,
                        &flow_output,
                        &value.ty,
                        "the returned value must have the flow's declared type",
                    );
                }
                let node = b.add(Step {
                    name: "return".into(),
                    span: *span,
                    region: root,
                    kind: StepKind::Value(value.clone()),
                    ty: value.ty.clone(),
                    fallback: None,
                    named: false,
                });
                b.connect(&value, node);
                b.graph[node].kind = StepKind::Output(value);
                output = Some(node);
            }
            _ => {}
        }
    }
    if output.is_none() {
        let d = Diagnostic::new(
            Code::BadReturn,
            decl.name.span,
            format!("flow `{}` has no `return`", decl.name.name),
        )
        .label("this flow produces no value")
        .help("end the flow with `return value`, whose type is the flow's declared result");
        cx.report(d);
    }
    b.add_guards();
    let flow = &mut cx.program.flows[id.index()];
    flow.budget = budget;
    flow.graph = b.graph;
    flow.regions = b.regions;
    flow.output_step = output;
    flow.unresolved = b.unresolved;
    flow.dropped_after = b.dropped_after;
    flow.after_points = b.after_points;
}

impl<'a> FlowBuilder<'a> {
    fn add(&mut self, step: Step) -> NodeIndex {
        let region = step.region;
        let n = self.graph.add_node(step);
        self.bindings.push(None);
        self.region_nodes[region.index()].push(n);
        n
    }

    fn new_region(&mut self, kind: RegionKind) -> RegionId {
        self.regions.push(Region {
            parent: Some(self.region),
            kind,
        });
        self.region_nodes.push(Vec::new());
        RegionId(self.regions.len() as u32 - 1)
    }

    /// Adds a data edge from every step `e` reads to `to`.
    fn connect(&mut self, e: &Expr, to: NodeIndex) {
        let mut reads = std::mem::take(&mut self.reads);
        reads.clear();
        e.steps(&mut reads);
        self.connect_all(&reads, to, Dep::Data);
        self.reads = reads;
    }

    fn connect_template(&mut self, t: &Template, to: NodeIndex) {
        let mut reads = std::mem::take(&mut self.reads);
        reads.clear();
        t.steps(&mut reads);
        self.connect_all(&reads, to, Dep::Data);
        self.reads = reads;
    }

    fn connect_all(&mut self, from: &[NodeIndex], to: NodeIndex, dep: Dep) {
        for &f in from {
            if !self
                .graph
                .edges_connecting(f, to)
                .any(|e| *e.weight() == dep)
            {
                self.graph.add_edge(f, to, dep);
            }
        }
    }

    /// Creates a node for every binding of a block and makes its name visible.
    fn declare(
        &mut self,
        cx: &mut Lowerer<'_, '_>,
        stmts: &'a [Stmt],
        region: RegionId,
    ) -> Vec<NodeIndex> {
        let depth = self.scopes.len();
        let mut out = Vec::new();
        for stmt in stmts {
            let (name, span, pending) = match stmt {
                Stmt::Let(l) => (&l.name, l.span, Pending::Let(l)),
                Stmt::Check(c) => (&c.name, c.span, Pending::Check(c)),
                _ => continue,
            };
            let clash = self.names.get(name.name.as_str()).and_then(|prev| {
                prev.iter()
                    .find(|(_, r)| !self.exclusive_regions(*r, region))
                    .map(|(s, _)| *s)
            });
            if let Some(prev) = clash {
                let d = Diagnostic::new(Code::DuplicateName, name.span, format!("`{}` is bound twice in flow `{}`", name.name, self.name))
                    .label("bound again here")
                    .with(prev, "first bound here")
                    .help("every step in a flow has its own name, so traces and resumed runs can tell them apart; only the arms of one `if` or `match`, of which one runs, may each bind the same name");
                cx.report(d);
                // Still bound here, so the uses below it resolve and are
                // not also reported as unknown names; one of the two now
                // looks unused, which is the same mistake (no X001).
                self.unresolved = true;
            } else if self.params.iter().any(|(p, _)| *p == name.name) {
                let d = Diagnostic::new(
                    Code::DuplicateName,
                    name.span,
                    format!(
                        "`{}` is already a parameter of flow `{}`",
                        name.name, self.name
                    ),
                )
                .label("shadows the parameter")
                .help("give the step another name");
                cx.report(d);
            } else {
                self.names
                    .entry(name.name.as_str())
                    // Most names are bound once.
                    .or_insert_with(|| Vec::with_capacity(1))
                    .push((name.span, region));
            }
            let _ = span;
            let kind = match pending {
                Pending::Check(_) => StepKind::Check {
                    requires: Vec::new(),
                },
                Pending::Let(_) => StepKind::Value(null_expr(name.span)),
            };
            let node = self.add(Step {
                name: name.name.clone(),
                span: name.span,
                region,
                kind,
                ty: Ty::Error,
                fallback: None,
                named: true,
            });
            if let Some(scope) = self.scopes.last_mut() {
                scope.insert(name.name.as_str(), node);
            }
            self.bindings[node.index()] = Some((pending, region, depth, State::Pending));
            out.push(node);
        }
        out
    }

    /// Defines a declared binding (once), in the scope it was declared in.
    /// A step that reads a step declared after it defines that one first,
    /// and so on down a chain as long as the flow: each level takes a few
    /// KiB of stack, so a chain of some thousands of steps written in reverse
    /// would overflow the thread's stack. Past [`DEFINE_RED_ZONE`] the
    /// definition goes on in a stack segment of its own, on the heap.
    fn define(&mut self, cx: &mut Lowerer<'_, '_>, node: NodeIndex) {
        if !matches!(self.bindings[node.index()], Some((.., State::Pending))) {
            return;
        }
        stacker::maybe_grow(DEFINE_RED_ZONE, DEFINE_STACK_SEGMENT, || {
            self.define_pending(cx, node)
        });
    }

    fn define_pending(&mut self, cx: &mut Lowerer<'_, '_>, node: NodeIndex) {
        let Some((pending, region, depth, state)) = &mut self.bindings[node.index()] else {
            return;
        };
        *state = State::InProgress;
        let (pending, region, depth) = (*pending, *region, *depth);
        let saved_scopes = self.scopes.split_off(depth.min(self.scopes.len()));
        let saved_region = std::mem::replace(&mut self.region, region);
        let saved_loops = std::mem::take(&mut self.open_loops);
        // The loops enclosing the definition site are still open.
        self.open_loops = saved_loops
            .iter()
            .copied()
            .filter(|(_, body)| self.within(region, *body))
            .collect();
        match pending {
            Pending::Let(l) => {
                let end = |s: Span| Span::new(s.file, s.end as usize, s.end as usize);
                let point = match l.after.last() {
                    Some(a) => AfterPoint::Extend(end(a.span)),
                    None => AfterPoint::New(end(l.span)),
                };
                self.after_points.insert(node, point);
                self.step_into(cx, node, &l.step, &l.name.name);
                if let Some(fb) = &l.fallback {
                    self.fallback(cx, node, fb);
                }
                // A loop or branch waits at its entry, so nothing inside it
                // starts before the steps named by `after`.
                let entry = match self.graph[node].kind {
                    StepKind::Loop { item, .. } => item,
                    StepKind::Branch { decide, .. } => decide,
                    _ => node,
                };
                for a in &l.after {
                    match self.lookup(&a.name) {
                        Some(target) => {
                            if target == node {
                                let d = Diagnostic::new(
                                    Code::Cycle,
                                    a.span,
                                    format!("`{}` cannot run after itself", a.name),
                                )
                                .label("names its own step")
                                .help("`after` names another step that must finish first");
                                cx.report(d);
                            } else {
                                self.define(cx, target);
                                self.connect_all(&[target], entry, Dep::After);
                            }
                        }
                        None => {
                            self.dropped_after.push(node);
                            self.unknown_name(cx, a);
                        }
                    }
                }
            }
            Pending::Check(c) => {
                let mut requires = Vec::new();
                for (cond, message) in &c.requires {
                    let e = self.expr(cx, cond);
                    if !cx.program.types.assignable(&e.ty, &Ty::Bool) {
                        mismatch(
                            cx,
                            e.span,
                            &Ty::Bool,
                            &e.ty,
                            "a `require` states a condition that must be true",
                        );
                    }
                    self.connect(&e, node);
                    let t = self.template(cx, message);
                    self.connect_template(&t, node);
                    requires.push((e, t));
                }
                self.graph[node].kind = StepKind::Check { requires };
                self.graph[node].ty = Ty::Bool;
                self.checks.push(node);
            }
        }
        self.open_loops = saved_loops;
        self.region = saved_region;
        self.scopes.extend(saved_scopes);
        if let Some((.., state)) = &mut self.bindings[node.index()] {
            *state = State::Done;
        }
    }

    /// Whether two regions sit in different arms of one branch, so that at
    /// most one of them runs.
    fn exclusive_regions(&self, a: RegionId, b: RegionId) -> bool {
        let arms = |r: RegionId| {
            let mut path = Vec::new();
            let mut r = Some(r);
            while let Some(id) = r {
                if let RegionKind::Arm { node, arm } = self.regions[id.index()].kind {
                    path.push((node, arm));
                }
                r = self.regions[id.index()].parent;
            }
            path
        };
        let (pa, pb) = (arms(a), arms(b));
        pa.iter()
            .any(|(n, arm)| pb.iter().any(|(n2, arm2)| n == n2 && arm != arm2))
    }

    fn within(&self, region: RegionId, ancestor: RegionId) -> bool {
        crate::ir::region_within(&self.regions, region, ancestor)
    }

    fn lookup(&self, name: &str) -> Option<NodeIndex> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    fn unknown_name(&mut self, cx: &mut Lowerer<'_, '_>, name: &ast::Ident) {
        self.unresolved = true;
        if cx.is_poisoned(self.m, &name.name) {
            return;
        }
        if let Some(symbol) = cx.lookup(self.m, &name.name) {
            let d = Diagnostic::new(Code::WrongKind, name.span, format!("`{}` is {}, not a value", name.name, symbol.kind()))
                .label("not a step or parameter")
                .help("expressions read parameters and the values of steps; call tools, agents and flows with `name(arg: value)`");
            cx.report(d);
            return;
        }
        let candidates: Vec<&str> = self
            .scopes
            .iter()
            .flat_map(|s| s.keys().copied())
            .chain(self.params.iter().map(|(n, _)| n.as_str()))
            .collect();
        let mut d = Diagnostic::new(
            Code::UndefinedName,
            name.span,
            format!("there is no step or parameter named `{}`", name.name),
        )
        .label("unknown name");
        d = match did_you_mean(&name.name, candidates) {
            // Every candidate is visible here, so the name fits as written.
            Some(s) => d.help(format!("did you mean `{s}`?")).suggest(name.span, s),
            None if self.names.contains_key(name.name.as_str()) => d.help(format!(
                "`{}` is bound inside a loop or branch, and is visible only there",
                name.name
            )),
            None => d.help("bind it with `let`, or add it to the flow's parameters"),
        };
        cx.report(d);
    }

    fn resolve(&mut self, cx: &mut Lowerer<'_, '_>, name: &ast::Ident) -> (ExprKind, Ty) {
        if let Some(node) = self.lookup(&name.name) {
            if let Some(&(lp, _)) = self.open_loops.iter().find(|(lp, _)| *lp == node) {
                let d = Diagnostic::new(
                    Code::LoopReadsOwnResults,
                    name.span,
                    format!("the body of loop `{}` reads the loop's own results", name.name),
                )
                .label("read inside its own loop")
                .with(self.graph[lp].span, "the loop is bound here")
                .help("iterations cannot see the list they are building; compute what they need before the loop");
                cx.report(d);
                return (ExprKind::Error, Ty::Error);
            }
            self.define(cx, node);
            let ty = self.narrowed_type(Subject::Step(node), &self.graph[node].ty);
            return (ExprKind::Step(node), ty);
        }
        if let Some(i) = self.params.iter().position(|(p, _)| *p == name.name) {
            let ty = self.narrowed_type(Subject::Param(i), &self.params[i].1);
            return (ExprKind::Param(i), ty);
        }
        self.unknown_name(cx, name);
        (ExprKind::Error, Ty::Error)
    }

    /// The type of `subject` where it is read: narrowed by the innermost
    /// enclosing arm that narrows it, else `declared`.
    fn narrowed_type(&self, subject: Subject, declared: &Ty) -> Ty {
        if self.narrowed.is_empty() {
            return declared.clone();
        }
        let mut region = Some(self.region);
        while let Some(r) = region {
            if let Some((_, _, ty)) = self
                .narrowed
                .iter()
                .find(|(nr, s, _)| *nr == r && *s == subject)
            {
                return ty.clone();
            }
            region = self.regions[r.index()].parent;
        }
        declared.clone()
    }

    /// The current type of every subject `cond` proves non-null when it is
    /// `truth`, without its `null`.
    fn non_null(&self, cx: &Lowerer<'_, '_>, cond: &Expr, truth: bool) -> Vec<(Subject, Ty)> {
        let mut subjects = Vec::new();
        narrow::non_null_when(cond, truth, &mut subjects);
        subjects
            .into_iter()
            .filter_map(|s| {
                let ty = match s {
                    Subject::Step(n) => self.narrowed_type(s, &self.graph[n].ty),
                    Subject::Param(i) => self.narrowed_type(s, &self.params[i].1),
                };
                narrow::without_null(&cx.program.types, &ty).map(|t| (s, t))
            })
            .collect()
    }

    fn expr(&mut self, cx: &mut Lowerer<'_, '_>, e: &ast::Expr) -> Expr {
        let mut resolve = |cx: &mut Lowerer<'_, '_>, name: &ast::Ident| self.resolve(cx, name);
        lower_expr(cx, e, &mut resolve)
    }

    fn template(&mut self, cx: &mut Lowerer<'_, '_>, t: &ast::Template) -> Template {
        let mut resolve = |cx: &mut Lowerer<'_, '_>, name: &ast::Ident| self.resolve(cx, name);
        lower_template(cx, t, &mut resolve)
    }

    /// Lowers `step` into `node`: sets its kind and type, and its edges.
    fn step_into(
        &mut self,
        cx: &mut Lowerer<'_, '_>,
        node: NodeIndex,
        step: &'a ast::Step,
        name: &str,
    ) {
        let (kind, ty) = match &step.kind {
            ast::StepKind::Expr(e) => {
                let e = self.expr(cx, e);
                self.connect(&e, node);
                let ty = widen(&e.ty);
                (StepKind::Value(e), ty)
            }
            ast::StepKind::Call(call) => match self.call(cx, call) {
                Some((target, args, ty)) => {
                    for (_, a) in &args {
                        self.connect(a, node);
                    }
                    (StepKind::Call { target, args }, ty)
                }
                None => (StepKind::Value(null_expr(call.span)), Ty::Error),
            },
            ast::StepKind::Llm(llm) => self.llm(cx, node, llm, step.span),
            ast::StepKind::Approve(ap) => {
                if let Some(prev) = self.gates.get(&ap.gate.name) {
                    let d = Diagnostic::new(Code::DuplicateName, ap.gate.span, format!("gate `{}` is declared twice", ap.gate.name))
                        .label("declared again here")
                        .with(*prev, "first declared here")
                        .help("reviewers approve a gate by its name, so each gate in a flow needs its own");
                    cx.report(d);
                } else {
                    self.gates.insert(ap.gate.name.clone(), ap.gate.span);
                }
                let show: Vec<Expr> = ap.show.iter().map(|e| self.expr(cx, e)).collect();
                for e in &show {
                    self.connect(e, node);
                }
                if show.is_empty() {
                    let d = Diagnostic::new(Code::InvalidDeclaration, ap.gate.span, format!("gate `{}` shows the reviewer nothing", ap.gate.name))
                        .label("no `show`")
                        .help("add `show value`: the reviewer approves exactly what the gate shows, and the gate's value is the first thing shown");
                    cx.report(d);
                }
                let ty = show.first().map_or(Ty::Error, |e| widen(&e.ty));
                let timeout = ap.timeout.as_ref().and_then(|q| cx.seconds(q));
                let policy = ap.policy.as_ref().map(|p| {
                    let when = self.expr(cx, &p.when);
                    if !cx.program.types.assignable(&when.ty, &Ty::Bool) {
                        mismatch(
                            cx,
                            when.span,
                            &Ty::Bool,
                            &when.ty,
                            "a policy is a condition: the gate approves the cases where it is true",
                        );
                    }
                    self.connect(&when, node);
                    Policy {
                        when,
                        span: p.span,
                        sample: ap.sample.as_ref().map(sampling),
                    }
                });
                if let (Some(sample), None) = (&ap.sample, &ap.policy) {
                    let d = Diagnostic::new(Code::InvalidDeclaration, sample.span, format!("gate `{}` samples cases but has no policy", ap.gate.name))
                        .label("nothing to sample")
                        .help("`sample` sends cases a policy decided to review after the fact; add `auto approve when …`, or remove `sample`");
                    cx.report(d);
                }
                let (on_timeout, escalation) = match &ap.on_timeout {
                    None => (Decision::Reject, None),
                    Some((ast::OnTimeout::Decide(d), _)) => (*d, None),
                    Some((ast::OnTimeout::Escalate(e), span)) => {
                        (Decision::Reject, self.escalation(cx, ap, e, *span))
                    }
                };
                (
                    StepKind::Approve(Box::new(Approve {
                        gate: ap.gate.name.clone(),
                        show,
                        timeout_seconds: timeout,
                        on_timeout,
                        escalation,
                        policy,
                        notify: ap.notify.as_ref().map(notify),
                    })),
                    ty,
                )
            }
            ast::StepKind::For(f) => self.for_loop(cx, node, f, name),
            ast::StepKind::If(i) => self.if_branch(cx, node, i, name, step.span),
            ast::StepKind::Match(mt) => self.match_branch(cx, node, mt, name, step.span),
        };
        self.graph[node].kind = kind;
        self.graph[node].ty = ty;
    }

    /// `on_timeout escalate { … }`: complete only with the gate's own
    /// `timeout` (else it never starts), a target and a second timeout.
    fn escalation(
        &mut self,
        cx: &mut Lowerer<'_, '_>,
        ap: &ast::ApproveStep,
        e: &ast::Escalation,
        span: Span,
    ) -> Option<Escalation> {
        let gate = &ap.gate.name;
        let mut missing = |what: &str, help: &str| {
            let d = Diagnostic::new(
                Code::InvalidDeclaration,
                span,
                format!("gate `{gate}` escalates without {what}"),
            )
            .label("incomplete escalation")
            .help(help.to_string());
            cx.report(d);
        };
        if ap.timeout.is_none() {
            missing(
                "a `timeout` of its own",
                "an escalation starts when the gate's `timeout` passes; add `timeout 24h` (for example) to the gate",
            );
        }
        if e.notify.is_none() {
            missing(
                "a `notify` target",
                "say whom the escalation tells: `escalate { notify webhook env.ONCALL_HOOK, timeout 1h }`",
            );
        }
        if e.timeout.is_none() {
            missing(
                "a `timeout`",
                "say how long the escalated gate waits before it is rejected: `escalate { notify …, timeout 1h }`",
            );
        }
        let timeout_seconds = e.timeout.as_ref().and_then(|q| cx.seconds(q))?;
        ap.timeout.as_ref()?;
        Some(Escalation {
            notify: notify(e.notify.as_ref()?),
            timeout_seconds,
        })
    }

    fn call(&mut self, cx: &mut Lowerer<'_, '_>, call: &ast::Call) -> Option<ResolvedCall> {
        let (target, output): (CallTarget, Ty) = match cx.lookup(self.m, &call.callee.name) {
            Some(Symbol::Tool(t)) => (
                CallTarget::Tool(t),
                cx.program.tools[t.index()].output.clone(),
            ),
            Some(Symbol::Agent(a)) => (
                CallTarget::Agent(a),
                cx.program.agents[a.index()].output.clone(),
            ),
            Some(Symbol::Flow(f)) => (
                CallTarget::Flow(f),
                cx.program.flows[f.index()].output.clone(),
            ),
            Some(Symbol::Model(_)) => {
                cx.wrong_kind(
                    &call.callee,
                    Symbol::Model(ModelId(0)),
                    "a tool, agent or flow",
                    &format!(
                        "ask a model with `llm {} -> Type {{ prompt \"…\" }}`",
                        call.callee.name
                    ),
                );
                return None;
            }
            Some(other) => {
                cx.wrong_kind(
                    &call.callee,
                    other,
                    "a tool, agent or flow",
                    "only tools, agents and flows can be called",
                );
                return None;
            }
            None => {
                self.unresolved = true;
                if self.lookup(&call.callee.name).is_some()
                    || self.params.iter().any(|(p, _)| *p == call.callee.name)
                {
                    let d = Diagnostic::new(
                        Code::WrongKind,
                        call.callee.span,
                        format!(
                            "`{}` is a value, not a tool, agent or flow",
                            call.callee.name
                        ),
                    )
                    .label("cannot be called")
                    .help("only declared tools, agents and flows can be called");
                    cx.report(d);
                } else {
                    cx.undefined(self.m, &call.callee, "tool, agent or flow", |s| {
                        matches!(s, Symbol::Tool(_) | Symbol::Agent(_) | Symbol::Flow(_))
                    });
                }
                return None;
            }
        };
        let args = self.args(cx, call, target);
        Some((target, args, output))
    }

    fn args(
        &mut self,
        cx: &mut Lowerer<'_, '_>,
        call: &ast::Call,
        target: CallTarget,
    ) -> Vec<(String, Expr)> {
        let mut resolve = |cx: &mut Lowerer<'_, '_>, name: &ast::Ident| self.resolve(cx, name);
        check_args(cx, call, target, &mut resolve)
    }

    fn llm(
        &mut self,
        cx: &mut Lowerer<'_, '_>,
        node: NodeIndex,
        llm: &ast::LlmStep,
        span: Span,
    ) -> (StepKind, Ty) {
        let model = match cx.lookup(self.m, &llm.model.name) {
            Some(Symbol::Model(md)) => Some(md),
            Some(other) => {
                cx.wrong_kind(
                    &llm.model,
                    other,
                    "a model",
                    "`llm` asks a declared model, as in `llm analyst -> T { … }`",
                );
                None
            }
            None => {
                cx.undefined(self.m, &llm.model, "model", |s| {
                    matches!(s, Symbol::Model(_))
                });
                None
            }
        };
        let output = cx.ty(self.m, &llm.output);
        let mut call = LlmCall {
            model: model.unwrap_or(ModelId(u32::MAX)),
            output: output.clone(),
            prompt: None,
            system: None,
            retry: None,
            max_tokens: None,
            timeout_seconds: None,
            budget: None,
        };
        for clause in &llm.clauses {
            match &clause.kind {
                ast::LlmClauseKind::Prompt(t) => {
                    let t = self.template(cx, t);
                    self.connect_template(&t, node);
                    call.prompt = Some(t);
                }
                ast::LlmClauseKind::System(t) => {
                    let t = self.template(cx, t);
                    self.connect_template(&t, node);
                    call.system = Some(t);
                }
                ast::LlmClauseKind::Retry(r) => call.retry = cx.retry(r, true),
                ast::LlmClauseKind::Timeout(q) => call.timeout_seconds = cx.seconds(q),
                ast::LlmClauseKind::MaxTokens(q) => call.max_tokens = cx.count(q),
                ast::LlmClauseKind::Budget(b) => call.budget = Some(cx.budget(b)),
            }
        }
        if call.prompt.is_none() {
            let d = Diagnostic::new(
                Code::InvalidDeclaration,
                span,
                "this `llm` step has no prompt",
            )
            .label("no `prompt` clause")
            .help("add `prompt \"…\"`; interpolate step values with `{name}`");
            cx.report(d);
        }
        if model.is_none() {
            return (StepKind::Value(null_expr(span)), output);
        }
        (StepKind::Llm(Box::new(call)), output)
    }

    fn for_loop(
        &mut self,
        cx: &mut Lowerer<'_, '_>,
        node: NodeIndex,
        f: &'a ast::ForStep,
        name: &str,
    ) -> (StepKind, Ty) {
        let iterable = self.expr(cx, &f.iterable);
        let element = match cx.program.types.element(&iterable.ty) {
            Some(t) => t,
            None => {
                let shown = cx.program.types.display(&iterable.ty);
                let d = Diagnostic::new(
                    Code::TypeMismatch,
                    iterable.span,
                    format!("`for` goes over a list, and this is `{shown}`"),
                )
                .label(format!("this is `{shown}`"))
                .help("loop over a list value, as in `for item in items { … }`");
                cx.report(d);
                Ty::Error
            }
        };
        let parallel = match f.parallel {
            Some((0, span)) => {
                let d = Diagnostic::new(
                    Code::InvalidDeclaration,
                    span,
                    "`parallel 0` would run nothing",
                )
                .label("zero iterations at a time")
                .help(
                    "write `parallel N` with N of at least 1, or leave it out to run one at a time",
                );
                cx.report(d);
                1
            }
            Some((n, _)) => n,
            None => 1,
        };
        let tolerate = match f.tolerate {
            Some((0, span)) => {
                let d = Diagnostic::new(
                    Code::InvalidDeclaration,
                    span,
                    "`tolerate 0` tolerates no failed iteration",
                )
                .label("zero failures allowed")
                .help("write `tolerate N` with N of at least 1, or leave it out: then one failed iteration fails the loop");
                cx.report(d);
                None
            }
            Some((n, _)) => Some(n),
            None => None,
        };
        let body = self.new_region(RegionKind::Loop { node, parallel });
        let outer_region = std::mem::replace(&mut self.region, body);
        let item = self.add(Step {
            name: format!("{name}.item"),
            span: f.var.span,
            region: body,
            kind: StepKind::LoopItem {
                iterable: iterable.clone(),
            },
            ty: element.clone(),
            fallback: None,
            named: true,
        });
        self.connect(&iterable, item);
        self.open_loops.push((node, body));
        self.scopes
            .push(HashMap::from_iter([(f.var.name.as_str(), item)]));
        let result = self.block(cx, &f.body, body, &format!("{name}.result"));
        self.scopes.pop();
        self.open_loops.pop();
        self.region = outer_region;
        self.wire_region(body, Some(item), node);
        self.connect_all(&[result], node, Dep::Data);
        let max = cx.program.types.max_len(&iterable.ty);
        let result_ty = self.graph[result].ty.clone();
        let ty = match tolerate {
            Some(n) => crate::ir::tolerant_loop_type(result_ty, element, max, n),
            None => Ty::List(
                Box::new(result_ty),
                Constraints {
                    max_len: max,
                    ..Constraints::default()
                },
            ),
        };
        (
            StepKind::Loop {
                item,
                body,
                result,
                parallel,
                tolerate,
            },
            ty,
        )
    }

    /// Region edges: the entry before every step directly in the region, and
    /// every such step before the join.
    fn wire_region(&mut self, region: RegionId, entry: Option<NodeIndex>, join: NodeIndex) {
        let members = self.region_nodes[region.index()].clone();
        for n in members {
            if Some(n) == entry {
                continue;
            }
            if let Some(e) = entry {
                self.connect_all(&[e], n, Dep::Region);
            }
            self.connect_all(&[n], join, Dep::Region);
        }
        if let Some(e) = entry {
            self.connect_all(&[e], join, Dep::Region);
        }
    }

    fn block(
        &mut self,
        cx: &mut Lowerer<'_, '_>,
        block: &'a ast::Block,
        region: RegionId,
        result_name: &str,
    ) -> NodeIndex {
        self.scopes.push(HashMap::default());
        let declared = self.declare(cx, &block.stmts, region);
        for n in declared {
            self.define(cx, n);
        }
        let result = self.add(Step {
            name: result_name.to_string(),
            span: block.result.span,
            region,
            kind: StepKind::Value(null_expr(block.result.span)),
            ty: Ty::Error,
            fallback: None,
            named: false,
        });
        self.step_into(cx, result, &block.result, result_name);
        self.scopes.pop();
        result
    }

    fn decide(&mut self, subject: Expr, name: String, span: Span) -> NodeIndex {
        let decide = self.add(Step {
            name,
            span,
            region: self.region,
            kind: StepKind::Decide {
                subject: subject.clone(),
            },
            ty: subject.ty.clone(),
            fallback: None,
            named: false,
        });
        self.connect(&subject, decide);
        decide
    }

    /// A new arm region of branch `node`, where the `narrowed` names have
    /// their narrowed types.
    fn arm_region(
        &mut self,
        node: NodeIndex,
        arm: usize,
        narrowed: Vec<(Subject, Ty)>,
    ) -> RegionId {
        let region = self.new_region(RegionKind::Arm { node, arm });
        self.narrowed
            .extend(narrowed.into_iter().map(|(s, ty)| (region, s, ty)));
        region
    }

    fn arm(
        &mut self,
        cx: &mut Lowerer<'_, '_>,
        node: NodeIndex,
        decide: NodeIndex,
        region: RegionId,
        block: &'a ast::Block,
        name: String,
    ) -> NodeIndex {
        let outer = std::mem::replace(&mut self.region, region);
        let result = self.block(cx, block, region, &name);
        self.region = outer;
        self.wire_region(region, Some(decide), node);
        self.connect_all(&[result], node, Dep::Data);
        result
    }

    fn if_branch(
        &mut self,
        cx: &mut Lowerer<'_, '_>,
        node: NodeIndex,
        i: &'a ast::IfStep,
        name: &str,
        span: Span,
    ) -> (StepKind, Ty) {
        let cond = self.expr(cx, &i.condition);
        if !cx.program.types.assignable(&cond.ty, &Ty::Bool) {
            mismatch(
                cx,
                cond.span,
                &Ty::Bool,
                &cond.ty,
                "an `if` condition is a boolean",
            );
        }
        let then_narrowed = self.non_null(cx, &cond, true);
        let else_narrowed = self.non_null(cx, &cond, false);
        let decide = self.decide(cond, format!("{name}.if"), i.condition.span);
        let then_region = self.arm_region(node, 0, then_narrowed);
        let then_result = self.arm(
            cx,
            node,
            decide,
            then_region,
            &i.then,
            format!("{name}.then"),
        );
        let mut arms = vec![Arm {
            pattern: Some(Lit::Bool(true)),
            span: i.then.span,
            region: then_region,
            result: Some(then_result),
        }];
        let then_ty = self.graph[then_result].ty.clone();
        let ty = match &i.otherwise {
            Some(block) => {
                let r = self.arm_region(node, 1, else_narrowed);
                let res = self.arm(cx, node, decide, r, block, format!("{name}.else"));
                arms.push(Arm {
                    pattern: None,
                    span: block.span,
                    region: r,
                    result: Some(res),
                });
                let else_ty = self.graph[res].ty.clone();
                join_types(
                    cx,
                    &[(then_ty, i.then.result.span), (else_ty, block.result.span)],
                    span,
                )
            }
            None => {
                let region = self.new_region(RegionKind::Arm { node, arm: 1 });
                arms.push(Arm {
                    pattern: None,
                    span,
                    region,
                    result: None,
                });
                optional(then_ty)
            }
        };
        self.connect_all(&[decide], node, Dep::Region);
        (StepKind::Branch { decide, arms }, ty)
    }

    fn match_branch(
        &mut self,
        cx: &mut Lowerer<'_, '_>,
        node: NodeIndex,
        mt: &'a ast::MatchStep,
        name: &str,
        span: Span,
    ) -> (StepKind, Ty) {
        let subject = self.expr(cx, &mt.scrutinee);
        let subject_ty = cx.program.types.resolve(&subject.ty).clone();
        let narrows = Subject::of(&subject);
        let decide = self.decide(subject, format!("{name}.match"), mt.scrutinee.span);
        let mut arms = Vec::new();
        let mut tys = Vec::new();
        let mut seen: Vec<(Lit, Span)> = Vec::new();
        let mut wildcard: Option<Span> = None;
        for (i, arm) in mt.arms.iter().enumerate() {
            let pattern = arm.pattern.as_ref().map(lit);
            self.check_pattern(cx, &pattern, arm.pattern_span, &subject_ty, &seen, wildcard);
            // The arm's literal, or for `_` the literals of the union no arm
            // above took; only where the literal fits the subject's type
            // (else the pattern was just reported).
            let arm_ty = match &pattern {
                Some(l) => Some(Ty::Literal(l.clone()))
                    .filter(|t| cx.program.types.assignable(t, &subject_ty)),
                None => {
                    let lits: Vec<Lit> = seen.iter().map(|(l, _)| l.clone()).collect();
                    narrow::remaining(&cx.program.types, &subject_ty, &lits)
                }
            };
            let narrowed: Vec<(Subject, Ty)> = narrows.zip(arm_ty).into_iter().collect();
            match &pattern {
                Some(l) => seen.push((l.clone(), arm.pattern_span)),
                None => wildcard = wildcard.or(Some(arm.pattern_span)),
            }
            let region = self.arm_region(node, i, narrowed);
            let result = self.arm(
                cx,
                node,
                decide,
                region,
                &arm.body,
                format!("{name}.arm{}", i + 1),
            );
            tys.push((self.graph[result].ty.clone(), arm.body.result.span));
            arms.push(Arm {
                pattern,
                span: arm.pattern_span,
                region,
                result: Some(result),
            });
        }
        self.connect_all(&[decide], node, Dep::Region);
        let mut ty = if tys.is_empty() {
            Ty::Null
        } else {
            join_types(cx, &tys, span)
        };
        let exhaustive = wildcard.is_some()
            || match &subject_ty {
                Ty::Union(ls) => ls.iter().all(|l| seen.iter().any(|(s, _)| s == l)),
                Ty::Literal(l) => seen.iter().any(|(s, _)| s == l),
                Ty::Bool => [true, false]
                    .iter()
                    .all(|b| seen.iter().any(|(s, _)| *s == Lit::Bool(*b))),
                _ => false,
            };
        if !exhaustive {
            // With no arm taken, the value is null.
            ty = optional(ty);
            arms.push(Arm {
                pattern: None,
                span,
                region: self.new_region(RegionKind::Arm {
                    node,
                    arm: mt.arms.len(),
                }),
                result: None,
            });
        }
        (StepKind::Branch { decide, arms }, ty)
    }

    fn check_pattern(
        &mut self,
        cx: &mut Lowerer<'_, '_>,
        pattern: &Option<Lit>,
        span: Span,
        subject: &Ty,
        seen: &[(Lit, Span)],
        wildcard: Option<Span>,
    ) {
        let unreachable = |reason: String, label: &str| {
            Diagnostic::new(Code::UnreachableArm, span, reason).label(label.to_string())
        };
        if let Some(w) = wildcard {
            let d = unreachable(
                "this arm comes after `_`, which matches everything".into(),
                "never reached",
            )
            .with(w, "`_` matches first")
            .help("put `_` last, or remove this arm");
            cx.report(d);
            return;
        }
        let Some(l) = pattern else { return };
        if let Some((_, prev)) = seen.iter().find(|(s, _)| s == l) {
            let d = unreachable(format!("{l} is matched by an earlier arm"), "never reached")
                .with(*prev, "matched here first")
                .help("remove the duplicate arm");
            cx.report(d);
            return;
        }
        let types = &cx.program.types;
        let possible = match subject {
            Ty::Union(ls) => ls.contains(l),
            Ty::Literal(s) => s == l,
            Ty::Optional(inner) => types.assignable(&Ty::Literal(l.clone()), inner),
            Ty::Error | Ty::Json | Ty::Schema(_) => true,
            other => types.assignable(&Ty::Literal(l.clone()), other),
        };
        if !possible {
            let shown = types.display(subject);
            let d = unreachable(
                format!("{l} can never be a `{shown}`"),
                "no value of the subject's type is this",
            )
            .help(format!("the subject is `{shown}`; match one of its values"));
            cx.report(d);
        }
    }

    fn fallback(&mut self, cx: &mut Lowerer<'_, '_>, node: NodeIndex, fb: &ast::Step) {
        let step_ty = self.graph[node].ty.clone();
        let can_fail = matches!(
            self.graph[node].kind,
            StepKind::Call { .. } | StepKind::Llm(_)
        );
        if !can_fail {
            let d = Diagnostic::new(
                Code::InvalidDeclaration,
                fb.span,
                "only calls and `llm` steps can fall back",
            )
            .label("this step cannot fail over")
            .help("put `fallback` after a tool, agent, flow or `llm` step");
            cx.report(d);
            // The discarded fallback still names its tool: not "never called".
            if let ast::StepKind::Call(call) = &fb.kind {
                if let Some(Symbol::Tool(t)) = cx.lookup(self.m, &call.callee.name) {
                    cx.program.tools[t.index()].mentioned = true;
                }
            }
            return;
        }
        let (fallback, ty, span) = match &fb.kind {
            ast::StepKind::Call(call) => match self.call(cx, call) {
                Some((target, args, ty)) => {
                    for (_, a) in &args {
                        self.connect(a, node);
                    }
                    (Fallback::Call(target, args, call.span), ty, call.span)
                }
                None => return,
            },
            ast::StepKind::Expr(e) => {
                let e = self.expr(cx, e);
                self.connect(&e, node);
                let (ty, span) = (e.ty.clone(), e.span);
                (Fallback::Value(e), ty, span)
            }
            _ => return,
        };
        if !cx.program.types.assignable(&ty, &step_ty) {
            mismatch(
                cx,
                span,
                &step_ty,
                &ty,
                "a fallback must produce the same type as the step it replaces",
            );
        }
        self.graph[node].fallback = Some(Box::new(fallback));
    }

    /// A `check` guards every later use of the values it validates: each step
    /// that reads a checked value (and is not needed by the check itself)
    /// waits for the check to pass. All candidates are found on the graph
    /// without guard edges, then the edges are added.
    fn add_guards(&mut self) {
        if self.checks.is_empty() {
            return;
        }
        // Longest-path levels bound the search for each check's ancestors: an
        // ancestor of a candidate sits on a lower level, so the backward walk
        // from the check stops below the lowest candidate.
        let position: Option<Vec<usize>> =
            petgraph::algo::toposort(&self.graph, None)
                .ok()
                .map(|order| {
                    let mut level = vec![0usize; self.graph.node_count()];
                    for n in order {
                        let l = self
                            .graph
                            .neighbors_directed(n, Direction::Incoming)
                            .map(|p| level[p.index()] + 1)
                            .max()
                            .unwrap_or(0);
                        level[n.index()] = l;
                    }
                    level
                });
        let mut edges = Vec::new();
        for &check in &self.checks {
            let mut candidates: Vec<NodeIndex> = Vec::new();
            for value in self.graph.neighbors_directed(check, Direction::Incoming) {
                for e in self.graph.edges_directed(value, Direction::Outgoing) {
                    let user = e.target();
                    let is_check = matches!(self.graph[user].kind, StepKind::Check { .. });
                    if *e.weight() == Dep::Data && !is_check && !candidates.contains(&user) {
                        candidates.push(user);
                    }
                }
            }
            if candidates.is_empty() {
                continue;
            }
            let floor = position.as_ref().map_or(0, |pos| {
                candidates.iter().map(|c| pos[c.index()]).min().unwrap_or(0)
            });
            let ancestors = ancestors_above(&self.graph, check, position.as_deref(), floor);
            // A check inside a loop or branch guards only steps in its own
            // region (or nested in it): nothing else waits on one iteration.
            let region = self.graph[check].region;
            let within = |u: &NodeIndex| self.within(self.graph[*u].region, region);
            edges.extend(
                candidates
                    .into_iter()
                    .filter(|u| !ancestors.contains(u) && within(u))
                    .map(|u| (check, u)),
            );
        }
        for (check, user) in edges {
            self.connect_all(&[check], user, Dep::Guard);
        }
    }
}

/// How many steps lowering `stmts` makes, about: one per binding, `check`
/// and `return`, and those of loops and branches. Only sizes the graph.
fn steps_in(stmts: &[Stmt]) -> usize {
    stmts
        .iter()
        .map(|s| match s {
            Stmt::Let(l) => 1 + inner_steps(&l.step),
            Stmt::Check(_) | Stmt::Return(..) => 1,
            Stmt::Budget(_) => 0,
        })
        .sum()
}

/// The steps a loop or branch adds besides its own: its item or condition,
/// and each block's bindings and result.
fn inner_steps(step: &ast::Step) -> usize {
    let block = |b: &ast::Block| steps_in(&b.stmts) + 1 + inner_steps(&b.result);
    match &step.kind {
        ast::StepKind::For(f) => 1 + block(&f.body),
        ast::StepKind::If(i) => 1 + block(&i.then) + i.otherwise.as_ref().map_or(0, block),
        ast::StepKind::Match(m) => 1 + m.arms.iter().map(|a| block(&a.body)).sum::<usize>(),
        _ => 0,
    }
}

/// The ancestors of `node` whose level is at least `floor`
/// (all ancestors when there is no order, as in a graph with a cycle).
fn ancestors_above(
    graph: &petgraph::graph::DiGraph<Step, Dep>,
    node: NodeIndex,
    position: Option<&[usize]>,
    floor: usize,
) -> FxHashSet<NodeIndex> {
    let mut seen = FxHashSet::default();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        for p in graph.neighbors_directed(n, Direction::Incoming) {
            if position.is_some_and(|pos| pos[p.index()] < floor) {
                continue;
            }
            if seen.insert(p) {
                stack.push(p);
            }
        }
    }
    seen
}

/// A binding's type: literal types widen to their base (`let s = "a"` is a string).
fn widen(ty: &Ty) -> Ty {
    match ty {
        Ty::Literal(Lit::Str(_)) => Ty::string(),
        Ty::Literal(Lit::Number(n)) if n.fract() == 0.0 => Ty::int(),
        Ty::Literal(Lit::Number(_)) => Ty::number(),
        Ty::Literal(Lit::Bool(_)) => Ty::Bool,
        other => other.clone(),
    }
}

fn optional(ty: Ty) -> Ty {
    match ty {
        Ty::Optional(_) | Ty::Error | Ty::Json | Ty::Null => ty,
        other => Ty::Optional(Box::new(other)),
    }
}

/// The type of a value that comes from one of several branches.
fn join_types(cx: &mut Lowerer<'_, '_>, tys: &[(Ty, Span)], span: Span) -> Ty {
    let types = &cx.program.types;
    let widened: Vec<(Ty, Span)> = tys.iter().map(|(t, s)| (widen(t), *s)).collect();
    let non_null: Vec<&(Ty, Span)> = widened
        .iter()
        .filter(|(t, _)| !matches!(t, Ty::Null))
        .collect();
    let has_null = non_null.len() < widened.len();
    let Some(first) = non_null.first() else {
        return Ty::Null;
    };
    let mut joined = Some(first.0.clone());
    for (t, _) in &non_null[1..] {
        joined = joined.and_then(|j| types.join(&j, t));
    }
    let joined = match joined {
        Some(t) => t,
        None => {
            let odd = non_null
                .iter()
                .find(|(t, _)| !types.assignable(t, &first.0))
                .unwrap_or(first);
            let (a, b) = (types.display(&first.0), types.display(&odd.0));
            let d = Diagnostic::new(
                Code::TypeMismatch,
                odd.1,
                format!("the branches produce different types: `{a}` and `{b}`"),
            )
            .label(format!("this is `{b}`"))
            .with(first.1, format!("this is `{a}`"))
            .with(span, "the branches of this step")
            .help("every branch must produce a value of the same type");
            cx.report(d);
            Ty::Error
        }
    };
    if has_null {
        optional(joined)
    } else {
        joined
    }
}

fn null_expr(span: Span) -> Expr {
    Expr {
        kind: ExprKind::Null,
        ty: Ty::Error,
        span,
    }
}

/// The parameters of what a call calls.
fn callee_params(program: &Program, target: CallTarget) -> &[Param] {
    match target {
        CallTarget::Tool(t) => &program.tools[t.index()].params,
        CallTarget::Agent(a) => &program.agents[a.index()].params,
        CallTarget::Flow(f) => &program.flows[f.index()].params,
    }
}

/// Matches a call's named arguments to the callee's parameters. They are
/// read where they are declared, not copied: every call site of a large
/// flow would copy its callee's names and types.
fn check_args(
    cx: &mut Lowerer<'_, '_>,
    call: &ast::Call,
    target: CallTarget,
    resolve: &mut super::expr::Resolver<'_>,
) -> Vec<(String, Expr)> {
    // Sized once: a first push would make room for four arguments, and an
    // argument is some two hundred bytes.
    let mut out: Vec<(String, Expr)> = Vec::with_capacity(call.args.len());
    for (name, value) in &call.args {
        let e = lower_expr(cx, value, resolve);
        if out.iter().any(|(n, _)| *n == name.name) {
            let d = Diagnostic::new(
                Code::DuplicateName,
                name.span,
                format!("argument `{}` is given twice", name.name),
            )
            .label("given again here")
            .help("give each argument once");
            cx.report(d);
            continue;
        }
        let params = callee_params(&cx.program, target);
        let problem = match params.iter().find(|p| p.name == name.name) {
            Some(Param { ty, .. }) => {
                if !cx.program.types.assignable(&e.ty, ty) {
                    let types = &cx.program.types;
                    let (want, got) = (types.display(ty), types.display(&e.ty));
                    let d = Diagnostic::new(
                        Code::TypeMismatch,
                        e.span,
                        format!("argument `{}` expects `{want}`, found `{got}`", name.name),
                    )
                    .label(format!("this is `{got}`"));
                    // An optional name that would fit once tested: say how.
                    let testable = match &value.kind {
                        ast::ExprKind::Name(n) => narrow::without_null(types, &e.ty)
                            .filter(|t| types.assignable(t, ty))
                            .map(|_| n.name.clone()),
                        _ => None,
                    };
                    Some(match testable {
                        Some(n) => d.help(format!(
                            "`{}` takes `{}: {want}` and `{n}` may be `null`: pass it inside `if {n} != null {{ … }}`, where it is `{want}`",
                            call.callee.name, name.name
                        )),
                        None => d.help(format!(
                            "`{}` takes `{}: {want}`",
                            call.callee.name, name.name
                        )),
                    })
                } else {
                    None
                }
            }
            None => {
                let d = Diagnostic::new(
                    Code::UnknownArgument,
                    name.span,
                    format!("`{}` takes no argument `{}`", call.callee.name, name.name),
                )
                .label("unknown argument");
                Some(
                    match did_you_mean(&name.name, params.iter().map(|p| p.name.as_str())) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None if params.is_empty() => {
                            d.help(format!("`{}` takes no arguments", call.callee.name))
                        }
                        None => d.help(format!(
                            "its arguments are {}",
                            params
                                .iter()
                                .map(|p| format!("`{}`", p.name))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    },
                )
            }
        };
        if let Some(d) = problem {
            cx.report(d);
        }
        out.push((name.name.clone(), e));
    }
    let missing: Vec<String> = callee_params(&cx.program, target)
        .iter()
        .filter(|p| !p.optional && !out.iter().any(|(n, _)| *n == p.name))
        .map(|p| format!("{}: {}", p.name, cx.program.types.display(&p.ty)))
        .collect();
    if !missing.is_empty() {
        let plural = if missing.len() == 1 {
            "argument"
        } else {
            "arguments"
        };
        let d = Diagnostic::new(
            Code::MissingArgument,
            call.callee.span,
            format!(
                "`{}` is called without {plural} {}",
                call.callee.name,
                missing
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .label(format!("missing {plural}"))
        .help("pass every parameter that is not optional (`name?: T`), by name");
        cx.report(d);
    }
    out
}

pub(crate) fn lower_test(cx: &mut Lowerer<'_, '_>, m: usize, decl: &ast::TestDecl) {
    let mut no_names = |cx: &mut Lowerer<'_, '_>, name: &ast::Ident| -> (ExprKind, Ty) {
        let d = Diagnostic::new(
            Code::UndefinedName,
            name.span,
            format!("there is no value named `{}` here", name.name),
        )
        .label("unknown name")
        .help("test values are literals; only `expect` can read `output`, the flow's result");
        cx.report(d);
        (ExprKind::Error, Ty::Error)
    };
    let mut test = Test {
        name: decl.name.clone(),
        span: decl.name_span,
        flow: None,
        args: Vec::new(),
        givens: Vec::new(),
        expects: Vec::new(),
        expect_calls: Vec::new(),
        expect_failure: None,
    };
    let mut run_span: Option<Span> = None;
    for stmt in &decl.stmts {
        if let ast::TestStmt::Run(call) = stmt {
            if let Some(prev) = run_span {
                let d =
                    Diagnostic::new(Code::InvalidDeclaration, call.span, "a test runs one flow")
                        .label("second `run`")
                        .with(prev, "first `run`")
                        .help("write a separate `test` for each run");
                cx.report(d);
                continue;
            }
            run_span = Some(call.span);
            match cx.lookup(m, &call.callee.name) {
                Some(Symbol::Flow(f)) => {
                    test.flow = Some(f);
                    test.args = check_args(cx, call, CallTarget::Flow(f), &mut no_names);
                }
                Some(other) => cx.wrong_kind(
                    &call.callee,
                    other,
                    "a flow",
                    "a test runs a flow: `run name(arg: value)`",
                ),
                None => cx.undefined(m, &call.callee, "flow", |s| matches!(s, Symbol::Flow(_))),
            }
        }
    }
    let output_ty = test
        .flow
        .map_or(Ty::Error, |f| cx.program.flows[f.index()].output.clone());
    for stmt in &decl.stmts {
        match stmt {
            ast::TestStmt::Run(_) => {}
            ast::TestStmt::Given {
                target,
                outcome,
                span,
            } => {
                let outcome_ir =
                    |cx: &mut Lowerer<'_, '_>, no: &mut super::expr::Resolver<'_>| match outcome {
                        ast::Given::Returns(e) => GivenOutcome::Returns(lower_expr(cx, e, no)),
                        ast::Given::Fails(msg) => GivenOutcome::Fails(msg.clone()),
                    };
                match cx.lookup(m, &target.name) {
                    Some(Symbol::Tool(t)) => {
                        let o = outcome_ir(cx, &mut no_names);
                        let want = cx.program.tools[t.index()].output.clone();
                        check_given(cx, &o, &want, "tool");
                        test.givens.push(TestGiven::Tool {
                            tool: t,
                            outcome: o,
                            span: *span,
                        });
                    }
                    Some(Symbol::Model(md)) => {
                        let o = outcome_ir(cx, &mut no_names);
                        test.givens.push(TestGiven::Model {
                            model: md,
                            outcome: o,
                            span: *span,
                        });
                    }
                    Some(Symbol::Agent(a)) => {
                        let o = outcome_ir(cx, &mut no_names);
                        let want = cx.program.agents[a.index()].output.clone();
                        check_given(cx, &o, &want, "agent");
                        test.givens.push(TestGiven::Agent {
                            agent: a,
                            outcome: o,
                            span: *span,
                        });
                    }
                    Some(other) => cx.wrong_kind(
                        target,
                        other,
                        "a tool, model or agent",
                        "`given` replaces what a tool, model or agent returns",
                    ),
                    None => cx.undefined(m, target, "tool, model or agent", |s| {
                        matches!(s, Symbol::Tool(_) | Symbol::Model(_) | Symbol::Agent(_))
                    }),
                }
            }
            ast::TestStmt::GivenGate {
                gate,
                outcome,
                span,
            } => {
                let known = test
                    .flow
                    .map(|f| flow_has_gate(&cx.program, f, &gate.name))
                    .unwrap_or(true);
                if !known {
                    let d = Diagnostic::new(Code::UndefinedName, gate.span, format!("the flow under test has no gate named `{}`", gate.name))
                        .label("unknown gate")
                        .help("name a gate declared with `approve name { … }` in the flow or a flow it calls");
                    cx.report(d);
                }
                let (approve, with, reason) = match outcome {
                    ast::GateOutcome::Approves(e) => (
                        true,
                        e.as_ref().map(|e| lower_expr(cx, e, &mut no_names)),
                        None,
                    ),
                    ast::GateOutcome::Rejects(r) => (false, None, r.clone()),
                };
                test.givens.push(TestGiven::Gate {
                    gate: gate.name.clone(),
                    approve,
                    with,
                    reason,
                    span: *span,
                });
            }
            ast::TestStmt::Expect(e) => {
                let out_ty = output_ty.clone();
                let mut output = |cx: &mut Lowerer<'_, '_>, name: &ast::Ident| -> (ExprKind, Ty) {
                    if name.name == "output" {
                        (ExprKind::Param(0), out_ty.clone())
                    } else {
                        no_names(cx, name)
                    }
                };
                let e = lower_expr(cx, e, &mut output);
                if !cx.program.types.assignable(&e.ty, &Ty::Bool) {
                    mismatch(
                        cx,
                        e.span,
                        &Ty::Bool,
                        &e.ty,
                        "an `expect` states a condition on `output` that must be true",
                    );
                }
                test.expects.push(e);
            }
            ast::TestStmt::ExpectFailure { text, span } => {
                if test.expect_failure.is_some() {
                    cx.repeated(*span, "expect failure");
                }
                test.expect_failure = Some(text.clone());
            }
            ast::TestStmt::ExpectCalls {
                target,
                times,
                span,
            } => match cx.lookup(m, &target.name) {
                Some(Symbol::Tool(t)) => {
                    test.expect_calls.push((CallTarget::Tool(t), *times, *span))
                }
                Some(Symbol::Agent(a)) => {
                    test.expect_calls
                        .push((CallTarget::Agent(a), *times, *span))
                }
                Some(Symbol::Flow(f)) => {
                    test.expect_calls.push((CallTarget::Flow(f), *times, *span))
                }
                Some(other) => cx.wrong_kind(
                    target,
                    other,
                    "a tool, agent or flow",
                    "count calls of tools, agents and flows",
                ),
                None => cx.undefined(m, target, "tool, agent or flow", |s| {
                    matches!(s, Symbol::Tool(_) | Symbol::Agent(_) | Symbol::Flow(_))
                }),
            },
        }
    }
    if run_span.is_none() {
        let d = Diagnostic::new(
            Code::InvalidDeclaration,
            decl.name_span,
            format!("test {:?} runs no flow", decl.name),
        )
        .label("no `run`")
        .help("add `run flow_name(arg: value)`");
        cx.report(d);
    }
    if test.expect_failure.is_some() {
        if let Some(e) = test.expects.first() {
            let d = Diagnostic::new(Code::InvalidDeclaration, e.span, format!("test {:?} expects a failure, so there is no `output` to check", decl.name))
                .label("never evaluated: the flow must fail")
                .help("check what happened before the failure with `expect tool called N times`, or write a separate test that completes");
            cx.report(d);
        }
    }
    if test.expects.is_empty() && test.expect_calls.is_empty() && test.expect_failure.is_none() {
        let d = Diagnostic::new(Code::TestWithoutExpectation, decl.name_span, format!("test {:?} expects nothing", decl.name))
            .label("no `expect`")
            .help("add `expect output.field == value` or `expect tool called N times`; a test that checks nothing always passes");
        cx.report(d);
    }
    let _ = cx.module_file(m);
    cx.program.tests.push(test);
}

/// A `given … returns` value must have the declared result type.
fn check_given(cx: &mut Lowerer<'_, '_>, outcome: &GivenOutcome, want: &Ty, what: &str) {
    if let GivenOutcome::Returns(e) = outcome {
        if !cx.program.types.assignable(&e.ty, want) {
            let help = format!("a given result must have the {what}'s declared result type");
            // Name the field that differs, so a large literal's mismatch
            // points at the one line to fix.
            match given_field_mismatch(&cx.program.types, e, want, String::new()) {
                Some(FieldMismatch::Missing { span, path }) => {
                    let d = Diagnostic::new(
                        Code::TypeMismatch,
                        span,
                        format!(
                            "field `{path}` is missing; `{}` requires it",
                            cx.program.types.display(want)
                        ),
                    )
                    .label(format!("no `{path}` here"))
                    .help(help);
                    cx.report(d);
                }
                Some(FieldMismatch::Wrong {
                    span,
                    path,
                    want,
                    found,
                }) => {
                    let types = &cx.program.types;
                    let d = Diagnostic::new(
                        Code::TypeMismatch,
                        span,
                        format!(
                            "field `{path}`: expected `{}`, found `{}`",
                            types.display(&want),
                            types.display(&found)
                        ),
                    )
                    .label(format!("`{path}` is `{}`", types.display(&found)))
                    .help(help);
                    cx.report(d);
                }
                None => mismatch(cx, e.span, want, &e.ty, &help),
            }
        }
    }
}

/// Where a given literal departs from the type it must have.
enum FieldMismatch {
    Missing {
        span: Span,
        path: String,
    },
    Wrong {
        span: Span,
        path: String,
        want: Ty,
        found: Ty,
    },
}

/// The innermost field of an object (or list) literal whose value does not
/// fit the wanted type, with its dotted path; `None` when the literal is not
/// an object or list, or the mismatch is the value as a whole.
fn given_field_mismatch(
    types: &crate::types::TypeTable,
    e: &Expr,
    want: &Ty,
    path: String,
) -> Option<FieldMismatch> {
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    match (&e.kind, types.resolve(want)) {
        (ExprKind::Object(fields), Ty::Record(wanted, _)) => {
            for w in wanted.iter().filter(|w| !w.optional) {
                if !fields.iter().any(|(name, _)| *name == w.name) {
                    return Some(FieldMismatch::Missing {
                        span: e.span,
                        path: join(&w.name),
                    });
                }
            }
            for (name, value) in fields {
                let Some(w) = wanted.iter().find(|w| w.name == *name) else {
                    continue;
                };
                if !types.assignable(&value.ty, &w.ty) {
                    return given_field_mismatch(types, value, &w.ty, join(name)).or(Some(
                        FieldMismatch::Wrong {
                            span: value.span,
                            path: join(name),
                            want: w.ty.clone(),
                            found: value.ty.clone(),
                        },
                    ));
                }
            }
            None
        }
        (ExprKind::List(items), Ty::List(element, _)) => {
            for (i, item) in items.iter().enumerate() {
                if !types.assignable(&item.ty, element) {
                    let at = format!("{path}[{i}]");
                    return given_field_mismatch(types, item, element, at.clone()).or(Some(
                        FieldMismatch::Wrong {
                            span: item.span,
                            path: at,
                            want: (**element).clone(),
                            found: item.ty.clone(),
                        },
                    ));
                }
            }
            None
        }
        _ => None,
    }
}

/// Whether `flow`, or a flow it calls at any depth, has a gate named
/// `gate`: each flow is looked at once, however many calls reach it.
fn flow_has_gate(program: &Program, flow: FlowId, gate: &str) -> bool {
    let mut seen = vec![false; program.flows.len()];
    let mut todo = vec![flow];
    seen[flow.index()] = true;
    while let Some(f) = todo.pop() {
        let flow = &program.flows[f.index()];
        let gated = |step: &Step| matches!(&step.kind, StepKind::Approve(a) if a.gate == gate);
        if flow.graph.node_weights().any(gated) {
            return true;
        }
        // A fallback's call runs the flow it names as much as a step's.
        for (_, target) in flow.calls() {
            if let CallTarget::Flow(sub) = target {
                if !std::mem::replace(&mut seen[sub.index()], true) {
                    todo.push(sub);
                }
            }
        }
    }
    false
}

fn notify(n: &ast::Notify) -> Notify {
    Notify {
        kind: n.kind,
        target: match &n.target {
            ast::NotifyTarget::Url(u) => NotifyTarget::Url(u.clone()),
            ast::NotifyTarget::Env(e) => NotifyTarget::Env(e.name.clone()),
        },
    }
}

/// A `sample` clause as a share and a daily cap: a cap alone samples every
/// case until the day's cap is reached.
fn sampling(s: &ast::Sample) -> Sampling {
    Sampling {
        rate: s.percent.map_or(1.0, |(p, _)| p / 100.0),
        per_day: s.per_day.map(|(n, _)| n),
    }
}
