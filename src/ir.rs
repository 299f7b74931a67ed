//! The typed program: names resolved, types attached, and each flow a
//! dataflow graph (petgraph) of steps. `lower` builds it; `check` proves
//! properties of it and wraps it in `CheckedProgram`.

use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::BTreeMap;

pub use crate::ast::NotifyKind;
pub use crate::ast::{BodyEncoding, ResponseFormat};
use crate::ast::{CompareOp, Decision, Effect};
use crate::source::{FileId, Span};
use crate::types::{Lit, Ty, TypeTable};

macro_rules! id {
    ($($name:ident),*) => {$(
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub struct $name(pub u32);
        impl $name {
            pub fn index(self) -> usize { self.0 as usize }
        }
    )*};
}
id!(ProviderId, ModelId, ResourceId, ToolId, AgentId, FlowId, RegionId, ServerId);

#[derive(Debug, Default)]
pub struct Program {
    pub types: TypeTable,
    pub providers: Vec<Provider>,
    pub models: Vec<Model>,
    pub resources: Vec<Resource>,
    pub tools: Vec<Tool>,
    /// MCP servers (`server NAME { … }`).
    pub servers: Vec<McpServer>,
    pub agents: Vec<Agent>,
    pub flows: Vec<Flow>,
    pub tests: Vec<Test>,
    /// `eval` blocks: a flow measured over a dataset.
    pub evals: Vec<Eval>,
    /// The files that were checked at the user's request (not only imported).
    pub roots: Vec<FileId>,
}

#[derive(Debug)]
pub struct Resource {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    OpenAi,
    Anthropic,
}

/// What a model's API accepts, by family: decided once from the provider's
/// protocol and the model's id (when sealing, and for the check that
/// refuses parameters the family rejects), never again at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ModelFamily {
    /// `max_tokens` bounds the output; sampling parameters are accepted.
    Standard,
    /// OpenAI's reasoning models (`o1`, `o3`, `o4-mini`, `gpt-5`, …): the
    /// output bound is `max_completion_tokens` (it covers the hidden
    /// reasoning tokens, which are billed as output) and sampling
    /// parameters are refused with HTTP 400.
    OpenAiReasoning,
}

impl ModelFamily {
    pub fn of(protocol: Protocol, model_id: &str) -> ModelFamily {
        // Gateways prefix the provider (`openai/o3-mini`).
        let name = model_id.rsplit('/').next().unwrap_or(model_id);
        let bytes = name.as_bytes();
        let o_series = bytes.len() >= 2 && bytes[0] == b'o' && bytes[1].is_ascii_digit();
        match protocol {
            Protocol::OpenAi if o_series || name.starts_with("gpt-5") => {
                ModelFamily::OpenAiReasoning
            }
            _ => ModelFamily::Standard,
        }
    }

    /// The request field that bounds the output.
    pub fn output_bound_key(self) -> &'static str {
        match self {
            ModelFamily::Standard => "max_tokens",
            ModelFamily::OpenAiReasoning => "max_completion_tokens",
        }
    }

    /// Model parameters the family's API refuses.
    pub fn refused_params(self) -> &'static [&'static str] {
        match self {
            ModelFamily::Standard => &[],
            ModelFamily::OpenAiReasoning => &[
                "temperature",
                "top_p",
                "presence_penalty",
                "frequency_penalty",
                "logprobs",
                "top_logprobs",
                "logit_bias",
            ],
        }
    }
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub span: Span,
    pub protocol: Protocol,
    pub base_url_env: Option<String>,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub prices: Vec<Price>,
}

/// US dollars per million tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Price {
    /// `None` prices every model of the provider.
    pub model: Option<String>,
    pub input: f64,
    pub output: f64,
    /// The model's context window in tokens, if the table says.
    pub context: Option<u64>,
}

#[derive(Debug)]
pub struct Model {
    pub name: String,
    pub span: Span,
    pub provider: ProviderId,
    pub model_id: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u64>,
    pub fallback: Option<ModelId>,
    /// Calls to this model in flight at once, across the run (`concurrency`).
    pub concurrency: Option<u64>,
    /// Calls started per minute at most (`rpm`): spaced evenly.
    pub rpm: Option<u64>,
    /// Other parameters, passed to the provider as written.
    pub extra: Vec<(String, serde_json::Value)>,
    pub price: Option<Price>,
    /// Tokens a request may hold (prompt and output): the model's
    /// `context_window` parameter, else its price entry's `context`.
    pub context_window: Option<u64>,
}

