//! Model providers over HTTP: OpenAI-compatible chat completions (which also
//! covers local servers and gateways) and Anthropic messages. One call is one
//! attempt; retries, budgets and tracing belong to the caller.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{json, Map, Value};

use super::error::{CallError, ErrorClass};
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
    /// The model that answered, as the provider names it.
    pub model: Option<String>,
    /// Why the model stopped (`stop`, `length`, `tool_calls`, `end_turn`, …).
    pub finish_reasons: Vec<String>,
}

/// The Anthropic API version this client speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// A reply body larger than this is `invalid` (no chat reply is this big).
const MAX_REPLY_BYTES: usize = 32 << 20;
/// How much of a provider's own text an error message quotes.
const MAX_DETAIL_CHARS: usize = 300;
/// Bytes per token when a reply does not report its usage; the same ratio
/// the checker uses for prompt sizes.
const BYTES_PER_TOKEN: usize = 4;

/// One attempt of a chat call.
///
/// The whole exchange (connecting, sending, the status line and reading the
/// body) is bounded by `timeout`. Failures are classified for retry policies
/// (see [`ErrorClass`]); no error message ever contains the API key.
///
/// When a reply carries no token counts, usage is charged conservatively:
/// the request body at four bytes a token for input and `max_tokens` for
/// output, so a budget is never under-charged.
pub async fn complete(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    request: &ChatRequest,
    timeout: Duration,
) -> Result<ChatResponse, CallError> {
    complete_traced(http, endpoint, request, timeout, None).await
}

/// [`complete`], sending `traceparent` (the W3C trace context of the call's
/// span) with the request.
pub async fn complete_traced(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    request: &ChatRequest,
    timeout: Duration,
    traceparent: Option<&str>,
) -> Result<ChatResponse, CallError> {
    let outcome =
        match tokio::time::timeout(timeout, attempt(http, endpoint, request, traceparent)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(CallError::new(
                ErrorClass::Timeout,
                format!(
                    "{} gave no complete reply within {timeout:?}",
                    label(endpoint.protocol)
                ),
            )),
        };
    outcome.map_err(|error| redact(error, endpoint.api_key.as_ref()))
}

/// A parsed reply; `usage` is `None` when the provider did not report it.
struct Parsed {
    text: Option<String>,
    tool_calls: Vec<ToolCall>,
    usage: Option<Usage>,
    finish_reasons: Vec<String>,
}

/// Where a request went, for error messages (no credentials, no query).
struct Target {
    protocol: Protocol,
    url: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (POST {})", label(self.protocol), self.url)
    }
}

fn label(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::OpenAi => "OpenAI-compatible provider",
        Protocol::Anthropic => "Anthropic provider",
    }
}

async fn attempt(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    request: &ChatRequest,
    traceparent: Option<&str>,
) -> Result<ChatResponse, CallError> {
    let base = endpoint.base_url.trim_end_matches('/');
    let (url, body) = match endpoint.protocol {
        Protocol::OpenAi => (
            format!("{base}/chat/completions"),
            openai::request_body(request),
        ),
        Protocol::Anthropic => (format!("{base}/messages"), anthropic::request_body(request)),
    };
    let target = Target {
        protocol: endpoint.protocol,
        url: shown_url(&url),
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let body_len = body.len();

    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    match endpoint.protocol {
        Protocol::OpenAi => {
            if let Some(key) = &endpoint.api_key {
                headers.insert(
                    AUTHORIZATION,
                    secret_header(&format!("Bearer {}", key.expose()))?,
                );
            }
        }
        Protocol::Anthropic => {
            if let Some(key) = &endpoint.api_key {
                headers.insert("x-api-key", secret_header(key.expose())?);
            }
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
    }

    if let Some(value) = traceparent.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert("traceparent", value);
    }

    let response = http
        .post(&url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| transport_error(e, &target))?;
    let status = response.status().as_u16();
    let reply_headers = response.headers().clone();
    let bytes = read_body(response, &target).await?;
    // A provider that echoes the key (some 401 bodies do) must not put it
    // into an error message, an excerpt cut mid-key, or a model's output.
    let bytes = match endpoint.api_key.as_ref() {
        Some(key) => scrub(bytes, key.expose().as_bytes()),
        None => bytes,
    };

    if !(200..300).contains(&status) {
        return Err(status_error(status, &reply_headers, &bytes, &target));
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| CallError {
        class: ErrorClass::Invalid,
        message: format!(
            "{target} replied with a body that is not JSON ({e}): {}",
            excerpt(&bytes)
        ),
        retry_after: None,
        status: Some(status),
    })?;
    if let Some(error) = error_in_success(&value, &target) {
        return Err(CallError {
            status: Some(status),
            ..error
        });
    }
    let parsed = match endpoint.protocol {
        Protocol::OpenAi => openai::parse(&value),
        Protocol::Anthropic => anthropic::parse(&value),
    }
    .map_err(|problem| CallError {
        class: ErrorClass::Invalid,
        message: format!("{target}: {problem}"),
        retry_after: None,
        status: Some(status),
    })?;

    let text = match (&request.response_schema, parsed.text) {
        (Some(_), Some(text)) => Some(strip_code_fence(&text)),
        (_, text) => text,
    };
    let usage = parsed.usage.unwrap_or(Usage {
        input_tokens: body_len.div_ceil(BYTES_PER_TOKEN) as u64,
        output_tokens: request.max_tokens,
    });
    Ok(ChatResponse {
        text,
        tool_calls: parsed.tool_calls,
        usage,
        model: value
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string),
        finish_reasons: parsed.finish_reasons,
    })
}

