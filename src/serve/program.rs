//! What serve reads from a run's own program: each gate's type (to build
//! its edit form and check an edited value), the calls with an effect a
//! gate releases (the proposed action a reviewer is shown), each flow's
//! budget, and the values of the environment variables the program reads
//! (never to be shown). A submitted run's program is its stored snapshot;
//! a run `flowc run` started is its file, if serve can read it.

use std::collections::{HashMap, VecDeque};

use petgraph::graph::NodeIndex;
use petgraph::Direction;
use serde_json::{json, Value};

use crate::ast::Effect;
use crate::compile::Compilation;
use crate::ir::{CallTarget, Program, StepKind};
use crate::store::{RunRecord, Store};
use crate::types::{Ty, TypeTable};

/// A gate, as its program declares it.
pub(super) struct GateInfo {
    pub ty: Ty,
    /// The type as written (`Refund`, `[Discrepancy]`).
    pub ty_text: String,
    /// The calls with an effect that run only once this gate releases its
    /// value, in graph order.
    pub proposed: Vec<Proposed>,
}

/// A call with an effect a gate releases.
pub(super) struct Proposed {
    /// The tool, agent or flow called.
    pub target: String,
    pub effect: Effect,
    /// The call as written: `refund(order: r.order, amount: r.amount)`.
    pub call: String,
    pub args: Vec<Arg>,
}

/// One argument of a proposed call.
pub(super) struct Arg {
    pub name: String,
    /// As written.
    pub expr: String,
    pub from: Source,
}

/// Where an argument's value comes from, when a reviewer can know it before
/// the call: a field of the gate's value, of the run's input, or a constant.
pub(super) enum Source {
    /// A path into the value the gate releases (`r.amount` → `["amount"]`).
    Gate(Vec<String>),
    /// A flow parameter and a path into it.
    Input(String, Vec<String>),
    Constant(Value),
    /// Computed by other steps (a loop item, an expression).
    Other,
}

impl Arg {
    /// The value the argument will have if the gate releases `released`.
    pub fn value(&self, released: &Value, input: &Value) -> Option<Value> {
        let walk = |mut v: &Value, path: &[String]| {
            for field in path {
                v = v.get(field)?;
            }
            Some(v.clone())
        };
        match &self.from {
            Source::Gate(path) => walk(released, path),
            Source::Input(param, path) => walk(input.get(param)?, path),
            Source::Constant(v) => Some(v.clone()),
            Source::Other => None,
        }
    }
}

impl Proposed {
    /// The call with each argument's value where it is known from the
    /// released value and the input.
    pub fn json(&self, released: &Value, input: &Value) -> Value {
        let args: Vec<Value> = self
            .args
            .iter()
            .map(|a| json!({"name": a.name, "expr": a.expr, "value": a.value(released, input)}))
            .collect();
        json!({"target": self.target, "effect": self.effect.as_str(), "call": self.call, "arguments": args})
    }
}

/// Where `e`'s value comes from (see [`Source`]).
fn source(flow: &crate::ir::Flow, gate: NodeIndex, e: &crate::ir::Expr) -> Source {
    use crate::ir::ExprKind;
    let mut path = Vec::new();
    let mut at = e;
    loop {
        match &at.kind {
            ExprKind::Member(inner, field) => {
                path.push(field.clone());
                at = inner;
            }
            ExprKind::Step(n) if *n == gate => {
                path.reverse();
                return Source::Gate(path);
            }
            ExprKind::Param(i) => {
                path.reverse();
                return match flow.params.get(*i) {
                    Some(p) => Source::Input(p.name.clone(), path),
                    None => Source::Other,
                };
            }
            ExprKind::Number(n) if path.is_empty() => {
                return serde_json::Number::from_f64(*n)
                    .map_or(Source::Other, |n| Source::Constant(Value::Number(n)))
            }
            ExprKind::Bool(b) if path.is_empty() => return Source::Constant(Value::Bool(*b)),
            ExprKind::Null if path.is_empty() => return Source::Constant(Value::Null),
            _ => return Source::Other,
        }
    }
}

/// A flow's budget (what a run's spend is measured against).
#[derive(Clone, Copy, Default)]
pub(super) struct Limits {
    pub tokens: Option<u64>,
    pub cost: Option<f64>,
    pub steps: Option<u64>,
    pub tool_calls: Option<u64>,
    pub wall_seconds: Option<f64>,
}

pub(super) struct RunProgram {
    /// Why the program could not be read or compiled (then nothing else is known).
    pub error: Option<String>,
    pub types: TypeTable,
    /// By (flow, gate).
    pub gates: HashMap<(String, String), GateInfo>,
    pub budgets: HashMap<String, Limits>,
    /// The values (in serve's environment) of the variables the program reads.
    pub secrets: Vec<String>,
}

