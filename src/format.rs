//! `flowc fmt`: one canonical layout for Flow source.
//!
//! The text is parsed (a file with syntax errors is never formatted), the
//! syntax tree is turned into a layout document ([`Doc`]: text, line breaks,
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
//! Comments are not in the syntax tree (`//` is silent in the grammar), so
//! [`comments`] finds them with a small scanner that skips strings and
//! regular expressions, and the printer attaches each one by byte position:
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

use std::io::{Read, Write};
use std::path::PathBuf;
use std::rc::Rc;

use crate::ast::*;
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::source::{FileId, Origin, SourceFile, Sources, Span};
use crate::syntax::scan::{self, skip_trivia, token_end};

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
    let (module, diagnostics) = crate::parser::parse(file, text);
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    // A file with Windows line endings keeps them: it is laid out with `\n`
    // and converted back, so `"""` strings keep their `\r` characters.
    let crlf = text.contains("\r\n") && !text.replace("\r\n", "").contains('\n');
    let out = if crlf {
        let lf = text.replace("\r\n", "\n");
        let (lf_module, _) = crate::parser::parse(file, &lf);
        layout_module(&lf, &lf_module).replace('\n', "\r\n")
    } else {
        layout_module(text, &module)
    };
    let (again, problems) = crate::parser::parse(file, &out);
    let mut before = comments(text);
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

fn layout_module(text: &str, module: &Module) -> String {
    let mut printer = Printer::new(text);
    let doc = printer.module(module);
    render(&doc, WIDTH)
}

/// The text of every `//` comment in `text`, in order, without trailing
/// whitespace.
pub fn comments(text: &str) -> Vec<String> {
    scan::comments(text)
        .into_iter()
        .map(|(s, e)| text[s..e].trim_end().to_string())
        .collect()
}

// ---------------------------------------------------------------- the command

/// `flowc fmt [--check] [PATHS…]`. Returns the exit status: 0 when every file
/// is formatted (or, with `check`, already was), 1 when a file has syntax
/// errors or, with `check`, would change. `Err` is a usage or I/O error
/// (exit status 2).
pub fn run(paths: Vec<PathBuf>, check: bool) -> Result<i32, String> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths
    };
    let mut files: Vec<Option<PathBuf>> = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            files.push(None);
        } else if p.is_dir() {
            let found =
                crate::flow_files(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            if found.is_empty() {
                return Err(format!("no .flow files in {}", p.display()));
            }
            files.extend(found.into_iter().map(Some));
        } else if p.exists() {
            files.push(Some(p));
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    // anstream applies NO_COLOR, CLICOLOR_FORCE and the command line's
    // `--color` (its global choice) the same way for every command.
    let color = anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never;
    let mut status = 0;
    let mut io_errors = 0;
    for file in files {
        let (name, bytes) = match &file {
            None => {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("cannot read standard input: {e}"))?;
                ("<stdin>".to_string(), bytes)
            }
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => (path.display().to_string(), bytes),
                Err(e) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "error: cannot read {}: {e}",
                        path.display()
                    );
                    io_errors += 1;
                    continue;
                }
            },
        };
        let origin = match &file {
            None => Origin::Stdin,
            Some(p) => Origin::Disk(p.clone()),
        };
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => text,
            Err(e) => {
                let lossy: Rc<str> = String::from_utf8_lossy(&bytes).into();
                let at = e.valid_up_to();
                let d = Diagnostic::new(
                    Code::Syntax,
                    Span::new(FileId(0), at, at + 1),
                    "this file is not valid UTF-8",
                )
                .label("invalid byte here")
                .help("Flow files are UTF-8 text; re-save the file as UTF-8");
                report(&name, origin, &lossy, &[d], color);
                status = status.max(1);
                continue;
            }
        };
        let formatted = match format_source(text) {
            Ok(formatted) => formatted,
            Err(diagnostics) => {
                report(&name, origin, text, &diagnostics, color);
                status = status.max(1);
                continue;
            }
        };
        let changed = formatted != text;
        if check {
            if changed {
                println!("{name}");
                let _ = write!(
                    std::io::stderr(),
                    "{}",
                    diff_snippet(&name, text, &formatted)
                );
                status = status.max(1);
            }
        } else if file.is_none() {
            let mut out = std::io::stdout().lock();
            out.write_all(formatted.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| format!("cannot write standard output: {e}"))?;
        } else if let (Some(path), true) = (&file, changed) {
            if let Err(e) = std::fs::write(path, formatted.as_bytes()) {
                let _ = writeln!(
                    std::io::stderr(),
                    "error: cannot write {}: {e}",
                    path.display()
                );
                io_errors += 1;
            }
        }
    }
    match io_errors {
        0 => Ok(status),
        1 => Err("1 file could not be read or written".into()),
        n => Err(format!("{n} files could not be read or written")),
    }
}

fn report(name: &str, origin: Origin, text: &str, diagnostics: &[Diagnostic], color: bool) {
    let mut sources = Sources::default();
    let file = sources.add(SourceFile::new(name.to_string(), origin, text.into()));
    let mut err = std::io::stderr().lock();
    for d in diagnostics {
        let mut d = d.clone();
        d.span.file = file;
        for l in &mut d.labels {
            l.span.file = file;
        }
        let _ = write!(err, "{}", crate::render::human(&sources, &d, color));
    }
}

/// A unified diff (as `diff -u` prints it) from the file to its formatted
/// form, with three lines of context.
fn diff_snippet(name: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(name, &format!("{name} (formatted)"))
        .to_string()
}

// ---------------------------------------------------------------- scanning

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

// ---------------------------------------------------------------- documents

