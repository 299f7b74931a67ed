//! What a tool error quotes from the other side (a body, stderr): short,
//! and with every secret replaced by `<redacted>`.

use serde_json::Value;

use crate::run::http::truncate;

/// Characters of a body or output quoted in a message.
const SNIPPET_CHARS: usize = 300;
/// Values shorter than this are not redacted from quoted text: they are too
/// short to be secrets, and redacting them would garble the message.
const MIN_REDACT_CHARS: usize = 4;

/// `text` with every secret in it replaced by `<redacted>`.
pub(super) fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    let mut secrets: Vec<&String> = secrets
        .iter()
        .filter(|s| s.chars().count() >= MIN_REDACT_CHARS)
        .collect();
    // Longest first, so a header value `Bearer KEY` goes before its `KEY`.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "<redacted>");
        }
    }
    out
}

/// A short quote of some bytes for a message.
pub(super) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SNIPPET_CHARS * 4)]);
    truncate(text.trim(), SNIPPET_CHARS, "…")
}

/// JSON from a body or stdout; nothing (or only whitespace) is null.
pub(super) fn parse_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        assert_eq!(
            redact("token sk-123456 here", &["sk-123456".into(), "ab".into()]),
            "token <redacted> here"
        );
    }
}
