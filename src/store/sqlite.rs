//! The SQLite run store: an embedded file (`.flowc/runs.db` by default).
//!
//! A step's result is committed before any step that depends on it starts;
//! steps that complete together commit in one transaction. A row holds one
//! step's value, so a checkpoint grows with the step's output, never with the
//! size of the graph. WAL mode; `synchronous=FULL` by default, so a committed
//! step survives a power cut.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::types::{Type, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::lease::owner_is_dead;
use super::wal_checkpoints::WalCheckpoints;
use super::{
    now, Acquired, Backend, Durability, GateRecord, Lease, NoticeStage, ReadMeeting, Reply,
    ReviewRecord, RunEnd, RunRecord, StepRow, StepTexts, Store, StoreError, Verdict, CLAIMABLE,
};
use crate::run::budget::Spend;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        if is_busy(&e) {
            return StoreError::Busy(e.to_string());
        }
        StoreError::Failed(e.to_string())
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// Versioned schema: migration `i` brings the file from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    flow TEXT NOT NULL,
    program TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    tool_calls INTEGER NOT NULL DEFAULT 0,
    trace TEXT NOT NULL,
    replay TEXT
);
CREATE TABLE steps (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    value TEXT,
    completed_at REAL NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE intents (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE replies (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    reply TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    PRIMARY KEY (run_id, key, attempt)
) WITHOUT ROWID;
CREATE TABLE gates (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    flow TEXT NOT NULL,
    gate TEXT NOT NULL,
    show TEXT NOT NULL,
    status TEXT NOT NULL,
    value TEXT,
    reason TEXT,
    created_at REAL NOT NULL,
    timeout_at REAL,
    on_timeout TEXT NOT NULL,
    decided_at REAL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until REAL;
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
ALTER TABLE runs ADD COLUMN wall REAL NOT NULL DEFAULT 0;
"#,
    r#"
ALTER TABLE gates ADD COLUMN decided_by TEXT;
"#,
    r#"
ALTER TABLE runs ADD COLUMN root_span INTEGER;
ALTER TABLE runs ADD COLUMN root_written INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
CREATE TABLE programs (
    run_id TEXT PRIMARY KEY REFERENCES runs(id),
    snapshot TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX runs_status ON runs (status);
"#,
    r#"
CREATE TABLE model_rates (key TEXT PRIMARY KEY, next_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE model_slots (
    key TEXT NOT NULL,
    slot TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (key, slot)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE gates ADD COLUMN source TEXT;
ALTER TABLE gates ADD COLUMN policy_read TEXT;
ALTER TABLE gates ADD COLUMN notified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE gates ADD COLUMN escalated_at REAL;
CREATE TABLE reviews (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    flow TEXT NOT NULL,
    gate TEXT NOT NULL,
    sampled_at REAL NOT NULL,
    day TEXT NOT NULL,
    verdict TEXT,
    reviewed_by TEXT,
    reviewed_at REAL,
    note TEXT,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX reviews_day ON reviews (flow, gate, day);
"#,
    // Sealed programs a resume runs without compiling (`program_cache.rs`),
    // by key. Rows of their own, not `WITHOUT ROWID`: an entry is a large
    // blob, written once and read whole.
    r#"
CREATE TABLE sealed_programs (
    key TEXT PRIMARY KEY,
    program BLOB NOT NULL,
    kept_at REAL NOT NULL
);
"#,
    // The run's steps, tool calls and active time when the step committed
    // (`Backend::commit_steps`): a commit need not write the run's row to
    // keep them, and a resume after a crash reads them exactly.
    r#"
ALTER TABLE steps ADD COLUMN run_steps INTEGER;
ALTER TABLE steps ADD COLUMN run_tool_calls INTEGER;
ALTER TABLE steps ADD COLUMN run_wall REAL;
"#,
];

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    durability: Durability,
}

/// Whether an error is SQLite saying another connection holds the lock.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Runs `f` again while SQLite reports the store busy, with growing,
/// jittered pauses, for up to a minute. Only ever wraps a whole transaction
/// (or a statement that is one): a busy error rolls it back, so running it
/// again is safe.
fn retry<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let started = std::time::Instant::now();
    let mut pause = 1u64;
    loop {
        match f() {
            Err(e) if is_busy(&e) && started.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(pause + fastrand::u64(..=pause)));
                pause = (pause * 2).min(50);
            }
            other => return other,
        }
    }
}

/// Ends a write transaction `begin` started: `COMMIT` when `body`
/// succeeded, else (or when the commit failed, busy or not) a rollback.
fn finish_tx<T>(conn: &Connection, body: Result<T>) -> Result<T> {
    let ended = match body {
        Ok(v) => conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
            .map(|_| v)
            .map_err(StoreError::from),
        Err(e) => Err(e),
    };
    if ended.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    ended
}

/// Starts a write transaction: `BEGIN IMMEDIATE` takes the write lock at
/// once, so two writers never deadlock upgrading read locks (which SQLite
/// reports as busy without waiting). `BEGIN` and `COMMIT` are prepared once
/// per connection: parsing them again for every commit was a fifth of a
/// commit's CPU time.
fn begin(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    Ok(())
}

/// The lease check every write of a run makes first, in its transaction:
/// the run's epoch must still be the lease's. Renews the lease too.
fn fence(conn: &Connection, lease: &Lease) -> Result<()> {
    let changed = conn
        .prepare_cached("UPDATE runs SET lease_until = ?3 WHERE id = ?1 AND epoch = ?2")?
        .execute(params![lease.run_id, lease.epoch, lease.until()])?;
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::LeaseLost(lease.run_id.clone()))
    }
}

