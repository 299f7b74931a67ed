//! `http` tools: one request with the rendered URL and headers, the
//! arguments as the JSON body of POST, PUT and PATCH.

use serde_json::{Map, Value};

use super::context::ToolContext;
use super::quote::{parse_json, redact, snippet};
use super::template::{render_plain, render_url, template_error, ToolScope};
use crate::exec::{HttpMethod, Template, Tool};
use crate::run::error::{CallError, ErrorClass};
use crate::run::http::{self as transport, MAX_BODY_BYTES};

pub(super) async fn call(
    tool: &Tool,
    method: HttpMethod,
    url: &Template,
    headers: &[(String, Template)],
    args: &Map<String, Value>,
    ctx: &ToolContext<'_>,
) -> Result<Value, CallError> {
    // Render everything before the first await: the scope is not `Sync`.
    let (real_url, shown_url, header_values, mut secrets) = {
        let scope = ToolScope::new(tool, args, ctx.env);
        let (real, shown) = render_url(url, &scope).map_err(|e| template_error(tool, "URL", e))?;
        let mut rendered = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let value = render_plain(value, &scope)
                .map_err(|e| template_error(tool, &format!("header `{name}`"), e))?;
            rendered.push((name.clone(), value));
        }
        (real, shown, rendered, scope.secrets())
    };
    secrets.extend(header_values.iter().map(|(_, v)| v.clone()));
    let what = format!("{} {shown_url}", method.as_str());
    let client_error = |message: String| {
        CallError::new(
            ErrorClass::Client,
            format!("tool `{}`: {message}", tool.name),
        )
    };

    let parsed = reqwest::Url::parse(&real_url)
        .map_err(|e| client_error(format!("{what} is not a valid URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(client_error(format!("{what} is not an http or https URL")));
    }

    let mut header_map = reqwest::header::HeaderMap::new();
    for (name, value) in &header_values {
        let header_name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| client_error(format!("`{name}` is not a valid HTTP header name")))?;
        let mut header_value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
            client_error(format!(
                "the value of header `{name}` is not allowed in HTTP"
            ))
        })?;
        header_value.set_sensitive(true);
        header_map.append(header_name, header_value);
    }
    if !header_map.contains_key(reqwest::header::ACCEPT) {
        header_map.insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
    }
    if let Some(key) = &ctx.idempotency_key {
        let value = reqwest::header::HeaderValue::from_str(key).map_err(|_| {
            client_error("the idempotency key is not allowed in an HTTP header".into())
        })?;
        header_map.insert("idempotency-key", value);
    }

    if let Some(value) = ctx
        .traceparent
        .as_deref()
        .and_then(|t| reqwest::header::HeaderValue::from_str(t).ok())
    {
        header_map.insert("traceparent", value);
    }

    let sends_body = method.sends_body();
    let mut request = ctx
        .http
        .request(reqwest_method(method), parsed)
        .headers(header_map)
        .timeout(ctx.timeout);
    if sends_body {
        request = request.json(args);
    }

    let exchange = async {
        let mut response = request
            .send()
            .await
            .map_err(|e| transport::transport_error(&e, &what, ctx.timeout))?;
        let status = response.status();
        let retry_after = transport::retry_after_header(response.headers());
        let body = transport::read_body(&mut response, MAX_BODY_BYTES, &what, ctx.timeout).await?;
        Ok::<_, CallError>((status, retry_after, body.bytes, body.too_large))
    };
    let (status, retry_after, body, too_large) =
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
        let quoted = redact(&snippet(&body), &secrets);
        if !quoted.is_empty() {
            message.push_str(": ");
            message.push_str(&quoted);
        }
        return Err(transport::status_error(code, retry_after, message));
    }
    if too_large {
        let mut error = CallError::new(
            ErrorClass::Invalid,
            format!(
                "tool `{}`: the response of {what} is larger than {} MiB",
                tool.name,
                MAX_BODY_BYTES >> 20
            ),
        );
        error.status = Some(code);
        return Err(error);
    }
    parse_json(&body).map_err(|e| {
        let mut error = CallError::new(
            ErrorClass::Invalid,
            format!(
                "tool `{}`: the response of {what} is not JSON ({e}): {}",
                tool.name,
                redact(&snippet(&body), &secrets)
            ),
        );
        error.status = Some(code);
        error
    })
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
