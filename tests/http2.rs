//! Which HTTP version a run's calls speak, as the server saw it: HTTP/1.1
//! to a plain-HTTP origin, HTTP/2 with prior knowledge (one connection for
//! every call in flight) to an origin listed in `FLOWC_H2C`, no fallback
//! to HTTP/1.1 when a listed server does not speak h2c, and a malformed
//! `FLOWC_H2C` refused before any call.

use std::sync::Arc;
use std::time::Duration;

use flowc::exec::ErrorClass;
use flowc::run::{self, FailureClass, Outcome, RunOptions, SetupError, World};
use hyper::Version;
use serde_json::{json, Value};

use crate::support::cli::Test;
use crate::support::h2_server::H2Server;
use crate::support::mock_server::{self, MockServer, Reply};
use crate::support::program::checked;

const FANOUT: &str = r#"type Item { id: string len 1..40 }
type Ack { ok: bool }

tool ping(id: string) -> Ack {
  http GET "{env.MOCK_URL}/tools/ping?id={id}"
  effect read
  timeout 10s
}

flow fanout(items: [Item] len ..100) -> [Ack] {
  budget { steps 1k, tool_calls 1k, wall 1m }
  let acks = for it in items parallel 100 {
    ping(id: it.id)
  }
  return acks
}
"#;

/// Runs the fan-out over `width` items against the server at `base`, with
/// `h2c` as `FLOWC_H2C`.
fn fan_out(base: String, width: usize, h2c: Option<String>) -> Result<run::Report, SetupError> {
    let program = checked("fanout.flow", FANOUT);
    let items: Vec<Value> = (0..width).map(|i| json!({"id": format!("i{i}")})).collect();
    let options = RunOptions {
        concurrency: width,
        world: World::Live,
        env: Arc::new(move |name: &str| match name {
            "MOCK_URL" => Some(base.clone()),
            "FLOWC_H2C" => h2c.clone(),
            _ => None,
        }),
        ..RunOptions::default()
    };
    run::run(&program, "fanout", json!({"items": items}), options)
}

fn completed(report: &run::Report, width: usize) {
    match &report.outcome {
        Outcome::Completed(Value::Array(acks)) => {
            assert_eq!(acks.len(), width);
            assert!(acks.iter().all(|a| a == &json!({"ok": true})), "{acks:?}");
        }
        other => panic!("the fan-out did not complete: {other:?}"),
    }
}

#[test]
fn calls_to_an_origin_in_flowc_h2c_are_streams_of_one_http2_connection() {
    // Every reply waits 300 ms: the 50 calls are in flight together.
    let server = H2Server::start(Duration::from_millis(300), 200);
    let report = fan_out(
        server.base_url(),
        50,
        Some(format!(" {}, ", server.origin())),
    )
    .expect("runs");
    completed(&report, 50);
    let versions = server.versions();
    assert_eq!(versions.len(), 50);
    assert!(
        versions.iter().all(|v| *v == Version::HTTP_2),
        "{versions:?}"
    );
    assert_eq!(server.connections(), 1, "one connection for every call");
}

#[test]
fn plain_http_to_an_origin_not_listed_is_http1_one_connection_per_call_in_flight() {
    let server = H2Server::start(Duration::from_millis(300), 200);
    // Listed, but another origin: a port nothing listens on.
    let other = mock_server::refused_base_url();
    let report = fan_out(server.base_url(), 20, Some(other)).expect("runs");
    completed(&report, 20);
    let versions = server.versions();
    assert_eq!(versions.len(), 20);
    assert!(
        versions.iter().all(|v| *v == Version::HTTP_11),
        "{versions:?}"
    );
    assert_eq!(server.connections(), 20);
}

#[test]
fn http1_connections_are_reused_by_the_calls_that_follow() {
    // 12 calls, at most 3 at a time: the run opens 3 connections, and the
    // calls after the first three take them over when idle.
    let source = FANOUT.replace("parallel 100", "parallel 3");
    let server = H2Server::start(Duration::from_millis(20), 10);
    let program = checked("fanout.flow", &source);
    let items: Vec<Value> = (0..12).map(|i| json!({"id": format!("i{i}")})).collect();
    let base = server.base_url();
    let options = RunOptions {
        concurrency: 3,
        world: World::Live,
        env: Arc::new(move |name: &str| (name == "MOCK_URL").then(|| base.clone())),
        ..RunOptions::default()
    };
    let report = run::run(&program, "fanout", json!({"items": items}), options).expect("runs");
    completed(&report, 12);
    assert_eq!(server.versions(), vec![Version::HTTP_11; 12]);
    assert_eq!(server.connections(), 3, "one connection per call in flight");
}

