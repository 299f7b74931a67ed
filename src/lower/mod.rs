//! AST → typed [`ir::Program`]: resolves every name, turns type expressions
//! into [`Ty`], and builds each flow's step graph (`flow.rs`). Name and type
//! problems are reported here, where the tokens that cause them are at hand;
//! properties of the finished graph are `check`'s job.

mod effects;
mod eval;
mod expr;
mod flow;
mod narrow;

// FxHash: lowering hashes every name it resolves; the keys are the
// program's own names, and SipHash's resistance to chosen keys bought
// nothing but ~2% of `flowc check` on a large file.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::ast::{self, AgentClauseKind, Effect, Item, ToolClauseKind, TypeExprKind, Unit};
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::*;
use crate::loader::Workspace;
use crate::source::Span;
use crate::suggest::did_you_mean;
use crate::types::{Constraints, Field, Lit, SchemaFile, Ty, TypeDef, TypeId};

/// What a top-level name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Symbol {
    Type(TypeId),
    Provider(ProviderId),
    Model(ModelId),
    Resource(ResourceId),
    Tool(ToolId),
    Agent(AgentId),
    Flow(FlowId),
    Server(ServerId),
}

impl Symbol {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Symbol::Type(_) => "a type",
            Symbol::Provider(_) => "a provider",
            Symbol::Model(_) => "a model",
            Symbol::Resource(_) => "a resource",
            Symbol::Tool(_) => "a tool",
            Symbol::Agent(_) => "an agent",
            Symbol::Flow(_) => "a flow",
            Symbol::Server(_) => "an MCP server",
        }
    }
}

/// Lowers a whole workspace. Problems go to `problems`; the program is
/// complete even when there are errors (unresolved parts become `Ty::Error`
/// and `ExprKind::Error`), so later passes can still report what they find.
pub fn lower(ws: &Workspace, problems: &mut Vec<Diagnostic>) -> Program {
    let mut cx = Lowerer {
        ws,
        program: Program::default(),
        problems,
        scopes: Vec::new(),
        locals: Vec::new(),
        poisoned: Vec::new(),
    };
    cx.declare_all();
    cx.import_all();
    cx.define_all();
    effects::of_flows(&mut cx.program);
    cx.program.roots = ws.roots.iter().map(|&m| ws.modules[m].file).collect();
    cx.program
}

pub(crate) struct Lowerer<'w, 'p> {
    ws: &'w Workspace,
    pub(crate) program: Program,
    problems: &'p mut Vec<Diagnostic>,
    /// Per module: every name visible at top level (own and imported).
    scopes: Vec<HashMap<String, (Symbol, Span)>>,
    /// Per module: only its own declarations (what other modules may import).
    locals: Vec<HashMap<String, (Symbol, Span)>>,
    /// Per module: names whose declaration or import failed and was already
    /// reported; their uses are not reported again.
    poisoned: Vec<HashSet<String>>,
}

impl<'w, 'p> Lowerer<'w, 'p> {
    pub(crate) fn report(&mut self, d: Diagnostic) {
        self.problems.push(d);
    }

    fn declare_all(&mut self) {
        for (m, module) in self.ws.modules.iter().enumerate() {
            self.poisoned
                .push(module.ast.broken.iter().cloned().collect());
            let mut scope: HashMap<String, (Symbol, Span)> = HashMap::default();
            for item in &module.ast.items {
                let (name, symbol) = match item {
                    Item::Use(_) | Item::Test(_) | Item::Eval(_) => continue,
                    Item::Type(t) => {
                        self.program.types.defs.push(TypeDef {
                            name: t.name.name.clone(),
                            ty: Ty::Error,
                        });
                        (
                            &t.name,
                            Symbol::Type(TypeId(self.program.types.defs.len() as u32 - 1)),
                        )
                    }
                    Item::Server(d) => {
                        self.program.servers.push(McpServer {
                            name: d.name.name.clone(),
                            span: d.name.span,
                            transport: McpTransport::Missing,
                            env: Vec::new(),
                            headers: Vec::new(),
                            timeout_seconds: None,
                            lock: McpLock::Missing,
                        });
                        (
                            &d.name,
                            Symbol::Server(ServerId(self.program.servers.len() as u32 - 1)),
                        )
                    }
                    Item::Provider(p) => {
                        self.program.providers.push(Provider {
                            name: p.name.name.clone(),
                            span: p.name.span,
                            protocol: Protocol::OpenAi,
                            base_url_env: None,
                            base_url: None,
                            api_key_env: None,
                            prices: Vec::new(),
                        });
                        (
                            &p.name,
                            Symbol::Provider(ProviderId(self.program.providers.len() as u32 - 1)),
                        )
                    }
                    Item::Model(md) => {
                        self.program.models.push(Model {
                            name: md.name.name.clone(),
                            span: md.name.span,
                            provider: ProviderId(u32::MAX),
                            model_id: md.model_id.clone(),
                            temperature: None,
                            max_tokens: None,
                            fallback: None,
                            concurrency: None,
                            rpm: None,
                            extra: Vec::new(),
                            price: None,
                            context_window: None,
                        });
                        (
                            &md.name,
                            Symbol::Model(ModelId(self.program.models.len() as u32 - 1)),
                        )
                    }
                    Item::Resource(r) => {
                        self.program.resources.push(Resource {
                            name: r.name.clone(),
                            span: r.span,
                        });
                        (
                            r,
                            Symbol::Resource(ResourceId(self.program.resources.len() as u32 - 1)),
                        )
                    }
                    Item::Tool(t) => {
                        self.program.tools.push(Tool {
                            name: t.name.name.clone(),
                            span: t.name.span,
                            params: Vec::new(),
                            output: Ty::Error,
                            kind: None,
                            effect: Effect::Read,
                            effect_span: None,
                            reads: Vec::new(),
                            writes: Vec::new(),
                            timeout_seconds: None,
                            retry: None,
                            idempotency: None,
                            limit_tokens: None,
                            mentioned: false,
                        });
                        (
                            &t.name,
                            Symbol::Tool(ToolId(self.program.tools.len() as u32 - 1)),
                        )
                    }
                    Item::Agent(a) => {
                        self.program.agents.push(Agent {
                            name: a.name.name.clone(),
                            span: a.name.span,
                            params: Vec::new(),
                            output: Ty::Error,
                            model: None,
                            tools: Vec::new(),
                            may: Effect::Read,
                            max_steps: None,
                            max_repeat: None,
                            instructions: None,
                            budget: None,
                            timeout_seconds: None,
                            retry: None,
                        });
                        (
                            &a.name,
                            Symbol::Agent(AgentId(self.program.agents.len() as u32 - 1)),
                        )
                    }
                    Item::Flow(f) => {
                        self.program.flows.push(Flow {
                            name: f.name.name.clone(),
                            span: f.name.span,
                            params: Vec::new(),
                            output: Ty::Error,
                            budget: None,
                            graph: Default::default(),
                            regions: Vec::new(),
                            output_step: None,
                            unresolved: false,
                            dropped_after: Vec::new(),
                            after_points: Default::default(),
                            judge: false,
                            effect: Effect::Read,
                            resources: Vec::new(),
                        });
                        (
                            &f.name,
                            Symbol::Flow(FlowId(self.program.flows.len() as u32 - 1)),
                        )
                    }
                };
                if let Some((previous, prev_span)) = scope.get(&name.name) {
                    if let Symbol::Tool(t) = symbol {
                        self.program.tools[t.index()].mentioned = true;
                    }
                    let d = Diagnostic::new(
                        Code::DuplicateName,
                        name.span,
                        format!("`{}` is declared twice", name.name),
                    )
                    .label("declared again here")
                    .with(
                        *prev_span,
                        format!("first declared here as {}", previous.kind()),
                    )
                    .help("every top-level name in a file must be unique; rename one of them");
                    self.report(d);
                    continue;
                }
                scope.insert(name.name.clone(), (symbol, name.span));
            }
            let _ = m;
            self.locals.push(scope.clone());
            self.scopes.push(scope);
        }
    }

