//! A scriptable HTTP/1.1 server on 127.0.0.1 for tests: model providers
//! (OpenAI-compatible `POST /v1/chat/completions`, Anthropic
//! `POST /v1/messages`) and tool endpoints (`/tools/...`, any method).
//!
//! ```ignore
//! let server = MockServer::start();
//! server.script(CHAT, [
//!     Reply::rate_limited(1),
//!     Reply::chat_text("hello").with_usage(12, 3),
//!     Reply::delay(200, Reply::chat_json(json!({"ok": true}))),
//!     Reply::hang(),
//! ]);
//! server.always("GET /tools/weather", Reply::ok(json!({"temp": 21})));
//! let base = server.openai_base_url(); // http://127.0.0.1:PORT/v1
//! // ... run the code under test ...
//! assert_eq!(server.requests_to(CHAT).len(), 4);
//! assert_eq!(server.tokens_served(), 15);
//! ```
//!
//! Each route has a queue of replies, consumed in order; when a queue is
//! empty the route's `always` reply (if any) is sent, and otherwise a 404
//! saying nothing was scripted. A route is a path (`/v1/messages`, any
//! method) or a method and a path (`POST /tools/send`); the query string is
//! not part of the route. Model replies ([`Reply::chat_text`] and friends,
//! [`Reply::rate_limited`], [`Reply::error`]) are rendered in the format of
//! the route they are served on: Anthropic for paths ending in `/messages`,
//! OpenAI otherwise, so one script works for either protocol.
//!
//! [`Reply::drop_connection`] closes the connection without a response (a
//! dropped connection, as a proxy or a crashed upstream gives).
//!
//! The server runs on its own thread and runtime, so it serves sync tests,
//! `current_thread` tests and concurrent requests alike. Dropping it stops
//! it and abandons any connection still open (hung replies included).
//!
//! [`MockServer::start_h2c`] also speaks HTTP/2 with prior knowledge (what
//! `FLOWC_H2C` makes flowc's client send): a wide fan-out then shares one
//! connection, where over HTTP/1.1 each call opens its own.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// The OpenAI-compatible chat completions route.
pub const CHAT: &str = "/v1/chat/completions";
/// The Anthropic messages route.
pub const MESSAGES: &str = "/v1/messages";

/// Token counts a model reply reports unless told otherwise.
pub const DEFAULT_INPUT_TOKENS: u64 = 10;
pub const DEFAULT_OUTPUT_TOKENS: u64 = 5;

/// A running mock server. Stops when dropped.
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// 0 for the first request the server received, then 1, 2, …
    pub seq: usize,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body as JSON; `Null` when empty, a `String` when it is not JSON.
    pub body: Value,
    /// The body as text; `<N bytes, not UTF-8>` for a binary body.
    pub raw_body: String,
    /// When the server finished reading the request.
    pub received: Instant,
}

