//! Approvals for teams, end to end with real processes on a real run store
//! (SQLite and PostgreSQL), the loopback server counting what it receives:
//!
//! - a gate's policy approves the cases it accepts without a person, and
//!   the store and the trace record "decided by policy" with the values it
//!   read; the other cases wait for a person;
//! - a waiting gate is announced once to its webhook (never again by a
//!   resume), with a link to its page in the inbox; a failing receiver is
//!   retried and logged, and the run goes on; the address (a secret) is in
//!   no message and no trace line;
//! - under a `flowc worker`, a gate whose timeout passes escalates once (a
//!   second notification, a second deadline) and is then rejected, with
//!   nobody running `resume`;
//! - sampled policy decisions are reviewed with `flowc review`, and `flowc
//!   stats` reports the agreement rate;
//! - `flowc approve` by someone with none of the run's keys records the
//!   decision, and a worker with the keys finishes the run;
//! - with no store (`flowc test`, `--ephemeral`) the policy still decides,
//!   before a decision given for the run, and nothing is sampled or sent.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::durable::{finished, is_run_id, on_both_backends, signal, Backend, Lab, Out};
use crate::support::mock_server::{refused_base_url, Reply};
use flowc::store::{DecisionSource, Verdict};

/// Refunds up to 50 are the policy's; a person decides the rest, and is
/// told on the team's webhook.
const POLICY_FLOW: &str = r#"
flow refund(r: Scored) -> { id: string } {
  budget { tool_calls 5, steps 10 }
  let ok = approve refund_request {
    show r
    auto approve when r.score <= 50
    sample 100% max 2 per day
    notify webhook env.TEAM_HOOK
  }
  let paid = post(name: ok.name, score: ok.score)
  return paid
}
"#;

/// Nobody answers in 2 s: the on-call webhook is told and the gate waits
/// 2 s more, then it is rejected.
const ESCALATING_FLOW: &str = r#"
flow refund(r: Scored) -> { id: string } {
  budget { tool_calls 5, steps 10 }
  let ok = approve refund_request {
    show r
    notify webhook env.TEAM_HOOK
    timeout 2s
    on_timeout escalate { notify webhook env.ONCALL_HOOK, timeout 2s }
  }
  let paid = post(name: ok.name, score: ok.score)
  return paid
}
"#;

const TEAM: &str = "/hooks/team";
const ONCALL: &str = "/hooks/oncall";

fn input(name: &str, score: u64) -> String {
    json!({"r": {"name": name, "score": score}}).to_string()
}

