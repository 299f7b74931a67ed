//! Golden tests: every `tests/golden/*.flow` file carries its expectation in
//! a header comment, `// expect: CODE CODE …` (or `// expect: clean`), and
//! the exact rendered output (`flowc check --color never`) beside it in a
//! `.stderr` file. Run with `FLOWC_BLESS=1` to rewrite the `.stderr` files
//! after an intended change, then review the diff.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use flowc::code::Code;

fn golden_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/golden")
        .expect("tests/golden exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "flow"))
        .collect();
    files.sort();
    files
}

/// The codes a golden file says it reports.
fn expected_codes(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).expect("readable golden file");
    let header = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("// expect:"))
        .unwrap_or_else(|| panic!("{} has no `// expect:` header", path.display()));
    header
        .split_whitespace()
        .filter(|c| *c != "clean")
        .map(str::to_string)
        .collect()
}

fn run_check(path: &Path, format: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(["check", "--color", "never", "--format", format])
        .arg(path)
        .env_remove("NO_COLOR")
        .output()
        .expect("flowc runs")
}

#[test]
fn golden_outputs_match() {
    let bless = std::env::var_os("FLOWC_BLESS").is_some();
    let mut failures = Vec::new();
    for path in golden_files() {
        let expected = expected_codes(&path);
        let json = run_check(&path, "json");
        let doc: serde_json::Value =
            serde_json::from_slice(&json.stdout).expect("valid JSON report");
        let found: BTreeSet<String> = doc["diagnostics"]
            .as_array()
            .expect("diagnostics array")
            .iter()
            .map(|d| d["code"].as_str().expect("code").to_string())
            .collect();
        if found != expected {
            failures.push(format!(
                "{}: expected codes {expected:?}, reported {found:?}",
                path.display()
            ));
        }
        let human = run_check(&path, "human");
        let has_errors = doc["summary"]["errors"].as_u64().unwrap_or(0) > 0;
        let want_status = if has_errors { 1 } else { 0 };
        if human.status.code() != Some(want_status) {
            failures.push(format!(
                "{}: exit status {:?}, expected {want_status}",
                path.display(),
                human.status.code()
            ));
        }
        let stderr = String::from_utf8(human.stderr).expect("UTF-8 output");
        let snapshot = path.with_extension("stderr");
        if bless {
            std::fs::write(&snapshot, &stderr).expect("write snapshot");
            continue;
        }
        match std::fs::read_to_string(&snapshot) {
            Ok(want) if want == stderr => {}
            Ok(want) => failures.push(format!(
                "{}: output differs from {}\n--- expected\n{want}\n--- actual\n{stderr}",
                path.display(),
                snapshot.display()
            )),
            Err(_) => failures.push(format!(
                "{}: no snapshot; run with FLOWC_BLESS=1",
                path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_code_has_a_golden_test() {
    let mut covered = BTreeSet::new();
    for path in golden_files() {
        covered.extend(expected_codes(&path));
    }
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !covered.contains(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a golden test: {missing:?}"
    );
}

/// The codes reported for a file, with how many times each.
fn codes_of(report: &serde_json::Value) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for d in report["diagnostics"].as_array().expect("diagnostics array") {
        *counts
            .entry(d["code"].as_str().expect("code").to_string())
            .or_insert(0) += 1;
    }
    counts
}

fn json_report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&run_check(path, "json").stdout).expect("valid JSON report")
}

/// Every fix the checker suggests, applied alone to its golden file, removes
/// the diagnostic it came with and introduces no other problem: the help
/// proposes code that is valid where it would be written.
#[test]
fn every_suggested_fix_checks_when_applied() {
    // A copy of the corpus, so files that `use` their neighbours still find
    // them, and the real files are never touched.
    let dir = std::env::temp_dir().join(format!("flowc-golden-fixes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for entry in std::fs::read_dir("tests/golden").expect("tests/golden exists") {
        let path = entry.expect("readable entry").path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().expect("file name"))).expect("copy");
        }
    }
    let mut failures = Vec::new();
    let mut applied = BTreeSet::new();
    for original in golden_files() {
        let path = dir.join(original.file_name().expect("file name"));
        let text = std::fs::read_to_string(&path).expect("readable copy");
        let before = json_report(&path);
        let before_codes = codes_of(&before);
        let file = path.display().to_string();
        for d in before["diagnostics"].as_array().expect("diagnostics array") {
            let fix = &d["suggestion"];
            if fix.is_null() {
                continue;
            }
            let code = d["code"].as_str().expect("code").to_string();
            if fix["file"].as_str() != Some(file.as_str()) {
                failures.push(format!("{file}: {code} suggests a change in another file"));
                continue;
            }
            let start = fix["span"]["start"]["offset"].as_u64().expect("offset") as usize;
            let end = fix["span"]["end"]["offset"].as_u64().expect("offset") as usize;
            let replacement = fix["replacement"].as_str().expect("replacement");
            let fixed = format!("{}{replacement}{}", &text[..start], &text[end..]);
            std::fs::write(&path, &fixed).expect("write fixed copy");
            let after_codes = codes_of(&json_report(&path));
            std::fs::write(&path, &text).expect("restore copy");
            let gone = after_codes.get(&code).copied().unwrap_or(0)
                < before_codes.get(&code).copied().unwrap_or(0);
            let new: Vec<&String> = after_codes
                .iter()
                .filter(|(c, n)| before_codes.get(*c).copied().unwrap_or(0) < **n)
                .map(|(c, _)| c)
                .collect();
            if !gone || !new.is_empty() {
                failures.push(format!(
                    "{}: applying {code}'s suggestion {replacement:?} at {start}..{end} left {after_codes:?} (before {before_codes:?})\n{fixed}",
                    original.display()
                ));
            }
            applied.insert(code);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The corpus exercises the fixes this test exists for.
    for code in ["D001", "N001"] {
        assert!(
            applied.contains(code),
            "no golden file has a {code} suggestion: {applied:?}"
        );
    }
}
