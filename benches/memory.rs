//! Memory per in-flight branch of a wide fan-out (issue 16): the peak
//! resident set of a process running `for it in items parallel W { … }`
//! with every branch in flight at once, less the same process's peak with
//! one branch, divided by the extra branches.
//!
//! - `http`: each branch an HTTP tool call (`ping`) to the loopback mock
//!   server, which answers after 500 ms, so all W requests are open at
//!   once, one HTTP/1.1 connection each. Target: below 27.6 KiB per branch
//!   (LangGraph 1.2 with aiohttp, measured the same way on this kind of
//!   machine).
//! - `builtin`: each branch `std.tools.sleep(seconds: 0.5)`: what a branch
//!   costs the runtime without any HTTP.
//! - `reqwest`: the floor, W concurrent GETs to the same server with one
//!   bare `reqwest::Client` on a current-thread tokio runtime, no flowc.
//!
//! Each figure comes from fresh child processes (this binary, re-run with
//! `FLOWC_MEMORY_CHILD=KIND:WIDTH`), which print their own `VmHWM` from
//! `/proc/self/status` when done; the server runs in this process, so its
//! memory is not counted. Medians of `RUNS` children, alternating kinds.
//!
//! `cargo bench --bench memory`.

// Each bench uses a part of the shared fixtures.
#[allow(dead_code)]
mod fixtures;
#[allow(dead_code)]
#[path = "../tests/support/mock_server.rs"]
mod mock_server;

use std::process::Command;
use std::sync::Arc;

use flowc::run::{self, Outcome, RunOptions, World};
use serde_json::{json, Value};

use mock_server::{MockServer, Reply};

const WIDTH: usize = 1_000;
const LATENCY_MS: u64 = 500;
const RUNS: usize = 5;
const HTTP_TARGET_KIB: f64 = 27.6;

/// What one child process runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Http,
    Builtin,
    Reqwest,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Builtin => "builtin",
            Kind::Reqwest => "reqwest",
        }
    }

    fn named(name: &str) -> Option<Kind> {
        [Kind::Http, Kind::Builtin, Kind::Reqwest]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

fn builtin_source(width: usize) -> String {
    format!(
        r#"use std.tools.{{sleep}}

type Item {{ id: string len 1..40 }}

flow fanout(items: [Item] len ..{width}) -> [bool] {{
  budget {{ steps 10k, tool_calls 10k, wall 10m }}
  let slept = for it in items parallel {width} {{
    sleep(seconds: 0.5)
  }}
  return slept
}}
"#
    )
}

/// The peak resident set of this process so far, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reads /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// In a child: run one fan-out of `width` branches, print the peak.
fn child(spec: &str) {
    let (kind, width) = spec.split_once(':').expect("KIND:WIDTH");
    let kind = Kind::named(kind).expect("a known kind");
    let width: usize = width.parse().expect("a width");
    let base = std::env::var("MOCK_URL").expect("MOCK_URL");
    let items: Vec<Value> = (0..width)
        .map(|i| json!({"id": format!("item-{i}")}))
        .collect();
    let input = json!({"items": items});
    if kind == Kind::Reqwest {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let client = reqwest::Client::new();
            let calls = (0..width).map(|i| {
                let url = format!("{base}/tools/ping?id=item-{i}");
                let client = client.clone();
                async move {
                    let reply = client.get(url).send().await.expect("sends");
                    reply.json::<Value>().await.expect("a JSON reply")
                }
            });
            let replies = futures_util::future::join_all(calls).await;
            assert_eq!(replies.len(), width);
        });
        println!("{}", peak_kib());
        return;
    }
    let source = match kind {
        Kind::Http => fixtures::fanout_source(width, "30s"),
        _ => builtin_source(width),
    };
    let checked = fixtures::compile("fanout.flow", &source);
    // As `flowc run --ephemeral` runs it: no store, no trace kept.
    let options = RunOptions {
        concurrency: width,
        keep_events: false,
        world: World::Live,
        env: Arc::new(move |name: &str| (name == "MOCK_URL").then(|| base.clone())),
        ..RunOptions::default()
    };
    let report = run::run(&checked, "fanout", &input, options).expect("runs");
    match &report.outcome {
        Outcome::Completed(Value::Array(v)) => assert_eq!(v.len(), width),
        other => panic!("the fan-out did not complete: {other:?}"),
    }
    println!("{}", peak_kib());
}

fn measure(server: &MockServer, kind: Kind, width: usize) -> u64 {
    let out = Command::new(std::env::current_exe().expect("this binary"))
        .env("FLOWC_MEMORY_CHILD", format!("{}:{width}", kind.name()))
        .env("MOCK_URL", server.base_url())
        .output()
        .expect("runs a child");
    assert!(
        out.status.success(),
        "the {} child failed: {}",
        kind.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the child's peak in KiB")
}

fn median(mut xs: Vec<u64>) -> u64 {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() {
    if let Ok(spec) = std::env::var("FLOWC_MEMORY_CHILD") {
        child(&spec);
        return;
    }
    // `cargo bench` passes `--bench`; a filter that names nothing here skips.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"memory".contains(&a))
    {
        return;
    }
    let server = MockServer::start();
    server.always(
        "GET /tools/ping",
        Reply::delay(LATENCY_MS, Reply::ok(json!({"ok": true}))),
    );
    let kinds = [Kind::Http, Kind::Builtin, Kind::Reqwest];
    let mut peaks: Vec<(Kind, usize, Vec<u64>)> = Vec::new();
    for kind in kinds {
        for width in [1, WIDTH] {
            peaks.push((kind, width, Vec::new()));
        }
    }
    for _ in 0..RUNS {
        for (kind, width, samples) in &mut peaks {
            samples.push(measure(&server, *kind, *width));
        }
    }
    println!(
        "memory/fanout: peak resident set, {WIDTH} branches in flight ({LATENCY_MS} ms each) against one; medians of {RUNS} processes"
    );
    for kind in kinds {
        let of = |w: usize| {
            peaks
                .iter()
                .find(|(k, width, _)| *k == kind && *width == w)
                .map(|(_, _, s)| median(s.clone()))
                .expect("measured")
        };
        let (one, wide) = (of(1), of(WIDTH));
        let per_branch = wide.saturating_sub(one) as f64 / (WIDTH - 1) as f64;
        let verdict = match kind {
            Kind::Http if per_branch < HTTP_TARGET_KIB => " (target < 27.6 KiB: met)",
            Kind::Http => " (target < 27.6 KiB: NOT met)",
            _ => "",
        };
        println!(
            "  {:<8} {one:>7} KiB with 1 branch, {wide:>7} KiB with {WIDTH}: {per_branch:.1} KiB per branch{verdict}",
            kind.name()
        );
    }
}