/// A lab whose webhooks answer 200, and the variables that point at them.
fn lab(backend: Backend, name: &str, program: &str) -> (Lab, Vec<(&'static str, String)>) {
    let lab = Lab::on(backend, name, program);
    lab.server
        .always(&format!("POST {TEAM}"), Reply::ok(json!({"ok": true})));
    lab.server
        .always(&format!("POST {ONCALL}"), Reply::ok(json!({"ok": true})));
    let env = vec![
        ("TEAM_HOOK", lab.server.url(TEAM)),
        ("ONCALL_HOOK", lab.server.url(ONCALL)),
        ("FLOWC_INBOX_URL", "https://inbox.example.com/".to_string()),
    ];
    (lab, env)
}

fn flowc(lab: &Lab, env: &[(&str, String)], args: &[&str]) -> Out {
    let out = lab
        .command(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("flowc starts");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn spawn(lab: &Lab, env: &[(&str, String)], args: &[&str]) -> Child {
    lab.command(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flowc starts")
}

fn trace(lab: &Lab, run: &str) -> Vec<Value> {
    let path = lab.dir.0.join(format!(".flowc/runs/{run}/trace.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("a trace line is JSON"))
        .collect()
}

fn events<'a>(trace: &'a [Value], kind: &str) -> Vec<&'a Value> {
    trace.iter().filter(|e| e["kind"] == kind).collect()
}

/// Waits until `cond` holds, failing with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn a_policy_approves_the_cases_it_accepts_and_records_what_it_read(backend: Backend) {
    let (lab, env) = lab(backend, "policy-decides", POLICY_FLOW);
    let small = flowc(
        &lab,
        &env,
        &["run", "prog.flow", "--input", &input("a0", 30)],
    );
    small.expect(0);
    assert_eq!(small.json(), json!({"id": "P-a0-30"}));
    let run = small.run_id();
    let store = lab.open_store();
    let gates = store.gates(Some(&run)).expect("gates");
    assert_eq!(gates.len(), 1);
    let g = &gates[0];
    assert_eq!(g.status, "approved");
    assert_eq!(g.source, Some(DecisionSource::Policy));
    assert_eq!(g.decided_by.as_deref(), Some("policy"));
    assert_eq!(g.policy_read, Some(json!({"r.score": 30})));
    let t = trace(&lab, &run);
    let gate = events(&t, "gate");
    assert_eq!(gate.len(), 1, "{gate:?}");
    assert_eq!(gate[0]["source"], "policy");
    assert_eq!(gate[0]["decided_by"], "policy");
    assert_eq!(gate[0]["policy"]["read"], json!({"r.score": 30}));
    assert_eq!(gate[0]["sampled"], true, "sample 100%");
    assert_eq!(
        lab.server.hits(TEAM),
        0,
        "nobody is told of a case the policy decided"
    );

    // Above the threshold: a person decides, and the team is told once.
    let big = flowc(
        &lab,
        &env,
        &["run", "prog.flow", "--input", &input("a1", 80)],
    );
    big.expect(4);
    let run = big.run_id();
    assert_eq!(lab.server.hits(TEAM), 1);
    let note = &lab.server.requests_to(TEAM)[0];
    let text = note.body["text"].as_str().expect("a Slack-style text");
    assert!(
        text.contains("`refund_request`") && text.contains(&run),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "https://inbox.example.com/inbox#gate-{run}-refund.ok"
        )),
        "a link to the gate's page in the inbox: {text}"
    );
    let g = &store.gates(Some(&run)).expect("gates")[0];
    assert_eq!((g.status.as_str(), g.source), ("pending", None));
    assert_eq!(g.policy_read, None, "the policy decided nothing here");
    // A resume that still finds nobody's decision announces nothing again.
    flowc(&lab, &env, &["resume", &run]).expect(4);
    assert_eq!(lab.server.hits(TEAM), 1, "announced once per gate");
    flowc(
        &lab,
        &env,
        &["approve", &run, "refund_request", "--by", "ana", "--resume"],
    )
    .expect(0);
    let g = &store.gates(Some(&run)).expect("gates")[0];
    assert_eq!(
        (g.source, g.decided_by.as_deref()),
        (Some(DecisionSource::Person), Some("ana"))
    );
    assert_eq!(lab.server.hits(TEAM), 1);
    assert_eq!(lab.executed().len(), 2, "both refunds paid once");
    let notify = events(&trace(&lab, &run), "notify")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(notify.len(), 1, "{notify:?}");
    assert_eq!(notify[0]["status"], "sent");
    assert_eq!(notify[0]["target"], "env.TEAM_HOOK");
}

fn a_failing_receiver_is_retried_and_the_run_goes_on_without_naming_the_address(backend: Backend) {
    let (lab, mut env) = lab(backend, "policy-retry", POLICY_FLOW);
    // Two failures, then the receiver takes it.
    lab.server.script(
        &format!("POST {TEAM}"),
        [Reply::server_error(), Reply::error(503, "busy")],
    );
    let out = flowc(
        &lab,
        &env,
        &["run", "prog.flow", "--input", &input("b0", 90)],
    );
    out.expect(4);
    assert_eq!(lab.server.hits(TEAM), 3, "retried until delivered");
    let run = out.run_id();
    let sent = events(&trace(&lab, &run), "notify")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        (sent[0]["status"].clone(), sent[0]["attempts"].clone()),
        (json!("sent"), json!(3))
    );

    // A receiver that never answers: bounded retries, a warning, and the
    // run still ends as it would have (waiting), its address never shown.
    let secret = "services/T000/B000/SECRET-PATH-9f8e";
    env[0].1 = format!("{}/{secret}", refused_base_url());
    let out = flowc(
        &lab,
        &env,
        &["run", "prog.flow", "--input", &input("b1", 90)],
    );
    out.expect(4);
    let run = out.run_id();
    assert!(
        out.stderr
            .contains("notification for gate `refund_request`")
            && out.stderr.contains("failed after 4 attempts"),
        "{}",
        out.stderr
    );
    let trace_text =
        std::fs::read_to_string(lab.dir.0.join(format!(".flowc/runs/{run}/trace.jsonl")))
            .expect("trace");
    assert!(
        !out.stderr.contains("SECRET-PATH") && !trace_text.contains("SECRET-PATH"),
        "{}",
        out.stderr
    );
    let failed = events(&trace(&lab, &run), "notify")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        (failed[0]["status"].clone(), failed[0]["attempts"].clone()),
        (json!("failed"), json!(4))
    );
    // Approving it still works, and the announcement is not tried again.
    flowc(&lab, &env, &["approve", &run, "refund_request", "--resume"]).expect(0);
}

