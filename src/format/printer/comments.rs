//! Comment attachment: each `//` comment goes with the element it precedes,
//! the line it ends, or the bracket it precedes; elements, bodies and
//! bracketed lists are built with their comments and blank lines.

use super::super::doc::*;
use super::*;

impl<'s> Printer<'s> {
    pub(super) fn comment_doc(&self, i: usize) -> Doc {
        text(self.comments[i].text.clone())
    }

    /// Takes the comments not yet printed that start before `pos`.
    pub(super) fn take_before(&mut self, pos: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut i = self.first_unused;
        while i < self.comments.len() && self.comments[i].start < pos {
            if !self.used[i] {
                self.used[i] = true;
                out.push(i);
            }
            i += 1;
        }
        while self.first_unused < self.used.len() && self.used[self.first_unused] {
            self.first_unused += 1;
        }
        out
    }

    /// Marks the comments inside text copied verbatim as printed.
    pub(super) fn copied(&mut self, start: usize, end: usize) {
        for (i, c) in self.comments.iter().enumerate() {
            if c.start >= start && c.start < end {
                self.used[i] = true;
            }
        }
    }

    /// The comment that ends the line `end` is on, if only commas and spaces
    /// come between.
    pub(super) fn trailing(&mut self, end: usize) -> Option<String> {
        let i = self.comments.partition_point(|c| c.start < end);
        let c = self.comments.get(i)?;
        if self.used[i] || !self.only_commas(end, c.start) {
            return None;
        }
        self.used[i] = true;
        Some(c.text.clone())
    }

    /// One element of a body or list: its leading comments, blank line,
    /// text, and trailing comment. Comments inside it that nothing else
    /// printed go on their own lines before it.
    pub(super) fn elem(
        &mut self,
        start: usize,
        end: usize,
        blank: Blank,
        build: impl FnOnce(&mut Self) -> Doc,
    ) -> Doc {
        self.elem_parts(start, end, blank, build).assemble(Doc::Nil)
    }

    /// [`Printer::elem`] in parts, so that the caller can put text in front of
    /// the element's own text afterwards (to align a column).
    pub(super) fn elem_parts(
        &mut self,
        start: usize,
        end: usize,
        blank: Blank,
        build: impl FnOnce(&mut Self) -> Doc,
    ) -> Element {
        if self.interpolation > 0 {
            let body = build(self);
            return Element {
                before: Vec::new(),
                body,
                suffix: None,
                joined: true,
            };
        }
        let end = self.trim_end(start, end);
        let lead = self.take_before(start);
        let mut before = Vec::new();
        let first = lead.first().map_or(start, |&i| self.comments[i].start);
        let blank_line = match blank {
            Blank::Never => false,
            Blank::Always => true,
            Blank::Source => self.blank_before(first),
        };
        if blank_line {
            before.push(Doc::Hard);
        }
        for (k, &i) in lead.iter().enumerate() {
            if k > 0 && self.blank_before(self.comments[i].start) {
                before.push(Doc::Hard);
            }
            before.push(self.comment_doc(i));
            before.push(Doc::Hard);
        }
        if !lead.is_empty() && self.blank_before(start) {
            before.push(Doc::Hard);
        }
        let body = build(self);
        let stuck = self.take_before(end);
        for &i in &stuck {
            before.push(self.comment_doc(i));
            before.push(Doc::Hard);
        }
        let suffix = self.trailing(end);
        let joined = !blank_line && lead.is_empty() && stuck.is_empty();
        self.decorated = !joined || suffix.is_some();
        Element {
            before,
            body,
            suffix,
            joined,
        }
    }

    /// The comments left before a closing bracket at `close`, each on its own line.
    pub(super) fn dangling(&mut self, close: usize, first: bool) -> Doc {
        if self.interpolation > 0 {
            return Doc::Nil;
        }
        let mut parts = Vec::new();
        for (k, i) in self.take_before(close).into_iter().enumerate() {
            parts.push(Doc::Hard);
            if !(first && k == 0) && self.blank_before(self.comments[i].start) {
                parts.push(Doc::Hard);
            }
            parts.push(self.comment_doc(i));
        }
        if parts.is_empty() {
            Doc::Nil
        } else {
            cat(parts)
        }
    }

    /// `{ lines }` for a body whose elements (each preceded by a line break)
    /// are in `inner`; `{}` when empty.
    pub(super) fn body(&mut self, mut inner: Vec<Doc>, close: usize) -> Doc {
        let d = self.dangling(close, inner.is_empty());
        if inner.is_empty() && matches!(d, Doc::Nil) {
            return text("{}");
        }
        inner.push(d);
        cat(vec![text("{"), nest(cat(inner)), Doc::Hard, text("}")])
    }

    /// A bracketed, comma-separated list of already built elements.
    pub(super) fn list(
        &mut self,
        open: &str,
        close: &str,
        items: Vec<Doc>,
        close_at: usize,
        style: ListStyle,
        force: bool,
    ) -> Doc {
        let d = self.dangling(close_at, items.is_empty());
        if items.is_empty() && matches!(d, Doc::Nil) {
            return text(format!("{open}{close}"));
        }
        let line = || if style.spaces { Doc::Line } else { Doc::Soft };
        let mut inner = Vec::new();
        if !items.is_empty() {
            inner.push(line());
        }
        let n = items.len();
        for (i, item) in items.into_iter().enumerate() {
            inner.push(item);
            if i + 1 < n {
                inner.push(if style.commas_when_broken {
                    text(",")
                } else {
                    if_break(Doc::Nil, text(","))
                });
                inner.push(Doc::Line);
            } else if style.trailing_comma {
                inner.push(if_break(text(","), Doc::Nil));
            }
        }
        inner.push(d);
        group_forced(
            cat(vec![text(open), nest(cat(inner)), line(), text(close)]),
            force && self.interpolation == 0,
        )
    }
}
