//! `flowc init`: a starter project that checks clean, has a passing test, a
//! recording to run it offline, and a pre-commit configuration.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The starter flow: one model call with a typed result, a budget, a test.
pub const FLOW: &str = r#"// hello.flow: a starter workflow.
//
//   flowc check hello.flow       types, budgets and approvals, before running
//   flowc test hello.flow        the test below, with no network
//   flowc run hello.flow --replay hello.replay.json
//                                an offline run answered from the recording
//
// A live run needs OPENAI_API_KEY and `--input '{"text": "…"}'`.

use std.models.{openai}

type Summary {
  title: string len 1..80
  points: [string] len 1..5
}

model writer = openai("gpt-4o-mini") { temperature: 0.2, max_tokens: 400 }

flow summarize(text: string) -> Summary {
  budget { tokens 5k, cost $0.05, steps 5, wall 2m }
  let summary = llm writer -> Summary {
    prompt "Summarise in a short title and at most five points:\n{text}"
  }
  return summary
}

test "the summary is the model's, checked against its type" {
  run summarize(text: "Flow checks workflows before they run.")
  given writer returns { title: "Checked workflows", points: ["checked before running"] }
  expect output.title == "Checked workflows"
  expect output.points.len == 1
}
"#;

/// A recording for `flowc run hello.flow --replay hello.replay.json`.
pub const RECORDING: &str = r#"{
  "about": "Recorded answers for an offline run of hello.flow: flowc run hello.flow --replay hello.replay.json",
  "input": { "text": "Flow checks workflows before they run." },
  "models": {
    "writer": [
      { "title": "Checked workflows", "points": ["checked before running", "typed results"] }
    ]
  }
}
"#;

/// Runs `flowc check` and `flowc fmt --check` on staged .flow files with
/// the flowc on PATH.
pub const PRE_COMMIT: &str = r#"# pre-commit (https://pre-commit.com): `pre-commit install` once, then every
# commit checks and format-checks the staged .flow files with the flowc on PATH.
repos:
  - repo: local
    hooks:
      - id: flowc-check
        name: flowc check
        entry: flowc check
        language: system
        files: \.flow$
      - id: flowc-fmt
        name: flowc fmt --check
        entry: flowc fmt --check
        language: system
        files: \.flow$
"#;

pub fn run(dir: PathBuf) -> Result<i32, String> {
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let files = [
        ("hello.flow", FLOW),
        ("hello.replay.json", RECORDING),
        (".pre-commit-config.yaml", PRE_COMMIT),
    ];
    // Refuse before writing anything, so a partly initialised folder never
    // results from a clash.
    let existing: Vec<String> = files
        .iter()
        .map(|(name, _)| {
            if dir == Path::new(".") {
                PathBuf::from(name)
            } else {
                dir.join(name)
            }
        })
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        return Err(format!(
            "{} already exist{}; flowc init never overwrites files",
            existing.join(", "),
            if existing.len() == 1 { "s" } else { "" }
        ));
    }
    for (name, text) in files {
        let path = if dir == Path::new(".") {
            PathBuf::from(name)
        } else {
            dir.join(name)
        };
        write_new(&path, text)?;
        if !super::style::quiet() {
            eprintln!("created {}", path.display());
        }
    }
    if !super::style::quiet() {
        let cd = if dir == Path::new(".") {
            String::new()
        } else {
            format!("cd {} && ", dir.display())
        };
        eprintln!(
            "next: {cd}flowc test hello.flow && flowc run hello.flow --replay hello.replay.json"
        );
    }
    Ok(0)
}

fn write_new(path: &Path, text: &str) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
