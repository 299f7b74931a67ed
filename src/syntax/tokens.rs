//! The token table: what the scanner saw in a file, kept as data so that the
//! formatter can ask where things are (a node's last token, the blank line
//! before it, the parentheses and keywords the tree drops, a bracket's
//! partner, a literal's spelling) by binary search instead of reading the
//! text again. It plays the part of Gleam's `ModuleExtra`: what the author
//! wrote that the syntax tree does not keep.
//!
//! Built only by [`super::scan::scan_tokens`] (the formatter's path, and
//! the language server's for the identifiers in a text); `flowc check`
//! scans without it.

/// One token: a byte range of the file and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub start: usize,
    pub end: usize,
    pub kind: TokenKind,
}

/// What a token is. Strings are split at their interpolations so that the
/// table stays flat (no token inside another): the code of an
/// interpolation is tokens of its own, between two pieces of its string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A name or keyword.
    Word,
    /// A number with its unit or sign as written: `100k`, `1.50`, `30s`,
    /// `$1.00`, `-2`.
    Number,
    /// A regular expression, `/…/`.
    Pattern,
    /// A piece of a string literal: all of it, or its text up to and
    /// including an interpolation's `{`, or from an interpolation's `}` on.
    /// The whole literal is in [`Tokens::string_at`].
    StringPiece,
    /// An opening bracket and the index of the token that closes it, if
    /// any does.
    Open(Bracket, Option<usize>),
    Close(Bracket),
    Comma,
    /// Any other punctuation (`.`, `:`, `=`, `->`, `==`, `..`, …).
    Punct,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bracket {
    Paren,
    Square,
    Brace,
}

/// A whole string literal, its interpolations included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringLiteral {
    pub start: usize,
    pub end: usize,
    /// Written with `"""`.
    pub triple: bool,
    /// Holds at least one `{…}` interpolation.
    pub interpolates: bool,
}

/// The token table of one file (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Every token, in order, none overlapping; comments and whitespace
    /// (byte-order marks included) are not tokens.
    pub(super) tokens: Vec<Token>,
    /// Every string literal, by start (a literal inside another's
    /// interpolation comes after it).
    pub(super) strings: Vec<StringLiteral>,
    /// The `//` comments, as [`super::scan::Scan::comments`].
    pub(super) comments: Vec<(usize, usize)>,
    /// The offset of every line feed of the file.
    pub(super) newlines: Vec<usize>,
    /// The length of the file.
    pub(super) text_len: usize,
    /// Whether the file has line feeds and each ends a `\r\n`.
    pub(super) crlf: bool,
}

impl Tokens {
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// The byte ranges of the `//` comments, in order, each up to (not
    /// including) its line end.
    pub fn comments(&self) -> &[(usize, usize)] {
        &self.comments
    }

    /// The length of the text the table was made from.
    pub fn text_len(&self) -> usize {
        self.text_len
    }

    /// Whether the file has line feeds and each ends a `\r\n` (Windows
    /// line endings throughout).
    pub fn crlf(&self) -> bool {
        self.crlf
    }

    /// The index of the first token that starts at or after `pos` (the
    /// number of tokens when none does).
    pub fn first_from(&self, pos: usize) -> usize {
        self.tokens.partition_point(|t| t.start < pos)
    }

    /// The number of tokens that end at or before `pos`: the index of the
    /// first token past it.
    pub fn ended_by(&self, pos: usize) -> usize {
        self.tokens.partition_point(|t| t.end <= pos)
    }

    /// The end of the last comment that ends at or before `pos`.
    pub fn comment_end_before(&self, pos: usize) -> Option<usize> {
        let k = self.comments.partition_point(|&(_, e)| e <= pos);
        k.checked_sub(1).map(|k| self.comments[k].1)
    }

    /// Whether a comment starts in `from..to`.
    pub fn comment_within(&self, from: usize, to: usize) -> bool {
        let k = self.comments.partition_point(|&(s, _)| s < from);
        self.comments.get(k).is_some_and(|&(s, _)| s < to)
    }

    /// Whether `pos` is strictly inside a comment.
    pub fn in_comment(&self, pos: usize) -> bool {
        let k = self.comments.partition_point(|&(_, e)| e <= pos);
        self.comments.get(k).is_some_and(|&(s, _)| s < pos)
    }

    /// The string literal that starts at `start`, if one does.
    pub fn string_at(&self, start: usize) -> Option<&StringLiteral> {
        let k = self.strings.partition_point(|l| l.start < start);
        self.strings.get(k).filter(|l| l.start == start)
    }

    /// How many line feeds lie in `from..to`.
    pub fn line_breaks(&self, from: usize, to: usize) -> usize {
        if to <= from {
            return 0;
        }
        let a = self.newlines.partition_point(|&n| n < from);
        let b = self.newlines.partition_point(|&n| n < to);
        b - a
    }
}