/// The lease check of a commit that leaves the run's row alone: the
/// run's epoch read inside the write transaction. `BEGIN IMMEDIATE` holds
/// the store's write lock from the start, so no acquisition can bump the
/// epoch between this read and the commit: the fence holds as it does for
/// a write of the row, without dirtying the row's page.
fn check_epoch(conn: &Connection, lease: &Lease) -> Result<()> {
    let epoch: Option<i64> = conn
        .prepare_cached("SELECT epoch FROM runs WHERE id = ?1")?
        .query_row([&lease.run_id], |r| r.get(0))
        .optional()?;
    if epoch == Some(lease.epoch) {
        Ok(())
    } else {
        Err(StoreError::LeaseLost(lease.run_id.clone()))
    }
}

/// Commits `f`'s writes in one write transaction, retried while busy.
fn in_write_tx<T>(conn: &Connection, mut f: impl FnMut(&Connection) -> Result<T>) -> Result<T> {
    let mut outcome: Option<Result<T>> = None;
    retry(|| {
        begin(conn)?;
        match finish_tx(conn, f(conn)) {
            Ok(v) => outcome = Some(Ok(v)),
            // A busy statement inside the transaction, or a busy commit
            // (rolled back): retry it whole.
            Err(StoreError::Busy(m)) => {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some(m),
                ));
            }
            Err(e) => outcome = Some(Err(e)),
        }
        Ok(())
    })?;
    outcome.unwrap_or_else(|| Err(StoreError::Failed("the transaction did not run".into())))
}

