//! Printing flow bodies: statements, steps, `if`, `match`, calls and
//! expressions.

use std::rc::Rc;

use crate::ast::*;
use crate::source::Span;

use super::super::doc::*;
use super::*;

impl<'s> Printer<'s> {
    /// The statements of a flow or block, and the block's result.
    pub(super) fn stmts(&mut self, stmts: &[Stmt], result: Option<&Step>) -> Vec<Doc> {
        let mut inner = Vec::new();
        for (i, stmt) in stmts.iter().enumerate() {
            let (s, e) = match stmt {
                Stmt::Budget(b) => span(b.span),
                Stmt::Let(l) => span(l.span),
                Stmt::Check(c) => span(c.span),
                Stmt::Return(_, sp) => span(*sp),
            };
            inner.push(Doc::Hard);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            inner.push(self.elem(s, e, blank, |p| p.stmt(stmt)));
        }
        if let Some(step) = result {
            let (s, e) = match &step.kind {
                StepKind::Expr(x) => self.paren_range(x.span),
                _ => span(step.span),
            };
            inner.push(Doc::Hard);
            let blank = if stmts.is_empty() {
                Blank::Never
            } else {
                Blank::Source
            };
            inner.push(self.elem(s, e, blank, |p| p.step(step)));
        }
        inner
    }

    pub(super) fn stmt(&mut self, stmt: &Stmt) -> Doc {
        match stmt {
            Stmt::Budget(b) => self.budget(b),
            Stmt::Let(l) => {
                let mut parts = vec![text(format!("let {} = ", l.name.name)), self.step(&l.step)];
                if !l.after.is_empty() {
                    parts.push(text(format!(" after {}", join_names(&l.after))));
                }
                if let Some(f) = &l.fallback {
                    parts.push(text(" fallback "));
                    parts.push(self.step(f));
                }
                cat(parts)
            }
            Stmt::Check(c) => {
                let mut inner = Vec::new();
                for (i, (cond, message)) in c.requires.iter().enumerate() {
                    let (cs, _) = self.paren_range(cond.span);
                    let s = self.keyword_before(cs);
                    let (_, e) = span(message.span);
                    inner.push(Doc::Hard);
                    let blank = if i == 0 { Blank::Never } else { Blank::Source };
                    inner.push(self.elem(s, e, blank, |p| {
                        let cond = p.expr(cond);
                        cat(vec![
                            text("require "),
                            cond,
                            text(", "),
                            p.template(message),
                        ])
                    }));
                }
                let body = self.body(inner, c.span.end as usize);
                cat(vec![text(format!("check {} ", c.name.name)), body])
            }
            Stmt::Return(e, _) => cat(vec![text("return "), self.expr(e)]),
        }
    }

    pub(super) fn block(&mut self, b: &Block) -> Doc {
        let inner = self.stmts(&b.stmts, Some(&b.result));
        self.body(inner, b.span.end as usize)
    }

