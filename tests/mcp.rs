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
