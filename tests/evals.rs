//! `eval` blocks and `flowc eval`: the example's eval offline from its
//! recording (JSON and JUnit checked), a worse prompt failing its threshold
//! and regressing against a baseline (live, against the loopback model
//! mock, whose answers depend on the prompt it receives), bad dataset rows
//! and budgets refused before anything runs, judges retried on invalid
//! replies, and recordings that replay to the same scores.

use serde_json::{json, Value};

use crate::support::cli::Test;
use crate::support::mock_server::{refused_base_url, MockServer, Reply, CHAT};

/// A classifier whose system prompt is `{PROMPT}`, and an eval of it over
/// `rows.jsonl`.
const CLASSIFY: &str = r#"
use std.models.{openai}

type Category = "billing" | "bug"

model classifier = openai("gpt-4o-mini") { temperature: 0, max_tokens: 100 }

flow classify(text: string len ..500) -> { category: Category } {
  budget { tokens 10k, cost $0.10, steps 5, wall 1m }
  let c = llm classifier -> { category: Category } {
    system "{PROMPT}"
    prompt "Ticket: {text}"
    retry 1 on invalid
  }
  return { category: c.category }
}

eval "classify" {
  run classify
  dataset "./rows.jsonl"
  score category weight 2 = output.category == expected.category
  score one_call = trace.called.classifier == 1 and trace.retries == 0
  threshold 0.8
  budget { BUDGET }
  concurrency 2
}
"#;

const GOOD_PROMPT: &str = "Read the whole ticket: billing for payment problems, bug otherwise.";
const WORSE_PROMPT: &str = "Answer quickly.";

const ROWS: &str = r#"{"input": {"text": "I was charged twice for March"}, "expected": {"category": "billing"}}
{"input": {"text": "Refund the charge on invoice 12"}, "expected": {"category": "billing"}}
{"input": {"text": "The export button crashes the page"}, "expected": {"category": "bug"}}
{"input": {"text": "Charts are blank in Firefox"}, "expected": {"category": "bug"}}
"#;

fn classify(prompt: &str, budget: &str) -> String {
    CLASSIFY
        .replace("{PROMPT}", prompt)
        .replace("BUDGET", budget)
}

const BUDGET: &str = "tokens 100k, cost $1.00, steps 50";

/// A model that follows the good prompt (billing when the ticket mentions a
/// charge) and, given the worse one, always answers `bug`.
fn classifier_mock() -> MockServer {
    let server = MockServer::start();
    server.always(
        CHAT,
        Reply::from_fn(|req| {
            let body = req.raw_body.clone();
            let careful = body.contains("Read the whole ticket");
            let charge = body.contains("charge");
            let category = if careful && charge { "billing" } else { "bug" };
            Reply::chat_json(json!({ "category": category }))
        }),
    );
    server
}

fn live(test: Test, server: &MockServer) -> Test {
    test.env("OPENAI_BASE_URL", &server.openai_base_url())
        .env("OPENAI_API_KEY", "sk-test")
}

fn row_scores(doc: &Value) -> Vec<(f64, Vec<(String, f64)>)> {
    doc["evals"][0]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let scores = r["scores"]
                .as_array()
                .expect("scores")
                .iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap().to_string(),
                        s["score"].as_f64().unwrap(),
                    )
                })
                .collect();
            (r["score"].as_f64().unwrap(), scores)
        })
        .collect()
}

