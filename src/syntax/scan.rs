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
//! - when asked ([`scan_tokens`], the formatter's and the language
//!   server's path), in the same pass: the token table ([`Tokens`]: every
//!   token with its kind and range, each string literal with its range and
//!   whether it interpolates, each bracket's partner, every line feed), so
//!   the formatter asks the table instead of reading the text again.
//!   `flowc check` ([`scan`]) does not build it: the recording is compiled
//!   out of that path.
//!
//! A lone `/` starts a regular expression: the grammar has no other use for
//! it outside comments.

use super::tokens::{Bracket, StringLiteral, Token, TokenKind, Tokens};

/// What one pass over a file found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Byte ranges of the `//` comments, in order, each up to (not
    /// including) its line end.
    pub comments: Vec<(usize, usize)>,
    /// The offset where nesting first passed the limit, if it did (the scan
    /// stops there).
    pub too_deep: Option<usize>,
    /// Offsets of the `let`s that begin a line inside a top-level item's
    /// braces (bracket depth 1, outside strings and comments), in order:
    /// where the parser may cut a big flow to parse its two parts at once.
    pub let_lines: Vec<usize>,
    /// Offsets just past each `}` that closes a top-level item's braces.
    pub item_ends: Vec<usize>,
}

/// Scans `text`; nesting deeper than `limit` (brackets and interpolations
/// together, or `else if` links in one statement) stops the scan.
pub fn scan(text: &str, limit: usize) -> Scan {
    let mut s = Scanner::<false>::new(text.as_bytes(), limit);
    s.run();
    Scan {
        comments: s.comments,
        too_deep: s.too_deep,
        let_lines: s.let_lines,
        item_ends: s.item_ends,
    }
}

/// Scans `text` as [`scan`] does and keeps the token table of the same
/// pass. (When the scan stops early, too deep, the table covers the text
/// before that point only; such a text is never formatted.)
pub fn scan_tokens(text: &str, limit: usize) -> (Scan, Tokens) {
    let mut s = Scanner::<true>::new(text.as_bytes(), limit);
    s.run();
    s.finish_strings();
    let b = text.as_bytes();
    let crlf = !s.newlines.is_empty() && s.newlines.iter().all(|&n| n > 0 && b[n - 1] == b'\r');
    let tokens = Tokens {
        crlf,
        tokens: s.tokens,
        strings: s.strings,
        comments: s.comments.clone(),
        newlines: s.newlines,
        text_len: text.len(),
    };
    let scan = Scan {
        comments: s.comments,
        too_deep: s.too_deep,
        let_lines: s.let_lines,
        item_ends: s.item_ends,
    };
    (scan, tokens)
}

/// Whether `text` holds nothing but what the grammar skips between tokens
/// (its WHITESPACE rule: blanks and comments): the end of the file. Asked before
/// every item, so it is a scan, not a pest parse: a failed pest parse builds
/// an error whose line lookup walks back from the end of the input, which
/// made this probe cost the length of the rest of the file per item.
pub fn only_trivia(text: &str) -> bool {
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\r', '\n', '\u{FEFF}']);
        match rest.strip_prefix("//") {
            Some(comment) => rest = comment.find('\n').map_or("", |end| &comment[end..]),
            None => return rest.is_empty(),
        }
    }
}

/// The comments of `text` (see [`Scan::comments`]).
pub fn comments(text: &str) -> Vec<(usize, usize)> {
    scan(text, usize::MAX).comments
}

