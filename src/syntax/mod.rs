//! Flow text before it is a tree: the one hand-written scanner. (The
//! parser, `src/parser.rs`, and the tree, `src/ast.rs`, move here next.)

pub mod scan;
