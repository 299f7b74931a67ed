//! Text → [`ast::Module`]. The pest grammar (`grammar/flow.pest`) does the
//! recognising; this file turns its pairs into the syntax tree and turns its
//! failures into `S001` diagnostics.
//!
//! Recovery: the file is parsed one top-level item at a time. After a broken
//! item the parser resumes at the next line that starts with a top-level
//! keyword, so every broken item gets its own diagnostic. A big flow may
//! be parsed in two parts at once (`split.rs`), with the same result.

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser as _;

use crate::ast::*;
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::grammar::{FlowGrammar, Rule};
use crate::source::{FileId, Span};
use crate::syntax::scan;
use crate::syntax::tokens::Tokens;

mod clauses;
mod split;
use clauses::ClauseList;

/// Words that can never name a binding, a declaration or a parameter.
/// Field names, argument names and clause words are not reserved.
pub const RESERVED: &[&str] = &[
    "use", "type", "model", "resource", "tool", "agent", "flow", "test", "eval", "provider", "let",
    "return", "llm", "approve", "for", "in", "parallel", "if", "else", "match", "check", "require",
    "after", "fallback", "budget", "true", "false", "null", "and", "or", "not", "env",
];

/// Whether `name` is in [`RESERVED`]; a `match` (one length dispatch and a
/// comparison or two) rather than 32 comparisons for every name parsed.
fn is_reserved(name: &str) -> bool {
    matches!(
        name,
        "use"
            | "type"
            | "model"
            | "resource"
            | "tool"
            | "agent"
            | "flow"
            | "test"
            | "eval"
            | "provider"
            | "let"
            | "return"
            | "llm"
            | "approve"
            | "for"
            | "in"
            | "parallel"
            | "if"
            | "else"
            | "match"
            | "check"
            | "require"
            | "after"
            | "fallback"
            | "budget"
            | "true"
            | "false"
            | "null"
            | "and"
            | "or"
            | "not"
            | "env"
    )
}

const ITEM_KEYWORDS: &[&str] = &[
    "use", "type", "model", "resource", "provider", "tool", "agent", "flow", "test", "eval",
    "server",
];

/// Parses one file. Never fails: broken items are left out of the module and
/// reported.
pub fn parse(file: FileId, text: &str) -> (Module, Vec<Diagnostic>) {
    parse_scanned(file, text, scan::scan(text, MAX_DEPTH))
}

/// [`parse`], keeping the token table of the same scan (for `flowc fmt`,
/// which prints from the tree and the table; `flowc check` does not pay
/// for it).
pub fn parse_keeping_tokens(file: FileId, text: &str) -> (Module, Vec<Diagnostic>, Tokens) {
    let (scan, tokens) = scan::scan_tokens(text, MAX_DEPTH);
    let (module, diagnostics) = parse_scanned(file, text, scan);
    (module, diagnostics, tokens)
}

fn parse_scanned(file: FileId, text: &str, mut scan: scan::Scan) -> (Module, Vec<Diagnostic>) {
    let mut parser = Parser {
        file,
        base: 0,
        diagnostics: Vec::new(),
        climbing: 0,
        comments: std::mem::take(&mut scan.comments),
    };
    if let Some(at) = scan.too_deep {
        let d = Diagnostic::new(Code::Syntax, Span::new(file, at, at + 1), format!("this nests deeper than {MAX_DEPTH} levels"))
            .label("too deep")
            .help("split the value into named steps; flowc refuses deeper nesting rather than risk running out of stack");
        return (
            Module {
                file,
                items: Vec::new(),
                broken: Vec::new(),
            },
            vec![d],
        );
    }
    let mut items = Vec::new();
    let mut broken = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let rest = &text[pos..];
        if scan::only_trivia(rest) {
            break;
        }
        parser.base = pos;
        if let Some(cut) = split::cut(&scan, text, pos) {
            if crate::cores::second_core() {
                if let Some((item, end)) = split::parse_flow_in_two(&mut parser, text, pos, cut) {
                    items.push(item);
                    pos = end;
                    continue;
                }
            }
        }
        match FlowGrammar::parse(Rule::item_only, rest) {
            Ok(mut pairs) => match pairs.next() {
                Some(pair) => {
                    let end = pair.as_span().end();
                    match parser.item(pair) {
                        Some(item) => items.push(item),
                        None => broken.extend(item_name(rest)),
                    }
                    if end == 0 {
                        break;
                    }
                    pos += end;
                }
                None => break,
            },
            Err(error) => {
                // Tracking what was expected doubles parse time, so only a
                // failed item is parsed again with it on.
                pest::set_error_detail(true);
                let error = FlowGrammar::parse(Rule::item_only, rest)
                    .err()
                    .unwrap_or(error);
                pest::set_error_detail(false);
                let at = match error.location {
                    InputLocation::Pos(p) => p,
                    InputLocation::Span((s, _)) => s,
                };
                parser
                    .diagnostics
                    .push(syntax_error(file, text, pos, &error));
                if let Some(name) = item_name(rest) {
                    broken.push(name);
                }
                match next_item_start(text, pos + at.max(1)) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
        }
    }
    (
        Module {
            file,
            items,
            broken,
        },
        parser.diagnostics,
    )
}

/// The name a (possibly broken) item declares: `tool NAME(…` → `NAME`.
fn item_name(text: &str) -> Option<String> {
    let mut words = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty());
    let keyword = words.next()?;
    if !ITEM_KEYWORDS.contains(&keyword)
        || keyword == "use"
        || keyword == "test"
        || keyword == "eval"
    {
        return None;
    }
    words.next().map(str::to_string)
}

/// How deeply `(`, `[` and `{` may nest. Real flows stay far below it; the
/// parser and lowering recurse once per level, so this bounds their stack.
pub const MAX_DEPTH: usize = 64;

/// How deep one expression may be. A name or a literal is one level; every
/// `.field`, `[index]`, `not`, `and`, `or`, comparison, list, record and
/// string with an interpolation adds one level around what it holds. Every
/// later stage walks expressions recursively, so this bounds their stack
/// (about 8 KiB a level in a debug build; the main thread has 8 MiB).
pub const MAX_EXPR_DEPTH: u32 = 256;

/// The first line at or after `from` (the line containing `from` excluded)
/// that begins with a top-level keyword.
fn next_item_start(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from.min(text.len());
    loop {
        // advance to the start of the next line
        while i < bytes.len() && bytes[i] != b'\n' {
            i += 1;
        }
        if i >= bytes.len() {
            return None;
        }
        i += 1;
        let line = &text[i..];
        for kw in ITEM_KEYWORDS {
            if let Some(after) = line.strip_prefix(kw) {
                if after.starts_with([' ', '\t', '"']) {
                    return Some(i);
                }
            }
        }
    }
}

fn syntax_error(
    file: FileId,
    text: &str,
    base: usize,
    error: &pest::error::Error<Rule>,
) -> Diagnostic {
    let (start, end) = match error.location {
        InputLocation::Pos(p) => (base + p, base + p),
        InputLocation::Span((s, e)) => (base + s, base + e),
    };
    let found = describe_found(text, start);
    let found = found.as_str();
    let width = found_width(text, start);
    let span = Span::new(file, start, start + width.max(end - start));
    let mut tokens: Vec<String> = Vec::new();
    if let Some(attempts) = error.parse_attempts() {
        for token in attempts.expected_tokens() {
            // Ranges (`a..z`) and built-in rules say nothing a reader can use.
            let token = token.to_string();
            let chars: Vec<char> = token.chars().collect();
            let is_range = matches!(chars.as_slice(), [_, '.', '.', _]);
            if token != "BUILTIN_RULE" && !is_range && !token.trim().is_empty() && token != "//" {
                tokens.push(token);
            }
        }
    }
    let mut described: Vec<&str> = Vec::new();
    if let ErrorVariant::ParsingError { positives, .. } = &error.variant {
        described.extend(positives.iter().filter_map(|r| describe_rule(*r)));
    }
    // Two shapes of mistake deserve their own sentence.
    let at_number = text[start..].starts_with(|c: char| c.is_ascii_digit());
    if tokens.iter().any(|t| t == "ms")
        && (at_number || text[..start].ends_with(|c: char| c.is_ascii_digit()))
    {
        return Diagnostic::new(Code::Syntax, span, "a duration needs a unit")
            .label("number without a unit")
            .help("write the unit after the number: `500ms`, `30s`, `15m`, `48h` or `2d`");
    }
    if found == "end of line" && tokens.iter().any(|t| t == "\"") {
        return Diagnostic::new(Code::Syntax, span, "this string is not closed on its line")
            .label("the line ends inside the string")
            .help("close it with `\"`; for text over several lines use `\"\"\"…\"\"\"`");
    }
    // A `"""` string that is never closed fails wherever its text first
    // breaks a rule (often far below); the mistake is where it opened.
    if tokens.iter().any(|t| t == "\"\"\"") && !text[start..].contains("\"\"\"") {
        if let Some(open) = text[..start].rfind("\"\"\"") {
            let open_span = Span::new(file, open, open + 3);
            return Diagnostic::new(
                Code::Syntax,
                open_span,
                "this `\"\"\"` string is never closed",
            )
            .label("opened here, with no closing `\"\"\"` below")
            .with(span, "parsing failed here, inside the string")
            .help("end the text with `\"\"\"`; a literal brace inside it is written `{{` or `}}`");
        }
    }
    // Operators the language does not have, where an operator could follow.
    let operator_expected = tokens.iter().any(|t| t == "and" || t == "==");
    if operator_expected && ["`+`", "`-`", "`*`", "`/`", "`%`"].contains(&found) {
        return Diagnostic::new(Code::Syntax, span, format!("Flow has no arithmetic: {found} is not an operator"))
            .label("not an operator")
            .help("expressions compare and combine (`==`, `<`, `and`, `or`, `not`); join text in a template (`\"{a} {b}\"`), and compute numbers in a tool or a model step");
    }
    // A description such as "an expression" already covers the tokens that
    // can start one; listing them too would bury the message.
    let covered = |t: &str| -> bool {
        let starts_value = [
            "(", "-", "[", "{", "\"", "\"\"\"", "env", "true", "false", "null", "not",
        ];
        let starts_type = ["-", "[", "{", "\"", "\"\"\"", "true", "false", "schema"];
        let has = |prefix: &str| described.iter().any(|d| d.starts_with(prefix));
        t == "_"
            || (has("an expression") && starts_value.contains(&t))
            || (has("a type") && starts_type.contains(&t))
            || (has("a number") && t == "-")
            || (has("an effect") && ["read", "write", "irreversible"].contains(&t))
            || (has("an HTTP method") && ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&t))
            || (has("`approve` or") && ["approve", "reject"].contains(&t))
            || (has("a failure class")
                && [
                    "rate_limit",
                    "timeout",
                    "server_error",
                    "connection",
                    "invalid",
                ]
                .contains(&t))
    };
    let mut expected: Vec<String> = tokens
        .iter()
        .filter(|t| !covered(t))
        .map(|t| format!("`{t}`"))
        .collect();
    expected.sort();
    expected.dedup();
    described.sort();
    described.dedup();
    expected.extend(described.iter().map(|d| d.to_string()));
    let expected_text = match expected.len() {
        0 => "something else".to_string(),
        1 => expected[0].clone(),
        _ => {
            let last = expected.pop().unwrap_or_default();
            format!("one of {} or {}", expected.join(", "), last)
        }
    };
    Diagnostic::new(
        Code::Syntax,
        span,
        format!("expected {expected_text}, found {found}"),
    )
    .label(format!("expected {expected_text}"))
}

