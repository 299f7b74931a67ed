//! Model providers over HTTP: OpenAI-compatible chat completions (which also
//! covers local servers and gateways) and Anthropic messages. One call is one
//! attempt; retries, budgets and tracing belong to the caller.

use std::time::Duration;

use serde_json::Value;

use super::error::CallError;
use crate::ir::Protocol;

/// An API key. Its `Debug` never shows the key, so it cannot leak into a
/// trace or an error by accident.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The key itself, for the one place that puts it in a header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where a provider's API is.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub protocol: Protocol,
    /// Without a trailing slash, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Option<Secret>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    User(String),
    Assistant { text: Option<String>, tool_calls: Vec<ToolCall> },
    ToolResult { call_id: String, content: String },
}

/// A tool offered to a model (agents).
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model sent them; may be any JSON (or a string
    /// that failed to parse, kept as `Value::String`).
    pub arguments: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    /// The provider's model name, e.g. `gpt-4o-mini`.
    pub model: String,
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub max_tokens: u64,
    pub temperature: Option<f64>,
    /// When set, the reply must be JSON matching this schema (structured
    /// output / JSON mode).
    pub response_schema: Option<Value>,
    pub tools: Vec<ToolSpec>,
    /// Other model parameters, passed through as written.
    pub extra: Vec<(String, Value)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    pub text: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

/// One attempt of a chat call.
pub async fn complete(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    request: &ChatRequest,
    timeout: Duration,
) -> Result<ChatResponse, CallError> {
    let _ = (http, endpoint, request, timeout);
    Err(CallError::new(super::error::ErrorClass::Client, "model providers are being implemented"))
}
