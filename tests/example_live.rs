//! An example end to end over real HTTP: `flowc run` of
//! examples/invoice_reconciliation.flow with its ERP tools and its OpenAI
//! model served by the loopback test server (answers taken from the
//! example's recording), then `flowc trace` of the trace it wrote.

use crate::support;

use std::process::Command;

use serde_json::Value;
use support::mock_server::{MockServer, Reply, CHAT};

const KEY: &str = "sk-live-test-key-never-in-traces";
const TOKEN: &str = "erp-token-never-in-traces";

#[test]
fn an_example_runs_against_the_test_server_and_its_trace_renders() {
    let recording: Value = serde_json::from_str(
        &std::fs::read_to_string("examples/invoice_reconciliation.replay.json").expect("recording"),
    )
    .expect("JSON");
    let first = |section: &str, name: &str| recording[section][name][0].clone();
    let server = MockServer::start();
    server.always(
        "GET /v2/invoices",
        Reply::ok(first("tools", "search_invoices")),
    );
    server.always(
        "GET /v2/payments",
        Reply::ok(first("tools", "list_payments")),
    );
    server.always(
        "POST /v2/ledger/adjustments",
        Reply::ok(first("tools", "post_adjustment")),
    );
    server.always(CHAT, Reply::chat_json(first("models", "analyst")));

    let dir = std::env::temp_dir().join(format!("flowc-example-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let trace = dir.join("trace.jsonl");
    let flowc = env!("CARGO_BIN_EXE_flowc");
    let out = Command::new(flowc)
        .args([
            "run",
            "examples/invoice_reconciliation.flow",
            "--approve",
            "post_corrections",
            "--input",
        ])
        .arg(recording["input"].to_string())
        .arg("--store")
        .arg(dir.join("runs.db"))
        .arg("--trace")
        .arg(&trace)
        .env("ERP_API", server.base_url())
        .env("ERP_TOKEN", TOKEN)
        .env("OPENAI_BASE_URL", server.openai_base_url())
        .env("OPENAI_API_KEY", KEY)
        .output()
        .expect("flowc runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let output: Value = serde_json::from_slice(&out.stdout).expect("JSON output");

    // The same answers offline give the same output.
    let offline = Command::new(flowc)
        .args([
            "run",
            "examples/invoice_reconciliation.flow",
            "--replay",
            "examples/invoice_reconciliation.replay.json",
            "--store",
        ])
        .arg(dir.join("offline.db"))
        .arg("--trace")
        .arg(dir.join("offline.jsonl"))
        .output()
        .expect("flowc runs");
    assert_eq!(
        offline.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    assert_eq!(
        output,
        serde_json::from_slice::<Value>(&offline.stdout).expect("JSON")
    );

    // Real requests reached the server, with the secrets in headers only.
    assert_eq!(server.hits("/v2/invoices"), 1);
    assert_eq!(server.hits("/v1/chat/completions"), 1);
    let posts = server.requests_to("/v2/ledger/adjustments");
    assert!(!posts.is_empty());
    assert!(
        posts.iter().all(|r| r.header("idempotency-key").is_some()),
        "every posting carries an idempotency key"
    );

    let text = std::fs::read_to_string(&trace).expect("trace written");
    assert!(
        !text.contains(KEY) && !text.contains(TOKEN),
        "a secret reached the trace"
    );
    let rendered = Command::new(flowc)
        .arg("trace")
        .arg(&trace)
        .output()
        .expect("flowc trace runs");
    assert_eq!(rendered.status.code(), Some(0));
    let tree = String::from_utf8_lossy(&rendered.stdout);
    for part in [
        "run reconcile",
        "model_call analyst",
        "tool_call search_invoices",
        "tool_call post_adjustment",
        "gate post_corrections",
    ] {
        assert!(tree.contains(part), "`{part}` missing from:\n{tree}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
