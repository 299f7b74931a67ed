//! Values against types, with the `jsonschema` crate: tool arguments before a
//! call, tool results and model outputs after. Compiled validators are cached
//! per schema.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use petgraph::graph::NodeIndex;

use crate::exec::{FlowId, Tool, ToolId};
use crate::run::providers::ResponseSchema;
use crate::schema;
use crate::types::{Boundary, Ty, TypeTable};

/// At most this many violations are reported for one value.
const MAX_ERRORS: usize = 20;
/// A violation's message quotes the offending value; long ones are cut.
const MAX_MESSAGE_CHARS: usize = 300;

/// A cache of compiled validators, one per distinct schema (keyed by the
/// schema's JSON text). Shared between concurrent steps.
///
/// Tools' validators are also kept by tool name, so a call does not build
/// and print its schemas again: one `Validators` serves one program.
#[derive(Default)]
pub struct Validators {
    cache: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
    /// `llm` steps' outputs, by step: built at a step's first call, so a
    /// fan-out's thousand calls neither build nor print its schemas again.
    llm_outputs: Mutex<HashMap<(FlowId, NodeIndex), Arc<LlmOutput>>>,
    tool_args: Mutex<HashMap<ToolId, Arc<jsonschema::Validator>>>,
    tool_results: Mutex<HashMap<ToolId, Arc<jsonschema::Validator>>>,
}

impl Validators {
    /// `Ok` when `value` is exactly a `ty` (no undeclared fields anywhere);
    /// otherwise one message per violation, each naming where in the value it
    /// is (`/items/0/amount: -3 is less than 0`).
    pub fn check(&self, types: &TypeTable, ty: &Ty, value: &Value) -> Result<(), Vec<String>> {
        self.check_schema(&schema::document(types, ty, Boundary::Outgoing), value)
    }

    /// A value coming in (a model's output): validated with open records
    /// accepting undeclared fields, then cut down to the declared ones, so
    /// the flow and its prompts see only what the type names.
    pub fn accept(&self, types: &TypeTable, ty: &Ty, value: Value) -> Result<Value, Vec<String>> {
        self.check_schema(&schema::document(types, ty, Boundary::Incoming), &value)?;
        Ok(types.project(ty, value))
    }

    /// What `llm` step `step`, whose output is a `ty`, asks of its model and
    /// checks its replies with; built once per step.
    pub fn llm_output(
        &self,
        types: &TypeTable,
        step: (FlowId, NodeIndex),
        ty: &Ty,
    ) -> Arc<LlmOutput> {
        let lock = || self.llm_outputs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(output) = lock().get(&step) {
            return output.clone();
        }
        let output = Arc::new(LlmOutput {
            // Text needs no structured output.
            request: match types.resolve(ty) {
                Ty::String(_) => None,
                _ => Some(ResponseSchema::new(schema::document(
                    types,
                    ty,
                    Boundary::Outgoing,
                ))),
            },
            replies: self.validator(&schema::document(types, ty, Boundary::Incoming)),
        });
        lock().entry(step).or_insert(output).clone()
    }

    /// `Ok` when `args`, an object, fit a parameter list (name, type,
    /// optional): every required parameter present, no others, each of its
    /// type.
    pub fn check_args(
        &self,
        types: &TypeTable,
        params: &[(String, Ty, bool)],
        args: &Value,
    ) -> Result<(), Vec<String>> {
        self.check_schema(&schema::params_document(types, params), args)
    }

    /// A tool's arguments against its parameters, as [`Validators::check_args`].
    /// The map is lent to a `Value` for the check and handed back: every
    /// tool call is checked, and a copy of its arguments would cost one.
    pub fn check_tool_args(
        &self,
        types: &TypeTable,
        tool: &Tool,
        args: &mut Map<String, Value>,
    ) -> Result<(), Vec<String>> {
        let validator = self.tool_validator(&self.tool_args, tool.id, || {
            schema::params_document(types, &crate::exec::signature(&tool.params))
        })?;
        let lent = Value::Object(std::mem::take(args));
        let checked = Self::violations(&validator, &lent);
        if let Value::Object(map) = lent {
            *args = map;
        }
        checked
    }

    /// A tool's result against its output type, as [`Validators::accept`].
    pub fn accept_tool_result(
        &self,
        types: &TypeTable,
        tool: &Tool,
        value: Value,
    ) -> Result<Value, Vec<String>> {
        let validator = self.tool_validator(&self.tool_results, tool.id, || {
            schema::document(types, &tool.output, Boundary::Incoming)
        })?;
        Self::violations(&validator, &value)?;
        Ok(types.project(&tool.output, value))
    }

