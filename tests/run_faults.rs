//! `flowc::run::run` end to end against a real HTTP server on 127.0.0.1
//! (tests/support/mock_server.rs) that plays the model provider and the tool
//! endpoints, injecting the faults the runtime must handle: rate limits with
//! `Retry-After`, server errors, hangs, malformed and invalid model output,
//! agents that misbehave, budgets that run out, gates, secrets in traces,
//! fallbacks and the circuit breaker; then the `flowc` binary itself.
//!
//! Models and tools are pointed at the server through `RunOptions::env`, so
//! no test touches the process environment.

use crate::support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowc::run::{self, GateDecision, Outcome, Report, RunError, RunOptions};
use flowc::{compile, CheckedProgram, Input};
use serde_json::{json, Value};
use support::mock_server::{MockServer, RecordedRequest, Reply, CHAT};

const KEY: &str = "sk-test-RUNFAULTS-9f8e7d6c5b4a3210";
const TOOL_TOKEN: &str = "tool-token-RUNFAULTS-0a1b2c3d4e5f";

/// The models, types and tools most programs below share. `lookup` and
/// `backup` are read tools on the mock server; each test adds its own retry
/// policy to a tool of its own where the policy matters.
const PRELUDE: &str = r#"
use std.models.{openai}

type Answer { title: string len 1..80, score: int }
type Hit { hit: string }

model fast = openai("gpt-4o-mini") { temperature: 0, max_tokens: 200 }
model big = openai("gpt-4o") { temperature: 0, max_tokens: 200 }

tool lookup(q: string) -> Hit {
  http GET "{env.TOOLS_URL}/tools/lookup?q={q}"
  header "Authorization" "Bearer {env.TOOL_TOKEN}"
  effect read
  timeout 2s
}

tool backup(q: string) -> Hit {
  http GET "{env.TOOLS_URL}/tools/backup?q={q}"
  effect read
  timeout 2s
}
"#;

fn checked(body: &str) -> CheckedProgram {
    support::program::checked("run_faults.flow", &format!("{PRELUDE}\n{body}"))
}

/// The environment a run sees: the model provider and the tools on `server`,
/// an API key and a tool token.
fn env_vars(server: &MockServer) -> HashMap<String, String> {
    HashMap::from([
        ("OPENAI_BASE_URL".to_string(), server.openai_base_url()),
        ("OPENAI_API_KEY".to_string(), KEY.to_string()),
        ("TOOLS_URL".to_string(), server.base_url()),
        ("TOOL_TOKEN".to_string(), TOOL_TOKEN.to_string()),
    ])
}

fn options(server: &MockServer) -> RunOptions {
    let vars = env_vars(server);
    RunOptions {
        env: Arc::new(move |name: &str| vars.get(name).cloned()),
        ..RunOptions::default()
    }
}

fn run_with(
    program: &CheckedProgram,
    flow: &str,
    input: Value,
    options: RunOptions,
) -> (Report, Duration) {
    let started = Instant::now();
    let report = run::run(program, flow, input, options).expect("the run starts");
    (report, started.elapsed())
}

fn completed(report: &Report) -> &Value {
    match &report.outcome {
        Outcome::Completed(v) => v,
        other => panic!("expected the run to complete, got {other:?}"),
    }
}

fn failed(report: &Report) -> &RunError {
    match &report.outcome {
        Outcome::Failed(e) => e,
        other => panic!("expected the run to fail, got {other:?}"),
    }
}

/// The chat messages of a recorded OpenAI request.
fn messages(request: &RecordedRequest) -> Vec<Value> {
    request.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no messages in {}", request.raw_body))
}

/// Trace events of one kind.
fn events<'r>(report: &'r Report, kind: &str) -> Vec<&'r Value> {
    report.events.iter().filter(|e| e["kind"] == kind).collect()
}

/// A fresh folder under the target directory's scratch space.
fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "run_faults-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

fn answer() -> Value {
    json!({"title": "Fine", "score": 3})
}

// ---- rate limits, server errors, timeouts ----------------------------------

#[test]
fn a_rate_limited_model_call_waits_for_retry_after_then_succeeds() {
    let program = checked(
        r#"
flow ask(q: string) -> Answer {
  budget { tokens 10k }
  let a = llm fast -> Answer {
    prompt "Rate {q}"
    retry 2 on rate_limit backoff 10ms
  }
  return a
}
"#,
    );
    let server = MockServer::start();
    server.script(CHAT, [Reply::rate_limited(1), Reply::chat_json(answer())]);
    let (report, _) = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    assert_eq!(completed(&report), &answer());
    let requests = server.requests_to(CHAT);
    assert_eq!(requests.len(), 2);
    let gap = requests[1].received - requests[0].received;
    // The policy's own backoff is 10 ms: only Retry-After makes it a second.
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(3), "retried after {gap:?}");
    assert_eq!(report.stats.retries, 1);
    assert_eq!(report.stats.model_calls, 2);
}

const FLAKY_TOOL: &str = r#"
tool flaky(q: string) -> Hit {
  http GET "{env.TOOLS_URL}/tools/flaky?q={q}"
  effect read
  timeout 2s
  retry 2 on server_error backoff 10ms
}

flow find(q: string) -> Hit {
  budget { tool_calls 10 }
  let found = flaky(q: q)
  return found
}
"#;

#[test]
fn a_tool_server_error_is_retried_by_policy_then_succeeds() {
    let program = checked(FLAKY_TOOL);
    let server = MockServer::start();
    server.script(
        "GET /tools/flaky",
        [
            Reply::server_error(),
            Reply::server_error(),
            Reply::ok(json!({"hit": "third time"})),
        ],
    );
    let (report, _) = run_with(&program, "find", json!({"q": "x"}), options(&server));
    assert_eq!(completed(&report), &json!({"hit": "third time"}));
    assert_eq!(server.hits("/tools/flaky"), 3);
    assert_eq!(report.stats.retries, 2);
    assert_eq!(report.stats.tool_calls_failed, 2);
    assert_eq!(report.stats.tool_calls_ok, 1);
    assert_eq!(report.spent.tool_calls, 3, "every attempt is a tool call");
}

#[test]
fn a_tool_server_error_after_the_last_retry_fails_naming_step_attempts_and_class() {
    let program = checked(FLAKY_TOOL);
    let server = MockServer::start();
    server.always("GET /tools/flaky", Reply::server_error());
    let (report, _) = run_with(&program, "find", json!({"q": "x"}), options(&server));
    let error = failed(&report);
    assert_eq!(server.hits("/tools/flaky"), 3, "1 attempt + 2 retries");
    assert_eq!(error.flow, "find");
    assert!(error.step.contains("found"), "{error:?}");
    assert_eq!(error.attempts, 3);
    assert_eq!(error.class.name(), Some("server_error"));
    let text = error.to_string();
    for part in ["found", "after 3 attempts", "server_error", "flaky"] {
        assert!(text.contains(part), "{part:?} not in {text:?}");
    }
}

const SLOW_TOOL: &str = r#"
tool slow(q: string) -> Hit {
  http GET "{env.TOOLS_URL}/tools/slow?q={q}"
  effect read
  timeout 300ms
  retry 2 on RETRY_ON backoff 10ms
}

flow wait(q: string) -> Hit {
  budget { tool_calls 10 }
  let got = slow(q: q)
  return got
}
"#;

#[test]
fn a_hung_tool_times_out_and_is_retried_when_timeout_is_listed() {
    let program = checked(&SLOW_TOOL.replace("RETRY_ON", "timeout"));
    let server = MockServer::start();
    server.script(
        "GET /tools/slow",
        [Reply::hang(), Reply::ok(json!({"hit": "late"}))],
    );
    let (report, elapsed) = run_with(&program, "wait", json!({"q": "x"}), options(&server));
    assert_eq!(completed(&report), &json!({"hit": "late"}));
    assert_eq!(server.hits("/tools/slow"), 2);
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1300), "{elapsed:?}");
    let calls = events(&report, "tool_call");
    assert_eq!(calls[0]["status"], "error");
    assert_eq!(calls[0]["class"], "timeout");
    let latency = calls[0]["latency_ms"].as_f64().unwrap();
    assert!((290.0..1000.0).contains(&latency), "{latency}");
}

