//! Pieces of the `flowc` command line that are not commands of their own:
//! output style (colour, verbosity) and `flowc init`.

pub mod eval;
pub mod expectation;
pub mod init;
pub mod style;
