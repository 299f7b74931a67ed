//! Failures are values: every model, tool or step failure is a [`CallError`]
//! with a class that retry policies name (`retry 3 on rate_limit, timeout`).

use std::fmt;
use std::time::Duration;

use super::budget::Exhausted;

pub use crate::exec::ErrorClass;

/// One failed attempt of a model or tool call.
#[derive(Clone, Debug, PartialEq)]
pub struct CallError {
    pub class: ErrorClass,
    /// What went wrong, for people. Never contains a secret.
    pub message: String,
    /// A server's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The HTTP status, when there was one.
    pub status: Option<u16>,
}

impl CallError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> CallError {
        CallError {
            class,
            message: message.into(),
            retry_after: None,
            status: None,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class.as_str(), self.message)
    }
}

impl std::error::Error for CallError {}

/// Why a run stopped early.
#[derive(Debug, Clone)]
pub enum Stop {
    Failed(RunError),
    Exhausted(Exhausted),
}

/// Why a step failed: a call's class (the names `retry … on` uses), or
/// what else stopped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// A tool, model or agent call failed in this way.
    Call(ErrorClass),
    /// The circuit breaker of the call's model or tool was open and the call
    /// had no fallback left.
    CircuitBreaker,
    /// An agent used all of its `max_steps` turns.
    MaxSteps,
    /// An agent called one tool with the same arguments too often in a row.
    MaxRepeat,
    /// A template (an idempotency key, instructions, a prompt) did not
    /// render: a value it reads is missing or has the wrong shape.
    Template,
    /// An expression had no value of its declared shape at run time.
    Value,
    /// A `check` did not hold.
    Check,
    /// An approval gate's decision could not be used.
    Gate,
    /// The run store failed.
    Store,
}

impl FailureClass {
    /// The class as error messages and the JSON report show it; `None` for
    /// failures that are not a call's.
    pub fn name(self) -> Option<&'static str> {
        match self {
            FailureClass::Call(c) => Some(c.as_str()),
            FailureClass::CircuitBreaker => Some("circuit_breaker"),
            FailureClass::MaxSteps => Some("max_steps"),
            FailureClass::MaxRepeat => Some("max_repeat"),
            FailureClass::Template => Some("template"),
            FailureClass::Value
            | FailureClass::Check
            | FailureClass::Gate
            | FailureClass::Store => None,
        }
    }
}

impl FailureClass {
    /// Whether a `tolerate` loop may absorb a failed iteration of this
    /// class: not a failing run store, which is the run's, not the item's.
    pub fn is_tolerable(self) -> bool {
        self != FailureClass::Store
    }

    /// The class as a tolerant loop's `failed[].class` names it (one of
    /// `exec::ITERATION_FAILURE_CLASSES`).
    pub fn label(self) -> &'static str {
        match self {
            FailureClass::Call(c) => c.as_str(),
            FailureClass::CircuitBreaker => "circuit_breaker",
            FailureClass::MaxSteps => "max_steps",
            FailureClass::MaxRepeat => "max_repeat",
            FailureClass::Template => "template",
            // A gate's decision that cannot be used is a value of the wrong shape.
            FailureClass::Value | FailureClass::Gate => "value",
            FailureClass::Check => "check",
            FailureClass::Store => "store",
        }
    }
}

impl From<ErrorClass> for FailureClass {
    fn from(c: ErrorClass) -> FailureClass {
        FailureClass::Call(c)
    }
}

impl serde::Serialize for FailureClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.name().serialize(s)
    }
}

/// A structured failure: which step, which attempt, what happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunError {
    pub flow: String,
    pub step: String,
    pub attempts: u32,
    pub class: FailureClass,
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} of flow `{}` failed", self.step, self.flow)?;
        if self.attempts > 1 {
            write!(f, " after {} attempts", self.attempts)?;
        }
        if let Some(c) = self.class.name() {
            write!(f, " ({c})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for RunError {}

impl RunError {
    /// A dependency's circuit breaker was open: an agent does not hand this
    /// to its model as a tool error (the tool is out of service), it stops.
    pub fn is_circuit_breaker(&self) -> bool {
        self.class == FailureClass::CircuitBreaker
    }
}

/// Why a run could not start or finish (as opposed to a step failing).
#[derive(Debug)]
pub enum SetupError {
    /// `flowc run FILE FLOW` named a flow the program does not have.
    NoSuchFlow(String),
    /// The input is not an object of the flow's parameters.
    Input(String),
    /// The run store could not record the run.
    Store(String),
    /// The trace file could not be written.
    Trace(std::io::Error),
    /// The HTTP client or the async runtime did not start.
    Start(String),
    /// Before the first call: configuration the run may read is missing
    /// (every missing thing, sorted). Nothing was called.
    Preflight(Vec<super::preflight::Missing>),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::NoSuchFlow(name) => write!(f, "there is no flow `{name}`"),
            SetupError::Input(message) | SetupError::Store(message) => f.write_str(message),
            SetupError::Trace(e) => write!(f, "cannot write the trace: {e}"),
            SetupError::Start(message) => f.write_str(message),
            SetupError::Preflight(missing) => {
                write!(
                    f,
                    "the run cannot start: {} missing (nothing was called):",
                    match missing.len() {
                        1 => "1 thing it needs is".to_string(),
                        n => format!("{n} things it needs are"),
                    }
                )?;
                for m in missing {
                    write!(f, "\n  - {m}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for SetupError {}

/// A recording file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingError(pub String);

impl fmt::Display for RecordingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecordingError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tolerable_class_is_one_the_loop_type_names() {
        let mut all: Vec<FailureClass> = ErrorClass::ALL
            .into_iter()
            .map(FailureClass::Call)
            .collect();
        all.extend([
            FailureClass::CircuitBreaker,
            FailureClass::MaxSteps,
            FailureClass::MaxRepeat,
            FailureClass::Template,
            FailureClass::Value,
            FailureClass::Check,
            FailureClass::Gate,
            FailureClass::Store,
        ]);
        for class in all {
            assert_eq!(
                class.is_tolerable(),
                crate::exec::ITERATION_FAILURE_CLASSES.contains(&class.label()),
                "{class:?}"
            );
        }
    }
}
