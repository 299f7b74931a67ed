//! The answers to each request, from an [`Analysis`].

use std::collections::HashMap;

use lsp_types::{
    CodeAction, CodeActionKind, CodeActionOrCommand, CodeActionProviderCapability, CompletionItem,
    CompletionItemKind, CompletionOptions, DocumentSymbol, Hover, HoverContents,
    HoverProviderCapability, Location, MarkupContent, MarkupKind, NumberOrString, OneOf,
    ServerCapabilities, SymbolKind, TextDocumentSyncCapability, TextDocumentSyncKind, TextEdit,
    Uri, WorkspaceEdit,
};
use serde_json::Value;

use super::analysis::{identifiers, Analysis, DeclKind};
use super::position::LineIndex;
use super::uri;
use crate::code::Severity;
use crate::diagnostic::Diagnostic;
use crate::source::FileId;

pub fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(
            TextDocumentSyncKind::INCREMENTAL,
        )),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        references_provider: Some(OneOf::Left(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec![".".into()]),
            ..CompletionOptions::default()
        }),
        document_symbol_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(CodeActionProviderCapability::Simple(true)),
        ..ServerCapabilities::default()
    }
}

/// A diagnostic as LSP has it: range, severity, code (with the
/// explanation's text as related information), message with its help line.
pub fn diagnostic(a: &Analysis, d: &Diagnostic) -> lsp_types::Diagnostic {
    let text = a.text(d.span.file);
    let index = LineIndex::new(text);
    let mut message = d.message.clone();
    if !d.label.is_empty() && d.label != d.message {
        message.push_str(&format!("\n{}", d.label));
    }
    if let Some(h) = &d.help {
        message.push_str(&format!("\nhelp: {h}"));
    }
    lsp_types::Diagnostic {
        range: index.range(text, d.span.start as usize, d.span.end as usize),
        severity: Some(match d.severity {
            Severity::Error => lsp_types::DiagnosticSeverity::ERROR,
            Severity::Warning => lsp_types::DiagnosticSeverity::WARNING,
        }),
        code: Some(NumberOrString::String(d.code.as_str().to_string())),
        source: Some("flowc".into()),
        message,
        ..lsp_types::Diagnostic::default()
    }
}

/// Answers one request; `None` when there is nothing to say.
pub fn handle(a: &Analysis, uri: &Uri, method: &str, params: Value) -> Option<Value> {
    let file = a.file;
    let text = a.text(file);
    let index = LineIndex::new(text);
    let position = |params: &Value| -> Option<usize> {
        let p: lsp_types::Position =
            serde_json::from_value(params.get("position")?.clone()).ok()?;
        Some(index.offset(text, p))
    };
    let value = match method {
        "textDocument/hover" => serde_json::to_value(hover(a, file, position(&params)?)?),
        "textDocument/definition" => {
            let offset = position(&params)?;
            if let Some(target) = used_file_at(a, file, offset) {
                return serde_json::to_value(target).ok();
            }
            let t = a.token_at(file, offset)?;
            let decl = a.resolve(file, t.start, &text[t.start..t.end])?;
            serde_json::to_value(location(a, a.decls[decl].file, a.decls[decl].name_range)?)
        }
        "textDocument/references" => {
            let offset = position(&params)?;
            let t = a.token_at(file, offset)?;
            let decl = a.resolve(file, t.start, &text[t.start..t.end])?;
            let include = params
                .pointer("/context/includeDeclaration")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let d = &a.decls[decl];
            let locations: Vec<Location> = a
                .references(decl)
                .into_iter()
                .filter(|(f, t)| include || !(*f == d.file && t.start == d.name_range.0))
                .filter_map(|(f, t)| location(a, f, (t.start, t.end)))
                .collect();
            serde_json::to_value(locations)
        }
        "textDocument/completion" => serde_json::to_value(completion(a, file, position(&params)?)),
        "textDocument/documentSymbol" => serde_json::to_value(symbols(a, file)),
        "textDocument/formatting" => {
            let formatted = crate::format::format_source(text).ok()?;
            if formatted == text {
                return Some(Value::Array(Vec::new()));
            }
            serde_json::to_value(vec![TextEdit {
                range: index.range(text, 0, text.len()),
                new_text: formatted,
            }])
        }
        "textDocument/codeAction" => {
            let range: lsp_types::Range =
                serde_json::from_value(params.get("range")?.clone()).ok()?;
            let (start, end) = (
                index.offset(text, range.start),
                index.offset(text, range.end),
            );
            serde_json::to_value(code_actions(a, uri, file, start, end))
        }
        _ => return None,
    };
    value.ok()
}

