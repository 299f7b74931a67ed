//! Why a test's `expect` failed, as pytest and `assert_eq!` say it: where it
//! is, what it says, and the value of each operand.

use serde_json::Value;

use flowc::ir::{Expr, ExprKind};
use flowc::run::eval::{eval, Scope};
use flowc::source::{Sources, Span};

/// `file:line:col` of a span.
pub fn location(sources: &Sources, span: Span) -> String {
    let file = sources.get(span.file);
    let (line, col) = file.line_col(span.start);
    format!("{}:{line}:{col}", file.name)
}

/// The explanation of an `expect` that evaluated to false: its location,
/// its source text, then `operand = value` for each operand that is not a
/// literal (the sides of comparisons, the parts of `and`/`or`/`not`).
pub fn failed(sources: &Sources, e: &Expr, scope: &dyn Scope, output: &Value) -> String {
    let mut out = format!(
        "{}: expectation failed\n  expect {}",
        location(sources, e.span),
        sources.text(e.span)
    );
    let mut operands = Vec::new();
    collect(e, &mut operands);
    let mut seen: Vec<&str> = Vec::new();
    for operand in operands {
        let text = sources.text(operand.span);
        if seen.contains(&text) {
            continue;
        }
        seen.push(text);
        let value = match eval(operand, scope) {
            Ok(v) => shorten(&v.to_string()),
            Err(err) => format!("(cannot be evaluated: {})", err.0),
        };
        out.push_str(&format!("\n    {text} = {value}"));
    }
    if seen.is_empty() {
        out.push_str(&format!("\n    output = {}", shorten(&output.to_string())));
    }
    out
}

/// The operands worth showing: both sides of a comparison, the parts of a
/// boolean combination, or the expression itself when it is neither.
fn collect<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match &e.kind {
        ExprKind::Compare(left, _, right) => {
            for side in [left, right] {
                if !is_literal(side) {
                    out.push(side);
                }
            }
        }
        ExprKind::And(a, b) | ExprKind::Or(a, b) => {
            collect(a, out);
            collect(b, out);
        }
        ExprKind::Not(inner) => collect(inner, out),
        _ if is_literal(e) => {}
        _ => out.push(e),
    }
}

fn is_literal(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Number(_) | ExprKind::Bool(_) | ExprKind::Null => true,
        ExprKind::Str(t) => t
            .parts
            .iter()
            .all(|p| matches!(p, flowc::ir::TemplatePart::Text(_))),
        ExprKind::List(items) => items.iter().all(is_literal),
        ExprKind::Object(fields) => fields.iter().all(|(_, v)| is_literal(v)),
        _ => false,
    }
}

/// Long values are cut so one failure stays readable.
fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}… ({} characters)", text.chars().count())
}
