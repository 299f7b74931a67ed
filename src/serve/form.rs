//! The edit form a gate's type makes: a record is one input per field (text,
//! number, a choice for a union of literals, yes/no for a bool, JSON for
//! what nests), anything else one JSON text area. What is submitted is read
//! back into a JSON value by the same type, and each problem is tied to the
//! field it is about, so the page shows it beside that field.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use super::render::escape;
use crate::types::{Lit, Ty, TypeTable};

/// How deep named types are followed to find a record.
const MAX_NAMED: usize = 16;

pub(super) enum Input {
    Text,
    Number,
    Int,
    Bool,
    Choice(Vec<Lit>),
    /// A single literal: nothing to choose.
    Fixed(Value),
    Json,
}

pub(super) struct Field {
    pub name: String,
    pub input: Input,
    pub optional: bool,
}

pub(super) enum Form {
    Fields(Vec<Field>),
    /// The whole value as JSON.
    Whole,
}

/// A problem with what was entered: the field it is about (`None`: the
/// value as a whole), and what is wrong.
pub(super) type Problems = Vec<(Option<String>, String)>;

/// The name of a field's input (`f.amount`); the whole value's is `value`.
fn input_name(field: &str) -> String {
    format!("f.{field}")
}

fn resolve<'t>(types: &'t TypeTable, mut ty: &'t Ty) -> &'t Ty {
    for _ in 0..MAX_NAMED {
        match ty {
            Ty::Named(id) => ty = &types.defs[id.0 as usize].ty,
            _ => return ty,
        }
    }
    ty
}

pub(super) fn form_for(types: &TypeTable, ty: &Ty) -> Form {
    match resolve(types, ty) {
        Ty::Record(fields, _) if !fields.is_empty() => Form::Fields(
            fields
                .iter()
                .map(|f| {
                    let (input, optional) = input_for(types, &f.ty);
                    Field {
                        name: f.name.clone(),
                        input,
                        optional: optional || f.optional,
                    }
                })
                .collect(),
        ),
        _ => Form::Whole,
    }
}

fn input_for(types: &TypeTable, ty: &Ty) -> (Input, bool) {
    match resolve(types, ty) {
        Ty::Optional(inner) => (input_for(types, inner).0, true),
        Ty::String(_) => (Input::Text, false),
        Ty::Number(_) => (Input::Number, false),
        Ty::Int(_) => (Input::Int, false),
        Ty::Bool => (Input::Bool, false),
        Ty::Union(lits) => (Input::Choice(lits.clone()), false),
        Ty::Literal(l) => (Input::Fixed(lit_value(l)), false),
        _ => (Input::Json, false),
    }
}

fn lit_value(l: &Lit) -> Value {
    match l {
        Lit::Str(s) => Value::String(s.clone()),
        Lit::Number(n) => Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Lit::Bool(b) => Value::Bool(*b),
    }
}

impl Form {
    /// The fields' names in declaration order (none for a whole value).
    pub fn names(&self) -> Vec<String> {
        match self {
            Form::Fields(fields) => fields.iter().map(|f| f.name.clone()).collect(),
            Form::Whole => Vec::new(),
        }
    }
}

