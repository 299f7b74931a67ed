//! Where things are in the source text that the syntax tree does not say:
//! a node's end before trailing trivia, blank lines, the parentheses and
//! keywords the tree drops, bracket pairs.

use crate::source::Span;
use crate::syntax::scan::{self, skip_trivia, token_end};

use super::*;

impl<'s> Printer<'s> {
    /// `end` moved back over whitespace and comments: a node whose rule
    /// ends in an optional part can take the trivia after it.
    pub(super) fn trim_end(&self, start: usize, end: usize) -> usize {
        let b = self.bytes();
        let mut e = end.min(b.len());
        loop {
            while e > start && matches!(b[e - 1], b' ' | b'\t' | b'\r' | b'\n') {
                e -= 1;
            }
            let i = self.comments.partition_point(|c| c.start < e);
            match i.checked_sub(1).map(|i| &self.comments[i]) {
                Some(c) if c.start >= start && c.end >= e => e = c.start,
                _ => return e,
            }
        }
    }

    /// Whether a blank line separates `pos` from the code or comment before it.
    pub(super) fn blank_before(&self, pos: usize) -> bool {
        let b = self.bytes();
        let mut i = pos.min(b.len());
        let mut newlines = 0;
        while i > 0 {
            match b[i - 1] {
                b'\n' => newlines += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => break,
            }
            i -= 1;
        }
        newlines >= 2
    }

    /// The start of the keyword before `pos` (`show` in `show x`), skipping
    /// whitespace and the parentheses the tree does not keep.
    pub(super) fn keyword_before(&self, pos: usize) -> usize {
        let b = self.bytes();
        let mut i = pos.min(b.len());
        while i > 0 && matches!(b[i - 1], b' ' | b'\t' | b'\r' | b'\n' | b'(') {
            i -= 1;
        }
        let end = i;
        while i > 0 && is_ident(b[i - 1]) {
            i -= 1;
        }
        if i == end {
            pos
        } else {
            i
        }
    }

    /// The range of an expression with the parentheses around it.
    pub(super) fn paren_range(&self, s: Span) -> (usize, usize) {
        let b = self.bytes();
        let (mut start, mut end) = span(s);
        let mut open = 0;
        let mut i = start;
        loop {
            while i > 0 && matches!(b[i - 1], b' ' | b'\t' | b'\r' | b'\n') {
                i -= 1;
            }
            if i > 0 && b[i - 1] == b'(' {
                i -= 1;
                open += 1;
                start = i;
            } else {
                break;
            }
        }
        let mut j = end;
        while open > 0 {
            let k = skip_trivia(b, j);
            if b.get(k) == Some(&b')') {
                j = k + 1;
                end = j;
                open -= 1;
            } else {
                break;
            }
        }
        (start, end)
    }

    /// The token at or after `pos`: `(start, end)`.
    pub(super) fn token(&self, pos: usize) -> (usize, usize) {
        let start = skip_trivia(self.bytes(), pos);
        (start, token_end(self.bytes(), start))
    }

    pub(super) fn token_text(&self, pos: usize) -> &'s str {
        let (s, e) = self.token(pos);
        &self.src[s..e]
    }

    /// The position of the bracket closing the one at `open`.
    pub(super) fn closing(&self, open: usize) -> usize {
        let b = self.bytes();
        let mut depth = 0usize;
        let mut i = open;
        while i < b.len() {
            let (s, e) = self.token(i);
            if s >= b.len() {
                break;
            }
            match b[s] {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return s;
                    }
                }
                _ => {}
            }
            i = e.max(s + 1);
        }
        b.len()
    }

    /// The position of the first token after `from` (before `to`) that is `word`.
    pub(super) fn find_word(&self, from: usize, to: usize, word: &str) -> Option<usize> {
        let mut i = from;
        while i < to {
            let (s, e) = self.token(i);
            if s >= to || e <= s {
                return None;
            }
            if &self.src[s..e] == word {
                return Some(s);
            }
            i = e;
        }
        None
    }

    /// Whether a string token at `pos` interpolates.
    pub(super) fn interpolates(&self, pos: usize) -> bool {
        let b = self.bytes();
        let i = skip_trivia(b, pos);
        b.get(i) == Some(&b'"') && scan::string_interpolates(b, i)
    }
}