fn a_worker_escalates_a_gate_once_when_its_timeout_passes_then_rejects_it(backend: Backend) {
    let (lab, env) = lab(backend, "policy-escalate", ESCALATING_FLOW);
    let w = spawn(&lab, &env, &["worker", "--poll", "100ms"]);
    let submitted = flowc(
        &lab,
        &env,
        &["submit", "prog.flow", "--input", &input("c0", 70)],
    );
    submitted.expect(0);
    let run = submitted.stdout.trim().to_string();
    assert!(is_run_id(&run), "{submitted:?}");
    let store = lab.open_store();
    wait_until(Duration::from_secs(20), "the team's notification", || {
        lab.server.hits(TEAM) == 1
    });
    let announced = Instant::now();
    wait_until(Duration::from_secs(20), "the escalation", || {
        lab.server.hits(ONCALL) == 1
    });
    let escalated_after = announced.elapsed();
    assert!(
        escalated_after >= Duration::from_millis(1500),
        "escalated {escalated_after:?} after the first notice, before its 2 s timeout"
    );
    let text = lab.server.requests_to(ONCALL)[0].body["text"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        text.starts_with("Escalated:") && text.contains(&run),
        "{text}"
    );
    let g = &store.gates(Some(&run)).expect("gates")[0];
    assert_eq!(g.status, "pending", "an escalated gate still waits");
    assert!(g.escalated_at.is_some());
    wait_until(Duration::from_secs(20), "the rejection", || {
        store
            .run(&run)
            .ok()
            .flatten()
            .is_some_and(|r| r.status == "rejected")
    });
    let g = &store.gates(Some(&run)).expect("gates")[0];
    assert_eq!(
        (g.status.as_str(), g.source),
        ("rejected", Some(DecisionSource::Timeout))
    );
    assert_eq!(lab.server.hits(TEAM), 1, "one notice per gate");
    assert_eq!(lab.server.hits(ONCALL), 1, "one escalation");
    assert!(lab.executed().is_empty(), "nothing paid");
    signal(&w, "TERM");
    finished(w).expect(0);
}

