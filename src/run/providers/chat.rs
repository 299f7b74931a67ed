//! What a chat call is, whatever the protocol: messages, tools offered,
//! the reply and its usage, and the helpers both protocols' codecs share.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::exec::{ModelFamily, Protocol};

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
    Assistant {
        text: Option<String>,
        tool_calls: Vec<ToolCall>,
    },
    ToolResult {
        call_id: String,
        content: String,
    },
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
    /// Which parameters its API takes (sealed with the model).
    pub family: ModelFamily,
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub max_tokens: u64,
    pub temperature: Option<f64>,
    /// When set, the reply must be JSON matching this schema (structured
    /// output / JSON mode).
    pub response_schema: Option<ResponseSchema>,
    pub tools: Vec<ToolSpec>,
    /// Other model parameters, passed through as written.
    pub extra: Vec<(String, Value)>,
}

/// The JSON Schema a reply must match, shared by every attempt of a step
/// (built once per step and run), with its printed length: the reservation
/// counts it as prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseSchema {
    pub document: Arc<Value>,
    pub chars: usize,
}

impl ResponseSchema {
    pub fn new(document: Value) -> ResponseSchema {
        let chars = document.to_string().len();
        ResponseSchema {
            document: Arc::new(document),
            chars,
        }
    }
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
    /// The model that answered, as the provider names it.
    pub model: Option<String>,
    /// Why the model stopped (`stop`, `length`, `tool_calls`, `end_turn`, …).
    pub finish_reasons: Vec<String>,
}

/// How much of a provider's own text an error message quotes.
pub(crate) const MAX_DETAIL_CHARS: usize = 300;

/// What is wrong with a reply's shape, for an `invalid` error.
#[derive(Debug)]
pub(crate) struct Malformed(pub String);

impl From<String> for Malformed {
    fn from(s: String) -> Malformed {
        Malformed(s)
    }
}

impl From<&str> for Malformed {
    fn from(s: &str) -> Malformed {
        Malformed(s.to_string())
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed reply; `usage` is `None` when the provider did not report it.
pub(crate) struct Parsed {
    pub text: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Option<Usage>,
    pub finish_reasons: Vec<String>,
}

/// A provider's text cut for a message.
pub(crate) fn truncate(text: &str) -> String {
    crate::run::http::truncate(text, MAX_DETAIL_CHARS, "… (truncated)")
}

/// Puts `extra` parameters into a body under the keys the runtime sets
/// itself. The output bound goes under the key the model's family takes:
/// `max_completion_tokens` for OpenAI's reasoning models (they refuse
/// `max_tokens`; the bound covers their hidden reasoning tokens, billed as
/// output, so the reservation holds). A `max_completion_tokens` extra on
/// another model replaces `max_tokens` the same way; neither ever raises
/// the bound, so budgets hold.
pub(crate) fn base_body(request: &ChatRequest) -> Map<String, Value> {
    let mut body: Map<String, Value> = request.extra.iter().cloned().collect();
    body.insert("model".into(), Value::String(request.model.clone()));
    let completion_bound = request.family == ModelFamily::OpenAiReasoning;
    if completion_bound && !body.contains_key("max_completion_tokens") {
        body.insert("max_completion_tokens".into(), json!(request.max_tokens));
    }
    match body.get("max_completion_tokens") {
        Some(_) => {
            let asked = body["max_completion_tokens"]
                .as_u64()
                .unwrap_or(request.max_tokens);
            body.insert(
                "max_completion_tokens".into(),
                json!(asked.min(request.max_tokens)),
            );
            body.remove("max_tokens");
        }
        None => {
            body.insert("max_tokens".into(), json!(request.max_tokens));
        }
    }
    if let Some(temperature) = request.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    body
}

/// `choices[0].message.content`-style text: a string, or a list of parts
/// with `text` fields.
pub(crate) fn text_of(value: &Value, path: &str) -> Result<Option<String>, Malformed> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Array(parts) => Ok(Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<String>(),
        )),
        other => Err(Malformed(format!(
            "`{path}` is {}, not text",
            kind_of(other)
        ))),
    }
}

pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn count(value: &Value, field: &str) -> Option<u64> {
    value.get(field).and_then(Value::as_u64)
}