/// Reads the submitted form back into a value of the gate's type (its
/// shape; the type's constraints are the validator's to check).
pub(super) fn read(form: &Form, params: &HashMap<String, String>) -> Result<Value, Problems> {
    let fields = match form {
        Form::Whole => {
            let text = params.get("value").map_or("", String::as_str);
            return serde_json::from_str(text).map_err(|e| vec![(None, format!("not JSON: {e}"))]);
        }
        Form::Fields(fields) => fields,
    };
    let mut out = Map::new();
    let mut problems = Problems::new();
    for f in fields {
        let raw = params.get(&input_name(&f.name)).map_or("", String::as_str);
        if raw.trim().is_empty() && f.optional && !matches!(f.input, Input::Fixed(_)) {
            continue;
        }
        let parsed: Result<Value, String> = match &f.input {
            Input::Text => Ok(Value::String(raw.to_string())),
            // As written: `10` stays an integer, as the person typed it.
            Input::Number => serde_json::from_str::<Number>(raw.trim())
                .map(Value::Number)
                .map_err(|_| format!("`{raw}` is not a number")),
            Input::Int => raw
                .trim()
                .parse::<i64>()
                .map(|n| Value::Number(n.into()))
                .map_err(|_| format!("`{raw}` is not a whole number")),
            Input::Bool => match raw {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err("choose yes or no".into()),
            },
            Input::Choice(lits) => lits
                .iter()
                .map(lit_value)
                .find(|v| choice_text(v) == raw)
                .ok_or_else(|| format!("`{raw}` is not one of the choices")),
            Input::Fixed(v) => Ok(v.clone()),
            Input::Json => serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}")),
        };
        match parsed {
            Ok(v) => {
                out.insert(f.name.clone(), v);
            }
            Err(m) => problems.push((Some(f.name.clone()), m)),
        }
    }
    if problems.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(problems)
    }
}

/// Ties the validator's messages (`/amount: -5 is less than 0`) to the
/// form's fields where the path starts with one.
pub(super) fn attribute(form: &Form, errors: &[String]) -> Problems {
    errors
        .iter()
        .map(|e| {
            let field = match form {
                Form::Fields(fields) => e
                    .strip_prefix('/')
                    .and_then(|rest| rest.split(['/', ':']).next())
                    .filter(|name| fields.iter().any(|f| f.name == *name))
                    .map(str::to_string),
                Form::Whole => None,
            };
            (field, e.clone())
        })
        .collect()
}

fn choice_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The form's inputs, filled with what was submitted (`entered`) or else
/// the shown value, each field's problems beside it.
pub(super) fn html(
    form: &Form,
    shown: &Value,
    entered: Option<&HashMap<String, String>>,
    problems: &Problems,
) -> String {
    let mut out = String::new();
    let problem_list = |field: Option<&str>| -> String {
        problems
            .iter()
            .filter(|(f, _)| f.as_deref() == field)
            .map(|(_, m)| format!("<div class=\"error\" role=\"alert\">{}</div>", escape(m)))
            .collect()
    };
    match form {
        Form::Whole => {
            let text = entered
                .and_then(|p| p.get("value").cloned())
                .unwrap_or_else(|| serde_json::to_string_pretty(shown).unwrap_or_default());
            out.push_str(&format!(
                "<label class=\"field\">value (JSON)<textarea name=\"value\" rows=\"8\">{}</textarea></label>",
                escape(&text)
            ));
            out.push_str(&problem_list(None));
        }
        Form::Fields(fields) => {
            out.push_str(&problem_list(None));
            for f in fields {
                let name = input_name(&f.name);
                let current = entered
                    .and_then(|p| p.get(&name).cloned())
                    .unwrap_or_else(|| match shown.get(&f.name) {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(s)) => s.clone(),
                        Some(v @ (Value::Array(_) | Value::Object(_))) => {
                            serde_json::to_string_pretty(v).unwrap_or_default()
                        }
                        Some(v) => v.to_string(),
                    });
                let label = format!(
                    "{}{}",
                    escape(&f.name),
                    if f.optional {
                        " <span class=\"hint\">(optional)</span>"
                    } else {
                        ""
                    }
                );
                let control = match &f.input {
                    Input::Text => format!(
                        "<input type=\"text\" name=\"{name}\" value=\"{}\">",
                        escape(&current)
                    ),
                    Input::Number | Input::Int => format!(
                        "<input type=\"text\" inputmode=\"decimal\" name=\"{name}\" value=\"{}\">",
                        escape(&current)
                    ),
                    Input::Bool => select(&name, &current, &["true", "false"], f.optional),
                    Input::Choice(lits) => {
                        let options: Vec<String> = lits.iter().map(|l| choice_text(&lit_value(l))).collect();
                        let refs: Vec<&str> = options.iter().map(String::as_str).collect();
                        select(&name, &current, &refs, f.optional)
                    }
                    Input::Fixed(v) => format!(
                        "<input type=\"text\" name=\"{name}\" value=\"{}\" readonly>",
                        escape(&choice_text(v))
                    ),
                    Input::Json => format!(
                        "<textarea name=\"{name}\" rows=\"4\">{}</textarea> <span class=\"hint\">JSON</span>",
                        escape(&current)
                    ),
                };
                out.push_str(&format!(
                    "<label class=\"field\">{label}{control}</label>{}",
                    problem_list(Some(&f.name))
                ));
            }
        }
    }
    out
}

