//! The fault matrix: one flow with an `llm` step, an agent, a fan-out and a
//! sub-flow, run against a loopback mock server under each fault class a
//! provider or a tool service shows: 429 with and without `Retry-After`,
//! 500, 529, a hang, malformed JSON, JSON that breaks the schema, a reported
//! usage 100× the request, a dropped connection. For each, the documented
//! outcome (docs/running.md), asserted on the server's own counts: retries
//! bounded, the breaker's bound on requests to a dead model, the fallback
//! model used, a budget never reported met when it was not, no panic. The
//! whole matrix runs in well under a minute.
//!
//! The primary model (`gpt-4o-mini`) shows the fault on every request (it is
//! "down" that way), except for usage, where it answers and overreports;
//! its fallback (`gpt-4o`) answers. The tool shows the fault on the first
//! request of each query, then answers (a transient fault its retry
//! absorbs).

use crate::support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowc::run::{self, Outcome, Report, RunOptions};
use flowc::CheckedProgram;
use serde_json::{json, Value};
use support::mock_server::{MockServer, RecordedRequest, Reply, CHAT};

const PROGRAM: &str = r#"
use std.models.{openai}

type Answer { title: string len 1..80, score: int }
type Hit { hit: string }

model fast = openai("gpt-4o-mini") { temperature: 0, max_tokens: 100, fallback: big }
model big = openai("gpt-4o") { temperature: 0, max_tokens: 100 }

tool lookup(q: string) -> Hit {
  http GET "{env.TOOLS_URL}/tools/lookup?q={q}"
  effect read
  timeout 2s
  retry 2 on rate_limit, timeout, server_error, connection, invalid backoff 20ms
}

agent scout(topic: string) -> Answer {
  model fast
  tools [lookup]
  max_steps 3
  timeout 3s
  retry 1 on rate_limit, timeout, server_error, connection, invalid backoff 20ms
  instructions "Research {topic}."
}

flow rate_all(topics: [string] len ..3) -> [Answer] {
  budget { tokens 40k, tool_calls 12 }
  let rated = for t in topics parallel 3 {
    let h = lookup(q: t)
    llm fast -> Answer {
      prompt "Rate {t}: {h.hit}"
      retry 1 on rate_limit, timeout, server_error, connection, invalid backoff 20ms
      timeout 1s
    }
  }
  return rated
}

flow survey(topic: string, topics: [string] len ..3) -> { first: Answer, notes: Answer, all: [Answer] } {
  budget { tokens 60k, tool_calls 20 }
  let first = llm fast -> Answer {
    prompt "Rate {topic}"
    retry 1 on rate_limit, timeout, server_error, connection, invalid backoff 20ms
    timeout 1s
  }
  let notes = scout(topic: topic) fallback { title: "no notes", score: 0 }
  let all = rate_all(topics: topics)
  return { first: first, notes: notes, all: all }
}
"#;

/// The fault classes of the matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    RateLimitedRetryAfter,
    RateLimited,
    ServerError,
    Overloaded,
    Hang,
    MalformedJson,
    SchemaViolation,
    UsageOverreported,
    DroppedConnection,
}

const FAULTS: [Fault; 9] = [
    Fault::RateLimitedRetryAfter,
    Fault::RateLimited,
    Fault::ServerError,
    Fault::Overloaded,
    Fault::Hang,
    Fault::MalformedJson,
    Fault::SchemaViolation,
    Fault::DroppedConnection,
    Fault::UsageOverreported,
];

fn answer() -> Value {
    json!({"title": "Fine", "score": 7})
}

/// The fault as one reply; `None` for a fault that is not a failed request.
fn fault_reply(fault: Fault) -> Option<Reply> {
    Some(match fault {
        Fault::RateLimitedRetryAfter => Reply::rate_limited(1),
        Fault::RateLimited => Reply::error(429, "Too many requests"),
        Fault::ServerError => Reply::server_error(),
        Fault::Overloaded => Reply::error(529, "Overloaded"),
        Fault::Hang => Reply::hang(),
        Fault::MalformedJson => Reply::malformed(),
        Fault::DroppedConnection => Reply::drop_connection(),
        Fault::SchemaViolation | Fault::UsageOverreported => return None,
    })
}

fn server(fault: Fault) -> MockServer {
    let server = MockServer::start();
    server.always(
        CHAT,
        Reply::from_fn(move |r: &RecordedRequest| {
            if r.body["model"] == "gpt-4o" {
                return Reply::chat_json(answer());
            }
            match fault {
                Fault::SchemaViolation => Reply::chat_json(json!({"title": "", "score": "high"})),
                // 100 times what the request could have cost.
                Fault::UsageOverreported => {
                    let max = r.body["max_tokens"]
                        .as_u64()
                        .or_else(|| r.body["max_completion_tokens"].as_u64())
                        .unwrap_or(100);
                    let prompt = r.raw_body.len() as u64 / 4;
                    Reply::chat_json(answer()).with_usage(100 * prompt, 100 * max)
                }
                other => fault_reply(other).expect("a failed request"),
            }
        }),
    );
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    server.always(
        "GET /tools/lookup",
        Reply::from_fn(move |r: &RecordedRequest| {
            let q = r.query.clone().unwrap_or_default();
            let n = {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(q.clone()).or_default();
                *n += 1;
                *n
            };
            let ok = Reply::ok(json!({"hit": q}));
            if n > 1 {
                return ok;
            }
            match fault {
                Fault::SchemaViolation => Reply::ok(json!({"miss": 1})),
                Fault::UsageOverreported => ok,
                other => fault_reply(other).expect("a failed request"),
            }
        }),
    );
    server
}

