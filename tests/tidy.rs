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
//! - `src/format/` never reads the source byte by byte: it asks the
//!   scanner's token table (`src/syntax/tokens.rs`) and copies recorded
//!   spellings; only `src/syntax/scan.rs` scans Flow text (no other file
//!   of `src/` recognises `//` or `/…/` byte by byte).
//! - the editor packages in `editors/` know every word of
//!   `grammar/flow.pest` (tree-sitter grammar and highlights, TextMate
//!   grammar, Vim syntax), and reserve exactly pest's reserved words.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

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

// ---------------------------------------------------------------- editors
//
// The editor packages in editors/ are written by hand against
// grammar/flow.pest. These tests fail when a word enters the pest grammar
// and an editor does not know it, so that new syntax cannot leave them
// behind silently (they did once: `context 128k` in a price broke the
// tree-sitter parse of stdlib/models.flow).

/// The code of `text` without its `//` comments, and the string literals in
/// it, for a language whose strings are quoted with `quote` and escaped with
/// a backslash (pest: `"\""`, JavaScript: `'\''`). Comments are dropped so that the
/// words of a commented example are not taken for syntax.
fn code_and_literals(text: &str, quote: char) -> (String, Vec<String>) {
    let mut code = String::with_capacity(text.len());
    let mut literals = Vec::new();
    for line in text.lines() {
        let mut literal: Option<String> = None;
        let mut escaped = false;
        for (i, c) in line.char_indices() {
            match literal.as_mut() {
                Some(lit) if escaped => {
                    escaped = false;
                    lit.push(c);
                }
                Some(lit) if c == '\\' => {
                    escaped = true;
                    lit.push(c);
                }
                Some(_) if c == quote => literals.extend(literal.take()),
                Some(lit) => lit.push(c),
                None if c == quote => literal = Some(String::new()),
                None if line[i..].starts_with("//") => break,
                None => {}
            }
            code.push(c);
        }
        code.push('\n');
    }
    (code, literals)
}

