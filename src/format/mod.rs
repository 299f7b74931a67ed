//! `flowc fmt`: one canonical layout for Flow source.
//!
//! The text is parsed (a file with syntax errors is never formatted), the
//! syntax tree is turned into a layout document (`doc::Doc`: text, line breaks,
//! nesting and groups that lay out flat when they fit, in the style of
//! Wadler's and Prettier's printers), and the document is laid out at
//! [`WIDTH`] columns.
//!
//! The layout:
//! - two-space indentation; one clause per line in `tool`, `agent`, `llm`,
//!   `provider`, `approve`, `check` and `test` bodies, one statement per line
//!   in flows and blocks;
//! - a blank line between items, except between consecutive one-line items of
//!   one kind (`use`, `resource`, `model`, type aliases) written without one;
//!   blank lines between statements, clauses, fields and arms are kept (at
//!   most one);
//! - parameter, argument, list, import and budget lists on one line when they
//!   fit, otherwise one element per line (with a trailing comma where the
//!   grammar allows one); `exec` argv fills lines instead; a call whose last
//!   argument is a record or list keeps that argument on the call's line and
//!   breaks inside it;
//! - records (type records and object literals) on one line when they fit
//!   and were written on one line; a record written with a line break after
//!   `{` stays one field per line, as in the examples;
//! - `"""` strings re-indented two spaces deeper than the line they start
//!   on, with their content unchanged; plain strings re-escaped (`{{`, `}}`,
//!   `\"`, `\\`, `\n`, …);
//! - literals whose text the tree does not keep (`100k`, `1.50`, `$1.00`,
//!   `30s`, regular expressions) copied from the source;
//! - parentheses only where precedence needs them;
//! - `=>` of consecutive one-line `match` arms and the prices of consecutive
//!   `price` entries aligned, and trailing comments on consecutive lines
//!   aligned.
//!
//! Comments are not in the syntax tree (`//` is silent in the grammar): the
//! parse keeps the scanner's token table beside the tree
//! ([`crate::parser::parse_keeping_tokens`]: the one scan of the text gives
//! the parser its comments and the formatter every token, string literal,
//! comment and line break, as Gleam keeps `ModuleExtra`). The printer
//! prints from the tree, asks the table what the tree does not keep (blank
//! lines, dropped parentheses and keywords, literal spellings), and
//! attaches each comment by byte position:
//! to the next item, statement, clause, field, argument or element it
//! precedes (a leading comment, kept on its own line), to the line it ends (a
//! trailing comment), or to the closing bracket it precedes. A comment
//! inside a construct that has no line of its own (in the middle of an
//! expression, say) moves to its own line before the enclosing statement or
//! clause: comments move, but are never lost.
//!
//! Safety net: the output is parsed again; its canonical form
//! ([`crate::canonical`], what the file means) must equal the input's and
//! its comments must be the input's, or the file is reported instead of
//! formatted.
//!
//! The module tree: `doc` is the layout engine (documents, groups, fill,
//! rendering at a width, trailing-comment alignment); `printer` turns a tree
//! and its token table into a document, one file per part of the language
//! (`items`, `flows`, `strings`), with comment attachment in
//! `printer/comments.rs` and, in `printer/positions.rs` alone, the lookups
//! in the token table for what the tree does not say (parentheses and
//! keywords it drops, blank lines, where a literal's spelling ends);
//! `command` is `flowc fmt` itself. Nothing here reads the text byte by
//! byte: only `src/syntax/scan.rs` scans (`tests/tidy.rs`).

mod command;
mod doc;
mod printer;

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::source::{FileId, Span};
use crate::syntax::scan;
use crate::syntax::tokens::Tokens;

pub use command::run;

/// The column limit layout aims for. Strings, names and other tokens that
/// cannot be broken may go past it.
pub const WIDTH: usize = 100;

/// Formats one file. A file the parser reports problems in is not formatted:
/// its diagnostics (`S001`, or a repeated clause) are returned instead.
pub fn format_source(text: &str) -> Result<String, Vec<Diagnostic>> {
    // A file with lone `\r` line ends is laid out with `\n`; a file that
    // uses only `\r` gets them back.
    if let std::borrow::Cow::Owned(unified) = crate::source::unify_line_endings(text) {
        let out = format_source(&unified)?;
        let cr_only = !text.contains('\n');
        return Ok(if cr_only {
            out.replace('\n', "\r")
        } else {
            out
        });
    }
    let file = FileId(0);
    let (module, diagnostics, tokens) = crate::parser::parse_keeping_tokens(file, text);
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    // A file with Windows line endings keeps them: it is laid out with `\n`
    // and converted back, so `"""` strings keep their `\r` characters.
    let crlf = tokens.crlf();
    let out = if crlf {
        let lf = text.replace("\r\n", "\n");
        let (lf_module, _, lf_tokens) = crate::parser::parse_keeping_tokens(file, &lf);
        layout_module(&lf, &lf_tokens, &lf_module).replace('\n', "\r\n")
    } else {
        layout_module(text, &tokens, &module)
    };
    let (again, problems) = crate::parser::parse(file, &out);
    let mut before = comment_texts(text, tokens.comments());
    let mut after = comments(&out);
    before.sort();
    after.sort();
    let same_meaning = crate::canonical::module(&again) == crate::canonical::module(&module);
    if !problems.is_empty() || !same_meaning || before != after {
        let d = Diagnostic::new(
            Code::Syntax,
            Span::new(file, 0, 0),
            "flowc fmt could not lay out this file without changing it",
        )
        .label("not formatted")
        .help("this is a bug in flowc fmt; please report it with this file (it was left as it is)");
        return Err(vec![d]);
    }
    Ok(out)
}

fn layout_module(text: &str, tokens: &Tokens, module: &crate::ast::Module) -> String {
    doc::render(&printer::print(text, tokens, module), WIDTH)
}

/// The text of every `//` comment in `text`, in order, without trailing
/// whitespace.
pub fn comments(text: &str) -> Vec<String> {
    comment_texts(text, &scan::comments(text))
}

fn comment_texts(text: &str, ranges: &[(usize, usize)]) -> Vec<String> {
    ranges
        .iter()
        .map(|&(s, e)| text[s..e].trim_end().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_skips_strings_and_regexes() {
        let text =
            "type A = string matching /^a\\/b$/ // one\nlet x = \"// not {y // two\n}\" // three\n";
        assert_eq!(comments(text), vec!["// one", "// two", "// three"]);
    }
}