/// The end of the regular expression that starts at `i` (at its `/`): after
/// the closing `/`, or at the line end when it has none.
fn regex_end(b: &[u8], i: usize) -> usize {
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

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The end of a number's spelling from `j` (its digits, unit letters and
/// decimal point): `100k`, `1.50`, `30s`.
fn number_end(b: &[u8], mut j: usize) -> usize {
    while j < b.len()
        && (is_ident(b[j]) || b[j] == b'.' && b.get(j + 1).is_some_and(u8::is_ascii_digit))
    {
        j += 1;
    }
    j
}

/// The end of the punctuation token at `i`: two bytes for the operators
/// spelled with two, the whole character otherwise.
fn punct_end(b: &[u8], i: usize) -> usize {
    let two = &b[i..(i + 2).min(b.len())];
    if [&b"->"[..], b"=>", b"==", b"!=", b"<=", b">=", b".."].contains(&two) {
        return i + 2;
    }
    let mut j = i + 1;
    while j < b.len() && b[j] & 0xc0 == 0x80 {
        j += 1;
    }
    j
}

const BOM: &[u8] = "\u{feff}".as_bytes();

/// A byte class: which bytes [`skip`] passes over.
type Class = [bool; 256];

/// The bytes of a string literal that are its text and nothing else: all
/// but `\`, `"`, `{`, `}` and the line feed.
const STRING_TEXT: Class = class_without(b"\\\"{}\n");

/// The bytes of code that [`Scanner::code_step`] steps over one at a time
/// when it keeps no token table: all but those that start a comment, a
/// pattern, a string, a bracket, a word or a number.
const CODE_FILLER: Class = {
    let mut class = class_without(b"/\"{}()[]_$");
    let mut c = 0;
    while c < 256 {
        if (c as u8).is_ascii_alphanumeric() {
            class[c] = false;
        }
        c += 1;
    }
    class
};

/// Every byte but `bytes`.
const fn class_without(bytes: &[u8]) -> Class {
    let mut class = [true; 256];
    let mut k = 0;
    while k < bytes.len() {
        class[bytes[k] as usize] = false;
        k += 1;
    }
    class
}

/// The first offset from `j` whose byte is not in `class` (or the end).
fn skip(b: &[u8], mut j: usize, class: &Class) -> usize {
    while j < b.len() && class[b[j] as usize] {
        j += 1;
    }
    j
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Code; `braces` counts the `{` open inside an interpolation, whose
    /// closing `}` at zero returns to the string. `brackets` is how many
    /// brackets of the token table were open when the interpolation began.
    Code {
        interpolation: bool,
        braces: usize,
        brackets: usize,
    },
    /// Inside a string literal: `"…"` or (`triple`) `"""…"""`. `literal` is
    /// its index in the token table's strings and `piece` where its current
    /// piece began (both kept only when recording).
    Str {
        triple: bool,
        literal: usize,
        piece: usize,
    },
}

/// The scanner; `KEEP` says whether it records the token table (the
/// formatter's path) or only comments and depth (`flowc check`'s).
struct Scanner<'t, const KEEP: bool> {
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
    let_lines: Vec<usize>,
    item_ends: Vec<usize>,
    // The token table, when `KEEP`.
    tokens: Vec<Token>,
    strings: Vec<StringLiteral>,
    newlines: Vec<usize>,
    /// Indices (in `tokens`) of the brackets not closed yet.
    open_brackets: Vec<usize>,
}

