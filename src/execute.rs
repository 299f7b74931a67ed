//! The commands that execute programs and inspect runs: `flowc run`,
//! `test`, `trace`, `resume`, `approve`, `reject`, `inbox`, `runs`, `show`.

/// `println!` that ends the process quietly when stdout is closed (`| head`)
/// instead of panicking, as a pipe's reader expects.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(141);
        }
    }};
}

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use flowc::ir::{CallTarget, GivenOutcome, TestGiven};
use flowc::program_cache::{self, CachedProgram};
use flowc::run::{
    self, GateDecision, Outcome, Recording, Report, RunOptions, Script, Scripted, World,
};
use flowc::snapshot::ProgramSnapshot;
use flowc::store::{self, Acquired, Durability, Lease, Store, StoreError};
use flowc::{compile, render, Compilation, Input};

use crate::cli::style;
use crate::ListFormat;

/// Prints a JSON document on stdout (pretty, one document per command).
fn print_json(doc: &Value) {
    out!("{}", serde_json::to_string_pretty(doc).unwrap_or_default());
}

/// Options of `flowc run`.
pub struct RunArgs {
    pub file: PathBuf,
    pub flow: Option<String>,
    pub input: Option<String>,
    pub replay: Option<PathBuf>,
    pub approve: Vec<String>,
    pub reject: Vec<String>,
    pub trace: Option<PathBuf>,
    pub concurrency: usize,
    /// The run store (`.flowc/runs.db` unless told otherwise); `None` for
    /// an ephemeral run (`--ephemeral`), which keeps nothing.
    pub store: Option<PathBuf>,
    /// Continue this stored run (its lease taken) instead of starting one.
    pub resume: Option<(store::RunRecord, Lease)>,
    /// The connection to `store` the lease was taken on, if it is to be
    /// used for the run (`flowc resume`'s): one open of the store less.
    pub connection: Option<Store>,
    /// The store's second connection (the heartbeat's) with the resumed
    /// run's completed steps read on it, being opened and read on a thread
    /// of its own while this one finds the program (`flowc resume`'s).
    pub prefetch: Option<store::Prefetch>,
    /// `--otlp`: the collector to export the trace to.
    pub otlp: Option<String>,
    /// `--by`: who makes the `approve`/`reject` decisions (default: the OS user).
    pub by: Option<String>,
    /// The program a submitted run stores: compiled instead of `file`.
    pub program: Option<ProgramSnapshot>,
    /// Who runs it: a command in a terminal, or a worker.
    pub driver: Driver,
}

/// Who drives a run, which decides how it stops and what it prints.
pub enum Driver {
    /// `flowc run`/`resume`: stops at SIGINT/SIGTERM; prints the output on
    /// stdout and a summary on stderr.
    Command,
    /// `flowc worker`: stops when the worker does (`stop` turns true);
    /// prints one line per run on stderr.
    Worker {
        stop: tokio::sync::watch::Receiver<bool>,
    },
}

pub(crate) fn compiled(inputs: &[Input]) -> Result<Result<Compilation, i32>, String> {
    Ok(checked(compile(inputs).map_err(|e| e.to_string())?))
}

pub(crate) fn run(mut args: RunArgs) -> Result<i32, Failure> {
    // A resume's store, opened once: it looks there for the program kept
    // when the run started before compiling anything. A new run opens its
    // store once its program checked.
    let store = match (&args.store, &args.resume, args.connection.take()) {
        (Some(_), Some(_), Some(open)) => Some(open),
        (Some(path), Some(_), None) => Some(open_store(path)?),
        _ => None,
    };
    if let Some(snapshot) = &args.program {
        let mut read = |path: &str| snapshot.files.get(path).cloned();
        if let Some(kept) = kept_program(&args, store.as_ref(), &snapshot.root, &mut read) {
            return run_kept(args, store, kept);
        }
        let c = flowc::compile_snapshot(snapshot).map_err(|e| e.to_string())?;
        return match checked(c) {
            Ok(c) => {
                let files = Some((snapshot.root.clone(), snapshot.files.clone()));
                run_compiled(args, store, c, files)
            }
            Err(_) => Err(format!(
                "the program stored with run {} does not check under this flowc",
                args.resume.as_ref().map_or("?", |(r, _)| r.id.as_str())
            )
            .into()),
        };
    }
    if args.file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        let source = Input::Text {
            name: "<stdin>".into(),
            bytes,
        };
        return match compiled(&[source])? {
            Ok(c) => run_compiled(args, store, c, None),
            Err(code) => Ok(code),
        };
    }
    // The canonical path, so the program's fingerprint names files the same
    // way whichever folder the run is started or resumed from.
    let path = std::fs::canonicalize(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let root = path.display().to_string();
    let mut read = |path: &str| {
        std::fs::read(path).ok().map(|bytes| {
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
    };
    if let Some(kept) = kept_program(&args, store.as_ref(), &root, &mut read) {
        return run_kept(args, store, kept);
    }
    // A durable run keeps what it compiled: the files it read are recorded.
    let (c, files) = if args.store.is_some() {
        let (c, snapshot) = flowc::snapshot_and_compile(&path).map_err(|e| e.to_string())?;
        (c, Some((root, snapshot.files)))
    } else {
        (
            compile(&[Input::Path(path)]).map_err(|e| e.to_string())?,
            None,
        )
    };
    match checked(c) {
        Ok(c) => run_compiled(args, store, c, files),
        Err(code) => Ok(code),
    }
}

/// The program a resume finds kept in the run store, when it still holds
/// (see `flowc::program_cache`) and its fingerprint is the run's: run as
/// it is, without compiling. `None` for a new run, or whenever the resume
/// should compile (nothing kept, a file changed, another flowc, a damaged
/// entry, a changed program, which compiling then reports as it always
/// did).
fn kept_program(
    args: &RunArgs,
    store: Option<&Store>,
    root: &str,
    read: &mut dyn FnMut(&str) -> Option<String>,
) -> Option<CachedProgram> {
    let ((record, _), store) = (args.resume.as_ref()?, store?);
    let found = (|| {
        let text = read(root).ok_or("the file is unreadable")?;
        let key = program_cache::key(root, &text).ok_or("this flowc keeps no programs")?;
        let bytes = store
            .cached_program(&key)
            .map_err(|_| "the store could not read it")?
            .ok_or("none was kept")?;
        // The root is checked against the text its key was made from, not
        // read a second time.
        let mut root_text = Some(text);
        let mut read_once = |path: &str| match root_text.take() {
            Some(text) if path == root => Some(text),
            unused => {
                root_text = unused;
                read(path)
            }
        };
        let kept =
            program_cache::decode(&bytes, &mut read_once).map_err(|miss| miss.to_string())?;
        if !run::fingerprint::changes(&record.program, &kept.fingerprint).is_empty() {
            return Err("it is not the program the run started with".into());
        }
        Ok::<_, String>(kept)
    })();
    if style::verbose() {
        match &found {
            Ok(_) => eprintln!("program: kept in the run store, not compiled again"),
            Err(why) => eprintln!("program: compiled ({why})"),
        }
    }
    found.ok()
}

/// Runs a program kept in the run store. `flowc resume` exits when the run
/// ends, so its program is left for the exit to free: dropping a large one
/// (every step's names and expressions, one allocation each) was 7% of a
/// 10,000-step resume's CPU time. A worker, which runs on, drops it.
fn run_kept(args: RunArgs, store: Option<Store>, kept: CachedProgram) -> Result<i32, Failure> {
    let exits = matches!(args.driver, Driver::Command);
    let CachedProgram {
        program,
        fingerprint,
    } = kept;
    let result = run_program(args, store, &program, fingerprint, None);
    if exits {
        std::mem::forget(program);
    }
    result
}

/// A compilation with its diagnostics printed when it has errors.
fn checked(c: Compilation) -> Result<Compilation, i32> {
    if c.program.is_none() {
        let color = style::stderr_color();
        for d in c.problems.sorted() {
            eprint!("{}", render::human(&c.sources, d, color));
        }
        eprintln!("the program has errors; `flowc check` shows them all");
        return Err(1);
    }
    Ok(c)
}

/// The flow to run: `--flow`, or the one flow the root file declares.
fn choose_flow(c: &Compilation, file: &Path, asked: Option<String>) -> Result<String, String> {
    flowc::submit::choose_flow(c, &file.display().to_string(), asked)
}

/// `--input`: a JSON object, or `@FILE` holding one.
fn parse_input(text: &str) -> Result<Value, String> {
    let text = match text.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?
        }
        None => text.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| format!("--input is not JSON: {e}"))
}

