//! Printing items (`use`, `type`, `model`, `provider`, `tool`, `server`,
//! `agent`, `flow`, `test`, `eval`) and types.

use std::rc::Rc;

use crate::ast::*;
use crate::source::Span;

use super::super::doc::*;
use super::*;

impl<'s> Printer<'s> {
    pub(super) fn module(&mut self, m: &Module) -> Doc {
        let mut elements = Vec::new();
        let mut previous: Option<&Item> = None;
        for item in &m.items {
            let (start, end) = self.item_range(item);
            let blank = match previous {
                None => Blank::Never,
                Some(p) if tight(p, item) => Blank::Source,
                Some(_) => Blank::Always,
            };
            elements.push(self.elem_parts(start, end, blank, |p| p.item(item)));
            previous = Some(item);
        }
        // The parser reads a comment after an open range (`type T = [X] len
        // 1..`) as part of the range. Such a comment can only come from inside
        // the next item; it goes before the type instead.
        for k in (1..elements.len()).rev() {
            let mut flat = String::new();
            flat_text(&elements[k - 1].body, &mut flat);
            let open_range = matches!(&m.items[k - 1], Item::Type(_)) && flat.ends_with("..");
            let first_comment = elements[k]
                .before
                .iter()
                .position(|d| matches!(d, Doc::Text(_)));
            if let (true, Some(at)) = (open_range, first_comment) {
                let moved: Vec<Doc> = elements[k].before.drain(at..).collect();
                elements[k - 1].before.extend(moved);
            }
        }
        let mut parts = Vec::new();
        for (k, element) in elements.into_iter().enumerate() {
            if k > 0 {
                parts.push(Doc::Hard);
            }
            parts.push(element.assemble(Doc::Nil));
        }
        for (k, i) in self.take_before(self.src.len()).into_iter().enumerate() {
            if !(m.items.is_empty() && k == 0) {
                parts.push(Doc::Hard);
                if self.blank_before(self.comments[i].start) {
                    parts.push(Doc::Hard);
                }
            }
            parts.push(self.comment_doc(i));
        }
        if parts.is_empty() {
            return Doc::Nil;
        }
        parts.push(Doc::Hard);
        cat(parts)
    }

    pub(super) fn item_range(&self, item: &Item) -> (usize, usize) {
        match item {
            Item::Use(u) => span(u.span),
            Item::Type(t) => span(t.span),
            Item::Model(m) => span(m.span),
            Item::Resource(name) => (
                self.keyword_before(name.span.start as usize),
                name.span.end as usize,
            ),
            Item::Provider(p) => span(p.span),
            Item::Server(d) => span(d.span),
            Item::Tool(t) => span(t.span),
            Item::Agent(a) => span(a.span),
            Item::Flow(f) => span(f.span),
            Item::Test(t) => span(t.span),
            Item::Eval(e) => span(e.span),
        }
    }

    pub(super) fn item(&mut self, item: &Item) -> Doc {
        match item {
            Item::Use(u) => self.use_decl(u),
            Item::Type(t) => self.type_decl(t),
            Item::Model(m) => self.model_decl(m),
            Item::Resource(name) => text(format!("resource {}", name.name)),
            Item::Provider(p) => self.provider_decl(p),
            Item::Server(d) => self.server_decl(d),
            Item::Tool(t) => self.tool_decl(t),
            Item::Agent(a) => self.agent_decl(a),
            Item::Flow(f) => self.flow_decl(f),
            Item::Test(t) => self.test_decl(t),
            Item::Eval(e) => self.eval_decl(e),
        }
    }

    pub(super) fn use_decl(&mut self, u: &Use) -> Doc {
        let path = match &u.path {
            ModulePath::Std(parts) => parts
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join("."),
            ModulePath::File(path) => quoted(path),
        };
        let mut names = Vec::new();
        for (i, name) in u.names.iter().enumerate() {
            let (s, e) = span(name.span);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            names.push(self.elem(s, e, blank, |_| text(name.name.clone())));
        }
        let list = self.list("{", "}", names, u.span.end as usize, CALL_LIST, false);
        cat(vec![text(format!("use {path}.")), list])
    }