    fn import_all(&mut self) {
        for (m, module) in self.ws.modules.iter().enumerate() {
            let uses = module.ast.items.iter().filter_map(|i| match i {
                Item::Use(u) => Some(u),
                _ => None,
            });
            for (u, target) in uses.zip(module.imports.iter()) {
                let Some(target) = *target else {
                    // The loader reported the missing module.
                    self.poisoned[m].extend(u.names.iter().map(|n| n.name.clone()));
                    continue;
                };
                for name in &u.names {
                    let Some(&(symbol, _)) = self.locals[target].get(&name.name) else {
                        self.poisoned[m].insert(name.name.clone());
                        let module_name = match &u.path {
                            ast::ModulePath::Std(parts) => parts
                                .iter()
                                .map(|p| p.name.as_str())
                                .collect::<Vec<_>>()
                                .join("."),
                            ast::ModulePath::File(path) => path.clone(),
                        };
                        let mut d = Diagnostic::new(
                            Code::UnresolvedImport,
                            name.span,
                            format!("`{module_name}` has no declaration named `{}`", name.name),
                        )
                        .label("not found in that module");
                        if let Some(s) =
                            did_you_mean(&name.name, self.locals[target].keys().map(String::as_str))
                        {
                            d = d.help(format!("did you mean `{s}`?"));
                        }
                        self.report(d);
                        continue;
                    };
                    if let Some((existing, prev_span)) = self.scopes[m].get(&name.name) {
                        if *existing != symbol {
                            let d = Diagnostic::new(
                                Code::DuplicateName,
                                name.span,
                                format!("`{}` is already declared in this file", name.name),
                            )
                            .label("imported here")
                            .with(*prev_span, "declared here")
                            .help("rename the local declaration, or do not import this name");
                            self.report(d);
                        }
                        continue;
                    }
                    self.scopes[m].insert(name.name.clone(), (symbol, name.span));
                }
            }
        }
    }

    /// Looks a top-level name up in module `m`.
    pub(crate) fn lookup(&self, m: usize, name: &str) -> Option<Symbol> {
        self.scopes[m].get(name).map(|(s, _)| *s)
    }

    /// Whether `name` failed to be declared or imported in module `m` (and
    /// was reported then).
    pub(crate) fn is_poisoned(&self, m: usize, name: &str) -> bool {
        self.poisoned[m].contains(name)
    }

    /// Reports an unknown top-level name, suggesting one of the wanted kind.
    pub(crate) fn undefined(
        &mut self,
        m: usize,
        name: &ast::Ident,
        wanted: &str,
        fits: fn(Symbol) -> bool,
    ) {
        if self.is_poisoned(m, &name.name) {
            return;
        }
        let candidates: Vec<&str> = self.scopes[m]
            .iter()
            .filter(|(_, (s, _))| fits(*s))
            .map(|(n, _)| n.as_str())
            .collect();
        let mut d = Diagnostic::new(
            Code::UndefinedName,
            name.span,
            format!("there is no {wanted} named `{}`", name.name),
        )
        .label(format!("not a declared {wanted}"));
        if let Some(s) = did_you_mean(&name.name, candidates) {
            d = d.help(format!("did you mean `{s}`?"));
        } else {
            d = d.help(format!(
                "declare the {wanted} in this file, or import it with `use`"
            ));
        }
        self.report(d);
    }

    pub(crate) fn wrong_kind(
        &mut self,
        name: &ast::Ident,
        found: Symbol,
        wanted: &str,
        help: &str,
    ) {
        if let Symbol::Tool(t) = found {
            self.program.tools[t.index()].mentioned = true;
        }
        let d = Diagnostic::new(
            Code::WrongKind,
            name.span,
            format!("`{}` is {}, not {wanted}", name.name, found.kind()),
        )
        .label(format!("expected {wanted}"))
        .help(help.to_string());
        self.report(d);
    }

    fn define_all(&mut self) {
        let ws = self.ws;
        // Types first: everything else mentions them.
        let mut type_id = 0;
        for (m, module) in ws.modules.iter().enumerate() {
            for item in &module.ast.items {
                if let Item::Type(t) = item {
                    let ty = self.ty(m, &t.ty);
                    self.program.types.defs[type_id].ty = ty;
                    type_id += 1;
                }
            }
        }
        self.report_alias_cycles(
            &ws.modules
                .iter()
                .flat_map(|md| md.ast.items.iter())
                .collect::<Vec<_>>(),
        );
        let (mut p, mut md, mut t, mut a, mut f) = (0, 0, 0, 0, 0);
        let mut sv = 0;
        for (m, module) in ws.modules.iter().enumerate() {
            for item in &module.ast.items {
                match item {
                    Item::Server(decl) => {
                        let lock = ws.mcp_locks.get(&module.file).cloned().flatten();
                        self.server(ServerId(sv), decl, lock);
                        sv += 1;
                    }
                    Item::Provider(decl) => {
                        self.provider(ProviderId(p), decl);
                        p += 1;
                    }
                    Item::Tool(decl) => {
                        self.tool(m, ToolId(t), decl);
                        t += 1;
                    }
                    Item::Flow(decl) => {
                        // Signatures now, bodies later: a body may call any flow.
                        let params = self.params(m, &decl.params);
                        let output = self.ty(m, &decl.output);
                        let flow = &mut self.program.flows[f];
                        flow.params = params;
                        flow.output = output;
                        f += 1;
                    }
                    _ => {}
                }
            }
        }
        for (m, module) in ws.modules.iter().enumerate() {
            for item in &module.ast.items {
                match item {
                    Item::Model(decl) => {
                        self.model(m, ModelId(md), decl);
                        md += 1;
                    }
                    Item::Agent(decl) => {
                        self.agent(m, AgentId(a), decl);
                        a += 1;
                    }
                    _ => {}
                }
            }
        }
        let mut f = 0;
        for (m, module) in ws.modules.iter().enumerate() {
            for item in &module.ast.items {
                if let Item::Flow(decl) = item {
                    flow::lower_flow(self, m, FlowId(f), decl);
                    f += 1;
                }
            }
        }
        // Evals after the flows they run (their judges become flows too).
        for (m, module) in ws.modules.iter().enumerate() {
            for item in &module.ast.items {
                if let Item::Eval(decl) = item {
                    eval::lower_eval(self, m, decl);
                }
            }
        }
        // Tests last: they look into the graphs of the flows they run.
        for (m, module) in ws.modules.iter().enumerate() {
            for item in &module.ast.items {
                if let Item::Test(decl) = item {
                    flow::lower_test(self, m, decl);
                }
            }
        }
    }

