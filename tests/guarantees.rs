//! The runtime's contract under faults, end to end against the loopback mock
//! server (tests/support/mock_server.rs), asserting on what the server itself
//! received: budgets that hold when a provider reports more than was
//! reserved, calls abandoned mid-flight that stay counted, configuration
//! checked before the first call, trace writes that cannot fail silently,
//! and the default retry of invalid model output.

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowc::run::budget::Exhausted;
use flowc::run::{self, Outcome, Report, RunOptions};
use flowc::{compile, CheckedProgram, Input};
use serde_json::{json, Value};
use support::mock_server::{MockServer, Reply, CHAT};

const KEY: &str = "sk-test-GUARANTEES-5e4d3c2b1a09";

const PRELUDE: &str = r#"
use std.models.{openai}

type Answer { title: string len 1..80, score: int }

model fast = openai("gpt-4o-mini") { temperature: 0, max_tokens: 200 }
"#;

fn checked(body: &str) -> CheckedProgram {
    support::program::checked("guarantees.flow", &format!("{PRELUDE}\n{body}"))
}

fn options(server: &MockServer) -> RunOptions {
    let vars = HashMap::from([
        ("OPENAI_BASE_URL".to_string(), server.openai_base_url()),
        ("OPENAI_API_KEY".to_string(), KEY.to_string()),
        ("TOOLS_URL".to_string(), server.base_url()),
    ]);
    RunOptions {
        env: Arc::new(move |name: &str| vars.get(name).cloned()),
        ..RunOptions::default()
    }
}

fn run_with(program: &CheckedProgram, flow: &str, input: Value, options: RunOptions) -> Report {
    run::run(program, flow, input, options).expect("the run starts")
}

fn exhausted(report: &Report) -> &Exhausted {
    match &report.outcome {
        Outcome::Exhausted(e) => e,
        other => panic!("expected the budget to run out, got {other:?}"),
    }
}

fn events<'r>(report: &'r Report, kind: &str) -> Vec<&'r Value> {
    report.events.iter().filter(|e| e["kind"] == kind).collect()
}

fn answer() -> Value {
    json!({"title": "Fine", "score": 3})
}

// ---- 1. budgets as a hard contract -----------------------------------------

#[test]
fn a_call_reporting_usage_far_above_the_budget_ends_budget_exhausted_naming_the_overshoot() {
    let program = checked(
        r#"
flow ask(q: string) -> Answer {
  budget { tokens 20k }
  let a = llm fast -> Answer { prompt "Rate {q}" }
  return a
}
"#,
    );
    let server = MockServer::start();
    // A provider billing 100k tokens for one call under a 20k budget.
    server.script(
        CHAT,
        [Reply::chat_json(answer()).with_usage(90_000, 10_000)],
    );
    let report = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    let e = exhausted(&report);
    assert_eq!(report.outcome.exit_code(), 3);
    assert_eq!(e.what, "tokens");
    let overrun = e.overrun.as_ref().expect("an overrun, not a refusal");
    assert_eq!(overrun.by, "80000", "{e}");
    assert!(overrun.call.contains("step `a`"), "{e}");
    assert_eq!(server.hits(CHAT), 1);
    assert_eq!(server.tokens_served(), 100_000);
    assert_eq!(report.spent.tokens, 100_000);
    let budget = events(&report, "budget");
    assert_eq!(budget.len(), 1, "{budget:?}");
    assert_eq!(budget[0]["status"], "overrun");
    assert_eq!(budget[0]["overshoot"], "80000");
    assert_eq!(budget[0]["limit"], "20000");
    assert!(
        budget[0]["call"].as_str().unwrap().contains("model `fast`"),
        "{}",
        budget[0]
    );
    assert!(report.completed.is_empty(), "{:?}", report.completed);
    assert!(e.to_string().contains("overrun by 80000"), "{e}");
}

#[test]
fn an_overrun_in_one_call_stops_the_run_before_the_next_call() {
    let program = checked(
        r#"
flow two(q: string) -> Answer {
  budget { tokens 2000 }
  let a = llm fast -> Answer { prompt "Rate {q}" }
  let b = llm fast -> Answer { prompt "Rate {a.title} again" }
  return b
}
"#,
    );
    let server = MockServer::start();
    server.script(
        CHAT,
        [
            Reply::chat_json(answer()).with_usage(2000, 30),
            Reply::chat_json(answer()),
        ],
    );
    let report = run_with(&program, "two", json!({"q": "x"}), options(&server));
    let e = exhausted(&report);
    assert_eq!(e.overrun.as_ref().map(|o| o.by.as_str()), Some("30"), "{e}");
    assert_eq!(server.hits(CHAT), 1, "the second call was never sent");
}

