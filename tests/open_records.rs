//! Open and closed records at the boundary: a tool result with hundreds of
//! fields the type does not declare validates, and only the declared fields
//! reach the flow and the prompts built from it; an `exact` type rejects
//! them; `flowc schema` says which record is which.

use crate::support;

use std::process::Command;

use serde_json::{json, Map, Value};
use support::mock_server::{MockServer, Reply, CHAT};

const FLOW: &str = r#"
use std.models.{openai}

type User { login: string }
type PullRequest { number: int, title: string, user: User }
type Strict exact { number: int }
type Review { verdict: "approve" | "comment" }

model reviewer = openai("gpt-4o-mini") { max_tokens: 200 }

tool get_pr(number: int) -> PullRequest {
  http GET "{env.API}/pulls/{number}"
  effect read
  timeout 10s
}

tool get_strict(number: int) -> Strict {
  http GET "{env.API}/pulls/{number}"
  effect read
  timeout 10s
}

flow review(number: int) -> { pr: PullRequest, review: Review } {
  budget { tokens 10k, cost $0.10, steps 5, tool_calls 5, wall 1m }
  let pr = get_pr(number: number)
  let review = llm reviewer -> Review {
    prompt "Review this pull request: {pr}"
  }
  return { pr: pr, review: review }
}

flow strict(number: int) -> Strict {
  budget { steps 5, tool_calls 5, wall 1m }
  let pr = get_strict(number: number)
  return pr
}
"#;

/// A GitHub-sized response: the three fields the type names and 200 more,
/// some nested inside the declared `user`.
fn big_response() -> Value {
    let mut pr = Map::new();
    pr.insert("number".into(), json!(7));
    pr.insert("title".into(), json!("Fix the parser"));
    let mut user = Map::new();
    user.insert("login".into(), json!("octocat"));
    for i in 0..20 {
        user.insert(format!("user_extra_{i}"), json!(format!("secret-user-{i}")));
    }
    pr.insert("user".into(), Value::Object(user));
    for i in 0..180 {
        pr.insert(
            format!("undeclared_{i}"),
            json!({"deep": format!("noise-{i}")}),
        );
    }
    Value::Object(pr)
}

fn write_flow(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("temp dir");
    let path = dir.join("review.flow");
    std::fs::write(&path, FLOW).expect("flow written");
    path
}

fn run(flow: &std::path::Path, name: &str, server: &MockServer) -> std::process::Output {
    let dir = flow.parent().expect("dir");
    Command::new(env!("CARGO_BIN_EXE_flowc"))
        .arg("run")
        .arg(flow)
        .args(["--flow", name, "--input", r#"{"number": 7}"#, "--store"])
        .arg(dir.join(format!("{name}.db")))
        .env("API", server.base_url())
        .env("OPENAI_BASE_URL", server.openai_base_url())
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .expect("flowc runs")
}

#[test]
fn undeclared_fields_validate_and_only_declared_ones_reach_the_prompt() {
    let server = MockServer::start();
    server.always("GET /pulls/7", Reply::ok(big_response()));
    server.always(CHAT, Reply::chat_json(json!({"verdict": "comment"})));
    let dir = std::env::temp_dir().join(format!("flowc-open-records-{}", std::process::id()));
    let flow = write_flow(&dir);

    let out = run(&flow, "review", &server);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let output: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(
        output["pr"],
        json!({"number": 7, "title": "Fix the parser", "user": {"login": "octocat"}}),
        "the flow sees only the declared fields"
    );

    let chats = server.requests_to(CHAT);
    assert_eq!(chats.len(), 1);
    let prompt = chats[0].body["messages"].to_string();
    assert!(
        prompt.contains("Fix the parser") && prompt.contains("octocat"),
        "{prompt}"
    );
    for undeclared in ["undeclared_", "noise-", "user_extra_", "secret-user-"] {
        assert!(
            !prompt.contains(undeclared),
            "`{undeclared}` reached the prompt: {prompt}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_exact_type_rejects_undeclared_fields() {
    let server = MockServer::start();
    server.always(
        "GET /pulls/7",
        Reply::ok(json!({"number": 7, "title": "x"})),
    );
    let dir = std::env::temp_dir().join(format!("flowc-exact-records-{}", std::process::id()));
    let flow = write_flow(&dir);

    let out = run(&flow, "strict", &server);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("title") && stderr.contains("Strict"),
        "the error names the undeclared field and the type: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flowc_schema_says_which_records_are_open() {
    let dir = std::env::temp_dir().join(format!("flowc-open-schema-{}", std::process::id()));
    let flow = write_flow(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .arg("schema")
        .arg(&flow)
        .output()
        .expect("flowc runs");
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let defs = &doc["tools"]["get_pr"]["result"]["$defs"];
    assert_eq!(defs["PullRequest"]["additionalProperties"], json!(true));
    assert_eq!(defs["User"]["additionalProperties"], json!(true));
    assert_eq!(
        doc["tools"]["get_strict"]["result"]["$defs"]["Strict"]["additionalProperties"],
        json!(false)
    );
    assert_eq!(
        doc["types"]["Strict"]["$defs"]["Strict"]["additionalProperties"],
        json!(false)
    );
    // Arguments go out exact.
    assert_eq!(
        doc["tools"]["get_pr"]["arguments"]["additionalProperties"],
        json!(false)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
