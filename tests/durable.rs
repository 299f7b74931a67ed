//! Durable runs end to end: the real `flowc` binary as a child process, its
//! models and tools on a loopback mock server (tests/support/mock_server.rs),
//! each test in a folder of its own with the run store at `.flowc/runs.db`.
//!
//! - a crash test: runs killed with SIGKILL at random moments and resumed,
//!   again and again, must end with the uninterrupted output, execute every
//!   irreversible call exactly once (the server dedupes by `Idempotency-Key`),
//!   never call a model or tool again for a step the store already holds,
//!   record what the replies they used cost plus the reservation of every
//!   call a kill cut short, and leave one trace tree;
//! - approvals across processes: `flowc inbox`, `approve` (with `--edit` and
//!   `--resume`), `reject`, gate timeouts, gates in parallel branches, gates
//!   inside a loop, a branch and a sub-flow;
//! - a resume under a changed program is refused, naming what changed;
//! - `flowc runs`, `show` and `trace` on a resumed run.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use support::mock_server::{MockServer, RecordedRequest, Reply, CHAT};

const KEY: &str = "sk-test-DURABLE-0123456789abcdef";

/// Types, the model and the tools every program below shares.
const PRELUDE: &str = r#"
use std.models.{openai}

type Scored { name: string, score: int }

model fast = openai("gpt-4o-mini") { temperature: 0, max_tokens: 100 }

tool list_items(q: string) -> { items: [string] len ..8 } {
  http GET "{env.TOOLS_URL}/tools/items?q={q}"
  effect read
  timeout 5s
}

tool post(name: string, score: int) -> { id: string } {
  http POST "{env.TOOLS_URL}/tools/post"
  effect irreversible
  timeout 5s
  idempotency "post:{name}"
}
"#;

/// A read, a fan-out of model calls, a gate, and an irreversible call per
/// approved item.
pub(crate) const CRASH_FLOW: &str = r#"
flow crash(q: string) -> { scored: [Scored], posted: [{ id: string }] } {
  budget { tokens 100k, tool_calls 50, steps 100 }
  let found = list_items(q: q)
  let scored = for x in found.items parallel 4 {
    llm fast -> Scored {
      prompt """
        Score {x}
        Rules: the score is ten times the length of the name plus the last
        digit of its final character's code. Answer with JSON only, exactly
        the fields name and score, no prose, no code fences, no comments.
        These rules are long on purpose: every model call's span in the trace
        then carries a prompt of several hundred bytes, so a run's trace
        outgrows the writer's buffer and reaches the file while the run is
        still going, and a kill leaves part of it behind.
      """
    }
  }
  let ok = approve publish { show scored }
  let posted = for s in ok parallel 2 {
    post(name: s.name, score: s.score)
  }
  return { scored: scored, posted: posted }
}
"#;

/// The items `list_items` returns for `q` (`few`: two, otherwise eight).
pub(crate) fn items(q: &str) -> Vec<String> {
    let n = if q == "few" { 2 } else { 8 };
    (0..n).map(|i| format!("a{i}")).collect()
}

/// What the model answers to `Score NAME`.
pub(crate) fn scored(name: &str) -> Value {
    json!({"name": name, "score": name.len() as u64 * 10 + u64::from(name.bytes().last().unwrap_or(0) % 10)})
}

// ---- the server -------------------------------------------------------------

/// What the irreversible endpoints did, per `Idempotency-Key`: the first
/// request with a key executes, later ones replay its response.
#[derive(Default)]
pub(crate) struct Ledger {
    pub(crate) executed: BTreeMap<String, u32>,
    responses: HashMap<String, Value>,
    pub(crate) replays: u32,
    /// Requests without a key (there must be none).
    pub(crate) unkeyed: u32,
}

pub(crate) struct Lab {
    pub(crate) server: MockServer,
    pub(crate) dir: Scratch,
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    /// A PostgreSQL database's URL; `None`: SQLite at `.flowc/runs.db`.
    pub(crate) store_url: Option<String>,
}

/// Which run store a test's processes share.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The user prompt of a chat request.
fn prompt_of(r: &RecordedRequest) -> String {
    r.body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .next()
        .unwrap_or("")
        .to_string()
}

impl Lab {
    /// A server whose model scores `Score NAME` prompts after 20–60 ms, whose
    /// `list_items` answers [`items`], and whose irreversible endpoints dedupe
    /// by idempotency key; and a scratch folder holding `program`.
    pub(crate) fn new(name: &str, program: &str) -> Lab {
        let server = MockServer::start();
        server.always(
            "GET /tools/items",
            Reply::from_fn(|r| {
                let q = r
                    .query
                    .as_deref()
                    .and_then(|q| q.strip_prefix("q="))
                    .unwrap_or("");
                Reply::delay(10, Reply::ok(json!({ "items": items(q) })))
            }),
        );
        server.always(
            CHAT,
            Reply::from_fn(|r| {
                let prompt = prompt_of(r);
                let first = prompt.lines().next().unwrap_or("");
                let name = first.strip_prefix("Score ").unwrap_or(first).trim();
                Reply::delay(20 + fastrand::u64(0..40), Reply::chat_json(scored(name)))
            }),
        );
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        for route in [
            "POST /tools/post",
            "POST /tools/left",
            "POST /tools/right",
            "POST /tools/slow",
        ] {
            // `slow` keeps a run alive long enough for a second process to meet it.
            let latency = if route.ends_with("slow") { 150 } else { 15 };
            let ledger = ledger.clone();
            server.always(
                route,
                Reply::from_fn(move |r| {
                    let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(key) = r.header("idempotency-key").map(str::to_string) else {
                        l.unkeyed += 1;
                        return Reply::json(400, json!({"error": "no Idempotency-Key"}));
                    };
                    if let Some(previous) = l.responses.get(&key).cloned() {
                        l.replays += 1;
                        return Reply::ok(previous);
                    }
                    *l.executed.entry(key.clone()).or_default() += 1;
                    let body = json!({"id": format!("P-{}-{}", r.body["name"].as_str().unwrap_or("?"), r.body["score"])});
                    l.responses.insert(key, body.clone());
                    // The effect happened; a kill during the delay loses only
                    // the response.
                    Reply::delay(latency, Reply::ok(body))
                }),
            );
        }
        let dir = Scratch::new(name);
        dir.write("prog.flow", &format!("{PRELUDE}\n{program}"));
        Lab {
            server,
            dir,
            ledger,
            store_url: None,
        }
    }

    /// [`Lab::new`] with its run store on `backend` (a fresh database on the
    /// tests' private PostgreSQL server).
    pub(crate) fn on(backend: Backend, name: &str, program: &str) -> Lab {
        let mut lab = Lab::new(name, program);
        if let Backend::Postgres = backend {
            lab.store_url = Some(support::postgres::database(name));
        }
        lab
    }

    /// The run store, through flowc's own interface (either backend).
    pub(crate) fn open_store(&self) -> flowc::store::Store {
        let path = match &self.store_url {
            Some(url) => PathBuf::from(url),
            None => self.dir.0.join(".flowc/runs.db"),
        };
        flowc::store::Store::open(&path, flowc::store::Durability::Normal).expect("the store opens")
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flowc"));
        c.current_dir(&self.dir.0)
            .args(args)
            .env("OPENAI_BASE_URL", self.server.openai_base_url())
            .env("OPENAI_API_KEY", KEY)
            .env("TOOLS_URL", self.server.base_url())
            .env_remove("FLOWC_STORE")
            .envs(self.store_url.iter().map(|u| ("FLOWC_STORE", u)))
            .env_remove("FLOWC_IDEMPOTENCY_KEY")
            .stdin(Stdio::null());
        c
    }

    pub(crate) fn flowc(&self, args: &[&str]) -> Out {
        let out = self.command(args).output().expect("flowc starts");
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub(crate) fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flowc starts")
    }

    fn run(&self, input: &str, extra: &[&str]) -> Out {
        let mut args = vec!["run", "prog.flow", "--input", input];
        args.extend_from_slice(extra);
        self.flowc(&args)
    }

