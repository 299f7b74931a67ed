//! Why a request on the run's own connections (`connections.rs`) failed
//! below HTTP, classified as reqwest's errors are in `http.rs`, so a
//! retry policy and a reader see the same classes and words on either path.

use super::error::{CallError, ErrorClass};
use super::http::redact_urls_in;
use super::http1_error::Http1Error;

/// A failure below HTTP.
#[derive(Debug)]
pub enum SendError {
    /// The URL has no host, or a scheme other than http and https.
    BadUrl,
    /// TCP (or name resolution) failed.
    Connect(std::io::Error),
    /// The TLS handshake failed (a certificate refused, no common version).
    Tls(std::io::Error),
    /// The TLS stack did not start.
    TlsSetup(rustls::Error),
    /// Sending the request or reading the reply's head failed (HTTP/2).
    Request(h2::Error),
    /// The connection broke while the body was read (HTTP/2).
    Body(h2::Error),
    /// Our own HTTP/1.1 exchange failed sending the request or reading the
    /// reply's head.
    Exchange(Http1Error),
    /// Our own HTTP/1.1 exchange failed reading the reply's body.
    ReplyBody(Http1Error),
    /// More than ten redirects, or one back to a URL already visited.
    TooManyRedirects,
}

impl SendError {
    /// The error a call reports: `what` is `METHOD url` as messages show it.
    pub fn to_call_error(&self, what: &str) -> CallError {
        let (class, doing, cause) = match self {
            SendError::BadUrl => (ErrorClass::Client, "the request could not be built", None),
            SendError::Connect(e) | SendError::Tls(e) => {
                (ErrorClass::Connection, "could not connect", innermost(e))
            }
            SendError::TlsSetup(e) => (ErrorClass::Connection, "could not connect", innermost(e)),
            SendError::Request(e) => (
                ErrorClass::Connection,
                "the request failed",
                innermost_h2(e),
            ),
            SendError::Body(e) => (
                ErrorClass::Connection,
                "the connection broke while reading the response",
                innermost_h2(e),
            ),
            SendError::Exchange(e) => (ErrorClass::Connection, "the request failed", innermost(e)),
            SendError::ReplyBody(e) => (
                ErrorClass::Connection,
                "the connection broke while reading the response",
                innermost(e),
            ),
            SendError::TooManyRedirects => (ErrorClass::Client, "too many redirects", None),
        };
        let cause = cause
            .map(|c| format!(" ({})", redact_urls_in(&c)))
            .unwrap_or_default();
        CallError::new(class, format!("{what}: {doing}{cause}"))
    }
}

/// An HTTP/2 failure's cause: the socket's error where it was one (as
/// hyper's client reported them), else what the protocol said.
fn innermost_h2(e: &h2::Error) -> Option<String> {
    match e.get_io() {
        Some(io) => innermost(io),
        None => Some(e.to_string()),
    }
}

/// The innermost cause says what happened ("Connection refused"); the
/// outer ones say where it happened, which the message already does.
fn innermost(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut last = e;
    while let Some(source) = last.source() {
        last = source;
    }
    Some(last.to_string())
}