#[test]
fn a_hung_tool_fails_with_class_timeout_when_timeout_is_not_retried() {
    let program = checked(&SLOW_TOOL.replace("RETRY_ON", "server_error"));
    let server = MockServer::start();
    server.always("GET /tools/slow", Reply::hang());
    let (report, elapsed) = run_with(&program, "wait", json!({"q": "x"}), options(&server));
    let error = failed(&report);
    assert_eq!(error.class.name(), Some("timeout"), "{error}");
    assert_eq!(error.attempts, 1);
    assert!(error.step.contains("got"), "{error:?}");
    assert_eq!(server.hits("/tools/slow"), 1);
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1300), "{elapsed:?}");
}

#[test]
fn a_hung_model_call_times_out_and_is_retried() {
    let program = checked(
        r#"
flow ask(q: string) -> Answer {
  budget { tokens 10k }
  let a = llm fast -> Answer {
    prompt "Rate {q}"
    timeout 300ms
    retry 1 on timeout backoff 10ms
  }
  return a
}
"#,
    );
    let server = MockServer::start();
    server.script(CHAT, [Reply::hang(), Reply::chat_json(answer())]);
    let (report, elapsed) = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    assert_eq!(completed(&report), &answer());
    assert_eq!(server.hits(CHAT), 2);
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1300), "{elapsed:?}");
    let calls = events(&report, "model_call");
    assert_eq!(calls[0]["class"], "timeout", "{}", calls[0]);
}

#[test]
fn a_hung_model_call_fails_with_class_timeout_when_timeout_is_not_retried() {
    let program = checked(
        r#"
flow ask(q: string) -> Answer {
  budget { tokens 10k }
  let a = llm fast -> Answer {
    prompt "Rate {q}"
    timeout 300ms
    retry 2 on invalid, server_error
  }
  return a
}
"#,
    );
    let server = MockServer::start();
    server.always(CHAT, Reply::hang());
    let (report, elapsed) = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    let error = failed(&report);
    assert_eq!(error.class.name(), Some("timeout"), "{error}");
    assert_eq!(error.attempts, 1);
    assert_eq!(server.hits(CHAT), 1);
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1300), "{elapsed:?}");
}

#[test]
fn a_wall_budget_stops_a_run_stuck_on_a_slow_call() {
    let program = checked(
        r#"
tool glacial(q: string) -> Hit {
  http GET "{env.TOOLS_URL}/tools/glacial?q={q}"
  effect read
  timeout 30s
}

flow wait(q: string) -> Hit {
  budget { wall 500ms }
  let got = glacial(q: q)
  return got
}
"#,
    );
    let server = MockServer::start();
    server.always("GET /tools/glacial", Reply::hang());
    let (report, elapsed) = run_with(&program, "wait", json!({"q": "x"}), options(&server));
    assert_eq!(exhausted(&report).what, "wall");
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

// ---- model output that does not parse or validate ---------------------------

const RATE: &str = r#"
flow ask(q: string) -> Answer {
  budget { tokens 20k }
  let a = llm fast -> Answer {
    prompt "Rate {q}"
    retry 2 on invalid
  }
  return a
}
"#;

/// The validation errors the trace recorded for each rejected model output.
fn validation_errors(report: &Report) -> Vec<Vec<String>> {
    events(report, "validation")
        .into_iter()
        .map(|e| {
            e["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn malformed_json_from_the_model_is_retried_with_the_parse_error() {
    let program = checked(RATE);
    let server = MockServer::start();
    let broken = r#"{"title": "Fine", "score": 3"#;
    server.script(CHAT, [Reply::chat_text(broken), Reply::chat_json(answer())]);
    let (report, _) = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    assert_eq!(completed(&report), &answer());
    let requests = server.requests_to(CHAT);
    assert_eq!(requests.len(), 2);
    assert_eq!(messages(&requests[0]).len(), 1);

    let errors = validation_errors(&report);
    assert_eq!(errors.len(), 1);
    assert!(errors[0][0].contains("not JSON"), "{errors:?}");
    // The retry shows the model its own reply and what was wrong with it.
    let next = messages(&requests[1]);
    assert_eq!(next.len(), 3, "{next:?}");
    assert_eq!(next[1]["role"], "assistant");
    assert_eq!(next[1]["content"], broken);
    assert_eq!(next[2]["role"], "user");
    let feedback = next[2]["content"].as_str().unwrap();
    for e in &errors[0] {
        assert!(feedback.contains(e.as_str()), "{e:?} not in {feedback:?}");
    }
    assert_eq!(report.stats.validation_rejections, 1);
}

#[test]
fn model_output_that_breaks_the_schema_is_retried_with_the_validation_errors() {
    let program = checked(RATE);
    let server = MockServer::start();
    server.script(
        CHAT,
        [
            Reply::chat_json(json!({"title": "", "score": "high"})),
            Reply::chat_json(json!({"title": "Fine"})),
            Reply::chat_json(answer()),
        ],
    );
    let (report, _) = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    assert_eq!(completed(&report), &answer());
    let requests = server.requests_to(CHAT);
    assert_eq!(requests.len(), 3);
    let errors = validation_errors(&report);
    assert_eq!(errors.len(), 2, "{errors:?}");
    // First: an empty title and a string score, each named by its path.
    assert!(
        errors[0].iter().any(|e| e.starts_with("/title")),
        "{errors:?}"
    );
    assert!(
        errors[0].iter().any(|e| e.starts_with("/score")),
        "{errors:?}"
    );
    // Second: the missing field.
    assert!(errors[1].iter().any(|e| e.contains("score")), "{errors:?}");
    for (attempt, errs) in errors.iter().enumerate() {
        let sent = requests[attempt + 1].raw_body.clone();
        let next = messages(&requests[attempt + 1]);
        let feedback = next.last().unwrap()["content"].as_str().unwrap();
        for e in errs {
            assert!(feedback.contains(e.as_str()), "{e:?} not in {sent}");
        }
    }
}

#[test]
fn invalid_output_after_the_last_retry_fails_with_class_invalid() {
    let program = checked(RATE);
    let server = MockServer::start();
    server.script(CHAT, Reply::chat_json(json!({"title": "x"})).times(3));
    let (report, _) = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    let error = failed(&report);
    assert_eq!(error.class.name(), Some("invalid"));
    assert_eq!(error.attempts, 3);
    assert_eq!(server.hits(CHAT), 3);
}

#[test]
fn a_cut_off_reply_body_is_retried_as_invalid() {
    let program = checked(RATE);
    let server = MockServer::start();
    server.script(CHAT, [Reply::malformed(), Reply::chat_json(answer())]);
    let (report, _) = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    assert_eq!(completed(&report), &answer());
    assert_eq!(server.hits(CHAT), 2);
    assert_eq!(events(&report, "model_call")[0]["class"], "invalid");
}

// ---- agents -----------------------------------------------------------------

fn agent_program(clauses: &str) -> CheckedProgram {
    checked(&format!(
        r#"
agent helper(topic: string) -> Answer {{
  model fast
  tools [lookup]
  may read
  {clauses}
  instructions "Find out about {{topic}}."
}}

flow research(topic: string) -> Answer {{
  budget {{ tokens 100k }}
  let found = helper(topic: topic)
  return found
}}
"#
    ))
}

/// The tool results (`role: tool` contents, parsed) in a recorded request.
fn tool_results(request: &RecordedRequest) -> Vec<Value> {
    messages(request)
        .into_iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            let content = m["content"].as_str().unwrap_or_default();
            serde_json::from_str(content).unwrap_or(Value::String(content.to_string()))
        })
        .collect()
}

#[test]
fn an_agent_naming_a_tool_it_does_not_have_is_told_which_tools_it_has() {
    let program = agent_program("max_steps 4");
    let server = MockServer::start();
    server.script(
        CHAT,
        [
            Reply::chat_tool_call("delete_everything", json!({"really": true})),
            Reply::chat_json(answer()),
        ],
    );
    let (report, _) = run_with(
        &program,
        "research",
        json!({"topic": "x"}),
        options(&server),
    );
    assert_eq!(completed(&report), &answer());
    let requests = server.requests_to(CHAT);
    assert_eq!(requests.len(), 2);
    // Only the agent's own tools are offered.
    let offered: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .expect("tools offered")
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["lookup"]);
    let results = tool_results(&requests[1]);
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["available_tools"], json!(["lookup"]));
    assert!(
        results[0]["error"]
            .as_str()
            .unwrap()
            .contains("delete_everything"),
        "{results:?}"
    );
    assert_eq!(server.hits("/tools/lookup"), 0);
    assert!(server.requests().iter().all(|r| r.path == CHAT));
}