/// Runs a compiled program; a durable run keeps it in the store first
/// (`files`: the root's path and every file the compilation read), so a
/// resume finds it without compiling.
fn run_compiled(
    args: RunArgs,
    store: Option<Store>,
    c: Compilation,
    files: Option<(String, BTreeMap<String, String>)>,
) -> Result<i32, Failure> {
    let Some(checked) = &c.program else {
        return Ok(1);
    };
    let program = run::fingerprint::fingerprint(&c.sources, &c.modules);
    let compiled = Compiled {
        compilation: &c,
        files: files.as_ref(),
    };
    run_program(args, store, checked.sealed(), program, Some(compiled))
}

/// What a program run after compiling adds: the compilation (which names
/// the root file's flows) and, to keep the program for a resume, the root's
/// path and every file read.
struct Compiled<'a> {
    compilation: &'a Compilation,
    files: Option<&'a (String, BTreeMap<String, String>)>,
}

/// Keeps the program for a later resume, once per program: a failure only
/// means that resume compiles.
fn keep_program(
    store: &Store,
    sealed: &flowc::exec::Program,
    fingerprint: &Value,
    root: &str,
    files: &BTreeMap<String, String>,
) {
    let Some(key) = files
        .get(root)
        .and_then(|text| program_cache::key(root, text))
    else {
        return;
    };
    if store.has_cached_program(&key).unwrap_or(true) {
        return;
    }
    if let Some(bytes) = program_cache::encode(sealed, fingerprint, files) {
        let _ = store.keep_program(&key, &bytes);
    }
}