/// The file a `use "./path.flow"` names, when `offset` is on its path.
fn used_file_at(a: &Analysis, file: FileId, offset: usize) -> Option<Location> {
    let text = a.text(file);
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text
        .get(offset..)?
        .find('\n')
        .map_or(text.len(), |i| offset + i);
    let line = text.get(line_start..line_end)?;
    let rest = line.trim_start().strip_prefix("use")?.trim_start();
    let open = line_start + (line.len() - rest.len()) + 1;
    let path = rest.strip_prefix('"')?.split('"').next()?;
    if offset < open || offset > open + path.len() {
        return None;
    }
    let crate::source::Origin::Disk(me) = &a.sources.get(file).origin else {
        return None;
    };
    let target = std::fs::canonicalize(me.parent()?.join(path)).ok()?;
    Some(Location {
        uri: uri::from_path(&target)?,
        range: lsp_types::Range::default(),
    })
}

fn location(a: &Analysis, file: FileId, range: (usize, usize)) -> Option<Location> {
    let path = match &a.sources.get(file).origin {
        crate::source::Origin::Disk(p) => std::fs::canonicalize(p).unwrap_or(p.clone()),
        _ => return None,
    };
    let text = a.text(file);
    Some(Location {
        uri: uri::from_path(&path)?,
        range: LineIndex::new(text).range(text, range.0, range.1),
    })
}

fn markdown(value: String) -> Hover {
    Hover {
        contents: HoverContents::Markup(MarkupContent {
            kind: MarkupKind::Markdown,
            value,
        }),
        range: None,
    }
}

/// A binding's type; a tool's signature, effect, timeout and retry; a
/// model's settings; an `llm` step's worst case; a code's explanation when
/// the position is on a diagnostic.
fn hover(a: &Analysis, file: FileId, offset: usize) -> Option<Hover> {
    let text = a.text(file);
    let mut parts = Vec::new();
    if let Some(t) = a.token_at(file, offset) {
        let name = &text[t.start..t.end];
        if let Some(decl) = a.resolve(file, t.start, name) {
            if let Some(h) = describe(a, decl) {
                parts.push(h);
            }
        }
    }
    for d in a.diagnostics.iter().filter(|d| {
        d.span.file == file && d.span.start as usize <= offset && offset <= d.span.end as usize
    }) {
        let explanation = d.code.explanation();
        let first = explanation
            .split("\n\n")
            .find(|p| !p.trim_start().starts_with('#'))
            .unwrap_or("")
            .trim();
        parts.push(format!(
            "**{}** `{}`: {}\n\n{}\n\n(`flowc explain {}` for examples)",
            d.code,
            d.code.slug(),
            d.code.summary(),
            first,
            d.code
        ));
    }
    if parts.is_empty() {
        return None;
    }
    Some(markdown(parts.join("\n\n---\n\n")))
}