#[test]
fn an_agent_calling_a_tool_with_invalid_arguments_gets_an_error_back() {
    let program = agent_program("max_steps 5");
    let server = MockServer::start();
    server.script(
        CHAT,
        [
            Reply::chat_tool_call("lookup", json!({"q": 42})),
            Reply::chat_tool_call("lookup", json!({"query": "x"})),
            Reply::chat_tool_call_raw("lookup", "{not json"),
            Reply::chat_json(answer()),
        ],
    );
    let (report, _) = run_with(
        &program,
        "research",
        json!({"topic": "x"}),
        options(&server),
    );
    assert_eq!(completed(&report), &answer());
    assert_eq!(server.hits("/tools/lookup"), 0, "no invalid call is made");
    let requests = server.requests_to(CHAT);
    assert_eq!(requests.len(), 4);
    for (turn, request) in requests.iter().enumerate().skip(1) {
        let results = tool_results(request);
        let last = results.last().expect("a tool result");
        assert_eq!(last["available_tools"], json!(["lookup"]), "turn {turn}");
        assert!(last["error"].is_string(), "turn {turn}: {last}");
    }
    let second = tool_results(&requests[1]);
    assert!(
        second[0]["error"].as_str().unwrap().contains("/q"),
        "the error names the bad argument: {second:?}"
    );
}

#[test]
fn an_agent_repeating_the_same_call_is_stopped_by_max_repeat() {
    let program = agent_program("max_steps 10\n  max_repeat 3");
    let server = MockServer::start();
    server.script(
        CHAT,
        Reply::chat_tool_call("lookup", json!({"q": "same"})).times(10),
    );
    server.always("GET /tools/lookup", Reply::ok(json!({"hit": "same"})));
    let (report, _) = run_with(
        &program,
        "research",
        json!({"topic": "x"}),
        options(&server),
    );
    let error = failed(&report);
    assert_eq!(error.class.name(), Some("max_repeat"), "{error}");
    let text = error.to_string();
    assert!(text.contains("3 times in a row"), "{text}");
    assert!(text.contains("lookup"), "{text}");
    assert_eq!(server.hits(CHAT), 3);
    assert_eq!(
        server.hits("/tools/lookup"),
        2,
        "the third repeat is not made"
    );
}

#[test]
fn an_agent_that_never_finishes_fails_at_max_steps() {
    let program = agent_program("max_steps 3");
    let server = MockServer::start();
    server.script(
        CHAT,
        (0..10).map(|i| Reply::chat_tool_call("lookup", json!({"q": format!("q{i}")}))),
    );
    server.always("GET /tools/lookup", Reply::ok(json!({"hit": "more"})));
    let (report, _) = run_with(
        &program,
        "research",
        json!({"topic": "x"}),
        options(&server),
    );
    let error = failed(&report);
    assert_eq!(error.class.name(), Some("max_steps"), "{error}");
    assert!(error.to_string().contains("3 steps"), "{error}");
    assert_eq!(server.hits(CHAT), 3);
    assert_eq!(server.hits("/tools/lookup"), 3);
}

#[test]
fn an_agent_timeout_bounds_the_whole_loop() {
    // `timeout` on an agent is the wall-clock limit of its whole loop, not
    // of each model call: ten quick turns of 200 ms exceed 500 ms.
    let program = agent_program("max_steps 10\n  timeout 500ms");
    let server = MockServer::start();
    server.script(
        CHAT,
        (0..10).map(|i| {
            Reply::delay(
                200,
                Reply::chat_tool_call("lookup", json!({"q": format!("q{i}")})),
            )
        }),
    );
    server.always("GET /tools/lookup", Reply::ok(json!({"hit": "more"})));
    let (report, elapsed) = run_with(
        &program,
        "research",
        json!({"topic": "x"}),
        options(&server),
    );
    let error = failed(&report);
    assert_eq!(error.class.name(), Some("timeout"), "{error}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert!(server.hits(CHAT) < 5, "{} turns", server.hits(CHAT));
}

// ---- budgets ----------------------------------------------------------------

/// A document long enough that the runtime's reservation (prompt at two
/// bytes a token) is far above what `flowc check` estimated for an unbounded
/// string (nothing): the budget fits statically and runs out at run time.
fn docs(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| Value::String(format!("doc {i}: {}", "lorem ipsum ".repeat(33))))
            .collect(),
    )
}

fn digest_program(parallel: &str) -> CheckedProgram {
    checked(&format!(
        r#"
flow digest(docs: [string] len ..10) -> [string] {{
  budget {{ tokens 1000 }}
  let out = for d in docs {parallel} {{
    llm fast -> string {{ prompt "Summarize: {{d}}" max_tokens 50 retry 0 }}
  }}
  return out
}}
"#
    ))
}

fn exhausted(report: &Report) -> &flowc::run::budget::Exhausted {
    match &report.outcome {
        Outcome::Exhausted(e) => e,
        other => panic!("expected the budget to run out, got {other:?}"),
    }
}

#[test]
fn a_token_budget_stops_the_run_before_the_server_serves_more_than_it() {
    let program = digest_program("");
    let server = MockServer::start();
    // Ten honest replies of 150 tokens would be 1500.
    server.script(
        CHAT,
        Reply::chat_text("short summary")
            .with_usage(110, 40)
            .times(10),
    );
    let (report, _) = run_with(
        &program,
        "digest",
        json!({"docs": docs(10)}),
        options(&server),
    );
    let e = exhausted(&report);
    assert_eq!(e.what, "tokens", "{e}");
    assert_eq!(report.outcome.exit_code(), 3);
    let served = server.tokens_served();
    assert!(served <= 1000, "served {served}");
    assert!(server.hits(CHAT) >= 2 && server.hits(CHAT) < 10);
    assert_eq!(report.spent.tokens, served);
    // It stopped only when the next call's worst case no longer fitted.
    let used: u64 = e.used.parse().unwrap();
    let wanted: u64 = e.wanted.parse().unwrap();
    assert_eq!(used, served, "{e}");
    assert!(used + wanted > 1000, "{e}");
    assert!(events(&report, "budget")
        .iter()
        .any(|e| e["status"] == "exhausted" && e["budget"] == "tokens"));
    assert!(
        report.completed.is_empty(),
        "the loop as a whole did not finish"
    );
}

#[test]
fn a_token_budget_holds_for_concurrent_reservations() {
    let program = digest_program("parallel 3");
    let server = MockServer::start();
    server.script(
        CHAT,
        Reply::delay(50, Reply::chat_text("short summary").with_usage(110, 40)).times(10),
    );
    let (report, _) = run_with(
        &program,
        "digest",
        json!({"docs": docs(10)}),
        options(&server),
    );
    assert_eq!(exhausted(&report).what, "tokens");
    assert!(server.hits(CHAT) >= 2 && server.hits(CHAT) < 10);
    assert!(
        server.tokens_served() <= 1000,
        "served {}",
        server.tokens_served()
    );
    // Calls still in flight when the budget ran out are cancelled and keep
    // their whole reservation (the provider may bill them), so the report
    // may count more tokens than the server sent, never fewer, and never
    // more than the budget.
    assert!(report.spent.tokens >= server.tokens_served());
    assert!(report.spent.tokens <= 1000, "{:?}", report.spent);
}

