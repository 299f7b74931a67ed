//! Tool calls: `http` (reqwest), `exec` (a local program: argv, never a
//! shell; JSON on stdin and stdout) and `builtin` (the standard library).
//! One call is one attempt; retries, budgets and tracing belong to the caller.

use std::time::Duration;

use serde_json::{Map, Value};

use super::error::CallError;
use crate::ir::Tool;

/// What a tool call needs besides its arguments.
pub struct ToolContext<'a> {
    pub http: &'a reqwest::Client,
    /// Environment lookup (tests replace the process environment).
    pub env: &'a (dyn Fn(&str) -> Option<String> + Send + Sync),
    /// Sent as `Idempotency-Key` (http) or `FLOWC_IDEMPOTENCY_KEY` (exec).
    pub idempotency_key: Option<String>,
    pub timeout: Duration,
}

/// Calls a tool once with arguments already validated against its parameters.
pub async fn invoke(tool: &Tool, args: &Map<String, Value>, ctx: &ToolContext<'_>) -> Result<Value, CallError> {
    let _ = (tool, args, ctx);
    Err(CallError::new(super::error::ErrorClass::Failed, "tools are being implemented"))
}
