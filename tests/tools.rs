//! Tool calls against real things: a loopback HTTP server, real programs
//! (python3) and the builtins on a temporary directory. Tools come from
//! compiling `.flow` sources, so the templates are what authors write.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};

use flowc::exec::Tool;
use flowc::run::error::ErrorClass;
use flowc::run::http_client::HttpClients;
use flowc::run::tools::{idempotency_key, invoke, ToolContext};
use flowc::Compilation;

use crate::support;

const TOKEN: &str = "sk-live-4f9a8b7c6d5e";
const QUERY_KEY: &str = "qk-2d4e6f8a1b3c";

// ---------------------------------------------------------------------------
// Fixtures

struct Program(Compilation);

impl Program {
    fn new(src: &str) -> Program {
        let c = support::program::compiled(&[support::program::text("tools_test.flow", src)]);
        Program(c)
    }

    fn tool(&self, name: &str) -> &Tool {
        let program = self.0.program.as_ref().unwrap().sealed();
        program
            .tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tool `{name}`"))
    }
}

fn args(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("arguments must be an object"),
    }
}

type Env = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

fn env(vars: &[(&str, &str)]) -> Env {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Box::new(move |name| vars.get(name).cloned())
}

async fn call(
    tool: &Tool,
    a: Value,
    env: &Env,
    key: Option<&str>,
    timeout: Duration,
) -> Result<Value, flowc::run::error::CallError> {
    let http = HttpClients::new(None).expect("the run's clients");
    let ctx = ToolContext {
        http: &http,
        env: env.as_ref(),
        idempotency_key: key.map(String::from),
        timeout,
        traceparent: None,
        mcp: None,
    };
    invoke(tool, &args(a), &ctx).await
}

