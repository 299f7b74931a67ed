//! A resume's second connection to the run store, opened on a thread of its
//! own, which reads the run's completed steps there before it is handed on.
//!
//! `flowc resume` needs two connections (the run's, which took the lease,
//! and the heartbeat's) and every completed step's row before the run can
//! start. Opening the second connection and reading the rows on it take
//! about as long as decoding the kept program, which the main thread does
//! meanwhile: on two cores they overlap. The thread opens its connection
//! at once but reads only once the lease is taken, so the rows it reads are
//! the run's as of that lease, and no other process commits a step of the
//! run while this one holds it.
//! The run waits for the thread before it starts: a store the second
//! connection cannot open stops the run before anything runs, as opening
//! it on the main thread did.

use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use super::{Durability, Result, StepTexts, Store, StoreError};

/// The second connection and the rows, being opened and read.
pub struct Prefetch {
    thread: JoinHandle<Result<(Store, Result<StepTexts>)>>,
    /// Which run's steps to read, sent once its lease is held; dropped
    /// unsent, the thread stops without reading.
    read: Sender<String>,
}

impl Prefetch {
    /// Opens `path` again on a new thread, which then waits for
    /// [`Prefetch::read`]. Started before the lease is taken: a new thread
    /// can wait for a core for up to a scheduler tick (4 ms on the
    /// project's reference machine, as long as the read it is there to
    /// overlap), and that wait then passes while this thread opens the
    /// store and takes the lease.
    pub fn open(path: PathBuf, durability: Durability) -> Prefetch {
        let (read, run) = mpsc::channel::<String>();
        let thread = std::thread::spawn(move || {
            let store = Store::open(&path, durability)?;
            let run = run
                .recv()
                .map_err(|_| StoreError::Failed("the run's steps were never asked for".into()))?;
            let texts = store.step_texts(&run);
            Ok((store, texts))
        });
        Prefetch { thread, read }
    }

    /// Reads run `run`'s completed steps on the thread's connection. Call
    /// it only once the run's lease is held.
    pub fn read(&self, run: String) {
        // A thread that already stopped (its open failed) says why in `wait`.
        let _ = self.read.send(run);
    }

    /// [`Prefetch::open`], then [`Prefetch::read`] at once.
    pub fn start(path: PathBuf, durability: Durability, run: String) -> Prefetch {
        let prefetch = Prefetch::open(path, durability);
        prefetch.read(run);
        prefetch
    }

    /// Waits for the thread: the connection, and the rows read on it. The
    /// connection's error stops the caller where opening it would have;
    /// the rows' error is the run's to report where it reads them.
    pub fn wait(self) -> Result<(Store, Result<StepTexts>)> {
        drop(self.read);
        self.thread.join().unwrap_or_else(|_| {
            Err(StoreError::Failed(
                "the thread reading the run's steps stopped".into(),
            ))
        })
    }
}
