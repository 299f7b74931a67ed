//! Every code's explanation (`docs/codes/CODE.md`, printed by `flowc
//! explain`) carries a wrong and a right example. Both are compiled here, so
//! the documentation cannot drift from the checker: the wrong example must
//! report the code, the right one must check clean.

use flowc::code::Code;
use flowc::{compile, Input};

/// The ```flow block under the heading `## {heading}`.
fn example(text: &str, heading: &str) -> Option<String> {
    let section = text.split(&format!("## {heading}")).nth(1)?;
    let block = section.split("```flow").nth(1)?;
    Some(block.split("```").next()?.to_string())
}

fn codes_in(source: &str) -> (Vec<Code>, bool) {
    let input = Input::Text {
        name: "example.flow".into(),
        bytes: source.as_bytes().to_vec(),
    };
    let compilation = compile(&[input]).expect("text input never fails to load");
    let problems = compilation.problems.sorted();
    let codes = problems.iter().map(|d| d.code).collect();
    (codes, problems.is_empty())
}

#[test]
fn explanations_have_working_examples() {
    let mut failures = Vec::new();
    for code in Code::ALL {
        let text = code.explanation();
        if !text.starts_with(&format!("# {} {}", code.as_str(), code.slug())) {
            failures.push(format!(
                "{code}: explanation must start with `# {code} {}`",
                code.slug()
            ));
        }
        match example(text, "Wrong") {
            Some(src) => {
                let (codes, _) = codes_in(&src);
                if !codes.contains(code) {
                    failures.push(format!(
                        "{code}: the wrong example reports {codes:?}, not {code}"
                    ));
                }
            }
            None => failures.push(format!("{code}: no `## Wrong` example")),
        }
        match example(text, "Right") {
            Some(src) => {
                let (codes, clean) = codes_in(&src);
                if !clean {
                    failures.push(format!("{code}: the right example is not clean: {codes:?}"));
                }
            }
            None => failures.push(format!("{code}: no `## Right` example")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