#[test]
fn an_agent_turn_reporting_usage_above_the_agents_budget_stops_the_run() {
    let program = checked(
        r#"
type Hit { hit: string }

tool lookup(q: string) -> Hit {
  http GET "{env.TOOLS_URL}/tools/lookup?q={q}"
  effect read
  timeout 2s
}

agent helper(topic: string) -> Answer {
  model fast
  tools [lookup]
  may read
  max_steps 4
  // One attempt per turn, so the checker's worst case fits the 5k below.
  retry 0
  budget { tokens 5k }
  instructions "Find out about {topic}."
}

flow research(topic: string) -> Answer {
  budget { tokens 100k, wall 1m }
  let found = helper(topic: topic)
  return found
}
"#,
    );
    let server = MockServer::start();
    server.always("GET /tools/lookup", Reply::ok(json!({"hit": "h"})));
    // The first turn calls a tool and reports 9k tokens against the agent's
    // 5k: no second turn is asked for.
    server.script(
        CHAT,
        [
            Reply::chat_tool_call("lookup", json!({"q": "x"})).with_usage(8000, 1000),
            Reply::chat_json(answer()),
        ],
    );
    let report = run_with(
        &program,
        "research",
        json!({"topic": "x"}),
        options(&server),
    );
    let e = exhausted(&report);
    assert_eq!(e.what, "tokens");
    assert_eq!(
        e.overrun.as_ref().map(|o| o.by.as_str()),
        Some("4000"),
        "{e}"
    );
    assert!(e.owner.contains("helper"), "{e}");
    assert_eq!(server.hits(CHAT), 1);
    assert_eq!(
        server.hits("/tools/lookup"),
        0,
        "the turn's tool call was not made"
    );
}

#[test]
fn a_prompt_whose_estimate_alone_exceeds_what_is_left_is_refused_before_sending() {
    let program = checked(
        r#"
flow ask(q: string) -> Answer {
  budget { tokens 1000 }
  let a = llm fast -> Answer { prompt "Rate {q}" }
  return a
}
"#,
    );
    let server = MockServer::start();
    server.always(CHAT, Reply::chat_json(answer()));
    // 4000 bytes: reserved at one token per two bytes, 2000 tokens alone.
    let report = run_with(
        &program,
        "ask",
        json!({"q": "word ".repeat(800)}),
        options(&server),
    );
    let e = exhausted(&report);
    assert_eq!(e.what, "tokens");
    assert!(e.overrun.is_none(), "{e}");
    assert_eq!(e.used, "0");
    assert!(e.wanted.parse::<u64>().unwrap() > 2000, "{e}");
    assert_eq!(server.hits(CHAT), 0, "nothing was sent");
    assert_eq!(report.spent.tokens, 0);
}

#[test]
fn a_call_abandoned_at_its_timeout_keeps_its_reservation_as_spend() {
    // The runtime reserves one attempt at 200 max_tokens plus the prompt
    // and the reply schema at one token per two bytes: over 250 tokens. Two
    // attempts do not fit in 500 (the checker, counting the prompt text
    // only, proves 404); an abandoned attempt that counted nothing would let
    // the retry through.
    let program = checked(
        r#"
flow ask(q: string) -> Answer {
  budget { tokens 500, wall 1m }
  let a = llm fast -> Answer {
    prompt "Rate {q}"
    timeout 200ms
    retry 1 on timeout backoff 10ms
  }
  return a
}
"#,
    );
    let server = MockServer::start();
    server.script(CHAT, [Reply::hang(), Reply::chat_json(answer())]);
    let report = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    let e = exhausted(&report);
    assert!(e.overrun.is_none(), "{e}");
    assert_eq!(server.hits(CHAT), 1, "the retry did not fit");
    assert_eq!(server.tokens_served(), 0);
    let kept: u64 = e.used.parse().unwrap();
    assert!(kept > 250 && kept <= 500, "{e}");
    assert_eq!(report.spent.tokens, kept);
    let calls = events(&report, "model_call");
    assert_eq!(calls[0]["class"], "timeout");
    assert_eq!(calls[0]["abandoned"], true, "{}", calls[0]);
    assert_eq!(calls[0]["tokens"], kept, "{}", calls[0]);
}

