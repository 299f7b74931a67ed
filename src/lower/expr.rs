//! Expressions: name resolution through a caller-supplied resolver, and
//! typing. Every expression leaves here with its type.

use crate::ast::{self, CompareOp};
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{Expr, ExprKind, Template, TemplatePart};
use crate::source::Span;
use crate::suggest::did_you_mean;
use crate::types::{Lit, Ty};

use super::Lowerer;

/// Resolves a bare name to its value, reporting it if it is unknown.
pub(crate) type Resolver<'r> = dyn FnMut(&mut Lowerer<'_, '_>, &ast::Ident) -> (ExprKind, Ty) + 'r;

pub(crate) fn lower_expr(
    cx: &mut Lowerer<'_, '_>,
    e: &ast::Expr,
    resolve: &mut Resolver<'_>,
) -> Expr {
    let span = e.span;
    let (kind, ty) = match &e.kind {
        ast::ExprKind::Str(t) => {
            let plain = t.as_plain();
            let t = lower_template(cx, t, resolve);
            let ty = match plain {
                Some(s) => Ty::Literal(Lit::Str(s)),
                None => Ty::string(),
            };
            (ExprKind::Str(t), ty)
        }
        ast::ExprKind::Number(n) => (ExprKind::Number(*n), Ty::Literal(Lit::Number(*n))),
        ast::ExprKind::Bool(b) => (ExprKind::Bool(*b), Ty::Literal(Lit::Bool(*b))),
        ast::ExprKind::Null => (ExprKind::Null, Ty::Null),
        ast::ExprKind::Object(fields) => {
            let mut out: Vec<(String, Expr)> = Vec::new();
            let mut tys = Vec::new();
            for (k, v) in fields {
                if out.iter().any(|(n, _)| *n == k.name) {
                    let d = Diagnostic::new(
                        Code::DuplicateName,
                        k.span,
                        format!("field `{}` is given twice", k.name),
                    )
                    .label("given again here")
                    .help("give each field once");
                    cx.report(d);
                    continue;
                }
                let v = lower_expr(cx, v, resolve);
                tys.push(crate::types::Field {
                    name: k.name.clone(),
                    ty: v.ty.clone(),
                    optional: false,
                });
                out.push((k.name.clone(), v));
            }
            (
                ExprKind::Object(out),
                Ty::Record(tys, crate::types::Openness::Open),
            )
        }
        ast::ExprKind::List(items) => {
            let items: Vec<Expr> = items.iter().map(|i| lower_expr(cx, i, resolve)).collect();
            let ty = list_type(cx, &items);
            (ExprKind::List(items), ty)
        }
        ast::ExprKind::Env(name) => (ExprKind::Env(name.name.clone()), Ty::string()),
        ast::ExprKind::Name(name) => resolve(cx, name),
        ast::ExprKind::Member(base, field) => {
            let base = lower_expr(cx, base, resolve);
            member(cx, base, field)
        }
        ast::ExprKind::Index(base, index) => {
            let base = lower_expr(cx, base, resolve);
            let index = lower_expr(cx, index, resolve);
            if !cx.program.types.assignable(&index.ty, &Ty::int()) {
                mismatch(
                    cx,
                    index.span,
                    &Ty::int(),
                    &index.ty,
                    "a list index is a whole number",
                );
            }
            let ty = match cx.program.types.element(&base.ty) {
                Some(t) => t,
                None => {
                    let shown = cx.program.types.display(&base.ty);
                    let d = Diagnostic::new(
                        Code::TypeMismatch,
                        base.span,
                        format!("only lists can be indexed, and this is `{shown}`"),
                    )
                    .label(format!("this is `{shown}`"))
                    .help("index a list, as in `items[0]`");
                    cx.report(d);
                    Ty::Error
                }
            };
            (ExprKind::Index(Box::new(base), Box::new(index)), ty)
        }
        ast::ExprKind::Not(inner) => {
            let inner = boolean(cx, inner, resolve);
            (ExprKind::Not(Box::new(inner)), Ty::Bool)
        }
        ast::ExprKind::And(a, b) | ast::ExprKind::Or(a, b) => {
            let a = boolean(cx, a, resolve);
            let b = boolean(cx, b, resolve);
            let kind = if matches!(e.kind, ast::ExprKind::And(..)) {
                ExprKind::And(Box::new(a), Box::new(b))
            } else {
                ExprKind::Or(Box::new(a), Box::new(b))
            };
            (kind, Ty::Bool)
        }
        ast::ExprKind::Compare(a, op, b) => {
            let a = lower_expr(cx, a, resolve);
            let b = lower_expr(cx, b, resolve);
            compare(cx, &a, *op, &b, span);
            (ExprKind::Compare(Box::new(a), *op, Box::new(b)), Ty::Bool)
        }
    };
    Expr { kind, ty, span }
}

