//! `flowc serve` end to end: a real `flowc serve` process and a real
//! `flowc worker` on one run store (a SQLite file; a PostgreSQL database
//! for the API test), the program's tools on a loopback server that counts
//! what it receives, and the API spoken with a plain HTTP client.
//!
//! - the API: a run started over HTTP (from source, and reusing a submitted
//!   run's program) is stored as `flowc submit` stores it and a worker
//!   drives it; runs listed and filtered; a run's steps, trace and spend
//!   against budget; the inbox with each gate's type and proposed action;
//!   approve, reject (a reason required), edit-then-approve (422 with the
//!   validator's messages, then accepted); 409 on a second decision and on
//!   a gate decided elsewhere (`flowc reject`); the outcomes in the store and
//!   at the tool server;
//! - auth: 401 without a token or with an unknown one, 403 for a token
//!   outside its flows or gates, the login page's cookie;
//! - start-up refusals: a public address without tokens, a bad token file,
//!   an unreachable store;
//! - secrets: the flow's tool reads a canary token from the environment and
//!   the tool server echoes it into the value the gate shows (so the store
//!   holds it); no API response or page carries it;
//! - the web inbox in a real browser (Debian's Chromium driven by
//!   playwright-core, tests/browser/inbox.mjs): approve, reject with a
//!   reason, an invalid then a valid edit; screenshots under target/.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::durable::{finished, is_run_id, on_both_backends, signal, Backend, Lab};
use crate::support::mock_server::Reply;

/// The value of the environment variable the flow's tool reads: it must
/// never leave serve.
const CANARY: &str = "crm-CANARY-7f3a9c0e5d1b42";
const ALICE: &str = "alice-token-0123456789abcdef";
/// Only flow `other`.
const BOB: &str = "bob-token-0123456789abcdef00";
/// Flow `refund_order`, but only gate `other_gate`.
const CAROL: &str = "carol-token-0123456789abcdef";

const TOKENS: &str = r#"{"reviewers": [
  {"name": "alice", "token_env": "ALICE_TOKEN"},
  {"name": "bob", "token": "bob-token-0123456789abcdef00", "flows": ["other"]},
  {"name": "carol", "token": "carol-token-0123456789abcdef", "flows": ["refund_order"], "gates": ["other_gate"]}
]}"#;

/// A lookup whose result a person approves before an irreversible refund.
pub(crate) const REFUNDS: &str = r#"
type Refund { order: string, amount: number >= 0 <= 500, reason: string, kind: "full" | "partial" }

tool lookup(order: string) -> Refund {
  http GET "{env.TOOLS_URL}/tools/lookup?order={order}"
  header "Authorization" "Bearer {env.CRM_TOKEN}"
  effect read
  timeout 5s
}

tool refund(order: string, amount: number) -> { id: string } {
  http POST "{env.TOOLS_URL}/tools/refund"
  effect irreversible
  timeout 5s
  idempotency "refund:{order}"
}

flow refund_order(order: string) -> { id: string } {
  budget { tool_calls 10, steps 20 }
  let found = lookup(order: order)
  let r = approve refund { show found, timeout 48h, on_timeout reject }
  let done = refund(order: r.order, amount: r.amount)
  return done
}
"#;

/// A lab whose tool server answers `lookup` with an amount per order and a
/// reason that, for orders ending in 2, quotes the `Authorization` header it
/// received (a careless service echoing a credential), and `refund` with an id.
pub(crate) fn refund_lab(backend: Backend, name: &str) -> Lab {
    refund_lab_of(backend, name, REFUNDS)
}

/// [`refund_lab`] with another program using the same tools.
pub(crate) fn refund_lab_of(backend: Backend, name: &str, program: &str) -> Lab {
    let lab = Lab::on(backend, name, program);
    lab.server.always(
        "GET /tools/lookup",
        Reply::from_fn(|r| {
            let order = r
                .query
                .as_deref()
                .and_then(|q| q.strip_prefix("order="))
                .unwrap_or("?")
                .to_string();
            // One order's service quotes the credential it was sent.
            let auth = match order.ends_with('2') {
                true => format!(
                    " (checked with {})",
                    r.header("authorization").unwrap_or("")
                ),
                false => String::new(),
            };
            let amount = 40.0 + order.bytes().last().map_or(0.0, |b| f64::from(b % 10));
            Reply::ok(json!({
                "order": order,
                "amount": amount,
                "reason": format!("parcel damaged in transit{auth}"),
                "kind": "full",
            }))
        }),
    );
    lab.server.always(
        "POST /tools/refund",
        Reply::from_fn(|r| {
            Reply::ok(json!({"id": format!("R-{}-{}", r.body["order"].as_str().unwrap_or("?"), r.body["amount"])}))
        }),
    );
    lab.dir.write("tokens.json", TOKENS);
    lab
}

/// A `flowc` process of the lab with the canary and the token variable in
/// its environment (workers and serve alike: what a team's machines share).
pub(crate) fn spawn(lab: &Lab, args: &[&str]) -> Child {
    lab.command(args)
        .env("CRM_TOKEN", CANARY)
        .env("ALICE_TOKEN", ALICE)
        .env_remove("FLOWC_SERVE_TOKENS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flowc starts")
}

