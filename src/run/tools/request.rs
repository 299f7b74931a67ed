//! An `http` tool's request, built from its sealed clauses before anything
//! is sent: the URL (path values encoded, `raw` ones as written), the
//! `query` parameters, the headers (with `User-Agent` and an `Accept` that
//! matches the `format`), and the body (`body json|form EXPR`, or the
//! arguments the URL, query and headers do not use).
//!
//! Values become text as templates make them (`text_of`): strings as they
//! are, numbers and booleans as JSON. In the query and a form body a null
//! (an absent optional argument) leaves the name out and a list repeats it
//! (`label=a&label=b`, what most APIs read); a record has no text form
//! there and fails the call before anything is sent.

use serde_json::{Map, Value};

use super::context::EnvLookup;
use super::template::{render_plain, render_url, template_error, ToolScope};
use crate::exec::{BodyEncoding, Expr, HttpBody, HttpMethod, ResponseFormat, Template, Tool};
use crate::run::error::{CallError, ErrorClass};
use crate::run::eval::{eval, kind, text_of};
use crate::run::http::{IDEMPOTENCY_KEY, USER_AGENT};

/// An `http` tool's sealed clauses, borrowed from its `ToolKind::Http`.
pub(super) struct HttpSpec<'a> {
    pub method: HttpMethod,
    pub url: &'a Template,
    pub headers: &'a [(String, Template)],
    pub query: &'a [(String, Expr)],
    pub body: &'a HttpBody,
    pub format: ResponseFormat,
    pub raw: &'a [usize],
}

/// A request ready to send.
pub(super) struct Request {
    pub url: reqwest::Url,
    /// `METHOD url` as messages show it (no query, `{env.NAME}` for values
    /// from the environment).
    pub what: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Body,
    /// Every header and environment value used: redacted from quoted text.
    pub secrets: Vec<String>,
}

pub(super) enum Body {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
}

/// Builds the request. Everything is rendered here, before the first
/// `await` of the call (the scope is not `Sync`).
pub(super) fn build(
    tool: &Tool,
    spec: &HttpSpec<'_>,
    args: &Map<String, Value>,
    env: &EnvLookup,
    idempotency_key: Option<&str>,
    traceparent: Option<&str>,
) -> Result<Request, CallError> {
    let scope = ToolScope::new(tool, args, env);
    let (real_url, shown_url) =
        render_url(spec.url, spec.raw, &scope).map_err(|e| template_error(tool, "URL", e))?;
    let what = format!("{} {shown_url}", spec.method.as_str());
    let client_error = |message: String| {
        CallError::new(
            ErrorClass::Client,
            format!("tool `{}`: {message}", tool.name),
        )
    };

    let mut url = reqwest::Url::parse(&real_url)
        .map_err(|e| client_error(format!("{what} is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(client_error(format!("{what} is not an http or https URL")));
    }

    let mut pairs = Vec::new();
    for (name, e) in spec.query {
        let value =
            eval(e, &scope).map_err(|e| template_error(tool, &format!("query `{name}`"), e))?;
        push_pairs(&mut pairs, name, value)
            .map_err(|k| client_error(format!("query parameter `{name}` is a {k}, which has no text form in a URL; pass its fields one by one")))?;
    }
    if !pairs.is_empty() {
        url.query_pairs_mut().extend_pairs(&pairs);
    }

    // Sized for what is added below (the tool's, the defaults, the key,
    // the trace context, a body's type): a map left to grow makes room for
    // six, and a call in flight keeps it (a redirect sends it again).
    let mut headers = reqwest::header::HeaderMap::with_capacity(
        spec.headers.len()
            + 2
            + usize::from(idempotency_key.is_some())
            + usize::from(traceparent.is_some())
            + usize::from(!matches!(spec.body, HttpBody::None)),
    );
    let mut secrets = Vec::new();
    for (name, template) in spec.headers {
        let value = render_plain(template, &scope)
            .map_err(|e| template_error(tool, &format!("header `{name}`"), e))?;
        let header_name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| client_error(format!("`{name}` is not a valid HTTP header name")))?;
        let mut header_value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
            client_error(format!(
                "the value of header `{name}` is not allowed in HTTP"
            ))
        })?;
        header_value.set_sensitive(true);
        headers.append(header_name, header_value);
        secrets.push(value);
    }
    let defaults = [
        (reqwest::header::ACCEPT, accept(spec.format)),
        (reqwest::header::USER_AGENT, USER_AGENT),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, reqwest::header::HeaderValue::from_static(value));
        }
    }
    if let Some(key) = idempotency_key {
        let value = reqwest::header::HeaderValue::from_str(key).map_err(|_| {
            client_error("the idempotency key is not allowed in an HTTP header".into())
        })?;
        headers.insert(IDEMPOTENCY_KEY, value);
    }
    if let Some(value) = traceparent.and_then(|t| reqwest::header::HeaderValue::from_str(t).ok()) {
        headers.insert("traceparent", value);
    }

    let body = match spec.body {
        HttpBody::None => Body::None,
        HttpBody::Args(indices) => {
            let mut fields = Map::new();
            for &i in indices {
                let Some(param) = tool.params.get(i) else {
                    continue;
                };
                if let Some(v) = args.get(&param.name) {
                    fields.insert(param.name.clone(), v.clone());
                }
            }
            Body::Json(Value::Object(fields))
        }
        HttpBody::Value(encoding, e) => {
            let value = eval(e, &scope).map_err(|e| template_error(tool, "body", e))?;
            match encoding {
                BodyEncoding::Json => Body::Json(value),
                BodyEncoding::Form => Body::Form(form_pairs(value).map_err(|e| client_error(e.0))?),
            }
        }
    };
    secrets.extend(scope.into_secrets());
    Ok(Request {
        url,
        what,
        headers,
        body,
        secrets,
    })
}

