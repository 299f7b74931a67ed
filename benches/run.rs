//! Runtime benchmarks: what the scheduler itself costs, and whether a wide
//! fan-out really runs at the width it asks for.
//!
//! - `orchestration/steps/N`: a flow of N sequential tool calls (each on the
//!   previous value) against the in-process scripted world, which answers at
//!   once; so the time is the runtime's own (scheduling, argument and result
//!   validation, budgets, trace), reported per step. Target: a median of at
//!   most 20 µs per step, flat within 1.2× from 100 to 10,000 steps.
//! - `fanout/parallel_1000`: `for x in items parallel 1000 { ping(...) }`
//!   over 1,000 items, against the loopback mock server answering each call
//!   after 100 ms, with the run's concurrency at 1,000. Target: wall time
//!   within 2% of the critical path (100 ms) plus 10 ms, i.e. ≤ 112 ms.
//!
//! - `export/{off,on}/{1000,10000}`: the chain with OTLP export off and on
//!   (to the loopback mock server answering as a collector does; every span
//!   must be delivered). From the two lengths the summary separates what
//!   export adds per step in process (the slope; target ≤ 2 µs) from what it
//!   adds once per run (starting the exporter, the last flush).
//!
//! `cargo bench --bench run`; a summary (medians, per-step ratio, targets)
//! is printed at the end.
//!
//! For profiling and load-insensitive counts (`perf stat -e instructions`),
//! `FLOWC_RUN_BENCH_STEPS=STEPS:RUNS` makes the bench binary just run the
//! STEPS-step chain RUNS times and exit, without criterion (with
//! `FLOWC_RUN_BENCH_OTLP=URL` too, exporting to the collector at URL);
//! `FLOWC_RUN_BENCH_FANOUT=RUNS` runs the fan-out RUNS times and prints when
//! the server received the first and the last request of each.

// Each bench uses a part of the shared fixtures.
#[allow(dead_code)]
mod fixtures;
#[allow(dead_code)]
#[path = "../tests/support/mock_server.rs"]
mod mock_server;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use flowc::run::{self, Outcome, RunOptions, Script, Scripted, World};
use flowc::CheckedProgram;
use serde_json::{json, Value};

use fixtures::compile;
use mock_server::{MockServer, Reply};

const SAMPLES: usize = 10;
const STEP_SIZES: [usize; 3] = [100, 1_000, 10_000];
const PER_STEP_TARGET_US: f64 = 20.0;
const FLATNESS_TARGET: f64 = 1.2;
const FANOUT_WIDTH: usize = 1_000;
const FANOUT_LATENCY_MS: u64 = 100;

/// Medians gathered while the benches run, printed by `summary`.
#[derive(Default)]
struct Results {
    /// (steps, median seconds per step)
    per_step: Vec<(usize, f64)>,
    /// median wall seconds of the fan-out
    fanout: Option<f64>,
    /// median wall seconds of the same requests with reqwest alone
    floor: Option<f64>,
    /// one more fan-out: first and last request received, end (ms)
    timeline: Option<(f64, f64, f64)>,
    /// (export off or on, steps, median seconds per run of the chain)
    export: Vec<(&'static str, usize, f64)>,
}

thread_local! {
    static RESULTS: RefCell<Results> = RefCell::default();
}

/// The median per-iteration time of the measured samples; `None` when the
/// bench did not run them all (filtered out, or `--profile-time`).
fn median_per_iter(samples: &[(u64, Duration)]) -> Option<f64> {
    if samples.len() < SAMPLES {
        return None;
    }
    fixtures::median_per_iter(samples, SAMPLES)
}

/// The chain of `steps` tool calls returning `int`.
fn chain_source(steps: usize) -> String {
    fixtures::chain_source(steps, "", "int")
}

fn fanout_source() -> String {
    fixtures::fanout_source(FANOUT_WIDTH, "5s")
}

fn orchestration(c: &mut Criterion) {
    let mut group = c.benchmark_group("orchestration");
    group
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for steps in STEP_SIZES {
        let checked = compile("chain.flow", &chain_source(steps));
        let input = json!({"seed": 1});
        let samples: RefCell<Vec<(u64, Duration)>> = RefCell::default();
        group.throughput(Throughput::Elements(steps as u64));
        group.bench_function(BenchmarkId::new("steps", steps), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let options = scripted_options();
                    let owned = input.clone();
                    let started = Instant::now();
                    let report = run::run(&checked, "chain", owned, options).expect("runs");
                    total += started.elapsed();
                    match &report.outcome {
                        Outcome::Completed(v) => assert_eq!(v, &json!(1)),
                        _ => panic!("the chain did not complete: {:?}", report.outcome),
                    }
                    assert_eq!(report.stats.tool_calls_ok, steps as u64);
                    drop(report);
                }
                samples.borrow_mut().push((iters, total));
                total
            })
        });
        let median = median_per_iter(&samples.borrow());
        if let Some(per_run) = median {
            let per_step = per_run / steps as f64;
            RESULTS.with(|r| r.borrow_mut().per_step.push((steps, per_step)));
        }
    }
    group.finish();
}