/// A `flowc worker` killed when dropped (a failing test leaves none behind).
pub(crate) struct Worker(Option<Child>);

impl Worker {
    pub(crate) fn start(lab: &Lab) -> Worker {
        Worker(Some(spawn(lab, &["worker", "--poll", "100ms"])))
    }

    /// SIGTERM: the worker stops and exits 0.
    pub(crate) fn stop(mut self) {
        let child = self.0.take().expect("running");
        signal(&child, "TERM");
        let out = finished(child);
        assert_eq!(out.code, Some(0), "the worker exits 0 at SIGTERM: {out:?}");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running `flowc serve`.
pub(crate) struct Serve {
    child: Option<Child>,
    pub(crate) base: String,
    log: Arc<Mutex<String>>,
}

impl Serve {
    /// Starts `flowc serve --listen 127.0.0.1:0 ARGS…` and waits for the
    /// line naming its address.
    pub(crate) fn start(lab: &Lab, extra: &[&str]) -> Serve {
        Serve::on(lab, "127.0.0.1:0", extra)
    }

    pub(crate) fn on(lab: &Lab, listen: &str, extra: &[&str]) -> Serve {
        let mut args = vec!["serve", "--listen", listen];
        args.extend_from_slice(extra);
        let mut child = spawn(lab, &args);
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or("")
                            .trim_end_matches('/')
                            .to_string(),
                    );
                }
                kept.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("flowc serve did not start:\n{}", log.lock().unwrap()));
        Serve {
            child: Some(child),
            base,
            log,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM: serve stops and exits 0.
    pub(crate) fn stop(mut self) {
        let child = self.child.take().expect("running");
        signal(&child, "TERM");
        let out = finished(child);
        assert_eq!(
            out.code,
            Some(0),
            "flowc serve exits 0 at SIGTERM:\n{}",
            self.log.lock().unwrap()
        );
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP client that keeps every body it received, to look for secrets.
pub(crate) struct Api<'s> {
    serve: &'s Serve,
    client: Client,
    pub(crate) bodies: Mutex<Vec<(String, String)>>,
}

impl<'s> Api<'s> {
    pub(crate) fn new(serve: &'s Serve) -> Api<'s> {
        Api {
            serve,
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .expect("a client"),
            bodies: Mutex::default(),
        }
    }

    fn send(
        &self,
        what: String,
        request: reqwest::blocking::RequestBuilder,
    ) -> (StatusCode, String) {
        let response = request.send().unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status();
        let text = response.text().expect("a body");
        self.bodies.lock().unwrap().push((what, text.clone()));
        (status, text)
    }

    fn json(what: &str, status: StatusCode, text: &str) -> (StatusCode, Value) {
        let v = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{what} ({status}) is not JSON ({e}): {text}"));
        (status, v)
    }

    pub(crate) fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut r = self.client.get(self.serve.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let what = format!("GET {path}");
        let (status, text) = self.send(what.clone(), r);
        Self::json(&what, status, &text)
    }

    pub(crate) fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut r = self.client.post(self.serve.url(path)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let what = format!("POST {path} {body}");
        let (status, text) = self.send(what.clone(), r);
        Self::json(&what, status, &text)
    }

    /// A page, with the login cookie of `token`.
    pub(crate) fn page(&self, path: &str, token: &str) -> (StatusCode, String) {
        let r = self
            .client
            .get(self.serve.url(path))
            .header("Cookie", format!("flowc_token={token}"));
        self.send(format!("GET {path} (page)"), r)
    }

    /// No body received so far carries the secret.
    pub(crate) fn assert_no_secret(&self) {
        let bodies = self.bodies.lock().unwrap();
        assert!(
            bodies.len() >= 5,
            "the test looked at {} responses only",
            bodies.len()
        );
        for (what, body) in bodies.iter() {
            assert!(
                !body.contains(CANARY),
                "{what} carries the canary secret:\n{body}"
            );
            assert!(
                !body.contains(ALICE) && !body.contains(BOB),
                "{what} carries a token:\n{body}"
            );
        }
    }
}

/// Waits until the run has `status`.
pub(crate) fn wait_for(lab: &Lab, run: &str, status: &str) -> flowc::store::RunRecord {
    let store = lab.open_store();
    let started = Instant::now();
    loop {
        let r = store
            .run(run)
            .expect("the store answers")
            .expect("the run is stored");
        if r.status == status {
            return r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run {run} is still {} (waiting for {status}): {:?}",
            r.status,
            r.error
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn the_api_starts_runs_for_workers_and_records_each_decision(backend: Backend) {
    let lab = refund_lab(backend, "serve-api");
    let worker = Worker::start(&lab);
    let serve = Serve::start(&lab, &["--tokens", "tokens.json"]);
    let api = Api::new(&serve);
    let source = std::fs::read_to_string(lab.dir.0.join("prog.flow")).expect("the program");

    // A run from source, stored as `flowc submit` stores it.
    let (status, started) = api.post(
        "/api/runs",
        Some(ALICE),
        &json!({"source": source, "flow": "refund_order", "input": {"order": "A-1"}}),
    );
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let a1 = started["id"].as_str().expect("an id").to_string();
    assert!(is_run_id(&a1) && started["status"] == "queued", "{started}");
    let stored = lab.open_store().program(&a1).expect("the store answers");
    assert!(
        stored.is_some_and(|p| p.contains("refund_order")),
        "the program is stored with the run"
    );
    // One submitted from a shell, one reusing that run's program.
    let out = lab
        .command(&["submit", "prog.flow", "--input", r#"{"order": "A-2"}"#])
        .output()
        .expect("submit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a2 = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (status, like) = api.post(
        "/api/runs",
        Some(ALICE),
        &json!({"like": a2, "input": {"order": "A-3"}}),
    );
    assert_eq!(status, StatusCode::CREATED, "{like}");
    let a3 = like["id"].as_str().expect("an id").to_string();
    let (status, a4) = api.post(
        "/api/runs",
        Some(ALICE),
        &json!({"like": a2, "input": {"order": "A-4"}}),
    );
    assert_eq!(status, StatusCode::CREATED, "{a4}");
    let a4 = a4["id"].as_str().expect("an id").to_string();
    // Refused starts: a program with errors (its diagnostics), bad input,
    // two sources.
    let (status, bad) = api.post(
        "/api/runs",
        Some(ALICE),
        &json!({"source": "flow f( {", "input": {}}),
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    assert!(
        bad["diagnostics"]["diagnostics"][0]["code"] == "S001",
        "{bad}"
    );
    let (status, bad) = api.post(
        "/api/runs",
        Some(ALICE),
        &json!({"like": a2, "input": {"order": 3}}),
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (status, bad) = api.post(
        "/api/runs",
        Some(ALICE),
        &json!({"like": a2, "source": "x"}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (status, bad) = api.post("/api/runs", Some(ALICE), &json!({"lik": a2}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    for run in [&a1, &a2, &a3, &a4] {
        wait_for(&lab, run, "waiting");
    }
    // The leak this test guards against is real: the store holds the canary.
    let gates = lab.open_store().gates(Some(&a2)).expect("gates");
    assert!(
        gates[0].show.to_string().contains(CANARY),
        "the tool echoed the canary into the gate"
    );

    // Runs, filtered.
    let (status, all) = api.get("/api/runs", Some(ALICE));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["runs"].as_array().map(Vec::len), Some(4), "{all}");
    assert_eq!(all["runs"][0]["budget"]["tool_calls"]["limit"], 10, "{all}");
    let (_, waiting) = api.get(
        "/api/runs?status=waiting&flow=refund_order&since=1h",
        Some(ALICE),
    );
    assert_eq!(
        waiting["runs"].as_array().map(Vec::len),
        Some(4),
        "{waiting}"
    );
    let (_, none) = api.get("/api/runs?flow=nothing", Some(ALICE));
    assert_eq!(none["runs"], json!([]));
    let (_, none) = api.get("/api/runs?status=completed", Some(ALICE));
    assert_eq!(none["runs"], json!([]));
    let (status, bad) = api.get("/api/runs?status=sleeping", Some(ALICE));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (status, bad) = api.get("/api/runs?since=soon", Some(ALICE));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    // A run: spend against budget, its gate, its steps, its trace.
    let (status, one) = api.get(&format!("/api/runs/{a1}"), Some(ALICE));
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["run"]["status"], "waiting");
    assert_eq!(
        one["spend"]["tool_calls"],
        json!({"spent": 1, "limit": 10}),
        "{one}"
    );
    assert_eq!(one["spend"]["steps"]["limit"], 20, "{one}");
    assert_eq!(one["gates"][0]["gate"], "refund");
    assert_eq!(one["gates"][0]["status"], "pending");
    let (status, steps) = api.get(&format!("/api/runs/{a1}/steps"), Some(ALICE));
    assert_eq!(status, StatusCode::OK);
    let found = steps["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["value"]["order"] == "A-1");
    assert!(found.is_some(), "the lookup's value is a step: {steps}");
    let (status, trace) = api.get(&format!("/api/runs/{a1}/trace"), Some(ALICE));
    assert_eq!(status, StatusCode::OK, "{trace}");
    let events = trace["events"].as_array().expect("events");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "tool_call" && e["name"] == "lookup"),
        "{trace}"
    );
    let (status, _) = api.get("/api/runs/no-such-run", Some(ALICE));
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The inbox: what each gate shows, its type, the proposed action.
    let (status, inbox) = api.get("/api/inbox", Some(ALICE));
    assert_eq!(status, StatusCode::OK);
    let cards = inbox["gates"].as_array().expect("gates");
    assert_eq!(cards.len(), 4, "{inbox}");
    let card = cards
        .iter()
        .find(|c| c["run"] == a1.as_str())
        .expect("a1's card");
    assert_eq!(card["type"], "Refund");
    assert_eq!(card["input"], json!({"order": "A-1"}));
    assert_eq!(card["show"][0]["amount"], 49.0, "{card}");
    // The call as written, and its arguments' values if approved as shown.
    assert_eq!(
        card["proposed"],
        json!([{"target": "refund", "effect": "irreversible", "call": "refund(order: r.order, amount: r.amount)",
                "arguments": [{"name": "order", "expr": "r.order", "value": "A-1"},
                              {"name": "amount", "expr": "r.amount", "value": 49.0}]}])
    );
    assert!(
        card["steps"].as_array().is_some_and(|s| !s.is_empty()),
        "{card}"
    );

    // Decisions.
    let gate = |run: &str| format!("/api/runs/{run}/gates/refund");
    let (status, approved) = api.post(&gate(&a1), Some(ALICE), &json!({"decision": "approve"}));
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["gate"]["status"], "approved");
    assert_eq!(approved["gate"]["decided_by"], "alice");
    assert_eq!(approved["gate"]["released"]["amount"], 49.0);
    let (status, again) = api.post(
        &gate(&a1),
        Some(ALICE),
        &json!({"decision": "reject", "reason": "late"}),
    );
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["gate"]["decided_by"], "alice", "{again}");

    let (status, no_reason) = api.post(&gate(&a2), Some(ALICE), &json!({"decision": "reject"}));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{no_reason}");
    let (status, rejected) = api.post(
        &gate(&a2),
        Some(ALICE),
        &json!({"decision": "reject", "reason": "duplicate claim"}),
    );
    assert_eq!(status, StatusCode::OK, "{rejected}");
    assert_eq!(rejected["gate"]["reason"], "duplicate claim");

    let (status, invalid) = api.post(
        &gate(&a3),
        Some(ALICE),
        &json!({"decision": "approve", "value": {"order": "A-3", "amount": -5, "reason": "partial", "kind": "half"}}),
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{invalid}");
    assert_eq!(invalid["type"], "Refund");
    let errors = invalid["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("/amount:"))),
        "{invalid}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("/kind:"))),
        "{invalid}"
    );
    let (status, malformed) = api.post(&gate(&a3), Some(ALICE), &json!({"decision": "maybe"}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{malformed}");
    let edited_value =
        json!({"order": "A-3", "amount": 10, "reason": "partial refund agreed", "kind": "partial"});
    let (status, edited) = api.post(
        &gate(&a3),
        Some(ALICE),
        &json!({"decision": "approve", "value": edited_value}),
    );
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["gate"]["edited"], true);
    assert_eq!(edited["gate"]["released"], edited_value);

    // Decided elsewhere: a reviewer in a shell was first.
    let out = lab
        .command(&[
            "reject", &a4, "refund", "--reason", "fraud", "--by", "mallory",
        ])
        .output()
        .expect("reject");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, late) = api.post(&gate(&a4), Some(ALICE), &json!({"decision": "approve"}));
    assert_eq!(status, StatusCode::CONFLICT, "{late}");
    assert!(
        late["error"]
            .as_str()
            .is_some_and(|e| e.contains("mallory")),
        "{late}"
    );

    // The worker continues each run with what was decided.
    let done1 = wait_for(&lab, &a1, "completed");
    assert_eq!(done1.output, Some(json!({"id": "R-A-1-49.0"})));
    wait_for(&lab, &a2, "rejected");
    let done3 = wait_for(&lab, &a3, "completed");
    assert_eq!(done3.output, Some(json!({"id": "R-A-3-10"})));
    wait_for(&lab, &a4, "rejected");
    let refunds: Vec<(String, Value)> = lab
        .server
        .requests_to("/tools/refund")
        .iter()
        .map(|r| {
            (
                r.body["order"].as_str().unwrap_or("").to_string(),
                r.body["amount"].clone(),
            )
        })
        .collect();
    assert_eq!(refunds.len(), 2, "two refunds, once each: {refunds:?}");
    assert!(
        refunds.contains(&("A-1".into(), json!(49.0))),
        "{refunds:?}"
    );
    assert!(
        refunds.contains(&("A-3".into(), json!(10))),
        "the edited amount: {refunds:?}"
    );
    // Who decided, when, what was shown and what was released.
    let store = lab.open_store();
    let g3 = &store.gates(Some(&a3)).expect("gates")[0];
    assert_eq!(g3.decided_by.as_deref(), Some("alice"));
    assert!(g3.decided_at.is_some_and(|t| t > g3.created_at));
    assert_eq!(g3.value.as_ref(), Some(&edited_value));
    assert_eq!(g3.show[0]["amount"], 41.0);

    // Pages, too, with alice's cookie.
    let (status, page) = api.page(&format!("/runs/{a1}"), ALICE);
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Spend against budget") && page.contains("alice"),
        "{page}"
    );
    let (status, _) = api.page("/inbox", ALICE);
    assert_eq!(status, StatusCode::OK);
    let (_, gates_page) = api.get(&format!("/api/runs/{a3}"), Some(ALICE));
    assert_eq!(gates_page["run"]["status"], "completed");
    api.assert_no_secret();
    serve.stop();
    worker.stop();
}

on_both_backends!(the_api_starts_runs_for_workers_and_records_each_decision);

#[test]
fn tokens_are_required_and_keep_reviewers_to_their_flows_and_gates() {
    let lab = refund_lab(Backend::Sqlite, "serve-auth");
    let out = lab
        .command(&["submit", "prog.flow", "--input", r#"{"order": "B-1"}"#])
        .output()
        .expect("submit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let worker = Worker::start(&lab);
    wait_for(&lab, &run, "waiting");
    let serve = Serve::start(&lab, &["--tokens", "tokens.json"]);
    let api = Api::new(&serve);
    let decide = format!("/api/runs/{run}/gates/refund");
    let gets = [
        "/api/me".to_string(),
        "/api/runs".into(),
        format!("/api/runs/{run}"),
        format!("/api/runs/{run}/steps"),
        format!("/api/runs/{run}/trace"),
        "/api/inbox".into(),
    ];
    for token in [None, Some("not-a-token-of-anyone-at-all")] {
        for path in &gets {
            let (status, body) = api.get(path, token);
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "GET {path} with {token:?}: {body}"
            );
            assert!(body["error"].is_string());
        }
        let (status, _) = api.post(&decide, token, &json!({"decision": "approve"}));
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = api.post(
            "/api/runs",
            token,
            &json!({"like": run, "input": {"order": "B-2"}}),
        );
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Bob sees only flow `other`.
    let (_, me) = api.get("/api/me", Some(BOB));
    assert_eq!(
        me,
        json!({"reviewer": "bob", "flows": ["other"], "gates": null})
    );
    let (_, runs) = api.get("/api/runs", Some(BOB));
    assert_eq!(runs["runs"], json!([]));
    let (_, inbox) = api.get("/api/inbox", Some(BOB));
    assert_eq!(inbox["gates"], json!([]));
    for path in &gets[2..5] {
        let (status, body) = api.get(path, Some(BOB));
        assert_eq!(status, StatusCode::FORBIDDEN, "GET {path}: {body}");
    }
    let (status, body) = api.post(&decide, Some(BOB), &json!({"decision": "approve"}));
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = api.post(
        "/api/runs",
        Some(BOB),
        &json!({"like": run, "input": {"order": "B-2"}}),
    );
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Carol sees the flow but may decide another gate only.
    let (status, _) = api.get(&format!("/api/runs/{run}"), Some(CAROL));
    assert_eq!(status, StatusCode::OK);
    let (_, inbox) = api.get("/api/inbox", Some(CAROL));
    assert_eq!(inbox["gates"], json!([]));
    let (status, body) = api.post(
        &decide,
        Some(CAROL),
        &json!({"decision": "reject", "reason": "no"}),
    );
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let gate = &lab.open_store().gates(Some(&run)).expect("gates")[0];
    assert_eq!(gate.status, "pending", "nothing refused was recorded");

    // The pages: to the login form without a cookie; a bad token is refused.
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = client.get(serve.url("/inbox")).send().expect("inbox");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login");
    let r = client
        .post(serve.url("/login"))
        .form(&[("token", "wrong")])
        .send()
        .expect("login");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .post(serve.url("/login"))
        .form(&[("token", ALICE)])
        .send()
        .expect("login");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("a cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let (status, page) = api.page("/inbox", ALICE);
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(&format!("data-run=\"{run}\"")),
        "alice's inbox shows the gate"
    );
    let (_, page) = api.page("/inbox", BOB);
    assert!(
        !page.contains(&format!("data-run=\"{run}\"")),
        "bob's does not"
    );
    api.assert_no_secret();
    serve.stop();
    worker.stop();
}

#[test]
fn serve_refuses_to_start_without_what_it_needs() {
    let lab = refund_lab(Backend::Sqlite, "serve-refuse");
    let run = |args: &[&str]| {
        let child = spawn(&lab, args);
        finished(child)
    };
    let out = run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("refusing to listen on 0.0.0.0:0 without tokens"),
        "{}",
        out.stderr
    );
    lab.dir.write(
        "bad.json",
        r#"{"reviewers": [{"name": "x", "token": "short"}]}"#,
    );
    let out = run(&["serve", "--listen", "127.0.0.1:0", "--tokens", "bad.json"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("bad.json: reviewer `x`: the token is shorter than 16"),
        "{}",
        out.stderr
    );
    let out = run(&["serve", "--listen", "here"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        "postgres://flowc:pw@127.0.0.1:1/x?connect_timeout=2",
    ]);
    assert_eq!(out.code, Some(6), "{out:?}");
    // With tokens, any address is allowed.
    let serve = Serve::on(&lab, "0.0.0.0:0", &["--tokens", "tokens.json"]);
    serve.stop();
}

/// Where tests/setup.sh installs playwright-core.
fn playwright_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/playwright")
}

#[test]
fn the_web_inbox_works_in_a_real_browser() {
    let chromium = std::path::Path::new("/usr/bin/chromium");
    let playwright = playwright_dir();
    assert!(
        chromium.exists() && playwright.join("node_modules/playwright-core").exists(),
        "the browser test needs Debian's chromium and playwright-core: run `bash tests/setup.sh`"
    );
    let lab = refund_lab(Backend::Sqlite, "serve-browser");
    let worker = Worker::start(&lab);
    let serve = Serve::start(&lab, &["--tokens", "tokens.json"]);
    let runs: Vec<String> = ["A-1", "A-2", "A-3"]
        .iter()
        .map(|order| {
            let input = format!(r#"{{"order": "{order}"}}"#);
            let out = lab
                .command(&["submit", "prog.flow", "--input", &input])
                .output()
                .expect("submit");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    for run in &runs {
        wait_for(&lab, run, "waiting");
    }
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/inbox.mjs");
    let out = std::process::Command::new("node")
        .arg(&script)
        .env("BASE", &serve.base)
        .env("TOKEN", ALICE)
        .env("RUN_APPROVE", &runs[0])
        .env("RUN_REJECT", &runs[1])
        .env("RUN_EDIT", &runs[2])
        .env("SHOTS", &shots)
        .env("PLAYWRIGHT", &playwright)
        .env("CANARY", CANARY)
        .stdin(Stdio::null())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON summary");
    eprintln!("browser: {summary}");
    assert!(
        summary["inline_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("/amount:")),
        "{summary}"
    );
    assert_eq!(
        summary["kept_value"], "-5",
        "the refused value stays in its field"
    );
    assert!(summary["proposed"]
        .as_str()
        .is_some_and(|p| p.contains("refund(order: r.order, amount: r.amount)")));

    // The outcomes, in the store and at the tool server.
    let done = wait_for(&lab, &runs[0], "completed");
    assert_eq!(done.output, Some(json!({"id": "R-A-1-49.0"})));
    wait_for(&lab, &runs[1], "rejected");
    let edited = wait_for(&lab, &runs[2], "completed");
    assert_eq!(edited.output, Some(json!({"id": "R-A-3-10"})));
    let store = lab.open_store();
    let gate = |run: &str| store.gates(Some(run)).expect("gates").remove(0);
    assert_eq!(gate(&runs[0]).decided_by.as_deref(), Some("alice"));
    let rejected = gate(&runs[1]);
    assert_eq!(
        (rejected.decided_by.as_deref(), rejected.reason.as_deref()),
        (Some("alice"), Some("duplicate claim"))
    );
    let g = gate(&runs[2]);
    assert_eq!(g.decided_by.as_deref(), Some("alice"));
    assert_eq!(
        g.value,
        Some(
            json!({"order": "A-3", "amount": 10, "reason": "partial refund agreed with the customer", "kind": "partial"})
        )
    );
    assert_eq!(
        lab.server.hits("/tools/refund"),
        2,
        "refunds for the approved and the edited run only"
    );
    for shot in ["inbox.png", "inbox-edit-refused.png", "run.png"] {
        let bytes = std::fs::read(shots.join(shot)).unwrap_or_else(|e| panic!("{shot}: {e}"));
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{shot} is a screenshot"
        );
    }
    serve.stop();
    worker.stop();
}

/// Small refunds approved by a policy, every one of them sampled for review.
const REVIEWED: &str = r#"
type Refund { order: string, amount: number >= 0 <= 500, reason: string, kind: "full" | "partial" }

tool lookup(order: string) -> Refund {
  http GET "{env.TOOLS_URL}/tools/lookup?order={order}"
  header "Authorization" "Bearer {env.CRM_TOKEN}"
  effect read
  timeout 5s
}

tool refund(order: string, amount: number) -> { id: string } {
  http POST "{env.TOOLS_URL}/tools/refund"
  effect irreversible
  timeout 5s
  idempotency "refund:{order}"
}

flow refund_small(order: string) -> { id: string } {
  budget { tool_calls 10, steps 20 }
  let found = lookup(order: order)
  let r = approve refund {
    show found
    auto approve when found.amount <= 50
    sample 100%
    timeout 48h
    on_timeout reject
  }
  let done = refund(order: r.order, amount: r.amount)
  return done
}
"#;

#[test]
fn sampled_policy_decisions_are_reviewed_in_the_inbox() {
    let lab = refund_lab_of(Backend::Sqlite, "serve-reviews", REVIEWED);
    let worker = Worker::start(&lab);
    let runs: Vec<String> = ["A-1", "A-2"]
        .iter()
        .map(|order| {
            let input = format!(r#"{{"order": "{order}"}}"#);
            let out = lab
                .command(&["submit", "prog.flow", "--input", &input])
                .output()
                .expect("submit");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    // The policy approves both (49 and 40 are at most 50): no person waited.
    for run in &runs {
        wait_for(&lab, run, "completed");
    }
    let serve = Serve::start(&lab, &["--tokens", "tokens.json"]);
    let api = Api::new(&serve);
    let (_, inbox) = api.get("/api/inbox", Some(ALICE));
    assert_eq!(inbox["gates"], json!([]), "nothing waits for a person");
    let (status, listed) = api.get("/api/reviews", Some(ALICE));
    assert_eq!(status, StatusCode::OK, "{listed}");
    let items = listed["reviews"].as_array().expect("reviews");
    assert_eq!(items.len(), 2, "{listed}");
    let first = items
        .iter()
        .find(|r| r["run"] == runs[0].as_str())
        .expect("A-1's review");
    assert_eq!(first["decision"]["source"], "policy", "{first}");
    assert_eq!(first["decision"]["decided_by"], "policy", "{first}");
    assert_eq!(first["decision"]["released"]["amount"], 49.0, "{first}");
    assert!(
        first["decision"]["policy_read"].to_string().contains("49"),
        "{first}"
    );
    // Out of scope: nothing listed, refused when named.
    let (_, none) = api.get("/api/reviews", Some(BOB));
    assert_eq!(none["reviews"], json!([]));
    let path = |run: &str| format!("/api/runs/{run}/reviews/refund");
    let (status, _) = api.post(&path(&runs[0]), Some(BOB), &json!({"verdict": "agree"}));
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api.post(&path(&runs[0]), None, &json!({"verdict": "agree"}));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, bad) = api.post(&path(&runs[0]), Some(ALICE), &json!({"verdict": "maybe"}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    // Agree over the API; a second verdict is refused.
    let (status, agreed) = api.post(&path(&runs[0]), Some(ALICE), &json!({"verdict": "agree"}));
    assert_eq!(status, StatusCode::OK, "{agreed}");
    assert_eq!(agreed["review"]["verdict"], "agree");
    assert_eq!(agreed["review"]["reviewed_by"], "alice");
    let (status, again) = api.post(
        &path(&runs[0]),
        Some(ALICE),
        &json!({"verdict": "disagree"}),
    );
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    // The page lists the other one; disagreeing there, with a note.
    let (status, page) = api.page("/inbox", ALICE);
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Sampled for review") && page.contains("data-review=\"refund\""),
        "{page}"
    );
    assert!(
        !page.contains(&format!("review-{}-", runs[0])),
        "a reviewed case leaves the inbox"
    );
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let key = lab.open_store().gates(Some(&runs[1])).expect("gates")[0]
        .key
        .clone();
    let r = client
        .post(serve.url("/inbox/review"))
        .header("Cookie", format!("flowc_token={ALICE}"))
        .form(&[
            ("run", runs[1].as_str()),
            ("key", key.as_str()),
            ("verdict", "disagree"),
            ("note", "40 is a lot for a damaged parcel"),
        ])
        .send()
        .expect("the review form");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, after) = api.get("/api/reviews", Some(ALICE));
    assert_eq!(after["reviews"], json!([]));
    // The store has both verdicts, by alice.
    let store = lab.open_store();
    let reviews = store.reviews(None, false).expect("reviews");
    type Seen<'r> = (String, Option<&'r str>, Option<&'r str>, Option<&'r str>);
    let verdicts: Vec<Seen> = reviews
        .iter()
        .map(|r| {
            (
                r.run_id.clone(),
                r.verdict.map(|v| v.as_str()),
                r.reviewed_by.as_deref(),
                r.note.as_deref(),
            )
        })
        .collect();
    assert!(
        verdicts.contains(&(runs[0].clone(), Some("agree"), Some("alice"), None)),
        "{verdicts:?}"
    );
    assert!(
        verdicts.contains(&(
            runs[1].clone(),
            Some("disagree"),
            Some("alice"),
            Some("40 is a lot for a damaged parcel")
        )),
        "{verdicts:?}"
    );
    // /metrics: one agreed, one disagreed.
    let r = client
        .get(serve.url("/metrics"))
        .bearer_auth(ALICE)
        .send()
        .expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().expect("a body");
    let samples = prometheus_samples(&text);
    let gate = r#"flow="refund_small",gate="refund""#;
    for (series, value) in [
        (format!("flowc_review_agreement_ratio{{{gate}}}"), 0.5),
        (
            format!(r#"flowc_review_cases_total{{{gate},verdict="agree"}}"#),
            1.0,
        ),
        (
            format!(r#"flowc_review_cases_total{{{gate},verdict="disagree"}}"#),
            1.0,
        ),
        (
            format!(r#"flowc_review_cases_total{{{gate},verdict="open"}}"#),
            0.0,
        ),
    ] {
        assert_eq!(samples.get(&series), Some(&value), "{series} in:\n{text}");
    }
    api.assert_no_secret();
    serve.stop();
    worker.stop();
}

/// The samples of a Prometheus text exposition (`series → value`), checking
/// every line is a comment, `# EOF` (last) or `NAME{LABELS} VALUE`.
fn prometheus_samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut samples = std::collections::BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "the exposition ends with # EOF"
    );
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let kind = rest.split(' ').next().unwrap_or("");
            assert!(matches!(kind, "HELP" | "TYPE" | "UNIT"), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "a metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a value: {line}"));
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "a series twice: {line}"
        );
    }
    samples
}

#[test]
fn metrics_and_the_stats_page_show_what_flowc_stats_computes() {
    let lab = refund_lab(Backend::Sqlite, "serve-metrics");
    let runs: Vec<String> = ["M-1", "M-3", "M-5"]
        .iter()
        .map(|order| {
            let input = format!(r#"{{"order": "{order}"}}"#);
            let out = lab
                .command(&["submit", "prog.flow", "--input", &input])
                .output()
                .expect("submit");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    let worker = Worker::start(&lab);
    for run in &runs {
        wait_for(&lab, run, "waiting");
    }
    let serve = Serve::start(&lab, &["--tokens", "tokens.json"]);
    let api = Api::new(&serve);
    // One approved (the refund is made), one rejected, one left waiting.
    let (status, body) = api.post(
        &format!("/api/runs/{}/gates/refund", runs[0]),
        Some(ALICE),
        &json!({"decision": "approve"}),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.post(
        &format!("/api/runs/{}/gates/refund", runs[1]),
        Some(ALICE),
        &json!({"decision": "reject", "reason": "not damaged"}),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for(&lab, &runs[0], "completed");
    let store = lab.open_store();
    let started = Instant::now();
    let rejected = loop {
        let r = store.run(&runs[1]).expect("store").expect("stored");
        if !matches!(r.status.as_str(), "waiting" | "running" | "queued") {
            break r.status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{}", r.status);
        std::thread::sleep(Duration::from_millis(20));
    };
    worker.stop();

    let scrape = |token: Option<&str>| {
        let mut r = api.client.get(serve.url("/metrics"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        api.send(format!("GET /metrics as {token:?}"), r)
    };
    for token in [None, Some("not-a-token-of-anyone-at-all")] {
        let (status, body) = scrape(token);
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, text) = scrape(Some(ALICE));
    assert_eq!(status, StatusCode::OK, "{text}");
    let samples = prometheus_samples(&text);
    let at = |series: &str| -> f64 {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let flow = r#"flow="refund_order""#;
    assert_eq!(
        at(&format!(r#"flowc_runs_total{{{flow},status="completed"}}"#)),
        1.0
    );
    assert_eq!(
        at(&format!(r#"flowc_runs_total{{{flow},status="waiting"}}"#)),
        1.0
    );
    assert_eq!(
        at(&format!(
            r#"flowc_runs_total{{{flow},status="{rejected}"}}"#
        )),
        1.0
    );
    // Three lookups, one refund, all answered.
    assert_eq!(
        at(&format!(
            r#"flowc_tool_calls_total{{{flow},tool="lookup",outcome="ok"}}"#
        )),
        3.0
    );
    assert_eq!(
        at(&format!(
            r#"flowc_tool_calls_total{{{flow},tool="refund",outcome="ok"}}"#
        )),
        1.0
    );
    assert_eq!(
        at(&format!(
            r#"flowc_tool_calls_total{{{flow},tool="refund",outcome="failed"}}"#
        )),
        0.0
    );
    assert_eq!(
        at(&format!(
            r#"flowc_tool_success_ratio{{{flow},tool="lookup"}}"#
        )),
        1.0
    );
    assert_eq!(
        at(&format!(
            r#"flowc_guardrail_rejections_total{{{flow},kind="blocked_effect"}}"#
        )),
        1.0
    );
    assert_eq!(
        at(&format!(r#"flowc_gates_pending{{{flow},gate="refund"}}"#)),
        1.0
    );
    let by_steps: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("flowc_runs_by_steps{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(by_steps, 3.0, "every run has a step count:\n{text}");
    // The same figures as `flowc stats --format json`.
    let out = lab
        .command(&["stats", "--format", "json"])
        .output()
        .expect("stats");
    assert!(out.status.success());
    let stats: Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    let of = &stats["flows"]["refund_order"];
    assert_eq!(
        at(&format!(r#"flowc_reliability_score{{{flow}}}"#)),
        of["reliability"]["score"].as_f64().expect("a score")
    );
    assert_eq!(
        at(&format!(r#"flowc_run_steps{{{flow},quantile="0.95"}}"#)),
        of["steps"]["p95"].as_f64().expect("p95")
    );
    assert_eq!(
        at(&format!(
            r#"flowc_gate_wait_seconds{{{flow},quantile="1"}}"#
        )),
        of["gate_wait_seconds"]["max"].as_f64().expect("max")
    );
    assert_eq!(
        at(&format!(r#"flowc_retries_total{{{flow}}}"#)),
        of["retries"].as_f64().expect("retries")
    );
    // Bob sees only flow `other`: nothing of refund_order.
    let (status, text) = scrape(Some(BOB));
    assert_eq!(status, StatusCode::OK);
    assert!(!text.contains("refund_order"), "{text}");
    prometheus_samples(&text);

    // The stats page: charts drawn on the server, linked from the nav.
    let (status, page) = api.page("/stats", ALICE);
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("href=\"/stats\""), "the nav links the page");
    assert!(page.contains("<svg"), "{page}");
    assert!(
        page.contains("<h3>Steps per run: refund_order</h3>"),
        "{page}"
    );
    assert_eq!(
        page.matches("<circle").count(),
        3,
        "a point per run on the cost chart"
    );
    assert!(!page.contains("<script"), "no script");
    let r = api
        .client
        .get(serve.url("/stats"))
        .send()
        .expect("stats page");
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "to the login page");
    api.assert_no_secret();
    serve.stop();
}