/// A header value holding a secret: marked sensitive so it is never logged.
fn secret_header(value: &str) -> Result<HeaderValue, CallError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| {
        CallError::new(
            ErrorClass::Client,
            "the API key is not a valid HTTP header value (it may contain a line break or non-ASCII characters)",
        )
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// Reads the whole body, refusing one larger than [`MAX_REPLY_BYTES`].
async fn read_body(mut response: reqwest::Response, target: &Target) -> Result<Vec<u8>, CallError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(e, target))?
    {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(CallError {
                class: ErrorClass::Invalid,
                message: format!(
                    "{target} sent a reply larger than {} MiB",
                    MAX_REPLY_BYTES >> 20
                ),
                retry_after: None,
                status: Some(response.status().as_u16()),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A failure below HTTP: connecting, sending or reading.
fn transport_error(error: reqwest::Error, target: &Target) -> CallError {
    let error = error.without_url();
    let (class, what) = if error.is_timeout() {
        (ErrorClass::Timeout, "timed out")
    } else if error.is_builder() {
        (ErrorClass::Client, "could not build the request")
    } else if error.is_connect() {
        (ErrorClass::Connection, "could not connect")
    } else if error.is_body() || error.is_decode() {
        (
            ErrorClass::Connection,
            "the connection broke while reading the reply",
        )
    } else {
        (ErrorClass::Connection, "the request failed")
    };
    CallError::new(class, format!("{target}: {what}: {}", error_chain(&error)))
}

/// An error and its sources, `outer: inner: innermost`, without repeats.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let part = error.to_string();
        if parts.last().is_none_or(|last| !last.contains(&part)) {
            parts.push(part);
        }
        next = error.source();
    }
    parts.join(": ")
}

/// A reply with a status other than 2xx.
fn status_error(status: u16, headers: &HeaderMap, body: &[u8], target: &Target) -> CallError {
    let class = ErrorClass::from_status(status);
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let detail = json
        .as_ref()
        .and_then(provider_message)
        .unwrap_or_else(|| excerpt(body));
    let retry_after = retry_after(headers, json.as_ref(), &detail);
    CallError {
        class,
        message: format!("{target} returned HTTP {status}: {detail}"),
        retry_after,
        status: Some(status),
    }
}

/// A 2xx reply that is really an error (some gateways do this).
fn error_in_success(value: &Value, target: &Target) -> Option<CallError> {
    let error = value.get("error").filter(|e| !e.is_null())?;
    if value.get("choices").is_some() || value.get("content").is_some() {
        return None;
    }
    let detail = provider_message(value).unwrap_or_else(|| truncate(&error.to_string()));
    let code = error
        .get("code")
        .and_then(Value::as_u64)
        .filter(|c| (400..600).contains(c));
    let class = code.map_or(ErrorClass::Invalid, |c| ErrorClass::from_status(c as u16));
    let retry_after = retry_after(&HeaderMap::new(), Some(value), &detail);
    Some(CallError {
        class,
        message: format!("{target} replied with an error: {detail}"),
        retry_after,
        status: None,
    })
}

/// The provider's own explanation in an error body: OpenAI and Anthropic use
/// `{"error": {"message", "type"}}`; others use `error`, `message` or
/// `detail` strings.
fn provider_message(body: &Value) -> Option<String> {
    let error = body.get("error");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .or_else(|| error.and_then(Value::as_str))
        .or_else(|| body.get("message").and_then(Value::as_str))
        .or_else(|| body.get("detail").and_then(Value::as_str))?;
    let kind = error
        .and_then(|e| e.get("type").or_else(|| e.get("code")))
        .and_then(Value::as_str)
        .or_else(|| {
            body.get("type")
                .and_then(Value::as_str)
                .filter(|t| *t != "error")
        });
    Some(match kind {
        Some(kind) if !kind.is_empty() => truncate(&format!("{message} [{kind}]")),
        _ => truncate(message),
    })
}

/// How long a server asked us to wait: `retry-after-ms`, then `Retry-After`
/// (seconds or an HTTP date), then a `retry_after` field in the body, then
/// a "try again in 1.5s" in the provider's message.
fn retry_after(headers: &HeaderMap, body: Option<&Value>, message: &str) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if let Some(wait) = seconds(ms / 1000.0) {
            return Some(wait);
        }
    }
    if let Some(wait) = header(RETRY_AFTER.as_str()).and_then(parse_retry_after) {
        return Some(wait);
    }
    let field = |v: &Value| v.get("retry_after").and_then(Value::as_f64);
    if let Some(wait) = body
        .and_then(|b| field(b).or_else(|| b.get("error").and_then(field)))
        .and_then(seconds)
    {
        return Some(wait);
    }
    let lower = message.to_ascii_lowercase();
    let at = lower.find("try again in ")?;
    parse_duration_text(&lower[at + "try again in ".len()..])
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e7)))
}

