//! The sealed program: what `check` hands the runtime once every pass has
//! succeeded. Every fact the checker proved is a type here, so the runtime
//! has nothing to re-derive and no default to pick:
//!
//! - no `Option` a diagnostic forbids: a tool's kind and timeout, an agent's
//!   model and `max_steps`, an `llm` step's `max_tokens` (per model of its
//!   fallback chain), a flow's budget and its `return`;
//! - enums for closed sets: [`HttpMethod`], [`Builtin`], [`ErrorClass`]
//!   (retry classes), [`Effect`], [`Decision`];
//! - templates compiled once with the scope the checker typed them in
//!   ([`TemplateScope`]), rendered by one function (`run::eval::render`);
//! - declarations keyed by id: `tools[ToolId]`, `models[ModelId]`, … Names
//!   are for messages, traces and file formats only.
//!
//! Only `check::seal` builds one (through `CheckedProgram`). The defaults a
//! language leaves open (an `llm` step's timeout, …) are decided there, once;
//! `docs/reference.md` lists them.

use std::time::Duration;

use petgraph::graph::{DiGraph, NodeIndex};

pub use crate::ast::{CompareOp, Decision, Effect};
use crate::deferred::Deferred;
/// Expressions are sealed as lowering typed them: a checked expression has
/// no unresolved name and no `Option` a code forbids. `StrTemplate` is a
/// string literal with `{…}` inside an expression.
pub use crate::ir::{
    AgentId, BodyEncoding, CallTarget, Dep, Expr, ExprKind, FlowId, HttpBody, ModelFamily, ModelId,
    Notify, NotifyKind, NotifyTarget, Protocol, ProviderId, Region, RegionId, RegionKind,
    ResponseFormat, Sampling, ServerId, Template as StrTemplate, TemplatePart, ToolId,
    ITERATION_FAILURE_CLASSES,
};
use crate::source::Span;
use crate::step_name::{Named, StepName};
use crate::types::{Lit, Ty, TypeTable};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Program {
    pub types: TypeTable,
    pub providers: Vec<Provider>,
    pub models: Vec<Model>,
    pub tools: Vec<Tool>,
    pub agents: Vec<Agent>,
    pub flows: Vec<Flow>,
    /// MCP servers, by `ServerId`.
    pub servers: Vec<McpServer>,
}

/// An MCP server as the runtime starts it. Its templates read only
/// `env.NAME` (they were typed with no parameters in scope).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct McpServer {
    pub id: ServerId,
    pub name: String,
    pub transport: McpTransport,
    /// Set in the started program's environment.
    pub env: Vec<(String, StrTemplate)>,
    /// How long starting it and listing its tools may take.
    pub start_timeout: Duration,
    /// The tool names its lock lists: the live server must still offer
    /// the ones the program calls.
    pub locked_tools: Vec<String>,
}

/// How an MCP server is reached. Streamable HTTP servers are refused at
/// check time (this build has no client for them), so only stdio is sealed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum McpTransport {
    /// A child process spoken to over its stdin and stdout.
    Stdio { argv: Vec<StrTemplate> },
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Provider {
    pub name: String,
    pub protocol: Protocol,
    /// Read first; `base_url` when it is unset.
    pub base_url_env: Option<String>,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
}

/// US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    /// The one model-cost formula: the checker's worst cases, the runtime's
    /// reservations and its settlements all call it.
    pub fn cost(self, input_tokens: f64, output_tokens: f64) -> f64 {
        (input_tokens * self.input + output_tokens * self.output) / 1e6
    }
}