#[test]
fn the_examples_eval_passes_offline_from_its_recording_with_json_and_junit() {
    let run = || {
        let test = Test::new().in_repo();
        let junit = test.path("junit.xml");
        let out = test
            .args([
                "eval",
                "examples/",
                "--replay",
                "examples/support_triage.recording.json",
                "--ephemeral",
                "--format",
                "json",
                "--junit",
                &junit,
            ])
            .env("OPENAI_BASE_URL", &refused_base_url())
            .run();
        let xml = std::fs::read_to_string(out.dir().join("junit.xml")).expect("JUnit written");
        (out.json(), xml)
    };
    let (doc, xml) = run();
    assert_eq!(doc["passed"], true, "{doc:#}");
    let eval = &doc["evals"][0];
    assert_eq!(eval["name"], "triage quality");
    assert_eq!(eval["flow"], "triage");
    assert_eq!(eval["rows"].as_array().unwrap().len(), 30);
    let scorers: Vec<&str> = eval["scorers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(scorers, ["category", "trajectory", "tone"]);
    assert!(eval["mean"].as_f64().unwrap() >= 0.8);
    assert_eq!(eval["pass_rate"].as_f64().unwrap(), 27.0 / 30.0);
    // Row 18's classification is not confident: the flow's check stops it.
    assert_eq!(eval["failures"], json!({"check": 1}));
    assert_eq!(eval["rows"][17]["failure"]["class"], "check");
    // Row 13 is misclassified: the category scorer says so, the others not.
    let row13 = &eval["rows"][12];
    assert_eq!(row13["scores"][0]["score"], 0.0);
    assert_eq!(row13["scores"][1]["score"], 1.0);
    // Row 5's judge first replied a score of 8: retried with the error, it
    // gave a valid one.
    assert_eq!(eval["rows"][4]["scores"][2]["score"], 0.94);
    // JUnit: a suite for the eval, a case per row, the three failing rows.
    assert_eq!(xml.matches("<testcase ").count(), 30, "{xml}");
    assert!(
        xml.contains(r#"<testsuite name="eval triage quality" tests="30" failures="3""#),
        "{xml}"
    );
    assert!(xml.contains(r#"name="row 13 (line 13)""#), "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 3, "{xml}");
    // Offline replay is deterministic: the same scores, row for row.
    let (again, _) = run();
    assert_eq!(row_scores(&doc), row_scores(&again));
}

#[test]
fn a_worse_prompt_fails_the_threshold_and_the_baseline_names_what_regressed() {
    let server = classifier_mock();
    let good = live(Test::new(), &server)
        .file("good.flow", &classify(GOOD_PROMPT, BUDGET))
        .file("worse.flow", &classify(WORSE_PROMPT, BUDGET))
        .file("rows.jsonl", ROWS)
        .args(["eval", "good.flow", "--format", "json"])
        .run();
    let doc = good.json();
    assert_eq!(doc["passed"], true, "{doc:#}");
    assert_eq!(doc["evals"][0]["mean"], 1.0);
    assert_eq!(server.hits(CHAT), 4);
    // Each row's run is a durable run with its trace, in the run store.
    let trace = doc["evals"][0]["rows"][0]["trace"].as_str().unwrap();
    assert!(good.dir().join(trace).is_file(), "no trace at {trace}");
    let id = doc["id"].as_str().unwrap().to_string();

    let dir = good.dir().to_path_buf();
    let worse = std::process::Command::new(env!("CARGO_BIN_EXE_flowc"))
        .current_dir(&dir)
        .args(["eval", "worse.flow", "--baseline", &id, "--format", "json"])
        .env("OPENAI_BASE_URL", server.openai_base_url())
        .env("OPENAI_API_KEY", "sk-test")
        .env_remove("FLOWC_STORE")
        .output()
        .expect("flowc runs");
    assert_eq!(
        worse.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&worse.stderr)
    );
    let doc: Value = serde_json::from_slice(&worse.stdout).expect("JSON");
    let eval = &doc["evals"][0];
    assert_eq!(eval["passed"], false);
    // Both billing tickets now come back as bugs: 2 × (0 + 1) / 3 + 2 × 1.
    assert!((eval["mean"].as_f64().unwrap() - (2.0 / 3.0 + 2.0) / 4.0).abs() < 1e-9);
    assert_eq!(server.hits(CHAT), 8);
    let cmp = &doc["baseline"]["evals"][0];
    assert_eq!(doc["baseline"]["baseline"], id.as_str());
    let rows: Vec<u64> = cmp["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, [1, 2], "{cmp:#}");
    assert_eq!(cmp["rows"][0]["scorers"][0][0], "category");
    assert_eq!(cmp["rows"][0]["scorers"].as_array().unwrap().len(), 1);
    let scorers: Vec<&str> = cmp["scorers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    assert_eq!(scorers, ["category"]);

    // The human report names them too, with the trace to look at.
    let human = std::process::Command::new(env!("CARGO_BIN_EXE_flowc"))
        .current_dir(&dir)
        .args(["eval", "worse.flow", "--baseline", &id])
        .env("OPENAI_BASE_URL", server.openai_base_url())
        .env("OPENAI_API_KEY", "sk-test")
        .env_remove("FLOWC_STORE")
        .output()
        .expect("flowc runs");
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("scorer category regressed: 1.00 -> 0.50"),
        "{text}"
    );
    assert!(
        text.contains(
            "row 1 (line 1) regressed: 1.00 -> 0.33 (category 1.00 -> 0.00); trace: flowc trace"
        ),
        "{text}"
    );
    assert!(
        text.contains("mean 0.67, pass rate 2/4 (50.0%), threshold 0.8: FAILED"),
        "{text}"
    );
}

#[test]
fn a_dataset_row_that_does_not_fit_is_a_diagnostic_at_its_line_before_anything_runs() {
    let server = classifier_mock();
    let rows = ROWS.replace(
        r#"{"input": {"text": "The export button crashes the page"}"#,
        r#"{"input": {"text": 42}"#,
    );
    let out = live(Test::new(), &server)
        .file("a.flow", &classify(GOOD_PROMPT, BUDGET))
        .file("rows.jsonl", &rows)
        .args(["eval", "a.flow", "--color", "never"])
        .status(1)
        .run();
    assert!(out.stderr.contains("error[V002]"), "{}", out.stderr);
    assert!(out.stderr.contains("rows.jsonl:3:1"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("row at line 3 of rows.jsonl does not fit flow `classify`: input/text: 42"),
        "{}",
        out.stderr
    );
    assert_eq!(
        server.hits(CHAT),
        0,
        "nothing runs before the rows are checked"
    );
}

#[test]
fn the_evals_worst_case_is_checked_against_its_budget() {
    let server = classifier_mock();
    // Per row: 2 attempts × (100 max_tokens + the prompt) ≈ 240 tokens; four
    // rows do not fit in 500.
    let tight = "tokens 500, cost $1.00, steps 50";
    let out = live(Test::new(), &server)
        .file("a.flow", &classify(GOOD_PROMPT, tight))
        .file("rows.jsonl", ROWS)
        .args(["check", "--format", "json", "a.flow"])
        .status(1)
        .run();
    let doc = out.json();
    let b004: Vec<&Value> = doc["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["code"] == "B004")
        .collect();
    assert_eq!(b004.len(), 1, "{doc:#}");
    let message = b004[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("eval \"classify\" can spend"),
        "{message}"
    );
    let help = b004[0]["help"].as_str().unwrap_or_default();
    assert!(help.contains("4 rows × ("), "{help}");
    live(Test::new(), &server)
        .file("a.flow", &classify(GOOD_PROMPT, tight))
        .file("rows.jsonl", ROWS)
        .args(["eval", "a.flow"])
        .status(1)
        .run();
    assert_eq!(server.hits(CHAT), 0);
}

const JUDGED: &str = r#"
use std.models.{openai}

model grader = openai("gpt-4o-mini") { temperature: 0, max_tokens: 100 }

flow greet(name: string len ..50) -> string {
  budget { steps 5, wall 1m }
  return "Hello, {name}!"
}

eval "greetings" {
  run greet
  row { name: "Ada" } expecting "Hello, Ada!"
  score exact = output == expected
  score polite = llm grader -> { score: number >= 0 <= 1, reason: string } {
    prompt "How polite is this greeting? {output}"
    retry 2 on invalid
  }
  threshold 0.9
  budget { tokens 10k, cost $0.10, steps 20 }
}
"#;

#[test]
fn an_invalid_judge_reply_is_retried_with_the_validation_error() {
    let server = MockServer::start();
    server.script(
        CHAT,
        [
            Reply::chat_json(json!({"score": 1.7, "reason": "very polite"})),
            Reply::chat_json(json!({"score": 0.9, "reason": "polite and short"})),
        ],
    );
    let out = live(Test::new(), &server)
        .file("a.flow", JUDGED)
        .args(["eval", "a.flow", "--ephemeral", "--format", "json"])
        .run();
    let requests = server.requests_to(CHAT);
    assert_eq!(requests.len(), 2, "one invalid reply, one retry");
    let retry = &requests[1].raw_body;
    assert!(retry.contains("Your reply was not valid"), "{retry}");
    assert!(retry.contains("1.7"), "{retry}");
    let doc = out.json();
    let row = &doc["evals"][0]["rows"][0];
    assert_eq!(row["scores"][1]["score"], 0.9);
    assert_eq!(row["scores"][1]["reason"], "polite and short");
    assert_eq!(row["score"], 0.95);
}

#[test]
fn a_recorded_eval_replays_offline_to_the_same_scores() {
    let server = classifier_mock();
    let live_run = live(Test::new(), &server)
        .file("a.flow", &classify(WORSE_PROMPT, BUDGET))
        .file("rows.jsonl", ROWS)
        .args([
            "eval",
            "a.flow",
            "--ephemeral",
            "--format",
            "json",
            "--record",
            "rec.json",
        ])
        .status(1)
        .run();
    assert_eq!(server.hits(CHAT), 4);
    let recorded = live_run.json();
    let dir = live_run.dir().to_path_buf();
    drop(server);
    let replayed = std::process::Command::new(env!("CARGO_BIN_EXE_flowc"))
        .current_dir(&dir)
        .args([
            "eval",
            "a.flow",
            "--ephemeral",
            "--format",
            "json",
            "--replay",
            "rec.json",
        ])
        .env("OPENAI_BASE_URL", refused_base_url())
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .expect("flowc runs");
    let doc: Value = serde_json::from_slice(&replayed.stdout).expect("JSON");
    assert_eq!(row_scores(&doc), row_scores(&recorded));
    assert_eq!(doc["evals"][0]["mean"], recorded["evals"][0]["mean"]);
    let rec: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rec.json")).unwrap()).unwrap();
    assert_eq!(
        rec["evals"]["classify"]["rows"].as_array().unwrap().len(),
        4
    );
}