#[test]
fn a_call_cancelled_when_the_run_fails_keeps_its_reservation_as_spend() {
    let program = checked(
        r#"
flow both(q: string) -> [Answer] {
  budget { tokens 10k }
  let out = for x in [q, q] parallel 2 {
    llm fast -> Answer { prompt "Rate {x}" }
  }
  return out
}
"#,
    );
    let server = MockServer::start();
    // One call hangs; the other is refused (400, not retried): the run
    // fails and cancels the hung call, which the provider may bill.
    server.script(
        CHAT,
        [
            Reply::hang(),
            Reply::delay(100, Reply::error(400, "bad request")),
        ],
    );
    let started = Instant::now();
    let report = run_with(&program, "both", json!({"q": "x"}), options(&server));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(report.outcome, Outcome::Failed(_)),
        "{:?}",
        report.outcome
    );
    assert_eq!(server.hits(CHAT), 2);
    assert_eq!(server.tokens_served(), 0);
    // The refused call is billed nothing; the cancelled one its whole worst
    // case (at least its 200 max_tokens).
    assert!(
        report.spent.tokens > 200 && report.spent.tokens < 400,
        "{:?}",
        report.spent
    );
}

// ---- 3. preflight ----------------------------------------------------------

/// A model call, an HTTP tool reading two variables, and an `exec` tool
/// whose program does not exist; flow `plain` uses only the model.
const NEEDY: &str = r#"
type Hit { hit: string }

tool lookup(q: string) -> Hit {
  http GET "{env.TOOLS_URL}/tools/lookup?q={q}"
  header "Authorization" "Bearer {env.GUARANTEES_TOOL_TOKEN}"
  effect read
  timeout 2s
}

tool convert(q: string) -> Hit {
  exec ["/nonexistent/flowc-test/convert", "{q}"]
  effect read
  timeout 2s
}

flow needy(q: string) -> Answer {
  budget { tokens 10k, tool_calls 5, steps 10 }
  let a = llm fast -> Answer { prompt "Rate {q}" }
  let h = lookup(q: a.title)
  let c = convert(q: h.hit)
  let b = llm fast -> Answer { prompt "Rate {c.hit}" }
  return b
}

flow plain(q: string) -> Answer {
  budget { tokens 10k }
  let a = llm fast -> Answer { prompt "Rate {q}" }
  return a
}
"#;

#[test]
fn a_run_missing_configuration_lists_all_of_it_and_calls_nothing() {
    let program = checked(NEEDY);
    let server = MockServer::start();
    server.always(CHAT, Reply::chat_json(answer()));
    server.always("GET /tools/lookup", Reply::ok(json!({"hit": "h"})));
    // The base URL and the tools' URL are set; the API key and the tool
    // token are not.
    let vars = HashMap::from([
        ("OPENAI_BASE_URL".to_string(), server.openai_base_url()),
        ("TOOLS_URL".to_string(), server.base_url()),
    ]);
    let env: run::Env = Arc::new(move |name: &str| vars.get(name).cloned());
    let result = run::run(
        &program,
        "needy",
        json!({"q": "x"}),
        RunOptions {
            env: env.clone(),
            ..RunOptions::default()
        },
    );
    let Err(run::SetupError::Preflight(missing)) = result else {
        panic!("expected the preflight to refuse the run");
    };
    let shown: Vec<String> = missing.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert!(
        shown
            .iter()
            .any(|m| m.contains("OPENAI_API_KEY") && m.contains("model `fast`")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|m| m.contains("GUARANTEES_TOOL_TOKEN") && m.contains("tool `lookup`")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|m| m.contains("/nonexistent/flowc-test/convert") && m.contains("tool `convert`")),
        "{shown:#?}"
    );
    assert_eq!(server.requests().len(), 0, "nothing was called");

    // A flow that reaches neither tool needs only the key.
    let result = run::run(
        &program,
        "plain",
        json!({"q": "x"}),
        RunOptions {
            env,
            ..RunOptions::default()
        },
    );
    let Err(run::SetupError::Preflight(missing)) = result else {
        panic!("expected the preflight to refuse the run");
    };
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(server.requests().len(), 0);
}

