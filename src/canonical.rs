//! The canonical form of a declaration: what it means, printed as text,
//! without positions, comments, blank lines, layout or literal spellings
//! (`100k` and `100000`, `$1.00` and `$1`, `30s` and `30000ms` print the
//! same).
//!
//! Two users depend on it: `flowc fmt` proves it changed only layout by
//! comparing the canonical form of a file before and after, and a run's
//! fingerprint (`run/fingerprint.rs`) hashes the canonical form of each
//! declaration, so a comment or a reformat never blocks `flowc resume` while
//! any change in meaning still does.
//!
//! The form is a parenthesised prefix notation, one node per pair of
//! parentheses, with strings in JSON quoting. Every field of every syntax
//! node is printed (the `match`es below name every variant, so a new field
//! or variant does not compile until it is printed). Recursion follows the
//! tree, whose depth the parser bounds.

use std::fmt::Write as _;

use crate::ast::*;

/// The canonical form of one top-level item.
pub fn item(item: &Item) -> String {
    let mut p = Canon::default();
    p.item(item);
    p.out
}

/// The canonical form of a string template.
pub fn template(t: &Template) -> String {
    let mut p = Canon::default();
    p.template(t);
    p.out
}

/// The canonical form of a whole module: its items, one per line, in order.
pub fn module(module: &Module) -> String {
    let mut p = Canon::default();
    for i in &module.items {
        p.item(i);
        p.out.push('\n');
    }
    p.out
}

#[derive(Default)]
struct Canon {
    out: String,
}

impl Canon {
    fn open(&mut self, head: &str) {
        self.out.push('(');
        self.out.push_str(head);
    }

    fn close(&mut self) {
        self.out.push(')');
    }

    fn word(&mut self, w: &str) {
        self.out.push(' ');
        self.out.push_str(w);
    }

    fn string(&mut self, s: &str) {
        self.out.push(' ');
        // JSON quoting: unambiguous for every string, and stable.
        self.out
            .push_str(&serde_json::Value::String(s.to_string()).to_string());
    }

    fn number(&mut self, n: f64) {
        // `{:?}` of an f64 is the shortest text that reads back as the same
        // number, so equal values print equally.
        let _ = write!(self.out, " {n:?}");
    }

    fn ident(&mut self, i: &Ident) {
        self.word(&i.name);
    }

