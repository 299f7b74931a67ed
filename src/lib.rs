pub mod grammar {
    #[derive(pest_derive::Parser)]
    #[grammar = "../grammar/flow.pest"]
    pub struct FlowGrammar;
}
