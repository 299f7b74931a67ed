//! Expressions and templates over JSON values. The checker has proved the
//! types, so a failure here means a value broke its declared type at run time
//! (which validation reports first) or an environment variable is missing.

use std::borrow::Cow;

use petgraph::graph::NodeIndex;
use serde_json::{Map, Number, Value};

use crate::exec::{CompareOp, Expr, ExprKind, StrTemplate, Template, TemplatePart};

/// Where names get their values.
pub trait Scope {
    /// A flow, agent or tool parameter.
    fn param(&self, index: usize) -> Option<&Value>;
    /// A completed step's value (or the current loop item).
    fn step(&self, node: NodeIndex) -> Option<&Value>;
    /// An environment variable; only tool templates read these.
    fn env(&self, name: &str) -> Option<String>;
}

#[derive(Clone, Debug, PartialEq)]
pub struct EvalError(pub String);

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A scope of parameters alone: no steps, no environment (an agent's
/// prompt).
pub(crate) struct ParamsScope<'a>(pub &'a [Value]);

impl Scope for ParamsScope<'_> {
    fn param(&self, index: usize) -> Option<&Value> {
        self.0.get(index)
    }
    fn step(&self, _node: NodeIndex) -> Option<&Value> {
        None
    }
    fn env(&self, _name: &str) -> Option<String> {
        None
    }
}

/// `null`, for a member a record does not have.
static NULL: Value = Value::Null;

/// An expression's value, borrowed from the scope where the expression
/// names one (a parameter, a step's value, or a member of one), computed
/// otherwise. So reading `it.id` copies the id, not the whole item, and
/// `items.len` copies nothing.
fn read<'a>(e: &Expr, scope: &'a dyn Scope) -> Result<Cow<'a, Value>, EvalError> {
    Ok(match &e.kind {
        ExprKind::Param(i) => Cow::Borrowed(
            scope
                .param(*i)
                .ok_or_else(|| EvalError(format!("parameter {i} has no value")))?,
        ),
        ExprKind::Step(n) => Cow::Borrowed(
            scope
                .step(*n)
                .ok_or_else(|| EvalError(format!("step {} has no value yet", n.index())))?,
        ),
        ExprKind::Member(base, field) => match read(base, scope)? {
            Cow::Borrowed(Value::Object(map)) => Cow::Borrowed(map.get(field).unwrap_or(&NULL)),
            Cow::Owned(Value::Object(mut map)) => {
                Cow::Owned(map.remove(field).unwrap_or(Value::Null))
            }
            Cow::Borrowed(Value::Null) | Cow::Owned(Value::Null) => Cow::Borrowed(&NULL),
            other => return Err(EvalError(format!("`.{field}` of a {}", kind(&other)))),
        },
        _ => Cow::Owned(eval(e, scope)?),
    })
}

pub fn eval(e: &Expr, scope: &dyn Scope) -> Result<Value, EvalError> {
    Ok(match &e.kind {
        ExprKind::Str(t) => Value::String(render(t, scope)?),
        ExprKind::Number(n) => number(*n),
        ExprKind::Bool(b) => Value::Bool(*b),
        ExprKind::Null => Value::Null,
        ExprKind::Object(fields) => {
            let mut map = Map::with_capacity(fields.len());
            for (k, v) in fields {
                map.insert(k.clone(), eval(v, scope)?);
            }
            Value::Object(map)
        }
        ExprKind::List(items) => Value::Array(
            items
                .iter()
                .map(|i| eval(i, scope))
                .collect::<Result<_, _>>()?,
        ),
        ExprKind::Env(name) => Value::String(
            scope
                .env(name)
                .ok_or_else(|| EvalError(format!("the environment variable {name} is not set")))?,
        ),
        ExprKind::Param(_) | ExprKind::Step(_) | ExprKind::Member(..) => {
            read(e, scope)?.into_owned()
        }
        ExprKind::Len(base) => match &*read(base, scope)? {
            Value::Array(items) => Value::from(items.len()),
            Value::String(s) => Value::from(s.chars().count()),
            Value::Null => Value::Null,
            other => return Err(EvalError(format!("`.len` of a {}", kind(other)))),
        },
        ExprKind::Index(base, index) => {
            let base = eval(base, scope)?;
            let index = eval(index, scope)?;
            let i = index
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .ok_or_else(|| {
                    EvalError(format!("a list index must be a whole number, not {index}"))
                })? as usize;
            match base {
                Value::Array(mut items) if i < items.len() => items.swap_remove(i),
                Value::Array(items) => {
                    return Err(EvalError(format!(
                        "index {i} is past the end of a list of {}",
                        items.len()
                    )))
                }
                other => return Err(EvalError(format!("indexing a {}", kind(&other)))),
            }
        }
        ExprKind::Not(inner) => Value::Bool(!truth(&eval(inner, scope)?)?),
        ExprKind::And(a, b) => Value::Bool(truth(&eval(a, scope)?)? && truth(&eval(b, scope)?)?),
        ExprKind::Or(a, b) => Value::Bool(truth(&eval(a, scope)?)? || truth(&eval(b, scope)?)?),
        ExprKind::Compare(a, op, b) => {
            Value::Bool(compare(&eval(a, scope)?, *op, &eval(b, scope)?)?)
        }
        ExprKind::Error => return Err(EvalError("an unresolved name reached the runtime".into())),
    })
}