/// A layout document.
#[derive(Clone, Debug)]
enum Doc {
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

fn text(s: impl Into<String>) -> Doc {
    Doc::Text(s.into())
}

fn cat(parts: Vec<Doc>) -> Doc {
    Doc::Cat(parts)
}

fn nest(d: Doc) -> Doc {
    Doc::Nest(Rc::new(d))
}

fn group(d: Doc) -> Doc {
    let forced = forces(&d);
    Doc::Group(Rc::new(d), forced)
}

fn group_forced(d: Doc, force: bool) -> Doc {
    let forced = force || forces(&d);
    Doc::Group(Rc::new(d), forced)
}

fn if_break(broken: Doc, flat: Doc) -> Doc {
    Doc::IfBreak(Rc::new(broken), Rc::new(flat))
}

/// Whether a document must break the groups around it.
fn forces(d: &Doc) -> bool {
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
fn flat_text(d: &Doc, out: &mut String) {
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
enum Mode {
    Flat,
    Break,
}

#[derive(Clone, Copy)]
enum Cmd<'d> {
    Doc(usize, Mode, &'d Doc),
    Fill(usize, Mode, &'d [Doc]),
}

#[derive(Default)]
struct Writer {
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

fn render(doc: &Doc, width: usize) -> String {
    let mut w = Writer::default();
    layout(doc, width, &mut w);
    w.flush_suffixes();
    align_trailing_comments(&w.out, &w.marks)
}

fn room(width: usize, col: usize) -> isize {
    width as isize - col as isize
}

fn layout(doc: &Doc, width: usize, w: &mut Writer) {
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

fn fill<'d>(
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
fn fits<'d>(mut next: Vec<Cmd<'d>>, rest: &[Cmd<'d>], mut room: isize, must_be_flat: bool) -> bool {
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
fn align_trailing_comments(out: &str, marks: &[usize]) -> String {
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

// ---------------------------------------------------------------- printing

struct Comment {
    start: usize,
    end: usize,
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

struct Printer<'s> {
    src: &'s str,
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
    fn new(src: &'s str) -> Printer<'s> {
        let comments: Vec<Comment> = scan::comments(src)
            .into_iter()
            .map(|(start, end)| Comment {
                start,
                end,
                text: src[start..end].trim_end().to_string(),
            })
            .collect();
        let used = vec![false; comments.len()];
        Printer {
            src,
            comments,
            used,
            first_unused: 0,
            interpolation: 0,
            decorated: false,
        }
    }

    fn bytes(&self) -> &'s [u8] {
        self.src.as_bytes()
    }

    // ------------------------------------------------------------ positions

    /// `end` moved back over whitespace and comments: a node whose rule
    /// ends in an optional part can take the trivia after it.
    fn trim_end(&self, start: usize, end: usize) -> usize {
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
    fn blank_before(&self, pos: usize) -> bool {
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
    fn keyword_before(&self, pos: usize) -> usize {
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
    fn paren_range(&self, s: Span) -> (usize, usize) {
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
    fn token(&self, pos: usize) -> (usize, usize) {
        let start = skip_trivia(self.bytes(), pos);
        (start, token_end(self.bytes(), start))
    }

    fn token_text(&self, pos: usize) -> &'s str {
        let (s, e) = self.token(pos);
        &self.src[s..e]
    }

    /// The position of the bracket closing the one at `open`.
    fn closing(&self, open: usize) -> usize {
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
    fn find_word(&self, from: usize, to: usize, word: &str) -> Option<usize> {
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
    fn interpolates(&self, pos: usize) -> bool {
        let b = self.bytes();
        let i = skip_trivia(b, pos);
        b.get(i) == Some(&b'"') && scan::string_interpolates(b, i)
    }

    // ------------------------------------------------------------ comments

    fn comment_doc(&self, i: usize) -> Doc {
        text(self.comments[i].text.clone())
    }

    /// Takes the comments not yet printed that start before `pos`.
    fn take_before(&mut self, pos: usize) -> Vec<usize> {
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
    fn copied(&mut self, start: usize, end: usize) {
        for (i, c) in self.comments.iter().enumerate() {
            if c.start >= start && c.start < end {
                self.used[i] = true;
            }
        }
    }

    /// The comment that ends the line `end` is on, if only commas and spaces
    /// come between.
    fn trailing(&mut self, end: usize) -> Option<String> {
        let i = self.comments.partition_point(|c| c.start < end);
        let c = self.comments.get(i)?;
        if self.used[i]
            || !self.src[end..c.start]
                .bytes()
                .all(|b| matches!(b, b' ' | b'\t' | b','))
        {
            return None;
        }
        self.used[i] = true;
        Some(c.text.clone())
    }

    /// One element of a body or list: its leading comments, blank line,
    /// text, and trailing comment. Comments inside it that nothing else
    /// printed go on their own lines before it.
    fn elem(
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
    fn elem_parts(
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
    fn dangling(&mut self, close: usize, first: bool) -> Doc {
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
    fn body(&mut self, mut inner: Vec<Doc>, close: usize) -> Doc {
        let d = self.dangling(close, inner.is_empty());
        if inner.is_empty() && matches!(d, Doc::Nil) {
            return text("{}");
        }
        inner.push(d);
        cat(vec![text("{"), nest(cat(inner)), Doc::Hard, text("}")])
    }

    /// A bracketed, comma-separated list of already built elements.
    fn list(
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

    /// Whether the source breaks the line between `open` and `first`.
    fn written_broken(&self, open: usize, first: usize) -> bool {
        self.src.get(open..first).is_some_and(|s| s.contains('\n'))
    }

    // ------------------------------------------------------------ items

    fn module(&mut self, m: &Module) -> Doc {
        let mut elements = Vec::new();
        let mut previous: Option<&Item> = None;
        for item in &m.items {
            let (start, end) = self.item_range(item);
            let blank = match previous {
                None => Blank::Never,
                Some(p) if tight(p, item) => Blank::Source,
                Some(_) => Blank::Always,
            };
            elements.push(self.elem_parts(start, end, blank, |p| p.item(item)));
            previous = Some(item);
        }
        // The parser reads a comment after an open range (`type T = [X] len
        // 1..`) as part of the range. Such a comment can only come from inside
        // the next item; it goes before the type instead.
        for k in (1..elements.len()).rev() {
            let mut flat = String::new();
            flat_text(&elements[k - 1].body, &mut flat);
            let open_range = matches!(&m.items[k - 1], Item::Type(_)) && flat.ends_with("..");
            let first_comment = elements[k]
                .before
                .iter()
                .position(|d| matches!(d, Doc::Text(_)));
            if let (true, Some(at)) = (open_range, first_comment) {
                let moved: Vec<Doc> = elements[k].before.drain(at..).collect();
                elements[k - 1].before.extend(moved);
            }
        }
        let mut parts = Vec::new();
        for (k, element) in elements.into_iter().enumerate() {
            if k > 0 {
                parts.push(Doc::Hard);
            }
            parts.push(element.assemble(Doc::Nil));
        }
        for (k, i) in self.take_before(self.src.len()).into_iter().enumerate() {
            if !(m.items.is_empty() && k == 0) {
                parts.push(Doc::Hard);
                if self.blank_before(self.comments[i].start) {
                    parts.push(Doc::Hard);
                }
            }
            parts.push(self.comment_doc(i));
        }
        if parts.is_empty() {
            return Doc::Nil;
        }
        parts.push(Doc::Hard);
        cat(parts)
    }

    fn item_range(&self, item: &Item) -> (usize, usize) {
        match item {
            Item::Use(u) => span(u.span),
            Item::Type(t) => span(t.span),
            Item::Model(m) => span(m.span),
            Item::Resource(name) => (
                self.keyword_before(name.span.start as usize),
                name.span.end as usize,
            ),
            Item::Provider(p) => span(p.span),
            Item::Server(d) => span(d.span),
            Item::Tool(t) => span(t.span),
            Item::Agent(a) => span(a.span),
            Item::Flow(f) => span(f.span),
            Item::Test(t) => span(t.span),
            Item::Eval(e) => span(e.span),
        }
    }

    fn item(&mut self, item: &Item) -> Doc {
        match item {
            Item::Use(u) => self.use_decl(u),
            Item::Type(t) => self.type_decl(t),
            Item::Model(m) => self.model_decl(m),
            Item::Resource(name) => text(format!("resource {}", name.name)),
            Item::Provider(p) => self.provider_decl(p),
            Item::Server(d) => self.server_decl(d),
            Item::Tool(t) => self.tool_decl(t),
            Item::Agent(a) => self.agent_decl(a),
            Item::Flow(f) => self.flow_decl(f),
            Item::Test(t) => self.test_decl(t),
            Item::Eval(e) => self.eval_decl(e),
        }
    }

    fn use_decl(&mut self, u: &Use) -> Doc {
        let path = match &u.path {
            ModulePath::Std(parts) => parts
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join("."),
            ModulePath::File(path) => quoted(path),
        };
        let mut names = Vec::new();
        for (i, name) in u.names.iter().enumerate() {
            let (s, e) = span(name.span);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            names.push(self.elem(s, e, blank, |_| text(name.name.clone())));
        }
        let list = self.list("{", "}", names, u.span.end as usize, CALL_LIST, false);
        cat(vec![text(format!("use {path}.")), list])
    }

    fn type_decl(&mut self, t: &TypeDecl) -> Doc {
        match &t.ty.kind {
            TypeExprKind::Record(..) => {
                cat(vec![text(format!("type {} ", t.name.name)), self.ty(&t.ty)])
            }
            _ => cat(vec![
                text(format!("type {} = ", t.name.name)),
                self.ty(&t.ty),
            ]),
        }
    }

    fn model_decl(&mut self, m: &ModelDecl) -> Doc {
        let head = text(format!(
            "model {} = {}({})",
            m.name.name,
            m.provider.name,
            quoted(&m.model_id)
        ));
        if m.params.is_empty() {
            return head;
        }
        let (_, id_end) = span(m.model_id_span);
        let (paren, _) = self.token(id_end);
        let (open, _) = self.token(paren + 1);
        let close = self.closing(open);
        let record = self.object(&m.params, open, close + 1);
        cat(vec![head, text(" "), record])
    }

    fn provider_decl(&mut self, p: &ProviderDecl) -> Doc {
        let (_, end) = span(p.span);
        let b = self.bytes();
        let (_, name_end) = span(p.name.span);
        let (open, _) = self.token(name_end);
        // Clauses in source order: the tree keeps the last of each but the prices.
        let mut clauses: Vec<(usize, usize)> = Vec::new();
        let mut i = open + 1;
        let mut depth = 0usize;
        while i < end {
            let (s, e) = self.token(i);
            if s >= end.saturating_sub(1) || e <= s {
                break;
            }
            let word = &self.src[s..e];
            match b[s] {
                b'{' => depth += 1,
                b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth == 0 && ["protocol", "base_url", "api_key", "price"].contains(&word) {
                clauses.push((s, e));
            } else if let Some(last) = clauses.last_mut() {
                last.1 = e;
            }
            i = e;
        }
        let models: Vec<Option<String>> = clauses
            .iter()
            .map(|&(s, _)| {
                self.src[s..]
                    .starts_with("price")
                    .then(|| self.price_model(s, p))
            })
            .collect();
        let mut elements = Vec::new();
        for (n, &(s, e)) in clauses.iter().enumerate() {
            let blank = if n == 0 { Blank::Never } else { Blank::Source };
            let is_price = models[n].is_some();
            elements.push(self.elem_parts(s, e, blank, |pr| {
                if is_price {
                    pr.price_clause(s, e)
                } else {
                    pr.provider_clause(s, e)
                }
            }));
        }
        // Consecutive `price` entries align their `{`.
        let mut heads: Vec<String> = models
            .iter()
            .map(|m| m.as_ref().map(|m| format!("price {m}")).unwrap_or_default())
            .collect();
        let alignable: Vec<bool> = models.iter().map(Option::is_some).collect();
        let joined: Vec<bool> = elements.iter().map(|e| e.joined).collect();
        align_heads(&mut heads, &alignable, &joined);
        let mut inner = Vec::new();
        for (element, head) in elements.into_iter().zip(heads) {
            inner.push(Doc::Hard);
            inner.push(element.assemble(text(head)));
        }
        let body = self.body(inner, end);
        cat(vec![text(format!("provider {} ", p.name.name)), body])
    }

    fn price_model(&self, clause: usize, p: &ProviderDecl) -> String {
        let (s, e) = self.token(clause + "price".len());
        let token = &self.src[s..e];
        if token == "*" {
            return "*".into();
        }
        match p
            .prices
            .iter()
            .find(|price| price.span.start as usize == clause)
            .and_then(|price| price.model.as_ref())
        {
            Some(model) if !self.interpolates(s) => quoted(model),
            _ => token.to_string(),
        }
    }

    /// ` { input $a, output $b }`: the rest of a `price` entry after its model.
    fn price_clause(&mut self, start: usize, end: usize) -> Doc {
        let money_after = |pr: &Self, word: &str| -> String {
            pr.find_word(start, end, word)
                .map(|at| pr.token_text(at + word.len()).to_string())
                .unwrap_or_default()
        };
        let input = money_after(self, "input");
        let output = money_after(self, "output");
        let context = money_after(self, "context");
        if context.is_empty() {
            text(format!(" {{ input {input}, output {output} }}"))
        } else {
            text(format!(
                " {{ input {input}, output {output}, context {context} }}"
            ))
        }
    }

    /// `protocol`, `base_url` and `api_key`, token by token.
    fn provider_clause(&mut self, start: usize, end: usize) -> Doc {
        let mut out = String::new();
        let mut i = start;
        let mut previous = "";
        while i < end {
            let (s, e) = self.token(i);
            if s >= end || e <= s {
                break;
            }
            let token = &self.src[s..e];
            if !out.is_empty() && token != "." && previous != "." {
                out.push(' ');
            }
            if token.starts_with('"') {
                self.copied(s, e);
            }
            out.push_str(token);
            previous = token;
            i = e;
        }
        text(out)
    }

    fn params_doc(&mut self, params: &[Param], name_end: usize) -> Doc {
        let (open, _) = self.token(name_end);
        if self.bytes().get(open) != Some(&b'(') {
            return text("()");
        }
        let close = self.closing(open);
        let mut items = Vec::new();
        for (i, p) in params.iter().enumerate() {
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            let (s, _) = span(p.name.span);
            let (_, e) = span(p.ty.span);
            items.push(self.elem(s, e, blank, |pr| {
                let name = format!("{}{}: ", p.name.name, if p.optional { "?" } else { "" });
                cat(vec![text(name), pr.ty(&p.ty)])
            }));
        }
        self.list("(", ")", items, close, CALL_LIST, false)
    }

    fn tool_decl(&mut self, t: &ToolDecl) -> Doc {
        let params = self.params_doc(&t.params, t.name.span.end as usize);
        let output = self.signature_type(&t.output);
        let mut inner = Vec::new();
        let mut n = 0;
        let mut k = 0;
        while k < t.clauses.len() {
            let clause = &t.clauses[k];
            let (s, e) = span(clause.span);
            // `effect write writes x`: the reads and writes inside the effect clause.
            let mut j = k + 1;
            if matches!(clause.kind, ToolClauseKind::Effect(_)) {
                while j < t.clauses.len()
                    && matches!(
                        t.clauses[j].kind,
                        ToolClauseKind::Reads(_) | ToolClauseKind::Writes(_)
                    )
                    && t.clauses[j].span.start >= clause.span.start
                    && t.clauses[j].span.end <= clause.span.end
                {
                    j += 1;
                }
            }
            let group = &t.clauses[k..j];
            inner.push(Doc::Hard);
            let blank = if n == 0 { Blank::Never } else { Blank::Source };
            inner.push(self.elem(s, e, blank, |p| p.tool_clauses(group)));
            n += 1;
            k = j;
        }
        let body = self.body(inner, t.span.end as usize);
        cat(vec![
            text(format!("tool {}", t.name.name)),
            params,
            text(" -> "),
            output,
            text(" "),
            body,
        ])
    }

    /// `server NAME {` with one clause per line.
    fn server_decl(&mut self, d: &ServerDecl) -> Doc {
        let mut inner = Vec::new();
        for (i, clause) in d.clauses.iter().enumerate() {
            let (s, e) = span(clause.span);
            inner.push(Doc::Hard);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            inner.push(self.elem(s, e, blank, |p| p.server_clause(clause)));
        }
        let body = self.body(inner, d.span.end as usize);
        cat(vec![text(format!("server {} ", d.name.name)), body])
    }

    fn server_clause(&mut self, c: &ServerClause) -> Doc {
        match &c.kind {
            ServerClauseKind::Command(argv) => {
                let mut parts = vec![text("command [")];
                for (i, a) in argv.iter().enumerate() {
                    if i > 0 {
                        parts.push(text(", "));
                    }
                    parts.push(self.template(a));
                }
                parts.push(text("]"));
                cat(parts)
            }
            ServerClauseKind::Url(u) => cat(vec![text("url "), self.template(u)]),
            ServerClauseKind::Header { name, value } => cat(vec![
                text(format!("header {} ", quoted(name))),
                self.template(value),
            ]),
            ServerClauseKind::Env { name, value } => cat(vec![
                text(format!("env {} ", quoted(name))),
                self.template(value),
            ]),
            ServerClauseKind::Timeout(q) => text(format!("timeout {}", self.quantity(q))),
        }
    }

    fn tool_clauses(&mut self, clauses: &[ToolClause]) -> Doc {
        let mut parts = Vec::new();
        for (i, c) in clauses.iter().enumerate() {
            if i > 0 {
                parts.push(text(" "));
            }
            parts.push(self.tool_clause(c));
        }
        cat(parts)
    }

    fn tool_clause(&mut self, c: &ToolClause) -> Doc {
        match &c.kind {
            ToolClauseKind::Http { method, url } => {
                cat(vec![text(format!("http {method} ")), self.template(url)])
            }
            ToolClauseKind::Exec(argv) => {
                let (s, e) = span(c.span);
                let (open, _) = self.token(s + "exec".len());
                let has_comments = self.comments.iter().any(|c| c.start > open && c.start < e);
                let mut items = Vec::new();
                for (i, a) in argv.iter().enumerate() {
                    let (s, e) = span(a.span);
                    let blank = if i == 0 { Blank::Never } else { Blank::Source };
                    items.push(self.elem(s, e, blank, |p| p.template(a)));
                }
                if has_comments || items.iter().any(forces) {
                    let list = self.list("[", "]", items, e, CALL_LIST, false);
                    return cat(vec![text("exec "), list]);
                }
                // Argument vectors fill lines: flags stay next to their values.
                let n = items.len();
                let mut parts = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    if i + 1 < n {
                        parts.push(cat(vec![item, text(",")]));
                        parts.push(Doc::Line);
                    } else {
                        parts.push(item);
                    }
                }
                if n == 0 {
                    return text("exec []");
                }
                let inner = cat(vec![
                    Doc::Soft,
                    Doc::Fill(Rc::new(parts)),
                    if_break(text(","), Doc::Nil),
                ]);
                cat(vec![
                    text("exec "),
                    group(cat(vec![text("["), nest(inner), Doc::Soft, text("]")])),
                ])
            }
            ToolClauseKind::Builtin(name) => {
                let (s, e) = span(c.span);
                text(format!(
                    "builtin {}",
                    self.plain_or_copied(name, s + "builtin".len(), e)
                ))
            }
            ToolClauseKind::Header { name, value } => cat(vec![
                text(format!("header {} ", quoted(name))),
                self.template(value),
            ]),
            ToolClauseKind::Effect(e) => text(format!("effect {}", e.as_str())),
            ToolClauseKind::Reads(names) => text(format!("reads {}", join_names(names))),
            ToolClauseKind::Writes(names) => text(format!("writes {}", join_names(names))),
            ToolClauseKind::Timeout(q) => text(format!("timeout {}", self.quantity(q))),
            ToolClauseKind::Retry(r) => text(self.retry(r)),
            ToolClauseKind::Idempotency(t) => cat(vec![text("idempotency "), self.template(t)]),
            ToolClauseKind::Limit(q) => text(format!("limit {} tokens", self.quantity(q))),
            ToolClauseKind::Query(e) => cat(vec![text("query "), self.expr(e)]),
            ToolClauseKind::Body { encoding, value } => {
                let head = match encoding {
                    BodyEncoding::Json => "body ".to_string(),
                    BodyEncoding::Form => "body form ".to_string(),
                };
                cat(vec![text(head), self.expr(value)])
            }
            ToolClauseKind::Format(f) => text(format!("format {}", f.as_str())),
            ToolClauseKind::Raw(names) => text(format!("raw {}", join_names(names))),
            ToolClauseKind::Mcp { server, tool } => match tool {
                Some(name) => text(format!("mcp {} {}", server.name, quoted(name))),
                None => text(format!("mcp {}", server.name)),
            },
        }
    }

    /// A plain string the tree keeps as text: re-escaped, or copied when
    /// the source interpolates (which the tree does not keep).
    fn plain_or_copied(&mut self, value: &str, from: usize, to: usize) -> String {
        let (s, e) = self.token(from);
        if s < to && self.bytes().get(s) == Some(&b'"') && self.interpolates(s) {
            self.copied(s, e);
            return self.src[s..e].to_string();
        }
        quoted(value)
    }

    fn quantity(&self, q: &Quantity) -> &'s str {
        let (s, e) = span(q.span);
        &self.src[s..e]
    }

    fn retry(&self, r: &Retry) -> String {
        let mut out = format!("retry {}", r.attempts);
        if !r.on.is_empty() {
            out.push_str(&format!(" on {}", join_names(&r.on)));
        }
        if let Some((base, factor)) = &r.backoff {
            out.push_str(&format!(" backoff {}", self.quantity(base)));
            if let Some(factor) = factor {
                let (star, _) = self.token(base.span.end as usize);
                let number = self.token_text(star + 1);
                let number = if number.parse::<f64>().is_ok() {
                    number.to_string()
                } else {
                    factor.to_string()
                };
                out.push_str(&format!(" * {number}"));
            }
        }
        if let Some(cap) = &r.cap {
            out.push_str(&format!(" cap {}", self.quantity(cap)));
        }
        if r.jitter {
            out.push_str(" jitter");
        }
        out
    }

    fn agent_decl(&mut self, a: &AgentDecl) -> Doc {
        let params = self.params_doc(&a.params, a.name.span.end as usize);
        let output = self.signature_type(&a.output);
        let mut inner = Vec::new();
        for (i, c) in a.clauses.iter().enumerate() {
            let (s, e) = span(c.span);
            inner.push(Doc::Hard);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            inner.push(self.elem(s, e, blank, |p| p.agent_clause(c)));
        }
        let body = self.body(inner, a.span.end as usize);
        cat(vec![
            text(format!("agent {}", a.name.name)),
            params,
            text(" -> "),
            output,
            text(" "),
            body,
        ])
    }

    fn agent_clause(&mut self, c: &AgentClause) -> Doc {
        match &c.kind {
            AgentClauseKind::Model(m) => text(format!("model {}", m.name)),
            AgentClauseKind::Tools(tools) => {
                let mut items = Vec::new();
                for (i, t) in tools.iter().enumerate() {
                    let (s, e) = span(t.span);
                    let blank = if i == 0 { Blank::Never } else { Blank::Source };
                    items.push(self.elem(s, e, blank, |_| text(t.name.clone())));
                }
                let list = self.list("[", "]", items, c.span.end as usize, CALL_LIST, false);
                cat(vec![text("tools "), list])
            }
            AgentClauseKind::May(e) => text(format!("may {}", e.as_str())),
            AgentClauseKind::MaxSteps(n) => text(format!("max_steps {n}")),
            AgentClauseKind::MaxRepeat(n) => text(format!("max_repeat {n}")),
            AgentClauseKind::Instructions(t) => cat(vec![text("instructions "), self.template(t)]),
            AgentClauseKind::Budget(b) => self.budget(b),
            AgentClauseKind::Timeout(q) => text(format!("timeout {}", self.quantity(q))),
            AgentClauseKind::Retry(r) => text(self.retry(r)),
        }
    }

    fn budget(&mut self, b: &Budget) -> Doc {
        let mut items = Vec::new();
        for (i, (name, q)) in b.entries.iter().enumerate() {
            let (s, _) = span(name.span);
            let (_, e) = span(q.span);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            items.push(self.elem(s, e, blank, |p| {
                text(format!("{} {}", name.name, p.quantity(q)))
            }));
        }
        let list = self.list("{", "}", items, b.span.end as usize, FIELD_LIST, false);
        cat(vec![text("budget "), list])
    }

    fn flow_decl(&mut self, f: &FlowDecl) -> Doc {
        let params = self.params_doc(&f.params, f.name.span.end as usize);
        let output = self.signature_type(&f.output);
        let inner = self.stmts(&f.body, None);
        let body = self.body(inner, f.span.end as usize);
        cat(vec![
            text(format!("flow {}", f.name.name)),
            params,
            text(" -> "),
            output,
            text(" "),
            body,
        ])
    }

    fn test_decl(&mut self, t: &TestDecl) -> Doc {
        let mut inner = Vec::new();
        for (i, stmt) in t.stmts.iter().enumerate() {
            let (s, e) = match stmt {
                TestStmt::Run(call) => (
                    self.keyword_before(call.span.start as usize),
                    call.span.end as usize,
                ),
                TestStmt::Expect(e) => {
                    let (s, end) = self.paren_range(e.span);
                    (self.keyword_before(s), end)
                }
                TestStmt::Given { span: sp, .. }
                | TestStmt::GivenGate { span: sp, .. }
                | TestStmt::ExpectCalls { span: sp, .. }
                | TestStmt::ExpectFailure { span: sp, .. } => span(*sp),
            };
            inner.push(Doc::Hard);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            inner.push(self.elem(s, e, blank, |p| p.test_stmt(stmt, s, e)));
        }
        let body = self.body(inner, t.span.end as usize);
        cat(vec![text(format!("test {} ", quoted(&t.name))), body])
    }

    fn eval_decl(&mut self, d: &EvalDecl) -> Doc {
        let mut inner = Vec::new();
        for (i, c) in d.clauses.iter().enumerate() {
            let (s, e) = span(c.span);
            inner.push(Doc::Hard);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            inner.push(self.elem(s, e, blank, |p| p.eval_clause(c)));
        }
        let body = self.body(inner, d.span.end as usize);
        cat(vec![text(format!("eval {} ", quoted(&d.name))), body])
    }

    fn eval_clause(&mut self, c: &EvalClause) -> Doc {
        match &c.kind {
            EvalClauseKind::Run { flow, expecting } => match expecting {
                Some(t) => cat(vec![
                    text(format!("run {} expecting ", flow.name)),
                    self.signature_type(t),
                ]),
                None => text(format!("run {}", flow.name)),
            },
            EvalClauseKind::Dataset { path, path_span } => {
                let (s, e) = span(*path_span);
                text(format!("dataset {}", self.plain_or_copied(path, s, e)))
            }
            EvalClauseKind::Row { input, expecting } => {
                let mut parts = vec![text("row "), self.expr(input)];
                if let Some(e) = expecting {
                    parts.push(text(" expecting "));
                    parts.push(self.expr(e));
                }
                cat(parts)
            }
            EvalClauseKind::Score {
                name,
                weight,
                scorer,
            } => {
                let head = match weight {
                    Some((w, _)) => format!("score {} weight {w} = ", name.name),
                    None => format!("score {} = ", name.name),
                };
                cat(vec![text(head), self.step(scorer)])
            }
            EvalClauseKind::Threshold(t) => text(format!("threshold {t}")),
            EvalClauseKind::Concurrency(n) => text(format!("concurrency {n}")),
            EvalClauseKind::Budget(b) => self.budget(b),
        }
    }

    fn test_stmt(&mut self, stmt: &TestStmt, start: usize, end: usize) -> Doc {
        match stmt {
            TestStmt::Run(call) => cat(vec![text("run "), self.call(call)]),
            TestStmt::Given {
                target, outcome, ..
            } => match outcome {
                Given::Returns(e) => cat(vec![
                    text(format!("given {} returns ", target.name)),
                    self.expr(e),
                ]),
                Given::Fails(message) => {
                    let at = self
                        .find_word(target.span.end as usize, end, "fails")
                        .unwrap_or(start)
                        + "fails".len();
                    text(format!(
                        "given {} fails {}",
                        target.name,
                        self.plain_or_copied(message, at, end)
                    ))
                }
            },
            TestStmt::GivenGate { gate, outcome, .. } => match outcome {
                GateOutcome::Approves(None) => {
                    text(format!("given approve {} approves", gate.name))
                }
                GateOutcome::Approves(Some(e)) => cat(vec![
                    text(format!("given approve {} approves with ", gate.name)),
                    self.expr(e),
                ]),
                GateOutcome::Rejects(reason) => {
                    let at = self
                        .find_word(gate.span.end as usize, end, "rejects")
                        .unwrap_or(start)
                        + "rejects".len();
                    let (s, _) = self.token(at);
                    let has_string = s < end && self.bytes().get(s) == Some(&b'"');
                    match (reason, has_string) {
                        (Some(r), _) => text(format!(
                            "given approve {} rejects {}",
                            gate.name,
                            self.plain_or_copied(r, at, end)
                        )),
                        (None, true) => text(format!(
                            "given approve {} rejects {}",
                            gate.name,
                            self.plain_or_copied("", at, end)
                        )),
                        (None, false) => text(format!("given approve {} rejects", gate.name)),
                    }
                }
            },
            TestStmt::Expect(e) => cat(vec![text("expect "), self.expr(e)]),
            TestStmt::ExpectCalls { target, times, .. } => {
                text(format!("expect {} called {times} times", target.name))
            }
            TestStmt::ExpectFailure { text: message, .. } => {
                let at = self.find_word(start, end, "failure").unwrap_or(start) + "failure".len();
                let (s, _) = self.token(at);
                match (message, s < end && self.bytes().get(s) == Some(&b'"')) {
                    (Some(m), _) => text(format!(
                        "expect failure {}",
                        self.plain_or_copied(m, at, end)
                    )),
                    (None, true) => text(format!(
                        "expect failure {}",
                        self.plain_or_copied("", at, end)
                    )),
                    (None, false) => text("expect failure"),
                }
            }
        }
    }

    // ------------------------------------------------------------ types

    fn ty(&mut self, t: &TypeExpr) -> Doc {
        match &t.kind {
            TypeExprKind::Union(members) => {
                let mut parts = Vec::new();
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        parts.push(text(" | "));
                    }
                    parts.push(self.ty(m));
                }
                cat(parts)
            }
            TypeExprKind::Optional(inner) => match &inner.kind {
                TypeExprKind::Constrained(base, constraints) => {
                    let base = self.ty(base);
                    cat(vec![base, text("?"), text(self.constraints(constraints))])
                }
                _ => cat(vec![self.ty(inner), text("?")]),
            },
            TypeExprKind::Constrained(base, constraints) => {
                let base = self.ty(base);
                cat(vec![base, text(self.constraints(constraints))])
            }
            TypeExprKind::List(inner) => cat(vec![text("["), self.ty(inner), text("]")]),
            TypeExprKind::Record(fields, openness) => {
                let record = self.record(fields, t.span);
                match openness {
                    crate::types::Openness::Open => record,
                    crate::types::Openness::Exact => cat(vec![text("exact "), record]),
                }
            }
            TypeExprKind::Schema(path) => text(format!("schema {}", quoted(path))),
            TypeExprKind::Literal(lit) => text(self.literal(lit, t.span.start as usize)),
            TypeExprKind::Named(name) => text(name.name.clone()),
        }
    }

    /// The output type after `->`: on one line (unless written broken or
    /// holding comments), so a long signature breaks its parameters instead.
    fn signature_type(&mut self, t: &TypeExpr) -> Doc {
        let d = self.ty(t);
        if forces(&d) {
            return d;
        }
        let mut flat = String::new();
        flat_text(&d, &mut flat);
        text(flat)
    }

    fn literal(&self, lit: &Literal, at: usize) -> String {
        match lit {
            Literal::Str(s) => quoted(s),
            Literal::Number(n) => {
                let token = self.token_text(at);
                if token.trim_end_matches(['k', 'M']).parse::<f64>().is_ok() {
                    token.to_string()
                } else {
                    n.to_string()
                }
            }
            Literal::Bool(b) => b.to_string(),
        }
    }

    fn record(&mut self, fields: &[FieldDecl], s: Span) -> Doc {
        let (open, end) = span(s);
        let first = fields.first().map_or(end, |f| f.name.span.start as usize);
        let broken = self.written_broken(open, first);
        let mut elements = Vec::new();
        let mut open_range = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let (fs, _) = span(f.name.span);
            let (_, fe) = span(f.ty.span);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            let element = self.elem_parts(fs, fe, blank, |p| {
                let name = format!("{}{}: ", f.name.name, if f.optional { "?" } else { "" });
                cat(vec![text(name), p.ty(&f.ty)])
            });
            let mut flat = String::new();
            flat_text(&element.body, &mut flat);
            open_range.push(flat.ends_with(".."));
            elements.push(element);
        }
        // The parser reads a comment after an open range (`len 1..`) as part
        // of the range: a comma ends the range before such a comment.
        let dangling = self
            .comments
            .iter()
            .enumerate()
            .any(|(i, c)| !self.used[i] && c.start < end && c.start > open);
        let n = elements.len();
        let commented: Vec<bool> = (0..n)
            .map(|i| {
                elements[i].suffix.is_some()
                    || match elements.get(i + 1) {
                        Some(next) => next.before.iter().any(|d| matches!(d, Doc::Text(_))),
                        None => dangling,
                    }
            })
            .collect();
        let mut items = Vec::new();
        for (i, element) in elements.into_iter().enumerate() {
            let mut element = element;
            if open_range[i] && commented[i] {
                element.body = cat(vec![element.body, if_break(text(","), Doc::Nil)]);
            }
            items.push(element.assemble(Doc::Nil));
        }
        self.list("{", "}", items, end, FIELD_LIST, broken)
    }

    fn constraints(&self, constraints: &[Constraint]) -> String {
        let mut out = String::new();
        for c in constraints {
            let (s, e) = span(c.span);
            match &c.kind {
                ConstraintKind::Matching(_) => {
                    out.push_str(" matching ");
                    out.push_str(self.token_text(s + "matching".len()));
                }
                ConstraintKind::Len { min, max } => {
                    out.push_str(" len ");
                    let range = self.src[s..e].contains("..");
                    if let Some(min) = min {
                        out.push_str(&min.to_string());
                    }
                    if range {
                        out.push_str("..");
                        if let Some(max) = max {
                            out.push_str(&max.to_string());
                        }
                    }
                }
                ConstraintKind::Bound(op, n) => {
                    let op_text = match op {
                        BoundOp::Ge => ">=",
                        BoundOp::Gt => ">",
                        BoundOp::Le => "<=",
                        BoundOp::Lt => "<",
                    };
                    let (os, _) = self.token(s);
                    let number = self.token_text(os + op_text.len());
                    let number = if number.trim_end_matches(['k', 'M']).parse::<f64>().is_ok() {
                        number.to_string()
                    } else {
                        n.to_string()
                    };
                    out.push_str(&format!(" {op_text} {number}"));
                }
            }
        }
        out
    }

    // ------------------------------------------------------------ flows

    /// The statements of a flow or block, and the block's result.
    fn stmts(&mut self, stmts: &[Stmt], result: Option<&Step>) -> Vec<Doc> {
        let mut inner = Vec::new();
        for (i, stmt) in stmts.iter().enumerate() {
            let (s, e) = match stmt {
                Stmt::Budget(b) => span(b.span),
                Stmt::Let(l) => span(l.span),
                Stmt::Check(c) => span(c.span),
                Stmt::Return(_, sp) => span(*sp),
            };
            inner.push(Doc::Hard);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            inner.push(self.elem(s, e, blank, |p| p.stmt(stmt)));
        }
        if let Some(step) = result {
            let (s, e) = match &step.kind {
                StepKind::Expr(x) => self.paren_range(x.span),
                _ => span(step.span),
            };
            inner.push(Doc::Hard);
            let blank = if stmts.is_empty() {
                Blank::Never
            } else {
                Blank::Source
            };
            inner.push(self.elem(s, e, blank, |p| p.step(step)));
        }
        inner
    }

    fn stmt(&mut self, stmt: &Stmt) -> Doc {
        match stmt {
            Stmt::Budget(b) => self.budget(b),
            Stmt::Let(l) => {
                let mut parts = vec![text(format!("let {} = ", l.name.name)), self.step(&l.step)];
                if !l.after.is_empty() {
                    parts.push(text(format!(" after {}", join_names(&l.after))));
                }
                if let Some(f) = &l.fallback {
                    parts.push(text(" fallback "));
                    parts.push(self.step(f));
                }
                cat(parts)
            }
            Stmt::Check(c) => {
                let mut inner = Vec::new();
                for (i, (cond, message)) in c.requires.iter().enumerate() {
                    let (cs, _) = self.paren_range(cond.span);
                    let s = self.keyword_before(cs);
                    let (_, e) = span(message.span);
                    inner.push(Doc::Hard);
                    let blank = if i == 0 { Blank::Never } else { Blank::Source };
                    inner.push(self.elem(s, e, blank, |p| {
                        let cond = p.expr(cond);
                        cat(vec![
                            text("require "),
                            cond,
                            text(", "),
                            p.template(message),
                        ])
                    }));
                }
                let body = self.body(inner, c.span.end as usize);
                cat(vec![text(format!("check {} ", c.name.name)), body])
            }
            Stmt::Return(e, _) => cat(vec![text("return "), self.expr(e)]),
        }
    }

    fn block(&mut self, b: &Block) -> Doc {
        let inner = self.stmts(&b.stmts, Some(&b.result));
        self.body(inner, b.span.end as usize)
    }

    fn step(&mut self, step: &Step) -> Doc {
        match &step.kind {
            StepKind::Call(c) => self.call(c),
            StepKind::Expr(e) => self.expr(e),
            StepKind::Llm(l) => {
                let output = self.signature_type(&l.output);
                let mut inner = Vec::new();
                for (i, c) in l.clauses.iter().enumerate() {
                    let (s, e) = span(c.span);
                    inner.push(Doc::Hard);
                    let blank = if i == 0 { Blank::Never } else { Blank::Source };
                    inner.push(self.elem(s, e, blank, |p| p.llm_clause(c)));
                }
                let body = self.body(inner, step.span.end as usize);
                cat(vec![
                    text(format!("llm {} -> ", l.model.name)),
                    output,
                    text(" "),
                    body,
                ])
            }
            StepKind::Approve(a) => {
                enum Clause<'a> {
                    Show(&'a Expr),
                    Timeout(&'a Quantity),
                    OnTimeout(Decision),
                }
                let mut clauses: Vec<(usize, usize, Clause)> = Vec::new();
                for e in &a.show {
                    let (s, end) = self.paren_range(e.span);
                    clauses.push((self.keyword_before(s), end, Clause::Show(e)));
                }
                if let Some(q) = &a.timeout {
                    let (s, e) = span(q.span);
                    clauses.push((self.keyword_before(s), e, Clause::Timeout(q)));
                }
                if let Some((d, sp)) = &a.on_timeout {
                    let (s, e) = span(*sp);
                    clauses.push((self.keyword_before(s), e, Clause::OnTimeout(*d)));
                }
                clauses.sort_by_key(|c| c.0);
                let mut inner = Vec::new();
                for (i, (s, e, clause)) in clauses.iter().enumerate() {
                    inner.push(Doc::Hard);
                    let blank = if i == 0 { Blank::Never } else { Blank::Source };
                    inner.push(self.elem(*s, *e, blank, |p| match clause {
                        Clause::Show(e) => cat(vec![text("show "), p.expr(e)]),
                        Clause::Timeout(q) => text(format!("timeout {}", p.quantity(q))),
                        Clause::OnTimeout(Decision::Approve) => text("on_timeout approve"),
                        Clause::OnTimeout(Decision::Reject) => text("on_timeout reject"),
                    }));
                }
                let body = self.body(inner, step.span.end as usize);
                cat(vec![text(format!("approve {} ", a.gate.name)), body])
            }
            StepKind::For(f) => {
                let iterable = self.expr(&f.iterable);
                let mut parallel = match &f.parallel {
                    Some((n, _)) => format!(" parallel {n}"),
                    None => String::new(),
                };
                if let Some((n, _)) = &f.tolerate {
                    parallel.push_str(&format!(" tolerate {n}"));
                }
                let body = self.block(&f.body);
                cat(vec![
                    text(format!("for {} in ", f.var.name)),
                    iterable,
                    text(format!("{parallel} ")),
                    body,
                ])
            }
            StepKind::If(i) => self.if_step(i),
            StepKind::Match(m) => self.match_step(m, step.span),
        }
    }

    fn if_step(&mut self, i: &IfStep) -> Doc {
        let condition = self.expr(&i.condition);
        let then = self.block(&i.then);
        let mut parts = vec![text("if "), condition, text(" "), then];
        if let Some(otherwise) = &i.otherwise {
            parts.push(text(" else "));
            match &otherwise.result.kind {
                StepKind::If(nested)
                    if otherwise.stmts.is_empty() && otherwise.span == otherwise.result.span =>
                {
                    parts.push(self.if_step(nested))
                }
                _ => parts.push(self.block(otherwise)),
            }
        }
        cat(parts)
    }

    fn match_step(&mut self, m: &MatchStep, s: Span) -> Doc {
        let scrutinee = self.expr(&m.scrutinee);
        let is_step =
            |arm: &MatchArm| arm.body.stmts.is_empty() && arm.body.span == arm.body.result.span;
        let patterns: Vec<String> = m
            .arms
            .iter()
            .map(|arm| match &arm.pattern {
                None => "_".to_string(),
                Some(lit) => self.literal(lit, arm.pattern_span.start as usize),
            })
            .collect();
        let ranges: Vec<(usize, usize)> = m
            .arms
            .iter()
            .map(|arm| {
                let (_, e) = match &arm.body.result.kind {
                    StepKind::Expr(x) if is_step(arm) => self.paren_range(x.span),
                    _ => span(arm.body.span),
                };
                (arm.pattern_span.start as usize, e)
            })
            .collect();
        let mut elements = Vec::new();
        for (i, arm) in m.arms.iter().enumerate() {
            let (s, e) = ranges[i];
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            elements.push(self.elem_parts(s, e, blank, |p| {
                if is_step(arm) {
                    p.step(&arm.body.result)
                } else {
                    p.block(&arm.body)
                }
            }));
        }
        // Consecutive one-line arms align their `=>`.
        let mut heads = patterns;
        let alignable: Vec<bool> = m
            .arms
            .iter()
            .map(|arm| {
                is_step(arm)
                    && matches!(arm.body.result.kind, StepKind::Call(_) | StepKind::Expr(_))
            })
            .collect();
        let joined: Vec<bool> = elements.iter().map(|e| e.joined).collect();
        align_heads(&mut heads, &alignable, &joined);
        let mut inner = Vec::new();
        for (element, head) in elements.into_iter().zip(heads) {
            inner.push(Doc::Hard);
            inner.push(element.assemble(text(format!("{head} => "))));
        }
        let body = self.body(inner, s.end as usize);
        cat(vec![text("match "), scrutinee, text(" "), body])
    }

    fn llm_clause(&mut self, c: &LlmClause) -> Doc {
        match &c.kind {
            LlmClauseKind::Prompt(t) => cat(vec![text("prompt "), self.template(t)]),
            LlmClauseKind::System(t) => cat(vec![text("system "), self.template(t)]),
            LlmClauseKind::Retry(r) => text(self.retry(r)),
            LlmClauseKind::Timeout(q) => text(format!("timeout {}", self.quantity(q))),
            LlmClauseKind::MaxTokens(q) => text(format!("max_tokens {}", self.quantity(q))),
            LlmClauseKind::Budget(b) => self.budget(b),
        }
    }

    fn call(&mut self, c: &Call) -> Doc {
        let (_, end) = span(c.span);
        let mut items = Vec::new();
        let mut last_value: Option<Doc> = None;
        let n = c.args.len();
        for (i, (name, value)) in c.args.iter().enumerate() {
            let (s, _) = span(name.span);
            let (_, e) = self.paren_range(value.span);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            let keep = &mut last_value;
            items.push(self.elem(s, e, blank, |p| {
                let v = p.expr(value);
                if i + 1 == n {
                    *keep = Some(v.clone());
                }
                cat(vec![text(format!("{}: ", name.name)), v])
            }));
        }
        let last_decorated = self.decorated;
        let open = format!("{}(", c.callee.name);
        let normal = self.list(&open, ")", items.clone(), end, CALL_LIST, false);
        // The last argument a record or list: `f(a: 1, b: {` … `})`.
        let Some((last_name, last)) = c.args.last() else {
            return normal;
        };
        let huggable = matches!(&last.kind, ExprKind::Object(e) if !e.is_empty())
            || matches!(&last.kind, ExprKind::List(e) if !e.is_empty());
        let (_, le) = span(last.span);
        // Comments between `name:` and the record move into it; any other
        // comment in the arguments needs them one per line.
        let (name_start, _) = span(last_name.span);
        let quiet = !self.comments.iter().any(|k| {
            k.start >= c.span.start as usize
                && k.start < end
                && (k.start < name_start || k.start >= le)
        });
        let (Some(Doc::Group(inner, _)), true, true, false, 0) = (
            &last_value,
            huggable,
            quiet,
            last_decorated,
            self.interpolation,
        ) else {
            return normal;
        };
        let mut head = format!("{}(", c.callee.name);
        for item in &items[..n - 1] {
            if forces(item) {
                return normal;
            }
            flat_text(item, &mut head);
            head.push_str(", ");
        }
        head.push_str(&format!("{}: ", last_name.name));
        let hug = cat(vec![text(head), Doc::Group(inner.clone(), true), text(")")]);
        Doc::Choice(Rc::new(vec![normal.clone(), hug, normal]))
    }

    // ------------------------------------------------------------ expressions

    fn expr(&mut self, e: &Expr) -> Doc {
        match &e.kind {
            ExprKind::Str(t) => self.template(t),
            ExprKind::Number(n) => {
                let (s, end) = span(e.span);
                let token = &self.src[s..end];
                if token.trim_end_matches(['k', 'M']).parse::<f64>().is_ok() {
                    text(token)
                } else {
                    text(n.to_string())
                }
            }
            ExprKind::Bool(b) => text(b.to_string()),
            ExprKind::Null => text("null"),
            ExprKind::Object(entries) => {
                let (s, end) = span(e.span);
                self.object(entries, s, end)
            }
            ExprKind::List(items) => {
                let mut docs = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let (s, end) = self.paren_range(item.span);
                    let blank = if i == 0 { Blank::Never } else { Blank::Source };
                    docs.push(self.elem(s, end, blank, |p| p.expr(item)));
                }
                self.list("[", "]", docs, e.span.end as usize, VALUE_LIST, false)
            }
            ExprKind::Env(name) => text(format!("env.{}", name.name)),
            ExprKind::Name(name) => text(name.name.clone()),
            ExprKind::Member(x, field) => {
                cat(vec![self.operand(x, 5), text(format!(".{}", field.name))])
            }
            ExprKind::Index(x, i) => {
                let x = self.operand(x, 5);
                cat(vec![x, text("["), self.expr(i), text("]")])
            }
            // `not a == b` is `not (a == b)`; the parentheses say so.
            ExprKind::Not(x) => cat(vec![text("not "), self.operand(x, 5)]),
            ExprKind::And(a, b) => self.binary(a, "and", b, 2),
            ExprKind::Or(a, b) => self.binary(a, "or", b, 1),
            ExprKind::Compare(a, op, b) => self.binary(a, op.as_str(), b, 4),
        }
    }

    /// Left-associative: the right operand needs parentheses at equal precedence.
    fn binary(&mut self, a: &Expr, op: &str, b: &Expr, level: u8) -> Doc {
        let left = self.operand(a, level);
        let right = self.operand(b, level + 1);
        cat(vec![left, text(format!(" {op} ")), right])
    }

    fn operand(&mut self, e: &Expr, min: u8) -> Doc {
        let d = self.expr(e);
        if precedence(e) < min {
            cat(vec![text("("), d, text(")")])
        } else {
            d
        }
    }

    fn object(&mut self, entries: &[(Ident, Expr)], open: usize, end: usize) -> Doc {
        let first = entries.first().map_or(end, |(k, _)| k.span.start as usize);
        let broken = self.written_broken(open, first);
        let mut items = Vec::new();
        for (i, (key, value)) in entries.iter().enumerate() {
            let (s, _) = span(key.span);
            let (_, e) = self.paren_range(value.span);
            let blank = if i == 0 { Blank::Never } else { Blank::Source };
            items.push(self.elem(s, e, blank, |p| {
                cat(vec![text(format!("{}: ", key.name)), p.expr(value)])
            }));
        }
        self.list("{", "}", items, end, OBJECT_LIST, broken)
    }

    // ------------------------------------------------------------ strings

    fn template(&mut self, t: &Template) -> Doc {
        let (s, e) = span(t.span);
        let triple = self.src[s..].starts_with("\"\"\"");
        if !triple || self.interpolation > 0 {
            return text(self.plain_string(t));
        }
        let block = self.src[s..e].contains('\n')
            || t.parts
                .iter()
                .any(|p| matches!(p, TemplatePart::Text(t) if t.contains('\n')));
        let mut content = String::new();
        let n = t.parts.len();
        for (i, part) in t.parts.iter().enumerate() {
            match part {
                TemplatePart::Text(s) => escape_triple(s, !block && i + 1 == n, &mut content),
                TemplatePart::Expr(x) => content.push_str(&self.interpolation_text(x)),
            }
        }
        if !block {
            let candidate = format!("\"\"\"{content}\"\"\"");
            if self.same_template(&candidate, t) {
                return text(candidate);
            }
            return text(self.plain_string(t));
        }
        let lines: Vec<&str> = content.split('\n').collect();
        let mut candidate = String::from("\"\"\"");
        for line in &lines {
            candidate.push('\n');
            if !line.is_empty() {
                candidate.push_str("  ");
                candidate.push_str(line);
            }
        }
        candidate.push_str("\n\"\"\"");
        if !self.same_template(&candidate, t) {
            return text(self.plain_string(t));
        }
        let mut inner = Vec::new();
        for line in lines {
            inner.push(Doc::Hard);
            inner.push(text(line));
        }
        cat(vec![
            text("\"\"\""),
            nest(cat(inner)),
            Doc::Hard,
            text("\"\"\""),
        ])
    }

    /// Whether `candidate` (a string literal) parses to the same template.
    fn same_template(&self, candidate: &str, t: &Template) -> bool {
        let source = format!("flow f() -> string {{\n  return {candidate}\n}}\n");
        let (module, problems) = crate::parser::parse(FileId(0), &source);
        if !problems.is_empty() {
            return false;
        }
        let Some(Item::Flow(f)) = module.items.first() else {
            return false;
        };
        let Some(Stmt::Return(
            Expr {
                kind: ExprKind::Str(parsed),
                ..
            },
            _,
        )) = f.body.first()
        else {
            return false;
        };
        crate::canonical::template(parsed) == crate::canonical::template(t)
    }

    fn plain_string(&mut self, t: &Template) -> String {
        let mut out = String::from("\"");
        for part in &t.parts {
            match part {
                TemplatePart::Text(s) => escape_plain(s, &mut out),
                TemplatePart::Expr(x) => out.push_str(&self.interpolation_text(x)),
            }
        }
        out.push('"');
        out
    }

    fn interpolation_text(&mut self, x: &Expr) -> String {
        self.interpolation += 1;
        let d = self.expr(x);
        self.interpolation -= 1;
        let mut inner = String::new();
        flat_text(&d, &mut inner);
        // `{{` would be a literal brace.
        if inner.starts_with('{') {
            format!("{{ {inner} }}")
        } else {
            format!("{{{inner}}}")
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