impl RecordedRequest {
    /// A header's value (the first, when repeated); `name` in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server sends for one request.
#[derive(Clone)]
pub enum Reply {
    /// A model's reply: text and/or tool calls with usage, in the format of
    /// the route it is served on.
    Chat(ChatReply),
    /// Any JSON body with a status. A 2xx body's `usage` (either
    /// protocol's field names) counts towards [`MockServer::tokens_served`].
    Json {
        status: u16,
        body: Value,
        headers: Vec<(String, String)>,
    },
    /// A body sent exactly as given (`content-type: application/json`
    /// unless a header says otherwise).
    Raw {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// HTTP 429 with `Retry-After: <secs>` and the provider's rate-limit
    /// error body ("… Please try again in <secs>s.").
    RateLimited { retry_after_secs: u64 },
    /// An error status with the provider's error body carrying `message`
    /// (`{"error": {"message", "type"}}`, or Anthropic's
    /// `{"type": "error", "error": {"type", "message"}}`).
    Error { status: u16, message: String },
    /// HTTP 200, JSON content type, a body that is cut off mid-way.
    Malformed,
    /// Reads the request and never answers (until the server is dropped).
    Hang,
    /// Reads the request and closes the connection without a response.
    Drop,
    /// Sends the status, headers and the first bytes of a body, then stalls
    /// for ever: for timeouts that must cover reading the body.
    StallBody,
    /// Waits `ms` milliseconds, then sends `reply`.
    Delay { ms: u64, reply: Box<Reply> },
    /// Computes the reply from the request (echo servers, assertions).
    Func(ReplyFn),
}

/// A reply computed from the request.
pub type ReplyFn = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

/// A model reply. `tool_calls` without an `id` get a fresh one when served
/// (`call_mock_N` / `toolu_mock_N`), so repeated replies have distinct ids.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatReply {
    pub text: Option<String>,
    pub tool_calls: Vec<MockToolCall>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `finish_reason` / `stop_reason`; by default `stop`/`end_turn`, or
    /// `tool_calls`/`tool_use` when there are tool calls.
    pub stop_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MockToolCall {
    pub id: Option<String>,
    pub name: String,
    /// OpenAI: sent as a JSON string; Anthropic: sent as `input`.
    pub arguments: Value,
    /// OpenAI: the `arguments` string sent verbatim instead (e.g. not JSON).
    pub raw_arguments: Option<String>,
}

impl MockToolCall {
    pub fn new(name: impl Into<String>, arguments: Value) -> MockToolCall {
        MockToolCall {
            id: None,
            name: name.into(),
            arguments,
            raw_arguments: None,
        }
    }
}

impl Reply {
    /// A model reply with text content. A reply that breaks the caller's
    /// schema is just this (or [`Reply::chat_json`]) with the wrong content.
    pub fn chat_text(text: impl Into<String>) -> Reply {
        Reply::Chat(ChatReply {
            text: Some(text.into()),
            tool_calls: Vec::new(),
            input_tokens: DEFAULT_INPUT_TOKENS,
            output_tokens: DEFAULT_OUTPUT_TOKENS,
            stop_reason: None,
        })
    }

    /// A model reply whose text is `value` serialised as JSON.
    pub fn chat_json(value: Value) -> Reply {
        Reply::chat_text(value.to_string())
    }

    /// A model reply calling one tool. The name need not be one the request
    /// offered (invented tool names); repeat it with [`Reply::times`].
    pub fn chat_tool_call(name: impl Into<String>, arguments: Value) -> Reply {
        Reply::chat_tool_calls([(name.into(), arguments)])
    }

    /// A model reply calling several tools at once.
    pub fn chat_tool_calls<N: Into<String>>(calls: impl IntoIterator<Item = (N, Value)>) -> Reply {
        Reply::Chat(ChatReply {
            text: None,
            tool_calls: calls
                .into_iter()
                .map(|(n, a)| MockToolCall::new(n, a))
                .collect(),
            input_tokens: DEFAULT_INPUT_TOKENS,
            output_tokens: DEFAULT_OUTPUT_TOKENS,
            stop_reason: None,
        })
    }

    /// An OpenAI tool call whose `arguments` string is sent verbatim (for
    /// arguments that are not JSON). On Anthropic routes the string is the
    /// `input`.
    pub fn chat_tool_call_raw(name: impl Into<String>, raw_arguments: impl Into<String>) -> Reply {
        let raw = raw_arguments.into();
        let mut call = MockToolCall::new(name, Value::String(raw.clone()));
        call.raw_arguments = Some(raw);
        Reply::Chat(ChatReply {
            text: None,
            tool_calls: vec![call],
            input_tokens: DEFAULT_INPUT_TOKENS,
            output_tokens: DEFAULT_OUTPUT_TOKENS,
            stop_reason: None,
        })
    }

    /// Any JSON with a status.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::Json {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// HTTP 200 with a JSON body (tool endpoints).
    pub fn ok(body: Value) -> Reply {
        Reply::json(200, body)
    }

    /// A body sent exactly as given.
    pub fn raw(status: u16, body: impl Into<String>) -> Reply {
        Reply::Raw {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn rate_limited(retry_after_secs: u64) -> Reply {
        Reply::RateLimited { retry_after_secs }
    }

    /// An error status with the provider's error body.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::Error {
            status,
            message: message.into(),
        }
    }

