//! Why our own HTTP/1.1 exchange (`http1_connection.rs`) failed: the
//! socket's errors and every way a server's bytes can break HTTP/1.1's
//! rules. `send_error.rs` says which step it happened in (sending and
//! reading the head, or reading the body) in the words reqwest's errors
//! use.

use std::fmt;

/// An HTTP/1.1 exchange's failure.
#[derive(Debug)]
pub enum Http1Error {
    /// Writing the request failed before any byte of it was sent: the
    /// server cannot have seen it.
    NotSent(std::io::Error),
    /// Writing the request failed part way.
    Write(std::io::Error),
    /// The connection closed (`None`) or broke before any byte of a reply
    /// arrived: on a reused connection, the server had closed it while
    /// idle (`connections.rs` sends once more).
    NoReply(Option<std::io::Error>),
    /// Reading failed after the reply had begun.
    Read(std::io::Error),
    /// The connection closed before the reply's end.
    Closed,
    /// The reply's head is larger than we accept.
    HeadTooLarge,
    /// The reply's head is not HTTP/1.x.
    MalformedHead(httparse::Error),
    /// A header name or value that the head's parser passed but HTTP's
    /// types refuse, or a status below 100.
    BadHead,
    /// `101 Switching Protocols`: we never ask for an upgrade.
    Upgrade,
    /// A `Content-Length` that is not a number, or two that differ.
    ContentLength,
    /// A chunk's size line that is not hexadecimal, or too large.
    ChunkSize,
    /// A chunk's size line or a trailer longer than we accept.
    ChunkLine,
    /// A chunk's data not followed by its line end.
    ChunkEnd,
}

impl fmt::Display for Http1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Http1Error::NotSent(e)
            | Http1Error::Write(e)
            | Http1Error::Read(e)
            | Http1Error::NoReply(Some(e)) => write!(f, "{e}"),
            Http1Error::NoReply(None) => {
                f.write_str("the server closed the connection without a reply")
            }
            Http1Error::Closed => {
                f.write_str("the server closed the connection before the reply's end")
            }
            Http1Error::HeadTooLarge => f.write_str("the reply's head is larger than 64 KiB"),
            Http1Error::MalformedHead(e) => write!(f, "malformed reply head: {e}"),
            Http1Error::BadHead => f.write_str("malformed reply head: invalid status or header"),
            Http1Error::Upgrade => {
                f.write_str("the server switched protocols, which was not asked")
            }
            Http1Error::ContentLength => f.write_str("the reply's Content-Length is invalid"),
            Http1Error::ChunkSize => f.write_str("a chunk's size is invalid"),
            Http1Error::ChunkLine => f.write_str("a chunk's size line or trailer is too long"),
            Http1Error::ChunkEnd => f.write_str("a chunk's data is not followed by a line end"),
        }
    }
}

impl std::error::Error for Http1Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Http1Error::NotSent(e)
            | Http1Error::Write(e)
            | Http1Error::Read(e)
            | Http1Error::NoReply(Some(e)) => Some(e),
            _ => None,
        }
    }
}
