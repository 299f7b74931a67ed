//! MCP tool servers against the reference server
//! `@modelcontextprotocol/server-everything` (installed by
//! `tests/setup.sh`, `need_mcp_everything`, into
//! target/test-tools/mcp-everything and started from there with
//! `npx --no-install mcp-server-everything stdio`): `flowc mcp lock` writes
//! the lock, `flowc check` compares declared types with it without starting
//! anything, a changed declaration or lock is a diagnostic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where `tests/setup.sh` installs the server; flowc runs from here so
/// `npx --no-install` finds it.
fn server_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/mcp-everything");
    assert!(
        dir.join("node_modules/.bin/mcp-server-everything").exists(),
        "the MCP reference server is not installed: run `bash tests/setup.sh`"
    );
    dir
}

pub const SERVER: &str = r#"
server everything {
  command ["npx", "--no-install", "mcp-server-everything", "stdio"]
  timeout 60s
}
"#;

const TOOLS: &str = r#"
tool add(a: number, b: number) -> string {
  mcp everything "get-sum"
  timeout 20s
}

tool echo(message: string) -> string {
  mcp everything
  timeout 20s
}

tool weather(location: "Chicago" | "New York") -> { temperature: number, conditions: string } {
  mcp everything "get-structured-content"
  timeout 20s
}

