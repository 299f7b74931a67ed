//! Parse and check time on generated flows of 100, 1,000 and 10,000 steps,
//! measured separately, `flowc check` end to end (process start included)
//! on a ~200-line example, and `flowc fmt`'s work (parse, print from the
//! tree and the scanner's token table, re-parse and compare) on generated
//! flows.
//!
//! `cargo bench --bench check`; figures go in the issue notes.

mod generated;

use std::process::Command;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowc::loader::Loader;
use flowc::source::FileId;

fn parse_and_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("generated");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for steps in [100usize, 1_000, 10_000] {
        let source = generated::flow_source(steps);
        let lines = source.lines().count() as u64;
        group.throughput(Throughput::Elements(lines));
        group.bench_with_input(BenchmarkId::new("parse", steps), &source, |b, s| {
            b.iter(|| flowc::parser::parse(FileId(0), black_box(s)))
        });
        group.bench_with_input(BenchmarkId::new("lower+check", steps), &source, |b, s| {
            b.iter_batched(
                || {
                    let mut loader = Loader::new();
                    loader.load_bytes("gen.flow", s.as_bytes());
                    loader.finish()
                },
                |ws| {
                    let c = flowc::compile_workspace(ws);
                    assert!(c.program.is_some());
                },
                criterion::BatchSize::LargeInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("end_to_end", steps), &source, |b, s| {
            b.iter(|| {
                let c = flowc::compile(&[flowc::Input::Text {
                    name: "gen.flow".into(),
                    bytes: s.as_bytes().to_vec(),
                }])
                .expect("loads");
                assert!(c.program.is_some());
            })
        });
    }
    group.finish();
}

fn process(c: &mut Criterion) {
    let mut group = c.benchmark_group("process");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4));
    let example = "examples/invoice_reconciliation.flow";
    group.bench_function("flowc_check_example", |b| {
        b.iter(|| {
            let out = Command::new(env!("CARGO_BIN_EXE_flowc"))
                .args(["check", example])
                .output()
                .expect("runs");
            assert!(out.status.success());
        })
    });
    group.finish();
}

/// The hidden-dependency check (D001) when every step writes one resource:
/// 10,000 steps ordered by `after`, against the same chain writing nothing
/// it tracks (the floor). The two must stay within 1.5× of each other.
fn all_writers(c: &mut Criterion) {
    let mut group = c.benchmark_group("chain");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    let steps = std::env::var("FLOWC_CHAIN_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000usize);
    for (name, shared) in [("plain", false), ("all_writers", true)] {
        let source = generated::chain_source(steps, shared);
        group.bench_with_input(BenchmarkId::new(name, steps), &source, |b, s| {
            b.iter_batched(
                || {
                    let mut loader = Loader::new();
                    loader.load_bytes("chain.flow", s.as_bytes());
                    loader.finish()
                },
                |ws| {
                    let c = flowc::compile_workspace(ws);
                    assert!(c.program.is_some());
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// Formatting a generated flow of 1,000 and 10,000 steps (`format_source`:
/// the parse, the printing from the tree and the token table, and the
/// safety net's second parse and comparison).
fn format(c: &mut Criterion) {
    let mut group = c.benchmark_group("format");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for steps in [1_000usize, 10_000] {
        let source = generated::flow_source(steps);
        group.throughput(Throughput::Elements(source.lines().count() as u64));
        group.bench_with_input(BenchmarkId::new("format_source", steps), &source, |b, s| {
            b.iter(|| flowc::format::format_source(black_box(s)).expect("formats"))
        });
    }
    group.finish();
}

criterion_group!(benches, parse_and_check, all_writers, process, format);
criterion_main!(benches);
