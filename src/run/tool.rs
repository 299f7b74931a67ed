//! Tool calls: `http` (reqwest), `exec` (a local program: argv, never a
//! shell; JSON on stdin and stdout) and `builtin` (the standard library).
//! One call is one attempt; retries, budgets and tracing belong to the caller.
//!
//! Templates in a tool read its parameters and `env.NAME`. In an `http` URL,
//! a value interpolated after the scheme and host (in the path or the query)
//! is percent-encoded, so `{id}` = `a/b?c` stays one path segment and
//! `{q}` = `x&admin=1` stays one query value; values before that (a base URL
//! from `env.API`) and the fixed text are used as written. A parameter that
//! is absent (optional) renders as empty text.
//!
//! Secrets: header values and environment values never appear in an error
//! message. URLs in messages show `{env.NAME}` in place of environment
//! values and lose their query string and any user information; text that
//! comes from the other side (a response body, a program's stderr) has every
//! header and environment value it contains replaced by `<redacted>`.
//!
//! The output limit (`limit N tokens`) is not applied here: the caller cuts
//! what reaches a prompt.

use std::cell::RefCell;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::error::{CallError, ErrorClass};
use super::eval::{eval, EvalError, Scope};
use crate::ir::{Expr, ExprKind, Template, TemplatePart, Tool, ToolKind};

/// How templates read `env.NAME` (tests replace the process environment).
pub type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// What a tool call needs besides its arguments.
pub struct ToolContext<'a> {
    pub http: &'a reqwest::Client,
    /// Environment lookup (tests replace the process environment).
    pub env: &'a EnvLookup,
    /// Sent as `Idempotency-Key` (http) or `FLOWC_IDEMPOTENCY_KEY` (exec).
    pub idempotency_key: Option<String>,
    pub timeout: Duration,
    /// The W3C `traceparent` of the call's span, sent as a header (http).
    pub traceparent: Option<String>,
}

/// The largest response body or program output read, in bytes.
const MAX_OUTPUT_BYTES: usize = 32 * 1024 * 1024;
/// How much of a program's stderr is kept (its end).
const STDERR_KEEP_BYTES: usize = 64 * 1024;
/// Characters of a body or output quoted in a message.
const SNIPPET_CHARS: usize = 300;
/// Values shorter than this are not redacted from quoted text: they are too
/// short to be secrets, and redacting them would garble the message.
const MIN_REDACT_CHARS: usize = 4;

/// Calls a tool once with arguments already validated against its parameters.
pub async fn invoke(
    tool: &Tool,
    args: &Map<String, Value>,
    ctx: &ToolContext<'_>,
) -> Result<Value, CallError> {
    match &tool.kind {
        Some(ToolKind::Http {
            method,
            url,
            headers,
            ..
        }) => http(tool, method, url, headers, args, ctx).await,
        Some(ToolKind::Exec { argv }) => exec(tool, argv, args, ctx).await,
        Some(ToolKind::Builtin { name }) => builtin(tool, name, args, ctx).await,
        None => Err(CallError::new(
            ErrorClass::Failed,
            format!("tool `{}` has no implementation", tool.name),
        )),
    }
}

/// The tool's `idempotency` template rendered with these arguments (what the
/// caller passes as [`ToolContext::idempotency_key`]), or `None` when the
/// tool declares none.
pub fn idempotency_key(
    tool: &Tool,
    args: &Map<String, Value>,
    env: &EnvLookup,
) -> Result<Option<String>, CallError> {
    let Some(t) = &tool.idempotency else {
        return Ok(None);
    };
    let scope = ToolScope::new(tool, args, env);
    render_plain(t, &scope)
        .map(Some)
        .map_err(|e| template_error(tool, "idempotency key", e))
}

// ---------------------------------------------------------------------------
// Templates

static NULL: Value = Value::Null;

