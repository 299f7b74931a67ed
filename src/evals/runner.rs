//! Runs an eval's rows and scores them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ir::{Eval, ScorerKind};

use super::trajectory;
use crate::run::{self, Env, Outcome, Script, Scripted, World};
use crate::source::Sources;
use crate::store::{self, Durability, Lease, Store};
use crate::CheckedProgram;

/// How `flowc eval` runs rows.
pub struct Options {
    /// The run store each row's run is recorded in (`None`: ephemeral
    /// runs, traces kept in memory only).
    pub store: Option<(PathBuf, Durability)>,
    /// Answers for every row (`--replay`): no model or tool is called.
    pub replay: Option<Recording>,
    pub env: Env,
}

/// One eval's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalResult {
    pub name: String,
    pub file: String,
    pub flow: String,
    pub threshold: f64,
    /// The mean weighted row score reached the threshold.
    pub passed: bool,
    pub mean: f64,
    /// Rows whose weighted score reached the threshold, over all rows.
    pub pass_rate: f64,
    pub scorers: Vec<ScorerSummary>,
    pub cost: f64,
    pub tokens: u64,
    pub latency_ms: Latency,
    /// Failed rows and judges by failure class.
    pub failures: BTreeMap<String, u64>,
    pub rows: Vec<RowResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScorerSummary {
    pub name: String,
    pub weight: f64,
    pub mean: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub mean: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RowResult {
    /// 1-based, in dataset order.
    pub row: usize,
    /// The row's line in its dataset file (or its `row` clause).
    pub line: usize,
    pub input: Value,
    pub run_id: String,
    /// Where the row's trace is, for a durable run.
    pub trace: Option<String>,
    pub status: String,
    pub output: Option<Value>,
    /// Why the run did not complete, with its class.
    pub failure: Option<Failure>,
    pub score: f64,
    pub passed: bool,
    pub scores: Vec<RowScore>,
    pub cost: f64,
    pub tokens: u64,
    pub latency_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    pub class: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RowScore {
    pub name: String,
    pub score: f64,
    pub reason: String,
}

/// Recorded answers for evals (`--record` writes one, `--replay` reads
/// it): per eval, per row, the tools' and models' answers of the row's run
/// and of each judge, in call order.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    pub evals: BTreeMap<String, Vec<RowAnswers>>,
}

#[derive(Clone, Debug, Default)]
pub struct RowAnswers {
    pub input: Value,
    /// `{"tools": {name: [answer…]}, "models": {…}}`
    pub run: Value,
    /// Per judge scorer, the same shape.
    pub judges: BTreeMap<String, Value>,
}

impl Recording {
    pub fn parse(text: &str) -> Result<Recording, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let evals = doc["evals"]
            .as_object()
            .ok_or("an eval recording has an `evals` object")?;
        let mut out = Recording::default();
        for (name, rows) in evals {
            let rows = rows["rows"]
                .as_array()
                .ok_or_else(|| format!("eval {name:?}: `rows` is not a list"))?;
            let rows = rows
                .iter()
                .map(|r| RowAnswers {
                    input: r["input"].clone(),
                    run: r["run"].clone(),
                    judges: r["judges"]
                        .as_object()
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        .unwrap_or_default(),
                })
                .collect();
            out.evals.insert(name.clone(), rows);
        }
        Ok(out)
    }

    pub fn to_json(&self) -> Value {
        let evals: serde_json::Map<String, Value> = self
            .evals
            .iter()
            .map(|(name, rows)| {
                let rows: Vec<Value> = rows
                    .iter()
                    .map(|r| json!({"input": r.input, "run": r.run, "judges": r.judges}))
                    .collect();
                (name.clone(), json!({ "rows": rows }))
            })
            .collect();
        json!({
            "version": 1,
            "about": "Recorded answers of `flowc eval --record`: replay with `flowc eval --replay FILE`, offline and deterministic.",
            "evals": evals,
        })
    }
}