fn is_word(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The string literals of `text` (see [`code_and_literals`]) that are one
/// word: a letter, then letters, digits and `_`.
fn quoted_words(text: &str, quote: char) -> BTreeSet<String> {
    code_and_literals(text, quote)
        .1
        .into_iter()
        .filter(|l| is_word(l))
        .collect()
}

/// The words of a text: maximal runs of letters, digits and `_`.
fn words_of(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Every word the pest grammar spells out: clause words (`"price"`,
/// `"context"`), the words of the `kw_*` rules and of `keyword`, and closed
/// sets of values (`"GET"`, `"rate_limit"`, `"json"`).
fn pest_words() -> BTreeSet<String> {
    let words = quoted_words(&read("grammar/flow.pest"), '"');
    // Guard against a reader that silently finds nothing.
    for known in [
        "use", "price", "context", "timeout", "GET", "failure", "eval", "server",
    ] {
        assert!(
            words.contains(known),
            "pest_words() misses {known:?}: {words:?}"
        );
    }
    words
}

/// The reserved words: the literals of the `keyword = @{ … }` rule.
fn pest_reserved() -> BTreeSet<String> {
    let pest = code_and_literals(&read("grammar/flow.pest"), '"').0;
    let start = pest
        .find("keyword = @{")
        .expect("flow.pest has a `keyword` rule");
    let end = start + pest[start..].find("\n}").expect("the `keyword` rule ends");
    let words = quoted_words(&pest[start..end], '"');
    assert!(words.len() > 20 && words.contains("let"), "{words:?}");
    words
}

/// Literal pieces of tokens that no editor spells as a word: each matches
/// them inside a regular expression for the whole token.
const LEXICAL_PIECES: &[(&str, &str)] = &[
    ("k", "count suffix: 100k"),
    ("M", "count suffix: 2M"),
    ("ms", "duration unit: 500ms"),
    ("s", "duration unit: 30s"),
    ("m", "duration unit: 15m"),
    ("h", "duration unit: 48h"),
    ("d", "duration unit: 7d"),
    ("n", "string escape: \\n"),
    ("t", "string escape: \\t"),
    ("r", "string escape: \\r"),
];

/// Words an editor deliberately leaves alone, with the reason. Empty today;
/// an entry that the editor does know, or that pest no longer has, fails the
/// test, so the list cannot rot.
const EDITOR_ALLOWED_MISSING: &[(&str, &str, &str)] = &[
    // (editor, word, why)
];

/// The tree-sitter grammar without the names of its fields
/// (`field('body', …)` names a child, it is no token).
fn tree_sitter_grammar() -> String {
    let fields = fancy_regex::Regex::new(r"field\('\w+'").expect("regex");
    fields
        .replace_all(&read("editors/tree-sitter-flow/grammar.js"), "field(")
        .into_owned()
}

/// Words of the tree-sitter grammar: its `'…'` string literals.
fn tree_sitter_words() -> BTreeSet<String> {
    quoted_words(&tree_sitter_grammar(), '\'')
}

/// The regular expressions of the VS Code TextMate grammar.
fn textmate_regexes() -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("match" | "begin" | "end" | "while", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let grammar: serde_json::Value =
        serde_json::from_str(&read("editors/vscode/syntaxes/flow.tmLanguage.json"))
            .expect("the TextMate grammar is JSON");
    let mut out = Vec::new();
    walk(&grammar, &mut out);
    out
}

/// Words of the TextMate grammar's regexes, escapes (`\b`, `\s`) removed.
fn textmate_words() -> BTreeSet<String> {
    let escapes = fancy_regex::Regex::new(r"\\.").expect("regex");
    textmate_regexes()
        .iter()
        .flat_map(|re| words_of(&escapes.replace_all(re, " ")))
        .collect()
}

/// Words of the Vim syntax file's code (comment lines dropped), with Vim's
/// regex escapes (`\<`, `\ze`, `\s`, `\%(`) removed.
fn vim_words() -> BTreeSet<String> {
    let escapes = fancy_regex::Regex::new(r"\\z[se]|\\.").expect("regex");
    read("editors/vim/syntax/flow.vim")
        .lines()
        .filter(|l| !l.trim_start().starts_with('"'))
        .flat_map(|l| words_of(&escapes.replace_all(l, " ")))
        .collect()
}

#[test]
fn every_word_of_the_grammar_is_known_to_every_editor() {
    let pest = pest_words();
    let lexical: BTreeSet<&str> = LEXICAL_PIECES.iter().map(|(w, _)| *w).collect();
    let editors = [
        (
            "tree-sitter",
            "editors/tree-sitter-flow/grammar.js",
            tree_sitter_words(),
        ),
        (
            "vscode",
            "editors/vscode/syntaxes/flow.tmLanguage.json",
            textmate_words(),
        ),
        ("vim", "editors/vim/syntax/flow.vim", vim_words()),
    ];
    let mut problems = Vec::new();
    for word in &lexical {
        if !pest.contains(*word) {
            problems.push(format!(
                "LEXICAL_PIECES lists {word:?}, which flow.pest no longer has"
            ));
        }
    }
    for (editor, file, known) in &editors {
        let allowed: BTreeSet<&str> = EDITOR_ALLOWED_MISSING
            .iter()
            .filter(|(e, _, _)| e == editor)
            .map(|(_, w, _)| *w)
            .collect();
        let missing: Vec<&str> = pest
            .iter()
            .map(String::as_str)
            .filter(|w| !lexical.contains(w) && !allowed.contains(w) && !known.contains(*w))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{file} ({editor}) does not know these words of grammar/flow.pest: {}",
                missing.join(", ")
            ));
        }
        for word in &allowed {
            if !pest.contains(*word) || known.contains(*word) {
                problems.push(format!(
                    "EDITOR_ALLOWED_MISSING lists {word:?} for {editor}, which is stale \
                     (pest no longer has it, or the editor knows it now)"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_editors_reserve_exactly_the_grammars_keywords() {
    let reserved = pest_reserved();
    let mut problems = Vec::new();

    // VS Code: a reserved word followed by `(` is never a call.
    let call = textmate_regexes()
        .into_iter()
        .find(|re| re.starts_with(r"\b(?!(?:"))
        .expect("the TextMate grammar has a call rule guarded by the reserved words");
    let list = &call[r"\b(?!(?:".len()..call.find(r")\b)").expect("guard ends")];
    let vscode: BTreeSet<String> = list.split('|').map(str::to_string).collect();
    if vscode != reserved {
        problems.push(format!(
            "vscode call guard: missing {:?}, extra {:?}",
            reserved.difference(&vscode).collect::<Vec<_>>(),
            vscode.difference(&reserved).collect::<Vec<_>>()
        ));
    }

    // Vim: the reserved words are the `s:Words(...)` keyword groups, but
    // `env`, which is highlighted with the name after it (`env.KEY`) by
    // flowEnv.
    let vim_file = read("editors/vim/syntax/flow.vim");
    let mut vim: BTreeSet<String> = vim_file
        .lines()
        .filter(|l| l.starts_with("call s:Words("))
        .flat_map(|l| quoted_words(&l[l.find('[').expect("a word list")..], '\''))
        .collect();
    assert!(vim_file.contains(r#"syn match flowEnv "\<env\>"#));
    vim.insert("env".to_string());
    if vim != reserved {
        problems.push(format!(
            "vim s:Words keyword groups: missing {:?}, extra {:?}",
            reserved.difference(&vim).collect::<Vec<_>>(),
            vim.difference(&reserved).collect::<Vec<_>>()
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn tree_sitter_highlights_every_word_of_the_grammar() {
    // A word is highlighted when highlights.scm names it (`"price"`), or
    // names the rule that is nothing but that word and its siblings
    // (`http_method: _ => choice('GET', …)` and `(http_method) @…`).
    let grammar = code_and_literals(&tree_sitter_grammar(), '\'').0;
    let highlights = read("editors/tree-sitter-flow/queries/highlights.scm");
    let token_rule = fancy_regex::Regex::new(r"(?m)^\s*(\w+): _ => (.+),$").expect("regex");
    let mut via_rule: BTreeMap<String, String> = BTreeMap::new();
    for caps in token_rule.captures_iter(grammar.as_str()) {
        let caps = caps.expect("regex match");
        let group = |n| caps.get(n).expect("group").as_str();
        for word in quoted_words(group(2), '\'') {
            via_rule.insert(word, group(1).to_string());
        }
    }
    let lexical: BTreeSet<&str> = LEXICAL_PIECES.iter().map(|(w, _)| *w).collect();
    let unhighlighted: Vec<String> = pest_words()
        .into_iter()
        .filter(|w| !lexical.contains(w.as_str()))
        .filter(|w| !highlights.contains(&format!("\"{w}\"")))
        .filter(|w| {
            via_rule
                .get(w)
                .is_none_or(|rule| !highlights.contains(&format!("({rule})")))
        })
        .collect();
    assert!(
        unhighlighted.is_empty(),
        "editors/tree-sitter-flow/queries/highlights.scm captures neither these words of \
         grammar/flow.pest nor a rule made of them: {}",
        unhighlighted.join(", ")
    );
}

/// What a line of formatter code may not do: look at the source one byte
/// (or character) at a time, or call a scanner function that starts at a
/// position. Source slices may be copied (a kept spelling), not searched.
fn byte_scanning(code: &str) -> Vec<String> {
    let forbidden = [
        "b'",
        "b\"",
        ".bytes()",
        ".as_bytes()",
        ".char_indices()",
        "skip_trivia",
        "token_end",
        "string_end",
        "string_interpolates",
        "regex_end",
    ];
    let mut found: Vec<String> = forbidden
        .iter()
        .filter(|f| code.contains(*f))
        .map(|f| format!("`{f}`"))
        .collect();
    // `src[a..b].contains(…)`, `self.src.find(…)`: searching the text the
    // printer prints (`src`). (A comment's spelling may lose its trailing
    // spaces: `trim_end`.)
    // Compiled once: this runs on every line of src/format/.
    static SEARCHED: LazyLock<fancy_regex::Regex> = LazyLock::new(|| {
        fancy_regex::Regex::new(
            r"\bsrc(\[[^\]]*\])?\s*\.\s*(contains|find|rfind|starts_with|ends_with|strip_prefix|strip_suffix|split\w*|lines|chars|matches|match_indices|trim_start\w*|trim_matches|trim)\s*\(",
        )
        .expect("regex")
    });
    static SCANNER_CALL: LazyLock<fancy_regex::Regex> =
        LazyLock::new(|| fancy_regex::Regex::new(r"\bscan::(\w+)").expect("regex"));
    if let Ok(Some(m)) = SEARCHED.find(code) {
        found.push(format!("`{}`", m.as_str()));
    }
    // Only whole-text passes of the scanner: `scan_tokens`, `comments`.
    for caps in SCANNER_CALL.captures_iter(code) {
        let name = caps.expect("regex match").get(1).expect("group").as_str();
        if !matches!(name, "scan_tokens" | "comments" | "Tokens" | "Scan") {
            found.push(format!("`scan::{name}`"));
        }
    }
    found
}

#[test]
fn the_formatter_asks_the_token_table_and_never_scans() {
    // The rule catches what the formatter once did.
    for old in [
        "let start = skip_trivia(self.bytes(), pos);",
        "while i > 0 && matches!(b[i - 1], b' ' | b'\\t') {",
        "let triple = self.src[s..].starts_with(\"\\\"\\\"\\\"\");",
        "let block = self.src[s..e].contains('\\n')",
        "b.get(i) == Some(&b'\"') && scan::string_interpolates(b, i)",
    ] {
        assert!(!byte_scanning(old).is_empty(), "not caught: {old}");
    }
    for fine in [
        "let token = &self.src[s..e];",
        "text: src[start..end].trim_end().to_string(),",
        "let (scan, tokens) = scan::scan_tokens(text, MAX_DEPTH);",
        "if flat.ends_with(\"..\") {",
    ] {
        assert_eq!(byte_scanning(fine), Vec::<String>::new(), "{fine}");
    }
    let mut found = Vec::new();
    let files = rust_files(&root().join("src/format"));
    assert!(files.len() >= 8, "{} files in src/format", files.len());
    for (path, text) in files {
        for (line, code) in code_lines(&text) {
            for f in byte_scanning(&code) {
                found.push(format!("{}:{line}: {f} in `{}`", shown(&path), code.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "src/format/ reads the source only through the scanner's token table \
         (src/syntax/tokens.rs); only src/syntax/scan.rs scans text:\n{}",
        found.join("\n")
    );
}

/// A file that recognises `//` comments or `/…/` patterns byte by byte is
/// a second scanner of Flow text: it will disagree with the first about a
/// string, an interpolation or a pattern one day (the language server's
/// did: it read identifiers inside patterns).
fn scans_flow_text(code: &str) -> bool {
    code.contains("b'/'") || code.contains("b\"//\"")
}

#[test]
fn the_crate_has_one_scanner() {
    for old in [
        "b'/' if b.get(i + 1) == Some(&b'/') => {",
        "if b[i..].starts_with(b\"//\") {",
    ] {
        assert!(scans_flow_text(old), "not caught: {old}");
    }
    assert!(!scans_flow_text("let path = format!(\"{dir}/{name}\");"));
    let scanner = root().join("src/syntax/scan.rs");
    let mut found = Vec::new();
    for (path, text) in rust_files(&root().join("src")) {
        if path == scanner {
            continue;
        }
        for (line, code) in code_lines(&text) {
            if scans_flow_text(&code) {
                found.push(format!("{}:{line}: `{}`", shown(&path), code.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "only src/syntax/scan.rs scans Flow text (others ask its token table, \
         src/syntax/tokens.rs):\n{}",
        found.join("\n")
    );
}

/// The commands `main` lists before `ALLOCATOR.enable()`.
fn region_commands(main: &str) -> Vec<String> {
    let at = main
        .find("ALLOCATOR.enable()")
        .expect("main.rs enables the region allocator");
    let start = main[..at]
        .rfind("matches!(")
        .expect("the commands that enable it are listed with matches!");
    main[start..at]
        .split("Command::")
        .skip(1)
        .map(|c| {
            c.split(|ch: char| !ch.is_alphanumeric())
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[test]
fn only_batch_commands_allocate_from_the_region() {
    assert_eq!(
        region_commands("if matches!(cli.command, Command::Run { .. }) {\n ALLOCATOR.enable();"),
        ["Run"]
    );
    // A region is never given back: a command that runs flows, serves or
    // waits would grow without bound. These end when their input is done.
    let batch = ["Check", "Fmt", "Graph"];
    let main = read("src/main.rs");
    let listed = region_commands(&main);
    assert!(
        !listed.is_empty(),
        "no command listed before ALLOCATOR.enable()"
    );
    for command in &listed {
        assert!(
            batch.contains(&command.as_str()),
            "`{command}` enables the region allocator, which never frees; only {batch:?} may"
        );
    }
    let mut callers = Vec::new();
    for (path, text) in rust_files(&root().join("src")) {
        for (line, code) in code_lines(&text) {
            if code.contains(".enable()") && code.contains("ALLOCATOR") {
                callers.push(format!("{}:{line}", shown(&path)));
            }
        }
    }
    assert_eq!(
        callers.len(),
        1,
        "the region is enabled in one place: {callers:?}"
    );
}