/// Runs `sealed`, whose run fingerprint is `program`. `compiled`: the
/// compilation it came from, which names the root file's flows when none
/// is asked for; `None` for a program kept in the store (a resume, which
/// runs the flow its run recorded).
fn run_program(
    args: RunArgs,
    store: Option<Store>,
    sealed: &flowc::exec::Program,
    program: Value,
    compiled: Option<Compiled<'_>>,
) -> Result<i32, Failure> {
    let recording = match &args.replay {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Some(Recording::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let chosen = args
        .flow
        .clone()
        .or_else(|| recording.as_ref().and_then(|r| r.flow.clone()));
    let flow = match &compiled {
        Some(c) => choose_flow(c.compilation, &args.file, chosen)?,
        None => chosen.ok_or_else(|| "a kept program runs the flow its run names".to_string())?,
    };
    let input: Value = match &args.input {
        Some(text) => parse_input(text)?,
        None => recording.as_ref().map_or(Value::Null, |r| r.input.clone()),
    };
    let mut gates = HashMap::new();
    let world = match recording {
        Some(r) => {
            gates.extend(r.gates);
            World::Scripted(r.script)
        }
        None => World::Live,
    };
    for g in &args.approve {
        gates.insert(g.clone(), GateDecision::Approve(None));
    }
    for g in &args.reject {
        gates.insert(
            g.clone(),
            GateDecision::Reject("rejected on the command line".into()),
        );
    }
    let run_id = match &args.resume {
        Some((r, _)) => r.id.clone(),
        None => run::new_run_id(),
    };
    let ephemeral = args.store.is_none();
    let trace_path = match (&args.resume, &args.store) {
        (Some((r, _)), _) => Some(PathBuf::from(&r.trace)),
        // An ephemeral run writes a trace only where it is told to.
        (None, None) => args.trace.clone(),
        (None, Some(_)) => Some(args.trace.clone().unwrap_or_else(|| {
            PathBuf::from(".flowc/runs")
                .join(&run_id)
                .join("trace.jsonl")
        })),
    };
    if let Some((r, _)) = &args.resume {
        let changes = run::fingerprint::changes(&r.program, &program);
        if !changes.is_empty() {
            return Err(format!(
                "run {} cannot resume: its program changed since it started ({}); start a new run, or restore the program",
                r.id,
                changes.join("; ")
            ).into());
        }
    }
    // A stored run: recorded, leased and checkpointed; an ephemeral one is
    // neither, so nothing outlives the process.
    let store = match (store, &args.store) {
        (None, Some(path)) => Some(open_store(path)?),
        (store, _) => store,
    };
    if let (Some(store), Some((root, files))) = (&store, compiled.as_ref().and_then(|c| c.files)) {
        keep_program(store, sealed, &program, root, files);
    }
    let (durable, heartbeat) = match store {
        None => (None, None),
        Some(store) => {
            let (record, lease) = match args.resume.clone() {
                Some(resumed) => resumed,
                None => (
                    store::RunRecord::starting(
                        run_id.clone(),
                        std::fs::canonicalize(&args.file)
                            .unwrap_or_else(|_| args.file.clone())
                            .display()
                            .to_string(),
                        flow.clone(),
                        program,
                        input.clone(),
                        trace_path
                            .as_ref()
                            .map_or(String::new(), |p| p.display().to_string()),
                        args.replay.as_ref().map(|p| {
                            std::fs::canonicalize(p)
                                .unwrap_or_else(|_| p.clone())
                                .display()
                                .to_string()
                        }),
                    ),
                    Lease::new_run(&run_id),
                ),
            };
            // Renews the lease while the run is live, on a connection of its
            // own: opened here, or by the prefetch, which reads the resumed
            // run's steps on it first (the run waits for them where it
            // needs them).
            let (heartbeat, texts) = match args.prefetch {
                Some(prefetch) => {
                    let (heartbeat, texts) = prefetch.heartbeat()?;
                    (heartbeat, Some(texts))
                }
                None => (
                    store::Heartbeat::start(store.reopen()?, lease.clone()),
                    None,
                ),
            };
            let durable = run::DurableRun {
                store,
                record,
                resume: args.resume.is_some(),
                lease,
                texts,
            };
            (Some(durable), Some(heartbeat))
        }
    };
    let worker = matches!(args.driver, Driver::Worker { .. });
    let progress = if worker { None } else { progress_display() };
    let options = RunOptions {
        // The trace goes to its file (or nowhere, `--ephemeral`): nothing
        // here reads the events back, so none is kept in memory.
        keep_events: false,
        observer: progress.as_ref().map(|bar| {
            let bar = bar.clone();
            let steps = std::sync::atomic::AtomicU64::new(0);
            let cost = std::sync::Mutex::new(0.0f64);
            Box::new(move |e: &Value| {
                let kind = e["kind"].as_str().unwrap_or("");
                if matches!(kind, "tool_call" | "model_call" | "check" | "gate") {
                    steps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let mut total = cost.lock().unwrap_or_else(|p| p.into_inner());
                if kind == "model_call" {
                    *total += e["cost"].as_f64().unwrap_or(0.0);
                }
                bar.set_message(format!(
                    "{} steps, {} — {kind} {}",
                    steps.load(std::sync::atomic::Ordering::Relaxed),
                    flowc::exec::dollars(*total),
                    e["name"].as_str().unwrap_or("")
                ));
            }) as run::trace::Observer
        }),
        concurrency: args.concurrency,
        trace_path: trace_path.clone(),
        gates,
        decided_by: args.by.clone().unwrap_or_else(run::os_user),
        world,
        run_id: Some(run_id),
        durable,
        interruptible: !worker,
        stop: match &args.driver {
            Driver::Worker { stop } => Some(stop.clone()),
            Driver::Command => None,
        },
        hold_lease_on_store_failure: worker,
        otlp: run::otel::OtlpSettings::resolve(args.otlp.as_deref(), &|name: &str| {
            std::env::var(name).ok()
        }),
        ..RunOptions::default()
    };
    let started = std::time::Instant::now();
    let report = run::run_sealed(sealed, &flow, input, options);
    drop(heartbeat);
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let report = report.map_err(|e| e.to_string())?;
    if worker {
        // One line per run: the worker's log.
        let detail = match &report.outcome {
            Outcome::Failed(e) => format!(": {e}"),
            Outcome::Exhausted(e) => format!(": {e}"),
            Outcome::Store(e) => format!(": {e}"),
            Outcome::TraceFailed { error, stood } => {
                format!(": {}", run::trace_failed_message(error, *stood))
            }
            _ => String::new(),
        };
        eprintln!(
            "run {} {} in {:.2}s (flow `{flow}`){detail}",
            report.run_id,
            report.outcome.status().as_str(),
            started.elapsed().as_secs_f64()
        );
        return Ok(report.outcome.exit_code());
    }
    match &report.outcome {
        Outcome::Completed(v) => {
            out!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
        }
        Outcome::Failed(e) => eprintln!("error: {e}"),
        Outcome::Exhausted(e) => {
            eprintln!("stopped: {e}");
            let completed: Vec<&str> = report.completed.iter().collect();
            eprintln!("completed: {}", list(&completed));
        }
        Outcome::Waiting(gates) => {
            for g in gates {
                eprintln!(
                    "waiting: gate `{}` in flow `{}`{} shows:",
                    g.gate,
                    g.flow,
                    if g.path.is_empty() {
                        String::new()
                    } else {
                        format!(" at {}", g.path)
                    }
                );
                for v in &g.show {
                    eprintln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
                }
            }
            if ephemeral {
                eprintln!("an ephemeral run keeps nothing to resume: decide with `--approve GATE` or `--reject GATE` on `flowc run`");
            } else {
                eprintln!(
                    "decide with `flowc approve {id} GATE` or `flowc reject {id} GATE --reason …`, then `flowc resume {id}`",
                    id = report.run_id
                );
            }
        }
        Outcome::Rejected => {
            eprintln!("rejected: a gate was rejected and the flow's result depended on it")
        }
        Outcome::Interrupted if ephemeral => eprintln!("interrupted"),
        Outcome::Interrupted => eprintln!(
            "interrupted: continue it with `flowc resume {}`",
            report.run_id
        ),
        Outcome::Store(e) => eprintln!("error: {e}"),
        Outcome::TraceFailed { error, stood } => {
            eprintln!("error: {}", run::trace_failed_message(error, *stood))
        }
    }
    if !style::quiet() {
        eprintln!(
            "{}",
            summary(&report, started.elapsed(), trace_path.as_deref())
        );
    }
    Ok(report.outcome.exit_code())
}

/// A spinner on stderr, only when stderr is a terminal.
fn progress_display() -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() || style::quiet() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(bar)
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "nothing".into()
    } else {
        items.join(", ")
    }
}

fn summary(report: &Report, elapsed: std::time::Duration, trace: Option<&Path>) -> String {
    let status = match &report.outcome {
        Outcome::Completed(_) => "completed",
        Outcome::Failed(_) => "failed",
        Outcome::Exhausted(_) => "budget exhausted",
        Outcome::Waiting(_) => "waiting",
        Outcome::Rejected => "rejected",
        Outcome::Interrupted => "interrupted",
        Outcome::Store(_) => "stopped",
        Outcome::TraceFailed { .. } => "trace failed",
    };
    let s = &report.stats;
    let tool_calls = s.tool_calls_ok + s.tool_calls_failed;
    let rate = if tool_calls == 0 {
        100.0
    } else {
        s.tool_calls_ok as f64 * 100.0 / tool_calls as f64
    };
    let trace = trace.map_or(String::new(), |p| format!("\ntrace: {}", p.display()));
    let export = match report.export {
        Some(e) if e.dropped == 0 => format!("\notlp: {} spans exported", e.delivered),
        Some(e) => format!(
            "\notlp: {} spans exported, {} dropped (the collector was unreachable, slow or refused them)",
            e.delivered, e.dropped
        ),
        None => String::new(),
    };
    format!(
        "run {} {status} in {:.2}s: cost {}, {} tokens, {} steps, {} model calls, {} tool calls ({rate:.0}% succeeded), {} retries, {} validation rejections{trace}{export}",
        report.run_id,
        elapsed.as_secs_f64(),
        flowc::exec::dollars(report.spent.cost),
        report.spent.tokens,
        report.spent.steps,
        s.model_calls,
        tool_calls,
        s.retries,
        s.validation_rejections,
    )
}

/// `flowc trace RUN`: a run id (under `.flowc/runs/`) or a trace file.
pub fn trace_command(run: &str, format: ListFormat) -> Result<i32, String> {
    let path = if run == "-" || Path::new(run).is_file() {
        PathBuf::from(run)
    } else {
        PathBuf::from(".flowc/runs").join(run).join("trace.jsonl")
    };
    let text = if run == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        text
    } else {
        std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
    };
    let mut events = Vec::new();
    // A last line without its newline is an event a killed process was
    // writing: said and skipped. Anywhere else a bad line is an error.
    let torn = !text.is_empty() && !text.ends_with('\n');
    let count = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(event) => events.push(event),
            Err(_) if torn && i + 1 == count => eprintln!(
                "warning: {}:{}: the last event is cut off (its process was killed while writing it); skipped",
                path.display(),
                i + 1
            ),
            Err(e) => return Err(format!("{}:{}: not a trace event: {e}", path.display(), i + 1)),
        }
    }
    if format == ListFormat::Json {
        print_json(&serde_json::json!({"version": 1, "events": events}));
        return Ok(0);
    }
    let tree = run::trace::render_tree(&events);
    out!("{}", tree.trim_end());
    Ok(0)
}