#[derive(Debug)]
pub struct Param {
    pub name: String,
    pub ty: Ty,
    pub optional: bool,
    pub span: Span,
}

#[derive(Debug)]
pub enum ToolKind {
    Http {
        method: String,
        url: Template,
        headers: Vec<(String, Template)>,
        /// `query { … }`: appended to the URL's query string; absent and
        /// null values are left out, lists repeat the name.
        query: Vec<(String, Expr)>,
        body: HttpBody,
        /// How the response body is read: `text` by default for a `string`
        /// result, `json` otherwise.
        format: ResponseFormat,
        /// Parameters (by index) interpolated into the URL as written
        /// (`raw path`), not percent-encoded as one segment.
        raw: Vec<usize>,
    },
    Exec {
        argv: Vec<Template>,
    },
    Builtin {
        name: String,
    },
    /// `mcp server "tool"`: a tool of an MCP server, by its name there.
    Mcp {
        server: ServerId,
        name: String,
    },
}

/// An MCP server tools are bound to.
#[derive(Debug)]
pub struct McpServer {
    pub name: String,
    pub span: Span,
    pub transport: McpTransport,
    /// Set in a started program's environment (stdio servers only).
    pub env: Vec<(String, Template)>,
    /// Sent with every request (HTTP servers only).
    pub headers: Vec<(String, Template)>,
    /// How long starting the server and listing its tools may take.
    pub timeout_seconds: Option<f64>,
    /// What the lock file beside the declaring file says about this server.
    pub lock: McpLock,
}

#[derive(Debug)]
pub enum McpTransport {
    /// `command [...]`: a child process spoken to over stdio.
    Stdio { argv: Vec<Template> },
    /// `url "…"`: Streamable HTTP.
    Http { url: Template },
    /// Neither was declared (already reported).
    Missing,
}

/// A server's entry in its lock file, as the loader found it.
#[derive(Debug, Default)]
pub enum McpLock {
    /// No lock file, or no entry for this server in it.
    #[default]
    Missing,
    /// The lock file could not be read or parsed.
    Invalid(String),
    Locked(crate::mcp::lock::LockedServer),
}

/// What an `http` tool sends as its request body.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum HttpBody {
    /// Nothing (GET and DELETE without a `body` clause).
    None,
    /// POST, PUT and PATCH without a `body` clause: the arguments the URL,
    /// query and headers do not use, as a JSON object (absent ones left out).
    Args(Vec<usize>),
    /// `body [json|form] expr`.
    Value(BodyEncoding, Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    pub on: Vec<String>,
    pub base_seconds: f64,
    pub factor: f64,
    pub cap_seconds: Option<f64>,
    pub jitter: bool,
    pub span: Span,
}

/// Retries of an `llm` step that has no `retry` clause.
pub const DEFAULT_LLM_INVALID_RETRIES: u32 = 1;

impl RetryPolicy {
    /// The policy of an `llm` step with no `retry` clause: output that does
    /// not parse or validate is retried once, the model shown its reply and
    /// the errors; nothing else is retried. `seal` gives it to the runtime
    /// and the cost check counts [`LlmCall::attempts`], so what `check`
    /// proves is what `run` does.
    pub fn llm_default(span: Span) -> RetryPolicy {
        RetryPolicy {
            retries: DEFAULT_LLM_INVALID_RETRIES,
            on: vec!["invalid".into()],
            // An invalid reply is retried at once: there is nothing to wait for.
            base_seconds: 0.0,
            factor: 1.0,
            cap_seconds: None,
            jitter: false,
            span,
        }
    }
}

#[derive(Debug)]
pub struct Tool {
    pub name: String,
    pub span: Span,
    pub params: Vec<Param>,
    pub output: Ty,
    pub kind: Option<ToolKind>,
    pub effect: Effect,
    pub effect_span: Option<Span>,
    pub reads: Vec<ResourceId>,
    pub writes: Vec<ResourceId>,
    pub timeout_seconds: Option<f64>,
    pub retry: Option<RetryPolicy>,
    pub idempotency: Option<Template>,
    pub limit_tokens: Option<u64>,
    /// Named somewhere it could not be used (a duplicate declaration, a tool
    /// used as a value): already reported, so not also "never called".
    pub mentioned: bool,
}