/// A scripted world from recorded answers.
fn scripted(answers: &Value) -> World {
    let section = |key: &str| -> HashMap<String, VecDeque<Scripted>> {
        answers[key]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, list)| {
                        let q = list
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|v| match v.get("$fails").and_then(Value::as_str) {
                                Some(msg) => Scripted::Fails(msg.to_string()),
                                None => Scripted::Returns(v.clone()),
                            })
                            .collect();
                        (name.clone(), q)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    World::Scripted(Script {
        tools: section("tools"),
        models: section("models"),
        agents: HashMap::new(),
    })
}

/// Runs one eval: every row (up to its `concurrency` at once), its scorers,
/// the summary; with `record`, the answers each row got.
pub fn run_eval(
    checked: &CheckedProgram,
    sources: &Sources,
    // The program's fingerprint (`run::fingerprint`), kept with each row's
    // run as with any run.
    fingerprint: &Value,
    eval: &Eval,
    options: &Options,
    record: bool,
) -> Result<(EvalResult, Vec<RowAnswers>), String> {
    let program = checked.program();
    let flow_id = eval.flow.ok_or("the eval runs no flow")?;
    let flow = &program.flows[flow_id.index()];
    let file = sources.get(flow.span.file).name.clone();
    let replay = match &options.replay {
        Some(r) => {
            let rows = r
                .evals
                .get(&eval.name)
                .ok_or_else(|| format!("the recording has no answers for eval {:?}", eval.name))?;
            if rows.len() != eval.rows.len() {
                return Err(format!(
                    "the recording of eval {:?} has {} rows, the eval {}: record it again",
                    eval.name,
                    rows.len(),
                    eval.rows.len()
                ));
            }
            Some(rows)
        }
        None => None,
    };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<(RowResult, RowAnswers)>>> =
        Mutex::new((0..eval.rows.len()).map(|_| None).collect());
    let workers = (eval.concurrency as usize).clamp(1, eval.rows.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= eval.rows.len() {
                    break;
                }
                let answers = replay.map(|rows| &rows[i]);
                let row = run_row(
                    checked,
                    sources,
                    eval,
                    &flow.name,
                    i,
                    answers,
                    options,
                    fingerprint,
                    &file,
                    record,
                );
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(row);
            });
        }
    });
    let (rows, answers): (Vec<RowResult>, Vec<RowAnswers>) = results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .unzip();
    Ok((summarise(eval, &file, &flow.name, rows), answers))
}

fn summarise(eval: &Eval, file: &str, flow: &str, rows: Vec<RowResult>) -> EvalResult {
    let n = rows.len().max(1) as f64;
    let mean = rows.iter().map(|r| r.score).sum::<f64>() / n;
    let passed_rows = rows.iter().filter(|r| r.passed).count();
    let scorers = eval
        .scorers
        .iter()
        .map(|s| ScorerSummary {
            name: s.name.clone(),
            weight: s.weight,
            mean: rows
                .iter()
                .filter_map(|r| r.scores.iter().find(|x| x.name == s.name))
                .map(|x| x.score)
                .sum::<f64>()
                / n,
        })
        .collect();
    let mut failures = BTreeMap::new();
    for r in &rows {
        if let Some(f) = &r.failure {
            *failures.entry(f.class.clone()).or_insert(0) += 1;
        }
        for s in &r.scores {
            if let Some(class) = s
                .reason
                .strip_prefix("judge failed (")
                .and_then(|t| t.split(')').next())
            {
                *failures.entry(format!("judge {class}")).or_insert(0) += 1;
            }
        }
    }
    EvalResult {
        name: eval.name.clone(),
        file: file.to_string(),
        flow: flow.to_string(),
        threshold: eval.threshold,
        passed: !rows.is_empty() && mean + 1e-9 >= eval.threshold,
        mean,
        pass_rate: passed_rows as f64 / n,
        scorers,
        cost: rows.iter().map(|r| r.cost).sum(),
        tokens: rows.iter().map(|r| r.tokens).sum(),
        latency_ms: Latency {
            mean: rows.iter().map(|r| r.latency_ms).sum::<f64>() / n,
            max: rows.iter().map(|r| r.latency_ms).fold(0.0, f64::max),
        },
        failures,
        rows,
    }
}