/// The in-process world: `step` answers 1 at once, every time.
fn scripted_options() -> RunOptions {
    let mut tools = HashMap::new();
    tools.insert(
        "step".to_string(),
        VecDeque::from([Scripted::Returns(json!(1))]),
    );
    RunOptions {
        concurrency: 32,
        world: World::Scripted(Script {
            tools,
            ..Script::default()
        }),
        env: Arc::new(|_: &str| None),
        run_id: Some("bench".into()),
        ..RunOptions::default()
    }
}

/// The loopback server, the fan-out program and its 1,000 items.
struct Fanout {
    server: MockServer,
    checked: CheckedProgram,
    input: Value,
}

impl Fanout {
    fn new() -> Fanout {
        let server = MockServer::start();
        server.always(
            "GET /tools/ping",
            Reply::delay(FANOUT_LATENCY_MS, Reply::ok(json!({"ok": true}))),
        );
        let items: Vec<Value> = (0..FANOUT_WIDTH)
            .map(|i| json!({"id": format!("item-{i}")}))
            .collect();
        Fanout {
            server,
            checked: compile("fanout.flow", &fanout_source()),
            input: json!({"items": items}),
        }
    }

    /// One run's wall time (the report is dropped outside it).
    fn run_once(&self) -> Duration {
        let base = self.server.base_url();
        let options = RunOptions {
            concurrency: FANOUT_WIDTH,
            world: World::Live,
            env: Arc::new(move |name: &str| (name == "MOCK_URL").then(|| base.clone())),
            run_id: Some("bench".into()),
            ..RunOptions::default()
        };
        let owned = self.input.clone();
        let started = Instant::now();
        let report = run::run(&self.checked, "fanout", owned, options).expect("runs");
        let wall = started.elapsed();
        match &report.outcome {
            Outcome::Completed(Value::Array(acks)) => assert_eq!(acks.len(), FANOUT_WIDTH),
            _ => panic!("the fan-out did not complete: {:?}", report.outcome),
        }
        wall
    }

    /// The same 1,000 requests with reqwest alone, the way a run makes them
    /// (a new client and a current-thread runtime, all requests at once, each
    /// with a timeout, bodies read and parsed): the floor for the fan-out.
    fn reqwest_once(&self) -> Duration {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let base = self.server.base_url();
        let started = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = reqwest::Client::builder().build().expect("client");
        let acks = rt.block_on(async {
            let mut calls: FuturesUnordered<_> = (0..FANOUT_WIDTH)
                .map(|i| {
                    let request = client
                        .get(format!("{base}/tools/ping?id=item-{i}"))
                        .header("accept", "application/json")
                        .timeout(Duration::from_secs(5));
                    async move {
                        let body = request.send().await?.bytes().await?;
                        Ok::<Value, reqwest::Error>(
                            serde_json::from_slice(&body).unwrap_or(Value::Null),
                        )
                    }
                })
                .collect();
            let mut acks = Vec::with_capacity(FANOUT_WIDTH);
            while let Some(ack) = calls.next().await {
                acks.push(ack.expect("answered"));
            }
            acks
        });
        drop(rt);
        let wall = started.elapsed();
        assert_eq!(acks.len(), FANOUT_WIDTH);
        wall
    }

    /// Where one run's time goes, from when the server received each request:
    /// (first request, last request, end of the run), in ms from its start.
    fn timeline(&self) -> (f64, f64, f64) {
        let before = self.server.requests().len();
        let started = Instant::now();
        let wall = self.run_once();
        let requests = self.server.requests();
        let ms = |t: Instant| t.duration_since(started).as_secs_f64() * 1e3;
        let received: Vec<f64> = requests[before..].iter().map(|r| ms(r.received)).collect();
        let first = received.iter().copied().fold(f64::MAX, f64::min);
        let last = received.iter().copied().fold(f64::MIN, f64::max);
        (first, last, wall.as_secs_f64() * 1e3)
    }
}

