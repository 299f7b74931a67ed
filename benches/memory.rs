//! Memory per in-flight branch of a wide fan-out, and the time to dispatch
//! it (issue 16): the peak resident set of a process running `for it in
//! items parallel W { … }` with every branch in flight at once, less the
//! same process's peak with one branch, divided by the extra branches.
//!
//! - `http1`: each branch an HTTP tool call (`ping`) to a loopback server
//!   that answers after 500 ms, so all W requests are open at once, one
//!   HTTP/1.1 connection each. Target: below 27.6 KiB per branch (LangGraph
//!   1.2 with aiohttp, measured the same way on this kind of machine).
//! - `http2`: the same, with the server's origin in `FLOWC_H2C`: HTTP/2
//!   with prior knowledge, every call a stream of one connection. Target:
//!   ≤ 12 KiB per branch.
//! - `builtin`: each branch `std.tools.sleep(seconds: 0.5)`: what a branch
//!   costs the runtime without any HTTP.
//! - `reqwest1`, `reqwest2`: the floors, W concurrent GETs to the same
//!   server with one bare `reqwest::Client` on a current-thread tokio
//!   runtime, no flowc, over HTTP/1.1 and over h2c.
//!
//! Dispatch: each child reports when its run started, on the machine's
//! monotonic clock, and the server when each request arrived. What the
//! W-wide run adds to the 1-wide one's time from its start to its last
//! request's arrival is what dispatching W − 1 more branches costs: every
//! branch prepared, its request written and read by the server. Target
//! over HTTP/2 (one connection): 1,000 within 15 ms. Over HTTP/1.1 each call
//! opens a connection of its own, and the kernel's work for a thousand of
//! them is above that on its own, so that figure is compared with bare
//! reqwest's. Also printed: the first to the last arrival, and what the
//! wide run adds to the wall time (which includes the W replies, read after
//! the server's delay), against the builtin branch's.
//!
//! Each figure comes from fresh child processes (this binary, re-run with
//! `FLOWC_MEMORY_CHILD=KIND:WIDTH`), which print their own `VmHWM` from
//! `/proc/self/status` and their wall time when done; the server (one that
//! speaks HTTP/1.1 and h2c, with a backlog for a thousand connections at
//! once) runs in this process, so its memory is not counted. Medians of
//! `RUNS` children (or `FLOWC_MEMORY_RUNS`), alternating kinds.
//!
//! Where the bytes go: `FLOWC_MEMORY_SERVE=600` runs only the server and
//! prints its `MOCK_URL` and `MOCK_ORIGIN`; with those set, run one child
//! under a heap profiler, e.g. `FLOWC_MEMORY_CHILD=http2:1000 heaptrack
//! BENCH_BINARY`, and read the allocations alive at the peak
//! (`heaptrack_print --flamegraph-cost-type peak -F stacks.txt`).
//!
//! `cargo bench --bench memory`.

// Each bench uses a part of the shared fixtures.
#[allow(dead_code)]
mod fixtures;
#[allow(dead_code)]
#[path = "../tests/support/h2_server.rs"]
mod h2_server;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowc::run::{self, Outcome, RunOptions, World};
use serde_json::{json, Value};

use h2_server::H2Server;

const WIDTH: usize = 1_000;
const LATENCY_MS: u64 = 500;
const RUNS: usize = 5;
const HTTP1_TARGET_KIB: f64 = 27.6;
const HTTP2_TARGET_KIB: f64 = 12.0;
const DISPATCH_TARGET_MS: f64 = 15.0;

/// How many children each figure is the median of.
fn runs() -> usize {
    match std::env::var("FLOWC_MEMORY_RUNS") {
        Ok(n) => match n.parse() {
            Ok(n) if n > 0 => n,
            _ => panic!("FLOWC_MEMORY_RUNS is a number of children above 0, not {n:?}"),
        },
        Err(_) => RUNS,
    }
}

/// What one child process runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Http1,
    Http2,
    Builtin,
    Reqwest1,
    Reqwest2,
}

