//! A tool's templates rendered in its own scope: its parameters by
//! position and `env.NAME`. URLs percent-encode what lands past the host,
//! except `raw` parameters, which keep what a URL path may hold (`/`,
//! `%XX` escapes) and lose only what would change the URL's shape.

use std::cell::RefCell;

use serde_json::{Map, Value};

use super::context::EnvLookup;
use crate::exec::{Expr, ExprKind, Template, TemplatePart, Tool};
use crate::run::error::{CallError, ErrorClass};
use crate::run::eval::{render_template, render_with, EvalError, Scope};
use crate::run::http::redact_url;

static NULL: Value = Value::Null;

/// Parameters by position (the order the tool declares them) and `env.NAME`;
/// remembers every environment value it hands out, to redact them later.
pub(super) struct ToolScope<'a> {
    tool: &'a Tool,
    args: &'a Map<String, Value>,
    env: &'a EnvLookup,
    seen_env: RefCell<Vec<String>>,
}

impl<'a> ToolScope<'a> {
    pub(super) fn new(
        tool: &'a Tool,
        args: &'a Map<String, Value>,
        env: &'a EnvLookup,
    ) -> ToolScope<'a> {
        ToolScope {
            tool,
            args,
            env,
            seen_env: RefCell::new(Vec::new()),
        }
    }

    /// Every environment value the templates read: redacted from quoted text.
    pub(super) fn into_secrets(self) -> Vec<String> {
        self.seen_env.into_inner()
    }
}

impl Scope for ToolScope<'_> {
    fn param(&self, index: usize) -> Option<&Value> {
        let param = self.tool.params.get(index)?;
        Some(self.args.get(&param.name).unwrap_or(&NULL))
    }

    fn step(&self, _node: petgraph::graph::NodeIndex) -> Option<&Value> {
        None
    }

    fn env(&self, name: &str) -> Option<String> {
        let value = (self.env)(name)?;
        self.seen_env.borrow_mut().push(value.clone());
        Some(value)
    }
}

/// A tool template's text, by the one renderer (`run::eval::render_with`).
pub(super) fn render_plain(t: &Template, scope: &ToolScope<'_>) -> Result<String, EvalError> {
    render_template(t, scope)
}

/// A URL template rendered twice: the real URL, and the one messages show
/// (environment values as `{env.NAME}`). `raw` lists the parameters put in
/// as written.
pub(super) fn render_url(
    t: &Template,
    raw: &[usize],
    scope: &ToolScope<'_>,
) -> Result<(String, String), EvalError> {
    let mut real = String::new();
    let mut shown = String::new();
    render_with(&t.parts, scope, |expr, mut value| {
        let Some(e) = expr else {
            real.push_str(&value);
            shown.push_str(&value);
            return Ok(());
        };
        if past_authority(&real) {
            let in_path = !real[authority_end(&real)..].contains(['?', '#']);
            let is_raw = matches!(e.kind, ExprKind::Param(i) if raw.contains(&i));
            value = if is_raw {
                encode_raw(&value)
            } else {
                percent_encode(&value)
            };
            // `..` would climb out of the path the URL names (URL parsers
            // resolve it, escaped or not): `/repos/{owner}` with `..`.
            if in_path && value.split('/').any(is_dot_segment) {
                return Err(EvalError(
                    "a value in the URL's path is a `.` or `..` segment, which would move the request to another path".into(),
                ));
            }
        } else if !real.is_empty() && !mentions_env(e) && value.contains(HOST_BREAKERS) {
            // A parameter inside the host (`https://{region}.api.example.com`)
            // must not move the request elsewhere (`evil.example/#`).
            return Err(EvalError(
                "a value in the URL's host contains `/`, `?`, `#`, `@`, `\\` or a space".into(),
            ));
        }
        real.push_str(&value);
        match env_name(e) {
            Some(name) => {
                shown.push_str("{env.");
                shown.push_str(name);
                shown.push('}');
            }
            None if mentions_env(e) => shown.push_str("{…}"),
            None => shown.push_str(&value),
        }
        Ok(())
    })?;
    Ok((real, redact_url(&shown)))
}

/// Characters that would end or redirect a URL's host.
const HOST_BREAKERS: [char; 9] = ['/', '?', '#', '@', '\\', ' ', '\t', '\r', '\n'];

/// Whether text appended to `prefix` lands in a URL's path, query or
/// fragment (rather than its scheme or host).
fn past_authority(prefix: &str) -> bool {
    let rest = match prefix.find("://") {
        Some(i) => &prefix[i + 3..],
        None => prefix,
    };
    rest.contains(['/', '?', '#'])
}

/// Where a URL's path starts (the end of its scheme and host).
fn authority_end(url: &str) -> usize {
    let start = url.find("://").map_or(0, |i| i + 3);
    url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i)
}

/// `.` or `..`, in any of the spellings URL parsers resolve (`%2e`, `.%2E`).
fn is_dot_segment(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "." | "%2e" | ".." | ".%2e" | "%2e." | "%2e%2e"
    )
}

/// A `raw` value: the characters a URL path or query may hold literally
/// (RFC 3986 `pchar`, `/` and `%XX` escapes) as written; everything else
/// (space, `?`, `#`, `%` not starting an escape, non-ASCII) as `%XX`, so a
/// raw value can carry slashes but never end the path or start a fragment.
fn encode_raw(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, &b) in bytes.iter().enumerate() {
        let escape = b == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        let literal = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) || escape;
        if literal {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Everything but the unreserved characters of RFC 3986 as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn env_name(e: &Expr) -> Option<&str> {
    match &e.kind {
        ExprKind::Env(name) => Some(name),
        _ => None,
    }
}

fn mentions_env(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Env(_) => true,
        ExprKind::Str(t) => t
            .parts
            .iter()
            .any(|p| matches!(p, TemplatePart::Expr(e) if mentions_env(e))),
        ExprKind::Object(fields) => fields.iter().any(|(_, e)| mentions_env(e)),
        ExprKind::List(items) => items.iter().any(mentions_env),
        ExprKind::Member(e, _) | ExprKind::Len(e) | ExprKind::Not(e) => mentions_env(e),
        ExprKind::Index(a, b)
        | ExprKind::And(a, b)
        | ExprKind::Or(a, b)
        | ExprKind::Compare(a, _, b) => mentions_env(a) || mentions_env(b),
        _ => false,
    }
}

pub(super) fn template_error(tool: &Tool, what: &str, e: EvalError) -> CallError {
    CallError::new(
        ErrorClass::Failed,
        format!("tool `{}`: cannot render its {what}: {e}", tool.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(!past_authority(""));
        assert!(!past_authority("https://"));
        assert!(!past_authority("https://api.example.com"));
        assert!(past_authority("https://api.example.com/"));
        assert!(past_authority("http://h:1/x?q="));
        assert_eq!(
            percent_encode("a b/c?d&e=f+ü~"),
            "a%20b%2Fc%3Fd%26e%3Df%2B%C3%BC~"
        );
        assert_eq!(
            encode_raw("docs/a%20b/c d?x#y%zz/ü"),
            "docs/a%20b/c%20d%3Fx%23y%25zz/%C3%BC"
        );
        assert_eq!(authority_end("https://h.example:8/a?b"), 19);
        assert_eq!(authority_end("{x}"), 3);
        for dots in [".", "..", "%2E", ".%2e", "%2e%2E"] {
            assert!(is_dot_segment(dots), "{dots}");
        }
        assert!(!is_dot_segment("...") && !is_dot_segment(".a"));
    }
}
