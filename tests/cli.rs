//! The `flowc` binary as users and CI run it: exit codes, output formats,
//! and the examples and standard library checking clean.

use crate::support::cli::Test;

#[test]
fn examples_check_clean_without_warnings() {
    let out = Test::new()
        .in_repo()
        .args([
            "check",
            "--deny",
            "warnings",
            "--color",
            "never",
            "examples/",
        ])
        .stderr_has("no problems")
        .run();
    assert!(
        !out.stderr.contains('⚠') && !out.stderr.contains("warning"),
        "{}",
        out.stderr
    );
}

#[test]
fn there_are_at_least_eight_examples() {
    let files = flowc::flow_files(std::path::Path::new("examples")).expect("examples folder");
    let with_flows = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .contains("\nflow ")
        })
        .count();
    assert!(with_flows >= 8, "only {with_flows} examples declare a flow");
}

#[test]
fn stdlib_modules_check_clean() {
    for (_module, _, source) in flowc::stdlib::MODULES {
        Test::new()
            .args(["check", "--deny", "warnings", "--color", "never", "-"])
            .stdin(source.as_bytes())
            .run();
    }
}

#[test]
fn garbage_on_stdin_is_a_diagnostic_not_a_panic() {
    let out = Test::new()
        .args(["check", "--color", "never", "-"])
        .stdin(&b"\xff\x00garbage{{"[..])
        .stderr_has("S001")
        .status(1)
        .run();
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn every_example_cut_in_half_is_reported() {
    for path in flowc::flow_files(std::path::Path::new("examples")).expect("examples") {
        let bytes = std::fs::read(&path).expect("readable example");
        let out = Test::new()
            .args(["check", "--color", "never", "-"])
            .stdin(&bytes[..bytes.len() / 2])
            .stderr_has("×")
            .status(1)
            .run();
        assert!(
            !out.stderr.contains("panicked"),
            "{}: {}",
            path.display(),
            out.stderr
        );
    }
}

#[test]
fn json_output_is_valid_and_stable_in_shape() {
    let doc = Test::new()
        .in_repo()
        .args(["check", "--format", "json", "examples/"])
        .run()
        .json();
    assert_eq!(doc["version"], 1);
    assert!(doc["files"].as_array().is_some_and(|f| f.len() >= 8));
    assert_eq!(doc["summary"]["errors"], 0);

    let doc = Test::new()
        .args(["check", "--format", "json", "-"])
        .stdin("flow f() -> string { return x }")
        .status(1)
        .run()
        .json();
    let d = &doc["diagnostics"].as_array().expect("array")[0];
    for key in [
        "code", "slug", "severity", "message", "file", "span", "label", "labels", "help",
    ] {
        assert!(d.get(key).is_some(), "diagnostic lacks `{key}`: {d}");
    }
    assert_eq!(d["span"]["start"]["line"], 1);
}

/// The official SARIF 2.1.0 schema, kept verbatim in tests/. Its
/// `run.language` pattern has a stray `]` (`…{2}]?$`) that ECMA-262 reads as
/// a literal but Rust's regex engines reject, so the meta-schema check fails
/// on the schema itself. That one pattern is replaced in memory with the
/// evidently intended `^[a-zA-Z]{2}(-[a-zA-Z]{2})?$`; everything else is used
/// as published.
fn sarif_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string("tests/sarif-schema-2.1.0.json").expect("schema file");
    let broken = r#""^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$""#;
    assert!(
        text.contains(broken),
        "the schema changed; revisit this workaround"
    );
    let text = text.replace(broken, r#""^[a-zA-Z]{2}(-[a-zA-Z]{2})?$""#);
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::validator_for(&schema).expect("valid SARIF schema")
}

#[test]
fn sarif_output_validates_against_the_sarif_schema() {
    let validator = sarif_validator();
    let clean = Test::new()
        .in_repo()
        .args(["check", "--format", "sarif", "examples/"])
        .run();
    let broken = Test::new()
        .args(["check", "--format", "sarif", "-"])
        .stdin("tool t(x: string) -> string { http GET \"{env.A}/{x}\" effect irreversible }\nflow f() -> string { let a = t(x: 1) return a }\n")
        .status(1)
        .run();
    for out in [clean, broken] {
        let doc = out.json();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "SARIF schema violations: {errors:#?}");
        assert_eq!(doc["version"], "2.1.0");
    }
}

