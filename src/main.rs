//! The `flowc` command line.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use flowc::code::Code;
use flowc::{compile, diagnose, flow_files, render, Input};

mod cli;
mod execute;
mod region_allocator;

/// The system allocator, or a region for the batch commands (see
/// `region_allocator.rs`): `main` enables it for `check`, `fmt` and `graph`,
/// whose work is bounded by their input and which exit when done.
#[global_allocator]
static ALLOCATOR: region_allocator::RegionAllocator = region_allocator::RegionAllocator::new();

/// flowc: check and run Flow workflows.
#[derive(Parser)]
#[command(name = "flowc", version, about, long_about = None)]
struct Cli {
    /// Print only results and errors: no summaries, no progress.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Print more: the files read and how long each command took.
    #[arg(long, short, global = true)]
    verbose: bool,
    /// When to colour the output; `auto` follows NO_COLOR, CLICOLOR,
    /// CLICOLOR_FORCE and whether the output is a terminal.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    color: Color,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check .flow files and report every problem found.
    ///
    /// Exit status: 0 when there are no errors (and no warnings with
    /// `--deny warnings`), 1 when problems were found, 2 on usage or I/O errors.
    Check {
        /// Files or folders (searched for *.flow); `-` reads standard input.
        /// Defaults to the current folder.
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Treat warnings as errors (`--deny warnings`).
        #[arg(long, value_name = "warnings")]
        deny: Option<Deny>,
    },
    /// Format .flow files in place in the one canonical layout.
    ///
    /// Exit status: 0 when done (with `--check`: nothing would change), 1
    /// when a file has syntax errors or (with `--check`) would change, 2 on
    /// usage or I/O errors.
    Fmt {
        /// Files or folders (searched for *.flow); `-` reads standard input
        /// and writes standard output. Defaults to the current folder.
        paths: Vec<PathBuf>,
        /// Write nothing; list the files that would change, print a unified
        /// diff of each on stderr, and exit 1 if any.
        #[arg(long)]
        check: bool,
    },
    /// Run a flow: its output as JSON on stdout, a summary on stderr.
    ///
    /// Exit status: 0 success, 1 the flow failed (or was rejected at a gate),
    /// 2 usage error (or missing configuration: nothing was called), 3 a
    /// budget ran out, 4 waiting for an approval, 5 another process holds
    /// the run, 6 the run store failed, 7 the trace could not be written,
    /// 130 interrupted (SIGINT/SIGTERM; resumable).
    Run {
        /// The .flow file; `-` reads standard input (such a run cannot be
        /// resumed, having no file to read again).
        file: PathBuf,
        /// The flow to run (needed when the file declares several).
        #[arg(long)]
        flow: Option<String>,
        /// The flow's parameters as a JSON object, or @FILE.
        #[arg(long)]
        input: Option<String>,
        /// Answer model and tool calls from a recording instead of the
        /// network (offline; see examples/*.replay.json).
        #[arg(long, value_name = "FILE")]
        replay: Option<PathBuf>,
        /// Approve this gate when the run reaches it.
        #[arg(long, value_name = "GATE")]
        approve: Vec<String>,
        /// Reject this gate when the run reaches it.
        #[arg(long, value_name = "GATE")]
        reject: Vec<String>,
        /// Who decides (recorded with each decision); default: the OS user.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// Where to write the trace (default .flowc/runs/RUN/trace.jsonl).
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// Calls in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Also export the trace over OTLP/HTTP to this collector (its base
        /// URL; `/v1/traces` is added). The OTEL_EXPORTER_OTLP_* variables
        /// do the same.
        #[arg(long, value_name = "URL")]
        otlp: Option<String>,
        /// The run store.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
        /// Keep nothing: no run store and no trace file (unless `--trace`).
        /// For tests and benchmarks; such a run cannot be resumed.
        #[arg(long)]
        ephemeral: bool,
    },
    /// Check a program and queue a run of it for `flowc worker`: the checked
    /// program is stored with the run, so a worker on any machine runs
    /// exactly what was submitted. Prints the run id.
    ///
    /// Exit status: 0 queued, 1 the program has errors, 2 usage error (bad
    /// input, unknown flow), 6 the run store failed.
    Submit {
        /// The .flow file.
        file: PathBuf,
        /// The flow to run (needed when the file declares several).
        #[arg(long)]
        flow: Option<String>,
        /// The flow's parameters as a JSON object, or @FILE.
        #[arg(long)]
        input: Option<String>,
        /// The run store the workers share.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
    },
    /// Drive the store's runs: claim runnable work (submitted runs, runs
    /// whose gate was decided or timed out, interrupted runs, runs whose
    /// owner's lease expired), run it under a lease, release it, repeat.
    ///
    /// Stops at SIGINT/SIGTERM: runs in flight end `interrupted` and are
    /// released for another worker. Exit status: 0 stopped by a signal, 2
    /// usage error, 6 the run store could not be opened.
    Worker {
        /// The run store the workers share.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
        /// How often an idle worker looks for work (e.g. 500ms, 2s).
        #[arg(long, default_value = "500ms", value_parser = parse_poll)]
        poll: std::time::Duration,
        /// Runs driven at once by this worker.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
        concurrency: u16,
    },
    /// Serve the run store over HTTP: a JSON API (start runs, list them,
    /// their steps, trace and spend, the inbox, decisions) and a web inbox
    /// for reviewers (docs/team.md). Drives no run: workers do.
    ///
    /// Exit status: 0 stopped by SIGINT/SIGTERM, 2 refused to start (bad
    /// options or token file, a non-loopback address without tokens, an
    /// address that cannot be bound), 6 the run store cannot be opened.
    Serve {
        /// The run store the workers share.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
        /// Where to listen (IP:PORT; port 0 picks a free one). Any address
        /// but a loopback one needs tokens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The reviewers' tokens (JSON; docs/team.md). Without it,
        /// FLOWC_SERVE_TOKENS may hold the same JSON.
        #[arg(long, value_name = "FILE")]
        tokens: Option<PathBuf>,
    },
    /// Continue a run that crashed, was killed, or waited for an approval.
    /// No completed step runs again; no model is called again for one.
    Resume {
        /// The run id (`flowc runs` lists them).
        run: String,
        /// Approve this gate if the run reaches it.
        #[arg(long, value_name = "GATE")]
        approve: Vec<String>,
        /// Reject this gate if the run reaches it.
        #[arg(long, value_name = "GATE")]
        reject: Vec<String>,
        /// Who decides (recorded with each decision); default: the OS user.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// If another live process drives the run, wait until it stops
        /// (instead of exiting 5), then continue the run if it is unfinished.
        #[arg(long)]
        wait: bool,
        /// Also export the trace over OTLP/HTTP to this collector (its base
        /// URL; `/v1/traces` is added). The OTEL_EXPORTER_OTLP_* variables
        /// do the same.
        #[arg(long, value_name = "URL")]
        otlp: Option<String>,
        /// The run store.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
    },
    /// Approve a gate a run waits at (optionally with an edited value that
    /// must type-check against the gate's type).
    Approve {
        /// The run id (`flowc runs` lists them).
        run: String,
        /// The gate's name, or its key as `flowc inbox` shows it.
        gate: String,
        /// A JSON file with the value to continue with instead of the shown
        /// one; `-` reads standard input.
        #[arg(long, value_name = "FILE")]
        edit: Option<PathBuf>,
        /// Resume the run right away.
        #[arg(long)]
        resume: bool,
        /// Who decides (recorded with each decision); default: the OS user.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// The run store.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
    },
    /// Reject a gate a run waits at: what depends on it is skipped.
    Reject {
        /// The run id (`flowc runs` lists them).
        run: String,
        /// The gate's name, or its key as `flowc inbox` shows it.
        gate: String,
        /// Why, for the record.
        #[arg(long)]
        reason: String,
        /// Resume the run right away.
        #[arg(long)]
        resume: bool,
        /// Who decides (recorded with each decision); default: the OS user.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// The run store.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
    },
    /// List the cases a gate's policy decided that were sampled for review
    /// (`sample …`), not reviewed yet (every one with `--all`).
    Reviews {
        /// Every sampled case, reviewed or not.
        #[arg(long)]
        all: bool,
        /// Output format (JSON schema in docs/json-output.md).
        #[arg(long, value_enum, default_value_t = ListFormat::Human)]
        format: ListFormat,
        /// The run store.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
    },
    /// Mark a sampled policy decision agreed or not (`flowc stats` reports
    /// the agreement rate).
    Review {
        /// The run id (`flowc reviews` lists the sampled cases).
        run: String,
        /// The gate's name, or its key as `flowc reviews` shows it.
        gate: String,
        /// You would have decided the same.
        #[arg(
            long,
            conflicts_with = "disagree",
            required_unless_present = "disagree"
        )]
        agree: bool,
        /// You would not have: the policy may have drifted.
        #[arg(long)]
        disagree: bool,
        /// Who reviewed (recorded); default: the OS user.
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// Why, for the record.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        /// The run store.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
    },
    /// List the gates waiting for a decision, and what each shows.
    Inbox {
        /// Output format (JSON schema in docs/json-output.md).
        #[arg(long, value_enum, default_value_t = ListFormat::Human)]
        format: ListFormat,
        /// The run store.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
    },
    /// List runs, newest first: status, flow, cost, tokens, age.
    Runs {
        /// Only runs with this status (completed, failed, budget_exhausted,
        /// waiting, rejected, queued, running, interrupted, trace_failed).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Only runs started within this long (7d, 12h, 30m).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        #[arg(long, value_enum, default_value_t = ListFormat::Human)]
        format: ListFormat,
        /// The run store.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
    },
    /// Metrics across the runs of a store: cost and tokens per run, tool
    /// success rates, step counts, guardrail rejections, retries, gate
    /// waits, reliability (docs/observability.md defines each).
    Stats {
        /// Only runs of this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Only runs started within this long (7d, 12h, 30m).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        #[arg(long, value_enum, default_value_t = ListFormat::Human)]
        format: ListFormat,
        /// The run store.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
    },
    /// Show the state of every step of a run.
    Show {
        /// The run id (`flowc runs` lists them).
        run: String,
        /// Output format (JSON schema in docs/json-output.md).
        #[arg(long, value_enum, default_value_t = ListFormat::Human)]
        format: ListFormat,
        /// The run store.
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
    },
    /// Run the `test` blocks of .flow files, with their givens in place of
    /// the network.
    Test {
        /// Files or folders; `-` reads standard input. Defaults to the
        /// current folder.
        paths: Vec<PathBuf>,
        /// Output format (JSON schema in docs/json-output.md).
        #[arg(long, value_enum, default_value_t = ListFormat::Human)]
        format: ListFormat,
    },
    /// Run the `eval` blocks of .flow files: every row through the real
    /// flow (a durable run with its own trace), scored, summarised.
    ///
    /// Exit status: 0 every eval reached its threshold (and nothing
    /// regressed against `--baseline`), 1 one did not (or regressed), 2
    /// usage error.
    Eval {
        /// Files or folders; `-` reads standard input. Defaults to the
        /// current folder.
        paths: Vec<PathBuf>,
        /// Output format (JSON schema in docs/evals.md).
        #[arg(long, value_enum, default_value_t = ListFormat::Human)]
        format: ListFormat,
        /// Also write the results as JUnit XML to FILE.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Compare with an earlier eval: its id, `latest`, or a results
        /// file (`--format json` output).
        #[arg(long, value_name = "REF")]
        baseline: Option<String>,
        /// How much a row's or scorer's score may drop before it counts as
        /// a regression.
        #[arg(long, default_value_t = 0.05)]
        tolerance: f64,
        /// Keep every model and tool answer in FILE, to replay offline.
        #[arg(long, value_name = "FILE", conflicts_with = "replay")]
        record: Option<PathBuf>,
        /// Answer every model and tool call from a recording (`--record`):
        /// no network, no keys, deterministic.
        #[arg(long, value_name = "FILE")]
        replay: Option<PathBuf>,
        /// The run store (eval results are kept beside it, in `evals/`).
        #[arg(long, env = "FLOWC_STORE", default_value = ".flowc/runs.db")]
        store: PathBuf,
        /// Keep nothing: rows run without the store, results are not kept.
        #[arg(long)]
        ephemeral: bool,
    },
    /// Print a run's trace as a tree with timings and cost.
    Trace {
        /// A run id (`flowc runs` lists them), a trace file, or `-` for a
        /// trace on standard input.
        run: String,
        /// Output format (JSON schema in docs/json-output.md).
        #[arg(long, value_enum, default_value_t = ListFormat::Human)]
        format: ListFormat,
    },
    /// Explain a diagnostic code, with a wrong and a right example.
    Explain {
        /// A code such as A001, or its name such as ungated-irreversible.
        code: Option<String>,
        /// List every code.
        #[arg(long)]
        list: bool,
    },
    /// MCP tool servers: `flowc mcp lock FILE` records their tools' schemas.
    Mcp {
        #[command(subcommand)]
        action: McpCommand,
    },
    /// Print the JSON Schemas of a file's types and tool signatures.
    Schema {
        /// The .flow file; `-` reads standard input.
        file: PathBuf,
    },
    /// Draw a flow's step graph: step kinds, approval gates and effects marked.
    ///
    /// Exit status: 0 when drawn, 1 when the file has errors, 2 on usage or
    /// I/O errors (including a missing or unknown `--flow`).
    Graph {
        /// The .flow file; `-` reads standard input.
        file: PathBuf,
        /// The flow to draw; needed when the file defines several.
        #[arg(long)]
        flow: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Start a project: a starter .flow file with a test, a recording to
    /// run it offline, and a pre-commit configuration.
    Init {
        /// The folder to create the files in (created if missing; default
        /// the current folder). Existing files are never overwritten.
        dir: Option<PathBuf>,
    },
    /// Print a shell completion script, e.g. `flowc completions bash >
    /// ~/.local/share/bash-completion/completions/flowc`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Run the language server on standard input and output, for editors
    /// (editors/README.md says how to set each one up).
    Lsp,
}

