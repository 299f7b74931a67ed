//! OTLP export end to end: the real `flowc` binary exports to a real OTLP/HTTP
//! receiver (tests/otlp_receiver.py, built on PyPI `opentelemetry-proto`,
//! installed by `bash tests/setup.sh`), its models and tools on the loopback
//! mock server.
//!
//! - the span tree (run → flow → step → call), GenAI attributes equal to
//!   what the mock model reported, the `traceparent` the tool and model
//!   servers received naming the spans the receiver got, no secret anywhere
//!   in the exported bytes (content capture on);
//! - one trace id across a run killed mid-call and its resume;
//! - a collector that never answers costs at most the export timeout, and
//!   the run says how many spans were dropped.

use crate::support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::mock_server::{MockServer, Reply, CHAT};

const KEY: &str = "sk-CANARY-model-key-5f1e2d3c4b5a";
const TOKEN: &str = "tok-CANARY-tool-token-9a8b7c6d";

/// A receiver process on a free 127.0.0.1 port; killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Receiver {
    fn start(dir: &Path) -> Receiver {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join("target/test-tools/otlp-venv/bin/python");
        assert!(
            python.exists(),
            "the OTLP receiver's virtualenv is missing ({}): run `bash tests/setup.sh`",
            python.display()
        );
        let out = dir.join("otlp");
        std::fs::create_dir_all(&out).expect("receiver folder");
        let mut child = Command::new(&python)
            .arg(root.join("tests/otlp_receiver.py"))
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the receiver's port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the receiver printed no port ({line:?}): is `bash tests/setup.sh` done?")
        });
        Receiver {
            child,
            port,
            dir: out,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("spans.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a span line"))
            .collect()
    }

    fn raw(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("raw.bin")).unwrap_or_default()
    }

    /// Waits until some span satisfies `f` (or fails after 20 s).
    fn wait_for(&self, what: &str, f: impl Fn(&Value) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let spans = self.spans();
            if spans.iter().any(&f) {
                return spans;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the receiver never got {what}; it has {:#?}",
                spans.iter().map(|s| &s["name"]).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder of its own for a test, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "flowc-otel-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PROGRAM: &str = r#"
use std.models.{openai}

type Scored { name: string, score: int }

model fast = openai("gpt-4o-mini") { temperature: 0.5, max_tokens: 100 }

tool lookup(q: string) -> { items: [string], echo: string } {
  http GET "{env.TOOLS_URL}/tools/lookup?q={q}"
  header "X-Token" "{env.TOOL_TOKEN}"
  effect read
  timeout 5s
}

tool slow(q: string) -> { done: bool } {
  http GET "{env.TOOLS_URL}/tools/slow?q={q}"
  effect read
  timeout 60s
}

agent helper(q: string) -> { answer: string } {
  model fast
  tools [lookup]
  max_steps 3
  instructions "Find {q}."
}

flow main(q: string) -> Scored {
  budget { tokens 10k, cost $1, steps 20, tool_calls 10 }
  let found = lookup(q: q)
  let s = llm fast -> Scored {
    prompt "Score {found.items}"
  }
  let h = helper(q: s.name)
  return s
}

flow twice(q: string) -> { done: bool } {
  budget { tokens 10k, steps 20, tool_calls 10 }
  let found = lookup(q: q)
  let later = slow(q: found.echo)
  return later
}
"#;

fn command(dir: &Path, server: &MockServer, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowc"));
    c.current_dir(dir)
        .args(args)
        .env("OPENAI_BASE_URL", server.openai_base_url())
        .env("OPENAI_API_KEY", KEY)
        .env("TOOLS_URL", server.base_url())
        .env("TOOL_TOKEN", TOKEN)
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_SERVICE_NAME")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn one<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found = named(spans, name);
    assert_eq!(
        found.len(),
        1,
        "one span `{name}` expected, found {found:#?}"
    );
    found[0]
}

fn lookup_reply() -> Reply {
    Reply::from_fn(|r| {
        // The tool echoes its token: the trace must scrub it before export.
        Reply::ok(json!({"items": ["a", "b"], "echo": r.header("x-token").unwrap_or("")}))
    })
}

#[test]
fn spans_form_one_tree_with_genai_attributes_and_traceparent_on_the_wire() {
    let dir = Scratch::new("tree");
    let receiver = Receiver::start(&dir.0);
    let server = MockServer::start();
    server.always("GET /tools/lookup", lookup_reply());
    let chat_body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"name\": \"ab\", \"score\": 7}"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    });
    server.script(
        CHAT,
        [
            Reply::json(200, chat_body),
            Reply::chat_tool_call("lookup", json!({"q": "more"})).with_usage(20, 4),
            Reply::chat_json(json!({"answer": "done"})).with_usage(30, 6),
        ],
    );
    std::fs::write(dir.0.join("prog.flow"), PROGRAM).expect("write the program");
    let out = command(
        &dir.0,
        &server,
        &[
            "run",
            "prog.flow",
            "--flow",
            "main",
            "--input",
            r#"{"q": "x"}"#,
            "--otlp",
            &receiver.url(),
        ],
    )
    .env(otel_content_var(), "true")
    .output()
    .expect("run flowc");
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("otlp: 11 spans exported"), "{stderr}");

    let spans = receiver.wait_for("the run span", |s| s["name"] == "run main");
    assert_eq!(spans.len(), 11, "{spans:#?}");
    let trace = spans[0]["trace_id"].as_str().expect("trace id");
    assert_eq!(trace.len(), 32);
    assert!(spans.iter().all(|s| s["trace_id"] == trace));
    assert_eq!(spans[0]["resource"]["service.name"], "flowc");
    let by_id: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["span_id"].as_str().expect("span id"), s))
        .collect();
    let parent = |s: &Value| -> String {
        let p = s["parent_span_id"].as_str().unwrap_or("");
        by_id.get(p).map_or_else(String::new, |p| {
            p["name"].as_str().unwrap_or("").to_string()
        })
    };

    // The tree: run → flow → step → call.
    let run = one(&spans, "run main");
    assert_eq!(run["parent_span_id"], "");
    assert_eq!(parent(one(&spans, "flow main")), "run main");
    for step in ["step found", "step s", "step h"] {
        assert_eq!(parent(one(&spans, step)), "flow main", "{step}");
    }
    let tools = named(&spans, "execute_tool lookup");
    assert_eq!(tools.len(), 2);
    let direct = tools
        .iter()
        .find(|t| parent(t) == "step found")
        .expect("the step's tool call");
    assert!(tools.iter().any(|t| parent(t) == "invoke_agent helper"));
    let chats = named(&spans, "chat gpt-4o-mini");
    assert_eq!(chats.len(), 3);
    let chat = chats
        .iter()
        .find(|c| parent(c) == "step s")
        .expect("the llm step's call");
    assert_eq!(
        chats
            .iter()
            .filter(|c| parent(c) == "invoke_agent helper")
            .count(),
        2
    );
    assert_eq!(parent(one(&spans, "invoke_agent helper")), "step h");

    // GenAI attributes: what the mock reported.
    assert_eq!(attr(chat, "gen_ai.operation.name"), "chat");
    assert_eq!(attr(chat, "gen_ai.provider.name"), "openai");
    assert_eq!(attr(chat, "gen_ai.request.model"), "gpt-4o-mini");
    assert_eq!(
        attr(chat, "gen_ai.response.model"),
        "gpt-4o-mini-2024-07-18"
    );
    assert_eq!(attr(chat, "gen_ai.usage.input_tokens"), 12);
    assert_eq!(attr(chat, "gen_ai.usage.output_tokens"), 3);
    assert_eq!(attr(chat, "gen_ai.request.max_tokens"), 100);
    assert_eq!(attr(chat, "gen_ai.request.temperature"), 0.5);
    assert_eq!(
        attr(chat, "gen_ai.response.finish_reasons"),
        &json!(["stop"])
    );
    assert_eq!(attr(chat, "flowc.attempt"), 1);
    assert_eq!(chat["kind"], 3, "a model call is a client span");
    let agent_chats: Vec<&&Value> = chats
        .iter()
        .filter(|c| parent(c) == "invoke_agent helper")
        .collect();
    assert!(agent_chats
        .iter()
        .any(|c| attr(c, "gen_ai.response.finish_reasons") == &json!(["tool_calls"])));
    assert_eq!(attr(direct, "gen_ai.operation.name"), "execute_tool");
    assert_eq!(attr(direct, "gen_ai.tool.name"), "lookup");
    let agent = one(&spans, "invoke_agent helper");
    assert_eq!(attr(agent, "gen_ai.operation.name"), "invoke_agent");
    assert_eq!(attr(agent, "gen_ai.agent.name"), "helper");
    let step = one(&spans, "step s");
    assert_eq!(attr(step, "flowc.validation.outcome"), "passed");
    assert!(attr(step, "flowc.step.path").as_str().is_some());
    assert!(attr(step, "flowc.budget.remaining.cost").as_f64().is_some());
    assert_eq!(attr(run, "flowc.run.status"), "completed");
    let tokens = 12 + 3 + 20 + 4 + 30 + 6;
    assert_eq!(attr(run, "flowc.tokens"), tokens);
    assert_eq!(server.tokens_served(), tokens);

    // The servers received the spans' own trace context.
    let tool_requests = server.requests_to("/tools/lookup");
    let first = tool_requests.first().expect("a tool request");
    assert_eq!(
        first.header("traceparent"),
        Some(format!("00-{trace}-{}-01", direct["span_id"].as_str().unwrap_or("")).as_str())
    );
    let model_requests = server.requests_to(CHAT);
    assert_eq!(
        model_requests[0].header("traceparent"),
        Some(format!("00-{trace}-{}-01", chat["span_id"].as_str().unwrap_or("")).as_str())
    );

    // Content was asked for, and is there; no secret is.
    let raw = receiver.raw();
    let contains = |needle: &str| raw.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("gen_ai.input.messages"));
    assert!(
        contains("[redacted]"),
        "the echoed token is exported redacted"
    );
    assert!(!contains(KEY), "the API key reached the collector");
    assert!(!contains(TOKEN), "the tool token reached the collector");
    assert!(!contains("CANARY"));
}

