//! Who answers model and tool calls: the real world over HTTP and local
//! programs, or a script (tests' `given`s and offline recordings).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

/// How a run reads environment variables (tests substitute their own).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A scripted answer (test `given`s and recordings).
#[derive(Clone, Debug)]
pub enum Scripted {
    Returns(Value),
    Fails(String),
}

/// Who answers model and tool calls: the real world over HTTP and local
/// programs, or a script (tests and offline recordings).
pub enum World {
    Live,
    Scripted(Script),
}

/// Answers by name, consumed in order; the last answer repeats.
#[derive(Default, Debug)]
pub struct Script {
    pub tools: HashMap<String, VecDeque<Scripted>>,
    pub models: HashMap<String, VecDeque<Scripted>>,
    pub agents: HashMap<String, VecDeque<Scripted>>,
}

impl Script {
    pub(crate) fn next(queue: Option<&mut VecDeque<Scripted>>) -> Option<Scripted> {
        let q = queue?;
        if q.len() > 1 {
            q.pop_front()
        } else {
            q.front().cloned()
        }
    }
}
