//! Printing strings: templates as plain or `"""` strings, re-escaped, with
//! their interpolations.

use crate::ast::*;
use crate::source::FileId;

use super::super::doc::*;
use super::*;

impl<'s> Printer<'s> {
    pub(super) fn template(&mut self, t: &Template) -> Doc {
        let (s, e) = span(t.span);
        let triple = self.triple_quoted(s);
        if !triple || self.interpolation > 0 {
            return text(self.plain_string(t));
        }
        let block = self.written_broken(s, e)
            || t.parts
                .iter()
                .any(|p| matches!(p, TemplatePart::Text(t) if t.contains('\n')));
        let mut content = String::new();
        let n = t.parts.len();
        for (i, part) in t.parts.iter().enumerate() {
            match part {
                TemplatePart::Text(s) => escape_triple(s, !block && i + 1 == n, &mut content),
                TemplatePart::Expr(x) => content.push_str(&self.interpolation_text(x)),
            }
        }
        if !block {
            let candidate = format!("\"\"\"{content}\"\"\"");
            if self.same_template(&candidate, t) {
                return text(candidate);
            }
            return text(self.plain_string(t));
        }
        let lines: Vec<&str> = content.split('\n').collect();
        let mut candidate = String::from("\"\"\"");
        for line in &lines {
            candidate.push('\n');
            if !line.is_empty() {
                candidate.push_str("  ");
                candidate.push_str(line);
            }
        }
        candidate.push_str("\n\"\"\"");
        if !self.same_template(&candidate, t) {
            return text(self.plain_string(t));
        }
        let mut inner = Vec::new();
        for line in lines {
            inner.push(Doc::Hard);
            inner.push(text(line));
        }
        cat(vec![
            text("\"\"\""),
            nest(cat(inner)),
            Doc::Hard,
            text("\"\"\""),
        ])
    }

    /// Whether `candidate` (a string literal) parses to the same template.
    pub(super) fn same_template(&self, candidate: &str, t: &Template) -> bool {
        let source = format!("flow f() -> string {{\n  return {candidate}\n}}\n");
        let (module, problems) = crate::parser::parse(FileId(0), &source);
        if !problems.is_empty() {
            return false;
        }
        let Some(Item::Flow(f)) = module.items.first() else {
            return false;
        };
        let Some(Stmt::Return(
            Expr {
                kind: ExprKind::Str(parsed),
                ..
            },
            _,
        )) = f.body.first()
        else {
            return false;
        };
        crate::canonical::template(parsed) == crate::canonical::template(t)
    }

    pub(super) fn plain_string(&mut self, t: &Template) -> String {
        let mut out = String::from("\"");
        for part in &t.parts {
            match part {
                TemplatePart::Text(s) => escape_plain(s, &mut out),
                TemplatePart::Expr(x) => out.push_str(&self.interpolation_text(x)),
            }
        }
        out.push('"');
        out
    }

    pub(super) fn interpolation_text(&mut self, x: &Expr) -> String {
        self.interpolation += 1;
        let d = self.expr(x);
        self.interpolation -= 1;
        let mut inner = String::new();
        flat_text(&d, &mut inner);
        // `{{` would be a literal brace.
        if inner.starts_with('{') {
            format!("{{ {inner} }}")
        } else {
            format!("{{{inner}}}")
        }
    }
}
