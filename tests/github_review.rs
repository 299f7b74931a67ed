//! examples/pr_review.flow against GitHub's own API description: Prism
//! (`prism mock`, installed by `tests/setup.sh`, `need_prism_github`)
//! serves @octokit/openapi's description of api.github.com with its example
//! responses and validates every request it receives against it. A
//! recording proxy between flowc and Prism keeps what flowc sent and what
//! Prism said about it (its status, and the `sl-violations` header Prism
//! adds when a request or response breaks the description).
//!
//! Prism takes tens of seconds to load GitHub's description, so one test
//! starts it once and runs the whole review through it.

use crate::support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::mock_server::{MockServer, Reply, CHAT};
use support::port;

const TOKEN: &str = "ghp_test_token_never_in_traces";

fn prism_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/prism");
    assert!(
        dir.join("node_modules/.bin/prism").exists()
            && dir
                .join("node_modules/@octokit/openapi/generated/api.github.com.json")
                .exists(),
        "Prism and GitHub's OpenAPI description are not installed: run `bash tests/setup.sh`"
    );
    dir
}

/// A running `prism mock`, stopped when dropped; its log is kept.
struct Prism {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Prism {
    /// Starts Prism on a port of its own, with a new port when another
    /// process took the first between the choice and Prism's bind.
    fn start() -> Prism {
        let mut taken = Vec::new();
        for _ in 0..port::ATTEMPTS {
            match Prism::start_on(port::unused()) {
                Ok(prism) => return prism,
                Err(log) if port::was_taken(&log) => taken.push(log),
                Err(log) => panic!("Prism exited before it listened:\n{log}"),
            }
        }
        panic!("every port Prism tried was taken:\n{}", taken.join("\n"));
    }

    /// Prism listening on `port`, or its log when it exited first.
    fn start_on(port: u16) -> Result<Prism, String> {
        let dir = prism_dir();
        let mut child = Command::new(dir.join("node_modules/.bin/prism"))
            .args([
                "mock",
                "node_modules/@octokit/openapi/generated/api.github.com.json",
            ])
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prism starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let log = log.clone();
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    // Logged before it is announced, so an exit's log is whole
                    // when the channel closes.
                    let listening = line.contains("Prism is listening");
                    {
                        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                        log.push_str(&line);
                        log.push('\n');
                    }
                    if listening {
                        let _ = ready.send(());
                    }
                }
            });
        }
        // Only the readers hold a sender now: when Prism exits, both
        // streams end and the channel closes.
        drop(ready_tx);
        let mut prism = Prism {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        // Loading the 13 MB description takes 30 s on a quiet machine.
        match ready_rx.recv_timeout(Duration::from_secs(400)) {
            Ok(()) => Ok(prism),
            Err(RecvTimeoutError::Disconnected) => {
                let _ = prism.child.wait();
                Err(prism.log())
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = prism.child.kill();
                panic!("Prism did not start within 400 s:\n{}", prism.log());
            }
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One exchange through the proxy.
#[derive(Clone, Debug)]
struct Exchange {
    method: String,
    /// Path and query as flowc sent them.
    uri: String,
    headers: Vec<(String, String)>,
    body: Value,
    status: u16,
    /// Prism's `sl-violations` header, parsed (empty when absent).
    violations: Vec<Value>,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Violations Prism found in the request (not in its own example
    /// response).
    fn request_violations(&self) -> Vec<&Value> {
        self.violations
            .iter()
            .filter(|v| v["location"][0] == "request")
            .collect()
    }
}

/// A loopback proxy that forwards everything to `upstream` and records it.
struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Exchange>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let seen: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let recorded = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, recorded) = (client.clone(), recorded.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        forward(req, upstream, client.clone(), recorded.clone())
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Proxy {
            addr,
            seen,
            _runtime: runtime,
        }
    }

    fn seen(&self) -> Vec<Exchange> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

async fn forward(
    req: Request<Incoming>,
    upstream: SocketAddr,
    client: reqwest::Client,
    recorded: Arc<Mutex<Vec<Exchange>>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().clone();
    let uri = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut outgoing = client.request(
        reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("method"),
        format!("http://{upstream}{uri}"),
    );
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            outgoing = outgoing.header(name, value);
        }
    }
    let response = outgoing.body(body.clone()).send().await;
    let (status, content_type, violations, reply) = match response {
        Ok(r) => {
            let status = r.status().as_u16();
            let header = |name: &str| {
                r.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let content_type = header("content-type");
            let violations = header("sl-violations")
                .and_then(|v| serde_json::from_str::<Vec<Value>>(&v).ok())
                .unwrap_or_default();
            let reply = r.bytes().await.unwrap_or_default();
            (status, content_type, violations, reply)
        }
        Err(e) => (502, None, Vec::new(), Bytes::from(e.to_string())),
    };
    recorded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Exchange {
            method: method.to_string(),
            uri,
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            status,
            violations,
        });
    let mut builder = Response::builder().status(status);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    Ok(builder.body(Full::new(reply)).expect("response"))
}

