//! Source files and positions. Every diagnostic points into a [`Sources`]
//! table through a [`Span`], so a problem in an imported file renders with
//! that file's text and name.

use std::fmt;
use std::sync::Arc;

/// Index of a file in [`Sources`].
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span {
            file,
            start: start as u32,
            end: end as u32,
        }
    }

    /// The smallest span covering both (same file assumed).
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.end == self.start
    }
}

/// Where a file came from: the user's disk or the embedded standard library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Disk(std::path::PathBuf),
    Stdin,
    Std(&'static str),
}

/// `text` with every lone `\r` (a classic Mac line ending) turned into
/// `\n`; `\r\n` stays. Each byte stays where it was, so spans into either
/// text agree. Every reader of Flow text starts here, so the rest of the
/// crate only knows `\n` (and `\r\n`) as a line end.
pub fn unify_line_endings(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let lone = |i: usize| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n');
    // Most files have no `\r` at all; `contains` finds that a word at a time.
    if !bytes.contains(&b'\r') || !(0..bytes.len()).any(lone) {
        return std::borrow::Cow::Borrowed(text);
    }
    let unified: Vec<u8> = (0..bytes.len())
        .map(|i| if lone(i) { b'\n' } else { bytes[i] })
        .collect();
    // Only ASCII bytes were replaced by ASCII bytes.
    std::borrow::Cow::Owned(
        String::from_utf8(unified)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

#[derive(Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics: the path as the user wrote it, `<stdin>`, or `std/models.flow`.
    pub name: String,
    pub origin: Origin,
    pub text: Arc<str>,
    line_starts: Vec<u32>,
}

impl SourceFile {
    pub fn new(name: String, origin: Origin, text: Arc<str>) -> SourceFile {
        let mut line_starts = vec![0];
        // A `char` pattern searches with `memchr`, a word at a time.
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i as u32 + 1));
        SourceFile {
            name,
            origin,
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: u32) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line] as usize;
        let end = (offset as usize).min(self.text.len());
        let col = self
            .text
            .get(start..end)
            .map_or(end - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    pub fn is_std(&self) -> bool {
        matches!(self.origin, Origin::Std(_))
    }
}

/// Every file read in one compilation.
#[derive(Debug, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        FileId(self.files.len() as u32 - 1)
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }

    pub fn text(&self, span: Span) -> &str {
        self.get(span.file)
            .text
            .get(span.start as usize..span.end as usize)
            .unwrap_or("")
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
