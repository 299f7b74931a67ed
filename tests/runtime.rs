//! The scheduler with the outside world scripted in-process: ordering,
//! gates, model rate limits, budgets.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use flowc::run::{self, GateDecision, Outcome, RunOptions, Script, Scripted, World};
use flowc::CheckedProgram;

use crate::support;
use serde_json::{json, Value};

fn checked(source: &str) -> CheckedProgram {
    support::program::checked("t.flow", source)
}

fn script(tools: &[(&str, Vec<Value>)], models: &[(&str, Vec<Value>)]) -> Script {
    let q = |list: &[(&str, Vec<Value>)]| -> HashMap<String, VecDeque<Scripted>> {
        list.iter()
            .map(|(n, vs)| {
                (
                    n.to_string(),
                    vs.iter().cloned().map(Scripted::Returns).collect(),
                )
            })
            .collect()
    };
    Script {
        tools: q(tools),
        models: q(models),
        agents: HashMap::new(),
    }
}

fn options(script: Script) -> RunOptions {
    RunOptions {
        world: World::Scripted(script),
        breaker: 0,
        env: std::sync::Arc::new(|_: &str| None),
        ..RunOptions::default()
    }
}

const HEADER: &str = r#"
use std.models.{openai}
model m = openai("gpt-4o-mini") { max_tokens: 50, rpm: 600 }
tool note(text: string) -> { ok: bool } {
  http POST "{env.LOG}/notes"
  effect read
  timeout 5s
}
"#;

#[test]
fn a_model_rpm_spaces_its_calls() {
    let p = checked(&format!(
        "{HEADER}
flow f(xs: [string] len ..5) -> [string] len ..5 {{
  budget {{ tokens 10k, steps 20 }}
  let rs = for x in xs parallel 5 {{ llm m -> string {{ prompt \"say {{x}}\" }} }}
  return rs
}}"
    ));
    let started = Instant::now();
    let report = run::run(
        &p,
        "f",
        json!({"xs": ["a", "b", "c", "d", "e"]}),
        options(script(&[], &[("m", vec![json!("ok")])])),
    )
    .expect("runs");
    let elapsed = started.elapsed();
    assert!(
        matches!(report.outcome, Outcome::Completed(_)),
        "{:?}",
        report.outcome
    );
    // 600 per minute is one call per 100 ms: five calls need at least 400 ms.
    assert!(
        elapsed >= Duration::from_millis(390),
        "five calls in {elapsed:?}"
    );
}

#[test]
fn loop_results_keep_input_order_and_rejected_iterations_drop_out() {
    let p = checked(&format!(
        "{HEADER}
flow f(xs: [string] len ..3) -> [bool] len ..3 {{
  budget {{ steps 20 }}
  let rs = for x in xs parallel 3 {{
    let ok = approve each {{ show x }}
    let n = note(text: ok)
    n.ok
  }}
  return rs
}}"
    ));
    let mut o = options(script(&[("note", vec![json!({"ok": true})])], &[]));
    o.gates = HashMap::from([("each".to_string(), GateDecision::Approve(None))]);
    let report = run::run(&p, "f", json!({"xs": ["a", "b", "c"]}), o).expect("runs");
    match report.outcome {
        Outcome::Completed(v) => assert_eq!(v, json!([true, true, true])),
        other => panic!("{other:?}"),
    }
    let mut o = options(script(&[("note", vec![json!({"ok": true})])], &[]));
    o.gates = HashMap::from([("each".to_string(), GateDecision::Reject("no".into()))]);
    let report = run::run(&p, "f", json!({"xs": ["a", "b", "c"]}), o).expect("runs");
    match report.outcome {
        Outcome::Completed(v) => assert_eq!(v, json!([])),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        report.calls.get("note"),
        None,
        "a rejected gate's dependents never run"
    );
}

#[test]
fn an_undecided_gate_waits_while_independent_steps_finish() {
    let p = checked(&format!(
        "{HEADER}
flow f(a: string, b: string) -> {{ x: bool, y: bool }} {{
  budget {{ steps 20 }}
  let one = note(text: a)
  let ok = approve review {{ show b }}
  let two = note(text: ok)
  return {{ x: one.ok, y: two.ok }}
}}"
    ));
    let report = run::run(
        &p,
        "f",
        json!({"a": "first", "b": "second"}),
        options(script(&[("note", vec![json!({"ok": true})])], &[])),
    )
    .expect("runs");
    match &report.outcome {
        Outcome::Waiting(gates) => {
            assert_eq!(gates.len(), 1);
            assert_eq!(gates[0].gate, "review");
            assert_eq!(gates[0].show, vec![json!("second")]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        report.calls.get("note"),
        Some(&1),
        "the independent write ran; the gated one did not"
    );
    assert_eq!(report.outcome.exit_code(), 4);
}

#[test]
fn steps_and_tool_calls_are_counted_as_the_checker_bounds_them() {
    let p = checked(&format!(
        "{HEADER}
flow f(xs: [string] len ..10) -> [bool] len ..10 {{
  budget {{ steps 50 }}
  let rs = for x in xs {{
    let r = note(text: x)
    r.ok
  }}
  return rs
}}"
    ));
    // Ten iterations of one step each: the runtime counts exactly what the
    // checker bounded.
    let report = run::run(
        &p,
        "f",
        json!({"xs": vec!["x"; 10]}),
        options(script(&[("note", vec![json!({"ok": true})])], &[])),
    )
    .expect("runs");
    assert!(
        matches!(report.outcome, Outcome::Completed(_)),
        "{:?}",
        report.outcome
    );
    assert_eq!(report.spent.steps, 10);
    assert_eq!(report.spent.tool_calls, 10);
}

#[test]
fn input_that_does_not_fit_the_flow_is_refused_before_running() {
    let p = checked(&format!(
        "{HEADER}
flow f(xs: [string] len ..2) -> [string] len ..2 {{
  budget {{ steps 5 }}
  return xs
}}"
    ));
    let err = run::run(
        &p,
        "f",
        json!({"xs": ["a", "b", "c"]}),
        options(Script::default()),
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[test]
fn a_narrowed_optional_reaches_the_call_as_the_value_it_tested() {
    // `who` is `string?`; inside `if who != null` it is a `string`, the
    // same value the condition tested: the call gets it when it is there
    // and is skipped when it is `null`, and the `else` of `== null` agrees.
    let p = checked(&format!(
        "{HEADER}
flow f(who: string?) -> string {{
  budget {{ steps 10 }}
  let sent = if who != null {{
    let r = note(text: who)
    who
  }}
  let other = if who == null {{ \"nobody\" }} else {{ who }}
  return other
}}"
    ));
    for (input, calls, output) in [
        (json!("ann"), 1, json!("ann")),
        (Value::Null, 0, json!("nobody")),
    ] {
        let report = run::run(
            &p,
            "f",
            json!({ "who": input }),
            options(script(&[("note", vec![json!({"ok": true})])], &[])),
        )
        .expect("runs");
        match &report.outcome {
            Outcome::Completed(v) => assert_eq!(*v, output, "input {input}"),
            other => panic!("input {input}: {other:?}"),
        }
        assert_eq!(report.calls.get("note").copied().unwrap_or(0), calls);
    }
}
