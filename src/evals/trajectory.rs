//! What a row's run did, read from its trace: the `trace` value trajectory
//! scorers see (its type is built by `lower::eval`, field for field), and
//! the answers a recording keeps.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::ast::Effect;
use crate::ir::Program;
use crate::run::Report;

/// The calls of a run in the order they started: tool calls, model calls,
/// agents and sub-flows (the root flow is the run itself).
fn calls(events: &[Value]) -> Vec<&Value> {
    let run_span = events
        .iter()
        .find(|e| e["kind"] == "run")
        .map(|e| e["id"].clone());
    let mut out: Vec<&Value> = events
        .iter()
        .filter(|e| match e["kind"].as_str() {
            Some("tool_call" | "model_call" | "agent") => true,
            Some("flow") => e["parent"] != run_span.clone().unwrap_or(Value::Null),
            _ => false,
        })
        .collect();
    out.sort_by(|a, b| start(a).total_cmp(&start(b)));
    out
}

fn start(e: &Value) -> f64 {
    e["start_ms"]
        .as_f64()
        .or_else(|| e["at_ms"].as_f64())
        .unwrap_or(0.0)
}

/// The `trace` value of a row: see `lower::eval::trajectory_type`.
pub fn trajectory(program: &Program, report: &Report, latency_ms: f64) -> Value {
    let events = &report.events;
    let calls = calls(events);
    // A retry is every attempt after the first of one call.
    let retries = calls
        .iter()
        .filter(|e| e["attempt"].as_u64().is_some_and(|a| a > 1))
        .count();
    let rejected = events.iter().filter(|e| e["kind"] == "validation").count();
    let gate_times: Vec<f64> = events
        .iter()
        .filter(|e| e["kind"] == "gate")
        .map(start)
        .collect();
    let irreversible = |name: &str| {
        program
            .tools
            .iter()
            .any(|t| t.name == name && t.effect == Effect::Irreversible)
    };
    let ungated = calls
        .iter()
        .filter(|e| e["kind"] == "tool_call")
        .filter(|e| irreversible(e["name"].as_str().unwrap_or("")))
        .filter(|e| !gate_times.iter().any(|g| *g <= start(e)))
        .count();
    let names: Vec<&str> = calls.iter().filter_map(|e| e["name"].as_str()).collect();
    let mut called = Map::new();
    let mut first = Map::new();
    for name in program.trajectory_names() {
        let count = names.iter().filter(|n| **n == name).count();
        let position = names.iter().position(|n| *n == name).map_or(0, |p| p + 1);
        called.insert(name.clone(), json!(count));
        first.insert(name, json!(position));
    }
    json!({
        "status": report.outcome.status().as_str(),
        "calls": names,
        "called": called,
        "first": first,
        "retries": retries,
        "rejected_replies": rejected,
        "gates": gate_times.len(),
        "ungated_irreversible": ungated,
        "tokens": report.spent.tokens,
        "cost": report.spent.cost,
        "latency_ms": latency_ms,
    })
}

/// Every answer the outside world gave a run, by kind and name, in call
/// order: the `tools` and `models` sections of a recording
/// (`run::Recording`), failed calls as `{"$fails": message}`.
pub fn answers(events: &[Value]) -> Value {
    let mut tools: HashMap<String, Vec<Value>> = HashMap::new();
    let mut models: HashMap<String, Vec<Value>> = HashMap::new();
    for e in calls(events) {
        let name = e["name"].as_str().unwrap_or("").to_string();
        let failed = e["status"] != "ok";
        let answer = if failed {
            json!({"$fails": e["error"].as_str().unwrap_or("failed")})
        } else {
            match e["kind"].as_str() {
                Some("tool_call") => e["result"].clone(),
                Some("model_call") => e["response"]["text"].clone(),
                _ => continue,
            }
        };
        match e["kind"].as_str() {
            Some("tool_call") => tools.entry(name).or_default().push(answer),
            Some("model_call") => models.entry(name).or_default().push(answer),
            _ => {}
        }
    }
    let sorted = |m: HashMap<String, Vec<Value>>| {
        let mut keys: Vec<_> = m.into_iter().collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        Value::Object(
            keys.into_iter()
                .map(|(k, v)| (k, Value::Array(v)))
                .collect(),
        )
    };
    json!({"tools": sorted(tools), "models": sorted(models)})
}