fn boolean(cx: &mut Lowerer<'_, '_>, e: &ast::Expr, resolve: &mut Resolver<'_>) -> Expr {
    let e = lower_expr(cx, e, resolve);
    if !cx.program.types.assignable(&e.ty, &Ty::Bool) {
        mismatch(
            cx,
            e.span,
            &Ty::Bool,
            &e.ty,
            "`and`, `or` and `not` take booleans",
        );
    }
    e
}

fn compare(cx: &mut Lowerer<'_, '_>, a: &Expr, op: CompareOp, b: &Expr, span: Span) {
    let types = &cx.program.types;
    let ok = match op {
        CompareOp::Eq | CompareOp::Ne => {
            types.assignable(&a.ty, &b.ty)
                || types.assignable(&b.ty, &a.ty)
                || (types.assignable(&a.ty, &Ty::number())
                    && types.assignable(&b.ty, &Ty::number()))
                || (types.assignable(&a.ty, &Ty::string())
                    && types.assignable(&b.ty, &Ty::string()))
                || matches!(b.ty, Ty::Null)
                || matches!(a.ty, Ty::Null)
        }
        _ => {
            let number =
                |t: &Ty| types.assignable(t, &Ty::number()) && !matches!(t, Ty::Json | Ty::Error);
            let lenient = |t: &Ty| matches!(types.resolve(t), Ty::Json | Ty::Error | Ty::Schema(_));
            (number(&a.ty) || lenient(&a.ty)) && (number(&b.ty) || lenient(&b.ty))
        }
    };
    if !ok {
        let (ta, tb) = (types.display(&a.ty), types.display(&b.ty));
        let message = match op {
            CompareOp::Eq | CompareOp::Ne => format!("`{ta}` and `{tb}` can never be equal"),
            _ => format!("`{}` compares numbers, not `{ta}` and `{tb}`", op.as_str()),
        };
        let d = Diagnostic::new(Code::TypeMismatch, span, message)
            .label(format!("`{ta}` {} `{tb}`", op.as_str()))
            .with(a.span, format!("this is `{ta}`"))
            .with(b.span, format!("this is `{tb}`"))
            .help("compare values of the same type");
        cx.report(d);
    }
}

fn member(cx: &mut Lowerer<'_, '_>, base: Expr, field: &ast::Ident) -> (ExprKind, Ty) {
    let types = &cx.program.types;
    // Looked at by reference and only for `.len`: cloning the base's type
    // (a record's every field) for each `.field` was a tenth of lowering.
    if field.name == "len" {
        let inner = match types.resolve(&base.ty) {
            Ty::Optional(i) => types.resolve(i),
            other => other,
        };
        if matches!(
            inner,
            Ty::List(..) | Ty::String(_) | Ty::Literal(Lit::Str(_))
        ) {
            return (ExprKind::Len(Box::new(base)), Ty::int());
        }
    }
    match types.field(&base.ty, &field.name) {
        Some(ty) => (ExprKind::Member(Box::new(base), field.name.clone()), ty),
        None => {
            let shown = types.display(&base.ty);
            let names = types.field_names(&base.ty);
            let mut d = if names.is_empty() {
                Diagnostic::new(
                    Code::UnknownField,
                    field.span,
                    format!("`{shown}` has no fields"),
                )
                .label(format!("`.{}` on a `{shown}`", field.name))
            } else {
                Diagnostic::new(
                    Code::UnknownField,
                    field.span,
                    format!("`{shown}` has no field `{}`", field.name),
                )
                .label("unknown field")
            };
            d = match did_you_mean(&field.name, names.iter().map(String::as_str)) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None if !names.is_empty() => d.help(format!("its fields are {}", names.join(", "))),
                None => {
                    d.help("`.len` gives the length of a list or string; records have named fields")
                }
            };
            cx.report(d);
            (
                ExprKind::Member(Box::new(base), field.name.clone()),
                Ty::Error,
            )
        }
    }
}