    pub(super) fn step(&mut self, step: &Step) -> Doc {
        match &step.kind {
            StepKind::Call(c) => self.call(c),
            StepKind::Expr(e) => self.expr(e),
            StepKind::Llm(l) => {
                let output = self.signature_type(&l.output);
                let mut inner = Vec::new();
                for (i, c) in l.clauses.iter().enumerate() {
                    let (s, e) = span(c.span);
                    inner.push(Doc::Hard);
                    let blank = if i == 0 { Blank::Never } else { Blank::Source };
                    inner.push(self.elem(s, e, blank, |p| p.llm_clause(c)));
                }
                let body = self.body(inner, step.span.end as usize);
                cat(vec![
                    text(format!("llm {} -> ", l.model.name)),
                    output,
                    text(" "),
                    body,
                ])
            }
            StepKind::Approve(a) => {
                enum Clause<'a> {
                    Show(&'a Expr),
                    Timeout(&'a Quantity),
                    OnTimeout(&'a OnTimeout),
                    Policy(&'a Expr),
                    Sample(&'a Sample),
                    Notify(&'a Notify),
                }
                let mut clauses: Vec<(usize, usize, Clause)> = Vec::new();
                for e in &a.show {
                    let (s, end) = self.paren_range(e.span);
                    clauses.push((self.keyword_before(s), end, Clause::Show(e)));
                }
                if let Some(q) = &a.timeout {
                    let (s, e) = span(q.span);
                    clauses.push((self.keyword_before(s), e, Clause::Timeout(q)));
                }
                if let Some((d, sp)) = &a.on_timeout {
                    let (s, e) = span(*sp);
                    clauses.push((self.keyword_before(s), e, Clause::OnTimeout(d)));
                }
                if let Some(p) = &a.policy {
                    let (s, e) = span(p.span);
                    clauses.push((s, e, Clause::Policy(&p.when)));
                }
                if let Some(smp) = &a.sample {
                    let (s, e) = span(smp.span);
                    clauses.push((s, e, Clause::Sample(smp)));
                }
                if let Some(n) = &a.notify {
                    let (s, e) = span(n.span);
                    clauses.push((s, e, Clause::Notify(n)));
                }
                clauses.sort_by_key(|c| c.0);
                let mut inner = Vec::new();
                for (i, (s, e, clause)) in clauses.iter().enumerate() {
                    inner.push(Doc::Hard);
                    let blank = if i == 0 { Blank::Never } else { Blank::Source };
                    inner.push(self.elem(*s, *e, blank, |p| match clause {
                        Clause::Show(e) => cat(vec![text("show "), p.expr(e)]),
                        Clause::Timeout(q) => text(format!("timeout {}", p.quantity(q))),
                        Clause::OnTimeout(OnTimeout::Decide(Decision::Approve)) => {
                            text("on_timeout approve")
                        }
                        Clause::OnTimeout(OnTimeout::Decide(Decision::Reject)) => {
                            text("on_timeout reject")
                        }
                        Clause::OnTimeout(OnTimeout::Escalate(esc)) => {
                            let mut parts = Vec::new();
                            if let Some(n) = &esc.notify {
                                parts.push(p.notify_text(n));
                            }
                            if let Some(q) = &esc.timeout {
                                parts.push(format!("timeout {}", p.quantity(q)));
                            }
                            text(format!("on_timeout escalate {{ {} }}", parts.join(", ")))
                        }
                        Clause::Policy(e) => cat(vec![text("auto approve when "), p.expr(e)]),
                        Clause::Sample(smp) => text(p.sample_text(smp)),
                        Clause::Notify(n) => text(p.notify_text(n)),
                    }));
                }
                let body = self.body(inner, step.span.end as usize);
                cat(vec![text(format!("approve {} ", a.gate.name)), body])
            }
            StepKind::For(f) => {
                let iterable = self.expr(&f.iterable);
                let mut parallel = match &f.parallel {
                    Some((n, _)) => format!(" parallel {n}"),
                    None => String::new(),
                };
                if let Some((n, _)) = &f.tolerate {
                    parallel.push_str(&format!(" tolerate {n}"));
                }
                let body = self.block(&f.body);
                cat(vec![
                    text(format!("for {} in ", f.var.name)),
                    iterable,
                    text(format!("{parallel} ")),
                    body,
                ])
            }
            StepKind::If(i) => self.if_step(i),
            StepKind::Match(m) => self.match_step(m, step.span),
        }
    }

    /// `notify webhook TARGET`, the target as written (a URL's spelling,
    /// or `env.NAME`).
    fn notify_text(&self, n: &Notify) -> String {
        let (s, e) = span(n.span);
        // `notify KIND TARGET`: the target from its first token on.
        let (_, keyword_end) = self.token(s);
        let (_, kind_end) = self.token(keyword_end);
        let (target, _) = self.token(kind_end);
        let target = self.src.get(target.min(e)..e).unwrap_or_default();
        format!("notify {} {target}", n.kind.as_str())
    }

    /// `sample 2%`, `sample 20 per day`, `sample 2% max 20 per day`, the
    /// share as written.
    fn sample_text(&self, smp: &Sample) -> String {
        let mut out = String::from("sample");
        if let Some((_, sp)) = smp.percent {
            let (s, e) = span(sp);
            out.push(' ');
            out.push_str(&self.src[s..e]);
        }
        if let Some((n, _)) = smp.per_day {
            if smp.percent.is_some() {
                out.push_str(" max");
            }
            out.push_str(&format!(" {n} per day"));
        }
        out
    }

    pub(super) fn if_step(&mut self, i: &IfStep) -> Doc {
        let condition = self.expr(&i.condition);
        let then = self.block(&i.then);
        let mut parts = vec![text("if "), condition, text(" "), then];
        if let Some(otherwise) = &i.otherwise {
            parts.push(text(" else "));
            match &otherwise.result.kind {
                StepKind::If(nested)
                    if otherwise.stmts.is_empty() && otherwise.span == otherwise.result.span =>
                {
                    parts.push(self.if_step(nested))
                }
                _ => parts.push(self.block(otherwise)),
            }
        }
        cat(parts)
    }

    pub(super) fn match_step(&mut self, m: &MatchStep, s: Span) -> Doc {
        let scrutinee = self.expr(&m.scrutinee);
        let is_step =
            |arm: &MatchArm| arm.body.stmts.is_empty() && arm.body.span == arm.body.result.span;
        let patterns: Vec<String> = m
            .arms
            .iter()
            .map(|arm| match &arm.pattern {
                None => "_".to_string(),
                Some(lit) => self.literal(lit, arm.pattern_span.start as usize),
            })
            .collect();
        let ranges: Vec<(usize, usize)> = m
            .arms
            .iter()
            .map(|arm| {
                let (_, e) = match &arm.body.result.kind {
                    StepKind::Expr(x) if is_step(arm) => self.paren_range(x.span),
                    _ => span(arm.body.span),
                };
                (arm.pattern_span.start as usize, e)
            })
            .collect();
        let mut elements = Vec::new();
        for (i, arm) in m.arms.iter().enumerate() {
            let (s, e) = ranges[i];
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            elements.push(self.elem_parts(s, e, blank, |p| {
                if is_step(arm) {
                    p.step(&arm.body.result)
                } else {
                    p.block(&arm.body)
                }
            }));
        }
        // Consecutive one-line arms align their `=>`.
        let mut heads = patterns;
        let alignable: Vec<bool> = m
            .arms
            .iter()
            .map(|arm| {
                is_step(arm)
                    && matches!(arm.body.result.kind, StepKind::Call(_) | StepKind::Expr(_))
            })
            .collect();
        let joined: Vec<bool> = elements.iter().map(|e| e.joined).collect();
        align_heads(&mut heads, &alignable, &joined);
        let mut inner = Vec::new();
        for (element, head) in elements.into_iter().zip(heads) {
            inner.push(Doc::Hard);
            inner.push(element.assemble(text(format!("{head} => "))));
        }
        let body = self.body(inner, s.end as usize);
        cat(vec![text("match "), scrutinee, text(" "), body])
    }

    pub(super) fn llm_clause(&mut self, c: &LlmClause) -> Doc {
        match &c.kind {
            LlmClauseKind::Prompt(t) => cat(vec![text("prompt "), self.template(t)]),
            LlmClauseKind::System(t) => cat(vec![text("system "), self.template(t)]),
            LlmClauseKind::Retry(r) => text(self.retry(r)),
            LlmClauseKind::Timeout(q) => text(format!("timeout {}", self.quantity(q))),
            LlmClauseKind::MaxTokens(q) => text(format!("max_tokens {}", self.quantity(q))),
            LlmClauseKind::Budget(b) => self.budget(b),
        }
    }

    pub(super) fn call(&mut self, c: &Call) -> Doc {
        let (_, end) = span(c.span);
        let mut items = Vec::new();
        let mut last_value: Option<Doc> = None;
        let n = c.args.len();
        for (i, (name, value)) in c.args.iter().enumerate() {
            let (s, _) = span(name.span);
            let (_, e) = self.paren_range(value.span);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            let keep = &mut last_value;
            items.push(self.elem(s, e, blank, |p| {
                let v = p.expr(value);
                if i + 1 == n {
                    *keep = Some(v.clone());
                }
                cat(vec![text(format!("{}: ", name.name)), v])
            }));
        }
        let last_decorated = self.decorated;
        let open = format!("{}(", c.callee.name);
        let normal = self.list(&open, ")", items.clone(), end, CALL_LIST, false);
        // The last argument a record or list: `f(a: 1, b: {` … `})`.
        let Some((last_name, last)) = c.args.last() else {
            return normal;
        };
        let huggable = matches!(&last.kind, ExprKind::Object(e) if !e.is_empty())
            || matches!(&last.kind, ExprKind::List(e) if !e.is_empty());
        let (_, le) = span(last.span);
        // Comments between `name:` and the record move into it; any other
        // comment in the arguments needs them one per line.
        let (name_start, _) = span(last_name.span);
        let quiet = !self.comments.iter().any(|k| {
            k.start >= c.span.start as usize
                && k.start < end
                && (k.start < name_start || k.start >= le)
        });
        let (Some(Doc::Group(inner, _)), true, true, false, 0) = (
            &last_value,
            huggable,
            quiet,
            last_decorated,
            self.interpolation,
        ) else {
            return normal;
        };
        let mut head = format!("{}(", c.callee.name);
        for item in &items[..n - 1] {
            if forces(item) {
                return normal;
            }
            flat_text(item, &mut head);
            head.push_str(", ");
        }
        head.push_str(&format!("{}: ", last_name.name));
        let hug = cat(vec![text(head), Doc::Group(inner.clone(), true), text(")")]);
        Doc::Choice(Rc::new(vec![normal.clone(), hug, normal]))
    }

    // ------------------------------------------------------------ expressions

    pub(super) fn expr(&mut self, e: &Expr) -> Doc {
        match &e.kind {
            ExprKind::Str(t) => self.template(t),
            ExprKind::Number(n) => {
                let (s, end) = span(e.span);
                let token = &self.src[s..end];
                if token.trim_end_matches(['k', 'M']).parse::<f64>().is_ok() {
                    text(token)
                } else {
                    text(n.to_string())
                }
            }
            ExprKind::Bool(b) => text(b.to_string()),
            ExprKind::Null => text("null"),
            ExprKind::Object(entries) => {
                let (s, end) = span(e.span);
                self.object(entries, s, end)
            }
            ExprKind::List(items) => {
                let mut docs = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let (s, end) = self.paren_range(item.span);
                    let blank = if i == 0 { Blank::Never } else { Blank::Source };
                    docs.push(self.elem(s, end, blank, |p| p.expr(item)));
                }
                self.list("[", "]", docs, e.span.end as usize, VALUE_LIST, false)
            }
            ExprKind::Env(name) => text(format!("env.{}", name.name)),
            ExprKind::Name(name) => text(name.name.clone()),
            ExprKind::Member(x, field) => {
                cat(vec![self.operand(x, 5), text(format!(".{}", field.name))])
            }
            ExprKind::Index(x, i) => {
                let x = self.operand(x, 5);
                cat(vec![x, text("["), self.expr(i), text("]")])
            }
            // `not a == b` is `not (a == b)`; the parentheses say so.
            ExprKind::Not(x) => cat(vec![text("not "), self.operand(x, 5)]),
            ExprKind::And(a, b) => self.binary(a, "and", b, 2),
            ExprKind::Or(a, b) => self.binary(a, "or", b, 1),
            ExprKind::Compare(a, op, b) => self.binary(a, op.as_str(), b, 4),
        }
    }

    /// Left-associative: the right operand needs parentheses at equal precedence.
    pub(super) fn binary(&mut self, a: &Expr, op: &str, b: &Expr, level: u8) -> Doc {
        let left = self.operand(a, level);
        let right = self.operand(b, level + 1);
        cat(vec![left, text(format!(" {op} ")), right])
    }

    pub(super) fn operand(&mut self, e: &Expr, min: u8) -> Doc {
        let d = self.expr(e);
        if precedence(e) < min {
            cat(vec![text("("), d, text(")")])
        } else {
            d
        }
    }

    pub(super) fn object(&mut self, entries: &[(Ident, Expr)], open: usize, end: usize) -> Doc {
        let first = entries.first().map_or(end, |(k, _)| k.span.start as usize);
        let broken = self.written_broken(open, first);
        let mut items = Vec::new();
        for (i, (key, value)) in entries.iter().enumerate() {
            let (s, _) = span(key.span);
            let (_, e) = self.paren_range(value.span);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            items.push(self.elem(s, e, blank, |p| {
                cat(vec![text(format!("{}: ", key.name)), p.expr(value)])
            }));
        }
        self.list("{", "}", items, end, OBJECT_LIST, broken)
    }
}