fn found_width(text: &str, at: usize) -> usize {
    let rest = text.get(at..).unwrap_or("");
    let mut chars = rest.chars();
    match chars.next() {
        None => 0,
        Some(c) if c.is_alphanumeric() || c == '_' => rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len()),
        Some(c) => c.len_utf8(),
    }
}

fn describe_found(text: &str, at: usize) -> String {
    let rest = text.get(at..).unwrap_or("");
    match rest.chars().next() {
        None => "end of file".to_string(),
        Some('\n') | Some('\r') => "end of line".to_string(),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            format!("`{}`", &rest[..found_width(text, at)])
        }
        Some(c) if c.is_control() => format!("byte {:#04x}", c as u32),
        Some(c) => format!("`{c}`"),
    }
}

/// How a rule is named in "expected …" messages; `None` for rules whose
/// literal tokens already say it.
fn describe_rule(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::ident | Rule::word | Rule::name | Rule::type_name => "a name",
        Rule::field_name => "a field name",
        Rule::string | Rule::plain_string | Rule::triple_string => "a string",
        Rule::number => "a number",
        Rule::integer | Rule::range_bound => "a whole number",
        Rule::count => "a count such as `800` or `100k`",
        Rule::duration => "a duration such as `30s`",
        Rule::money => "an amount such as `$1.00`",
        Rule::regex => "a pattern such as `/^[a-z]+$/`",
        Rule::type_expr | Rule::type_term => "a type",
        Rule::expr => "an expression",
        Rule::use_decl
        | Rule::type_decl
        | Rule::model_decl
        | Rule::resource_decl
        | Rule::provider_decl
        | Rule::tool_decl
        | Rule::agent_decl
        | Rule::flow_decl
        | Rule::test_decl
        | Rule::eval_decl => {
            "a declaration (`use`, `type`, `model`, `resource`, `tool`, `agent`, `flow`, `test` or `eval`)"
        }
        Rule::http_method => "an HTTP method (`GET`, `POST`, `PUT`, `PATCH`, `DELETE`)",
        Rule::effect_kind => "an effect (`read`, `write` or `irreversible`)",
        Rule::retry_class => {
            "a failure class (`rate_limit`, `timeout`, `server_error`, `connection` or `invalid`)"
        }
        Rule::decision => "`approve` or `reject`",
        Rule::escalate => "`escalate { … }`",
        Rule::notify_kind => "a notification kind (`webhook`)",
        Rule::sample_rate => "a share such as `2%`",
        Rule::sample_per_day => "a count a day such as `20 per day`",
        Rule::compare_op => "a comparison",
        Rule::bound_op => "a bound (`>=`, `>`, `<=`, `<`)",
        _ => return None,
    })
}

fn is_keyword(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::kw_use
            | Rule::kw_type
            | Rule::kw_model
            | Rule::kw_resource
            | Rule::kw_tool
            | Rule::kw_agent
            | Rule::kw_flow
            | Rule::kw_test
            | Rule::kw_eval
            | Rule::kw_provider
            | Rule::kw_server
            | Rule::kw_let
            | Rule::kw_return
            | Rule::kw_llm
            | Rule::kw_approve
            | Rule::kw_for
            | Rule::kw_in
            | Rule::kw_parallel
            | Rule::kw_tolerate
            | Rule::kw_if
            | Rule::kw_else
            | Rule::kw_match
            | Rule::kw_check
            | Rule::kw_require
            | Rule::kw_after
            | Rule::kw_fallback
            | Rule::kw_budget
            | Rule::kw_and
            | Rule::kw_or
            | Rule::kw_not
            | Rule::kw_env
            | Rule::kw_failure
    )
}

/// The children of a pair without the keyword tokens.
fn kids(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| !is_keyword(p.as_rule()))
}

struct Parser {
    file: FileId,
    /// Offset of the current item's text in the file.
    base: usize,
    diagnostics: Vec<Diagnostic>,
    /// How many [`Parser::climb`] calls are open (bounds `not not …`).
    climbing: u32,
    /// The file's comments (byte ranges, in order), from the scanner.
    comments: Vec<(usize, usize)>,
}

/// Takes the next child; the grammar guarantees it exists, so a missing one
/// is a bug in this file, reported as a syntax error rather than a panic.
macro_rules! next {
    ($self:ident, $it:expr, $at:expr) => {
        match $it.next() {
            Some(p) => p,
            None => return $self.internal($at),
        }
    };
}