    /// A tool's validator, built from `schema` the first time.
    fn tool_validator(
        &self,
        by_tool: &Mutex<HashMap<ToolId, Arc<jsonschema::Validator>>>,
        tool: ToolId,
        schema: impl FnOnce() -> Value,
    ) -> Result<Arc<jsonschema::Validator>, Vec<String>> {
        let lock = || by_tool.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = lock().get(&tool) {
            return Ok(v.clone());
        }
        let validator = self.validator(&schema())?;
        lock().insert(tool, validator.clone());
        Ok(validator)
    }

    /// `value` against a JSON Schema document (draft 2020-12).
    pub fn check_schema(&self, schema: &Value, value: &Value) -> Result<(), Vec<String>> {
        let validator = self.validator(schema)?;
        Self::violations(&validator, value)
    }

    /// `Ok`, or one message per violation, by path.
    fn violations(validator: &jsonschema::Validator, value: &Value) -> Result<(), Vec<String>> {
        // The common answer first: a valid value walks the schema without
        // gathering anything.
        if validator.is_valid(value) {
            return Ok(());
        }
        let mut found: Vec<(String, String)> = validator
            .iter_errors(value)
            .map(|e| (e.instance_path().to_string(), message(&e)))
            .collect();
        if found.is_empty() {
            return Ok(());
        }
        // By path (`/a` before `/a/b`, `/2` before `/10`), then by message.
        found.sort_by_cached_key(|(path, message)| (path_key(path), message.clone()));
        found.dedup();
        let mut errors: Vec<String> = found
            .into_iter()
            .map(|(path, message)| {
                let path = if path.is_empty() { "/" } else { path.as_str() };
                format!("{path}: {message}")
            })
            .collect();
        if errors.len() > MAX_ERRORS {
            let more = errors.len() - (MAX_ERRORS - 1);
            errors.truncate(MAX_ERRORS - 1);
            errors.push(format!("…and {more} more violations"));
        }
        Err(errors)
    }

    /// The compiled validator of a schema, from the cache when it is there.
    fn validator(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, Vec<String>> {
        let key = schema.to_string();
        if let Some(v) = self.lock().get(&key) {
            return Ok(v.clone());
        }
        // Compile outside the lock: another step may be validating meanwhile.
        // Two steps compiling the same schema at once both succeed; one wins.
        let compiled = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(schema)
            .map_err(|e| {
                vec![format!(
                    "/: the type's schema does not compile: {}",
                    truncate(&e.to_string(), MAX_MESSAGE_CHARS)
                )]
            })?;
        let compiled = Arc::new(compiled);
        Ok(self.lock().entry(key).or_insert(compiled).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<jsonschema::Validator>>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many distinct schemas have been compiled.
    pub fn cached(&self) -> usize {
        self.lock().len()
    }
}

/// An `llm` step's output: the schema its requests carry and the validator
/// of its model's replies.
pub struct LlmOutput {
    /// Sent with each request (structured output); `None` when the output
    /// is text.
    pub request: Option<ResponseSchema>,
    /// Open records accept undeclared fields (cut away after); `Err`: the
    /// type's schema did not compile, which each reply is told.
    replies: Result<Arc<jsonschema::Validator>, Vec<String>>,
}

impl LlmOutput {
    /// A reply's value, as [`Validators::accept`] takes it.
    pub fn accept(&self, types: &TypeTable, ty: &Ty, value: Value) -> Result<Value, Vec<String>> {
        let validator = self.replies.as_ref().map_err(Clone::clone)?;
        Validators::violations(validator, &value)?;
        Ok(types.project(ty, value))
    }
}

/// The crate's message, with a long quoted value shortened so the part that
/// says what is wrong survives (`[{…}, …] has more than 200 items`).
fn message(e: &jsonschema::ValidationError<'_>) -> String {
    const MAX_VALUE_CHARS: usize = 80;
    let text = e.to_string();
    let value = e.instance().to_string();
    let text = if value.chars().count() > MAX_VALUE_CHARS && text.contains(&value) {
        text.replacen(&value, &truncate(&value, MAX_VALUE_CHARS), 1)
    } else {
        text
    };
    truncate(&text, MAX_MESSAGE_CHARS)
}

/// A JSON pointer as sortable segments: indexes compare as numbers.
fn path_key(path: &str) -> Vec<(u8, u64, String)> {
    path.split('/')
        .skip(1)
        .map(|seg| match seg.parse::<u64>() {
            Ok(n) => (0, n, String::new()),
            Err(_) => (1, 0, seg.to_string()),
        })
        .collect()
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn validators_are_shareable() {
        assert_send_sync::<Validators>();
    }
}
