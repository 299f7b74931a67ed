//! The one hand-written scanner of Flow text. The grammar (pest) recognises
//! the language; this scanner answers the questions a grammar cannot answer
//! cheaply or safely, in one pass and without recursion:
//!
//! - where the `//` comments are (skipping strings, their interpolations,
//!   which are code and may hold comments, and regular expressions), so the
//!   parser can end a node's span where its code ends and the formatter can
//!   keep every comment;
//! - where bracket nesting (brackets and interpolations) or an `else if`
//!   chain first passes a limit, before pest, which recurses on both, sees
//!   the text;
//! - where a token ends (a string, a pattern, a number with its unit), for
//!   the formatter copying a literal's spelling.
//!
//! A lone `/` starts a regular expression: the grammar has no other use for
//! it outside comments.

/// What one pass over a file found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Byte ranges of the `//` comments, in order, each up to (not
    /// including) its line end.
    pub comments: Vec<(usize, usize)>,
    /// The offset where nesting first passed the limit, if it did (the scan
    /// stops there).
    pub too_deep: Option<usize>,
}

/// Scans `text`; nesting deeper than `limit` (brackets and interpolations
/// together, or `else if` links in one statement) stops the scan.
pub fn scan(text: &str, limit: usize) -> Scan {
    let mut s = Scanner::new(text.as_bytes(), 0, limit);
    while s.i < s.b.len() && s.too_deep.is_none() {
        s.step();
    }
    Scan {
        comments: s.comments,
        too_deep: s.too_deep,
    }
}

/// The comments of `text` (see [`Scan::comments`]).
pub fn comments(text: &str) -> Vec<(usize, usize)> {
    scan(text, usize::MAX).comments
}

/// The end of the string that starts at `i` (at its `"` or `"""`).
pub fn string_end(b: &[u8], i: usize) -> usize {
    let mut s = Scanner::new(b, i, usize::MAX);
    s.step();
    while s.modes.len() > 1 && s.i < b.len() {
        s.step();
    }
    s.i.min(b.len())
}

/// Whether the string that starts at `i` interpolates a value.
pub fn string_interpolates(b: &[u8], i: usize) -> bool {
    let mut s = Scanner::new(b, i, usize::MAX);
    s.step();
    while s.modes.len() == 2 && s.i < b.len() {
        s.step();
    }
    // An interpolation puts code on top of the string.
    s.modes.len() > 2
}

/// The end of the regular expression that starts at `i` (at its `/`): after
/// the closing `/`, or at the line end when it has none.
pub fn regex_end(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'/' => return j + 1,
            b'\n' => return j,
            _ => j += 1,
        }
    }
    b.len()
}