    fn report_alias_cycles(&mut self, items: &[&Item]) {
        let mut id = 0;
        for item in items {
            if let Item::Type(t) = item {
                let ty = Ty::Named(TypeId(id));
                if self.program.types.resolve(&ty).is_error()
                    && !matches!(self.program.types.defs[id as usize].ty, Ty::Error)
                {
                    let d = Diagnostic::new(
                        Code::InvalidDeclaration,
                        t.name.span,
                        format!("type `{}` is defined as itself", t.name.name),
                    )
                    .label("this alias never reaches a real type")
                    .help("an alias must end in a concrete type; recursion is allowed only through a record or a list");
                    self.report(d);
                    self.program.types.defs[id as usize].ty = Ty::Error;
                }
                id += 1;
            }
        }
    }

    pub(crate) fn params(&mut self, m: usize, params: &[ast::Param]) -> Vec<Param> {
        let mut out: Vec<Param> = Vec::new();
        for p in params {
            if let Some(prev) = out.iter().find(|q| q.name == p.name.name) {
                let d = Diagnostic::new(
                    Code::DuplicateName,
                    p.name.span,
                    format!("parameter `{}` is declared twice", p.name.name),
                )
                .label("declared again here")
                .with(prev.span, "first declared here")
                .help("rename one of the parameters");
                self.report(d);
                continue;
            }
            let ty = self.ty(m, &p.ty);
            out.push(Param {
                name: p.name.name.clone(),
                ty,
                optional: p.optional,
                span: p.name.span,
            });
        }
        out
    }

    /// Resolves a type expression.
    pub(crate) fn ty(&mut self, m: usize, t: &ast::TypeExpr) -> Ty {
        match &t.kind {
            TypeExprKind::Named(name) => match name.name.as_str() {
                "string" => Ty::string(),
                "number" => Ty::number(),
                "int" => Ty::int(),
                "bool" => Ty::Bool,
                "json" => Ty::Json,
                "null" => Ty::Null,
                _ => match self.lookup(m, &name.name) {
                    Some(Symbol::Type(id)) => Ty::Named(id),
                    Some(other) => {
                        self.wrong_kind(name, other, "a type", "a type is `string`, `number`, `int`, `bool`, `json`, a list `[T]`, a record `{ … }` or a declared `type`");
                        Ty::Error
                    }
                    None if self.is_poisoned(m, &name.name) => Ty::Error,
                    None => {
                        let builtins = ["string", "number", "int", "bool", "json"];
                        let candidates: Vec<&str> = self.scopes[m]
                            .iter()
                            .filter(|(_, (s, _))| matches!(s, Symbol::Type(_)))
                            .map(|(n, _)| n.as_str())
                            .chain(builtins)
                            .collect();
                        let mut d = Diagnostic::new(
                            Code::UndefinedName,
                            name.span,
                            format!("there is no type named `{}`", name.name),
                        )
                        .label("unknown type");
                        d = match did_you_mean(&name.name, candidates) {
                            Some(s) => d.help(format!("did you mean `{s}`?")),
                            None => {
                                d.help("declare it with `type Name { … }` or import it with `use`")
                            }
                        };
                        self.report(d);
                        Ty::Error
                    }
                },
            },
            TypeExprKind::Literal(l) => Ty::Literal(lit(l)),
            TypeExprKind::List(inner) => Ty::list(self.ty(m, inner)),
            TypeExprKind::Optional(inner) => {
                let inner = self.ty(m, inner);
                match inner {
                    Ty::Optional(_) | Ty::Error => inner,
                    other => Ty::Optional(Box::new(other)),
                }
            }
            TypeExprKind::Record(fields, openness) => {
                let mut out: Vec<Field> = Vec::new();
                for f in fields {
                    if out.iter().any(|g| g.name == f.name.name) {
                        let d = Diagnostic::new(
                            Code::DuplicateName,
                            f.name.span,
                            format!("field `{}` is declared twice", f.name.name),
                        )
                        .label("declared again here")
                        .help("every field of a record needs its own name");
                        self.report(d);
                        continue;
                    }
                    let ty = self.ty(m, &f.ty);
                    out.push(Field {
                        name: f.name.name.clone(),
                        ty,
                        optional: f.optional,
                    });
                }
                Ty::Record(out, *openness)
            }
            TypeExprKind::Union(members) => {
                let mut lits: Vec<Lit> = Vec::new();
                let mut optional = false;
                for member in members {
                    match &member.kind {
                        TypeExprKind::Literal(l) => {
                            let l = lit(l);
                            if !lits.contains(&l) {
                                lits.push(l);
                            }
                        }
                        TypeExprKind::Named(n) if n.name == "null" => optional = true,
                        _ => {
                            let d = Diagnostic::new(Code::InvalidConstraint, member.span, "a union may only list literal values")
                                .label("not a literal")
                                .help("write literal alternatives such as `\"low\" | \"high\"`; for an optional value write `T?`");
                            self.report(d);
                            return Ty::Error;
                        }
                    }
                }
                let union = Ty::Union(lits);
                if optional {
                    Ty::Optional(Box::new(union))
                } else {
                    union
                }
            }
            TypeExprKind::Schema(path) => {
                let file = self.ws.modules[m].file;
                match self.ws.schemas.get(&(file, path.clone())) {
                    Some(Ok(value)) if value.is_object() || value.is_boolean() => {
                        self.program.types.schemas.push(SchemaFile {
                            path: path.clone(),
                            schema: value.clone(),
                        });
                        Ty::Schema(self.program.types.schemas.len() as u32 - 1)
                    }
                    Some(Ok(_)) => {
                        let d = Diagnostic::new(
                            Code::InvalidSchemaFile,
                            t.span,
                            format!("`{path}` is not a JSON Schema"),
                        )
                        .label("this file holds JSON, but not an object or boolean schema")
                        .help("a JSON Schema is a JSON object such as {\"type\": \"object\", …}");
                        self.report(d);
                        Ty::Error
                    }
                    Some(Err(e)) => {
                        let d = Diagnostic::new(Code::InvalidSchemaFile, t.span, e.clone())
                            .label("schema file named here")
                            .help("the path is relative to the folder of the file that names it");
                        self.report(d);
                        Ty::Error
                    }
                    None => Ty::Error,
                }
            }
            TypeExprKind::Constrained(inner, constraints) => {
                let base = self.ty(m, inner);
                self.constrain(base, constraints)
            }
        }
    }