/// A `Retry-After` value (delay-seconds or an HTTP date) as a wait from now.
fn parse_retry_after(value: &str) -> Option<Duration> {
    super::tool::parse_retry_after(value, SystemTime::now())
}

/// `1.5s`, `20ms`, `1m30s`, `3 seconds` at the start of `text`.
fn parse_duration_text(text: &str) -> Option<Duration> {
    let mut rest = text.trim_start();
    let mut total = 0.0;
    let mut any = false;
    loop {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let Ok(number) = rest[..digits].parse::<f64>() else {
            break;
        };
        let after = rest[digits..].trim_start();
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let scale = match &after[..unit_len] {
            "ms" | "msec" | "milliseconds" => 0.001,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hour" | "hours" => 3600.0,
            _ => break,
        };
        total += number * scale;
        any = true;
        rest = &after[unit_len..];
    }
    if any {
        seconds(total)
    } else {
        None
    }
}

/// An HTTP date (IMF-fixdate, RFC 850 or asctime), always GMT. The one
/// HTTP-date parser: tool calls use it too.
pub(crate) fn parse_http_date(text: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let (mut day, mut month, mut year, mut time) = (None, None, None, None);
    for token in text.split([' ', ',', '-']).filter(|t| !t.is_empty()) {
        if token.contains(':') {
            let mut parts = token.split(':').map(|p| p.parse::<u32>().ok());
            let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
            if parts.next().is_some() || h > 23 || m > 59 || s > 60 {
                return None;
            }
            time = Some(h * 3600 + m * 60 + s);
        } else if token.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = token.parse().ok()?;
            if day.is_none() && token.len() <= 2 {
                day = Some(n);
            } else if token.len() == 4 {
                year = Some(n);
            } else if token.len() == 2 {
                year = Some(if n < 70 { 2000 + n } else { 1900 + n });
            } else {
                return None;
            }
        } else if token.len() >= 3 {
            let prefix = token[..3].to_ascii_lowercase();
            if let Some(i) = MONTHS.iter().position(|m| *m == prefix) {
                month = Some(i as i64 + 1);
            }
        }
    }
    let (day, month, year, time) = (day?, month?, year?, time?);
    if !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days.checked_mul(86_400)?.checked_add(i64::from(time))?;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The URL as error messages show it: no user, password, query or fragment.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "an invalid URL".to_string(),
    }
}

