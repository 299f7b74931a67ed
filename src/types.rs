//! Resolved types. Types are schemas: every [`Ty`] lowers to JSON Schema
//! (`schema.rs`), and assignability here is the static half of what the
//! runtime validates.

use std::fmt;

/// Index of a named type in [`TypeTable`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TypeId(pub u32);

#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Constraints {
    pub pattern: Option<String>,
    pub min_len: Option<u64>,
    pub max_len: Option<u64>,
    /// Lower bound and whether it is exclusive.
    pub min: Option<(f64, bool)>,
    pub max: Option<(f64, bool)>,
}

impl Constraints {
    pub fn is_empty(&self) -> bool {
        *self == Constraints::default()
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Lit {
    Str(String),
    Number(f64),
    Bool(bool),
}

impl fmt::Display for Lit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lit::Str(s) => write!(f, "{s:?}"),
            Lit::Number(n) => write!(f, "{n}"),
            Lit::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Field {
    pub name: String,
    pub ty: Ty,
    pub optional: bool,
}

/// Whether a record accepts fields it does not declare in data coming in
/// (tool results, model outputs). Data going out (tool arguments, the
/// schema a model is asked to fill) is always exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Openness {
    /// `{ … }`: undeclared fields are accepted and dropped, so a real API's
    /// 300-field response fits a type naming the three fields a flow uses.
    #[default]
    Open,
    /// `exact { … }`: undeclared fields are a validation error.
    Exact,
}

/// Which way a value crosses the program's boundary; decides whether open
/// records accept undeclared fields (see [`Openness`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// Tool results and model outputs: open records stay open.
    Incoming,
    /// Tool arguments, flow inputs, the schema sent to a model: every record
    /// is exact.
    Outgoing,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Ty {
    /// A type that could not be resolved; already reported, fits anywhere.
    Error,
    /// Any JSON value: `json`, or a schema file's opaque parts.
    Json,
    String(Constraints),
    Number(Constraints),
    Int(Constraints),
    Bool,
    Null,
    Literal(Lit),
    /// A union of literals, `"a" | "b"`.
    Union(Vec<Lit>),
    Optional(Box<Ty>),
    List(Box<Ty>, Constraints),
    Record(Vec<Field>, Openness),
    Named(TypeId),
    /// A `schema "file.json"` type: its JSON Schema, kept as written.
    Schema(u32),
}

/// A named type: `type Invoice { … }`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TypeDef {
    pub name: String,
    pub ty: Ty,
}

/// The named types of a program and the schema files they use.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TypeTable {
    pub defs: Vec<TypeDef>,
    pub schemas: Vec<SchemaFile>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SchemaFile {
    pub path: String,
    #[serde(with = "crate::json_text")]
    pub schema: serde_json::Value,
}

impl Ty {
    pub fn string() -> Ty {
        Ty::String(Constraints::default())
    }
    pub fn number() -> Ty {
        Ty::Number(Constraints::default())
    }
    pub fn int() -> Ty {
        Ty::Int(Constraints::default())
    }
    pub fn list(of: Ty) -> Ty {
        Ty::List(Box::new(of), Constraints::default())
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Ty::Error)
    }
}

impl TypeTable {
    pub fn def(&self, id: TypeId) -> &TypeDef {
        &self.defs[id.0 as usize]
    }

    /// Follows named types to a structural type (at most a bounded number of
    /// steps, so an alias cycle that slipped through cannot loop).
    pub fn resolve<'a>(&'a self, mut ty: &'a Ty) -> &'a Ty {
        for _ in 0..64 {
            match ty {
                Ty::Named(id) => ty = &self.def(*id).ty,
                _ => return ty,
            }
        }
        &Ty::Error
    }

    /// The list's maximum length, if the type is a list that declares one.
    pub fn max_len(&self, ty: &Ty) -> Option<u64> {
        match self.resolve(ty) {
            Ty::List(_, c) => c.max_len,
            Ty::Optional(inner) => self.max_len(inner),
            _ => None,
        }
    }

    /// The element type of a list (or of an optional list).
    pub fn element(&self, ty: &Ty) -> Option<Ty> {
        match self.resolve(ty) {
            Ty::List(inner, _) => Some((**inner).clone()),
            Ty::Optional(inner) => self.element(inner),
            Ty::Json | Ty::Error | Ty::Schema(_) => Some(Ty::Json),
            _ => None,
        }
    }

    /// The type of `ty.name`, or `None` if there is no such field.
    pub fn field(&self, ty: &Ty, name: &str) -> Option<Ty> {
        match self.resolve(ty) {
            Ty::Record(fields, _) => fields.iter().find(|f| f.name == name).map(|f| {
                if f.optional {
                    Ty::Optional(Box::new(f.ty.clone()))
                } else {
                    f.ty.clone()
                }
            }),
            Ty::Optional(inner) => self.field(inner, name).map(|t| match t {
                Ty::Optional(_) => t,
                t => Ty::Optional(Box::new(t)),
            }),
            Ty::Json | Ty::Error => Some(Ty::Json),
            Ty::Schema(id) => Some(self.schema_field(*id, name)),
            _ => None,
        }
    }

