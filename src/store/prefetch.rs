//! A resume's second connection to the run store, opened on a thread of its
//! own, which reads the run's completed steps there and then renews the
//! run's lease on it (the run's heartbeat).
//!
//! `flowc resume` needs two connections (the run's, which took the lease,
//! and the heartbeat's) and every completed step's row before the run can
//! start. Opening the second connection and reading the rows on it take
//! about as long as decoding the kept program, which the main thread does
//! meanwhile: on two cores they overlap. The thread opens its connection
//! at once but reads only once the lease is taken, so the rows it reads are
//! the run's as of that lease, and no other process commits a step of the
//! run while this one holds it.
//! A store the second connection cannot open stops the caller before the
//! run starts ([`Prefetch::heartbeat`]), as opening it on the main thread
//! did. The rows are waited for only where the run first needs them
//! ([`PendingTexts::wait`]), so what the run sets up before (its trace,
//! its clients, its first plan) overlaps the read too; and if they are
//! not all read by then, the run's own connection reads the rest from the
//! other end meanwhile ([`ReadMeeting`]).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::lease::{beat, Heartbeat};
use super::{Durability, Lease, PendingTexts, ReadMeeting, Result, StepTexts, Store, StoreError};

/// The second connection and the rows, being opened and read.
pub struct Prefetch {
    thread: JoinHandle<()>,
    /// Whose steps to read and whose lease to renew, sent once the lease
    /// is held; dropped unsent, the thread stops without reading.
    read: Sender<Lease>,
    /// The open's outcome, sent as soon as it is known.
    opened: Receiver<Result<()>>,
    texts: Receiver<Result<StepTexts>>,
    /// Where the thread's read and the run's own connection's meet.
    meeting: Arc<ReadMeeting>,
    /// Dropped to stop the heartbeat.
    stop: Sender<()>,
    lost: Arc<AtomicBool>,
}

impl Prefetch {
    /// Opens `path` again on a new thread, which then waits for
    /// [`Prefetch::read`]. Started before the lease is taken: a new thread
    /// can wait for a core for up to a scheduler tick (4 ms on the
    /// project's reference machine, as long as the read it is there to
    /// overlap), and that wait then passes while this thread opens the
    /// store and takes the lease.
    pub fn open(path: PathBuf, durability: Durability) -> Prefetch {
        let (read, lease) = mpsc::channel::<Lease>();
        let (opened_tx, opened) = mpsc::channel();
        let (texts_tx, texts) = mpsc::channel();
        let (stop, stopped) = mpsc::channel::<()>();
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let meeting = Arc::new(ReadMeeting::default());
        let up = meeting.clone();
        let thread = std::thread::spawn(move || {
            let store = match Store::open(&path, durability) {
                Ok(store) => store,
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            let _ = opened_tx.send(Ok(()));
            let Ok(lease) = lease.recv() else {
                let _ = texts_tx.send(Err(StoreError::Failed(
                    "the run's steps were never asked for".into(),
                )));
                return;
            };
            let _ = texts_tx.send(store.step_texts_up(&lease.run_id, &up));
            beat(&store, &lease, &stopped, &flag);
        });
        Prefetch {
            thread,
            read,
            opened,
            texts,
            meeting,
            stop,
            lost,
        }
    }

    /// Reads the steps of `lease`'s run on the thread's connection, then
    /// renews the lease there. Call it only once the lease is held.
    pub fn read(&self, lease: Lease) {
        // A thread that already stopped (its open failed) says why in
        // `heartbeat`.
        let _ = self.read.send(lease);
    }

    /// [`Prefetch::open`], then [`Prefetch::read`] at once.
    pub fn start(path: PathBuf, durability: Durability, lease: Lease) -> Prefetch {
        let prefetch = Prefetch::open(path, durability);
        prefetch.read(lease);
        prefetch
    }

    /// Waits for the connection only: the run's heartbeat (the thread,
    /// which renews the lease once it has read the rows) and the rows, for
    /// the run to wait for where it needs them. The connection's error
    /// stops the caller where opening it would have; the rows' error is
    /// the run's to report where it reads them.
    pub fn heartbeat(self) -> Result<(Heartbeat, PendingTexts)> {
        let Prefetch {
            thread,
            read,
            opened,
            texts,
            meeting,
            stop,
            lost,
        } = self;
        drop(read);
        match opened.recv() {
            Ok(Ok(())) => Ok((
                Heartbeat::running(stop, thread, lost),
                PendingTexts::new(texts, meeting),
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(StoreError::Failed(
                    "the thread opening the store again stopped".into(),
                ))
            }
        }
    }
}