impl<'t, const KEEP: bool> Scanner<'t, KEEP> {
    fn new(b: &'t [u8], limit: usize) -> Scanner<'t, KEEP> {
        Scanner {
            b,
            i: 0,
            modes: vec![Mode::Code {
                interpolation: false,
                braces: 0,
                brackets: 0,
            }],
            depth: 0,
            limit,
            else_ifs: 0,
            previous_word: (0, 0),
            comments: Vec::new(),
            too_deep: None,
            let_lines: Vec::new(),
            item_ends: Vec::new(),
            tokens: Vec::new(),
            strings: Vec::new(),
            newlines: Vec::new(),
            open_brackets: Vec::new(),
        }
    }

    fn run(&mut self) {
        while self.i < self.b.len() && self.too_deep.is_none() {
            self.step();
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

    fn token(&mut self, start: usize, end: usize, kind: TokenKind) {
        if KEEP {
            self.tokens.push(Token { start, end, kind });
        }
    }

    fn open_bracket(&mut self, bracket: Bracket) {
        if KEEP {
            self.open_brackets.push(self.tokens.len());
            self.token(self.i, self.i + 1, TokenKind::Open(bracket, None));
        }
    }

    fn close_bracket(&mut self, bracket: Bracket) {
        if KEEP {
            let at = self.tokens.len();
            self.token(self.i, self.i + 1, TokenKind::Close(bracket));
            if let Some(open) = self.open_brackets.pop() {
                if let TokenKind::Open(_, partner) = &mut self.tokens[open].kind {
                    *partner = Some(at);
                }
            }
        }
    }

    /// Ends the current piece of the string on top at `end`; `literal_end`
    /// when the literal ends there too.
    fn end_piece(&mut self, end: usize, literal_end: bool) {
        if let (true, Some(&Mode::Str { literal, piece, .. })) = (KEEP, self.modes.last()) {
            self.token(piece, end, TokenKind::StringPiece);
            if literal_end {
                self.strings[literal].end = end;
            }
        }
    }

    /// At the end of the text: the strings still open end there.
    fn finish_strings(&mut self) {
        let end = self.b.len();
        if KEEP && matches!(self.modes.last(), Some(Mode::Str { .. })) {
            self.end_piece(end, false);
        }
        for mode in &self.modes {
            if let (true, Mode::Str { literal, .. }) = (KEEP, mode) {
                self.strings[*literal].end = end;
            }
        }
    }

    /// Consumes one token (or one byte of a string) at `self.i`.
    fn step(&mut self) {
        match self.modes.last().copied() {
            Some(Mode::Str { triple, .. }) => self.string_step(triple),
            Some(Mode::Code {
                interpolation,
                braces,
                brackets,
            }) => self.code_step(interpolation, braces, brackets),
            None => self.i = self.b.len(),
        }
        self.i = self.i.min(self.b.len());
    }

    fn string_step(&mut self, triple: bool) {
        let b = self.b;
        let i = self.i;
        let c = b[i];
        if c == b'\\' {
            if KEEP && b.get(i + 1) == Some(&b'\n') {
                self.newlines.push(i + 1);
            }
            self.i += 2;
        } else if triple && b[i..].starts_with(b"\"\"\"") {
            self.end_piece(i + 3, true);
            self.modes.pop();
            self.i += 3;
        } else if !triple && c == b'"' {
            self.end_piece(i + 1, true);
            self.modes.pop();
            self.i += 1;
        } else if !triple && c == b'\n' {
            // Not closed on its line: the line end is code again.
            self.end_piece(i, true);
            self.modes.pop();
        } else if b[i..].starts_with(b"{{") || b[i..].starts_with(b"}}") {
            self.i += 2;
        } else if c == b'{' {
            self.open();
            if let (true, Some(&Mode::Str { literal, .. })) = (KEEP, self.modes.last()) {
                self.strings[literal].interpolates = true;
            }
            self.end_piece(i + 1, false);
            self.modes.push(Mode::Code {
                interpolation: true,
                braces: 0,
                brackets: self.open_brackets.len(),
            });
            self.i += 1;
        } else if KEEP && c == b'\n' {
            self.newlines.push(i);
            self.i += 1;
        } else {
            // A run of text: nothing in it but the bytes that end it can
            // change what the scan sees.
            self.i = skip(b, i + 1, &STRING_TEXT);
        }
    }

    fn code_step(&mut self, interpolation: bool, braces: usize, brackets: usize) {
        let b = self.b;
        let i = self.i;
        let c = b[i];
        match c {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let mut j = i;
                while j < b.len() && b[j] != b'\n' {
                    j += 1;
                }
                self.comments.push((i, j));
                self.i = j;
            }
            b'/' => {
                self.i = regex_end(b, i);
                if KEEP {
                    // An escaped line feed can be part of a pattern.
                    let feeds = b[i..self.i].iter().enumerate().filter(|(_, &c)| c == b'\n');
                    self.newlines.extend(feeds.map(|(k, _)| i + k));
                }
                self.token(i, self.i, TokenKind::Pattern);
            }
            b'"' => {
                let triple = b[i..].starts_with(b"\"\"\"");
                let literal = self.strings.len();
                if KEEP {
                    self.strings.push(StringLiteral {
                        start: i,
                        end: i,
                        triple,
                        interpolates: false,
                    });
                }
                self.modes.push(Mode::Str {
                    triple,
                    literal,
                    piece: i,
                });
                self.i += if triple { 3 } else { 1 };
            }
            b'{' => {
                self.open();
                self.open_bracket(Bracket::Brace);
                if let Some(Mode::Code { braces, .. }) = self.modes.last_mut() {
                    *braces += 1;
                }
                self.i += 1;
            }
            b'}' => {
                self.close();
                if interpolation && braces == 0 {
                    self.modes.pop();
                    // The `}` begins the string's next piece; brackets the
                    // interpolation left open stay unmatched.
                    if let Some(Mode::Str { piece, .. }) = self.modes.last_mut() {
                        *piece = i;
                    }
                    self.open_brackets.truncate(brackets);
                } else {
                    self.close_bracket(Bracket::Brace);
                    if let Some(Mode::Code { braces, .. }) = self.modes.last_mut() {
                        *braces = braces.saturating_sub(1);
                    }
                    if self.depth == 0 && self.modes.len() == 1 {
                        self.item_ends.push(i + 1);
                    }
                }
                self.i += 1;
            }
            b'(' | b'[' => {
                self.open();
                self.open_bracket(if c == b'(' {
                    Bracket::Paren
                } else {
                    Bracket::Square
                });
                self.i += 1;
            }
            b')' | b']' => {
                self.close();
                self.close_bracket(if c == b')' {
                    Bracket::Paren
                } else {
                    Bracket::Square
                });
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
                    if word == b"let"
                        && self.depth == 1
                        && self.modes.len() == 1
                        && b[..i]
                            .iter()
                            .rev()
                            .take_while(|&&c| c != b'\n')
                            .all(|&c| c == b' ' || c == b'\t')
                    {
                        self.let_lines.push(i);
                    }
                }
                self.previous_word = (i, j);
                self.token(i, j, TokenKind::Word);
                self.i = j;
            }
            c if c.is_ascii_digit() => {
                self.i = if KEEP {
                    number_end(b, i + 1)
                } else {
                    let mut j = i;
                    while j < b.len() && is_ident(b[j]) {
                        j += 1;
                    }
                    j
                };
                self.token(i, self.i, TokenKind::Number);
            }
            // Money: the letters after `$` are part of its spelling in both
            // modes, so `$else` is never the `else` of an `else if`.
            b'$' => {
                self.i = number_end(b, i + 1);
                self.token(i, self.i, TokenKind::Number);
            }
            // Blanks, line ends and punctuation, in a run: only the table
            // tells them apart.
            _ if !KEEP => self.i = skip(b, i + 1, &CODE_FILLER),
            // The rest only matters to the token table.
            b' ' | b'\t' | b'\r' => self.i += 1,
            b'\n' => {
                self.newlines.push(i);
                self.i += 1;
            }
            _ if b[i..].starts_with(BOM) => self.i += BOM.len(),
            b'-' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                self.i = number_end(b, i + 1);
                self.token(i, self.i, TokenKind::Number);
            }
            b',' => {
                self.token(i, i + 1, TokenKind::Comma);
                self.i += 1;
            }
            _ => {
                self.i = punct_end(b, i);
                self.token(i, self.i, TokenKind::Punct);
            }
        }
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

    fn table(text: &str) -> Tokens {
        let (scan, tokens) = scan_tokens(text, usize::MAX);
        assert_eq!(scan, super::scan(text, usize::MAX), "{text:?}");
        // And where nesting stops the scan: `scan` skips runs of bytes
        // that `scan_tokens` steps through one token at a time.
        assert_eq!(scan_tokens(text, 3).0, super::scan(text, 3), "{text:?}");
        tokens
    }

    fn spelled<'a>(text: &'a str, tokens: &Tokens) -> Vec<(&'a str, TokenKind)> {
        tokens
            .tokens()
            .iter()
            .map(|t| (&text[t.start..t.end], t.kind))
            .collect()
    }

