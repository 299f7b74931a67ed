//! The run store: every run, every completed step, every model reply per
//! attempt, every intent to call a tool with an effect, and every approval
//! gate. [`Store`] is the one interface the runtime and the CLI use; each
//! backend is a file of its own (`sqlite.rs`: an embedded file;
//! `postgres.rs`: a PostgreSQL server many machines share).
//!
//! A step's result is committed before any step that depends on it starts;
//! steps that complete together commit in one transaction.

mod decision;
mod inline_client;
mod lease;
mod pending_texts;
mod postgres;
mod prefetch;
mod read_meeting;
mod review;
mod run_end;
mod sqlite;
mod step_row;
mod step_texts;
mod wal_checkpoints;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::run::budget::Spend;
pub use decision::{DecisionSource, NoticeStage};
pub use lease::{owner_id, ttl as lease_ttl, Acquired, Heartbeat, Lease};
pub use pending_texts::PendingTexts;
pub use postgres::{
    keep_connections, PostgresStore, COMMIT_STEPS as POSTGRES_COMMIT_STEPS,
    COMMIT_STEPS_READ_FENCE as POSTGRES_COMMIT_STEPS_READ_FENCE,
};
pub use prefetch::Prefetch;
pub use read_meeting::ReadMeeting;
pub use review::{utc_day, ReviewRecord, Verdict};
pub use run_end::RunEnd;
pub use sqlite::SqliteStore;
pub use step_row::StepRow;
pub use step_texts::StepTexts;

/// How hard a commit waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: a committed step survives a power cut.
    Full,
    /// fsync at WAL checkpoints: survives a process crash, may lose the last
    /// commits on a power cut.
    Normal,
}

/// Why a store operation failed.
#[derive(Clone, Debug)]
pub enum StoreError {
    /// The store could not be read or written (locked too long, gone, corrupt).
    Failed(String),
    /// The store stayed locked by other processes for longer than flowc waits.
    Busy(String),
    /// Another process took the run over: this process's lease is no longer
    /// the run's, and its write was rejected (fencing).
    LeaseLost(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Failed(m) | StoreError::Busy(m) => write!(f, "the run store failed: {m}"),
            StoreError::LeaseLost(run) => write!(
                f,
                "run {run} was taken over by another process (this process's lease expired); it stopped without writing"
            ),
        }
    }
}

/// A model reply as the store keeps it: one per step attempt, so a resume
/// never pays for a reply an earlier process received. `key` is the step
/// instance's reply key (`StepPath::reply`).
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub key: String,
    pub attempt: u32,
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A run as the store keeps it.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub id: String,
    pub file: String,
    pub flow: String,
    /// The program's fingerprint: item name → hash (JSON object).
    pub program: Value,
    pub input: Value,
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
    pub spend: Spend,
    pub trace: String,
    pub replay: Option<String>,
    /// The process that holds the run's lease (`HOST/PID/NONCE`), if any.
    pub owner: Option<String>,
    /// When that lease expires unless renewed.
    pub lease_until: Option<f64>,
    /// The id of the trace's root `run` span, chosen when the run started,
    /// so a resume hangs its spans under it without reading the trace file.
    /// `None` for a run an older flowc started.
    pub root_span: Option<u64>,
    /// Whether a process wrote that span to the trace (spans are written
    /// when they end): a process killed before then left no root, and the
    /// next one writes its own `run` span under the root's id.
    pub root_written: bool,
}

/// Which submitted runs a worker may claim, as SQL over `runs r` (both
/// backends' dialects agree on it; `$NOW` is the current time): no live
/// lease, and either never run, interrupted, left `running` by an owner
/// whose lease expired, or waiting at a gate that has news (a decision the
/// run has not consumed, its step not committed yet; or a timeout that
/// passed).
pub(crate) const CLAIMABLE: &str = "EXISTS (SELECT 1 FROM programs p WHERE p.run_id = r.id)
  AND (r.lease_until IS NULL OR r.lease_until < $NOW)
  AND (r.status IN ('queued', 'running', 'interrupted')
    OR (r.status = 'waiting' AND EXISTS (
      SELECT 1 FROM gates g WHERE g.run_id = r.id AND (
        (g.status = 'pending' AND g.timeout_at <= $NOW)
        OR (g.status <> 'pending' AND NOT EXISTS (
          SELECT 1 FROM steps s WHERE s.run_id = g.run_id AND s.key = g.key))))))";