impl SqliteStore {
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Failed(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        let mut conn = Connection::open(path)?;
        SqliteStore::configure(&conn, durability)?;
        // Its commits leave checkpoints to a thread of their own.
        WalCheckpoints::install(&mut conn, path.to_path_buf(), durability)?;
        let store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            durability,
        };
        store.migrate()?;
        Ok(store)
    }

    /// The settings every connection to a store gets: busy timeout, WAL,
    /// `synchronous` by `durability`, foreign keys. Public so a benchmark's
    /// bare connection (the floor a commit is compared with) gets exactly
    /// these, not a copy that may drift.
    pub fn configure(conn: &Connection, durability: Durability) -> Result<()> {
        conn.busy_timeout(Duration::from_secs(10))?;
        // Switching to WAL needs the file to itself for a moment: many
        // processes opening one new store at once retry it.
        retry(|| conn.pragma_update(None, "journal_mode", "WAL"))?;
        conn.pragma_update(None, "synchronous", synchronous(durability))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // No checkpoint when the last connection closes: the WAL is as
        // durable as the database, and it is checkpointed as it grows
        // (every 1,000 pages; a store's own connection leaves that to a
        // thread: `WalCheckpoints`). Checkpointing at close copied the whole
        // run's pages and fsynced the database at every process exit and
        // store drop: ~16 ms a run on this machine's disk, more than its
        // commits for runs of fewer than ~50 steps.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        Ok(())
    }

    /// The rows of [`Backend::step_texts`] that `sql` gives and `take`
    /// takes (in the order `sql` gives them, stopping at the first it does
    /// not), read through a map of the file (see `step_texts`).
    fn read_step_texts(
        &self,
        run: &str,
        sql: &str,
        take: &dyn Fn(&[u8]) -> bool,
    ) -> Result<StepTexts> {
        // Read through a map of the file for this one read: a long run's
        // rows are most of the file, and page by page each was a `pread`
        // and a copy into a page-cache buffer allocated for it (for 10,000
        // steps: 850 `pread`s, 300 heap extensions and 400 page faults on
        // the resume's reading thread). Only for this read: a mapped page
        // the disk fails to read ends the process (SIGBUS) rather than
        // failing the read, and the rest of the run reads and writes as
        // before. SQLite never writes through the map, and a page still
        // in the WAL is read from the WAL. A store that cannot be mapped
        // is read the usual way: the setting is how it reads, not what.
        let _ = self
            .conn
            .pragma_update(None, "mmap_size", MAPPED_READ_BYTES);
        let texts = self.read_step_rows(run, sql, take);
        let _ = self.conn.pragma_update(None, "mmap_size", 0);
        texts
    }

    /// `read_step_texts`, read however the connection is set to read.
    fn read_step_rows(
        &self,
        run: &str,
        sql: &str,
        take: &dyn Fn(&[u8]) -> bool,
    ) -> Result<StepTexts> {
        Ok(retry(|| {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let mut rows = stmt.query([run])?;
            let mut texts = StepTexts::default();
            // The bytes as SQLite holds them: whoever parses a value checks
            // it, so nothing is checked twice.
            while let Some(r) = rows.next()? {
                let key = r.get_ref(0)?;
                let key = key.as_bytes().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(0, Type::Text, Box::new(e))
                })?;
                if !take(key) {
                    break;
                }
                let value = r.get_ref(1)?.as_bytes_or_null().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(1, Type::Text, Box::new(e))
                })?;
                texts.push(key, value);
                // Matched as the store wrote them: a typed `get` for each
                // count cost a 10,000-step resume's reading thread 0.85 M
                // instructions (of 25 M) more. Anything else takes the
                // typed path, which converts or fails as it always did.
                let counts = match (r.get_ref(2)?, r.get_ref(3)?, r.get_ref(4)?) {
                    (ValueRef::Integer(steps), ValueRef::Integer(calls), ValueRef::Real(wall)) => {
                        Some((steps, calls, wall))
                    }
                    (ValueRef::Null, ValueRef::Null, ValueRef::Null) => None,
                    _ => match (
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, Option<f64>>(4)?,
                    ) {
                        (Some(steps), Some(calls), Some(wall)) => Some((steps, calls, wall)),
                        _ => None,
                    },
                };
                if let Some((steps, tool_calls, wall)) = counts {
                    texts.count(steps as u64, tool_calls as u64, wall);
                }
            }
            Ok::<_, rusqlite::Error>(texts)
        })?)
    }

    fn migrate(&self) -> Result<()> {
        let version = |conn: &Connection| -> Result<usize> {
            let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            usize::try_from(v).map_err(|_| StoreError::Failed("bad schema version".into()))
        };
        let check = |v: usize| {
            if v > MIGRATIONS.len() {
                Err(StoreError::Failed(format!(
                    "the store was written by a newer flowc (schema {v}, this flowc knows {})",
                    MIGRATIONS.len()
                )))
            } else {
                Ok(())
            }
        };
        let v = retry(|| {
            self.conn
                .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        })?;
        if usize::try_from(v).is_ok_and(|v| v == MIGRATIONS.len()) {
            return Ok(());
        }
        // Another process may migrate at the same time: read the version
        // again under the write lock.
        in_write_tx(&self.conn, |tx| {
            let v = version(tx)?;
            check(v)?;
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(v) {
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            }
            Ok(())
        })
    }

    /// Runs `f`'s writes with `synchronous=OFF`: in WAL mode each commit is
    /// written to the WAL file but not fsynced, which a process crash cannot
    /// undo; the next synchronous commit fsyncs the WAL through it. The
    /// store's own setting is restored whatever `f` returns.
    fn unsynced<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.conn.pragma_update(None, "synchronous", "OFF")?;
        let outcome = f();
        let restored = self
            .conn
            .pragma_update(None, "synchronous", synchronous(self.durability));
        let value = outcome?;
        restored?;
        Ok(value)
    }

    /// `acquire`'s transaction.
    fn take_lease(&self, id: &str, owner: &str, ttl: Duration) -> Result<Acquired> {
        in_write_tx(&self.conn, |tx| {
            let Some(record) = tx
                .query_row("SELECT * FROM runs WHERE id = ?1", [id], run_row)
                .optional()?
            else {
                return Ok(Acquired::Missing);
            };
            if let (Some(holder), Some(until)) = (&record.owner, record.lease_until) {
                if holder != owner && until > now() && !owner_is_dead(holder) {
                    return Ok(Acquired::Held {
                        owner: holder.clone(),
                        until,
                    });
                }
            }
            let epoch: i64 = tx.query_row(
                "UPDATE runs SET owner = ?2, lease_until = ?3, epoch = epoch + 1 WHERE id = ?1 RETURNING epoch",
                params![id, owner, now() + ttl.as_secs_f64()],
                |r| r.get(0),
            )?;
            let lease = Lease {
                run_id: id.to_string(),
                owner: owner.to_string(),
                epoch,
                ttl,
            };
            Ok(Acquired::Taken(Box::new(record), lease))
        })
    }
}

