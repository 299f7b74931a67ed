//! What authors use around the language: output formats for editors and CI
//! (golden), test failures that explain themselves (golden), and the CLI
//! conventions (completions, suggestions, quiet/verbose, colour, stdin,
//! `init`, `fmt --check` diffs, run ids, JSON output of the run commands).
//!
//! Goldens live in tests/authoring/; `FLOWC_BLESS=1` rewrites them.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::cli::Test;

const DIR: &str = "tests/authoring";

/// Compares `actual` with the golden file `name` (or rewrites it when
/// blessing).
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DIR).join(name);
    if std::env::var_os("FLOWC_BLESS").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (FLOWC_BLESS=1 writes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs (FLOWC_BLESS=1 rewrites it after an intended change)",
        path.display()
    );
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(DIR).join(name)).expect("fixture")
}

#[test]
fn check_format_short_is_one_line_per_diagnostic_with_character_columns() {
    let out = Test::new()
        .file("problems.flow", &fixture("problems.flow"))
        .args(["check", "--format", "short", "problems.flow"])
        .stderr("")
        .status(1)
        .run();
    golden("problems.short", &out.stdout);
    // The field access after the multi-byte string: column 46 in characters
    // (it is byte 56).
    assert!(out.stdout.contains("problems.flow:7:46: error[T002]"));
}