    #[test]
    fn strings_end_where_the_grammar_ends_them() {
        let text = r#""a {"b}"} c" rest"#;
        let t = table(text);
        let whole = |start| {
            t.string_at(start)
                .map(|l| (l.end, l.triple, l.interpolates))
        };
        assert_eq!(whole(0), Some((12, false, true)));
        assert_eq!(whole(4), Some((8, false, false)));
        assert_eq!(whole(1), None);
        use TokenKind::*;
        assert_eq!(
            spelled(text, &t),
            vec![
                ("\"a {", StringPiece),
                ("\"b}\"", StringPiece),
                ("} c\"", StringPiece),
                ("rest", Word)
            ]
        );
        let t = table("\"open\nnext");
        assert_eq!(whole_end(&t, 0), Some(5));
        assert_eq!(t.line_breaks(0, 10), 1);
        assert!(!table("\"a {{b}} c\"").string_at(0).unwrap().interpolates);
        let t = table("\"\"\"a\n\"b\"\n\"\"\" x");
        assert_eq!(whole_end(&t, 0), Some(12));
        assert!(t.string_at(0).unwrap().triple);
        assert_eq!(t.line_breaks(0, 12), 2);
        // Unclosed at the end of the text: the literal ends there.
        let t = table("x = \"a {b");
        assert_eq!(whole_end(&t, 4), Some(9));
        assert_eq!(spelled("x = \"a {b", &t).last(), Some(&("b", Word)));
    }