/// Output of the listing commands (`runs`, `stats`, `show`, `inbox`,
/// `trace`, `test`).
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum McpCommand {
    /// Start every MCP server FILE declares, list its tools and write their
    /// schemas to FILE's lock file (`review.flow` → `review.mcp.lock`), which
    /// `flowc check` compares declared types with and `flowc run` compares
    /// the live servers with. Commit it like any lockfile.
    ///
    /// Exit status: 0 when written, 1 when the file has errors or a server
    /// could not be started or listed, 2 on usage or I/O errors.
    Lock {
        /// The .flow file.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Rich diagnostics with source excerpts, on stderr.
    Human,
    /// `file:line:col: severity[CODE]: message`, one line each, on stdout
    /// (columns count characters); for editors and `errorformat`.
    Short,
    /// GitHub Actions workflow commands (`::error file=…::…`) on stdout.
    Github,
    /// One JSON document on stdout (docs/json-output.md).
    Json,
    /// SARIF 2.1.0 on stdout, for code scanning.
    Sarif,
}

#[derive(Clone, Copy, ValueEnum)]
enum Deny {
    Warnings,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

fn main() {
    let cli = Cli::parse();
    cli::style::configure(
        match cli.color {
            Color::Auto => anstream::ColorChoice::Auto,
            Color::Always => anstream::ColorChoice::Always,
            Color::Never => anstream::ColorChoice::Never,
        },
        match (cli.quiet, cli.verbose) {
            (true, _) => cli::style::Verbosity::Quiet,
            (_, true) => cli::style::Verbosity::Verbose,
            _ => cli::style::Verbosity::Normal,
        },
    );
    if matches!(
        cli.command,
        Command::Check { .. } | Command::Fmt { .. } | Command::Graph { .. }
    ) {
        ALLOCATOR.enable();
        ALLOCATOR.populate_ahead();
    }
    let result = match cli.command {
        Command::Check {
            paths,
            format,
            deny,
        } => check(paths, format, deny.is_some()),
        Command::Explain { code, list } => explain(code, list),
        Command::Fmt { paths, check } => flowc::format::run(paths, check),
        Command::Run {
            file,
            flow,
            input,
            replay,
            approve,
            reject,
            by,
            trace,
            concurrency,
            otlp,
            store,
            ephemeral,
        } => execute::run_command(execute::RunArgs {
            file,
            flow,
            input,
            replay,
            approve,
            reject,
            trace,
            concurrency,
            store: (!ephemeral).then_some(store),
            resume: None,
            connection: None,
            prefetch: None,
            otlp,
            by,
            program: None,
            driver: execute::Driver::Command,
        }),
        Command::Submit {
            file,
            flow,
            input,
            store,
        } => execute::submit_command(&file, flow, input, &store),
        Command::Worker {
            store,
            poll,
            concurrency,
        } => cli::worker::run(&store, poll, usize::from(concurrency)),
        Command::Serve {
            store,
            listen,
            tokens,
        } => execute::durability().and_then(|durability| {
            flowc::serve::run(flowc::serve::Options {
                store,
                listen,
                tokens,
                durability,
            })
        }),
        Command::Resume {
            run,
            approve,
            reject,
            by,
            wait,
            otlp,
            store,
        } => execute::resume_command(&run, &store, approve, reject, wait, otlp, by),
        Command::Approve {
            run,
            gate,
            edit,
            resume,
            by,
            store,
        } => execute::approve_command(&run, &gate, edit, resume, &store, by),
        Command::Reject {
            run,
            gate,
            reason,
            resume,
            by,
            store,
        } => execute::reject_command(&run, &gate, &reason, resume, &store, by),
        Command::Inbox { format, store } => execute::inbox_command(&store, format),
        Command::Reviews { all, format, store } => cli::review::list_command(&store, all, format),
        Command::Review {
            run,
            gate,
            agree,
            disagree: _,
            by,
            note,
            store,
        } => {
            let verdict = if agree {
                flowc::store::Verdict::Agree
            } else {
                flowc::store::Verdict::Disagree
            };
            cli::review::mark_command(&store, &run, &gate, verdict, by, note)
        }
        Command::Runs {
            status,
            flow,
            since,
            format,
            store,
        } => execute::runs_command(
            &store,
            status,
            flow,
            since.as_deref(),
            format == ListFormat::Json,
        ),
        Command::Stats {
            flow,
            since,
            format,
            store,
        } => execute::stats_command(&store, flow, since.as_deref(), format == ListFormat::Json),
        Command::Show { run, format, store } => execute::show_command(&run, &store, format),
        Command::Test { paths, format } => {
            inputs(paths).and_then(|inputs| execute::test_command(inputs, format))
        }
        Command::Eval {
            paths,
            format,
            junit,
            baseline,
            tolerance,
            record,
            replay,
            store,
            ephemeral,
        } => inputs(paths).and_then(|inputs| {
            cli::eval::run(cli::eval::EvalArgs {
                inputs,
                format,
                junit,
                baseline,
                tolerance,
                record,
                replay,
                store: (!ephemeral).then_some(store),
            })
        }),
        Command::Trace { run, format } => execute::trace_command(&run, format),
        Command::Mcp {
            action: McpCommand::Lock { file },
        } => flowc::mcp::lock_command(&file),
        Command::Schema { file } => schema(file),
        Command::Graph { file, flow, format } => graph(file, flow, format),
        Command::Lsp => flowc::lsp::serve_stdio(),
        Command::Init { dir } => cli::init::run(dir.unwrap_or_else(|| PathBuf::from("."))),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "flowc", &mut std::io::stdout());
            Ok(0)
        }
    };
    let code = match result {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "error: {message}");
            2
        }
    };
    // Exiting here skips freeing the program's memory one allocation at a
    // time, a measurable share of a large check; the OS reclaims it at once.
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// `--poll`: a duration such as `500ms`, `2s` or `1m`.
fn parse_poll(text: &str) -> Result<std::time::Duration, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(format!("`{text}`: give a unit, as in 500ms, 2s or 1m"));
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (500ms, 2s, 1m)"))?;
    if !n.is_finite() || n <= 0.0 || n * scale > 3600.0 {
        return Err(format!(
            "`{text}`: the poll interval must be above 0 and at most 1h"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(n * scale))
}

/// Turns command-line paths into compiler inputs.
fn inputs(paths: Vec<PathBuf>) -> Result<Vec<Input>, String> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths
    };
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(stdin_input()?);
        } else if p.is_dir() {
            let files = flow_files(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            if files.is_empty() {
                return Err(format!("no .flow files in {}", p.display()));
            }
            out.extend(files.into_iter().map(Input::Path));
        } else if p.exists() {
            out.push(Input::Path(p));
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    Ok(out)
}

/// Standard input as a compiler input named `<stdin>`.
fn stdin_input() -> Result<Input, String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(Input::Text {
        name: "<stdin>".into(),
        bytes,
    })
}

