//! What a checkpoint costs on PostgreSQL: one step committed through the run
//! store (`Store::commit_steps`, one statement, on the calling thread),
//! against a bare autocommitted `INSERT` of the same bytes (`INSERT …;
//! COMMIT`) on the same server, alternately, so both see the same disk and
//! the same load.
//!
//! The commit held to the target is the one most of a run's commits are:
//! fenced by a read of the lease's epoch, the run's row left alone (the
//! runtime writes the run's spend only when the figure last written would
//! not hold one more model call, or the lease is due for renewal:
//! `SpendCeiling`). The commit that also writes the run's row (spend and
//! lease renewal) is measured alongside and printed.
//!
//! The server is a private one started for the bench (Debian's `postgresql`,
//! `bash tests/setup.sh`), default settings: `synchronous_commit=on`,
//! `fsync=on`. Targets: store median ≤ 1.3× the bare one, ≤ 0.5 ms per step.
//!
//! `cargo bench --bench store`; prints medians and the ratio.

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres_server;

/// The ports `postgres_server` chooses from (its `super::port`).
#[path = "../tests/support/port.rs"]
#[allow(dead_code)]
mod port;

use std::time::{Duration, Instant};

use flowc::run::budget::Spend;
use flowc::store::{self, Durability, Lease, RunRecord, StepRow, Store};
use serde_json::json;

const STEPS: usize = 2_000;
const RATIO_TARGET: f64 = 1.3;
const STEP_TARGET_MS: f64 = 0.5;

fn median(mut xs: Vec<Duration>) -> f64 {
    xs.sort();
    xs[xs.len() / 2].as_secs_f64()
}

fn main() {
    let url = postgres_server::database("bench");
    let store = Store::open(std::path::Path::new(&url), Durability::Full).expect("opens");
    let lease = Lease::new_run("bench");
    store
        .create_run(
            &RunRecord {
                id: "bench".into(),
                file: "bench.flow".into(),
                flow: "chain".into(),
                program: json!({}),
                input: json!({}),
                status: "running".into(),
                output: None,
                error: None,
                created_at: store::now(),
                updated_at: store::now(),
                spend: Spend::default(),
                trace: String::new(),
                replay: None,
                owner: None,
                lease_until: None,
                root_span: None,
                root_written: false,
            },
            &lease,
        )
        .expect("creates the run");
    let mut bare = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname={}",
            postgres_server::cluster().port,
            url.rsplit('/').next().unwrap_or("postgres")
        ),
        postgres::NoTls,
    )
    .expect("connects");
    bare.batch_execute(
        "CREATE TABLE bare (run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT,
         completed_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, key))",
    )
    .expect("creates the bare table");
    let insert = bare
        .prepare("INSERT INTO bare (run_id, key, value, completed_at) VALUES ($1, $2, $3, $4)")
        .expect("prepares");
    // ~200 bytes, like a small tool result.
    let value = json!({"id": "item-000", "status": "ok", "score": 42, "note": "x".repeat(140)});
    let text = value.to_string();
    // The store's own statement on the bench's connection: what the SQL
    // costs without the store's own bookkeeping around it.
    let same_sql = bare
        .prepare(flowc::store::POSTGRES_COMMIT_STEPS_READ_FENCE)
        .expect("prepares");
    let mut direct = Vec::new();
    let (mut stored, mut with_row, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..STEPS + 200 {
        let key = format!("chain.s{i}");
        let spend = Spend {
            steps: i as u64,
            tool_calls: i as u64,
            ..Spend::default()
        };
        let t = Instant::now();
        store
            .commit_steps(
                &lease,
                &[StepRow::new(key.clone(), Some(&value))],
                &[],
                spend,
                None,
            )
            .expect("commits");
        let a = t.elapsed();
        let t = Instant::now();
        store
            .commit_steps(
                &lease,
                &[StepRow::new(format!("{key}.row"), Some(&value))],
                &[],
                spend,
                Some(spend),
            )
            .expect("commits");
        let r = t.elapsed();
        let t = Instant::now();
        bare.execute(&insert, &[&"bench", &key, &text, &store::now()])
            .expect("inserts");
        let b = t.elapsed();
        let t = Instant::now();
        bare.query(
            &same_sql,
            &[
                &"bench",
                &lease.epoch,
                &store::now(),
                &vec![format!("direct.s{i}")],
                &vec![Some(text.clone())],
                &Vec::<String>::new(),
                &Vec::<i32>::new(),
                &Vec::<String>::new(),
                &Vec::<i64>::new(),
                &Vec::<i64>::new(),
                &(i as i64),
                &(i as i64),
                &0.0f64,
            ],
        )
        .expect("same statement");
        let c = t.elapsed();
        // The first 200 of each warm up caches and the connection.
        if i >= 200 {
            stored.push(a);
            with_row.push(r);
            plain.push(b);
            direct.push(c);
        }
    }
    let (s, b) = (median(stored), median(plain));
    println!(
        "  the store's statement on a plain connection: median {:.3} ms",
        median(direct) * 1e3
    );
    let w = median(with_row);
    println!(
        "  a commit that also writes the run's row (spend, lease renewal): median {:.3} ms, {:.2}× the bare insert",
        w * 1e3,
        w / b
    );
    let ratio = s / b;
    println!("checkpoint/postgres: {STEPS} single-step checkpoints, synchronous_commit=on");
    println!(
        "  store median {:.3} ms/step, bare INSERT+COMMIT median {:.3} ms, ratio {ratio:.2}× (target ≤ {RATIO_TARGET}×, ≤ {STEP_TARGET_MS} ms/step): {}",
        s * 1e3,
        b * 1e3,
        if ratio <= RATIO_TARGET && s * 1e3 <= STEP_TARGET_MS {
            "met"
        } else {
            "NOT met"
        }
    );
}
