//! Where things are in the source that the syntax tree does not say: a
//! node's end before trailing trivia, blank lines, the parentheses and
//! keywords the tree drops, bracket pairs, a literal's spelling. Every
//! answer is a lookup in the scanner's token table ([`Tokens`]), by binary
//! search; nothing here reads the text but to copy a recorded spelling.

use crate::source::Span;
use crate::syntax::tokens::{Bracket, TokenKind, Tokens};

use super::*;

impl<'s> Printer<'s> {
    fn table(&self) -> &'s Tokens {
        self.tokens
    }

    /// `end` moved back over whitespace and comments to the end of the
    /// last token in `start..end`: a node whose rule ends in an optional
    /// part can take the trivia after it.
    pub(super) fn trim_end(&self, start: usize, end: usize) -> usize {
        let t = self.table().tokens();
        let k = self.table().ended_by(end);
        if t.get(k).is_some_and(|next| next.start < end) {
            // `end` is inside a token: nothing to trim.
            return end;
        }
        match k.checked_sub(1).map(|k| t[k]) {
            Some(last) if last.start >= start => last.end,
            _ => start.min(end),
        }
    }

    /// Where the trivia before `pos` begins: the end of the token or
    /// comment before it.
    fn trivia_start(&self, pos: usize) -> usize {
        let t = self.table().tokens();
        let previous_end = self
            .table()
            .ended_by(pos)
            .checked_sub(1)
            .map_or(0, |k| t[k].end);
        let comment_end = self.table().comment_end_before(pos).unwrap_or(0);
        previous_end.max(comment_end)
    }

    /// Whether a blank line separates `pos` from the code or comment before it.
    pub(super) fn blank_before(&self, pos: usize) -> bool {
        let t = self.table().tokens();
        let inside = t
            .get(self.table().ended_by(pos))
            .is_some_and(|next| next.start < pos)
            || self.table().in_comment(pos);
        !inside && self.table().line_breaks(self.trivia_start(pos), pos) >= 2
    }

    /// The start of the keyword before `pos` (`show` in `show x`), skipping
    /// whitespace and the parentheses the tree does not keep.
    pub(super) fn keyword_before(&self, pos: usize) -> usize {
        let t = self.table().tokens();
        let mut k = self.table().ended_by(pos);
        let mut after = pos;
        while let Some(previous) = k.checked_sub(1).map(|k| t[k]) {
            if self.table().comment_within(previous.end, after) {
                break;
            }
            match previous.kind {
                TokenKind::Open(Bracket::Paren, _) => {
                    after = previous.start;
                    k -= 1;
                }
                TokenKind::Word => return previous.start,
                _ => break,
            }
        }
        pos
    }

    /// The range of an expression with the parentheses around it.
    pub(super) fn paren_range(&self, s: Span) -> (usize, usize) {
        let t = self.table().tokens();
        let (mut start, mut end) = span(s);
        let mut open = 0;
        let mut k = self.table().ended_by(start);
        while let Some(previous) = k.checked_sub(1).map(|k| t[k]) {
            let paren = matches!(previous.kind, TokenKind::Open(Bracket::Paren, _));
            if !paren || self.table().comment_within(previous.end, start) {
                break;
            }
            start = previous.start;
            open += 1;
            k -= 1;
        }
        let mut j = self.table().first_from(end);
        while open > 0 {
            match t.get(j) {
                Some(close) if close.kind == TokenKind::Close(Bracket::Paren) => {
                    end = close.end;
                    j += 1;
                    open -= 1;
                }
                _ => break,
            }
        }
        (start, end)
    }

    /// The token at or after `pos`, a string literal whole: `(start, end)`.
    pub(super) fn token(&self, pos: usize) -> (usize, usize) {
        let table = self.table();
        match table.tokens().get(table.first_from(pos)) {
            None => (table.text_len(), table.text_len()),
            Some(t) => match table.string_at(t.start) {
                Some(literal) => (literal.start, literal.end),
                None => (t.start, t.end),
            },
        }
    }

    /// The spelling of [`Printer::token`].
    pub(super) fn token_text(&self, pos: usize) -> &'s str {
        let (s, e) = self.token(pos);
        &self.src[s..e]
    }

    /// The position of the bracket closing the one at (or after) `open`.
    pub(super) fn closing(&self, open: usize) -> usize {
        let t = self.table().tokens();
        match t.get(self.table().first_from(open)).map(|t| t.kind) {
            Some(TokenKind::Open(_, Some(close))) => t[close].start,
            _ => self.table().text_len(),
        }
    }

    /// The position of the first token after `from` (before `to`) that is
    /// `word`; a string literal is one token.
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

    /// Whether the token at or after `pos` is a string literal.
    pub(super) fn is_string(&self, pos: usize) -> bool {
        let (s, _) = self.token(pos);
        self.table().string_at(s).is_some()
    }

    /// Whether the token at or after `pos` is a string that interpolates.
    pub(super) fn interpolates(&self, pos: usize) -> bool {
        let (s, _) = self.token(pos);
        self.table().string_at(s).is_some_and(|l| l.interpolates)
    }

    /// Whether the string literal at `start` is written with `"""`.
    pub(super) fn triple_quoted(&self, start: usize) -> bool {
        self.table().string_at(start).is_some_and(|l| l.triple)
    }

    /// Whether the source breaks the line in `from..to`.
    pub(super) fn written_broken(&self, from: usize, to: usize) -> bool {
        self.table().line_breaks(from, to) > 0
    }

    /// Whether only commas (and spaces) come in `from..to`, on one line.
    pub(super) fn only_commas(&self, from: usize, to: usize) -> bool {
        let t = self.table().tokens();
        let k = self.table().first_from(from);
        !self.written_broken(from, to)
            && t[k..]
                .iter()
                .take_while(|t| t.start < to)
                .all(|t| t.kind == TokenKind::Comma)
            && t.get(self.table().ended_by(from))
                .is_none_or(|next| next.start >= from)
    }
}