#[derive(Debug)]
pub struct Agent {
    pub name: String,
    pub span: Span,
    pub params: Vec<Param>,
    pub output: Ty,
    pub model: Option<ModelId>,
    pub tools: Vec<(ToolId, Span)>,
    pub may: Effect,
    pub max_steps: Option<u64>,
    pub max_repeat: Option<u64>,
    pub instructions: Option<Template>,
    pub budget: Option<Budget>,
    pub timeout_seconds: Option<f64>,
    /// How each model turn is retried, when declared.
    pub retry: Option<RetryPolicy>,
}

impl Agent {
    /// The strongest effect any of its tools has (what calling it may do).
    pub fn effect(&self, tools: &[Tool]) -> Effect {
        self.tools
            .iter()
            .map(|(t, _)| tools[t.index()].effect)
            .filter(|e| *e <= self.may)
            .max()
            .unwrap_or(Effect::Read)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Budget {
    pub tokens: Option<u64>,
    pub cost: Option<f64>,
    pub steps: Option<u64>,
    pub tool_calls: Option<u64>,
    pub wall_seconds: Option<f64>,
    pub span: Span,
}

#[derive(Debug)]
pub struct Flow {
    pub name: String,
    pub span: Span,
    pub params: Vec<Param>,
    pub output: Ty,
    pub budget: Option<Budget>,
    pub graph: DiGraph<Step, Dep>,
    pub regions: Vec<Region>,
    /// The step that produces the flow's result (`return`).
    pub output_step: Option<NodeIndex>,
    /// A name in the body did not resolve (already reported): what looks
    /// unused may be what the misspelled name meant.
    pub unresolved: bool,
    /// Steps whose `after` names something that did not resolve (already
    /// reported): the ordering the author meant is missing, so ordering
    /// checks (D001, A001) say nothing more about them.
    pub dropped_after: Vec<NodeIndex>,
    /// Where `after NAME` can be written on each `let` (for suggestions);
    /// ordered, so the program prints the same way every time.
    pub after_points: BTreeMap<NodeIndex, AfterPoint>,
    /// A model judge of an `eval` (lowered as a flow of its own so it is
    /// typed, validated, retried and budgeted like any `llm` step); not a
    /// flow the user can run by name.
    pub judge: bool,
    /// The strongest effect running the flow may have: its own calls', and
    /// those of the flows it calls, however deep (`lower/effects.rs`, once
    /// every flow is lowered).
    pub effect: Effect,
    /// Every resource a run of the flow may touch, through the flows it
    /// calls however deep, each once, `true` where it may write it (filled
    /// with `effect`).
    pub resources: Vec<(ResourceId, bool)>,
}

impl Tool {
    /// The resources a call of the tool touches, `true` where it writes.
    pub fn resources(&self) -> impl Iterator<Item = (ResourceId, bool)> + '_ {
        let reads = self.reads.iter().map(|r| (*r, false));
        reads.chain(self.writes.iter().map(|r| (*r, true)))
    }
}

impl Agent {
    /// The tools the agent may call: those its `may` allows.
    pub fn allowed_tools<'t>(&'t self, tools: &'t [Tool]) -> impl Iterator<Item = &'t Tool> + 't {
        self.tools
            .iter()
            .map(|(t, _)| &tools[t.index()])
            .filter(|tool| tool.effect <= self.may)
    }
}

impl Flow {
    /// Every call the flow's steps make (a step's call and its fallback's),
    /// with the step.
    pub fn calls(&self) -> impl Iterator<Item = (NodeIndex, CallTarget)> + '_ {
        self.graph.node_indices().flat_map(move |n| {
            let step = &self.graph[n];
            let main = match &step.kind {
                StepKind::Call { target, .. } => Some((n, *target)),
                _ => None,
            };
            let fallback = match step.fallback.as_deref() {
                Some(Fallback::Call(target, _, _)) => Some((n, *target)),
                _ => None,
            };
            main.into_iter().chain(fallback)
        })
    }
}

/// Where an `after` clause naming one more step goes in a `let`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterPoint {
    /// The `let` has no `after`: insert ` after NAME` at this empty span
    /// (the statement's end).
    New(Span),
    /// Append `, NAME` at this empty span (the end of its `after` list).
    Extend(Span),
}