// ---------------------------------------------------------------------------
// A loopback server that records what it receives.

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// Path and query exactly as sent.
    uri: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Server {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start() -> (Server, SocketAddr) {
        let server = Server::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| s.clone().handle(req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (server, addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn handle(self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let headers: HashMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let path = req.uri().path().to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        let seen = Seen {
            method,
            uri,
            headers,
            body,
        };
        self.seen.lock().unwrap().push(seen.clone());

        let reply = |status: u16, body: String| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
        };
        let echo = json!({
            "method": seen.method,
            "uri": seen.uri,
            "body": serde_json::from_slice::<Value>(&seen.body).unwrap_or(Value::Null),
        })
        .to_string();
        let response = match path.as_str() {
            "/limited" => Response::builder()
                .status(429)
                .header("retry-after", "7")
                .body(Full::new(Bytes::new())),
            "/limited-date" => {
                let at = std::time::SystemTime::now() + Duration::from_secs(30);
                Response::builder()
                    .status(429)
                    .header("retry-after", http_date(at))
                    .body(Full::new(Bytes::from("slow down")))
            }
            // Echoes everything it got, secrets included, as a careless
            // server would in an error page.
            "/boom" => reply(
                500,
                format!(
                    "internal error for {} with headers {:?}",
                    seen.uri, seen.headers
                ),
            ),
            "/hang" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                reply(200, "{}".into())
            }
            "/text" => Response::builder()
                .status(200)
                .body(Full::new(Bytes::from("<html>hello, not json</html>"))),
            "/empty" => Response::builder()
                .status(204)
                .body(Full::new(Bytes::new())),
            p if p.starts_with("/items/") || p.starts_with("/echo") => reply(200, echo),
            _ => reply(404, r#"{"error":"no such thing"}"#.into()),
        };
        Ok(response.unwrap())
    }
}

/// IMF-fixdate, written here independently of the code under test.
fn http_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let out = std::process::Command::new(python())
        .args([
            "-c",
            "import sys,email.utils; print(email.utils.formatdate(int(sys.argv[1]), usegmt=True))",
            &secs.to_string(),
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const HTTP_TOOLS: &str = r#"
type Item { method: string, uri: string, body: json }

tool get_item(id: string, q: string, page?: int) -> Item {
  http GET "{env.API}/items/{id}?q={q}&page={page}&fixed=1"
  effect read
  timeout 5s
}

tool post_adjustment(invoice_id: string, delta: number) -> Item {
  http POST "{env.API}/echo/adjustments"
  header "Authorization" "Bearer {env.TOKEN}"
  header "X-Invoice" "{invoice_id}"
  effect write
  timeout 5s
  idempotency "adj:{invoice_id}:{delta}"
}

tool remove(id: string) -> json {
  http DELETE "{env.API}/echo/{id}"
  effect write
  timeout 5s
}

tool fetch(path: string) -> json {
  http GET "{env.API}/{path}?key={env.KEY}"
  header "Authorization" "Bearer {env.TOKEN}"
  effect read
  timeout 5s
}
"#;

fn http_env(addr: SocketAddr) -> Env {
    let api = format!("http://{addr}");
    env(&[("API", api.as_str()), ("TOKEN", TOKEN), ("KEY", QUERY_KEY)])
}

const T: Duration = Duration::from_secs(5);

fn assert_no_secrets(message: &str) {
    assert!(!message.contains(TOKEN), "the token leaked: {message}");
    assert!(
        !message.contains(QUERY_KEY),
        "the query key leaked: {message}"
    );
    // URLs are shown without their query string.
    assert!(
        !message.contains("?key={env.KEY}"),
        "a query string leaked: {message}"
    );
}

// ---------------------------------------------------------------------------
// http

#[tokio::test]
async fn http_get_percent_encodes_values_in_path_and_query() {
    let (server, addr) = Server::start().await;
    let p = Program::new(HTTP_TOOLS);
    let out = call(
        p.tool("get_item"),
        json!({"id": "a/b c", "q": "x&admin=1 ü+"}),
        &http_env(addr),
        None,
        T,
    )
    .await
    .unwrap();
    let expected = "/items/a%2Fb%20c?q=x%26admin%3D1%20%C3%BC%2B&page=&fixed=1";
    assert_eq!(out["uri"], expected);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].uri, expected);
    assert!(seen[0].body.is_empty(), "a GET sends no body");
    assert!(!seen[0].headers.contains_key("idempotency-key"));

    // A number renders as written.
    let out = call(
        p.tool("get_item"),
        json!({"id": "7", "q": "", "page": 3}),
        &http_env(addr),
        None,
        T,
    )
    .await
    .unwrap();
    assert_eq!(out["uri"], "/items/7?q=&page=3&fixed=1");
}

#[tokio::test]
async fn http_values_in_the_host_cannot_redirect_the_request() {
    let (server, addr) = Server::start().await;
    let p = Program::new(
        r#"
tool at(host: string) -> json {
  http GET "http://{host}/echo/x"
  effect read
  timeout 5s
}
"#,
    );
    let out = call(
        p.tool("at"),
        json!({"host": addr.to_string()}),
        &env(&[]),
        None,
        T,
    )
    .await
    .unwrap();
    assert_eq!(out["uri"], "/echo/x");
    for bad in [
        format!("{addr}/elsewhere#"),
        format!("user@{addr}"),
        format!("{addr}?"),
    ] {
        let e = call(p.tool("at"), json!({"host": bad}), &env(&[]), None, T)
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Failed, "{}", e.message);
        assert!(e.message.contains("host"), "{}", e.message);
    }
    assert_eq!(server.seen().len(), 1, "no request for the rejected hosts");
}

#[tokio::test]
async fn http_post_sends_arguments_headers_and_idempotency_key() {
    let (server, addr) = Server::start().await;
    let p = Program::new(HTTP_TOOLS);
    let tool = p.tool("post_adjustment");
    let a = json!({"invoice_id": "INV-000001", "delta": -10.5});
    let env = http_env(addr);
    let key = idempotency_key(tool, &args(a.clone()), env.as_ref()).unwrap();
    assert_eq!(key.as_deref(), Some("adj:INV-000001:-10.5"));
    let out = call(tool, a.clone(), &env, key.as_deref(), T)
        .await
        .unwrap();
    // `invoice_id` goes in a header, so the body holds only `delta`.
    assert_eq!(out["body"], json!({"delta": -10.5}));
    assert_eq!(out["method"], "POST");
    let seen = &server.seen()[0];
    assert_eq!(
        serde_json::from_slice::<Value>(&seen.body).unwrap(),
        json!({"delta": -10.5})
    );
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(seen.headers["x-invoice"], "INV-000001");
    assert_eq!(seen.headers["idempotency-key"], "adj:INV-000001:-10.5");
    assert_eq!(seen.headers["accept"], "application/json");
}

#[tokio::test]
async fn http_delete_sends_no_body() {
    let (server, addr) = Server::start().await;
    let p = Program::new(HTTP_TOOLS);
    let out = call(
        p.tool("remove"),
        json!({"id": "x"}),
        &http_env(addr),
        Some("k-1"),
        T,
    )
    .await
    .unwrap();
    assert_eq!(out["method"], "DELETE");
    let seen = &server.seen()[0];
    assert!(seen.body.is_empty());
    assert_eq!(seen.headers["idempotency-key"], "k-1");
}

#[tokio::test]
async fn http_429_is_a_rate_limit_with_retry_after() {
    let (_server, addr) = Server::start().await;
    let p = Program::new(HTTP_TOOLS);
    let e = call(
        p.tool("fetch"),
        json!({"path": "limited"}),
        &http_env(addr),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::RateLimit);
    assert_eq!(e.status, Some(429));
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    assert!(e.message.contains("429"), "{}", e.message);
    assert_no_secrets(&e.message);

    let e = call(
        p.tool("fetch"),
        json!({"path": "limited-date"}),
        &http_env(addr),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::RateLimit);
    let wait = e
        .retry_after
        .expect("an HTTP-date Retry-After is understood");
    assert!(
        wait >= Duration::from_secs(27) && wait <= Duration::from_secs(31),
        "{wait:?}"
    );
}

#[tokio::test]
async fn http_500_is_a_server_error_and_secrets_stay_out_of_the_message() {
    let (server, addr) = Server::start().await;
    let p = Program::new(HTTP_TOOLS);
    let e = call(
        p.tool("fetch"),
        json!({"path": "boom"}),
        &http_env(addr),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::ServerError);
    assert_eq!(e.status, Some(500));
    // The server got the secrets and echoed them; the message has neither.
    let seen = &server.seen()[0];
    assert_eq!(seen.uri, format!("/boom?key={QUERY_KEY}"));
    assert!(seen.headers["authorization"].contains(TOKEN));
    assert_no_secrets(&e.message);
    assert!(!e.to_string().contains(TOKEN));
    assert!(
        e.message.contains("GET {env.API}/boom returned 500"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("<redacted>"),
        "the echoed body is quoted, redacted: {}",
        e.message
    );
}

#[tokio::test]
async fn http_404_is_a_client_error() {
    let (_server, addr) = Server::start().await;
    let p = Program::new(HTTP_TOOLS);
    let e = call(
        p.tool("fetch"),
        json!({"path": "nowhere"}),
        &http_env(addr),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Client);
    assert_eq!(e.status, Some(404));
    assert!(
        e.message.contains("404") && e.message.contains("no such thing"),
        "{}",
        e.message
    );
    assert_no_secrets(&e.message);
}

#[tokio::test]
async fn http_hanging_server_times_out() {
    let (_server, addr) = Server::start().await;
    let p = Program::new(HTTP_TOOLS);
    let started = Instant::now();
    let timeout = Duration::from_millis(400);
    let e = call(
        p.tool("fetch"),
        json!({"path": "hang"}),
        &http_env(addr),
        None,
        timeout,
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(e.class, ErrorClass::Timeout);
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(1),
        "{elapsed:?}"
    );
    assert!(
        e.message
            .contains("GET {env.API}/hang did not finish within 0.400s"),
        "{}",
        e.message
    );
    assert_no_secrets(&e.message);
}

#[tokio::test]
async fn http_body_that_is_not_json_is_invalid() {
    let (_server, addr) = Server::start().await;
    let p = Program::new(HTTP_TOOLS);
    let e = call(
        p.tool("fetch"),
        json!({"path": "text"}),
        &http_env(addr),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Invalid);
    assert!(
        e.message.contains("not JSON") && e.message.contains("hello, not json"),
        "{}",
        e.message
    );
    assert_no_secrets(&e.message);

    let out = call(
        p.tool("fetch"),
        json!({"path": "empty"}),
        &http_env(addr),
        None,
        T,
    )
    .await
    .unwrap();
    assert_eq!(out, Value::Null, "an empty body is null");
}

#[tokio::test]
async fn http_connection_refused_is_a_connection_error() {
    // A port that was just free.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = Program::new(HTTP_TOOLS);
    let e = call(
        p.tool("fetch"),
        json!({"path": "x"}),
        &http_env(addr),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Connection, "{}", e.message);
    assert!(e.message.contains("could not connect"), "{}", e.message);
    assert_no_secrets(&e.message);
}

/// A loopback server that answers each connection's first request with
/// `reply` (raw bytes, whatever they are) and closes it: replies no HTTP
/// server library would send.
fn raw_server(reply: Vec<u8>) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let reply = reply.clone();
            std::thread::spawn(move || {
                // The request's head (the tools here send no body).
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(&reply);
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_server_closing_mid_reply_is_a_connection_error() {
    let addr = raw_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\": "
            .to_vec(),
    );
    let p = Program::new(HTTP_TOOLS);
    let e = call(
        p.tool("fetch"),
        json!({"path": "x"}),
        &http_env(addr),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Connection, "{}", e.message);
    assert!(
        e.message
            .contains("the connection broke while reading the response"),
        "{}",
        e.message
    );
    assert_no_secrets(&e.message);
}

#[tokio::test]
async fn http_server_closing_without_a_reply_or_answering_garbage_is_a_connection_error() {
    for reply in [Vec::new(), b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()] {
        let addr = raw_server(reply);
        let p = Program::new(HTTP_TOOLS);
        let e = call(
            p.tool("fetch"),
            json!({"path": "x"}),
            &http_env(addr),
            None,
            T,
        )
        .await
        .unwrap_err();
        assert_eq!(e.class, ErrorClass::Connection, "{}", e.message);
        assert!(e.message.contains("the request failed"), "{}", e.message);
        assert_no_secrets(&e.message);
    }
}

#[tokio::test]
async fn http_body_over_the_cap_is_invalid_and_not_read_whole() {
    // Says 64 MiB and sends them: the call stops reading at 32 MiB.
    let len = 64usize << 20;
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
    .into_bytes();
    reply.resize(reply.len() + len, b' ');
    let addr = raw_server(reply);
    let p = Program::new(HTTP_TOOLS);
    let e = call(
        p.tool("fetch"),
        json!({"path": "x"}),
        &http_env(addr),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Invalid, "{}", e.message);
    assert!(e.message.contains("larger than 32 MiB"), "{}", e.message);
}

#[tokio::test]
async fn http_redirects_are_followed_with_credentials_only_to_the_same_origin() {
    let server = support::mock_server::MockServer::start();
    let other = support::mock_server::MockServer::start();
    server.always(
        "GET /here",
        support::mock_server::Reply::raw(302, "").with_header("location", "/there?x=1"),
    );
    server.always(
        "GET /there",
        support::mock_server::Reply::ok(json!({"arrived": true})),
    );
    server.always(
        "GET /away",
        support::mock_server::Reply::raw(307, "").with_header("location", other.url("/landed")),
    );
    other.always(
        "GET /landed",
        support::mock_server::Reply::ok(json!({"landed": true})),
    );
    server.always(
        "GET /loop",
        support::mock_server::Reply::raw(301, "").with_header("location", "/loop"),
    );
    let p = Program::new(HTTP_TOOLS);
    let env = http_env(server.addr());
    let out = call(p.tool("fetch"), json!({"path": "here"}), &env, None, T)
        .await
        .unwrap();
    assert_eq!(out, json!({"arrived": true}));
    let there = server.requests_to("/there");
    assert_eq!(there.len(), 1);
    assert_eq!(
        there[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str()),
        "the same origin keeps the credentials"
    );

    let out = call(p.tool("fetch"), json!({"path": "away"}), &env, None, T)
        .await
        .unwrap();
    assert_eq!(out, json!({"landed": true}));
    let landed = other.requests_to("/landed");
    assert_eq!(landed.len(), 1);
    assert_eq!(
        landed[0].header("authorization"),
        None,
        "another origin does not get the credentials"
    );

    let e = call(p.tool("fetch"), json!({"path": "loop"}), &env, None, T)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Client, "{}", e.message);
    assert!(e.message.contains("too many redirects"), "{}", e.message);
    assert_no_secrets(&e.message);
}

#[tokio::test]
async fn http_missing_environment_variable_is_named() {
    let p = Program::new(HTTP_TOOLS);
    let e = call(
        p.tool("fetch"),
        json!({"path": "x"}),
        &env(&[("TOKEN", TOKEN)]),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Failed);
    assert!(
        e.message.contains("API") && e.message.contains("not set"),
        "{}",
        e.message
    );
}

// ---------------------------------------------------------------------------
// exec

/// A real Python; `/usr/bin/python3` when there is one (no shim in between).
fn python() -> String {
    for p in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    "python3".to_string()
}

/// A tool that runs `python3 -c CODE ARGS…`. The code must not contain
/// braces or double quotes (it is a Flow string).
fn py_tool(name: &str, params: &str, code: &str, extra: &[&str], timeout: &str) -> String {
    let mut argv = vec![
        format!("{:?}", python()),
        "\"-c\"".to_string(),
        format!("\"{code}\""),
    ];
    argv.extend(extra.iter().map(|a| a.to_string()));
    format!(
        "tool {name}({params}) -> json {{\n  exec [{}]\n  effect read\n  timeout {timeout}\n}}\n",
        argv.join(", ")
    )
}

fn temp_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "flowc-tools-{label}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn exec_reads_arguments_on_stdin_and_prints_json() {
    let src = py_tool(
        "echo",
        "text: string, n: int",
        "import json,sys,os; a=json.load(sys.stdin); print(json.dumps(dict(got=a, argv=sys.argv[1:], key=os.environ.get('FLOWC_IDEMPOTENCY_KEY'))))",
        &["\"--text\"", "\"{text}\"", "\"{n}\""],
        "10s",
    );
    let p = Program::new(&src);
    let a = json!({"text": "hello", "n": 3});
    let out = call(p.tool("echo"), a.clone(), &env(&[]), Some("idem-42"), T)
        .await
        .unwrap();
    assert_eq!(out["got"], a);
    assert_eq!(out["argv"], json!(["--text", "hello", "3"]));
    assert_eq!(out["key"], "idem-42");

    let out = call(p.tool("echo"), a, &env(&[]), None, T).await.unwrap();
    assert_eq!(out["key"], Value::Null, "no key, no variable");
}

#[tokio::test]
async fn exec_passes_argv_verbatim_without_a_shell() {
    let dir = temp_dir("argv");
    let marker = dir.join("pwned");
    let src = py_tool(
        "args",
        "a: string, b: string",
        "import json,sys; print(json.dumps(sys.argv[1:]))",
        &["\"{a}\"", "\"{b}\"", "\"two words\"", "\"*\"", "\"$HOME\""],
        "10s",
    );
    let p = Program::new(&src);
    let a = format!("$(touch {}); rm -rf /tmp/x", marker.display());
    let b = "he said \"hi\" and 'bye' `id` | cat > out; \\ \n".to_string();
    let out = call(p.tool("args"), json!({"a": a, "b": b}), &env(&[]), None, T)
        .await
        .unwrap();
    assert_eq!(out, json!([a, b, "two words", "*", "$HOME"]));
    assert!(!marker.exists(), "nothing ran the argument as a command");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn exec_non_zero_exit_fails_with_the_end_of_stderr() {
    let src = py_tool(
        "broken",
        "",
        "import sys; [print('line', i, file=sys.stderr) for i in range(30)]; sys.exit(3)",
        &[],
        "10s",
    );
    let p = Program::new(&src);
    let e = call(p.tool("broken"), json!({}), &env(&[]), None, T)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Failed);
    assert!(e.message.contains("exited with status 3"), "{}", e.message);
    assert!(
        e.message.contains("line 29") && e.message.contains("line 10"),
        "{}",
        e.message
    );
    assert!(
        !e.message.contains("line 9\n"),
        "only the last 20 lines: {}",
        e.message
    );
}

#[tokio::test]
async fn exec_stderr_is_cut_to_2000_characters() {
    let src = py_tool(
        "loud",
        "",
        "import sys; sys.stderr.write('x' * 10000); sys.exit(1)",
        &[],
        "10s",
    );
    let p = Program::new(&src);
    let e = call(p.tool("loud"), json!({}), &env(&[]), None, T)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Failed);
    let (_, stderr) = e.message.split_once("stderr:\n").unwrap();
    let xs = stderr.chars().filter(|c| *c == 'x').count();
    assert!((1900..=2000).contains(&xs), "{xs} characters of stderr");
}