impl Parser {
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let s = pair.as_span();
        let start = self.base + s.start();
        Span::new(
            self.file,
            start,
            start + self.code_end(start, pair.as_str()),
        )
    }

    /// The length of `text` (found at `start` in the file) without the
    /// whitespace and comments after its last token: a rule that ends in an
    /// optional part can take them, and a label should end where the code
    /// does.
    fn code_end(&self, start: usize, text: &str) -> usize {
        let mut end = text.trim_end().len();
        loop {
            // The last comment that starts before the end, if the end is in it.
            let at = start + end;
            let before = self.comments.partition_point(|&(s, _)| s < at);
            match before.checked_sub(1).map(|k| self.comments[k]) {
                Some((s, e)) if s >= start && e >= at => {
                    end = text[..s - start].trim_end().len();
                }
                _ => return end,
            }
        }
    }

    fn ident(&mut self, pair: &Pair<'_, Rule>) -> Ident {
        let name = pair.as_str();
        // A name is one token, its text all code: no whitespace or comment
        // to trim from its end, so `span`'s search of them is skipped.
        let start = self.base + pair.as_span().start();
        let span = Span::new(self.file, start, start + name.len());
        if pair.as_rule() == Rule::ident && is_reserved(name) {
            self.diagnostics.push(
                Diagnostic::new(Code::Syntax, span, format!("`{name}` is a reserved word"))
                    .label("cannot be used as a name")
                    .help(format!("choose another name, such as `{name}_`")),
            );
        }
        Ident {
            name: name.to_string(),
            span,
        }
    }

    fn internal<T>(&mut self, span: Span) -> Option<T> {
        self.diagnostics.push(
            Diagnostic::new(Code::Syntax, span, "this construct could not be read")
                .label("not understood")
                .help("this is a bug in flowc's parser; please report it with this file"),
        );
        None
    }

    /// Gives a clause to its list; a repeated one is reported (T007).
    fn once(&mut self, list: &mut ClauseList, rule: Rule, shown: &str, span: Span) {
        if let Some(d) = list.add(rule, shown, span) {
            self.diagnostics.push(d);
        }
    }

    /// Gives a clause to its list under its keyword (the first word of its text).
    fn once_keyword(&mut self, list: &mut ClauseList, clause: &Pair<'_, Rule>) {
        let text = clause.as_str();
        let keyword = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or(text);
        let span = self.span(clause);
        self.once(list, clause.as_rule(), keyword, span);
    }

    fn error(&mut self, span: Span, message: impl Into<String>, label: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::new(Code::Syntax, span, message).label(label));
    }

    fn item(&mut self, pair: Pair<'_, Rule>) -> Option<Item> {
        let span = self.span(&pair);
        Some(match pair.as_rule() {
            Rule::use_decl => Item::Use(self.use_decl(pair)?),
            Rule::type_decl => Item::Type(self.type_decl(pair)?),
            Rule::model_decl => Item::Model(self.model_decl(pair)?),
            Rule::resource_decl => {
                let mut it = kids(pair);
                let name = next!(self, it, span);
                Item::Resource(self.ident(&name))
            }
            Rule::provider_decl => Item::Provider(self.provider_decl(pair)?),
            Rule::server_decl => Item::Server(self.server_decl(pair)?),
            Rule::tool_decl => Item::Tool(self.tool_decl(pair)?),
            Rule::agent_decl => Item::Agent(self.agent_decl(pair)?),
            Rule::flow_decl => Item::Flow(self.flow_decl(pair)?),
            Rule::test_decl => Item::Test(self.test_decl(pair)?),
            Rule::eval_decl => Item::Eval(self.eval_decl(pair)?),
            _ => return self.internal(span),
        })
    }

    fn use_decl(&mut self, pair: Pair<'_, Rule>) -> Option<Use> {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let path_pair = next!(self, it, span);
        let path = {
            let mut parts = path_pair.into_inner().peekable();
            match parts.peek().map(|p| p.as_rule()) {
                Some(Rule::string) => {
                    let p = next!(self, parts, span);
                    let t = self.template(p)?;
                    match t.as_plain() {
                        Some(s) => ModulePath::File(s),
                        None => {
                            self.error(
                                t.span,
                                "a module path cannot interpolate values",
                                "interpolation here",
                            );
                            return None;
                        }
                    }
                }
                _ => ModulePath::Std(parts.map(|p| self.ident(&p)).collect()),
            }
        };
        let names = it.map(|p| self.ident(&p)).collect();
        Some(Use { path, names, span })
    }

    fn type_decl(&mut self, pair: Pair<'_, Rule>) -> Option<TypeDecl> {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let name = self.ident(&next!(self, it, span));
        let ty = next!(self, it, span);
        let ty = match ty.as_rule() {
            Rule::record_type => self.record_type(ty)?,
            _ => self.type_expr(ty)?,
        };
        Some(TypeDecl { name, ty, span })
    }

    fn type_expr(&mut self, pair: Pair<'_, Rule>) -> Option<TypeExpr> {
        let span = self.span(&pair);
        let mut terms = Vec::new();
        for term in pair.into_inner() {
            terms.push(self.type_term(term)?);
        }
        if terms.len() == 1 {
            return terms.pop();
        }
        Some(TypeExpr {
            kind: TypeExprKind::Union(terms),
            span,
        })
    }

    fn type_term(&mut self, pair: Pair<'_, Rule>) -> Option<TypeExpr> {
        let span = self.span(&pair);
        let mut it = pair.into_inner();
        let atom = next!(self, it, span);
        let mut ty = self.type_atom(atom)?;
        let mut constraints = Vec::new();
        for p in it {
            match p.as_rule() {
                Rule::optional => {
                    ty = TypeExpr {
                        kind: TypeExprKind::Optional(Box::new(ty)),
                        span,
                    }
                }
                _ => constraints.push(self.constraint(p)?),
            }
        }
        if !constraints.is_empty() {
            // Constraints bind to the value type, inside any `?`.
            ty = match ty.kind {
                TypeExprKind::Optional(inner) => {
                    let inner_span = inner.span;
                    let c = TypeExpr {
                        kind: TypeExprKind::Constrained(inner, constraints),
                        span: inner_span,
                    };
                    TypeExpr {
                        kind: TypeExprKind::Optional(Box::new(c)),
                        span,
                    }
                }
                kind => TypeExpr {
                    kind: TypeExprKind::Constrained(Box::new(TypeExpr { kind, span }), constraints),
                    span,
                },
            };
        }
        Some(ty)
    }

    fn type_atom(&mut self, pair: Pair<'_, Rule>) -> Option<TypeExpr> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::list_type => {
                let mut it = pair.into_inner();
                let inner = next!(self, it, span);
                TypeExprKind::List(Box::new(self.type_expr(inner)?))
            }
            Rule::record_type => return self.record_type(pair),
            Rule::schema_type => {
                let mut it = pair.into_inner();
                let t = self.template(next!(self, it, span))?;
                match t.as_plain() {
                    Some(path) => TypeExprKind::Schema(path),
                    None => {
                        self.error(
                            t.span,
                            "a schema path cannot interpolate values",
                            "interpolation here",
                        );
                        return None;
                    }
                }
            }
            Rule::literal_type => {
                let mut it = pair.into_inner();
                TypeExprKind::Literal(self.literal(next!(self, it, span))?)
            }
            Rule::type_name => {
                let mut it = pair.into_inner();
                TypeExprKind::Named(self.ident(&next!(self, it, span)))
            }
            _ => return self.internal(span),
        };
        Some(TypeExpr { kind, span })
    }

    fn record_type(&mut self, pair: Pair<'_, Rule>) -> Option<TypeExpr> {
        let span = self.span(&pair);
        let mut fields = Vec::new();
        let mut openness = crate::types::Openness::Open;
        for field in pair.into_inner() {
            if field.as_rule() == Rule::exact {
                openness = crate::types::Openness::Exact;
                continue;
            }
            let fspan = self.span(&field);
            let mut it = field.into_inner();
            let name = self.ident(&next!(self, it, fspan));
            let mut optional = false;
            let mut p = next!(self, it, fspan);
            if p.as_rule() == Rule::optional {
                optional = true;
                p = next!(self, it, fspan);
            }
            let ty = self.type_expr(p)?;
            fields.push(FieldDecl { name, optional, ty });
        }
        Some(TypeExpr {
            kind: TypeExprKind::Record(fields, openness),
            span,
        })
    }

    fn constraint(&mut self, pair: Pair<'_, Rule>) -> Option<Constraint> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::matching => {
                let mut it = pair.into_inner();
                let re = next!(self, it, span).as_str();
                let body = &re[1..re.len() - 1];
                // `\/` is how a slash is written inside the delimiters.
                ConstraintKind::Matching(body.replace("\\/", "/"))
            }
            Rule::length => {
                let mut it = pair.into_inner();
                let range = next!(self, it, span);
                let rspan = self.span(&range);
                let text = range.as_str();
                let whole = |s: &str| -> Result<Option<u64>, ()> {
                    let s = s.trim();
                    if s.is_empty() {
                        Ok(None)
                    } else {
                        s.parse::<u64>().map(Some).map_err(|_| ())
                    }
                };
                let parsed = match text.split_once("..") {
                    Some((lo, hi)) => whole(lo).and_then(|lo| whole(hi).map(|hi| (lo, hi))),
                    None => whole(text).map(|n| (n, n)),
                };
                match parsed {
                    Ok((min, max)) => ConstraintKind::Len { min, max },
                    Err(()) => {
                        self.error(
                            rspan,
                            "this length is too large",
                            "at most 18446744073709551615",
                        );
                        return None;
                    }
                }
            }
            Rule::bound => {
                let mut it = pair.into_inner();
                let op = match next!(self, it, span).as_str() {
                    ">=" => BoundOp::Ge,
                    ">" => BoundOp::Gt,
                    "<=" => BoundOp::Le,
                    _ => BoundOp::Lt,
                };
                let n = self.number(&next!(self, it, span))?;
                ConstraintKind::Bound(op, n)
            }
            _ => return self.internal(span),
        };
        Some(Constraint { kind, span })
    }

    fn whole(&mut self, pair: &Pair<'_, Rule>) -> Option<u64> {
        match pair.as_str().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    self.span(pair),
                    "this number is too large",
                    "at most 18446744073709551615",
                );
                None
            }
        }
    }

    fn number(&mut self, pair: &Pair<'_, Rule>) -> Option<f64> {
        let text = pair.as_str();
        let (digits, scale) = match text.as_bytes().last() {
            Some(b'k') => (&text[..text.len() - 1], 1e3),
            Some(b'M') => (&text[..text.len() - 1], 1e6),
            _ => (text, 1.0),
        };
        match digits.parse::<f64>().map(|n| n * scale) {
            Ok(n) if n.is_finite() => Some(n),
            _ => {
                self.error(
                    self.span(pair),
                    "this number is too large",
                    "not a finite number",
                );
                None
            }
        }
    }

    fn literal(&mut self, pair: Pair<'_, Rule>) -> Option<Literal> {
        Some(match pair.as_rule() {
            Rule::string => {
                let t = self.template(pair)?;
                match t.as_plain() {
                    Some(s) => Literal::Str(s),
                    None => {
                        self.error(
                            t.span,
                            "a literal cannot interpolate values",
                            "interpolation here",
                        );
                        return None;
                    }
                }
            }
            Rule::number => Literal::Number(self.number(&pair)?),
            Rule::bool => Literal::Bool(pair.as_str() == "true"),
            _ => return self.internal(self.span(&pair)),
        })
    }

    fn quantity(&mut self, pair: Pair<'_, Rule>) -> Option<Quantity> {
        let span = self.span(&pair);
        let text = pair.as_str();
        let (digits, unit, scale) = match pair.as_rule() {
            Rule::money => (&text[1..], Unit::Dollars, 1.0),
            Rule::duration => {
                let split = text
                    .find(|c: char| c.is_ascii_alphabetic())
                    .unwrap_or(text.len());
                let scale = match &text[split..] {
                    "ms" => 0.001,
                    "s" => 1.0,
                    "m" => 60.0,
                    "h" => 3600.0,
                    _ => 86400.0,
                };
                (&text[..split], Unit::Seconds, scale)
            }
            Rule::count => match text.as_bytes().last() {
                Some(b'k') => (&text[..text.len() - 1], Unit::Count, 1_000.0),
                Some(b'M') => (&text[..text.len() - 1], Unit::Count, 1_000_000.0),
                _ => (text, Unit::Count, 1.0),
            },
            _ => return self.internal(span),
        };
        match digits.parse::<f64>() {
            Ok(v) if (v * scale).is_finite() => Some(Quantity {
                value: v * scale,
                unit,
                span,
            }),
            _ => {
                self.error(span, "this number is too large", "not a finite number");
                None
            }
        }
    }

    fn model_decl(&mut self, pair: Pair<'_, Rule>) -> Option<ModelDecl> {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let name = self.ident(&next!(self, it, span));
        let provider = self.ident(&next!(self, it, span));
        let id = self.template(next!(self, it, span))?;
        let model_id = match id.as_plain() {
            Some(s) => s,
            None => {
                self.error(
                    id.span,
                    "a model name cannot interpolate values",
                    "interpolation here",
                );
                return None;
            }
        };
        let params = match it.next() {
            Some(obj) => self.model_params(obj)?,
            None => Vec::new(),
        };
        Some(ModelDecl {
            name,
            provider,
            model_id,
            model_id_span: id.span,
            params,
            span,
        })
    }

    /// A model's `{ name: value, … }`. Entries written without their `:`
    /// (`temperature 0.2`, as in a budget) are one syntax error for the
    /// whole object, with the object rewritten as the fix; the parameters
    /// are still kept, so nothing downstream reports them missing.
    fn model_params(&mut self, pair: Pair<'_, Rule>) -> Option<Vec<(Ident, Expr)>> {
        let object_span = self.span(&pair);
        let mut seen = ClauseList::default();
        let mut params = Vec::new();
        let mut missing: Vec<Ident> = Vec::new();
        let mut fixed: Vec<String> = Vec::new();
        for entry in pair.into_inner() {
            self.once_keyword(&mut seen, &entry);
            let espan = self.span(&entry);
            let mut e = entry.into_inner();
            let key = self.ident(&next!(self, e, espan));
            let mut value = next!(self, e, espan);
            if value.as_rule() == Rule::missing_colon {
                missing.push(key.clone());
                let mut inner = value.into_inner();
                value = next!(self, inner, espan);
            }
            let text = value.as_str();
            let text = &text[..self.code_end(self.base + value.as_span().start(), text)];
            fixed.push(format!("{}: {text}", key.name));
            params.push((key, self.expr(value)?));
        }
        if let Some((first, rest)) = missing.split_first() {
            let fixed = format!("{{ {} }}", fixed.join(", "));
            let mut d = Diagnostic::new(
                Code::Syntax,
                first.span,
                "model parameters are written `name: value`",
            )
            .label(format!("`:` missing after `{}`", first.name))
            .help(format!(
                "put a `:` between each parameter and its value: `{fixed}` (a budget's entries take none; a model's do)"
            ));
            for other in rest {
                d = d.with(other.span, format!("and after `{}`", other.name));
            }
            // Rewriting the object would drop a comment inside it.
            let has_comment = self
                .comments
                .iter()
                .any(|&(s, _)| s >= object_span.start as usize && s < object_span.end as usize);
            if !has_comment {
                d = d.suggest(object_span, fixed);
            }
            self.diagnostics.push(d);
        }
        Some(params)
    }

    fn server_decl(&mut self, pair: Pair<'_, Rule>) -> Option<ServerDecl> {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let name = self.ident(&next!(self, it, span));
        let mut clauses = Vec::new();
        for clause in it {
            let cspan = self.span(&clause);
            let rule = clause.as_rule();
            let mut c = kids(clause);
            let kind = match rule {
                Rule::command_clause => {
                    let mut argv = Vec::new();
                    for a in c {
                        argv.push(self.template(a)?);
                    }
                    ServerClauseKind::Command(argv)
                }
                Rule::url_clause => ServerClauseKind::Url(self.template(next!(self, c, cspan))?),
                Rule::header_clause | Rule::server_env_clause => {
                    let n = self.template(next!(self, c, cspan))?;
                    let Some(n) = n.as_plain() else {
                        self.error(
                            n.span,
                            "a name cannot interpolate values",
                            "interpolation here",
                        );
                        return None;
                    };
                    let value = self.template(next!(self, c, cspan))?;
                    if rule == Rule::header_clause {
                        ServerClauseKind::Header { name: n, value }
                    } else {
                        ServerClauseKind::Env { name: n, value }
                    }
                }
                Rule::timeout_clause => {
                    ServerClauseKind::Timeout(self.quantity(next!(self, c, cspan))?)
                }
                _ => return self.internal(cspan),
            };
            clauses.push(ServerClause { kind, span: cspan });
        }
        Some(ServerDecl {
            name,
            clauses,
            span,
        })
    }

    fn provider_decl(&mut self, pair: Pair<'_, Rule>) -> Option<ProviderDecl> {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let name = self.ident(&next!(self, it, span));
        let mut decl = ProviderDecl {
            name,
            protocol: None,
            base_url: None,
            api_key: None,
            prices: Vec::new(),
            span,
        };
        let mut seen = ClauseList::default();
        for clause in it {
            let cspan = self.span(&clause);
            if clause.as_rule() != Rule::price_clause {
                self.once_keyword(&mut seen, &clause);
            }
            match clause.as_rule() {
                Rule::protocol_clause => {
                    let mut c = clause.into_inner();
                    decl.protocol = Some(self.ident(&next!(self, c, cspan)));
                }
                Rule::base_url_clause => {
                    let mut c = clause.into_inner();
                    let eos = next!(self, c, cspan);
                    let mut value = EnvOrString {
                        env: None,
                        default: None,
                    };
                    for p in kids(eos) {
                        match p.as_rule() {
                            Rule::env_ref => {
                                let mut e = kids(p);
                                value.env = Some(self.ident(&next!(self, e, cspan)));
                            }
                            _ => value.default = self.template(p)?.as_plain(),
                        }
                    }
                    decl.base_url = Some(value);
                }
                Rule::api_key_clause => {
                    let mut c = clause.into_inner();
                    let mut e = kids(next!(self, c, cspan));
                    decl.api_key = Some(self.ident(&next!(self, e, cspan)));
                }
                Rule::price_clause => {
                    let mut c = clause.into_inner();
                    let model = next!(self, c, cspan);
                    let model = match model.as_rule() {
                        Rule::wildcard => None,
                        _ => self.template(model)?.as_plain(),
                    };
                    let shown = match &model {
                        Some(m) => format!("price {m:?}"),
                        None => "price *".to_string(),
                    };
                    self.once(&mut seen, Rule::price_clause, &shown, cspan);
                    let input = self.quantity(next!(self, c, cspan))?.value;
                    let output = self.quantity(next!(self, c, cspan))?.value;
                    let context = match c.next() {
                        Some(p) => Some(self.quantity(p)?.value as u64),
                        None => None,
                    };
                    decl.prices.push(Price {
                        model,
                        input,
                        output,
                        context,
                        span: cspan,
                    });
                }
                _ => return self.internal(cspan),
            }
        }
        Some(decl)
    }

    fn params(&mut self, pair: Pair<'_, Rule>) -> Option<Vec<Param>> {
        let mut params = Vec::new();
        for p in pair.into_inner() {
            let pspan = self.span(&p);
            let mut it = p.into_inner();
            let name_pair = next!(self, it, pspan);
            let name = self.ident(&name_pair);
            // Parameters are read as names in expressions, so unlike fields
            // and arguments they cannot be reserved words.
            if RESERVED.contains(&name.name.as_str()) {
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::Syntax,
                        name.span,
                        format!("`{}` is a reserved word", name.name),
                    )
                    .label("cannot name a parameter")
                    .help(format!("choose another name, such as `{}_`", name.name)),
                );
            }
            let mut ty = next!(self, it, pspan);
            let mut optional = false;
            if ty.as_rule() == Rule::optional {
                optional = true;
                ty = next!(self, it, pspan);
            }
            params.push(Param {
                name,
                optional,
                ty: self.type_expr(ty)?,
            });
        }
        Some(params)
    }

    fn tool_decl(&mut self, pair: Pair<'_, Rule>) -> Option<ToolDecl> {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let name = self.ident(&next!(self, it, span));
        let params = self.params(next!(self, it, span))?;
        let output = self.type_expr(next!(self, it, span))?;
        let mut clauses = Vec::new();
        let mut seen = ClauseList::default();
        for clause in it {
            self.tool_clause(clause, &mut clauses, &mut seen)?;
        }
        Some(ToolDecl {
            name,
            params,
            output,
            clauses,
            span,
        })
    }

    fn tool_clause(
        &mut self,
        clause: Pair<'_, Rule>,
        out: &mut Vec<ToolClause>,
        seen: &mut ClauseList,
    ) -> Option<()> {
        let span = self.span(&clause);
        let rule = clause.as_rule();
        // How a tool runs (`http`, `exec`, `builtin`) is one choice, reported
        // by lowering when made twice; a header is given once per name.
        if !matches!(
            rule,
            Rule::http_clause | Rule::exec_clause | Rule::builtin_clause | Rule::header_clause
        ) {
            // `effect write writes x`: the `writes` part is its own clause.
            self.once_keyword(seen, &clause);
        }
        let mut c = kids(clause);
        let kind = match rule {
            Rule::http_clause => {
                let method = next!(self, c, span).as_str().to_string();
                ToolClauseKind::Http {
                    method,
                    url: self.template(next!(self, c, span))?,
                }
            }
            Rule::exec_clause => {
                let mut argv = Vec::new();
                for a in c {
                    argv.push(self.template(a)?);
                }
                ToolClauseKind::Exec(argv)
            }
            Rule::builtin_clause => {
                let t = self.template(next!(self, c, span))?;
                match t.as_plain() {
                    Some(name) => ToolClauseKind::Builtin(name),
                    None => {
                        self.error(
                            t.span,
                            "a builtin's name cannot interpolate values",
                            "interpolation here",
                        );
                        return None;
                    }
                }
            }
            Rule::header_clause => {
                let n = self.template(next!(self, c, span))?;
                let Some(name) = n.as_plain() else {
                    self.error(
                        n.span,
                        "a header name cannot interpolate values",
                        "interpolation here",
                    );
                    return None;
                };
                self.once(
                    seen,
                    Rule::header_clause,
                    &format!("header {:?}", name.to_ascii_lowercase()),
                    span,
                );
                ToolClauseKind::Header {
                    name,
                    value: self.template(next!(self, c, span))?,
                }
            }
            Rule::effect_clause => {
                let kind = effect(next!(self, c, span).as_str());
                let first_span = span;
                out.push(ToolClause {
                    kind: ToolClauseKind::Effect(kind),
                    span: first_span,
                });
                for rw in c {
                    self.tool_clause(rw, out, seen)?;
                }
                return Some(());
            }
            Rule::reads_clause => ToolClauseKind::Reads(c.map(|p| self.ident(&p)).collect()),
            Rule::writes_clause => ToolClauseKind::Writes(c.map(|p| self.ident(&p)).collect()),
            Rule::timeout_clause => ToolClauseKind::Timeout(self.quantity(next!(self, c, span))?),
            Rule::retry_clause => ToolClauseKind::Retry(self.retry(span, c)?),
            Rule::idempotency_clause => {
                ToolClauseKind::Idempotency(self.template(next!(self, c, span))?)
            }
            Rule::limit_clause => ToolClauseKind::Limit(self.quantity(next!(self, c, span))?),
            Rule::query_clause => ToolClauseKind::Query(self.expr(next!(self, c, span))?),
            Rule::body_clause => {
                let mut p = next!(self, c, span);
                let mut encoding = BodyEncoding::Json;
                if p.as_rule() == Rule::body_encoding {
                    if p.as_str() == "form" {
                        encoding = BodyEncoding::Form;
                    }
                    p = next!(self, c, span);
                }
                ToolClauseKind::Body {
                    encoding,
                    value: self.expr(p)?,
                }
            }
            Rule::format_clause => ToolClauseKind::Format(match next!(self, c, span).as_str() {
                "text" => ResponseFormat::Text,
                _ => ResponseFormat::Json,
            }),
            Rule::raw_clause => ToolClauseKind::Raw(c.map(|p| self.ident(&p)).collect()),
            Rule::mcp_clause => {
                let server = self.ident(&next!(self, c, span));
                let tool = match c.next() {
                    Some(p) => {
                        let t = self.template(p)?;
                        match t.as_plain() {
                            Some(name) => Some(name),
                            None => {
                                self.error(
                                    t.span,
                                    "an MCP tool name cannot interpolate values",
                                    "interpolation here",
                                );
                                return None;
                            }
                        }
                    }
                    None => None,
                };
                ToolClauseKind::Mcp { server, tool }
            }
            _ => return self.internal(span),
        };
        out.push(ToolClause { kind, span });
        Some(())
    }

    fn retry<'i>(
        &mut self,
        span: Span,
        mut c: impl Iterator<Item = Pair<'i, Rule>>,
    ) -> Option<Retry> {
        let n = next!(self, c, span);
        let attempts = match n.as_str().parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                self.error(self.span(&n), "too many retries", "at most 4294967295");
                return None;
            }
        };
        let mut retry = Retry {
            attempts,
            on: Vec::new(),
            backoff: None,
            cap: None,
            jitter: false,
            span,
        };
        for p in c {
            let pspan = self.span(&p);
            match p.as_rule() {
                Rule::retry_on => retry.on = p.into_inner().map(|q| self.ident(&q)).collect(),
                Rule::backoff => {
                    let mut b = p.into_inner();
                    let base = self.quantity(next!(self, b, pspan))?;
                    let factor = match b.next() {
                        Some(f) => Some(self.number(&f)?),
                        None => None,
                    };
                    retry.backoff = Some((base, factor));
                }
                Rule::cap => {
                    let mut b = p.into_inner();
                    retry.cap = Some(self.quantity(next!(self, b, pspan))?);
                }
                Rule::jitter => retry.jitter = true,
                _ => return self.internal(pspan),
            }
        }
        Some(retry)
    }

    fn agent_decl(&mut self, pair: Pair<'_, Rule>) -> Option<AgentDecl> {
        let span = self.span(&pair);
        let mut it = kids(pair).peekable();
        let name = self.ident(&next!(self, it, span));
        let params = match it.peek().map(|p| p.as_rule()) {
            Some(Rule::params) => self.params(next!(self, it, span))?,
            _ => Vec::new(),
        };
        let output = self.type_expr(next!(self, it, span))?;
        let mut clauses = Vec::new();
        let mut seen = ClauseList::default();
        for clause in it {
            let cspan = self.span(&clause);
            let rule = clause.as_rule();
            self.once_keyword(&mut seen, &clause);
            let kind = match rule {
                Rule::budget => AgentClauseKind::Budget(self.budget(clause)?),
                Rule::retry_clause => AgentClauseKind::Retry(self.retry(cspan, kids(clause))?),
                _ => {
                    let mut c = kids(clause);
                    match rule {
                        Rule::agent_model => {
                            AgentClauseKind::Model(self.ident(&next!(self, c, cspan)))
                        }
                        Rule::tools_clause => {
                            AgentClauseKind::Tools(c.map(|p| self.ident(&p)).collect())
                        }
                        Rule::may_clause => {
                            AgentClauseKind::May(effect(next!(self, c, cspan).as_str()))
                        }
                        Rule::max_steps_clause => {
                            let n = next!(self, c, cspan);
                            AgentClauseKind::MaxSteps(self.whole(&n)?)
                        }
                        Rule::max_repeat_clause => {
                            let n = next!(self, c, cspan);
                            AgentClauseKind::MaxRepeat(self.whole(&n)?)
                        }
                        Rule::instructions_clause => {
                            AgentClauseKind::Instructions(self.template(next!(self, c, cspan))?)
                        }
                        Rule::timeout_clause => {
                            AgentClauseKind::Timeout(self.quantity(next!(self, c, cspan))?)
                        }
                        _ => return self.internal(cspan),
                    }
                }
            };
            clauses.push(AgentClause { kind, span: cspan });
        }
        Some(AgentDecl {
            name,
            params,
            output,
            clauses,
            span,
        })
    }

    fn budget(&mut self, pair: Pair<'_, Rule>) -> Option<Budget> {
        let span = self.span(&pair);
        let mut entries = Vec::new();
        let mut seen = ClauseList::default();
        for entry in kids(pair) {
            let espan = self.span(&entry);
            self.once_keyword(&mut seen, &entry);
            let mut e = entry.into_inner();
            let key = self.ident(&next!(self, e, espan));
            let q = self.quantity(next!(self, e, espan))?;
            entries.push((key, q));
        }
        Some(Budget { entries, span })
    }

    fn flow_decl(&mut self, pair: Pair<'_, Rule>) -> Option<FlowDecl> {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let name = self.ident(&next!(self, it, span));
        let params = self.params(next!(self, it, span))?;
        let output = self.type_expr(next!(self, it, span))?;
        let mut body = Vec::new();
        let mut seen = ClauseList::default();
        for stmt in it {
            if stmt.as_rule() == Rule::budget {
                self.once_keyword(&mut seen, &stmt);
            }
            body.push(self.stmt(stmt)?);
        }
        Some(FlowDecl {
            name,
            params,
            output,
            body,
            span,
        })
    }

    fn stmt(&mut self, pair: Pair<'_, Rule>) -> Option<Stmt> {
        let span = self.span(&pair);
        Some(match pair.as_rule() {
            Rule::budget => Stmt::Budget(self.budget(pair)?),
            Rule::let_stmt => Stmt::Let(Box::new(self.let_stmt(pair)?)),
            Rule::check_stmt => {
                let mut it = kids(pair);
                let name = self.ident(&next!(self, it, span));
                let mut requires = Vec::new();
                for r in it {
                    let rspan = self.span(&r);
                    let mut rr = kids(r);
                    let cond = self.expr(next!(self, rr, rspan))?;
                    let msg = self.template(next!(self, rr, rspan))?;
                    requires.push((cond, msg));
                }
                Stmt::Check(Check {
                    name,
                    requires,
                    span,
                })
            }
            Rule::return_stmt => {
                let mut it = kids(pair);
                Stmt::Return(self.expr(next!(self, it, span))?, span)
            }
            _ => return self.internal(span),
        })
    }

    fn let_stmt(&mut self, pair: Pair<'_, Rule>) -> Option<Let> {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let name = self.ident(&next!(self, it, span));
        let step = self.step(next!(self, it, span))?;
        let mut after = Vec::new();
        let mut fallback = None;
        let mut suffixes = ClauseList::default();
        for suffix in it {
            let sspan = self.span(&suffix);
            self.once_keyword(&mut suffixes, &suffix);
            match suffix.as_rule() {
                Rule::after_clause => after.extend(kids(suffix).map(|p| self.ident(&p))),
                Rule::fallback_clause => {
                    let mut f = kids(suffix);
                    fallback = Some(self.step(next!(self, f, sspan))?);
                }
                _ => return self.internal(sspan),
            }
        }
        Some(Let {
            name,
            step,
            after,
            fallback,
            span,
        })
    }

    fn step(&mut self, pair: Pair<'_, Rule>) -> Option<Step> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::call => StepKind::Call(self.call(pair)?),
            Rule::llm_step => {
                let mut it = kids(pair);
                let model = self.ident(&next!(self, it, span));
                let output = next!(self, it, span);
                if output.as_rule() == Rule::missing_arrow {
                    return self.missing_arrow(&model, output);
                }
                let output = self.type_expr(output)?;
                let mut clauses = Vec::new();
                let mut seen = ClauseList::default();
                for clause in it {
                    let cspan = self.span(&clause);
                    let rule = clause.as_rule();
                    self.once_keyword(&mut seen, &clause);
                    let kind = match rule {
                        Rule::budget => LlmClauseKind::Budget(self.budget(clause)?),
                        Rule::retry_clause => {
                            LlmClauseKind::Retry(self.retry(cspan, kids(clause))?)
                        }
                        _ => {
                            let mut c = kids(clause);
                            let p = next!(self, c, cspan);
                            match rule {
                                Rule::prompt_clause => LlmClauseKind::Prompt(self.template(p)?),
                                Rule::system_clause => LlmClauseKind::System(self.template(p)?),
                                Rule::timeout_clause => LlmClauseKind::Timeout(self.quantity(p)?),
                                Rule::max_tokens_clause => {
                                    LlmClauseKind::MaxTokens(self.quantity(p)?)
                                }
                                _ => return self.internal(cspan),
                            }
                        }
                    };
                    clauses.push(LlmClause { kind, span: cspan });
                }
                StepKind::Llm(LlmStep {
                    model,
                    output,
                    clauses,
                })
            }
            Rule::approve_step => {
                let mut it = kids(pair);
                let gate = self.ident(&next!(self, it, span));
                let mut step = ApproveStep {
                    gate,
                    show: Vec::new(),
                    timeout: None,
                    on_timeout: None,
                    policy: None,
                    sample: None,
                    notify: None,
                };
                let mut seen = ClauseList::default();
                for clause in it {
                    let cspan = self.span(&clause);
                    let rule = clause.as_rule();
                    // `show` lists what the reviewer sees, one value each.
                    match rule {
                        Rule::show_clause => {}
                        Rule::policy_clause => {
                            self.once(&mut seen, rule, "auto approve when", cspan)
                        }
                        _ => self.once_keyword(&mut seen, &clause),
                    }
                    match rule {
                        Rule::notify_clause => step.notify = Some(self.notify(clause)?),
                        Rule::sample_clause => step.sample = Some(self.sample(clause)?),
                        _ => {
                            let mut c = kids(clause);
                            let p = next!(self, c, cspan);
                            match rule {
                                Rule::show_clause => step.show.push(self.expr(p)?),
                                Rule::timeout_clause => {
                                    step.timeout = Some(self.quantity(p)?);
                                }
                                Rule::policy_clause => {
                                    let when = if p.as_rule() == Rule::missing_when {
                                        self.missing_when(p)?
                                    } else {
                                        self.expr(p)?
                                    };
                                    step.policy = Some(Policy { when, span: cspan });
                                }
                                Rule::on_timeout_clause => {
                                    let pspan = self.span(&p);
                                    let outcome = match p.as_rule() {
                                        Rule::escalate => OnTimeout::Escalate(self.escalation(p)?),
                                        _ if p.as_str() == "approve" => {
                                            OnTimeout::Decide(Decision::Approve)
                                        }
                                        _ => OnTimeout::Decide(Decision::Reject),
                                    };
                                    step.on_timeout = Some((outcome, pspan));
                                }
                                _ => return self.internal(cspan),
                            }
                        }
                    }
                }
                StepKind::Approve(Box::new(step))
            }
            Rule::for_step => {
                let mut it = kids(pair);
                let var = self.ident(&next!(self, it, span));
                let iterable = self.expr(next!(self, it, span))?;
                let mut p = next!(self, it, span);
                let mut parallel = None;
                if p.as_rule() == Rule::parallel {
                    let pspan = self.span(&p);
                    let mut n = kids(p);
                    let count = next!(self, n, pspan);
                    parallel = Some((self.whole(&count)?, pspan));
                    p = next!(self, it, span);
                }
                let mut tolerate = None;
                if p.as_rule() == Rule::tolerate {
                    let tspan = self.span(&p);
                    let mut n = kids(p);
                    let count = next!(self, n, tspan);
                    tolerate = Some((self.whole(&count)?, tspan));
                    p = next!(self, it, span);
                }
                let body = self.block(p)?;
                StepKind::For(ForStep {
                    var,
                    iterable,
                    parallel,
                    tolerate,
                    body,
                })
            }
            Rule::if_step => StepKind::If(self.if_step(pair)?),
            Rule::match_step => {
                let mut it = kids(pair);
                let scrutinee = self.expr(next!(self, it, span))?;
                let mut arms = Vec::new();
                for arm in it {
                    let aspan = self.span(&arm);
                    let mut a = arm.into_inner();
                    let pat = next!(self, a, aspan);
                    let pattern_span = self.span(&pat);
                    let mut pi = pat.into_inner();
                    let lit = next!(self, pi, pattern_span);
                    let pattern = match lit.as_rule() {
                        Rule::wildcard_pattern => None,
                        _ => Some(self.literal(lit)?),
                    };
                    let body_pair = next!(self, a, aspan);
                    let body = match body_pair.as_rule() {
                        Rule::block => self.block(body_pair)?,
                        _ => {
                            let step = self.step(body_pair)?;
                            Block {
                                stmts: Vec::new(),
                                span: step.span,
                                result: Box::new(step),
                            }
                        }
                    };
                    arms.push(MatchArm {
                        pattern,
                        pattern_span,
                        body,
                    });
                }
                StepKind::Match(MatchStep { scrutinee, arms })
            }
            _ => StepKind::Expr(self.expr(pair)?),
        };
        Some(Step { kind, span })
    }

    fn if_step(&mut self, pair: Pair<'_, Rule>) -> Option<IfStep> {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let condition = self.expr(next!(self, it, span))?;
        let then = self.block(next!(self, it, span))?;
        let otherwise = match it.next() {
            None => None,
            Some(p) if p.as_rule() == Rule::if_step => {
                let nested_span = self.span(&p);
                let nested = self.if_step(p)?;
                let step = Step {
                    kind: StepKind::If(nested),
                    span: nested_span,
                };
                Some(Block {
                    stmts: Vec::new(),
                    span: nested_span,
                    result: Box::new(step),
                })
            }
            Some(p) => Some(self.block(p)?),
        };
        Some(IfStep {
            condition,
            then,
            otherwise,
        })
    }

    fn block(&mut self, pair: Pair<'_, Rule>) -> Option<Block> {
        let span = self.span(&pair);
        let mut items: Vec<Pair<'_, Rule>> = pair.into_inner().collect();
        let last = match items.pop() {
            Some(p) => p,
            None => return self.internal(span),
        };
        let mut stmts = Vec::new();
        for s in items {
            stmts.push(self.stmt(s)?);
        }
        let result = Box::new(self.step(last)?);
        Some(Block {
            stmts,
            result,
            span,
        })
    }

    fn call(&mut self, pair: Pair<'_, Rule>) -> Option<Call> {
        let span = self.span(&pair);
        let mut it = pair.into_inner();
        let callee = self.ident(&next!(self, it, span));
        // Sized to the arguments: a first push makes room for four, and an
        // argument is a name and an expression (a third of a KiB in all).
        let mut args = Vec::with_capacity(it.len());
        let mut positional = false;
        for arg in it {
            let aspan = self.span(&arg);
            if arg.as_rule() == Rule::positional_arg {
                let mut a = arg.into_inner();
                let value = self.expr(next!(self, a, aspan))?;
                self.positional_arg(&callee, aspan, &value);
                positional = true;
                continue;
            }
            let mut a = arg.into_inner();
            let name = self.ident(&next!(self, a, aspan));
            let value = self.expr(next!(self, a, aspan))?;
            args.push((name, value));
        }
        if positional {
            return None;
        }
        Some(Call { callee, args, span })
    }

    /// `llm m {` or `llm m T {`: the step's output type, or its arrow, is
    /// missing. The step is left out (its reply has no type to check).
    fn missing_arrow<T>(&mut self, model: &Ident, pair: Pair<'_, Rule>) -> Option<T> {
        let at = self.base + pair.as_span().start();
        let d = match pair.into_inner().next() {
            Some(ty) => {
                let tspan = self.span(&ty);
                let shown = &ty.as_str()[..(tspan.end - tspan.start) as usize];
                Diagnostic::new(
                    Code::Syntax,
                    tspan,
                    format!("expected `->` before the output type `{shown}`"),
                )
                .label("add `->` before the type")
                .help(format!(
                    "an `llm` step names its model, then `->` and the type its reply must have: `llm {} -> {shown} {{ … }}`",
                    model.name
                ))
                .suggest(Span::new(self.file, tspan.start as usize, tspan.start as usize), "-> ")
            }
            None => Diagnostic::new(
                Code::Syntax,
                Span::new(self.file, at, at + 1),
                "this `llm` step has no output type",
            )
            .label("expected `-> Type` before this `{`")
            .with(model.span, "the model")
            .help(format!(
                "write the type the reply must have: `llm {} -> string {{ … }}`, or a record such as `-> {{ summary: string }}`; the reply is validated against it",
                model.name
            )),
        };
        self.diagnostics.push(d);
        None
    }

    /// `auto approve CONDITION`: the `when` is missing. The condition is
    /// kept, so the policy is still checked.
    fn missing_when(&mut self, pair: Pair<'_, Rule>) -> Option<Expr> {
        let span = self.span(&pair);
        let mut c = kids(pair);
        let cond = self.expr(next!(self, c, span))?;
        let at = Span::new(
            self.file,
            cond.span.start as usize,
            cond.span.start as usize,
        );
        self.diagnostics.push(
            Diagnostic::new(Code::Syntax, cond.span, "expected `when` before the policy's condition")
                .label("add `when` before the condition")
                .help("a policy reads `auto approve when CONDITION`: the gate approves the cases where the condition is true")
                .suggest(at, "when "),
        );
        Some(cond)
    }

    /// `lookup(email)`: arguments are matched to parameters by name only.
    fn positional_arg(&mut self, callee: &Ident, span: Span, value: &Expr) {
        // A bare name is most often the parameter's own name.
        let example = match &value.kind {
            ExprKind::Name(n) => format!(
                "`{}({}: {})` if the parameter is called `{}`",
                callee.name, n.name, n.name, n.name
            ),
            _ => format!("`{}(PARAMETER: …)`", callee.name),
        };
        self.diagnostics.push(
            Diagnostic::new(
                Code::Syntax,
                span,
                "arguments are passed by name, not by position",
            )
            .label("this argument has no parameter name")
            .help(format!(
                "write the name of the parameter it is for, then `:`: {example}"
            )),
        );
    }

    fn expr(&mut self, pair: Pair<'_, Rule>) -> Option<Expr> {
        self.expr_at(pair).map(|(e, _)| e)
    }

    /// An expression and its depth (see [`MAX_EXPR_DEPTH`]).
    fn expr_at(&mut self, pair: Pair<'_, Rule>) -> Option<(Expr, u32)> {
        let span = self.span(&pair);
        let leaf = |kind| Some((Expr { kind, span }, 1));
        match pair.as_rule() {
            Rule::expr => {
                let mut tokens = pair.into_inner().peekable();
                let e = self.climb(&mut tokens, 0, span)?;
                match tokens.next() {
                    None => Some(e),
                    Some(extra) => self.internal(self.span(&extra)),
                }
            }
            Rule::string => {
                let (t, depth) = self.template_at(pair)?;
                self.deeper(depth, span)?;
                Some((
                    Expr {
                        kind: ExprKind::Str(t),
                        span,
                    },
                    depth + 1,
                ))
            }
            Rule::number => leaf(ExprKind::Number(self.number(&pair)?)),
            Rule::bool => leaf(ExprKind::Bool(pair.as_str() == "true")),
            Rule::null => leaf(ExprKind::Null),
            Rule::object => {
                let mut entries = Vec::new();
                let mut depth = 0;
                for entry in pair.into_inner() {
                    let espan = self.span(&entry);
                    let mut e = entry.into_inner();
                    let key = self.ident(&next!(self, e, espan));
                    let (value, d) = self.expr_at(next!(self, e, espan))?;
                    depth = depth.max(d);
                    entries.push((key, value));
                }
                self.deeper(depth, span)?;
                Some((
                    Expr {
                        kind: ExprKind::Object(entries),
                        span,
                    },
                    depth + 1,
                ))
            }
            Rule::list => {
                let mut items = Vec::new();
                let mut depth = 0;
                for p in pair.into_inner() {
                    let (e, d) = self.expr_at(p)?;
                    depth = depth.max(d);
                    items.push(e);
                }
                self.deeper(depth, span)?;
                Some((
                    Expr {
                        kind: ExprKind::List(items),
                        span,
                    },
                    depth + 1,
                ))
            }
            Rule::env_ref => {
                let mut it = kids(pair);
                let name = self.ident(&next!(self, it, span));
                leaf(ExprKind::Env(name))
            }
            Rule::name => {
                // A use of a name; reserved words are reported where names are declared.
                let name = Ident {
                    name: pair.as_str().to_string(),
                    span,
                };
                leaf(ExprKind::Name(name))
            }
            _ => self.internal(span),
        }
    }

    /// `None` (and a diagnostic at `at`) when one more level around an
    /// expression `depth` deep would pass [`MAX_EXPR_DEPTH`].
    fn deeper(&mut self, depth: u32, at: Span) -> Option<()> {
        if depth < MAX_EXPR_DEPTH {
            return Some(());
        }
        self.diagnostics.push(
            Diagnostic::new(
                Code::Syntax,
                at,
                format!("this expression nests deeper than {MAX_EXPR_DEPTH} levels"),
            )
            .label("too deep")
            .help("bind part of it to a name with `let` and use the name; flowc refuses deeper expressions rather than risk running out of stack"),
        );
        None
    }

    fn test_decl(&mut self, pair: Pair<'_, Rule>) -> Option<TestDecl> {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let name_pair = next!(self, it, span);
        let name_t = self.template(name_pair)?;
        let Some(name) = name_t.as_plain() else {
            self.error(
                name_t.span,
                "a test name cannot interpolate values",
                "interpolation here",
            );
            return None;
        };
        let mut stmts = Vec::new();
        for stmt in it {
            let sspan = self.span(&stmt);
            let rule = stmt.as_rule();
            let mut s = kids(stmt);
            let first = next!(self, s, sspan);
            stmts.push(match rule {
                Rule::run_clause => TestStmt::Run(self.call(first)?),
                Rule::given_clause => {
                    let given_rule = first.as_rule();
                    let mut g = kids(first);
                    let target = self.ident(&next!(self, g, sspan));
                    let outcome = next!(self, g, sspan);
                    let outcome_rule = outcome.as_rule();
                    let mut o = outcome.into_inner();
                    match (given_rule, outcome_rule) {
                        (Rule::given_gate, Rule::approves) => {
                            let with = match o.next() {
                                Some(e) => Some(self.expr(e)?),
                                None => None,
                            };
                            TestStmt::GivenGate {
                                gate: target,
                                outcome: GateOutcome::Approves(with),
                                span: sspan,
                            }
                        }
                        (Rule::given_gate, _) => {
                            let why = match o.next() {
                                Some(t) => {
                                    let t = self.template(t)?;
                                    if t.as_plain().is_none() {
                                        self.error(
                                            t.span,
                                            "a rejection reason cannot interpolate values",
                                            "interpolation here",
                                        );
                                        return None;
                                    }
                                    t.as_plain()
                                }
                                None => None,
                            };
                            TestStmt::GivenGate {
                                gate: target,
                                outcome: GateOutcome::Rejects(why),
                                span: sspan,
                            }
                        }
                        (_, Rule::returns) => {
                            let e = self.expr(next!(self, o, sspan))?;
                            TestStmt::Given {
                                target,
                                outcome: Given::Returns(e),
                                span: sspan,
                            }
                        }
                        _ => {
                            let t = self.template(next!(self, o, sspan))?;
                            let Some(msg) = t.as_plain() else {
                                self.error(
                                    t.span,
                                    "a given failure message cannot interpolate values",
                                    "interpolation here",
                                );
                                return None;
                            };
                            TestStmt::Given {
                                target,
                                outcome: Given::Fails(msg),
                                span: sspan,
                            }
                        }
                    }
                }
                Rule::expect_clause => match first.as_rule() {
                    Rule::expect_failure => {
                        let text = match kids(first).next() {
                            Some(t) => {
                                let t = self.template(t)?;
                                if t.as_plain().is_none() {
                                    self.error(
                                        t.span,
                                        "the expected error text cannot interpolate values",
                                        "interpolation here",
                                    );
                                    return None;
                                }
                                t.as_plain()
                            }
                            None => None,
                        };
                        TestStmt::ExpectFailure { text, span: sspan }
                    }
                    Rule::expect_calls => {
                        let mut c = first.into_inner();
                        let target = self.ident(&next!(self, c, sspan));
                        let n = next!(self, c, sspan);
                        TestStmt::ExpectCalls {
                            target,
                            times: self.whole(&n)?,
                            span: sspan,
                        }
                    }
                    _ => TestStmt::Expect(self.expr(first)?),
                },
                _ => return self.internal(sspan),
            });
        }
        Some(TestDecl {
            name,
            name_span: name_t.span,
            stmts,
            span,
        })
    }

    fn eval_decl(&mut self, pair: Pair<'_, Rule>) -> Option<EvalDecl> {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let name_t = self.template(next!(self, it, span))?;
        let Some(name) = name_t.as_plain() else {
            self.error(
                name_t.span,
                "an eval name cannot interpolate values",
                "interpolation here",
            );
            return None;
        };
        let mut clauses = Vec::new();
        for clause in it {
            let cspan = self.span(&clause);
            let rule = clause.as_rule();
            let kind = match rule {
                Rule::budget => EvalClauseKind::Budget(self.budget(clause)?),
                Rule::eval_run => {
                    let mut c = kids(clause);
                    let flow = self.ident(&next!(self, c, cspan));
                    let expecting = match c.next() {
                        Some(e) => {
                            let mut e = kids(e);
                            Some(self.type_expr(next!(self, e, cspan))?)
                        }
                        None => None,
                    };
                    EvalClauseKind::Run { flow, expecting }
                }
                Rule::dataset_clause => {
                    let mut c = kids(clause);
                    let t = self.template(next!(self, c, cspan))?;
                    let Some(path) = t.as_plain() else {
                        self.error(
                            t.span,
                            "a dataset path cannot interpolate values",
                            "interpolation here",
                        );
                        return None;
                    };
                    EvalClauseKind::Dataset {
                        path,
                        path_span: t.span,
                    }
                }
                Rule::row_clause => {
                    let mut c = kids(clause);
                    let input = self.expr(next!(self, c, cspan))?;
                    let expecting = match c.next() {
                        Some(e) => Some(self.expr(e)?),
                        None => None,
                    };
                    EvalClauseKind::Row { input, expecting }
                }
                Rule::score_clause => {
                    let mut c = kids(clause);
                    let name = self.ident(&next!(self, c, cspan));
                    let mut next = next!(self, c, cspan);
                    let mut weight = None;
                    if next.as_rule() == Rule::score_weight {
                        let wspan = self.span(&next);
                        let mut w = kids(next);
                        weight = Some((self.number(&next!(self, w, wspan))?, wspan));
                        next = next!(self, c, cspan);
                    }
                    let scorer = self.step(next)?;
                    EvalClauseKind::Score {
                        name,
                        weight,
                        scorer,
                    }
                }
                Rule::threshold_clause => {
                    let mut c = kids(clause);
                    EvalClauseKind::Threshold(self.number(&next!(self, c, cspan))?)
                }
                Rule::concurrency_clause => {
                    let mut c = kids(clause);
                    EvalClauseKind::Concurrency(self.whole(&next!(self, c, cspan))?)
                }
                _ => return self.internal(cspan),
            };
            clauses.push(EvalClause { kind, span: cspan });
        }
        Some(EvalDecl {
            name,
            name_span: name_t.span,
            clauses,
            span,
        })
    }

    /// Precedence climbing over an `expr`'s flat tokens. `not` binds looser
    /// than comparisons, so `not a == b` is `not (a == b)`. Returns the
    /// expression and its depth; chains are built in a loop, and the only
    /// recursion (`not not …`, one level per operator precedence) is bounded
    /// by [`MAX_EXPR_DEPTH`].
    fn climb<'i>(
        &mut self,
        tokens: &mut std::iter::Peekable<pest::iterators::Pairs<'i, Rule>>,
        min: u8,
        span: Span,
    ) -> Option<(Expr, u32)> {
        self.climbing += 1;
        let result = if self.climbing > MAX_EXPR_DEPTH {
            let at = tokens.peek().map_or(span, |p| self.span(p));
            self.deeper(MAX_EXPR_DEPTH, at);
            None
        } else {
            self.climb_from(tokens, min, span)
        };
        self.climbing -= 1;
        result
    }

    fn climb_from<'i>(
        &mut self,
        tokens: &mut std::iter::Peekable<pest::iterators::Pairs<'i, Rule>>,
        min: u8,
        span: Span,
    ) -> Option<(Expr, u32)> {
        const NOT: u8 = 3;
        let first = next!(self, tokens, span);
        let (mut left, mut depth) = if first.as_rule() == Rule::not_op {
            let start = self.span(&first);
            let (operand, d) = self.climb(tokens, NOT, span)?;
            self.deeper(d, start)?;
            let s = start.to(operand.span);
            (
                Expr {
                    kind: ExprKind::Not(Box::new(operand)),
                    span: s,
                },
                d + 1,
            )
        } else {
            let (mut e, mut depth) = self.expr_at(first)?;
            while let Some(p) =
                tokens.next_if(|p| matches!(p.as_rule(), Rule::member | Rule::index))
            {
                let pspan = self.span(&p);
                let s = e.span.to(pspan);
                let rule = p.as_rule();
                let mut inner = p.into_inner();
                let x = next!(self, inner, pspan);
                e = match rule {
                    Rule::member => {
                        self.deeper(depth, pspan)?;
                        Expr {
                            kind: ExprKind::Member(Box::new(e), self.ident(&x)),
                            span: s,
                        }
                    }
                    _ => {
                        let (index, d) = self.expr_at(x)?;
                        depth = depth.max(d);
                        self.deeper(depth, pspan)?;
                        Expr {
                            kind: ExprKind::Index(Box::new(e), Box::new(index)),
                            span: s,
                        }
                    }
                };
                depth += 1;
            }
            (e, depth)
        };
        loop {
            let precedence = match tokens.peek().map(|p| p.as_rule()) {
                Some(Rule::or_op) => 1,
                Some(Rule::and_op) => 2,
                Some(Rule::compare_op) => 4,
                _ => return Some((left, depth)),
            };
            if precedence < min {
                return Some((left, depth));
            }
            let op = next!(self, tokens, span);
            let (right, right_depth) = self.climb(tokens, precedence + 1, span)?;
            depth = depth.max(right_depth);
            self.deeper(depth, self.span(&op))?;
            depth += 1;
            let s = left.span.to(right.span);
            let kind = match op.as_rule() {
                Rule::or_op => ExprKind::Or(Box::new(left), Box::new(right)),
                Rule::and_op => ExprKind::And(Box::new(left), Box::new(right)),
                _ => {
                    let cmp = match op.as_str() {
                        "==" => CompareOp::Eq,
                        "!=" => CompareOp::Ne,
                        "<=" => CompareOp::Le,
                        ">=" => CompareOp::Ge,
                        "<" => CompareOp::Lt,
                        _ => CompareOp::Gt,
                    };
                    ExprKind::Compare(Box::new(left), cmp, Box::new(right))
                }
            };
            left = Expr { kind, span: s };
        }
    }

    /// `escalate { notify …, timeout … }`.
    fn escalation(&mut self, pair: Pair<'_, Rule>) -> Option<Escalation> {
        let span = self.span(&pair);
        let mut e = Escalation {
            notify: None,
            timeout: None,
            span,
        };
        let mut seen = ClauseList::default();
        for clause in kids(pair) {
            let cspan = self.span(&clause);
            self.once_keyword(&mut seen, &clause);
            match clause.as_rule() {
                Rule::notify_clause => e.notify = Some(self.notify(clause)?),
                Rule::timeout_clause => {
                    let mut c = kids(clause);
                    e.timeout = Some(self.quantity(next!(self, c, cspan))?);
                }
                _ => return self.internal(cspan),
            }
        }
        Some(e)
    }

    /// `notify webhook "URL"` or `notify webhook env.NAME`. The URL is
    /// written out whole: it is an address, not a template.
    fn notify(&mut self, pair: Pair<'_, Rule>) -> Option<Notify> {
        let span = self.span(&pair);
        let mut c = kids(pair);
        let kind_pair = next!(self, c, span);
        let kind = match NotifyKind::from_name(kind_pair.as_str()) {
            Some(k) => k,
            None => return self.internal(span),
        };
        let target = next!(self, c, span);
        let tspan = self.span(&target);
        let target = match target.as_rule() {
            Rule::env_ref => {
                let mut e = kids(target);
                NotifyTarget::Env(self.ident(&next!(self, e, tspan)))
            }
            _ => match self.template(target)?.as_plain() {
                Some(url) => NotifyTarget::Url(url),
                None => {
                    self.diagnostics.push(
                        Diagnostic::new(
                            Code::InvalidDeclaration,
                            tspan,
                            "a notification's address cannot interpolate values",
                        )
                        .label("`{…}` in the address")
                        .help("write the whole URL, or read it from the environment with `notify webhook env.NAME`"),
                    );
                    NotifyTarget::Url(String::new())
                }
            },
        };
        Some(Notify { kind, target, span })
    }

    /// `sample 2%`, `sample 20 per day`, `sample 2% max 20 per day`.
    fn sample(&mut self, pair: Pair<'_, Rule>) -> Option<Sample> {
        let span = self.span(&pair);
        let mut sample = Sample {
            percent: None,
            per_day: None,
            span,
        };
        for p in kids(pair) {
            let pspan = self.span(&p);
            match p.as_rule() {
                Rule::sample_rate => {
                    let digits = p.as_str().trim_end_matches('%');
                    let percent: f64 = match digits.parse() {
                        Ok(v) => v,
                        Err(_) => return self.internal(pspan),
                    };
                    if !(percent > 0.0 && percent <= 100.0) {
                        self.diagnostics.push(
                            Diagnostic::new(
                                Code::InvalidDeclaration,
                                pspan,
                                format!("a sample of {digits}% is not a share of the cases"),
                            )
                            .label("between 0% and 100%")
                            .help("sample more than 0% and at most 100% of the cases the policy decides, or remove `sample`"),
                        );
                    }
                    sample.percent = Some((percent, pspan));
                }
                Rule::sample_per_day => {
                    let mut c = kids(p);
                    let n = self.whole(&next!(self, c, pspan))?;
                    if n == 0 {
                        self.diagnostics.push(
                            Diagnostic::new(
                                Code::InvalidDeclaration,
                                pspan,
                                "a sample of 0 a day reviews nothing",
                            )
                            .label("0 per day")
                            .help("sample at least 1 case a day, or remove `sample`"),
                        );
                    }
                    sample.per_day = Some((n, pspan));
                }
                _ => return self.internal(pspan),
            }
        }
        Some(sample)
    }

    fn template(&mut self, pair: Pair<'_, Rule>) -> Option<Template> {
        self.template_at(pair).map(|(t, _)| t)
    }

    /// A template and the depth of its deepest interpolation (0 without one).
    fn template_at(&mut self, pair: Pair<'_, Rule>) -> Option<(Template, u32)> {
        let mut depth = 0;
        let span = self.span(&pair);
        let mut it = pair.into_inner();
        let inner = next!(self, it, span);
        let triple = inner.as_rule() == Rule::triple_string;
        let mut parts: Vec<TemplatePart> = Vec::new();
        let mut text = String::new();
        for part in inner.into_inner() {
            match part.as_rule() {
                Rule::plain_text | Rule::triple_text => text.push_str(part.as_str()),
                Rule::escape => match self.unescape(&part) {
                    Some(c) => text.push(c),
                    None => return None,
                },
                Rule::interpolation => {
                    let pspan = self.span(&part);
                    if !text.is_empty() {
                        parts.push(TemplatePart::Text(std::mem::take(&mut text)));
                    }
                    let mut e = part.into_inner();
                    let (value, d) = self.expr_at(next!(self, e, pspan))?;
                    depth = depth.max(d);
                    parts.push(TemplatePart::Expr(value));
                }
                _ => return self.internal(self.span(&part)),
            }
        }
        if !text.is_empty() {
            parts.push(TemplatePart::Text(text));
        }
        if triple {
            dedent(&mut parts);
        }
        Some((Template { parts, span }, depth))
    }

    fn unescape(&mut self, pair: &Pair<'_, Rule>) -> Option<char> {
        let s = pair.as_str();
        Some(match s {
            "{{" => '{',
            "}}" => '}',
            "\\\"" => '"',
            "\\\\" => '\\',
            "\\n" => '\n',
            "\\t" => '\t',
            "\\r" => '\r',
            "\\{" => '{',
            "\\}" => '}',
            _ => {
                let hex = s.trim_start_matches("\\u{").trim_end_matches('}');
                match u32::from_str_radix(hex, 16).ok().and_then(char::from_u32) {
                    Some(c) => c,
                    None => {
                        self.error(
                            self.span(pair),
                            "this is not a Unicode scalar value",
                            "invalid escape",
                        );
                        return None;
                    }
                }
            }
        })
    }
}

