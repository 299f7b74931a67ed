//! A big flow parsed in two parts at once, on two threads.
//!
//! pest parses one item from its start to its end, and for a flow of
//! thousands of statements that is most of `flowc check`'s time. Where the
//! machine has a second core, [`parse_flow_in_two`] cuts the flow before a
//! statement near its middle and parses both parts at once: this thread the
//! head with the statements before the cut, another thread the statements
//! after it with the closing brace. The result is the flow the whole parse
//! builds, or nothing, and the caller parses the item whole as before; so
//! every diagnostic, and every tree, is the whole parse's.
//!
//! Why the parts are the whole parse's: the tail part is parsed in the rest
//! of the file, exactly the text the whole parse sees at the cut. The head
//! part is parsed in the text up to the cut; a parse that never looks past
//! the cut finds the same statements in the whole text. The cut is a line
//! that begins with `let` inside the flow's braces, outside strings and
//! comments (the scanner's `let_lines`), so every bracket, string and
//! comment of the head closes before it. What could still look past the
//! cut is the end of the head's last statement, where the grammar tries the
//! clauses that may follow (`after`, `fallback`, an operator, a `.field`);
//! so that statement is parsed again in the whole text and must end where
//! it ended in the part.
//!
//! Anything else (a part that does not parse, a diagnostic from either
//! part's tree, a `budget` after the cut, whose "given twice" check needs
//! the whole list) gives up on the split.

use pest::Parser as _;

use super::Parser;
use crate::ast::{FlowDecl, Item, Stmt};
use crate::grammar::{FlowGrammar, Rule};
use crate::source::Span;
use crate::syntax::scan::Scan;

/// A flow whose text is shorter than this is parsed whole: below it the
/// second thread costs more than it saves.
const SPLIT_BYTES: usize = 16 << 10;

/// The tail thread's stack: what Linux gives a main thread.
const TAIL_STACK_BYTES: usize = 8 << 20;

/// Where to cut the item that starts at `pos`, if it is big enough: the
/// first `let` line at or after the middle of its braces.
pub(super) fn cut(scan: &Scan, text: &str, pos: usize) -> Option<usize> {
    let end = scan.item_ends[scan.item_ends.partition_point(|&e| e <= pos)..]
        .first()
        .copied()?;
    if end - pos < SPLIT_BYTES || !text[pos..].trim_start().starts_with("flow") {
        return None;
    }
    let middle = pos + (end - pos) / 2;
    let at = scan.let_lines.partition_point(|&l| l < middle);
    scan.let_lines.get(at).copied().filter(|&l| l < end)
}

/// The flow that starts at `pos` (after trivia), parsed in two parts cut at
/// `cut`, with the offset where it ends; `None` when the split does not
/// hold (see the module's comment) and the caller must parse it whole.
pub(super) fn parse_flow_in_two(
    parser: &mut Parser,
    text: &str,
    pos: usize,
    cut: usize,
) -> Option<(Item, usize)> {
    let mut tail_parser = Parser {
        file: parser.file,
        base: cut,
        diagnostics: Vec::new(),
        climbing: 0,
        comments: parser.comments.clone(),
    };
    let (head, tail) = std::thread::scope(|scope| {
        // The main thread's stack, not a spawned thread's default 2 MiB:
        // the parser recurses once per nesting level, up to its limits.
        let tail = std::thread::Builder::new()
            .stack_size(TAIL_STACK_BYTES)
            .spawn_scoped(scope, || tail_statements(&mut tail_parser, &text[cut..]))
            .ok()?;
        let head = head_flow(parser, text, pos, cut);
        Some((head, tail.join().ok().flatten()))
    })?;
    let (mut flow, last_start, last_end) = head?;
    let (statements, end) = tail?;
    if !tail_parser.diagnostics.is_empty() {
        return None;
    }
    // The head's last statement, parsed again in the whole text.
    let again = FlowGrammar::parse(Rule::flow_stmt_only, &text[last_start..]).ok()?;
    let again_end = last_start + again.into_iter().next()?.as_span().end();
    if again_end != last_end {
        return None;
    }
    flow.body.extend(statements);
    flow.span = Span::new(parser.file, flow.span.start as usize, end);
    Some((Item::Flow(flow), end))
}

