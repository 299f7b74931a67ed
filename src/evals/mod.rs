//! `flowc eval`: runs an `eval` block's rows through the real flow (each a
//! normal run with its own trace, durable when a run store is given),
//! scores them and summarises.
//!
//! - `trajectory`: what a row's run did, from its trace (the `trace` value
//!   trajectory scorers read) and the answers a recording keeps.
//! - `report`: the summary as text, JSON and JUnit XML.
//! - `baseline`: an eval against an earlier one, regressions per row and
//!   scorer.
//!
//! Scorers are typed by the checker (`lower::eval`): an expression is
//! evaluated by the runtime's evaluator over `input`, `output`, `expected`
//! and `trace`; a judge is a flow of its own, run like any flow.

pub mod baseline;
pub mod report;
mod runner;
pub mod stored;
pub mod trajectory;

pub use runner::*;