fn otel_content_var() -> &'static str {
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
}

#[test]
fn a_killed_and_resumed_run_is_one_trace() {
    let dir = Scratch::new("resume");
    let receiver = Receiver::start(&dir.0);
    let server = MockServer::start();
    server.always("GET /tools/lookup", lookup_reply());
    // The first process hangs in `slow` and is killed there; the resume's
    // call answers.
    server.script(
        "GET /tools/slow",
        [Reply::delay(60_000, Reply::ok(json!({"done": true})))],
    );
    server.always("GET /tools/slow", Reply::ok(json!({"done": true})));
    std::fs::write(dir.0.join("prog.flow"), PROGRAM).expect("write the program");
    let args = [
        "run",
        "prog.flow",
        "--flow",
        "twice",
        "--input",
        r#"{"q": "x"}"#,
        "--otlp",
        &receiver.url(),
    ];
    let mut child = command(&dir.0, &server, &args)
        .spawn()
        .expect("start flowc");
    // The first process's finished spans reach the receiver before the kill.
    receiver.wait_for("the first process's tool span", |s| {
        s["name"] == "execute_tool lookup"
    });
    let start = Instant::now();
    while server.requests_to("/tools/slow").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "slow was never called"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill flowc");
    let _ = child.wait();

    let store = rusqlite::Connection::open(dir.0.join(".flowc/runs.db")).expect("the store");
    let run_id: String = store
        .query_row("SELECT id FROM runs", [], |r| r.get(0))
        .expect("one run");
    drop(store);
    let out = command(
        &dir.0,
        &server,
        &["resume", &run_id, "--otlp", &receiver.url()],
    )
    .output()
    .expect("resume flowc");
    assert!(out.status.success(), "{}", text(&out));

    let spans = receiver.wait_for("the resumed run's span", |s| s["name"] == "run twice");
    let trace = spans[0]["trace_id"].as_str().expect("trace id");
    assert!(
        spans.iter().all(|s| s["trace_id"] == trace),
        "two trace ids: {spans:#?}"
    );
    // Both processes' spans are there: the lookup (first process) and
    // the slow call that answered (the resume).
    assert_eq!(named(&spans, "execute_tool lookup").len(), 1);
    let slow = named(&spans, "execute_tool slow");
    assert_eq!(slow.len(), 1, "the killed call never ended: {slow:#?}");
    assert_eq!(slow[0]["status_code"], 0);
    // The resumed process sent the same trace on the wire.
    let sent = server.requests_to("/tools/slow");
    assert_eq!(sent.len(), 2);
    for r in &sent {
        let header = r.header("traceparent").expect("a traceparent");
        assert_eq!(&header[3..35], trace);
    }
    // Content capture is off by default.
    let raw = receiver.raw();
    assert!(!raw
        .windows("gen_ai.tool.call.result".len())
        .any(|w| w == b"gen_ai.tool.call.result"));
}

