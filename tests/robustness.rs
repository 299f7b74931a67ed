//! The parser and checker survive arbitrary input: every byte string ends in
//! diagnostics, never a panic. Run briefly in the suite; `PROPTEST_CASES`
//! raises the count for a longer hunt.

use flowc::{compile, Input};
use proptest::prelude::*;

fn compile_bytes(bytes: &[u8]) -> flowc::Compilation {
    compile(&[Input::Text {
        name: "fuzz.flow".into(),
        bytes: bytes.to_vec(),
    }])
    .expect("text input always loads")
}

/// Fragments of real syntax, so generated inputs get deep into the grammar
/// and the checker instead of failing on the first byte.
const TOKENS: &[&str] = &[
    "use std.models.{openai}\n", "use \"./nope.flow\".{X}\n", "type T { a: string, b?: [int] len ..3 }\n",
    "type U = \"a\" | \"b\"\n", "model m = openai(\"gpt-4o-mini\") { max_tokens: 10 }\n", "resource r\n",
    "tool t(x: string) -> string { http GET \"{env.A}/{x}\" effect write writes r timeout 1s }\n",
    "agent a(q: string) -> string { model m tools [t] may write max_steps 2 instructions \"{q}\" }\n",
    "flow f(q: string) -> string {", "}", "{", "budget { tokens 1k, cost $1, steps 5 }", "let x = ", "let y = ",
    "t(x: q)", "a(q: x)", "f(q: y)", "llm m -> string { prompt \"{x} {y}\" retry 1 on invalid }",
    "approve g { show x, timeout 1h }", "for i in [1, 2] parallel 2 { t(x: \"{i}\") }", "if x == \"a\" { 1 } else { 2 }",
    "match x { \"a\" => 1, _ => 2 }", "check c { require x.len > 0, \"empty\" }", "return x", "return y", " after x",
    " fallback \"z\"", "x.len", "x[0]", "not true and false", "test \"t\" { run f(q: \"a\") expect output == \"a\" }",
    "\"\"\"\n  multi {x}\n  \"\"\"", "/", "\"", "\\", "\u{0}", "é", "\n", " ", ",", ":", "->", "=>", "..", "$", "1e99",
    "99999999999999999999999", "// comment\n",
];

fn token_soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..40).prop_map(|ts| ts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let c = compile_bytes(&bytes);
        // Whatever came in, a non-empty broken input is reported.
        if c.program.is_none() {
            prop_assert!(c.problems.has_errors());
        }
    }

    #[test]
    fn token_soup_never_panics(source in token_soup()) {
        let c = compile_bytes(source.as_bytes());
        for d in c.problems.sorted() {
            // Every span points inside its file.
            let file = c.sources.get(d.span.file);
            prop_assert!(d.span.end as usize <= file.text.len(), "span past the end: {d:?}");
            prop_assert!(file.text.is_char_boundary(d.span.start as usize));
            let _ = flowc::render::human(&c.sources, d, false);
        }
    }
}

#[test]
fn every_prefix_of_an_example_is_handled() {
    let text = std::fs::read_to_string("examples/invoice_reconciliation.flow").expect("example");
    let step = (text.len() / 200).max(1);
    let mut cut = 0;
    while cut <= text.len() {
        if text.is_char_boundary(cut) {
            let c = compile_bytes(&text.as_bytes()[..cut]);
            for d in c.problems.sorted() {
                let _ = flowc::render::human(&c.sources, d, false);
            }
        }
        cut += step;
    }
}

// ---------------------------------------------------------------- long chains

/// The five ways to build a long expression without brackets, `links`
/// operators long: `x.n.n…`, `x[0][0]…`, `b or b…`, `b == b…`, `not b and …`.
fn chain(kind: usize, links: usize) -> String {
    let mut out = String::with_capacity(links * 8);
    match kind {
        0 => {
            out.push('x');
            out.push_str(&".n".repeat(links));
        }
        1 => {
            out.push('l');
            out.push_str(&"[0]".repeat(links));
        }
        2 => {
            out.push('b');
            out.push_str(&" or b".repeat(links));
        }
        3 => {
            out.push('b');
            out.push_str(&" == b".repeat(links));
        }
        _ => {
            // `not b and not b …`: the first `not` is one level, each
            // `and not b` one more.
            out.push_str("not b");
            out.push_str(&" and not b".repeat(links.saturating_sub(1)));
        }
    }
    out
}

const CHAIN_NAMES: [&str; 5] = ["members", "indexes", "ors", "comparisons", "not_ands"];