    pub(super) fn type_decl(&mut self, t: &TypeDecl) -> Doc {
        match &t.ty.kind {
            TypeExprKind::Record(..) => {
                cat(vec![text(format!("type {} ", t.name.name)), self.ty(&t.ty)])
            }
            _ => cat(vec![
                text(format!("type {} = ", t.name.name)),
                self.ty(&t.ty),
            ]),
        }
    }

    pub(super) fn model_decl(&mut self, m: &ModelDecl) -> Doc {
        let head = text(format!(
            "model {} = {}({})",
            m.name.name,
            m.provider.name,
            quoted(&m.model_id)
        ));
        if m.params.is_empty() {
            return head;
        }
        let (_, id_end) = span(m.model_id_span);
        let (paren, _) = self.token(id_end);
        let (open, _) = self.token(paren + 1);
        let close = self.closing(open);
        let record = self.object(&m.params, open, close + 1);
        cat(vec![head, text(" "), record])
    }

    pub(super) fn provider_decl(&mut self, p: &ProviderDecl) -> Doc {
        let (_, end) = span(p.span);
        let (_, name_end) = span(p.name.span);
        let (open, _) = self.token(name_end);
        // Clauses in source order: the tree keeps the last of each but the prices.
        let mut clauses: Vec<(usize, usize)> = Vec::new();
        let mut i = open + 1;
        let mut depth = 0usize;
        while i < end {
            let (s, e) = self.token(i);
            if s >= end.saturating_sub(1) || e <= s {
                break;
            }
            let word = &self.src[s..e];
            match word {
                "{" => depth += 1,
                "}" => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth == 0 && ["protocol", "base_url", "api_key", "price"].contains(&word) {
                clauses.push((s, e));
            } else if let Some(last) = clauses.last_mut() {
                last.1 = e;
            }
            i = e;
        }
        let models: Vec<Option<String>> = clauses
            .iter()
            .map(|&(s, _)| (self.token_text(s) == "price").then(|| self.price_model(s, p)))
            .collect();
        let mut elements = Vec::new();
        for (n, &(s, e)) in clauses.iter().enumerate() {
            let blank = if n == 0 { Blank::Never } else { Blank::Source };
            let is_price = models[n].is_some();
            elements.push(self.elem_parts(s, e, blank, |pr| {
                if is_price {
                    pr.price_clause(s, e)
                } else {
                    pr.provider_clause(s, e)
                }
            }));
        }
        // Consecutive `price` entries align their `{`.
        let mut heads: Vec<String> = models
            .iter()
            .map(|m| m.as_ref().map(|m| format!("price {m}")).unwrap_or_default())
            .collect();
        let alignable: Vec<bool> = models.iter().map(Option::is_some).collect();
        let joined: Vec<bool> = elements.iter().map(|e| e.joined).collect();
        align_heads(&mut heads, &alignable, &joined);
        let mut inner = Vec::new();
        for (element, head) in elements.into_iter().zip(heads) {
            inner.push(Doc::Hard);
            inner.push(element.assemble(text(head)));
        }
        let body = self.body(inner, end);
        cat(vec![text(format!("provider {} ", p.name.name)), body])
    }

    pub(super) fn price_model(&self, clause: usize, p: &ProviderDecl) -> String {
        let (s, e) = self.token(clause + "price".len());
        let token = &self.src[s..e];
        if token == "*" {
            return "*".into();
        }
        match p
            .prices
            .iter()
            .find(|price| price.span.start as usize == clause)
            .and_then(|price| price.model.as_ref())
        {
            Some(model) if !self.interpolates(s) => quoted(model),
            _ => token.to_string(),
        }
    }

    /// ` { input $a, output $b }`: the rest of a `price` entry after its model.
    pub(super) fn price_clause(&mut self, start: usize, end: usize) -> Doc {
        let money_after = |pr: &Self, word: &str| -> String {
            pr.find_word(start, end, word)
                .map(|at| pr.token_text(at + word.len()).to_string())
                .unwrap_or_default()
        };
        let input = money_after(self, "input");
        let output = money_after(self, "output");
        let context = money_after(self, "context");
        if context.is_empty() {
            text(format!(" {{ input {input}, output {output} }}"))
        } else {
            text(format!(
                " {{ input {input}, output {output}, context {context} }}"
            ))
        }
    }

    /// `protocol`, `base_url` and `api_key`, token by token.
    pub(super) fn provider_clause(&mut self, start: usize, end: usize) -> Doc {
        let mut out = String::new();
        let mut i = start;
        let mut previous = "";
        while i < end {
            let (s, e) = self.token(i);
            if s >= end || e <= s {
                break;
            }
            let token = &self.src[s..e];
            if !out.is_empty() && token != "." && previous != "." {
                out.push(' ');
            }
            if token.starts_with('"') {
                self.copied(s, e);
            }
            out.push_str(token);
            previous = token;
            i = e;
        }
        text(out)
    }

    pub(super) fn params_doc(&mut self, params: &[Param], name_end: usize) -> Doc {
        let (open, _) = self.token(name_end);
        if self.token_text(open) != "(" {
            return text("()");
        }
        let close = self.closing(open);
        let mut items = Vec::new();
        for (i, p) in params.iter().enumerate() {
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            let (s, _) = span(p.name.span);
            let (_, e) = span(p.ty.span);
            items.push(self.elem(s, e, blank, |pr| {
                let name = format!("{}{}: ", p.name.name, if p.optional { "?" } else { "" });
                cat(vec![text(name), pr.ty(&p.ty)])
            }));
        }
        self.list("(", ")", items, close, CALL_LIST, false)
    }

    pub(super) fn tool_decl(&mut self, t: &ToolDecl) -> Doc {
        let params = self.params_doc(&t.params, t.name.span.end as usize);
        let output = self.signature_type(&t.output);
        let mut inner = Vec::new();
        let mut n = 0;
        let mut k = 0;
        while k < t.clauses.len() {
            let clause = &t.clauses[k];
            let (s, e) = span(clause.span);
            // `effect write writes x`: the reads and writes inside the effect clause.
            let mut j = k + 1;
            if matches!(clause.kind, ToolClauseKind::Effect(_)) {
                while j < t.clauses.len()
                    && matches!(
                        t.clauses[j].kind,
                        ToolClauseKind::Reads(_) | ToolClauseKind::Writes(_)
                    )
                    && t.clauses[j].span.start >= clause.span.start
                    && t.clauses[j].span.end <= clause.span.end
                {
                    j += 1;
                }
            }
            let group = &t.clauses[k..j];
            inner.push(Doc::Hard);
            let blank = if n == 0 { Blank::Never } else { Blank::Source };
            inner.push(self.elem(s, e, blank, |p| p.tool_clauses(group)));
            n += 1;
            k = j;
        }
        let body = self.body(inner, t.span.end as usize);
        cat(vec![
            text(format!("tool {}", t.name.name)),
            params,
            text(" -> "),
            output,
            text(" "),
            body,
        ])
    }

    /// `server NAME {` with one clause per line.
    pub(super) fn server_decl(&mut self, d: &ServerDecl) -> Doc {
        let mut inner = Vec::new();
        for (i, clause) in d.clauses.iter().enumerate() {
            let (s, e) = span(clause.span);
            inner.push(Doc::Hard);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            inner.push(self.elem(s, e, blank, |p| p.server_clause(clause)));
        }
        let body = self.body(inner, d.span.end as usize);
        cat(vec![text(format!("server {} ", d.name.name)), body])
    }

    pub(super) fn server_clause(&mut self, c: &ServerClause) -> Doc {
        match &c.kind {
            ServerClauseKind::Command(argv) => {
                let mut parts = vec![text("command [")];
                for (i, a) in argv.iter().enumerate() {
                    if i > 0 {
                        parts.push(text(", "));
                    }
                    parts.push(self.template(a));
                }
                parts.push(text("]"));
                cat(parts)
            }
            ServerClauseKind::Url(u) => cat(vec![text("url "), self.template(u)]),
            ServerClauseKind::Header { name, value } => cat(vec![
                text(format!("header {} ", quoted(name))),
                self.template(value),
            ]),
            ServerClauseKind::Env { name, value } => cat(vec![
                text(format!("env {} ", quoted(name))),
                self.template(value),
            ]),
            ServerClauseKind::Timeout(q) => text(format!("timeout {}", self.quantity(q))),
        }
    }

    pub(super) fn tool_clauses(&mut self, clauses: &[ToolClause]) -> Doc {
        let mut parts = Vec::new();
        for (i, c) in clauses.iter().enumerate() {
            if i > 0 {
                parts.push(text(" "));
            }
            parts.push(self.tool_clause(c));
        }
        cat(parts)
    }

    pub(super) fn tool_clause(&mut self, c: &ToolClause) -> Doc {
        match &c.kind {
            ToolClauseKind::Http { method, url } => {
                cat(vec![text(format!("http {method} ")), self.template(url)])
            }
            ToolClauseKind::Exec(argv) => {
                let (s, e) = span(c.span);
                let (open, _) = self.token(s + "exec".len());
                let has_comments = self.comments.iter().any(|c| c.start > open && c.start < e);
                let mut items = Vec::new();
                for (i, a) in argv.iter().enumerate() {
                    let (s, e) = span(a.span);
                    let blank = if i == 0 { Blank::Never } else { Blank::Source };
                    items.push(self.elem(s, e, blank, |p| p.template(a)));
                }
                if has_comments || items.iter().any(forces) {
                    let list = self.list("[", "]", items, e, CALL_LIST, false);
                    return cat(vec![text("exec "), list]);
                }
                // Argument vectors fill lines: flags stay next to their values.
                let n = items.len();
                let mut parts = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    if i + 1 < n {
                        parts.push(cat(vec![item, text(",")]));
                        parts.push(Doc::Line);
                    } else {
                        parts.push(item);
                    }
                }
                if n == 0 {
                    return text("exec []");
                }
                let inner = cat(vec![
                    Doc::Soft,
                    Doc::Fill(Rc::new(parts)),
                    if_break(text(","), Doc::Nil),
                ]);
                cat(vec![
                    text("exec "),
                    group(cat(vec![text("["), nest(inner), Doc::Soft, text("]")])),
                ])
            }
            ToolClauseKind::Builtin(name) => {
                let (s, e) = span(c.span);
                text(format!(
                    "builtin {}",
                    self.plain_or_copied(name, s + "builtin".len(), e)
                ))
            }
            ToolClauseKind::Header { name, value } => cat(vec![
                text(format!("header {} ", quoted(name))),
                self.template(value),
            ]),
            ToolClauseKind::Effect(e) => text(format!("effect {}", e.as_str())),
            ToolClauseKind::Reads(names) => text(format!("reads {}", join_names(names))),
            ToolClauseKind::Writes(names) => text(format!("writes {}", join_names(names))),
            ToolClauseKind::Timeout(q) => text(format!("timeout {}", self.quantity(q))),
            ToolClauseKind::Retry(r) => text(self.retry(r)),
            ToolClauseKind::Idempotency(t) => cat(vec![text("idempotency "), self.template(t)]),
            ToolClauseKind::Limit(q) => text(format!("limit {} tokens", self.quantity(q))),
            ToolClauseKind::Query(e) => cat(vec![text("query "), self.expr(e)]),
            ToolClauseKind::Body { encoding, value } => {
                let head = match encoding {
                    BodyEncoding::Json => "body ".to_string(),
                    BodyEncoding::Form => "body form ".to_string(),
                };
                cat(vec![text(head), self.expr(value)])
            }
            ToolClauseKind::Format(f) => text(format!("format {}", f.as_str())),
            ToolClauseKind::Raw(names) => text(format!("raw {}", join_names(names))),
            ToolClauseKind::Mcp { server, tool } => match tool {
                Some(name) => text(format!("mcp {} {}", server.name, quoted(name))),
                None => text(format!("mcp {}", server.name)),
            },
        }
    }