/// A cost as people read it: four decimals where that shows it (`$0.0123`),
/// three significant digits for the tiny real spends four decimals would
/// print as `$0.0000` (`$0.0000135`), and `$0` for nothing.
pub fn dollars(amount: f64) -> String {
    let abs = amount.abs();
    if abs == 0.0 || !abs.is_finite() {
        return format!("${}", if abs == 0.0 { 0.0 } else { amount });
    }
    if abs >= 0.001 {
        return format!("${amount:.4}");
    }
    let decimals = (-abs.log10()).floor() as usize + 3;
    let text = format!("{amount:.decimals$}");
    format!("${}", text.trim_end_matches('0'))
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Model {
    pub id: ModelId,
    pub name: String,
    pub provider: ProviderId,
    /// The provider's name for it, e.g. `gpt-4o-mini`.
    pub model_id: String,
    /// Which parameters its API takes (`max_tokens` or
    /// `max_completion_tokens`).
    pub family: ModelFamily,
    pub temperature: Option<f64>,
    /// Calls in flight at once across the run (`concurrency`), if limited.
    pub concurrency: Option<u64>,
    /// Calls started per minute (`rpm`), if limited.
    pub rpm: Option<u64>,
    /// Other parameters, passed to the provider as written.
    #[serde(with = "crate::json_text::pairs")]
    pub extra: Vec<(String, serde_json::Value)>,
    /// `None`: the provider does not price it (allowed without a cost budget).
    pub price: Option<Price>,
}

impl Model {
    /// What a call costs: nothing for an unpriced model.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        self.price
            .map_or(0.0, |p| p.cost(input_tokens as f64, output_tokens as f64))
    }
}

/// One model of a call's fallback chain, with the output bound the checker
/// proved for it.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChainModel {
    pub model: ModelId,
    pub max_tokens: u64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Param {
    pub name: String,
    pub ty: Ty,
    pub optional: bool,
}

/// HTTP methods a tool may use (the grammar's list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub const ALL: [HttpMethod; 5] = [
        HttpMethod::Get,
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Patch,
        HttpMethod::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }

    pub fn from_name(name: &str) -> Option<HttpMethod> {
        HttpMethod::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }
}

/// The builtin tools the runtime implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Builtin {
    TimeNow,
    TimeSleep,
    FsRead,
    FsWrite,
    JsonParse,
}

impl Builtin {
    pub const ALL: [Builtin; 5] = [
        Builtin::TimeNow,
        Builtin::TimeSleep,
        Builtin::FsRead,
        Builtin::FsWrite,
        Builtin::JsonParse,
    ];

    /// The name a `builtin "…"` clause gives.
    pub fn as_str(self) -> &'static str {
        match self {
            Builtin::TimeNow => "time.now",
            Builtin::TimeSleep => "time.sleep",
            Builtin::FsRead => "fs.read",
            Builtin::FsWrite => "fs.write",
            Builtin::JsonParse => "json.parse",
        }
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.as_str() == name)
    }
}

