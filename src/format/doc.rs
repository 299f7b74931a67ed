//! The layout engine: documents of text, line breaks, nesting and groups
//! that lay out flat when they fit (after Wadler's and Prettier's
//! printers), rendered at a column limit.

use std::rc::Rc;

/// A layout document.
#[derive(Clone, Debug)]
pub(super) enum Doc {
    Nil,
    /// Text without line breaks.
    Text(String),
    /// A space, or a line break when the enclosing group breaks.
    Line,
    /// Nothing, or a line break when the enclosing group breaks.
    Soft,
    /// Always a line break; the enclosing groups break.
    Hard,
    /// Indents the lines it breaks by two more spaces.
    Nest(Rc<Doc>),
    /// Laid out flat when it fits, else broken; `true` when it must break
    /// (it holds a hard line break or a comment).
    Group(Rc<Doc>, bool),
    Cat(Vec<Doc>),
    /// (broken, flat)
    IfBreak(Rc<Doc>, Rc<Doc>),
    /// A trailing comment: written at the end of the line.
    Suffix(String),
    /// Alternative layouts: the first if it fits flat, else the first of the
    /// others whose first line fits, else the last.
    Choice(Rc<Vec<Doc>>),
    /// Content and separators alternating; a separator breaks only when the
    /// next content does not fit on the line.
    Fill(Rc<Vec<Doc>>),
}

pub(super) fn text(s: impl Into<String>) -> Doc {
    Doc::Text(s.into())
}

pub(super) fn cat(parts: Vec<Doc>) -> Doc {
    Doc::Cat(parts)
}

pub(super) fn nest(d: Doc) -> Doc {
    Doc::Nest(Rc::new(d))
}

pub(super) fn group(d: Doc) -> Doc {
    let forced = forces(&d);
    Doc::Group(Rc::new(d), forced)
}

pub(super) fn group_forced(d: Doc, force: bool) -> Doc {
    let forced = force || forces(&d);
    Doc::Group(Rc::new(d), forced)
}

pub(super) fn if_break(broken: Doc, flat: Doc) -> Doc {
    Doc::IfBreak(Rc::new(broken), Rc::new(flat))
}

/// Whether a document must break the groups around it.
pub(super) fn forces(d: &Doc) -> bool {
    match d {
        Doc::Hard | Doc::Suffix(_) => true,
        Doc::Group(_, f) => *f,
        Doc::Nest(d) => forces(d),
        Doc::Cat(v) => v.iter().any(forces),
        Doc::IfBreak(_, flat) => forces(flat),
        Doc::Choice(alts) => alts.last().is_some_and(forces),
        Doc::Fill(parts) => parts.iter().any(forces),
        Doc::Nil | Doc::Text(_) | Doc::Line | Doc::Soft => false,
    }
}