fn fanout(c: &mut Criterion) {
    let fanout = Fanout::new();
    let mut group = c.benchmark_group("fanout");
    group
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(FANOUT_WIDTH as u64));
    let samples: RefCell<Vec<(u64, Duration)>> = RefCell::default();
    group.bench_function(BenchmarkId::new("parallel", FANOUT_WIDTH), |b| {
        b.iter_custom(|iters| {
            let total = (0..iters).map(|_| fanout.run_once()).sum();
            samples.borrow_mut().push((iters, total));
            total
        })
    });
    let floor: RefCell<Vec<(u64, Duration)>> = RefCell::default();
    group.bench_function(BenchmarkId::new("reqwest_only", FANOUT_WIDTH), |b| {
        b.iter_custom(|iters| {
            let total = (0..iters).map(|_| fanout.reqwest_once()).sum();
            floor.borrow_mut().push((iters, total));
            total
        })
    });
    group.finish();
    let wall = median_per_iter(&samples.borrow());
    let floor = median_per_iter(&floor.borrow());
    RESULTS.with(|r| r.borrow_mut().floor = floor);
    if wall.is_some() {
        let timeline = fanout.timeline();
        RESULTS.with(|r| {
            let mut r = r.borrow_mut();
            r.fanout = wall;
            r.timeline = Some(timeline);
        });
    }
}

fn summary(_: &mut Criterion) {
    RESULTS.with(|r| {
        let r = r.borrow();
        println!("\n== flowc run: summary (medians of {SAMPLES} samples) ==");
        for (steps, per_step) in &r.per_step {
            let us = per_step * 1e6;
            let verdict = if us <= PER_STEP_TARGET_US { "ok" } else { "MISSED" };
            println!(
                "orchestration  {steps:>6} steps: {:>9.3} ms per run, {us:>7.2} µs per step  (target ≤ {PER_STEP_TARGET_US} µs: {verdict})",
                per_step * *steps as f64 * 1e3
            );
        }
        let first = r.per_step.first();
        let last = r.per_step.last();
        if let (Some((a, pa)), Some((b, pb))) = (first, last) {
            let ratio = pb / pa;
            let spread = r.per_step.iter().map(|p| p.1).fold(f64::MIN, f64::max)
                / r.per_step.iter().map(|p| p.1).fold(f64::MAX, f64::min);
            let verdict = if spread <= FLATNESS_TARGET { "ok" } else { "MISSED" };
            println!(
                "per-step cost {b} / {a} steps: {ratio:.3}×; max/min over all sizes: {spread:.3}×  (target ≤ {FLATNESS_TARGET}×: {verdict})"
            );
        }
        if let Some(wall) = r.fanout {
            let ms = wall * 1e3;
            let target = FANOUT_LATENCY_MS as f64 * 1.02 + 10.0;
            let verdict = if ms <= target { "ok" } else { "MISSED" };
            println!(
                "fan-out {FANOUT_WIDTH} × {FANOUT_LATENCY_MS} ms: {ms:.1} ms wall, {:.1} ms over the critical path  (target ≤ {target:.0} ms: {verdict})",
                ms - FANOUT_LATENCY_MS as f64
            );
        }
        if let Some(floor) = r.floor {
            let ms = floor * 1e3;
            let over = r.fanout.map_or(String::new(), |w| {
                format!("; the run adds {:.1} ms", (w - floor) * 1e3)
            });
            println!("  the same requests with reqwest alone: {ms:.1} ms{over}");
        }
        let extra = |steps: usize| {
            let of = |mode| {
                r.export
                    .iter()
                    .find(|e| e.0 == mode && e.1 == steps)
                    .map(|e| e.2)
            };
            Some((of("off")?, of("on")? - of("off")?))
        };
        if let (Some((off_small, small)), Some((off_large, large))) =
            (extra(EXPORT_STEPS[0]), extra(EXPORT_STEPS[1]))
        {
            let [a, b] = EXPORT_STEPS;
            let per_step = (large - small) / (b - a) as f64 * 1e6;
            let per_run = (small * 1e6 - per_step * a as f64) / 1e3;
            let verdict = if per_step <= EXPORT_TARGET_US { "ok" } else { "MISSED" };
            println!(
                "export: +{:.2} ms on {a} steps (off {:.2} ms), +{:.2} ms on {b} steps (off {:.2} ms): \
                 {per_step:.2} µs per step (target ≤ {EXPORT_TARGET_US} µs: {verdict}) and {per_run:.2} ms once per run",
                small * 1e3,
                off_small * 1e3,
                large * 1e3,
                off_large * 1e3,
            );
        }
        if let Some((first, last, end)) = r.timeline {
            println!(
                "  one more fan-out: first request at {first:.1} ms, last at {last:.1} ms (all sent in {:.1} ms), \
                 last answer due at {:.1} ms, run over at {end:.1} ms",
                last - first,
                last + FANOUT_LATENCY_MS as f64
            );
        }
    });
}