const KINDS: [Kind; 5] = [
    Kind::Http1,
    Kind::Http2,
    Kind::Builtin,
    Kind::Reqwest1,
    Kind::Reqwest2,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Http1 => "http1",
            Kind::Http2 => "http2",
            Kind::Builtin => "builtin",
            Kind::Reqwest1 => "reqwest1",
            Kind::Reqwest2 => "reqwest2",
        }
    }

    fn named(name: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.name() == name)
    }

    /// The bare-reqwest floor the kind is compared with.
    fn floor(self) -> Option<Kind> {
        match self {
            Kind::Http1 => Some(Kind::Reqwest1),
            Kind::Http2 => Some(Kind::Reqwest2),
            _ => None,
        }
    }

    fn makes_requests(self) -> bool {
        self != Kind::Builtin
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

/// In a child: run one fan-out of `width` branches, print the peak and the
/// run's wall time.
fn child(spec: &str) {
    let (kind, width) = spec.split_once(':').expect("KIND:WIDTH");
    let kind = Kind::named(kind).expect("a known kind");
    let width: usize = width.parse().expect("a width");
    let base = std::env::var("MOCK_URL").expect("MOCK_URL");
    let origin = std::env::var("MOCK_ORIGIN").expect("MOCK_ORIGIN");
    let items: Vec<Value> = (0..width)
        .map(|i| json!({"id": format!("item-{i}")}))
        .collect();
    let input = json!({"items": items});
    if let Kind::Reqwest1 | Kind::Reqwest2 = kind {
        let (started, started_ns) = (Instant::now(), h2_server::monotonic_ns());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let client = match kind {
                Kind::Reqwest2 => reqwest::Client::builder().http2_prior_knowledge(),
                _ => reqwest::Client::builder(),
            }
            .build()
            .expect("a client");
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
        let wall = started.elapsed();
        println!("{} {} {started_ns}", peak_kib(), wall.as_secs_f64() * 1e3);
        return;
    }
    let source = match kind {
        Kind::Builtin => builtin_source(width),
        _ => fixtures::fanout_source(width, "30s"),
    };
    let checked = fixtures::compile("fanout.flow", &source);
    let h2c = (kind == Kind::Http2).then_some(origin);
    // As `flowc run --ephemeral` runs it: no store, no trace kept.
    let options = RunOptions {
        concurrency: width,
        keep_events: false,
        world: World::Live,
        env: Arc::new(move |name: &str| match name {
            "MOCK_URL" => Some(base.clone()),
            "FLOWC_H2C" => h2c.clone(),
            _ => None,
        }),
        ..RunOptions::default()
    };
    let (started, started_ns) = (Instant::now(), h2_server::monotonic_ns());
    let report = run::run(&checked, "fanout", input, options).expect("runs");
    let wall = started.elapsed();
    match &report.outcome {
        Outcome::Completed(Value::Array(v)) => assert_eq!(v.len(), width),
        other => panic!("the fan-out did not complete: {other:?}"),
    }
    println!("{} {} {started_ns}", peak_kib(), wall.as_secs_f64() * 1e3);
}

/// One child's figures.
struct Sample {
    peak_kib: u64,
    wall_ms: f64,
    /// First to last request's arrival at the server (HTTP kinds).
    spread_ms: Option<f64>,
    /// From the run's start in the child to the last request's arrival at
    /// the server (HTTP kinds).
    last_arrival_ms: Option<f64>,
}

fn measure(server: &H2Server, kind: Kind, width: usize) -> Sample {
    server.take_arrivals();
    let out = Command::new(std::env::current_exe().expect("this binary"))
        .env("FLOWC_MEMORY_CHILD", format!("{}:{width}", kind.name()))
        .env("MOCK_URL", server.base_url())
        .env("MOCK_ORIGIN", server.origin())
        .output()
        .expect("runs a child");
    assert!(
        out.status.success(),
        "the {} child failed: {}",
        kind.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let figures: Vec<&str> = text.split_whitespace().collect();
    let [peak, wall, started] = figures[..] else {
        panic!("the child's peak, wall time and start, not {text:?}");
    };
    let started: u64 = started.parse().expect("the child's start in ns");
    let arrivals = server.take_arrivals();
    let (spread_ms, last_arrival_ms) = match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) if kind.makes_requests() => {
            assert_eq!(
                arrivals.len(),
                width,
                "every request of the {} child",
                kind.name()
            );
            let ms = |ns: u64| ns as f64 / 1e6;
            (Some(ms(last - first)), Some(ms(last - started)))
        }
        _ => (None, None),
    };
    Sample {
        peak_kib: peak.parse().expect("the child's peak in KiB"),
        wall_ms: wall.parse().expect("the child's wall time in ms"),
        spread_ms,
        last_arrival_ms,
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
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
    let server = H2Server::start(Duration::from_millis(LATENCY_MS), 4 * WIDTH as u32);
    // Only the server, for SECS seconds: a child run by hand under a heap
    // profiler (see the header) finds it at the addresses printed.
    if let Ok(secs) = std::env::var("FLOWC_MEMORY_SERVE") {
        println!(
            "MOCK_URL={} MOCK_ORIGIN={}",
            server.base_url(),
            server.origin()
        );
        let secs = secs.parse().expect("FLOWC_MEMORY_SERVE=SECONDS");
        std::thread::sleep(Duration::from_secs(secs));
        return;
    }
    let mut samples: Vec<(Kind, usize, Vec<Sample>)> = Vec::new();
    for kind in KINDS {
        for width in [1, WIDTH] {
            samples.push((kind, width, Vec::new()));
        }
    }
    let runs = runs();
    for _ in 0..runs {
        for (kind, width, runs) in &mut samples {
            runs.push(measure(&server, *kind, *width));
        }
    }
    let of = |kind: Kind, w: usize, f: &dyn Fn(&Sample) -> Option<f64>| {
        samples
            .iter()
            .find(|(k, width, _)| *k == kind && *width == w)
            .and_then(|(_, _, s)| {
                let xs: Vec<f64> = s.iter().filter_map(f).collect();
                (!xs.is_empty()).then(|| median(xs))
            })
            .expect("measured")
    };
    let per_branch = |kind: Kind| {
        let peak = |s: &Sample| Some(s.peak_kib as f64);
        (of(kind, WIDTH, &peak) - of(kind, 1, &peak)) / (WIDTH - 1) as f64
    };
    // What the wide run adds to the narrow one's figure.
    let added =
        |kind: Kind, f: &dyn Fn(&Sample) -> Option<f64>| of(kind, WIDTH, f) - of(kind, 1, f);
    let wall = |s: &Sample| Some(s.wall_ms);
    let last_arrival = |s: &Sample| s.last_arrival_ms;
    println!(
        "memory/fanout: peak resident set, {WIDTH} branches in flight ({LATENCY_MS} ms each) against one; medians of {runs} processes"
    );
    for kind in KINDS {
        let peak = |s: &Sample| Some(s.peak_kib as f64);
        let (one, wide) = (of(kind, 1, &peak), of(kind, WIDTH, &peak));
        let kib = per_branch(kind);
        let floor = match kind.floor() {
            Some(f) => format!(
                " = {:.2}× {} ({:.1})",
                kib / per_branch(f),
                f.name(),
                per_branch(f)
            ),
            None => String::new(),
        };
        let verdict = match kind {
            Kind::Http1 => verdict(kib < HTTP1_TARGET_KIB, "< 27.6 KiB"),
            Kind::Http2 => verdict(kib <= HTTP2_TARGET_KIB, "≤ 12 KiB"),
            _ => String::new(),
        };
        println!(
            "  {:<8} {one:>7.0} KiB with 1 branch, {wide:>7.0} KiB with {WIDTH}: {kib:.1} KiB per branch{floor}{verdict}",
            kind.name()
        );
    }
    println!(
        "memory/dispatch: what {} more branches add to the 1-wide run (medians): to the time from the run's start to the last request's arrival at the server (HTTP), and to the run's wall time; and the first to the last arrival",
        WIDTH - 1
    );
    let builtin = added(Kind::Builtin, &wall);
    for kind in KINDS {
        let ms = added(kind, &wall);
        let requests = if kind.makes_requests() {
            let dispatch = added(kind, &last_arrival);
            let floor = match kind.floor() {
                Some(f) => format!(" = {:.2}× {}", dispatch / added(f, &last_arrival), f.name()),
                None => String::new(),
            };
            // One connection per call: opening a thousand loopback
            // connections alone takes this kernel ~100 ms (issue 16's note).
            let target = match kind {
                Kind::Http2 => verdict(dispatch <= DISPATCH_TARGET_MS, "≤ 15 ms"),
                _ => String::new(),
            };
            format!(
                "last request in +{dispatch:.1} ms{floor}{target}, arrivals spread over {:.1} ms; ",
                of(kind, WIDTH, &|s: &Sample| s.spread_ms)
            )
        } else {
            String::new()
        };
        println!(
            "  {:<8} {requests}wall +{ms:.1} ms = {:.2}× builtin",
            kind.name(),
            ms / builtin
        );
    }
}

fn verdict(met: bool, target: &str) -> String {
    format!(
        " (target {target}: {})",
        if met { "met" } else { "NOT met" }
    )
}