fn sampled_decisions_are_reviewed_and_stats_report_the_agreement_rate(backend: Backend) {
    let (lab, env) = lab(backend, "policy-review", POLICY_FLOW);
    let mut runs = Vec::new();
    for (i, score) in [10, 20, 40].into_iter().enumerate() {
        let out = flowc(
            &lab,
            &env,
            &[
                "run",
                "prog.flow",
                "--input",
                &input(&format!("d{i}"), score),
            ],
        );
        out.expect(0);
        runs.push(out.run_id());
    }
    let listed = flowc(&lab, &env, &["reviews", "--format", "json"]);
    listed.expect(0);
    let open = listed.json()["reviews"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(open.len(), 2, "`max 2 per day`: {open:?}");
    let sampled: Vec<String> = open
        .iter()
        .map(|r| r["run"].as_str().unwrap_or("").to_string())
        .collect();
    flowc(
        &lab,
        &env,
        &[
            "review",
            &sampled[0],
            "refund_request",
            "--agree",
            "--by",
            "ana",
        ],
    )
    .expect(0);
    flowc(
        &lab,
        &env,
        &[
            "review",
            &sampled[1],
            "refund_request",
            "--disagree",
            "--by",
            "bo",
            "--note",
            "too generous",
        ],
    )
    .expect(0);
    let again = flowc(
        &lab,
        &env,
        &["review", &sampled[0], "refund_request", "--disagree"],
    );
    assert_eq!(again.code, Some(2), "{again:?}");
    assert!(
        again.stderr.contains("already reviewed (agree by ana)"),
        "{}",
        again.stderr
    );
    let unsampled = runs
        .iter()
        .find(|r| !sampled.contains(r))
        .expect("one run was not sampled");
    let none = flowc(
        &lab,
        &env,
        &["review", unsampled, "refund_request", "--agree"],
    );
    assert_eq!(none.code, Some(2));
    let items = lab.open_store().reviews(None, false).expect("reviews");
    assert_eq!(
        items.iter().map(|r| r.verdict).collect::<Vec<_>>(),
        [Some(Verdict::Agree), Some(Verdict::Disagree)]
    );

    let stats = flowc(&lab, &env, &["stats", "--format", "json"]);
    stats.expect(0);
    let r = &stats.json()["reviews"];
    assert_eq!(
        (
            r["sampled"].clone(),
            r["reviewed"].clone(),
            r["agreed"].clone(),
            r["agreement_rate"].clone()
        ),
        (json!(2), json!(2), json!(1), json!(0.5)),
        "{r}"
    );
    assert_eq!(r["gates"]["refund.refund_request"]["disagreed"], 1);
    let human = flowc(&lab, &env, &["stats"]);
    assert!(
        human.stdout.contains("policy reviews: 2 sampled, 2 reviewed (1 agreed, 1 disagreed), 0 open, agreement 50.0%"),
        "{}",
        human.stdout
    );
}

fn approve_without_any_key_records_the_decision_and_a_worker_with_the_keys_finishes(
    backend: Backend,
) {
    let (lab, env) = lab(backend, "policy-nokeys", POLICY_FLOW);
    let w = spawn(&lab, &env, &["worker", "--poll", "100ms"]);
    let submitted = flowc(
        &lab,
        &env,
        &["submit", "prog.flow", "--input", &input("e0", 99)],
    );
    submitted.expect(0);
    let run = submitted.stdout.trim().to_string();
    let store = lab.open_store();
    wait_until(Duration::from_secs(20), "the run waiting", || {
        store
            .run(&run)
            .ok()
            .flatten()
            .is_some_and(|r| r.status == "waiting" && r.owner.is_none())
    });
    // The reviewer's shell: no provider key, no tool URL, no webhook.
    let mut reviewer = std::process::Command::new(env!("CARGO_BIN_EXE_flowc"));
    reviewer
        .current_dir(&lab.dir.0)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["approve", &run, "refund_request", "--by", "reviewer"])
        .stdin(Stdio::null());
    if let Some(url) = &lab.store_url {
        reviewer.env("FLOWC_STORE", url);
    }
    let approved = reviewer.output().expect("flowc starts");
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    wait_until(
        Duration::from_secs(20),
        "the worker completing the run",
        || {
            store
                .run(&run)
                .ok()
                .flatten()
                .is_some_and(|r| r.status == "completed")
        },
    );
    let done = store.run(&run).expect("run").expect("stored");
    assert_eq!(done.output, Some(json!({"id": "P-e0-99"})));
    let g = &store.gates(Some(&run)).expect("gates")[0];
    assert_eq!(
        (g.source, g.decided_by.as_deref()),
        (Some(DecisionSource::Person), Some("reviewer"))
    );
    assert_eq!(lab.executed().values().copied().collect::<Vec<_>>(), [1]);
    signal(&w, "TERM");
    finished(w).expect(0);
}

on_both_backends!(
    a_policy_approves_the_cases_it_accepts_and_records_what_it_read,
    a_failing_receiver_is_retried_and_the_run_goes_on_without_naming_the_address,
    a_worker_escalates_a_gate_once_when_its_timeout_passes_then_rejects_it,
    sampled_decisions_are_reviewed_and_stats_report_the_agreement_rate,
    approve_without_any_key_records_the_decision_and_a_worker_with_the_keys_finishes,
);

/// A program with no run store around it: `flowc test` and an
/// `--ephemeral` run. The policy decides there too (nothing is sampled or
/// announced: there is no store to keep a review item or an inbox to
/// decide in).
const TESTED_POLICY: &str = r#"
type Refund { order_id: string, amount: number >= 0 }

tool refund(order_id: string, amount: number >= 0) -> { refund_id: string } {
  http POST "https://pay.example.com/v1/refunds"
  effect irreversible
  timeout 15s
  idempotency "refund:{order_id}"
}

flow refund_order(request: Refund) -> { refund_id: string } {
  budget { steps 5, tool_calls 5, wall 1m }
  let ok = approve refund_request {
    show request
    auto approve when request.amount <= 50
    sample 100%
    notify webhook "https://hooks.example.com/never-called"
  }
  let paid = refund(order_id: ok.order_id, amount: ok.amount)
  return paid
}