fn select(name: &str, current: &str, options: &[&str], optional: bool) -> String {
    let mut out = format!("<select name=\"{name}\">");
    if optional {
        out.push_str("<option value=\"\">(none)</option>");
    }
    for o in options {
        let shown = match *o {
            "true" => "yes",
            "false" => "no",
            o => o,
        };
        out.push_str(&format!(
            "<option value=\"{}\"{}>{}</option>",
            escape(o),
            if *o == current { " selected" } else { "" },
            escape(shown)
        ));
    }
    out.push_str("</select>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Constraints, Field as TyField, Openness};

    fn refund() -> Ty {
        Ty::Record(
            vec![
                TyField {
                    name: "order".into(),
                    ty: Ty::String(Constraints::default()),
                    optional: false,
                },
                TyField {
                    name: "amount".into(),
                    ty: Ty::Number(Constraints::default()),
                    optional: false,
                },
                TyField {
                    name: "kind".into(),
                    ty: Ty::Union(vec![Lit::Str("full".into()), Lit::Str("partial".into())]),
                    optional: false,
                },
                TyField {
                    name: "note".into(),
                    ty: Ty::String(Constraints::default()),
                    optional: true,
                },
            ],
            Openness::Exact,
        )
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_record_form_reads_back_into_a_value_and_says_which_field_is_wrong() {
        let form = form_for(&TypeTable::default(), &refund());
        let v = read(
            &form,
            &params(&[
                ("f.order", "A-1"),
                ("f.amount", "12.5"),
                ("f.kind", "partial"),
                ("f.note", ""),
            ]),
        )
        .expect("reads");
        assert_eq!(
            v,
            serde_json::json!({"order": "A-1", "amount": 12.5, "kind": "partial"})
        );
        let e = read(
            &form,
            &params(&[
                ("f.order", "A-1"),
                ("f.amount", "lots"),
                ("f.kind", "other"),
            ]),
        )
        .expect_err("two problems");
        assert_eq!(
            e,
            vec![
                (Some("amount".into()), "`lots` is not a number".into()),
                (
                    Some("kind".into()),
                    "`other` is not one of the choices".into()
                )
            ]
        );
        let problems = attribute(
            &form,
            &[
                "/amount: -5 is less than the minimum of 0".into(),
                "/: extra".into(),
            ],
        );
        assert_eq!(problems[0].0.as_deref(), Some("amount"));
        assert_eq!(problems[1].0, None);
    }

    #[test]
    fn the_form_shows_the_value_and_problems_beside_their_fields() {
        let form = form_for(&TypeTable::default(), &refund());
        let html = html(
            &form,
            &serde_json::json!({"order": "A-<1>", "amount": 3, "kind": "full"}),
            None,
            &vec![(Some("amount".into()), "too big".into())],
        );
        assert!(
            html.contains("name=\"f.order\" value=\"A-&lt;1&gt;\""),
            "{html}"
        );
        assert!(html.contains("value=\"full\" selected"), "{html}");
        assert!(html.contains("name=\"f.amount\" value=\"3\"></label><div class=\"error\" role=\"alert\">too big</div>"), "{html}");
    }
}