#[test]
fn a_collector_that_never_answers_costs_at_most_the_export_timeout() {
    let dir = Scratch::new("down");
    let server = MockServer::start();
    server.always("GET /tools/lookup", lookup_reply());
    server.always("GET /tools/slow", Reply::ok(json!({"done": true})));
    std::fs::write(dir.0.join("prog.flow"), PROGRAM).expect("write the program");
    // Accepts connections (the kernel does) and never reads or answers.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", black_hole.local_addr().expect("addr"));
    let run = |extra: &[&str], timeout_ms: &str| {
        let mut args = vec![
            "run",
            "prog.flow",
            "--flow",
            "twice",
            "--input",
            r#"{"q": "x"}"#,
        ];
        args.extend_from_slice(extra);
        let started = Instant::now();
        let out = command(&dir.0, &server, &args)
            .env("OTEL_EXPORTER_OTLP_TIMEOUT", timeout_ms)
            .output()
            .expect("run flowc");
        (out, started.elapsed())
    };
    let (plain, floor) = run(&[], "1000");
    assert!(plain.status.success(), "{}", text(&plain));
    let (out, elapsed) = run(&["--otlp", &url], "1000");
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("otlp: 0 spans exported, 6 dropped"),
        "{stderr}"
    );
    assert!(
        elapsed < floor + Duration::from_millis(1000 + 1500),
        "export cost {elapsed:?} against {floor:?} without it (timeout 1 s)"
    );

    // A collector that refuses connections costs next to nothing.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let refused = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let (out, elapsed) = run(&["--otlp", &refused], "10000");
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("6 dropped"));
    assert!(
        elapsed < floor + Duration::from_millis(2000),
        "a refused export cost {elapsed:?} against {floor:?}"
    );
    drop(black_hole);
}

