//! Tool calls: `http` (reqwest), `exec` (a local program: argv, never a
//! shell; JSON on stdin and stdout), `builtin` (the standard library) and
//! `mcp` (a tool of an MCP server, with the `rmcp` SDK).
//! One call is one attempt; retries, budgets and tracing belong to the caller.
//!
//! Templates in a tool read its parameters and `env.NAME`. In an `http` URL,
//! a value interpolated after the scheme and host (in the path or the query)
//! is percent-encoded, so `{id}` = `a/b?c` stays one path segment and
//! `{q}` = `x&admin=1` stays one query value; values before that (a base URL
//! from `env.API`) and the fixed text are used as written. A `raw` parameter
//! keeps its slashes and escapes; no value may be a `.` or `..` segment. A
//! parameter that is absent (optional) renders as empty text.
//!
//! Secrets: header values and environment values never appear in an error
//! message. URLs in messages show `{env.NAME}` in place of environment
//! values and lose their query string and any user information; text that
//! comes from the other side (a response body, a program's stderr) has every
//! header and environment value it contains replaced by `<redacted>`.
//!
//! The output limit (`limit N tokens`) is not applied here: the caller cuts
//! what reaches a prompt.
//!
//! `template` renders a tool's templates in its scope; `quote` keeps
//! secrets out of what a message quotes; one file per kind of tool.

mod builtin;
mod context;
mod exec;
mod http;
mod mcp;
mod quote;
mod request;
mod servers;
mod template;

use serde_json::{Map, Value};

use super::error::CallError;
use crate::exec::{Tool, ToolKind};
use template::{render_plain, template_error, ToolScope};

pub use builtin::rfc3339;
pub use context::{EnvLookup, ToolContext};
pub use mcp::IDEMPOTENCY_META_KEY;
pub use servers::{McpServers, StoppedServer};

/// Calls a tool once with arguments already validated against its parameters.
pub async fn invoke(
    tool: &Tool,
    args: &Map<String, Value>,
    ctx: &ToolContext<'_>,
) -> Result<Value, CallError> {
    match &tool.kind {
        ToolKind::Http {
            method,
            url,
            headers,
            query,
            body,
            format,
            raw,
        } => {
            let spec = request::HttpSpec {
                method: *method,
                url,
                headers,
                query,
                body,
                format: *format,
                raw,
            };
            http::call(tool, &spec, args, ctx).await
        }
        // Boxed: a program's or an MCP server's call holds far more state
        // than an HTTP request, and inline it would size every tool call's
        // future (each branch of a fan-out keeps one).
        ToolKind::Exec { argv } => Box::pin(exec::call(tool, argv, args, ctx)).await,
        ToolKind::Builtin(builtin) => builtin::call(tool, *builtin, args, ctx).await,
        ToolKind::Mcp {
            server,
            name,
            format,
        } => Box::pin(mcp::call(tool, *server, name, *format, args, ctx)).await,
    }
}

/// The tool's `idempotency` template rendered with these arguments (what the
/// caller passes as [`ToolContext::idempotency_key`]), or `None` when the
/// tool declares none.
pub fn idempotency_key(
    tool: &Tool,
    args: &Map<String, Value>,
    env: &EnvLookup,
) -> Result<Option<String>, CallError> {
    let Some(t) = &tool.idempotency else {
        return Ok(None);
    };
    let scope = ToolScope::new(tool, args, env);
    render_plain(t, &scope)
        .map(Some)
        .map_err(|e| template_error(tool, "idempotency key", e))
}
