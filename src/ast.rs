//! The untyped syntax tree, exactly as written, with a span on every node.
//! Names are plain strings here; `lower` resolves them.

use crate::source::{FileId, Span};

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub file: FileId,
    pub items: Vec<Item>,
    /// Names of items that failed to parse: uses of them are not reported again.
    pub broken: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Use(Use),
    Type(TypeDecl),
    Model(ModelDecl),
    Resource(Ident),
    Provider(ProviderDecl),
    Server(ServerDecl),
    Tool(ToolDecl),
    Agent(AgentDecl),
    Flow(FlowDecl),
    Test(TestDecl),
    Eval(EvalDecl),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Use {
    pub path: ModulePath,
    pub names: Vec<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ModulePath {
    /// `std.models`
    Std(Vec<Ident>),
    /// `"./shared.flow"`
    File(String),
}

// ------------------------------------------------------------------ types

#[derive(Clone, Debug, PartialEq)]
pub struct TypeDecl {
    pub name: Ident,
    pub ty: TypeExpr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub kind: TypeExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TypeExprKind {
    /// `"a" | "b"` (two or more members).
    Union(Vec<TypeExpr>),
    /// `T?`
    Optional(Box<TypeExpr>),
    /// `T matching /re/ len 1..5 >= 0`
    Constrained(Box<TypeExpr>, Vec<Constraint>),
    List(Box<TypeExpr>),
    /// `{ … }` or `exact { … }`.
    Record(Vec<FieldDecl>, crate::types::Openness),
    Schema(String),
    Literal(Literal),
    Named(Ident),
}

#[derive(Clone, Debug, PartialEq)]
pub struct FieldDecl {
    pub name: Ident,
    pub optional: bool,
    pub ty: TypeExpr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    pub kind: ConstraintKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConstraintKind {
    Matching(String),
    Len { min: Option<u64>, max: Option<u64> },
    Bound(BoundOp, f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundOp {
    Ge,
    Gt,
    Le,
    Lt,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Str(String),
    Number(f64),
    Bool(bool),
}

// ------------------------------------------------------------------ declarations

#[derive(Clone, Debug, PartialEq)]
pub struct ModelDecl {
    pub name: Ident,
    pub provider: Ident,
    pub model_id: String,
    pub model_id_span: Span,
    pub params: Vec<(Ident, Expr)>,
    pub span: Span,
}

/// `server NAME { … }`: an MCP server tools are bound to.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerDecl {
    pub name: Ident,
    pub clauses: Vec<ServerClause>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServerClause {
    pub kind: ServerClauseKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ServerClauseKind {
    /// `command ["prog", "arg"]`: started as a child, spoken to over stdio.
    Command(Vec<Template>),
    /// `url "https://…/mcp"`: Streamable HTTP.
    Url(Template),
    Header {
        name: String,
        value: Template,
    },
    /// `env "NAME" "value"`: set in the started program's environment.
    Env {
        name: String,
        value: Template,
    },
    Timeout(Quantity),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProviderDecl {
    pub name: Ident,
    pub protocol: Option<Ident>,
    pub base_url: Option<EnvOrString>,
    pub api_key: Option<Ident>,
    pub prices: Vec<Price>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EnvOrString {
    pub env: Option<Ident>,
    pub default: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Price {
    /// `None` for the wildcard `*`.
    pub model: Option<String>,
    /// US dollars per million tokens.
    pub input: f64,
    pub output: f64,
    /// The model's context window in tokens (`context 128k`).
    pub context: Option<u64>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub optional: bool,
    pub ty: TypeExpr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ToolDecl {
    pub name: Ident,
    pub params: Vec<Param>,
    pub output: TypeExpr,
    pub clauses: Vec<ToolClause>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ToolClause {
    pub kind: ToolClauseKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ToolClauseKind {
    Http {
        method: String,
        url: Template,
    },
    Exec(Vec<Template>),
    Builtin(String),
    Header {
        name: String,
        value: Template,
    },
    Effect(Effect),
    Reads(Vec<Ident>),
    Writes(Vec<Ident>),
    Timeout(Quantity),
    Retry(Retry),
    Idempotency(Template),
    Limit(Quantity),
    /// `query { name: expr, … }` (always an object expression).
    Query(Expr),
    /// `body [json|form] expr`
    Body {
        encoding: BodyEncoding,
        value: Expr,
    },
    /// `format json|text`
    Format(ResponseFormat),
    /// `raw a, b`: parameters interpolated into the URL as written.
    Raw(Vec<Ident>),
    /// `mcp server "tool"`: a tool of an MCP server.
    Mcp {
        server: Ident,
        tool: Option<String>,
    },
}

/// How an `http` tool's `body` is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum BodyEncoding {
    /// `application/json` (the default).
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
}

impl BodyEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyEncoding::Json => "json",
            BodyEncoding::Form => "form",
        }
    }
}

/// How an `http` tool's response body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ResponseFormat {
    /// Parsed as JSON; the response must say it is JSON.
    Json,
    /// Taken as text (a `string` result).
    Text,
}

impl ResponseFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFormat::Json => "json",
            ResponseFormat::Text => "text",
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Effect {
    Read,
    Write,
    Irreversible,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Read => "read",
            Effect::Write => "write",
            Effect::Irreversible => "irreversible",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    pub attempts: u32,
    pub on: Vec<Ident>,
    pub backoff: Option<(Quantity, Option<f64>)>,
    pub cap: Option<Quantity>,
    pub jitter: bool,
    pub span: Span,
}

/// A number with its unit as written: `30s`, `100k`, `$1.50`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantity {
    pub value: f64,
    pub unit: Unit,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Seconds,
    Dollars,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AgentDecl {
    pub name: Ident,
    pub params: Vec<Param>,
    pub output: TypeExpr,
    pub clauses: Vec<AgentClause>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AgentClause {
    pub kind: AgentClauseKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AgentClauseKind {
    Model(Ident),
    Tools(Vec<Ident>),
    May(Effect),
    MaxSteps(u64),
    MaxRepeat(u64),
    Instructions(Template),
    Budget(Budget),
    Timeout(Quantity),
    /// How each model turn is retried.
    Retry(Retry),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub entries: Vec<(Ident, Quantity)>,
    pub span: Span,
}

// ------------------------------------------------------------------ flows

#[derive(Clone, Debug, PartialEq)]
pub struct FlowDecl {
    pub name: Ident,
    pub params: Vec<Param>,
    pub output: TypeExpr,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Budget(Budget),
    Let(Box<Let>),
    Check(Check),
    Return(Expr, Span),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Let {
    pub name: Ident,
    pub step: Step,
    pub after: Vec<Ident>,
    pub fallback: Option<Step>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: Ident,
    pub requires: Vec<(Expr, Template)>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    Call(Call),
    Llm(LlmStep),
    Approve(Box<ApproveStep>),
    For(ForStep),
    If(IfStep),
    Match(MatchStep),
    Expr(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub callee: Ident,
    pub args: Vec<(Ident, Expr)>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LlmStep {
    pub model: Ident,
    pub output: TypeExpr,
    pub clauses: Vec<LlmClause>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LlmClause {
    pub kind: LlmClauseKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LlmClauseKind {
    Prompt(Template),
    System(Template),
    Retry(Retry),
    Timeout(Quantity),
    MaxTokens(Quantity),
    Budget(Budget),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApproveStep {
    pub gate: Ident,
    pub show: Vec<Expr>,
    pub timeout: Option<Quantity>,
    /// What happens when `timeout` passes; the span is the outcome's word.
    pub on_timeout: Option<(OnTimeout, Span)>,
    /// `auto approve when EXPR`: the cases the policy decides without a person.
    pub policy: Option<Policy>,
    /// `sample …`: policy-decided cases sent to review after the fact.
    pub sample: Option<Sample>,
    /// `notify webhook …`: where a pending decision is announced.
    pub notify: Option<Notify>,
}

/// A gate's `on_timeout` outcome.
#[derive(Clone, Debug, PartialEq)]
pub enum OnTimeout {
    Decide(Decision),
    /// `escalate { notify …, timeout … }`: announce to a second target and
    /// wait once more; then reject.
    Escalate(Escalation),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Escalation {
    pub notify: Option<Notify>,
    pub timeout: Option<Quantity>,
    pub span: Span,
}

/// `auto approve when EXPR`.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub when: Expr,
    pub span: Span,
}

/// `sample 2%`, `sample 20 per day`, `sample 2% max 20 per day`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Percent of policy-decided cases (0–100), as written.
    pub percent: Option<(f64, Span)>,
    /// At most this many a day (UTC).
    pub per_day: Option<(u64, Span)>,
    pub span: Span,
}

/// `notify KIND TARGET`.
#[derive(Clone, Debug, PartialEq)]
pub struct Notify {
    pub kind: NotifyKind,
    pub target: NotifyTarget,
    pub span: Span,
}

/// Where a notification goes: a closed set of kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum NotifyKind {
    /// A Slack-compatible incoming webhook: a POST of `{"text": …}`.
    Webhook,
}

impl NotifyKind {
    pub const ALL: [NotifyKind; 1] = [NotifyKind::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Webhook => "webhook",
        }
    }

    pub fn from_name(name: &str) -> Option<NotifyKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A notification's address: written out, or read from the environment
/// when the run starts (a webhook URL is usually a secret).
#[derive(Clone, Debug, PartialEq)]
pub enum NotifyTarget {
    Url(String),
    Env(Ident),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Decision {
    Approve,
    Reject,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForStep {
    pub var: Ident,
    pub iterable: Expr,
    pub parallel: Option<(u64, Span)>,
    /// `tolerate N`: up to N iterations may fail.
    pub tolerate: Option<(u64, Span)>,
    pub body: Block,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IfStep {
    pub condition: Expr,
    pub then: Block,
    pub otherwise: Option<Block>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MatchStep {
    pub scrutinee: Expr,
    pub arms: Vec<MatchArm>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MatchArm {
    /// `None` for `_`.
    pub pattern: Option<Literal>,
    pub pattern_span: Span,
    pub body: Block,
}

/// Steps followed by the value the block produces. A branch written as a
/// single step is a block with no statements.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub result: Box<Step>,
    pub span: Span,
}

// ------------------------------------------------------------------ expressions

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Str(Template),
    Number(f64),
    Bool(bool),
    Null,
    Object(Vec<(Ident, Expr)>),
    List(Vec<Expr>),
    Env(Ident),
    Name(Ident),
    Member(Box<Expr>, Ident),
    Index(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, CompareOp, Box<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }
}

/// A string with `{expr}` interpolations.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pub parts: Vec<TemplatePart>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TemplatePart {
    Text(String),
    Expr(Expr),
}

impl Template {
    /// The text when the template has no interpolation.
    pub fn as_plain(&self) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Expr(_) => return None,
            }
        }
        Some(out)
    }

    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Expr(e) => Some(e),
            TemplatePart::Text(_) => None,
        })
    }
}

// ------------------------------------------------------------------ tests

#[derive(Clone, Debug, PartialEq)]
pub struct TestDecl {
    pub name: String,
    pub name_span: Span,
    pub stmts: Vec<TestStmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TestStmt {
    Run(Call),
    Given {
        target: Ident,
        outcome: Given,
        span: Span,
    },
    GivenGate {
        gate: Ident,
        outcome: GateOutcome,
        span: Span,
    },
    Expect(Expr),
    ExpectCalls {
        target: Ident,
        times: u64,
        span: Span,
    },
    /// `expect failure ["text"]`: the flow must fail (with an error containing the text).
    ExpectFailure {
        text: Option<String>,
        span: Span,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Given {
    Returns(Expr),
    Fails(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum GateOutcome {
    Approves(Option<Expr>),
    Rejects(Option<String>),
}

// ------------------------------------------------------------------ evals

/// `eval "name" { run flow … score … }`: measures a flow over a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalDecl {
    pub name: String,
    pub name_span: Span,
    pub clauses: Vec<EvalClause>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EvalClause {
    pub kind: EvalClauseKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EvalClauseKind {
    /// `run flow [expecting Type]`
    Run {
        flow: Ident,
        expecting: Option<TypeExpr>,
    },
    /// `dataset "rows.jsonl"` (JSON lines or CSV, relative to the file).
    Dataset {
        path: String,
        path_span: Span,
    },
    /// `row { param: value } [expecting value]`
    Row {
        input: Expr,
        expecting: Option<Expr>,
    },
    /// `score name [weight N] = expr` or `= llm model -> T { … }`
    Score {
        name: Ident,
        weight: Option<(f64, Span)>,
        scorer: Step,
    },
    Threshold(f64),
    Concurrency(u64),
    Budget(Budget),
}