impl RunRecord {
    /// A run as its first process records it: running, nothing spent, no
    /// owner until the lease is taken, its root span not chosen yet.
    pub fn starting(
        id: String,
        file: String,
        flow: String,
        program: Value,
        input: Value,
        trace: String,
        replay: Option<String>,
    ) -> RunRecord {
        let now = now();
        RunRecord {
            id,
            file,
            flow,
            program,
            input,
            status: "running".into(),
            output: None,
            error: None,
            created_at: now,
            updated_at: now,
            spend: Spend::default(),
            trace,
            replay,
            owner: None,
            lease_until: None,
            root_span: None,
            root_written: false,
        }
    }
}

/// A gate as the store keeps it.
#[derive(Clone, Debug)]
pub struct GateRecord {
    pub run_id: String,
    pub key: String,
    pub flow: String,
    pub gate: String,
    pub show: Value,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    pub value: Option<Value>,
    pub reason: Option<String>,
    pub created_at: f64,
    pub timeout_at: Option<f64>,
    /// `approve`, `reject` or `escalate`.
    pub on_timeout: String,
    /// Who decided (`flowc approve --by`, the OS user, `timeout`, `policy`),
    /// once decided.
    pub decided_by: Option<String>,
    /// When it was decided (seconds since the Unix epoch).
    pub decided_at: Option<f64>,
    /// What decided it, once decided (a gate decided before the column existed
    /// (SQLite schema 8, PostgreSQL 7) reads as `Timeout` when `decided_by` is `timeout`,
    /// else `Person`).
    pub source: Option<DecisionSource>,
    /// For a policy's decision: the values its condition read, by name
    /// (`{"request.amount": 30}`).
    pub policy_read: Option<Value>,
    /// The announcements sent so far (`notify`, then the escalation's).
    pub notified: NoticeStage,
    /// When its timeout passed and it escalated (its `timeout_at` is then
    /// the escalation's deadline).
    pub escalated_at: Option<f64>,
}

impl GateRecord {
    /// A gate that starts waiting now.
    pub fn pending(
        run_id: &str,
        key: &str,
        flow: &str,
        gate: &str,
        show: Value,
        timeout_at: Option<f64>,
        on_timeout: &str,
    ) -> GateRecord {
        GateRecord {
            run_id: run_id.to_string(),
            key: key.to_string(),
            flow: flow.to_string(),
            gate: gate.to_string(),
            show,
            status: "pending".into(),
            value: None,
            reason: None,
            created_at: now(),
            timeout_at,
            on_timeout: on_timeout.to_string(),
            decided_by: None,
            decided_at: None,
            source: None,
            policy_read: None,
            notified: NoticeStage::None,
            escalated_at: None,
        }
    }
}