/// The type of a list literal: literals of one kind make a literal union,
/// otherwise the first item's type if every item fits it.
fn list_type(cx: &mut Lowerer<'_, '_>, items: &[Expr]) -> Ty {
    let Some(first) = items.first() else {
        return Ty::list(Ty::Error);
    };
    let types = &cx.program.types;
    let mut joined = first.ty.clone();
    let mut odd = None;
    for item in &items[1..] {
        match types.join(&joined, &item.ty) {
            Some(t) => joined = t,
            None => {
                odd = Some(item);
                break;
            }
        }
    }
    let Some(odd) = odd else {
        // A literal's length is known: loops over it are bounded.
        let n = items.len() as u64;
        return Ty::List(
            Box::new(joined),
            crate::types::Constraints {
                min_len: Some(n),
                max_len: Some(n),
                ..Default::default()
            },
        );
    };
    let (a, b) = (types.display(&first.ty), types.display(&odd.ty));
    let d = Diagnostic::new(
        Code::TypeMismatch,
        odd.span,
        format!("a list holds one type, but this item is `{b}`"),
    )
    .label(format!("this is `{b}`"))
    .with(first.span, format!("the first item is `{a}`"))
    .help("give every item of a list the same type");
    cx.report(d);
    Ty::list(Ty::Error)
}

pub(crate) fn lower_template(
    cx: &mut Lowerer<'_, '_>,
    t: &ast::Template,
    resolve: &mut Resolver<'_>,
) -> Template {
    let parts = t
        .parts
        .iter()
        .map(|p| match p {
            ast::TemplatePart::Text(s) => TemplatePart::Text(s.clone()),
            ast::TemplatePart::Expr(e) => TemplatePart::Expr(lower_expr(cx, e, resolve)),
        })
        .collect();
    Template {
        parts,
        span: t.span,
    }
}

/// Resolves names to the given parameters (tools, agents), reporting others.
fn params_resolver<'p>(
    params: &'p [(String, Ty)],
    what: &'p str,
) -> impl FnMut(&mut Lowerer<'_, '_>, &ast::Ident) -> (ExprKind, Ty) + 'p {
    move |cx: &mut Lowerer<'_, '_>, name: &ast::Ident| -> (ExprKind, Ty) {
        match params.iter().position(|(n, _)| *n == name.name) {
            Some(i) => (ExprKind::Param(i), params[i].1.clone()),
            None => {
                let mut d = Diagnostic::new(
                    Code::UndefinedName,
                    name.span,
                    format!("there is no parameter named `{}`", name.name),
                )
                .label(format!("not a parameter of this {what}"));
                d = match did_you_mean(&name.name, params.iter().map(|(n, _)| n.as_str())) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None if params.is_empty() => d.help(format!("this {what} takes no parameters")),
                    None => d.help(format!(
                        "a {what} template can use its parameters: {}",
                        params
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                cx.report(d);
                (ExprKind::Error, Ty::Error)
            }
        }
    }
}

/// A template whose names are the given parameters (tools, agents).
fn params_template(
    cx: &mut Lowerer<'_, '_>,
    t: &ast::Template,
    params: &[(String, Ty)],
    what: &str,
) -> Template {
    let mut resolve = params_resolver(params, what);
    lower_template(cx, t, &mut resolve)
}

/// An expression in a tool declaration (`query`, `body`): its names are the
/// tool's parameters.
pub(crate) fn tool_expr(cx: &mut Lowerer<'_, '_>, e: &ast::Expr, params: &[(String, Ty)]) -> Expr {
    let mut resolve = params_resolver(params, "tool");
    lower_expr(cx, e, &mut resolve)
}

pub(crate) fn tool_template(
    cx: &mut Lowerer<'_, '_>,
    t: &ast::Template,
    params: &[(String, Ty)],
) -> Template {
    params_template(cx, t, params, "tool")
}

pub(crate) fn param_template(
    cx: &mut Lowerer<'_, '_>,
    t: &ast::Template,
    params: &[(String, Ty)],
) -> Template {
    params_template(cx, t, params, "agent")
}

pub(crate) fn mismatch(
    cx: &mut Lowerer<'_, '_>,
    span: Span,
    expected: &Ty,
    found: &Ty,
    help: &str,
) {
    let types = &cx.program.types;
    let (e, f) = (types.display(expected), types.display(found));
    let d = Diagnostic::new(
        Code::TypeMismatch,
        span,
        format!("expected `{e}`, found `{f}`"),
    )
    .label(format!("this is `{f}`"))
    .help(help.to_string());
    cx.report(d);
}