#[test]
fn a_cost_budget_stops_the_run_before_the_server_serves_more_than_it() {
    let program = checked(
        r#"
flow digest(docs: [string] len ..10) -> [string] {
  budget { cost $0.006 }
  let out = for d in docs {
    llm big -> string { prompt "Summarize: {d}" max_tokens 50 retry 0 }
  }
  return out
}
"#,
    );
    let server = MockServer::start();
    server.script(
        CHAT,
        Reply::chat_text("short summary")
            .with_usage(110, 40)
            .times(10),
    );
    let (report, _) = run_with(
        &program,
        "digest",
        json!({"docs": docs(10)}),
        options(&server),
    );
    match &report.outcome {
        Outcome::Exhausted(e) => assert_eq!(e.what, "cost", "{e}"),
        other => panic!("expected the budget to run out, got {other:?}"),
    }
    // gpt-4o: $2.50 input, $10.00 output per million tokens.
    let (input, output) = server.usage_served();
    let served = (input as f64 * 2.5 + output as f64 * 10.0) / 1e6;
    assert!(served <= 0.006, "served ${served}");
    assert!(server.hits(CHAT) >= 1 && server.hits(CHAT) < 10);
    // Ten replies would have cost $0.00675.
    assert!((report.spent.cost - served).abs() < 1e-9);
}

#[test]
fn a_tool_call_budget_stops_the_run_before_more_calls_are_made() {
    // `flowc check` counts the agent's 2 turns as 2 tool calls; one turn
    // asking for five calls at once is more than the budget allows.
    let program = checked(
        r#"
agent gatherer(topic: string) -> Answer {
  model fast
  tools [lookup]
  max_steps 2
  instructions "Gather facts about {topic}."
}

flow gather(topic: string) -> Answer {
  budget { tool_calls 3 }
  let a = gatherer(topic: topic)
  return a
}
"#,
    );
    let server = MockServer::start();
    server.script(
        CHAT,
        [
            Reply::chat_tool_calls((0..5).map(|i| ("lookup", json!({"q": format!("q{i}")})))),
            Reply::chat_json(answer()),
        ],
    );
    server.always("GET /tools/lookup", Reply::ok(json!({"hit": "h"})));
    let (report, _) = run_with(&program, "gather", json!({"topic": "x"}), options(&server));
    match &report.outcome {
        Outcome::Exhausted(e) => assert_eq!(e.what, "tool_calls", "{e}"),
        other => panic!("expected the budget to run out, got {other:?}"),
    }
    assert_eq!(server.hits("/tools/lookup"), 3);
    assert_eq!(report.spent.tool_calls, 3);
}

// ---- fan-out ----------------------------------------------------------------

#[test]
fn a_parallel_loop_runs_its_calls_concurrently() {
    let program = checked(
        r#"
flow fan(items: [string] len ..20) -> [Hit] {
  budget { tool_calls 20 }
  let hits = for x in items parallel 20 {
    lookup(q: x)
  }
  return hits
}
"#,
    );
    let server = MockServer::start();
    server.always(
        "GET /tools/lookup",
        Reply::from_fn(|r| {
            let q = r.query.clone().unwrap_or_default();
            Reply::delay(200, Reply::ok(json!({"hit": q})))
        }),
    );
    let items: Vec<String> = (0..20).map(|i| format!("i{i}")).collect();
    let (report, elapsed) = run_with(&program, "fan", json!({"items": items}), options(&server));
    let hits = completed(&report).as_array().expect("a list").clone();
    assert_eq!(hits.len(), 20);
    // In input order, whatever order the calls finished in.
    for (i, hit) in hits.iter().enumerate() {
        assert_eq!(hit["hit"], format!("q=i{i}"));
    }
    assert_eq!(server.hits("/tools/lookup"), 20);
    assert!(
        elapsed < Duration::from_millis(1500),
        "20 calls of 200 ms took {elapsed:?}"
    );
    let received: Vec<Instant> = server.requests().iter().map(|r| r.received).collect();
    // Every request arrived before the first reply could be sent: all 20
    // were in flight at once.
    let spread = *received.iter().max().unwrap() - *received.iter().min().unwrap();
    assert!(spread < Duration::from_millis(200), "{spread:?}");
}

// ---- secrets ----------------------------------------------------------------

