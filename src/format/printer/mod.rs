//! The printer: a syntax tree and its source's token table (comments, line
//! breaks, spellings: [`Tokens`]) as a layout [`Doc`]. One `impl Printer`
//! per part of the language, each in its own file; the helpers they share
//! are here.

mod comments;
mod flows;
mod items;
mod positions;
mod strings;

use crate::ast::*;
use crate::source::Span;
use crate::syntax::tokens::Tokens;

use super::doc::*;

struct Comment {
    start: usize,
    text: String,
}

/// Whether an element may follow a blank line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Blank {
    /// The first element of a body: never.
    Never,
    /// When the source has one.
    Source,
    /// Always (between most items).
    Always,
}

/// How the elements of a bracketed list are separated.
#[derive(Clone, Copy)]
struct ListStyle {
    /// `{ a }` rather than `[a]`.
    spaces: bool,
    /// Commas between elements also when the list is broken over lines
    /// (otherwise only on one line, as between record fields).
    commas_when_broken: bool,
    /// A comma after the last element when the list is broken.
    trailing_comma: bool,
}

const CALL_LIST: ListStyle = ListStyle {
    spaces: false,
    commas_when_broken: true,
    trailing_comma: true,
};
const VALUE_LIST: ListStyle = ListStyle {
    spaces: false,
    commas_when_broken: true,
    trailing_comma: false,
};
const OBJECT_LIST: ListStyle = ListStyle {
    spaces: true,
    commas_when_broken: true,
    trailing_comma: false,
};
const FIELD_LIST: ListStyle = ListStyle {
    spaces: true,
    commas_when_broken: false,
    trailing_comma: false,
};

/// The layout of `module`, parsed from `src`, whose token table is `tokens`.
pub(super) fn print(src: &str, tokens: &Tokens, module: &Module) -> Doc {
    Printer::new(src, tokens).module(module)
}

struct Printer<'s> {
    src: &'s str,
    /// The scanner's token table of `src`: where tokens, comments and line
    /// breaks are (`positions.rs` asks it).
    tokens: &'s Tokens,
    comments: Vec<Comment>,
    used: Vec<bool>,
    first_unused: usize,
    /// Inside an interpolation: one line, no comments.
    interpolation: usize,
    /// Whether the last element built has a comment or blank line of its own.
    decorated: bool,
}

/// An element built by [`Printer::elem_parts`].
struct Element {
    /// Blank line and comments on lines of their own before it.
    before: Vec<Doc>,
    body: Doc,
    /// A trailing comment.
    suffix: Option<String>,
    /// No blank line or comment of its own before it.
    joined: bool,
}

impl Element {
    fn assemble(self, head: Doc) -> Doc {
        let mut parts = self.before;
        parts.push(head);
        parts.push(self.body);
        if let Some(t) = self.suffix {
            parts.push(Doc::Suffix(t));
        }
        cat(parts)
    }
}

/// Pads the heads of runs of aligned elements (`joined` to the one before)
/// to the widest in the run.
fn align_heads(heads: &mut [String], alignable: &[bool], joined: &[bool]) {
    let mut k = 0;
    while k < heads.len() {
        if !alignable[k] {
            k += 1;
            continue;
        }
        let mut j = k + 1;
        while j < heads.len() && alignable[j] && joined[j] {
            j += 1;
        }
        let width = heads[k..j]
            .iter()
            .map(|h| h.chars().count())
            .max()
            .unwrap_or(0);
        for h in &mut heads[k..j] {
            let pad = width - h.chars().count();
            h.extend(std::iter::repeat_n(' ', pad));
        }
        k = j;
    }
}

fn span(s: Span) -> (usize, usize) {
    (s.start as usize, s.end as usize)
}

fn escape_plain(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '{' => out.push_str("{{"),
            '}' => out.push_str("}}"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
}

fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    escape_plain(s, &mut out);
    out.push('"');
    out
}

fn precedence(e: &Expr) -> u8 {
    match e.kind {
        ExprKind::Or(..) => 1,
        ExprKind::And(..) => 2,
        ExprKind::Not(..) => 3,
        ExprKind::Compare(..) => 4,
        _ => 5,
    }
}

impl<'s> Printer<'s> {
    fn new(src: &'s str, tokens: &'s Tokens) -> Printer<'s> {
        let comments: Vec<Comment> = tokens
            .comments()
            .iter()
            .map(|&(start, end)| Comment {
                start,
                text: src[start..end].trim_end().to_string(),
            })
            .collect();
        let used = vec![false; comments.len()];
        Printer {
            src,
            tokens,
            comments,
            used,
            first_unused: 0,
            interpolation: 0,
            decorated: false,
        }
    }
}

/// Escapes text for a `"""` string. Quotes are escaped only in runs of three
/// or more, and (`closing`) at the very end of a string closed on the same
/// line, where they would run into the closing quotes.
fn escape_triple(s: &str, closing: bool, out: &mut String) {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' => {
                let run = chars[i..].iter().take_while(|&&c| c == '"').count();
                let escape = run >= 3 || (closing && i + run == chars.len());
                for _ in 0..run {
                    out.push_str(if escape { "\\\"" } else { "\"" });
                }
                i += run;
                continue;
            }
            '\\' => out.push_str("\\\\"),
            '{' => out.push_str("{{"),
            '}' => out.push_str("}}"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
        i += 1;
    }
}

fn join_names(names: &[Ident]) -> String {
    names
        .iter()
        .map(|n| n.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Consecutive one-line items of one kind may go without a blank line.
fn tight(a: &Item, b: &Item) -> bool {
    let alias = |t: &TypeDecl| !matches!(t.ty.kind, TypeExprKind::Record(..));
    match (a, b) {
        (Item::Use(_), Item::Use(_))
        | (Item::Resource(_), Item::Resource(_))
        | (Item::Model(_), Item::Model(_)) => true,
        (Item::Type(x), Item::Type(y)) => alias(x) && alias(y),
        _ => false,
    }
}
