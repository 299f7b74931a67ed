//! Invariants of the source tree, checked mechanically (as rust-analyzer's
//! tidy tests do), so that a change that breaks one fails here with the
//! file and line instead of slowly eroding the design:
//!
//! - `src/run/` reads only the sealed program: it never names `crate::ir`
//!   (whose `Option`s and strings the checker has not proved), and picks no
//!   default of its own for a fact the checker forces (timeouts,
//!   `max_tokens`, `max_steps`, budgets);
//! - no closed set (builtins, HTTP methods, retry classes, run and gate
//!   statuses, effects, gate decisions, protocols) is matched as a string in
//!   `src/run/`: it is an enum from `seal` on;
//! - no `Result<_, String>` in `src/run/`: runtime errors are typed;
//! - no two files of `src/run/` import each other (read from the `use`
//!   lines and inline `super::…`/`crate::run::…` paths).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use flowc::exec::{Builtin, ErrorClass, HttpMethod};
use flowc::run::status::{GateStatus, RunStatus};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, with its text.
fn rust_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", d.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).expect("readable source");
                out.push((p, text));
            }
        }
    }
    out
}

/// The code of a file without its `#[cfg(test)]` module (tests may use
/// strings and defaults freely) and without comments.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end]
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let code = match l.find("//") {
                Some(at) if !l[..at].contains('"') => &l[..at],
                _ => l,
            };
            (i + 1, code.to_string())
        })
        .filter(|(_, l)| !l.trim().is_empty())
        .collect()
}

fn run_files() -> Vec<(PathBuf, String)> {
    rust_files(&root().join("src/run"))
}

fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn the_runtime_reads_only_the_sealed_program() {
    // Defaults for facts the checker forces: the sealed program has them.
    let forbidden = [
        "crate::ir",
        "timeout_seconds",
        "max_tokens.unwrap_or",
        "max_tokens.or(",
        "max_steps.unwrap_or",
        "budget.clone().unwrap_or_default",
        "unwrap_or(1024)",
        "unwrap_or(30.0)",
        "unwrap_or(120.0)",
    ];
    let mut found = Vec::new();
    for (path, text) in run_files() {
        for (line, code) in code_lines(&text) {
            for f in forbidden {
                if code.contains(f) {
                    found.push(format!(
                        "{}:{line}: `{f}` in `{}`",
                        shown(&path),
                        code.trim()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "src/run/ must take facts from the sealed program (crate::exec), not re-derive them:\n{}",
        found.join("\n")
    );
}

/// Every name of every closed set the runtime deals with.
fn closed_set_names() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    names.extend(Builtin::ALL.iter().map(|b| b.as_str().to_string()));
    names.extend(HttpMethod::ALL.iter().map(|m| m.as_str().to_string()));
    names.extend(
        HttpMethod::ALL
            .iter()
            .map(|m| m.as_str().to_ascii_lowercase()),
    );
    names.extend(ErrorClass::ALL.iter().map(|c| c.as_str().to_string()));
    names.extend(RunStatus::ALL.iter().map(|s| s.as_str().to_string()));
    names.extend(GateStatus::ALL.iter().map(|s| s.as_str().to_string()));
    for other in [
        "read",
        "write",
        "irreversible",
        "approve",
        "reject",
        "openai",
        "anthropic",
        "circuit_breaker",
        "max_steps",
        "max_repeat",
    ] {
        names.insert(other.to_string());
    }
    names
}

#[test]
fn no_closed_set_is_matched_as_a_string_in_the_runtime() {
    let names = closed_set_names();
    let mut found = Vec::new();
    for (path, text) in run_files() {
        for (line, code) in code_lines(&text) {
            for name in &names {
                let quoted = format!("\"{name}\"");
                let Some(at) = code.find(&quoted) else {
                    continue;
                };
                let before = code[..at].trim_end();
                let after = code[at + quoted.len()..].trim_start();
                // A pattern: the literal comes before the arm's `=>`.
                let arm_after = after.find("=>").is_some_and(|i| {
                    let between = after[..i].trim();
                    between.is_empty()
                        || between.starts_with('|')
                        || between.starts_with(')')
                        || between.starts_with("if ")
                });
                let compared = before.ends_with("==")
                    || before.ends_with("!=")
                    || after.starts_with("==")
                    || after.starts_with("!=")
                    || arm_after;
                if compared {
                    found.push(format!("{}:{line}: {}", shown(&path), code.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "closed sets are enums in src/run/ (see src/exec.rs and src/run/status.rs); these compare names:\n{}",
        found.join("\n")
    );
}

/// The type arguments of every `Result<…>` in `code`, split at the top
/// level.
fn result_arguments(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let text: String = bytes.iter().collect();
    let mut from = 0;
    while let Some(at) = text[from..].find("Result<") {
        let start = from + at + "Result<".len();
        let before = text[..from + at].chars().last();
        from = start;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut depth = 1;
        let mut args = vec![String::new()];
        for c in text[start..].chars() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' => depth -= 1,
                ',' if depth == 1 => {
                    args.push(String::new());
                    continue;
                }
                _ => {}
            }
            if depth == 0 {
                break;
            }
            if let Some(last) = args.last_mut() {
                last.push(c);
            }
        }
        out.push(args.into_iter().map(|a| a.trim().to_string()).collect());
    }
    out
}

#[test]
fn runtime_errors_are_typed() {
    let mut found = Vec::new();
    for (path, text) in run_files() {
        let code: String = code_lines(&text)
            .into_iter()
            .map(|(_, l)| l)
            .collect::<Vec<_>>()
            .join("\n");
        for args in result_arguments(&code) {
            if args.get(1).is_some_and(|e| e == "String") {
                found.push(format!("{}: Result<{}>", shown(&path), args.join(", ")));
            }
        }
    }
    assert!(
        found.is_empty(),
        "src/run/ returns typed errors, never Result<_, String>:\n{}",
        found.join("\n")
    );
}

/// A file's module path: `src/run/call/tool.rs` is `run::call::tool`,
/// `src/run/call/mod.rs` is `run::call`.
fn module_of(path: &Path) -> Vec<String> {
    let rel = path.strip_prefix(root().join("src")).expect("under src/");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    if last != "mod.rs" {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    parts
}

/// Every module path a line of code names: `use super::x::…`,
/// `use crate::run::x::…`, `use child::…`, and the same paths inline.
fn referenced_paths(code: &str, module: &[String], is_mod_rs: bool) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let words: Vec<&str> = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '{'))
        .filter(|w| !w.is_empty())
        .collect();
    // The module `super` and `self` mean from this file.
    let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    let this: Vec<String> = module.to_vec();
    for w in words {
        let w = w.trim_start_matches('{');
        let segments: Vec<&str> = w.split("::").filter(|s| !s.is_empty()).collect();
        let Some(first) = segments.first() else {
            continue;
        };
        if segments.len() < 2 {
            // `pub(super)`, a lone `crate`: not a path to anything.
            continue;
        }
        let (mut path, rest): (Vec<String>, &[&str]) = match *first {
            "super" => {
                let mut p = if is_mod_rs {
                    this[..this.len().saturating_sub(1)].to_vec()
                } else {
                    parent[..parent.len().saturating_sub(1)].to_vec()
                };
                let mut rest = &segments[1..];
                while rest.first() == Some(&"super") {
                    p.pop();
                    rest = &rest[1..];
                }
                if !is_mod_rs {
                    // `super` of `run::call::tool` is `run::call`.
                    p = parent.clone();
                    let mut r = &segments[1..];
                    while r.first() == Some(&"super") {
                        p.pop();
                        r = &r[1..];
                    }
                    rest = r;
                }
                (p, rest)
            }
            "crate" => (Vec::new(), &segments[1..]),
            "self" => (this.clone(), &segments[1..]),
            _ if segments.len() > 1 && code.trim_start().starts_with("use ") => {
                // `use child::item` in a mod.rs, or a path from this module.
                let base = if is_mod_rs {
                    this.clone()
                } else {
                    parent.clone()
                };
                let _ = base;
                (this.clone(), &segments[..])
            }
            _ => continue,
        };
        for s in rest {
            path.push(s.to_string());
        }
        out.push(path);
    }
    out
}

#[test]
fn no_two_runtime_files_import_each_other() {
    let files = run_files();
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|(p, _)| (module_of(p), p.clone()))
        .collect();
    let mut edges: BTreeSet<(Vec<String>, Vec<String>)> = BTreeSet::new();
    for (path, text) in &files {
        let module = module_of(path);
        let is_mod_rs = path.file_name().is_some_and(|n| n == "mod.rs");
        for (_, code) in code_lines(text) {
            let trimmed = code.trim_start();
            if trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ") {
                continue;
            }
            for target in referenced_paths(&code, &module, is_mod_rs) {
                // The longest prefix that is a file of src/run/.
                let file = (1..=target.len())
                    .rev()
                    .map(|n| target[..n].to_vec())
                    .find(|p| modules.contains_key(p));
                if let Some(file) = file {
                    if file != module {
                        edges.insert((module.clone(), file));
                    }
                }
            }
        }
    }
    assert!(
        edges.len() > 20,
        "the import reader found too few imports to be reading them: {edges:?}"
    );
    let circles: Vec<String> = edges
        .iter()
        .filter(|(a, b)| a < b && edges.contains(&(b.clone(), a.clone())))
        .map(|(a, b)| format!("{} <-> {}", a.join("::"), b.join("::")))
        .collect();
    assert!(
        circles.is_empty(),
        "files of src/run/ that import each other:\n{}",
        circles.join("\n")
    );
}