#[test]
fn the_pr_review_example_runs_against_githubs_api_description() {
    let prism = Prism::start();
    let proxy = Proxy::start(prism.addr);
    let models = MockServer::start();
    let draft = json!({
        "event": "COMMENT",
        "body": "file1.txt: 103 lines added with no test; please cover the new branch at line 132."
    });
    models.always(CHAT, Reply::chat_json(draft.clone()).with_usage(900, 60));

    let dir = std::env::temp_dir().join(format!("flowc-github-review-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args([
            "run",
            "examples/pr_review.flow",
            "--approve",
            "post_review_comment",
        ])
        .args([
            "--input",
            r#"{"owner": "octocat", "repo": "Hello-World", "number": 1347}"#,
        ])
        .arg("--store")
        .arg(dir.join("runs.db"))
        .arg("--trace")
        .arg(dir.join("trace.jsonl"))
        .env("GITHUB_API", format!("http://{}", proxy.addr))
        .env("GITHUB_TOKEN", TOKEN)
        .env("OPENAI_BASE_URL", models.openai_base_url())
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .expect("flowc runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let seen = proxy.seen();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stderr}\nexchanges: {seen:#?}\nprism:\n{}",
        prism.log()
    );

    // GitHub's example review, with only the declared fields.
    let output: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(
        output,
        json!({"id": 80, "state": "CHANGES_REQUESTED",
               "html_url": "https://github.com/octocat/Hello-World/pull/12#pullrequestreview-80"})
    );

    // The two reads run at once, in either order.
    let mut summary: Vec<(String, String)> = seen
        .iter()
        .map(|e| (e.method.clone(), e.uri.clone()))
        .collect();
    summary.sort();
    assert_eq!(
        summary,
        [
            ("GET", "/repos/octocat/Hello-World/pulls/1347"),
            (
                "GET",
                "/repos/octocat/Hello-World/pulls/1347/files?per_page=100"
            ),
            ("POST", "/repos/octocat/Hello-World/pulls/1347/reviews"),
        ]
        .map(|(m, u)| (m.to_string(), u.to_string())),
    );
    for exchange in &seen {
        assert!(
            exchange.status < 400,
            "Prism refused {} {} with {}: {:?}",
            exchange.method,
            exchange.uri,
            exchange.status,
            exchange.violations
        );
        assert!(
            exchange.request_violations().is_empty(),
            "Prism's validator found problems in {} {}: {:?}",
            exchange.method,
            exchange.uri,
            exchange.request_violations()
        );
        assert!(
            exchange
                .header("user-agent")
                .is_some_and(|ua| ua.starts_with("flowc/")),
            "{exchange:?}"
        );
        assert_eq!(
            exchange.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(exchange.header("accept"), Some("application/json"));
    }
    let post = seen
        .iter()
        .find(|e| e.method == "POST")
        .expect("the review was posted");
    assert_eq!(
        post.body,
        json!({"commit_id": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
               "body": draft["body"], "event": "COMMENT"}),
        "the body holds exactly the declared fields; owner, repo and number stay in the path"
    );
    assert!(post.header("idempotency-key").is_some_and(|k| {
        k.ends_with("review:octocat/Hello-World#1347@6dcb09b5b57875f334f61aebed695e2e4193db5e")
    }));

    // Prism's own log agrees: no request it validated was refused.
    let log = prism.log();
    assert!(
        !log.contains("Request did not pass the validation rules"),
        "{log}"
    );
    assert_eq!(
        log.matches("The request passed the validation rules")
            .count(),
        3,
        "{log}"
    );

    // Only the declared fields reached the prompt: the PR's title and the
    // patch did, GitHub's URLs and node ids did not.
    let prompt = models.requests_to(CHAT)[0].body["messages"].to_string();
    assert!(
        prompt.contains("Amazing new feature") && prompt.contains("@@ -132,7 +132,7 @@"),
        "{prompt}"
    );
    for undeclared in [
        "node_id",
        "avatar_url",
        "blob_url",
        "MDExOlB1bGxSZXF1ZXN0MQ",
    ] {
        assert!(
            !prompt.contains(undeclared),
            "`{undeclared}` reached the prompt"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