    /// A plain string the tree keeps as text: re-escaped, or copied when
    /// the source interpolates (which the tree does not keep).
    pub(super) fn plain_or_copied(&mut self, value: &str, from: usize, to: usize) -> String {
        let (s, e) = self.token(from);
        if s < to && self.interpolates(s) {
            self.copied(s, e);
            return self.src[s..e].to_string();
        }
        quoted(value)
    }

    pub(super) fn quantity(&self, q: &Quantity) -> &'s str {
        let (s, e) = span(q.span);
        &self.src[s..e]
    }

    pub(super) fn retry(&self, r: &Retry) -> String {
        let mut out = format!("retry {}", r.attempts);
        if !r.on.is_empty() {
            out.push_str(&format!(" on {}", join_names(&r.on)));
        }
        if let Some((base, factor)) = &r.backoff {
            out.push_str(&format!(" backoff {}", self.quantity(base)));
            if let Some(factor) = factor {
                let (star, _) = self.token(base.span.end as usize);
                let number = self.token_text(star + 1);
                let number = if number.parse::<f64>().is_ok() {
                    number.to_string()
                } else {
                    factor.to_string()
                };
                out.push_str(&format!(" * {number}"));
            }
        }
        if let Some(cap) = &r.cap {
            out.push_str(&format!(" cap {}", self.quantity(cap)));
        }
        if r.jitter {
            out.push_str(" jitter");
        }
        out
    }

    pub(super) fn agent_decl(&mut self, a: &AgentDecl) -> Doc {
        let params = self.params_doc(&a.params, a.name.span.end as usize);
        let output = self.signature_type(&a.output);
        let mut inner = Vec::new();
        for (i, c) in a.clauses.iter().enumerate() {
            let (s, e) = span(c.span);
            inner.push(Doc::Hard);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            inner.push(self.elem(s, e, blank, |p| p.agent_clause(c)));
        }
        let body = self.body(inner, a.span.end as usize);
        cat(vec![
            text(format!("agent {}", a.name.name)),
            params,
            text(" -> "),
            output,
            text(" "),
            body,
        ])
    }

    pub(super) fn agent_clause(&mut self, c: &AgentClause) -> Doc {
        match &c.kind {
            AgentClauseKind::Model(m) => text(format!("model {}", m.name)),
            AgentClauseKind::Tools(tools) => {
                let mut items = Vec::new();
                for (i, t) in tools.iter().enumerate() {
                    let (s, e) = span(t.span);
                    let blank = if i == 0 { Blank::Never } else { Blank::Source };
                    items.push(self.elem(s, e, blank, |_| text(t.name.clone())));
                }
                let list = self.list("[", "]", items, c.span.end as usize, CALL_LIST, false);
                cat(vec![text("tools "), list])
            }
            AgentClauseKind::May(e) => text(format!("may {}", e.as_str())),
            AgentClauseKind::MaxSteps(n) => text(format!("max_steps {n}")),
            AgentClauseKind::MaxRepeat(n) => text(format!("max_repeat {n}")),
            AgentClauseKind::Instructions(t) => cat(vec![text("instructions "), self.template(t)]),
            AgentClauseKind::Budget(b) => self.budget(b),
            AgentClauseKind::Timeout(q) => text(format!("timeout {}", self.quantity(q))),
            AgentClauseKind::Retry(r) => text(self.retry(r)),
        }
    }

    pub(super) fn budget(&mut self, b: &Budget) -> Doc {
        let mut items = Vec::new();
        for (i, (name, q)) in b.entries.iter().enumerate() {
            let (s, _) = span(name.span);
            let (_, e) = span(q.span);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            items.push(self.elem(s, e, blank, |p| {
                text(format!("{} {}", name.name, p.quantity(q)))
            }));
        }
        let list = self.list("{", "}", items, b.span.end as usize, FIELD_LIST, false);
        cat(vec![text("budget "), list])
    }

    pub(super) fn flow_decl(&mut self, f: &FlowDecl) -> Doc {
        let params = self.params_doc(&f.params, f.name.span.end as usize);
        let output = self.signature_type(&f.output);
        let inner = self.stmts(&f.body, None);
        let body = self.body(inner, f.span.end as usize);
        cat(vec![
            text(format!("flow {}", f.name.name)),
            params,
            text(" -> "),
            output,
            text(" "),
            body,
        ])
    }

    pub(super) fn test_decl(&mut self, t: &TestDecl) -> Doc {
        let mut inner = Vec::new();
        for (i, stmt) in t.stmts.iter().enumerate() {
            let (s, e) = match stmt {
                TestStmt::Run(call) => (
                    self.keyword_before(call.span.start as usize),
                    call.span.end as usize,
                ),
                TestStmt::Expect(e) => {
                    let (s, end) = self.paren_range(e.span);
                    (self.keyword_before(s), end)
                }
                TestStmt::Given { span: sp, .. }
                | TestStmt::GivenGate { span: sp, .. }
                | TestStmt::ExpectCalls { span: sp, .. }
                | TestStmt::ExpectFailure { span: sp, .. } => span(*sp),
            };
            inner.push(Doc::Hard);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            inner.push(self.elem(s, e, blank, |p| p.test_stmt(stmt, s, e)));
        }
        let body = self.body(inner, t.span.end as usize);
        cat(vec![text(format!("test {} ", quoted(&t.name))), body])
    }

    pub(super) fn eval_decl(&mut self, d: &EvalDecl) -> Doc {
        let mut inner = Vec::new();
        for (i, c) in d.clauses.iter().enumerate() {
            let (s, e) = span(c.span);
            inner.push(Doc::Hard);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            inner.push(self.elem(s, e, blank, |p| p.eval_clause(c)));
        }
        let body = self.body(inner, d.span.end as usize);
        cat(vec![text(format!("eval {} ", quoted(&d.name))), body])
    }

    pub(super) fn eval_clause(&mut self, c: &EvalClause) -> Doc {
        match &c.kind {
            EvalClauseKind::Run { flow, expecting } => match expecting {
                Some(t) => cat(vec![
                    text(format!("run {} expecting ", flow.name)),
                    self.signature_type(t),
                ]),
                None => text(format!("run {}", flow.name)),
            },
            EvalClauseKind::Dataset { path, path_span } => {
                let (s, e) = span(*path_span);
                text(format!("dataset {}", self.plain_or_copied(path, s, e)))
            }
            EvalClauseKind::Row { input, expecting } => {
                let mut parts = vec![text("row "), self.expr(input)];
                if let Some(e) = expecting {
                    parts.push(text(" expecting "));
                    parts.push(self.expr(e));
                }
                cat(parts)
            }
            EvalClauseKind::Score {
                name,
                weight,
                scorer,
            } => {
                let head = match weight {
                    Some((w, _)) => format!("score {} weight {w} = ", name.name),
                    None => format!("score {} = ", name.name),
                };
                cat(vec![text(head), self.step(scorer)])
            }
            EvalClauseKind::Threshold(t) => text(format!("threshold {t}")),
            EvalClauseKind::Concurrency(n) => text(format!("concurrency {n}")),
            EvalClauseKind::Budget(b) => self.budget(b),
        }
    }

    pub(super) fn test_stmt(&mut self, stmt: &TestStmt, start: usize, end: usize) -> Doc {
        match stmt {
            TestStmt::Run(call) => cat(vec![text("run "), self.call(call)]),
            TestStmt::Given {
                target, outcome, ..
            } => match outcome {
                Given::Returns(e) => cat(vec![
                    text(format!("given {} returns ", target.name)),
                    self.expr(e),
                ]),
                Given::Fails(message) => {
                    let at = self
                        .find_word(target.span.end as usize, end, "fails")
                        .unwrap_or(start)
                        + "fails".len();
                    text(format!(
                        "given {} fails {}",
                        target.name,
                        self.plain_or_copied(message, at, end)
                    ))
                }
            },
            TestStmt::GivenGate { gate, outcome, .. } => match outcome {
                GateOutcome::Approves(None) => {
                    text(format!("given approve {} approves", gate.name))
                }
                GateOutcome::Approves(Some(e)) => cat(vec![
                    text(format!("given approve {} approves with ", gate.name)),
                    self.expr(e),
                ]),
                GateOutcome::Rejects(reason) => {
                    let at = self
                        .find_word(gate.span.end as usize, end, "rejects")
                        .unwrap_or(start)
                        + "rejects".len();
                    let (s, _) = self.token(at);
                    let has_string = s < end && self.is_string(s);
                    match (reason, has_string) {
                        (Some(r), _) => text(format!(
                            "given approve {} rejects {}",
                            gate.name,
                            self.plain_or_copied(r, at, end)
                        )),
                        (None, true) => text(format!(
                            "given approve {} rejects {}",
                            gate.name,
                            self.plain_or_copied("", at, end)
                        )),
                        (None, false) => text(format!("given approve {} rejects", gate.name)),
                    }
                }
            },
            TestStmt::Expect(e) => cat(vec![text("expect "), self.expr(e)]),
            TestStmt::ExpectCalls { target, times, .. } => {
                text(format!("expect {} called {times} times", target.name))
            }
            TestStmt::ExpectFailure { text: message, .. } => {
                let at = self.find_word(start, end, "failure").unwrap_or(start) + "failure".len();
                let (s, _) = self.token(at);
                match (message, s < end && self.is_string(s)) {
                    (Some(m), _) => text(format!(
                        "expect failure {}",
                        self.plain_or_copied(m, at, end)
                    )),
                    (None, true) => text(format!(
                        "expect failure {}",
                        self.plain_or_copied("", at, end)
                    )),
                    (None, false) => text("expect failure"),
                }
            }
        }
    }

    // ------------------------------------------------------------ types

    pub(super) fn ty(&mut self, t: &TypeExpr) -> Doc {
        match &t.kind {
            TypeExprKind::Union(members) => {
                let mut parts = Vec::new();
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        parts.push(text(" | "));
                    }
                    parts.push(self.ty(m));
                }
                cat(parts)
            }
            TypeExprKind::Optional(inner) => match &inner.kind {
                TypeExprKind::Constrained(base, constraints) => {
                    let base = self.ty(base);
                    cat(vec![base, text("?"), text(self.constraints(constraints))])
                }
                _ => cat(vec![self.ty(inner), text("?")]),
            },
            TypeExprKind::Constrained(base, constraints) => {
                let base = self.ty(base);
                cat(vec![base, text(self.constraints(constraints))])
            }
            TypeExprKind::List(inner) => cat(vec![text("["), self.ty(inner), text("]")]),
            TypeExprKind::Record(fields, openness) => {
                let record = self.record(fields, t.span);
                match openness {
                    crate::types::Openness::Open => record,
                    crate::types::Openness::Exact => cat(vec![text("exact "), record]),
                }
            }
            TypeExprKind::Schema(path) => text(format!("schema {}", quoted(path))),
            TypeExprKind::Literal(lit) => text(self.literal(lit, t.span.start as usize)),
            TypeExprKind::Named(name) => text(name.name.clone()),
        }
    }

    /// The output type after `->`: on one line (unless written broken or
    /// holding comments), so a long signature breaks its parameters instead.
    pub(super) fn signature_type(&mut self, t: &TypeExpr) -> Doc {
        let d = self.ty(t);
        if forces(&d) {
            return d;
        }
        let mut flat = String::new();
        flat_text(&d, &mut flat);
        text(flat)
    }

    pub(super) fn literal(&self, lit: &Literal, at: usize) -> String {
        match lit {
            Literal::Str(s) => quoted(s),
            Literal::Number(n) => {
                let token = self.token_text(at);
                if token.trim_end_matches(['k', 'M']).parse::<f64>().is_ok() {
                    token.to_string()
                } else {
                    n.to_string()
                }
            }
            Literal::Bool(b) => b.to_string(),
        }
    }

    pub(super) fn record(&mut self, fields: &[FieldDecl], s: Span) -> Doc {
        let (open, end) = span(s);
        let first = fields.first().map_or(end, |f| f.name.span.start as usize);
        let broken = self.written_broken(open, first);
        let mut elements = Vec::new();
        let mut open_range = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let (fs, _) = span(f.name.span);
            let (_, fe) = span(f.ty.span);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            let element = self.elem_parts(fs, fe, blank, |p| {
                let name = format!("{}{}: ", f.name.name, if f.optional { "?" } else { "" });
                cat(vec![text(name), p.ty(&f.ty)])
            });
            let mut flat = String::new();
            flat_text(&element.body, &mut flat);
            open_range.push(flat.ends_with(".."));
            elements.push(element);
        }
        // The parser reads a comment after an open range (`len 1..`) as part
        // of the range: a comma ends the range before such a comment.
        let dangling = self
            .comments
            .iter()
            .enumerate()
            .any(|(i, c)| !self.used[i] && c.start < end && c.start > open);
        let n = elements.len();
        let commented: Vec<bool> = (0..n)
            .map(|i| {
                elements[i].suffix.is_some()
                    || match elements.get(i + 1) {
                        Some(next) => next.before.iter().any(|d| matches!(d, Doc::Text(_))),
                        None => dangling,
                    }
            })
            .collect();
        let mut items = Vec::new();
        for (i, element) in elements.into_iter().enumerate() {
            let mut element = element;
            if open_range[i] && commented[i] {
                element.body = cat(vec![element.body, if_break(text(","), Doc::Nil)]);
            }
            items.push(element.assemble(Doc::Nil));
        }
        self.list("{", "}", items, end, FIELD_LIST, broken)
    }

    pub(super) fn constraints(&self, constraints: &[Constraint]) -> String {
        let mut out = String::new();
        for c in constraints {
            let (s, e) = span(c.span);
            match &c.kind {
                ConstraintKind::Matching(_) => {
                    out.push_str(" matching ");
                    out.push_str(self.token_text(s + "matching".len()));
                }
                ConstraintKind::Len { min, max } => {
                    out.push_str(" len ");
                    let range = self.find_word(s, e, "..").is_some();
                    if let Some(min) = min {
                        out.push_str(&min.to_string());
                    }
                    if range {
                        out.push_str("..");
                        if let Some(max) = max {
                            out.push_str(&max.to_string());
                        }
                    }
                }
                ConstraintKind::Bound(op, n) => {
                    let op_text = match op {
                        BoundOp::Ge => ">=",
                        BoundOp::Gt => ">",
                        BoundOp::Le => "<=",
                        BoundOp::Lt => "<",
                    };
                    let (os, _) = self.token(s);
                    let number = self.token_text(os + op_text.len());
                    let number = if number.trim_end_matches(['k', 'M']).parse::<f64>().is_ok() {
                        number.to_string()
                    } else {
                        n.to_string()
                    };
                    out.push_str(&format!(" {op_text} {number}"));
                }
            }
        }
        out
    }
}