#[test]
fn headers_resource_and_batches_follow_the_standard_variables() {
    let dir = Scratch::new("vars");
    let receiver = Receiver::start(&dir.0);
    let server = MockServer::start();
    server.always("GET /tools/lookup", lookup_reply());
    server.always("GET /tools/slow", Reply::ok(json!({"done": true})));
    std::fs::write(dir.0.join("prog.flow"), PROGRAM).expect("write the program");
    let args = [
        "run",
        "prog.flow",
        "--flow",
        "twice",
        "--input",
        r#"{"q": "x"}"#,
    ];
    let out = command(&dir.0, &server, &args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url())
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Basic%20c2VjcmV0,x-team=search",
        )
        .env("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-team=flows")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=test,service.name=ignored",
        )
        .env("OTEL_SERVICE_NAME", "reviewer")
        // Six spans, at most two per request.
        .env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2")
        .output()
        .expect("run flowc");
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("otlp: 6 spans exported"), "{stderr}");
    let spans = receiver.wait_for("the run span", |s| s["name"] == "run twice");
    assert_eq!(spans.len(), 6, "{spans:#?}");
    for span in &spans {
        assert_eq!(span["headers"]["authorization"], "Basic c2VjcmV0");
        assert_eq!(
            span["headers"]["x-team"], "flows",
            "the traces variable wins"
        );
        assert_eq!(span["headers"]["content-type"], "application/x-protobuf");
        assert_eq!(span["resource"]["service.name"], "reviewer");
        assert_eq!(span["resource"]["deployment.environment"], "test");
        assert_eq!(span["resource"]["telemetry.sdk.language"], "rust");
        assert_eq!(span["scope"], "flowc");
        // Sampled, and the parent is known to be local.
        assert_eq!(span["flags"], 0x101);
        assert!(span["end_ns"].as_u64() >= span["start_ns"].as_u64());
    }
    let mut per_request: HashMap<u64, usize> = HashMap::new();
    for span in &spans {
        *per_request
            .entry(span["request"].as_u64().expect("a request number"))
            .or_default() += 1;
    }
    assert!(per_request.len() >= 3, "{per_request:?}");
    assert!(per_request.values().all(|n| *n <= 2), "{per_request:?}");

    // A header that cannot be sent stops the run before it starts.
    let out = command(&dir.0, &server, &args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url())
        .env("OTEL_EXPORTER_OTLP_HEADERS", "api-key")
        .output()
        .expect("run flowc");
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_HEADERS: `api-key` has no `=`"),
        "{stderr}"
    );
    assert_eq!(
        server.requests_to("/tools/lookup").len(),
        1,
        "the second run made calls"
    );
}