/// A run's completed steps ([`Backend::step_texts`]); the reads from either
/// end add their order (by key: the table's primary key, so no sort).
const STEP_ROWS: &str =
    "SELECT key, value, run_steps, run_tool_calls, run_wall FROM steps WHERE run_id = ?1";

/// How much of the store file [`Backend::step_texts`] maps to read (all of
/// any store whose file is smaller): address space, not memory.
const MAPPED_READ_BYTES: i64 = 1 << 30;

impl Backend for SqliteStore {
    fn reopen(&self) -> Result<Store> {
        Ok(Store(Box::new(SqliteStore::open(
            &self.path,
            self.durability,
        )?)))
    }

    /// `synchronous=OFF` for it (see `Backend::create_run`).
    fn create_run(&self, r: &RunRecord, lease: &Lease) -> Result<()> {
        self.unsynced(|| Ok(retry(|| insert_run(&self.conn, r, Some(lease)))?))?;
        Ok(())
    }

    /// Takes the run's lease if nobody live holds it, reading the run in the
    /// same transaction; `synchronous=OFF` for it (see `Backend::acquire`).
    fn acquire(&self, id: &str, owner: &str, ttl: Duration) -> Result<Acquired> {
        self.unsynced(|| self.take_lease(id, owner, ttl))
    }