/// Why one step waits for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Dep {
    /// The step reads the other's value.
    Data,
    /// `after x`: ordering without data.
    After,
    /// A `check` guards the values it validates.
    Guard,
    /// Region structure: a body step waits for its loop or branch entry; a
    /// loop or branch completes after every step in its body.
    Region,
}

/// Where a step sits: the flow body, a loop body, or a branch arm.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Region {
    pub parent: Option<RegionId>,
    pub kind: RegionKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RegionKind {
    Root,
    /// A loop body; runs once per item, `parallel` at a time.
    Loop {
        node: NodeIndex,
        parallel: u64,
    },
    /// One arm of an `if` or `match` (`node` is the branch's join step).
    Arm {
        node: NodeIndex,
        arm: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Step {
    pub name: String,
    /// The name as written (`let name`), or the construct for unnamed steps.
    pub span: Span,
    pub region: RegionId,
    pub kind: StepKind,
    pub ty: Ty,
    /// Boxed, as few steps have one (see [`StepKind::Approve`]).
    pub fallback: Option<Box<Fallback>>,
    /// True when the step's value is read by another step or the output.
    pub named: bool,
}

#[derive(Clone, Debug)]
pub enum Fallback {
    Value(Expr),
    Call(CallTarget, Vec<(String, Expr)>, Span),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CallTarget {
    Tool(ToolId),
    Agent(AgentId),
    Flow(FlowId),
}

#[derive(Clone, Debug)]
pub enum StepKind {
    Value(Expr),
    Call {
        target: CallTarget,
        args: Vec<(String, Expr)>,
    },
    Llm(Box<LlmCall>),
    /// Boxed: every step is as large as the largest kind, and few are gates.
    Approve(Box<Approve>),
    /// The item of a loop: runs once per element of `iterable`.
    LoopItem {
        iterable: Expr,
    },
    /// A loop's result: the list of its body's results; with `tolerate`,
    /// the record of those and of the iterations that failed
    /// ([`tolerant_loop_type`]).
    Loop {
        item: NodeIndex,
        body: RegionId,
        result: NodeIndex,
        parallel: u64,
        /// Iterations that may fail before the loop does.
        tolerate: Option<u64>,
    },
    /// Evaluates a branch condition or match subject; the arms wait for it.
    Decide {
        subject: Expr,
    },
    /// The join of an `if` (arms 0 = then, 1 = else) or `match`.
    Branch {
        decide: NodeIndex,
        arms: Vec<Arm>,
    },
    Check {
        requires: Vec<(Expr, Template)>,
    },
    /// The flow's `return`.
    Output(Expr),
}

/// An `approve` step.
#[derive(Clone, Debug)]
pub struct Approve {
    pub gate: String,
    pub show: Vec<Expr>,
    pub timeout_seconds: Option<f64>,
    /// The final outcome when nobody decides in time (after the
    /// escalation, if there is one: then `Reject`).
    pub on_timeout: Decision,
    pub escalation: Option<Escalation>,
    pub policy: Option<Policy>,
    pub notify: Option<Notify>,
}

/// `on_timeout escalate { notify …, timeout … }`: when the gate's timeout
/// passes, the second target is told and the gate waits once more.
#[derive(Clone, Debug)]
pub struct Escalation {
    pub notify: Notify,
    pub timeout_seconds: f64,
}

/// `auto approve when EXPR`: a reviewed rule that approves the cases it
/// accepts without a person; the rest wait for one.
#[derive(Clone, Debug)]
pub struct Policy {
    /// A `bool` expression over values in the flow's scope.
    pub when: Expr,
    /// The clause, for diagnostics.
    pub span: Span,
    /// Policy-decided cases sent to review after the fact.
    pub sample: Option<Sampling>,
}

/// `sample P%` and/or `sample N per day`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sampling {
    /// The share of policy-decided cases sampled, 0 < rate <= 1 (1 when
    /// only a daily cap is written).
    pub rate: f64,
    /// At most this many sampled cases a day (UTC), per gate.
    pub per_day: Option<u64>,
}

/// `notify webhook …`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Notify {
    pub kind: NotifyKind,
    pub target: NotifyTarget,
}

/// A notification's address; an environment variable is read when the
/// notification is sent (and checked by the preflight).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum NotifyTarget {
    Url(String),
    Env(String),
}