/// Parameters by position (the order the tool declares them) and `env.NAME`;
/// remembers every environment value it hands out, to redact them later.
struct ToolScope<'a> {
    tool: &'a Tool,
    args: &'a Map<String, Value>,
    env: &'a EnvLookup,
    seen_env: RefCell<Vec<String>>,
}

impl<'a> ToolScope<'a> {
    fn new(tool: &'a Tool, args: &'a Map<String, Value>, env: &'a EnvLookup) -> ToolScope<'a> {
        ToolScope {
            tool,
            args,
            env,
            seen_env: RefCell::new(Vec::new()),
        }
    }

    fn secrets(&self) -> Vec<String> {
        self.seen_env.borrow().clone()
    }
}

impl Scope for ToolScope<'_> {
    fn param(&self, index: usize) -> Option<&Value> {
        let param = self.tool.params.get(index)?;
        Some(self.args.get(&param.name).unwrap_or(&NULL))
    }

    fn step(&self, _node: petgraph::graph::NodeIndex) -> Option<&Value> {
        None
    }

    fn env(&self, name: &str) -> Option<String> {
        let value = (self.env)(name)?;
        self.seen_env.borrow_mut().push(value.clone());
        Some(value)
    }
}

/// A value as template text: strings as they are, null as nothing, other
/// values as compact JSON.
fn text_of(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn render_plain(t: &Template, scope: &ToolScope<'_>) -> Result<String, EvalError> {
    let mut out = String::new();
    for part in &t.parts {
        match part {
            TemplatePart::Text(s) => out.push_str(s),
            TemplatePart::Expr(e) => out.push_str(&text_of(eval(e, scope)?)),
        }
    }
    Ok(out)
}

/// A URL template rendered twice: the real URL, and the one messages show
/// (environment values as `{env.NAME}`).
fn render_url(t: &Template, scope: &ToolScope<'_>) -> Result<(String, String), EvalError> {
    let mut real = String::new();
    let mut shown = String::new();
    for part in &t.parts {
        match part {
            TemplatePart::Text(s) => {
                real.push_str(s);
                shown.push_str(s);
            }
            TemplatePart::Expr(e) => {
                let mut value = text_of(eval(e, scope)?);
                if past_authority(&real) {
                    value = percent_encode(&value);
                } else if !real.is_empty() && !mentions_env(e) && value.contains(HOST_BREAKERS) {
                    // A parameter inside the host (`https://{region}.api.example.com`)
                    // must not move the request elsewhere (`evil.example/#`).
                    return Err(EvalError(
                        "a value in the URL's host contains `/`, `?`, `#`, `@`, `\\` or a space"
                            .into(),
                    ));
                }
                real.push_str(&value);
                match env_name(e) {
                    Some(name) => {
                        shown.push_str("{env.");
                        shown.push_str(name);
                        shown.push('}');
                    }
                    None if mentions_env(e) => shown.push_str("{…}"),
                    None => shown.push_str(&value),
                }
            }
        }
    }
    Ok((real, redact_url(&shown)))
}

/// Characters that would end or redirect a URL's host.
const HOST_BREAKERS: [char; 9] = ['/', '?', '#', '@', '\\', ' ', '\t', '\r', '\n'];

/// Whether text appended to `prefix` lands in a URL's path, query or
/// fragment (rather than its scheme or host).
fn past_authority(prefix: &str) -> bool {
    let rest = match prefix.find("://") {
        Some(i) => &prefix[i + 3..],
        None => prefix,
    };
    rest.contains(['/', '?', '#'])
}

/// Everything but the unreserved characters of RFC 3986 as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn env_name(e: &Expr) -> Option<&str> {
    match &e.kind {
        ExprKind::Env(name) => Some(name),
        _ => None,
    }
}

