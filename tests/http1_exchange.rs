//! `http` tools over HTTP/1.1 against a raw loopback server (std::net, no
//! HTTP library) that sends exactly the bytes a test scripts: chunked
//! bodies, bodies read to the close, interim replies, heads in pieces,
//! broken heads and bodies, and connections closed while idle. The server
//! counts the connections it accepted, so reuse is asserted on its word.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};

use flowc::exec::Tool;
use flowc::run::error::{CallError, ErrorClass};
use flowc::run::http_client::HttpClients;
use flowc::run::tools::{idempotency_key, invoke, ToolContext};
use flowc::Compilation;

use crate::support;

const TOOLS: &str = r#"
tool fetch(path: string) -> json {
  http GET "{env.API}/{path}"
  effect read
  timeout 5s
}

tool create(path: string, n: int) -> json {
  http POST "{env.API}/{path}"
  body { n: n }
  effect write
  timeout 5s
}

tool create_once(path: string, n: int) -> json {
  http POST "{env.API}/{path}"
  body { n: n }
  effect write
  timeout 5s
  idempotency "create:{n}"
}
"#;

/// What the server does with one request.
enum Script {
    /// Writes these pieces (a short pause between them), then keeps the
    /// connection for the next request.
    Reply(Vec<Vec<u8>>),
    /// Writes the pieces, then closes the connection.
    ReplyAndClose(Vec<Vec<u8>>),
    /// Writes the pieces, then closes the connection once it has been idle
    /// for this long.
    ReplyAndCloseAfter(Vec<Vec<u8>>, Duration),
    /// Closes the connection without a reply.
    HangUp,
}

/// Decides the script of the `nth` request (from 0) of connection `conn`
/// (from 0), given the request's head and body.
type Decide = dyn Fn(usize, usize, &str, &[u8]) -> Script + Send + Sync;

/// A request as the server read it: its head and its body.
type Received = (String, Vec<u8>);

struct RawServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Every request: its head and body.
    requests: Arc<Mutex<Vec<Received>>>,
}

impl RawServer {
    fn start(
        decide: impl Fn(usize, usize, &str, &[u8]) -> Script + Send + Sync + 'static,
    ) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let decide: Arc<Decide> = Arc::new(decide);
        let (count, seen) = (connections.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let conn = count.fetch_add(1, Ordering::SeqCst);
                let (decide, seen) = (decide.clone(), seen.clone());
                std::thread::spawn(move || serve(stream, conn, &*decide, &seen));
            }
        });
        RawServer {
            addr,
            connections,
            requests,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(mut stream: TcpStream, conn: usize, decide: &Decide, seen: &Mutex<Vec<Received>>) {
    let mut pending = Vec::new();
    for nth in 0.. {
        let Some((head, body)) = read_request(&mut stream, &mut pending) else {
            return;
        };
        let script = decide(conn, nth, &head, &body);
        seen.lock().unwrap().push((head, body));
        let write = |stream: &mut TcpStream, pieces: &[Vec<u8>]| {
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if stream
                    .write_all(piece)
                    .and_then(|()| stream.flush())
                    .is_err()
                {
                    return false;
                }
            }
            true
        };
        match script {
            Script::Reply(pieces) => {
                if !write(&mut stream, &pieces) {
                    return;
                }
            }
            Script::ReplyAndClose(pieces) => {
                write(&mut stream, &pieces);
                return;
            }
            Script::ReplyAndCloseAfter(pieces, idle) => {
                write(&mut stream, &pieces);
                std::thread::sleep(idle);
                return;
            }
            Script::HangUp => return,
        }
    }
}

