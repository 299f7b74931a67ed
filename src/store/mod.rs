//! The run store: every run, every completed step, every model reply per
//! attempt, every intent to call a tool with an effect, and every approval
//! gate. [`Store`] is the one interface the runtime and the CLI use; each
//! backend is a file of its own (`sqlite.rs`: an embedded file).
//!
//! A step's result is committed before any step that depends on it starts;
//! steps that complete together commit in one transaction.

mod sqlite;

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::run::budget::Spend;
pub use sqlite::SqliteStore;

/// How hard a commit waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: a committed step survives a power cut.
    Full,
    /// fsync at WAL checkpoints: survives a process crash, may lose the last
    /// commits on a power cut.
    Normal,
}

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the run store failed: {}", self.0)
    }
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
    /// `approve` or `reject`.
    pub on_timeout: String,
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A run store, whichever backend holds it.
pub enum Store {
    Sqlite(SqliteStore),
}

type Result<T> = std::result::Result<T, StoreError>;

impl Store {
    /// Opens (and migrates) the SQLite store at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Store> {
        Ok(Store::Sqlite(SqliteStore::open(path, durability)?))
    }

    pub fn create_run(&self, r: &RunRecord) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.create_run(r),
        }
    }

    pub fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        match self {
            Store::Sqlite(s) => s.run(id),
        }
    }

    /// Runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        match self {
            Store::Sqlite(s) => s.runs(),
        }
    }

    pub fn finish_run(
        &self,
        id: &str,
        status: &str,
        output: Option<&Value>,
        error: Option<&str>,
        spend: Spend,
    ) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.finish_run(id, status, output, error, spend),
        }
    }

    /// Completed steps: key → value (`None` for a step that was skipped).
    pub fn steps(&self, run: &str) -> Result<HashMap<String, Option<Value>>> {
        match self {
            Store::Sqlite(s) => s.steps(run),
        }
    }

    /// Commits steps that completed together, and the run's spend so far, in
    /// one transaction.
    pub fn commit_steps(
        &mut self,
        run: &str,
        batch: &[(String, Option<Value>)],
        spend: Spend,
    ) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.commit_steps(run, batch, spend),
        }
    }

    /// Records the intent to call a tool with an effect, before the call.
    pub fn intent(&self, run: &str, key: &str, idempotency_key: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.intent(run, key, idempotency_key),
        }
    }

    /// The idempotency key recorded for an intent, if the call was attempted before.
    pub fn intent_key(&self, run: &str, key: &str) -> Result<Option<String>> {
        match self {
            Store::Sqlite(s) => s.intent_key(run, key),
        }
    }

    /// Records a model reply and, in the same transaction, the run's spend
    /// so far (which includes the reply): a resume reads the reply back for
    /// free, so what it cost must already be in the run's spend.
    #[allow(clippy::too_many_arguments)]
    pub fn record_reply(
        &mut self,
        run: &str,
        key: &str,
        attempt: u32,
        reply: &str,
        input_tokens: u64,
        output_tokens: u64,
        spend: Spend,
    ) -> Result<()> {
        match self {
            Store::Sqlite(s) => {
                s.record_reply(run, key, attempt, reply, input_tokens, output_tokens, spend)
            }
        }
    }

    /// A model reply recorded for a step's attempt: (text, input tokens, output tokens).
    pub fn reply(&self, run: &str, key: &str, attempt: u32) -> Result<Option<(String, u64, u64)>> {
        match self {
            Store::Sqlite(s) => s.reply(run, key, attempt),
        }
    }

    pub fn gate(&self, run: &str, key: &str) -> Result<Option<GateRecord>> {
        match self {
            Store::Sqlite(s) => s.gate(run, key),
        }
    }

    /// Records a gate the run is waiting at (once).
    pub fn pending_gate(&self, g: &GateRecord) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.pending_gate(g),
        }
    }

    /// Decides a pending gate; `false` if it was not pending.
    pub fn decide_gate(
        &self,
        run: &str,
        key: &str,
        approve: bool,
        value: Option<&Value>,
        reason: Option<&str>,
    ) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.decide_gate(run, key, approve, value, reason),
        }
    }

    /// Gates of one run (or of every run), oldest first.
    pub fn gates(&self, run: Option<&str>) -> Result<Vec<GateRecord>> {
        match self {
            Store::Sqlite(s) => s.gates(run),
        }
    }
}
