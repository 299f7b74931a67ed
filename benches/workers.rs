//! Throughput of `flowc worker` processes sharing one PostgreSQL store:
//! 200 submitted runs of a 5-step flow (each step a tool call the loopback
//! mock server answers after 10 ms), driven by 1, 2 and 4 workers of one
//! slot each, every configuration on a fresh database.
//!
//! A run's own critical path is 5 × 10 ms; what a worker adds per run
//! (claiming it in the transaction that takes its lease, compiling the
//! stored program, opening the run's store connections, checkpoints,
//! releasing it) is the overhead: `wall × workers ÷ runs − 50 ms`.
//! Targets (issue 10): no slower with more workers, and the claim overhead
//! per run ≤ 1 ms (reported beside the whole per-run overhead, of which
//! the claim is a part).
//!
//! Runs are submitted with `flowc submit` before the workers start; the
//! clock runs from the first worker's spawn to the last run completed.
//! `cargo bench --bench workers` (needs `bash tests/setup.sh` for
//! PostgreSQL); prints one line per configuration.

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres_server;

/// The ports `postgres_server` chooses from (its `super::port`).
#[path = "../tests/support/port.rs"]
#[allow(dead_code)]
mod port;

#[allow(dead_code)]
#[path = "../tests/support/mock_server.rs"]
mod mock_server;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowc::store::{self, Durability, Store};
use mock_server::{MockServer, Reply};
use serde_json::json;

const RUNS: usize = 200;
const STEPS: usize = 5;
const LATENCY_MS: u64 = 10;
const WORKERS: [usize; 3] = [1, 2, 4];
const CLAIM_TARGET_MS: f64 = 1.0;

const FLOW: &str = r#"tool step(x: int) -> int {
  http GET "{env.STEP_URL}/step?x={x}"
  effect read
  timeout 5s
}

flow five(seed: int) -> int {
  budget { steps 100, tool_calls 100, wall 1m }
  let a = step(x: seed)
  let b = step(x: a)
  let c = step(x: b)
  let d = step(x: c)
  let e = step(x: d)
  return e
}
"#;

fn flowc(dir: &std::path::Path, server: &MockServer) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowc"));
    c.current_dir(dir).env("STEP_URL", server.base_url());
    c
}

/// `flowc submit` of RUNS runs to the store at `url`.
fn submit_all(dir: &std::path::Path, server: &MockServer, url: &str) {
    for i in 0..RUNS {
        let out = flowc(dir, server)
            .args(["submit", "five.flow", "--store", url, "--input"])
            .arg(json!({"seed": i}).to_string())
            .output()
            .expect("flowc submit");
        assert!(out.status.success(), "submit: {out:?}");
    }
}

fn completed(client: &mut postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM runs WHERE status = 'completed'", &[])
        .map(|row| row.get(0))
        .unwrap_or(0)
}

fn main() {
    let server = MockServer::start();
    server.always("GET /step", Reply::delay(LATENCY_MS, Reply::ok(json!(1))));
    let dir = std::env::temp_dir().join(format!("flowc-bench-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench folder");
    std::fs::write(dir.join("five.flow"), FLOW).expect("flow file");
    let floor_ms = (STEPS as u64 * LATENCY_MS) as f64;
    println!(
        "workers/postgres: {RUNS} submitted runs of {STEPS} steps ({LATENCY_MS} ms tool latency, a critical path of {floor_ms} ms per run)"
    );
    let mut per_run = Vec::new();
    for workers in WORKERS {
        let url = postgres_server::database("workers_bench");
        let db = url.rsplit('/').next().unwrap_or("postgres").to_string();
        submit_all(&dir, &server, &url);
        let mut client = postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname={db}",
                postgres_server::cluster().port
            ),
            postgres::NoTls,
        )
        .expect("connect");
        let started = Instant::now();
        let mut pool: Vec<Child> = (0..workers)
            .map(|_| {
                flowc(&dir, &server)
                    .args([
                        "worker",
                        "--store",
                        &url,
                        "--poll",
                        "20ms",
                        "--concurrency",
                        "1",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("flowc worker")
            })
            .collect();
        while completed(&mut client) < RUNS as i64 {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "{workers} workers: the runs did not complete"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let wall = started.elapsed();
        for w in &mut pool {
            let _ = w.kill();
            let _ = w.wait();
        }
        let run_ms = wall.as_secs_f64() * 1e3 * workers as f64 / RUNS as f64;
        per_run.push(run_ms);
        println!(
            "  {workers} worker(s): {:.2} s wall, {:.1} runs/s, {run_ms:.1} ms per run per worker, {:.1} ms over its critical path",
            wall.as_secs_f64(),
            RUNS as f64 / wall.as_secs_f64(),
            run_ms - floor_ms
        );
    }
    // The claim alone: RUNS queued runs claimed one after another through
    // the store's own `claim` (find a runnable run and take its lease in
    // one statement), as a worker's slot does; beside each, the floor: a
    // bare autocommitted one-row `UPDATE` on a plain connection to the same
    // server. The first half runs before the table has statistics (a store
    // just filled), the second after `ANALYZE` (what autovacuum gives a
    // store in use).
    let url = postgres_server::database("workers_claim");
    submit_all(&dir, &server, &url);
    let store = Store::open(std::path::Path::new(&url), Durability::Full).expect("store");
    let mut plain = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname={}",
            postgres_server::cluster().port,
            url.rsplit('/').next().unwrap_or("postgres")
        ),
        postgres::NoTls,
    )
    .expect("connects");
    plain
        .batch_execute("CREATE TABLE bare (id INT PRIMARY KEY, owner TEXT, lease_until FLOAT8); INSERT INTO bare VALUES (1, NULL, NULL)")
        .expect("bare table");
    let bare = plain
        .prepare("UPDATE bare SET owner = $1, lease_until = $2 WHERE id = 1")
        .expect("prepares");
    let owner = store::owner_id();
    let (mut claims, mut floors) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    let mut leases = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        if i == RUNS / 2 {
            plain.batch_execute("ANALYZE").expect("analyze");
        }
        let t = Instant::now();
        let claimed = store.claim(&owner, Duration::from_secs(60)).expect("claim");
        claims.push(t.elapsed());
        leases.push(claimed.expect("a queued run").1);
        let t = Instant::now();
        plain
            .execute(&bare, &[&owner, &store::now()])
            .expect("bare update");
        floors.push(t.elapsed());
    }
    for lease in &leases {
        store.release(lease).expect("release");
    }
    let median = |xs: &[Duration]| {
        let mut xs = xs.to_vec();
        xs.sort();
        xs[xs.len() / 2].as_secs_f64() * 1e3
    };
    let (cold, warm) = (median(&claims[..RUNS / 2]), median(&claims[RUNS / 2..]));
    let floor = median(&floors);
    println!(
        "  claim: median {cold:.3} ms before statistics, {warm:.3} ms after ({:.2}× a bare one-row UPDATE+COMMIT, {floor:.3} ms) (target ≤ {CLAIM_TARGET_MS} ms: {})",
        warm / floor,
        if warm <= CLAIM_TARGET_MS {
            "ok"
        } else {
            "MISSED"
        }
    );
    let scaling = per_run.windows(2).all(|w| w[1] <= w[0] * 1.1);
    println!(
        "  more workers no slower per run (within 10%): {}; per-run overhead {:.1} ms with one worker (claim target ≤ {CLAIM_TARGET_MS} ms is part of it)",
        if scaling { "ok" } else { "MISSED" },
        per_run[0] - floor_ms
    );
    let _ = std::fs::remove_dir_all(&dir);
}