/// One file argument as a compiler input; `-` is standard input.
fn file_input(file: PathBuf) -> Result<Input, String> {
    if file.as_os_str() == "-" {
        stdin_input()
    } else {
        Ok(Input::Path(file))
    }
}

fn check(paths: Vec<PathBuf>, format: Format, deny_warnings: bool) -> Result<i32, String> {
    let started = std::time::Instant::now();
    let inputs = inputs(paths)?;
    let (mut compilation, sealed) = diagnose(&inputs).map_err(|e| e.to_string())?;
    if cli::style::verbose() {
        for root in &compilation.roots {
            eprintln!("checked {root}");
        }
        eprintln!(
            "{} source files read (with `use`d files and the standard library) in {:.1?}",
            compilation.sources.iter().count(),
            started.elapsed()
        );
    }
    if deny_warnings {
        compilation.problems.deny_warnings();
    }
    let problems = compilation.problems.sorted();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = match format {
        Format::Json => {
            let doc = render::json(&compilation.sources, &compilation.roots, &problems);
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            )
        }
        Format::Sarif => {
            let doc = render::sarif(&compilation.sources, &problems);
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            )
        }
        Format::Short => problems
            .iter()
            .try_for_each(|d| write!(out, "{}", render::short(&compilation.sources, d))),
        Format::Github => problems
            .iter()
            .try_for_each(|d| write!(out, "{}", render::github(&compilation.sources, d))),
        Format::Human => {
            let use_color = cli::style::stderr_color();
            let stderr = std::io::stderr();
            let mut err = stderr.lock();
            for d in &problems {
                let _ = write!(err, "{}", render::human(&compilation.sources, d, use_color));
            }
            let errors = compilation.problems.errors.len();
            let warnings = compilation.problems.warnings.len();
            let files = compilation.roots.len();
            let files = format!("{files} file{}", if files == 1 { "" } else { "s" });
            if cli::style::quiet() {
                Ok(())
            } else if errors + warnings == 0 {
                writeln!(err, "checked {files}: no problems")
            } else {
                writeln!(
                    err,
                    "checked {files}: {}, {}",
                    count(errors, "error"),
                    count(warnings, "warning")
                )
            }
        }
    };
    written.map_err(|e| format!("cannot write the report: {e}"))?;
    let status = if compilation.problems.has_errors() {
        1
    } else {
        0
    };
    // The process ends here: freeing the program node by node took 3% of
    // checking a large file, and the OS takes the memory back whole.
    std::mem::forget(compilation);
    std::mem::forget(sealed);
    Ok(status)
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn explain(code: Option<String>, list: bool) -> Result<i32, String> {
    let mut out = std::io::stdout().lock();
    if list || code.is_none() {
        for c in Code::ALL {
            let severity = match c.severity() {
                flowc::code::Severity::Error => "error",
                flowc::code::Severity::Warning => "warning",
            };
            writeln!(
                out,
                "{}  {:<26} {:<8} {}",
                c.as_str(),
                c.slug(),
                severity,
                c.summary()
            )
            .map_err(|e| e.to_string())?;
        }
        return Ok(0);
    }
    let text = code.unwrap_or_default();
    match Code::parse(&text) {
        Some(c) => {
            write!(out, "{}", c.explanation()).map_err(|e| e.to_string())?;
            Ok(0)
        }
        None => Err(format!(
            "there is no code `{text}`; `flowc explain --list` lists them"
        )),
    }
}

