//! Flow text before it is a tree: the one hand-written scanner and the
//! token table it keeps for the formatter. (The parser, `src/parser.rs`,
//! and the tree, `src/ast.rs`, move here next.)

pub mod scan;
pub mod tokens;