    fn constrain(&mut self, base: Ty, constraints: &[ast::Constraint]) -> Ty {
        let resolved = self.program.types.resolve(&base).clone();
        let (mut c, rebuild): (Constraints, Box<dyn Fn(Constraints) -> Ty>) = match resolved {
            Ty::String(c) => (c, Box::new(Ty::String)),
            Ty::Number(c) => (c, Box::new(Ty::Number)),
            Ty::Int(c) => (c, Box::new(Ty::Int)),
            Ty::List(inner, c) => (c, Box::new(move |c| Ty::List(inner.clone(), c))),
            Ty::Error => return Ty::Error,
            other => {
                let shown = self.program.types.display(&other);
                if let Some(first) = constraints.first() {
                    let d = Diagnostic::new(Code::InvalidConstraint, first.span, format!("a `{shown}` cannot be constrained"))
                        .label("constraint on a type that has none")
                        .help("constraints apply to `string` (matching, len), `number` and `int` (bounds) and lists (len)");
                    self.report(d);
                }
                return base;
            }
        };
        let is_string = matches!(resolved_kind(&rebuild(Constraints::default())), 's');
        let is_number = matches!(resolved_kind(&rebuild(Constraints::default())), 'n');
        for con in constraints {
            match &con.kind {
                ast::ConstraintKind::Matching(re) => {
                    if !is_string {
                        self.bad_constraint(con.span, "only strings can be `matching` a pattern");
                        continue;
                    }
                    // The engine JSON Schema validation uses at run time.
                    if let Err(e) = fancy_regex::Regex::new(re) {
                        let d = Diagnostic::new(Code::InvalidConstraint, con.span, "this pattern is not a valid regular expression")
                            .label(first_line(&e.to_string()))
                            .help("patterns are regular expressions as JSON Schema's `pattern` takes them, such as /^[A-Z]{3}-[0-9]+$/");
                        self.report(d);
                        continue;
                    }
                    c.pattern = Some(re.clone());
                }
                ast::ConstraintKind::Len { min, max } => {
                    if is_number {
                        self.bad_constraint(
                            con.span,
                            "numbers have no length; use bounds such as `>= 0`",
                        );
                        continue;
                    }
                    if let (Some(a), Some(b)) = (min, max) {
                        if a > b {
                            self.bad_constraint(
                                con.span,
                                &format!("the minimum length {a} is above the maximum {b}"),
                            );
                            continue;
                        }
                    }
                    c.min_len = *min;
                    c.max_len = *max;
                }
                ast::ConstraintKind::Bound(op, n) => {
                    if !is_number {
                        self.bad_constraint(
                            con.span,
                            "only numbers have bounds; strings and lists take `len`",
                        );
                        continue;
                    }
                    match op {
                        ast::BoundOp::Ge => c.min = Some((*n, false)),
                        ast::BoundOp::Gt => c.min = Some((*n, true)),
                        ast::BoundOp::Le => c.max = Some((*n, false)),
                        ast::BoundOp::Lt => c.max = Some((*n, true)),
                    }
                    if let (Some((lo, _)), Some((hi, _))) = (c.min, c.max) {
                        if lo > hi {
                            self.bad_constraint(
                                con.span,
                                &format!("no number is both at least {lo} and at most {hi}"),
                            );
                        }
                    }
                }
            }
        }
        rebuild(c)
    }

    fn bad_constraint(&mut self, span: Span, message: &str) {
        let d = Diagnostic::new(Code::InvalidConstraint, span, message.to_string())
            .label("this constraint")
            .help("constraints: `matching /re/` and `len a..b` for strings, `len a..b` for lists, `>= n`, `> n`, `<= n`, `< n` for numbers");
        self.report(d);
    }