#[test]
fn secrets_never_reach_the_trace_or_an_error_message() {
    let program = checked(
        r#"
tool report(q: string) -> Hit {
  http POST "{env.TOOLS_URL}/tools/report"
  header "X-Token" "{env.TOOL_TOKEN}"
  effect write
  timeout 2s
}

flow leak(q: string) -> Hit {
  budget { tokens 10k }
  let said = llm fast -> string { prompt "Say something about {q}" }
  let seen = lookup(q: said)
  let sent = report(q: seen.hit)
  return sent
}
"#,
    );
    let server = MockServer::start();
    // Every party echoes the credentials it was sent.
    server.always(
        CHAT,
        Reply::from_fn(|r| {
            Reply::chat_text(format!(
                "your header was {}",
                r.header("authorization").unwrap_or("none")
            ))
        }),
    );
    server.always(
        "GET /tools/lookup",
        Reply::from_fn(|r| {
            Reply::ok(json!({"hit": format!("auth={}", r.header("authorization").unwrap_or(""))}))
        }),
    );
    server.always(
        "POST /tools/report",
        Reply::from_fn(|r| {
            Reply::json(
                500,
                json!({"error": format!("bad token {}", r.header("x-token").unwrap_or(""))}),
            )
        }),
    );
    let dir = scratch("secrets");
    let trace_path = dir.join("nested/trace.jsonl");
    let mut opts = options(&server);
    opts.trace_path = Some(trace_path.clone());
    let (report, _) = run_with(&program, "leak", json!({"q": "x"}), opts);

    // The credentials were really sent, so the test is not vacuous.
    let requests = server.requests();
    assert!(requests
        .iter()
        .any(|r| r.header("authorization") == Some(format!("Bearer {KEY}").as_str())));
    assert!(requests
        .iter()
        .any(|r| r.header("authorization") == Some(format!("Bearer {TOOL_TOKEN}").as_str())));
    assert!(requests
        .iter()
        .any(|r| r.header("x-token") == Some(TOOL_TOKEN)));

    let error = failed(&report);
    let trace = std::fs::read_to_string(&trace_path).expect("the trace is written");
    assert!(trace.contains("model_call") && trace.contains("tool_call"));
    let in_memory = serde_json::to_string(&report.events).unwrap();
    for secret in [KEY, TOOL_TOKEN] {
        assert!(!trace.contains(secret), "{secret} in the trace:\n{trace}");
        assert!(!in_memory.contains(secret), "{secret} in the events");
        assert!(!error.to_string().contains(secret), "{secret} in {error}");
        assert!(
            !format!("{error:?}").contains(secret),
            "{secret} in {error:?}"
        );
    }

    // A provider that echoes the key in its refusal.
    let server = MockServer::start();
    server.always(
        CHAT,
        Reply::from_fn(|r| {
            Reply::error(
                401,
                format!(
                    "Incorrect API key provided: {}",
                    r.header("authorization").unwrap_or("")
                ),
            )
        }),
    );
    let mut opts = options(&server);
    opts.trace_path = Some(dir.join("refused.jsonl"));
    let (report, _) = run_with(&program, "leak", json!({"q": "x"}), opts);
    let error = failed(&report);
    assert_eq!(error.class.name(), Some("client"), "{error}");
    let trace = std::fs::read_to_string(dir.join("refused.jsonl")).unwrap();
    assert!(trace.contains("Incorrect API key"), "{trace}");
    assert!(!trace.contains(KEY), "{trace}");
    assert!(!error.to_string().contains(KEY), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

// ---- fallbacks and the circuit breaker --------------------------------------

const BROKEN_TOOL: &str = r#"
tool broken(q: string) -> Hit {
  http GET "{env.TOOLS_URL}/tools/broken?q={q}"
  effect read
  timeout 2s
  retry RETRIES on server_error backoff 10ms
}
"#;

#[test]
fn a_tool_that_keeps_failing_falls_back_to_a_value() {
    let program = checked(&format!(
        "{}\n{}",
        BROKEN_TOOL.replace("RETRIES", "1"),
        r#"
flow find(q: string) -> Hit {
  budget { tool_calls 10 }
  let found = broken(q: q) fallback { hit: "fallback value" }
  return found
}
"#
    ));
    let server = MockServer::start();
    server.always("GET /tools/broken", Reply::server_error());
    let (report, _) = run_with(&program, "find", json!({"q": "x"}), options(&server));
    assert_eq!(completed(&report), &json!({"hit": "fallback value"}));
    assert_eq!(server.hits("/tools/broken"), 2, "retries come first");
    let fallbacks = events(&report, "fallback");
    assert_eq!(fallbacks.len(), 1);
    assert!(fallbacks[0]["error"].as_str().unwrap().contains("broken"));
}

#[test]
fn a_tool_that_keeps_failing_falls_back_to_another_call() {
    let program = checked(&format!(
        "{}\n{}",
        BROKEN_TOOL.replace("RETRIES", "1"),
        r#"
flow find(q: string) -> Hit {
  budget { tool_calls 10 }
  let found = broken(q: q) fallback backup(q: q)
  return found
}
"#
    ));
    let server = MockServer::start();
    server.always("GET /tools/broken", Reply::server_error());
    server.always(
        "GET /tools/backup",
        Reply::ok(json!({"hit": "from backup"})),
    );
    let (report, _) = run_with(&program, "find", json!({"q": "x"}), options(&server));
    assert_eq!(completed(&report), &json!({"hit": "from backup"}));
    assert_eq!(server.hits("/tools/broken"), 2);
    assert_eq!(server.hits("/tools/backup"), 1);
    assert_eq!(report.calls.get("backup"), Some(&1));
}

#[test]
fn a_model_that_keeps_failing_falls_back_to_its_fallback_model_then_to_a_value() {
    let program = checked(
        r#"
model primary = openai("gpt-4o-mini") { max_tokens: 200, fallback: secondary }
model secondary = openai("gpt-4o") { max_tokens: 200 }

flow ask(q: string) -> Answer {
  budget { tokens 20k }
  let a = llm primary -> Answer {
    prompt "Rate {q}"
    retry 1 on server_error backoff 10ms
  } fallback { title: "Unknown", score: 0 }
  return a
}
"#,
    );
    // The primary model is down; the secondary answers.
    let server = MockServer::start();
    server.always(
        CHAT,
        Reply::from_fn(|r| match r.body["model"].as_str() {
            Some("gpt-4o") => Reply::chat_json(answer()),
            _ => Reply::server_error(),
        }),
    );
    let (report, _) = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    assert_eq!(completed(&report), &answer());
    let models: Vec<Value> = server
        .requests_to(CHAT)
        .iter()
        .map(|r| r.body["model"].clone())
        .collect();
    assert_eq!(
        models,
        [json!("gpt-4o-mini"), json!("gpt-4o-mini"), json!("gpt-4o")]
    );

    // Both are down: the step's fallback value.
    let server = MockServer::start();
    server.always(CHAT, Reply::server_error());
    let (report, _) = run_with(&program, "ask", json!({"q": "x"}), options(&server));
    assert_eq!(completed(&report), &json!({"title": "Unknown", "score": 0}));
    assert_eq!(server.hits(CHAT), 4, "two attempts on each model");
}

#[test]
fn the_circuit_breaker_stops_a_run_of_failing_calls() {
    let program = checked(&format!(
        "{}\n{}",
        BROKEN_TOOL.replace("RETRIES", "5"),
        r#"
flow find(q: string) -> Hit {
  budget { tool_calls 10 }
  let found = broken(q: q)
  return found
}
"#
    ));
    let server = MockServer::start();
    server.always("GET /tools/broken", Reply::server_error());
    let mut opts = options(&server);
    opts.breaker = 3;
    let (report, _) = run_with(&program, "find", json!({"q": "x"}), opts);
    let error = failed(&report);
    assert_eq!(error.class.name(), Some("circuit_breaker"), "{error}");
    assert!(error.to_string().contains("circuit breaker"), "{error}");
    assert_eq!(server.hits("/tools/broken"), 3, "the breaker opened at 3");
}

#[test]
fn an_open_breaker_sends_calls_straight_to_their_fallback() {
    // Every item's call fails and falls back. The tool's breaker opens at
    // the third failure; from then on no request reaches the tool, and
    // every later item takes its fallback at once.
    let program = checked(&format!(
        "{}\n{}",
        BROKEN_TOOL.replace("RETRIES", "0"),
        r#"
flow sweep(items: [string] len ..10) -> [Hit] {
  budget { tool_calls 10 }
  let found = for x in items {
    let f = broken(q: x) fallback { hit: "none" }
    f
  }
  return found
}
"#
    ));
    let server = MockServer::start();
    server.always("GET /tools/broken", Reply::server_error());
    let mut opts = options(&server);
    opts.breaker = 3;
    let items: Vec<String> = (0..10).map(|i| format!("i{i}")).collect();
    let (report, _) = run_with(&program, "sweep", json!({"items": items}), opts);
    assert_eq!(completed(&report), &json!(vec![json!({"hit": "none"}); 10]));
    assert_eq!(server.hits("/tools/broken"), 3, "the breaker opened at 3");
    let breaker = events(&report, "breaker");
    let statuses: Vec<&str> = breaker
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, [["open"].as_slice(), &["skipped"; 7]].concat());
    assert_eq!(breaker[0]["dependency"], "tool `broken`");
    assert_eq!(events(&report, "fallback").len(), 10);
}

#[test]
fn an_open_breaker_lets_one_probe_through_after_its_cooldown_and_closes_on_success() {
    // Each iteration waits 100 ms on `lookup`, then calls `broken`. The
    // first two calls fail and open its breaker for 500 ms; the iterations
    // meanwhile fall back without a request; then one probe goes through,
    // the service is back, the breaker closes and every later call is made.
    let program = checked(&format!(
        "{}\n{}",
        BROKEN_TOOL.replace("RETRIES", "0"),
        r#"
flow sweep(items: [string] len ..14) -> [Hit] {
  budget { tool_calls 30 }
  let found = for x in items {
    let first = lookup(q: x)
    let f = broken(q: first.hit) fallback { hit: "none" }
    f
  }
  return found
}
"#
    ));
    let server = MockServer::start();
    server.always(
        "GET /tools/lookup",
        Reply::delay(100, Reply::ok(json!({"hit": "x"}))),
    );
    server.script(
        "GET /tools/broken",
        [Reply::server_error(), Reply::server_error()],
    );
    server.always("GET /tools/broken", Reply::ok(json!({"hit": "up"})));
    let mut opts = options(&server);
    opts.breaker = 2;
    opts.breaker_cooldown = Duration::from_millis(500);
    let items: Vec<String> = (0..14).map(|i| format!("i{i}")).collect();
    let (report, _) = run_with(&program, "sweep", json!({"items": items}), opts);
    let hits: Vec<String> = completed(&report)
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hit"].as_str().unwrap().to_string())
        .collect();
    let breaker = events(&report, "breaker");
    let statuses: Vec<&str> = breaker
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    let skipped = statuses.iter().filter(|s| **s == "skipped").count();
    assert!(skipped >= 1, "{statuses:?}");
    assert_eq!(statuses.first(), Some(&"open"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"closed"), "{statuses:?}");
    // Two failures, the fallbacks while open, then answers from the probe on.
    let none = hits.iter().take_while(|h| *h == "none").count();
    assert_eq!(none, 2 + skipped, "{hits:?}");
    assert!(hits[none..].iter().all(|h| h == "up"), "{hits:?}");
    assert_eq!(
        server.hits("/tools/broken"),
        14 - skipped,
        "no request while open"
    );
}

/// A model that is down (`gpt-4o-mini`, HTTP 500) and its fallback
/// (`gpt-4o`), which rates and answers.
fn down_primary_server() -> MockServer {
    let server = MockServer::start();
    server.always(
        CHAT,
        Reply::from_fn(|r| match r.body["model"].as_str() {
            Some("gpt-4o") => Reply::chat_json(answer()),
            _ => Reply::server_error(),
        }),
    );
    server
}

fn model_hits(server: &MockServer, model: &str) -> usize {
    server
        .requests_to(CHAT)
        .iter()
        .filter(|r| r.body["model"] == model)
        .count()
}

#[test]
fn with_the_primary_model_down_an_agent_and_a_parallel_batch_finish_on_the_fallback() {
    let program = checked(
        r#"
model primary = openai("gpt-4o-mini") { max_tokens: 200, fallback: secondary }
model secondary = openai("gpt-4o") { max_tokens: 200 }

agent scout(topic: string) -> Answer {
  model primary
  tools [lookup]
  max_steps 4
  retry 2 on server_error backoff 10ms
  instructions "Research {topic}."
}

flow survey(topics: [string] len ..5) -> { notes: Answer, rated: [Answer] } {
  budget { tokens 200k }
  let rated = for t in topics parallel 5 {
    llm primary -> Answer { prompt "Rate {t}" retry 2 on server_error backoff 10ms }
  }
  let notes = scout(topic: "everything")
  return { notes: notes, rated: rated }
}
"#,
    );
    let server = down_primary_server();
    let topics: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
    let (report, _) = run_with(
        &program,
        "survey",
        json!({"topics": topics}),
        options(&server),
    );
    assert_eq!(
        completed(&report),
        &json!({"notes": answer(), "rated": vec![answer(); 5]})
    );
    // Without breakers: 6 calls × 3 attempts = 18 requests to the dead
    // model. The breaker (10) lets at most 10 through.
    let primary = model_hits(&server, "gpt-4o-mini");
    assert!(
        (6..=10).contains(&primary),
        "{primary} requests to the dead model"
    );
    assert_eq!(
        model_hits(&server, "gpt-4o"),
        6,
        "every call answered by the fallback"
    );
    let opened: Vec<&Value> = events(&report, "breaker")
        .into_iter()
        .filter(|e| e["status"] == "open")
        .collect();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["dependency"], "model `primary`");
}

