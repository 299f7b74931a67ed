//! `flowc graph`: every flow of every example draws in both formats, Graphviz
//! accepts the DOT output, every step appears once with its edges, gates and
//! irreversible calls are marked, and a few outputs match `tests/graph/`
//! snapshots exactly (rewrite them with `FLOWC_BLESS=1`, then review the diff).
//!
//! The DOT test needs Graphviz's `dot` on PATH (`apt-get install -y graphviz`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flowc::ast::Effect;
use flowc::diagram::root_flows;
use flowc::ir::{CallTarget, Fallback, Flow, Program, StepKind};
use flowc::{compile, Input};
use petgraph::visit::EdgeRef;

fn flowc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("flowc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("examples")
        .expect("examples/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "flow"))
        .collect();
    files.sort();
    files
}

/// Compiles one file and hands its checked program to `f`.
fn with_program<T>(path: &Path, f: impl FnOnce(&Program) -> T) -> T {
    let compilation = compile(&[Input::Path(path.to_path_buf())]).expect("readable file");
    let checked = compilation
        .program
        .as_ref()
        .unwrap_or_else(|| panic!("{} does not check clean", path.display()));
    f(checked.program())
}

/// Every (example, flow name) pair, with the facts the output must show.
struct Expected {
    file: PathBuf,
    flow: String,
    steps: usize,
    /// Distinct (from, to) pairs: the diagram draws each once.
    edges: BTreeSet<(usize, usize)>,
    gates: Vec<usize>,
    /// Steps calling an irreversible tool directly (or as a fallback).
    irreversible: Vec<usize>,
}

fn expected(file: &Path, program: &Program, flow: &Flow) -> Expected {
    let tool_effect = |t: &CallTarget| match t {
        CallTarget::Tool(t) => Some(program.tools[t.index()].effect),
        _ => None,
    };
    let mut gates = Vec::new();
    let mut irreversible = Vec::new();
    for n in flow.graph.node_indices() {
        let step = &flow.graph[n];
        if matches!(step.kind, StepKind::Approve(_)) {
            gates.push(n.index());
        }
        let main = match &step.kind {
            StepKind::Call { target, .. } => tool_effect(target),
            _ => None,
        };
        let fallback = match step.fallback.as_deref() {
            Some(Fallback::Call(target, _, _)) => tool_effect(target),
            _ => None,
        };
        if main == Some(Effect::Irreversible) || fallback == Some(Effect::Irreversible) {
            irreversible.push(n.index());
        }
    }
    Expected {
        file: file.to_path_buf(),
        flow: flow.name.clone(),
        steps: flow.graph.node_count(),
        edges: flow
            .graph
            .edge_references()
            .map(|e| (e.source().index(), e.target().index()))
            .collect(),
        gates,
        irreversible,
    }
}

fn all_expected() -> Vec<Expected> {
    let mut out = Vec::new();
    for file in examples() {
        with_program(&file, |program| {
            for id in root_flows(program) {
                out.push(expected(&file, program, &program.flows[id.index()]));
            }
        });
    }
    assert!(
        out.len() >= 8,
        "expected the examples to define flows, found {}",
        out.len()
    );
    out
}

fn graph(e: &Expected, format: &str) -> String {
    let file = e.file.to_str().expect("UTF-8 path");
    let out = flowc(&["graph", file, "--flow", &e.flow, "--format", format]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "flowc graph {file} --flow {} --format {format} failed:\n{}",
        e.flow,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `n12` → 12.
fn node_index(id: &str) -> usize {
    id.strip_prefix('n')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a node id: {id}"))
}

/// Node ids are `n` and digits, and ids are the whole first token of a line.
fn leading_node(line: &str) -> Option<(usize, &str)> {
    let line = line.trim_start();
    let digits = line.strip_prefix('n')?;
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    if end == 0 {
        return None;
    }
    Some((digits[..end].parse().ok()?, &digits[end..]))
}

#[test]
fn every_example_flow_draws_in_mermaid() {
    for e in all_expected() {
        let out = graph(&e, "mermaid");
        let what = format!("{} --flow {}", e.file.display(), e.flow);
        assert!(
            out.starts_with("flowchart TD\n"),
            "{what}: does not start with `flowchart`:\n{out}"
        );

        // Node definitions: `nK` followed by a shape and a quoted label.
        let mut defined: BTreeMap<usize, String> = BTreeMap::new();
        let mut edges: Vec<(usize, usize)> = Vec::new();
        let mut classes: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for line in out.lines() {
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix("class ") {
                let (members, class) = rest.split_once(' ').expect("class line");
                let set = classes.entry(class.to_string()).or_default();
                set.extend(members.split(',').map(node_index));
                continue;
            }
            let Some((index, rest)) = leading_node(trimmed) else {
                continue;
            };
            if rest.starts_with(' ') {
                let parts: Vec<&str> = trimmed.split(' ').collect();
                assert_eq!(parts.len(), 3, "{what}: edge line `{trimmed}`");
                edges.push((node_index(parts[0]), node_index(parts[2])));
            } else {
                assert_eq!(
                    rest.matches('"').count(),
                    2,
                    "{what}: label quotes must be escaped: `{trimmed}`"
                );
                assert!(
                    defined.insert(index, trimmed.to_string()).is_none(),
                    "{what}: n{index} defined twice"
                );
            }
        }
        assert_eq!(defined.len(), e.steps, "{what}: every step appears once");
        assert_eq!(
            defined.keys().copied().collect::<Vec<_>>(),
            (0..e.steps).collect::<Vec<_>>(),
            "{what}: node ids"
        );
        let drawn: BTreeSet<(usize, usize)> = edges.iter().copied().collect();
        assert_eq!(drawn.len(), edges.len(), "{what}: an edge is drawn twice");
        assert_eq!(drawn, e.edges, "{what}: edges");

        for g in &e.gates {
            assert!(
                defined[g].contains("{{\""),
                "{what}: gate n{g} is not a hexagon: {}",
                defined[g]
            );
            assert!(
                classes.get("gate").is_some_and(|c| c.contains(g)),
                "{what}: gate n{g} has no `gate` class"
            );
        }
        for i in &e.irreversible {
            assert!(
                defined[i].contains("⚠ irreversible"),
                "{what}: n{i} is not labelled irreversible: {}",
                defined[i]
            );
            assert!(
                classes.get("irreversible").is_some_and(|c| c.contains(i)),
                "{what}: n{i} has no `irreversible` class"
            );
        }
        for class in ["gate", "irreversible", "write", "llm"] {
            assert!(
                out.contains(&format!("\n  classDef {class} ")),
                "{what}: no classDef {class}"
            );
        }
    }
}

/// Graphviz's `dot`, or a failure that says how to install it.
fn dot_command() -> Command {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("dot").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "Graphviz `dot` is not on PATH; the DOT output test needs it: run `bash tests/setup.sh` (or `apt-get install -y graphviz`)"
    );
    Command::new("dot")
}

fn dot_accepts(source: &str, what: &str) {
    let mut child = dot_command()
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dot runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(source.as_bytes())
        .expect("write to dot");
    let out = child.wait_with_output().expect("dot exits");
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "{what}: dot rejected the output:\n{stderr}\n{source}"
    );
    assert!(
        stderr.trim().is_empty(),
        "{what}: dot warned:\n{stderr}\n{source}"
    );
    assert!(
        text(&out.stdout).contains("<svg"),
        "{what}: dot produced no SVG"
    );
}

#[test]
fn every_example_flow_draws_in_dot_and_graphviz_accepts_it() {
    for e in all_expected() {
        let out = graph(&e, "dot");
        let what = format!("{} --flow {}", e.file.display(), e.flow);
        assert!(
            out.starts_with(&format!("digraph \"{}\" {{\n", e.flow)),
            "{what}: not a digraph:\n{out}"
        );
        dot_accepts(&out, &what);

        let mut defined: BTreeMap<usize, String> = BTreeMap::new();
        let mut edges: Vec<(usize, usize)> = Vec::new();
        for line in out.lines() {
            let Some((index, rest)) = leading_node(line) else {
                continue;
            };
            if let Some(target) = rest.strip_prefix(" -> ") {
                let (target, _) = leading_node(target).expect("edge target");
                edges.push((index, target));
            } else {
                assert!(rest.starts_with(" [shape="), "{what}: node line `{line}`");
                assert!(
                    defined.insert(index, line.trim().to_string()).is_none(),
                    "{what}: n{index} defined twice"
                );
            }
        }
        assert_eq!(defined.len(), e.steps, "{what}: every step appears once");
        let drawn: BTreeSet<(usize, usize)> = edges.iter().copied().collect();
        assert_eq!(drawn.len(), edges.len(), "{what}: an edge is drawn twice");
        assert_eq!(drawn, e.edges, "{what}: edges");
        for g in &e.gates {
            assert!(
                defined[g].contains("shape=hexagon"),
                "{what}: gate n{g}: {}",
                defined[g]
            );
        }
        for i in &e.irreversible {
            let line = &defined[i];
            assert!(
                line.contains("⚠ irreversible") && line.contains("color=\"#c53030\""),
                "{what}: n{i}: {line}"
            );
        }
    }
}

#[test]
fn edge_styles_follow_the_reason() {
    // respond_to_alert has an `after` and a check guard; every loop or branch
    // adds region edges.
    let out = flowc(&[
        "graph",
        "examples/incident_rollback.flow",
        "--flow",
        "respond_to_alert",
    ]);
    let mermaid = text(&out.stdout);
    assert!(mermaid.contains(" -.->|after| "), "{mermaid}");
    assert!(mermaid.contains(" -.->|guard| "), "{mermaid}");
    let out = flowc(&["graph", "examples/batch_extraction.flow", "--format", "dot"]);
    let dot = text(&out.stdout);
    assert!(dot.contains("subgraph cluster_r1 {"), "{dot}");
    assert!(dot.contains("arrowhead=odot"), "{dot}");
    assert!(dot.contains("[style=dotted, label=\"guard\"]"), "{dot}");
}

#[test]
fn choosing_the_flow() {
    // One flow: `--flow` is optional, and Mermaid is the default.
    let out = flowc(&["graph", "examples/research_fanout.flow"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("flowchart TD\n"));

    // Several: exit 2, naming them.
    let out = flowc(&["graph", "examples/incident_rollback.flow"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.contains("--flow")
            && err.contains("gather_evidence")
            && err.contains("respond_to_alert"),
        "{err}"
    );

    // A misspelled name: exit 2 with a suggestion.
    let out = flowc(&[
        "graph",
        "examples/incident_rollback.flow",
        "--flow",
        "respond_to_alret",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("no flow `respond_to_alret`")
            && err.contains("did you mean `respond_to_alert`?"),
        "{err}"
    );

    // A name nothing like any flow still lists them.
    let out = flowc(&["graph", "examples/incident_rollback.flow", "--flow", "zzz"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        !err.contains("did you mean") && err.contains("gather_evidence, respond_to_alert"),
        "{err}"
    );

    // A missing file is a usage error.
    let out = flowc(&["graph", "examples/no_such_file.flow"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_file_with_errors_is_not_drawn() {
    let dir = std::env::temp_dir().join(format!("flowc-graph-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("broken.flow");
    std::fs::write(&file, "flow f(x: string) -> string {\n  return y\n}\n").expect("write");
    let out = flowc(&["graph", file.to_str().expect("UTF-8 path")]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("N001") || err.contains("error["), "{err}");
}

/// Outputs compared exactly with `tests/graph/NAME`.
const SNAPSHOTS: &[(&str, &str, &str, &str)] = &[
    (
        "examples/incident_rollback.flow",
        "respond_to_alert",
        "mermaid",
        "incident_rollback.respond_to_alert.mmd",
    ),
    (
        "examples/customer_onboarding.flow",
        "onboard",
        "mermaid",
        "customer_onboarding.onboard.mmd",
    ),
    (
        "examples/evaluator_optimizer.flow",
        "publish_postmortem",
        "dot",
        "evaluator_optimizer.publish_postmortem.dot",
    ),
    // Match patterns with Mermaid and DOT syntax in them.
    (
        "tests/graph/escaping.flow",
        "weird",
        "mermaid",
        "escaping.weird.mmd",
    ),
    (
        "tests/graph/escaping.flow",
        "weird",
        "dot",
        "escaping.weird.dot",
    ),
];

#[test]
fn snapshots_match() {
    let bless = std::env::var_os("FLOWC_BLESS").is_some();
    let mut failures = Vec::new();
    for (file, flow, format, name) in SNAPSHOTS {
        let out = flowc(&["graph", file, "--flow", flow, "--format", format]);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", text(&out.stderr));
        let actual = text(&out.stdout);
        let path = Path::new("tests/graph").join(name);
        if bless {
            std::fs::write(&path, &actual).expect("write snapshot");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == actual => {}
            Ok(want) => failures.push(format!(
                "{file} --flow {flow} --format {format} differs from {}\n--- expected\n{want}\n--- actual\n{actual}",
                path.display()
            )),
            Err(_) => failures.push(format!("{}: no snapshot; run with FLOWC_BLESS=1", path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_escaping_fixture_escapes() {
    let out = flowc(&["graph", "tests/graph/escaping.flow"]);
    let mermaid = text(&out.stdout);
    // `"<x>#1"` as a match pattern: nothing Mermaid reads as syntax is left.
    assert!(
        mermaid.contains("subgraph r2[\"out: #34;#60;x#62;#35;1#34;\"]"),
        "{mermaid}"
    );
    let out = flowc(&["graph", "tests/graph/escaping.flow", "--format", "dot"]);
    let dot = text(&out.stdout);
    assert!(dot.contains("label=\"out: \\\"<x>#1\\\"\";"), "{dot}");
    dot_accepts(&dot, "tests/graph/escaping.flow");
}

#[test]
fn output_is_deterministic() {
    let args = [
        "graph",
        "examples/customer_onboarding.flow",
        "--format",
        "dot",
    ];
    let first = flowc(&args);
    let second = flowc(&args);
    assert_eq!(first.stdout, second.stdout);
}