flow sum(a: number, b: number) -> { sum: string, echoed: string, temperature: number } {
  budget { tool_calls 3, steps 4, wall 2m }
  let s = add(a: a, b: b)
  let e = echo(message: "sum is {s}")
  let w = weather(location: "Chicago")
  return { sum: s, echoed: e, temperature: w.temperature }
}
"#;

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowc-mcp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// flowc from the server's folder, with no secrets in its environment (the
/// server's `get-env` tool returns whatever it is given).
pub fn flowc(args: &[&str], files: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(args)
        .current_dir(server_dir())
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("FLOWC_TEST_FILES", files)
        .output()
        .expect("flowc runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes `source` as `NAME.flow` in `dir` and locks it against the real
/// server.
pub fn locked_flow(dir: &Path, name: &str, source: &str) -> PathBuf {
    let flow = dir.join(format!("{name}.flow"));
    std::fs::write(&flow, source).expect("flow written");
    let out = flowc(&["mcp", "lock", flow.to_str().expect("utf-8 path")], dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    flow
}

#[test]
fn lock_then_check_without_a_server_then_a_changed_declaration_is_a_diagnostic() {
    let dir = temp_dir("lock");
    let source = format!("{SERVER}{TOOLS}");
    let flow = locked_flow(&dir, "sum", &source);
    let lock_path = dir.join("sum.mcp.lock");
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&lock_path).expect("lock written"))
            .expect("the lock is JSON");
    let tools = &lock["servers"]["everything"]["tools"];
    for name in ["echo", "get-sum", "get-structured-content", "get-env"] {
        assert!(
            tools.get(name).is_some(),
            "`{name}` missing from the lock: {lock}"
        );
    }
    assert_eq!(
        tools["get-sum"]["input_schema"]["properties"]["a"]["type"],
        "number"
    );

    // `flowc check` needs no running server: run it where npx cannot
    // find the server at all.
    let check = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(["check", "--color", "never"])
        .arg(&flow)
        .current_dir(&dir)
        .env("PATH", "/nonexistent")
        .output()
        .expect("flowc runs");
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));

    // A declaration that no longer matches the lock names the field.
    std::fs::write(
        &flow,
        source.replace("tool add(a: number", "tool add(a: string"),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(["check", "--color", "never"])
        .arg(&flow)
        .output()
        .expect("flowc runs");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        stderr.contains("M001") && stderr.contains("parameter `a`") && stderr.contains("number"),
        "{stderr}"
    );

    // So does a lock that changed (the server renamed a parameter).
    std::fs::write(&flow, &source).unwrap();
    let changed = std::fs::read_to_string(&lock_path)
        .unwrap()
        .replace("\"message\"", "\"text\"");
    std::fs::write(&lock_path, changed).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(["check", "--color", "never"])
        .arg(&flow)
        .output()
        .expect("flowc runs");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        stderr.contains("M001") && stderr.contains("parameter `message`"),
        "{stderr}"
    );

    // And a missing lock.
    std::fs::remove_file(&lock_path).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(["check", "--color", "never"])
        .arg(&flow)
        .output()
        .expect("flowc runs");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains("has no lock"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_that_cannot_start_fails_the_lock_and_writes_nothing() {
    let dir = temp_dir("nostart");
    let flow = dir.join("bad.flow");
    std::fs::write(
        &flow,
        format!(
            "{}{TOOLS}",
            SERVER.replace("mcp-server-everything\", \"stdio\"", "no-such-mcp-server\"")
        ),
    )
    .unwrap();
    let out = flowc(&["mcp", "lock", flow.to_str().unwrap()], &dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!dir.join("bad.mcp.lock").exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server `everything`"));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- At run time -------------------------------------------------------------

use serde_json::{json, Value};

use crate::support::mock_server::{MockServer, Reply, CHAT};

const AGENT_FLOW: &str = r#"
use std.models.{openai}

model planner = openai("gpt-4o-mini") { max_tokens: 300 }

tool add(a: number, b: number) -> string {
  mcp everything "get-sum"
  effect read
  timeout 20s
}

tool echo(message: string) -> string {
  mcp everything
  effect read
  timeout 20s
}

tool weather(location: "Chicago" | "New York") -> { temperature: number, conditions: string } {
  mcp everything "get-structured-content"
  effect read
  timeout 20s
}

agent helper(task: string) -> { answer: string } {
  model planner
  tools [add, echo]
  max_steps 4
  instructions "Do this with your tools: {task}"
}

flow mixed(a: number, b: number) -> { sum: string, temperature: number, conditions: string, answer: string } {
  budget { tokens 20k, cost $0.10, tool_calls 8, steps 8, wall 2m }
  let s = add(a: a, b: b)
  let w = weather(location: "Chicago")
  let h = helper(task: "add 2 and 3, then echo the result")
  return { sum: s, temperature: w.temperature, conditions: w.conditions, answer: h.answer }
}
"#;

fn run_flow(flow: &Path, name: &str, input: &str, extra_env: &[(&str, String)]) -> Output {
    let dir = flow.parent().expect("dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowc"));
    command
        .arg("run")
        .arg(flow)
        .args(["--flow", name, "--input", input, "--store"])
        .arg(dir.join(format!("{name}.db")))
        .arg("--trace")
        .arg(dir.join(format!("{name}.trace.jsonl")))
        .current_dir(server_dir())
        .env_remove("ANTHROPIC_API_KEY");
    for (k, v) in extra_env {
        command.env(k, v);
    }
    command.output().expect("flowc runs")
}

fn trace_events(dir: &Path, name: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(format!("{name}.trace.jsonl")))
        .expect("trace written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn a_run_calls_mcp_tools_in_steps_and_through_an_agent_on_one_server() {
    let dir = temp_dir("run");
    let flow = locked_flow(&dir, "mixed", &format!("{SERVER}{AGENT_FLOW}"));
    let models = MockServer::start();
    models.script(
        CHAT,
        [
            Reply::chat_tool_call("add", json!({"a": 2, "b": 3})),
            Reply::chat_tool_call("echo", json!({"message": "five"})),
            Reply::chat_json(json!({"answer": "The sum is 5."})),
        ],
    );
    let out = run_flow(
        &flow,
        "mixed",
        r#"{"a": 40, "b": 2}"#,
        &[
            ("OPENAI_BASE_URL", models.openai_base_url()),
            ("OPENAI_API_KEY", "sk-test".into()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let output: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(output["sum"], "The sum of 40 and 2 is 42.");
    assert_eq!(output["answer"], "The sum is 5.");
    assert!(output["temperature"].is_number(), "{output}");
    assert!(output["conditions"].is_string(), "{output}");

    // The server's own answers reached the agent as tool results.
    let turns = models.requests_to(CHAT);
    assert_eq!(turns.len(), 3);
    let last = turns[2].body["messages"].to_string();
    assert!(last.contains("The sum of 2 and 3 is 5."), "{last}");
    assert!(last.contains("Echo: five"), "{last}");

    // One server for the whole run, stopped at its end, in the trace.
    let events = trace_events(&dir, "mixed");
    let servers: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "mcp_server")
        .collect();
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0]["name"], "everything");
    assert_eq!(servers[0]["starts"], 1);
    let calls = events
        .iter()
        .filter(|e| e["kind"] == "tool_call" && e["status"] == "ok")
        .count();
    assert_eq!(calls, 4, "two steps and two agent calls");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stdio proxy in front of the reference server that kills it (and
/// exits) the first time it sees a call carrying `crash-now`: a server
/// that dies mid-run.
const CRASHING_PROXY: &str = r#"
import os, subprocess, sys, threading
marker = sys.argv[1]
child = subprocess.Popen(["npx", "--no-install", "mcp-server-everything", "stdio"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def pump():
    for line in child.stdout:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
threading.Thread(target=pump, daemon=True).start()
for line in sys.stdin.buffer:
    if b'"tools/call"' in line and b'crash-now' in line and not os.path.exists(marker):
        open(marker, "w").close()
        child.kill()
        sys.stderr.write("proxy: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    child.stdin.write(line)
    child.stdin.flush()
"#;

#[test]
fn a_server_that_dies_mid_call_is_a_connection_failure_and_the_retry_restarts_it() {
    let dir = temp_dir("crash");
    let proxy = dir.join("proxy.py");
    std::fs::write(&proxy, CRASHING_PROXY).expect("proxy written");
    let marker = dir.join("crashed");
    let source = format!(
        r#"
server everything {{
  command ["python3", "{proxy}", "{marker}"]
  timeout 60s
}}

tool echo(message: string) -> string {{
  mcp everything
  effect read
  timeout 20s
  retry 1 on connection backoff 100ms
}}

tool echo_once(message: string) -> string {{
  mcp everything "echo"
  effect read
  timeout 20s
}}

flow once(message: string) -> string {{
  budget {{ tool_calls 3, steps 3, wall 2m }}
  let e = echo(message: message)
  return e
}}

flow no_retry(message: string) -> string {{
  budget {{ tool_calls 3, steps 3, wall 2m }}
  let e = echo_once(message: message)
  return e
}}
"#,
        proxy = proxy.display(),
        marker = marker.display()
    );
    let flow = locked_flow(&dir, "crash", &source);

    let out = run_flow(&flow, "once", r#"{"message": "crash-now"}"#, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON"),
        json!("Echo: crash-now")
    );
    assert!(marker.exists(), "the server did crash");
    let events = trace_events(&dir, "once");
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "tool_call" && e["status"] == "error")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["class"], "connection");
    let server = events
        .iter()
        .find(|e| e["kind"] == "mcp_server")
        .expect("server event");
    assert_eq!(server["starts"], 2, "restarted once");
    assert!(
        server["stderr"]
            .as_str()
            .is_some_and(|s| s.contains("crashing on purpose")),
        "{server}"
    );

    // Without a retry, the crash fails the step with its class.
    std::fs::remove_file(&marker).expect("marker removed");
    let out = run_flow(&flow, "no_retry", r#"{"message": "crash-now"}"#, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr.contains("(connection)") || stderr.contains("connection"),
        "{stderr}"
    );
    assert!(stderr.contains("echo_once"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_that_no_longer_offers_a_locked_tool_is_a_clear_error() {
    let dir = temp_dir("stale");
    let flow = locked_flow(&dir, "sum", &format!("{SERVER}{TOOLS}"));
    // The lock says the server has `get-sum`; pretend it was renamed on the
    // server side by binding the tool to a name only the (edited) lock knows.
    let lock_path = dir.join("sum.mcp.lock");
    let lock = std::fs::read_to_string(&lock_path)
        .expect("lock")
        .replace("\"get-sum\"", "\"get-total\"");
    std::fs::write(&lock_path, lock).expect("lock written");
    std::fs::write(
        &flow,
        format!("{SERVER}{TOOLS}").replace("\"get-sum\"", "\"get-total\""),
    )
    .expect("flow written");
    let out = run_flow(&flow, "sum", r#"{"a": 1, "b": 2}"#, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr.contains("no longer offers `get-total`") && stderr.contains("flowc mcp lock"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_url_server_is_refused_at_check_time() {
    let dir = temp_dir("url");
    let flow = dir.join("remote.flow");
    std::fs::write(
        &flow,
        "server remote {\n  url \"https://mcp.example.com/mcp\"\n}\n",
    )
    .expect("flow written");
    let check = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(["check", "--color", "never"])
        .arg(&flow)
        .output()
        .expect("flowc runs");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("T007") && stderr.contains("Streamable HTTP MCP servers are not supported"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_whose_program_or_variables_are_missing_stops_the_run_before_it_starts() {
    let dir = temp_dir("preflight");
    let flow = locked_flow(&dir, "sum", &format!("{SERVER}{TOOLS}"));
    // The lock describes the tools; the server's command and environment
    // are the run's to check before anything starts.
    let broken = SERVER
        .replace(
            r#"["npx", "--no-install", "mcp-server-everything", "stdio"]"#,
            r#"["/nonexistent/flowc-test/mcp-server"]"#,
        )
        .replace(
            "timeout 60s",
            "env \"TOKEN\" \"{env.FLOWC_TEST_MCP_TOKEN}\"\n  timeout 60s",
        );
    assert_ne!(broken, SERVER);
    std::fs::write(&flow, format!("{broken}{TOOLS}")).expect("flow written");
    let out = run_flow(&flow, "sum", r#"{"a": 1, "b": 2}"#, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr.contains("the program `/nonexistent/flowc-test/mcp-server` does not exist")
            && stderr.contains("the command of MCP server `everything`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("FLOWC_TEST_MCP_TOKEN") && stderr.contains("MCP server `everything`"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