fn effect(text: &str) -> Effect {
    match text {
        "read" => Effect::Read,
        "write" => Effect::Write,
        _ => Effect::Irreversible,
    }
}

/// Removes the line break after the opening quotes, the line the closing
/// quotes stand on, and the indentation common to every non-blank line of a
/// `"""` string. A line that holds only an interpolation is not blank.
fn dedent(parts: &mut Vec<TemplatePart>) {
    if let Some(TemplatePart::Text(t)) = parts.first_mut() {
        if let Some(rest) = t.strip_prefix("\r\n").or_else(|| t.strip_prefix('\n')) {
            *t = rest.to_string();
        } else {
            // Text on the opening line is kept as written; only later lines are dedented.
            return dedent_after_first_line(parts);
        }
    }
    if let Some(TemplatePart::Text(t)) = parts.last_mut() {
        let cut = t.rfind('\n').map_or(0, |p| p);
        if t[cut..].trim().is_empty() {
            t.truncate(cut);
        }
    }
    strip_common_indent(parts, true);
}

fn dedent_after_first_line(parts: &mut Vec<TemplatePart>) {
    if let Some(TemplatePart::Text(t)) = parts.last_mut() {
        if let Some(cut) = t.rfind('\n') {
            if t[cut..].trim().is_empty() {
                t.truncate(cut);
            }
        }
    }
    strip_common_indent(parts, false);
}