fn schema(file: PathBuf) -> Result<i32, String> {
    let compilation = compile(&[file_input(file)?]).map_err(|e| e.to_string())?;
    let Some(checked) = &compilation.program else {
        for d in compilation.problems.sorted() {
            eprint!("{}", render::human(&compilation.sources, d, false));
        }
        return Ok(1);
    };
    let program = checked.program();
    let root = compilation.roots.first().cloned().unwrap_or_default();
    let in_root = |span: flowc::source::Span| compilation.sources.get(span.file).name == root;
    let mut types = serde_json::Map::new();
    for (i, def) in program.types.defs.iter().enumerate() {
        let _ = i;
        let ty = flowc::types::Ty::Named(flowc::types::TypeId(i as u32));
        types.insert(
            def.name.clone(),
            flowc::schema::document(&program.types, &ty, flowc::types::Boundary::Incoming),
        );
    }
    let mut tools = serde_json::Map::new();
    for tool in program.tools.iter().filter(|t| in_root(t.span)) {
        let params: Vec<_> = flowc::ir::signature(&tool.params);
        tools.insert(
            tool.name.clone(),
            serde_json::json!({
                "arguments": flowc::schema::params_document(&program.types, &params),
                "result": flowc::schema::document(&program.types, &tool.output, flowc::types::Boundary::Incoming),
            }),
        );
    }
    let doc = serde_json::json!({"types": types, "tools": tools});
    if writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    )
    .is_err()
    {
        std::process::exit(141);
    }
    Ok(0)
}

fn graph(file: PathBuf, flow: Option<String>, format: GraphFormat) -> Result<i32, String> {
    let compilation = compile(&[file_input(file)?]).map_err(|e| e.to_string())?;
    let Some(checked) = &compilation.program else {
        for d in compilation.problems.sorted() {
            eprint!("{}", render::human(&compilation.sources, d, false));
        }
        return Ok(1);
    };
    let id = flowc::diagram::select_flow(checked.program(), flow.as_deref())?;
    let format = match format {
        GraphFormat::Mermaid => flowc::diagram::Format::Mermaid,
        GraphFormat::Dot => flowc::diagram::Format::Dot,
    };
    print!("{}", flowc::diagram::render(checked, id, format));
    Ok(0)
}