/// One row: the flow's run, then every scorer.
#[allow(clippy::too_many_arguments)]
fn run_row(
    checked: &CheckedProgram,
    sources: &Sources,
    eval: &Eval,
    flow: &str,
    i: usize,
    answers: Option<&RowAnswers>,
    options: &Options,
    fingerprint: &Value,
    file: &str,
    record: bool,
) -> (RowResult, RowAnswers) {
    let program = checked.program();
    let row = &eval.rows[i];
    let input = row.data.input.clone();
    let run_id = run::new_run_id();
    let world = match answers {
        Some(a) => scripted(&a.run),
        None => World::Live,
    };
    let mut durable = None;
    let mut heartbeat = None;
    let mut trace = None;
    let mut setup_error = None;
    if let Some((path, durability)) = &options.store {
        // Beside a SQLite store, as `flowc run` keeps them; under `.flowc`
        // for a PostgreSQL one.
        let trace_path = if path.to_string_lossy().contains("://") {
            PathBuf::from(".flowc")
        } else {
            path.parent()
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf()
        }
        .join("runs")
        .join(&run_id)
        .join("trace.jsonl");
        match Store::open(path, *durability) {
            // The heartbeat renews the lease from a second connection; a
            // row run without it would lose its lease mid-run, so a store
            // that cannot be opened twice fails the row, as `flowc run`.
            Ok(store) => match store.reopen() {
                Ok(second) => {
                    let lease = Lease::new_run(&run_id);
                    heartbeat = Some(store::Heartbeat::start(second, lease.clone()));
                    durable = Some(run::DurableRun {
                        store,
                        record: store::RunRecord::starting(
                            run_id.clone(),
                            std::fs::canonicalize(file)
                                .map_or(file.to_string(), |p| p.display().to_string()),
                            flow.to_string(),
                            fingerprint.clone(),
                            input.clone(),
                            trace_path.display().to_string(),
                            None,
                        ),
                        resume: false,
                        lease,
                        texts: None,
                    });
                    trace = Some(trace_path);
                }
                Err(e) => setup_error = Some(e.to_string()),
            },
            Err(e) => setup_error = Some(e.to_string()),
        }
    }
    let started = std::time::Instant::now();
    let report = match setup_error {
        Some(e) => Err(e),
        None => run::run(
            checked,
            flow,
            input.clone(),
            run::RunOptions {
                world,
                env: options.env.clone(),
                decided_by: "eval".into(),
                run_id: Some(run_id.clone()),
                trace_path: trace.clone(),
                durable,
                ..run::RunOptions::default()
            },
        )
        .map_err(|e| e.to_string()),
    };
    drop(heartbeat);
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut recorded = RowAnswers {
        input: input.clone(),
        ..RowAnswers::default()
    };
    let mut result = RowResult {
        row: i + 1,
        line: row.line,
        input: input.clone(),
        run_id: run_id.clone(),
        trace: trace.map(|p| p.display().to_string()),
        status: "failed".into(),
        output: None,
        failure: None,
        score: 0.0,
        passed: false,
        scores: Vec::new(),
        cost: 0.0,
        tokens: 0,
        latency_ms,
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            result.failure = Some(Failure {
                class: "setup".into(),
                message: e,
            });
            result.scores = eval
                .scorers
                .iter()
                .map(|s| RowScore {
                    name: s.name.clone(),
                    score: 0.0,
                    reason: "the row's run did not start".into(),
                })
                .collect();
            return (result, recorded);
        }
    };
    if record {
        recorded.run = trajectory::answers(&report.events);
    }
    result.status = report.outcome.status().as_str().to_string();
    result.cost = report.spent.cost;
    result.tokens = report.spent.tokens;
    let output = match &report.outcome {
        Outcome::Completed(v) => Some(v.clone()),
        other => {
            result.failure = Some(failure_of(other));
            None
        }
    };
    result.output = output.clone();
    let trace_value = trajectory::trajectory(program, &report, latency_ms);
    let expected = row.data.expected.clone().unwrap_or(Value::Null);
    let mut weighted = 0.0;
    let mut weights = 0.0;
    for scorer in &eval.scorers {
        let (score, reason) = match (&output, &scorer.kind) {
            (None, _) => (0.0, "the row's run did not complete".to_string()),
            (Some(out), ScorerKind::Expr(e)) => {
                let scope = ScorerScope([
                    input.clone(),
                    out.clone(),
                    expected.clone(),
                    trace_value.clone(),
                ]);
                expr_score(sources, e, &scope)
            }
            (Some(out), ScorerKind::Judge(j)) => {
                let judge_world = match answers {
                    Some(a) => scripted(a.judges.get(&scorer.name).unwrap_or(&Value::Null)),
                    None => World::Live,
                };
                let judge = &program.flows[j.index()];
                let args = json!({"input": input, "output": out, "expected": expected});
                let report = run::run(
                    checked,
                    &judge.name,
                    args,
                    run::RunOptions {
                        world: judge_world,
                        env: options.env.clone(),
                        decided_by: "eval".into(),
                        ..run::RunOptions::default()
                    },
                );
                match report {
                    Ok(r) => {
                        if record {
                            recorded
                                .judges
                                .insert(scorer.name.clone(), trajectory::answers(&r.events));
                        }
                        result.cost += r.spent.cost;
                        result.tokens += r.spent.tokens;
                        match &r.outcome {
                            Outcome::Completed(v) => judge_score(v),
                            other => {
                                let f = failure_of(other);
                                (0.0, format!("judge failed ({}): {}", f.class, f.message))
                            }
                        }
                    }
                    Err(e) => (0.0, format!("judge failed (setup): {e}")),
                }
            }
        };
        weighted += scorer.weight * score;
        weights += scorer.weight;
        result.scores.push(RowScore {
            name: scorer.name.clone(),
            score,
            reason,
        });
    }
    result.score = if weights > 0.0 {
        weighted / weights
    } else {
        0.0
    };
    result.passed = output.is_some() && result.score + 1e-9 >= eval.threshold;
    (result, recorded)
}