    fn whole_end(t: &Tokens, start: usize) -> Option<usize> {
        t.string_at(start).map(|l| l.end)
    }

    #[test]
    fn tokens_keep_spellings_and_bracket_partners() {
        let text = "f(a: [1.50, $1.00, 30s, -2, 100k, 1..5], b: /x\\/y/) -> { k: v } // c\n";
        let t = table(text);
        let words: Vec<&str> = spelled(text, &t).iter().map(|&(s, _)| s).collect();
        assert_eq!(
            words,
            vec![
                "f", "(", "a", ":", "[", "1.50", ",", "$1.00", ",", "30s", ",", "-2", ",", "100k",
                ",", "1", "..", "5", "]", ",", "b", ":", "/x\\/y/", ")", "->", "{", "k", ":", "v",
                "}"
            ]
        );
        let kinds = spelled(text, &t);
        assert_eq!(kinds[5].1, TokenKind::Number);
        assert_eq!(kinds[22].1, TokenKind::Pattern);
        assert_eq!(kinds[6].1, TokenKind::Comma);
        let partner = |k: usize| match t.tokens()[k].kind {
            TokenKind::Open(_, partner) => partner,
            _ => None,
        };
        assert_eq!(partner(1), Some(23));
        assert_eq!(partner(4), Some(18));
        assert_eq!(partner(25), Some(29));
        assert_eq!(t.comments(), &[(text.len() - 5, text.len() - 1)]);
        // A bracket an interpolation leaves open stays unmatched.
        let t = table("(\"{ ( }\")");
        let partner = |k: usize| match t.tokens()[k].kind {
            TokenKind::Open(_, partner) => partner.map(|p| t.tokens()[p].start),
            _ => None,
        };
        assert_eq!(t.tokens()[2].start, 4);
        assert_eq!(partner(2), None);
        assert_eq!(partner(0), Some(8));
    }

    proptest::proptest! {
        /// For any text: the same comments and depth as `flowc check`'s scan;
        /// tokens in order, apart, on character boundaries and outside
        /// comments; every line feed recorded.
        #[test]
        fn the_token_table_agrees_with_the_text(text in "(\\PC|[\"{}()\\[\\]/\\\\\n ]|\n  let |else if ){0,200}") {
            let t = table(&text);
            let mut last = 0;
            for tok in t.tokens() {
                proptest::prop_assert!(last <= tok.start && tok.start < tok.end, "{tok:?} in {text:?}");
                proptest::prop_assert!(text.is_char_boundary(tok.start) && text.is_char_boundary(tok.end));
                proptest::prop_assert!(!t.comment_within(tok.start, tok.end));
                last = tok.end;
            }
            proptest::prop_assert!(last <= text.len());
            let feeds = text.bytes().filter(|&c| c == b'\n').count();
            proptest::prop_assert_eq!(t.line_breaks(0, text.len()), feeds);
        }
    }
}
