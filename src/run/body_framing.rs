//! How an HTTP/1.1 reply's body ends (RFC 9112 §6.3), decided from its head.

/// Where a reply's body ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BodyFraming {
    /// No body: a reply to `HEAD`, or a 204 or 304.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked coding, ended by its last chunk.
    Chunked,
    /// The body is all the connection carries until the server closes it.
    ToClose,
}
