//! A completed step as a commit writes it ([`StepRow`]).

use serde_json::Value;

/// A completed step as a commit writes it: its key (`StepPath`) and its
/// value as JSON text, `None` for a step that was skipped.
///
/// The value is serialized where the step completes, on the run's thread:
/// a commit may run on another thread (`LentStore`), and handing it one
/// string per step, instead of a copy of the value's tree to serialize and
/// free there, keeps the allocator's work on one thread and the commit's
/// short.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRow {
    pub key: String,
    pub value: Option<String>,
}

impl StepRow {
    pub fn new(key: impl Into<String>, value: Option<&Value>) -> StepRow {
        StepRow {
            key: key.into(),
            value: value.map(Value::to_string),
        }
    }
}
