//! flowc: the compiler and checker for Flow, a typed workflow language for
//! reliable multi-step AI agent workflows.
//!
//! The pipeline, one module per stage (see ARCHITECTURE.md):
//! `loader` (reads files, resolves `use`) → `parser` (text → `ast`) →
//! `lower` (names and types → `ir::Program`, a typed graph per flow) →
//! `check` (graph passes → `CheckedProgram`, sealed into an `exec::Program`
//! the runtime runs). [`compile`] chains them.

pub mod ast;
pub mod canonical;
pub mod check;
pub mod code;
mod compile;
pub mod cores;
pub mod decision;
pub mod deferred;
pub mod diagnostic;
pub mod diagram;
pub mod evals;
pub mod exec;
pub mod format;
pub mod ir;
mod json_text;
pub mod loader;
pub mod lower;
pub mod lsp;
pub mod mcp;
pub mod parser;
pub mod program_cache;
pub mod render;
pub mod run;
pub mod schema;
pub mod serve;
pub mod snapshot;
pub mod source;
pub mod stats;
pub mod stdlib;
pub mod step_name;
pub mod store;
pub mod submit;
mod suggest;
pub mod syntax;
pub mod types;

// pest's derive without its `std` feature (see Cargo.toml) names
// `crate::alloc`.
extern crate alloc;

pub mod grammar {
    //! The pest grammar, `grammar/flow.pest`.
    #[derive(pest_derive::Parser)]
    #[grammar = "../grammar/flow.pest"]
    pub struct FlowGrammar;
}

pub use check::CheckedProgram;
pub use compile::{
    compile, compile_snapshot, compile_workspace, diagnose, diagnose_workspace, flow_files,
    snapshot_and_compile, Compilation, Input, InputError,
};
