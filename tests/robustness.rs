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
