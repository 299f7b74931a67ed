//! One HTTP/1.1 connection of our own: a request written whole, its reply
//! read by the calling future itself. No task per connection, no request
//! channel, no buffer held while the server thinks: a call in flight holds
//! its socket and its future, and a buffer only while bytes are arriving
//! (hyper's client held ~25 KiB per connection that way, issue 16).
//!
//! Reply heads are parsed by `httparse` (`reply_head.rs`); bodies are
//! framed as RFC 9112 §6.3 says (`body_framing.rs`), chunked ones decoded
//! by `chunked_body.rs`.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::body_framing::BodyFraming;
use super::chunked_body::ChunkedBody;
use super::http1_error::Http1Error;
use super::http1_stream::Http1Stream;
use super::reply_head::ReplyHead;

/// The first read of a reply: most replies' heads, and many whole replies,
/// fit.
const FIRST_READ: usize = 2 << 10;

/// The largest reply head accepted (hyper's limit is near it, ~400 KiB;
/// common servers accept 8–16 KiB request heads and send far smaller).
pub const MAX_HEAD: usize = 64 << 10;

/// The most a body read asks for at a time.
const BODY_READ: usize = 16 << 10;

/// A connection to one origin, between or during exchanges.
pub struct Http1Connection {
    stream: Http1Stream,
    /// Bytes read and not yet used: part of a reply's head or body. Empty,
    /// and unallocated, while the connection waits.
    buffered: Vec<u8>,
    /// Whether any byte of the current request's reply has arrived.
    answered: bool,
}

impl Http1Connection {
    pub fn new(stream: Http1Stream) -> Http1Connection {
        Http1Connection {
            stream,
            buffered: Vec::new(),
            answered: false,
        }
    }

    /// Whether an idle connection can carry a request: a read that does
    /// not wait finds neither the server's close (or reset) nor bytes no
    /// request asked for. The server may still close it a moment later;
    /// `connections.rs` sends once more then, where that is safe.
    pub fn is_usable(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        // Nothing waits on this poll: the call that takes the connection
        // polls it again with its own waker.
        let mut cx = Context::from_waker(Waker::noop());
        self.buffered.is_empty()
            && Pin::new(&mut self.stream)
                .poll_read(&mut cx, &mut buf)
                .is_pending()
    }

    /// Whether the last reply was read to its end and nothing followed it:
    /// the connection may be kept for the next request.
    pub fn is_drained(&self) -> bool {
        self.buffered.is_empty()
    }

