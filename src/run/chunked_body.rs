//! A reply body in HTTP/1.1's chunked coding (RFC 9112 §7.1), decoded as
//! its bytes arrive, in whatever pieces the socket hands them over.
//!
//! Chunk extensions and trailers are read past and dropped: nothing a tool
//! reads is in them. Lines are bounded, so a server cannot make us buffer
//! an endless size line or trailer section.

use super::http1_error::Http1Error;

/// The longest chunk-size line (with its extensions) or trailer line.
const MAX_LINE: usize = 8 << 10;

/// The most trailer bytes a reply may send.
const MAX_TRAILERS: usize = 64 << 10;

/// The decoder's place in the body.
pub struct ChunkedBody {
    state: State,
    /// Trailer bytes seen so far.
    trailers: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes still to come.
    Data(u64),
    /// After a chunk's data, before its line end.
    DataEnd,
    /// After the last (empty) chunk: trailer lines until an empty one.
    Trailer,
    /// The body's end has been read.
    Done,
}

impl ChunkedBody {
    pub fn new() -> ChunkedBody {
        ChunkedBody {
            state: State::Size,
            trailers: 0,
        }
    }

    /// Whether the body's end (the empty line after the trailers) was read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes what it can of `input`, appending chunk data to `out`, and
    /// says how many bytes of `input` it consumed. A line not yet complete
    /// is left unconsumed: the caller reads more and calls again with it
    /// at the front. Nothing after the body's end is consumed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Http1Error> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                State::Done => return Ok(at),
                State::Data(left) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    out.extend_from_slice(&rest[..take]);
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    // A wrong byte is an error at once, not after a line's
                    // worth of waiting.
                    match rest {
                        [] | [b'\r'] => return Ok(at),
                        [b'\n', ..] => at += 1,
                        [b'\r', b'\n', ..] => at += 2,
                        _ => return Err(Http1Error::ChunkEnd),
                    }
                    self.state = State::Size;
                }
                State::Size | State::Trailer => {
                    let Some(line) = next_line(rest)? else {
                        return Ok(at);
                    };
                    at += line.consumed;
                    let text = &rest[..line.length];
                    if self.state == State::Size {
                        self.state = match chunk_size(text)? {
                            0 => State::Trailer,
                            size => State::Data(size),
                        };
                    } else if text.is_empty() {
                        self.state = State::Done;
                    } else {
                        self.trailers += line.consumed;
                        if self.trailers > MAX_TRAILERS {
                            return Err(Http1Error::ChunkLine);
                        }
                    }
                }
            }
        }
    }
}

/// A complete line at the front of some bytes.
struct Line {
    /// Its length without the line end.
    length: usize,
    /// Its length with the line end.
    consumed: usize,
}

/// The line at the front of `bytes`, `None` while its end has not arrived.
/// A bare LF ends a line as CRLF does (RFC 9112 §2.2 lets a recipient
/// accept it).
fn next_line(bytes: &[u8]) -> Result<Option<Line>, Http1Error> {
    let Some(lf) = bytes.iter().take(MAX_LINE + 2).position(|&b| b == b'\n') else {
        return if bytes.len() > MAX_LINE + 1 {
            Err(Http1Error::ChunkLine)
        } else {
            Ok(None)
        };
    };
    let length = if lf > 0 && bytes[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    Ok(Some(Line {
        length,
        consumed: lf + 1,
    }))
}

/// A chunk-size line's size: hexadecimal digits, then optional blanks and
/// extensions (`;name=value`, ignored).
fn chunk_size(line: &[u8]) -> Result<u64, Http1Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Http1Error::ChunkSize);
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(Http1Error::ChunkSize);
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        // Hex digits, checked above.
        let digit = (b as char).to_digit(16).unwrap_or(0);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or(Http1Error::ChunkSize)?;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` handed over in pieces of `step` bytes, as a caller
    /// does (unconsumed bytes stay at the front of the next call).
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), Http1Error> {
        let mut body = ChunkedBody::new();
        let mut out = Vec::new();
        let mut pending = Vec::new();
        let mut fed = 0;
        while !body.is_done() {
            if fed == input.len() {
                panic!(
                    "ran out of input; decoded {:?}",
                    String::from_utf8_lossy(&out)
                );
            }
            let end = (fed + step).min(input.len());
            pending.extend_from_slice(&input[fed..end]);
            fed = end;
            let used = body.decode(&pending, &mut out)?;
            pending.drain(..used);
        }
        Ok((out, pending.len() + input.len() - fed))
    }

    #[test]
    fn chunks_with_extensions_and_trailers_in_any_pieces() {
        let input = b"5;name=value\r\nhello\r\n1B ; x\r\n, chunked and extended body\r\n0\r\nExpires: never\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 64, input.len()] {
            let (out, left) = decode_in_steps(input, step).unwrap();
            assert_eq!(out, b"hello, chunked and extended body", "step {step}");
            assert_eq!(
                left, 4,
                "what follows the body is not consumed (step {step})"
            );
        }
    }

    #[test]
    fn bare_line_feeds_and_upper_case_sizes() {
        let (out, _) = decode_in_steps(b"A\nabcdefghij\n0\n\n", 1).unwrap();
        assert_eq!(out, b"abcdefghij");
    }

    #[test]
    fn bad_sizes_and_line_ends_are_errors() {
        for (input, want) in [
            (&b"zz\r\n"[..], "ChunkSize"),
            (b"\r\n", "ChunkSize"),
            (b"5 x\r\nhello\r\n", "ChunkSize"),
            (b"-5\r\n", "ChunkSize"),
            (b"10000000000000000\r\n", "ChunkSize"),
            (b"5\r\nhelloXX", "ChunkEnd"),
        ] {
            let e = decode_in_steps(input, 1).unwrap_err();
            assert_eq!(
                format!("{e:?}"),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn endless_lines_and_trailers_are_bounded() {
        let mut long = b"5;".to_vec();
        long.resize(MAX_LINE + 10, b'x');
        let e = decode_in_steps(&long, 1000).unwrap_err();
        assert!(matches!(e, Http1Error::ChunkLine), "{e:?}");
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..MAX_TRAILERS / 10 + 1 {
            trailers.extend_from_slice(b"X-A: 1234\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        let e = decode_in_steps(&trailers, 4096).unwrap_err();
        assert!(matches!(e, Http1Error::ChunkLine), "{e:?}");
    }

    #[test]
    fn largest_size_is_accepted() {
        let mut body = ChunkedBody::new();
        let mut out = Vec::new();
        let used = body.decode(b"ffffffffffffffff\r\nab", &mut out).unwrap();
        assert_eq!(used, 20);
        assert_eq!(out, b"ab");
        assert!(!body.is_done());
    }
}
