//! What the language server knows about one document and the files it
//! `use`s: the diagnostics `compile()` reports, the declarations of every
//! module (from the syntax tree), the typed program (lowered even when it
//! has errors), and the names at each position.

use std::path::{Path, PathBuf};

use crate::ast::{self, Item, Stmt};
use crate::diagnostic::Diagnostic;
use crate::ir::{Program, StepKind};
use crate::loader::Loader;
use crate::source::{FileId, Origin, Sources};
use crate::syntax::scan;
use crate::syntax::tokens::TokenKind;
use crate::types::Ty;

/// What a declared name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclKind {
    Type,
    Model,
    Provider,
    Resource,
    Tool,
    Agent,
    Flow,
    Test,
    /// A `let`, a loop variable or a parameter, inside `owner`.
    Binding,
}

/// A declaration: where its name is, and the span of the whole item.
#[derive(Clone, Debug)]
pub struct Decl {
    pub name: String,
    pub kind: DeclKind,
    pub file: FileId,
    /// The name's byte range.
    pub name_range: (usize, usize),
    /// The whole declaration's byte range.
    pub range: (usize, usize),
    /// For a binding: the index of the top-level declaration it lives in.
    pub owner: Option<usize>,
}

pub struct Analysis {
    pub sources: Sources,
    pub file: FileId,
    pub diagnostics: Vec<Diagnostic>,
    pub decls: Vec<Decl>,
    pub program: Program,
}

/// An identifier in the text.
#[derive(Clone, Copy, Debug)]
pub struct Token {
    pub start: usize,
    pub end: usize,
}

impl Analysis {
    /// Compiles `path` (its text from `overlays` when open in the editor)
    /// with every file it uses.
    pub fn new(path: &Path, overlays: &[(PathBuf, String)]) -> Option<Analysis> {
        let load = || {
            let mut loader = Loader::new();
            for (p, text) in overlays {
                loader.overlay(p, text.clone().into_bytes());
            }
            loader.load_path(path).ok()?;
            Some(loader.finish())
        };
        let ws = load()?;
        let mut decls = Vec::new();
        for module in &ws.modules {
            collect_decls(module.file, &module.ast, &mut decls);
        }
        let mut scratch = Vec::new();
        let program = crate::lower::lower(&ws, &mut scratch);
        let file = ws.modules.first().map(|m| m.file)?;
        let (compilation, _sealed) = crate::diagnose_workspace(ws);
        let diagnostics: Vec<Diagnostic> =
            compilation.problems.sorted().into_iter().cloned().collect();
        Some(Analysis {
            sources: compilation.sources,
            file,
            diagnostics,
            decls,
            program,
        })
    }

    pub fn text(&self, file: FileId) -> &str {
        &self.sources.get(file).text
    }

    /// The files on disk (not the standard library), with their paths.
    pub fn disk_files(&self) -> Vec<(FileId, PathBuf)> {
        self.sources
            .iter()
            .filter_map(|(id, f)| match &f.origin {
                Origin::Disk(p) => Some((id, std::fs::canonicalize(p).unwrap_or(p.clone()))),
                _ => None,
            })
            .collect()
    }

    /// The identifier at (or just before) a byte offset.
    pub fn token_at(&self, file: FileId, offset: usize) -> Option<Token> {
        let text = self.text(file);
        identifiers(text)
            .into_iter()
            .find(|t| t.start <= offset && offset <= t.end)
    }

    /// The top-level declaration whose range holds `offset`.
    pub fn enclosing(&self, file: FileId, offset: usize) -> Option<usize> {
        self.decls.iter().position(|d| {
            d.file == file
                && d.kind != DeclKind::Binding
                && d.range.0 <= offset
                && offset <= d.range.1
        })
    }

    /// The declaration a name at `offset` refers to: a binding of the
    /// enclosing declaration, else a top-level declaration of that name
    /// (this file's first, then any module's).
    pub fn resolve(&self, file: FileId, offset: usize, name: &str) -> Option<usize> {
        if let Some(owner) = self.enclosing(file, offset) {
            let binding = self.decls.iter().position(|d| {
                d.kind == DeclKind::Binding && d.owner == Some(owner) && d.name == name
            });
            if binding.is_some() {
                return binding;
            }
        }
        let top = |same_file: bool| {
            self.decls.iter().position(|d| {
                d.kind != DeclKind::Binding
                    && d.kind != DeclKind::Test
                    && d.name == name
                    && (!same_file || d.file == file)
            })
        };
        top(true).or_else(|| top(false))
    }

    /// Every identifier in the disk files that refers to declaration `decl`.
    pub fn references(&self, decl: usize) -> Vec<(FileId, Token)> {
        let name = &self.decls[decl].name;
        let mut out = Vec::new();
        for (file, _) in self.disk_files() {
            let text = self.text(file);
            for t in identifiers(text) {
                if &text[t.start..t.end] == name.as_str()
                    && self.resolve(file, t.start, name) == Some(decl)
                {
                    out.push((file, t));
                }
            }
        }
        out
    }

