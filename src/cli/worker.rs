//! `flowc worker`: drives the runs of a shared store. Each of its
//! `--concurrency` slots is a thread with a store connection of its own
//! that claims one runnable run at a time (`Backend::claim`: the lease is
//! taken in the transaction that finds the run), runs it to its end or its
//! next wait exactly as `flowc resume` would, with the lease's heartbeat and
//! fencing, and releases it. An idle slot looks again every `--poll`.
//!
//! A signal (SIGINT, SIGTERM) stops the worker: no slot claims again, and
//! every run in flight stops as at Ctrl-C (`interrupted`, its lease
//! released), so another worker can take it at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use flowc::run;
use flowc::store::{self, Lease, RunEnd, RunRecord, Store};

use crate::execute::{self, Driver, Failure, RunArgs};

/// Runs the worker until a signal stops it.
pub fn run(store_path: &Path, poll: Duration, concurrency: usize) -> Result<i32, String> {
    let durability = execute::durability()?;
    // Each run opens the store for itself and its heartbeat: on PostgreSQL
    // those connections are reused from run to run.
    store::keep_connections();
    // Opened up front: a store that cannot be reached stops the worker at
    // once, rather than every slot reporting it forever.
    let mut stores = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        match Store::open(store_path, durability) {
            Ok(s) => stores.push(s),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(run::EXIT_STORE);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let (stop, stopped) = watch::channel(false);
    // The signal handlers are in place before the first claim, so a signal
    // never kills a run mid-step.
    let signal = rt
        .block_on(async { run::stop_signals() })
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    let slots: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let slot = Slot {
                store,
                store_path: store_path.to_path_buf(),
                poll,
                stop: stopped.clone(),
            };
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || slot.serve())
                .map_err(|e| format!("cannot start a worker thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    eprintln!(
        "worker {} on {}: {concurrency} at a time, looking for work every {poll:?}",
        store::owner_id(),
        store_path.display()
    );
    rt.block_on(signal);
    eprintln!("worker stopping: runs in flight end interrupted and are released");
    let _ = stop.send(true);
    for slot in slots {
        let _ = slot.join();
    }
    Ok(0)
}

/// One run at a time, claimed from the store.
struct Slot {
    store: Store,
    store_path: PathBuf,
    poll: Duration,
    stop: watch::Receiver<bool>,
}

impl Slot {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn serve(self) {
        let owner = store::owner_id();
        while !self.stopping() {
            match self.store.claim(&owner, store::lease_ttl()) {
                Ok(Some((record, lease))) => self.drive(record, lease),
                Ok(None) => self.idle(),
                Err(e) => {
                    // A store that is down for a moment: try again later.
                    eprintln!("worker: {e}; trying again in {:?}", self.poll);
                    self.idle();
                }
            }
        }
    }

    /// Waits one poll interval, or less if the worker is stopping.
    fn idle(&self) {
        let until = Instant::now() + self.poll;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    /// Runs a claimed run until it ends, waits or is interrupted.
    fn drive(&self, record: RunRecord, lease: Lease) {
        let id = record.id.clone();
        let spend = record.spend;
        let program = match execute::stored_program(&self.store, &id) {
            Ok(Some(p)) => p,
            Ok(None) => {
                return self.fail(&lease, spend, "the run has no stored program".into());
            }
            Err(Failure::Usage(m)) => return self.fail(&lease, spend, m),
            // The lease is kept until it expires: the run is tried again
            // then, not claimed again at once while the store fails.
            Err(_) => {
                eprintln!(
                    "worker: run {id}: the run store failed; tried again when its lease expires"
                );
                return;
            }
        };
        let result = execute::run(RunArgs {
            file: PathBuf::from(&record.file),
            flow: Some(record.flow.clone()),
            input: Some(record.input.to_string()),
            replay: record.replay.as_ref().map(PathBuf::from),
            approve: Vec::new(),
            reject: Vec::new(),
            trace: None,
            concurrency: 32,
            store: Some(self.store_path.clone()),
            resume: Some((record, lease.clone())),
            connection: None,
            prefetch: None,
            otlp: None,
            by: None,
            program: Some(program),
            driver: Driver::Worker {
                stop: self.stop.clone(),
            },
        });
        match result {
            // The run recorded how it ended and released its lease.
            Ok(_) => {}
            // It cannot start here, and would not on the next claim either
            // (its program or input, this worker's configuration): failed,
            // with the reason, for a person to fix and `flowc resume`.
            Err(Failure::Usage(m)) => self.fail(&lease, spend, m),
            Err(Failure::Store(e)) => {
                eprintln!("worker: run {id}: {e}; tried again when its lease expires");
            }
            Err(Failure::Leased(m)) => eprintln!("worker: run {id}: {m}"),
        }
    }

    /// Ends a run that cannot start on this worker as `failed`, saying why.
    fn fail(&self, lease: &Lease, spend: flowc::run::budget::Spend, why: String) {
        eprintln!("run {} failed: {why}", lease.run_id);
        let failed = run::status::RunStatus::Failed.as_str();
        if let Err(e) = self
            .store
            .finish_run(lease, &RunEnd::bare(failed, Some(&why), spend))
        {
            eprintln!("worker: run {}: {e}", lease.run_id);
        }
    }
}