/// A stored decision source; rows written before the column existed are
/// told apart by who decided them.
pub(crate) fn source_of(
    column: Option<&str>,
    status: &str,
    decided_by: Option<&str>,
) -> Option<DecisionSource> {
    if status == "pending" {
        return None;
    }
    match column.and_then(DecisionSource::from_name) {
        Some(s) => Some(s),
        None if decided_by == Some("timeout") => Some(DecisionSource::Timeout),
        None => Some(DecisionSource::Person),
    }
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What every backend does. Every write a run makes takes its [`Lease`] and
/// is fenced by it: it fails with [`StoreError::LeaseLost`] once another
/// process took the run over.
pub trait Backend: Send {
    /// Another connection to the same store (the lease heartbeat's).
    fn reopen(&self) -> Result<Store>;
    /// Records a new run, its lease held by `lease` (the run's own process,
    /// as it starts). SQLite commits it without waiting for the disk (one
    /// fsync less for every run), as `acquire`: the row is visible to every
    /// other process at once, and the run's first synchronous commit (a
    /// step, the intent before an effect, a gate, the run's end) flushes it
    /// along, the WAL being flushed in order. Only a crash of the machine
    /// before that commit can lose it, and the process driving the run ends
    /// with the machine; what else the run had written by then was written
    /// the same way (`record_spend`). PostgreSQL commits it as any write.
    fn create_run(&self, r: &RunRecord, lease: &Lease) -> Result<()>;
    /// Takes the run's lease if nobody live holds it, reading the run in the
    /// same transaction. SQLite commits it without waiting for the disk
    /// (one fsync less for every resume): the write is visible to every
    /// other process at once, and only a crash of the machine, which ends
    /// every process that could drive the run, can lose it; anything the
    /// new holder commits afterwards is flushed with it (the WAL is
    /// flushed in order). PostgreSQL commits it as any write: its server
    /// can lose an unflushed commit while its clients live on, and two of
    /// them would then hold one epoch.
    fn acquire(&self, id: &str, owner: &str, ttl: Duration) -> Result<Acquired>;
    /// Extends the lease; `false` if it was taken over.
    fn renew(&self, lease: &Lease) -> Result<bool>;
    /// Gives the lease up without finishing the run.
    fn release(&self, lease: &Lease) -> Result<()>;
    fn run(&self, id: &str) -> Result<Option<RunRecord>>;
    /// Runs, newest first.
    fn runs(&self) -> Result<Vec<RunRecord>>;
    /// Records how the run ended and releases its lease, after the steps
    /// and replies its last commit takes (`RunEnd::steps`). SQLite writes
    /// them in one transaction: a run's last steps and its end cost one
    /// sync of the disk. PostgreSQL commits the steps first, then the end.
    fn finish_run(&self, lease: &Lease, end: &RunEnd<'_>) -> Result<()>;
    /// Completed steps: key → value (`None` for a step that was skipped).
    fn steps(&self, run: &str) -> Result<HashMap<String, Option<Value>>> {
        let texts = self.step_texts(run)?;
        let mut out = HashMap::with_capacity(texts.len());
        for i in 0..texts.len() {
            let key = texts.key_text(i).into_owned();
            let value = match texts.value(i) {
                Some(text) => Some(
                    serde_json::from_slice(text)
                        .map_err(|e| StoreError::Failed(format!("step {key}: {e}")))?,
                ),
                None => None,
            };
            out.insert(key, value);
        }
        Ok(out)
    }
    /// Completed steps as stored: key and the value's JSON text (`None`
    /// for a step that was skipped), neither parsed nor checked. A resume
    /// reads these: it parses only the values a step it runs reads
    /// (`run::Checkpoints`).
    fn step_texts(&self, run: &str) -> Result<StepTexts>;
    /// [`Backend::step_texts`] read by two connections at once: this one
    /// from the first key up, while another reads from the last key down
    /// ([`Backend::step_texts_down`]), each taking the rows the other has
    /// not ([`ReadMeeting`]). A backend that reads its rows in one go
    /// reads them all here, and none there.
    fn step_texts_up(&self, run: &str, meeting: &ReadMeeting) -> Result<StepTexts> {
        let _ = meeting;
        self.step_texts(run)
    }
    /// The other end of [`Backend::step_texts_up`]: rows from the last key
    /// down, in that order, until the read up is met.
    fn step_texts_down(&self, run: &str, meeting: &ReadMeeting) -> Result<StepTexts> {
        let _ = (run, meeting);
        Ok(StepTexts::default())
    }
    /// Commits steps that completed together and the model replies
    /// received since the last commit in one transaction (one flush to
    /// disk), fenced by the lease. Each step row carries the run's steps,
    /// tool calls and active time in `counted` (its tokens and cost are
    /// not read): what a resume after a crash counts of them
    /// (`StepTexts::counted`), exact as of the last commit. With `spend`,
    /// the same transaction writes the run's row: the spend and a renewal
    /// of the lease. Without, it only reads the row's epoch (under the
    /// transaction's write lock, so the fence holds as well as a write
    /// would), and the commit dirties no page but its steps' and replies'.
    fn commit_steps(
        &self,
        lease: &Lease,
        batch: &[StepRow],
        replies: &[Reply],
        counted: Spend,
        spend: Option<Spend>,
    ) -> Result<()>;
    /// Records the run's spend so far (settled spend, reservations of
    /// calls in flight and active time), fenced by the lease: written before
    /// each model call, so a call cut short by a crash stays counted.
    /// Written without waiting for the disk: it survives this process
    /// dying (the write is in the database's log, SQLite's WAL file or
    /// PostgreSQL's WAL buffers), and the next commit flushes it; only a
    /// crash of the machine (SQLite) or of the database server (PostgreSQL)
    /// before that commit can lose it.
    fn record_spend(&self, lease: &Lease, spend: Spend) -> Result<()>;
    /// Records the intent to call a tool with an effect, before the call.
    fn intent(&self, lease: &Lease, key: &str, idempotency_key: &str) -> Result<()>;
    /// The idempotency key recorded for an intent, if the call was attempted before.
    fn intent_key(&self, run: &str, key: &str) -> Result<Option<String>>;
    /// A model reply recorded for a step's attempt: (text, input tokens, output tokens).
    fn reply(&self, run: &str, key: &str, attempt: u32) -> Result<Option<(String, u64, u64)>>;
    fn gate(&self, run: &str, key: &str) -> Result<Option<GateRecord>>;
    /// Records a gate the run is waiting at (once).
    fn pending_gate(&self, lease: &Lease, g: &GateRecord) -> Result<()>;
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
    ) -> Result<bool>;
    /// Gates of one run (or of every run), oldest first.
    fn gates(&self, run: Option<&str>) -> Result<Vec<GateRecord>>;
    /// Decides a pending gate by its timeout (`decided_by` `timeout`,
    /// source [`DecisionSource::Timeout`]); `false` if it was not pending.
    fn decide_gate_on_timeout(&self, run: &str, key: &str, approve: bool) -> Result<bool>;
    /// Approves a pending gate by its policy, recording the values the
    /// policy read (`decided_by` `policy`, source [`DecisionSource::Policy`]);
    /// `false` if it was not pending.
    fn decide_gate_by_policy(&self, run: &str, key: &str, read: &Value) -> Result<bool>;
    /// Claims the right to send a pending gate's announcement `stage`:
    /// `true` once per gate and stage (the caller then sends it), `false`
    /// when it was claimed before or the gate is no longer pending.
    fn claim_notice(&self, run: &str, key: &str, stage: NoticeStage) -> Result<bool>;
    /// Escalates a pending gate whose timeout passed: its deadline becomes
    /// `timeout_at`; `false` if it escalated before or is no longer pending.
    fn escalate_gate(&self, run: &str, key: &str, timeout_at: f64) -> Result<bool>;
    /// Records a policy-decided case for review, unless `per_day` cases of
    /// its flow and gate were already sampled on its day (or the case was
    /// sampled before); `true` when recorded.
    fn sample_review(&self, r: &ReviewRecord, per_day: Option<u64>) -> Result<bool>;
    /// Review items of one run (or of every run), oldest first; only those
    /// not reviewed yet with `open_only`.
    fn reviews(&self, run: Option<&str>, open_only: bool) -> Result<Vec<ReviewRecord>>;
    /// Marks a sampled case agreed or not; `false` when there is no such
    /// item or it was reviewed already (a second verdict is refused, like a
    /// second decision).
    fn record_review(
        &self,
        run: &str,
        key: &str,
        verdict: Verdict,
        by: &str,
        note: Option<&str>,
    ) -> Result<bool>;
    /// Records a submitted run (`queued`, nobody's lease) and its program
    /// snapshot ([`crate::snapshot::ProgramSnapshot::to_json`]) in one
    /// transaction, for a worker to claim.
    fn submit_run(&self, r: &RunRecord, snapshot: &str) -> Result<()>;
    /// The program snapshot stored with a submitted run (`None` for a run
    /// started by `flowc run`).
    fn program(&self, run: &str) -> Result<Option<String>>;
    /// The sealed program kept under `key` (`program_cache::key`), as
    /// `program_cache::encode` wrote it.
    fn cached_program(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Whether a program is kept under `key` (without reading it).
    fn has_cached_program(&self, key: &str) -> Result<bool>;
    /// Keeps a sealed program under `key`, unless one is kept there already
    /// (one key, one program: the same files compiled by the same flowc).
    /// Not fenced: it belongs to no run.
    fn keep_program(&self, key: &str, program: &[u8]) -> Result<()>;
    /// Takes the lease of one submitted run a worker should drive now, in
    /// the transaction that finds it: a new run, one whose gate was decided
    /// or whose gate timeout passed, one that was interrupted, or one whose
    /// owner's lease expired. Oldest first; `None` when there is no work.
    /// The run is marked `running`.
    fn claim(&self, owner: &str, ttl: Duration) -> Result<Option<(RunRecord, Lease)>>;
    /// A model's shared `rpm`: the moment (seconds since the Unix epoch)
    /// the next call to `key` may start, every process on this store
    /// counted. Taken atomically: the call after this one may start
    /// `spacing` seconds later.
    fn rate_turn(&self, key: &str, spacing: f64) -> Result<f64>;
    /// A model's shared `concurrency`: one of `limit` slots for `key`, held
    /// until freed or until `until` (a crashed holder's slot frees itself
    /// then); `None` when all are taken.
    fn take_slot(&self, key: &str, limit: u64, until: f64) -> Result<Option<String>>;
    /// Gives a slot back.
    fn free_slot(&self, key: &str, slot: &str) -> Result<()>;
}

/// A run store, whichever backend holds it.
pub struct Store(Box<dyn Backend>);

type Result<T> = std::result::Result<T, StoreError>;

impl Store {
    /// Opens (and migrates) a store: a `postgres://` or `postgresql://` URL
    /// is a PostgreSQL server, anything else a SQLite file.
    pub fn open(path: &Path, durability: Durability) -> Result<Store> {
        match path.to_str() {
            Some(url) if is_postgres(url) => Ok(Store(Box::new(PostgresStore::open(url)?))),
            _ => Ok(Store(Box::new(SqliteStore::open(path, durability)?))),
        }
    }
}

/// Whether a `--store` value names a PostgreSQL server.
pub fn is_postgres(locator: &str) -> bool {
    locator.starts_with("postgres://") || locator.starts_with("postgresql://")
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &(dyn Backend + 'static) {
        &*self.0
    }
}