#[test]
fn flowc_run_with_a_missing_key_exits_2_listing_it_before_any_request() {
    let server = MockServer::start();
    server.always(CHAT, Reply::chat_json(answer()));
    let dir = std::env::temp_dir().join(format!(
        "flowc-guarantees-preflight-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prog.flow"), format!("{PRELUDE}\n{NEEDY}")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowc"))
        .current_dir(&dir)
        .args([
            "run",
            "prog.flow",
            "--flow",
            "needy",
            "--input",
            r#"{"q":"x"}"#,
        ])
        .env("OPENAI_BASE_URL", server.openai_base_url())
        .env("TOOLS_URL", server.base_url())
        .env_remove("OPENAI_API_KEY")
        .env_remove("GUARANTEES_TOOL_TOKEN")
        .env_remove("FLOWC_STORE")
        .output()
        .expect("flowc runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needed in [
        "OPENAI_API_KEY",
        "GUARANTEES_TOOL_TOKEN",
        "/nonexistent/flowc-test/convert",
    ] {
        assert!(stderr.contains(needed), "{needed} not listed:\n{stderr}");
    }
    assert!(stderr.contains("3 things it needs are missing"), "{stderr}");
    assert_eq!(server.requests().len(), 0, "no request was made");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- 5. the default retry of invalid output --------------------------------

const NO_RETRY_CLAUSE: &str = r#"
flow ask(q: string) -> Answer {
  budget { tokens 10k, wall 1m }
  let a = llm fast -> Answer { prompt "Rate {q}" }
  return a
}
"#;

#[test]
fn an_llm_step_without_retry_retries_invalid_output_once_with_the_errors() {
    let program = checked(NO_RETRY_CLAUSE);
    let server = MockServer::start();
    server.script(
        CHAT,
        [
            Reply::chat_json(json!({"title": "Fine"})),
            Reply::chat_json(answer()),
        ],
    );
    let report = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    assert!(
        matches!(&report.outcome, Outcome::Completed(v) if *v == answer()),
        "{:?}",
        report.outcome
    );
    let requests = server.requests_to(CHAT);
    assert_eq!(requests.len(), 2);
    // The second attempt shows the model its reply and what was wrong.
    let messages = requests[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(
        messages[2]["content"].as_str().unwrap().contains("score"),
        "{messages:?}"
    );
}

#[test]
fn the_default_retry_is_bounded_and_covers_only_invalid_output() {
    let program = checked(NO_RETRY_CLAUSE);
    // Invalid every time: two attempts, then the class.
    let server = MockServer::start();
    server.always(CHAT, Reply::chat_json(json!({"title": "x"})));
    let report = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    let Outcome::Failed(e) = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    assert_eq!(e.class.name(), Some("invalid"), "{e}");
    assert_eq!(e.attempts, 2, "{e}");
    assert_eq!(server.hits(CHAT), 2);
    // A server error is not retried by default.
    let server = MockServer::start();
    server.script(CHAT, [Reply::server_error(), Reply::chat_json(answer())]);
    let report = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    assert!(
        matches!(report.outcome, Outcome::Failed(_)),
        "{:?}",
        report.outcome
    );
    assert_eq!(server.hits(CHAT), 1);
    // `retry 0` turns the default off.
    let program =
        checked(&NO_RETRY_CLAUSE.replace("prompt \"Rate {q}\"", "prompt \"Rate {q}\" retry 0"));
    let server = MockServer::start();
    server.always(CHAT, Reply::chat_json(json!({"title": "x"})));
    let report = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    assert!(
        matches!(report.outcome, Outcome::Failed(_)),
        "{:?}",
        report.outcome
    );
    assert_eq!(server.hits(CHAT), 1);
}

#[test]
fn the_checker_counts_the_attempts_the_default_retry_makes() {
    // One attempt is at most 200 output tokens + the prompt estimate; two
    // attempts are what the runtime can make, and what `check` counts.
    let b004 = |budget: &str| {
        let source = format!(
            "{PRELUDE}\n{}",
            NO_RETRY_CLAUSE.replace("tokens 10k", budget)
        );
        let c = compile(&[Input::Text {
            name: "default-retry.flow".into(),
            bytes: source.into_bytes(),
        }])
        .expect("compiles");
        let problems = c.problems.sorted();
        problems.iter().any(|d| d.code.as_str() == "B004")
    };
    assert!(b004("tokens 300"), "one attempt fits 300, two do not");
    assert!(!b004("tokens 500"), "two attempts fit 500");
    // And the runtime makes two under that budget.
    let program = checked(&NO_RETRY_CLAUSE.replace("tokens 10k", "tokens 2000"));
    let server = MockServer::start();
    server.always(CHAT, Reply::chat_json(json!({"title": "x"})));
    let _ = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    assert_eq!(server.hits(CHAT), 2);
}

// ---- 4. traces you can trust -----------------------------------------------

/// Runs `flowc run` on `program` in a fresh folder against `server`.
fn flowc_run(
    program: &str,
    server: &MockServer,
    args: &[&str],
) -> (std::process::Output, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "flowc-guarantees-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prog.flow"), format!("{PRELUDE}\n{program}")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowc"))
        .current_dir(&dir)
        .arg("run")
        .arg("prog.flow")
        .args(args)
        .env("OPENAI_BASE_URL", server.openai_base_url())
        .env("OPENAI_API_KEY", KEY)
        .env_remove("FLOWC_STORE")
        .output()
        .expect("flowc runs");
    (out, dir)
}

fn stored_status(dir: &std::path::Path) -> (String, Option<String>) {
    let store = flowc::store::Store::open(
        &dir.join(".flowc/runs.db"),
        flowc::store::Durability::Normal,
    )
    .expect("the store opens");
    let runs = store.runs().expect("runs");
    assert_eq!(runs.len(), 1);
    (runs[0].status.clone(), runs[0].error.clone())
}

#[test]
fn flowc_run_with_its_trace_on_a_full_disk_does_not_exit_0() {
    let server = MockServer::start();
    server.always(CHAT, Reply::chat_json(answer()));
    let (out, dir) = flowc_run(
        NO_RETRY_CLAUSE,
        &server,
        &["--input", r#"{"q":"x"}"#, "--trace", "/dev/full"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("the trace could not be written"),
        "{stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
    // The run's record says so too.
    let (status, error) = stored_status(&dir);
    assert_eq!(status, "trace_failed");
    assert!(
        error.as_deref().is_some_and(|e| e.contains("trace")),
        "{error:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_trace_that_fails_mid_run_stops_the_run_before_its_remaining_calls() {
    // Ten calls in a row whose spans (each carries its prompt) outgrow the
    // trace writer's buffer after a few: the write that fails stops the run.
    let program = r#"
flow many(docs: [string] len ..10) -> [string] {
  budget { tokens 100k, wall 1m }
  let out = for d in docs {
    llm fast -> string { prompt "Summarize: {d}" max_tokens 50 }
  }
  return out
}
"#;
    let server = MockServer::start();
    server.always(CHAT, Reply::chat_text("short"));
    let docs: Vec<String> = (0..10)
        .map(|i| format!("doc {i} {}", "x".repeat(3000)))
        .collect();
    let input = json!({ "docs": docs }).to_string();
    let (out, dir) = flowc_run(
        program,
        &server,
        &["--input", &input, "--trace", "/dev/full"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    let hits = server.hits(CHAT);
    assert!((1..10).contains(&hits), "{hits} calls were made");
    assert_eq!(stored_status(&dir).0, "trace_failed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_agents_effect_in_each_loop_iteration_gets_its_own_idempotency_key() {
    // The declared key is the same for every call: what tells two effects
    // apart is the step instance (loop iteration, agent turn) in the key.
    let program = checked(
        r#"
type Sent { ok: bool }

tool notify(who: string) -> Sent {
  http POST "{env.TOOLS_URL}/tools/notify"
  effect write
  timeout 2s
  idempotency "notice"
}

agent messenger(who: string) -> Answer {
  model fast
  tools [notify]
  may write
  max_steps 3
  retry 0
  instructions "Tell {who}."
}

flow tell(people: [string] len ..2) -> [Answer] {
  budget { tokens 100k, tool_calls 10, wall 1m }
  let told = for p in people {
    let a = messenger(who: p)
    a
  }
  return told
}
"#,
    );
    let server = MockServer::start();
    server.always("POST /tools/notify", Reply::ok(json!({"ok": true})));
    server.script(
        CHAT,
        [
            Reply::chat_tool_call("notify", json!({"who": "ann"})),
            Reply::chat_json(answer()),
            Reply::chat_tool_call("notify", json!({"who": "bob"})),
            Reply::chat_json(answer()),
        ],
    );
    let report = run_with(
        &program,
        "tell",
        json!({"people": ["ann", "bob"]}),
        options(&server),
    );
    assert!(
        matches!(report.outcome, Outcome::Completed(_)),
        "{:?}",
        report.outcome
    );
    let keys: Vec<String> = server
        .requests_to("/tools/notify")
        .iter()
        .map(|r| r.header("idempotency-key").expect("a key").to_string())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_ne!(keys[0], keys[1], "two effects, two keys");
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            key,
            &format!("{}:told[{i}]/a@messenger#1:notice", report.run_id),
            "the key names the iteration, the step and the agent's turn"
        );
    }
}