fn checked() -> CheckedProgram {
    support::program::checked("matrix.flow", PROGRAM)
}

fn options(server: &MockServer) -> RunOptions {
    let vars = HashMap::from([
        ("OPENAI_BASE_URL".to_string(), server.openai_base_url()),
        ("OPENAI_API_KEY".to_string(), "sk-test-MATRIX".to_string()),
        ("TOOLS_URL".to_string(), server.base_url()),
    ]);
    RunOptions {
        env: Arc::new(move |name: &str| vars.get(name).cloned()),
        ..RunOptions::default()
    }
}

fn hits_of(server: &MockServer, model: &str) -> usize {
    server
        .requests_to(CHAT)
        .iter()
        .filter(|r| r.body["model"] == model)
        .count()
}

/// One fault class: the run, then the documented outcome.
fn run_under(program: &CheckedProgram, fault: Fault) {
    let server = server(fault);
    let started = Instant::now();
    let report: Report = run::run(
        program,
        "survey",
        json!({"topic": "all", "topics": ["a", "b", "c"]}),
        options(&server),
    )
    .unwrap_or_else(|e| panic!("{fault:?}: the run does not start: {e}"));
    let elapsed = started.elapsed();
    let primary = hits_of(&server, "gpt-4o-mini");
    let fallback = hits_of(&server, "gpt-4o");
    let lookups = server.hits("/tools/lookup");
    let context = format!(
        "{fault:?}: {:?} after {elapsed:?}; {primary} requests to the primary, {fallback} to the fallback, {lookups} lookups",
        report.outcome
    );

    // A budget is never reported met when it was not.
    let limit = 60_000;
    if let Outcome::Completed(_) = &report.outcome {
        assert!(
            report.spent.tokens <= limit,
            "{context}: spent {:?}",
            report.spent
        );
    }
    if report.spent.tokens > limit {
        assert!(matches!(report.outcome, Outcome::Exhausted(_)), "{context}");
    }

    if fault == Fault::UsageOverreported {
        // The provider answers but bills 100×: the run stops on its budget.
        assert!(matches!(report.outcome, Outcome::Exhausted(_)), "{context}");
        assert_eq!(fallback, 0, "{context}");
        assert!(lookups <= 3, "{context}");
        return;
    }

    let Outcome::Completed(value) = &report.outcome else {
        panic!("{context}: expected the run to complete through its fallbacks");
    };
    assert_eq!(value["first"], answer(), "{context}");
    assert_eq!(
        value["all"],
        json!([answer(), answer(), answer()]),
        "{context}"
    );
    // The agent's turns move to the fallback model, except where the
    // primary answers (invalid answers: the agent is told, up to
    // `max_steps`) or hangs past the agent's own timeout: then the step's
    // fallback value.
    let notes = match fault {
        Fault::Hang | Fault::SchemaViolation => json!({"title": "no notes", "score": 0}),
        _ => answer(),
    };
    assert_eq!(value["notes"], notes, "{context}");

    // Retries are bounded. The llm steps and agent turns make at most 2
    // attempts on the primary each (5 calls), and the primary's breaker
    // (10) bounds them all; the agent's answers on the primary at most
    // `max_steps`.
    let bound = match fault {
        Fault::SchemaViolation => 2 * 4 + 3,
        _ => 10,
    };
    assert!((1..=bound).contains(&primary), "{context}");
    // Each fallback call answers at once: the llm steps (4) and the
    // agent's turn, unless the agent never reached it.
    let expected_fallback = match fault {
        Fault::Hang | Fault::SchemaViolation => 4,
        _ => 5,
    };
    assert_eq!(fallback, expected_fallback, "{context}");
    // Each lookup fails once and its retry answers (a retry that itself
    // times out on a loaded machine may take a third attempt, never more).
    assert!((6..=9).contains(&lookups), "{context}");
    let retry_after_floor = match fault {
        Fault::RateLimitedRetryAfter => Duration::from_millis(950),
        _ => Duration::ZERO,
    };
    assert!(elapsed >= retry_after_floor, "{context}");
    assert!(elapsed < Duration::from_secs(10), "{context}");
}

#[test]
fn the_fault_matrix_ends_each_fault_as_documented_within_a_minute() {
    let program = checked();
    let started = Instant::now();
    // Every fault runs, and every one that fails is reported.
    let failed: Vec<String> = FAULTS
        .into_iter()
        .filter_map(|fault| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_under(&program, fault)))
                .err()
                .map(|e| {
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| format!("{fault:?} panicked"))
                })
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(60),
        "the matrix took {elapsed:?}"
    );
}