    /// Extends the lease; `false` if it was taken over.
    fn renew(&self, lease: &Lease) -> Result<bool> {
        match in_write_tx(&self.conn, |tx| fence(tx, lease)) {
            Ok(()) => Ok(true),
            Err(StoreError::LeaseLost(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up without finishing the run.
    fn release(&self, lease: &Lease) -> Result<()> {
        retry(|| {
            self.conn.execute(
                "UPDATE runs SET owner = NULL, lease_until = NULL WHERE id = ?1 AND epoch = ?2",
                params![lease.run_id, lease.epoch],
            )
        })?;
        Ok(())
    }

    fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        Ok(retry(|| {
            self.conn
                .query_row("SELECT * FROM runs WHERE id = ?1", [id], run_row)
                .optional()
        })?)
    }

    /// Runs, newest first.
    fn runs(&self) -> Result<Vec<RunRecord>> {
        Ok(retry(|| {
            let mut stmt = self
                .conn
                .prepare("SELECT * FROM runs ORDER BY created_at DESC")?;
            let rows = stmt.query_map([], run_row)?;
            rows.collect::<std::result::Result<_, _>>()
        })?)
    }

    /// Records how the run ended and releases its lease (fenced), in one
    /// transaction with the steps and replies its last commit takes.
    fn finish_run(&self, lease: &Lease, end: &RunEnd<'_>) -> Result<()> {
        in_write_tx(&self.conn, |tx| {
            let at = now();
            let changed = tx.prepare_cached(
                "UPDATE runs SET status = ?3, output = ?4, error = ?5, updated_at = ?6,
             tokens = ?7, cost = ?8, steps = ?9, tool_calls = ?10, wall = ?11, owner = NULL, lease_until = NULL,
             root_written = max(root_written, ?12)
             WHERE id = ?1 AND epoch = ?2",
            )?
            .execute(params![
                lease.run_id,
                lease.epoch,
                end.status,
                end.output.map(Value::to_string),
                end.error,
                at,
                end.spend.tokens as i64,
                end.spend.cost,
                end.spend.steps as i64,
                end.spend.tool_calls as i64,
                end.spend.wall,
                end.root_written
            ])?;
            if changed != 1 {
                return Err(StoreError::LeaseLost(lease.run_id.clone()));
            }
            insert_steps(tx, lease, end.steps, end.replies, end.counted, at)
        })
    }

    /// Completed steps: key → value (`None` for a step that was skipped),
    /// and the counts their commits carried.
    fn step_texts(&self, run: &str) -> Result<StepTexts> {
        self.read_step_texts(run, STEP_ROWS, &|_| true)
    }

    fn step_texts_up(&self, run: &str, meeting: &ReadMeeting) -> Result<StepTexts> {
        let texts = self.read_step_texts(run, &format!("{STEP_ROWS} ORDER BY key"), &|key| {
            meeting.take_up(key)
        })?;
        meeting.up_ended(texts.len().checked_sub(1).map(|i| texts.key(i)));
        Ok(texts)
    }

    fn step_texts_down(&self, run: &str, meeting: &ReadMeeting) -> Result<StepTexts> {
        self.read_step_texts(run, &format!("{STEP_ROWS} ORDER BY key DESC"), &|key| {
            meeting.take_down(key)
        })
    }

    /// Commits steps that completed together (with the run's counts), and
    /// the run's spend when given, in one transaction fenced by the lease.
    fn commit_steps(
        &self,
        lease: &Lease,
        batch: &[StepRow],
        replies: &[Reply],
        counted: Spend,
        spend: Option<Spend>,
    ) -> Result<()> {
        in_write_tx(&self.conn, |tx| {
            let at = now();
            match spend {
                Some(spend) => save_spend(tx, lease, spend, at)?,
                None => check_epoch(tx, lease)?,
            }
            insert_steps(tx, lease, batch, replies, counted, at)
        })
    }

    /// Records the run's spend so far (fenced by the lease), with
    /// `synchronous=OFF` for this one transaction: in WAL mode the commit
    /// is written to the WAL file but not fsynced, which a process crash
    /// cannot undo; the next synchronous commit fsyncs the WAL through it.
    fn record_spend(&self, lease: &Lease, spend: Spend) -> Result<()> {
        self.unsynced(|| in_write_tx(&self.conn, |tx| save_spend(tx, lease, spend, now())))
    }

    /// Records the intent to call a tool with an effect, before the call.
    fn intent(&self, lease: &Lease, key: &str, idempotency_key: &str) -> Result<()> {
        in_write_tx(&self.conn, |tx| {
            fence(tx, lease)?;
            tx.execute(
                "INSERT OR IGNORE INTO intents (run_id, key, idempotency_key, started_at) VALUES (?1, ?2, ?3, ?4)",
                params![lease.run_id, key, idempotency_key, now()],
            )?;
            Ok(())
        })
    }

    /// The idempotency key recorded for an intent, if the call was attempted before.
    fn intent_key(&self, run: &str, key: &str) -> Result<Option<String>> {
        Ok(retry(|| {
            self.conn
                .query_row(
                    "SELECT idempotency_key FROM intents WHERE run_id = ?1 AND key = ?2",
                    [run, key],
                    |r| r.get(0),
                )
                .optional()
        })?)
    }

    /// A model reply recorded for a step's attempt: (text, input tokens, output tokens).
    fn reply(&self, run: &str, key: &str, attempt: u32) -> Result<Option<(String, u64, u64)>> {
        Ok(retry(|| {
            self.conn
                .query_row(
                    "SELECT reply, input_tokens, output_tokens FROM replies WHERE run_id = ?1 AND key = ?2 AND attempt = ?3",
                    params![run, key, attempt],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
                )
                .optional()
        })?)
    }

    fn gate(&self, run: &str, key: &str) -> Result<Option<GateRecord>> {
        Ok(retry(|| {
            self.conn
                .query_row(
                    "SELECT * FROM gates WHERE run_id = ?1 AND key = ?2",
                    [run, key],
                    gate_row,
                )
                .optional()
        })?)
    }

    /// Records a gate the run is waiting at (once), fenced by the lease.
    fn pending_gate(&self, lease: &Lease, g: &GateRecord) -> Result<()> {
        in_write_tx(&self.conn, |tx| {
            fence(tx, lease)?;
            tx.execute(
                "INSERT OR IGNORE INTO gates (run_id, key, flow, gate, show, status, created_at, timeout_at, on_timeout)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8)",
                params![g.run_id, g.key, g.flow, g.gate, g.show.to_string(), g.created_at, g.timeout_at, g.on_timeout],
            )?;
            Ok(())
        })
    }

    /// Decides a pending gate; `false` if it was not pending. Not fenced: a
    /// decision is recorded by whoever makes it, and the run reads it.
    fn decide_gate(
        &self,
        run: &str,
        key: &str,
        approve: bool,
        value: Option<&Value>,
        reason: Option<&str>,
        by: &str,
    ) -> Result<bool> {
        let changed = retry(|| {
            self.conn.execute(
                "UPDATE gates SET status = ?3, value = ?4, reason = ?5, decided_at = ?6, decided_by = ?7, source = 'person'
             WHERE run_id = ?1 AND key = ?2 AND status = 'pending'",
                params![
                    run,
                    key,
                    if approve { "approved" } else { "rejected" },
                    value.map(Value::to_string),
                    reason,
                    now(),
                    by
                ],
            )
        })?;
        Ok(changed == 1)
    }

    fn submit_run(&self, r: &RunRecord, snapshot: &str) -> Result<()> {
        in_write_tx(&self.conn, |tx| {
            insert_run(tx, r, None)?;
            tx.execute(
                "INSERT INTO programs (run_id, snapshot) VALUES (?1, ?2)",
                params![r.id, snapshot],
            )?;
            Ok(())
        })
    }

    fn program(&self, run: &str) -> Result<Option<String>> {
        Ok(retry(|| {
            self.conn
                .query_row(
                    "SELECT snapshot FROM programs WHERE run_id = ?1",
                    [run],
                    |r| r.get(0),
                )
                .optional()
        })?)
    }

    fn cached_program(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(retry(|| {
            self.conn
                .query_row(
                    "SELECT program FROM sealed_programs WHERE key = ?1",
                    [key],
                    |r| r.get(0),
                )
                .optional()
        })?)
    }

    fn has_cached_program(&self, key: &str) -> Result<bool> {
        Ok(retry(|| {
            self.conn
                .query_row(
                    "SELECT 1 FROM sealed_programs WHERE key = ?1",
                    [key],
                    |_| Ok(()),
                )
                .optional()
        })?
        .is_some())
    }

    fn keep_program(&self, key: &str, program: &[u8]) -> Result<()> {
        retry(|| {
            self.conn.execute(
                "INSERT OR IGNORE INTO sealed_programs (key, program, kept_at) VALUES (?1, ?2, ?3)",
                params![key, program, now()],
            )
        })?;
        Ok(())
    }

    /// Under SQLite's write lock (`BEGIN IMMEDIATE`), which serializes
    /// claims as `FOR UPDATE SKIP LOCKED` does on PostgreSQL.
    fn claim(&self, owner: &str, ttl: Duration) -> Result<Option<(RunRecord, Lease)>> {
        let sql = format!(
            "SELECT * FROM runs r WHERE {} ORDER BY r.created_at LIMIT 1",
            CLAIMABLE.replace("$NOW", "?1")
        );
        in_write_tx(&self.conn, |tx| {
            let at = now();
            let Some(record) = tx
                .prepare_cached(&sql)?
                .query_row([at], run_row)
                .optional()?
            else {
                return Ok(None);
            };
            let epoch: i64 = tx.query_row(
                "UPDATE runs SET owner = ?2, lease_until = ?3, epoch = epoch + 1, status = 'running' WHERE id = ?1 RETURNING epoch",
                params![record.id, owner, at + ttl.as_secs_f64()],
                |r| r.get(0),
            )?;
            let lease = Lease {
                run_id: record.id.clone(),
                owner: owner.to_string(),
                epoch,
                ttl,
            };
            Ok(Some((record, lease)))
        })
    }

    fn rate_turn(&self, key: &str, spacing: f64) -> Result<f64> {
        in_write_tx(&self.conn, |tx| {
            let at = now();
            let next: Option<f64> = tx
                .query_row(
                    "SELECT next_at FROM model_rates WHERE key = ?1",
                    [key],
                    |r| r.get(0),
                )
                .optional()?;
            let start = next.map_or(at, |n| n.max(at));
            tx.execute(
                "INSERT OR REPLACE INTO model_rates (key, next_at) VALUES (?1, ?2)",
                params![key, start + spacing],
            )?;
            Ok(start)
        })
    }

    fn take_slot(&self, key: &str, limit: u64, until: f64) -> Result<Option<String>> {
        in_write_tx(&self.conn, |tx| {
            tx.execute(
                "DELETE FROM model_slots WHERE key = ?1 AND until < ?2",
                params![key, now()],
            )?;
            let held: i64 = tx.query_row(
                "SELECT count(*) FROM model_slots WHERE key = ?1",
                [key],
                |r| r.get(0),
            )?;
            if held as u64 >= limit {
                return Ok(None);
            }
            let slot = crate::run::new_run_id();
            tx.execute(
                "INSERT INTO model_slots (key, slot, until) VALUES (?1, ?2, ?3)",
                params![key, slot, until],
            )?;
            Ok(Some(slot))
        })
    }

    fn free_slot(&self, key: &str, slot: &str) -> Result<()> {
        retry(|| {
            self.conn.execute(
                "DELETE FROM model_slots WHERE key = ?1 AND slot = ?2",
                [key, slot],
            )
        })?;
        Ok(())
    }

    /// Gates of one run (or of every run), oldest first.
    fn gates(&self, run: Option<&str>) -> Result<Vec<GateRecord>> {
        Ok(retry(|| {
            let mut stmt = self.conn.prepare(
                "SELECT * FROM gates WHERE (?1 IS NULL OR run_id = ?1) ORDER BY created_at",
            )?;
            let rows = stmt.query_map([run], gate_row)?;
            rows.collect::<std::result::Result<_, _>>()
        })?)
    }

    fn decide_gate_on_timeout(&self, run: &str, key: &str, approve: bool) -> Result<bool> {
        let changed = retry(|| {
            self.conn.execute(
                "UPDATE gates SET status = ?3, reason = ?4, decided_at = ?5, decided_by = 'timeout', source = 'timeout'
                 WHERE run_id = ?1 AND key = ?2 AND status = 'pending'",
                params![
                    run,
                    key,
                    if approve { "approved" } else { "rejected" },
                    if approve { None } else { Some("timed out") },
                    now()
                ],
            )
        })?;
        Ok(changed == 1)
    }

    fn decide_gate_by_policy(&self, run: &str, key: &str, read: &Value) -> Result<bool> {
        let changed = retry(|| {
            self.conn.execute(
                "UPDATE gates SET status = 'approved', decided_at = ?3, decided_by = 'policy', source = 'policy', policy_read = ?4
                 WHERE run_id = ?1 AND key = ?2 AND status = 'pending'",
                params![run, key, now(), read.to_string()],
            )
        })?;
        Ok(changed == 1)
    }

    fn claim_notice(&self, run: &str, key: &str, stage: NoticeStage) -> Result<bool> {
        let changed = retry(|| {
            self.conn.execute(
                "UPDATE gates SET notified = ?3
                 WHERE run_id = ?1 AND key = ?2 AND status = 'pending' AND notified < ?3",
                params![run, key, stage.as_number()],
            )
        })?;
        Ok(changed == 1)
    }

    fn escalate_gate(&self, run: &str, key: &str, timeout_at: f64) -> Result<bool> {
        let changed = retry(|| {
            self.conn.execute(
                "UPDATE gates SET escalated_at = ?3, timeout_at = ?4
                 WHERE run_id = ?1 AND key = ?2 AND status = 'pending' AND escalated_at IS NULL",
                params![run, key, now(), timeout_at],
            )
        })?;
        Ok(changed == 1)
    }

    fn sample_review(&self, r: &ReviewRecord, per_day: Option<u64>) -> Result<bool> {
        // The count and the insert in one statement under the write lock:
        // processes sampling at once never pass the day's cap.
        let cap = per_day.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let changed = retry(|| {
            self.conn.execute(
                "INSERT OR IGNORE INTO reviews (run_id, key, flow, gate, sampled_at, day)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6
                 WHERE (SELECT COUNT(*) FROM reviews WHERE flow = ?3 AND gate = ?4 AND day = ?6) < ?7",
                params![r.run_id, r.key, r.flow, r.gate, r.sampled_at, r.day, cap],
            )
        })?;
        Ok(changed == 1)
    }

    fn reviews(&self, run: Option<&str>, open_only: bool) -> Result<Vec<ReviewRecord>> {
        Ok(retry(|| {
            let mut stmt = self.conn.prepare(
                "SELECT * FROM reviews WHERE (?1 IS NULL OR run_id = ?1) AND (?2 = 0 OR verdict IS NULL)
                 ORDER BY sampled_at",
            )?;
            let rows = stmt.query_map(params![run, open_only], review_row)?;
            rows.collect::<std::result::Result<_, _>>()
        })?)
    }

    fn record_review(
        &self,
        run: &str,
        key: &str,
        verdict: Verdict,
        by: &str,
        note: Option<&str>,
    ) -> Result<bool> {
        let changed = retry(|| {
            self.conn.execute(
                "UPDATE reviews SET verdict = ?3, reviewed_by = ?4, reviewed_at = ?5, note = ?6
                 WHERE run_id = ?1 AND key = ?2 AND verdict IS NULL",
                params![run, key, verdict.as_str(), by, now(), note],
            )
        })?;
        Ok(changed == 1)
    }
}

fn review_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReviewRecord> {
    Ok(ReviewRecord {
        run_id: r.get("run_id")?,
        key: r.get("key")?,
        flow: r.get("flow")?,
        gate: r.get("gate")?,
        sampled_at: r.get("sampled_at")?,
        day: r.get("day")?,
        verdict: r
            .get::<_, Option<String>>("verdict")?
            .as_deref()
            .and_then(Verdict::from_name),
        reviewed_by: r.get("reviewed_by")?,
        reviewed_at: r.get("reviewed_at")?,
        note: r.get("note")?,
    })
}

/// Inserts a run row, its lease held by `lease` (`None`: nobody's).
fn insert_run(conn: &Connection, r: &RunRecord, lease: Option<&Lease>) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO runs (id, file, flow, program, input, status, created_at, updated_at, trace, replay, owner, lease_until, epoch, root_span, root_written)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            r.id,
            r.file,
            r.flow,
            r.program.to_string(),
            r.input.to_string(),
            r.status,
            r.created_at,
            r.trace,
            r.replay,
            lease.map(|l| l.owner.clone()),
            lease.map(Lease::until),
            lease.map_or(0, |l| l.epoch),
            r.root_span.map(span_column),
            r.root_written
        ],
    )
}