/// The one template renderer: each part's text in order, handed to `sink`
/// with the expression it came from (`None` for fixed text). Values become
/// text as [`text_of`] says. A part that cannot be evaluated stops it with
/// the error: a template never renders as something it does not say.
pub fn render_with(
    parts: &[TemplatePart],
    scope: &dyn Scope,
    mut sink: impl FnMut(Option<&Expr>, String) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    for part in parts {
        match part {
            TemplatePart::Text(s) => sink(None, s.clone())?,
            TemplatePart::Expr(e) => sink(Some(e), text_of(eval(e, scope)?))?,
        }
    }
    Ok(())
}

/// A value as template text: strings as they are, null (an absent optional
/// parameter) as nothing, other values as compact JSON.
pub fn text_of(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn render_parts(parts: &[TemplatePart], scope: &dyn Scope) -> Result<String, EvalError> {
    let mut out = String::new();
    render_with(parts, scope, |_, text| {
        out.push_str(&text);
        Ok(())
    })?;
    Ok(out)
}

/// A sealed template's text, in the scope it was typed in.
pub fn render_template(t: &Template, scope: &dyn Scope) -> Result<String, EvalError> {
    render_parts(&t.parts, scope)
}

/// A string literal's text inside an expression.
pub fn render(t: &StrTemplate, scope: &dyn Scope) -> Result<String, EvalError> {
    render_parts(&t.parts, scope)
}

/// Whole numbers as integers, so `{count}` renders `3`, not `3.0`.
pub fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

fn truth(v: &Value) -> Result<bool, EvalError> {
    v.as_bool()
        .ok_or_else(|| EvalError(format!("expected a boolean, found a {}", kind(v))))
}

fn compare(a: &Value, op: CompareOp, b: &Value) -> Result<bool, EvalError> {
    if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
        return Ok(match op {
            CompareOp::Eq => x == y,
            CompareOp::Ne => x != y,
            CompareOp::Lt => x < y,
            CompareOp::Le => x <= y,
            CompareOp::Gt => x > y,
            CompareOp::Ge => x >= y,
        });
    }
    match op {
        CompareOp::Eq => Ok(a == b),
        CompareOp::Ne => Ok(a != b),
        _ => match (a, b) {
            (Value::String(x), Value::String(y)) => Ok(match op {
                CompareOp::Lt => x < y,
                CompareOp::Le => x <= y,
                CompareOp::Gt => x > y,
                _ => x >= y,
            }),
            _ => Err(EvalError(format!(
                "cannot order a {} and a {}",
                kind(a),
                kind(b)
            ))),
        },
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "record",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Ty;
    use serde_json::json;

    fn expr(kind: ExprKind) -> Expr {
        Expr {
            kind,
            ty: Ty::Json,
            span: Default::default(),
        }
    }

    fn member(base: ExprKind, field: &str) -> ExprKind {
        ExprKind::Member(Box::new(expr(base)), field.into())
    }

    #[test]
    fn members_and_lengths_read_through_places_and_computed_values() {
        let params = [json!({"a": {"b": 7}, "n": null}), json!("text")];
        let scope = ParamsScope(&params);
        let value = |kind: ExprKind| eval(&expr(kind), &scope);
        // Borrowed from the scope, nested.
        assert_eq!(
            value(member(member(ExprKind::Param(0), "a"), "b")),
            Ok(json!(7))
        );
        // A missing member, and any member of null, is null.
        assert_eq!(value(member(ExprKind::Param(0), "zz")), Ok(Value::Null));
        assert_eq!(
            value(member(member(ExprKind::Param(0), "n"), "x")),
            Ok(Value::Null)
        );
        // A member of a value computed here.
        let object = ExprKind::Object(vec![("k".into(), expr(ExprKind::Bool(true)))]);
        assert_eq!(value(member(object, "k")), Ok(json!(true)));
        // The errors say what was read.
        assert_eq!(
            value(member(ExprKind::Param(1), "x")),
            Err(EvalError("`.x` of a string".into()))
        );
        assert_eq!(
            value(ExprKind::Param(5)),
            Err(EvalError("parameter 5 has no value".into()))
        );
        // `.len` of a place and of a member of one.
        assert_eq!(
            value(ExprKind::Len(Box::new(expr(ExprKind::Param(1))))),
            Ok(json!(4))
        );
        assert_eq!(
            value(ExprKind::Len(Box::new(expr(member(
                ExprKind::Param(0),
                "a"
            ))))),
            Err(EvalError("`.len` of a record".into()))
        );
    }
}