fn mentions_env(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Env(_) => true,
        ExprKind::Str(t) => t
            .parts
            .iter()
            .any(|p| matches!(p, TemplatePart::Expr(e) if mentions_env(e))),
        ExprKind::Object(fields) => fields.iter().any(|(_, e)| mentions_env(e)),
        ExprKind::List(items) => items.iter().any(mentions_env),
        ExprKind::Member(e, _) | ExprKind::Len(e) | ExprKind::Not(e) => mentions_env(e),
        ExprKind::Index(a, b)
        | ExprKind::And(a, b)
        | ExprKind::Or(a, b)
        | ExprKind::Compare(a, _, b) => mentions_env(a) || mentions_env(b),
        _ => false,
    }
}

/// A URL fit for a message: no query string, fragment or user information.
fn redact_url(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find('/')
        .map_or(url.len(), |i| authority_start + i);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}{}",
            &url[..authority_start],
            &url[authority_start + at + 1..]
        ),
        None => url.to_string(),
    }
}

fn template_error(tool: &Tool, what: &str, e: EvalError) -> CallError {
    CallError::new(
        ErrorClass::Failed,
        format!("tool `{}`: cannot render its {what}: {e}", tool.name),
    )
}

/// `text` with every secret in it replaced by `<redacted>`.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    let mut secrets: Vec<&String> = secrets
        .iter()
        .filter(|s| s.chars().count() >= MIN_REDACT_CHARS)
        .collect();
    // Longest first, so a header value `Bearer KEY` goes before its `KEY`.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "<redacted>");
        }
    }
    out
}

/// At most `n` characters, with `…` when something was cut.
fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A short quote of some bytes for a message.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SNIPPET_CHARS * 4)]);
    truncate(text.trim(), SNIPPET_CHARS)
}

/// JSON from a body or stdout; nothing (or only whitespace) is null.
fn parse_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes)
}

// ---------------------------------------------------------------------------
// http

