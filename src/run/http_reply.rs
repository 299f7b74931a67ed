//! A reply of an `http` tool's request, its body read up to a cap.

/// What the tool reads of a reply: its status, headers and capped body.
pub struct HttpReply {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    /// The body was larger than the cap; `body` holds what came before.
    pub too_large: bool,
}
