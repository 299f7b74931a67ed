//! `flowc stats` and `flowc runs` filters on a store filled by real runs of
//! the `flowc` binary with known outcomes (models and tools on the loopback
//! mock server): the figures are worked out by hand below.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use support::mock_server::{MockServer, Reply, CHAT};

const PROGRAM: &str = r#"
use std.models.{openai}

type Scored { name: string, score: int }

model fast = openai("gpt-4o-mini") { temperature: 0, max_tokens: 100 }

tool lookup(q: string) -> { items: [string], n: int } {
  http GET "{env.TOOLS_URL}/tools/lookup?q={q}"
  effect read
  timeout 5s
}

flow fetch(q: string) -> { items: [string], n: int } {
  budget { tool_calls 5, steps 10 }
  let found = lookup(q: q)
  check found_something { require found.n > 0, "nothing found" }
  return found
}

flow score(q: string) -> Scored {
  budget { tokens 10k, steps 10 }
  let s = llm fast -> Scored {
    prompt "Score {q}"
    retry 1 on invalid
  }
  return s
}

flow tight(q: string) -> { items: [string], n: int } {
  budget { tool_calls 5, steps 10, wall 1s }
  let a = lookup(q: q)
  return a
}
"#;

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn flowc(dir: &Path, server: &MockServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowc"))
        .current_dir(dir)
        .args(args)
        .env("OPENAI_BASE_URL", server.openai_base_url())
        .env("OPENAI_API_KEY", "sk-test-stats-0123456789")
        .env("TOOLS_URL", server.base_url())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("run flowc")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn stats_and_runs_over_a_store_of_known_outcomes() {
    let dir = Scratch(std::env::temp_dir().join(format!(
        "flowc-stats-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    )));
    std::fs::create_dir_all(&dir.0).expect("scratch folder");
    std::fs::write(dir.0.join("prog.flow"), PROGRAM).expect("write the program");
    let server = MockServer::start();
    server.always(
        "GET /tools/lookup",
        Reply::from_fn(|r| match r.query.as_deref() {
            Some("q=none") => Reply::ok(json!({"items": [], "n": 0})),
            Some("q=boom") => Reply::error(500, "boom"),
            Some("q=slow") => Reply::delay(3000, Reply::ok(json!({"items": [], "n": 0}))),
            _ => Reply::ok(json!({"items": ["a"], "n": 1})),
        }),
    );
    server.script(
        CHAT,
        [
            Reply::chat_text("not JSON").with_usage(10, 5),
            Reply::chat_json(json!({"name": "z", "score": 1})).with_usage(10, 5),
        ],
    );
    let runs = [
        ("fetch", "x", 0),    // completed: 1 tool call, 2 steps
        ("fetch", "y", 0),    // completed: the same
        ("fetch", "none", 1), // failed check: 2 steps
        ("fetch", "boom", 1), // failed tool call (server_error): 1 step
        ("score", "z", 0),    // an invalid reply, a retry, then valid: 30 tokens, 1 step
        ("tight", "slow", 3), // the call outlasts the wall budget: 1 step, no call ended
    ];
    for (flow, q, code) in runs {
        let input = format!(r#"{{"q": "{q}"}}"#);
        let out = flowc(
            &dir.0,
            &server,
            &["run", "prog.flow", "--flow", flow, "--input", &input],
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "{flow}({q}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let stats = json_of(&flowc(&dir.0, &server, &["stats", "--format", "json"]));
    assert_eq!(stats["runs"], 6);
    assert_eq!(
        stats["by_status"],
        json!({"completed": 3, "failed": 2, "budget_exhausted": 1})
    );
    let tokens = &stats["tokens"];
    assert_eq!(
        (
            &tokens["p50"],
            &tokens["p95"],
            &tokens["max"],
            &tokens["total"]
        ),
        (&json!(0.0), &json!(30.0), &json!(30.0), &json!(30.0))
    );
    // Two replies of 10 input and 5 output tokens at $0.15 and $0.60 per
    // million.
    let cost = 2.0 * (10.0 * 0.15 + 5.0 * 0.60) / 1e6;
    assert!((stats["cost"]["total"].as_f64().unwrap_or(0.0) - cost).abs() < 1e-12);
    assert!((stats["cost"]["max"].as_f64().unwrap_or(0.0) - cost).abs() < 1e-12);
    assert_eq!(stats["cost"]["p50"], 0.0);
    assert_eq!(
        stats["tools"]["lookup"],
        json!({"calls": 4, "ok": 3, "failed": 1, "success_rate": 0.75, "failures": {"server_error": 1}})
    );
    assert_eq!(
        stats["guardrails"],
        json!({"invalid_outputs": 1, "invalid_tool_calls": 0, "blocked_effects": 0,
               "budget_stops": 1, "failed_checks": 1, "total": 3, "per_run": 0.5})
    );
    assert_eq!(stats["retries"], 1);
    assert_eq!(stats["fallbacks"], 0);
    assert_eq!(stats["step_histogram"], json!({"1": 3, "2": 3}));
    // Budget adherence: fetch and tight runs 1 − 1/5 tool calls = 0.8
    // each (five runs), score 1 − 1/10 steps = 0.9. Latency adherence: 1
    // with no wall limit, 0 for tight (it ran past its wall).
    let r = &stats["reliability"];
    assert_eq!((&r["finished"], &r["successful"]), (&json!(6), &json!(3)));
    let adherence = (0.8 * 5.0 + 0.9) / 6.0;
    assert!((r["budget_adherence"].as_f64().unwrap_or(0.0) - adherence).abs() < 1e-9);
    assert!((r["latency_adherence"].as_f64().unwrap_or(0.0) - 5.0 / 6.0).abs() < 1e-9);
    let score = 0.5 * adherence * 5.0 / 6.0;
    assert!((r["score"].as_f64().unwrap_or(0.0) - score).abs() < 1e-9);
    let fetch = &stats["flows"]["fetch"];
    assert_eq!(fetch["runs"], 4);
    assert_eq!(fetch["step_histogram"], json!({"1": 1, "2": 3}));
    assert!((fetch["reliability"]["score"].as_f64().unwrap_or(0.0) - 0.5 * 0.8).abs() < 1e-9);
    assert_eq!(stats["flows"]["tight"]["guardrails"]["budget_stops"], 1);
    assert_eq!(stats["days"].as_object().map(|d| d.len()), Some(1));

    // Filters.
    let only = json_of(&flowc(
        &dir.0,
        &server,
        &[
            "stats", "--flow", "score", "--since", "1h", "--format", "json",
        ],
    ));
    assert_eq!(only["runs"], 1);
    assert_eq!(only["guardrails"]["invalid_outputs"], 1);
    let failed = json_of(&flowc(
        &dir.0,
        &server,
        &["runs", "--status", "failed", "--format", "json"],
    ));
    let failed = failed.as_array().expect("a list");
    assert_eq!(failed.len(), 2);
    assert!(failed
        .iter()
        .all(|r| r["status"] == "failed" && r["flow"] == "fetch"));
    let all = json_of(&flowc(&dir.0, &server, &["runs", "--format", "json"]));
    assert_eq!(all.as_array().map(Vec::len), Some(6));
    let old = json_of(&flowc(
        &dir.0,
        &server,
        &["runs", "--since", "0s", "--format", "json"],
    ));
    assert_eq!(old.as_array().map(Vec::len), Some(0));
    let listed = flowc(&dir.0, &server, &["runs", "--flow", "tight"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("RUN"), "a header: {text}");
    assert!(lines[1].contains("budget_exhausted"), "{text}");
}
