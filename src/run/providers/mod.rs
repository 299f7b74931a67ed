//! Model providers over HTTP: OpenAI-compatible chat completions (which also
//! covers local servers and gateways) and Anthropic messages. One call is one
//! attempt; retries, budgets and tracing belong to the caller.
//!
//! `chat` holds the protocol-independent request and reply; `openai` and
//! `anthropic` turn them into each protocol's JSON and back. The transport
//! (capped reads, transport errors, `Retry-After`) is `run::http`'s.

mod anthropic;
mod chat;
mod openai;

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;

use super::error::{CallError, ErrorClass};
use super::http::{self as transport, MAX_BODY_BYTES};
use super::http_client::HttpClients;
use crate::exec::Protocol;
use chat::truncate;

pub use chat::{
    ChatRequest, ChatResponse, Endpoint, Message, ResponseSchema, Secret, ToolCall, ToolSpec, Usage,
};

/// The Anthropic API version this client speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";
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
    let clients = HttpClients::from(http.clone());
    complete_traced(&clients, endpoint, request, timeout, None).await
}

/// [`complete`], sending `traceparent` (the W3C trace context of the call's
/// span) with the request, by the run's client for the endpoint's origin.
pub async fn complete_traced(
    http: &HttpClients,
    endpoint: &Endpoint,
    request: &ChatRequest,
    timeout: Duration,
    traceparent: Option<&str>,
) -> Result<ChatResponse, CallError> {
    let exchange = attempt(http, endpoint, request, timeout, traceparent);
    let outcome = match tokio::time::timeout(timeout, exchange).await {
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

/// Where a request went, for error messages (no credentials, no query:
/// see [`shown_url`], made only when a message is).
struct Target<'a> {
    protocol: Protocol,
    url: &'a reqwest::Url,
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (POST {})", label(self.protocol), shown_url(self.url))
    }
}

fn label(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::OpenAi => "OpenAI-compatible provider",
        Protocol::Anthropic => "Anthropic provider",
    }
}

async fn attempt(
    http: &HttpClients,
    endpoint: &Endpoint,
    request: &ChatRequest,
    timeout: Duration,
    traceparent: Option<&str>,
) -> Result<ChatResponse, CallError> {
    let base = endpoint.base_url.trim_end_matches('/');
    let (url, body) = match endpoint.protocol {
        Protocol::OpenAi => (
            format!("{base}/chat/completions"),
            openai::request_body(request),
        ),
        Protocol::Anthropic => (anthropic_url(base), anthropic::request_body(request)),
    };
    // Parsed once: it picks the client (the origin's pool, its HTTP
    // version) and is what the request is sent to.
    let url = reqwest::Url::parse(&url).map_err(|e| {
        CallError::new(
            ErrorClass::Client,
            format!(
                "{} (POST an invalid URL): the request could not be built ({e})",
                label(endpoint.protocol)
            ),
        )
    })?;
    let target = Target {
        protocol: endpoint.protocol,
        url: &url,
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

    let mut response = http
        .for_url(&url)
        .post(url.clone())
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| transport::transport_error(&e, &target, timeout))?;
    let status = response.status().as_u16();
    let reply_headers = response.headers().clone();
    let body = transport::read_body(&mut response, MAX_BODY_BYTES, &target, timeout).await?;
    if body.too_large {
        return Err(CallError {
            class: ErrorClass::Invalid,
            message: format!(
                "{target} sent a reply larger than {} MiB",
                MAX_BODY_BYTES >> 20
            ),
            retry_after: None,
            status: Some(status),
        });
    }
    let bytes = body.bytes;
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

    let mut parsed = parsed;
    if matches!(endpoint.protocol, Protocol::Anthropic) {
        if let Some(output) = anthropic::output_from_tool(request, &parsed.tool_calls) {
            parsed.text = Some(output);
            parsed.tool_calls.clear();
        }
    }
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

/// The messages URL from an Anthropic base URL read as the official SDK
/// reads `ANTHROPIC_BASE_URL`: the API's host (`https://api.anthropic.com`),
/// to which it appends `/v1/messages`. A base that already ends in `/v1`
/// (what flowc once asked for, and some gateways document) is accepted too.
fn anthropic_url(base: &str) -> String {
    if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    }
}

/// A reply with a status other than 2xx.
fn status_error(status: u16, headers: &HeaderMap, body: &[u8], target: &Target) -> CallError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let mut detail = json
        .as_ref()
        .and_then(provider_message)
        .unwrap_or_else(|| excerpt(body));
    if status == 404 {
        // The commonest cause is a base URL written for the other
        // convention: say what the URL should hold.
        detail.push_str(match target.protocol {
            Protocol::OpenAi => " (is the base URL right? For an OpenAI-compatible provider it includes the version, as in https://api.openai.com/v1; flowc appends /chat/completions)",
            Protocol::Anthropic => " (is the base URL right? For Anthropic it is the API's host, as in https://api.anthropic.com; flowc appends /v1/messages)",
        });
    }
    let retry_after = retry_after(headers, json.as_ref(), &detail);
    transport::status_error(
        status,
        retry_after,
        format!("{target} returned HTTP {status}: {detail}"),
    )
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

/// A `Retry-After` value (delay-seconds or an HTTP date) as a wait from now.
fn parse_retry_after(value: &str) -> Option<Duration> {
    transport::parse_retry_after(value, SystemTime::now())
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e7)))
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

/// The URL as error messages show it: no user, password, query or fragment.
fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
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
    if secret.is_empty() {
        return body;
    }
    // Every reply is searched: a vectorised search, not a byte-wise one.
    let finder = memchr::memmem::Finder::new(secret);
    let Some(first) = finder.find(&body) else {
        return body;
    };
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(&body[..first]);
    let mut rest = &body[first..];
    while let Some(at) = finder.find(rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"<redacted>");
        rest = &rest[at + secret.len()..];
    }
    out.extend_from_slice(rest);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    use super::chat::{base_body, MAX_DETAIL_CHARS};
    use crate::exec::ModelFamily;

    #[test]
    fn every_echo_of_the_key_is_scrubbed_and_nothing_else_moves() {
        let scrubbed = |body: &str| String::from_utf8(scrub(body.into(), b"sk-KEY")).unwrap();
        assert_eq!(scrubbed("sk-KEY"), "<redacted>");
        assert_eq!(
            scrubbed("a sk-KEYsk-KEY b sk-KE sk-KEY"),
            "a <redacted><redacted> b sk-KE <redacted>"
        );
        assert_eq!(scrubbed("no key here"), "no key here");
        assert_eq!(scrub(b"x".to_vec(), b""), b"x");
    }

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
            transport::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(expected)
        );
        assert_eq!(
            transport::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(expected)
        );
        assert_eq!(
            transport::parse_http_date("Sun Nov  6 08:49:37 1994"),
            Some(expected)
        );
        assert_eq!(
            transport::parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            transport::parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_835_481_599))
        );
        assert_eq!(
            transport::parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"),
            None
        );
        assert_eq!(transport::parse_http_date("06 Nov 1994"), None);
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
            family: ModelFamily::Standard,
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