    /// HTTP 500 with the provider's error body.
    pub fn server_error() -> Reply {
        Reply::error(
            500,
            "The server had an error while processing your request.",
        )
    }

    pub fn malformed() -> Reply {
        Reply::Malformed
    }

    pub fn drop_connection() -> Reply {
        Reply::Drop
    }

    pub fn hang() -> Reply {
        Reply::Hang
    }

    pub fn stall_body() -> Reply {
        Reply::StallBody
    }

    pub fn delay(ms: u64, reply: Reply) -> Reply {
        Reply::Delay {
            ms,
            reply: Box::new(reply),
        }
    }

    pub fn from_fn(f: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static) -> Reply {
        Reply::Func(Arc::new(f))
    }

    /// Sets the usage a model reply reports (also through [`Reply::delay`]).
    /// For a [`Reply::Json`] body, edit its `usage` directly.
    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Reply {
        match &mut self {
            Reply::Chat(chat) => {
                chat.input_tokens = input_tokens;
                chat.output_tokens = output_tokens;
            }
            Reply::Delay { reply, .. } => {
                **reply = (**reply).clone().with_usage(input_tokens, output_tokens)
            }
            _ => panic!("with_usage applies to model replies (Reply::chat_*)"),
        }
        self
    }

    /// Sets a model reply's `finish_reason` / `stop_reason`.
    pub fn with_stop_reason(mut self, reason: impl Into<String>) -> Reply {
        match &mut self {
            Reply::Chat(chat) => chat.stop_reason = Some(reason.into()),
            Reply::Delay { reply, .. } => **reply = (**reply).clone().with_stop_reason(reason),
            _ => panic!("with_stop_reason applies to model replies (Reply::chat_*)"),
        }
        self
    }

    /// Adds text to a model reply that calls tools.
    pub fn with_text(mut self, text: impl Into<String>) -> Reply {
        match &mut self {
            Reply::Chat(chat) => chat.text = Some(text.into()),
            Reply::Delay { reply, .. } => **reply = (**reply).clone().with_text(text),
            _ => panic!("with_text applies to model replies (Reply::chat_*)"),
        }
        self
    }

    /// Adds a response header to a [`Reply::Json`] or [`Reply::Raw`] (also
    /// through [`Reply::delay`]).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        match &mut self {
            Reply::Json { headers, .. } | Reply::Raw { headers, .. } => {
                headers.push((name.into(), value.into()))
            }
            Reply::Delay { reply, .. } => **reply = (**reply).clone().with_header(name, value),
            _ => panic!("with_header applies to Reply::json and Reply::raw"),
        }
        self
    }

    /// This reply `n` times, e.g. a model that repeats an identical tool
    /// call: `server.script(CHAT, Reply::chat_tool_call("search", args).times(5))`.
    pub fn times(self, n: usize) -> Vec<Reply> {
        vec![self; n]
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Chat(chat) => f.debug_tuple("Chat").field(chat).finish(),
            Reply::Json {
                status,
                body,
                headers,
            } => f
                .debug_struct("Json")
                .field("status", status)
                .field("body", body)
                .field("headers", headers)
                .finish(),
            Reply::Raw {
                status,
                body,
                headers,
            } => f
                .debug_struct("Raw")
                .field("status", status)
                .field("body", body)
                .field("headers", headers)
                .finish(),
            Reply::RateLimited { retry_after_secs } => f
                .debug_struct("RateLimited")
                .field("retry_after_secs", retry_after_secs)
                .finish(),
            Reply::Error { status, message } => f
                .debug_struct("Error")
                .field("status", status)
                .field("message", message)
                .finish(),
            Reply::Malformed => f.write_str("Malformed"),
            Reply::Hang => f.write_str("Hang"),
            Reply::Drop => f.write_str("Drop"),
            Reply::StallBody => f.write_str("StallBody"),
            Reply::Delay { ms, reply } => f
                .debug_struct("Delay")
                .field("ms", ms)
                .field("reply", reply)
                .finish(),
            Reply::Func(_) => f.write_str("Func(..)"),
        }
    }
}