#[derive(Clone, Debug)]
pub struct Arm {
    /// `None` for `_` and `else`.
    pub pattern: Option<Lit>,
    pub span: Span,
    pub region: RegionId,
    /// `None` for a missing `else` (the value is null).
    pub result: Option<NodeIndex>,
}

#[derive(Clone, Debug)]
pub struct LlmCall {
    pub model: ModelId,
    pub output: Ty,
    pub prompt: Option<Template>,
    pub system: Option<Template>,
    pub retry: Option<RetryPolicy>,
    pub max_tokens: Option<u64>,
    pub timeout_seconds: Option<f64>,
    pub budget: Option<Budget>,
}

impl LlmCall {
    /// Attempts per model of the chain at most: the `retry` clause's, or
    /// [`RetryPolicy::llm_default`]'s.
    pub fn attempts(&self) -> u32 {
        1 + self
            .retry
            .as_ref()
            .map_or(DEFAULT_LLM_INVALID_RETRIES, |r| r.retries)
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub ty: Ty,
    pub span: Span,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ExprKind {
    Str(Template),
    Number(f64),
    Bool(bool),
    Null,
    Object(Vec<(String, Expr)>),
    List(Vec<Expr>),
    Env(String),
    /// A flow or agent parameter.
    Param(usize),
    /// Another step's value (or a loop item).
    Step(NodeIndex),
    Member(Box<Expr>, String),
    Len(Box<Expr>),
    Index(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, CompareOp, Box<Expr>),
    /// A name that did not resolve; already reported.
    Error,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Template {
    pub parts: Vec<TemplatePart>,
    pub span: Span,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum TemplatePart {
    Text(String),
    Expr(Expr),
}

#[derive(Debug)]
pub struct Test {
    pub name: String,
    pub span: Span,
    pub flow: Option<FlowId>,
    pub args: Vec<(String, Expr)>,
    pub givens: Vec<TestGiven>,
    pub expects: Vec<Expr>,
    pub expect_calls: Vec<(CallTarget, u64, Span)>,
    /// `expect failure`: the flow must fail, with an error containing the text if given.
    pub expect_failure: Option<Option<String>>,
}

#[derive(Debug)]
pub enum TestGiven {
    Tool {
        tool: ToolId,
        outcome: GivenOutcome,
        span: Span,
    },
    Model {
        model: ModelId,
        outcome: GivenOutcome,
        span: Span,
    },
    Agent {
        agent: AgentId,
        outcome: GivenOutcome,
        span: Span,
    },
    Gate {
        gate: String,
        approve: bool,
        with: Option<Expr>,
        reason: Option<String>,
        span: Span,
    },
}

#[derive(Debug)]
pub enum GivenOutcome {
    Returns(Expr),
    Fails(String),
}

impl Expr {
    /// Every step this expression reads.
    pub fn steps(&self, out: &mut Vec<NodeIndex>) {
        match &self.kind {
            ExprKind::Step(n) => out.push(*n),
            ExprKind::Str(t) => t.steps(out),
            ExprKind::Object(fields) => fields.iter().for_each(|(_, e)| e.steps(out)),
            ExprKind::List(items) => items.iter().for_each(|e| e.steps(out)),
            ExprKind::Member(e, _) | ExprKind::Len(e) | ExprKind::Not(e) => e.steps(out),
            ExprKind::Index(a, b)
            | ExprKind::And(a, b)
            | ExprKind::Or(a, b)
            | ExprKind::Compare(a, _, b) => {
                a.steps(out);
                b.steps(out);
            }
            _ => {}
        }
    }

    /// Every parameter this expression reads (in a tool, agent or flow).
    pub fn params(&self, out: &mut Vec<usize>) {
        match &self.kind {
            ExprKind::Param(i) => out.push(*i),
            ExprKind::Str(t) => t.params(out),
            ExprKind::Object(fields) => fields.iter().for_each(|(_, e)| e.params(out)),
            ExprKind::List(items) => items.iter().for_each(|e| e.params(out)),
            ExprKind::Member(e, _) | ExprKind::Len(e) | ExprKind::Not(e) => e.params(out),
            ExprKind::Index(a, b)
            | ExprKind::And(a, b)
            | ExprKind::Or(a, b)
            | ExprKind::Compare(a, _, b) => {
                a.params(out);
                b.params(out);
            }
            _ => {}
        }
    }
}

impl Template {
    /// Every parameter this template reads.
    pub fn params(&self, out: &mut Vec<usize>) {
        for part in &self.parts {
            if let TemplatePart::Expr(e) = part {
                e.params(out);
            }
        }
    }

    pub fn steps(&self, out: &mut Vec<NodeIndex>) {
        for part in &self.parts {
            if let TemplatePart::Expr(e) = part {
                e.steps(out);
            }
        }
    }

    /// The number of characters of fixed text (for prompt size estimates).
    pub fn text_len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| {
                if let TemplatePart::Text(t) = p {
                    t.chars().count()
                } else {
                    0
                }
            })
            .sum()
    }
}

/// Whether `region` is `ancestor` or nested inside it.
pub fn region_within(regions: &[Region], mut region: RegionId, ancestor: RegionId) -> bool {
    loop {
        if region == ancestor {
            return true;
        }
        match regions[region.index()].parent {
            Some(p) => region = p,
            None => return false,
        }
    }
}

/// A parameter list as (name, type, optional): what argument checks and
/// schemas take.
pub fn signature(params: &[Param]) -> Vec<(String, Ty, bool)> {
    params
        .iter()
        .map(|p| (p.name.clone(), p.ty.clone(), p.optional))
        .collect()
}

impl Program {
    /// The names an eval's `trace.called` and `trace.first` have a field
    /// for: every tool, model, agent and (non-judge) flow, each once.
    pub fn trajectory_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tools
            .iter()
            .map(|t| t.name.clone())
            .chain(self.models.iter().map(|m| m.name.clone()))
            .chain(self.agents.iter().map(|a| a.name.clone()))
            .chain(
                self.flows
                    .iter()
                    .filter(|f| !f.judge)
                    .map(|f| f.name.clone()),
            )
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// A model and its fallbacks, each once.
    pub fn model_chain(&self, first: ModelId) -> Vec<ModelId> {
        let mut out = vec![first];
        let mut m = first;
        while let Some(f) = self.models[m.index()].fallback {
            if out.contains(&f) {
                break;
            }
            out.push(f);
            m = f;
        }
        out
    }
}

impl Flow {
    /// Whether `region` is `ancestor` or nested inside it.
    pub fn region_within(&self, region: RegionId, ancestor: RegionId) -> bool {
        region_within(&self.regions, region, ancestor)
    }

    /// How many times a step in `region` can run per run of the flow, or
    /// `None` if some enclosing loop is unbounded.
    pub fn iterations(&self, region: RegionId, types: &TypeTable) -> Option<u64> {
        let mut count: u64 = 1;
        let mut r = Some(region);
        while let Some(id) = r {
            let reg = &self.regions[id.index()];
            if let RegionKind::Loop { node, .. } = reg.kind {
                if let StepKind::Loop { item, .. } = self.graph[node].kind {
                    if let StepKind::LoopItem { iterable } = &self.graph[item].kind {
                        count = count.saturating_mul(types.max_len(&iterable.ty)?);
                    }
                }
            }
            r = reg.parent;
        }
        Some(count)
    }
}

impl Step {
    /// How messages name the step: `` `x` `` for a binding, and for the steps
    /// lowering makes inside loops and branches, what they are part of.
    pub fn display(&self) -> String {
        describe_step_name(&self.name)
    }
}

/// How messages name the step lowering named `name` ([`Step::display`]).
pub fn describe_step_name(name: &str) -> String {
    let Some((owner, part)) = name.rsplit_once('.') else {
        return if name == "return" {
            "the `return`".into()
        } else {
            quoted(name)
        };
    };
    let owner_text = describe_step_name(owner);
    match part {
        "then" | "else" => format!("the `{part}` branch of {owner_text}"),
        "result" => format!("the body of loop {owner_text}"),
        "item" => format!("an item of loop {owner_text}"),
        "if" => format!("the condition of {owner_text}"),
        "match" => format!("the subject of {owner_text}"),
        arm if arm.starts_with("arm") => format!("arm {} of {owner_text}", &arm[3..]),
        _ => quoted(name),
    }
}

/// `` `name` ``, without the formatting machinery: sealing names every step
/// of a flow this way.
fn quoted(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('`');
    s.push_str(name);
    s.push('`');
    s
}

impl CallTarget {
    pub fn name<'a>(&self, program: &'a Program) -> &'a str {
        match self {
            CallTarget::Tool(t) => &program.tools[t.index()].name,
            CallTarget::Agent(a) => &program.agents[a.index()].name,
            CallTarget::Flow(f) => &program.flows[f.index()].name,
        }
    }
}

