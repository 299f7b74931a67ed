//! Failures are values: every model, tool or step failure is a [`CallError`]
//! with a class that retry policies name (`retry 3 on rate_limit, timeout`).

use std::fmt;
use std::time::Duration;

/// What kind of failure happened; the names match `retry … on …` classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// HTTP 429 or a provider's rate-limit error.
    RateLimit,
    /// The call did not finish within its timeout.
    Timeout,
    /// HTTP 5xx.
    ServerError,
    /// The connection could not be made or broke.
    Connection,
    /// The reply did not parse or did not match its type.
    Invalid,
    /// The request was refused as malformed or unauthorised (HTTP 4xx other
    /// than 429): retrying cannot help.
    Client,
    /// A local program failed (non-zero exit) or a builtin failed.
    Failed,
}

impl ErrorClass {
    /// The name used in `retry … on` clauses.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::RateLimit => "rate_limit",
            ErrorClass::Timeout => "timeout",
            ErrorClass::ServerError => "server_error",
            ErrorClass::Connection => "connection",
            ErrorClass::Invalid => "invalid",
            ErrorClass::Client => "client",
            ErrorClass::Failed => "failed",
        }
    }

    /// Classifies an HTTP status that is not a success.
    pub fn from_status(status: u16) -> ErrorClass {
        match status {
            429 => ErrorClass::RateLimit,
            408 => ErrorClass::Timeout,
            500..=599 => ErrorClass::ServerError,
            _ => ErrorClass::Client,
        }
    }
}

/// One failed attempt of a model or tool call.
#[derive(Clone, Debug, PartialEq)]
pub struct CallError {
    pub class: ErrorClass,
    /// What went wrong, for people. Never contains a secret.
    pub message: String,
    /// A server's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The HTTP status, when there was one.
    pub status: Option<u16>,
}

impl CallError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> CallError {
        CallError {
            class,
            message: message.into(),
            retry_after: None,
            status: None,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class.as_str(), self.message)
    }
}

impl std::error::Error for CallError {}