async fn http(
    tool: &Tool,
    method: &str,
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
    let method_upper = method.to_ascii_uppercase();
    let what = format!("{method_upper} {shown_url}");
    let client_error = |message: String| {
        CallError::new(
            ErrorClass::Client,
            format!("tool `{}`: {message}", tool.name),
        )
    };

    let method = reqwest::Method::from_bytes(method_upper.as_bytes())
        .map_err(|_| client_error(format!("`{method}` is not an HTTP method")))?;
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

    let sends_body = matches!(
        method,
        reqwest::Method::POST | reqwest::Method::PUT | reqwest::Method::PATCH
    );
    let mut request = ctx
        .http
        .request(method, parsed)
        .headers(header_map)
        .timeout(ctx.timeout);
    if sends_body {
        request = request.json(args);
    }

    let exchange = async {
        let mut response = request
            .send()
            .await
            .map_err(|e| transport_error(tool, &what, &e, ctx.timeout))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut body = Vec::new();
        let mut too_large = false;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(tool, &what, &e, ctx.timeout))?
        {
            if body.len() + chunk.len() > MAX_OUTPUT_BYTES {
                too_large = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok::<_, CallError>((status, retry_after, body, too_large))
    };
    let (status, retry_after, body, too_large) =
        match tokio::time::timeout(ctx.timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => return Err(timeout_error(tool, &what, ctx.timeout)),
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
        let mut error = CallError::new(ErrorClass::from_status(code), message);
        error.status = Some(code);
        error.retry_after = retry_after;
        return Err(error);
    }
    if too_large {
        let mut error = CallError::new(
            ErrorClass::Invalid,
            format!(
                "tool `{}`: the response of {what} is larger than {} MiB",
                tool.name,
                MAX_OUTPUT_BYTES >> 20
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

fn timeout_error(tool: &Tool, what: &str, timeout: Duration) -> CallError {
    CallError::new(
        ErrorClass::Timeout,
        format!(
            "tool `{}`: {what} did not finish within {}",
            tool.name,
            seconds(timeout)
        ),
    )
}

/// A reqwest failure without its URL (which may carry a key in the query).
fn transport_error(tool: &Tool, what: &str, e: &reqwest::Error, timeout: Duration) -> CallError {
    if e.is_timeout() {
        return timeout_error(tool, what, timeout);
    }
    let class = if e.is_builder() || e.is_redirect() {
        ErrorClass::Client
    } else {
        ErrorClass::Connection
    };
    let doing = if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading the response"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_builder() {
        "the request could not be built"
    } else {
        "the request failed"
    };
    // The innermost causes say what happened ("Connection refused"); the
    // outer ones repeat the URL.
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    let cause = causes
        .last()
        .map(|c| format!(" ({})", redact_url_like(c)))
        .unwrap_or_default();
    CallError::new(
        class,
        format!("tool `{}`: {what}: {doing}{cause}", tool.name),
    )
}

/// Removes query strings from URLs a library message may quote.
fn redact_url_like(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains("://") {
                redact_url(word)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Retry-After`: delay-seconds, or an HTTP-date (any of the three formats
/// HTTP allows), as a wait from `now`. Model calls use it too.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = super::model::parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The date of a day since 1970-01-01 (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// An instant as RFC 3339 in UTC, to the second: `2025-03-01T12:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s}s")
    } else {
        format!("{s:.3}s")
    }
}

// ---------------------------------------------------------------------------
// exec

async fn exec(
    tool: &Tool,
    argv: &[Template],
    args: &Map<String, Value>,
    ctx: &ToolContext<'_>,
) -> Result<Value, CallError> {
    let failed = |message: String| {
        CallError::new(
            ErrorClass::Failed,
            format!("tool `{}`: {message}", tool.name),
        )
    };
    let (rendered, secrets) = {
        let scope = ToolScope::new(tool, args, ctx.env);
        let mut rendered = Vec::with_capacity(argv.len());
        for (i, t) in argv.iter().enumerate() {
            let what = if i == 0 {
                "program".to_string()
            } else {
                format!("argument {i}")
            };
            rendered.push(render_plain(t, &scope).map_err(|e| template_error(tool, &what, e))?);
        }
        (rendered, scope.secrets())
    };
    let Some((program, rest)) = rendered.split_first() else {
        return Err(failed("its `exec` names no program".into()));
    };
    // Messages name the program as written in the tool, not as rendered.
    let shown_program = match argv[0].parts.as_slice() {
        [TemplatePart::Text(s)] => s.clone(),
        _ => redact(program, &secrets),
    };
    if program.is_empty() {
        return Err(failed("its program is empty".into()));
    }

    let input = serde_json::to_vec(args)
        .map_err(|e| failed(format!("cannot encode the arguments: {e}")))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match &ctx.idempotency_key {
        Some(key) => command.env("FLOWC_IDEMPOTENCY_KEY", key),
        // Not one inherited from a flowc that runs this one.
        None => command.env_remove("FLOWC_IDEMPOTENCY_KEY"),
    };
    let mut child = command.spawn().map_err(|e| {
        failed(match e.kind() {
            std::io::ErrorKind::NotFound => format!("the program `{shown_program}` was not found"),
            std::io::ErrorKind::PermissionDenied => {
                format!("the program `{shown_program}` cannot be run (permission denied)")
            }
            _ => format!("cannot start the program `{shown_program}`: {e}"),
        })
    })?;

    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let io = async {
        let write = async move {
            if let Some(mut stdin) = stdin {
                // A program that does not read its input closes the pipe
                // early; that is its business.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }
        };
        let (_, out, err) = tokio::join!(
            write,
            read_capped(stdout, MAX_OUTPUT_BYTES),
            read_tail(stderr)
        );
        let status = child.wait().await;
        (status, out, err)
    };
    let (status, (out, out_too_large), err) = match tokio::time::timeout(ctx.timeout, io).await {
        Ok(done) => done,
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(CallError::new(
                ErrorClass::Timeout,
                format!(
                    "tool `{}`: the program `{shown_program}` did not finish within {} and was killed",
                    tool.name,
                    seconds(ctx.timeout)
                ),
            ));
        }
    };
    let status =
        status.map_err(|e| failed(format!("lost track of the program `{shown_program}`: {e}")))?;

    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => {
                #[cfg(unix)]
                {
                    use std::os::unix::process::ExitStatusExt;
                    match status.signal() {
                        Some(sig) => format!("was killed by signal {sig}"),
                        None => "failed".to_string(),
                    }
                }
                #[cfg(not(unix))]
                {
                    "failed".to_string()
                }
            }
        };
        let tail = redact(&stderr_tail(&err), &secrets);
        let mut message = format!("the program `{shown_program}` {how}");
        if tail.is_empty() {
            message.push_str(" and wrote nothing to stderr");
        } else {
            message.push_str("; stderr:\n");
            message.push_str(&tail);
        }
        return Err(failed(message));
    }
    if out_too_large {
        return Err(CallError::new(
            ErrorClass::Invalid,
            format!(
                "tool `{}`: the program `{shown_program}` printed more than {} MiB",
                tool.name,
                MAX_OUTPUT_BYTES >> 20
            ),
        ));
    }
    parse_json(&out).map_err(|e| {
        CallError::new(
            ErrorClass::Invalid,
            format!(
                "tool `{}`: the program `{shown_program}` printed something that is not JSON ({e}): {}",
                tool.name,
                redact(&snippet(&out), &secrets)
            ),
        )
    })
}

/// Reads up to `cap` bytes and then drains the rest; `true` when it had to.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let Some(mut pipe) = pipe else {
        return (out, false);
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut over = false;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) if !over && out.len() + n <= cap => out.extend_from_slice(&buf[..n]),
            Ok(_) => over = true,
        }
    }
    (out, over)
}