    fn schema_field(&self, id: u32, name: &str) -> Ty {
        // A schema file's fields are not typed statically beyond existing; the
        // runtime validates them against the file.
        let _ = (id, name);
        Ty::Json
    }

    /// The record's field names, for "did you mean" and error labels.
    pub fn field_names(&self, ty: &Ty) -> Vec<String> {
        match self.resolve(ty) {
            Ty::Record(fields, _) => fields.iter().map(|f| f.name.clone()).collect(),
            Ty::Optional(inner) => self.field_names(inner),
            _ => Vec::new(),
        }
    }

    /// Whether a value of type `from` may be used where `to` is expected.
    /// Constraints are not compared: they are checked on the value at run time.
    pub fn assignable(&self, from: &Ty, to: &Ty) -> bool {
        self.assignable_depth(from, to, 0)
    }

    fn assignable_depth(&self, from: &Ty, to: &Ty, depth: u32) -> bool {
        if depth > 64 {
            return true;
        }
        if let (Ty::Named(a), Ty::Named(b)) = (from, to) {
            if a == b {
                return true;
            }
        }
        let from = self.resolve(from);
        let to = self.resolve(to);
        let d = depth + 1;
        match (from, to) {
            (Ty::Error, _) | (_, Ty::Error) | (_, Ty::Json) | (Ty::Json, _) => true,
            (Ty::Schema(_), _) | (_, Ty::Schema(_)) => true,
            (Ty::Null, Ty::Optional(_)) | (Ty::Null, Ty::Null) => true,
            (Ty::Optional(a), Ty::Optional(b)) => self.assignable_depth(a, b, d),
            (Ty::Optional(_), _) => false,
            (_, Ty::Optional(b)) => self.assignable_depth(from, b, d),
            (Ty::String(_), Ty::String(_)) => true,
            (Ty::Literal(Lit::Str(_)), Ty::String(_)) => true,
            (Ty::Union(ls), Ty::String(_)) => ls.iter().all(|l| matches!(l, Lit::Str(_))),
            (Ty::Number(_) | Ty::Int(_), Ty::Number(_)) => true,
            (Ty::Literal(Lit::Number(_)), Ty::Number(_)) => true,
            (Ty::Int(_), Ty::Int(_)) => true,
            (Ty::Literal(Lit::Number(n)), Ty::Int(_)) => n.fract() == 0.0,
            (Ty::Union(ls), Ty::Number(_)) => ls.iter().all(|l| matches!(l, Lit::Number(_))),
            (Ty::Union(ls), Ty::Int(_)) => ls
                .iter()
                .all(|l| matches!(l, Lit::Number(n) if n.fract() == 0.0)),
            (Ty::Bool, Ty::Bool) | (Ty::Literal(Lit::Bool(_)), Ty::Bool) => true,
            (Ty::Literal(a), Ty::Literal(b)) => a == b,
            (Ty::Literal(a), Ty::Union(bs)) => bs.contains(a),
            (Ty::Union(as_), Ty::Union(bs)) => as_.iter().all(|a| bs.contains(a)),
            (Ty::Union(as_), Ty::Literal(b)) => as_.iter().all(|a| a == b),
            (Ty::List(a, _), Ty::List(b, _)) => self.assignable_depth(a, b, d),
            (Ty::Record(fs, _), Ty::Record(gs, _)) => {
                let required_present =
                    gs.iter()
                        .all(|g| match fs.iter().find(|f| f.name == g.name) {
                            Some(f) => {
                                (g.optional || !f.optional)
                                    && self.assignable_depth(&f.ty, &g.ty, d)
                            }
                            None => g.optional,
                        });
                let no_extra = fs.iter().all(|f| gs.iter().any(|g| g.name == f.name));
                required_present && no_extra
            }
            _ => false,
        }
    }

    /// The least type both values fit, if there is one: literals of one kind
    /// merge into a union, records join field by field, null makes an optional.
    pub fn join(&self, a: &Ty, b: &Ty) -> Option<Ty> {
        self.join_depth(a, b, 0)
    }