test "a small refund is the policy's" {
  run refund_order(request: { order_id: "A1", amount: 20 })
  given refund returns { refund_id: "R1" }
  expect output.refund_id == "R1"
  expect refund called 1 times
}

test "a person's rejection stops a large one" {
  run refund_order(request: { order_id: "A2", amount: 500 })
  given approve refund_request rejects "too much"
  given refund returns { refund_id: "R2" }
  expect refund called 0 times
}

test "the policy comes before a decision given for the run" {
  run refund_order(request: { order_id: "A3", amount: 5 })
  given approve refund_request rejects "never mind"
  given refund returns { refund_id: "R3" }
  expect refund called 1 times
}
"#;

/// A test may decide a gate of any flow the flow under test may run,
/// through a fallback's call too; a gate no such flow has stays an error.
#[test]
fn a_test_knows_the_gates_of_the_flow_a_fallback_calls() {
    use crate::support::cli::Test;
    let flow = r#"
tool fetch(id: string) -> string {
  http GET "https://example.com/{id}"
  effect read
  timeout 5s
}

flow reviewed(id: string) -> string {
  budget { steps 5, tool_calls 5, wall 1m }
  let ok = approve second_look { show id }
  return ok
}

flow main(id: string) -> string {
  budget { steps 10, tool_calls 10, wall 1m }
  let page = fetch(id: id) fallback reviewed(id: id)
  return page
}

test "the fallback's gate decides" {
  run main(id: "a")
  given fetch fails "down"
  given approve second_look approves
  expect output == "a"
}
"#;
    Test::new()
        .file("fallback.flow", flow)
        .args(["test", "fallback.flow"])
        .stdout_has("1 passed, 0 failed")
        .run();
    Test::new()
        .file(
            "fallback.flow",
            &flow.replace(
                "approve second_look approves",
                "approve first_look approves",
            ),
        )
        .args(["check", "fallback.flow"])
        .status(1)
        .stderr_has("the flow under test has no gate named `first_look`")
        .run();
}

#[test]
fn flowc_test_and_ephemeral_runs_apply_the_policy_without_a_store() {
    use crate::support::cli::Test;
    Test::new()
        .file("refund.flow", TESTED_POLICY)
        .args(["test", "refund.flow"])
        .stdout_has("3 passed, 0 failed")
        .run();
    let replay = json!({
        "flow": "refund_order",
        "input": {"request": {"order_id": "A4", "amount": 30}},
        "tools": {"refund": [{"refund_id": "R4"}]},
    });
    let run = Test::new()
        .file("refund.flow", TESTED_POLICY)
        .file("refund.replay.json", &replay.to_string())
        .args([
            "run",
            "refund.flow",
            "--ephemeral",
            "--trace",
            "trace.jsonl",
        ])
        .args(["--replay", "refund.replay.json"])
        .stdout_has("\"R4\"")
        .run();
    let text = std::fs::read_to_string(run.dir().join("trace.jsonl")).expect("trace");
    let gate: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .find(|e| e["kind"] == "gate")
        .expect("a gate event");
    assert_eq!(gate["source"], "policy", "{gate}");
    assert_eq!(gate["policy"]["read"], json!({"request.amount": 30}));
    assert_eq!(gate["sampled"], false, "no store, no review item");
    assert!(
        !text.contains("\"kind\":\"notify\""),
        "an ephemeral run announces nothing"
    );
}

#[test]
fn a_webhook_read_from_the_environment_is_checked_before_the_run_starts() {
    use crate::support::cli::Test;
    let program = TESTED_POLICY.replace(
        "notify webhook \"https://hooks.example.com/never-called\"",
        "notify webhook env.REFUNDS_HOOK_FOR_PREFLIGHT",
    );
    // A recording calls nothing and skips the preflight; a live run is
    // refused before anything is called.
    let refused = Test::new()
        .file("refund.flow", &program)
        .args(["run", "refund.flow", "--ephemeral", "--input"])
        .arg(json!({"request": {"order_id": "A5", "amount": 500}}).to_string())
        .status(2)
        .run();
    assert!(
        refused.stderr.contains("REFUNDS_HOOK_FOR_PREFLIGHT")
            && refused
                .stderr
                .contains("of gate `refund_request` in flow `refund_order`"),
        "{}",
        refused.stderr
    );
}
