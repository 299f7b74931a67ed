//! The benchmark's generated flows must check clean, so the benchmark times
//! the path real programs take.

use crate::generated;

#[test]
fn generated_flows_check_clean() {
    for steps in [10, 100, 1000] {
        let source = generated::flow_source(steps);
        let c = flowc::compile(&[flowc::Input::Text {
            name: format!("gen{steps}.flow"),
            bytes: source.into_bytes(),
        }])
        .expect("loads");
        let problems: Vec<String> = c
            .problems
            .sorted()
            .iter()
            .map(|d| flowc::render::plain(&c.sources, d))
            .collect();
        assert!(problems.is_empty(), "{steps} steps: {problems:#?}");
    }
}

#[test]
fn generated_chains_check_clean() {
    for steps in [10, 1000] {
        for shared in [false, true] {
            let source = generated::chain_source(steps, shared);
            let c = flowc::compile(&[flowc::Input::Text {
                name: format!("chain{steps}.flow"),
                bytes: source.into_bytes(),
            }])
            .expect("loads");
            let problems: Vec<String> = c
                .problems
                .sorted()
                .iter()
                .map(|d| flowc::render::plain(&c.sources, d))
                .collect();
            assert!(
                problems.is_empty(),
                "{steps} steps, shared {shared}: {problems:#?}"
            );
        }
    }
}