fn failure_of(outcome: &Outcome) -> Failure {
    let (class, message) = match outcome {
        Outcome::Failed(e) => (e.class.label().to_string(), e.to_string()),
        Outcome::Exhausted(e) => ("budget".to_string(), e.to_string()),
        Outcome::Waiting(g) => (
            "waiting".to_string(),
            format!(
                "waits for gate(s) {}",
                g.iter()
                    .map(|g| g.gate.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Outcome::Rejected => ("rejected".to_string(), "a gate was rejected".to_string()),
        Outcome::Store(e) => ("store".to_string(), e.to_string()),
        Outcome::TraceFailed { error, .. } => ("trace".to_string(), error.clone()),
        Outcome::Interrupted => ("interrupted".to_string(), "interrupted".to_string()),
        Outcome::Completed(_) => ("none".to_string(), String::new()),
    };
    Failure { class, message }
}

/// The values a scorer expression reads, by parameter index
/// (`ir::SCORER_SCOPE`).
struct ScorerScope([Value; 4]);

impl run::eval::Scope for ScorerScope {
    fn param(&self, index: usize) -> Option<&Value> {
        self.0.get(index)
    }
    fn step(&self, _node: petgraph::graph::NodeIndex) -> Option<&Value> {
        None
    }
    fn env(&self, _name: &str) -> Option<String> {
        None
    }
}

fn expr_score(sources: &Sources, e: &crate::ir::Expr, scope: &ScorerScope) -> (f64, String) {
    let text = sources.text(e.span);
    match run::eval::eval(e, scope) {
        Ok(Value::Bool(b)) => (if b { 1.0 } else { 0.0 }, format!("`{text}` is {b}")),
        Ok(Value::Number(n)) => match n.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => (x, format!("`{text}` = {x}")),
            _ => (0.0, format!("`{text}` = {n}, outside [0, 1]: scored 0")),
        },
        Ok(other) => (0.0, format!("`{text}` = {other}, not a score: scored 0")),
        Err(err) => (0.0, format!("`{text}` could not be evaluated: {}", err.0)),
    }
}

/// A judge's validated reply: `bool`, or `{ score, reason }`.
fn judge_score(v: &Value) -> (f64, String) {
    match v {
        Value::Bool(b) => (
            if *b { 1.0 } else { 0.0 },
            format!("judged {}", if *b { "pass" } else { "fail" }),
        ),
        _ => (
            v["score"].as_f64().unwrap_or(0.0),
            v["reason"].as_str().unwrap_or("").to_string(),
        ),
    }
}
