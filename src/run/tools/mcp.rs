//! `mcp` tools: one call of a tool on an MCP server of the run
//! (`servers.rs` starts and keeps them).
//!
//! Failure classes: a server that cannot start or went away is
//! `connection`; no answer within the tool's timeout is `timeout`; a
//! protocol error (unknown tool, invalid arguments) is `client`; a result
//! the server marked `isError` is `failed`, with its text; a result that
//! does not fit the declared type is `invalid` (the caller validates).

use serde_json::{Map, Value};

use super::context::ToolContext;
use super::quote::{redact, snippet};
use crate::exec::{ResponseFormat, ServerId, Tool};
use crate::mcp::client::McpError;
use crate::run::error::{CallError, ErrorClass};

/// The `_meta` key a write or irreversible call's idempotency key travels
/// under (MCP has no standard one; servers that deduplicate read it).
pub const IDEMPOTENCY_META_KEY: &str = "flowc.dev/idempotency-key";

pub(super) async fn call(
    tool: &Tool,
    server: ServerId,
    name: &str,
    format: ResponseFormat,
    args: &Map<String, Value>,
    ctx: &ToolContext<'_>,
) -> Result<Value, CallError> {
    let Some(servers) = ctx.mcp else {
        return Err(CallError::new(
            ErrorClass::Client,
            format!("tool `{}`: no MCP servers in this context", tool.name),
        ));
    };
    let on_tool = |class: ErrorClass, message: String| {
        CallError::new(class, format!("tool `{}`: {message}", tool.name))
    };
    let mut secrets = Vec::new();
    let conn = servers
        .connection(server, ctx.env, &mut secrets)
        .await
        .map_err(|e| on_tool(e.class, e.message))?;
    let meta = ctx.idempotency_key.as_ref().map(|key| {
        let mut meta = Map::new();
        meta.insert(IDEMPOTENCY_META_KEY.into(), Value::String(key.clone()));
        meta
    });
    let outcome = match conn.call(name, args.clone(), meta, ctx.timeout).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let class = match &e {
                McpError::Timeout(_) => ErrorClass::Timeout,
                McpError::Protocol(_) => ErrorClass::Client,
                McpError::Start(_) | McpError::Closed(_) => {
                    servers.forget(server, &conn).await;
                    ErrorClass::Connection
                }
            };
            let tail = conn.stderr();
            let tail = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let mut message = format!("`{name}` on MCP server: {e}");
            if class == ErrorClass::Connection && !tail.is_empty() {
                message.push_str(&format!(" (its stderr ends: {})", redact(tail, &secrets)));
            }
            return Err(on_tool(class, message));
        }
    };
    if outcome.is_error {
        return Err(on_tool(
            ErrorClass::Failed,
            format!(
                "`{name}` reported an error: {}",
                redact(&snippet(outcome.text.as_bytes()), &secrets)
            ),
        ));
    }
    match (format, outcome.structured) {
        (ResponseFormat::Text, _) => Ok(Value::String(outcome.text)),
        (ResponseFormat::Json, Some(v)) => Ok(v),
        (ResponseFormat::Json, None) => serde_json::from_str(&outcome.text).map_err(|e| {
            on_tool(
                ErrorClass::Invalid,
                format!(
                    "`{name}` sent no structured content and its text is not JSON ({e}): {}",
                    redact(&snippet(outcome.text.as_bytes()), &secrets)
                ),
            )
        }),
    }
}
