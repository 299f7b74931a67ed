//! Types → JSON Schema (draft 2020-12). This is the contract the runtime
//! validates tool arguments, tool results and model outputs against, and what
//! `flowc schema` prints.
//!
//! Records lower by [`Boundary`]: coming in (tool results, model outputs) an
//! open record says `"additionalProperties": true` and an `exact` one
//! `false`; going out (arguments, the schema a model fills) every record is
//! exact, so a flow never sends a field nobody declared.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::types::{Boundary, Constraints, Lit, Openness, Ty, TypeId, TypeTable};

const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// A self-contained schema for `ty`: named types it uses go into `$defs`.
pub fn document(table: &TypeTable, ty: &Ty, boundary: Boundary) -> Value {
    let mut defs = BTreeMap::new();
    let mut schema = Lowering { table, boundary }.lower(ty, &mut defs);
    if let Value::Object(map) = &mut schema {
        map.insert("$schema".into(), json!(DIALECT));
        if !defs.is_empty() {
            map.insert("$defs".into(), Value::Object(defs.into_iter().collect()));
        }
    }
    schema
}

/// The schema of a parameter list, as an object with one property per
/// parameter. Arguments go out, so every record in it is exact.
pub fn params_document(table: &TypeTable, params: &[(String, Ty, bool)]) -> Value {
    let mut defs = BTreeMap::new();
    let mut props = Map::new();
    let mut required = Vec::new();
    let lowering = Lowering {
        table,
        boundary: Boundary::Outgoing,
    };
    for (name, ty, optional) in params {
        props.insert(name.clone(), lowering.lower(ty, &mut defs));
        if !optional {
            required.push(json!(name));
        }
    }
    let mut schema = json!({
        "$schema": DIALECT,
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    });
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs.into_iter().collect());
    }
    schema
}

struct Lowering<'a> {
    table: &'a TypeTable,
    boundary: Boundary,
}

impl Lowering<'_> {
    fn lower(&self, ty: &Ty, defs: &mut BTreeMap<String, Value>) -> Value {
        match ty {
            Ty::Error | Ty::Json => json!({}),
            Ty::String(c) => with_constraints(json!({"type": "string"}), c, false),
            Ty::Number(c) => with_constraints(json!({"type": "number"}), c, false),
            Ty::Int(c) => with_constraints(json!({"type": "integer"}), c, false),
            Ty::Bool => json!({"type": "boolean"}),
            Ty::Null => json!({"type": "null"}),
            Ty::Literal(l) => json!({"const": lit(l)}),
            Ty::Union(ls) => json!({"enum": ls.iter().map(lit).collect::<Vec<_>>()}),
            Ty::Optional(inner) => json!({"anyOf": [self.lower(inner, defs), {"type": "null"}]}),
            Ty::List(inner, c) => with_constraints(
                json!({"type": "array", "items": self.lower(inner, defs)}),
                c,
                true,
            ),
            Ty::Record(fields, openness) => {
                let mut props = Map::new();
                let mut required = Vec::new();
                for f in fields {
                    props.insert(f.name.clone(), self.lower(&f.ty, defs));
                    if !f.optional {
                        required.push(json!(f.name));
                    }
                }
                let open = self.boundary == Boundary::Incoming && *openness == Openness::Open;
                json!({"type": "object", "properties": props, "required": required, "additionalProperties": open})
            }
            Ty::Named(id) => self.named(*id, defs),
            Ty::Schema(id) => self.table.schemas[*id as usize].schema.clone(),
        }
    }

    fn named(&self, id: TypeId, defs: &mut BTreeMap<String, Value>) -> Value {
        let def = self.table.def(id);
        if !defs.contains_key(&def.name) {
            // Insert a placeholder first so recursive types terminate.
            defs.insert(def.name.clone(), Value::Null);
            let body = self.lower(&def.ty, defs);
            defs.insert(def.name.clone(), body);
        }
        json!({"$ref": format!("#/$defs/{}", def.name)})
    }
}

fn lit(l: &Lit) -> Value {
    match l {
        Lit::Str(s) => json!(s),
        Lit::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => json!(*n as i64),
        Lit::Number(n) => json!(n),
        Lit::Bool(b) => json!(b),
    }
}

fn with_constraints(mut schema: Value, c: &Constraints, list: bool) -> Value {
    let map = match schema.as_object_mut() {
        Some(m) => m,
        None => return schema,
    };
    if let Some(p) = &c.pattern {
        map.insert("pattern".into(), json!(p));
    }
    let (min_key, max_key) = if list {
        ("minItems", "maxItems")
    } else {
        ("minLength", "maxLength")
    };
    if let Some(n) = c.min_len {
        map.insert(min_key.into(), json!(n));
    }
    if let Some(n) = c.max_len {
        map.insert(max_key.into(), json!(n));
    }
    if let Some((n, exclusive)) = c.min {
        map.insert(
            if exclusive {
                "exclusiveMinimum"
            } else {
                "minimum"
            }
            .into(),
            json!(n),
        );
    }
    if let Some((n, exclusive)) = c.max {
        map.insert(
            if exclusive {
                "exclusiveMaximum"
            } else {
                "maximum"
            }
            .into(),
            json!(n),
        );
    }
    schema
}