/// Removes the API key from an error message, wherever a provider echoed it.
fn redact(mut error: CallError, key: Option<&Secret>) -> CallError {
    if let Some(key) = key.map(Secret::expose).filter(|k| !k.is_empty()) {
        if error.message.contains(key) {
            error.message = error.message.replace(key, "<redacted>");
        }
    }
    error
}

/// `body` with every occurrence of `secret` replaced by `<redacted>`.
fn scrub(body: Vec<u8>, secret: &[u8]) -> Vec<u8> {
    if secret.is_empty() || !body.windows(secret.len()).any(|w| w == secret) {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = &body[..];
    while !rest.is_empty() {
        if rest.starts_with(secret) {
            out.extend_from_slice(b"<redacted>");
            rest = &rest[secret.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// The start of a body for an error message, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        truncate(&text)
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((at, _)) => format!("{}… (truncated)", &text[..at]),
        None => text.to_string(),
    }
}

/// A reply asked for as JSON that the model wrapped in a Markdown code fence
/// (```json … ```) is unwrapped; anything else is left alone.
fn strip_code_fence(text: &str) -> String {
    let trimmed = text.trim();
    if let Some(inner) = trimmed
        .strip_prefix("```")
        .and_then(|t| t.strip_suffix("```"))
    {
        if let Some((first, rest)) = inner.split_once('\n') {
            if !first.contains('`') && !rest.contains("```") {
                return rest.trim().to_string();
            }
        }
    }
    text.to_string()
}

/// Puts `extra` parameters into a body under the keys the runtime sets
/// itself. A `max_completion_tokens` extra (newer OpenAI models refuse
/// `max_tokens`) replaces `max_tokens` but never raises it, so budgets hold.
fn base_body(request: &ChatRequest) -> Map<String, Value> {
    let mut body: Map<String, Value> = request.extra.iter().cloned().collect();
    body.insert("model".into(), Value::String(request.model.clone()));
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
fn text_of(value: &Value, path: &str) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Array(parts) => Ok(Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<String>(),
        )),
        other => Err(format!("`{path}` is {}, not text", kind_of(other))),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn count(value: &Value, field: &str) -> Option<u64> {
    value.get(field).and_then(Value::as_u64)
}

mod openai {
    use super::*;

    pub(super) fn request_body(request: &ChatRequest) -> Value {
        let mut messages = Vec::with_capacity(request.messages.len() + 1);
        if let Some(system) = &request.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        for message in &request.messages {
            messages.push(match message {
                Message::User(text) => json!({"role": "user", "content": text}),
                Message::Assistant { text, tool_calls } => {
                    let mut m = json!({"role": "assistant", "content": text});
                    if tool_calls.is_empty() {
                        if text.is_none() {
                            m["content"] = json!("");
                        }
                    } else {
                        m["tool_calls"] = tool_calls
                            .iter()
                            .map(|call| {
                                json!({
                                    "id": call.id,
                                    "type": "function",
                                    "function": {"name": call.name, "arguments": arguments_string(&call.arguments)},
                                })
                            })
                            .collect();
                    }
                    m
                }
                Message::ToolResult { call_id, content } => {
                    json!({"role": "tool", "tool_call_id": call_id, "content": content})
                }
            });
        }
        let mut body = base_body(request);
        body.insert("messages".into(), Value::Array(messages));
        if let Some(schema) = &request.response_schema {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": false}}),
            );
        }
        if !request.tools.is_empty() {
            let tools = request
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters,
                    }})
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        Value::Object(body)
    }

    /// Arguments as OpenAI expects them: a JSON string. Arguments that
    /// failed to parse (kept as a string) go back exactly as the model sent
    /// them.
    fn arguments_string(arguments: &Value) -> String {
        match arguments {
            Value::String(raw) => raw.clone(),
            other => other.to_string(),
        }
    }

    pub(super) fn parse(reply: &Value) -> Result<Parsed, String> {
        let choice = reply
            .get("choices")
            .ok_or("the reply has no `choices`")?
            .get(0)
            .ok_or("the reply's `choices` is empty or not a list")?;
        let message = choice
            .get("message")
            .ok_or("the reply has no `choices[0].message`")?;
        let text = text_of(
            message.get("content").unwrap_or(&Value::Null),
            "choices[0].message.content",
        )?;
        let mut tool_calls = Vec::new();
        match message.get("tool_calls") {
            None | Some(Value::Null) => {}
            Some(Value::Array(calls)) => {
                for (i, call) in calls.iter().enumerate() {
                    let function = call.get("function");
                    let name = function
                        .and_then(|f| f.get("name"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            format!("`choices[0].message.tool_calls[{i}].function.name` is missing")
                        })?;
                    let arguments = match function.and_then(|f| f.get("arguments")) {
                        None | Some(Value::Null) => json!({}),
                        Some(Value::String(raw)) if raw.trim().is_empty() => json!({}),
                        Some(Value::String(raw)) => {
                            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()))
                        }
                        Some(other) => other.clone(),
                    };
                    let id = call
                        .get("id")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("call_{i}"), str::to_string);
                    tool_calls.push(ToolCall {
                        id,
                        name: name.to_string(),
                        arguments,
                    });
                }
            }
            Some(other) => {
                return Err(format!(
                    "`choices[0].message.tool_calls` is {}, not a list",
                    kind_of(other)
                ))
            }
        }
        if text.is_none() && tool_calls.is_empty() {
            if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
                return Err(format!("the model refused: {}", truncate(refusal)));
            }
            let finish = choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            return Err(format!(
                "the reply has neither content nor tool calls (finish_reason: {finish})"
            ));
        }
        let usage = reply.get("usage").and_then(|u| {
            Some(Usage {
                input_tokens: count(u, "prompt_tokens")?,
                output_tokens: count(u, "completion_tokens")?,
            })
        });
        let finish_reasons = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(|r| vec![r.to_string()])
            .unwrap_or_default();
        Ok(Parsed {
            text,
            tool_calls,
            usage,
            finish_reasons,
        })
    }
}