impl RunProgram {
    pub fn load(store: &Store, run: &RunRecord) -> RunProgram {
        match compile(store, run) {
            Ok(c) => RunProgram::read(&c),
            Err(error) => RunProgram {
                error: Some(error),
                types: TypeTable::default(),
                gates: HashMap::new(),
                budgets: HashMap::new(),
                secrets: Vec::new(),
            },
        }
    }

    fn read(c: &Compilation) -> RunProgram {
        let Some(checked) = &c.program else {
            return RunProgram {
                error: Some("the run's program does not check under this flowc".into()),
                types: TypeTable::default(),
                gates: HashMap::new(),
                budgets: HashMap::new(),
                secrets: Vec::new(),
            };
        };
        let program = checked.program();
        let mut gates = HashMap::new();
        for flow in &program.flows {
            for n in flow.graph.node_indices() {
                if let StepKind::Approve(a) = &flow.graph[n].kind {
                    let gate = &a.gate;
                    let ty = flow.graph[n].ty.clone();
                    gates.insert(
                        (flow.name.clone(), gate.clone()),
                        GateInfo {
                            ty_text: program.types.display(&ty),
                            ty,
                            proposed: proposed(c, program, flow, n),
                        },
                    );
                }
            }
        }
        let budgets = checked
            .sealed()
            .flows
            .iter()
            .map(|f| {
                let b = &f.budget;
                (
                    f.name.clone(),
                    Limits {
                        tokens: b.tokens,
                        cost: b.cost,
                        steps: b.steps,
                        tool_calls: b.tool_calls,
                        wall_seconds: b.wall.map(|w| w.as_secs_f64()),
                    },
                )
            })
            .collect();
        RunProgram {
            error: None,
            types: program.types.clone(),
            gates,
            budgets,
            secrets: crate::run::secret_values(checked.sealed(), &|name| std::env::var(name).ok()),
        }
    }

    pub fn gate(&self, flow: &str, gate: &str) -> Option<&GateInfo> {
        self.gates.get(&(flow.to_string(), gate.to_string()))
    }
}

fn compile(store: &Store, run: &RunRecord) -> Result<Compilation, String> {
    let compiled = match store.program(&run.id).map_err(|e| e.to_string())? {
        Some(text) => {
            let snapshot =
                crate::snapshot::ProgramSnapshot::from_json(&text).map_err(|e| e.to_string())?;
            crate::compile_snapshot(&snapshot)
        }
        None => crate::compile(&[crate::Input::Path(run.file.clone().into())]),
    };
    compiled.map_err(|e| format!("the run's program cannot be read: {e}"))
}

/// The calls with an effect downstream of gate step `gate`: what approving
/// it lets happen.
fn proposed(
    c: &Compilation,
    program: &Program,
    flow: &crate::ir::Flow,
    gate: NodeIndex,
) -> Vec<Proposed> {
    let g = &flow.graph;
    let mut seen = vec![false; g.node_count()];
    let mut queue = VecDeque::from([gate]);
    let mut found = Vec::new();
    while let Some(n) = queue.pop_front() {
        for next in g.neighbors_directed(n, Direction::Outgoing) {
            if std::mem::replace(&mut seen[next.index()], true) {
                continue;
            }
            queue.push_back(next);
            if let StepKind::Call { target, args } = &g[next].kind {
                let effect = crate::check::effect_of(program, *target);
                if effect == Effect::Read {
                    continue;
                }
                let target = match target {
                    CallTarget::Tool(t) => &program.tools[t.index()].name,
                    CallTarget::Agent(a) => &program.agents[a.index()].name,
                    CallTarget::Flow(f) => &program.flows[f.index()].name,
                };
                let args: Vec<Arg> = args
                    .iter()
                    .map(|(name, e)| Arg {
                        name: name.clone(),
                        expr: one_line(c.sources.text(e.span)),
                        from: source(flow, gate, e),
                    })
                    .collect();
                let written: Vec<String> = args
                    .iter()
                    .map(|a| format!("{}: {}", a.name, a.expr))
                    .collect();
                found.push((
                    next.index(),
                    Proposed {
                        target: target.clone(),
                        effect,
                        call: format!("{target}({})", written.join(", ")),
                        args,
                    },
                ));
            }
        }
    }
    found.sort_by_key(|(n, _)| *n);
    found.into_iter().map(|(_, p)| p).collect()
}

/// Source text on one line, whitespace runs as one space, cut at 200 characters.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > 200 {
        format!("{}…", joined.chars().take(200).collect::<String>())
    } else {
        joined
    }
}
