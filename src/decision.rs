//! A gate decided from outside its run (`flowc approve --edit`, `flowc
//! serve`): the gate's type, read from the run's own program, and an edited
//! value checked against it with the runtime's validators, so a value the
//! run would refuse is refused when it is entered, with the reasons.

use serde_json::Value;

use crate::ir::{Program, StepKind};
use crate::run::validate::Validators;
use crate::types::{Ty, TypeTable};

/// Why an edited value is not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EditError {
    /// The program has no such gate in that flow (a run of another program).
    NoGate { flow: String, gate: String },
    /// The value does not type-check: the type as written, and one message
    /// per violation with its path in the value (`/amount: -5 is less than 0`).
    Invalid { ty: String, errors: Vec<String> },
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EditError::NoGate { flow, gate } => {
                write!(f, "flow `{flow}` no longer has gate `{gate}`")
            }
            EditError::Invalid { ty, errors } => write!(
                f,
                "the edited value does not type-check against `{ty}`:\n  {}",
                errors.join("\n  ")
            ),
        }
    }
}

/// The type of the value gate `gate` of flow `flow` releases.
pub fn gate_type<'p>(program: &'p Program, flow: &str, gate: &str) -> Option<&'p Ty> {
    program
        .flows
        .iter()
        .filter(|f| f.name == flow)
        .flat_map(|f| f.graph.node_weights())
        .find(|s| matches!(&s.kind, StepKind::Approve(a) if a.gate == gate))
        .map(|s| &s.ty)
}

/// `Ok` when `value` may replace what gate `gate` of flow `flow` shows.
pub fn check_edit(
    program: &Program,
    flow: &str,
    gate: &str,
    value: &Value,
) -> Result<(), EditError> {
    let ty = gate_type(program, flow, gate).ok_or_else(|| EditError::NoGate {
        flow: flow.into(),
        gate: gate.into(),
    })?;
    check_value(&program.types, ty, value)
}

/// `Ok` when `value` is exactly a `ty`: the check the run makes when it
/// reads an edited value back.
pub fn check_value(types: &TypeTable, ty: &Ty, value: &Value) -> Result<(), EditError> {
    Validators::default()
        .check(types, ty, value)
        .map_err(|errors| EditError::Invalid {
            ty: types.display(ty),
            errors,
        })
}