    fn provider(&mut self, id: ProviderId, decl: &ast::ProviderDecl) {
        let protocol = match decl.protocol.as_ref().map(|p| p.name.as_str()) {
            Some("openai") | None => Protocol::OpenAi,
            Some("anthropic") => Protocol::Anthropic,
            Some(other) => {
                let span = decl.protocol.as_ref().map_or(decl.span, |p| p.span);
                let label = match did_you_mean(other, ["openai", "anthropic"]) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "not a protocol flowc speaks".to_string(),
                };
                let d = Diagnostic::new(Code::InvalidDeclaration, span, format!("unknown protocol `{other}`"))
                    .label(label)
                    .help("the protocols are `openai` (chat completions, also local servers and gateways) and `anthropic` (messages)");
                self.report(d);
                Protocol::OpenAi
            }
        };
        let p = &mut self.program.providers[id.index()];
        p.protocol = protocol;
        if let Some(url) = &decl.base_url {
            p.base_url_env = url.env.as_ref().map(|e| e.name.clone());
            p.base_url = url.default.clone();
        }
        p.api_key_env = decl.api_key.as_ref().map(|k| k.name.clone());
        p.prices = decl
            .prices
            .iter()
            .map(|pr| Price {
                model: pr.model.clone(),
                input: pr.input,
                output: pr.output,
                context: pr.context,
            })
            .collect();
    }

    fn model(&mut self, m: usize, id: ModelId, decl: &ast::ModelDecl) {
        let provider = match self.lookup(m, &decl.provider.name) {
            Some(Symbol::Provider(p)) => Some(p),
            Some(other) => {
                self.wrong_kind(&decl.provider, other, "a provider", "models are made from a provider, as in `openai(\"gpt-4o-mini\")`; import providers with `use std.models.{openai}`");
                None
            }
            None => {
                self.undefined(m, &decl.provider, "provider", |s| {
                    matches!(s, Symbol::Provider(_))
                });
                None
            }
        };
        let mut temperature = None;
        let mut max_tokens = None;
        let mut fallback = None;
        let mut concurrency = None;
        let mut rpm = None;
        let mut context_window = None;
        let mut extra = Vec::new();
        for (key, value) in &decl.params {
            match key.name.as_str() {
                "temperature" => match value.kind {
                    ast::ExprKind::Number(n) if (0.0..=2.0).contains(&n) => temperature = Some(n),
                    _ => self.param_error(value.span, "temperature", "a number from 0 to 2"),
                },
                "max_tokens" => match value.kind {
                    ast::ExprKind::Number(n) if n >= 1.0 && n.fract() == 0.0 => {
                        max_tokens = Some(n as u64)
                    }
                    _ => self.param_error(value.span, "max_tokens", "a whole number of at least 1"),
                },
                "context_window" => match value.kind {
                    ast::ExprKind::Number(n) if n >= 1.0 && n.fract() == 0.0 => {
                        context_window = Some(n as u64)
                    }
                    _ => self.param_error(
                        value.span,
                        "context_window",
                        "a whole number of tokens of at least 1",
                    ),
                },
                "concurrency" | "rpm" => match value.kind {
                    ast::ExprKind::Number(n) if n >= 1.0 && n.fract() == 0.0 => {
                        if key.name == "rpm" {
                            rpm = Some(n as u64);
                        } else {
                            concurrency = Some(n as u64);
                        }
                    }
                    _ => self.param_error(value.span, &key.name, "a whole number of at least 1"),
                },
                "fallback" => match &value.kind {
                    ast::ExprKind::Name(n) => match self.lookup(m, &n.name) {
                        Some(Symbol::Model(f)) if f != id => fallback = Some(f),
                        Some(Symbol::Model(_)) => {
                            self.param_error(value.span, "fallback", "another model")
                        }
                        Some(other) => self.wrong_kind(
                            n,
                            other,
                            "a model",
                            "a fallback is another declared model",
                        ),
                        None => self.undefined(m, n, "model", |s| matches!(s, Symbol::Model(_))),
                    },
                    _ => self.param_error(value.span, "fallback", "the name of another model"),
                },
                _ => match const_json(value) {
                    Some(v) => extra.push((key.name.clone(), v)),
                    None => self.param_error(value.span, &key.name, "a constant value"),
                },
            }
        }
        let price = provider.and_then(|p| {
            let prices = &self.program.providers[p.index()].prices;
            prices
                .iter()
                .find(|pr| pr.model.as_deref() == Some(decl.model_id.as_str()))
                .or_else(|| prices.iter().find(|pr| pr.model.is_none()))
                .cloned()
        });
        if let Some(p) = provider {
            let family =
                ModelFamily::of(self.program.providers[p.index()].protocol, &decl.model_id);
            for (key, value) in &decl.params {
                if family.refused_params().contains(&key.name.as_str()) {
                    let d = Diagnostic::new(
                        Code::InvalidDeclaration,
                        key.span,
                        format!(
                            "`{}` is an OpenAI reasoning model, whose API refuses `{}`",
                            decl.model_id, key.name
                        ),
                    )
                    .label("refused by this model's API")
                    .with(value.span, "the request would fail with HTTP 400")
                    .help("remove the parameter; reasoning models choose their own sampling");
                    self.report(d);
                }
            }
        }
        let model = &mut self.program.models[id.index()];
        model.provider = provider.unwrap_or(ProviderId(u32::MAX));
        model.temperature = temperature;
        model.max_tokens = max_tokens;
        model.fallback = fallback;
        model.concurrency = concurrency;
        model.rpm = rpm;
        model.extra = extra;
        model.context_window = context_window.or(price.as_ref().and_then(|p| p.context));
        model.price = price;
    }

    fn param_error(&mut self, span: Span, key: &str, wanted: &str) {
        let d = Diagnostic::new(
            Code::TypeMismatch,
            span,
            format!("`{key}` must be {wanted}"),
        )
        .label(format!("expected {wanted}"))
        .help("model parameters are constants written in the model declaration");
        self.report(d);
    }

    fn tool(&mut self, m: usize, id: ToolId, decl: &ast::ToolDecl) {
        let params = self.params(m, &decl.params);
        let output = self.ty(m, &decl.output);
        let mut kind: Option<(ToolKind, Span)> = None;
        let mut headers = Vec::new();
        let mut effect = None;
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        let mut timeout = None;
        let mut retry = None;
        let mut idempotency = None;
        let mut limit = None;
        let mut request = HttpRequestClauses::default();
        let param_names: Vec<(String, Ty)> = params
            .iter()
            .map(|p| (p.name.clone(), p.ty.clone()))
            .collect();
        for clause in &decl.clauses {
            let mut set_kind = |this: &mut Self, k: ToolKind| {
                if let Some((_, prev)) = &kind {
                    let d = Diagnostic::new(
                        Code::InvalidDeclaration,
                        clause.span,
                        format!("tool `{}` says twice how it runs", decl.name.name),
                    )
                    .label("second implementation")
                    .with(*prev, "first implementation")
                    .help("a tool is exactly one of `http`, `exec` or `builtin`");
                    this.report(d);
                } else {
                    kind = Some((k, clause.span));
                }
            };
            match &clause.kind {
                ToolClauseKind::Http { method, url } => {
                    let url = expr::tool_template(self, url, &param_names);
                    set_kind(
                        self,
                        ToolKind::Http {
                            method: method.clone(),
                            url,
                            headers: Vec::new(),
                            query: Vec::new(),
                            body: HttpBody::None,
                            format: ResponseFormat::Json,
                            raw: Vec::new(),
                        },
                    );
                }
                ToolClauseKind::Exec(argv) => {
                    if argv.is_empty() {
                        let d = Diagnostic::new(
                            Code::InvalidDeclaration,
                            clause.span,
                            "`exec` needs a program to run",
                        )
                        .label("empty argument list")
                        .help(
                            "write the program and its arguments, as in exec [\"ocr\", \"--json\"]",
                        );
                        self.report(d);
                    }
                    let argv = argv
                        .iter()
                        .map(|a| expr::tool_template(self, a, &param_names))
                        .collect();
                    set_kind(self, ToolKind::Exec { argv });
                }
                ToolClauseKind::Builtin(name) => {
                    if crate::exec::Builtin::from_name(name).is_none() {
                        self.unknown_builtin(clause.span, name);
                    }
                    set_kind(self, ToolKind::Builtin { name: name.clone() })
                }
                ToolClauseKind::Header { name, value } => {
                    headers.push((name.clone(), expr::tool_template(self, value, &param_names)));
                }
                ToolClauseKind::Effect(e) => {
                    effect = Some((*e, clause.span));
                }
                ToolClauseKind::Reads(rs) => reads.extend(self.resources(m, rs)),
                ToolClauseKind::Writes(rs) => writes.extend(self.resources(m, rs)),
                ToolClauseKind::Timeout(q) => {
                    timeout = self.seconds(q);
                }
                ToolClauseKind::Retry(r) => {
                    retry = self.retry(r, false);
                }
                ToolClauseKind::Idempotency(t) => {
                    idempotency = Some(expr::tool_template(self, t, &param_names));
                }
                ToolClauseKind::Limit(q) => {
                    limit = self.count(q);
                }
                ToolClauseKind::Query(e) => {
                    if request.query.is_some() {
                        self.repeated(clause.span, "query");
                    }
                    let lowered = expr::tool_expr(self, e, &param_names);
                    let entries = match lowered.kind {
                        ExprKind::Object(entries) => entries,
                        _ => Vec::new(),
                    };
                    request.query = Some((entries, clause.span));
                }
                ToolClauseKind::Body { encoding, value } => {
                    if request.body.is_some() {
                        self.repeated(clause.span, "body");
                    }
                    let value = expr::tool_expr(self, value, &param_names);
                    request.body = Some((*encoding, value, clause.span));
                }
                ToolClauseKind::Format(f) => {
                    if request.format.is_some() {
                        self.repeated(clause.span, "format");
                    }
                    request.format = Some((*f, clause.span));
                }
                ToolClauseKind::Mcp { server, tool } => {
                    let id = match self.lookup(m, &server.name) {
                        Some(Symbol::Server(id)) => Some(id),
                        Some(other) => {
                            self.wrong_kind(
                                server,
                                other,
                                "an MCP server",
                                "declare it with `server NAME { command [...] }`",
                            );
                            None
                        }
                        None => {
                            self.undefined(m, server, "MCP server", |s| {
                                matches!(s, Symbol::Server(_))
                            });
                            None
                        }
                    };
                    if let Some(server) = id {
                        set_kind(
                            self,
                            ToolKind::Mcp {
                                server,
                                name: tool.clone().unwrap_or_else(|| decl.name.name.clone()),
                            },
                        );
                    }
                }
                ToolClauseKind::Raw(names) => {
                    for n in names {
                        match param_names.iter().position(|(p, _)| *p == n.name) {
                            Some(i) => request.raw.push(i),
                            None => {
                                let d = Diagnostic::new(
                                    Code::UndefinedName,
                                    n.span,
                                    format!("there is no parameter named `{}`", n.name),
                                )
                                .label("not a parameter of this tool")
                                .help("`raw` names parameters whose value goes into the URL as written");
                                self.report(d);
                            }
                        }
                    }
                    request.raw_span.get_or_insert(clause.span);
                }
            }
        }
        if !headers.is_empty() {
            match &mut kind {
                Some((ToolKind::Http { headers: h, .. }, _)) => *h = headers,
                _ => {
                    let d = Diagnostic::new(
                        Code::InvalidDeclaration,
                        decl.name.span,
                        "only `http` tools send headers",
                    )
                    .label("this tool has `header` clauses")
                    .help("remove the headers, or make the tool an `http` tool");
                    self.report(d);
                }
            }
        }
        self.http_request(decl, &output, &mut kind, request);
        if kind.is_none() {
            let d = Diagnostic::new(Code::InvalidDeclaration, decl.name.span, format!("tool `{}` does not say how it runs", decl.name.name))
                .label("no `http`, `exec` or `builtin` clause")
                .help("add one, such as `http GET \"{env.API}/items/{id}\"` or `exec [\"./script\", \"{id}\"]`");
            self.report(d);
        }
        let (effect, effect_span) = match effect {
            Some((e, s)) => (e, Some(s)),
            None => (
                if writes.is_empty() {
                    Effect::Read
                } else {
                    Effect::Write
                },
                None,
            ),
        };
        let tool = &mut self.program.tools[id.index()];
        tool.params = params;
        tool.output = output;
        tool.kind = kind.map(|(k, _)| k);
        tool.effect = effect;
        tool.effect_span = effect_span;
        tool.reads = reads;
        tool.writes = writes;
        tool.timeout_seconds = timeout;
        tool.retry = retry;
        tool.idempotency = idempotency;
        tool.limit_tokens = limit;
    }

    /// Puts an `http` tool's request clauses into its kind, or reports them
    /// on a tool of another kind; fills in the default body and format.
    fn http_request(
        &mut self,
        decl: &ast::ToolDecl,
        output: &Ty,
        kind: &mut Option<(ToolKind, Span)>,
        request: HttpRequestClauses,
    ) {
        let HttpRequestClauses {
            query: query_clause,
            body: body_clause,
            format: format_clause,
            raw: raw_params,
            raw_span,
        } = request;
        let Some((
            ToolKind::Http {
                method,
                url,
                headers,
                query,
                body,
                format,
                raw,
            },
            _,
        )) = kind
        else {
            let misplaced = [
                query_clause.as_ref().map(|(_, s)| (*s, "query")),
                body_clause.as_ref().map(|(_, _, s)| (*s, "body")),
                format_clause.map(|(_, s)| (s, "format")),
                raw_span.map(|s| (s, "raw")),
            ];
            if kind.is_some() {
                for (span, clause) in misplaced.into_iter().flatten() {
                    let d = Diagnostic::new(
                        Code::InvalidDeclaration,
                        span,
                        format!("only `http` tools have `{clause}`"),
                    )
                    .label(format!("`{clause}` on a tool that is not `http`"))
                    .help("remove the clause, or make the tool an `http` tool");
                    self.report(d);
                }
            }
            return;
        };
        *query = query_clause.map(|(q, _)| q).unwrap_or_default();
        for (name, value) in query.iter() {
            if let Some(shape) = self.textless(&value.ty, true) {
                let d = Diagnostic::new(
                    Code::InvalidDeclaration,
                    value.span,
                    format!(
                        "query parameter `{name}` is a {shape}, which has no text form in a URL"
                    ),
                )
                .label(format!("a {shape}"))
                .help("pass its fields as query parameters one by one, or send it in a `body`");
                self.report(d);
            }
        }
        if let Some((BodyEncoding::Form, value, _)) = &body_clause {
            self.form_body(value);
        }
        *raw = raw_params;
        *format = match format_clause {
            Some((f, span)) => {
                let output = self.program.types.resolve(output);
                if f == ResponseFormat::Text
                    && !matches!(output, Ty::String(_) | Ty::Json | Ty::Error)
                {
                    let d = Diagnostic::new(
                        Code::InvalidDeclaration,
                        span,
                        "`format text` reads the response as text, but the tool returns something else",
                    )
                    .label("the result would be a string")
                    .help("declare the result `string`, or read the response with `format json`");
                    self.report(d);
                }
                f
            }
            None => match self.program.types.resolve(output) {
                Ty::String(_) => ResponseFormat::Text,
                _ => ResponseFormat::Json,
            },
        };
        *body = match body_clause {
            Some((encoding, value, _)) => HttpBody::Value(encoding, Box::new(value)),
            None if matches!(method.as_str(), "POST" | "PUT" | "PATCH") => {
                // The arguments that say where the request goes are not
                // also sent in its body.
                let mut used = Vec::new();
                url.params(&mut used);
                headers.iter().for_each(|(_, t)| t.params(&mut used));
                query.iter().for_each(|(_, e)| e.params(&mut used));
                let n = decl.params.len();
                HttpBody::Args((0..n).filter(|i| !used.contains(i)).collect())
            }
            None => HttpBody::None,
        };
    }

    /// What kind of value has no text form in a query or form field (a
    /// record, or a list of records or lists); `None` when it has one.
    /// `list_ok`: a list of scalars repeats the name.
    fn textless(&self, ty: &Ty, list_ok: bool) -> Option<&'static str> {
        match self.program.types.resolve(ty) {
            Ty::Record(..) | Ty::Schema(_) => Some("record"),
            Ty::Optional(inner) => self.textless(inner, list_ok),
            Ty::List(item, _) if list_ok => self
                .textless(item, false)
                .map(|_| "list of records or lists"),
            Ty::List(..) => Some("list"),
            _ => None,
        }
    }

    /// A `body form` value is a record whose fields have a text form.
    fn form_body(&mut self, value: &Expr) {
        let fields = match self.program.types.resolve(&value.ty) {
            Ty::Record(fields, _) => fields.clone(),
            Ty::Error | Ty::Json => return,
            _ => {
                let d = Diagnostic::new(
                    Code::InvalidDeclaration,
                    value.span,
                    "a `body form` is a record of fields",
                )
                .label("not a record")
                .help("write the fields, as in body form { text: note }, or send a `body json`");
                self.report(d);
                return;
            }
        };
        for field in fields {
            if let Some(shape) = self.textless(&field.ty, true) {
                let d = Diagnostic::new(
                    Code::InvalidDeclaration,
                    value.span,
                    format!(
                        "form field `{}` is a {shape}, which has no form encoding",
                        field.name
                    ),
                )
                .label(format!("`{}` is a {shape}", field.name))
                .help("send nested data as a `body json`");
                self.report(d);
            }
        }
    }

    /// An MCP server: its transport, environment, headers and lock entry.
    fn server(
        &mut self,
        id: ServerId,
        decl: &ast::ServerDecl,
        lock: Option<Result<crate::mcp::lock::LockFile, String>>,
    ) {
        let mut transport = McpTransport::Missing;
        let mut env = Vec::new();
        let mut headers = Vec::new();
        let mut timeout = None;
        for clause in &decl.clauses {
            match &clause.kind {
                ast::ServerClauseKind::Command(argv) => {
                    if !matches!(transport, McpTransport::Missing) {
                        self.repeated(clause.span, "command` or `url");
                    }
                    if argv.is_empty() {
                        let d = Diagnostic::new(
                            Code::InvalidDeclaration,
                            clause.span,
                            "`command` needs a program to run",
                        )
                        .label("empty argument list")
                        .help("write the program and its arguments, as in command [\"npx\", \"--no-install\", \"my-server\"]");
                        self.report(d);
                    }
                    let argv = argv
                        .iter()
                        .map(|a| expr::tool_template(self, a, &[]))
                        .collect();
                    transport = McpTransport::Stdio { argv };
                }
                ast::ServerClauseKind::Url(u) => {
                    if !matches!(transport, McpTransport::Missing) {
                        self.repeated(clause.span, "command` or `url");
                    }
                    // rmcp's Streamable HTTP client would bring a second
                    // HTTP stack; until then a `url` server is refused here,
                    // where the author sees it, not when a run reaches it.
                    let d = Diagnostic::new(
                        Code::InvalidDeclaration,
                        clause.span,
                        "Streamable HTTP MCP servers are not supported by this build",
                    )
                    .label("a `url` server")
                    .help("start the server as a program with `command [\"prog\", …]` (most servers also speak stdio), or bridge it with an `exec` tool");
                    self.report(d);
                    transport = McpTransport::Http {
                        url: expr::tool_template(self, u, &[]),
                    };
                }
                ast::ServerClauseKind::Env { name, value } => {
                    env.push((name.clone(), expr::tool_template(self, value, &[])));
                }
                ast::ServerClauseKind::Header { name, value } => {
                    headers.push((name.clone(), expr::tool_template(self, value, &[])));
                }
                ast::ServerClauseKind::Timeout(q) => {
                    if timeout.is_some() {
                        self.repeated(clause.span, "timeout");
                    }
                    timeout = self.seconds(q);
                }
            }
        }
        if matches!(transport, McpTransport::Missing) {
            let d = Diagnostic::new(
                Code::InvalidDeclaration,
                decl.name.span,
                format!("server `{}` does not say how to reach it", decl.name.name),
            )
            .label("no `command` or `url` clause")
            .help("add `command [\"program\", \"arg\"]` (stdio) or `url \"https://…/mcp\"` (Streamable HTTP)");
            self.report(d);
        }
        let lock = match lock {
            None => McpLock::Missing,
            Some(Err(e)) => McpLock::Invalid(e),
            Some(Ok(file)) => match file.servers.get(&decl.name.name) {
                Some(server) => McpLock::Locked(server.clone()),
                None => McpLock::Missing,
            },
        };
        let server = &mut self.program.servers[id.index()];
        server.transport = transport;
        server.env = env;
        server.headers = headers;
        server.timeout_seconds = timeout;
        server.lock = lock;
    }

    /// A `builtin "…"` the runtime does not implement.
    fn unknown_builtin(&mut self, span: Span, name: &str) {
        let names = crate::exec::Builtin::ALL.map(|b| b.as_str());
        let label = match did_you_mean(name, names) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "not a builtin flowc has".to_string(),
        };
        let d = Diagnostic::new(
            Code::InvalidDeclaration,
            span,
            format!("unknown builtin `{name}`"),
        )
        .label(label)
        .help(format!(
            "the builtins are {}",
            names.map(|n| format!("`{n}`")).join(", ")
        ));
        self.report(d);
    }

    pub(crate) fn repeated(&mut self, span: Span, clause: &str) {
        let d = Diagnostic::new(
            Code::InvalidDeclaration,
            span,
            format!("`{clause}` is given twice"),
        )
        .label("repeated clause")
        .help(format!("keep one `{clause}`"));
        self.report(d);
    }

    fn resources(&mut self, m: usize, names: &[ast::Ident]) -> Vec<ResourceId> {
        let mut out = Vec::new();
        for n in names {
            match self.lookup(m, &n.name) {
                Some(Symbol::Resource(r)) => out.push(r),
                Some(other) => self.wrong_kind(
                    n,
                    other,
                    "a resource",
                    "declare what a tool touches with `resource name`",
                ),
                None => self.undefined(m, n, "resource", |s| matches!(s, Symbol::Resource(_))),
            }
        }
        out
    }

    pub(crate) fn seconds(&mut self, q: &ast::Quantity) -> Option<f64> {
        if q.unit != Unit::Seconds {
            self.quantity_error(q.span, "a duration such as `30s`, `5m` or `2h`");
            return None;
        }
        if q.value <= 0.0 {
            self.quantity_error(q.span, "a duration above zero");
            return None;
        }
        Some(q.value)
    }

    pub(crate) fn count(&mut self, q: &ast::Quantity) -> Option<u64> {
        if q.unit != Unit::Count || q.value.fract() != 0.0 {
            self.quantity_error(q.span, "a whole number such as `800` or `100k`");
            return None;
        }
        Some(q.value as u64)
    }

    fn quantity_error(&mut self, span: Span, wanted: &str) {
        let d = Diagnostic::new(Code::TypeMismatch, span, format!("expected {wanted}"))
            .label(format!("expected {wanted}"))
            .help(
                "durations end in ms, s, m, h or d; counts may end in k or M; money starts with $",
            );
        self.report(d);
    }

    pub(crate) fn retry(&mut self, r: &ast::Retry, llm: bool) -> Option<RetryPolicy> {
        let classes = [
            "rate_limit",
            "timeout",
            "server_error",
            "connection",
            "invalid",
        ];
        let mut on = Vec::new();
        for c in &r.on {
            if !classes.contains(&c.name.as_str()) {
                continue;
            }
            on.push(c.name.clone());
        }
        if on.is_empty() {
            on = if llm {
                classes.iter().map(|s| s.to_string()).collect()
            } else {
                classes[..4].iter().map(|s| s.to_string()).collect()
            };
        }
        let (base, factor) = match &r.backoff {
            Some((q, f)) => (self.seconds(q).unwrap_or(1.0), f.unwrap_or(2.0)),
            None => (1.0, 2.0),
        };
        if factor < 1.0 {
            if let Some((q, _)) = &r.backoff {
                let d = Diagnostic::new(
                    Code::InvalidDeclaration,
                    q.span,
                    "a backoff factor below 1 would retry faster each time",
                )
                .label("factor below 1")
                .help("write `backoff 1s * 2` to double the wait after each attempt");
                self.report(d);
            }
        }
        let cap = r.cap.as_ref().and_then(|q| self.seconds(q));
        Some(RetryPolicy {
            retries: r.attempts,
            on,
            base_seconds: base,
            factor,
            cap_seconds: cap,
            jitter: r.jitter,
            span: r.span,
        })
    }

    fn agent(&mut self, m: usize, id: AgentId, decl: &ast::AgentDecl) {
        let params = self.params(m, &decl.params);
        let output = self.ty(m, &decl.output);
        let mut model = None;
        let mut tools: Vec<(ToolId, Span)> = Vec::new();
        let mut may = None;
        let mut max_steps = None;
        let mut max_repeat = None;
        let mut instructions = None;
        let mut budget = None;
        let mut timeout = None;
        let mut retry = None;
        for clause in &decl.clauses {
            match &clause.kind {
                AgentClauseKind::Model(name) => match self.lookup(m, &name.name) {
                    Some(Symbol::Model(md)) => model = Some(md),
                    Some(other) => self.wrong_kind(
                        name,
                        other,
                        "a model",
                        "an agent's `model` names a declared model",
                    ),
                    None => self.undefined(m, name, "model", |s| matches!(s, Symbol::Model(_))),
                },
                AgentClauseKind::Tools(names) => {
                    for name in names {
                        match self.lookup(m, &name.name) {
                            Some(Symbol::Tool(t)) => {
                                if tools.iter().any(|(u, _)| *u == t) {
                                    let d = Diagnostic::new(
                                        Code::DuplicateName,
                                        name.span,
                                        format!("`{}` is listed twice", name.name),
                                    )
                                    .label("listed again")
                                    .help("list each tool once");
                                    self.report(d);
                                } else {
                                    tools.push((t, name.span));
                                }
                            }
                            Some(other) => self.wrong_kind(
                                name,
                                other,
                                "a tool",
                                "an agent's `tools` lists declared tools",
                            ),
                            None => {
                                let candidates: Vec<&str> = self.scopes[m]
                                    .iter()
                                    .filter(|(_, (s, _))| matches!(s, Symbol::Tool(_)))
                                    .map(|(n, _)| n.as_str())
                                    .collect();
                                let mut d = Diagnostic::new(
                                    Code::UndeclaredAgentTool,
                                    name.span,
                                    format!(
                                        "agent `{}` lists `{}`, which is not a declared tool",
                                        decl.name.name, name.name
                                    ),
                                )
                                .label("no tool by this name");
                                d = match did_you_mean(&name.name, candidates) {
                                    Some(s) => d.help(format!("did you mean `{s}`?")),
                                    None => d.help("an agent can only call tools declared with `tool`, so its world is known before it runs"),
                                };
                                self.report(d);
                            }
                        }
                    }
                }
                AgentClauseKind::May(e) => may = Some(*e),
                AgentClauseKind::MaxSteps(n) => max_steps = Some(*n),
                AgentClauseKind::MaxRepeat(n) => max_repeat = Some(*n),
                AgentClauseKind::Instructions(t) => {
                    let names: Vec<(String, Ty)> = params
                        .iter()
                        .map(|p| (p.name.clone(), p.ty.clone()))
                        .collect();
                    instructions = Some(expr::param_template(self, t, &names));
                }
                AgentClauseKind::Budget(b) => budget = Some(self.budget(b)),
                AgentClauseKind::Timeout(q) => timeout = self.seconds(q),
                AgentClauseKind::Retry(r) => retry = self.retry(r, false),
            }
        }
        if model.is_none()
            && !decl
                .clauses
                .iter()
                .any(|c| matches!(c.kind, AgentClauseKind::Model(_)))
        {
            let d = Diagnostic::new(
                Code::InvalidDeclaration,
                decl.name.span,
                format!("agent `{}` has no model", decl.name.name),
            )
            .label("no `model` clause")
            .help("add `model name` naming a declared model");
            self.report(d);
        }
        if matches!(max_steps, Some(0)) {
            let d = Diagnostic::new(
                Code::InvalidDeclaration,
                decl.name.span,
                "`max_steps 0` lets the agent do nothing",
            )
            .label("agent declared here")
            .help("give the agent at least one step");
            self.report(d);
        }
        let agent = &mut self.program.agents[id.index()];
        agent.params = params;
        agent.output = output;
        agent.model = model;
        agent.tools = tools;
        agent.may = may.unwrap_or(Effect::Read);
        agent.max_steps = max_steps;
        agent.max_repeat = max_repeat;
        agent.instructions = instructions;
        agent.budget = budget;
        agent.timeout_seconds = timeout;
        agent.retry = retry;
    }

    pub(crate) fn budget(&mut self, b: &ast::Budget) -> Budget {
        let mut out = Budget {
            span: b.span,
            ..Budget::default()
        };
        for (key, q) in &b.entries {
            let wanted = match key.name.as_str() {
                "tokens" => {
                    out.tokens = self.count(q);
                    continue;
                }
                "steps" => {
                    out.steps = self.count(q);
                    continue;
                }
                "tool_calls" => {
                    out.tool_calls = self.count(q);
                    continue;
                }
                "wall" => {
                    out.wall_seconds = self.seconds(q);
                    continue;
                }
                "cost" => {
                    if q.unit == Unit::Dollars {
                        out.cost = Some(q.value);
                    } else {
                        self.quantity_error(q.span, "an amount such as `$1.00`");
                    }
                    continue;
                }
                other => other,
            };
            let keys = ["tokens", "cost", "steps", "tool_calls", "wall"];
            let mut d = Diagnostic::new(
                Code::InvalidDeclaration,
                key.span,
                format!("`{wanted}` is not a budget"),
            )
            .label("unknown budget");
            d = match did_you_mean(wanted, keys) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help("budgets are tokens, cost, steps, tool_calls and wall"),
            };
            self.report(d);
        }
        out
    }

    pub(crate) fn module_file(&self, m: usize) -> crate::source::FileId {
        self.ws.modules[m].file
    }
}