/// SQLite's `synchronous` setting for a durability.
fn synchronous(durability: Durability) -> &'static str {
    match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    }
}

/// The run's spend so far (everything this and earlier processes paid for,
/// with the allowance ahead), fenced by the lease, which it renews. The
/// statement is prepared once per connection.
/// Writes a commit's step rows (each with the run's counts `counted`) and
/// the replies it keeps.
fn insert_steps(
    conn: &Connection,
    lease: &Lease,
    steps: &[StepRow],
    replies: &[Reply],
    counted: Spend,
    at: f64,
) -> Result<()> {
    // A plain INSERT: a run commits a step's key once (a resume replays a
    // committed step, never runs it again), and with foreign keys on,
    // `OR REPLACE` made SQLite keep a statement journal for every row (~5%
    // of a commit's instructions).
    let mut stmt = conn.prepare_cached("INSERT INTO steps (run_id, key, value, completed_at, run_steps, run_tool_calls, run_wall) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
    for step in steps {
        stmt.execute(params![
            lease.run_id,
            step.key,
            step.value,
            at,
            counted.steps as i64,
            counted.tool_calls as i64,
            counted.wall
        ])?;
    }
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO replies (run_id, key, attempt, reply, input_tokens, output_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in replies {
        stmt.execute(params![
            lease.run_id,
            r.key,
            r.attempt,
            r.text,
            r.input_tokens as i64,
            r.output_tokens as i64
        ])?;
    }
    Ok(())
}

fn save_spend(conn: &Connection, lease: &Lease, spend: Spend, at: f64) -> Result<()> {
    let changed = conn.prepare_cached(
        "UPDATE runs SET tokens = ?3, cost = ?4, steps = ?5, tool_calls = ?6, updated_at = ?7, lease_until = ?8, wall = ?9 WHERE id = ?1 AND epoch = ?2",
    )?
    .execute(params![lease.run_id, lease.epoch, spend.tokens as i64, spend.cost, spend.steps as i64, spend.tool_calls as i64, at, lease.until(), spend.wall])?;
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::LeaseLost(lease.run_id.clone()))
    }
}