/// The classes an iteration of a `tolerate` loop can fail with, as its
/// `failed[].class` names them: a call's retry classes, then what else
/// stops a step. The runtime's `FailureClass` names each one of these.
pub const ITERATION_FAILURE_CLASSES: [&str; 13] = [
    "rate_limit",
    "timeout",
    "server_error",
    "connection",
    "invalid",
    "client",
    "failed",
    "circuit_breaker",
    "max_steps",
    "max_repeat",
    "template",
    "value",
    "check",
];

/// The value of `for x in xs tolerate N { … }`: `{ ok: [R] len ..M, failed:
/// [{ item: E, class: "rate_limit" | …, message: string }] len ..N }`, the
/// body's results of the iterations that succeeded (in input order) and the
/// items that failed, with why. Exact, so a typo in a field is an error.
pub fn tolerant_loop_type(result: Ty, element: Ty, max: Option<u64>, tolerate: u64) -> Ty {
    use crate::types::{Constraints, Field, Lit, Openness};
    let field = |name: &str, ty: Ty| Field {
        name: name.into(),
        ty,
        optional: false,
    };
    let failure = Ty::Record(
        vec![
            field("item", element),
            field(
                "class",
                Ty::Union(
                    ITERATION_FAILURE_CLASSES
                        .iter()
                        .map(|c| Lit::Str((*c).into()))
                        .collect(),
                ),
            ),
            field("message", Ty::string()),
        ],
        Openness::Exact,
    );
    let most_failed = max.map_or(tolerate, |m| m.min(tolerate));
    Ty::Record(
        vec![
            field(
                "ok",
                Ty::List(
                    Box::new(result),
                    Constraints {
                        max_len: max,
                        ..Constraints::default()
                    },
                ),
            ),
            field(
                "failed",
                Ty::List(
                    Box::new(failure),
                    Constraints {
                        max_len: Some(most_failed),
                        ..Constraints::default()
                    },
                ),
            ),
        ],
        Openness::Exact,
    )
}