/// One request's head (text) and body (by its Content-Length).
fn read_request(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Received> {
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
    pending.drain(..end);
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while pending.len() < length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
    let body = pending.drain(..length).collect();
    Some((head, body))
}

/// A reply with a JSON body and a Content-Length.
fn json_reply(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

struct Tools {
    program: Compilation,
    /// One client for every call of a test, so connections are reused.
    http: HttpClients,
    env: HashMap<String, String>,
}

impl Tools {
    fn new(server: &RawServer) -> Tools {
        let program = support::program::compiled(&[support::program::text("http1.flow", TOOLS)]);
        let env = HashMap::from([("API".to_string(), format!("http://{}", server.addr))]);
        Tools {
            program,
            http: HttpClients::new(None).expect("the run's clients"),
            env,
        }
    }

    fn tool(&self, name: &str) -> &Tool {
        let program = self.program.program.as_ref().unwrap().sealed();
        program.tools.iter().find(|t| t.name == name).unwrap()
    }

    async fn call(&self, name: &str, args: Value) -> Result<Value, CallError> {
        let vars = self.env.clone();
        let env = move |name: &str| vars.get(name).cloned();
        let Value::Object(args) = args else {
            panic!("arguments are an object")
        };
        let args: Map<String, Value> = args;
        let tool = self.tool(name);
        let ctx = ToolContext {
            http: &self.http,
            env: &env,
            idempotency_key: idempotency_key(tool, &args, &env).unwrap(),
            timeout: Duration::from_secs(5),
            traceparent: None,
            mcp: None,
        };
        invoke(tool, &args, &ctx).await
    }

    async fn fetch(&self, path: &str) -> Result<Value, CallError> {
        self.call("fetch", json!({ "path": path })).await
    }
}

fn assert_connection_error(e: &CallError, doing: &str, cause: &str) {
    assert_eq!(e.class, ErrorClass::Connection, "{}", e.message);
    assert!(e.message.contains(doing), "{}", e.message);
    assert!(e.message.contains(cause), "{}", e.message);
}

#[tokio::test]
async fn kept_connections_are_reused_and_closed_ones_are_not() {
    let server = RawServer::start(|_, _, head, _| {
        if head.contains("/close") {
            Script::Reply(vec![
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n1".to_vec(),
            ])
        } else {
            Script::Reply(vec![json_reply(r#"{"ok":true}"#)])
        }
    });
    let tools = Tools::new(&server);
    for _ in 0..3 {
        assert_eq!(tools.fetch("a").await.unwrap(), json!({"ok": true}));
    }
    assert_eq!(
        server.connections(),
        1,
        "one kept connection for three calls"
    );
    assert_eq!(tools.fetch("close").await.unwrap(), json!(1));
    assert_eq!(tools.fetch("a").await.unwrap(), json!({"ok": true}));
    assert_eq!(
        server.connections(),
        2,
        "a reply that says close ends its connection"
    );
    let (head, body) = &server.requests()[0];
    assert!(head.starts_with("GET /a HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("\r\nhost: {}\r\n", server.addr)),
        "{head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    assert!(body.is_empty());
}

#[tokio::test]
async fn a_post_sends_its_body_with_its_length() {
    let server = RawServer::start(|_, _, _, body| {
        Script::Reply(vec![json_reply(&String::from_utf8_lossy(body))])
    });
    let tools = Tools::new(&server);
    let out = tools
        .call("create", json!({"path": "things", "n": 7}))
        .await
        .unwrap();
    assert_eq!(out, json!({"n": 7}));
    let (head, body) = &server.requests()[0];
    assert!(head.starts_with("POST /things HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ncontent-length: 7\r\n"),
        "{head}"
    );
    assert_eq!(body, br#"{"n":7}"#);
}

#[tokio::test]
async fn chunked_replies_with_extensions_and_trailers() {
    let server = RawServer::start(|_, _, _, _| {
        Script::Reply(vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec(),
            b"7;ext=\"quoted\"\r\n{\"a\": [\r\n".to_vec(),
            b"3\r\n1, \r\nA ; x\r\n2, 3, 4]} \r\n".to_vec(),
            b"0\r\nx-checksum: 1\r\nx-more: 2\r\n\r\n".to_vec(),
        ])
    });
    let tools = Tools::new(&server);
    for _ in 0..2 {
        assert_eq!(tools.fetch("x").await.unwrap(), json!({"a": [1, 2, 3, 4]}));
    }
    assert_eq!(
        server.connections(),
        1,
        "a chunked body read to its end keeps the connection"
    );
}

#[tokio::test]
async fn a_bad_chunk_breaks_the_reply() {
    let server = RawServer::start(|_, _, _, _| {
        Script::ReplyAndClose(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}XX\r\n".to_vec(),
        ])
    });
    let e = Tools::new(&server).fetch("x").await.unwrap_err();
    assert_connection_error(
        &e,
        "the connection broke while reading the response",
        "a chunk's data is not followed by a line end",
    );
}

#[tokio::test]
async fn a_body_without_length_is_read_to_the_close() {
    let server = RawServer::start(|_, _, _, _| {
        Script::ReplyAndClose(vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"to\": ".to_vec(),
            b"\"the close\"}".to_vec(),
        ])
    });
    let tools = Tools::new(&server);
    assert_eq!(tools.fetch("x").await.unwrap(), json!({"to": "the close"}));
    assert_eq!(tools.fetch("x").await.unwrap(), json!({"to": "the close"}));
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn interim_replies_come_before_the_reply() {
    let server = RawServer::start(|_, _, _, _| {
        Script::Reply(vec![
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n".to_vec(),
            json_reply(r#"{"final":true}"#),
        ])
    });
    let tools = Tools::new(&server);
    assert_eq!(tools.fetch("x").await.unwrap(), json!({"final": true}));
    assert_eq!(tools.fetch("x").await.unwrap(), json!({"final": true}));
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_head_in_many_small_writes() {
    let reply = json_reply(r#"{"pieces":"many"}"#);
    let server = RawServer::start(move |_, _, _, _| {
        Script::Reply(reply.chunks(3).map(<[u8]>::to_vec).collect())
    });
    let tools = Tools::new(&server);
    assert_eq!(tools.fetch("x").await.unwrap(), json!({"pieces": "many"}));
}

#[tokio::test]
async fn a_head_over_the_cap_is_refused() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\n{{}}",
        "a".repeat(70 << 10)
    );
    let server =
        RawServer::start(move |_, _, _, _| Script::ReplyAndClose(vec![big.clone().into_bytes()]));
    let e = Tools::new(&server).fetch("x").await.unwrap_err();
    assert_connection_error(
        &e,
        "the request failed",
        "the reply's head is larger than 64 KiB",
    );
}

#[tokio::test]
async fn a_bad_content_length_is_refused() {
    for length in [
        "content-length: 12abc",
        "content-length: 2\r\ncontent-length: 3",
    ] {
        let reply = format!("HTTP/1.1 200 OK\r\n{length}\r\n\r\n{{}}");
        let server = RawServer::start(move |_, _, _, _| {
            Script::ReplyAndClose(vec![reply.clone().into_bytes()])
        });
        let e = Tools::new(&server).fetch("x").await.unwrap_err();
        assert_connection_error(
            &e,
            "the request failed",
            "the reply's Content-Length is invalid",
        );
    }
}

#[tokio::test]
async fn a_truncated_body_breaks_the_reply() {
    let server = RawServer::start(|_, _, _, _| {
        Script::ReplyAndClose(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"a\": ".to_vec(),
        ])
    });
    let e = Tools::new(&server).fetch("x").await.unwrap_err();
    assert_connection_error(
        &e,
        "the connection broke while reading the response",
        "the server closed the connection before the reply's end",
    );
}

#[tokio::test]
async fn malformed_status_lines_are_refused() {
    for line in [
        "HTTP/1.1 2OO OK",
        "HTTP/1.1 099 Low",
        "ICY 200 OK",
        "HTTP/1.1 101 Switching Protocols",
    ] {
        let reply = format!("{line}\r\ncontent-length: 2\r\n\r\n{{}}");
        let server = RawServer::start(move |_, _, _, _| {
            Script::ReplyAndClose(vec![reply.clone().into_bytes()])
        });
        let e = Tools::new(&server).fetch("x").await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Connection, "{line}: {}", e.message);
        assert!(
            e.message.contains("the request failed ("),
            "{line}: {}",
            e.message
        );
    }
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_not_used() {
    let server = RawServer::start(|_, _, _, _| {
        Script::ReplyAndCloseAfter(vec![json_reply(r#"{"ok":1}"#)], Duration::from_millis(50))
    });
    let tools = Tools::new(&server);
    assert_eq!(tools.fetch("x").await.unwrap(), json!({"ok": 1}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tools.fetch("x").await.unwrap(), json!({"ok": 1}));
    assert_eq!(server.connections(), 2);
    assert_eq!(
        server.requests().len(),
        2,
        "the closed connection carried nothing"
    );
}

#[tokio::test]
async fn a_request_lost_on_a_reused_connection_is_sent_again_when_safe() {
    // Every connection's second request is met with a close, as when the
    // server closes an idle connection just as a request is sent on it.
    let server = RawServer::start(|_, nth, _, body| {
        if nth == 0 {
            Script::Reply(vec![json_reply(if body.is_empty() { "1" } else { "2" })])
        } else {
            Script::HangUp
        }
    });
    let tools = Tools::new(&server);
    assert_eq!(tools.fetch("x").await.unwrap(), json!(1));
    assert_eq!(
        tools.fetch("x").await.unwrap(),
        json!(1),
        "a GET is sent again"
    );
    assert_eq!(server.connections(), 2);
    assert_eq!(
        tools
            .call("create_once", json!({"path": "p", "n": 1}))
            .await
            .unwrap(),
        json!(2),
        "a POST with an idempotency key is sent again"
    );
    assert_eq!(server.connections(), 3);
    // A POST without a key may have been processed: not sent twice.
    let e = tools
        .call("create", json!({"path": "p", "n": 1}))
        .await
        .unwrap_err();
    assert_connection_error(
        &e,
        "the request failed",
        "the server closed the connection without a reply",
    );
    assert_eq!(server.connections(), 3);
    let heads: Vec<String> = server
        .requests()
        .into_iter()
        .map(|(h, _)| h.to_ascii_lowercase())
        .collect();
    for sent in &heads[3..5] {
        assert!(sent.starts_with("post /p "), "{sent}");
        assert!(sent.contains("\r\nidempotency-key: create:1\r\n"), "{sent}");
    }
}

#[tokio::test]
async fn many_calls_at_once_each_get_their_reply() {
    let server = RawServer::start(|_, _, head, _| {
        let path = head
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        Script::Reply(vec![json_reply(&format!("{{\"path\":\"{path}\"}}"))])
    });
    let tools = Tools::new(&server);
    for _ in 0..2 {
        let calls = (0..20).map(|i| {
            let tools = &tools;
            async move { (i, tools.fetch(&format!("n{i}")).await) }
        });
        for (i, out) in futures_util::future::join_all(calls).await {
            assert_eq!(out.unwrap(), json!({"path": format!("n{i}")}));
        }
    }
    assert!(
        server.connections() <= 20,
        "the second round reuses the first's connections"
    );
}

#[tokio::test]
async fn bytes_past_a_reply_end_its_connection() {
    // Without pipelining nothing may follow a reply: the connection is
    // not trusted with another request.
    let server = RawServer::start(|_, _, _, _| {
        Script::Reply(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n".to_vec(),
        ])
    });
    let tools = Tools::new(&server);
    assert_eq!(tools.fetch("x").await.unwrap(), json!({}));
    assert_eq!(tools.fetch("x").await.unwrap(), json!({}));
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn an_http_1_0_reply_keeps_its_connection_only_when_it_says_so() {
    let server = RawServer::start(|_, _, head, _| {
        let keep = if head.contains("/keep") {
            "connection: keep-alive\r\n"
        } else {
            ""
        };
        Script::Reply(vec![format!(
            "HTTP/1.0 200 OK\r\n{keep}content-length: 2\r\n\r\n{{}}"
        )
        .into_bytes()])
    });
    let tools = Tools::new(&server);
    for _ in 0..2 {
        assert_eq!(tools.fetch("keep").await.unwrap(), json!({}));
    }
    assert_eq!(server.connections(), 1);
    for _ in 0..2 {
        assert_eq!(tools.fetch("plain").await.unwrap(), json!({}));
    }
    assert_eq!(
        server.connections(),
        2,
        "the kept one carries the first plain call, and is closed after it"
    );
}