fn describe(a: &Analysis, decl: usize) -> Option<String> {
    let d = &a.decls[decl];
    let p = &a.program;
    let types = &p.types;
    let params = |ps: &[crate::ir::Param]| {
        ps.iter()
            .map(|x| format!("{}: {}", x.name, types.display(&x.ty)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let code = |s: String| format!("```flow\n{s}\n```");
    Some(match d.kind {
        DeclKind::Binding => {
            let owner = d.owner?;
            let ty = a.binding_type(owner, &d.name)?;
            let mut out = code(format!("{}: {}", d.name, types.display(&ty)));
            if let Some(worst) = llm_worst_case(a, owner, &d.name) {
                out.push_str(&format!("\n\n{worst}"));
            }
            out
        }
        DeclKind::Type => {
            let id = types.defs.iter().position(|t| t.name == d.name)?;
            code(format!(
                "type {} = {}",
                d.name,
                types.display(&types.def(crate::types::TypeId(id as u32)).ty)
            ))
        }
        DeclKind::Tool => {
            let t = p.tools.iter().find(|t| t.name == d.name)?;
            let mut out = code(format!(
                "tool {}({}) -> {}",
                t.name,
                params(&t.params),
                types.display(&t.output)
            ));
            out.push_str(&format!("\n\neffect: **{}**", t.effect.as_str()));
            out.push_str(&match t.timeout_seconds {
                Some(s) => format!(" · timeout {s}s"),
                None => " · no timeout".into(),
            });
            out.push_str(&match &t.retry {
                Some(r) => format!(
                    " · retry {} on {} (backoff {}s × {})",
                    r.retries,
                    r.on.join(", "),
                    r.base_seconds,
                    r.factor
                ),
                None => " · no retry".into(),
            });
            if let Some(limit) = t.limit_tokens {
                out.push_str(&format!(" · limit {limit} tokens"));
            }
            out
        }
        DeclKind::Model => {
            let m = p.models.iter().find(|m| m.name == d.name)?;
            let mut out = code(format!("model {} = \"{}\"", m.name, m.model_id));
            if let Some(t) = m.max_tokens {
                out.push_str(&format!("\n\nmax_tokens {t}"));
            }
            if let Some(t) = m.temperature {
                out.push_str(&format!(" · temperature {t}"));
            }
            if let Some(price) = &m.price {
                out.push_str(&format!(
                    " · ${} in / ${} out per 1M tokens",
                    price.input, price.output
                ));
            }
            out
        }
        DeclKind::Agent => {
            let g = p.agents.iter().find(|g| g.name == d.name)?;
            let tools: Vec<&str> = g
                .tools
                .iter()
                .map(|(t, _)| p.tools[t.index()].name.as_str())
                .collect();
            let mut out = code(format!(
                "agent {}({}) -> {}",
                g.name,
                params(&g.params),
                types.display(&g.output)
            ));
            out.push_str(&format!("\n\ntools: {}", tools.join(", ")));
            if let Some(n) = g.max_steps {
                out.push_str(&format!(" · max_steps {n}"));
            }
            out
        }
        DeclKind::Flow => {
            let f = p.flows.iter().find(|f| f.name == d.name)?;
            let mut out = code(format!(
                "flow {}({}) -> {}",
                f.name,
                params(&f.params),
                types.display(&f.output)
            ));
            if let Some(b) = &f.budget {
                let mut limits = Vec::new();
                if let Some(t) = b.tokens {
                    limits.push(format!("tokens {t}"));
                }
                if let Some(c) = b.cost {
                    limits.push(format!("cost ${c}"));
                }
                if let Some(s) = b.steps {
                    limits.push(format!("steps {s}"));
                }
                if let Some(w) = b.wall_seconds {
                    limits.push(format!("wall {w}s"));
                }
                out.push_str(&format!("\n\nbudget: {}", limits.join(", ")));
            }
            out
        }
        DeclKind::Provider | DeclKind::Resource | DeclKind::Test => {
            code(format!("{:?} {}", d.kind, d.name).to_lowercase())
        }
    })
}

/// An `llm` step's worst case: attempts × output tokens, priced when the
/// model has a price.
fn llm_worst_case(a: &Analysis, owner: usize, name: &str) -> Option<String> {
    let flow = a
        .program
        .flows
        .iter()
        .find(|f| f.name == a.decls[owner].name)?;
    let step = flow.graph.node_weights().find(|s| s.name == name)?;
    let crate::ir::StepKind::Llm(call) = &step.kind else {
        return None;
    };
    let model = &a.program.models[call.model.index()];
    let attempts = u64::from(call.attempts());
    let max_tokens = call.max_tokens.or(model.max_tokens)?;
    let tokens = attempts * max_tokens;
    let mut out = format!(
        "worst case: {attempts} attempt{} × {max_tokens} output tokens = {tokens} tokens from `{}`",
        if attempts == 1 { "" } else { "s" },
        model.name
    );
    if let Some(price) = &model.price {
        out.push_str(&format!(
            " (≤ ${:.4} of output)",
            tokens as f64 * price.output / 1_000_000.0
        ));
    }
    Some(out)
}

/// Clause keywords by declaration kind, and statement keywords in flows.
fn keywords(kind: Option<DeclKind>) -> &'static [&'static str] {
    match kind {
        Some(DeclKind::Tool) => &[
            "http",
            "header",
            "query",
            "body",
            "format",
            "effect",
            "read",
            "write",
            "irreversible",
            "reads",
            "writes",
            "timeout",
            "retry",
            "on",
            "backoff",
            "cap",
            "jitter",
            "idempotency",
            "limit",
            "tokens",
        ],
        Some(DeclKind::Agent) => &[
            "model",
            "tools",
            "may",
            "max_steps",
            "max_repeat",
            "instructions",
            "budget",
            "timeout",
            "retry",
        ],
        Some(DeclKind::Model) => &[
            "temperature",
            "max_tokens",
            "fallback",
            "concurrency",
            "rpm",
        ],
        Some(DeclKind::Flow) => &[
            "let",
            "return",
            "budget",
            "llm",
            "approve",
            "show",
            "on_timeout",
            "escalate",
            "auto",
            "when",
            "sample",
            "notify",
            "webhook",
            "for",
            "in",
            "parallel",
            "tolerate",
            "if",
            "else",
            "match",
            "check",
            "require",
            "after",
            "fallback",
            "prompt",
            "system",
            "and",
            "or",
            "not",
            "true",
            "false",
            "null",
        ],
        Some(DeclKind::Test) => &[
            "run", "given", "returns", "fails", "approve", "approves", "rejects", "expect",
            "output", "called", "times", "failure",
        ],
        _ => &[
            "use", "type", "model", "resource", "provider", "tool", "agent", "flow", "test",
        ],
    }
}

fn completion(a: &Analysis, file: FileId, offset: usize) -> Vec<CompletionItem> {
    let text = a.text(file);
    let before = text.get(..offset).unwrap_or("");
    // The word being typed, and what precedes it.
    let word_start = before
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let owner = a.enclosing(file, offset);
    if before[..word_start].ends_with('.') {
        return field_completion(a, file, owner, &before[..word_start - 1]);
    }
    let mut items = Vec::new();
    let owner_kind = owner.map(|o| a.decls[o].kind);
    for k in keywords(owner_kind) {
        items.push(item(k, CompletionItemKind::KEYWORD, None));
    }
    if let Some(o) = owner {
        for d in a
            .decls
            .iter()
            .filter(|d| d.kind == DeclKind::Binding && d.owner == Some(o))
        {
            let detail = a
                .binding_type(o, &d.name)
                .map(|t| a.program.types.display(&t));
            items.push(item(&d.name, CompletionItemKind::VARIABLE, detail));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for d in a
        .decls
        .iter()
        .filter(|d| d.kind != DeclKind::Binding && d.kind != DeclKind::Test)
    {
        if !seen.insert(d.name.clone()) {
            continue;
        }
        let kind = match d.kind {
            DeclKind::Type => CompletionItemKind::STRUCT,
            DeclKind::Tool | DeclKind::Flow | DeclKind::Agent => CompletionItemKind::FUNCTION,
            DeclKind::Model | DeclKind::Provider => CompletionItemKind::MODULE,
            _ => CompletionItemKind::CONSTANT,
        };
        items.push(item(
            &d.name,
            kind,
            Some(format!("{:?}", d.kind).to_lowercase()),
        ));
    }
    items
}

/// Fields of the value before the `.`: a binding followed by field names.
fn field_completion(
    a: &Analysis,
    file: FileId,
    owner: Option<usize>,
    before_dot: &str,
) -> Vec<CompletionItem> {
    let chain_start = before_dot
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .map_or(0, |i| i + 1);
    let chain: Vec<&str> = before_dot[chain_start..].split('.').collect();
    let Some((first, rest)) = chain.split_first() else {
        return Vec::new();
    };
    let types = &a.program.types;
    let mut ty = match owner {
        Some(o) => a.binding_type(o, first),
        None => None,
    };
    // In a test, `output.` is the flow's result.
    if ty.is_none() && *first == "output" {
        if let Some(o) = owner.filter(|&o| a.decls[o].kind == DeclKind::Test) {
            let range = a.decls[o].range;
            let body = a.text(file).get(range.0..range.1).unwrap_or("");
            ty = a
                .program
                .flows
                .iter()
                .find(|f| body.contains(&format!("run {}(", f.name)))
                .map(|f| f.output.clone());
        }
    }
    let Some(mut ty) = ty else {
        return Vec::new();
    };
    for field in rest {
        match types.field(&ty, field) {
            Some(t) => ty = t,
            None => return Vec::new(),
        }
    }
    let mut items: Vec<CompletionItem> = types
        .field_names(&ty)
        .into_iter()
        .map(|name| {
            let detail = types.field(&ty, &name).map(|t| types.display(&t));
            item(&name, CompletionItemKind::FIELD, detail)
        })
        .collect();
    if types.element(&ty).is_some() {
        items.push(item(
            "len",
            CompletionItemKind::PROPERTY,
            Some("number".into()),
        ));
    }
    items
}

fn item(label: &str, kind: CompletionItemKind, detail: Option<String>) -> CompletionItem {
    CompletionItem {
        label: label.to_string(),
        kind: Some(kind),
        detail,
        ..CompletionItem::default()
    }
}

#[allow(deprecated)] // `DocumentSymbol::deprecated` must be written out.
fn symbols(a: &Analysis, file: FileId) -> Vec<DocumentSymbol> {
    let text = a.text(file);
    let index = LineIndex::new(text);
    let symbol = |name: &str,
                  kind: SymbolKind,
                  range: (usize, usize),
                  name_range: (usize, usize),
                  children| {
        DocumentSymbol {
            name: name.to_string(),
            detail: None,
            kind,
            tags: None,
            deprecated: None,
            range: index.range(text, range.0, range.1),
            selection_range: index.range(text, name_range.0, name_range.1),
            children,
        }
    };
    let mut out = Vec::new();
    for (i, d) in a.decls.iter().enumerate() {
        if d.file != file || d.kind == DeclKind::Binding {
            continue;
        }
        let kind = match d.kind {
            DeclKind::Type => SymbolKind::STRUCT,
            DeclKind::Model | DeclKind::Provider => SymbolKind::OBJECT,
            DeclKind::Resource => SymbolKind::CONSTANT,
            DeclKind::Tool | DeclKind::Agent => SymbolKind::FUNCTION,
            DeclKind::Flow => SymbolKind::FUNCTION,
            DeclKind::Test => SymbolKind::METHOD,
            DeclKind::Binding => SymbolKind::VARIABLE,
        };
        let children: Vec<DocumentSymbol> = a
            .decls
            .iter()
            .filter(|b| b.kind == DeclKind::Binding && b.owner == Some(i))
            .map(|b| symbol(&b.name, SymbolKind::VARIABLE, b.range, b.name_range, None))
            .collect();
        out.push(symbol(
            &d.name,
            kind,
            d.range,
            d.name_range,
            if children.is_empty() {
                None
            } else {
                Some(children)
            },
        ));
    }
    out
}

/// Quick fixes for the diagnostics in a range whose help line proposes a
/// replacement (`did you mean `title`?`).
fn code_actions(
    a: &Analysis,
    uri: &Uri,
    file: FileId,
    start: usize,
    end: usize,
) -> Vec<CodeActionOrCommand> {
    let text = a.text(file);
    let index = LineIndex::new(text);
    let mut out = Vec::new();
    for d in a.diagnostics.iter().filter(|d| {
        d.span.file == file && d.span.start as usize <= end && start <= d.span.end as usize
    }) {
        let Some(help) = &d.help else { continue };
        let Some(rest) = help.split("did you mean `").nth(1) else {
            continue;
        };
        let Some(suggestion) = rest.split('`').next() else {
            continue;
        };
        // Only a name for a name: the span must be one identifier.
        let span_text = text
            .get(d.span.start as usize..d.span.end as usize)
            .unwrap_or("");
        if identifiers(span_text).len() != 1 || suggestion.is_empty() {
            continue;
        }
        let edit = TextEdit {
            range: index.range(text, d.span.start as usize, d.span.end as usize),
            new_text: suggestion.to_string(),
        };
        out.push(CodeActionOrCommand::CodeAction(CodeAction {
            title: format!("Replace with `{suggestion}`"),
            kind: Some(CodeActionKind::QUICKFIX),
            diagnostics: Some(vec![diagnostic(a, d)]),
            edit: Some(WorkspaceEdit {
                changes: Some(HashMap::from([(uri.clone(), vec![edit])])),
                ..WorkspaceEdit::default()
            }),
            is_preferred: Some(true),
            ..CodeAction::default()
        }));
    }
    out
}