#[test]
fn an_agent_falls_back_to_its_models_fallback_and_later_turns_start_there() {
    let program = checked(
        r#"
model primary = openai("gpt-4o-mini") { max_tokens: 200, fallback: secondary }
model secondary = openai("gpt-4o") { max_tokens: 200 }

agent scout(topic: string) -> Answer {
  model primary
  tools [lookup]
  max_steps 4
  retry 1 on server_error backoff 10ms
  instructions "Research {topic}."
}

flow probe(topic: string) -> Answer {
  budget { tokens 100k }
  let a = scout(topic: topic)
  return a
}
"#,
    );
    let server = MockServer::start();
    server.always(
        CHAT,
        Reply::from_fn(|r| {
            match (
                r.body["model"].as_str(),
                r.body["messages"].as_array().map(Vec::len),
            ) {
                (Some("gpt-4o-mini"), _) => Reply::server_error(),
                // Turn 1 calls a tool; turn 2 answers.
                (_, Some(1)) => Reply::chat_tool_call("lookup", json!({"q": "x"})),
                _ => Reply::chat_json(answer()),
            }
        }),
    );
    server.always("GET /tools/lookup", Reply::ok(json!({"hit": "found"})));
    let (report, _) = run_with(&program, "probe", json!({"topic": "x"}), options(&server));
    assert_eq!(completed(&report), &answer());
    // Turn 1: two attempts on the primary, then the fallback; turn 2 starts
    // on the fallback.
    let models: Vec<Value> = server
        .requests_to(CHAT)
        .iter()
        .map(|r| r.body["model"].clone())
        .collect();
    assert_eq!(
        models,
        [
            json!("gpt-4o-mini"),
            json!("gpt-4o-mini"),
            json!("gpt-4o"),
            json!("gpt-4o")
        ]
    );
}

#[test]
fn an_agent_turn_that_gets_a_529_is_retried_by_default_and_the_run_finishes() {
    let program = agent_program("max_steps 4");
    let server = MockServer::start();
    server.script(
        CHAT,
        [Reply::error(529, "Overloaded"), Reply::chat_json(answer())],
    );
    let started = Instant::now();
    let (report, _) = run_with(
        &program,
        "research",
        json!({"topic": "x"}),
        options(&server),
    );
    assert_eq!(completed(&report), &answer());
    assert_eq!(server.hits(CHAT), 2, "one 529, one retry");
    let requests = server.requests_to(CHAT);
    let gap = requests[1].received - requests[0].received;
    // The default backoff: 1 s, jittered down by up to half.
    assert!(gap >= Duration::from_millis(450), "retried after {gap:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_agent_turn_that_keeps_failing_names_the_turn_and_the_attempt_apart() {
    let program = agent_program("max_steps 4 retry 1 on server_error backoff 10ms");
    let server = MockServer::start();
    server.script(
        CHAT,
        [
            Reply::chat_tool_call("lookup", json!({"q": "x"})),
            Reply::server_error(),
            Reply::server_error(),
        ],
    );
    server.always("GET /tools/lookup", Reply::ok(json!({"hit": "found"})));
    let (report, _) = run_with(
        &program,
        "research",
        json!({"topic": "x"}),
        options(&server),
    );
    let error = failed(&report);
    assert_eq!(error.attempts, 2, "{error}");
    assert_eq!(error.class.name(), Some("server_error"));
    let text = error.to_string();
    assert!(text.contains("after 2 attempts"), "{text}");
    assert!(
        text.contains("turn 2 (model `fast`, attempt 2 of 2)"),
        "{text}"
    );
    assert_eq!(server.hits(CHAT), 3);
}

#[test]
fn an_agent_turn_is_not_retried_on_a_class_its_policy_does_not_name() {
    let program = agent_program("max_steps 4 retry 3 on rate_limit backoff 10ms");
    let server = MockServer::start();
    server.always(CHAT, Reply::server_error());
    let (report, _) = run_with(
        &program,
        "research",
        json!({"topic": "x"}),
        options(&server),
    );
    let error = failed(&report);
    assert_eq!(error.attempts, 1, "{error}");
    assert_eq!(server.hits(CHAT), 1);
}

#[test]
fn the_circuit_breaker_stops_an_agent_whose_tools_keep_failing() {
    let program = checked(&format!(
        "{}\n{}",
        BROKEN_TOOL.replace("RETRIES", "0"),
        r#"
agent prober(topic: string) -> Answer {
  model fast
  tools [broken]
  max_steps 10
  instructions "Probe {topic}."
}

flow probe(topic: string) -> Answer {
  budget { tokens 100k }
  let a = prober(topic: topic)
  return a
}
"#
    ));
    let server = MockServer::start();
    server.script(
        CHAT,
        (0..10).map(|i| Reply::chat_tool_call("broken", json!({"q": format!("q{i}")}))),
    );
    server.always("GET /tools/broken", Reply::server_error());
    let mut opts = options(&server);
    opts.breaker = 3;
    let (report, _) = run_with(&program, "probe", json!({"topic": "x"}), opts);
    let error = failed(&report);
    assert!(error.to_string().contains("circuit breaker"), "{error}");
    assert!(error.to_string().contains("tool `broken`"), "{error}");
    assert_eq!(server.hits("/tools/broken"), 3, "the breaker opened at 3");
    // The fourth turn's call found the breaker open: the agent stops.
    assert_eq!(server.hits(CHAT), 4);
}

// ---- approval gates ---------------------------------------------------------

const RELEASE: &str = r#"
tool publish(text: string) -> { id: string } {
  http POST "{env.TOOLS_URL}/tools/publish"
  effect write
  timeout 2s
}

flow release(q: string) -> { hit: string, id: string } {
  budget { tool_calls 10 }
  let draft = lookup(q: q)
  let stats = backup(q: q)
  let ok = approve publish_it { show draft }
  let posted = publish(text: ok.hit)
  return { hit: stats.hit, id: posted.id }
}

flow side(q: string) -> Hit {
  budget { tool_calls 10 }
  let draft = lookup(q: q)
  let stats = backup(q: q)
  let ok = approve publish_it { show draft }
  let posted = publish(text: ok.hit)
  return stats
}
"#;

fn gate_server() -> MockServer {
    let server = MockServer::start();
    server.always("GET /tools/lookup", Reply::ok(json!({"hit": "draft text"})));
    server.always("GET /tools/backup", Reply::ok(json!({"hit": "stats"})));
    server.always("POST /tools/publish", Reply::ok(json!({"id": "P-1"})));
    server
}

#[test]
fn a_gate_without_a_decision_waits_while_independent_steps_complete() {
    let program = checked(RELEASE);
    let server = gate_server();
    let (report, _) = run_with(&program, "release", json!({"q": "x"}), options(&server));
    let Outcome::Waiting(gates) = &report.outcome else {
        panic!("expected the run to wait, got {:?}", report.outcome)
    };
    assert_eq!(gates.len(), 1);
    assert_eq!(gates[0].gate, "publish_it");
    assert_eq!(gates[0].flow, "release");
    assert_eq!(gates[0].show, vec![json!({"hit": "draft text"})]);
    assert!(report.completed.contains("release.stats"));
    assert!(report.completed.contains("release.draft"));
    assert!(!report.completed.iter().any(|s| s.ends_with(".posted")));
    assert_eq!(server.hits("/tools/publish"), 0);
    assert_eq!(report.outcome.exit_code(), 4);
}

#[test]
fn an_approved_gate_lets_its_dependents_run() {
    let program = checked(RELEASE);
    let server = gate_server();
    let mut opts = options(&server);
    opts.gates
        .insert("publish_it".into(), GateDecision::Approve(None));
    let (report, _) = run_with(&program, "release", json!({"q": "x"}), opts);
    assert_eq!(completed(&report), &json!({"hit": "stats", "id": "P-1"}));
    let published = server.requests_to("/tools/publish");
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].body, json!({"text": "draft text"}));
}

