//! `flowc submit` and `flowc worker` end to end: real worker processes on a
//! real run store (a SQLite file, and a database on the tests' private
//! PostgreSQL server), models and tools on a loopback server that counts
//! every effect by its idempotency key (the `Lab` of tests/durable.rs).
//!
//! - a submitted run completes under a worker with the program as it was
//!   submitted (the file changes meanwhile), and an approval without
//!   `--resume` is continued by the worker;
//! - a gate's timeout fires under a running worker, with no `resume`;
//! - two workers on one store never drive one run twice;
//! - a worker stopped by SIGTERM leaves its run `interrupted` and released,
//!   and another worker completes it;
//! - a malformed stored program fails its run with the reason; an
//!   unreachable store stops the worker with exit status 6;
//! - chaos, reduced to fit the suite: 4 workers on PostgreSQL (40 runs) and
//!   2 on SQLite (20 runs) killed with SIGKILL at random and restarted.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::durable::{
    assert_each_once, finished, is_run_id, items, on_both_backends, scored, signal, slow_output,
    wait_for_executions, Backend, Lab, Out, CRASH_FLOW, FEW, SLOW_FLOW,
};
use crate::support::mock_server::CHAT;

/// Starts `flowc worker` on the lab's store.
fn worker(lab: &Lab, extra: &[&str]) -> Child {
    let mut args = vec!["worker"];
    args.extend_from_slice(extra);
    lab.spawn(&args)
}

/// Stops a worker with SIGTERM; it must exit 0.
fn stop(worker: Child) -> Out {
    signal(&worker, "TERM");
    let out = finished(worker);
    out.expect(0);
    out
}

/// `flowc submit prog.flow …`: the run id it prints.
fn submit(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["submit", "prog.flow"];
    all.extend_from_slice(args);
    let out = lab.flowc(&all);
    out.expect(0);
    let id = out.stdout.trim().to_string();
    assert!(is_run_id(&id), "submit prints the run id: {out:?}");
    id
}