/// Reads everything, keeping the last [`STDERR_KEEP_BYTES`].
async fn read_tail(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(mut pipe) = pipe else { return out };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 2 * STDERR_KEEP_BYTES {
                    out.drain(..out.len() - STDERR_KEEP_BYTES);
                }
            }
        }
    }
    if out.len() > STDERR_KEEP_BYTES {
        out.drain(..out.len() - STDERR_KEEP_BYTES);
    }
    out
}

/// The last 20 lines of stderr, at most 2000 characters (the end is kept).
fn stderr_tail(bytes: &[u8]) -> String {
    const LINES: usize = 20;
    const CHARS: usize = 2000;
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let kept = lines[lines.len().saturating_sub(LINES)..].join("\n");
    let count = kept.chars().count();
    if count <= CHARS {
        return kept;
    }
    let start = kept.char_indices().nth(count - CHARS).map_or(0, |(i, _)| i);
    format!("…{}", &kept[start..])
}

// ---------------------------------------------------------------------------
// builtins

async fn builtin(
    tool: &Tool,
    name: &str,
    args: &Map<String, Value>,
    ctx: &ToolContext<'_>,
) -> Result<Value, CallError> {
    let run = async {
        match name {
            "time.now" => Ok(Value::String(rfc3339(SystemTime::now()))),
            "time.sleep" => {
                let secs = number_arg(tool, name, args, 0, "seconds")?;
                if !secs.is_finite() || secs < 0.0 {
                    return Err(builtin_error(
                        tool,
                        name,
                        format!("cannot sleep {secs} seconds"),
                    ));
                }
                tokio::time::sleep(Duration::from_secs_f64(secs.min(1e9))).await;
                Ok(Value::Bool(true))
            }
            "fs.read" => {
                let path = string_arg(tool, name, args, 0, "path")?;
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| builtin_error(tool, name, format!("cannot read `{path}`: {e}")))?;
                String::from_utf8(bytes)
                    .map(Value::String)
                    .map_err(|_| builtin_error(tool, name, format!("`{path}` is not UTF-8 text")))
            }
            "fs.write" => {
                let path = string_arg(tool, name, args, 0, "path")?;
                let content = string_arg(tool, name, args, 1, "content")?;
                tokio::fs::write(path, content).await.map_err(|e| {
                    builtin_error(tool, name, format!("cannot write `{path}`: {e}"))
                })?;
                Ok(serde_json::json!({ "bytes": content.len() }))
            }
            "json.parse" => {
                let text = string_arg(tool, name, args, 0, "text")?;
                serde_json::from_str(text).map_err(|e| {
                    CallError::new(
                        ErrorClass::Invalid,
                        format!("tool `{}` ({name}): the text is not JSON: {e}", tool.name),
                    )
                })
            }
            _ => Err(builtin_error(tool, name, "there is no such builtin".into())),
        }
    };
    match tokio::time::timeout(ctx.timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(CallError::new(
            ErrorClass::Timeout,
            format!(
                "tool `{}` ({name}) did not finish within {}",
                tool.name,
                seconds(ctx.timeout)
            ),
        )),
    }
}

