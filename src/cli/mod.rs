//! Pieces of the `flowc` command line that are not commands of their own:
//! output style (colour, verbosity), `flowc init`, `flowc eval`, `flowc
//! worker`, and `flowc reviews`/`flowc review`.

pub mod eval;
pub mod expectation;
pub mod init;
pub mod review;
pub mod style;
pub mod worker;