    fn join_depth(&self, a: &Ty, b: &Ty, depth: u32) -> Option<Ty> {
        if depth > 32 {
            return None;
        }
        if self.assignable(a, b) {
            return Some(b.clone());
        }
        if self.assignable(b, a) {
            return Some(a.clone());
        }
        let (ra, rb) = (self.resolve(a), self.resolve(b));
        let lits = |t: &Ty| -> Option<Vec<Lit>> {
            match t {
                Ty::Literal(l) => Some(vec![l.clone()]),
                Ty::Union(ls) => Some(ls.clone()),
                _ => None,
            }
        };
        match (ra, rb) {
            (Ty::Null, other) | (other, Ty::Null) => Some(Ty::Optional(Box::new(other.clone()))),
            (Ty::Optional(x), y) | (y, Ty::Optional(x)) => {
                let inner = self.join_depth(x, y, depth + 1)?;
                Some(match inner {
                    Ty::Optional(_) => inner,
                    t => Ty::Optional(Box::new(t)),
                })
            }
            (Ty::List(x, _), Ty::List(y, _)) => Some(Ty::list(self.join_depth(x, y, depth + 1)?)),
            (Ty::Record(fs, fo), Ty::Record(gs, go)) => {
                // A field only one side has becomes optional.
                let mut fields = Vec::with_capacity(fs.len().max(gs.len()));
                for f in fs {
                    match gs.iter().find(|g| g.name == f.name) {
                        Some(g) => fields.push(Field {
                            name: f.name.clone(),
                            ty: self.join_depth(&f.ty, &g.ty, depth + 1)?,
                            optional: f.optional || g.optional,
                        }),
                        None => fields.push(Field {
                            optional: true,
                            ..f.clone()
                        }),
                    }
                }
                for g in gs {
                    if !fs.iter().any(|f| f.name == g.name) {
                        fields.push(Field {
                            optional: true,
                            ..g.clone()
                        });
                    }
                }
                let openness = if *fo == Openness::Exact && *go == Openness::Exact {
                    Openness::Exact
                } else {
                    Openness::Open
                };
                Some(Ty::Record(fields, openness))
            }
            _ => {
                let (la, lb) = (lits(ra)?, lits(rb)?);
                let mut all = la;
                for l in lb {
                    if !all.contains(&l) {
                        all.push(l);
                    }
                }
                let same_kind = all
                    .iter()
                    .all(|l| std::mem::discriminant(l) == std::mem::discriminant(&all[0]));
                same_kind.then_some(Ty::Union(all))
            }
        }
    }

    /// `value` with only the fields `ty` declares, at every depth: what an
    /// open record lets in but the flow never sees. Called on values that
    /// already validated against `ty`, so shapes agree; where they do not,
    /// the value is kept as it is.
    pub fn project(&self, ty: &Ty, value: serde_json::Value) -> serde_json::Value {
        self.project_depth(ty, value, 0)
    }

    fn project_depth(&self, ty: &Ty, value: serde_json::Value, depth: u32) -> serde_json::Value {
        use serde_json::Value;
        if depth > 256 {
            return value;
        }
        match (self.resolve(ty), value) {
            (Ty::Optional(inner), v) if !v.is_null() => self.project_depth(inner, v, depth + 1),
            (Ty::List(inner, _), Value::Array(items)) => Value::Array(
                items
                    .into_iter()
                    .map(|v| self.project_depth(inner, v, depth + 1))
                    .collect(),
            ),
            (Ty::Record(fields, _), Value::Object(mut map)) => {
                let mut out = serde_json::Map::with_capacity(fields.len());
                for f in fields {
                    if let Some(v) = map.remove(&f.name) {
                        out.insert(f.name.clone(), self.project_depth(&f.ty, v, depth + 1));
                    }
                }
                Value::Object(out)
            }
            (_, v) => v,
        }
    }

    /// The type as an author would write it.
    pub fn display(&self, ty: &Ty) -> String {
        let mut out = String::new();
        self.write(ty, &mut out, 0);
        out
    }

    fn write(&self, ty: &Ty, out: &mut String, depth: u32) {
        use std::fmt::Write;
        if depth > 3 {
            out.push('…');
            return;
        }
        match ty {
            Ty::Error => out.push_str("<unknown>"),
            Ty::Json => out.push_str("json"),
            Ty::String(_) => out.push_str("string"),
            Ty::Number(_) => out.push_str("number"),
            Ty::Int(_) => out.push_str("int"),
            Ty::Bool => out.push_str("bool"),
            Ty::Null => out.push_str("null"),
            Ty::Literal(l) => {
                let _ = write!(out, "{l}");
            }
            Ty::Union(ls) => {
                let parts: Vec<String> = ls.iter().map(|l| l.to_string()).collect();
                out.push_str(&parts.join(" | "));
            }
            Ty::Optional(inner) => {
                let union =
                    matches!(self.resolve(inner), Ty::Union(_)) && !matches!(**inner, Ty::Named(_));
                if union {
                    out.push('(');
                }
                self.write(inner, out, depth + 1);
                if union {
                    out.push(')');
                }
                out.push('?');
            }
            Ty::List(inner, _) => {
                out.push('[');
                self.write(inner, out, depth + 1);
                out.push(']');
            }
            Ty::Record(fields, openness) => {
                if *openness == Openness::Exact {
                    out.push_str("exact ");
                }
                out.push_str("{ ");
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&f.name);
                    if f.optional {
                        out.push('?');
                    }
                    out.push_str(": ");
                    self.write(&f.ty, out, depth + 1);
                }
                out.push_str(" }");
            }
            Ty::Named(id) => out.push_str(&self.def(*id).name),
            Ty::Schema(id) => {
                let _ = write!(out, "schema {:?}", self.schemas[*id as usize].path);
            }
        }
    }
}