    /// Writes a request (`encode_request`'s bytes), then frees them.
    pub async fn send(&mut self, request: Vec<u8>) -> Result<(), Http1Error> {
        self.answered = false;
        let mut written = 0;
        while written < request.len() {
            match self.stream.write(&request[written..]).await {
                Ok(0) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    return Err(if written == 0 {
                        Http1Error::NotSent(e)
                    } else {
                        Http1Error::Write(e)
                    });
                }
                Ok(n) => written += n,
                Err(e) if written == 0 => return Err(Http1Error::NotSent(e)),
                Err(e) => return Err(Http1Error::Write(e)),
            }
        }
        drop(request);
        // TLS holds written records until flushed.
        self.stream.flush().await.map_err(Http1Error::Write)
    }

    /// Reads the reply's head, past any interim (1xx) replies.
    /// `head_request`: the request was `HEAD` (its reply has no body).
    pub async fn read_head(&mut self, head_request: bool) -> Result<ReplyHead, Http1Error> {
        // Where the search for the head's end (an empty line) resumes:
        // a head that arrives a few bytes at a time is parsed once it is
        // whole, not once per read.
        let mut searched: usize = 0;
        loop {
            if ends_head(&self.buffered[searched.saturating_sub(3)..]) {
                searched = 0;
                if let Some((head, length)) = ReplyHead::parse(&self.buffered, head_request)? {
                    self.consume(length);
                    if head.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(Http1Error::Upgrade);
                    }
                    if head.is_interim() {
                        continue;
                    }
                    return Ok(head);
                }
            }
            searched = self.buffered.len();
            if self.buffered.len() >= MAX_HEAD {
                return Err(Http1Error::HeadTooLarge);
            }
            // Doubling: a head of n bytes is read in log(n) allocations.
            let room = if self.buffered.is_empty() {
                FIRST_READ
            } else {
                self.buffered.len().min(MAX_HEAD - self.buffered.len())
            };
            let read = self.fill(room).await;
            match read {
                Ok(0) if self.answered => return Err(Http1Error::Closed),
                Ok(0) => return Err(Http1Error::NoReply(None)),
                Ok(_) => self.answered = true,
                Err(e) if self.answered => return Err(Http1Error::Read(e)),
                Err(e) => return Err(Http1Error::NoReply(Some(e))),
            }
        }
    }

    /// Reads a body framed as `framing` up to `cap` bytes: the bytes, and
    /// whether there were more (the rest is not read, and the connection
    /// must not be kept).
    pub async fn read_body(
        &mut self,
        framing: BodyFraming,
        cap: usize,
    ) -> Result<(Vec<u8>, bool), Http1Error> {
        match framing {
            BodyFraming::Empty => Ok((Vec::new(), false)),
            BodyFraming::Length(length) => self.read_length(length, cap).await,
            BodyFraming::Chunked => self.read_chunked(cap).await,
            BodyFraming::ToClose => self.read_to_close(cap).await,
        }
    }

    async fn read_length(
        &mut self,
        length: u64,
        cap: usize,
    ) -> Result<(Vec<u8>, bool), Http1Error> {
        // One byte past the cap tells a body over it.
        let want = usize::try_from(length)
            .unwrap_or(usize::MAX)
            .min(cap.saturating_add(1));
        let mut body = if self.buffered.len() <= want {
            std::mem::take(&mut self.buffered)
        } else {
            let rest = self.buffered.split_off(want);
            std::mem::replace(&mut self.buffered, rest)
        };
        while body.len() < want {
            let room = (want - body.len()).min(BODY_READ);
            let stream = &mut self.stream;
            match poll_fn(|cx| poll_append(stream, cx, &mut body, room)).await {
                Ok(0) => return Err(Http1Error::Closed),
                Ok(_) => {}
                Err(e) => return Err(Http1Error::Read(e)),
            }
        }
        Ok(capped(body, cap))
    }

    async fn read_chunked(&mut self, cap: usize) -> Result<(Vec<u8>, bool), Http1Error> {
        let mut decoder = ChunkedBody::new();
        let mut body = Vec::new();
        loop {
            let used = decoder.decode(&self.buffered, &mut body)?;
            self.consume(used);
            if body.len() > cap || decoder.is_done() {
                return Ok(capped(body, cap));
            }
            match self.fill(BODY_READ).await {
                Ok(0) => return Err(Http1Error::Closed),
                Ok(_) => {}
                Err(e) => return Err(Http1Error::Read(e)),
            }
        }
    }

    async fn read_to_close(&mut self, cap: usize) -> Result<(Vec<u8>, bool), Http1Error> {
        let mut body = std::mem::take(&mut self.buffered);
        while body.len() <= cap {
            let room = (cap + 1 - body.len()).min(BODY_READ);
            let stream = &mut self.stream;
            match poll_fn(|cx| poll_append(stream, cx, &mut body, room)).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(Http1Error::Read(e)),
            }
        }
        Ok(capped(body, cap))
    }

    /// Reads up to `room` more bytes into `buffered`; `Ok(0)` at the end.
    async fn fill(&mut self, room: usize) -> io::Result<usize> {
        let Http1Connection {
            stream, buffered, ..
        } = self;
        poll_fn(|cx| poll_append(stream, cx, buffered, room)).await
    }

    /// Drops the first `n` buffered bytes, and the buffer once it is empty.
    fn consume(&mut self, n: usize) {
        if n >= self.buffered.len() {
            self.buffered = Vec::new();
        } else {
            self.buffered.drain(..n);
        }
    }
}

/// A body over `cap` cut to it, and whether it was.
fn capped(mut body: Vec<u8>, cap: usize) -> (Vec<u8>, bool) {
    if body.len() > cap {
        body.truncate(cap);
        (body, true)
    } else {
        (body, false)
    }
}