/// What the request asks for: the format it reads, anything else after it
/// (a server that has only one representation still answers).
fn accept(format: ResponseFormat) -> &'static str {
    match format {
        ResponseFormat::Json => "application/json",
        ResponseFormat::Text => "text/plain, text/*;q=0.9, */*;q=0.5",
    }
}

/// One query or form value as name-value pairs; `Err` names the kind of a
/// value that has no text form.
fn push_pairs(
    pairs: &mut Vec<(String, String)>,
    name: &str,
    value: Value,
) -> Result<(), &'static str> {
    match value {
        Value::Null => Ok(()),
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Null => {}
                    Value::Array(_) | Value::Object(_) => return Err("list of lists or records"),
                    scalar => pairs.push((name.to_string(), text_of(scalar))),
                }
            }
            Ok(())
        }
        Value::Object(_) => Err("record"),
        scalar => {
            pairs.push((name.to_string(), text_of(scalar)));
            Ok(())
        }
    }
}

/// Why a value has no form encoding.
struct NotAForm(String);

/// A `body form` value: a record whose fields become name-value pairs.
fn form_pairs(value: Value) -> Result<Vec<(String, String)>, NotAForm> {
    let Value::Object(fields) = value else {
        return Err(NotAForm(format!(
            "a `body form` must be a record, not a {}",
            kind(&value)
        )));
    };
    let mut pairs = Vec::new();
    for (name, v) in fields {
        push_pairs(&mut pairs, &name, v).map_err(|k| {
            NotAForm(format!("form field `{name}` is a {k}, which has no form encoding; send a `body json` instead"))
        })?;
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_and_form_values() {
        let mut pairs = Vec::new();
        push_pairs(&mut pairs, "a", json!(["x", null, 2, true])).unwrap();
        push_pairs(&mut pairs, "b", Value::Null).unwrap();
        push_pairs(&mut pairs, "c", json!(1.5)).unwrap();
        assert_eq!(
            pairs,
            [("a", "x"), ("a", "2"), ("a", "true"), ("c", "1.5")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(push_pairs(&mut pairs, "d", json!({"k": 1})), Err("record"));
        let err = |v: Value| form_pairs(v).err().map(|e| e.0).unwrap_or_default();
        assert!(err(json!("text")).contains("a string"));
        assert!(err(json!({"n": [[1]]})).contains("`n` is a list of lists"));
    }
}
