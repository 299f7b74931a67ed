//! The stable diagnostic codes. A code never changes meaning once released;
//! its long explanation lives in `docs/codes/CODE.md` and is what
//! `flowc explain CODE` prints.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

macro_rules! codes {
    ($($variant:ident = $code:literal, $slug:literal, $severity:ident, $summary:literal;)*) => {
        /// Every diagnostic `flowc` can report.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($variant),* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The stable code, such as `A001`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code),* }
            }

            /// A short kebab-case name, such as `ungated-irreversible`.
            pub fn slug(self) -> &'static str {
                match self { $(Code::$variant => $slug),* }
            }

            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$severity),* }
            }

            /// One line saying what the code reports.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $summary),* }
            }

            /// The long explanation with a wrong and a right example.
            pub fn explanation(self) -> &'static str {
                match self { $(Code::$variant => include_str!(concat!("../docs/codes/", $code, ".md"))),* }
            }
        }
    };
}

codes! {
    Syntax = "S001", "syntax-error", Error, "the text does not follow the grammar";
    UndefinedName = "N001", "undefined-name", Error, "a name that is not declared or imported";
    DuplicateName = "N002", "duplicate-name", Error, "a name declared twice in the same scope";
    UnresolvedImport = "N003", "unresolved-import", Error, "a `use` whose module or name cannot be found";
    WrongKind = "N004", "wrong-kind", Error, "a name used as something it is not (a model called as a tool, ...)";
    TypeMismatch = "T001", "type-mismatch", Error, "a value whose type does not fit where it is used";
    UnknownField = "T002", "unknown-field", Error, "access to a field that the record type does not have";
    MissingArgument = "T003", "missing-argument", Error, "a call that omits a required argument";
    UnknownArgument = "T004", "unknown-argument", Error, "a call that passes an argument the callee does not take";
    InvalidConstraint = "T005", "invalid-constraint", Error, "a type constraint that is malformed or cannot apply";
    InvalidSchemaFile = "T006", "invalid-schema-file", Error, "a `schema \"file\"` type whose file is missing or not a JSON Schema";
    InvalidDeclaration = "T007", "invalid-declaration", Error, "a declaration with a missing, repeated or malformed clause";
    BadReturn = "T008", "bad-return", Error, "a flow without exactly one `return`";
    Cycle = "G001", "cycle", Error, "steps that depend on each other in a circle";
    RecursiveFlow = "G002", "recursive-flow", Error, "flows that call each other recursively";
    CallsTooDeep = "G003", "calls-too-deep", Error, "a chain of flow calls more than 32 flows deep";
    HiddenDependency = "D001", "hidden-dependency", Error, "steps that may run at once and touch the same resource, one writing";
    LoopReadsOwnResults = "D002", "loop-reads-own-results", Error, "a loop body that reads the results of its own loop";
    UndeclaredAgentTool = "U001", "undeclared-agent-tool", Error, "an agent that lists a tool that is not declared";
    UnusedTool = "U002", "unused-tool", Warning, "a declared tool that no flow or agent can call";
    ForbiddenEffect = "U003", "forbidden-effect", Error, "an agent that lists a tool whose effect its `may` forbids";
    UngatedIrreversible = "A001", "ungated-irreversible", Error, "an irreversible call that can run without an approval gate first";
    UntrustedToEffect = "A002", "untrusted-to-effect", Error, "untrusted content (a tool result, a model's output) reaches a write or irreversible call that no reviewer saw it go into";
    RetryWithoutIdempotency = "A003", "retry-without-idempotency", Error, "a write or irreversible tool retried after a failure that may have taken effect, with no idempotency key";
    AgentWithoutMaxSteps = "B001", "agent-without-max-steps", Error, "an agent with no `max_steps` bound";
    FlowWithoutBudget = "B002", "flow-without-budget", Error, "a flow with no `budget`";
    ToolWithoutTimeout = "B003", "tool-without-timeout", Error, "a tool with no `timeout`";
    BudgetExceeded = "B004", "budget-exceeded", Error, "a worst case (tokens, cost or steps) above the declared budget";
    UnboundedIteration = "B005", "unbounded-iteration", Error, "a loop that calls models over a list with no maximum length";
    ModelWithoutMaxTokens = "B006", "model-without-max-tokens", Error, "a model call whose output length is not bounded";
    BudgetBoundsNothing = "B007", "budget-bounds-nothing", Warning, "a flow budget with no `wall` (nothing bounds time), or with only `wall` (nothing bounds spend)";
    TooManyTools = "B008", "too-many-tools", Warning, "an agent with more tools than a model chooses among reliably";
    ContextWindowExceeded = "C001", "context-window-exceeded", Error, "a prompt whose worst case does not fit the model's context window";
    UnboundedPromptValue = "C002", "unbounded-prompt-value", Warning, "a prompt that quotes a tool result with no `limit`, so no context window can be proven to hold it";
    DeadStep = "X001", "dead-step", Warning, "a step whose value is never used and that has no effect";
    UnreachableArm = "X002", "unreachable-arm", Warning, "a `match` arm that can never be taken";
    SecretInPrompt = "K001", "secret-in-prompt", Error, "an `env.` value used outside a tool or provider, where it could leak";
    McpLockMismatch = "M001", "mcp-lock-mismatch", Error, "an MCP tool that its lock file does not describe as declared (no lock, no such tool, a differing field)";
    InvalidDataset = "V002", "invalid-dataset", Error, "an eval's dataset that cannot be read, or a row that does not fit the flow's parameters or expected type";
    TestWithoutExpectation = "V001", "test-without-expectation", Error, "a test block with no `expect`";
}

impl Code {
    /// Looks a code up by its code (`A001`, any case) or its slug.
    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.as_str().eq_ignore_ascii_case(text) || c.slug() == text)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