/// The document laid out on one line.
pub(super) fn flat_text(d: &Doc, out: &mut String) {
    match d {
        Doc::Nil | Doc::Soft | Doc::Suffix(_) => {}
        Doc::Text(s) => out.push_str(s),
        Doc::Line | Doc::Hard => out.push(' '),
        Doc::Nest(d) | Doc::Group(d, _) => flat_text(d, out),
        Doc::Cat(v) => v.iter().for_each(|d| flat_text(d, out)),
        Doc::IfBreak(_, flat) => flat_text(flat, out),
        Doc::Choice(alts) => flat_text(&alts[0], out),
        Doc::Fill(parts) => parts.iter().for_each(|d| flat_text(d, out)),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    Flat,
    Break,
}

#[derive(Clone, Copy)]
pub(super) enum Cmd<'d> {
    Doc(usize, Mode, &'d Doc),
    Fill(usize, Mode, &'d [Doc]),
}

#[derive(Default)]
pub(super) struct Writer {
    out: String,
    col: usize,
    indent: usize,
    /// Indentation still to write before the next text on this line.
    pending: Option<usize>,
    suffixes: Vec<String>,
    /// Byte offsets of trailing comments in `out`.
    marks: Vec<usize>,
}

impl Writer {
    fn text(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        if let Some(indent) = self.pending.take() {
            self.out.extend(std::iter::repeat_n(' ', indent));
        }
        self.out.push_str(s);
        self.col += s.chars().count();
    }

    fn newline(&mut self, indent: usize) {
        self.flush_suffixes();
        self.out.push('\n');
        self.pending = Some(indent);
        self.indent = indent;
        self.col = indent;
    }

    fn flush_suffixes(&mut self) {
        for (k, s) in std::mem::take(&mut self.suffixes).into_iter().enumerate() {
            if k == 0 && self.pending.is_none() {
                self.out.push(' ');
                self.marks.push(self.out.len());
                self.out.push_str(&s);
            } else {
                // A second comment for one line gets a line of its own.
                if self.pending.is_none() {
                    self.out.push('\n');
                }
                self.pending = None;
                self.out.extend(std::iter::repeat_n(' ', self.indent));
                self.out.push_str(&s);
            }
        }
    }
}

pub(super) fn render(doc: &Doc, width: usize) -> String {
    let mut w = Writer::default();
    layout(doc, width, &mut w);
    w.flush_suffixes();
    align_trailing_comments(&w.out, &w.marks)
}

pub(super) fn room(width: usize, col: usize) -> isize {
    width as isize - col as isize
}

pub(super) fn layout(doc: &Doc, width: usize, w: &mut Writer) {
    let mut stack = vec![Cmd::Doc(0, Mode::Break, doc)];
    while let Some(cmd) = stack.pop() {
        let (ind, mode, d) = match cmd {
            Cmd::Doc(ind, mode, d) => (ind, mode, d),
            Cmd::Fill(ind, mode, parts) => {
                fill(ind, mode, parts, width, w, &mut stack);
                continue;
            }
        };
        match d {
            Doc::Nil => {}
            Doc::Text(s) => w.text(s),
            Doc::Line => match mode {
                Mode::Flat => w.text(" "),
                Mode::Break => w.newline(ind),
            },
            Doc::Soft => {
                if mode == Mode::Break {
                    w.newline(ind)
                }
            }
            Doc::Hard => w.newline(ind),
            Doc::Nest(d) => stack.push(Cmd::Doc(ind + 2, mode, d)),
            Doc::Cat(v) => stack.extend(v.iter().rev().map(|d| Cmd::Doc(ind, mode, d))),
            Doc::Group(d, forced) => {
                let m = if mode == Mode::Flat {
                    Mode::Flat
                } else if *forced {
                    Mode::Break
                } else if fits(
                    vec![Cmd::Doc(ind, Mode::Flat, d)],
                    &stack,
                    room(width, w.col),
                    false,
                ) {
                    Mode::Flat
                } else {
                    Mode::Break
                };
                stack.push(Cmd::Doc(ind, m, d));
            }
            Doc::IfBreak(broken, flat) => stack.push(Cmd::Doc(
                ind,
                mode,
                if mode == Mode::Break { broken } else { flat },
            )),
            Doc::Suffix(s) => w.suffixes.push(s.clone()),
            Doc::Choice(alts) => {
                if mode == Mode::Flat {
                    stack.push(Cmd::Doc(ind, Mode::Flat, &alts[0]));
                    continue;
                }
                let r = room(width, w.col);
                if !forces(&alts[0])
                    && fits(vec![Cmd::Doc(ind, Mode::Flat, &alts[0])], &stack, r, false)
                {
                    stack.push(Cmd::Doc(ind, Mode::Flat, &alts[0]));
                    continue;
                }
                let last = &alts[alts.len() - 1];
                let chosen = alts[1..alts.len() - 1]
                    .iter()
                    .find(|alt| fits(vec![Cmd::Doc(ind, Mode::Break, alt)], &stack, r, false))
                    .unwrap_or(last);
                stack.push(Cmd::Doc(ind, Mode::Break, chosen));
            }
            Doc::Fill(parts) => stack.push(Cmd::Fill(ind, mode, parts)),
        }
    }
}

pub(super) fn fill<'d>(
    ind: usize,
    mode: Mode,
    parts: &'d [Doc],
    width: usize,
    w: &mut Writer,
    stack: &mut Vec<Cmd<'d>>,
) {
    if parts.is_empty() {
        return;
    }
    if mode == Mode::Flat {
        stack.extend(parts.iter().rev().map(|d| Cmd::Doc(ind, Mode::Flat, d)));
        return;
    }
    let r = room(width, w.col);
    let content = &parts[0];
    let content_fits = fits(vec![Cmd::Doc(ind, Mode::Flat, content)], &[], r, true);
    let content_mode = if content_fits {
        Mode::Flat
    } else {
        Mode::Break
    };
    if parts.len() == 1 {
        stack.push(Cmd::Doc(ind, content_mode, content));
        return;
    }
    let separator = &parts[1];
    if parts.len() == 2 {
        stack.push(Cmd::Doc(ind, content_mode, separator));
        stack.push(Cmd::Doc(ind, content_mode, content));
        return;
    }
    let second = &parts[2];
    let both_fit = fits(
        vec![
            Cmd::Doc(ind, Mode::Flat, second),
            Cmd::Doc(ind, Mode::Flat, separator),
            Cmd::Doc(ind, Mode::Flat, content),
        ],
        &[],
        r,
        true,
    );
    stack.push(Cmd::Fill(ind, mode, &parts[2..]));
    let separator_mode = if both_fit { Mode::Flat } else { Mode::Break };
    stack.push(Cmd::Doc(ind, separator_mode, separator));
    stack.push(Cmd::Doc(ind, content_mode, content));
}

/// Whether `next`, then `rest` (the commands after it), fit in `room`
/// columns up to the first line break.
pub(super) fn fits<'d>(
    mut next: Vec<Cmd<'d>>,
    rest: &[Cmd<'d>],
    mut room: isize,
    must_be_flat: bool,
) -> bool {
    let mut rest_at = rest.len();
    loop {
        if room < 0 {
            return false;
        }
        let cmd = match next.pop() {
            Some(c) => c,
            None if rest_at == 0 || must_be_flat => return true,
            None => {
                rest_at -= 1;
                rest[rest_at]
            }
        };
        let (ind, mode, d) = match cmd {
            Cmd::Doc(ind, mode, d) => (ind, mode, d),
            Cmd::Fill(ind, mode, parts) => {
                next.extend(parts.iter().rev().map(|d| Cmd::Doc(ind, mode, d)));
                continue;
            }
        };
        match d {
            Doc::Nil | Doc::Suffix(_) => {}
            Doc::Text(s) => room -= s.chars().count() as isize,
            Doc::Line => match mode {
                Mode::Flat => room -= 1,
                Mode::Break => return true,
            },
            Doc::Soft => {
                if mode == Mode::Break {
                    return true;
                }
            }
            Doc::Hard => return true,
            Doc::Nest(d) => next.push(Cmd::Doc(ind + 2, mode, d)),
            Doc::Cat(v) => next.extend(v.iter().rev().map(|d| Cmd::Doc(ind, mode, d))),
            Doc::Group(d, forced) => {
                if must_be_flat && *forced {
                    return false;
                }
                next.push(Cmd::Doc(ind, if *forced { Mode::Break } else { mode }, d));
            }
            Doc::IfBreak(broken, flat) => next.push(Cmd::Doc(
                ind,
                mode,
                if mode == Mode::Break { broken } else { flat },
            )),
            Doc::Choice(alts) => {
                let alt = if mode == Mode::Break {
                    &alts[alts.len() - 1]
                } else {
                    &alts[0]
                };
                next.push(Cmd::Doc(ind, mode, alt));
            }
            Doc::Fill(parts) => next.extend(parts.iter().rev().map(|d| Cmd::Doc(ind, mode, d))),
        }
    }
}

/// Aligns the trailing comments of consecutive lines with the same
/// indentation, one space after the longest line of code among them.
pub(super) fn align_trailing_comments(out: &str, marks: &[usize]) -> String {
    struct Line<'a> {
        code: &'a str,
        comment: Option<&'a str>,
    }
    let mut lines = Vec::new();
    let mut start = 0;
    let mut marks = marks.iter().peekable();
    for line in out.split_inclusive('\n') {
        let end = start + line.len();
        let body = line.strip_suffix('\n').unwrap_or(line);
        let mut comment = None;
        while let Some(&&m) = marks.peek() {
            if m >= end {
                break;
            }
            marks.next();
            if m >= start && m - start <= body.len() {
                comment = Some(m - start);
            }
        }
        lines.push(match comment {
            Some(at) => Line {
                code: body[..at].trim_end(),
                comment: Some(&body[at..]),
            },
            None => Line {
                code: body,
                comment: None,
            },
        });
        start = end;
    }
    let indent = |s: &str| s.len() - s.trim_start_matches(' ').len();
    let mut result = String::with_capacity(out.len() + 64);
    let mut i = 0;
    while i < lines.len() {
        if lines[i].comment.is_none() {
            result.push_str(lines[i].code);
            result.push('\n');
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < lines.len()
            && lines[j].comment.is_some()
            && indent(lines[j].code) == indent(lines[i].code)
        {
            j += 1;
        }
        let column = lines[i..j]
            .iter()
            .map(|l| l.code.chars().count())
            .max()
            .unwrap_or(0)
            + 1;
        for line in &lines[i..j] {
            result.push_str(line.code);
            result.extend(std::iter::repeat_n(' ', column - line.code.chars().count()));
            result.push_str(line.comment.unwrap_or_default());
            result.push('\n');
        }
        i = j;
    }
    if !out.ends_with('\n') {
        result.pop();
    }
    result
}