/// `first_is_line_start`: whether the very beginning counts as a line start.
fn strip_common_indent(parts: &mut Vec<TemplatePart>, first_is_line_start: bool) {
    let indent_of = |line: &str| line.len() - line.trim_start_matches([' ', '\t']).len();
    let mut common = usize::MAX;
    let count = parts.len();
    for (i, part) in parts.iter().enumerate() {
        let TemplatePart::Text(t) = part else {
            continue;
        };
        let followed_by_expr = i + 1 < count;
        let segments: Vec<&str> = t.split('\n').collect();
        for (n, line) in segments.iter().enumerate() {
            let at_line_start = n > 0 || (i == 0 && first_is_line_start);
            if !at_line_start {
                continue;
            }
            let last = n + 1 == segments.len();
            if !line.trim().is_empty() || (last && followed_by_expr) {
                common = common.min(indent_of(line));
            }
        }
    }
    if common == usize::MAX || common == 0 {
        parts.retain(|p| !matches!(p, TemplatePart::Text(t) if t.is_empty()));
        return;
    }
    for (i, part) in parts.iter_mut().enumerate() {
        let TemplatePart::Text(t) = part else {
            continue;
        };
        let mut out = String::with_capacity(t.len());
        for (n, line) in t.split('\n').enumerate() {
            if n > 0 {
                out.push('\n');
            }
            if n > 0 || (i == 0 && first_is_line_start) {
                out.push_str(&line[indent_of(line).min(common)..]);
            } else {
                out.push_str(line);
            }
        }
        *t = out;
    }
    parts.retain(|p| !matches!(p, TemplatePart::Text(t) if t.is_empty()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trivia_is_what_the_grammar_skips() {
        for text in [
            "",
            " \n\t\r",
            "// a\n  // b",
            "\u{FEFF}// to the end",
            "//\n\n",
        ] {
            assert!(scan::only_trivia(text), "{text:?}");
        }
        for text in ["x", "  / /", "// a\nflow", "\u{00A0}", "/"] {
            assert!(!scan::only_trivia(text), "{text:?}");
        }
    }

    #[test]
    fn is_reserved_is_the_reserved_list() {
        for word in RESERVED {
            assert!(is_reserved(word), "{word}");
        }
        for word in ["server", "tolerate", "lets", "nul", "", "Env"] {
            assert!(!is_reserved(word), "{word}");
        }
    }
}