/// What kind of failure happened; the names are `retry … on …` classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// HTTP 429 or a provider's rate-limit error.
    RateLimit,
    /// The call did not finish within its timeout.
    Timeout,
    /// HTTP 5xx.
    ServerError,
    /// The connection could not be made or broke.
    Connection,
    /// The reply did not parse or did not match its type.
    Invalid,
    /// The request was refused as malformed or unauthorised (HTTP 4xx other
    /// than 429): retrying cannot help.
    Client,
    /// A local program failed (non-zero exit) or a builtin failed.
    Failed,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::RateLimit,
        ErrorClass::Timeout,
        ErrorClass::ServerError,
        ErrorClass::Connection,
        ErrorClass::Invalid,
        ErrorClass::Client,
        ErrorClass::Failed,
    ];

    /// The name used in `retry … on` clauses.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::RateLimit => "rate_limit",
            ErrorClass::Timeout => "timeout",
            ErrorClass::ServerError => "server_error",
            ErrorClass::Connection => "connection",
            ErrorClass::Invalid => "invalid",
            ErrorClass::Client => "client",
            ErrorClass::Failed => "failed",
        }
    }

    pub fn from_name(name: &str) -> Option<ErrorClass> {
        ErrorClass::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Classifies an HTTP status that is not a success.
    pub fn from_status(status: u16) -> ErrorClass {
        match status {
            429 => ErrorClass::RateLimit,
            408 => ErrorClass::Timeout,
            500..=599 => ErrorClass::ServerError,
            _ => ErrorClass::Client,
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    pub on: Vec<ErrorClass>,
    pub base: Duration,
    pub factor: f64,
    pub cap: Option<Duration>,
    pub jitter: bool,
}

impl RetryPolicy {
    pub fn retries_on(&self, class: ErrorClass) -> bool {
        self.on.contains(&class)
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ToolKind {
    Http {
        method: HttpMethod,
        url: Template,
        headers: Vec<(String, Template)>,
        /// `query { … }`: appended to the URL's query string.
        query: Vec<(String, Expr)>,
        body: HttpBody,
        /// How the response body is read.
        format: ResponseFormat,
        /// Parameters (by index) interpolated into the URL as written.
        raw: Vec<usize>,
    },
    Exec {
        argv: Vec<Template>,
    },
    Builtin(Builtin),
    /// A tool of an MCP server: the server, and the tool's name there.
    Mcp {
        server: ServerId,
        name: String,
        /// `text` for a `string` result (the text content), `json`
        /// otherwise (the structured content, or the text as JSON).
        format: ResponseFormat,
    },
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Tool {
    pub id: ToolId,
    pub name: String,
    pub params: Vec<Param>,
    pub output: Ty,
    pub kind: ToolKind,
    pub effect: Effect,
    pub timeout: Duration,
    pub retry: Option<RetryPolicy>,
    /// Write and irreversible tools only (a read has no key).
    pub idempotency: Option<Template>,
    pub limit_tokens: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Budget {
    pub tokens: Option<u64>,
    pub cost: Option<f64>,
    pub steps: Option<u64>,
    pub tool_calls: Option<u64>,
    pub wall: Option<Duration>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    pub params: Vec<Param>,
    pub output: Ty,
    /// Its model and that model's fallbacks, each once, with their output
    /// bounds per turn: a turn whose model still fails after its retries
    /// (or whose breaker is open) goes to the next, and later turns start
    /// there.
    pub chain: Vec<ChainModel>,
    /// How each model turn is retried: declared, or the default.
    pub retry: RetryPolicy,
    /// The tools its `may` allows, in declaration order.
    pub tools: Vec<ToolId>,
    pub max_steps: u64,
    /// Calls of one tool with the same arguments in a row that stop it.
    pub max_repeat: Option<u64>,
    pub instructions: Option<Template>,
    pub budget: Option<Budget>,
    /// Bounds the whole loop, tool calls included.
    pub timeout: Option<Duration>,
    /// Bounds one model turn.
    pub turn_timeout: Duration,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Flow {
    pub id: FlowId,
    pub name: String,
    pub params: Vec<Param>,
    pub output: Ty,
    pub budget: Budget,
    /// Its steps' names kept as one text (`step_name::graph`).
    #[serde(with = "crate::step_name::graph")]
    pub graph: DiGraph<Step, Dep>,
    pub regions: Vec<Region>,
    /// The step that produces the flow's result (`return`).
    pub output_step: NodeIndex,
}

impl Flow {
    /// Whether `region` is `ancestor` or nested inside it.
    pub fn region_within(&self, region: RegionId, ancestor: RegionId) -> bool {
        crate::ir::region_within(&self.regions, region, ancestor)
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Step {
    /// The name lowering gave it (`x`, `posted.result`): run-store keys.
    /// Kept with its flow's graph, not here (`step_name::graph`).
    #[serde(skip, default = "StepName::unset")]
    pub name: StepName,
    pub region: RegionId,
    pub kind: StepKind,
    pub ty: Ty,
    pub fallback: Option<Fallback>,
    /// True when the step's value is read by another step or the output.
    pub named: bool,
}

impl Named for Step {
    fn name(&self) -> &StepName {
        &self.name
    }
    fn name_mut(&mut self) -> &mut StepName {
        &mut self.name
    }
}

impl Step {
    /// How messages name it (`` `x` ``, "the body of loop `posted`"): made
    /// from its name when a message needs it, not kept (a kept program is
    /// decoded at every resume, and only a failing step is named).
    pub fn shown(&self) -> String {
        crate::ir::describe_step_name(&self.name)
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Fallback {
    Value(Expr),
    Call(CallTarget, Vec<(String, Expr)>),
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum StepKind {
    Value(Expr),
    Call {
        target: CallTarget,
        /// Decoded when the call runs: a resume replays most calls from
        /// the run store and never reads their arguments.
        args: Deferred<Vec<(String, Expr)>>,
    },
    Llm(Box<LlmCall>),
    Approve(Box<Gate>),
    LoopItem {
        iterable: Expr,
    },
    Loop {
        item: NodeIndex,
        body: RegionId,
        result: NodeIndex,
        parallel: u64,
        /// Iterations that may fail before the loop does; the loop's value
        /// is then `{ ok, failed }` (`ir::tolerant_loop_type`).
        tolerate: Option<u64>,
    },
    Decide {
        subject: Expr,
    },
    Branch {
        decide: NodeIndex,
        arms: Vec<Arm>,
    },
    Check {
        requires: Vec<(Expr, Template)>,
    },
    Output(Expr),
}

/// An approval gate, sealed: what it shows, who is told, what decides it
/// without a person, and what its timeout does.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Gate {
    pub name: String,
    pub show: Vec<Expr>,
    pub timeout: Option<Duration>,
    /// The outcome when nobody decided in time (after the escalation, when
    /// there is one: then `Reject`).
    pub on_timeout: Decision,
    pub escalation: Option<Escalation>,
    pub policy: Option<Policy>,
    /// Announced here when the gate starts waiting for a person.
    pub notify: Option<Notify>,
}

/// When the gate's timeout passes: tell `notify` and wait `timeout` more.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Escalation {
    pub notify: Notify,
    pub timeout: Duration,
}

/// `auto approve when EXPR`, with what it reads named for the record.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    pub when: Expr,
    /// The values the condition reads (`r.amount`, `limit`), by the text a
    /// reader knows them by: recorded with every decision it makes.
    pub reads: Vec<(String, Expr)>,
    pub sample: Option<Sampling>,
}

impl StepKind {
    /// Steps whose results are checkpointed: calls, model calls, gates,
    /// loops and branches. The rest are cheap and deterministic: recomputed
    /// on resume.
    pub fn is_durable(&self) -> bool {
        matches!(
            self,
            StepKind::Call { .. }
                | StepKind::Llm(_)
                | StepKind::Approve { .. }
                | StepKind::Loop { .. }
                | StepKind::Branch { .. }
        )
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Arm {
    /// `None` for `_` and `else`.
    pub pattern: Option<Lit>,
    pub region: RegionId,
    /// `None` for a missing `else` (the value is null).
    pub result: Option<NodeIndex>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LlmCall {
    /// The model and its fallbacks, each once, with their output bounds.
    pub chain: Vec<ChainModel>,
    pub output: Ty,
    pub prompt: Option<Template>,
    pub system: Option<Template>,
    /// The `retry` clause, or the default (`ir::RetryPolicy::llm_default`).
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub budget: Option<Budget>,
}

/// Where a template's names get their values: the checker typed it there,
/// and the runtime renders it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TemplateScope {
    /// A tool's URL, headers, argv and idempotency key: its own parameters
    /// and `env.NAME`.
    Tool(ToolId),
    /// An agent's instructions: its parameters.
    Agent(AgentId),
    /// A prompt, a `check` message: the flow's parameters and steps.
    Flow(FlowId),
}

/// A template compiled once: fixed text and typed expressions.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Template {
    pub scope: TemplateScope,
    pub parts: Vec<TemplatePart>,
    pub span: Span,
}

impl Template {
    /// Every step this template reads.
    pub fn steps(&self, out: &mut Vec<NodeIndex>) {
        for part in &self.parts {
            if let TemplatePart::Expr(e) = part {
                e.steps(out);
            }
        }
    }
}

impl Program {
    pub fn flow_named(&self, name: &str) -> Option<&Flow> {
        self.flows.iter().find(|f| f.name == name)
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

impl CallTarget {
    /// The callee's name, for messages and reports.
    pub fn name_in<'a>(&self, program: &'a Program) -> &'a str {
        match self {
            CallTarget::Tool(t) => &program.tools[t.index()].name,
            CallTarget::Agent(a) => &program.agents[a.index()].name,
            CallTarget::Flow(f) => &program.flows[f.index()].name,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dollars() {
        for (amount, shown) in [
            (0.0, "$0"),
            (0.1234567, "$0.1235"),
            (12.5, "$12.5000"),
            (0.001, "$0.0010"),
            (0.0000135, "$0.0000135"),
            (0.00009, "$0.00009"),
            (0.000123456, "$0.000123"),
        ] {
            assert_eq!(super::dollars(amount), shown, "{amount}");
        }
    }
}
