//! Checkpoints of a SQLite store's write-ahead log on a thread of their own
//! ([`WalCheckpoints`]).
//!
//! SQLite checkpoints a WAL connection's log inside the commit that takes
//! it past 1,000 pages: that commit copies the log's pages into the
//! database and syncs the database file before it returns (10–80 ms on
//! this project's virtual disk, against ~0.3 ms for a commit). A run's
//! commit is on its critical path, so a store's connection leaves that
//! work to a thread with a connection of its own, which checkpoints
//! without blocking the writer (`PASSIVE`), passes again for what was
//! committed meanwhile, and the writer starts the log over once every page
//! is copied. Only one checkpoint is asked for at a
//! time; if the thread cannot be started, the commit checkpoints as SQLite
//! would have. Commits back to back leave the log no moment to start over
//! in: past four times the mark, the commit waits for the thread's pass to
//! end and copies what is left itself, so the log is bounded whatever the
//! thread's speed (under load, a pass that syncs the database can take
//! longer than thousands of unsynced commits). Another process's
//! checkpoint is not waited for: SQLite answers busy, and the next commit
//! tries again.

use std::os::raw::c_int;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::Connection;

use super::{Durability, SqliteStore};

/// Pages in the log past which a checkpoint is asked for: SQLite's own
/// `wal_autocheckpoint` default.
const LOG_PAGES: c_int = 1_000;

/// Pages in the log past which the commit checkpoints itself. The writer
/// starts the log over only if its next transaction begins after a
/// checkpoint copied every page, which commits back to back never let the
/// thread do.
const INLINE_PAGES: c_int = 4 * LOG_PAGES;

/// Checkpoints in a row, at most, to copy what was committed meanwhile.
const PASSES: usize = 8;

/// The thread's name (what `/proc/PID/task/TID/comm` shows: at most 15
/// bytes).
const THREAD_NAME: &str = "flowc-wal-ckpt";

/// What a store's connection asks its checkpoint thread to do, from
/// SQLite's hook after each commit.
pub(super) struct WalCheckpoints {
    path: PathBuf,
    durability: Durability,
    /// The thread's queue, once it is started.
    thread: Option<Sender<()>>,
    /// A checkpoint was asked for and has not ended.
    asked: Arc<AtomicBool>,
    /// Held by the thread while it copies: a commit past [`INLINE_PAGES`]
    /// waits on it, since SQLite answers a checkpoint that finds another
    /// one running with busy, without waiting.
    copying: Arc<Mutex<()>>,
}

impl WalCheckpoints {
    /// Sets the hook on `conn`: from now on its commits never checkpoint
    /// (SQLite's automatic checkpoint is this same hook, replaced).
    pub(super) fn install(
        conn: &mut Connection,
        path: PathBuf,
        durability: Durability,
    ) -> rusqlite::Result<()> {
        let mut checkpoints = WalCheckpoints {
            path,
            durability,
            thread: None,
            asked: Arc::default(),
            copying: Arc::default(),
        };
        // The hook never fails: an error from it would make the statement
        // that committed report it although its commit stands.
        conn.wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
            checkpoints.committed(wal, pages);
            Ok(())
        }))
    }

    /// After a commit that left `pages` in the log.
    fn committed(&mut self, wal: &mut Wal, pages: c_int) {
        if pages >= INLINE_PAGES {
            // Commits back to back left the thread no moment between two of
            // them to finish in, so the log never started over: this commit
            // waits for the thread's pass, if one is running, and copies
            // what is left. The thread's `PASSIVE` passes wait for no lock
            // of SQLite's, so the wait ends; a poisoned lock only means the
            // thread is gone.
            let _copying = self.copying.lock().unwrap_or_else(|e| e.into_inner());
            let _ = wal.checkpoint();
            return;
        }
        if pages < LOG_PAGES || self.asked.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.thread.is_none() {
            self.thread = self.start();
        }
        match &self.thread {
            Some(thread) if thread.send(()).is_ok() => {}
            // No thread: as SQLite would have, in this commit, whatever
            // the checkpoint returns (busy, when another connection is
            // copying), as SQLite's own hook does.
            _ => {
                self.thread = None;
                self.asked.store(false, Ordering::Release);
                let _ = wal.checkpoint();
            }
        }
    }

    /// The checkpoint thread: its own connection, one `PASSIVE` checkpoint
    /// for each request; it ends when the store's connection is closed
    /// (the hook, and its end of the queue, dropped with it).
    fn start(&self) -> Option<Sender<()>> {
        let conn = Connection::open(&self.path).ok()?;
        SqliteStore::configure(&conn, self.durability).ok()?;
        let (sender, requests) = mpsc::channel::<()>();
        let asked = self.asked.clone();
        let copying = self.copying.clone();
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                while requests.recv().is_ok() {
                    let copying = copying.lock().unwrap_or_else(|e| e.into_inner());
                    // Until every page of the log is in the database, for
                    // the writer to start the log over: the pages committed
                    // during one pass are copied by the next, fewer each
                    // time (copying is faster than committing). A busy or
                    // failed checkpoint leaves the log as it was, and the
                    // next commit past the mark asks again.
                    for _ in 0..PASSES {
                        match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
                            Ok((log, copied)) if copied < log => continue,
                            _ => break,
                        }
                    }
                    drop(copying);
                    asked.store(false, Ordering::Release);
                }
            })
            .ok()?;
        Some(sender)
    }
}