#[tokio::test]
async fn exec_secrets_in_stderr_are_redacted() {
    let src = py_tool(
        "leaky",
        "",
        "import sys; print('auth failed for', sys.argv[1], file=sys.stderr); sys.exit(1)",
        &["\"{env.TOKEN}\""],
        "10s",
    );
    let p = Program::new(&src);
    let e = call(
        p.tool("leaky"),
        json!({}),
        &env(&[("TOKEN", TOKEN)]),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Failed);
    assert!(
        e.message.contains("auth failed for <redacted>"),
        "{}",
        e.message
    );
    assert_no_secrets(&e.message);
}

#[tokio::test]
async fn exec_hang_is_killed_at_the_timeout() {
    let dir = temp_dir("hang");
    let pid_file = dir.join("pid");
    let src = py_tool(
        "hang",
        "pidfile: string",
        "import os,sys,time; open(sys.argv[1],'w').write(str(os.getpid())); sys.stdout.flush(); time.sleep(60)",
        &["\"{pidfile}\""],
        "10s",
    );
    let p = Program::new(&src);
    let timeout = Duration::from_millis(1500);
    let started = Instant::now();
    let e = call(
        p.tool("hang"),
        json!({"pidfile": pid_file.to_str().unwrap()}),
        &env(&[]),
        None,
        timeout,
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(e.class, ErrorClass::Timeout, "{}", e.message);
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(1),
        "{elapsed:?}"
    );
    assert!(e.message.contains("killed"), "{}", e.message);
    let pid = std::fs::read_to_string(&pid_file).expect("the program started and wrote its pid");
    let proc_dir = format!("/proc/{}", pid.trim());
    if std::path::Path::new("/proc/self").exists() {
        assert!(
            !std::path::Path::new(&proc_dir).exists(),
            "process {pid} is still there"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn exec_stdout_that_is_not_json_is_invalid() {
    let src = py_tool("chatty", "", "print('Here is your result: 42')", &[], "10s");
    let p = Program::new(&src);
    let e = call(p.tool("chatty"), json!({}), &env(&[]), None, T)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Invalid);
    assert!(
        e.message.contains("not JSON") && e.message.contains("Here is your result"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn exec_program_that_does_not_exist_fails_clearly() {
    let src = r#"
tool ghost() -> json {
  exec ["/nonexistent/flowc-test/ghost-program", "--json"]
  effect read
  timeout 5s
}
"#;
    let p = Program::new(src);
    let e = call(p.tool("ghost"), json!({}), &env(&[]), None, T)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Failed);
    assert!(
        e.message
            .contains("`/nonexistent/flowc-test/ghost-program` was not found"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn exec_large_input_and_output_do_not_deadlock() {
    // More than a pipe buffer each way: stdin must be written while stdout is read.
    let src = py_tool(
        "big",
        "text: string",
        "import json,sys; a=json.load(sys.stdin); print(json.dumps(dict(n=len(a['text']), back=a['text'])))",
        &[],
        "20s",
    );
    let p = Program::new(&src);
    let text = "y".repeat(1 << 20);
    let out = call(
        p.tool("big"),
        json!({"text": text}),
        &env(&[]),
        None,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(out["n"], 1 << 20);
    assert_eq!(out["back"].as_str().unwrap().len(), 1 << 20);
}

// ---------------------------------------------------------------------------
// builtins

const BUILTINS: &str = r#"
use std.tools.{now, sleep, read_file, write_file, parse_json}
"#;

#[tokio::test]
async fn builtin_now_is_rfc3339_utc() {
    let p = Program::new(BUILTINS);
    let out = call(p.tool("now"), json!({}), &env(&[]), None, T)
        .await
        .unwrap();
    let s = out.as_str().unwrap();
    assert_eq!(s.len(), 20, "{s}");
    let b = s.as_bytes();
    assert!(
        b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'Z',
        "{s}"
    );
    let year: u32 = s[..4].parse().unwrap();
    assert!((2024..2200).contains(&year), "{s}");
    // Same instant as Python's clock, to within a few seconds.
    let py = std::process::Command::new(python())
        .args(["-c", "import datetime; print(datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M'))"])
        .output()
        .unwrap();
    let py = String::from_utf8(py.stdout).unwrap();
    let minute = &s[..16];
    assert!(
        py.trim() == minute || s[17..19].parse::<u32>().unwrap() < 5,
        "{s} vs {py}"
    );
}

#[tokio::test]
async fn builtin_sleep_sleeps_and_respects_the_timeout() {
    let p = Program::new(BUILTINS);
    let started = Instant::now();
    let out = call(p.tool("sleep"), json!({"seconds": 0.1}), &env(&[]), None, T)
        .await
        .unwrap();
    assert_eq!(out, json!(true));
    assert!(started.elapsed() >= Duration::from_millis(100));

    let started = Instant::now();
    let e = call(
        p.tool("sleep"),
        json!({"seconds": 30}),
        &env(&[]),
        None,
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Timeout);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn builtin_files_write_then_read() {
    let dir = temp_dir("fs");
    let path = dir.join("note.txt");
    let path_str = path.to_str().unwrap();
    let p = Program::new(BUILTINS);
    let content = "héllo\nwörld\n";
    let out = call(
        p.tool("write_file"),
        json!({"path": path_str, "content": content}),
        &env(&[]),
        None,
        T,
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"bytes": content.len()}));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
    let out = call(
        p.tool("read_file"),
        json!({"path": path_str}),
        &env(&[]),
        None,
        T,
    )
    .await
    .unwrap();
    assert_eq!(out, json!(content));

    let missing = dir.join("missing.txt");
    let e = call(
        p.tool("read_file"),
        json!({"path": missing.to_str().unwrap()}),
        &env(&[]),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Failed);
    assert!(e.message.contains("missing.txt"), "{}", e.message);

    std::fs::write(dir.join("bin"), [0xff, 0xfe, 0x00]).unwrap();
    let e = call(
        p.tool("read_file"),
        json!({"path": dir.join("bin").to_str().unwrap()}),
        &env(&[]),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("not UTF-8"), "{}", e.message);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn builtin_parse_json() {
    let p = Program::new(BUILTINS);
    let out = call(
        p.tool("parse_json"),
        json!({"text": "{\"a\": [1, 2]}"}),
        &env(&[]),
        None,
        T,
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"a": [1, 2]}));
    let e = call(
        p.tool("parse_json"),
        json!({"text": "{nope"}),
        &env(&[]),
        None,
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Invalid);
    assert!(e.message.contains("not JSON"), "{}", e.message);
}

#[tokio::test]
async fn unknown_builtin_is_a_check_error_not_a_run_time_failure() {
    let src = r#"
tool mystery() -> json {
  builtin "no.such.thing"
  effect read
  timeout 1s
}
"#;
    let c = flowc::compile(&[support::program::text("tools_test.flow", src)]).expect("loads");
    assert!(c.program.is_none(), "an unknown builtin must not check");
    let text = format!("{:?}", c.problems);
    assert!(text.contains("unknown builtin `no.such.thing`"), "{text}");
}