#[test]
fn a_rejected_gate_skips_its_dependents_and_keeps_independent_outputs() {
    let program = checked(RELEASE);
    let reject = || {
        HashMap::from([(
            "publish_it".to_string(),
            GateDecision::Reject("not today".into()),
        )])
    };

    // The result does not depend on the gate: the run completes without it.
    let server = gate_server();
    let mut opts = options(&server);
    opts.gates = reject();
    let (report, _) = run_with(&program, "side", json!({"q": "x"}), opts);
    assert_eq!(completed(&report), &json!({"hit": "stats"}));
    assert_eq!(server.hits("/tools/publish"), 0);
    assert!(report.completed.contains("side.stats"));
    assert!(!report.completed.contains("side.posted"));
    assert!(events(&report, "gate")
        .iter()
        .any(|e| e["decision"] == "rejected" && e["reason"] == "not today"));

    // The result depends on the gate: the run ends rejected, and the
    // independent step still ran.
    let server = gate_server();
    let mut opts = options(&server);
    opts.gates = reject();
    let (report, _) = run_with(&program, "release", json!({"q": "x"}), opts);
    assert!(
        matches!(report.outcome, Outcome::Rejected),
        "{:?}",
        report.outcome
    );
    assert_eq!(report.outcome.exit_code(), 1);
    assert_eq!(server.hits("/tools/publish"), 0);
    assert_eq!(server.hits("/tools/backup"), 1);
    assert!(report.completed.contains("release.stats"));
}

// ---- the binary -------------------------------------------------------------