/// `eval "name" { … }`: a flow measured over a dataset by scorers.
#[derive(Debug)]
pub struct Eval {
    pub name: String,
    pub span: Span,
    pub flow: Option<FlowId>,
    /// The type of a row's `expected` (`run flow expecting T`, else the
    /// flow's output type).
    pub expected: Ty,
    pub rows: Vec<EvalRow>,
    pub scorers: Vec<Scorer>,
    /// The weighted mean score a row needs to pass, and the pass rate the
    /// eval needs (both in [0, 1]).
    pub threshold: f64,
    pub budget: Option<Budget>,
    pub concurrency: u64,
}

/// One row: the flow's arguments and what it should produce.
#[derive(Debug)]
pub struct EvalRow {
    /// The row's line (1-based) in its dataset file, or of its `row` clause.
    pub line: usize,
    pub span: Span,
    pub data: RowData,
}

/// A row's values (`row { … } expecting …` literals, or a dataset line),
/// checked against the parameters' and the expected type's schemas.
#[derive(Debug)]
pub struct RowData {
    pub input: serde_json::Value,
    pub expected: Option<serde_json::Value>,
}

#[derive(Debug)]
pub struct Scorer {
    pub name: String,
    pub span: Span,
    pub weight: f64,
    pub kind: ScorerKind,
}

#[derive(Debug)]
pub enum ScorerKind {
    /// A deterministic expression over `input` (param 0), `output` (1),
    /// `expected` (2) and `trace` (3): a `bool` or a number in [0, 1].
    Expr(Expr),
    /// A model judge: a flow of `(input, output, expected)` returning
    /// `{ score, reason }` or a `bool`.
    Judge(FlowId),
}

/// The names the scorer expressions of an eval read, by parameter index.
pub const SCORER_SCOPE: [&str; 4] = ["input", "output", "expected", "trace"];