mod anthropic {
    use super::*;

    pub(super) fn request_body(request: &ChatRequest) -> Value {
        let mut system = request.system.clone();
        if let Some(schema) = &request.response_schema {
            // Anthropic has no JSON-schema mode: the instruction goes into
            // the system prompt and the caller validates the reply.
            let instruction = format!(
                "Reply with a single JSON value that conforms to the JSON Schema below, and nothing else: \
                 no prose before or after it, no Markdown code fence.\nJSON Schema:\n{schema}"
            );
            system = Some(match system {
                Some(system) if !system.is_empty() => format!("{system}\n\n{instruction}"),
                _ => instruction,
            });
        }

        // Anthropic wants user and assistant turns to alternate, with tool
        // results inside a user turn: consecutive blocks of one role merge.
        let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
        for message in &request.messages {
            let (role, blocks) = match message {
                Message::User(text) => ("user", vec![json!({"type": "text", "text": text})]),
                Message::Assistant { text, tool_calls } => {
                    let mut blocks = Vec::new();
                    if let Some(text) = text.as_ref().filter(|t| !t.trim().is_empty()) {
                        blocks.push(json!({"type": "text", "text": text}));
                    }
                    for call in tool_calls {
                        blocks.push(json!({
                            "type": "tool_use", "id": call.id, "name": call.name, "input": input_object(&call.arguments),
                        }));
                    }
                    ("assistant", blocks)
                }
                Message::ToolResult { call_id, content } => (
                    "user",
                    vec![
                        json!({"type": "tool_result", "tool_use_id": call_id, "content": content}),
                    ],
                ),
            };
            if blocks.is_empty() {
                continue;
            }
            match turns.last_mut() {
                Some((last, existing)) if *last == role => existing.extend(blocks),
                _ => turns.push((role, blocks)),
            }
        }
        let messages = turns
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect();

        let mut body = base_body(request);
        body.insert("messages".into(), Value::Array(messages));
        if let Some(system) = system {
            body.insert("system".into(), Value::String(system));
        }
        if !request.tools.is_empty() {
            let tools = request
                .tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        Value::Object(body)
    }

    /// `tool_use.input` must be an object; arguments from another protocol
    /// that are a JSON string of an object are unwrapped, anything else is
    /// sent as `{}`.
    fn input_object(arguments: &Value) -> Value {
        match arguments {
            Value::Object(_) => arguments.clone(),
            Value::String(raw) => match serde_json::from_str::<Value>(raw) {
                Ok(v @ Value::Object(_)) => v,
                _ => json!({}),
            },
            _ => json!({}),
        }
    }

    pub(super) fn parse(reply: &Value) -> Result<Parsed, String> {
        let blocks = match reply.get("content") {
            Some(Value::Array(blocks)) => blocks,
            Some(other) => {
                return Err(format!(
                    "the reply's `content` is {}, not a list",
                    kind_of(other)
                ))
            }
            None => return Err("the reply has no `content`".to_string()),
        };
        let mut text: Option<String> = None;
        let mut tool_calls = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let part = block
                        .get("text")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("`content[{i}].text` is missing"))?;
                    text.get_or_insert_with(String::new).push_str(part);
                }
                Some("tool_use") => {
                    let name = block
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("`content[{i}].name` is missing"))?;
                    let id = block
                        .get("id")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("toolu_{i}"), str::to_string);
                    let arguments = block.get("input").cloned().unwrap_or_else(|| json!({}));
                    tool_calls.push(ToolCall {
                        id,
                        name: name.to_string(),
                        arguments,
                    });
                }
                // thinking, redacted_thinking and later block kinds
                _ => {}
            }
        }
        let stop = reply
            .get("stop_reason")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        if stop == "refusal" {
            return Err(format!(
                "the model refused: {}",
                truncate(text.as_deref().unwrap_or("(no text)"))
            ));
        }
        if text.is_none() && tool_calls.is_empty() {
            return Err(format!(
                "the reply has neither text nor tool_use content (stop_reason: {stop})"
            ));
        }
        let usage = reply.get("usage").and_then(|u| {
            let cached = count(u, "cache_creation_input_tokens").unwrap_or(0)
                + count(u, "cache_read_input_tokens").unwrap_or(0);
            Some(Usage {
                input_tokens: count(u, "input_tokens")? + cached,
                output_tokens: count(u, "output_tokens")?,
            })
        });
        Ok(Parsed {
            text,
            tool_calls,
            usage,
            finish_reasons: reply
                .get("stop_reason")
                .and_then(Value::as_str)
                .map(|r| vec![r.to_string()])
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn http_dates_in_three_formats() {
        let expected = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(expected)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(expected)
        );
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(expected));
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_835_481_599))
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"), None);
        assert_eq!(parse_http_date("06 Nov 1994"), None);
    }

    #[test]
    fn durations_in_provider_messages() {
        assert_eq!(
            parse_duration_text("1.5s. Visit"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_duration_text("20ms."),
            Some(Duration::from_millis(20))
        );
        assert_eq!(parse_duration_text("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_duration_text("3 seconds"),
            Some(Duration::from_secs(3))
        );
        assert_eq!(parse_duration_text("a moment"), None);
        assert_eq!(parse_duration_text("20."), None);
    }

    #[test]
    fn code_fences() {
        assert_eq!(strip_code_fence("```json\n{\"a\": 1}\n```"), "{\"a\": 1}");
        assert_eq!(strip_code_fence("  ```\n[1]\n```\n"), "[1]");
        assert_eq!(strip_code_fence("{\"a\": \"```\"}"), "{\"a\": \"```\"}");
        assert_eq!(
            strip_code_fence("```json\n{}\n``` and ```x```"),
            "```json\n{}\n``` and ```x```"
        );
    }

    #[test]
    fn truncation_is_on_char_boundaries() {
        let long = "é".repeat(MAX_DETAIL_CHARS + 10);
        let short = truncate(&long);
        assert!(short.ends_with("… (truncated)"));
        assert_eq!(
            short.chars().filter(|c| *c == 'é').count(),
            MAX_DETAIL_CHARS
        );
    }

    #[test]
    fn extras_never_raise_max_tokens() {
        let mut request = ChatRequest {
            model: "m".into(),
            system: None,
            messages: vec![],
            max_tokens: 100,
            temperature: None,
            response_schema: None,
            tools: vec![],
            extra: vec![
                ("max_tokens".into(), json!(5000)),
                ("top_p".into(), json!(0.5)),
            ],
        };
        let body = base_body(&request);
        assert_eq!(body["max_tokens"], json!(100));
        assert_eq!(body["top_p"], json!(0.5));
        request.extra = vec![("max_completion_tokens".into(), json!(5000))];
        let body = base_body(&request);
        assert_eq!(body["max_completion_tokens"], json!(100));
        assert!(!body.contains_key("max_tokens"));
    }
}