#[test]
fn check_format_github_writes_workflow_commands() {
    let out = Test::new()
        .file("problems.flow", &fixture("problems.flow"))
        .args(["check", "--format", "github", "problems.flow"])
        .status(1)
        .run();
    golden("problems.github", &out.stdout);
    for line in out.stdout.lines() {
        assert!(
            line.starts_with("::error file=problems.flow,line="),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}

#[test]
fn a_failing_expect_shows_where_what_and_the_operand_values() {
    let out = Test::new()
        .file("failing_test.flow", &fixture("failing_test.flow"))
        .args(["test", "failing_test.flow"])
        .status(1)
        .run();
    golden("failing_test.stdout", &out.stdout);
    assert!(out
        .stdout
        .contains("failing_test.flow:19:10: expectation failed"));
    assert!(out.stdout.contains("output.seats = 12"));
}

#[test]
fn a_given_that_does_not_fit_names_the_field() {
    let out = Test::new()
        .file("given_mismatch.flow", &fixture("given_mismatch.flow"))
        .args(["check", "--format", "short", "given_mismatch.flow"])
        .status(1)
        .run();
    golden("given_mismatch.short", &out.stdout);
    let missing = fixture("given_mismatch.flow").replace(", email: 42", "");
    Test::new()
        .file("m.flow", &missing)
        .args(["check", "--format", "short", "m.flow"])
        .stdout_has("error[T001]: field `owner.email` is missing")
        .status(1)
        .run();
}

#[test]
fn test_results_as_json() {
    let doc = Test::new()
        .file("failing_test.flow", &fixture("failing_test.flow"))
        .args(["test", "--format", "json", "failing_test.flow"])
        .status(1)
        .run()
        .json();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["summary"]["failed"], 1);
    let t = &doc["tests"][0];
    assert_eq!(t["name"], "the seats are counted");
    assert_eq!(t["passed"], false);
    assert_eq!(t["line"], 16);
    assert_eq!(t["failures"].as_array().map(Vec::len), Some(2));
}

#[test]
fn completion_scripts_are_accepted_by_their_shell() {
    let out = Test::new().args(["completions", "bash"]).run();
    assert!(out.stdout.contains("_flowc"), "{}", out.stdout);
    let mut bash = Command::new("bash")
        .args(["-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    std::io::Write::write_all(
        &mut bash.stdin.take().expect("stdin"),
        out.stdout.as_bytes(),
    )
    .expect("write");
    let checked = bash.wait_with_output().expect("bash exits");
    assert!(
        checked.status.success(),
        "bash -n rejected the script: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // Loaded for real: completing `flowc ch` offers `check`.
    let probe = format!(
        "{}\nCOMP_WORDS=(flowc ch); COMP_CWORD=1; COMP_LINE='flowc ch'; COMP_POINT=8; _flowc flowc ch flowc; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        out.stdout
    );
    let ran = Command::new("bash")
        .args(["-c", &probe])
        .output()
        .expect("bash runs");
    let offered = String::from_utf8_lossy(&ran.stdout);
    assert!(
        offered.lines().any(|l| l == "check"),
        "completing `flowc ch` offered: {offered}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let out = Test::new().args(["completions", shell]).run();
        assert!(out.stdout.contains("flowc"), "{shell}");
    }
}

#[test]
fn a_mistyped_subcommand_suggests_the_right_one() {
    Test::new()
        .args(["chekc"])
        .stderr_has("'check'")
        .stderr_has("similar subcommand")
        .status(2)
        .run();
}

#[test]
fn quiet_and_verbose() {
    let clean = "flow f(q: string) -> string {\n  budget { tokens 1k, cost $0.01, steps 5, wall 1m }\n  return q\n}\n";
    Test::new()
        .file("a.flow", clean)
        .args(["check", "a.flow"])
        .stderr("checked 1 file: no problems\n")
        .run();
    Test::new()
        .file("a.flow", clean)
        .args(["check", "--quiet", "a.flow"])
        .stderr("")
        .stdout("")
        .run();
    Test::new()
        .file("a.flow", clean)
        .args(["-v", "check", "a.flow"])
        .stderr_has("checked a.flow\n")
        .stderr_has("source files read")
        .run();
    Test::new()
        .args(["check", "-q", "-v", "a.flow"])
        .stderr_has("cannot be used with")
        .status(2)
        .run();
}

#[test]
fn colour_follows_no_color_clicolor_force_and_the_flag() {
    let broken = "flow f() -> string { return x }\n";
    let ansi = |out: &str| out.contains("\u{1b}[");
    // Not a terminal: plain.
    let plain = Test::new()
        .args(["check", "-"])
        .stdin(broken)
        .status(1)
        .run();
    assert!(!ansi(&plain.stderr), "{}", plain.stderr);
    let forced = Test::new()
        .args(["check", "-"])
        .stdin(broken)
        .env("CLICOLOR_FORCE", "1")
        .status(1)
        .run();
    assert!(ansi(&forced.stderr), "{}", forced.stderr);
    let no_color = Test::new()
        .args(["check", "-"])
        .stdin(broken)
        .env("CLICOLOR_FORCE", "1")
        .env("NO_COLOR", "1")
        .status(1)
        .run();
    assert!(!ansi(&no_color.stderr), "{}", no_color.stderr);
    let always = Test::new()
        .args(["check", "--color", "always", "-"])
        .stdin(broken)
        .status(1)
        .run();
    assert!(ansi(&always.stderr));
    let never = Test::new()
        .args(["--color", "never", "check", "-"])
        .stdin(broken)
        .env("CLICOLOR_FORCE", "1")
        .status(1)
        .run();
    assert!(!ansi(&never.stderr));
}

#[test]
fn dash_reads_standard_input_wherever_a_file_is_read() {
    let source = fixture("failing_test.flow")
        .replace("== 10", "== 12")
        .replace(
            "\n  expect output.plan == \"business\" or output.seats > 100",
            "",
        );
    Test::new()
        .args(["test", "-"])
        .stdin(source.as_str())
        .stdout_has("1 passed, 0 failed")
        .run();
    Test::new()
        .args(["graph", "-"])
        .stdin(source.as_str())
        .stdout_has("flowchart")
        .run();
    let schema = Test::new()
        .args(["schema", "-"])
        .stdin(source.as_str())
        .run()
        .json();
    assert!(schema["tools"]["get_account"].is_object(), "{schema}");
    Test::new()
        .args(["fmt", "-"])
        .stdin("flow   f(q: string) -> string {\n  budget { tokens 1k }\n  return q }\n")
        .stdout_has("flow f(q: string) -> string {")
        .run();
    let init = Test::new().args(["init", "p"]).run();
    let dir = init.dir().join("p");
    let run = Test::new()
        .args(["run", "-", "--replay"])
        .arg(dir.join("hello.replay.json"))
        .args(["--store", "runs.db", "--trace", "trace.jsonl"])
        .stdin(std::fs::read_to_string(dir.join("hello.flow")).expect("flow"))
        .stdout_has("\"Checked workflows\"")
        .run();
    let trace = std::fs::read_to_string(run.dir().join("trace.jsonl")).expect("trace");
    let doc = Test::new()
        .args(["trace", "-", "--format", "json"])
        .stdin(trace.as_str())
        .run()
        .json();
    assert!(doc["events"].as_array().is_some_and(|e| !e.is_empty()));
    // A process killed while writing an event leaves a last line without
    // its newline: skipped with a warning. A bad line elsewhere is an error.
    let events = doc["events"].as_array().map_or(0, Vec::len);
    let torn = Test::new()
        .args(["trace", "-", "--format", "json"])
        .stdin(format!("{trace}{{\"run\":\"r\",\"id\":9,\"ki"))
        .stderr_has("the last event is cut off")
        .run()
        .json();
    assert_eq!(torn["events"].as_array().map_or(0, Vec::len), events);
    Test::new()
        .args(["trace", "-"])
        .stdin(format!("{{\"id\":9,\"ki\n{trace}"))
        .stderr_has("-:1: not a trace event")
        .status(2)
        .run();
}

#[test]
fn init_makes_a_project_that_checks_tests_runs_and_formats_clean() {
    let out = Test::new()
        .args(["init"])
        .stderr_has("created hello.flow")
        .run();
    let dir = out.dir();
    for file in ["hello.flow", "hello.replay.json", ".pre-commit-config.yaml"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let flow = std::fs::read_to_string(dir.join("hello.flow")).expect("flow");
    let replay = std::fs::read_to_string(dir.join("hello.replay.json")).expect("replay");
    let with = |t: Test| {
        t.file("hello.flow", &flow)
            .file("hello.replay.json", &replay)
    };
    with(Test::new())
        .args(["check", "--deny", "warnings", "hello.flow"])
        .run();
    with(Test::new())
        .args(["test", "hello.flow"])
        .stdout_has("1 passed, 0 failed")
        .run();
    with(Test::new())
        .args(["fmt", "--check", "hello.flow"])
        .run();
    with(Test::new())
        .args(["run", "hello.flow", "--replay", "hello.replay.json"])
        .stdout_has("\"title\": \"Checked workflows\"")
        .run();
    let config = std::fs::read_to_string(dir.join(".pre-commit-config.yaml")).expect("config");
    assert!(config.contains("entry: flowc check") && config.contains("language: system"));
    // Never overwrites.
    with(Test::new())
        .args(["init"])
        .stderr_has(
            "hello.flow, hello.replay.json already exist; flowc init never overwrites files",
        )
        .status(2)
        .run();
}

#[test]
fn fmt_check_prints_a_unified_diff_that_patch_applies() {
    let messy = "type T { a: string, b: number }\n\nflow   f(q: string) -> string {\n  budget { tokens 1k }\n  return q }\n";
    let formatted = Test::new().args(["fmt", "-"]).stdin(messy).run().stdout;
    let out = Test::new()
        .file("a.flow", messy)
        .args(["fmt", "--check", "a.flow"])
        .stdout("a.flow\n")
        .stderr_has("--- a.flow\n+++ a.flow (formatted)\n@@ ")
        .status(1)
        .run();
    // The diff is a real one: `patch` turns the file into its formatted form.
    let patch = Command::new("patch")
        .args(["--quiet", "--output=-"])
        .arg(out.dir().join("a.flow"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut patch = patch.expect("`patch` runs (Debian package patch; bash tests/setup.sh)");
    std::io::Write::write_all(
        &mut patch.stdin.take().expect("stdin"),
        out.stderr.as_bytes(),
    )
    .expect("write");
    let patched = patch.wait_with_output().expect("patch exits");
    assert!(
        patched.status.success(),
        "{}",
        String::from_utf8_lossy(&patched.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&patched.stdout), formatted);
}

/// A flow that waits at a gate, for the inbox.
const GATED: &str = "flow publish(text: string) -> string {\n  budget { tokens 1k, cost $0.01, steps 10, wall 1m }\n  let ok = approve publish_it { show text }\n  return ok\n}\n";

#[test]
fn run_commands_print_documented_json_and_run_ids_are_uuid_v7() {
    let base = || {
        Test::new()
            .file("gated.flow", GATED)
            .env("FLOWC_STORE", "runs.db")
    };
    // Both runs in one folder, so one store holds them.
    let first = base()
        .args(["run", "gated.flow", "--input", r#"{"text": "hi"}"#])
        .status(4)
        .run();
    let dir = first.dir().to_path_buf();
    let in_dir = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_flowc"))
            .args(args)
            .current_dir(&dir)
            .env("FLOWC_STORE", "runs.db")
            .output()
            .expect("flowc runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let second = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(["run", "gated.flow", "--input", r#"{"text": "ho"}"#])
        .current_dir(&dir)
        .env("FLOWC_STORE", "runs.db")
        .output()
        .expect("flowc runs");
    assert_eq!(second.status.code(), Some(4));

    // `runs --format json` is observe's list (docs/observability.md).
    let runs = in_dir(&["runs", "--format", "json"]);
    let list = runs.as_array().expect("a list of runs");
    assert_eq!(list.len(), 2);
    let mut ids = Vec::new();
    for r in list {
        let id = r["id"].as_str().expect("id");
        // 8-4-4-4-12 hex digits, version 7, RFC 4122 variant.
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{id}"
        );
        assert!(parts[2].starts_with('7'), "not a UUIDv7: {id}");
        assert!("89ab".contains(&parts[3][..1]), "{id}");
        assert_eq!(r["status"], "waiting", "{r}");
        assert_eq!(r["flow"], "publish");
        ids.push(id.to_string());
    }
    assert_ne!(ids[0], ids[1]);

    let inbox = in_dir(&["inbox", "--format", "json"]);
    let gates = inbox["gates"].as_array().expect("gates");
    assert_eq!(gates.len(), 2);
    for g in gates {
        assert_eq!(g["gate"], "publish_it");
        assert_eq!(g["status"], "pending");
        assert!(ids.contains(&g["run"].as_str().unwrap_or_default().to_string()));
    }
    let shown: Vec<&serde_json::Value> = gates.iter().map(|g| &g["show"]).collect();
    assert!(
        shown.iter().any(|s| s.to_string().contains("hi")),
        "{shown:?}"
    );

    let show = in_dir(&["show", &ids[0], "--format", "json"]);
    assert_eq!(show["version"], 1);
    assert_eq!(show["run"]["id"], ids[0]);
    for key in [
        "file",
        "input",
        "output",
        "error",
        "created_at",
        "updated_at",
        "spend",
        "trace",
        "replay",
    ] {
        assert!(show["run"].get(key).is_some(), "run lacks {key}: {show}");
    }
    assert_eq!(show["gates"][0]["gate"], "publish_it");
    assert!(show["steps"].is_array());

    let trace = in_dir(&["trace", &ids[0], "--format", "json"]);
    let events = trace["events"].as_array().expect("events");
    assert!(events.iter().any(|e| e["kind"] == "gate"), "{trace}");
}