/// Skips whitespace, byte-order marks and comments from `i`.
pub fn skip_trivia(b: &[u8], mut i: usize) -> usize {
    loop {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        if b[i.min(b.len())..].starts_with("\u{feff}".as_bytes()) {
            i += 3;
        } else if b[i.min(b.len())..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else {
            return i.min(b.len());
        }
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The end of the token starting at `i`.
pub fn token_end(b: &[u8], i: usize) -> usize {
    let Some(&c) = b.get(i) else { return i };
    let number = |mut j: usize| {
        while j < b.len()
            && (is_ident(b[j]) || b[j] == b'.' && b.get(j + 1).is_some_and(u8::is_ascii_digit))
        {
            j += 1;
        }
        j
    };
    match c {
        b'"' => string_end(b, i),
        b'/' => regex_end(b, i),
        b'$' => number(i + 1),
        b'-' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => number(i + 1),
        c if is_ident(c) => number(i + 1),
        _ => {
            let two = &b[i..(i + 2).min(b.len())];
            if [&b"->"[..], b"=>", b"==", b"!=", b"<=", b">=", b".."].contains(&two) {
                i + 2
            } else {
                let mut j = i + 1;
                while j < b.len() && b[j] & 0xc0 == 0x80 {
                    j += 1;
                }
                j
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Code; `braces` counts the `{` open inside an interpolation, whose
    /// closing `}` at zero returns to the string.
    Code {
        interpolation: bool,
        braces: usize,
    },
    Plain,
    Triple,
}

struct Scanner<'t> {
    b: &'t [u8],
    i: usize,
    /// Innermost last; never empty (the file is code).
    modes: Vec<Mode>,
    /// Open brackets and interpolations.
    depth: usize,
    limit: usize,
    /// `else if` links since the last statement keyword.
    else_ifs: usize,
    previous_word: (usize, usize),
    comments: Vec<(usize, usize)>,
    too_deep: Option<usize>,
}

impl<'t> Scanner<'t> {
    fn new(b: &'t [u8], i: usize, limit: usize) -> Scanner<'t> {
        Scanner {
            b,
            i,
            modes: vec![Mode::Code {
                interpolation: false,
                braces: 0,
            }],
            depth: 0,
            limit,
            else_ifs: 0,
            previous_word: (0, 0),
            comments: Vec::new(),
            too_deep: None,
        }
    }

    fn open(&mut self) {
        self.depth += 1;
        if self.depth > self.limit && self.too_deep.is_none() {
            self.too_deep = Some(self.i);
        }
    }

    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn word(&self, (start, end): (usize, usize)) -> &[u8] {
        &self.b[start..end]
    }

    /// Consumes one token (or one byte of a string) at `self.i`.
    fn step(&mut self) {
        let b = self.b;
        let i = self.i;
        let c = b[i];
        match self.modes.last().copied() {
            Some(Mode::Plain) | Some(Mode::Triple) => {
                let triple = matches!(self.modes.last(), Some(Mode::Triple));
                if c == b'\\' {
                    self.i += 2;
                } else if triple && b[i..].starts_with(b"\"\"\"") {
                    self.modes.pop();
                    self.i += 3;
                } else if !triple && c == b'"' {
                    self.modes.pop();
                    self.i += 1;
                } else if !triple && c == b'\n' {
                    // Not closed on its line: the line end is code again.
                    self.modes.pop();
                } else if b[i..].starts_with(b"{{") || b[i..].starts_with(b"}}") {
                    self.i += 2;
                } else if c == b'{' {
                    self.open();
                    self.modes.push(Mode::Code {
                        interpolation: true,
                        braces: 0,
                    });
                    self.i += 1;
                } else {
                    self.i += 1;
                }
            }
            Some(Mode::Code {
                interpolation,
                braces,
            }) => match c {
                b'/' if b.get(i + 1) == Some(&b'/') => {
                    let mut j = i;
                    while j < b.len() && b[j] != b'\n' {
                        j += 1;
                    }
                    self.comments.push((i, j));
                    self.i = j;
                }
                b'/' => self.i = regex_end(b, i),
                b'"' => {
                    if b[i..].starts_with(b"\"\"\"") {
                        self.modes.push(Mode::Triple);
                        self.i += 3;
                    } else {
                        self.modes.push(Mode::Plain);
                        self.i += 1;
                    }
                }
                b'{' => {
                    self.open();
                    if let Some(Mode::Code { braces, .. }) = self.modes.last_mut() {
                        *braces += 1;
                    }
                    self.i += 1;
                }
                b'}' => {
                    self.close();
                    if interpolation && braces == 0 {
                        self.modes.pop();
                    } else if let Some(Mode::Code { braces, .. }) = self.modes.last_mut() {
                        *braces = braces.saturating_sub(1);
                    }
                    self.i += 1;
                }
                b'(' | b'[' => {
                    self.open();
                    self.i += 1;
                }
                b')' | b']' => {
                    self.close();
                    self.i += 1;
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let mut j = i;
                    while j < b.len() && is_ident(b[j]) {
                        j += 1;
                    }
                    let word = &b[i..j];
                    if word == b"if" && self.word(self.previous_word) == b"else" {
                        self.else_ifs += 1;
                        if self.else_ifs > self.limit && self.too_deep.is_none() {
                            self.too_deep = Some(i);
                        }
                    } else if matches!(
                        word,
                        b"let" | b"return" | b"check" | b"require" | b"flow" | b"test" | b"expect"
                    ) {
                        // Counted per statement: no real statement comes near the limit.
                        self.else_ifs = 0;
                    }
                    self.previous_word = (i, j);
                    self.i = j;
                }
                c if c.is_ascii_digit() => {
                    let mut j = i;
                    while j < b.len() && is_ident(b[j]) {
                        j += 1;
                    }
                    self.i = j;
                }
                _ => self.i += 1,
            },
            None => self.i = b.len(),
        }
        self.i = self.i.min(b.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_skip_strings_interpolations_and_patterns() {
        let text =
            "type A = string matching /^a\\/b$/ // one\nlet x = \"// not {y // two\n}\" // three\n";
        let found: Vec<&str> = comments(text).iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(found, vec!["// one", "// two", "// three"]);
    }

    #[test]
    fn nesting_counts_brackets_and_interpolations_without_recursion() {
        let deep = format!("{}x{}", "\"{".repeat(100_000), "}\"".repeat(100_000));
        assert_eq!(scan(&deep, 64).too_deep, Some(2 * 64 + 1));
        assert_eq!(scan(&deep, usize::MAX).too_deep, None);
        assert_eq!(scan("f(a: [1, {b: (2)}])", 4).too_deep, None);
        assert_eq!(scan("f(a: [1, {b: (2)}])", 2).too_deep, Some(9));
    }

    #[test]
    fn strings_end_where_the_grammar_ends_them() {
        let b = br#""a {"b}"} c" rest"#;
        assert_eq!(string_end(b, 0), 12);
        assert_eq!(string_end(b"\"open\nnext", 0), 5);
        assert!(string_interpolates(b, 0));
        assert!(!string_interpolates(b"\"a {{b}} c\"", 0));
        assert_eq!(string_end(b"\"\"\"a\n\"b\"\n\"\"\" x", 0), 12);
    }
}
