//! `flowc run`: executes a checked program. Only a [`CheckedProgram`] can be
//! run: the scheduler relies on what the checker proved (acyclic graphs,
//! resolved names, bounded loops).
//!
//! - `eval`: expressions and templates over JSON values.
//! - `model`: model providers over HTTP (one attempt per call).
//! - `tool`: http, exec and builtin tools (one attempt per call).
//! - `validate`: JSON Schema validation of arguments, results and outputs.
//! - `error`: failure classes that retry policies name.
//!
//! [`CheckedProgram`]: crate::CheckedProgram

pub mod error;
pub mod eval;
pub mod model;
pub mod tool;
pub mod validate;