/// Waits until the run has `status`, failing after `limit`.
fn wait_for(lab: &Lab, run: &str, status: &str, limit: Duration) -> flowc::store::RunRecord {
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
            started.elapsed() < limit,
            "run {run} is still {} after {limit:?} (waiting for {status}): {:?}",
            r.status,
            r.error
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn submitted_runs_complete_under_a_worker_and_an_approval_needs_no_resume(backend: Backend) {
    let lab = Lab::on(backend, "worker-approve", CRASH_FLOW);
    let w = worker(&lab, &["--poll", "200ms"]);
    let run = submit(&lab, &["--input", FEW]);
    // What the worker runs is what was submitted, whatever the file says now.
    lab.dir.write("prog.flow", "this is not Flow any more");
    let waiting = wait_for(&lab, &run, "waiting", Duration::from_secs(30));
    assert_eq!(waiting.owner, None, "a waiting run is released");
    assert_eq!(lab.server.hits(CHAT), 2);
    assert!(lab.executed().is_empty());

    // Only the decision is recorded; the worker continues the run.
    let approved = lab.flowc(&["approve", &run, "publish"]);
    approved.expect(0);
    assert!(
        approved.stderr.contains(&format!(
            "a `flowc worker` on this store continues run {run}"
        )),
        "{}",
        approved.stderr
    );
    let done = wait_for(&lab, &run, "completed", Duration::from_secs(30));
    assert_eq!(
        done.output,
        Some(json!({
            "scored": [scored("a0"), scored("a1")],
            "posted": [{"id": "P-a0-28"}, {"id": "P-a1-29"}],
        }))
    );
    assert_eq!(done.owner, None, "a completed run is released");
    // The models were not asked again after the gate; each post once.
    assert_eq!(lab.server.hits(CHAT), 2);
    assert_eq!(lab.server.hits("/tools/items"), 1);
    assert_eq!(lab.executed().values().copied().collect::<Vec<_>>(), [1, 1]);
    let log = stop(w).stderr;
    for status in ["waiting", "completed"] {
        assert!(
            log.contains(&format!("run {run} {status} in")),
            "the worker logs each run it drove:\n{log}"
        );
    }
}

/// A gate that rejects itself 2 s after it is reached.
const TIMED_GATE: &str = r#"
flow timed(q: string) -> [{ id: string }] {
  budget { tokens 100k, tool_calls 50, steps 100 }
  let found = list_items(q: q)
  let ok = approve publish { show found.items, timeout 2s, on_timeout reject }
  let posted = for s in ok {
    post(name: s, score: 1)
  }
  return posted
}
"#;

fn a_gate_timeout_fires_under_a_running_worker_without_resume(backend: Backend) {
    let lab = Lab::on(backend, "worker-timeout", TIMED_GATE);
    let poll = 0.5;
    let w = worker(&lab, &["--poll", "500ms"]);
    let run = submit(&lab, &["--input", FEW]);
    wait_for(&lab, &run, "waiting", Duration::from_secs(30));
    // Nobody resumes anything: the worker alone notices the timeout.
    let rejected = wait_for(&lab, &run, "rejected", Duration::from_secs(30));
    assert_eq!(rejected.owner, None);
    let gates = lab.open_store().gates(Some(&run)).expect("the gates");
    let [g] = gates.as_slice() else {
        panic!("one gate: {gates:?}")
    };
    assert_eq!(g.status, "rejected");
    assert_eq!(g.decided_by.as_deref(), Some("timeout"));
    assert_eq!(g.reason.as_deref(), Some("timed out"));
    let timeout_at = g.timeout_at.expect("the gate has a timeout");
    let decided_at = g.decided_at.expect("the gate was decided");
    assert!((timeout_at - g.created_at - 2.0).abs() < 1e-3);
    assert!(decided_at >= timeout_at, "not before its timeout");
    // Within one poll interval of the timeout, and a margin for the worker
    // to compile the program and reach the gate on a loaded machine.
    let late = decided_at - timeout_at;
    eprintln!("gate decided {late:.3}s after its timeout (poll {poll}s)");
    assert!(
        late <= poll + 0.5,
        "decided {late:.3}s after the timeout, more than one poll interval ({poll}s) and 0.5s"
    );
    assert_eq!(lab.server.hits("/tools/post"), 0);
    stop(w);
}

/// Two calls with an effect per run, each with its idempotency key.
const EFFECTS: &str = r#"
tool record(name: string, score: int) -> { id: string } {
  http POST "{env.TOOLS_URL}/tools/left"
  effect write
  timeout 5s
  idempotency "record:{name}"
}

flow effects(q: string) -> [{ id: string }] {
  budget { tool_calls 50, steps 100 }
  let found = list_items(q: q)
  let posted = for x in found.items parallel 2 {
    record(name: x, score: 3)
  }
  return posted
}
"#;

fn two_workers_never_drive_one_run_twice(backend: Backend) {
    let lab = Lab::on(backend, "two-workers", EFFECTS);
    let runs: Vec<String> = (0..12).map(|_| submit(&lab, &["--input", FEW])).collect();
    let a = worker(&lab, &["--poll", "50ms", "--concurrency", "2"]);
    let b = worker(&lab, &["--poll", "50ms", "--concurrency", "2"]);
    let expected: Value = Value::Array(
        items("few")
            .iter()
            .map(|x| json!({"id": format!("P-{x}-3")}))
            .collect(),
    );
    for run in &runs {
        let r = wait_for(&lab, run, "completed", Duration::from_secs(60));
        assert_eq!(r.output.as_ref(), Some(&expected));
    }
    let logs = [stop(a).stderr, stop(b).stderr];
    // The server's own count: every effect once, none sent twice.
    let executed = lab.executed();
    assert_eq!(executed.len(), 2 * runs.len(), "{executed:?}");
    assert!(executed.values().all(|&n| n == 1), "{executed:?}");
    assert_eq!(
        lab.ledger.lock().unwrap().replays,
        0,
        "no effect was sent twice"
    );
    assert_eq!(lab.requests("POST", "/tools/left").len(), 2 * runs.len());
    assert_eq!(lab.server.hits("/tools/items"), runs.len());
    // Each run was driven by one worker, once.
    let mut drives: BTreeMap<&str, usize> = BTreeMap::new();
    for log in &logs {
        for run in &runs {
            *drives.entry(run).or_default() += log.matches(&format!("run {run} completed")).count();
        }
    }
    assert!(drives.values().all(|&n| n == 1), "{drives:?}\n{logs:?}");
    assert!(
        logs.iter().all(|l| l.contains(" completed in ")),
        "both workers took work:\n{logs:?}"
    );
}

fn a_stopped_worker_leaves_its_run_interrupted_for_another_worker(backend: Backend) {
    let lab = Lab::on(backend, "worker-stop", SLOW_FLOW);
    let first = worker(&lab, &["--poll", "50ms"]);
    let run = submit(&lab, &["--input", r#"{"q":"many"}"#]);
    wait_for_executions(&lab, 2);
    let log = stop(first).stderr;
    assert!(
        log.contains(&format!("run {run} interrupted")),
        "the run in flight was interrupted:\n{log}"
    );
    let r = lab.open_store().run(&run).unwrap().expect("stored");
    assert_eq!(r.status, "interrupted");
    assert_eq!(r.owner, None, "its lease was released");
    assert!(lab.executed().len() < 8, "the stop came mid-run");

    let second = worker(&lab, &["--poll", "50ms"]);
    let done = wait_for(&lab, &run, "completed", Duration::from_secs(60));
    assert_eq!(done.output, Some(slow_output()));
    assert_each_once(&lab);
    stop(second);
}

#[test]
fn a_malformed_stored_program_fails_its_run_and_the_worker_goes_on() {
    let lab = Lab::new("worker-malformed", EFFECTS);
    let broken = submit(&lab, &["--input", FEW]);
    {
        let conn = rusqlite::Connection::open(lab.dir.0.join(".flowc/runs.db")).expect("opens");
        conn.execute(
            "UPDATE programs SET snapshot = '{\"version\": 1, \"root\": \"/x.flow\"}' WHERE run_id = ?1",
            [&broken],
        )
        .expect("the program is broken");
    }
    let fine = submit(&lab, &["--input", FEW]);
    let w = worker(&lab, &["--poll", "50ms"]);
    let failed = wait_for(&lab, &broken, "failed", Duration::from_secs(30));
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains("the stored program is malformed: no `files` object"),
        "{error}"
    );
    assert_eq!(failed.owner, None);
    wait_for(&lab, &fine, "completed", Duration::from_secs(30));
    assert_eq!(lab.executed().len(), 2, "only the good run posted");
    let log = stop(w).stderr;
    assert!(log.contains(&format!("run {broken} failed")), "{log}");
}

#[test]
fn submit_refuses_what_no_worker_could_run_and_a_worker_needs_its_store() {
    let lab = Lab::new("worker-refusals", EFFECTS);
    let bad_input = lab.flowc(&["submit", "prog.flow", "--input", r#"{"query": 1}"#]);
    bad_input.expect(2);
    assert!(
        bad_input
            .stderr
            .contains("the input does not fit flow `effects`"),
        "{}",
        bad_input.stderr
    );
    lab.dir.write("broken.flow", "flow f( {");
    lab.flowc(&["submit", "broken.flow"]).expect(1);
    let unknown = lab.flowc(&["submit", "prog.flow", "--flow", "nope", "--input", FEW]);
    unknown.expect(2);
    assert!(lab.flowc(&["runs"]).stdout.contains("no runs"));

    let unreachable = lab.flowc(&["worker", "--store", "postgres://postgres@127.0.0.1:1/none"]);
    unreachable.expect(6);
    assert!(
        unreachable.stderr.contains("cannot connect to PostgreSQL"),
        "{}",
        unreachable.stderr
    );
    let bad_poll = lab.flowc(&["worker", "--poll", "soon"]);
    bad_poll.expect(2);
}

/// Per run: a read, a model call and two calls with an effect, 150 ms each,
/// one after the other, so a kill often lands mid-run.
const CHAOS: &str = r#"
tool slow(name: string, score: int) -> { id: string } {
  http POST "{env.TOOLS_URL}/tools/slow"
  effect write
  timeout 5s
  idempotency "slow:{name}"
}

flow chaos(q: string) -> { scored: Scored, posted: [{ id: string }] } {
  budget { tokens 100k, tool_calls 50, steps 100 }
  let found = list_items(q: q)
  let scored = llm fast -> Scored {
    prompt "Score b{q}"
  }
  let posted = for x in found.items parallel 1 {
    slow(name: x, score: 5)
  }
  return { scored: scored, posted: posted }
}
"#;

/// Workers killed with SIGKILL at random moments and restarted while they
/// drive many runs: every run completes with the output of an
/// uninterrupted run, every effect executes once per key, a completed step
/// is not called again beyond what a kill cut short, and no run is left
/// claimed once the dead workers' leases expired.
fn killed_workers_lose_no_run_and_repeat_no_effect(backend: Backend, workers: usize, runs: usize) {
    let lab = Lab::on(backend, "worker-chaos", CHAOS);
    let ids: Vec<String> = (0..runs).map(|_| submit(&lab, &["--input", FEW])).collect();
    let start = |lab: &Lab| {
        lab.command(&["worker", "--poll", "50ms", "--concurrency", "2"])
            .env("FLOWC_LEASE_SECONDS", "3")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("flowc worker starts")
    };
    let mut pool: Vec<Child> = (0..workers).map(|_| start(&lab)).collect();
    let store = lab.open_store();
    let started = Instant::now();
    let mut kills = 0;
    loop {
        let statuses: Vec<String> = ids
            .iter()
            .map(|id| store.run(id).unwrap().expect("stored").status)
            .collect();
        if statuses.iter().all(|s| s == "completed") {
            break;
        }
        assert!(
            statuses.iter().all(|s| s != "failed"),
            "a run failed: {statuses:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not every run completed in 120s ({kills} kills): {statuses:?}"
        );
        // Kill one worker at a random moment, while there is work, and
        // start another in its place.
        if kills < 2 * workers + 4 && statuses.iter().any(|s| s == "running") {
            std::thread::sleep(Duration::from_millis(fastrand::u64(100..400)));
            let i = fastrand::usize(..pool.len());
            pool[i].kill().expect("SIGKILL a worker");
            let _ = pool[i].wait();
            pool[i] = start(&lab);
            kills += 1;
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for w in pool {
        signal(&w, "TERM");
        finished(w).expect(0);
    }
    eprintln!(
        "{runs} runs on {workers} workers completed in {:.1}s with {kills} kills",
        started.elapsed().as_secs_f64()
    );
    assert!(kills >= 3, "only {kills} kills: the test proved little");
    for id in &ids {
        let r = store.run(id).unwrap().expect("stored");
        assert_eq!(
            r.output,
            Some(json!({
                "scored": scored("bfew"),
                "posted": [{"id": "P-a0-5"}, {"id": "P-a1-5"}],
            })),
            "run {id}"
        );
        assert_eq!(r.owner, None, "run {id} is left claimed");
    }
    let executed = lab.executed();
    assert_eq!(executed.len(), 2 * runs, "{executed:?}");
    assert!(
        executed.values().all(|&n| n == 1),
        "an effect executed twice: {executed:?}"
    );
    assert_eq!(lab.ledger.lock().unwrap().unkeyed, 0);
    let replays = lab.ledger.lock().unwrap().replays as usize;
    assert!(
        replays <= 2 * kills,
        "{replays} effects sent again for {kills} kills"
    );
    // A kill cuts short at most the calls in flight of one worker's two
    // slots (one each): only those are made again.
    let again = |hits: usize| hits.saturating_sub(runs);
    for (what, hits) in [
        ("model", lab.server.hits(CHAT)),
        ("read", lab.server.hits("/tools/items")),
    ] {
        assert!(
            again(hits) <= 2 * kills,
            "{what} calls made again: {} for {kills} kills",
            again(hits)
        );
    }
}

#[test]
fn killed_workers_on_postgres_lose_no_run_and_repeat_no_effect() {
    killed_workers_lose_no_run_and_repeat_no_effect(Backend::Postgres, 4, 40);
}

#[test]
fn killed_workers_on_sqlite_lose_no_run_and_repeat_no_effect() {
    killed_workers_lose_no_run_and_repeat_no_effect(Backend::Sqlite, 2, 20);
}

/// Two models with limits of their own: `paced` may start a call every
/// 0.5 s, `single` may have one call in flight; each run asks each model
/// twice at once.
const LIMITED: &str = r#"
model paced = openai("gpt-4o") { temperature: 0, max_tokens: 100, rpm: 120 }
model single = openai("gpt-4.1") { temperature: 0, max_tokens: 100, concurrency: 1 }

flow limited(q: string) -> { paced: [Scored], single: [Scored] } {
  budget { tokens 100k, tool_calls 50, steps 100 }
  let found = list_items(q: q)
  let paced = for x in found.items parallel 2 {
    llm paced -> Scored {
      prompt "Score {x}"
    }
  }
  let single = for x in found.items parallel 2 {
    llm single -> Scored {
      prompt "Score {x}"
    }
  }
  return { paced: paced, single: single }
}
"#;

/// A model's `rpm` and `concurrency` hold across every worker on the store,
/// as the server sees the calls: two workers driving four runs at once.
fn model_limits_hold_across_workers(backend: Backend) {
    let lab = Lab::on(backend, "worker-limits", LIMITED);
    // Replies take 200 ms, so calls in flight at once would overlap.
    lab.server.always(
        CHAT,
        crate::support::mock_server::Reply::from_fn(|r| {
            let body = r.body.to_string();
            let name = if body.contains("Score a0") {
                "a0"
            } else {
                "a1"
            };
            crate::support::mock_server::Reply::delay(
                200,
                crate::support::mock_server::Reply::chat_json(scored(name)),
            )
        }),
    );
    let runs: Vec<String> = (0..4).map(|_| submit(&lab, &["--input", FEW])).collect();
    let a = worker(&lab, &["--poll", "50ms", "--concurrency", "2"]);
    let b = worker(&lab, &["--poll", "50ms", "--concurrency", "2"]);
    for run in &runs {
        wait_for(&lab, run, "completed", Duration::from_secs(60));
    }
    stop(a);
    stop(b);
    let calls = |model: &str| -> Vec<Instant> {
        let mut at: Vec<Instant> = lab
            .requests("POST", CHAT)
            .into_iter()
            .filter(|r| r.body["model"] == model)
            .map(|r| r.received)
            .collect();
        at.sort();
        at
    };
    let gaps = |at: &[Instant]| -> Vec<f64> {
        at.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect()
    };
    let paced = calls("gpt-4o");
    assert_eq!(paced.len(), 8);
    let paced_gaps = gaps(&paced);
    // 0.5 s apart, less the server's and the clock's jitter.
    assert!(
        paced_gaps.iter().all(|&g| g >= 0.45),
        "rpm 120 across the workers: starts {paced_gaps:?} s apart"
    );
    let single = calls("gpt-4.1");
    assert_eq!(single.len(), 8);
    let single_gaps = gaps(&single);
    // Each call starts after the one before it answered (200 ms).
    assert!(
        single_gaps.iter().all(|&g| g >= 0.19),
        "concurrency 1 across the workers: starts {single_gaps:?} s apart"
    );
}

// Each of the tests above, once on each backend.
on_both_backends!(
    submitted_runs_complete_under_a_worker_and_an_approval_needs_no_resume,
    a_gate_timeout_fires_under_a_running_worker_without_resume,
    two_workers_never_drive_one_run_twice,
    a_stopped_worker_leaves_its_run_interrupted_for_another_worker,
    model_limits_hold_across_workers,
);