fn resolved_kind(ty: &Ty) -> char {
    match ty {
        Ty::String(_) => 's',
        Ty::Number(_) | Ty::Int(_) => 'n',
        _ => 'l',
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| l.trim_start().starts_with("error:"))
        .map_or_else(
            || s.lines().last().unwrap_or("").trim().to_string(),
            |l| l.trim().trim_start_matches("error:").trim().to_string(),
        )
}

pub(crate) fn lit(l: &ast::Literal) -> Lit {
    match l {
        ast::Literal::Str(s) => Lit::Str(s.clone()),
        ast::Literal::Number(n) => Lit::Number(*n),
        ast::Literal::Bool(b) => Lit::Bool(*b),
    }
}

/// A constant expression as JSON (model parameters, test values).
pub(crate) fn const_json(e: &ast::Expr) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match &e.kind {
        ast::ExprKind::Str(t) => Value::String(t.as_plain()?),
        ast::ExprKind::Number(n) => serde_json::Number::from_f64(*n).map(Value::Number)?,
        ast::ExprKind::Bool(b) => Value::Bool(*b),
        ast::ExprKind::Null => Value::Null,
        ast::ExprKind::List(items) => {
            Value::Array(items.iter().map(const_json).collect::<Option<_>>()?)
        }
        ast::ExprKind::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Some((k.name.clone(), const_json(v)?)))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// An `http` tool's request clauses as written, before they are checked
/// against its kind.
#[derive(Default)]
struct HttpRequestClauses {
    query: Option<(Vec<(String, Expr)>, Span)>,
    body: Option<(BodyEncoding, Expr, Span)>,
    format: Option<(ResponseFormat, Span)>,
    raw: Vec<usize>,
    raw_span: Option<Span>,
}
