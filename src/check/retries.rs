//! A003: a write or irreversible tool that is retried after a failure that
//! may already have taken effect (a timeout, a dropped connection, a server
//! error, or a result that did not validate), with no idempotency key. The
//! retry may repeat the effect: a second email, a second payment. A retry on
//! `rate_limit` alone is safe: the service refused the request before acting;
//! so is an HTTP `PUT` or `DELETE`, which is idempotent by definition.

use crate::ast::Effect;
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{Program, ToolKind};

/// Failure classes after which the first attempt may have acted.
const MAY_HAVE_ACTED: [&str; 4] = ["timeout", "connection", "server_error", "invalid"];

pub(super) fn check(program: &Program, out: &mut Vec<Diagnostic>) {
    for tool in &program.tools {
        if tool.effect < Effect::Write || tool.idempotency.is_some() {
            continue;
        }
        // PUT and DELETE are idempotent by definition (RFC 9110): repeating
        // one leaves the same state.
        if let Some(ToolKind::Http { method, .. }) = &tool.kind {
            if method.eq_ignore_ascii_case("PUT") || method.eq_ignore_ascii_case("DELETE") {
                continue;
            }
        }
        let Some(retry) = &tool.retry else { continue };
        if retry.retries == 0 {
            continue;
        }
        let risky: Vec<&str> = retry
            .on
            .iter()
            .map(String::as_str)
            .filter(|c| MAY_HAVE_ACTED.contains(c))
            .collect();
        if risky.is_empty() {
            continue;
        }
        let what = if tool.effect == Effect::Irreversible {
            "irreversible"
        } else {
            "a write"
        };
        let mut d = Diagnostic::new(
            Code::RetryWithoutIdempotency,
            retry.span,
            format!(
                "tool `{}` is {what} and is retried after `{}` with no idempotency key",
                tool.name,
                risky.join("`, `")
            ),
        )
        .label("a retry may repeat the effect")
        .help(format!(
            "declare the key the service deduplicates on, such as `idempotency \"{}:{{{}}}\"` (sent as `Idempotency-Key`), or retry only `on rate_limit`",
            tool.name,
            tool.params.first().map_or("id", |p| p.name.as_str())
        ));
        if let Some(s) = tool.effect_span {
            d = d.with(s, format!("declared {}", tool.effect.as_str()));
        }
        out.push(d);
    }
}