    fn idents(&mut self, head: &str, names: &[Ident]) {
        self.out.push(' ');
        self.open(head);
        for n in names {
            self.ident(n);
        }
        self.close();
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Use(u) => {
                self.open("use");
                match &u.path {
                    ModulePath::Std(parts) => self.idents("std", parts),
                    ModulePath::File(f) => self.string(f),
                }
                self.idents("names", &u.names);
                self.close();
            }
            Item::Type(t) => {
                self.open("type");
                self.ident(&t.name);
                self.ty(&t.ty);
                self.close();
            }
            Item::Model(m) => {
                self.open("model");
                self.ident(&m.name);
                self.ident(&m.provider);
                self.string(&m.model_id);
                self.entries(&m.params);
                self.close();
            }
            Item::Resource(r) => {
                self.open("resource");
                self.ident(r);
                self.close();
            }
            Item::Server(d) => {
                self.open("server");
                self.ident(&d.name);
                for c in &d.clauses {
                    match &c.kind {
                        ServerClauseKind::Command(argv) => self.clause("command", |p| {
                            for a in argv {
                                p.template(a);
                            }
                        }),
                        ServerClauseKind::Url(u) => self.clause("url", |p| p.template(u)),
                        ServerClauseKind::Header { name, value } => self.clause("header", |p| {
                            p.string(name);
                            p.template(value);
                        }),
                        ServerClauseKind::Env { name, value } => self.clause("env", |p| {
                            p.string(name);
                            p.template(value);
                        }),
                        ServerClauseKind::Timeout(q) => self.clause("timeout", |p| p.quantity(q)),
                    }
                }
                self.close();
            }
            Item::Provider(p) => self.provider(p),
            Item::Tool(t) => {
                self.open("tool");
                self.ident(&t.name);
                self.params(&t.params);
                self.ty(&t.output);
                for c in &t.clauses {
                    self.tool_clause(&c.kind);
                }
                self.close();
            }
            Item::Agent(a) => {
                self.open("agent");
                self.ident(&a.name);
                self.params(&a.params);
                self.ty(&a.output);
                for c in &a.clauses {
                    self.agent_clause(&c.kind);
                }
                self.close();
            }
            Item::Flow(f) => {
                self.open("flow");
                self.ident(&f.name);
                self.params(&f.params);
                self.ty(&f.output);
                for s in &f.body {
                    self.stmt(s);
                }
                self.close();
            }
            Item::Test(t) => {
                self.open("test");
                self.string(&t.name);
                for s in &t.stmts {
                    self.test_stmt(s);
                }
                self.close();
            }
            Item::Eval(e) => {
                self.open("eval");
                self.string(&e.name);
                for c in &e.clauses {
                    self.eval_clause(&c.kind);
                }
                self.close();
            }
        }
    }

    fn provider(&mut self, p: &ProviderDecl) {
        self.open("provider");
        self.ident(&p.name);
        if let Some(protocol) = &p.protocol {
            self.out.push(' ');
            self.open("protocol");
            self.ident(protocol);
            self.close();
        }
        if let Some(url) = &p.base_url {
            self.out.push(' ');
            self.open("base_url");
            if let Some(env) = &url.env {
                self.out.push(' ');
                self.open("env");
                self.ident(env);
                self.close();
            }
            if let Some(default) = &url.default {
                self.string(default);
            }
            self.close();
        }
        if let Some(key) = &p.api_key {
            self.out.push(' ');
            self.open("api_key");
            self.ident(key);
            self.close();
        }
        for price in &p.prices {
            self.out.push(' ');
            self.open("price");
            match &price.model {
                Some(m) => self.string(m),
                None => self.word("*"),
            }
            self.number(price.input);
            self.number(price.output);
            self.close();
        }
        self.close();
    }

    fn params(&mut self, params: &[Param]) {
        self.out.push(' ');
        self.open("params");
        for p in params {
            self.out.push(' ');
            self.open(if p.optional { "param?" } else { "param" });
            self.ident(&p.name);
            self.ty(&p.ty);
            self.close();
        }
        self.close();
    }

    fn ty(&mut self, t: &TypeExpr) {
        self.out.push(' ');
        match &t.kind {
            TypeExprKind::Union(members) => {
                self.open("union");
                for m in members {
                    self.ty(m);
                }
            }
            TypeExprKind::Optional(inner) => {
                self.open("optional");
                self.ty(inner);
            }
            TypeExprKind::Constrained(inner, constraints) => {
                self.open("constrained");
                self.ty(inner);
                for c in constraints {
                    self.out.push(' ');
                    match &c.kind {
                        ConstraintKind::Matching(re) => {
                            self.open("matching");
                            self.string(re);
                        }
                        ConstraintKind::Len { min, max } => {
                            self.open("len");
                            for bound in [min, max] {
                                match bound {
                                    Some(n) => self.word(&n.to_string()),
                                    None => self.word("_"),
                                }
                            }
                        }
                        ConstraintKind::Bound(op, n) => {
                            self.open(match op {
                                BoundOp::Ge => ">=",
                                BoundOp::Gt => ">",
                                BoundOp::Le => "<=",
                                BoundOp::Lt => "<",
                            });
                            self.number(*n);
                        }
                    }
                    self.close();
                }
            }
            TypeExprKind::List(inner) => {
                self.open("list");
                self.ty(inner);
            }
            TypeExprKind::Record(fields, openness) => {
                self.open(match openness {
                    crate::types::Openness::Open => "record",
                    crate::types::Openness::Exact => "exact_record",
                });
                for f in fields {
                    self.out.push(' ');
                    self.open(if f.optional { "field?" } else { "field" });
                    self.ident(&f.name);
                    self.ty(&f.ty);
                    self.close();
                }
            }
            TypeExprKind::Schema(path) => {
                self.open("schema");
                self.string(path);
            }
            TypeExprKind::Literal(l) => {
                self.open("literal");
                self.literal(l);
            }
            TypeExprKind::Named(n) => {
                self.open("named");
                self.ident(n);
            }
        }
        self.close();
    }

    fn literal(&mut self, l: &Literal) {
        match l {
            Literal::Str(s) => self.string(s),
            Literal::Number(n) => self.number(*n),
            Literal::Bool(b) => self.word(if *b { "true" } else { "false" }),
        }
    }

    fn quantity(&mut self, q: &Quantity) {
        self.number(q.value);
        self.word(match q.unit {
            Unit::Count => "count",
            Unit::Seconds => "seconds",
            Unit::Dollars => "dollars",
        });
    }

    fn clause(&mut self, head: &str, f: impl FnOnce(&mut Self)) {
        self.out.push(' ');
        self.open(head);
        f(self);
        self.close();
    }

    fn tool_clause(&mut self, c: &ToolClauseKind) {
        match c {
            ToolClauseKind::Http { method, url } => self.clause("http", |p| {
                p.word(method);
                p.template(url);
            }),
            ToolClauseKind::Exec(argv) => self.clause("exec", |p| {
                for a in argv {
                    p.template(a);
                }
            }),
            ToolClauseKind::Builtin(name) => self.clause("builtin", |p| p.string(name)),
            ToolClauseKind::Header { name, value } => self.clause("header", |p| {
                p.string(name);
                p.template(value);
            }),
            ToolClauseKind::Effect(e) => self.clause("effect", |p| p.word(e.as_str())),
            ToolClauseKind::Reads(rs) => self.idents("reads", rs),
            ToolClauseKind::Writes(ws) => self.idents("writes", ws),
            ToolClauseKind::Timeout(q) => self.clause("timeout", |p| p.quantity(q)),
            ToolClauseKind::Retry(r) => self.retry(r),
            ToolClauseKind::Idempotency(t) => self.clause("idempotency", |p| p.template(t)),
            ToolClauseKind::Limit(q) => self.clause("limit", |p| p.quantity(q)),
            ToolClauseKind::Query(e) => self.clause("query", |p| p.expr(e)),
            ToolClauseKind::Body { encoding, value } => self.clause("body", |p| {
                p.word(encoding.as_str());
                p.expr(value);
            }),
            ToolClauseKind::Format(f) => self.clause("format", |p| p.word(f.as_str())),
            ToolClauseKind::Raw(names) => self.idents("raw", names),
            ToolClauseKind::Mcp { server, tool } => self.clause("mcp", |p| {
                p.ident(server);
                if let Some(t) = tool {
                    p.string(t);
                }
            }),
        }
    }

    fn retry(&mut self, r: &Retry) {
        self.clause("retry", |p| {
            p.word(&r.attempts.to_string());
            p.idents("on", &r.on);
            if let Some((base, factor)) = &r.backoff {
                p.clause("backoff", |p| {
                    p.quantity(base);
                    if let Some(f) = factor {
                        p.number(*f);
                    }
                });
            }
            if let Some(cap) = &r.cap {
                p.clause("cap", |p| p.quantity(cap));
            }
            if r.jitter {
                p.word("jitter");
            }
        });
    }

    fn agent_clause(&mut self, c: &AgentClauseKind) {
        match c {
            AgentClauseKind::Model(m) => self.clause("model", |p| p.ident(m)),
            AgentClauseKind::Tools(ts) => self.idents("tools", ts),
            AgentClauseKind::May(e) => self.clause("may", |p| p.word(e.as_str())),
            AgentClauseKind::MaxSteps(n) => self.clause("max_steps", |p| p.word(&n.to_string())),
            AgentClauseKind::MaxRepeat(n) => self.clause("max_repeat", |p| p.word(&n.to_string())),
            AgentClauseKind::Instructions(t) => self.clause("instructions", |p| p.template(t)),
            AgentClauseKind::Budget(b) => self.budget(b),
            AgentClauseKind::Timeout(q) => self.clause("timeout", |p| p.quantity(q)),
            AgentClauseKind::Retry(r) => self.retry(r),
        }
    }

    fn budget(&mut self, b: &Budget) {
        self.clause("budget", |p| {
            for (key, q) in &b.entries {
                p.clause(&key.name, |p| p.quantity(q));
            }
        });
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Budget(b) => self.budget(b),
            Stmt::Let(l) => self.clause("let", |p| {
                p.ident(&l.name);
                p.step(&l.step);
                if !l.after.is_empty() {
                    p.idents("after", &l.after);
                }
                if let Some(f) = &l.fallback {
                    p.clause("fallback", |p| p.step(f));
                }
            }),
            Stmt::Check(c) => self.clause("check", |p| {
                p.ident(&c.name);
                for (cond, message) in &c.requires {
                    p.clause("require", |p| {
                        p.expr(cond);
                        p.template(message);
                    });
                }
            }),
            Stmt::Return(e, _) => self.clause("return", |p| p.expr(e)),
        }
    }

    fn step(&mut self, s: &Step) {
        match &s.kind {
            StepKind::Call(c) => self.call(c),
            StepKind::Llm(l) => self.clause("llm", |p| {
                p.ident(&l.model);
                p.ty(&l.output);
                for c in &l.clauses {
                    match &c.kind {
                        LlmClauseKind::Prompt(t) => p.clause("prompt", |p| p.template(t)),
                        LlmClauseKind::System(t) => p.clause("system", |p| p.template(t)),
                        LlmClauseKind::Retry(r) => p.retry(r),
                        LlmClauseKind::Timeout(q) => p.clause("timeout", |p| p.quantity(q)),
                        LlmClauseKind::MaxTokens(q) => p.clause("max_tokens", |p| p.quantity(q)),
                        LlmClauseKind::Budget(b) => p.budget(b),
                    }
                }
            }),
            StepKind::Approve(a) => self.clause("approve", |p| {
                p.ident(&a.gate);
                for e in &a.show {
                    p.clause("show", |p| p.expr(e));
                }
                if let Some(q) = &a.timeout {
                    p.clause("timeout", |p| p.quantity(q));
                }
                if let Some((d, _)) = &a.on_timeout {
                    p.clause("on_timeout", |p| match d {
                        OnTimeout::Decide(Decision::Approve) => p.word("approve"),
                        OnTimeout::Decide(Decision::Reject) => p.word("reject"),
                        OnTimeout::Escalate(e) => p.clause("escalate", |p| {
                            if let Some(n) = &e.notify {
                                p.notify(n);
                            }
                            if let Some(q) = &e.timeout {
                                p.clause("timeout", |p| p.quantity(q));
                            }
                        }),
                    });
                }
                if let Some(policy) = &a.policy {
                    p.clause("auto_approve_when", |p| p.expr(&policy.when));
                }
                if let Some(s) = &a.sample {
                    p.clause("sample", |p| {
                        if let Some((v, _)) = s.percent {
                            p.clause("percent", |p| p.number(v));
                        }
                        if let Some((n, _)) = s.per_day {
                            p.clause("per_day", |p| p.number(n as f64));
                        }
                    });
                }
                if let Some(n) = &a.notify {
                    p.notify(n);
                }
            }),
            StepKind::For(f) => self.clause("for", |p| {
                p.ident(&f.var);
                p.expr(&f.iterable);
                if let Some((n, _)) = &f.parallel {
                    p.clause("parallel", |p| p.word(&n.to_string()));
                }
                if let Some((n, _)) = &f.tolerate {
                    p.clause("tolerate", |p| p.word(&n.to_string()));
                }
                p.block(&f.body);
            }),
            StepKind::If(i) => self.if_step(i),
            StepKind::Match(m) => self.clause("match", |p| {
                p.expr(&m.scrutinee);
                for arm in &m.arms {
                    p.clause("arm", |p| {
                        match &arm.pattern {
                            Some(l) => p.literal(l),
                            None => p.word("_"),
                        }
                        p.block(&arm.body);
                    });
                }
            }),
            StepKind::Expr(e) => self.expr(e),
        }
    }

    fn notify(&mut self, n: &Notify) {
        self.clause("notify", |p| {
            p.word(n.kind.as_str());
            match &n.target {
                NotifyTarget::Url(u) => p.string(u),
                NotifyTarget::Env(e) => p.clause("env", |p| p.ident(e)),
            }
        });
    }

    fn if_step(&mut self, i: &IfStep) {
        self.clause("if", |p| {
            p.expr(&i.condition);
            p.block(&i.then);
            if let Some(otherwise) = &i.otherwise {
                p.block(otherwise);
            }
        });
    }

    fn block(&mut self, b: &Block) {
        self.clause("block", |p| {
            for s in &b.stmts {
                p.stmt(s);
            }
            p.step(&b.result);
        });
    }

    fn call(&mut self, c: &Call) {
        self.clause("call", |p| {
            p.ident(&c.callee);
            p.entries(&c.args);
        });
    }

    fn entries(&mut self, entries: &[(Ident, Expr)]) {
        for (k, v) in entries {
            self.clause(&format!("{}:", k.name), |p| p.expr(v));
        }
    }

    fn template(&mut self, t: &Template) {
        match t.as_plain() {
            Some(s) => self.string(&s),
            None => self.clause("template", |p| {
                for part in &t.parts {
                    match part {
                        TemplatePart::Text(s) => p.string(s),
                        TemplatePart::Expr(e) => p.expr(e),
                    }
                }
            }),
        }
    }

    fn expr(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Str(t) => self.template(t),
            ExprKind::Number(n) => self.number(*n),
            ExprKind::Bool(b) => self.word(if *b { "true" } else { "false" }),
            ExprKind::Null => self.word("null"),
            ExprKind::Object(entries) => self.clause("object", |p| p.entries(entries)),
            ExprKind::List(items) => self.clause("list", |p| {
                for i in items {
                    p.expr(i);
                }
            }),
            ExprKind::Env(n) => self.clause("env", |p| p.ident(n)),
            ExprKind::Name(n) => self.ident(n),
            ExprKind::Member(base, field) => self.clause(".", |p| {
                p.expr(base);
                p.ident(field);
            }),
            ExprKind::Index(base, index) => self.clause("[]", |p| {
                p.expr(base);
                p.expr(index);
            }),
            ExprKind::Not(x) => self.clause("not", |p| p.expr(x)),
            ExprKind::And(a, b) => self.clause("and", |p| {
                p.expr(a);
                p.expr(b);
            }),
            ExprKind::Or(a, b) => self.clause("or", |p| {
                p.expr(a);
                p.expr(b);
            }),
            ExprKind::Compare(a, op, b) => self.clause(op.as_str(), |p| {
                p.expr(a);
                p.expr(b);
            }),
        }
    }

    fn eval_clause(&mut self, c: &EvalClauseKind) {
        match c {
            EvalClauseKind::Run { flow, expecting } => self.clause("run", |p| {
                p.ident(flow);
                if let Some(t) = expecting {
                    p.clause("expecting", |p| p.ty(t));
                }
            }),
            EvalClauseKind::Dataset { path, .. } => self.clause("dataset", |p| p.string(path)),
            EvalClauseKind::Row { input, expecting } => self.clause("row", |p| {
                p.expr(input);
                if let Some(e) = expecting {
                    p.clause("expecting", |p| p.expr(e));
                }
            }),
            EvalClauseKind::Score {
                name,
                weight,
                scorer,
            } => self.clause("score", |p| {
                p.ident(name);
                if let Some((w, _)) = weight {
                    p.clause("weight", |p| p.number(*w));
                }
                p.step(scorer);
            }),
            EvalClauseKind::Threshold(t) => self.clause("threshold", |p| p.number(*t)),
            EvalClauseKind::Concurrency(n) => {
                self.clause("concurrency", |p| p.word(&n.to_string()))
            }
            EvalClauseKind::Budget(b) => self.budget(b),
        }
    }

    fn test_stmt(&mut self, s: &TestStmt) {
        match s {
            TestStmt::Run(c) => self.clause("run", |p| p.call(c)),
            TestStmt::Given {
                target, outcome, ..
            } => self.clause("given", |p| {
                p.ident(target);
                match outcome {
                    Given::Returns(e) => p.clause("returns", |p| p.expr(e)),
                    Given::Fails(m) => p.clause("fails", |p| p.string(m)),
                }
            }),
            TestStmt::GivenGate { gate, outcome, .. } => self.clause("given_gate", |p| {
                p.ident(gate);
                match outcome {
                    GateOutcome::Approves(with) => p.clause("approves", |p| {
                        if let Some(e) = with {
                            p.expr(e);
                        }
                    }),
                    GateOutcome::Rejects(why) => p.clause("rejects", |p| {
                        if let Some(w) = why {
                            p.string(w);
                        }
                    }),
                }
            }),
            TestStmt::Expect(e) => self.clause("expect", |p| p.expr(e)),
            TestStmt::ExpectCalls { target, times, .. } => self.clause("expect_calls", |p| {
                p.ident(target);
                p.word(&times.to_string());
            }),
            TestStmt::ExpectFailure { text, .. } => self.clause("expect_failure", |p| {
                if let Some(t) = text {
                    p.string(t);
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::source::FileId;

    fn canonical(text: &str) -> String {
        let (m, problems) = crate::parser::parse(FileId(0), text);
        assert!(problems.is_empty(), "{problems:?}");
        super::module(&m)
    }

    #[test]
    fn layout_comments_and_spellings_do_not_count() {
        let a = "tool t(x: string) -> string {\n  http GET \"https://a.test/{x}\"\n  timeout 30s\n  limit 100k tokens\n}\n";
        let b = "// a tool\ntool t( x : string )->string{ http GET \"https://a.test/{x}\" // here\n\n timeout 30000ms limit 100000 tokens }";
        assert_eq!(canonical(a), canonical(b));
        assert_ne!(canonical(a), canonical(&a.replace("30s", "31s")));
        assert_ne!(canonical(a), canonical(&a.replace("{x}", "{x}/")));
    }
}