fn builtin_error(tool: &Tool, name: &str, message: String) -> CallError {
    CallError::new(
        ErrorClass::Failed,
        format!("tool `{}` ({name}): {message}", tool.name),
    )
}

/// A builtin's argument: by its usual name, or by position for a tool that
/// names its parameters differently.
fn arg<'a>(
    tool: &Tool,
    args: &'a Map<String, Value>,
    index: usize,
    name: &str,
) -> Option<&'a Value> {
    args.get(name)
        .or_else(|| tool.params.get(index).and_then(|p| args.get(&p.name)))
}

fn string_arg<'a>(
    tool: &Tool,
    builtin: &str,
    args: &'a Map<String, Value>,
    index: usize,
    name: &str,
) -> Result<&'a str, CallError> {
    arg(tool, args, index, name)
        .and_then(Value::as_str)
        .ok_or_else(|| builtin_error(tool, builtin, format!("needs a string argument `{name}`")))
}

fn number_arg(
    tool: &Tool,
    builtin: &str,
    args: &Map<String, Value>,
    index: usize,
    name: &str,
) -> Result<f64, CallError> {
    arg(tool, args, index, name)
        .and_then(Value::as_f64)
        .ok_or_else(|| builtin_error(tool, builtin, format!("needs a number argument `{name}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            crate::run::model::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        for days in [-800_000i64, -1, 0, 59, 11_016, 19_675, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(
                crate::run::model::days_from_civil(y, i64::from(m), i64::from(d)),
                days
            );
        }
        let now = UNIX_EPOCH + Duration::from_secs(784_111_700);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(77))
        );
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn urls() {
        assert!(!past_authority(""));
        assert!(!past_authority("https://"));
        assert!(!past_authority("https://api.example.com"));
        assert!(past_authority("https://api.example.com/"));
        assert!(past_authority("http://h:1/x?q="));
        assert_eq!(
            percent_encode("a b/c?d&e=f+ü~"),
            "a%20b%2Fc%3Fd%26e%3Df%2B%C3%BC~"
        );
        assert_eq!(
            redact_url("https://u:p@h.example/x/y?key=1#f"),
            "https://h.example/x/y"
        );
        assert_eq!(redact_url("{env.API}/x?key={env.K}"), "{env.API}/x");
    }

    #[test]
    fn redaction_and_tails() {
        assert_eq!(
            redact("token sk-123456 here", &["sk-123456".into(), "ab".into()]),
            "token <redacted> here"
        );
        let many: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(many.as_bytes());
        assert!(
            tail.starts_with("line 30\n") && tail.ends_with("line 49"),
            "{tail}"
        );
        let long = "x".repeat(5000);
        assert_eq!(stderr_tail(long.as_bytes()).chars().count(), 2001);
    }
}
