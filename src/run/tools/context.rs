//! What a tool call needs besides its arguments.

use std::time::Duration;

use super::servers::McpServers;

/// How templates read `env.NAME` (tests replace the process environment).
pub type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// What a tool call needs besides its arguments.
pub struct ToolContext<'a> {
    /// The run's clients; each request takes the one for its origin.
    pub http: &'a crate::run::http_client::HttpClients,
    /// Environment lookup (tests replace the process environment).
    pub env: &'a EnvLookup,
    /// Sent as `Idempotency-Key` (http) or `FLOWC_IDEMPOTENCY_KEY` (exec).
    pub idempotency_key: Option<String>,
    pub timeout: Duration,
    /// The W3C `traceparent` of the call's span, sent as a header (http).
    pub traceparent: Option<String>,
    /// The run's MCP servers (`None` where no `mcp` tool can be called).
    pub mcp: Option<&'a McpServers>,
}