fn flowc_run(server: &MockServer, dir: &PathBuf, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowc"));
    command.current_dir(dir).args(args);
    for (name, value) in env_vars(server) {
        command.env(name, value);
    }
    command.output().expect("flowc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_program(dir: &std::path::Path, body: &str) -> PathBuf {
    let path = dir.join("prog.flow");
    std::fs::write(&path, format!("{PRELUDE}\n{body}")).expect("write the program");
    path
}

#[test]
fn flowc_run_writes_a_trace_that_flowc_trace_renders() {
    let dir = scratch("binary-ok");
    let file = write_program(
        &dir,
        r#"
flow ask(q: string) -> Answer {
  budget { tokens 10k }
  let seen = lookup(q: q)
  let a = llm fast -> Answer {
    prompt "Rate {seen.hit}"
    retry 1 on rate_limit backoff 10ms
  }
  return a
}
"#,
    );
    let server = MockServer::start();
    server.script(CHAT, [Reply::rate_limited(0), Reply::chat_json(answer())]);
    server.always("GET /tools/lookup", Reply::ok(json!({"hit": "h"})));
    let trace = dir.join("trace.jsonl");
    let out = flowc_run(
        &server,
        &dir,
        &[
            "run",
            file.to_str().unwrap(),
            "--input",
            r#"{"q": "x"}"#,
            "--trace",
            trace.to_str().unwrap(),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let output: Value = serde_json::from_slice(&out.stdout).expect("the output is JSON");
    assert_eq!(output, answer());
    assert!(stderr.contains("completed"), "{stderr}");
    assert!(stderr.contains("1 retries"), "{stderr}");
    assert_eq!(server.hits(CHAT), 2);

    let written = std::fs::read_to_string(&trace).expect("the trace is written");
    assert!(!written.contains(KEY) && !written.contains(TOOL_TOKEN));
    for line in written.lines() {
        serde_json::from_str::<Value>(line).expect("every line is JSON");
    }

    let rendered = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .current_dir(&dir)
        .args(["trace", trace.to_str().unwrap()])
        .output()
        .expect("flowc trace runs");
    let tree = text(&rendered.stdout);
    assert_eq!(
        rendered.status.code(),
        Some(0),
        "{}",
        text(&rendered.stderr)
    );
    for part in ["run ask", "flow ask", "model_call fast", "tool_call lookup"] {
        assert!(tree.contains(part), "{part:?} not in\n{tree}");
    }
    assert!(
        !dir.join(".flowc/runs").exists(),
        "--trace replaces the default trace file"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn flowc_run_exits_3_when_a_budget_runs_out_and_1_when_the_flow_fails() {
    let dir = scratch("binary-codes");
    let file = write_program(
        &dir,
        r#"
flow digest(docs: [string] len ..10) -> [string] {
  budget { tokens 1000 }
  let out = for d in docs {
    llm fast -> string { prompt "Summarize: {d}" max_tokens 50 retry 0 }
  }
  return out
}

flow find(q: string) -> Hit {
  budget { tool_calls 10 }
  let found = lookup(q: q)
  return found
}
"#,
    );
    let server = MockServer::start();
    server.always(CHAT, Reply::chat_text("short").with_usage(110, 40));
    server.always("GET /tools/lookup", Reply::server_error());
    let input = json!({"docs": docs(10)}).to_string();
    let trace = dir.join("budget.jsonl");
    let out = flowc_run(
        &server,
        &dir,
        &[
            "run",
            file.to_str().unwrap(),
            "--flow",
            "digest",
            "--input",
            &input,
            "--trace",
            trace.to_str().unwrap(),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("tokens budget"), "{stderr}");
    assert!(server.tokens_served() <= 1000);
    assert!(std::fs::read_to_string(&trace)
        .unwrap()
        .contains("budget_exhausted"));

    let out = flowc_run(
        &server,
        &dir,
        &[
            "run",
            file.to_str().unwrap(),
            "--flow",
            "find",
            "--input",
            r#"{"q": "x"}"#,
            "--trace",
            dir.join("failed.jsonl").to_str().unwrap(),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("found"), "{stderr}");
    assert!(stderr.contains("server_error"), "{stderr}");
    assert!(!stderr.contains(TOOL_TOKEN) && !stderr.contains(KEY));
    let _ = std::fs::remove_dir_all(dir);
}

// ---- partial completion: `tolerate` -----------------------------------------

const TOLERANT: &str = r#"
flow fetch_all(items: [string] len ..50) -> { ok: [Hit], failed: [{ item: string, class: string, message: string }] } {
  budget { tool_calls 60 }
  let fetched = for x in items parallel 10 tolerate TOLERATE {
    lookup(q: x)
  }
  check few_failed { require fetched.failed.len <= TOLERATE, "more failures than tolerated" }
  return fetched
}
"#;

/// `lookup` answers every item but `i7`, `i23` and `i41`, which fail for good.
fn partly_down_server() -> MockServer {
    let server = MockServer::start();
    server.always(
        "GET /tools/lookup",
        Reply::from_fn(|r| {
            let q = r.query.clone().unwrap_or_default();
            match q.as_str() {
                "q=i7" | "q=i23" | "q=i41" => Reply::error(500, format!("cannot serve {q}")),
                _ => Reply::delay(5, Reply::ok(json!({"hit": q}))),
            }
        }),
    );
    server
}

#[test]
fn a_tolerant_parallel_loop_returns_its_successes_and_its_typed_failures() {
    let program = checked(&TOLERANT.replace("TOLERATE", "5"));
    let server = partly_down_server();
    let items: Vec<String> = (0..50).map(|i| format!("i{i}")).collect();
    let (report, _) = run_with(
        &program,
        "fetch_all",
        json!({"items": items}),
        options(&server),
    );
    let value = completed(&report);
    let ok = value["ok"].as_array().unwrap();
    assert_eq!(ok.len(), 47);
    let expected: Vec<Value> = (0..50)
        .filter(|i| ![7, 23, 41].contains(i))
        .map(|i| json!({"hit": format!("q=i{i}")}))
        .collect();
    assert_eq!(ok, &expected, "in input order");
    let failed = value["failed"].as_array().unwrap();
    let items: Vec<&str> = failed.iter().map(|f| f["item"].as_str().unwrap()).collect();
    assert_eq!(items, ["i7", "i23", "i41"]);
    for f in failed {
        assert_eq!(f["class"], "server_error", "{f}");
        let message = f["message"].as_str().unwrap();
        assert!(
            message.contains("lookup") && message.contains("cannot serve"),
            "{message}"
        );
    }
    assert_eq!(server.hits("/tools/lookup"), 50, "each item once");
    assert_eq!(events(&report, "tolerated").len(), 3);
}

#[test]
fn a_tolerant_loop_fails_at_one_failure_more_than_it_tolerates() {
    let program = checked(&TOLERANT.replace("TOLERATE", "2"));
    let server = partly_down_server();
    let items: Vec<String> = (0..50).map(|i| format!("i{i}")).collect();
    let (report, _) = run_with(
        &program,
        "fetch_all",
        json!({"items": items}),
        options(&server),
    );
    let error = failed(&report);
    assert_eq!(error.class.name(), Some("server_error"), "{error}");
    assert!(
        error.message.contains("more than its `tolerate 2`"),
        "{error}"
    );
    assert_eq!(events(&report, "tolerated").len(), 2);
}

#[test]
fn a_loop_without_tolerance_fails_at_its_first_failed_iteration() {
    let program = checked(
        r#"
flow fetch_all(items: [string] len ..50) -> [Hit] {
  budget { tool_calls 60 }
  let fetched = for x in items { lookup(q: x) }
  return fetched
}
"#,
    );
    let server = partly_down_server();
    let items: Vec<String> = (0..50).map(|i| format!("i{i}")).collect();
    let (report, _) = run_with(
        &program,
        "fetch_all",
        json!({"items": items}),
        options(&server),
    );
    let error = failed(&report);
    assert!(error.message.contains("cannot serve q=i7"), "{error}");
    assert_eq!(server.hits("/tools/lookup"), 8, "stopped at i7");
}

#[test]
fn a_tolerant_loops_value_is_typed_as_its_record() {
    let source = |body: &str| {
        format!(
            "{PRELUDE}\nflow f(items: [string] len ..5) -> {body} {{\n  budget {{ tool_calls 10 }}\n  let r = for x in items tolerate 2 {{ lookup(q: x) }}\n  let v = RETURN\n  return v\n}}\n"
        )
    };
    let errors = |text: String| {
        let c = compile(&[Input::Text {
            name: "t.flow".into(),
            bytes: text.into_bytes(),
        }])
        .expect("compiles");
        c.problems
            .sorted()
            .into_iter()
            .filter(|d| d.severity == flowc::code::Severity::Error)
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
    };
    // Its fields, with their element types and bounds.
    let good = source("[\"rate_limit\" | \"timeout\" | \"server_error\" | \"connection\" | \"invalid\" | \"client\" | \"failed\" | \"circuit_breaker\" | \"max_steps\" | \"max_repeat\" | \"template\" | \"value\" | \"check\"]")
        .replace("RETURN", "for f in r.failed { f.class }");
    assert_eq!(errors(good), Vec::<String>::new());
    let items = source("[string]").replace("RETURN", "for f in r.failed { f.item }");
    assert_eq!(errors(items), Vec::<String>::new());
    let hits = source("[Hit]").replace("RETURN", "r.ok");
    assert_eq!(errors(hits), Vec::<String>::new());
    // Not a list any more, and no field it does not have.
    let as_list = source("[Hit]").replace("RETURN", "r");
    assert!(!errors(as_list).is_empty());
    let typo = source("[Hit]").replace("RETURN", "r.oks");
    let typo = errors(typo);
    assert!(typo.iter().any(|m| m.contains("oks")), "{typo:?}");
    // `tolerate 0` tolerates nothing.
    let zero = source("[Hit]")
        .replace("tolerate 2", "tolerate 0")
        .replace("RETURN", "r");
    let zero = errors(zero);
    assert!(zero.iter().any(|m| m.contains("`tolerate 0`")), "{zero:?}");
}

#[test]
fn the_cost_check_counts_an_agents_turn_retries_and_fallback_models() {
    let budget_errors = |clauses: &str| {
        let text = format!(
            r#"{PRELUDE}
model primary = openai("gpt-4o-mini") {{ max_tokens: 100, fallback: secondary }}
model secondary = openai("gpt-4o") {{ max_tokens: 300 }}

agent scout(topic: string) -> Answer {{
  model MODEL
  tools [lookup]
  max_steps 2
  {clauses}
  instructions "Research {{topic}}."
}}

flow f(topic: string) -> Answer {{
  budget {{ tokens 100k }}
  let a = scout(topic: topic)
  return a
}}
"#
        );
        let c = compile(&[Input::Text {
            name: "t.flow".into(),
            bytes: text.replace("MODEL", "fast").into_bytes(),
        }])
        .expect("compiles");
        let one = c
            .problems
            .errors
            .iter()
            .map(|d| format!("{}: {}", d.message, d.help.clone().unwrap_or_default()))
            .collect::<Vec<_>>();
        let c = compile(&[Input::Text {
            name: "t.flow".into(),
            bytes: text.replace("MODEL", "primary").into_bytes(),
        }])
        .expect("compiles");
        let chain = c
            .problems
            .errors
            .iter()
            .map(|d| format!("{}: {}", d.message, d.help.clone().unwrap_or_default()))
            .collect::<Vec<_>>();
        (one, chain)
    };
    // 2 turns of (200 out + instructions) plus one re-read earlier turn of
    // (200 + 0 tool result, `lookup` has no limit): 1 attempt is ~610 tokens.
    let tight = |budget: &str, clauses: &str| budget_errors(&clauses.replace("BUDGET", budget));
    let (one, _) = tight("700", "retry 0 budget { tokens BUDGET }");
    assert_eq!(one, Vec::<String>::new());
    // The default retries each turn twice: three attempts count.
    let (default, _) = tight("700", "budget { tokens BUDGET }");
    assert_eq!(default.len(), 1, "{default:?}");
    assert!(default[0].contains("3 attempts ×"), "{default:?}");
    let (declared, _) = tight("1400", "retry 1 on rate_limit budget { tokens BUDGET }");
    assert_eq!(
        declared,
        Vec::<String>::new(),
        "two attempts fit twice the budget"
    );
    // Through a fallback chain, each model's turns count, and an earlier
    // answer counts the chain's longest `max_tokens` (300).
    let (_, chain) = tight("700", "retry 0 budget { tokens BUDGET }");
    assert_eq!(chain.len(), 1, "{chain:?}");
    assert!(chain[0].contains("300 max_tokens"), "{chain:?}");
}