    /// The type of a binding named `name` in top-level declaration `owner`.
    pub fn binding_type(&self, owner: usize, name: &str) -> Option<Ty> {
        let o = &self.decls[owner];
        match o.kind {
            DeclKind::Flow => {
                let flow = self.program.flows.iter().find(|f| f.name == o.name)?;
                if let Some(p) = flow.params.iter().find(|p| p.name == name) {
                    return Some(p.ty.clone());
                }
                flow.graph
                    .node_weights()
                    .find(|s| s.name == name && !matches!(s.kind, StepKind::Output(_)))
                    .map(|s| s.ty.clone())
            }
            DeclKind::Tool => {
                let tool = self.program.tools.iter().find(|t| t.name == o.name)?;
                tool.params
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| p.ty.clone())
            }
            DeclKind::Agent => {
                let agent = self.program.agents.iter().find(|a| a.name == o.name)?;
                agent
                    .params
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| p.ty.clone())
            }
            _ => None,
        }
    }
}

fn range_of(span: crate::source::Span) -> (usize, usize) {
    (span.start as usize, span.end as usize)
}

fn collect_decls(file: FileId, module: &ast::Module, out: &mut Vec<Decl>) {
    for item in &module.items {
        let (name, kind, span) = match item {
            Item::Use(_) => continue,
            Item::Type(t) => (&t.name, DeclKind::Type, t.span),
            Item::Model(m) => (&m.name, DeclKind::Model, m.span),
            Item::Resource(r) => (r, DeclKind::Resource, r.span),
            Item::Provider(p) => (&p.name, DeclKind::Provider, p.span),
            Item::Tool(t) => (&t.name, DeclKind::Tool, t.span),
            Item::Agent(a) => (&a.name, DeclKind::Agent, a.span),
            Item::Flow(f) => (&f.name, DeclKind::Flow, f.span),
            Item::Test(t) => {
                out.push(Decl {
                    name: t.name.clone(),
                    kind: DeclKind::Test,
                    file,
                    name_range: range_of(t.name_span),
                    range: range_of(t.span),
                    owner: None,
                });
                continue;
            }
            Item::Eval(_) | Item::Server(_) => continue,
        };
        let owner = out.len();
        out.push(Decl {
            name: name.name.clone(),
            kind,
            file,
            name_range: range_of(name.span),
            range: range_of(span),
            owner: None,
        });
        let mut binding = |ident: &ast::Ident| {
            out.push(Decl {
                name: ident.name.clone(),
                kind: DeclKind::Binding,
                file,
                name_range: range_of(ident.span),
                range: range_of(ident.span),
                owner: Some(owner),
            });
        };
        match item {
            Item::Tool(t) => t.params.iter().for_each(|p| binding(&p.name)),
            Item::Agent(a) => a.params.iter().for_each(|p| binding(&p.name)),
            Item::Flow(f) => {
                f.params.iter().for_each(|p| binding(&p.name));
                let mut names = Vec::new();
                stmts_bindings(&f.body, &mut names, 0);
                names.iter().for_each(|i| binding(i));
            }
            _ => {}
        }
    }
}

/// The names `let` and `for` bind in statements, nested blocks included.
fn stmts_bindings<'a>(stmts: &'a [Stmt], out: &mut Vec<&'a ast::Ident>, depth: u32) {
    if depth > 64 {
        return;
    }
    for s in stmts {
        if let Stmt::Let(l) = s {
            out.push(&l.name);
            step_bindings(&l.step, out, depth + 1);
            if let Some(f) = &l.fallback {
                step_bindings(f, out, depth + 1);
            }
        }
    }
}

fn step_bindings<'a>(step: &'a ast::Step, out: &mut Vec<&'a ast::Ident>, depth: u32) {
    let block = |b: &'a ast::Block, out: &mut Vec<&'a ast::Ident>| {
        stmts_bindings(&b.stmts, out, depth + 1);
        step_bindings(&b.result, out, depth + 1);
    };
    match &step.kind {
        ast::StepKind::For(f) => {
            out.push(&f.var);
            block(&f.body, out);
        }
        ast::StepKind::If(i) => {
            block(&i.then, out);
            if let Some(o) = &i.otherwise {
                block(o, out);
            }
        }
        ast::StepKind::Match(m) => m.arms.iter().for_each(|a| block(&a.body, out)),
        _ => {}
    }
}

/// The identifiers of a text (names and keywords), skipping comments,
/// regular expressions and the literal parts of strings (their `{…}`
/// interpolations are code). The words of the one scanner's token table:
/// the editor sees the text as the parser and the formatter do.
pub fn identifiers(text: &str) -> Vec<Token> {
    let (_, tokens) = scan::scan_tokens(text, usize::MAX);
    tokens
        .tokens()
        .iter()
        .filter(|t| t.kind == TokenKind::Word)
        .map(|t| Token {
            start: t.start,
            end: t.end,
        })
        .collect()
}