fn json_col(text: Option<String>) -> Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get("id")?,
        file: r.get("file")?,
        flow: r.get("flow")?,
        program: json_col(r.get("program")?),
        input: json_col(r.get("input")?),
        status: r.get("status")?,
        output: r
            .get::<_, Option<String>>("output")?
            .map(|t| json_col(Some(t))),
        error: r.get("error")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
        spend: Spend {
            tokens: r.get::<_, i64>("tokens")? as u64,
            cost: r.get("cost")?,
            steps: r.get::<_, i64>("steps")? as u64,
            tool_calls: r.get::<_, i64>("tool_calls")? as u64,
            wall: r.get("wall")?,
        },
        trace: r.get("trace")?,
        replay: r.get("replay")?,
        owner: r.get("owner")?,
        lease_until: r.get("lease_until")?,
        root_span: r.get::<_, Option<i64>>("root_span")?.map(|id| id as u64),
        root_written: r.get("root_written")?,
    })
}

/// A span id as SQLite stores it: ids stay below 2^53 (see
/// `run::trace::Trace::new`), so the cast is lossless.
fn span_column(id: u64) -> i64 {
    id as i64
}

fn gate_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GateRecord> {
    Ok(GateRecord {
        run_id: r.get("run_id")?,
        key: r.get("key")?,
        flow: r.get("flow")?,
        gate: r.get("gate")?,
        show: json_col(r.get("show")?),
        status: r.get("status")?,
        value: r
            .get::<_, Option<String>>("value")?
            .map(|t| json_col(Some(t))),
        reason: r.get("reason")?,
        created_at: r.get("created_at")?,
        timeout_at: r.get("timeout_at")?,
        on_timeout: r.get("on_timeout")?,
        source: super::source_of(
            r.get::<_, Option<String>>("source")?.as_deref(),
            &r.get::<_, String>("status")?,
            r.get::<_, Option<String>>("decided_by")?.as_deref(),
        ),
        decided_by: r.get("decided_by")?,
        decided_at: r.get("decided_at")?,
        policy_read: r
            .get::<_, Option<String>>("policy_read")?
            .map(|t| json_col(Some(t))),
        notified: NoticeStage::from_number(r.get("notified")?),
        escalated_at: r.get("escalated_at")?,
    })
}