/// The current time as an HTTP date (`Retry-After` dates in tests).
pub fn http_date(at: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at.duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A `http://127.0.0.1:PORT` where nothing listens (connection refused).
pub fn refused_base_url() -> String {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    format!("http://{addr}")
}

#[derive(Default)]
struct State {
    queues: HashMap<String, VecDeque<Reply>>,
    always: HashMap<String, Reply>,
    requests: Vec<RecordedRequest>,
    input_tokens: u64,
    output_tokens: u64,
    next_id: u64,
}

impl State {
    fn next_reply(&mut self, method: &str, path: &str) -> Option<Reply> {
        let keyed = format!("{method} {path}");
        for key in [keyed.as_str(), path] {
            if let Some(reply) = self.queues.get_mut(key).and_then(VecDeque::pop_front) {
                return Some(reply);
            }
        }
        [keyed.as_str(), path]
            .iter()
            .find_map(|key| self.always.get(*key).cloned())
    }
}

/// The protocols a mock server answers in.
#[derive(Clone, Copy)]
enum Speaks {
    Http1,
    /// HTTP/1.1, or HTTP/2 on a connection that opens with its preface.
    Http1AndH2c,
}

impl MockServer {
    /// Binds 127.0.0.1 on an ephemeral port and starts serving HTTP/1.1 at
    /// once.
    pub fn start() -> MockServer {
        MockServer::start_speaking(Speaks::Http1)
    }

    /// [`MockServer::start`], also answering HTTP/2 with prior knowledge.
    pub fn start_h2c() -> MockServer {
        MockServer::start_speaking(Speaks::Http1AndH2c)
    }

    fn start_speaking(speaks: Speaks) -> MockServer {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let (shutdown, stop) = oneshot::channel();
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("mock-server-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("mock server runtime");
                runtime.block_on(serve(listener, served, stop, speaks));
                // Hung connections and pending delays are dropped, not awaited.
                runtime.shutdown_background();
            })
            .expect("spawn the mock server thread");
        MockServer {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL an OpenAI-compatible client is configured with
    /// (`…/v1`; it appends `/chat/completions`).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// The base URL an Anthropic client is configured with (`…/v1`; it
    /// appends `/messages`).
    pub fn anthropic_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// `base_url()` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    /// Appends replies to a route's queue. `route` is a path (any method) or
    /// `"METHOD /path"`.
    pub fn script(&self, route: &str, replies: impl IntoIterator<Item = Reply>) {
        self.lock()
            .queues
            .entry(route.to_string())
            .or_default()
            .extend(replies);
    }

    /// Appends one reply to a route's queue.
    pub fn push(&self, route: &str, reply: Reply) {
        self.script(route, [reply]);
    }

    /// The reply a route sends whenever its queue is empty.
    pub fn always(&self, route: &str, reply: Reply) {
        self.lock().always.insert(route.to_string(), reply);
    }

    /// Scripted replies not yet sent on a route.
    pub fn pending(&self, route: &str) -> usize {
        self.lock().queues.get(route).map_or(0, VecDeque::len)
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// The requests whose path is `path` (any method).
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many requests went to `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Input plus output tokens of every successful reply sent (a reply
    /// counts when it is sent, even if the client had given up).
    pub fn tokens_served(&self) -> u64 {
        let state = self.lock();
        state.input_tokens + state.output_tokens
    }

    /// (input, output) tokens of every successful reply sent.
    pub fn usage_served(&self) -> (u64, u64) {
        let state = self.lock();
        (state.input_tokens, state.output_tokens)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A test that panicked while holding the lock must not hide the others.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn serve(
    listener: StdTcpListener,
    state: Arc<Mutex<State>>,
    mut stop: oneshot::Receiver<()>,
    speaks: Speaks,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(state.clone(), request));
                    let io = TokioIo::new(stream);
                    match speaks {
                        Speaks::Http1 => {
                            let _ = http1::Builder::new().serve_connection(io, service).await;
                        }
                        Speaks::Http1AndH2c => {
                            let mut builder = auto::Builder::new(TokioExecutor::new());
                            // hyper's default, 200 streams at once, would
                            // hold a wide fan-out's calls back in waves.
                            builder.http2().max_concurrent_streams(None);
                            let _ = builder.serve_connection(io, service).await;
                        }
                    }
                });
            }
        }
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, Dropped> {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // A binary body (an OTLP/protobuf batch) is not kept as text: turning
    // it into a lossy string costs the server more CPU than the client
    // spent encoding it, which benches that share the machine would pay.
    let raw_body = match std::str::from_utf8(&bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!("<{} bytes, not UTF-8>", bytes.len()),
    };
    let body = if raw_body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&raw_body).unwrap_or_else(|_| Value::String(raw_body.clone()))
    };
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let (recorded, reply) = {
        let mut state = lock(&state);
        let recorded = RecordedRequest {
            seq: state.requests.len(),
            method: method.clone(),
            path: path.clone(),
            query: parts.uri.query().map(str::to_string),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
            raw_body,
            received: Instant::now(),
        };
        state.requests.push(recorded.clone());
        let reply = state.next_reply(&method, &path).unwrap_or_else(|| {
            Reply::error(
                404,
                format!("mock server: nothing scripted for {method} {path}"),
            )
        });
        (recorded, reply)
    };
    respond(&state, reply, &recorded).await
}

/// A reply that closes the connection instead of answering: hyper drops a
/// connection whose service fails.
#[derive(Debug)]
pub struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock server: connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

/// Which API format a route speaks.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    OpenAi,
    Anthropic,
}

fn format_of(path: &str) -> Format {
    if path.ends_with("/messages") {
        Format::Anthropic
    } else {
        Format::OpenAi
    }
}

async fn respond(
    state: &Mutex<State>,
    mut reply: Reply,
    request: &RecordedRequest,
) -> Result<Response<MockBody>, Dropped> {
    let format = format_of(&request.path);
    loop {
        reply = match reply {
            Reply::Delay { ms, reply } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                *reply
            }
            Reply::Func(f) => f(request),
            Reply::Hang => std::future::pending().await,
            Reply::Drop => return Err(Dropped),
            Reply::Chat(chat) => {
                let id = {
                    let mut state = lock(state);
                    state.next_id += 1;
                    state.next_id
                };
                Reply::json(200, render_chat(&chat, format, request, id))
            }
            Reply::RateLimited { retry_after_secs } => {
                let message = format!(
                    "Rate limit reached for requests. Please try again in {retry_after_secs}s."
                );
                let body = error_body(format, 429, &message);
                return Ok(json_response(
                    state,
                    429,
                    &body,
                    &[("retry-after".into(), retry_after_secs.to_string())],
                ));
            }
            Reply::Error { status, message } => {
                let body = error_body(format, status, &message);
                return Ok(json_response(state, status, &body, &[]));
            }
            Reply::Json {
                status,
                body,
                headers,
            } => return Ok(json_response(state, status, &body, &headers)),
            Reply::Raw {
                status,
                body,
                headers,
            } => return Ok(response(status, &headers, MockBody::full(body))),
            Reply::Malformed => {
                let body = r#"{"id": "broken", "choices": [{"index": 0, "message": {"role": "assistant", "content": "#;
                return Ok(response(200, &[], MockBody::full(body)));
            }
            Reply::StallBody => {
                let first = r#"{"id": "stalled", "choices": ["#;
                let headers = [("content-length".to_string(), "4096".to_string())];
                return Ok(response(200, &headers, MockBody::stalled(first)));
            }
        };
    }
}

fn render_chat(chat: &ChatReply, format: Format, request: &RecordedRequest, id: u64) -> Value {
    let model = request
        .body
        .get("model")
        .cloned()
        .unwrap_or_else(|| json!("mock-model"));
    match format {
        Format::OpenAi => {
            let mut message = json!({"role": "assistant", "content": chat.text});
            if !chat.tool_calls.is_empty() {
                message["tool_calls"] = chat
                    .tool_calls
                    .iter()
                    .enumerate()
                    .map(|(i, call)| {
                        let arguments = call
                            .raw_arguments
                            .clone()
                            .unwrap_or_else(|| call.arguments.to_string());
                        json!({
                            "id": call.id.clone().unwrap_or_else(|| format!("call_mock_{id}_{i}")),
                            "type": "function",
                            "function": {"name": call.name, "arguments": arguments},
                        })
                    })
                    .collect();
            }
            let finish = chat.stop_reason.clone().unwrap_or_else(|| {
                if chat.tool_calls.is_empty() {
                    "stop"
                } else {
                    "tool_calls"
                }
                .to_string()
            });
            json!({
                "id": format!("chatcmpl-mock-{id}"),
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": chat.input_tokens,
                    "completion_tokens": chat.output_tokens,
                    "total_tokens": chat.input_tokens + chat.output_tokens,
                },
            })
        }
        Format::Anthropic => {
            let mut content = Vec::new();
            if let Some(text) = &chat.text {
                content.push(json!({"type": "text", "text": text}));
            }
            for (i, call) in chat.tool_calls.iter().enumerate() {
                content.push(json!({
                    "type": "tool_use",
                    "id": call.id.clone().unwrap_or_else(|| format!("toolu_mock_{id}_{i}")),
                    "name": call.name,
                    "input": call.arguments,
                }));
            }
            let stop = chat.stop_reason.clone().unwrap_or_else(|| {
                if chat.tool_calls.is_empty() {
                    "end_turn"
                } else {
                    "tool_use"
                }
                .to_string()
            });
            json!({
                "id": format!("msg_mock_{id}"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": null,
                "usage": {"input_tokens": chat.input_tokens, "output_tokens": chat.output_tokens},
            })
        }
    }
}

fn error_body(format: Format, status: u16, message: &str) -> Value {
    match format {
        Format::Anthropic => {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Format::OpenAi => {
            let (kind, code) = match status {
                401 => ("invalid_request_error", json!("invalid_api_key")),
                429 => ("requests", json!("rate_limit_exceeded")),
                500..=599 => ("server_error", Value::Null),
                _ => ("invalid_request_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
    }
}

fn json_response(
    state: &Mutex<State>,
    status: u16,
    body: &Value,
    headers: &[(String, String)],
) -> Response<MockBody> {
    if (200..300).contains(&status) {
        if let Some(usage) = body.get("usage") {
            let count = |names: &[&str]| {
                names
                    .iter()
                    .find_map(|n| usage.get(*n).and_then(Value::as_u64))
                    .unwrap_or(0)
            };
            let mut state = lock(state);
            state.input_tokens += count(&["prompt_tokens", "input_tokens"]);
            state.output_tokens += count(&["completion_tokens", "output_tokens"]);
        }
    }
    response(status, headers, MockBody::full(body.to_string()))
}

fn response(status: u16, headers: &[(String, String)], body: MockBody) -> Response<MockBody> {
    let mut builder = Response::builder().status(status);
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        builder = builder.header("content-type", "application/json");
    }
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(body).unwrap_or_else(|e| {
        let mut response = Response::new(MockBody::full(format!(
            "mock server: bad scripted reply: {e}"
        )));
        *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        response
    })
}

/// A whole body, or the first bytes of one that never finishes.
struct MockBody {
    data: Option<Bytes>,
    stall: bool,
}

impl MockBody {
    fn full(data: impl Into<Bytes>) -> MockBody {
        MockBody {
            data: Some(data.into()),
            stall: false,
        }
    }

    fn stalled(first: impl Into<Bytes>) -> MockBody {
        MockBody {
            data: Some(first.into()),
            stall: true,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.data.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            // Never woken: the connection is dropped with the server.
            None if self.stall => Poll::Pending,
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.stall
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.data, self.stall) {
            (_, true) => SizeHint::default(),
            (Some(data), false) => SizeHint::with_exact(data.len() as u64),
            (None, false) => SizeHint::with_exact(0),
        }
    }
}