    pub(crate) fn store(&self) -> Connection {
        Connection::open_with_flags(
            self.dir.0.join(".flowc/runs.db"),
            OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("the store opens read-only")
    }

    pub(crate) fn executed(&self) -> BTreeMap<String, u32> {
        self.ledger.lock().unwrap().executed.clone()
    }

    pub(crate) fn requests(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }
}

/// What a finished `flowc` process said.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The run id (a UUIDv7) from the summary line (`run 01a2…-… waiting in 0.1s: …`).
    pub(crate) fn run_id(&self) -> String {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("run "))
            .filter_map(|l| l.split_whitespace().next())
            .find(|w| is_run_id(w))
            .unwrap_or_else(|| panic!("no run id in:\n{}", self.stderr))
            .to_string()
    }

    pub(crate) fn expect(&self, code: i32) -> &Out {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit status {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// A folder of its own under the system's temp folder, removed when the test
/// passes (kept, and named, when it fails).
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "flowc-durable-{name}-{}-{nanos}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("create the scratch folder");
        Scratch(dir)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub(crate) fn read_all(r: Option<impl Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

/// Waits for a child for at most `limit`, killing it (and failing) after.
pub(crate) fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for flowc") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flowc did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---- 1. crash and resume ------------------------------------------------------

/// What the store holds of a run: completed step keys, reply keys.
#[derive(Default, Clone)]
struct Snapshot {
    steps: BTreeSet<String>,
    replies: BTreeSet<String>,
}

fn snapshot(lab: &Lab, run: &str) -> Snapshot {
    let keys = |sql: &str| -> BTreeSet<String> {
        keys_and_numbers(lab, sql, run)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    Snapshot {
        steps: keys("SELECT key, CAST(0 AS BIGINT) FROM steps WHERE run_id = $1"),
        replies: keys("SELECT key, CAST(0 AS BIGINT) FROM replies WHERE run_id = $1"),
    }
}

/// Rows of a text and a number that `sql` (its one parameter `$1`, the
/// number cast to BIGINT) selects from the lab's store, on either backend.
fn keys_and_numbers(lab: &Lab, sql: &str, run: &str) -> Vec<(String, i64)> {
    match &lab.store_url {
        Some(url) => postgres::Client::connect(url, postgres::NoTls)
            .expect("connects")
            .query(sql, &[&run])
            .expect("queries the store")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
        None => {
            let conn = lab.store();
            let mut stmt = conn
                .prepare(&sql.replace("$1", "?1"))
                .expect("query the store");
            let rows = stmt
                .query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("query the store");
            rows.map(|r| r.expect("a row")).collect()
        }
    }
}

/// How far a run had got, by what the store holds.
fn phase(s: &Snapshot) -> &'static str {
    let has = |k: &str| s.steps.contains(k);
    if has("crash.posted") {
        "5 posted"
    } else if has("crash.ok") {
        "4 posting"
    } else if has("crash.scored") {
        "3 scored"
    } else if has("crash.found") {
        "2 scoring"
    } else {
        "1 started"
    }
}

/// A completed run's output, from the store.
fn stored_output(lab: &Lab, run: &str) -> Option<Value> {
    let r = lab
        .open_store()
        .run(run)
        .expect("the store answers")
        .expect("the run is in the store");
    (r.status == "completed").then(|| r.output.expect("a completed run has an output"))
}

/// The newest run in a folder's store, if any.
fn newest_run(lab: &Lab) -> Option<String> {
    let out = lab.flowc(&["runs"]);
    out.expect(0);
    // The first line after the header.
    out.stdout
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .filter(|w| is_run_id(w))
        .map(str::to_string)
}

/// A run id: a UUID (8-4-4-4-12 hex digits).
pub(crate) fn is_run_id(w: &str) -> bool {
    w.len() == 36
        && w.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && w.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

/// Which step instance a request belongs to, by its store key prefix.
fn request_step(r: &RecordedRequest) -> Option<String> {
    if r.path == CHAT {
        let prompt = prompt_of(r);
        let name = prompt.lines().next()?.strip_prefix("Score a")?;
        return Some(format!("scored[{}]/", name.trim()));
    }
    if r.path == "/tools/post" {
        // `{run}:posted[3]/crash.…:post:a3`
        let key = r.header("idempotency-key")?;
        let (_, rest) = key.split_once(':')?;
        let (step, _) = rest.rsplit_once(":post:")?;
        return Some(step.to_string());
    }
    if r.path == "/tools/items" {
        return Some("crash.found".into());
    }
    None
}

fn killed_runs_resume_to_the_uninterrupted_output_with_every_effect_once(backend: Backend) {
    let test_started = Instant::now();
    let input = r#"{"q": "all"}"#;
    let gate = ["--approve", "publish"];

    // The uninterrupted run, three times: the same output each time, and
    // the shortest duration is the span the kills are spread over.
    let mut expected = Value::Null;
    let mut full = Duration::MAX;
    for _ in 0..3 {
        let lab = Lab::on(backend, "crash-reference", CRASH_FLOW);
        let started = Instant::now();
        let reference = lab.run(input, &gate);
        full = full.min(started.elapsed());
        reference.expect(0);
        let output = reference.json();
        assert!(
            expected.is_null() || output == expected,
            "{output} vs {expected}"
        );
        expected = output;
        assert_eq!(expected["posted"].as_array().map(Vec::len), Some(8));
        assert_eq!(lab.server.hits(CHAT), 8);
        assert_eq!(lab.executed().len(), 8);
    }

    let mut kills = 0u32;
    let mut iterations = 0u32;
    let mut early_kills = 0u32;
    let mut late_kills = 0u32;
    // Where the kills landed, by what the store held after them.
    let mut phases: BTreeMap<&str, u32> = BTreeMap::new();
    let mut replays = 0u32;
    // (tokens the run recorded, tokens the server served) per run.
    let mut spend: Vec<(u64, u64)> = Vec::new();
    let mut processes = 0u32;
    // Runs a kill landed in (a run may finish before its kill).
    let mut killed_runs = 0u32;
    while killed_runs < 50 && test_started.elapsed() < Duration::from_secs(60) {
        iterations += 1;
        let lab = Lab::on(backend, "crash", CRASH_FLOW);
        // Process boundaries: each process's start, and the store as the
        // processes before it left it.
        let mut boundaries: Vec<(Instant, Snapshot)> = Vec::new();
        let mut run_id: Option<String> = None;
        let mut kills_here = 0u32;
        let output = loop {
            let args: Vec<&str> = match &run_id {
                None => vec!["run", "prog.flow", "--input", input, "--approve", "publish"],
                Some(id) => vec!["resume", id, "--approve", "publish"],
            };
            let snap = match &run_id {
                Some(id) => snapshot(&lab, id),
                None => Snapshot::default(),
            };
            let spawned = Instant::now();
            boundaries.push((spawned, snap));
            let mut child = lab.spawn(&args);
            processes += 1;
            // A fresh run is always killed (at a random moment of the
            // uninterrupted run's span); a resume half of the time, until the
            // run has had 4 kills. A fresh run too is left alone after 4:
            // on a loaded machine a process can take longer than that span
            // to store its run, and a fresh run killed every time never
            // gets there.
            let kill_at = (kills_here < 4 && (run_id.is_none() || fastrand::bool()))
                .then(|| full.mul_f64(fastrand::f64()));
            let status = match kill_at {
                Some(delay) => {
                    while spawned.elapsed() < delay {
                        if child.try_wait().expect("poll flowc").is_some() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    if child.try_wait().expect("poll flowc").is_none() {
                        child.kill().expect("SIGKILL flowc");
                    }
                    child.wait().expect("reap flowc")
                }
                None => wait_bounded(&mut child, Duration::from_secs(30)),
            };
            let stdout = read_all(child.stdout.take());
            let stderr = read_all(child.stderr.take());
            match status.code() {
                Some(0) => break serde_json::from_str::<Value>(&stdout).unwrap_or_else(|e| {
                    panic!("iteration {iterations}: not JSON ({e}): {stdout}\n{stderr}")
                }),
                None => {
                    kills += 1;
                    kills_here += 1;
                    if run_id.is_none() {
                        run_id = newest_run(&lab);
                        if run_id.is_none() {
                            early_kills += 1;
                        }
                    }
                    // Killed after the run was finished, before the process
                    // exited: the store has the output (and a resume would be
                    // refused as already completed).
                    if let Some(output) = run_id.as_deref().and_then(|id| stored_output(&lab, id)) {
                        late_kills += 1;
                        break output;
                    }
                    if let Some(id) = &run_id {
                        *phases.entry(phase(&snapshot(&lab, id))).or_default() += 1;
                    }
                }
                Some(code) => panic!(
                    "iteration {iterations}: flowc {args:?} exited {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
                ),
            }
            assert!(kills_here < 20, "iteration {iterations}: no progress");
        };
        if kills_here > 0 {
            killed_runs += 1;
        }
        let run_id = run_id.unwrap_or_else(|| newest_run(&lab).expect("the run is in the store"));

        // The same output as the run that was never interrupted.
        assert_eq!(
            output, expected,
            "iteration {iterations} ({kills_here} kills): the output differs"
        );

        // Every irreversible call took effect exactly once.
        let executed = lab.executed();
        let expected_keys: BTreeSet<String> = executed.keys().cloned().collect();
        assert_eq!(executed.len(), 8, "iteration {iterations}: {executed:?}");
        for (key, n) in &executed {
            assert_eq!(*n, 1, "iteration {iterations}: {key} executed {n} times");
            assert!(
                key.starts_with(&format!("{run_id}:posted[")),
                "iteration {iterations}: key {key}"
            );
        }
        let names: BTreeSet<String> = expected_keys
            .iter()
            .filter_map(|k| k.rsplit_once(":post:").map(|(_, n)| n.to_string()))
            .collect();
        assert_eq!(names, items("all").into_iter().collect::<BTreeSet<_>>());
        assert_eq!(lab.ledger.lock().unwrap().unkeyed, 0);
        replays += lab.ledger.lock().unwrap().replays;

        // No process asked for what an earlier one had completed: a model
        // reply in the store is never requested again, a completed tool step
        // never called again.
        for r in lab.server.requests() {
            let Some(step) = request_step(&r) else {
                panic!(
                    "iteration {iterations}: unexpected request {} {}",
                    r.method, r.path
                )
            };
            let before = boundaries
                .iter()
                .rev()
                .find(|(at, _)| *at <= r.received)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            let done_step = before
                .steps
                .iter()
                .any(|k| k == &step || (step.ends_with('/') && k.starts_with(&step)));
            let done_reply = r.path == CHAT && before.replies.iter().any(|k| k.starts_with(&step));
            assert!(
                !done_step && !done_reply,
                "iteration {iterations}: {} {} for {step} after it completed in an earlier process",
                r.method,
                r.path
            );
        }
        let model_requests = lab.server.hits(CHAT) as u32;
        assert!(
            model_requests <= 8 + kills_here * 4,
            "iteration {iterations}: {model_requests} model requests, {kills_here} kills"
        );

        // A completed step's reply is not written with its commit; one can
        // be in the store only if it rode in another step's commit before
        // its own step committed: then at most one per step, first attempts.
        let replies = keys_and_numbers(
            &lab,
            "SELECT key, CAST(attempt AS BIGINT) FROM replies WHERE run_id = $1",
            &run_id,
        );
        assert!(replies.len() <= 8, "{replies:?}");
        assert!(replies.iter().all(|(_, a)| *a == 1), "{replies:?}");
        let stored = lab
            .open_store()
            .run(&run_id)
            .expect("the store answers")
            .expect("stored");
        let tokens = stored.spend.tokens;
        assert_eq!(stored.status, "completed");
        // The run's recorded spend counts each of its 8 replies (15 tokens
        // each) once, whichever process received it, and every call a kill
        // cut short at its whole reservation (recorded before the request
        // went out): never less than the server served, never a call twice.
        let served = lab.server.tokens_served();
        spend.push((tokens, served));
        // A kill cuts short at most the 4 calls of the parallel loop, each
        // reserved at well under 2000 tokens.
        assert!(
            tokens >= served.max(120) && tokens <= 120 + u64::from(kills_here) * 4 * 2000,
            "iteration {iterations} ({kills_here} kills): the run recorded {tokens} tokens, \
             the server served {served}"
        );
        if kills_here == 0 {
            assert_eq!(tokens, 120, "iteration {iterations}");
        }

        // The trace still reads as one tree, whatever the kills cut off.
        let trace = lab.flowc(&["trace", &run_id]);
        assert_eq!(
            trace.code,
            Some(0),
            "iteration {iterations} ({kills_here} kills): {}",
            trace.stderr
        );
        let roots = trace.stdout.lines().filter(|l| !l.starts_with(' ')).count();
        assert_eq!(roots, 1, "iteration {iterations}:\n{}", trace.stdout);
    }
    let elapsed = test_started.elapsed();
    eprintln!(
        "crash test: {iterations} runs ({killed_runs} killed), {kills} kills ({early_kills} before the run was stored, {late_kills} after it \
         completed), {processes} processes, uninterrupted run {full:?}, {elapsed:?} in all; \
         kills by phase {phases:?}; {replays} irreversible requests replayed by key"
    );
    let over = spend.iter().filter(|(t, s)| t > s).count();
    eprintln!("{over} runs recorded more than the server served (calls cut short by a kill count their reservation)");
    assert!(
        killed_runs >= 50 || (killed_runs >= 20 && elapsed >= Duration::from_secs(60)),
        "only {killed_runs} runs killed in {elapsed:?}"
    );
}

// ---- 2. approvals across processes -------------------------------------------

pub(crate) const FEW: &str = r#"{"q": "few"}"#;

fn a_paused_run_exits_4_shows_in_the_inbox_and_resumes_after_flowc_approve(backend: Backend) {
    let lab = Lab::on(backend, "approve", CRASH_FLOW);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();
    assert!(
        paused
            .stderr
            .contains("waiting: gate `publish` in flow `crash`"),
        "{}",
        paused.stderr
    );
    assert!(paused.stdout.is_empty(), "{}", paused.stdout);
    assert_eq!(lab.server.hits(CHAT), 2);
    assert!(lab.executed().is_empty());

    let inbox = lab.flowc(&["inbox"]);
    inbox.expect(0);
    assert!(
        inbox.stdout.contains(&format!("run {run}")),
        "{}",
        inbox.stdout
    );
    assert!(inbox.stdout.contains("gate crash.ok"), "{}", inbox.stdout);
    assert!(
        inbox
            .stdout
            .contains(&format!("flowc approve {run} publish")),
        "{}",
        inbox.stdout
    );
    // What the gate shows: the scored items.
    for name in ["a0", "a1"] {
        assert!(
            inbox.stdout.contains(&format!("\"name\": \"{name}\"")),
            "{}",
            inbox.stdout
        );
    }

    let approved = lab.flowc(&["approve", &run, "publish"]);
    approved.expect(0);
    assert!(
        approved.stderr.contains("approved crash.ok"),
        "{}",
        approved.stderr
    );
    assert!(approved.stdout.is_empty());
    // Approving does not run anything by itself.
    assert!(lab.executed().is_empty());
    assert!(lab.flowc(&["inbox"]).stdout.contains("no gate is waiting"));

    let resumed = lab.flowc(&["resume", &run]);
    resumed.expect(0);
    let output = resumed.json();
    assert_eq!(output["scored"], json!([scored("a0"), scored("a1")]));
    assert_eq!(
        output["posted"],
        json!([{"id": "P-a0-28"}, {"id": "P-a1-29"}])
    );
    assert_eq!(resumed.run_id(), run);
    // The models were not asked again; each post took effect once.
    assert_eq!(lab.server.hits(CHAT), 2);
    assert_eq!(lab.server.hits("/tools/items"), 1);
    assert_eq!(lab.executed().values().copied().collect::<Vec<_>>(), [1, 1]);

    // A completed run is not resumed again.
    let again = lab.flowc(&["resume", &run]);
    again.expect(2);
    assert!(
        again.stderr.contains("already completed"),
        "{}",
        again.stderr
    );
    assert_eq!(lab.server.hits("/tools/post"), 2);
}

fn approve_and_reject_with_resume_continue_the_run_at_once(backend: Backend) {
    let lab = Lab::on(backend, "approve-resume", CRASH_FLOW);
    let first = lab.run(FEW, &[]);
    first.expect(4);
    let run = first.run_id();
    let out = lab.flowc(&["approve", &run, "publish", "--resume"]);
    out.expect(0);
    assert_eq!(out.json()["posted"].as_array().map(Vec::len), Some(2));
    assert_eq!(lab.executed().len(), 2);

    // Rejected with --resume: the run ends rejected, nothing is posted.
    let second = lab.run(FEW, &[]);
    second.expect(4);
    let run2 = second.run_id();
    assert_ne!(run, run2);
    let out = lab.flowc(&["reject", &run2, "publish", "--reason", "no", "--resume"]);
    out.expect(1);
    assert!(out.stderr.contains("rejected"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert_eq!(lab.executed().len(), 2, "{:?}", lab.executed());
    assert!(lab
        .executed()
        .keys()
        .all(|k| k.starts_with(&format!("{run}:"))));
}

fn a_rejected_gate_ends_the_run_rejected_without_the_irreversible_call(backend: Backend) {
    let lab = Lab::on(backend, "reject", CRASH_FLOW);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();

    let rejected = lab.flowc(&["reject", &run, "publish", "--reason", "no"]);
    rejected.expect(0);
    assert!(
        rejected.stderr.contains("rejected crash.ok"),
        "{}",
        rejected.stderr
    );

    let resumed = lab.flowc(&["resume", &run]);
    resumed.expect(1);
    assert!(
        resumed.stderr.contains("rejected: a gate was rejected"),
        "{}",
        resumed.stderr
    );
    assert_eq!(lab.server.hits("/tools/post"), 0);
    assert_eq!(lab.server.hits(CHAT), 2);

    let show = lab.flowc(&["show", &run]);
    show.expect(0);
    assert!(
        show.stdout.contains(&format!("run {run}: rejected")),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains("gate crash.ok: rejected (no)"),
        "{}",
        show.stdout
    );
    // A decided gate cannot be decided again.
    let late = lab.flowc(&["approve", &run, "publish"]);
    late.expect(2);
    assert!(late.stderr.contains("waits at no gate"), "{}", late.stderr);
}

/// A write tool: a gate that approves itself on timeout is not human review,
/// so it may only guard writes.
const TIMEOUT_FLOWS: &str = r#"
tool note(name: string, score: int) -> { id: string } {
  http POST "{env.TOOLS_URL}/tools/post"
  effect write
  timeout 5s
  idempotency "note:{name}"
}

flow strict(q: string) -> [{ id: string }] {
  budget { tokens 100k, tool_calls 50, steps 100 }
  let found = list_items(q: q)
  let ok = approve publish { show found.items, timeout 1s, on_timeout reject }
  let posted = for s in ok {
    post(name: s, score: 1)
  }
  return posted
}

flow lenient(q: string) -> [{ id: string }] {
  budget { tokens 100k, tool_calls 50, steps 100 }
  let found = list_items(q: q)
  let ok = approve publish { show found.items, timeout 1s, on_timeout approve }
  let noted = for s in ok {
    note(name: s, score: 2)
  }
  return noted
}
"#;

fn a_gate_timeout_applies_its_outcome_on_resume(backend: Backend) {
    let lab = Lab::on(backend, "timeout", TIMEOUT_FLOWS);
    let strict = lab.run(FEW, &["--flow", "strict"]);
    strict.expect(4);
    let lenient = lab.run(FEW, &["--flow", "lenient"]);
    lenient.expect(4);
    let (strict, lenient) = (strict.run_id(), lenient.run_id());
    let inbox = lab.flowc(&["inbox"]);
    assert!(
        inbox.stdout.contains("reject on timeout in"),
        "{}",
        inbox.stdout
    );
    assert!(
        inbox.stdout.contains("approve on timeout in"),
        "{}",
        inbox.stdout
    );

    std::thread::sleep(Duration::from_millis(1500));
    let inbox = lab.flowc(&["inbox"]);
    assert!(
        inbox.stdout.contains("timed out: reject on resume"),
        "{}",
        inbox.stdout
    );

    let out = lab.flowc(&["resume", &strict]);
    out.expect(1);
    assert!(out.stderr.contains("rejected"), "{}", out.stderr);
    assert_eq!(lab.server.hits("/tools/post"), 0);
    let show = lab.flowc(&["show", &strict]);
    assert!(
        show.stdout.contains("gate strict.ok: rejected (timed out)"),
        "{}",
        show.stdout
    );

    let out = lab.flowc(&["resume", &lenient]);
    out.expect(0);
    assert_eq!(out.json(), json!([{"id": "P-a0-2"}, {"id": "P-a1-2"}]));
    assert_eq!(lab.executed().len(), 2);
    assert!(lab
        .executed()
        .keys()
        .all(|k| k.starts_with(&format!("{lenient}:"))));
}

fn an_edited_value_must_fit_the_gates_type_and_is_what_the_next_step_receives(backend: Backend) {
    let lab = Lab::on(backend, "edit", CRASH_FLOW);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();

    // Missing `score`: refused, and the gate still waits.
    let bad = lab.dir.write("bad.json", r#"[{"name": "edited"}]"#);
    let out = lab.flowc(&["approve", &run, "publish", "--edit", bad.to_str().unwrap()]);
    out.expect(1);
    assert!(out.stderr.contains("does not type-check"), "{}", out.stderr);
    assert!(out.stderr.contains("score"), "{}", out.stderr);
    // Not JSON at all: refused too.
    let junk = lab.dir.write("junk.json", "[{name: edited}]");
    let out = lab.flowc(&["approve", &run, "publish", "--edit", junk.to_str().unwrap()]);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("is not JSON"), "{}", out.stderr);
    let show = lab.flowc(&["show", &run]);
    assert!(
        show.stdout.contains("gate crash.ok: pending"),
        "{}",
        show.stdout
    );
    assert!(lab.flowc(&["inbox"]).stdout.contains("gate crash.ok"));
    // Resuming now still waits, and calls nothing.
    lab.flowc(&["resume", &run]).expect(4);
    assert_eq!(lab.server.hits("/tools/post"), 0);
    assert_eq!(lab.server.hits(CHAT), 2);

    let good = lab
        .dir
        .write("good.json", r#"[{"name": "edited", "score": 99}]"#);
    lab.flowc(&["approve", &run, "publish", "--edit", good.to_str().unwrap()])
        .expect(0);
    let out = lab.flowc(&["resume", &run]);
    out.expect(0);
    let posts = lab.requests("POST", "/tools/post");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].body, json!({"name": "edited", "score": 99}));
    let key = posts[0].header("idempotency-key").unwrap_or("");
    assert!(
        key.starts_with(&format!("{run}:posted[0]/")) && key.ends_with(":post:edited"),
        "{key}"
    );
    let output = out.json();
    assert_eq!(output["posted"], json!([{"id": "P-edited-99"}]));
    assert_eq!(output["scored"], json!([scored("a0"), scored("a1")]));
}

/// The gate events of a run's trace file.
fn gate_events(lab: &Lab, run: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(lab.dir.0.join(format!(".flowc/runs/{run}/trace.jsonl")))
        .expect("the trace file");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "gate")
        .collect()
}

fn the_trace_of_a_gate_shows_what_it_released_the_original_and_who_decided_when(backend: Backend) {
    let lab = Lab::on(backend, "gate-trace", CRASH_FLOW);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();
    let good = lab
        .dir
        .write("good.json", r#"[{"name": "edited", "score": 99}]"#);
    let before = flowc::store::now();
    let approved = lab.flowc(&[
        "approve",
        &run,
        "publish",
        "--edit",
        good.to_str().unwrap(),
        "--by",
        "alice",
    ]);
    approved.expect(0);
    assert!(approved.stderr.contains("by alice"), "{}", approved.stderr);
    let after = flowc::store::now();
    lab.flowc(&["resume", &run]).expect(0);
    // The store says who decided and when.
    let gates = lab.open_store().gates(Some(&run)).expect("gates");
    assert_eq!(gates.len(), 1);
    assert_eq!(gates[0].decided_by.as_deref(), Some("alice"));
    let at = gates[0].decided_at.expect("decided_at");
    assert!(
        (before..=after).contains(&at),
        "{before} <= {at} <= {after}"
    );
    // So does the trace: the released (edited) value, the original.
    let events = gate_events(&lab, &run);
    let approved = events
        .iter()
        .find(|e| e["decision"] == "approved")
        .unwrap_or_else(|| panic!("no approved gate event: {events:?}"));
    assert_eq!(approved["value"], json!([{"name": "edited", "score": 99}]));
    assert_eq!(approved["original"], json!([scored("a0"), scored("a1")]));
    assert_eq!(approved["edited"], true);
    assert_eq!(approved["decided_by"], "alice");
    assert_eq!(approved["decided_at"].as_f64(), Some(at));

    // Decided on the command line: by the OS user unless `--by` says.
    let lab = Lab::on(backend, "gate-trace-cli", CRASH_FLOW);
    let out = lab
        .command(&["run", "prog.flow", "--input", FEW, "--approve", "publish"])
        .env("USER", "bob")
        .output()
        .expect("flowc runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = newest_run(&lab).expect("the run is stored");
    let gates = lab.open_store().gates(Some(&run)).expect("gates");
    assert_eq!(gates.len(), 1, "a command-line decision is recorded");
    assert_eq!(gates[0].status, "approved");
    assert_eq!(gates[0].decided_by.as_deref(), Some("bob"));
    let events = gate_events(&lab, &run);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["decided_by"], "bob");
    assert_eq!(events[0]["edited"], false);
    assert_eq!(events[0]["value"], events[0]["original"]);
}

const TWO_GATES: &str = r#"
tool post_left(name: string) -> { id: string } {
  http POST "{env.TOOLS_URL}/tools/left"
  effect irreversible
  timeout 5s
  idempotency "left:{name}"
}

tool post_right(name: string) -> { id: string } {
  http POST "{env.TOOLS_URL}/tools/right"
  effect irreversible
  timeout 5s
  idempotency "right:{name}"
}

flow two(q: string) -> { left: { id: string }, right: { id: string } } {
  budget { tokens 100k, tool_calls 50, steps 100 }
  let a = llm fast -> Scored { prompt "Score left-{q}" }
  let b = llm fast -> Scored { prompt "Score right-{q}" }
  let la = approve left { show a }
  let rb = approve right { show b }
  let pl = post_left(name: la.name)
  let pr = post_right(name: rb.name)
  return { left: pl, right: pr }
}
"#;

fn two_gates_in_parallel_branches_resolve_in_either_order(backend: Backend) {
    let lab = Lab::on(backend, "two-gates", TWO_GATES);
    for (first, second, q) in [("left", "right", "x"), ("right", "left", "y")] {
        let chat_before = lab.server.hits(CHAT);
        let input = format!(r#"{{"q": "{q}"}}"#);
        let paused = lab.run(&input, &[]);
        paused.expect(4);
        let run = paused.run_id();
        for gate in ["left", "right"] {
            assert!(
                paused.stderr.contains(&format!("waiting: gate `{gate}`")),
                "{}",
                paused.stderr
            );
        }
        assert_eq!(lab.server.hits(CHAT) - chat_before, 2);
        let hits = |side: &str| {
            lab.requests("POST", &format!("/tools/{side}"))
                .iter()
                .filter(|r| {
                    r.header("idempotency-key")
                        .is_some_and(|k| k.starts_with(&format!("{run}:")))
                })
                .count()
        };

        lab.flowc(&["approve", &run, first]).expect(0);
        let half = lab.flowc(&["resume", &run]);
        half.expect(4);
        assert!(
            half.stderr.contains(&format!("waiting: gate `{second}`")),
            "{}",
            half.stderr
        );
        assert!(
            !half.stderr.contains(&format!("waiting: gate `{first}`")),
            "{}",
            half.stderr
        );
        // Only the approved branch ran on.
        assert_eq!((hits(first), hits(second)), (1, 0));
        let inbox = lab.flowc(&["inbox"]);
        assert!(
            inbox.stdout.contains(&format!("gate two.{}", &second[..1]))
                || inbox.stdout.contains(second)
        );
        assert!(
            !inbox
                .stdout
                .contains(&format!("flowc approve {run} {first}")),
            "{}",
            inbox.stdout
        );
        assert!(
            inbox
                .stdout
                .contains(&format!("flowc approve {run} {second}")),
            "{}",
            inbox.stdout
        );

        lab.flowc(&["approve", &run, second]).expect(0);
        let done = lab.flowc(&["resume", &run]);
        done.expect(0);
        // The first branch's call is not made again.
        assert_eq!((hits(first), hits(second)), (1, 1));
        assert_eq!(lab.server.hits(CHAT) - chat_before, 2);
        let output = done.json();
        assert_eq!(output["left"], json!({"id": format!("P-left-{q}-null")}));
        assert_eq!(output["right"], json!({"id": format!("P-right-{q}-null")}));
    }
    assert!(lab.executed().values().all(|n| *n == 1));
    assert_eq!(lab.executed().len(), 4);
}

const GATE_IN_LOOP: &str = r#"
flow each(q: string) -> { posted: [{ id: string }], total: Scored } {
  budget { tokens 100k, tool_calls 50, steps 100 }
  let found = list_items(q: q)
  let posted = for x in found.items {
    let ok = approve each_item { show x }
    post(name: ok, score: 1)
  }
  let total = llm fast -> Scored { prompt "Score total {posted}" }
  return { posted: posted, total: total }
}
"#;

fn gates_inside_a_loop_wait_and_the_loop_completes_after_they_are_approved(backend: Backend) {
    let lab = Lab::on(backend, "loop-gates", GATE_IN_LOOP);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();
    // Nothing that depends on the loop runs while an iteration waits.
    assert_eq!(lab.server.hits(CHAT), 0, "{}", paused.stderr);
    let inbox = lab.flowc(&["inbox"]);
    let keys: Vec<String> = ["posted[0]/each.ok", "posted[1]/each.ok"]
        .map(String::from)
        .to_vec();
    for key in &keys {
        assert!(
            inbox.stdout.contains(&format!("gate {key}")),
            "{}",
            inbox.stdout
        );
    }
    // The name is ambiguous; the keys are not.
    let ambiguous = lab.flowc(&["approve", &run, "each_item"]);
    ambiguous.expect(2);
    assert!(
        ambiguous.stderr.contains("waits at 2 places"),
        "{}",
        ambiguous.stderr
    );

    lab.flowc(&["approve", &run, &keys[0]]).expect(0);
    let half = lab.flowc(&["resume", &run]);
    half.expect(4);
    assert_eq!(lab.server.hits(CHAT), 0, "{}", half.stderr);
    assert_eq!(lab.executed().len(), 1);

    lab.flowc(&["approve", &run, &keys[1]]).expect(0);
    let done = lab.flowc(&["resume", &run]);
    done.expect(0);
    let output = done.json();
    assert_eq!(
        output["posted"],
        json!([{"id": "P-a0-1"}, {"id": "P-a1-1"}])
    );
    assert_eq!(lab.executed().values().copied().collect::<Vec<_>>(), [1, 1]);
    let chats = lab.requests("POST", CHAT);
    assert_eq!(chats.len(), 1);
    assert!(
        prompt_of(&chats[0]).contains("P-a1-1"),
        "{}",
        prompt_of(&chats[0])
    );
}

const GATE_IN_SUBFLOW: &str = r#"
flow inner(x: string) -> { id: string } {
  budget { tokens 10k, tool_calls 10, steps 20 }
  let ok = approve inner_gate { show x }
  let p = post(name: ok, score: 2)
  return p
}

flow outer(q: string) -> { id: string } {
  budget { tokens 100k, tool_calls 50, steps 100 }
  let r = inner(x: q)
  return r
}
"#;

fn a_gate_inside_a_sub_flow_waits_and_the_call_completes_after_approval(backend: Backend) {
    let lab = Lab::on(backend, "subflow-gate", GATE_IN_SUBFLOW);
    let paused = lab.run(FEW, &["--flow", "outer"]);
    paused.expect(4);
    let run = paused.run_id();
    lab.flowc(&["approve", &run, "inner_gate"]).expect(0);
    let done = lab.flowc(&["resume", &run]);
    done.expect(0);
    assert_eq!(done.json(), json!({"id": "P-few-2"}));
    assert_eq!(lab.executed().len(), 1);
}

const GATE_IN_BRANCH: &str = r#"
flow branchy(q: string) -> { posted: { id: string }, total: Scored } {
  budget { tokens 100k, tool_calls 50, steps 100 }
  let found = list_items(q: q)
  let posted = if found.items.len > 1 {
    let ok = approve big_batch { show found.items }
    post(name: q, score: ok.len)
  } else {
    { id: "none" }
  }
  let total = llm fast -> Scored { prompt "Score total {posted.id}" }
  return { posted: posted, total: total }
}
"#;

fn a_gate_inside_a_branch_waits_and_the_branch_completes_after_approval(backend: Backend) {
    let lab = Lab::on(backend, "branch-gate", GATE_IN_BRANCH);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();
    assert_eq!(lab.server.hits(CHAT), 0, "{}", paused.stderr);
    // Still waiting after a resume with no decision.
    lab.flowc(&["resume", &run]).expect(4);
    assert_eq!(lab.server.hits(CHAT), 0);
    lab.flowc(&["approve", &run, "big_batch"]).expect(0);
    let done = lab.flowc(&["resume", &run]);
    done.expect(0);
    assert_eq!(done.json()["posted"], json!({"id": "P-few-2"}));
    assert_eq!(lab.executed().len(), 1);
    let chats = lab.requests("POST", CHAT);
    assert_eq!(chats.len(), 1);
    assert_eq!(prompt_of(&chats[0]), "Score total P-few-2");
}

// ---- 3. a changed program -----------------------------------------------------

fn a_resume_under_a_changed_program_is_refused_naming_the_change(backend: Backend) {
    let lab = Lab::on(backend, "changed", CRASH_FLOW);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();
    lab.flowc(&["approve", &run, "publish"]).expect(0);

    let original = std::fs::read_to_string(lab.dir.0.join("prog.flow")).unwrap();
    let changed = original.replace("Score {x}", "Rate {x}");
    assert_ne!(changed, original);
    lab.dir.write("prog.flow", &changed);
    let refused = lab.flowc(&["resume", &run]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains("cannot resume") && refused.stderr.contains("flow crash changed"),
        "{}",
        refused.stderr
    );
    // Only the changed declaration is named.
    assert!(!refused.stderr.contains("list_items"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("tool post"), "{}", refused.stderr);
    assert_eq!(lab.server.hits("/tools/post"), 0);
    let runs = lab.flowc(&["runs"]);
    assert!(runs.stdout.contains("waiting"), "{}", runs.stdout);

    // The original program resumes.
    lab.dir.write("prog.flow", &original);
    let done = lab.flowc(&["resume", &run]);
    done.expect(0);
    assert_eq!(lab.executed().len(), 2);
    assert_eq!(lab.server.hits(CHAT), 2);
}

/// Programs kept in the run store (`sealed_programs`), on either backend.
fn kept_programs(lab: &Lab) -> Vec<Vec<u8>> {
    let sql = "SELECT program FROM sealed_programs ORDER BY key";
    match &lab.store_url {
        Some(url) => postgres::Client::connect(url, postgres::NoTls)
            .expect("connects")
            .query(sql, &[])
            .expect("reads")
            .iter()
            .map(|r| r.get(0))
            .collect(),
        None => {
            let store = lab.store();
            let mut statement = store.prepare(sql).expect("prepares");
            let rows = statement
                .query_map([], |r| r.get(0))
                .expect("reads")
                .collect::<Result<_, _>>()
                .expect("reads");
            rows
        }
    }
}

/// Flips the last byte of every kept program (its encoded program's end).
fn damage_kept_programs(lab: &Lab) {
    let damage = |mut bytes: Vec<u8>| {
        let last = bytes.len() - 1;
        bytes[last] ^= 0x5a;
        bytes
    };
    match &lab.store_url {
        Some(url) => {
            let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connects");
            for row in c
                .query("SELECT key, program FROM sealed_programs", &[])
                .expect("reads")
            {
                let (key, program): (String, Vec<u8>) = (row.get(0), row.get(1));
                c.execute(
                    "UPDATE sealed_programs SET program = $2 WHERE key = $1",
                    &[&key, &damage(program)],
                )
                .expect("updates");
            }
        }
        None => {
            let c = Connection::open(lab.dir.0.join(".flowc/runs.db")).expect("opens");
            let rows: Vec<(String, Vec<u8>)> = c
                .prepare("SELECT key, program FROM sealed_programs")
                .expect("prepares")
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("reads")
                .collect::<Result<_, _>>()
                .expect("reads");
            for (key, program) in rows {
                c.execute(
                    "UPDATE sealed_programs SET program = ?2 WHERE key = ?1",
                    rusqlite::params![key, damage(program)],
                )
                .expect("updates");
            }
        }
    }
}

/// A run keeps the program it compiled in the store, and a resume whose
/// files are all unchanged runs it without compiling. Any other resume
/// compiles, as before: a file whose text changed (here by a comment: the
/// same program, so it resumes, and its program is kept too), or a kept
/// program that is damaged. Each resume does what it would have done.
fn a_resume_runs_the_kept_program_while_its_files_are_unchanged(backend: Backend) {
    let lab = Lab::on(backend, "kept-program", CRASH_FLOW);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();
    assert_eq!(kept_programs(&lab).len(), 1, "the run kept its program");

    let kept = lab.flowc(&["--verbose", "resume", &run]);
    kept.expect(4);
    assert!(
        kept.stderr
            .contains("program: kept in the run store, not compiled again"),
        "{}",
        kept.stderr
    );
    assert!(
        kept.stderr.contains("waiting: gate `publish`"),
        "{}",
        kept.stderr
    );

    let original = std::fs::read_to_string(lab.dir.0.join("prog.flow")).unwrap();
    lab.dir
        .write("prog.flow", &format!("// reviewed\n{original}"));
    let compiled = lab.flowc(&["--verbose", "resume", &run]);
    compiled.expect(4);
    assert!(
        compiled
            .stderr
            .contains("program: compiled (none was kept)"),
        "{}",
        compiled.stderr
    );
    assert_eq!(
        kept_programs(&lab).len(),
        2,
        "the commented program is kept too"
    );
    let again = lab.flowc(&["--verbose", "resume", &run]);
    again.expect(4);
    assert!(again.stderr.contains("program: kept"), "{}", again.stderr);

    damage_kept_programs(&lab);
    lab.flowc(&["approve", &run, "publish"]).expect(0);
    let done = lab.flowc(&["--verbose", "resume", &run]);
    done.expect(0);
    assert!(
        done.stderr
            .contains("program: compiled (it is damaged (its checksum differs))"),
        "{}",
        done.stderr
    );
    assert_eq!(done.json()["posted"].as_array().map(Vec::len), Some(2));
    assert_eq!(lab.executed().len(), 2);
    assert_eq!(lab.server.hits(CHAT), 2, "no step ran twice");
}

/// A kept program is used only with every file it was compiled from
/// unchanged: an imported file that changed meaning is compiled, and the
/// resume refused as before; a deleted file cannot be resumed (a run
/// reads its files; a submitted run keeps its own).
#[test]
fn a_changed_import_or_a_deleted_file_is_compiled_not_taken_from_the_store() {
    let lab = Lab::new("kept-import", "");
    lab.dir.write(
        "shared.flow",
        "flow double(n: int) -> { n: int } {\n  budget { steps 10, wall 1m }\n  return { n: n }\n}\n",
    );
    lab.dir.write(
        "prog.flow",
        r#"
use "./shared.flow".{double}

flow main(n: int) -> { n: int } {
  budget { steps 10, wall 1m }
  let d = double(n: n)
  let ok = approve go { show d }
  return ok
}
"#,
    );
    let paused = lab.flowc(&["run", "prog.flow", "--input", r#"{"n": 2}"#]);
    paused.expect(4);
    let run = paused.run_id();
    lab.flowc(&["--verbose", "resume", &run]).expect(4);

    lab.dir.write(
        "shared.flow",
        "flow double(n: int) -> { n: int } {\n  budget { steps 10, wall 1m }\n  return { n: 2 }\n}\n",
    );
    let refused = lab.flowc(&["--verbose", "resume", &run]);
    assert!(
        refused.stderr.contains("shared.flow changed)")
            && refused.stderr.contains("flow double changed"),
        "{}",
        refused.stderr
    );
    assert_ne!(refused.code, Some(0));

    std::fs::remove_file(lab.dir.0.join("prog.flow")).unwrap();
    let gone = lab.flowc(&["resume", &run]);
    assert_eq!(gone.code, Some(2), "{gone:?}");
    assert!(gone.stderr.contains("cannot read"), "{}", gone.stderr);
}

/// One model step whose replies are never valid.
const INVALID_FLOW: &str = r#"
flow judged(q: string) -> Scored {
  budget { tokens 100k, tool_calls 50, steps 100 }
  let s = llm fast -> Scored {
    prompt "Score {q}"
    retry 1 on invalid
  }
  return s
}
"#;

/// Replies of a step that failed go into the run's last write (they have
/// no step commit to ride with): a resume reads them back instead of
/// paying for them again.
#[test]
fn a_failed_steps_replies_are_kept_and_a_resume_does_not_ask_again() {
    let lab = Lab::new("invalid-replies", INVALID_FLOW);
    lab.server.always(CHAT, Reply::chat_text("not JSON at all"));
    let first = lab.run(r#"{"q": "a0"}"#, &[]);
    first.expect(1);
    let run = first.run_id();
    assert_eq!(lab.server.hits(CHAT), 2, "two attempts");
    let kept: i64 = lab
        .store()
        .query_row(
            "SELECT count(*) FROM replies WHERE run_id = ?1",
            [&run],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 2, "both attempts' replies are in the store");
    lab.flowc(&["resume", &run]).expect(1);
    assert_eq!(lab.server.hits(CHAT), 2, "the resume read them back");
}

/// A read, a fan-out of model calls, then a write per item to a service
/// that may be down.
const REDRIVE_FLOW: &str = r#"
tool save(name: string) -> { id: string } {
  http POST "{env.TOOLS_URL}/tools/save"
  effect write
  timeout 5s
  idempotency "save:{name}"
}

flow redrive(q: string) -> { scored: [Scored], saved: [{ id: string }] } {
  budget { tokens 100k, tool_calls 50, steps 100 }
  let found = list_items(q: q)
  let scored = for x in found.items parallel 4 {
    llm fast -> Scored { prompt "Score {x}" }
  }
  let saved = for s in scored {
    save(name: s.name)
  }
  return { scored: scored, saved: saved }
}
"#;

#[test]
fn a_failed_run_is_redriven_after_its_cause_is_fixed_without_rerunning_completed_steps() {
    let lab = Lab::new("redrive", REDRIVE_FLOW);
    // The save service fails for `a5` until it is fixed.
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let up = fixed.clone();
    lab.server.always(
        "POST /tools/save",
        Reply::from_fn(move |r| {
            let name = r.body["name"].as_str().unwrap_or("?").to_string();
            if name == "a5" && !up.load(std::sync::atomic::Ordering::SeqCst) {
                return Reply::error(503, "save is down");
            }
            Reply::ok(json!({ "id": format!("S-{name}") }))
        }),
    );
    let first = lab.run(r#"{"q": "many"}"#, &[]);
    first.expect(1);
    assert!(first.stderr.contains("save is down"), "{}", first.stderr);
    let run = first.run_id();
    let saves = |name: &str| {
        lab.requests("POST", "/tools/save")
            .iter()
            .filter(|r| r.body["name"] == name)
            .count()
    };
    assert_eq!(lab.server.hits(CHAT), 8);
    assert_eq!((saves("a4"), saves("a5"), saves("a6")), (1, 1, 0));

    // Resuming before the fix fails the same way and keeps what completed.
    lab.flowc(&["resume", &run]).expect(1);
    assert_eq!((saves("a4"), saves("a5"), saves("a6")), (1, 2, 0));

    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let done = lab.flowc(&["resume", &run]);
    done.expect(0);
    let out = done.json();
    let names: Vec<String> = items("many");
    assert_eq!(
        out["saved"],
        json!(names
            .iter()
            .map(|n| json!({"id": format!("S-{n}")}))
            .collect::<Vec<_>>())
    );
    assert_eq!(
        out["scored"],
        json!(names.iter().map(|n| scored(n)).collect::<Vec<_>>())
    );
    // Completed steps were kept: one read, eight model calls, one save each
    // for the items saved before the failure; `a5` retried; the rest once.
    assert_eq!(lab.server.hits("/tools/items"), 1);
    assert_eq!(lab.server.hits(CHAT), 8);
    for n in &names {
        let expected = if n == "a5" { 3 } else { 1 };
        assert_eq!(saves(n), expected, "saves of {n}");
    }
    // The same idempotency key each time `a5` was tried.
    let keys: BTreeSet<String> = lab
        .requests("POST", "/tools/save")
        .iter()
        .filter(|r| r.body["name"] == "a5")
        .filter_map(|r| r.header("idempotency-key").map(str::to_string))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let runs = lab.flowc(&["runs"]);
    assert!(runs.stdout.contains("completed"), "{}", runs.stdout);
}

#[test]
fn a_comment_or_a_reformat_does_not_block_a_resume_but_a_changed_timeout_does() {
    let lab = Lab::new("reformat", CRASH_FLOW);
    let original = std::fs::read_to_string(lab.dir.0.join("prog.flow")).unwrap();

    // Comments, a re-indented file and other spellings of the same numbers:
    // the run resumes and finishes.
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();
    lab.flowc(&["approve", &run, "publish"]).expect(0);
    let reformatted = original
        .replace(
            "  let ok = approve",
            "  // the reviewer sees every score\n  let ok = approve",
        )
        .replace(
            "effect irreversible\n",
            "effect irreversible // posts for real\n",
        )
        .replace("\n  ", "\n      ")
        .replace("tokens 100k", "tokens 100000")
        .replace("timeout 5s", "timeout 5000ms");
    assert_ne!(reformatted, original);
    lab.dir.write("prog.flow", &reformatted);
    let done = lab.flowc(&["resume", &run]);
    done.expect(0);
    assert_eq!(lab.server.hits("/tools/post"), 2);

    // `flowc fmt` between run and resume does not block it either.
    lab.dir.write("prog.flow", &original);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();
    lab.flowc(&["approve", &run, "publish"]).expect(0);
    lab.dir.write("prog.flow", &reformatted);
    lab.flowc(&["fmt", "prog.flow"]).expect(0);
    lab.flowc(&["resume", &run]).expect(0);

    // A tool's timeout is part of what the run does: the resume is refused,
    // naming that tool and nothing else.
    lab.dir.write("prog.flow", &original);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();
    lab.flowc(&["approve", &run, "publish"]).expect(0);
    let slower = original.replace(
        "effect irreversible\n  timeout 5s",
        "effect irreversible\n  timeout 6s",
    );
    assert_ne!(slower, original);
    lab.dir.write("prog.flow", &slower);
    let refused = lab.flowc(&["resume", &run]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains("cannot resume") && refused.stderr.contains("tool post changed"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("list_items"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("flow crash"), "{}", refused.stderr);
}

// ---- 4. inspection --------------------------------------------------------------

fn runs_show_and_trace_follow_a_run_across_processes(backend: Backend) {
    let lab = Lab::on(backend, "inspect", CRASH_FLOW);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();

    let runs = lab.flowc(&["runs"]);
    runs.expect(0);
    let line = runs
        .stdout
        .lines()
        .find(|l| l.starts_with(&run))
        .unwrap_or_else(|| panic!("{run} not in\n{}", runs.stdout));
    assert!(line.contains("waiting") && line.contains("crash"), "{line}");

    let show = lab.flowc(&["show", &run]);
    show.expect(0);
    assert!(
        show.stdout
            .contains(&format!("run {run}: waiting (flow `crash`")),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout
            .contains("crash.found = {\"items\":[\"a0\",\"a1\"]}"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("scored[0]/crash."), "{}", show.stdout);
    assert!(show.stdout.contains("scored[1]/crash."), "{}", show.stdout);
    assert!(
        show.stdout.contains("gate crash.ok: pending"),
        "{}",
        show.stdout
    );
    assert!(!show.stdout.contains("posted["), "{}", show.stdout);
    assert!(!show.stdout.contains("output:"), "{}", show.stdout);

    lab.flowc(&["approve", &run, "publish"]).expect(0);
    lab.flowc(&["resume", &run]).expect(0);

    let runs = lab.flowc(&["runs"]);
    let line = runs.stdout.lines().find(|l| l.starts_with(&run)).unwrap();
    assert!(line.contains("completed"), "{line}");
    let show = lab.flowc(&["show", &run]);
    assert!(
        show.stdout.contains(&format!("run {run}: completed")),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("posted[0]/crash."), "{}", show.stdout);
    assert!(show.stdout.contains("posted[1]/crash."), "{}", show.stdout);
    assert!(
        show.stdout.contains("gate crash.ok: approved"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("output: {"), "{}", show.stdout);

    let trace = lab.flowc(&["trace", &run]);
    trace.expect(0);
    let tree = &trace.stdout;
    // The first process's calls and the second's.
    assert_eq!(tree.matches("tool_call list_items").count(), 1, "{tree}");
    assert_eq!(tree.matches("model_call fast").count(), 2, "{tree}");
    assert_eq!(tree.matches("tool_call post").count(), 2, "{tree}");
    assert!(tree.contains("[waiting]"), "{tree}");
    assert!(tree.contains("[completed]"), "{tree}");
    // One tree: the first process's run at the root, the second's under it.
    let roots: Vec<&str> = tree.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(roots.len(), 1, "{tree}");
    assert!(
        roots[0].starts_with("run crash") && roots[0].contains("[waiting]"),
        "{tree}"
    );
    assert!(
        tree.lines()
            .any(|l| l.starts_with("  run crash") && l.contains("[completed]")),
        "{tree}"
    );
}

/// The `run` spans of a trace file: (id, parent, status).
fn run_spans(text: &str) -> Vec<(u64, Option<u64>, String)> {
    // A kill may cut the last line it wrote short.
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "run")
        .map(|e| {
            (
                e["id"].as_u64().expect("a span id"),
                e["parent"].as_u64(),
                e["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn trace_file(lab: &Lab, run: &str) -> PathBuf {
    lab.dir.0.join(format!(".flowc/runs/{run}/trace.jsonl"))
}

fn a_resume_takes_its_root_span_from_the_store_not_the_trace_file(backend: Backend) {
    let lab = Lab::on(backend, "root-span", CRASH_FLOW);
    // A waiting run whose trace file is deleted before the resume: the
    // resume still hangs its run span under the first process's root, which
    // only the store knows now, and writes a new file.
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();
    let path = trace_file(&lab, &run);
    let first = run_spans(&std::fs::read_to_string(&path).expect("the trace file"));
    let [(root, None, status)] = first.as_slice() else {
        panic!("one root run span: {first:?}");
    };
    assert_eq!(status, "waiting");
    let stored = lab.open_store().run(&run).expect("reads").expect("the run");
    assert_eq!(
        stored.root_span,
        Some(*root),
        "the store holds the root's id"
    );
    assert!(stored.root_written);
    std::fs::remove_file(&path).expect("delete the trace file");
    lab.flowc(&["approve", &run, "publish", "--resume"])
        .expect(0);
    let second = run_spans(&std::fs::read_to_string(&path).expect("the resume wrote a trace"));
    let [(id, Some(parent), status)] = second.as_slice() else {
        panic!("one run span, under the root: {second:?}");
    };
    assert_eq!((parent, status.as_str()), (root, "completed"));
    assert_ne!(id, root);

    // A run killed before it wrote its root span: the resume appends to the
    // file (every byte the killed process wrote stays) and its run span
    // takes the root's id from the store, so the killed process's spans that
    // did reach the file hang under it.
    let lab = Lab::on(backend, "root-span-killed", SLOW_FLOW);
    let mut first = lab.spawn(&["run", "prog.flow", "--input", r#"{"q":"many"}"#]);
    wait_for_executions(&lab, 2);
    first.kill().expect("SIGKILL the run");
    let _ = first.wait();
    let run = newest_run(&lab).expect("the run is stored");
    let stored = lab.open_store().run(&run).expect("reads").expect("the run");
    let root = stored
        .root_span
        .expect("the root's id was stored at the start");
    assert!(!stored.root_written, "the killed process wrote no root");
    let path = trace_file(&lab, &run);
    let before = std::fs::read(&path).unwrap_or_default();
    assert!(run_spans(&String::from_utf8_lossy(&before)).is_empty());
    let resumed = lab.flowc(&["resume", &run]);
    resumed.expect(0);
    assert_eq!(resumed.json(), slow_output());
    let after = std::fs::read(&path).expect("the trace file");
    assert!(
        after.starts_with(&before),
        "the resume appended to the trace"
    );
    let spans = run_spans(&String::from_utf8_lossy(&after));
    assert_eq!(spans, vec![(root, None, "completed".to_string())]);
    assert!(
        lab.open_store()
            .run(&run)
            .expect("reads")
            .expect("the run")
            .root_written,
        "the resume recorded that it wrote the root"
    );
}

/// A store an older flowc wrote (schema 4: no root span column) is migrated
/// when opened, and a run it started resumes into one trace tree (its root
/// found in the trace, the one case that reads it); a store a newer flowc
/// wrote is refused, saying so.
#[test]
fn a_store_from_before_root_spans_migrates_and_its_runs_resume_into_one_tree() {
    let lab = Lab::new("root-span-migrate", CRASH_FLOW);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();
    {
        let conn = Connection::open(lab.dir.0.join(".flowc/runs.db")).expect("opens");
        conn.execute_batch(
            "ALTER TABLE steps DROP COLUMN run_wall;
             ALTER TABLE steps DROP COLUMN run_tool_calls;
             ALTER TABLE steps DROP COLUMN run_steps;
             DROP TABLE sealed_programs;
             DROP INDEX reviews_day;
             DROP TABLE reviews;
             ALTER TABLE gates DROP COLUMN escalated_at;
             ALTER TABLE gates DROP COLUMN notified;
             ALTER TABLE gates DROP COLUMN policy_read;
             ALTER TABLE gates DROP COLUMN source;
             DROP TABLE model_slots;
             DROP TABLE model_rates;
             DROP TABLE programs;
             DROP INDEX runs_status;
             ALTER TABLE runs DROP COLUMN root_written;
             ALTER TABLE runs DROP COLUMN root_span;
             PRAGMA user_version = 4;",
        )
        .expect("the store goes back to schema 4");
    }
    lab.flowc(&["approve", &run, "publish", "--resume"])
        .expect(0);
    let version: i64 = lab
        .store()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("the schema version");
    assert_eq!(version, 10, "migrated");
    let trace = lab.flowc(&["trace", &run]);
    trace.expect(0);
    let roots = trace.stdout.lines().filter(|l| !l.starts_with(' ')).count();
    assert_eq!(roots, 1, "{}", trace.stdout);
    assert!(
        trace
            .stdout
            .lines()
            .any(|l| l.starts_with("  run crash") && l.contains("[completed]")),
        "{}",
        trace.stdout
    );

    Connection::open(lab.dir.0.join(".flowc/runs.db"))
        .expect("opens")
        .execute_batch("PRAGMA user_version = 99;")
        .expect("a schema from the future");
    let refused = lab.flowc(&["runs"]);
    assert_ne!(refused.code, Some(0));
    assert!(
        refused
            .stderr
            .contains("written by a newer flowc (schema 99, this flowc knows 10)"),
        "{}",
        refused.stderr
    );
}

// ---- 5. leases: one driver per run ----------------------------------------------

/// Eight irreversible calls of 150 ms, one after another: a run that lives
/// for more than a second.
pub(crate) const SLOW_FLOW: &str = r#"
tool slow(name: string, score: int) -> { id: string } {
  http POST "{env.TOOLS_URL}/tools/slow"
  effect write
  timeout 5s
  idempotency "slow:{name}"
}

flow chain(q: string) -> [{ id: string }] {
  budget { tool_calls 50, steps 100 }
  let found = list_items(q: q)
  let posted = for x in found.items parallel 1 {
    slow(name: x, score: 1)
  }
  return posted
}
"#;

/// The output of an uninterrupted `chain` run over `list_items("many")`.
pub(crate) fn slow_output() -> Value {
    Value::Array(
        items("many")
            .iter()
            .map(|x| json!({"id": format!("P-{x}-1")}))
            .collect(),
    )
}

/// Waits until the server executed `n` distinct slow calls.
pub(crate) fn wait_for_executions(lab: &Lab, n: usize) {
    let started = Instant::now();
    while lab.executed().len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run never reached {n} executions: {:?}",
            lab.executed()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every slow call executed exactly once per key.
pub(crate) fn assert_each_once(lab: &Lab) {
    let executed = lab.executed();
    assert_eq!(executed.len(), 8, "every item posted: {executed:?}");
    assert!(
        executed.values().all(|&n| n == 1),
        "an effect executed twice: {executed:?}"
    );
    assert_eq!(lab.ledger.lock().unwrap().unkeyed, 0);
}

pub(crate) fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} failed");
}

pub(crate) fn finished(mut child: Child) -> Out {
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    Out {
        code: status.code(),
        stdout: read_all(child.stdout.take()),
        stderr: read_all(child.stderr.take()),
    }
}

fn two_concurrent_resumes_of_a_killed_run_drive_it_exactly_once(backend: Backend) {
    let lab = Lab::on(backend, "two-resumes", SLOW_FLOW);
    let mut first = lab.spawn(&["run", "prog.flow", "--input", r#"{"q":"many"}"#]);
    wait_for_executions(&lab, 2);
    first.kill().expect("SIGKILL the run");
    let _ = first.wait();
    let run = newest_run(&lab).expect("the run is stored");
    let before = lab.requests("POST", "/tools/slow").len();
    let a = lab.spawn(&["resume", &run]);
    let b = lab.spawn(&["resume", &run]);
    let (a, b) = (finished(a), finished(b));
    let (driver, refused) = if a.code == Some(0) { (a, b) } else { (b, a) };
    driver.expect(0);
    assert_eq!(driver.json(), slow_output());
    refused.expect(5);
    assert!(
        refused
            .stderr
            .contains("is being driven by another process")
            && refused.stderr.contains("--wait"),
        "the refusal says who holds the run and how to wait:\n{}",
        refused.stderr
    );
    assert_each_once(&lab);
    // Only the one driver called the server for the remaining items (and
    // at most once more for the call the kill cut off, which replays).
    let after = lab.requests("POST", "/tools/slow").len() - before;
    let remaining = 8 - before.min(8);
    assert!(
        after == remaining || after == remaining + 1,
        "{after} calls after the kill for {remaining} remaining items"
    );
    assert_eq!(stored_output(&lab, &run), Some(slow_output()));
}

fn resume_wait_waits_for_the_live_driver_and_reports_its_output(backend: Backend) {
    let lab = Lab::on(backend, "resume-wait", SLOW_FLOW);
    let first = lab.spawn(&["run", "prog.flow", "--input", r#"{"q":"many"}"#]);
    wait_for_executions(&lab, 1);
    let run = newest_run(&lab).expect("the run is stored");
    // Without --wait: refused at once, exit 5.
    let refused = lab.flowc(&["resume", &run]);
    refused.expect(5);
    let waiting = lab.spawn(&["resume", &run, "--wait"]);
    let first = finished(first);
    first.expect(0);
    let waited = finished(waiting);
    waited.expect(0);
    assert_eq!(waited.json(), slow_output());
    assert_each_once(&lab);
    assert_eq!(lab.requests("POST", "/tools/slow").len(), 8);
}

fn ctrl_c_leaves_the_run_interrupted_and_resume_completes_it(backend: Backend) {
    let lab = Lab::on(backend, "interrupt", SLOW_FLOW);
    let child = lab.spawn(&["run", "prog.flow", "--input", r#"{"q":"many"}"#]);
    wait_for_executions(&lab, 2);
    signal(&child, "INT");
    let stopped = finished(child);
    stopped.expect(130);
    assert!(
        stopped.stderr.contains("interrupted"),
        "the run says it was interrupted:\n{}",
        stopped.stderr
    );
    let run = newest_run(&lab).expect("the run is stored");
    let runs = lab.flowc(&["runs"]);
    runs.expect(0);
    let line = runs
        .stdout
        .lines()
        .find(|l| l.starts_with(&run))
        .expect("flowc runs lists the run");
    assert!(line.contains("interrupted"), "flowc runs: {line}");
    assert!(
        lab.executed().len() < 8,
        "the interrupt stopped the run early"
    );
    let resumed = lab.flowc(&["resume", &run]);
    resumed.expect(0);
    assert_eq!(resumed.json(), slow_output());
    assert_each_once(&lab);
    // SIGTERM too.
    let lab = Lab::on(backend, "terminate", SLOW_FLOW);
    let child = lab.spawn(&["run", "prog.flow", "--input", r#"{"q":"many"}"#]);
    wait_for_executions(&lab, 1);
    signal(&child, "TERM");
    finished(child).expect(130);
    let run = newest_run(&lab).expect("the run is stored");
    let resumed = lab.flowc(&["resume", &run]);
    resumed.expect(0);
    assert_eq!(resumed.json(), slow_output());
    assert_each_once(&lab);
}

#[test]
fn sixty_four_concurrent_runs_on_one_new_store_all_complete() {
    let lab = Lab::new(
        "contention",
        r#"
// A long tool timeout: the machine is loaded by 64 processes, and this test
// is about the store, not about slow answers.
tool patient_items(q: string) -> { items: [string] len ..8 } {
  http GET "{env.TOOLS_URL}/tools/items?q={q}"
  effect read
  timeout 120s
}

flow one(q: string) -> [string] {
  budget { tool_calls 5, steps 10 }
  let found = patient_items(q: q)
  return found.items
}
"#,
    );
    let total = 400;
    let width = 64;
    let mut live: Vec<Child> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut started = 0;
    let mut done = 0;
    let began = Instant::now();
    while done < total {
        while live.len() < width && started < total {
            live.push(lab.spawn(&["run", "prog.flow", "--input", r#"{"q":"few"}"#]));
            started += 1;
        }
        let mut i = 0;
        while i < live.len() {
            if live[i].try_wait().expect("wait for flowc").is_some() {
                let out = finished(live.swap_remove(i));
                done += 1;
                if out.code != Some(0) {
                    failures.push(format!("exit {:?}: {}", out.code, out.stderr));
                }
            } else {
                i += 1;
            }
        }
        assert!(
            began.elapsed() < Duration::from_secs(600),
            "400 runs took more than 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        failures.is_empty(),
        "{} of {total} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let conn = lab.store();
    let completed: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE status = 'completed' AND owner IS NULL",
            [],
            |r| r.get(0),
        )
        .expect("count runs");
    assert_eq!(completed, total as i64);
    eprintln!(
        "contention: {total} runs, {width} at once, {:.1}s",
        began.elapsed().as_secs_f64()
    );
}

// ---- 3. budgets across processes -------------------------------------------

/// A model call, a gate, another model call, under a 3 s `wall`.
const WALLED_FLOW: &str = r#"
flow walled(q: string) -> Scored {
  budget { tokens 10k, wall 3s }
  let a = llm fast -> Scored { prompt "Score {q}" }
  let ok = approve go { show a }
  let b = llm fast -> Scored { prompt "Score {ok.name} again" }
  return b
}
"#;

fn a_resumed_run_keeps_the_wall_time_its_earlier_processes_used(backend: Backend) {
    let lab = Lab::on(backend, "wall", WALLED_FLOW);
    lab.server.script(
        CHAT,
        [
            Reply::delay(1000, Reply::chat_json(scored("a"))),
            Reply::delay(2500, Reply::chat_json(scored("a"))),
        ],
    );
    let first = lab.run(r#"{"q":"a"}"#, &[]);
    first.expect(4);
    let run = first.run_id();
    let stored = lab.open_store().run(&run).unwrap().expect("stored");
    assert!(
        (1.0..2.0).contains(&stored.spend.wall),
        "the first process was active {}s",
        stored.spend.wall
    );
    // Waiting at the gate is not active time.
    std::thread::sleep(Duration::from_millis(1000));
    lab.flowc(&["approve", &run, "go"]).expect(0);
    let started = Instant::now();
    let resumed = lab.flowc(&["resume", &run]);
    let took = started.elapsed();
    resumed.expect(3);
    assert!(resumed.stderr.contains("wall budget"), "{}", resumed.stderr);
    // The second call was sent (the gate's wait left time), then cut at the
    // budget: 3 s minus the first process's 1 s or more, before its 2.5 s
    // reply (which a wall restarted at 3 s would have waited for).
    assert_eq!(lab.server.hits(CHAT), 2);
    assert!(
        took < Duration::from_millis(3500),
        "the resume took {took:?}"
    );
    let stored = lab.open_store().run(&run).unwrap().expect("stored");
    assert_eq!(stored.status, "budget_exhausted");
    assert!(
        (3.0..3.6).contains(&stored.spend.wall),
        "the run was active {}s in all",
        stored.spend.wall
    );
}

/// Two model calls in a row under a 3 s `wall`.
const WALLED_PAIR: &str = r#"
flow pair(q: string) -> Scored {
  budget { tokens 10k, wall 3s }
  let a = llm fast -> Scored { prompt "Score {q}" }
  let b = llm fast -> Scored { prompt "Score {a.name} again" }
  return b
}
"#;

#[test]
fn a_run_killed_mid_call_and_resumed_keeps_the_wall_time_it_had_used() {
    let lab = Lab::new("wall-kill", WALLED_PAIR);
    lab.server.script(
        CHAT,
        [
            Reply::delay(800, Reply::chat_json(scored("a"))),
            Reply::hang(),
            Reply::delay(2500, Reply::chat_json(scored("a"))),
        ],
    );
    let mut child = lab.spawn(&["run", "prog.flow", "--input", r#"{"q":"a"}"#]);
    let began = Instant::now();
    while lab.server.hits(CHAT) < 2 {
        assert!(began.elapsed() < Duration::from_secs(20), "no second call");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let run = newest_run(&lab).expect("the run is stored");
    // Carried by the first step's commit (the run's row was last written
    // before the first call, when nothing had been used): the first call's
    // 0.8 s, which is what the resume counts.
    let used = lab
        .open_store()
        .step_texts(&run)
        .unwrap()
        .counted()
        .expect("the first step's commit carried the run's counts")
        .wall;
    assert!(
        (0.8..2.0).contains(&used),
        "recorded {used}s before the kill"
    );
    let started = Instant::now();
    let resumed = lab.flowc(&["resume", &run]);
    let took = started.elapsed();
    // 3 s minus what was recorded leaves under 2.2 s: the resumed call's
    // 2.5 s reply does not arrive in time. Under a wall that restarted (3 s)
    // it would, and the run would complete.
    resumed.expect(3);
    assert!(resumed.stderr.contains("wall budget"), "{}", resumed.stderr);
    assert_eq!(lab.server.hits(CHAT), 3);
    assert!(
        took < Duration::from_millis(3500),
        "the resume took {took:?}"
    );
    let stored = lab.open_store().run(&run).unwrap().expect("stored");
    assert_eq!(stored.status, "budget_exhausted");
    assert!(
        (3.0..3.6).contains(&stored.spend.wall),
        "{}",
        stored.spend.wall
    );
}

/// One model call.
const ONE_CALL_FLOW: &str = r#"
flow one(q: string) -> Scored {
  budget { tokens 10k }
  let a = llm fast -> Scored { prompt "Score {q}" }
  return a
}
"#;

#[test]
fn a_model_call_cut_short_by_kill_9_stays_counted_after_the_resume() {
    let lab = Lab::new("crashspend", ONE_CALL_FLOW);
    lab.server
        .script(CHAT, [Reply::hang(), Reply::chat_json(scored("a"))]);
    let mut child = lab.spawn(&["run", "prog.flow", "--input", r#"{"q":"a"}"#]);
    let began = Instant::now();
    while lab.server.hits(CHAT) == 0 {
        assert!(began.elapsed() < Duration::from_secs(20), "no call made");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let run = newest_run(&lab).expect("the run is stored");
    // The reservation was recorded before the request went out: the
    // provider may bill the call the crash cut short. With it, the
    // allowance for eight more calls like it (the first call's write
    // grants one: 10k tokens leave room for twice eight calls of this
    // one's worst case, w, which is over 100 and under 300 tokens). A
    // crash cannot tell whether more calls went out under that figure, so
    // the resume counts all of it: exactly 9 × w.
    let reserved = lab.open_store().run(&run).unwrap().expect("stored").spend;
    assert!(
        reserved.tokens.is_multiple_of(9) && reserved.tokens > 9 * 100 && reserved.tokens < 9 * 300,
        "{reserved:?}"
    );
    let resumed = lab.flowc(&["resume", &run]);
    resumed.expect(0);
    assert_eq!(resumed.json(), scored("a"));
    assert_eq!(lab.server.hits(CHAT), 2);
    let spend = lab.open_store().run(&run).unwrap().expect("stored").spend;
    assert_eq!(
        spend.tokens,
        reserved.tokens + lab.server.tokens_served(),
        "the cut call's reservation plus what the second call reported"
    );
}

/// `steps` chained model steps, each prompted with the last one's answer.
fn model_chain(steps: usize) -> String {
    let mut s = String::from(
        "flow chain(q: string) -> Scored {\n  budget { tokens 100k }\n  let m0 = llm fast -> Scored { prompt \"Score {q}\" }\n",
    );
    for i in 1..steps {
        s.push_str(&format!(
            "  let m{i} = llm fast -> Scored {{ prompt \"Score {{m{}.name}}\" }}\n",
            i - 1
        ));
    }
    s.push_str(&format!("  return m{}\n}}\n", steps - 1));
    s
}

/// `flow` of the lab's program run in this process on a fresh SQLite store
/// (`synchronous=FULL`) in the lab's folder, with the report.
fn run_durable(lab: &Lab, flow: &str, input: Value) -> (flowc::run::Report, String) {
    use flowc::store::{Durability, Lease, RunRecord, Store};
    let source = std::fs::read_to_string(lab.dir.0.join("prog.flow")).expect("reads");
    let checked = support::program::checked("prog.flow", &source);
    let store = Store::open(&lab.dir.0.join("writes.db"), Durability::Full).expect("opens");
    let id = flowc::run::new_run_id();
    let record = RunRecord::starting(
        id.clone(),
        "prog.flow".into(),
        flow.into(),
        json!({}),
        input.clone(),
        String::new(),
        None,
    );
    let vars = HashMap::from([
        ("OPENAI_BASE_URL".to_string(), lab.server.openai_base_url()),
        ("OPENAI_API_KEY".to_string(), KEY.to_string()),
        ("TOOLS_URL".to_string(), lab.server.base_url()),
    ]);
    let options = flowc::run::RunOptions {
        env: Arc::new(move |name: &str| vars.get(name).cloned()),
        run_id: Some(id.clone()),
        durable: Some(flowc::run::DurableRun {
            store,
            record,
            resume: false,
            lease: Lease::new_run(&id),
            texts: None,
        }),
        ..flowc::run::RunOptions::default()
    };
    let report = flowc::run::run(&checked, flow, input, options).expect("the run starts");
    (report, id)
}

/// What a run left in the store at `writes.db`: reply rows, and the
/// recorded spend's tokens.
fn replies_and_tokens(lab: &Lab, run: &str) -> (i64, u64) {
    let conn = Connection::open(lab.dir.0.join("writes.db")).expect("opens");
    let replies = conn
        .query_row(
            "SELECT count(*) FROM replies WHERE run_id = ?1",
            [run],
            |r| r.get(0),
        )
        .expect("counts");
    let tokens: i64 = conn
        .query_row("SELECT tokens FROM runs WHERE id = ?1", [run], |r| r.get(0))
        .expect("reads");
    (replies, tokens as u64)
}

/// A durable `llm` step costs one commit (its result; its reply, never
/// needed again once the step is done, is not written), and its model call
/// no write of its own: only the process's first call, with nothing
/// recorded to cover it, writes the spend before going out. The run's
/// steps, tool calls and active time ride on each commit's step rows, so
/// no commit of a short chain writes the run's row: each dirties only its
/// step's page.
#[test]
fn a_durable_llm_step_is_one_commit_and_only_the_first_call_writes_before_it_goes_out() {
    let lab = Lab::new("one-commit", &model_chain(6));
    let (report, run) = run_durable(&lab, "chain", json!({"q": "a"}));
    assert!(
        matches!(&report.outcome, flowc::run::Outcome::Completed(v) if v == &scored("a")),
        "{:?}",
        report.outcome
    );
    assert_eq!(lab.server.hits(CHAT), 6);
    let writes = report
        .store_writes
        .expect("a durable run counts its writes");
    assert_eq!((writes.commits, writes.reservations), (6, 1), "{writes:?}");
    assert_eq!(writes.rows, 0, "no commit wrote the run's row: {writes:?}");
    let (replies, tokens) = replies_and_tokens(&lab, &run);
    assert_eq!(replies, 0, "the completed steps' replies are not kept");
    assert_eq!(
        tokens,
        lab.server.tokens_served(),
        "the run records what it spent"
    );
    assert_eq!(report.spent.tokens, tokens);

    // Eight calls at once: one write covers all their reservations.
    let lab = Lab::new("one-commit-fanout", &scored_fanout(8));
    let names: Vec<String> = (0..8).map(|i| format!("a{i}")).collect();
    let (report, run) = run_durable(&lab, "wide", json!({ "names": names }));
    assert!(
        matches!(&report.outcome, flowc::run::Outcome::Completed(Value::Array(v)) if v.len() == 8),
        "{:?}",
        report.outcome
    );
    let writes = report
        .store_writes
        .expect("a durable run counts its writes");
    assert_eq!(writes.reservations, 1, "{writes:?}");
    assert!(writes.commits <= 9, "{writes:?}");
    let (replies, tokens) = replies_and_tokens(&lab, &run);
    assert_eq!(replies, 0);
    assert_eq!(tokens, lab.server.tokens_served());
}

/// Commits are pipelined: while calls are in flight, a commit syncs on a
/// blocking thread and the run goes on. What depends on a step still starts
/// only once the step is in the store: in a 40-wide fan-out of model calls
/// (answering 20–60 ms apart, so most commits start while other calls are
/// in flight), each branch's next call asks the store file itself whether
/// its model step is committed when its request arrives. Each reply is
/// half a megabyte, so a commit takes long enough (milliseconds) that a
/// call let out before it ends would find it missing.
#[test]
fn a_step_starts_only_once_the_steps_it_reads_are_committed() {
    let lab = Lab::new(
        "pipelined-commits",
        r#"
type Long { name: string, text: string }

tool audit(name: string) -> { committed: bool } {
  http POST "{env.TOOLS_URL}/tools/audit"
  effect read
  timeout 5s
}

flow wide(names: [string] len ..40) -> [{ committed: bool }] {
  budget { tokens 100k }
  let all = for n in names parallel 40 {
    let s = llm fast -> Long { prompt "Write about {n}" }
    audit(name: s.name)
  }
  return all
}
"#,
    );
    let long = |name: &str| json!({"name": name, "text": "x".repeat(128 << 10)});
    lab.server.always(
        CHAT,
        Reply::from_fn(move |r| {
            let prompt = prompt_of(r);
            let name = prompt.trim().strip_prefix("Write about ").unwrap_or("?");
            Reply::delay(20 + fastrand::u64(0..40), Reply::chat_json(long(name)))
        }),
    );
    let db = lab.dir.0.join("writes.db");
    lab.server.always(
        "POST /tools/audit",
        Reply::from_fn(move |r| {
            let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("opens the store");
            let name = r.body["name"].as_str().unwrap_or("?");
            let index = name.strip_prefix('n').unwrap_or("?");
            let found: i64 = conn
                .query_row(
                    "SELECT count(*) FROM steps WHERE key = ?1",
                    [format!("all[{index}]/wide.s")],
                    |r| r.get(0),
                )
                .expect("counts");
            Reply::ok(json!({ "committed": found == 1 }))
        }),
    );
    let names: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
    let (report, _) = run_durable(&lab, "wide", json!({ "names": names }));
    let flowc::run::Outcome::Completed(output) = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    let seen: Vec<bool> = output
        .as_array()
        .expect("a list")
        .iter()
        .map(|a| a["committed"] == json!(true))
        .collect();
    assert_eq!(
        seen,
        vec![true; 40],
        "a branch's call started before its model step was committed"
    );
    assert_eq!(lab.server.hits(CHAT), 40);
    let writes = report
        .store_writes
        .expect("a durable run counts its writes");
    assert!(
        writes.commits < 81,
        "results finishing together share commits: {writes:?}"
    );
}

/// An 8-wide fan-out of model calls beside one more call, `late`, that
/// nothing in the loop waits for.
const FANOUT_BESIDE_A_CALL: &str = r#"
flow wide(names: [string] len ..8) -> { all: [Scored], late: Scored } {
  budget { tokens 100k }
  let all = for n in names parallel 8 {
    llm fast -> Scored { prompt "Score {n}" }
  }
  let late = llm fast -> Scored { prompt "Late" }
  return { all: all, late: late }
}
"#;

/// A flow scoring each of up to eight names, `parallel` at a time.
fn scored_fanout(parallel: usize) -> String {
    format!(
        r#"
flow wide(names: [string] len ..8) -> [Scored] {{
  budget {{ tokens 100k }}
  let all = for n in names parallel {parallel} {{
    llm fast -> Scored {{ prompt "Score {{n}}" }}
  }}
  return all
}}
"#
    )
}

/// The step rows committed to the store file at `db`, read by another
/// connection while the run goes on.
fn committed_rows(db: &std::path::Path) -> i64 {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("opens the store")
        .query_row("SELECT count(*) FROM steps", [], |r| r.get(0))
        .expect("counts")
}

/// Results that no step waits for do not wait for the run's end to be
/// committed: a fan-out's iterations end as soon as their step does, and
/// the run's committer writes them while a call beside the loop is still in
/// flight (the server counts the store's rows when it answers that call).
/// The flow's last steps go with the run's end, in the same transaction.
#[test]
fn results_nothing_waits_for_are_committed_while_the_run_goes_on() {
    let lab = Lab::new("committer", FANOUT_BESIDE_A_CALL);
    let db = lab.dir.0.join("writes.db");
    lab.server.always(
        CHAT,
        Reply::from_fn(move |r| {
            let prompt = prompt_of(r);
            let prompt = prompt.trim();
            if prompt != "Late" {
                let name = prompt.strip_prefix("Score ").unwrap_or("?");
                return Reply::chat_json(scored(name));
            }
            let db = db.clone();
            Reply::delay(
                500,
                Reply::from_fn(move |_| {
                    Reply::chat_json(json!({"name": "late", "score": committed_rows(&db)}))
                }),
            )
        }),
    );
    let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    let (report, run) = run_durable(&lab, "wide", json!({ "names": names }));
    let flowc::run::Outcome::Completed(output) = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    assert_eq!(
        output["late"]["score"],
        json!(9),
        "the eight iterations and their loop were in the store while `late` was in flight"
    );
    let conn = Connection::open(lab.dir.0.join("writes.db")).expect("opens");
    let (rows, last, ended): (i64, f64, f64) = conn
        .query_row(
            "SELECT count(*), max(s.completed_at), r.updated_at FROM steps s JOIN runs r ON r.id = s.run_id WHERE s.run_id = ?1",
            [&run],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("reads");
    assert_eq!(rows, 10, "every durable step of the run is in the store");
    assert_eq!(
        last, ended,
        "`late`, which nothing waited for, was written with the run's end"
    );
}

/// A commit that no step waits for, which the store refuses, ends the run
/// at once: the run's lease is taken over (its epoch moved on in the store
/// file) when the fan-out's first call arrives, the committer's commit of
/// the iterations is fenced out, and the run stops with the lost lease
/// instead of waiting five seconds for the call beside the loop.
#[test]
fn a_failed_commit_nothing_waited_for_ends_the_run_at_once() {
    let lab = Lab::new("committer-fails", FANOUT_BESIDE_A_CALL);
    let db = lab.dir.0.join("writes.db");
    lab.server.always(
        CHAT,
        Reply::from_fn(move |r| {
            let prompt = prompt_of(r);
            let prompt = prompt.trim();
            if prompt == "Late" {
                return Reply::delay(5_000, Reply::chat_json(scored("late")));
            }
            if prompt == "Score n0" {
                let conn = Connection::open(&db).expect("opens the store");
                conn.busy_timeout(Duration::from_secs(5)).expect("sets");
                conn.execute("UPDATE runs SET epoch = epoch + 1", [])
                    .expect("takes the lease over");
            }
            let name = prompt.strip_prefix("Score ").unwrap_or("?");
            Reply::chat_json(scored(name))
        }),
    );
    let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    let started = Instant::now();
    let (report, _) = run_durable(&lab, "wide", json!({ "names": names }));
    let took = started.elapsed();
    assert!(
        matches!(
            report.outcome,
            flowc::run::Outcome::Store(flowc::store::StoreError::LeaseLost(_))
        ),
        "{:?}",
        report.outcome
    );
    assert_eq!(lab.server.hits(CHAT), 9, "every call went out");
    assert!(
        took < Duration::from_millis(2_500),
        "the run waited {took:?} for a call after its commit failed"
    );
}

/// A `check` reads its step before the step's commit (a resume computes a
/// check again), so a check that fails ends the run with that step still
/// queued: the run's last write, which records the failure, takes it.
#[test]
fn a_step_a_failing_check_read_is_written_with_the_failed_run() {
    let lab = Lab::new(
        "check-fails",
        r#"
flow checked(q: string) -> Scored {
  budget { tokens 100k }
  let s = llm fast -> Scored { prompt "Score {q}" }
  check high { require s.score > 1000, "too low" }
  return s
}
"#,
    );
    lab.server.always(CHAT, Reply::chat_json(scored("a")));
    let (report, run) = run_durable(&lab, "checked", json!({ "q": "a" }));
    assert!(
        matches!(&report.outcome, flowc::run::Outcome::Failed(e) if e.message.contains("too low")),
        "{:?}",
        report.outcome
    );
    let conn = Connection::open(lab.dir.0.join("writes.db")).expect("opens");
    let (rows, status): (i64, String) = conn
        .query_row(
            "SELECT count(s.key), r.status FROM runs r LEFT JOIN steps s ON s.run_id = r.id WHERE r.id = ?1",
            [&run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("reads");
    assert_eq!((rows, status.as_str()), (1, "failed"));
    assert_eq!(lab.server.hits(CHAT), 1);
}

/// A loop's iteration holds its slot until its result is committed, though
/// nothing waits for it: iterations running or not yet committed are never
/// more than `parallel`, so a crash makes a resume run at most that many
/// again. Each call's reply says how many iterations the store held when
/// the call arrived.
#[test]
fn a_loop_starts_an_iteration_only_when_at_most_parallel_are_uncommitted() {
    let lab = Lab::new("loop-slots", &scored_fanout(2));
    let db = lab.dir.0.join("writes.db");
    lab.server.always(
        CHAT,
        Reply::from_fn(move |r| {
            let prompt = prompt_of(r);
            let name = prompt.trim().strip_prefix("Score ").unwrap_or("?");
            Reply::chat_json(json!({"name": name, "score": committed_rows(&db)}))
        }),
    );
    let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    let (report, _) = run_durable(&lab, "wide", json!({ "names": names }));
    let flowc::run::Outcome::Completed(Value::Array(all)) = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    let committed: Vec<i64> = all
        .iter()
        .map(|s| s["score"].as_i64().expect("a count"))
        .collect();
    for (i, &rows) in committed.iter().enumerate() {
        assert!(
            rows >= i as i64 - 2,
            "iteration {i} started with {rows} iterations committed: {committed:?}"
        );
    }
}

/// The real fault the allowance is for: a process killed while a model call
/// is in flight, a call that went out with no write of its own (the spend
/// last written, before the first call, covered it and the two steps'
/// commits did not write the run's row). The resumed run still counts it,
/// and asks the model only for the step it cut short.
fn a_model_call_that_went_out_without_a_write_stays_counted_after_kill_9(backend: Backend) {
    let lab = Lab::on(backend, "allowance", &model_chain(3));
    lab.server.script(
        CHAT,
        [
            Reply::chat_json(scored("a")),
            Reply::chat_json(scored("a")),
            Reply::hang(),
        ],
    );
    let mut child = lab.spawn(&["run", "prog.flow", "--input", r#"{"q":"a"}"#]);
    let began = Instant::now();
    while lab.server.hits(CHAT) < 3 {
        assert!(began.elapsed() < Duration::from_secs(20), "no third call");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let served = lab.server.tokens_served();
    let run = newest_run(&lab).expect("the run is stored");
    let store = lab.open_store();
    assert_eq!(
        store.steps(&run).expect("reads").len(),
        2,
        "the first two steps committed"
    );
    let recorded = store.run(&run).unwrap().expect("stored").spend.tokens;
    if let Backend::Sqlite = backend {
        // The run's row was last written before the first step committed
        // (by the first call's reservation): neither commit wrote it, and
        // the third call went out under the spend written then.
        let (first_commit, updated_at): (f64, f64) = lab
            .store()
            .query_row(
                "SELECT (SELECT min(completed_at) FROM steps WHERE run_id = ?1), updated_at FROM runs WHERE id = ?1",
                [&run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(updated_at < first_commit, "{updated_at} vs {first_commit}");
    }
    // That spend counts the call in flight: at least its `max_tokens` (100)
    // and 16 more, over what the first two calls reported; and it is above
    // them by at most one allowance (eight calls' worst case) and the call
    // itself (each call's worst case is well under 400 tokens here).
    assert!(
        recorded >= served + 116 && recorded <= served + 9 * 400,
        "recorded {recorded} tokens, the server served {served}"
    );
    lab.server.always(CHAT, Reply::chat_json(scored("a")));
    let resumed = lab.flowc(&["resume", &run]);
    resumed.expect(0);
    assert_eq!(resumed.json(), scored("a"));
    // The completed steps were not asked again: one more call, for the third.
    assert_eq!(lab.server.hits(CHAT), 4);
    let spend = lab.open_store().run(&run).unwrap().expect("stored").spend;
    assert_eq!(
        spend.tokens,
        recorded + (lab.server.tokens_served() - served),
        "what the killed process recorded plus what the resumed call reported"
    );
}

/// A chain of `steps` model steps under `budget`, each prompted with the
/// last one's answer.
fn budgeted_chain(steps: usize, budget: &str) -> String {
    model_chain(steps).replace("budget { tokens 100k }", &format!("budget {{ {budget} }}"))
}

/// A run killed with a model call in flight at every step, under a `steps`
/// budget exactly as large as the uninterrupted run needs and a `tokens`
/// budget too small for an allowance (eight calls' worst case) to fit in
/// half the room left: each resume counts the steps the last commit
/// recorded and the tokens reserved, nothing ahead, so the run completes
/// after as many kills as it has steps, with the figures of an
/// uninterrupted run (plus the cut calls' reservations).
fn a_run_killed_at_every_step_near_its_budget_completes(backend: Backend) {
    const STEPS: usize = 5;
    let reference = Lab::on(backend, "near-budget-reference", &model_chain(STEPS));
    reference.run(r#"{"q":"a"}"#, &[]).expect(0);
    let run = newest_run(&reference).expect("stored");
    let needed = reference
        .open_store()
        .run(&run)
        .unwrap()
        .expect("stored")
        .spend;
    assert!(needed.steps >= STEPS as u64, "{needed:?}");

    // Each call reserves about 200 tokens (100 of `max_tokens`, the
    // prompt at one token per two bytes), and the chain's worst case is
    // 1,820 (a retry each): 3,000 is above it, and never twice eight
    // calls' worth above what is committed.
    let budget = format!("tokens 3000, steps {}", needed.steps);
    let lab = Lab::on(backend, "near-budget", &budgeted_chain(STEPS, &budget));
    // Each process gets one answer, then a call that never returns.
    let mut script = Vec::new();
    for _ in 1..STEPS {
        script.extend([Reply::chat_json(scored("a")), Reply::hang()]);
    }
    script.push(Reply::chat_json(scored("a")));
    lab.server.script(CHAT, script);
    let mut run: Option<String> = None;
    let mut kills = 0;
    let output = loop {
        let args: Vec<&str> = match &run {
            None => vec!["run", "prog.flow", "--input", r#"{"q":"a"}"#],
            Some(id) => vec!["resume", id],
        };
        if kills == STEPS - 1 {
            let out = lab.flowc(&args);
            out.expect(0);
            break out.json();
        }
        let mut child = lab.spawn(&args);
        let began = Instant::now();
        while lab.server.hits(CHAT) < 2 * (kills + 1) {
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "process {kills}: {}",
                read_all(child.stderr.take())
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
        kills += 1;
        run = run.or_else(|| newest_run(&lab));
        let id = run.as_deref().expect("the run is stored");
        assert_eq!(
            lab.open_store().steps(id).expect("reads").len(),
            kills,
            "each process committed one step"
        );
    };
    assert_eq!(output, scored("a"));
    assert_eq!(lab.server.hits(CHAT), 2 * STEPS - 1);
    let spend = lab
        .open_store()
        .run(run.as_deref().expect("stored"))
        .unwrap()
        .expect("stored")
        .spend;
    assert_eq!(spend.steps, needed.steps, "no step counted twice");
    assert_eq!(spend.tool_calls, needed.tool_calls);
    // What the server served, and each cut call's reservation (about 200
    // tokens): nothing counted ahead (an allowance, eight such calls,
    // would be 1,600 more).
    let served = lab.server.tokens_served();
    assert!(
        spend.tokens >= served + (STEPS as u64 - 1) * 150
            && spend.tokens <= served + (STEPS as u64 - 1) * 300,
        "recorded {} tokens, served {served}",
        spend.tokens
    );
}

/// Sets the stored value text of step `key` of `run`, on either backend.
fn set_step_value(lab: &Lab, run: &str, key: &str, text: &str) {
    let changed = match &lab.store_url {
        Some(url) => postgres::Client::connect(url, postgres::NoTls)
            .expect("connects")
            .execute(
                "UPDATE steps SET value = $3 WHERE run_id = $1 AND key = $2",
                &[&run, &key, &text],
            )
            .expect("updates") as usize,
        None => Connection::open(lab.dir.0.join(".flowc/runs.db"))
            .expect("opens")
            .execute(
                "UPDATE steps SET value = ?3 WHERE run_id = ?1 AND key = ?2",
                rusqlite::params![run, key, text],
            )
            .expect("updates"),
    };
    assert_eq!(changed, 1, "step {key} is stored");
}

/// A resume parses only the checkpoints its remaining steps read. A
/// damaged one that a remaining step reads stops the resume as a store
/// failure naming the step (exit 6, nothing after it called, the run left
/// to resume); once repaired, the run resumes. A damaged one nothing reads
/// any more (the item list, read only by the completed loop) is not looked
/// at: the run completes with the output it would have had.
fn a_damaged_checkpoint_stops_the_resume_only_when_a_remaining_step_reads_it(backend: Backend) {
    let lab = Lab::on(backend, "damaged-checkpoint", CRASH_FLOW);
    let paused = lab.run(FEW, &[]);
    paused.expect(4);
    let run = paused.run_id();
    lab.flowc(&["approve", &run, "publish"]).expect(0);
    let found_text = lab.open_store().steps(&run).expect("reads")["crash.found"]
        .clone()
        .expect("a value")
        .to_string();
    let scored_text = lab.open_store().steps(&run).expect("reads")["crash.scored"]
        .clone()
        .expect("a value")
        .to_string();

    set_step_value(
        &lab,
        &run,
        "crash.scored",
        &scored_text[..scored_text.len() - 1],
    );
    let stopped = lab.flowc(&["resume", &run]);
    stopped.expect(6);
    assert!(
        stopped.stderr.contains("step crash.scored: "),
        "{}",
        stopped.stderr
    );
    assert_eq!(lab.server.hits("/tools/post"), 0);

    set_step_value(&lab, &run, "crash.scored", &scored_text);
    set_step_value(
        &lab,
        &run,
        "crash.found",
        &found_text[..found_text.len() - 1],
    );
    let resumed = lab.flowc(&["resume", &run]);
    resumed.expect(0);
    let output = resumed.json();
    assert_eq!(output["scored"], json!([scored("a0"), scored("a1")]));
    assert_eq!(lab.executed().values().copied().collect::<Vec<_>>(), [1, 1]);
    assert_eq!(lab.server.hits("/tools/items"), 1);
    assert_eq!(lab.server.hits(CHAT), 2);
}

/// The tests above that hold on either backend, once on each (the worker
/// tests use it too).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $name() { super::$name(super::Backend::Sqlite) })*
        }
        mod on_postgres {
            $(#[test] fn $name() { super::$name(super::Backend::Postgres) })*
        }
    };
}
pub(crate) use on_both_backends;

on_both_backends!(
    a_paused_run_exits_4_shows_in_the_inbox_and_resumes_after_flowc_approve,
    approve_and_reject_with_resume_continue_the_run_at_once,
    a_rejected_gate_ends_the_run_rejected_without_the_irreversible_call,
    a_gate_timeout_applies_its_outcome_on_resume,
    an_edited_value_must_fit_the_gates_type_and_is_what_the_next_step_receives,
    two_gates_in_parallel_branches_resolve_in_either_order,
    gates_inside_a_loop_wait_and_the_loop_completes_after_they_are_approved,
    a_gate_inside_a_sub_flow_waits_and_the_call_completes_after_approval,
    a_gate_inside_a_branch_waits_and_the_branch_completes_after_approval,
    a_resume_under_a_changed_program_is_refused_naming_the_change,
    a_resume_runs_the_kept_program_while_its_files_are_unchanged,
    runs_show_and_trace_follow_a_run_across_processes,
    a_resume_takes_its_root_span_from_the_store_not_the_trace_file,
    two_concurrent_resumes_of_a_killed_run_drive_it_exactly_once,
    resume_wait_waits_for_the_live_driver_and_reports_its_output,
    ctrl_c_leaves_the_run_interrupted_and_resume_completes_it,
    a_resumed_run_keeps_the_wall_time_its_earlier_processes_used,
    a_model_call_that_went_out_without_a_write_stays_counted_after_kill_9,
    a_run_killed_at_every_step_near_its_budget_completes,
    killed_runs_resume_to_the_uninterrupted_output_with_every_effect_once,
    the_trace_of_a_gate_shows_what_it_released_the_original_and_who_decided_when,
    a_damaged_checkpoint_stops_the_resume_only_when_a_remaining_step_reads_it
);
