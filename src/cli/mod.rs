//! Pieces of the `flowc` command line that are not commands of their own:
//! output style (colour, verbosity), `flowc init`, `flowc eval` and
//! `flowc worker`.

pub mod eval;
pub mod expectation;
pub mod init;
pub mod style;
pub mod worker;