/// `FLOWC_RUN_BENCH_STEPS=STEPS:RUNS`: the chain alone, for `perf`.
fn chain_only(spec: &str) {
    let (steps, runs) = spec
        .split_once(':')
        .and_then(|(s, r)| Some((s.parse::<usize>().ok()?, r.parse::<usize>().ok()?)))
        .expect("FLOWC_RUN_BENCH_STEPS=STEPS:RUNS");
    let checked = compile("chain.flow", &chain_source(steps));
    let input = json!({"seed": 1});
    // FLOWC_RUN_BENCH_OTLP=URL: with export on, to the collector at URL.
    let collector = std::env::var("FLOWC_RUN_BENCH_OTLP").ok();
    let mut total = Duration::ZERO;
    for _ in 0..runs {
        let mut options = scripted_options();
        options.otlp = collector.as_deref().map(export_settings);
        let owned = input.clone();
        let started = Instant::now();
        let report = run::run(&checked, "chain", owned, options).expect("runs");
        total += started.elapsed();
        assert!(matches!(report.outcome, Outcome::Completed(_)));
    }
    let per_step = total.as_secs_f64() / (runs * steps) as f64;
    println!(
        "{steps} steps × {runs} runs: {:.2} µs per step (mean wall)",
        per_step * 1e6
    );
}

/// Chain lengths the export bench runs at: two, so that what export costs
/// per step (the slope) is told apart from what it costs once per run
/// (starting the exporter, the last flush).
const EXPORT_STEPS: [usize; 2] = [1_000, 10_000];
const EXPORT_TARGET_US: f64 = 2.0;

/// Export to the collector at `url` with the defaults a user gets (queue
/// and batch sizes, schedule delay), whatever the `OTEL_*` variables say.
fn export_settings(url: &str) -> run::otel::OtlpSettings {
    let mut settings =
        run::otel::OtlpSettings::resolve(Some(url), &|_: &str| None).expect("export is on");
    settings.timeout = Duration::from_secs(5);
    settings
}

fn export(c: &mut Criterion) {
    let server = MockServer::start();
    // An OTLP/HTTP collector accepts a batch with 200 and an empty
    // (protobuf) ExportTraceServiceResponse.
    server.always("POST /v1/traces", Reply::raw(200, ""));
    let mut group = c.benchmark_group("export");
    group
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let input = json!({"seed": 1});
    for steps in EXPORT_STEPS {
        let checked = compile("chain.flow", &chain_source(steps));
        // Interleaved per size (off, on), so both see the same machine load.
        for mode in ["off", "on"] {
            let samples: RefCell<Vec<(u64, Duration)>> = RefCell::default();
            group.throughput(Throughput::Elements(steps as u64));
            group.bench_function(BenchmarkId::new(mode, steps), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut options = scripted_options();
                        if mode == "on" {
                            options.otlp = Some(export_settings(&server.base_url()));
                        }
                        let owned = input.clone();
                        let started = Instant::now();
                        let report = run::run(&checked, "chain", owned, options).expect("runs");
                        total += started.elapsed();
                        assert!(matches!(report.outcome, Outcome::Completed(_)));
                        if mode == "on" {
                            let export = report.export.expect("export summary");
                            // A bench that drops spans measures the wrong path.
                            assert_eq!(export.dropped, 0, "{export:?}");
                        }
                    }
                    samples.borrow_mut().push((iters, total));
                    total
                })
            });
            let median = median_per_iter(&samples.borrow());
            if let Some(per_run) = median {
                RESULTS.with(|r| r.borrow_mut().export.push((mode, steps, per_run)));
            }
        }
    }
    group.finish();
}

criterion_group!(benches, orchestration, fanout, export, summary);

/// `FLOWC_RUN_BENCH_FANOUT=RUNS`: the fan-out alone, for `perf`.
fn fanout_only(runs: &str) {
    let runs: usize = runs.parse().expect("FLOWC_RUN_BENCH_FANOUT=RUNS");
    let fanout = Fanout::new();
    for _ in 0..runs {
        let (first, last, end) = fanout.timeline();
        println!("requests received from {first:.1} to {last:.1} ms; run over at {end:.1} ms");
    }
}

fn main() {
    if let Ok(spec) = std::env::var("FLOWC_RUN_BENCH_STEPS") {
        chain_only(&spec);
        return;
    }
    if let Ok(runs) = std::env::var("FLOWC_RUN_BENCH_FANOUT") {
        fanout_only(&runs);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
