//! `http` tools: one request as the tool's clauses describe it (see
//! `request.rs`), and its response read as its `format` says: `json` parses
//! a body the server says is JSON, `text` takes the body as UTF-8 text.

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use serde_json::{Map, Value};

use super::context::ToolContext;
use super::quote::{parse_json, redact, snippet};
use super::request::{self, Body, HttpSpec};
use crate::exec::{HttpMethod, ResponseFormat, Tool};
use crate::run::error::{CallError, ErrorClass};
use crate::run::http::{self as transport, MAX_BODY_BYTES};
use crate::run::http_reply::HttpReply;

pub(super) async fn call(
    tool: &Tool,
    spec: &HttpSpec<'_>,
    args: &Map<String, Value>,
    ctx: &ToolContext<'_>,
) -> Result<Value, CallError> {
    let request::Request {
        url,
        what,
        headers,
        body,
        secrets,
    } = request::build(
        tool,
        spec,
        args,
        ctx.env,
        ctx.idempotency_key.as_deref(),
        ctx.traceparent.as_deref(),
    )?;

    // The whole exchange is bounded below (`tokio::time::timeout`), so the
    // request carries no timer of its own.
    let method = reqwest_method(spec.method);
    let exchange = async {
        let reply = match ctx.http.connections() {
            Some(connections) => {
                let mut headers = headers;
                let bytes = encode(&body, &mut headers);
                // Boxed: a branch's future is sized by the largest call it
                // may make, so inline the exchange's ~0.7 KiB in flight
                // would be paid by every branch of a fan-out, HTTP or not.
                Box::pin(connections.exchange(method, url, headers, bytes, MAX_BODY_BYTES))
                    .await
                    .map_err(|e| e.to_call_error(&what))?
            }
            // Boxed for the same reason, on a path taken only under a proxy.
            None => Box::pin(through_reqwest(ctx, method, url, headers, &body, &what)).await?,
        };
        let retry_after = transport::retry_after_header(&reply.headers);
        let content_type = reply
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok::<_, CallError>((
            reply.status,
            retry_after,
            content_type,
            reply.body,
            reply.too_large,
        ))
    };
    let (status, retry_after, content_type, body, too_large) =
        match tokio::time::timeout(ctx.timeout, exchange).await {
            Ok(result) => result.map_err(|e| on_tool(tool, e))?,
            Err(_) => return Err(on_tool(tool, transport::timeout_error(&what, ctx.timeout))),
        };

    let code = status.as_u16();
    if !status.is_success() {
        let reason = status
            .canonical_reason()
            .map(|r| format!(" {r}"))
            .unwrap_or_default();
        let mut message = format!("tool `{}`: {what} returned {code}{reason}", tool.name);
        let quoted = redact(&error_text(&body), &secrets);
        if !quoted.is_empty() {
            message.push_str(": ");
            message.push_str(&quoted);
        }
        return Err(transport::status_error(code, retry_after, message));
    }
    let invalid = |message: String| {
        let mut error = CallError::new(
            ErrorClass::Invalid,
            format!("tool `{}`: {message}", tool.name),
        );
        error.status = Some(code);
        error
    };
    if too_large {
        return Err(invalid(format!(
            "the response of {what} is larger than {} MiB",
            MAX_BODY_BYTES >> 20
        )));
    }
    let shown_type = content_type.as_deref().unwrap_or("no content type");
    match spec.format {
        ResponseFormat::Text => String::from_utf8(body).map(Value::String).map_err(|_| {
            invalid(format!(
                "the response of {what} ({shown_type}) is not UTF-8 text"
            ))
        }),
        ResponseFormat::Json => {
            let blank = body.iter().all(u8::is_ascii_whitespace);
            if let Some(ct) = content_type.as_deref().filter(|ct| !blank && !is_json(ct)) {
                return Err(invalid(format!(
                    "{what} answered `{ct}`, not JSON, and the tool reads JSON: {}",
                    redact(&snippet(&body), &secrets)
                )));
            }
            parse_json(&body).map_err(|e| {
                invalid(format!(
                    "the response of {what} is not JSON ({e}; {shown_type}): {}",
                    redact(&snippet(&body), &secrets)
                ))
            })
        }
    }
}

/// The body's bytes, with the content type its encoding implies unless the
/// tool set one (what reqwest's `json` and `form` do).
fn encode(body: &Body, headers: &mut HeaderMap) -> Bytes {
    let (bytes, content_type) = match body {
        Body::None => return Bytes::new(),
        Body::Json(v) => (
            // A `Value` always serialises.
            serde_json::to_vec(v).unwrap_or_default(),
            "application/json",
        ),
        Body::Form(pairs) => (
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish()
                .into_bytes(),
            "application/x-www-form-urlencoded",
        ),
    };
    if !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    Bytes::from(bytes)
}

/// The exchange on reqwest's client, where a proxy is configured (or a
/// caller handed in its client).
async fn through_reqwest(
    ctx: &ToolContext<'_>,
    method: reqwest::Method,
    url: reqwest::Url,
    headers: HeaderMap,
    body: &Body,
    what: &str,
) -> Result<HttpReply, CallError> {
    let mut request = ctx.http.for_url(&url).request(method, url).headers(headers);
    request = match body {
        Body::None => request,
        Body::Json(v) => request.json(v),
        Body::Form(pairs) => request.form(pairs),
    };
    let mut response = request
        .send()
        .await
        .map_err(|e| transport::transport_error(&e, what, ctx.timeout))?;
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let body = transport::read_body(&mut response, MAX_BODY_BYTES, what, ctx.timeout).await?;
    Ok(HttpReply {
        status,
        headers,
        body: body.bytes,
        too_large: body.too_large,
    })
}

/// `application/json`, `application/problem+json`, `text/json`, … (any
/// parameters ignored).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some((_, subtype)) = essence.split_once('/') else {
        return false;
    };
    subtype == "json" || subtype.ends_with("+json")
}

/// What an error response says: its `message` (GitHub, most REST APIs) or
/// `error.message` (OpenAI-style) when it is JSON that has one, otherwise
/// the start of the body.
fn error_text(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let message = v
            .get("message")
            .or_else(|| v.get("error").and_then(|e| e.get("message")))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .and_then(Value::as_str);
        if let Some(m) = message {
            return snippet(m.as_bytes());
        }
    }
    snippet(body)
}

/// A transport error, said of this tool.
fn on_tool(tool: &Tool, mut error: CallError) -> CallError {
    error.message = format!("tool `{}`: {}", tool.name, error.message);
    error
}

fn reqwest_method(method: HttpMethod) -> reqwest::Method {
    match method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "application/vnd.github+json",
            "Application/Problem+JSON",
            "text/json",
        ] {
            assert!(is_json(ct), "{ct}");
        }
        for ct in [
            "text/html; charset=utf-8",
            "text/plain",
            "application/jsonp",
            "json",
        ] {
            assert!(!is_json(ct), "{ct}");
        }
    }

    #[test]
    fn error_messages_from_bodies() {
        assert_eq!(
            error_text(br#"{"message": "Not Found", "documentation_url": "x"}"#),
            "Not Found"
        );
        assert_eq!(error_text(br#"{"error": {"message": "bad"}}"#), "bad");
        assert_eq!(error_text(b"<html>oops</html>"), "<html>oops</html>");
    }
}
