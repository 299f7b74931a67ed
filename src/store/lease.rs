//! Run leases: a run has at most one owner at a time.
//!
//! The lease lives on the run's row (`owner`, `lease_until`, `epoch`). It is
//! taken in the transaction that reads the run's state, renewed by a
//! heartbeat and by every write of the run's spend (at least every third of
//! its lifetime while steps commit), and released when the process stops
//! driving the run. Every write a run makes is fenced by the epoch it took
//! the lease at: a process whose lease was taken over (it was paused, its
//! lease expired, another process took the run) finds a newer epoch and its
//! write is rejected, so a revived process cannot commit twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::{RunRecord, Store};

/// This process's hold on one run.
#[derive(Clone, Debug)]
pub struct Lease {
    pub run_id: String,
    /// `HOST/PID/NONCE`: which process holds the run.
    pub owner: String,
    /// Bumped by every acquisition; writes are accepted only at this epoch.
    pub epoch: i64,
    /// How long the lease lives without a renewal.
    pub ttl: Duration,
}

/// What an attempt to take a run's lease found.
pub enum Acquired {
    /// The lease is ours; the run's state was read in the same transaction.
    Taken(Box<RunRecord>, Lease),
    /// A live process holds the run.
    Held {
        owner: String,
        until: f64,
    },
    Missing,
}

impl Lease {
    /// A lease for a run this process is about to create (epoch 1).
    pub fn new_run(run_id: &str) -> Lease {
        Lease {
            run_id: run_id.to_string(),
            owner: owner_id(),
            epoch: 1,
            ttl: ttl(),
        }
    }

    pub fn until(&self) -> f64 {
        super::now() + self.ttl.as_secs_f64()
    }
}

/// How long a lease lives without renewal: `FLOWC_LEASE_SECONDS`, default 30.
pub fn ttl() -> Duration {
    std::env::var("FLOWC_LEASE_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// This process's owner id: `HOST/PID/NONCE` (the nonce tells apart two
/// processes that reused one pid).
pub fn owner_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        format!(
            "{}/{}/{:08x}",
            host(),
            std::process::id(),
            fastrand::u32(..)
        )
    })
    .clone()
}

/// Whether the owner of a lease is known to be dead: it ran on this host
/// and its process is gone. Such a lease is taken over at once instead of
/// after it expires; an owner on another host is trusted until expiry.
pub fn owner_is_dead(owner: &str) -> bool {
    let mut parts = owner.split('/');
    let (Some(h), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    if h != host() || h == "unknown" {
        return false;
    }
    if pid == std::process::id().to_string() {
        return owner != owner_id();
    }
    !std::path::Path::new("/proc").join(pid).exists()
}

/// Renews a lease every third of its lifetime on a connection of its own,
/// until dropped. If the lease was taken over, `lost()` says so (the next
/// write of the run is rejected anyway).
pub struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    lost: Arc<AtomicBool>,
}

impl Heartbeat {
    pub fn start(store: Store, lease: Lease) -> Heartbeat {
        let (stop, stopped) = mpsc::channel::<()>();
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let thread = std::thread::spawn(move || beat(&store, &lease, &stopped, &flag));
        Heartbeat::running(stop, thread, lost)
    }

    /// A heartbeat whose thread is already running [`beat`] (one that
    /// did other work on its connection first: `store::Prefetch`).
    pub(super) fn running(
        stop: mpsc::Sender<()>,
        thread: std::thread::JoinHandle<()>,
        lost: Arc<AtomicBool>,
    ) -> Heartbeat {
        Heartbeat {
            stop: Some(stop),
            thread: Some(thread),
            lost,
        }
    }

    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// A heartbeat's loop: renews `lease` on `store` every third of its
/// lifetime until `stopped`'s sender is dropped, or until the lease was
/// taken over (`lost` set).
pub(super) fn beat(store: &Store, lease: &Lease, stopped: &mpsc::Receiver<()>, lost: &AtomicBool) {
    let every = lease.ttl / 3;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        match store.renew(lease) {
            Ok(true) => {}
            Ok(false) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // A store that is briefly unreachable: try again next beat.
            Err(_) => {}
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