#[test]
fn exit_codes_distinguish_problems_from_usage_errors() {
    Test::new()
        .args(["check", "no/such/file.flow"])
        .stderr_has("no/such/file.flow: no such file or folder")
        .status(2)
        .run();
    Test::new()
        .in_repo()
        .args(["check", "--format", "yaml", "examples/"])
        .status(2)
        .run();
    Test::new().args(["explain", "Z999"]).status(2).run();
    let warn_only = "use std.models.{openai}\nmodel m = openai(\"gpt-4o-mini\") { max_tokens: 100 }\nflow f(q: string) -> string {\n  budget { tokens 10k }\n  let unused = llm m -> string { prompt \"{q}\" }\n  return q\n}\n";
    Test::new().args(["check", "-"]).stdin(warn_only).run();
    Test::new()
        .args(["check", "--deny", "warnings", "-"])
        .stdin(warn_only)
        .status(1)
        .run();
}

#[test]
fn explain_lists_and_prints_every_code() {
    let list = Test::new().args(["explain", "--list"]).run().stdout;
    for code in flowc::code::Code::ALL {
        assert!(list.contains(code.as_str()), "--list lacks {code}");
        Test::new()
            .args(["explain", code.slug()])
            .stdout_has(&format!("# {code}"))
            .run();
    }
}

#[test]
fn schema_prints_json_schemas_for_types_and_tools() {
    let doc = Test::new()
        .in_repo()
        .args(["schema", "examples/invoice_reconciliation.flow"])
        .run()
        .json();
    let types = doc["types"].as_object().expect("types");
    assert!(!types.is_empty());
    let tools = doc["tools"].as_object().expect("tools");
    for (name, tool) in tools {
        assert_eq!(tool["arguments"]["type"], "object", "{name}");
        // Each schema must itself compile as a JSON Schema.
        jsonschema::validator_for(&tool["arguments"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        jsonschema::validator_for(&tool["result"]).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, schema) in types {
        jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

const GREETING: &str = r#"flow greet(name: string) -> string {
  budget { steps 10, wall 1m }
  let shown = approve hello { show name }
  return "hi {shown}"
}
"#;

#[test]
fn an_ephemeral_run_keeps_no_store_and_no_trace() {
    let out = Test::new()
        .file("greet.flow", GREETING)
        .args(["run", "greet.flow", "--input", r#"{"name": "Ada"}"#])
        .args(["--approve", "hello", "--ephemeral"])
        .status(0)
        .stdout("\"hi Ada\"\n")
        .run();
    assert!(!out.stderr.contains("trace:"), "{}", out.stderr);
    let left: Vec<_> = std::fs::read_dir(out.dir())
        .expect("the test folder")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(left, ["greet.flow"], "an ephemeral run wrote files");
}

#[test]
fn an_ephemeral_run_writes_the_trace_it_is_told_to() {
    let out = Test::new()
        .file("greet.flow", GREETING)
        .args(["run", "greet.flow", "--input", r#"{"name": "Ada"}"#])
        .args(["--approve", "hello", "--ephemeral", "--trace", "t.jsonl"])
        .status(0)
        .stderr_has("trace: t.jsonl")
        .run();
    let trace = std::fs::read_to_string(out.dir().join("t.jsonl")).expect("the trace");
    assert!(
        trace.lines().any(|l| l.contains(r#""kind":"gate""#)),
        "{trace}"
    );
    assert!(!out.dir().join(".flowc").exists());
}

#[test]
fn an_ephemeral_run_at_an_undecided_gate_says_it_cannot_be_resumed() {
    let out = Test::new()
        .file("greet.flow", GREETING)
        .args([
            "run",
            "greet.flow",
            "--input",
            r#"{"name": "Ada"}"#,
            "--ephemeral",
        ])
        .status(4)
        .stderr_has("waiting: gate `hello` in flow `greet` shows:")
        .stderr_has("an ephemeral run keeps nothing to resume")
        .run();
    assert!(!out.stderr.contains("flowc resume"), "{}", out.stderr);
    assert!(!out.dir().join(".flowc").exists());
}