#[test]
fn http2_calls_beyond_the_servers_stream_limit_wait_for_a_stream_of_the_same_connection() {
    // The server takes 10 streams at a time; 30 calls queue on its one
    // connection rather than fail or open more.
    let server = H2Server::start(Duration::from_millis(50), 10);
    let report = fan_out(server.base_url(), 30, Some(server.origin())).expect("runs");
    completed(&report, 30);
    assert_eq!(server.versions(), vec![Version::HTTP_2; 30]);
    assert_eq!(server.connections(), 1);
}

#[test]
fn a_malformed_flowc_h2c_stops_the_run_before_any_call() {
    let server = H2Server::start(Duration::ZERO, 10);
    for (value, says) in [
        (server.base_url() + "/v1", "is not HOST or HOST:PORT"),
        ("https://api.example.com".to_string(), "is an https origin"),
    ] {
        let Err(SetupError::Start(message)) = fan_out(server.base_url(), 3, Some(value.clone()))
        else {
            panic!("FLOWC_H2C={value} was accepted");
        };
        assert!(
            message.starts_with(&format!("FLOWC_H2C: `{value}` {says}")),
            "{message}"
        );
    }
    assert_eq!(server.versions().len(), 0, "nothing was called");
    assert_eq!(server.connections(), 0);
}

#[test]
fn flowc_run_reads_flowc_h2c_from_its_environment() {
    let server = H2Server::start(Duration::ZERO, 10);
    let items: Vec<Value> = (0..5).map(|i| json!({"id": format!("i{i}")})).collect();
    Test::new()
        .file("fanout.flow", FANOUT)
        .env("MOCK_URL", &server.base_url())
        .env("FLOWC_H2C", &server.origin())
        .args(["run", "fanout.flow", "--ephemeral", "--input"])
        .arg(json!({ "items": items }).to_string())
        .stdout_has("\"ok\": true")
        .run();
    let versions = server.versions();
    assert_eq!(versions, vec![Version::HTTP_2; 5]);
    assert_eq!(server.connections(), 1);
}

#[test]
fn a_listed_server_that_speaks_only_http1_fails_the_calls_as_connection_errors() {
    // The mock server speaks HTTP/1.1 only: an h2c connection preface is
    // not a request it answers, and flowc must not retry over HTTP/1.1.
    let server = MockServer::start();
    server.always("GET /tools/ping", Reply::ok(json!({"ok": true})));
    let report = fan_out(server.base_url(), 3, Some(server.base_url())).expect("runs");
    let Outcome::Failed(e) = &report.outcome else {
        panic!("the run did not fail: {:?}", report.outcome);
    };
    assert!(
        matches!(e.class, FailureClass::Call(ErrorClass::Connection)),
        "{e}"
    );
    assert_eq!(
        server.hits("/tools/ping"),
        0,
        "no HTTP/1.1 request was made"
    );
}

#[test]
fn the_mock_server_started_for_h2c_takes_every_call_of_a_wide_fan_out_at_once() {
    // What the durable bench's HTTP/2 model fan-out rests on. Listed in
    // `FLOWC_H2C`, the calls can only complete over HTTP/2: flowc does not
    // fall back to HTTP/1.1 (the test above). And the server lifts hyper's
    // limit of 200 streams at once: with it, the 201st request would reach
    // the server only once a reply had freed a stream, 300 ms after the
    // first.
    let width = 250;
    let source = FANOUT
        .replace("len ..100", "len ..250")
        .replace("parallel 100", "parallel 250");
    let server = MockServer::start_h2c();
    server.always(
        "GET /tools/ping",
        Reply::delay(300, Reply::ok(json!({"ok": true}))),
    );
    let program = checked("fanout.flow", &source);
    let items: Vec<Value> = (0..width).map(|i| json!({"id": format!("i{i}")})).collect();
    let (base, origin) = (server.base_url(), server.addr().to_string());
    let options = RunOptions {
        concurrency: width,
        world: World::Live,
        env: Arc::new(move |name: &str| match name {
            "MOCK_URL" => Some(base.clone()),
            "FLOWC_H2C" => Some(origin.clone()),
            _ => None,
        }),
        ..RunOptions::default()
    };
    let report = run::run(&program, "fanout", json!({ "items": items }), options).expect("runs");
    completed(&report, width);
    let received: Vec<_> = server
        .requests_to("/tools/ping")
        .iter()
        .map(|r| r.received)
        .collect();
    assert_eq!(received.len(), width);
    let (first, last) = (
        received.iter().min().expect("requests"),
        received.iter().max().expect("requests"),
    );
    assert!(
        *last - *first < Duration::from_millis(300),
        "the requests reached the server over {:?}: some waited for a stream",
        *last - *first
    );
}