/// `flowc test [PATHS…]`: runs every `test` block with its givens in place
/// of the network.
pub fn test_command(inputs: Vec<Input>, format: ListFormat) -> Result<i32, String> {
    let c = match compiled(&inputs)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let Some(checked) = &c.program else {
        return Ok(1);
    };
    let program = checked.program();
    let (mut passed, mut failed) = (0, 0);
    let mut results = Vec::new();
    for test in &program.tests {
        let file = &c.sources.get(test.span.file).name;
        if !c.roots.contains(file) {
            continue;
        }
        let (line, column) = c.sources.get(test.span.file).line_col(test.span.start);
        let started = std::time::Instant::now();
        let result = run_test(checked, &c.sources, test);
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        if format == ListFormat::Json {
            results.push(serde_json::json!({
                "file": file,
                "line": line,
                "column": column,
                "name": test.name,
                "passed": result.is_ok(),
                "failures": match &result {
                    Ok(()) => Vec::new(),
                    Err(why) => why.split("\n\n").map(str::to_string).collect(),
                },
                "millis": millis,
            }));
        }
        match result {
            Ok(()) => {
                passed += 1;
                if format == ListFormat::Human && !style::quiet() {
                    out!("test {file}: {:?} ... ok", test.name);
                }
            }
            Err(why) => {
                failed += 1;
                if format == ListFormat::Human {
                    let indented: Vec<String> = why
                        .lines()
                        .map(|l| {
                            if l.is_empty() {
                                String::new()
                            } else {
                                format!("    {l}")
                            }
                        })
                        .collect();
                    out!(
                        "test {file}: {:?} ... FAILED\n{}",
                        test.name,
                        indented.join("\n")
                    );
                }
            }
        }
    }
    match format {
        ListFormat::Json => print_json(&serde_json::json!({
            "version": 1,
            "tests": results,
            "summary": {"passed": passed, "failed": failed},
        })),
        ListFormat::Human => out!("{passed} passed, {failed} failed"),
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

struct OutputScope(Value);

impl run::eval::Scope for OutputScope {
    fn param(&self, index: usize) -> Option<&Value> {
        (index == 0).then_some(&self.0)
    }
    fn step(&self, _node: petgraph::graph::NodeIndex) -> Option<&Value> {
        None
    }
    fn env(&self, _name: &str) -> Option<String> {
        None
    }
}

fn run_test(
    checked: &flowc::CheckedProgram,
    sources: &flowc::source::Sources,
    test: &flowc::ir::Test,
) -> Result<(), String> {
    let program = checked.program();
    let flow = test.flow.ok_or("the test runs no flow")?;
    let none = OutputScope(Value::Null);
    let mut input = serde_json::Map::new();
    for (name, e) in &test.args {
        input.insert(name.clone(), run::eval::eval(e, &none).map_err(|e| e.0)?);
    }
    let mut script = Script::default();
    let mut gates = HashMap::new();
    for given in &test.givens {
        let answer = |o: &GivenOutcome| -> Result<Scripted, String> {
            Ok(match o {
                GivenOutcome::Returns(e) => {
                    Scripted::Returns(run::eval::eval(e, &none).map_err(|e| e.0)?)
                }
                GivenOutcome::Fails(m) => Scripted::Fails(m.clone()),
            })
        };
        match given {
            TestGiven::Tool { tool, outcome, .. } => script
                .tools
                .entry(program.tools[tool.index()].name.clone())
                .or_default()
                .push_back(answer(outcome)?),
            TestGiven::Model { model, outcome, .. } => script
                .models
                .entry(program.models[model.index()].name.clone())
                .or_default()
                .push_back(answer(outcome)?),
            TestGiven::Agent { agent, outcome, .. } => script
                .agents
                .entry(program.agents[agent.index()].name.clone())
                .or_default()
                .push_back(answer(outcome)?),
            TestGiven::Gate {
                gate,
                approve,
                with,
                reason,
                ..
            } => {
                let decision = if *approve {
                    GateDecision::Approve(match with {
                        Some(e) => Some(run::eval::eval(e, &none).map_err(|e| e.0)?),
                        None => None,
                    })
                } else {
                    GateDecision::Reject(
                        reason
                            .clone()
                            .unwrap_or_else(|| "rejected by the test".into()),
                    )
                };
                gates.insert(gate.clone(), decision);
            }
        }
    }
    let options = RunOptions {
        world: World::Scripted(script),
        gates,
        decided_by: "test".into(),
        breaker: 0,
        env: std::sync::Arc::new(|_: &str| None),
        ..RunOptions::default()
    };
    let flow_name = &program.flows[flow.index()].name;
    let report =
        run::run(checked, flow_name, Value::Object(input), options).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    if let Some(text) = &test.expect_failure {
        match &report.outcome {
            Outcome::Failed(e) => {
                let message = e.to_string();
                if let Some(t) = text {
                    if !message.contains(t.as_str()) {
                        problems.push(format!("the flow failed as expected, but its error does not contain {t:?}: {message}"));
                    }
                }
            }
            Outcome::Completed(v) => problems.push(format!(
                "expected the flow to fail, but it completed with {v}"
            )),
            _ => problems.push("expected the flow to fail, but it stopped otherwise".into()),
        }
    }
    let output = match &report.outcome {
        Outcome::Completed(v) => Some(v.clone()),
        Outcome::Failed(_) if test.expect_failure.is_some() => None,
        Outcome::Failed(e) => {
            problems.push(format!("the flow failed: {e}"));
            None
        }
        Outcome::Exhausted(e) => {
            problems.push(format!("the flow ran out of budget: {e}"));
            None
        }
        Outcome::Waiting(g) => {
            problems.push(format!(
                "the flow waits for gate(s) {} with no `given approve`",
                g.iter()
                    .map(|g| format!("`{}`", g.gate))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            None
        }
        Outcome::Rejected => None,
        Outcome::Interrupted | Outcome::Store(_) | Outcome::TraceFailed { .. } => {
            problems.push("the run stopped before it ended".into());
            None
        }
    };
    if let Some(out) = &output {
        let scope = OutputScope(out.clone());
        for e in &test.expects {
            match run::eval::eval(e, &scope) {
                Ok(Value::Bool(true)) => {}
                Ok(_) => problems.push(crate::cli::expectation::failed(sources, e, &scope, out)),
                Err(err) => problems.push(format!(
                    "{}: expectation could not be evaluated: {}\n  expect {}",
                    crate::cli::expectation::location(sources, e.span),
                    err.0,
                    sources.text(e.span)
                )),
            }
        }
    } else if !test.expects.is_empty() && matches!(report.outcome, Outcome::Rejected) {
        problems.push("the flow was rejected at a gate, so it has no output to check".into());
    }
    for (target, times, _) in &test.expect_calls {
        let name = match target {
            CallTarget::Tool(t) => &program.tools[t.index()].name,
            CallTarget::Agent(a) => &program.agents[a.index()].name,
            CallTarget::Flow(f) => &program.flows[f.index()].name,
        };
        let actual = report.calls.get(name).copied().unwrap_or(0);
        if actual != *times {
            problems.push(format!(
                "expected `{name}` to be called {times} times, it was called {actual} times"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        // A blank line between failures, so a multi-line explanation of one
        // reads as one block (and `--format json` splits them there).
        Err(problems.join("\n\n"))
    }
}

pub(crate) fn open_store(path: &Path) -> Result<Store, Failure> {
    Ok(Store::open(path, durability()?)?)
}

/// Why a command stopped early: a usage problem (exit 2) or the run store
/// (exit 6, [`run::EXIT_STORE`]; 5 when another process holds the run).
pub enum Failure {
    Usage(String),
    Store(StoreError),
    /// Another live process holds the run's lease.
    Leased(String),
}

impl From<String> for Failure {
    fn from(m: String) -> Failure {
        Failure::Usage(m)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

/// The exit status of a command that stopped early, its message on stderr.
pub(crate) fn finish(result: Result<i32, Failure>) -> Result<i32, String> {
    match result {
        Ok(code) => Ok(code),
        Err(Failure::Usage(m)) => Err(m),
        Err(Failure::Store(e)) => {
            eprintln!("error: {e}");
            Ok(match e {
                StoreError::LeaseLost(_) => run::EXIT_LEASED,
                _ => run::EXIT_STORE,
            })
        }
        Err(Failure::Leased(m)) => {
            eprintln!("error: {m}");
            Ok(run::EXIT_LEASED)
        }
    }
}

pub fn run_command(args: RunArgs) -> Result<i32, String> {
    finish(run(args))
}

pub fn resume_command(
    id: &str,
    store_path: &Path,
    approve: Vec<String>,
    reject: Vec<String>,
    wait: bool,
    otlp: Option<String>,
    by: Option<String>,
) -> Result<i32, String> {
    finish(resume(id, store_path, approve, reject, wait, otlp, by))
}

pub fn approve_command(
    run_id: &str,
    gate: &str,
    edit: Option<PathBuf>,
    resume: bool,
    store_path: &Path,
    by: Option<String>,
) -> Result<i32, String> {
    finish(approve(run_id, gate, edit, resume, store_path, by))
}

pub fn reject_command(
    run_id: &str,
    gate: &str,
    reason: &str,
    resume: bool,
    store_path: &Path,
    by: Option<String>,
) -> Result<i32, String> {
    finish(reject(run_id, gate, reason, resume, store_path, by))
}

pub fn inbox_command(store_path: &Path, format: ListFormat) -> Result<i32, String> {
    finish(inbox(store_path, format))
}

pub fn runs_command(
    store_path: &Path,
    status: Option<String>,
    flow: Option<String>,
    since: Option<&str>,
    json: bool,
) -> Result<i32, String> {
    let filter = filter(flow, since, status)?;
    finish(runs(store_path, &filter, json))
}

pub fn stats_command(
    store_path: &Path,
    flow: Option<String>,
    since: Option<&str>,
    json: bool,
) -> Result<i32, String> {
    let filter = filter(flow, since, None)?;
    finish(stats(store_path, &filter, json))
}

/// The runs `--flow`, `--since` and `--status` admit.
fn filter(
    flow: Option<String>,
    since: Option<&str>,
    status: Option<String>,
) -> Result<flowc::stats::Filter, String> {
    let since = match since {
        Some(text) => Some(store::now() - flowc::stats::parse_duration(text)?),
        None => None,
    };
    Ok(flowc::stats::Filter {
        flow,
        since,
        status,
    })
}

pub fn show_command(run_id: &str, store_path: &Path, format: ListFormat) -> Result<i32, String> {
    finish(show(run_id, store_path, format))
}

/// `FLOWC_DURABILITY=normal` trades the last commits on a power cut for
/// fewer fsyncs; the default, `full`, loses nothing that was committed.
pub(crate) fn durability() -> Result<Durability, String> {
    match std::env::var("FLOWC_DURABILITY").as_deref() {
        Err(_) | Ok("full") | Ok("") => Ok(Durability::Full),
        Ok("normal") => Ok(Durability::Normal),
        Ok(other) => Err(format!(
            "FLOWC_DURABILITY must be `full` or `normal`, not `{other}`"
        )),
    }
}

fn find_run(store: &Store, id: &str) -> Result<store::RunRecord, Failure> {
    store.run(id)?.ok_or_else(|| {
        format!("there is no run `{id}` in this store; `flowc runs` lists them").into()
    })
}

/// `flowc resume RUN`: continues a run that crashed, was killed, was
/// interrupted, or waits. Takes the run's lease first: a run another live
/// process drives is refused (exit 5), or waited for with `wait`.
fn resume(
    id: &str,
    store_path: &Path,
    approve: Vec<String>,
    reject: Vec<String>,
    wait: bool,
    otlp: Option<String>,
    by: Option<String>,
) -> Result<i32, Failure> {
    let durability = durability()?;
    // The second connection opens on its own thread while this one opens
    // the first and takes the lease; it reads the run's steps once the
    // lease is ours (below), and stops unread if it never is.
    let prefetch = store::Prefetch::open(store_path.to_path_buf(), durability);
    let store = Store::open(store_path, durability)?;
    let (record, lease) = loop {
        match store.acquire(id, &store::owner_id(), store::lease_ttl())? {
            Acquired::Taken(record, lease) => break (*record, lease),
            Acquired::Missing => {
                return Err(format!(
                    "there is no run `{id}` in this store; `flowc runs` lists them"
                )
                .into())
            }
            Acquired::Held { owner, until } if !wait => {
                return Err(Failure::Leased(format!(
                    "run {id} is being driven by another process ({owner}; its lease runs {:.0}s more unless renewed); wait for it with `flowc resume {id} --wait`",
                    (until - store::now()).max(0.0)
                )))
            }
            Acquired::Held { .. } => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    };
    if record.status == "completed" {
        store.release(&lease)?;
        if wait {
            // Whoever held it finished it meanwhile.
            eprintln!("run {id} completed");
            out!(
                "{}",
                serde_json::to_string_pretty(record.output.as_ref().unwrap_or(&Value::Null))
                    .unwrap_or_default()
            );
            return Ok(0);
        }
        return Err(
            format!("run {id} already completed; `flowc show {id}` shows its steps").into(),
        );
    }
    // The lease is ours: the run's steps are read on the other thread while
    // this one finds the program.
    prefetch.read(lease.clone());
    // A submitted run continues with the program it was submitted with.
    let program = match stored_program(&store, id) {
        Ok(p) => p,
        Err(e) => {
            let _ = store.release(&lease);
            return Err(e);
        }
    };
    let result = run(RunArgs {
        file: PathBuf::from(&record.file),
        flow: Some(record.flow.clone()),
        input: Some(record.input.to_string()),
        replay: record.replay.as_ref().map(PathBuf::from),
        approve,
        reject,
        trace: None,
        concurrency: 32,
        store: Some(store_path.to_path_buf()),
        resume: Some((record, lease.clone())),
        connection: Some(store),
        prefetch: Some(prefetch),
        otlp,
        by,
        program,
        driver: Driver::Command,
    });
    if result.is_err() {
        // Stopped before the run did anything: let the next process have it
        // (the connection went to the run, and is closed).
        if let Ok(store) = open_store(store_path) {
            let _ = store.release(&lease);
        }
    }
    result
}

/// The program stored with a submitted run (`None` for a run `flowc run`
/// started, which reads its file).
pub(crate) fn stored_program(store: &Store, run: &str) -> Result<Option<ProgramSnapshot>, Failure> {
    match store.program(run)? {
        Some(text) => ProgramSnapshot::from_json(&text)
            .map(Some)
            .map_err(|e| format!("run {run}: {e}").into()),
        None => Ok(None),
    }
}

/// `flowc submit FILE`: checks the program and the input, then stores the
/// run, queued, with a snapshot of every file the program was compiled
/// from, for a worker to claim. Calls nothing and needs no secret.
fn submit(
    file: &Path,
    flow: Option<String>,
    input: Option<String>,
    store_path: &Path,
) -> Result<i32, Failure> {
    let path =
        std::fs::canonicalize(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (c, snapshot) = flowc::snapshot_and_compile(&path).map_err(|e| e.to_string())?;
    let c = match checked(c) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let flow = choose_flow(&c, file, flow)?;
    let input = match &input {
        Some(text) => parse_input(text)?,
        None => Value::Null,
    };
    let store = open_store(store_path)?;
    let record = match flowc::submit::submit(&store, &c, &snapshot, flow, input) {
        Ok(record) => record,
        Err(flowc::submit::SubmitError::Invalid(m)) => return Err(m.into()),
        Err(flowc::submit::SubmitError::Store(e)) => return Err(e.into()),
    };
    // Kept for the worker that claims it: it need not compile the snapshot.
    if let Some(checked) = &c.program {
        keep_program(
            &store,
            checked.sealed(),
            &record.program,
            &snapshot.root,
            &snapshot.files,
        );
    }
    let id = &record.id;
    out!("{id}");
    if !style::quiet() {
        eprintln!(
            "submitted run {id} (flow `{}`): a `flowc worker` on this store runs it",
            record.flow
        );
    }
    Ok(0)
}

pub fn submit_command(
    file: &Path,
    flow: Option<String>,
    input: Option<String>,
    store_path: &Path,
) -> Result<i32, String> {
    finish(submit(file, flow, input, store_path))
}

/// The pending gate a name refers to: a gate name, or the key `flowc inbox` shows.
fn pending_gate(store: &Store, run: &str, gate: &str) -> Result<store::GateRecord, Failure> {
    let pending: Vec<store::GateRecord> = store
        .gates(Some(run))?
        .into_iter()
        .filter(|g| g.status == "pending")
        .collect();
    let matching: Vec<&store::GateRecord> = pending
        .iter()
        .filter(|g| g.key == gate || g.gate == gate)
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] if pending.is_empty() => Err(format!("run {run} waits at no gate").into()),
        [] => Err(format!(
            "run {run} does not wait at `{gate}`; it waits at: {}",
            pending
                .iter()
                .map(|g| g.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
        .into()),
        many => Err(format!(
            "`{gate}` waits at {} places; name one: {}",
            many.len(),
            many.iter()
                .map(|g| g.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
        .into()),
    }
}

/// `flowc approve RUN GATE [--edit FILE]`: an edited value must type-check
/// against the gate's type.
fn approve(
    run_id: &str,
    gate: &str,
    edit: Option<PathBuf>,
    resume: bool,
    store_path: &Path,
    by: Option<String>,
) -> Result<i32, Failure> {
    let by = by.unwrap_or_else(run::os_user);
    let store = open_store(store_path)?;
    let record = find_run(&store, run_id)?;
    let g = pending_gate(&store, run_id, gate)?;
    let value = match &edit {
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|e| format!("cannot read standard input: {e}"))?;
                text
            } else {
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            };
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
            // A submitted run's gate types come from the program it runs.
            let c = match stored_program(&store, run_id)? {
                Some(snapshot) => {
                    checked(flowc::compile_snapshot(&snapshot).map_err(|e| e.to_string())?)
                }
                None => compiled(&[Input::Path(PathBuf::from(&record.file))])?,
            };
            let c = match c {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let Some(checked) = &c.program else {
                return Ok(1);
            };
            if let Err(e) = flowc::decision::check_edit(checked.program(), &g.flow, &g.gate, &value)
            {
                match e {
                    flowc::decision::EditError::NoGate { .. } => return Err(e.to_string().into()),
                    flowc::decision::EditError::Invalid { .. } => {
                        eprintln!("error: {e}");
                        return Ok(1);
                    }
                }
            }
            Some(value)
        }
        None => None,
    };
    if !store.decide_gate(run_id, &g.key, true, value.as_ref(), None, &by)? {
        return Err(format!("gate {} of run {run_id} was decided meanwhile", g.key).into());
    }
    eprintln!("approved {} of run {run_id} (by {by})", g.key);
    let submitted = store.program(run_id)?.is_some();
    drop(store);
    if resume {
        return self::resume(
            run_id,
            store_path,
            Vec::new(),
            Vec::new(),
            false,
            None,
            Some(by),
        );
    }
    eprintln!("{}", what_next(run_id, submitted));
    Ok(0)
}

/// What continues a run once its gate is decided.
fn what_next(run_id: &str, submitted: bool) -> String {
    if submitted {
        format!("a `flowc worker` on this store continues run {run_id}")
    } else {
        format!("continue it with `flowc resume {run_id}`")
    }
}

/// `flowc reject RUN GATE --reason TEXT`.
fn reject(
    run_id: &str,
    gate: &str,
    reason: &str,
    resume: bool,
    store_path: &Path,
    by: Option<String>,
) -> Result<i32, Failure> {
    let by = by.unwrap_or_else(run::os_user);
    let store = open_store(store_path)?;
    find_run(&store, run_id)?;
    let g = pending_gate(&store, run_id, gate)?;
    if !store.decide_gate(run_id, &g.key, false, None, Some(reason), &by)? {
        return Err(format!("gate {} of run {run_id} was decided meanwhile", g.key).into());
    }
    eprintln!("rejected {} of run {run_id} (by {by})", g.key);
    let submitted = store.program(run_id)?.is_some();
    drop(store);
    if resume {
        return self::resume(
            run_id,
            store_path,
            Vec::new(),
            Vec::new(),
            false,
            None,
            Some(by),
        );
    }
    eprintln!("{}", what_next(run_id, submitted));
    Ok(0)
}

fn age(at: f64) -> String {
    let s = (store::now() - at).max(0.0);
    match s {
        s if s < 120.0 => format!("{s:.0}s ago"),
        s if s < 7200.0 => format!("{:.0}m ago", s / 60.0),
        s if s < 172_800.0 => format!("{:.0}h ago", s / 3600.0),
        s => format!("{:.0}d ago", s / 86400.0),
    }
}

/// `flowc inbox`: every gate waiting for a decision, and what it shows.
fn inbox(store_path: &Path, format: ListFormat) -> Result<i32, Failure> {
    let store = open_store(store_path)?;
    let pending: Vec<store::GateRecord> = store
        .gates(None)?
        .into_iter()
        .filter(|g| g.status == "pending")
        .collect();
    if format == ListFormat::Json {
        let gates: Vec<Value> = pending.iter().map(gate_json).collect();
        print_json(&serde_json::json!({"version": 1, "gates": gates}));
        return Ok(0);
    }
    if pending.is_empty() {
        out!("no gate is waiting");
    }
    for g in &pending {
        let timeout = match g.timeout_at {
            Some(t) if t > store::now() => format!(
                ", {} on timeout in {:.0} min",
                g.on_timeout,
                (t - store::now()) / 60.0
            ),
            Some(_) => format!(", timed out: {} on resume", g.on_timeout),
            None => String::new(),
        };
        out!(
            "run {}  gate {}  (flow {}, waiting since {}{timeout})",
            g.run_id,
            g.key,
            g.flow,
            age(g.created_at)
        );
        out!(
            "  flowc approve {} {}   |   flowc reject {} {} --reason …",
            g.run_id,
            g.gate,
            g.run_id,
            g.gate
        );
        for v in g.show.as_array().into_iter().flatten() {
            let text = serde_json::to_string_pretty(v).unwrap_or_default();
            for line in text.lines() {
                out!("  │ {line}");
            }
        }
    }
    Ok(0)
}

/// A gate as `--format json` shows it (docs/json-output.md).
fn gate_json(g: &store::GateRecord) -> Value {
    serde_json::json!({
        "run": g.run_id,
        "key": g.key,
        "flow": g.flow,
        "gate": g.gate,
        "status": g.status,
        "show": g.show,
        "value": g.value,
        "reason": g.reason,
        "created_at": g.created_at,
        "timeout_at": g.timeout_at,
        "on_timeout": g.on_timeout,
        "decided_by": g.decided_by,
        "decided_at": g.decided_at,
        "source": g.source.map(store::DecisionSource::as_str),
        "policy_read": g.policy_read,
        "escalated_at": g.escalated_at,
    })
}

/// A run as `--format json` shows it (docs/json-output.md).
fn run_json(r: &store::RunRecord) -> Value {
    serde_json::json!({
        "id": r.id,
        "status": r.status,
        "flow": r.flow,
        "file": r.file,
        "input": r.input,
        "output": r.output,
        "error": r.error,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "spend": r.spend,
        "trace": r.trace,
        "replay": r.replay,
    })
}

/// `flowc runs`: every run in the store, newest first.
fn runs(store_path: &Path, filter: &flowc::stats::Filter, json: bool) -> Result<i32, Failure> {
    let store = open_store(store_path)?;
    let runs: Vec<store::RunRecord> = store
        .runs()?
        .into_iter()
        .filter(|r| filter.admits(r))
        .collect();
    if json {
        let list: Vec<Value> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "flow": r.flow, "status": r.status,
                    "cost": r.spend.cost, "tokens": r.spend.tokens,
                    "steps": r.spend.steps, "tool_calls": r.spend.tool_calls,
                    "created_at": r.created_at, "updated_at": r.updated_at,
                    "error": r.error, "trace": r.trace,
                })
            })
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(0);
    }
    if runs.is_empty() {
        out!("no runs");
        return Ok(0);
    }
    out!(
        "{:<36} {:<17} {:<24} {:<10} {:>7}         {}",
        "RUN",
        "STATUS",
        "FLOW",
        "COST",
        "TOKENS",
        "STARTED"
    );
    for r in runs {
        out!(
            "{:<36} {:<17} {:<24} {:<10} {:>7} tokens  {}",
            r.id,
            r.status,
            r.flow,
            flowc::exec::dollars(r.spend.cost),
            r.spend.tokens,
            age(r.created_at)
        );
    }
    Ok(0)
}

/// `flowc stats`: metrics across the store's runs.
fn stats(store_path: &Path, filter: &flowc::stats::Filter, json: bool) -> Result<i32, Failure> {
    let store = open_store(store_path)?;
    let runs = store.runs()?;
    let mut stats = flowc::stats::compute(&runs, filter, &flowc::stats::trace_events);
    stats.reviews = flowc::stats::review_stats(&store.reviews(None, false)?, &runs, filter);
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&stats).unwrap_or_default()
        );
        return Ok(0);
    }
    let s = &stats.all;
    if s.runs == 0 {
        out!("no runs");
        return Ok(0);
    }
    let statuses: Vec<String> = s
        .by_status
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    out!("runs: {} ({})", s.runs, statuses.join(", "));
    out!(
        "cost per run: p50 {}  p95 {}  max {}  total {}",
        flowc::exec::dollars(s.cost.p50),
        flowc::exec::dollars(s.cost.p95),
        flowc::exec::dollars(s.cost.max),
        flowc::exec::dollars(s.cost.total)
    );
    out!(
        "tokens per run: p50 {}  p95 {}  max {}  total {}",
        s.tokens.p50,
        s.tokens.p95,
        s.tokens.max,
        s.tokens.total
    );
    for (name, t) in &s.tools {
        let failures: Vec<String> = t.failures.iter().map(|(k, v)| format!("{v} {k}")).collect();
        out!(
            "tool {name}: {} calls, {:.1}% succeeded{}",
            t.calls,
            t.success_rate * 100.0,
            if failures.is_empty() {
                String::new()
            } else {
                format!(" (failed: {})", failures.join(", "))
            }
        );
    }
    let g = &s.guardrails;
    out!(
        "guardrail rejections: {} ({:.2} per run): {} invalid outputs, {} invalid tool calls, {} blocked effects, {} budget stops, {} failed checks",
        g.total, g.per_run, g.invalid_outputs, g.invalid_tool_calls, g.blocked_effects, g.budget_stops, g.failed_checks
    );
    out!("retries: {}  fallbacks: {}", s.retries, s.fallbacks);
    if s.gate_wait_seconds.count > 0 {
        out!(
            "gate waits: {}, p50 {:.1}s, max {:.1}s",
            s.gate_wait_seconds.count,
            s.gate_wait_seconds.p50,
            s.gate_wait_seconds.max
        );
    }
    for (flow, f) in &stats.flows {
        let hist: Vec<String> = f
            .step_histogram
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        out!(
            "flow {flow}: {} runs, reliability {:.3} ({} of {} succeeded, budget adherence {:.3}, latency adherence {:.3}), steps per run {}",
            f.runs, f.reliability.score, f.reliability.successful, f.reliability.finished,
            f.reliability.budget_adherence, f.reliability.latency_adherence, hist.join(" ")
        );
    }
    let r = &stats.reviews;
    if r.sampled > 0 {
        out!(
            "policy reviews: {} sampled, {} reviewed ({} agreed, {} disagreed), {} open, agreement {}",
            r.sampled,
            r.reviewed,
            r.agreed,
            r.disagreed,
            r.open,
            percent(r.agreement_rate)
        );
        for (gate, g) in &r.gates {
            out!(
                "gate {gate}: {} sampled, {} reviewed, agreement {}",
                g.sampled,
                g.reviewed,
                percent(g.agreement_rate)
            );
        }
    }
    Ok(0)
}

/// A rate as a percentage, or `n/a` when there was nothing to rate.
fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "n/a".to_string(), |r| format!("{:.1}%", r * 100.0))
}

/// `flowc show RUN`: the state of every step.
fn show(run_id: &str, store_path: &Path, format: ListFormat) -> Result<i32, Failure> {
    let store = open_store(store_path)?;
    let r = find_run(&store, run_id)?;
    if format == ListFormat::Json {
        let mut steps: Vec<(String, Option<Value>)> = store.steps(run_id)?.into_iter().collect();
        steps.sort_by(|a, b| a.0.cmp(&b.0));
        let steps: Vec<Value> = steps
            .into_iter()
            .map(|(key, value)| {
                serde_json::json!({"key": key, "skipped": value.is_none(), "value": value})
            })
            .collect();
        let gates: Vec<Value> = store.gates(Some(run_id))?.iter().map(gate_json).collect();
        print_json(&serde_json::json!({
            "version": 1,
            "run": run_json(&r),
            "steps": steps,
            "gates": gates,
        }));
        return Ok(0);
    }
    out!(
        "run {}: {} (flow `{}` in {}), started {}",
        r.id,
        r.status,
        r.flow,
        r.file,
        age(r.created_at)
    );
    out!(
        "spent: {}, {} tokens, {} steps, {} tool calls",
        flowc::exec::dollars(r.spend.cost),
        r.spend.tokens,
        r.spend.steps,
        r.spend.tool_calls
    );
    out!("input: {}", r.input);
    if let Some(e) = &r.error {
        out!("error: {e}");
    }
    let mut steps: Vec<(String, Option<Value>)> = store.steps(run_id)?.into_iter().collect();
    steps.sort_by(|a, b| a.0.cmp(&b.0));
    out!("completed steps ({}):", steps.len());
    for (key, value) in steps {
        let shown = match value {
            Some(v) => {
                let t = v.to_string();
                if t.chars().count() > 100 {
                    format!("{}…", t.chars().take(100).collect::<String>())
                } else {
                    t
                }
            }
            None => "(skipped)".into(),
        };
        out!("  {key} = {shown}");
    }
    for g in store.gates(Some(run_id))? {
        out!(
            "gate {}: {}{}",
            g.key,
            g.status,
            g.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    if let Some(o) = &r.output {
        out!("output: {o}");
    }
    out!("trace: {}", r.trace);
    Ok(0)
}
