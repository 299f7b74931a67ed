//! An HTTP/1.x reply's head: its status line and headers as `httparse`
//! reads them, and what they say about the body that follows and about the
//! connection after it.

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;

use super::body_framing::BodyFraming;
use super::http1_error::Http1Error;

/// The most headers a reply may have (hyper's default limit too).
const MAX_HEADERS: usize = 100;

/// A reply's status line and headers.
#[derive(Debug)]
pub struct ReplyHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: BodyFraming,
    /// Whether the connection may carry another request once the body is
    /// read to its end: neither side asked to close it, and the body's
    /// end is known without the server closing.
    pub keep_alive: bool,
}

impl ReplyHead {
    /// The head at the front of `bytes` and its length in bytes, `None`
    /// while it is incomplete. `head_request`: the request was `HEAD`, so
    /// the reply has no body whatever its headers say.
    pub fn parse(
        bytes: &[u8],
        head_request: bool,
    ) -> Result<Option<(ReplyHead, usize)>, Http1Error> {
        // The parser's table of headers lives only in this (synchronous)
        // call, never in a waiting future.
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut reply = httparse::Response::new(&mut slots);
        let length = match reply.parse(bytes).map_err(Http1Error::MalformedHead)? {
            httparse::Status::Complete(length) => length,
            httparse::Status::Partial => return Ok(None),
        };
        let code = reply.code.ok_or(Http1Error::BadHead)?;
        let status = StatusCode::from_u16(code).map_err(|_| Http1Error::BadHead)?;
        let mut headers = HeaderMap::with_capacity(reply.headers.len());
        for h in reply.headers.iter() {
            let name =
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Http1Error::BadHead)?;
            let value = HeaderValue::from_bytes(h.value).map_err(|_| Http1Error::BadHead)?;
            headers.append(name, value);
        }
        let http11 = reply.version == Some(1);
        let (framing, framing_keeps) = framing(status, &headers, head_request, http11)?;
        let keep_alive = framing_keeps
            && if http11 {
                !has_token(&headers, header::CONNECTION, "close")
            } else {
                has_token(&headers, header::CONNECTION, "keep-alive")
            };
        Ok(Some((
            ReplyHead {
                status,
                headers,
                framing,
                keep_alive,
            },
            length,
        )))
    }

    /// A 1xx reply other than 101: the real reply follows it.
    pub fn is_interim(&self) -> bool {
        self.status.is_informational() && self.status != StatusCode::SWITCHING_PROTOCOLS
    }
}

/// The body's framing (RFC 9112 §6.3), and whether it leaves the
/// connection usable after the body.
fn framing(
    status: StatusCode,
    headers: &HeaderMap,
    head_request: bool,
    http11: bool,
) -> Result<(BodyFraming, bool), Http1Error> {
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((BodyFraming::Empty, true));
    }
    let length = content_length(headers)?;
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding wins over Content-Length; a reply with both
        // may be an attempt to desynchronise the connection, which is
        // closed after it (§6.3 item 3). HTTP/1.0 has no transfer codings:
        // such a reply's framing is faulty, read to the close.
        let chunked = http11 && last_coding_is_chunked(headers);
        let framing = if chunked {
            BodyFraming::Chunked
        } else {
            BodyFraming::ToClose
        };
        return Ok((framing, chunked && length.is_none()));
    }
    Ok(match length {
        Some(n) => (BodyFraming::Length(n), true),
        None => (BodyFraming::ToClose, false),
    })
}

/// The reply's `Content-Length`: every value (in any number of headers,
/// comma-separated) a decimal number, all the same.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Http1Error> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(Http1Error::ContentLength);
            }
            let n = std::str::from_utf8(part)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or(Http1Error::ContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(Http1Error::ContentLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Whether the final transfer coding, across every `Transfer-Encoding`
/// header, is `chunked`.
fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    let last = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .rfind(|c| !c.is_empty());
    last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
}

/// Whether a comma-separated header lists `token` (any case): a reply's
/// or a request's `Connection: close`.
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<(ReplyHead, usize)>, Http1Error> {
        ReplyHead::parse(text.as_bytes(), false)
    }

    fn head(text: &str) -> ReplyHead {
        parse(text).unwrap().unwrap().0
    }

    #[test]
    fn a_head_and_its_length() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\nhi";
        let (head, length) = parse(text).unwrap().unwrap();
        assert_eq!(length, text.len() - 2);
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.framing, BodyFraming::Length(2));
        assert!(head.keep_alive);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        for cut in 0..length {
            assert!(parse(&text[..cut]).unwrap().is_none(), "{cut}");
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            ("HTTP/1.1 200 OK\r\n\r\n", BodyFraming::ToClose, false),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                BodyFraming::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\n\r\n",
                BodyFraming::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                BodyFraming::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                BodyFraming::ToClose,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                BodyFraming::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n",
                BodyFraming::Length(3),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: Close\r\n\r\n",
                BodyFraming::Length(3),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
                BodyFraming::Length(3),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
                BodyFraming::Length(3),
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                BodyFraming::ToClose,
                false,
            ),
        ];
        for (text, framing, keep_alive) in cases {
            let head = head(text);
            assert_eq!(
                (head.framing, head.keep_alive),
                (framing, keep_alive),
                "{text:?}"
            );
        }
        let (to_head, _) = ReplyHead::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(to_head.framing, BodyFraming::Empty);
    }

    #[test]
    fn malformed_heads_are_errors() {
        for text in [
            "SSH-2.0-OpenSSH_9.6\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(parse(&many).is_err());
    }

    #[test]
    fn interim_replies() {
        assert!(head("HTTP/1.1 100 Continue\r\n\r\n").is_interim());
        assert!(head("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n").is_interim());
        assert!(!head("HTTP/1.1 101 Switching Protocols\r\n\r\n").is_interim());
        assert!(!head("HTTP/1.1 200 OK\r\n\r\n").is_interim());
    }
}