/// A file with one flow per chain kind. Each flow's return type fits the
/// chain, so a chain inside the depth limit checks clean.
fn chains_file(links: usize) -> String {
    let mut out = String::from("type N { n: N }\ntype L = [L]\n\n");
    for (kind, name) in CHAIN_NAMES.iter().enumerate() {
        let ty = match kind {
            0 => "N",
            1 => "L",
            _ => "bool",
        };
        out.push_str(&format!(
            "flow {name}(x: N, l: L, b: bool) -> {ty} {{\n  budget {{ steps 1 }}\n  return {}\n}}\n\n",
            chain(kind, links)
        ));
    }
    out
}

/// Runs the real binary on `file` with `args`; the process must exit with a
/// status (0 or 1), never be killed by a signal (a stack overflow aborts).
fn run_flowc(args: &[&str], file: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(args)
        .arg(file)
        .output()
        .expect("flowc runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(code @ (0 | 1)) => (code, stderr),
        other => panic!(
            "flowc {args:?} {} ended with {other:?} (a signal?): {}",
            file.display(),
            stderr.chars().take(2000).collect::<String>()
        ),
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flowc-robust-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Every command that reads a file, on a file, through the real binary
/// (`graph` draws one flow of several).
const COMMANDS: [&[&str]; 4] = [
    &["check"],
    &["fmt"],
    &["graph", "--flow", "ors"],
    &["schema"],
];

#[test]
fn hundred_thousand_link_chains_are_diagnostics_not_crashes() {
    let dir = scratch("chains");
    let file = dir.join("chains.flow");
    let text = chains_file(100_000);
    for args in COMMANDS {
        std::fs::write(&file, &text).expect("write");
        let (code, stderr) = run_flowc(args, &file);
        assert_eq!(code, 1, "flowc {args:?}: {stderr}");
        // One diagnostic per chain, each at its own flow.
        let deep = stderr
            .matches("this expression nests deeper than 256 levels")
            .count();
        assert_eq!(deep, CHAIN_NAMES.len(), "flowc {args:?}: {stderr}");
        // `fmt` refuses to write a file it cannot parse.
        assert_eq!(std::fs::read_to_string(&file).expect("read"), text);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ten_thousand_nested_brackets_are_a_diagnostic_not_a_crash() {
    let dir = scratch("brackets");
    let file = dir.join("brackets.flow");
    for (open, close) in [("(", ")"), ("[", "]"), ("{a: ", "}"), ("\"{", "}\"")] {
        let text = format!(
            "flow ors(b: bool) -> bool {{\n  return {}b{}\n}}\n",
            open.repeat(10_000),
            close.repeat(10_000)
        );
        for args in COMMANDS {
            std::fs::write(&file, &text).expect("write");
            let (code, stderr) = run_flowc(args, &file);
            assert_eq!(code, 1, "flowc {args:?} {open}: {stderr}");
            assert!(stderr.contains("nests deeper than 64 levels"), "{stderr}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The deepest expression the parser accepts goes through every stage:
/// lowering, every check, the graph, the schema and the formatter.
#[test]
fn chains_at_the_depth_limit_check_clean_in_every_command() {
    let dir = scratch("limit");
    let file = dir.join("limit.flow");
    // 255 links around a name: 256 levels, the limit.
    let at_limit = chains_file(255);
    for args in COMMANDS {
        std::fs::write(&file, &at_limit).expect("write");
        let (code, stderr) = run_flowc(args, &file);
        assert_eq!(code, 0, "flowc {args:?}: {stderr}");
    }
    for name in CHAIN_NAMES {
        let (code, stderr) = run_flowc(&["graph", "--flow", name], &file);
        assert_eq!(code, 0, "flowc graph --flow {name}: {stderr}");
    }
    // One more link is one level too many, in each kind.
    let over = chains_file(256);
    std::fs::write(&file, &over).expect("write");
    let (code, stderr) = run_flowc(&["check"], &file);
    assert_eq!(code, 1);
    assert_eq!(
        stderr.matches("nests deeper than 256 levels").count(),
        CHAIN_NAMES.len(),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A flow of `steps` steps, each a call that reads or waits for its
/// neighbour: written in order (each reads the step before it), in reverse
/// (each reads the step after it, so lowering meets every read before the
/// step it names), in reverse by `after`, or closed into one circle.
fn step_chain(order: &str, steps: usize) -> String {
    let mut out = String::from(
        "tool t(x: string) -> string { http GET \"http://127.0.0.1:1/{x}\" effect read timeout 5s }\n\
         flow f(a: string) -> string {\n  budget { steps 100000, tool_calls 100000, wall 1h }\n",
    );
    let last = steps - 1;
    for i in 0..steps {
        let line = match order {
            "forward" if i == 0 => "  let s0 = t(x: a)\n".to_string(),
            "forward" => format!("  let s{i} = t(x: s{})\n", i - 1),
            "reverse" | "after" | "circle" if i < last => match order {
                "after" => format!("  let s{i} = t(x: a) after s{}\n", i + 1),
                _ => format!("  let s{i} = t(x: s{})\n", i + 1),
            },
            "circle" => format!("  let s{i} = t(x: s0)\n"),
            _ => format!("  let s{i} = t(x: a)\n"),
        };
        out.push_str(&line);
    }
    let result = if order == "forward" { last } else { 0 };
    out.push_str(&format!("  return s{result}\n}}\n"));
    out
}

/// Long flows go through every command without exhausting the stack:
/// ordering the steps, lowering a step that reads a later one, and a circle
/// as long as the flow, whose one G001 names a few of its steps and counts
/// the rest.
#[test]
fn twenty_thousand_step_chains_in_any_order_check_in_every_command() {
    let dir = scratch("steps");
    let file = dir.join("steps.flow");
    for order in ["forward", "reverse", "after", "circle"] {
        std::fs::write(&file, step_chain(order, 20_000)).expect("write");
        for args in [&["check"][..], &["graph"], &["schema"]] {
            let (code, stderr) = run_flowc(args, &file);
            if order == "circle" {
                assert_eq!(code, 1, "flowc {args:?} {order}: {stderr}");
                assert_eq!(stderr.matches("error[G001]").count(), 1, "{stderr}");
                // miette wraps the message; its start stays on one line.
                assert!(
                    stderr.contains("`s9`, … and 19990 more steps depend on"),
                    "{stderr}"
                );
                // 16 of the 19,999 "also in the cycle" labels are drawn.
                if args == ["check"] {
                    assert!(
                        stderr.contains(
                            "= 19983 more places not shown (`--format json` lists them all)"
                        ),
                        "{stderr}"
                    );
                    assert_eq!(stderr.matches("also in the cycle").count(), 16, "{stderr}");
                }
            } else {
                assert_eq!(code, 0, "flowc {args:?} {order}: {stderr}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `flows` flows that pass a value along a chain of calls, with the
/// declarations of `fetch` (read: its result is untrusted) and `send`
/// (irreversible). `inward`: a fetched page goes into `f0`, which passes it
/// down to the last flow, which sends it. Otherwise each flow returns what
/// the one before it returned, the first one a fetched page, and `main`
/// sends what the last one returns.
fn flow_chain(flows: usize, inward: bool) -> String {
    let mut out = String::from(
        "tool fetch(x: string) -> string { http GET \"http://127.0.0.1:1/{x}\" effect read timeout 5s }\n\
         tool send(x: string) -> string { http POST \"http://127.0.0.1:1/{x}\" effect irreversible timeout 5s }\n",
    );
    let flow = |name: String, body: String| {
        format!("flow {name}(a: string) -> string {{\n  budget {{ steps 100000, tool_calls 100000, wall 1h }}\n{body}  return s\n}}\n")
    };
    let last = flows - 1;
    for i in 0..flows {
        let body = match (inward, i) {
            (true, 0) => "  let page = fetch(x: a)\n  let s = f1(a: page)\n".to_string(),
            (true, i) if i == last => "  let s = send(x: a)\n".to_string(),
            (true, i) => format!("  let s = f{}(a: a)\n", i + 1),
            (false, 0) => "  let s = fetch(x: a)\n".to_string(),
            (false, i) => format!("  let s = f{}(a: a)\n", i - 1),
        };
        out.push_str(&flow(format!("f{i}"), body));
    }
    if !inward {
        let body = format!("  let v = f{last}(a: a)\n  let s = send(x: v)\n");
        out.push_str(&flow("main".into(), body));
    }
    out
}

/// The passes that follow values and effects through sub-flows reach the
/// end of a chain of 20,000 flows, in either direction, and report there
/// what they report at the end of a short one (and G003: the chain is too
/// deep to run). They used to stop at 32
/// calls deep (past which a fetched page passed down reached `send`
/// unreported), recurse once per call (the cost pass overflowed the
/// stack), and lengthen the path they carried at every call (20,000 flows
/// took 24 GB before the kernel killed the check).
#[test]
fn a_chain_of_twenty_thousand_flows_is_followed_to_its_end() {
    let dir = scratch("flows");
    let file = dir.join("flows.flow");
    for inward in [true, false] {
        std::fs::write(&file, flow_chain(20_000, inward)).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowc"))
            .args(["check", "--format", "short"])
            .arg(&file)
            .output()
            .expect("flowc runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        let reported: Vec<&str> = stdout.lines().filter(|l| l.contains("error[")).collect();
        let untrusted = if inward {
            "error[A002]: untrusted content reaches argument `a` of flow `f1`, and no gate before it shows that content"
        } else {
            "error[A002]: untrusted content reaches argument `x` of `send`, which is irreversible, and no gate before it shows that content"
        };
        let ungated =
            "error[A001]: `s` calls `send`, which is irreversible, and can run without an approval";
        // Too deep to run, reported once, where the chain starts.
        let (top, flows) = if inward {
            ("f0", 20_000)
        } else {
            ("main", 20_001)
        };
        let deep = format!("error[G003]: flow `{top}` starts a chain of flow calls {flows} flows deep; flowc runs at most 32");
        assert!(reported.iter().any(|l| l.ends_with(&deep)), "{stdout}");
        assert_eq!(reported.len(), 3, "{stdout}");
        assert!(reported.iter().any(|l| l.ends_with(untrusted)), "{stdout}");
        assert!(reported.iter().any(|l| l.ends_with(ungated)), "{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each flow calls the next one twice, 31 flows deep (as deep as G003
/// allows): 2^30 paths of calls from the top. A check that followed each
/// path to find the resources a call touches took minutes at 30 deep; each
/// flow's are found once.
#[test]
fn a_flow_that_calls_the_next_twice_thirty_one_deep_checks_at_once() {
    let dir = scratch("diamond");
    let file = dir.join("diamond.flow");
    let mut text = String::from(
        "resource r\n\
         tool t(x: string) -> string { http POST \"http://127.0.0.1:1/{x}\" effect write writes r timeout 5s }\n",
    );
    let budget = "budget { steps 100000000000, tool_calls 100000000000, wall 1h }";
    for i in 0..30 {
        let next = i + 1;
        text.push_str(&format!(
            "flow f{i}(a: string) -> string {{ {budget} let s = f{next}(a: a) let u = f{next}(a: s) return u }}\n"
        ));
    }
    text.push_str(&format!(
        "flow f30(a: string) -> string {{ {budget} let s = t(x: a) return s }}\n"
    ));
    std::fs::write(&file, text).expect("write");
    let started = std::time::Instant::now();
    let (code, stderr) = run_flowc(&["check"], &file);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The compiler in this process, on a thread with the main thread's stack
/// (test threads get 2 MiB; the deepest expression allowed needs more in a
/// debug build).
fn on_main_sized_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(f)
        .expect("thread")
        .join()
        .expect("no panic")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12),
        ..ProptestConfig::default()
    })]

    #[test]
    fn long_chains_check_and_format_without_crashing(
        kind in 0usize..5,
        links in prop_oneof![1usize..300, 300usize..60_000],
        nested in 0usize..4,
    ) {
        // The chain inside a few brackets, so their levels add up.
        let body = format!("{}{}{}", "[".repeat(nested), chain(kind, links), "]".repeat(nested));
        let text = format!("flow f(x: N, l: L, b: bool) -> bool {{\n  return {body}\n}}\ntype N {{ n: N }}\ntype L = [L]\n");
        let (deep, formatted) = on_main_sized_stack(move || {
            let c = compile_bytes(text.as_bytes());
            let deep = c
                .problems
                .sorted()
                .iter()
                .any(|d| d.message.contains("nests deeper"));
            (deep, flowc::format::format_source(&text).is_ok())
        });
        // Depth: the name, one level per link, one per list around it.
        let depth = 1 + links + nested;
        prop_assert_eq!(deep, depth > 256, "depth {}", depth);
        prop_assert_eq!(formatted, depth <= 256);
    }
}

#[test]
fn every_line_ending_reads_the_same() {
    let lf = "// a comment\nflow f(b: bool) -> bool {\n  // another\n  return b or nope\n}\n";
    let reports = |text: &str| -> Vec<(String, usize, usize)> {
        let c = compile_bytes(text.as_bytes());
        c.problems
            .sorted()
            .iter()
            .map(|d| {
                let (line, col) = c.sources.get(d.span.file).line_col(d.span.start);
                (d.code.as_str().to_string(), line, col)
            })
            .collect()
    };
    let expected = reports(lf);
    assert!(
        expected
            .iter()
            .any(|(code, line, _)| code == "N001" && *line == 4),
        "{expected:?}"
    );
    for ending in ["\r\n", "\r"] {
        let text = lf.replace('\n', ending);
        assert_eq!(reports(&text), expected, "line ending {ending:?}");
        // The formatter keeps the file's line ending.
        let formatted = flowc::format::format_source(&text).expect("formats");
        assert_eq!(
            formatted,
            flowc::format::format_source(lf)
                .expect("formats")
                .replace('\n', ending)
        );
    }
}