/// The head part: the flow with the statements before the cut, and where
/// its last statement starts and ends. Leaves no diagnostic in `parser`
/// when it fails.
fn head_flow(
    parser: &mut Parser,
    text: &str,
    pos: usize,
    cut: usize,
) -> Option<(FlowDecl, usize, usize)> {
    let pair = FlowGrammar::parse(Rule::flow_head_only, &text[pos..cut])
        .ok()?
        .next()?;
    let last = pair.clone().into_inner().last()?;
    let span = last.as_span();
    let (last_start, last_end) = (pos + span.start(), pos + span.end());
    if !matches!(
        last.as_rule(),
        Rule::let_stmt | Rule::check_stmt | Rule::return_stmt | Rule::budget
    ) {
        return None;
    }
    let base = parser.base;
    let errors = parser.diagnostics.len();
    parser.base = pos;
    let flow = parser.flow_decl(pair);
    parser.base = base;
    if parser.diagnostics.len() != errors {
        parser.diagnostics.truncate(errors);
        return None;
    }
    Some((flow?, last_start, last_end))
}

/// The tail part: the statements after the cut and the offset just past
/// the flow's closing brace.
fn tail_statements(parser: &mut Parser, rest: &str) -> Option<(Vec<Stmt>, usize)> {
    let pair = FlowGrammar::parse(Rule::flow_tail_only, rest)
        .ok()?
        .next()?;
    let end = parser.base + pair.as_span().end();
    let mut statements = Vec::new();
    for statement in pair.into_inner() {
        if statement.as_rule() == Rule::budget {
            return None;
        }
        statements.push(parser.stmt(statement)?);
    }
    Some((statements, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileId;
    use crate::syntax::scan;

    /// Every `.flow` file under the crate's examples, golden tests,
    /// standard library and test fixtures.
    fn corpus() -> Vec<(std::path::PathBuf, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        let mut stack: Vec<_> = ["examples", "tests", "stdlib"]
            .iter()
            .map(|d| root.join(d))
            .collect();
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "flow") {
                    if let Ok(text) = std::fs::read_to_string(&path) {
                        out.push((path, text));
                    }
                }
            }
        }
        out
    }

    /// A flow with the statements a cut must not change: clauses that may
    /// follow a statement, strings and comments that hold `let`, nested
    /// blocks with their own `let`s, an expression that goes on over lines.
    fn synthetic() -> String {
        let mut text = String::from(
            "tool fetch(id: string) -> { id: string, score: number } {\n  http GET \"http://127.0.0.1/{id}\"\n  effect read\n  timeout 5s\n}\n\
             model m = provider_model(\"x\")\n\
             flow big(seed: string) -> string {\n  budget { steps 100000, tool_calls 100000, wall 1h }\n",
        );
        for i in 0..36 {
            text.push_str(&format!(
                "  let a{i} = fetch(id: seed)\n  let b{i} = fetch(id: a{i}.id) after a{i}\n    , a{i}\n\
                 \x20 let c{i} = fetch(\n    id: \"let x = {{a{i}.id}}\" // let inside\n  )\n  fallback fetch(id: seed)\n\
                 \x20 // let in a comment\n  let d{i} = a{i}.score > 0\n    or b{i}.score > 0\n\
                 \x20 let e{i} = for r in [a{i}, b{i}] {{\n    let inner = fetch(id: r.id)\n    inner\n  }}\n\
                 \x20 check k{i} {{ require d{i}, \"\"\"\nlet in a triple string\n\"\"\" }}\n"
            ));
        }
        text.push_str("  return seed\n}\n");
        text
    }

    /// Parses each flow of `text` cut at every `let` line of its braces and
    /// compares with the whole parse; how many cuts held.
    fn every_cut_agrees(name: &str, text: &str) -> usize {
        let file = FileId(0);
        let (whole, _) = super::super::parse(file, text);
        let scanned = scan::scan(text, super::super::MAX_DEPTH);
        let mut held = 0;
        for item in &whole.items {
            let Item::Flow(flow) = item else { continue };
            let (start, end) = (flow.span.start as usize, flow.span.end as usize);
            for &cut in scanned.let_lines.iter().filter(|&&l| l > start && l < end) {
                let mut parser = Parser {
                    file,
                    base: 0,
                    diagnostics: Vec::new(),
                    climbing: 0,
                    comments: scanned.comments.clone(),
                };
                if let Some((split, split_end)) = parse_flow_in_two(&mut parser, text, start, cut) {
                    assert_eq!(&split, item, "{name}: cut at {cut} built another flow");
                    assert_eq!(split_end, end, "{name}: cut at {cut} ended elsewhere");
                    held += 1;
                }
                assert!(
                    parser.diagnostics.is_empty(),
                    "{name}: cut at {cut} left diagnostics"
                );
            }
        }
        held
    }

    #[test]
    fn a_flow_cut_at_any_let_line_is_the_flow_parsed_whole() {
        let mut held = 0;
        for (path, text) in corpus() {
            held += every_cut_agrees(&path.display().to_string(), &text);
        }
        assert!(held > 100, "only {held} cuts held across the corpus");
        let text = synthetic();
        let (module, diagnostics) = super::super::parse(FileId(0), &text);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(module.items.len(), 3);
        assert!(every_cut_agrees("synthetic", &text) >= 150);
    }

    #[test]
    fn a_big_flow_is_cut_near_its_middle_and_a_small_one_is_not() {
        let text = synthetic();
        let scanned = scan::scan(&text, super::super::MAX_DEPTH);
        let start = text.find("flow big").unwrap();
        assert_eq!(cut(&scanned, &text, start), None, "{} bytes", text.len());
        let mut big = text.replace("  return seed\n}\n", "");
        while big.len() < 2 * SPLIT_BYTES {
            big.push_str("  let more = fetch(id: seed)\n");
        }
        big.push_str("  return seed\n}\n");
        let scanned = scan::scan(&big, super::super::MAX_DEPTH);
        let at = cut(&scanned, &big, start).expect("a cut");
        assert!(big[at..].starts_with("let "));
        assert!(at > big.len() / 2 - 100 && at < big.len() / 2 + 100);
    }

    /// The tail is parsed on another thread: it must take what the whole
    /// parse takes on the main thread, up to the nesting limits.
    #[test]
    fn the_tail_thread_takes_the_deepest_expressions_the_limits_allow() {
        let mut text =
            String::from("flow big(seed: string) -> string {\n  budget { steps 10, wall 1h }\n");
        while text.len() < 3 * SPLIT_BYTES {
            text.push_str("  let more = seed\n");
        }
        let chain = ["seed"]
            .into_iter()
            .chain(std::iter::repeat_n("f", 250))
            .collect::<Vec<_>>()
            .join(".");
        let nots = format!("{}seed", "not ".repeat(250));
        let brackets = format!("{}seed{}", "[".repeat(60), "]".repeat(60));
        text.push_str(&format!("  let deep1 = {chain}\n  let deep2 = {nots}\n  let deep3 = {brackets}\n  return seed\n}}\n"));
        let (module, diagnostics) = crate::parser::parse(FileId(0), &text);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(module.items.len(), 1);
        // And the split itself held (the deep statements are in the tail).
        let scanned = crate::syntax::scan::scan(&text, crate::parser::MAX_DEPTH);
        let at = cut(&scanned, &text, 0).expect("a cut");
        assert!(at < text.find("deep1").unwrap());
        let mut parser = Parser {
            file: FileId(0),
            base: 0,
            diagnostics: Vec::new(),
            climbing: 0,
            comments: Vec::new(),
        };
        let (flow, _) = parse_flow_in_two(&mut parser, &text, 0, at).expect("the split holds");
        assert_eq!(&flow, &module.items[0]);
    }
}