/// Reads up to `room` bytes onto the end of `into`. The room is made only
/// for the read and given back when nothing came, so a connection waiting
/// for its reply holds no buffer.
fn poll_append(
    stream: &mut Http1Stream,
    cx: &mut Context<'_>,
    into: &mut Vec<u8>,
    room: usize,
) -> Poll<io::Result<usize>> {
    let old = into.len();
    into.resize(old + room, 0);
    let mut buf = ReadBuf::new(&mut into[old..]);
    let polled = Pin::new(stream).poll_read(cx, &mut buf);
    let read = match polled {
        Poll::Ready(Ok(())) => buf.filled().len(),
        _ => 0,
    };
    into.truncate(old + read);
    if into.is_empty() {
        *into = Vec::new();
    }
    polled.map_ok(|()| read)
}

/// Whether `bytes` hold the empty line that ends a head (CRLF or bare LF
/// line ends, as `httparse` accepts both).
fn ends_head(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

/// A request's bytes, head and body in one buffer of exactly their size.
/// `host`: the `Host` header to add (the caller's headers have none).
/// `Content-Length` is ours, never the caller's: a body or a method that
/// expects one gets it, and no `Transfer-Encoding` is passed on. `None`
/// when the target or host is not one a request line may carry (no
/// spaces, controls or line ends).
pub fn encode_request(
    method: &Method,
    target: &str,
    host: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Vec<u8>> {
    let visible = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic());
    if !visible(target) || !host.is_none_or(visible) {
        return None;
    }
    let length = (!body.is_empty()
        || matches!(*method, Method::POST | Method::PUT | Method::PATCH))
    .then(|| body.len().to_string());
    let passed = |name: &header::HeaderName| {
        name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING
    };
    let mut size = method.as_str().len() + 1 + target.len() + " HTTP/1.1\r\n".len();
    if let Some(host) = host {
        size += "host: ".len() + host.len() + 2;
    }
    for (name, value) in headers.iter().filter(|(n, _)| passed(n)) {
        size += name.as_str().len() + 2 + value.len() + 2;
    }
    if let Some(length) = &length {
        size += "content-length: ".len() + length.len() + 2;
    }
    size += 2 + body.len();

    let mut bytes = Vec::with_capacity(size);
    for part in [method.as_str(), " ", target, " HTTP/1.1\r\n"] {
        bytes.extend_from_slice(part.as_bytes());
    }
    if let Some(host) = host {
        for part in ["host: ", host, "\r\n"] {
            bytes.extend_from_slice(part.as_bytes());
        }
    }
    // `HeaderValue` holds no CR, LF or NUL, so no value can end its line.
    for (name, value) in headers.iter().filter(|(n, _)| passed(n)) {
        bytes.extend_from_slice(name.as_str().as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    if let Some(length) = &length {
        for part in ["content-length: ", length, "\r\n"] {
            bytes.extend_from_slice(part.as_bytes());
        }
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    debug_assert_eq!(bytes.len(), size);
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn requests_are_encoded_in_one_exact_buffer() {
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("application/json"));
        headers.append("x-many", HeaderValue::from_static("1"));
        headers.append("x-many", HeaderValue::from_static("2"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let bytes = encode_request(
            &Method::POST,
            "/a?b=1",
            Some("example.com:8080"),
            &headers,
            b"{}",
        )
        .unwrap();
        assert_eq!(bytes.len(), bytes.capacity());
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nhost: example.com:8080\r\naccept: application/json\r\n\
             x-many: 1\r\nx-many: 2\r\ncontent-length: 2\r\n\r\n{}"
        );
        let get = encode_request(&Method::GET, "/", None, &HeaderMap::new(), b"").unwrap();
        assert_eq!(get, b"GET / HTTP/1.1\r\n\r\n");
        let put = encode_request(&Method::PUT, "/", None, &HeaderMap::new(), b"").unwrap();
        assert_eq!(put, b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn targets_and_hosts_cannot_break_the_request_line() {
        let none = HeaderMap::new();
        for target in ["", "/a b", "/a\r\nX: y", "/\u{e9}", "/a\tb"] {
            assert!(
                encode_request(&Method::GET, target, None, &none, b"").is_none(),
                "{target:?}"
            );
        }
        assert!(encode_request(&Method::GET, "/", Some("a\r\nb"), &none, b"").is_none());
    }

    #[test]
    fn the_end_of_a_head_is_an_empty_line() {
        assert!(ends_head(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert!(ends_head(b"HTTP/1.1 200 OK\n\n"));
        assert!(!ends_head(b"HTTP/1.1 200 OK\r\nA: b\r\n"));
    }
}
