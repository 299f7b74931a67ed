//! A test's program, compiled and checked. A fixture that does not check
//! panics with its diagnostics rendered as `flowc check` prints them, so a
//! broken fixture says why at once.

use flowc::{compile, render, CheckedProgram, Compilation, Input};

/// Compiles `inputs` and insists that the program checks.
pub fn compiled(inputs: &[Input]) -> Compilation {
    let c = compile(inputs).expect("the test program loads");
    if c.program.is_none() {
        let problems: Vec<String> = c
            .problems
            .sorted()
            .into_iter()
            .map(|d| render::human(&c.sources, d, false))
            .collect();
        panic!("the test program does not check:\n{}", problems.join("\n"));
    }
    c
}

/// One source text, named `name` in diagnostics, compiled and checked.
pub fn checked(name: &str, source: &str) -> CheckedProgram {
    compiled(&[text(name, source)])
        .program
        .expect("checked above")
}

/// One source text as a compiler input.
pub fn text(name: &str, source: &str) -> Input {
    Input::Text {
        name: name.into(),
        bytes: source.as_bytes().to_vec(),
    }
}
