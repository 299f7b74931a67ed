//! A resume's second connection to the run store, opened on a thread of its
//! own, which reads the run's completed steps there before it is handed on.
//!
//! `flowc resume` needs two connections (the run's, which took the lease,
//! and the heartbeat's) and every completed step's row before the run can
//! start. Opening the second connection and reading the rows on it take
//! about as long as decoding the kept program, which the main thread does
//! meanwhile: on two cores they overlap. The thread starts after the lease
//! is taken, so the rows it reads are the run's as of that lease, and no
//! other process commits a step of the run while this one holds it.
//! The run waits for the thread before it starts: a store the second
//! connection cannot open stops the run before anything runs, as opening
//! it on the main thread did.

use std::path::PathBuf;
use std::thread::JoinHandle;

use super::{Durability, Result, StepTexts, Store, StoreError};

/// The second connection and the rows, being opened and read.
pub struct Prefetch(JoinHandle<Result<(Store, Result<StepTexts>)>>);

impl Prefetch {
    /// Opens `path` again and reads run `run`'s completed steps on a new
    /// thread. Start it only once the run's lease is held.
    pub fn start(path: PathBuf, durability: Durability, run: String) -> Prefetch {
        Prefetch(std::thread::spawn(move || {
            let store = Store::open(&path, durability)?;
            let texts = store.step_texts(&run);
            Ok((store, texts))
        }))
    }

    /// Waits for the thread: the connection, and the rows read on it. The
    /// connection's error stops the caller where opening it would have;
    /// the rows' error is the run's to report where it reads them.
    pub fn wait(self) -> Result<(Store, Result<StepTexts>)> {
        self.0.join().unwrap_or_else(|_| {
            Err(StoreError::Failed(
                "the thread reading the run's steps stopped".into(),
            ))
        })
    }
}
